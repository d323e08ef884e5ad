"""The paper's dataset-creation procedure (section 2.2): factory noise, RIR, section-level mixing.

The noise-mixed data of a section are made as in the paper:

1. ``a`` = the average power over all clips of the section (:func:`section_power`);
2. for each clip ``i``: an SNR ``gamma`` drawn uniformly from ``[c - d, c + d]`` (Table 1), a
   background-noise clip ``j`` drawn at random, its power ``b_j`` tuned so that
   ``gamma = 10 log10(a / b_j)`` (:func:`scale_noise`), and the two added (:func:`mix`).

Gearbox and slide-rail sounds are first convolved with a room impulse response of RT60 = 0.3 s
made with pyroomacoustics (:func:`room_impulse_response`).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve

from mimii_due.config import SAMPLE_RATE
from mimii_due.errors import ConfigError
from mimii_due.synth.signals import band_noise, harmonics, impulses, poisson_times, shaped_noise, slow_curve

RT60 = 0.3  # Section 2.2: RT60 of the impulse response convolved with gearbox and slide rail
# What the default room gives (measured 2026-11-28): below 0.15 s pyroomacoustics finds no absorption
# that reaches it ("room may be too large"); 2 s took 35 s, 3 s 132 s, 5 s ran out of memory.
RT60_RANGE = (0.15, 3.0)
MIC_DISTANCE = 0.6  # Table 3: distance from the microphone [m]


def section_power(clips) -> float:
    """Step 1: the average power ``a`` over all clips of a section (an iterable of arrays)."""
    total, count = 0.0, 0
    for y in clips:
        y = np.asarray(y, dtype=np.float64)
        total += float(np.sum(y**2))
        count += y.size
    return total / count


def draw_snr(rng: np.random.Generator, *, snr: float, spread: float) -> float:
    """Step 2(a): ``gamma`` uniform over ``[snr - spread, snr + spread]`` dB (Table 1's ``c +- d``)."""
    return float(rng.uniform(snr - spread, snr + spread)) if spread else float(snr)


def scale_noise(noise: np.ndarray, *, a: float, snr_db: float) -> np.ndarray:
    """Step 2(b): scale ``noise`` to power ``b_j`` such that ``snr_db = 10 log10(a / b_j)``."""
    noise = np.asarray(noise, dtype=np.float64)
    b = float(np.mean(noise**2))
    if b <= 0:
        raise ValueError("noise clip is silent: its power cannot be tuned")
    return noise * np.sqrt(a / (10 ** (snr_db / 10)) / b)


def fit_length(noise: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A noise excerpt of ``n`` samples: a random offset in a longer clip, tiled if shorter."""
    if len(noise) < n:
        noise = np.tile(noise, int(np.ceil(n / len(noise))))
    start = int(rng.integers(0, len(noise) - n + 1))
    return noise[start : start + n]


def mix(clean: np.ndarray, noise: np.ndarray, *, a: float, snr_db: float) -> np.ndarray:
    """Step 2(c): the clean clip plus the noise tuned to ``snr_db`` relative to the section power ``a``."""
    return np.asarray(clean, dtype=np.float64) + scale_noise(noise, a=a, snr_db=snr_db)


def room_impulse_response(
    *,
    rt60: float = RT60,
    sr: int = SAMPLE_RATE,
    room: tuple[float, float, float] = (6.0, 5.0, 3.0),
    distance: float = MIC_DISTANCE,
    seed: int = 0,
) -> np.ndarray:
    """A shoebox-room impulse response with reverberation time ``rt60`` (pyroomacoustics, image method).

    The absorption and reflection order come from Sabine's formula (``inverse_sabine``), corrected
    until :func:`measure_rt60` of the response is within 1 % of ``rt60``; the source is ``distance``
    metres from the microphone, at a position drawn from ``seed``.
    Returns the RIR normalised to a unit direct-path peak, shape ``(n_taps,)``.
    """
    import pyroomacoustics as pra

    low, high = RT60_RANGE
    if not (isinstance(rt60, (int, float)) and np.isfinite(rt60) and low <= rt60 <= high):
        raise ConfigError(f"RT60 must be between {low} and {high} s for the {room[0]:g} x {room[1]:g} x {room[2]:g} m "
                          f"room, not {rt60!r}")  # fmt: skip
    rng = np.random.default_rng(seed)
    mic = np.array([room[0] * rng.uniform(0.3, 0.7), room[1] * rng.uniform(0.3, 0.7), 1.2])
    ang = rng.uniform(0, 2 * np.pi)
    src = mic + distance * np.array([np.cos(ang), np.sin(ang), 0.0])

    def rir(design_rt60: float) -> np.ndarray:
        e_abs, max_order = pra.inverse_sabine(design_rt60, list(room))
        r = pra.ShoeBox(list(room), fs=sr, materials=pra.Material(e_abs), max_order=max_order)
        r.add_source(src.tolist())
        r.add_microphone(mic.tolist())
        r.compute_rir()
        return np.asarray(r.rir[0][0], dtype=np.float64)

    # Sabine's formula is approximate for a shoebox image-method room: correct the design value
    # until the measured decay of the response itself gives the RT60 asked for.
    design = rt60
    for _ in range(4):
        h = rir(design)
        measured = measure_rt60(h, sr=sr)
        if abs(measured - rt60) < 0.01 * rt60:
            break
        design *= rt60 / measured
    return h / np.max(np.abs(h))


def measure_rt60(h: np.ndarray, *, sr: int = SAMPLE_RATE) -> float:
    """RT60 of an impulse response from its Schroeder decay (T20 fit, -5 to -25 dB, extrapolated)."""
    e = np.cumsum((h**2)[::-1])[::-1]
    db = 10 * np.log10(e / e[0] + 1e-300)
    i5, i25 = np.argmax(db <= -5), np.argmax(db <= -25)
    t = np.arange(i5, i25) / sr
    slope = np.polyfit(t, db[i5:i25], 1)[0]  # dB per second
    return -60.0 / slope


def reverberate(y: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Convolve a dry clip with an impulse response, keeping its length."""
    return fftconvolve(y, h)[: len(y)]


# ------------------------------------------------------------------------------ factory noise


def factory_params(factory: int, seed: int) -> dict:
    """The character of one factory's background (distinct per factory id)."""
    rng = np.random.default_rng([seed, 7001, factory])
    return {
        "mains": float(rng.choice([50.0, 60.0])),
        "hum": rng.uniform(0.5, 1.0, 4) * 0.6 ** np.arange(4),
        "knots": rng.uniform(-8, 8, 14),  # broadband envelope over log-frequency (dB)
        "tilt": rng.uniform(-4.0, -2.0),  # dB per octave
        "events": rng.uniform(0.3, 1.2),  # impacts per second
        "event_hz": rng.uniform(600, 2500),
        "drone_hz": rng.uniform(40, 90),  # a distant machine's fundamental
        "drone": rng.uniform(0.1, 0.3),
        "hum_level": rng.uniform(0.1, 0.3),
    }


def factory_noise(factory: int, clip: int, *, seed: int, n: int, sr: int) -> np.ndarray:
    """Background-noise clip ``clip`` of factory ``factory``: hum, broadband noise, transient events.

    Deterministic in ``(seed, factory, clip)``; unit power.
    """
    fp = factory_params(factory, seed)
    rng = np.random.default_rng([seed, 7002, factory, clip])
    edges = np.log2(np.geomspace(20, sr / 2, len(fp["knots"])))

    def gain(f):
        lf = np.log2(np.maximum(f, 20))
        return np.interp(lf, edges, fp["knots"]) + fp["tilt"] * (lf - np.log2(100))

    y = shaped_noise(n, rng, sr=sr, gain_db=gain)
    y *= 10 ** (slow_curve(n, rng, points=10, depth=1.5) / 20)  # slow level changes, about +-1.5 dB
    y += fp["hum_level"] * 4 * harmonics(fp["mains"], fp["hum"], n=n, sr=sr, rng=rng)
    y += fp["drone"] * 2 * harmonics(fp["drone_hz"], 0.7 ** np.arange(6), n=n, sr=sr, rng=rng)
    times = poisson_times(fp["events"], duration=n / sr, rng=rng)
    y += impulses(
        times, n=n, sr=sr, freq=fp["event_hz"], decay=0.04, amps=rng.uniform(2, 6, len(times)), rng=rng, width=0.4
    )
    y += 0.2 * band_noise(n, rng, sr=sr, lo=4000, hi=7500)
    return y / np.sqrt(np.mean(y**2))

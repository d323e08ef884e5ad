"""Signal building blocks for the machine and factory-noise models (pure functions on arrays).

Every function takes the number of samples ``n`` and the sample rate ``sr`` keyword-only where it
needs them and a ``numpy.random.Generator`` for its randomness, and returns float64 arrays of
shape ``(n,)``.
"""

from __future__ import annotations

import numpy as np


def slow_curve(n: int, rng: np.random.Generator, *, points: int = 40, depth: float = 1.0) -> np.ndarray:
    """A smooth random curve around 0 with standard deviation about ``depth`` (wander, drift)."""
    knots = rng.standard_normal(points + 1)
    knots = np.convolve(knots, np.ones(3) / np.sqrt(3), mode="same")
    return depth * np.interp(np.arange(n), np.linspace(0, n - 1, points + 1), knots)


def phase(freq: np.ndarray | float, *, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Instantaneous phase (radians) of a possibly time-varying frequency (Hz), random start."""
    f = np.broadcast_to(np.asarray(freq, dtype=np.float64), (n,))
    return 2 * np.pi * np.cumsum(f) / sr + rng.uniform(0, 2 * np.pi)


def harmonics(f0: np.ndarray | float, amps: np.ndarray, *, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of harmonics ``k * f0`` (k = 1..len(amps)) with the given amplitudes, below Nyquist."""
    ph = phase(f0, n=n, sr=sr, rng=rng)
    f_max = float(np.max(f0))
    out = np.zeros(n)
    for k, a in enumerate(amps, start=1):
        if a == 0 or k * f_max >= sr / 2 - 200:
            continue
        out += a * np.sin(k * ph + rng.uniform(0, 2 * np.pi))
    return out


def shaped_noise(n: int, rng: np.random.Generator, *, sr: int, gain_db) -> np.ndarray:
    """Gaussian noise whose power spectrum follows ``gain_db(freqs_hz)``, normalised to unit power."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    spec *= 10 ** (np.asarray(gain_db(freqs)) / 20)
    y = np.fft.irfft(spec, n)
    return y / (np.sqrt(np.mean(y**2)) + 1e-12)


def band_noise(
    n: int, rng: np.random.Generator, *, sr: int, lo: float, hi: float, slope: float = 0.0, edge: float = 1.5
) -> np.ndarray:
    """Unit-power noise in [lo, hi] Hz (soft edges, ``edge`` octaves wide) with a tilt in dB/octave."""

    def gain(f):
        f = np.maximum(f, 1.0)
        oct_lo, oct_hi = np.log2(f / lo), np.log2(hi / f)
        g = slope * np.log2(f / lo)
        g = g - 24 * np.clip(-oct_lo / edge, 0, None) ** 2 - 24 * np.clip(-oct_hi / edge, 0, None) ** 2
        return np.maximum(g, -80)

    return shaped_noise(n, rng, sr=sr, gain_db=gain)


def impulses(
    times: np.ndarray,
    *,
    n: int,
    sr: int,
    freq: float,
    decay: float,
    amps: np.ndarray | float = 1.0,
    rng: np.random.Generator,
    width: float = 0.15,
) -> np.ndarray:
    """Damped resonances (clicks, knocks) starting at ``times`` seconds.

    Each click rings at about ``freq`` Hz (spread by ``width`` relative) and decays with time
    constant ``decay`` seconds.
    """
    out = np.zeros(n)
    length = min(n, int(6 * decay * sr) + 1)
    t = np.arange(length) / sr
    amps = np.broadcast_to(np.asarray(amps, dtype=np.float64), (len(times),))
    for t0, a in zip(times, amps, strict=True):
        i = int(t0 * sr)
        if i >= n or i < 0:
            continue
        f = freq * (1 + width * rng.standard_normal())
        burst = a * np.exp(-t / decay) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
        burst += 0.3 * a * np.exp(-t / (decay / 3)) * rng.standard_normal(length)
        m = min(length, n - i)
        out[i : i + m] += burst[:m]
    return out


def poisson_times(rate: float, *, duration: float, rng: np.random.Generator) -> np.ndarray:
    """Event times (s) of a Poisson process of ``rate`` events per second over ``duration``."""
    k = rng.poisson(rate * duration)
    return np.sort(rng.uniform(0, duration, k))

"""Physical sketches of the five MIMII DUE machine types, their domain shifts and Table 2 anomalies.

Each machine type is a small class with named parameters:

- ``product(rng)``: the base parameters of one section's product (each section is its own product);
- ``SHIFTS[section]``: the attribute of Table 1's *Description* that differs between domains, its
  values in each domain, and ``shift(p, value)`` that applies a value to the parameters;
- ``fault(p, kind, severity, rng)``: an anomaly of Table 2, a change of the physical parameters or
  an added fault signature whose size grows with ``severity`` (0 = none, 1 = clear);
- ``render(p, n, sr, rng)``: the clean (noise-free, dry) machine sound.

Parameters are plain dicts so a clip's recipe can be logged and reproduced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mimii_due.synth.signals import band_noise, harmonics, impulses, phase, poisson_times, slow_curve


@dataclass(frozen=True)
class Shift:
    """The attribute that differs between domains of a section (Table 1, Description)."""

    key: str
    source: tuple[str, ...]
    target: tuple[str, ...]
    apply: Callable[[dict, str], None]  # mutates the parameters for one attribute value
    noise_factory: dict | None = None  # domain -> factory id, where the noise itself shifts
    snr_note: str = ""


def _nothing(p: dict, v: str) -> None:
    return None


def _t(n: int, sr: int) -> np.ndarray:
    return np.arange(n) / sr


class Fan:
    anomalies = ("wing_damage", "unbalance", "clogging", "over_voltage")  # Table 2

    @staticmethod
    def product(rng):
        return {"rot_hz": rng.uniform(16, 30), "blades": int(rng.choice([5, 6, 7, 9])),
                "bpf_decay": rng.uniform(0.4, 0.7), "tone": rng.uniform(0.5, 1.0),
                "air": 1.0, "air_lo": rng.uniform(150, 400), "air_hi": rng.uniform(2500, 5000),
                "air_tilt": rng.uniform(-4, -1), "am": 0.05, "hum": rng.uniform(0.05, 0.2),
                "rot_amps": [0.02, 0.01, 0.0], "whistle": 0.0}  # fmt: skip

    @staticmethod
    def _strength(p, v):
        k = float(v) - 1
        p["rot_hz"] *= 1 + 0.15 * k
        p["air"] *= 1 + 0.4 * k

    @staticmethod
    def _size(p, v):
        k = float(v) - 1
        p["rot_hz"] *= 1 - 0.12 * k
        p["air_lo"] *= 1 - 0.2 * k
        p["tone"] *= 1 + 0.3 * k

    @staticmethod
    def _temp(p, v):
        k = (float(v) - 20) / 30
        p["air_tilt"] += 2.5 * k
        p["air"] *= 1 + 0.3 * k

    SHIFTS = {
        0: Shift("strength", ("1", "2"), ("3",), _strength.__func__),
        1: Shift("size", ("1", "2"), ("3",), _size.__func__),
        2: Shift("factory", ("1",), ("2",), _nothing, noise_factory={"target": 1}),
        3: Shift("strength", ("1", "2"), ("3",), _strength.__func__),
        4: Shift("strength", ("2", "3"), ("1",), _strength.__func__),
        5: Shift("temp", ("20", "30"), ("50",), _temp.__func__),
    }

    @staticmethod
    def fault(p, kind, s, rng):
        if kind == "wing_damage":
            p["rot_amps"] = [a + b * s for a, b in zip(p["rot_amps"], (0.25, 0.2, 0.12), strict=True)]
            p["am"] += 0.25 * s
        elif kind == "unbalance":
            p["rot_amps"] = [p["rot_amps"][0] + 0.5 * s, p["rot_amps"][1] + 0.15 * s, p["rot_amps"][2]]
            p["am"] += 0.15 * s
        elif kind == "clogging":
            p["air"] *= 1 - 0.35 * s
            p["rot_hz"] *= 1 + 0.04 * s
            p["whistle"] = 0.25 * s
        elif kind == "over_voltage":
            p["rot_hz"] *= 1 + 0.07 * s
            p["hum"] *= 1 + 3 * s

    @staticmethod
    def render(p, n, sr, rng):
        f_r = p["rot_hz"] * (1 + 0.004 * slow_curve(n, rng))
        bpf_amps = p["tone"] * p["bpf_decay"] ** np.arange(6)
        y = harmonics(p["blades"] * f_r, bpf_amps, n=n, sr=sr, rng=rng)
        y += harmonics(f_r, np.array(p["rot_amps"]) * 4, n=n, sr=sr, rng=rng)
        am = 1 + p["am"] * np.sin(phase(f_r, n=n, sr=sr, rng=rng))
        y += p["air"] * 1.5 * am * band_noise(n, rng, sr=sr, lo=p["air_lo"], hi=p["air_hi"], slope=p["air_tilt"])
        y += harmonics(100.0, np.array([1.0, 0.4, 0.2]) * p["hum"], n=n, sr=sr, rng=rng)
        if p["whistle"]:
            y += p["whistle"] * band_noise(n, rng, sr=sr, lo=2200, hi=2600, edge=0.2)
        return y


class Gearbox:
    anomalies = ("gear_damage", "overload", "over_voltage")  # Table 2 ("etc.")

    @staticmethod
    def product(rng):
        return {"motor_hz": rng.uniform(14, 24), "teeth": int(rng.integers(18, 40)), "crank_hz": rng.uniform(0.6, 1.4),
                "load_shape": 1.0, "load": rng.uniform(0.2, 0.4), "droop": 0.04, "mesh": 1.0,
                "mesh_decay": rng.uniform(0.4, 0.7), "side": rng.uniform(0.1, 0.3), "rattle": rng.uniform(0.2, 0.4),
                "knock": 0.0}  # fmt: skip

    @staticmethod
    def _volt(p, v):
        p["motor_hz"] *= float(v)
        p["crank_hz"] *= float(v)

    @staticmethod
    def _arm(p, v):
        k = (float(v) - 20) / 20
        p["load_shape"] = 1 + 2.0 * k
        p["load"] *= 1 + 0.5 * k

    @staticmethod
    def _weight(p, v):
        k = (float(v) - 100) / 100
        p["load"] *= 1 + 0.6 * k
        p["droop"] *= 1 + 0.8 * k

    @staticmethod
    def _volt_arm(p, v):  # section 05: both shift; the value is "<volt>-<arm>"
        volt, arm = v.split("-")
        Gearbox._volt(p, volt)
        Gearbox._arm(p, arm)

    SHIFTS = {
        0: Shift("volt", ("1.0", "1.1"), ("1.4",), _volt.__func__),
        1: Shift("arm", ("20", "25"), ("40",), _arm.__func__),
        2: Shift("wt", ("100", "150"), ("300",), _weight.__func__),
        3: Shift("volt", ("1.0", "1.1"), ("0.7",), _volt.__func__),
        4: Shift("arm", ("30", "35"), ("15",), _arm.__func__),
        5: Shift("va", ("1.0-20", "1.1-25"), ("1.3-40",), _volt_arm.__func__),
    }

    @staticmethod
    def fault(p, kind, s, rng):
        if kind == "gear_damage":
            p["knock"] = 0.6 * s
            p["side"] += 0.3 * s
        elif kind == "overload":
            p["load"] *= 1 + 1.0 * s
            p["droop"] *= 1 + 1.5 * s
        elif kind == "over_voltage":
            p["motor_hz"] *= 1 + 0.1 * s

    @staticmethod
    def render(p, n, sr, rng):
        t = _t(n, sr)
        cyc = 0.5 * (1 + np.sin(2 * np.pi * p["crank_hz"] * t + rng.uniform(0, 6.3)))
        load = p["load"] * cyc ** p["load_shape"]
        speed = p["motor_hz"] * (1 - p["droop"] * load / max(p["load"], 1e-6)) * (1 + 0.003 * slow_curve(n, rng))
        amps = p["mesh"] * p["mesh_decay"] ** np.arange(5)
        mesh = harmonics(p["teeth"] * speed, amps, n=n, sr=sr, rng=rng)
        ecc = 1 + p["side"] * np.sin(phase(speed, n=n, sr=sr, rng=rng))  # sidebands at +-motor speed
        y = mesh * ecc * (1 + 1.5 * load)
        y += p["rattle"] * (0.5 + load) * band_noise(n, rng, sr=sr, lo=800, hi=4000, slope=-2)
        y += harmonics(2 * speed, np.array([0.3, 0.15]), n=n, sr=sr, rng=rng)
        if p["knock"]:
            rev = np.arange(rng.uniform(0, 1 / p["motor_hz"]), n / sr, 1 / p["motor_hz"])
            y += impulses(rev, n=n, sr=sr, freq=2800, decay=0.003, amps=p["knock"] * 3, rng=rng)
        return y


class Pump:
    anomalies = ("contamination", "clogging", "leakage", "dry_run")  # Table 2 ("etc.")

    @staticmethod
    def product(rng):
        return {"shaft_hz": rng.uniform(22, 48), "vanes": int(rng.choice([5, 6, 7])), "tone": rng.uniform(0.4, 0.8),
                "hum": rng.uniform(0.2, 0.5), "flow": 1.0, "flow_lo": rng.uniform(100, 300),
                "flow_hi": rng.uniform(1500, 3500), "flow_tilt": rng.uniform(-4, -2), "pumps": 1,
                "particles": 0.0, "pulse": 0.0, "hiss": 0.0, "rub": 0.0}  # fmt: skip

    @staticmethod
    def _viscosity(p, v):
        k = float(v) - 1
        p["flow_hi"] *= 1 - 0.15 * k
        p["flow"] *= 1 - 0.12 * k
        p["shaft_hz"] *= 1 - 0.03 * k

    @staticmethod
    def _pumps(p, v):
        p["pumps"] = int(v)

    SHIFTS = {
        0: Shift("vis", ("1", "2"), ("4",), _viscosity.__func__),
        1: Shift("snr", ("m12",), ("m18",), _nothing),  # Table 1: target SNR -18 dB instead of -12
        2: Shift("pumps", ("1",), ("3",), _pumps.__func__),
        3: Shift("vis", ("1", "2"), ("4",), _viscosity.__func__),
        4: Shift("factory", ("1",), ("3",), _nothing, noise_factory={"target": 2}),
        5: Shift("pumps", ("1",), ("2",), _pumps.__func__),
    }

    @staticmethod
    def fault(p, kind, s, rng):
        if kind == "contamination":
            p["particles"] = 0.8 * s
        elif kind == "clogging":
            p["flow"] *= 1 - 0.4 * s
            p["shaft_hz"] *= 1 + 0.03 * s
            p["pulse"] = 0.5 * s
        elif kind == "leakage":
            p["hiss"] = 0.35 * s
        elif kind == "dry_run":
            p["flow"] *= 1 - 0.6 * s
            p["rub"] = 0.25 * s

    @staticmethod
    def _one(p, n, sr, rng):
        f = p["shaft_hz"] * (1 + 0.003 * slow_curve(n, rng))
        tones = harmonics(p["vanes"] * f, p["tone"] * np.array([1, 0.5, 0.25]), n=n, sr=sr, rng=rng)
        if p["pulse"]:
            tones *= 1 + p["pulse"] * np.sin(phase(f, n=n, sr=sr, rng=rng))
        y = tones + harmonics(100.0, p["hum"] * np.array([1, 0.5, 0.3, 0.1]), n=n, sr=sr, rng=rng)
        flow = band_noise(n, rng, sr=sr, lo=p["flow_lo"], hi=p["flow_hi"], slope=p["flow_tilt"])
        y += p["flow"] * 1.3 * (1 + 0.15 * slow_curve(n, rng)) * flow
        if p["particles"]:
            times = poisson_times(12, duration=n / sr, rng=rng)
            y += impulses(times, n=n, sr=sr, freq=3200, decay=0.002, amps=p["particles"] * 4, rng=rng)
        if p["hiss"]:
            y += p["hiss"] * band_noise(n, rng, sr=sr, lo=3500, hi=7000)
        if p["rub"]:
            y += harmonics(f, p["rub"] * 0.85 ** np.arange(30), n=n, sr=sr, rng=rng)
        return y

    @staticmethod
    def render(p, n, sr, rng):
        y = Pump._one(p, n, sr, rng)
        for _ in range(p["pumps"] - 1):  # the other pumps run normally with their own speed
            q = {**p, "shaft_hz": p["shaft_hz"] * rng.uniform(0.8, 1.2), "particles": 0.0, "pulse": 0.0,
                 "hiss": 0.0, "rub": 0.0, "flow": 1.0}  # fmt: skip
            y += 0.8 * Pump._one(q, n, sr, rng)
        return y


class Slider:
    anomalies = ("rail_damage", "loose_belt", "no_grease")  # Table 2 ("etc.")

    @staticmethod
    def product(rng):
        return {"vel": 1.0, "period": rng.uniform(1.5, 3.0), "duty": rng.uniform(0.5, 0.7), "mode": 1,
                "whine_hz": rng.uniform(400, 900), "whine": rng.uniform(0.5, 1.0), "roll": rng.uniform(0.6, 1.0),
                "belt": False, "mat_tilt": -2.0, "click": 0.0, "flap": 0.0, "squeal": 0.0}  # fmt: skip

    @staticmethod
    def _velocity(p, v):
        k = float(v) / 400
        p["vel"] = k
        p["period"] /= k**0.5

    @staticmethod
    def _mode(p, v):
        p["mode"] = int(v)

    @staticmethod
    def _material(p, v):
        p["belt"] = True
        p["mat_tilt"] = {"1": -3.0, "2": -1.5, "3": 1.5}[v]
        p["whine_hz"] *= {"1": 1.0, "2": 1.1, "3": 1.45}[v]

    SHIFTS = {
        0: Shift("vel", ("300", "400"), ("700",), _velocity.__func__),
        1: Shift("mode", ("1", "2"), ("3",), _mode.__func__),
        2: Shift("mat", ("1", "2"), ("3",), _material.__func__),
        3: Shift("vel", ("400", "500"), ("200",), _velocity.__func__),
        4: Shift("mode", ("1", "2"), ("3",), _mode.__func__),
        5: Shift("mat", ("1", "2"), ("3",), _material.__func__),
    }

    @staticmethod
    def fault(p, kind, s, rng):
        if kind == "rail_damage":
            p["click"] = 0.8 * s
        elif kind == "loose_belt":
            p["flap"] = 0.6 * s
        elif kind == "no_grease":
            p["squeal"] = 0.35 * s
            p["roll"] *= 1 + 0.4 * s

    @staticmethod
    def render(p, n, sr, rng):
        t = _t(n, sr)
        period = p["period"]
        pos = (t + rng.uniform(0, period)) % period / period
        # operation pattern: mode 1 = out/back with pauses, 2 = out only, 3 = two short strokes
        if p["mode"] == 2:
            moving = (pos < p["duty"]).astype(float)
        elif p["mode"] == 3:
            moving = ((pos < 0.3) | ((pos > 0.5) & (pos < 0.8))).astype(float)
        else:
            moving = ((pos < p["duty"] / 2) | ((pos > 0.5) & (pos < 0.5 + p["duty"] / 2))).astype(float)
        env = np.convolve(moving, np.hanning(801) / np.hanning(801).sum(), mode="same")  # 50 ms ramps
        vel = p["vel"] * env
        if p["flap"]:
            vel = vel * (1 + 0.15 * p["flap"] * np.sin(2 * np.pi * 11 * t))
        f = p["whine_hz"] * np.maximum(vel, 0.05)
        y = env * harmonics(f, p["whine"] * np.array([1, 0.6, 0.3, 0.15]), n=n, sr=sr, rng=rng)
        lo, hi = (200, 5000) if not p["belt"] else (150, 3000)
        y += p["roll"] * env * p["vel"] ** 0.5 * band_noise(n, rng, sr=sr, lo=lo, hi=hi, slope=p["mat_tilt"])
        if p["flap"]:
            y += p["flap"] * env * band_noise(n, rng, sr=sr, lo=60, hi=300) * (1 + np.sin(2 * np.pi * 11 * t))
        if p["click"]:
            starts = np.flatnonzero(np.diff(moving) > 0) / sr + 0.4 * p["duty"] * period / 2
            y += impulses(starts, n=n, sr=sr, freq=1800, decay=0.008, amps=p["click"] * 4, rng=rng)
        if p["squeal"]:
            sq = 3000 * (1 + 0.02 * slow_curve(n, rng, points=200))
            y += p["squeal"] * env * harmonics(sq, np.array([1.0, 0.3]), n=n, sr=sr, rng=rng)
        return y


class Valve:
    anomalies = ("contamination",)  # Table 2

    @staticmethod
    def product(rng):
        return {"period": rng.uniform(0.8, 1.6), "open": rng.uniform(0.3, 0.5), "click_hz": rng.uniform(1200, 3000),
                "click": 1.0, "flow": rng.uniform(0.2, 0.5), "pump": False, "water": False, "valves": 1,
                "rattle": 0.0, "leak": 0.0}  # fmt: skip

    @staticmethod
    def _pattern(p, v):
        p["period"] *= {"1": 1.0, "2": 1.3, "3": 0.6}[v]
        p["open"] *= {"1": 1.0, "2": 0.7, "3": 1.5}[v]

    @staticmethod
    def _pump(p, v):
        p["pump"] = v == "1"

    @staticmethod
    def _pump_water(p, v):
        p["pump"] = p["water"] = v == "1"

    @staticmethod
    def _valves(p, v):
        p["valves"] = int(v)

    SHIFTS = {
        0: Shift("pat", ("1", "2"), ("3",), _pattern.__func__),
        1: Shift("pump", ("0",), ("1",), _pump.__func__),
        2: Shift("valves", ("1",), ("2",), _valves.__func__),
        3: Shift("pat", ("1", "2"), ("3",), _pattern.__func__),
        4: Shift("pump", ("0",), ("1",), _pump_water.__func__),
        5: Shift("valves", ("1",), ("2",), _valves.__func__),
    }

    @staticmethod
    def fault(p, kind, s, rng):
        if kind == "contamination":  # a piece of metal caught: rattle after each event, leak when closed
            p["rattle"] = 0.25 * s
            p["leak"] = 0.06 * s

    @staticmethod
    def _one(p, n, sr, rng, faulty):
        dur = n / sr
        period = p["period"] * rng.uniform(0.97, 1.03)
        opens = np.arange(rng.uniform(0, period), dur, period)
        closes = opens + p["open"] * period
        y = impulses(
            np.concatenate([opens, closes]), n=n, sr=sr, freq=p["click_hz"], decay=0.004, amps=p["click"] * 5, rng=rng
        )
        y += impulses(opens, n=n, sr=sr, freq=180, decay=0.02, amps=p["click"] * 2, rng=rng, width=0.05)
        t = _t(n, sr)
        gate = np.zeros(n)
        for a, b in zip(opens, closes, strict=True):
            gate[(t >= a) & (t < b)] = 1
        flow = band_noise(n, rng, sr=sr, lo=500, hi=4000, slope=-1)
        y += p["flow"] * gate * flow
        if faulty and p["rattle"]:
            ev = np.concatenate([opens, closes])
            extra = (ev[:, None] + rng.uniform(0.01, 0.05, (len(ev), 2))).ravel()
            y += impulses(extra, n=n, sr=sr, freq=p["click_hz"] * 1.7, decay=0.002, amps=p["rattle"] * 4, rng=rng)
        if faulty and p["leak"]:
            y += p["leak"] * (1 - gate) * band_noise(n, rng, sr=sr, lo=2000, hi=6000)
        return y

    @staticmethod
    def render(p, n, sr, rng):
        y = Valve._one(p, n, sr, rng, faulty=True)
        for _ in range(p["valves"] - 1):  # the second valve, with its own timing
            q = {**p, "period": p["period"] * rng.uniform(1.2, 1.5), "click_hz": p["click_hz"] * rng.uniform(0.8, 1.2)}
            y += Valve._one(q, n, sr, rng, faulty=False)
        if p["pump"]:  # the pump that drives the flow, heard in the background
            y += harmonics(rng.uniform(28, 32), 0.3 * 0.7 ** np.arange(8), n=n, sr=sr, rng=rng)
            y += harmonics(100.0, np.array([0.3, 0.1]), n=n, sr=sr, rng=rng)
        if p["water"]:
            y += 0.4 * band_noise(n, rng, sr=sr, lo=300, hi=3000, slope=-3)
        return y


MODELS = {"fan": Fan, "gearbox": Gearbox, "pump": Pump, "slider": Slider, "valve": Valve}
# Table 3: gearbox and slide rail were recorded in an anechoic chamber and convolved with an RIR.
REVERBERATED = ("gearbox", "slider")

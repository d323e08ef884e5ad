"""Helpers shared by the benchmarks: a generated dataset to measure on, detector settings, and a timer."""

from __future__ import annotations

import time
from pathlib import Path

from mimii_due.config import setting
from mimii_due.data.index import index
from mimii_due.errors import ConfigError
from mimii_due.synth.generate import generate


def dataset(root: str | Path, *, machines=("fan",), sections=(0, 1, 2), scale: float = 0.1):
    """Generate (once) and index a synthetic dataset for a benchmark."""
    generate(root, machines=list(machines), sections=list(sections), scale=scale, seed=0, workers=2)
    return index(root)


def detector_params(items) -> dict:
    """``["key=value", ...]`` -> ``{key: value}``, each value read as the CLI's ``--set`` reads it
    (``config.setting``); an item without ``=`` raises ``ValueError``."""
    try:
        return dict(setting(item) for item in items)
    except ConfigError as e:
        raise ValueError(str(e)) from None


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0

"""Shared fixtures: tiny synthetic datasets in the real layout, made once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mimii_due.synth.generate import generate


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Two machine types, a development and an evaluation section each, about 120 clips."""
    root = tmp_path_factory.mktemp("tiny")
    return generate(root, machines=["fan", "valve"], sections=[0, 3], scale=0.02, seed=3, workers=2)


@pytest.fixture(scope="session")
def easy_dataset(tmp_path_factory) -> Path:
    """One machine type, three sections, large anomalies and 20 dB more SNR: an easy task."""
    root = tmp_path_factory.mktemp("easy")
    return generate(
        root, machines=["fan"], sections=[0, 1, 2], scale=0.03, seed=5, severity=2.0, snr_offset=20.0, workers=2
    )


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real DCASE 2020 clips in ../shared/real, found through MIMII_DUE_REAL_DATA."""
    value = os.environ.get("MIMII_DUE_REAL_DATA")
    if not value:
        pytest.skip("MIMII_DUE_REAL_DATA is not set (point it at ../shared/real to test on real recordings)")
    path = Path(value) / "dcase2020_id00"
    if not path.is_dir():
        pytest.skip(f"MIMII_DUE_REAL_DATA={value} holds no dcase2020_id00 folder")
    return path

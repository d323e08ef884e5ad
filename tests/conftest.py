"""Shared fixtures: tiny synthetic datasets in the real layout, made once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from mimii_due.synth.generate import generate

# Property tests draw fixed examples (a CI run is reproducible); HYPOTHESIS_PROFILE=random draws new
# ones on every run, to search for failures locally.
settings.register_profile("fixed", derandomize=True)
settings.register_profile("random", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fixed"))


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
        root, machines=["fan"], sections=[0, 1, 2], scale=0.03, seed=5, severity=3.0, snr_offset=20.0, workers=2
    )


def _real(name: str) -> Path:
    value = os.environ.get("MIMII_DUE_REAL_DATA")
    if not value:
        pytest.skip("MIMII_DUE_REAL_DATA is not set (point it at ../shared/real to test on real recordings)")
    path = (Path(value) / name).resolve()  # absolute: tests link to it from temporary folders
    if not path.is_dir():
        pytest.skip(f"MIMII_DUE_REAL_DATA={value} holds no {name} folder")
    return path


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real DCASE 2020 clips of one machine ID in ../shared/real, found through MIMII_DUE_REAL_DATA."""
    return _real("dcase2020_id00")


@pytest.fixture(scope="session")
def real_2023() -> Path:
    """24 real DCASE 2023 development clips, six machine types, the 2022-2025 naming."""
    return _real("dcase2023_dev")


@pytest.fixture(scope="session")
def real_2020_samples() -> Path:
    """93 real DCASE 2020 test clips of six machine types, normal and anomalous."""
    return _real("dcase2020_samples")


@pytest.fixture(scope="session")
def tiny_2023(tmp_path_factory) -> Path:
    """Two machine types in the 2022-2025 layout (one section, test/, attributes in the names)."""
    root = tmp_path_factory.mktemp("tiny2023")
    return generate(root, machines=["fan", "valve"], sections=[0], scale=0.02, seed=4, min_test=6, workers=2,
                    layout="dcase2023")  # fmt: skip

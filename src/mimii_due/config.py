"""Configurations whose defaults ARE the paper's settings (and the official baseline's).

Every number from the paper lives here once, with the section or table it comes from. Configs
round-trip through plain dicts and YAML, so a run folder records exactly what produced it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mimii_due.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel features of the official baseline (paper section 3)."""

    sample_rate: int = 16_000  # Section 2.1: 16 kHz
    n_fft: int = 1024  # Section 3: 64 ms frames at 16 kHz
    hop_length: int = 512  # Section 3: 32 ms hop
    n_mels: int = 128  # Section 3: 128-bin log-mel
    power: float = 2.0  # official baseline: power spectrogram
    eps: float = 2.220446049250313e-16  # official baseline: sys.float_info.epsilon


@dataclass(frozen=True)
class AEConfig:
    """The autoencoder baseline (paper section 3; official DCASE 2021 baseline)."""

    frames: int = 5  # Section 3: five consecutive frames -> 640-dim input
    hidden: int = 128  # Section 3: four 128-unit FC layers each side
    n_hidden: int = 4
    bottleneck: int = 8  # Section 3: 8-unit bottleneck
    epochs: int = 100  # Section 3: training stops after 100 epochs
    batch_size: int = 512  # Section 3
    lr: float = 1e-3  # Section 3: Adam, learning rate 0.001
    validation_split: float = 0.1  # official baseline
    seed: int = 0


@dataclass(frozen=True)
class MobileNetV2Config:
    """The MobileNetV2 section-classification baseline (paper section 3; official code)."""

    frames: int = 64  # Section 3: 64 consecutive frames x 128 mel bands
    hop_frames: int = 8  # official baseline: a patch every 8 frames
    width: float = 0.5  # official baseline: alpha=0.5
    epochs: int = 20  # Section 3
    batch_size: int = 32  # Section 3
    lr: float = 1e-5  # Section 3: Adam, learning rate 0.00001
    validation_split: float = 0.1  # official baseline
    score: str = "paper"  # "paper": log((1-p)/p); "official": the official code's log((1-p) - log p)
    seed: int = 0


@dataclass(frozen=True)
class ThresholdConfig:
    """Decision threshold of the official code: gamma fitted to training scores, 0.9 quantile."""

    quantile: float = 0.9


@dataclass(frozen=True)
class EvalConfig:
    max_fpr: float = 0.1  # DCASE Task 2: pAUC over FPR in [0, 0.1]


@dataclass
class RunConfig:
    """Everything a training run needs; written as ``config.yaml`` in the run folder."""

    detector: str = "ae"
    machines: list[str] | None = None  # None: every machine type found
    features: FeatureConfig = field(default_factory=FeatureConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    detector_params: dict[str, Any] = field(default_factory=dict)


def to_dict(cfg: Any) -> dict:
    """A plain, YAML-safe dict of a (nested) config dataclass."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict | None) -> T:
    """Build ``cls`` from a dict, rejecting unknown keys with a clear error."""
    data = dict(data or {})
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ConfigError(f"unknown setting(s) for {cls.__name__}: {', '.join(sorted(unknown))}")
    kwargs = {}
    for name, value in data.items():
        sub = _CONFIG_TYPES.get(name)
        kwargs[name] = from_dict(sub, value) if sub is not None and isinstance(value, dict) else value
    return cls(**kwargs)


_CONFIG_TYPES = {"features": FeatureConfig, "threshold": ThresholdConfig, "evaluation": EvalConfig}


def save_yaml(cfg: Any, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    tmp.replace(path)


def load_yaml(cls: type[T], path: str | Path) -> T:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config: {e}", path) from e
    return from_dict(cls, data)

"""Configurations whose defaults ARE the paper's settings (and the official baseline's).

Every number from the paper lives here once, with the section or table it comes from. Configs
round-trip through plain dicts (the run folder's ``run.json`` and each model's ``detector.json``),
and every value is checked when a config is built, before any work or any file is written.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from mimii_due.errors import ConfigError

T = TypeVar("T")

SAMPLE_RATE = 16_000  # Section 2.1: 16 kHz, 16-bit, single channel
MAX_FPR = 0.1  # DCASE Task 2: pAUC over FPR in [0, 0.1]
THRESHOLD_QUANTILE = 0.9  # official code: gamma fitted to training scores, 0.9 quantile


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel features of the official baseline (paper section 3)."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = 1024  # Section 3: 64 ms frames at 16 kHz
    hop_length: int = 512  # Section 3: 32 ms hop
    n_mels: int = 128  # Section 3: 128-bin log-mel
    power: float = 2.0  # official baseline: power spectrogram
    eps: float = 2.220446049250313e-16  # official baseline: sys.float_info.epsilon
    # Beside the log-mel: the magnitude spectrum of the whole clip (one FFT over all its samples),
    # averaged into this many equal bins from 0 Hz to the Nyquist frequency (0: not computed).
    # Wilkinghoff's systems (DCASE 2022-2024) learn from it: it resolves tones a frame cannot.
    spectrum_bins: int = 0
    # Which channel of a multichannel recording is read, counted from 0: the paper keeps the first
    # microphone (0); a recorder whose machine microphone is another channel names it (`--channel`).
    channel: int = 0

    def __post_init__(self):
        check(self, sample_rate=(1, None), n_fft=(16, None), hop_length=(1, None), n_mels=(1, None),
              spectrum_bins=(0, 1 << 20), channel=(0, 1023))  # fmt: skip


FEATURE_SETTINGS = ("n_fft", "hop_length", "n_mels", "power")  # what `--features KEY=VALUE` may change


def feature_settings(settings: dict | None) -> dict:
    """Settings of the log-mel (``--features n_mels=64``), checked to be :data:`FEATURE_SETTINGS`
    only (their values are checked where a detector is made with them). The others are not the
    user's to set here: clips are read at 16 kHz, a detector asks for its whole-clip spectrum,
    ``--channel`` names the channel."""
    settings = dict(settings or {})
    other = sorted(set(settings) - set(FEATURE_SETTINGS))
    if other:
        raise ConfigError(f"feature setting(s) {', '.join(other)} cannot be set; --features takes "
                          f"{', '.join(FEATURE_SETTINGS)}")  # fmt: skip
    return settings


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
    device: str = "auto"  # where the network trains: "auto" (a CUDA GPU if torch sees one), "cpu", "cuda[:N]"

    def __post_init__(self):
        check(self, frames=(1, None), hidden=(1, None), n_hidden=(1, None), bottleneck=(1, None), **TRAINING)
        check_device(self)


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
    device: str = "auto"  # as AEConfig.device

    def __post_init__(self):
        check(self, frames=(1, None), hop_frames=(1, None), width=(0.01, None), **TRAINING)
        choice(self, "score", ("paper", "official"))
        check_device(self)


# Ranges shared by every trained detector's config: at least one epoch, a positive batch and
# learning rate, a seed numpy and torch accept, a validation share below one.
TRAINING = {"epochs": (1, None), "batch_size": (1, None), "lr": (1e-12, None), "seed": (0, 2**32 - 1),
            "validation_split": (0.0, 0.9)}  # fmt: skip


def check(cfg: Any, **ranges: tuple[float | None, float | None]) -> None:
    """Raise :class:`ConfigError` unless every field is of its declared type and within its
    ``(low, high)`` range (``None``: open). Called from each config's ``__post_init__``."""
    hints = typing.get_type_hints(type(cfg))
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if not _is_instance(value, hints[f.name]):
            raise ConfigError(f"{type(cfg).__name__}.{f.name} must be {_type_name(hints[f.name])}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{type(cfg).__name__}.{f.name} must be a finite number, got {value!r}")
    for name, (low, high) in ranges.items():
        value = getattr(cfg, name)
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"at least {low}" if high is None else f"between {low} and {high}"
            raise ConfigError(f"{type(cfg).__name__}.{name} must be {span}, got {value!r}")


def check_device(cfg: Any) -> None:
    """A trained detector's ``device``: "auto", "cpu", "cuda" or "cuda:N" (the setting, not whether
    that GPU exists: that is asked when training starts, :func:`detectors.training.torch_device`)."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", cfg.device):
        raise ConfigError(f"{type(cfg).__name__}.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {cfg.device!r}")


def choice(cfg: Any, name: str, options: tuple) -> None:
    value = getattr(cfg, name)
    if value not in options:
        raise ConfigError(f"{type(cfg).__name__}.{name} must be one of {', '.join(map(str, options))}, got {value!r}")


def _is_instance(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_is_instance(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is tuple:
        args = typing.get_args(hint)
        return isinstance(value, tuple) and all(_is_instance(v, args[0]) for v in value)
    if origin is not None:
        return isinstance(value, origin)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return f"a list of {_type_name(typing.get_args(hint)[0])} values"
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    return getattr(hint, "__name__", str(hint))


def to_dict(cfg: Any) -> dict:
    """A plain, JSON-safe dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict | None) -> T:
    """Build ``cls`` from a dict, rejecting unknown keys and invalid values with a clear error.
    Lists become tuples where the field is a tuple (JSON has no tuples)."""
    data = dict(data or {})
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(
            f"unknown setting(s) for {cls.__name__}: {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if typing.get_origin(hint) is tuple:
            item = typing.get_args(hint)[0]
            if isinstance(value, list):
                value = tuple(value)
            elif isinstance(value, str):  # --set members=twfr_gmm,embedding, --set weights=6,1
                parts = [v.strip() for v in value.split(",") if v.strip()]
                value = tuple(parts if item is str else map(_value, parts))
            elif _is_instance(value, item):  # --set weights=6: a list of one
                value = (value,)
        if not _is_instance(value, hint):  # before __post_init__'s own checks, which assume the types
            raise ConfigError(f"{cls.__name__}.{name} must be {_type_name(hint)}, got {value!r}")
        kwargs[name] = value
    return cls(**kwargs)


def setting(item: str) -> tuple[str, Any]:
    """One ``KEY=VALUE`` setting (``--set``, a detector spec's ``name:KEY=VALUE``): the value read
    as YAML, so ``20`` is a number, ``[32,64]`` a list and ``auto`` a string."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"a setting is KEY=VALUE, got {item!r}")
    return key.strip(), _value(value, item)


_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # 1e-5, 2.5E3: numbers YAML 1.1 reads as text


def _value(text: str, item: str | None = None) -> Any:
    """A setting's value (or one item of a comma-separated list) read as YAML, and a number in
    exponent form without a dot (``lr=1e-5``) as a number: YAML 1.1 reads it as text, so the
    learning rate as people write it was refused ("lr must be float, got '1e-5'")."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"setting {item or text!r}: the value is not readable ({str(e).splitlines()[0]})") from None
    return float(value) if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()) else value


CONFIG_KEYS = ("detector", "detectors", "params", "features")  # how a detector is made: a --config file
RECORD_KEYS = ("data", "machines", "cache", "year", "channel", "version", "environment", "earlier_environments",
               "retraining_since")  # what else run.json says: of the data, the machine, the run's progress


def read_config(path: str | Path) -> dict:
    """A config file of how to make a detector, for ``train`` and ``run --config``: YAML (or a run's
    ``run.json``, since JSON is YAML) with ``detector`` (one spec, ``twfr_gmm:decay=auto``) or
    ``detectors`` (a list, or one comma-separated string), ``params`` (the detector's settings, as
    ``--set`` gives them) and ``features`` (its log-mel's, as ``--features``). A run's record of its
    data and machine (:data:`RECORD_KEYS`) is passed over: the command line says what data to use.

    Returns ``{"detectors": [...], "params": {...}, "features": {...}, "passed_over": [...]}``;
    anything else in the file is refused by name, before any work."""
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read the config file ({e.strerror or e})", path) from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"not a readable YAML or JSON file ({str(e).splitlines()[0]})", path) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"a config file is a mapping of {', '.join(CONFIG_KEYS)}, not {type(doc).__name__}", path)
    other = sorted(set(map(str, doc)) - set(CONFIG_KEYS) - set(RECORD_KEYS))
    if other:
        raise ConfigError(f"unknown key(s) {', '.join(other)}: a config file says {', '.join(CONFIG_KEYS)}", path)
    if "detector" in doc and "detectors" in doc:
        raise ConfigError("it has both detector and detectors: give one", path)
    names = doc.get("detectors", [doc["detector"]] if "detector" in doc else [])
    if isinstance(names, str):
        from mimii_due.detectors import split_specs  # the detectors import this module

        names = split_specs(names)
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError(f"detector(s) must be names (twfr_gmm, twfr_gmm:decay=auto), got {names!r}", path)
    out = {"detectors": [n.strip() for n in names], "passed_over": sorted(set(map(str, doc)) & set(RECORD_KEYS))}
    for key in ("params", "features"):
        value = doc.get(key) or {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{key} must be a mapping of settings (n_mels: 64), got {value!r}", path)
        out[key] = {k: float(v) if isinstance(v, str) and _EXPONENT.fullmatch(v.strip()) else v
                    for k, v in value.items()}  # fmt: skip
    try:
        feature_settings(out["features"])
    except ConfigError as e:
        raise ConfigError(str(e), path) from None
    return out

"""Detectors, found by name in one explicit registry."""

from __future__ import annotations

from mimii_due.config import THRESHOLD_QUANTILE, FeatureConfig, from_dict, setting
from mimii_due.detectors.autoencoder import AutoEncoderDetector
from mimii_due.detectors.base import Detector
from mimii_due.detectors.embedding import EmbeddingDetector
from mimii_due.detectors.ensemble import EnsembleDetector
from mimii_due.detectors.gaussian import GaussianDetector
from mimii_due.detectors.mobilenetv2 import MobileNetV2Detector
from mimii_due.detectors.smahal import SelectiveMahalanobisDetector
from mimii_due.detectors.twfr_gmm import TWFRGMMDetector
from mimii_due.errors import ConfigError

REGISTRY: dict[str, type[Detector]] = {
    AutoEncoderDetector.name: AutoEncoderDetector,
    GaussianDetector.name: GaussianDetector,
    MobileNetV2Detector.name: MobileNetV2Detector,
    SelectiveMahalanobisDetector.name: SelectiveMahalanobisDetector,
    EmbeddingDetector.name: EmbeddingDetector,
    TWFRGMMDetector.name: TWFRGMMDetector,
    EnsembleDetector.name: EnsembleDetector,
}


def make(
    name: str, *, features: FeatureConfig | None = None, threshold_quantile: float = THRESHOLD_QUANTILE, **params
) -> Detector:
    """A detector by registry name; ``params`` override fields of its config (the paper's defaults).
    Every setting is checked here, so a bad one fails before any work is done."""
    klass = REGISTRY.get(name)
    if klass is None:
        raise ConfigError(f"unknown detector {name!r}; choose from {', '.join(REGISTRY)}")
    if params and klass.config_class is None:
        raise ConfigError(f"detector {name!r} takes no settings (got {', '.join(sorted(params))})")
    config = from_dict(klass.config_class, params) if klass.config_class else None
    kw = {"features": features} if features is not None else {}
    return klass(config=config, threshold_quantile=threshold_quantile, **kw)


def parse_spec(spec: str) -> tuple[str, dict]:
    """A detector with settings, ``"name:KEY=VALUE:KEY=VALUE"`` (``"embedding:networks=5"``, an
    ensemble member or a benchmark row), as its registry name and settings."""
    name, *items = spec.split(":")
    try:
        return name.strip(), dict(setting(item) for item in items)
    except ConfigError as e:
        raise ConfigError(f"detector {spec!r}: {e}") from None


def spec_folder(spec: str) -> str:
    """A folder name for a detector spec: ``"twfr_gmm:decay=auto"`` -> ``"twfr_gmm_decay-auto"``."""
    return spec.replace(":", "_").replace("=", "-")


def make_spec(spec: str, **kw) -> Detector:
    """:func:`make` from a spec (:func:`parse_spec`); ``kw`` as :func:`make` takes them."""
    name, params = parse_spec(spec)
    return make(name, **params, **kw)

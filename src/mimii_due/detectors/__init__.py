"""Detectors, found by name in one explicit registry: the built-in ones, and those other packages
install as plugins.

A plugin is a :class:`~mimii_due.detectors.base.Detector` subclass that another installed package
names under the entry-point group ``mimii_due.detectors`` (``PLUGIN_GROUP``), with the detector's
``name`` as the entry point's; it is then a detector like ours everywhere (``train --detector``, an
ensemble member, ``compare_detectors.py``, ``score``, the service, a Ray cluster where the package
is installed on its nodes), and its saved models load by that name. A plugin that cannot be used
(it does not import, is not a detector, lacks ``_fit`` or ``_score``, its class's ``name`` is not
the entry point's, or it takes a built-in detector's or another plugin's name) is left out with a
warning that names it; the rest work as before.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import metadata

from mimii_due.config import THRESHOLD_QUANTILE, FeatureConfig, from_dict, setting
from mimii_due.detectors.autoencoder import AutoEncoderDetector
from mimii_due.detectors.base import Detector
from mimii_due.detectors.embedding import EmbeddingDetector
from mimii_due.detectors.ensemble import EnsembleDetector
from mimii_due.detectors.gaussian import GaussianDetector
from mimii_due.detectors.mobilenetv2 import MobileNetV2Detector
from mimii_due.detectors.smahal import SelectiveMahalanobisDetector
from mimii_due.detectors.twfr_gmm import TWFRGMMDetector
from mimii_due.errors import ConfigError, UnknownDetectorError

log = logging.getLogger(__name__)

PLUGIN_GROUP = "mimii_due.detectors"  # the entry-point group of detectors other packages install

BUILT_IN: dict[str, type[Detector]] = {
    AutoEncoderDetector.name: AutoEncoderDetector,
    GaussianDetector.name: GaussianDetector,
    MobileNetV2Detector.name: MobileNetV2Detector,
    SelectiveMahalanobisDetector.name: SelectiveMahalanobisDetector,
    EmbeddingDetector.name: EmbeddingDetector,
    TWFRGMMDetector.name: TWFRGMMDetector,
    EnsembleDetector.name: EnsembleDetector,
}


@dataclass(frozen=True)
class Plugin:
    """A detector an installed package provides, and which package (``run.json`` records it)."""

    detector: type[Detector]
    package: str  # the installed package that provides it, with its version ("my-asd 0.3")


def plugins() -> dict[str, Plugin]:
    """The detectors installed packages name under ``PLUGIN_GROUP``, by name; each one that cannot
    be used is left out with a warning saying which and why."""
    found: dict[str, Plugin] = {}
    sources: dict[str, str] = {}
    for ep in metadata.entry_points(group=PLUGIN_GROUP):
        where = f"detector plugin {ep.name!r} ({ep.value}" + (f", from {ep.dist.name})" if ep.dist else ")")
        if ep.name in BUILT_IN or ep.name in found:
            taken = "a built-in detector's name" if ep.name in BUILT_IN else f"the name of {sources[ep.name]}"
            log.warning("%s left out: %r is %s", where, ep.name, taken)
            continue
        try:
            klass = ep.load()
        except Exception as e:  # any error of someone else's package: it must not stop ours
            log.warning("%s left out: it does not import (%s: %s)", where, type(e).__name__, e)
            continue
        why = _unusable(klass, ep.name)
        if why:
            log.warning("%s left out: %s", where, why)
            continue
        package = f"{ep.dist.name} {ep.dist.version}" if ep.dist else ep.value
        found[ep.name], sources[ep.name] = Plugin(klass, package), where
    return found


def _unusable(klass, name: str) -> str:
    """Why ``klass`` cannot be the detector ``name`` ('' if it can)."""
    if not (isinstance(klass, type) and issubclass(klass, Detector)):
        return f"{klass!r} is not a subclass of mimii_due.detectors.base.Detector"
    if klass.name != name:  # saved models are found again by the class's name
        return f"its class says name = {klass.name!r}; the entry point must have the detector's name"
    missing = [m for m in ("_fit", "_score") if getattr(klass, m) is getattr(Detector, m)]
    if missing:
        return f"{klass.__name__} does not implement {' and '.join(missing)}"
    return ""


PLUGINS = plugins()
REGISTRY: dict[str, type[Detector]] = {**BUILT_IN, **{name: p.detector for name, p in PLUGINS.items()}}


def detector_class(name: str) -> type[Detector]:
    """The registered detector ``name`` (:class:`UnknownDetectorError` naming the choices if none)."""
    klass = REGISTRY.get(name)
    if klass is None:
        raise UnknownDetectorError(f"unknown detector {name!r}: neither a built-in detector ({', '.join(BUILT_IN)}) "
                                   "nor an installed detector plugin (install the package that provides it)")
    return klass


def setting_names(name: str) -> set[str]:
    """The settings the registered detector ``name`` takes (its config's fields): none for one without
    settings, or for a name that is not registered (:func:`make` names that error)."""
    from dataclasses import fields, is_dataclass

    klass = REGISTRY.get(name)
    return {f.name for f in fields(klass.config_class)} if klass and is_dataclass(klass.config_class) else set()


def catalogue() -> list[dict]:
    """Every registered detector: its name, where it comes from (built in, or the plugin's
    package), what it is (its class's docstring, else its module's, first line) and its settings
    with their defaults (what ``--set KEY=VALUE`` and an ensemble member's ``name:KEY=VALUE`` take)."""
    import inspect
    import sys
    from dataclasses import MISSING, fields, is_dataclass

    rows = []
    for name, klass in REGISTRY.items():
        doc = klass.__dict__.get("__doc__") or inspect.getdoc(sys.modules.get(klass.__module__)) or ""
        settings = {}
        for f in fields(klass.config_class) if is_dataclass(klass.config_class) else ():
            factory = None if f.default_factory is MISSING else f.default_factory
            settings[f.name] = f.default if f.default is not MISSING else factory() if factory else None
        rows.append({"name": name, "source": "built in" if name in BUILT_IN else f"plugin, {PLUGINS[name].package}",
                     "about": inspect.cleandoc(doc).split("\n")[0] if doc else "", "settings": settings})  # fmt: skip
    return rows


def make(
    name: str, *, features: FeatureConfig | None = None, threshold_quantile: float = THRESHOLD_QUANTILE, **params
) -> Detector:
    """A detector by registry name; ``params`` override fields of its config (the paper's defaults).
    Every setting is checked here, so a bad one fails before any work is done."""
    klass = detector_class(name)
    if params and klass.config_class is None:
        raise ConfigError(f"detector {name!r} takes no settings (got {', '.join(sorted(params))})")
    config = from_dict(klass.config_class, params) if klass.config_class else None
    kw = {"features": features} if features is not None else {}
    return klass(config=config, threshold_quantile=threshold_quantile, **kw)


def split_outside(text: str, sep: str) -> list[str]:
    """``text`` split at each ``sep`` that is not inside square brackets, so that a list setting
    keeps its items: ``"ae,ensemble:members=[twfr_gmm,ae]"`` at ``,`` gives two parts."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        depth += (c == "[") - (c == "]")
        if c == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def split_specs(text: str | None) -> list[str]:
    """Comma-separated detector specs (``run --detectors``), each once, in the order given."""
    return list(dict.fromkeys(s.strip() for s in split_outside(text or "", ",") if s.strip()))


def parse_spec(spec: str) -> tuple[str, dict]:
    """A detector with settings, ``"name:KEY=VALUE:KEY=VALUE"`` (``"embedding:networks=5"``, an
    ensemble member, ``train --detector``, a ``run --detectors`` or benchmark row), as its registry
    name and settings; a list setting in brackets may hold specs (``ensemble:members=[twfr_gmm,ae:epochs=5]``)."""
    name, *items = split_outside(spec, ":")
    try:
        return name.strip(), dict(setting(item) for item in items)
    except ConfigError as e:
        raise ConfigError(f"detector {spec!r}: {e}") from None


def merge_spec(spec: str, params: dict | None = None) -> tuple[str, dict]:
    """The registry name of ``spec`` and its settings with ``params`` (``--set``, ``--epochs``)
    added; a setting that both give, with two values, is refused rather than one silently winning."""
    name, own = parse_spec(spec)
    for key, value in (params or {}).items():
        if key in own and own[key] != value:
            raise ConfigError(f"detector {spec!r} sets {key}={own[key]!r}, and {key}={value!r} is given besides: "
                              "give it once")  # fmt: skip
    return name, own | dict(params or {})


def format_spec(name: str, params: dict | None = None) -> str:
    """The spec of a detector with ``params`` (a run's ``run.json``): :func:`parse_spec`'s inverse,
    ``("twfr_gmm", {"decay": "auto"})`` -> ``"twfr_gmm:decay=auto"``."""

    def text(v) -> str:
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(map(text, v)) + "]"
        return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)

    return ":".join([name, *(f"{k}={text(v)}" for k, v in (params or {}).items())])


def spec_folder(spec: str) -> str:
    """A folder name for a detector spec: ``"twfr_gmm:decay=auto"`` -> ``"twfr_gmm_decay-auto"``
    (a list setting's brackets dropped, its commas and spaces ``-``: ``"ensemble:members=[twfr_gmm,ae]"`` ->
    ``"ensemble_members-twfr_gmm-ae"``)."""
    return re.sub(r"[, ]", "-", re.sub(r"[\[\]]", "", spec.replace(":", "_").replace("=", "-")))


def make_spec(spec: str, **kw) -> Detector:
    """:func:`make` from a spec (:func:`parse_spec`); ``kw`` as :func:`make` takes them."""
    name, params = parse_spec(spec)
    return make(name, **params, **kw)

"""The detector contract and the registry.

Every detector, classic or deep, has the same small surface (after scikit-learn and PyOD):

- ``__init__(**params)`` only stores its configuration: no work, no randomness, no I/O;
- ``fit(clips) -> self`` trains on normal clips (a clip table); fitted attributes end in ``_``;
- ``score(clips) -> np.ndarray`` of shape ``(n_clips,)``: higher means more anomalous, always;
- ``predict(clips)``: ``score > threshold_``, defined here only;
- ``save(dir)`` / ``load(dir)``: a self-contained artifact that scores new clips without the
  training data.

Subclasses implement ``_fit(features, clips)``, ``_score(features, clips)`` and, if they hold
weights, ``_state()`` / ``_set_state(state)``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from mimii_due import __version__
from mimii_due.config import FeatureConfig, from_dict, to_dict
from mimii_due.errors import ModelError, NotFittedError
from mimii_due.evaluation.threshold import gamma_threshold
from mimii_due.features.extract import Features, extract

Progress = Callable[[int, int, str], None]  # (step, total, info)


class Detector:
    """Base class: feature extraction, threshold, predict, save/load."""

    name: ClassVar[str] = "base"
    config_class: ClassVar[type | None] = None  # the dataclass of the detector's own settings

    def __init__(
        self,
        *,
        config: Any = None,
        features: FeatureConfig = FeatureConfig(),
        threshold_quantile: float = 0.9,
        cache: str | Path | None = None,
    ):
        self.config = config if config is not None else (self.config_class() if self.config_class else None)
        self.features = features
        self.threshold_quantile = threshold_quantile
        self.cache = cache

    # ------------------------------------------------------------------ the contract
    def fit(
        self, clips: pd.DataFrame, *, checkpoint: str | Path | None = None, progress: Progress | None = None
    ) -> Detector:
        """Train on normal clips; then fit the decision threshold to the training clips' scores.

        ``checkpoint`` names a folder where long trainings save their state every epoch and from
        which a new call resumes.
        """
        if len(clips) == 0:
            raise ModelError(f"{self.name}: no training clips")
        if "label" in clips and (clips["label"] == "anomaly").any():
            raise ModelError(f"{self.name}: training clips must be normal (unsupervised ASD)")
        feats, clips = self.load_features(clips)
        self._fit(feats, clips, checkpoint=checkpoint, progress=progress)
        return self._fit_threshold(feats, clips)

    def _fit_threshold(self, features: Features, clips: pd.DataFrame) -> Detector:
        """After training: the sections seen, the training clips' scores and the threshold."""
        self.sections_ = sorted(int(s) for s in clips["section"].unique())
        self.train_scores_ = np.asarray(self._train_scores(features, clips), dtype=np.float64)
        self.threshold_ = gamma_threshold(self.train_scores_, quantile=self.threshold_quantile)
        return self

    def score(self, clips: pd.DataFrame, *, features: Features | None = None) -> np.ndarray:
        """Anomaly scores, shape ``(n_clips,)``; higher means more anomalous."""
        self._check_fitted()
        if features is None:
            features, kept = self.load_features(clips)
            if len(kept) != len(clips):
                raise ModelError(f"{self.name}: {len(clips) - len(kept)} clip(s) could not be read")
        unseen = set(int(s) for s in clips["section"].unique()) - set(self.sections_)
        if unseen and self.needs_known_sections:
            raise ModelError(
                f"{self.name}: section(s) {sorted(unseen)} were not in the training data "
                f"(trained on {self.sections_}); this detector cannot score them"
            )
        return np.asarray(self._score(features, clips), dtype=np.float64)

    def predict(self, clips: pd.DataFrame) -> np.ndarray:
        """Decisions: ``score > threshold_`` (True = anomalous)."""
        return self.score(clips) > self.threshold_

    needs_known_sections: ClassVar[bool] = False

    def load_features(self, clips: pd.DataFrame, on_error: str = "raise") -> tuple[Features, pd.DataFrame]:
        return extract(clips, cfg=self.features, cache=self.cache, on_error=on_error)

    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise NotFittedError(f"{self.name} detector is not fitted: call fit() or load() first")

    # ------------------------------------------------------------------ persistence
    def params(self) -> dict:
        return {
            "config": to_dict(self.config) if self.config is not None else None,
            "features": to_dict(self.features),
            "threshold_quantile": self.threshold_quantile,
        }

    def save(self, directory: str | Path) -> Path:
        """Write the artifact (``detector.json`` and ``state.pt``) atomically into ``directory``."""
        self._check_fitted()
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        meta = {
            "detector": self.name,
            "version": __version__,
            "params": self.params(),
            "threshold": self.threshold_,
            "sections": self.sections_,
            "train_scores": [float(s) for s in self.train_scores_],
            "history": getattr(self, "history_", []),
        }
        (tmp / "detector.json").write_text(json.dumps(meta, indent=1))
        torch.save(self._state(), tmp / "state.pt")
        if directory.exists():
            old = directory.with_name(directory.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old)
        else:
            tmp.rename(directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path, *, cache: str | Path | None = None) -> Detector:
        """Load an artifact written by :meth:`save` (of any registered detector when called on
        :class:`Detector`)."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / "detector.json").read_text())
            state = torch.load(directory / "state.pt", map_location="cpu", weights_only=False)
        except (OSError, json.JSONDecodeError, RuntimeError) as e:
            raise ModelError(f"cannot load detector: {e}", directory) from e
        from mimii_due.detectors import REGISTRY

        klass = REGISTRY.get(meta["detector"])
        if klass is None:
            raise ModelError(f"unknown detector {meta['detector']!r}", directory)
        p = meta["params"]
        det = klass(
            config=from_dict(klass.config_class, p["config"]) if klass.config_class else None,
            features=from_dict(FeatureConfig, p["features"]),
            threshold_quantile=p["threshold_quantile"],
            cache=cache,
        )
        det.threshold_ = float(meta["threshold"])
        det.sections_ = list(meta["sections"])
        det.train_scores_ = np.asarray(meta["train_scores"])
        try:
            det._set_state(state)
        except (RuntimeError, KeyError, ValueError) as e:  # e.g. saved by a version with other layers
            raise ModelError(
                f"the saved {meta['detector']} model does not fit this version of mimii-due "
                f"(saved by {meta.get('version', '?')}); retrain it ({str(e).splitlines()[0]})",
                directory,
            ) from e
        return det

    # ------------------------------------------------------------------ for subclasses
    def _fit(self, features: Features, clips: pd.DataFrame, *, checkpoint=None, progress=None) -> None:
        raise NotImplementedError

    def _score(self, features: Features, clips: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    def _train_scores(self, features: Features, clips: pd.DataFrame) -> np.ndarray:
        """Scores of the training clips, for the threshold (a detector that memorises its
        training clips overrides this with a leave-one-out version)."""
        return self._score(features, clips)

    def _state(self) -> dict:
        return {}

    def _set_state(self, state: dict) -> None:
        pass

"""The detector contract and the artifact format.

Every detector, classic or deep, has the same small surface (after scikit-learn and PyOD):

- ``__init__(**params)`` only stores its configuration: no work, no randomness, no I/O;
- ``fit(features, clips) -> self`` trains on the features of normal clips (``clips``: the clip
  table's rows for the same clips, in the same order); fitted attributes end in ``_``. Optional
  ``outliers=(features, clips)``: normal clips of *other* machine types, which a detector that
  learns from auxiliary classes (``uses_outliers``) trains on as extra classes (outlier exposure)
  and every other detector ignores; they are never part of the model of normal sound;
- ``score(features, clips) -> np.ndarray`` of shape ``(n_clips,)``: higher means more anomalous,
  always, and a clip's score never depends on which other clips are in the call;
- ``predict(features, clips)``: ``score > threshold_``, defined here only;
- ``domain_scores(features, clips) -> np.ndarray`` of shape ``(n_clips, 2)``: a detector that
  judges a clip by the domain it fits best (a density or a bank per section *and domain*) gives
  each clip's score as the source domain and as the target domain judge it (``inf`` where a
  section has no clips of that domain); every other detector its score in both columns. An
  ensemble combines members domain by domain with them (``detectors/ensemble.py``);
- ``save(dir)`` / ``load(dir)``: a self-contained artifact that scores new clips without the
  training data.

Detectors never open audio files: the pipeline makes features once and hands them over, so a
service or a cluster task that already holds the audio uses a detector the same way.

Subclasses implement ``_fit(features, clips)``, ``_score(features, clips)``, if they judge by
domain ``_domain_scores`` (and ``_train_domain_scores`` where their training scores are held out),
and, if they hold weights, ``_state()`` / ``_set_state(state)``. ``train_scores_`` are the
training clips' scores (``train_domain_scores_`` their domain parts, kept for an ensemble's fit,
not saved);
``held_out_`` says which of them were made without that clip in the model (``_held_out``; all of
them by default: training-free detectors, those whose ``_train_scores`` hold clips out, and the
paper's baselines, whose official threshold takes their in-sample training scores as they are:
on a real machine with 60 training clips they alarmed on 47 % (AE) and 53 % (Selective
Mahalanobis) of new normal clips at a nominal 10 %, ``benchmarks/real_clips.py``). The
threshold, and an ensemble's standardisation, use the held-out ones where there are
``MIN_HELD_OUT`` of them (``calibration_rows``): a network's distances to clips it has learned are
smaller than a new normal clip's. The state is saved with ``torch.save`` after numpy
arrays are turned into tensors and lists, and loaded with ``weights_only=True``: loading a model
someone sent you never runs their code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from mimii_due import __version__, atomic
from mimii_due.config import THRESHOLD_QUANTILE, FeatureConfig, from_dict, to_dict
from mimii_due.data.audio import cut
from mimii_due.errors import ConfigError, ModelError, NotFittedError, UnknownDetectorError
from mimii_due.evaluation.threshold import gamma_threshold
from mimii_due.features.extract import Features
from mimii_due.progress import Progress


class Detector:
    """Base class: input checks, threshold, predict, save/load."""

    name: ClassVar[str] = "base"
    config_class: ClassVar[type | None] = None  # the dataclass of the detector's own settings
    needs_known_sections: ClassVar[bool] = False  # True: refuses sections it was not trained on
    uses_outliers: ClassVar[bool] = False  # True: learns from other machine types' clips (outlier exposure)
    trains_network: ClassVar[bool] = False  # True: a neural network learned from the clips (needs many)

    def __init__(
        self,
        *,
        config: Any = None,
        features: FeatureConfig | None = None,
        threshold_quantile: float = THRESHOLD_QUANTILE,
    ):
        if config is not None and self.config_class is not None and not isinstance(config, self.config_class):
            raise ConfigError(f"{self.name}: config must be a {self.config_class.__name__}")
        if not 0 < threshold_quantile < 1:
            raise ConfigError(f"threshold quantile must be between 0 and 1, got {threshold_quantile!r}")
        self.config = config if config is not None else (self.config_class() if self.config_class else None)
        self.features = self._feature_config(features)
        self.threshold_quantile = threshold_quantile

    def _feature_config(self, features: FeatureConfig | dict | None) -> FeatureConfig:
        """The features given, as a :class:`FeatureConfig` or as a dict of the settings that differ
        from this detector's own (``features={"n_mels": 64}``); none given: its own."""
        if features is None:
            return self.default_features()
        if isinstance(features, FeatureConfig):
            return features
        if isinstance(features, dict):
            return from_dict(FeatureConfig, to_dict(self.default_features()) | features)
        raise ConfigError(f"{self.name}: features must be a FeatureConfig or a dict of its settings, "
                          f"not {type(features).__name__}")  # fmt: skip

    def default_features(self) -> FeatureConfig:
        """The features this detector reads, unless told otherwise (the official baseline's log-mel)."""
        return FeatureConfig()

    @property
    def min_frames(self) -> int:
        """The fewest log-mel frames a clip must have to be scored (shorter clips are bad input)."""
        return 1

    @property
    def scorable_frames(self) -> int:
        """The fewest frames a clip must have to be scored by the fitted model: ``min_frames``, and
        half the median length of its training clips. A clip cut shorter than that (a recorder
        stopped early, a copy broken off) is a broken recording whose statistics the model never
        saw: scored, its few frames gave scores far above any threshold, an alarm no machine
        caused (a 0.1 s clip against TWFR-GMM trained on 10 s clips: 2,438 against a threshold of 4.3)."""
        typical = getattr(self, "clip_frames_", None)
        return self.min_frames if typical is None else max(self.min_frames, (typical + 1) // 2)

    def windows(self, n_samples: int) -> list[tuple[int, int]]:
        """Where a recording of ``n_samples`` samples is cut to be scored by the fitted model:
        ``[(0, n_samples)]`` for a clip up to 1.5 times its training clips' median length; a
        longer one (a recorder that writes a minute or an hour per file) in windows of that length
        (:func:`~mimii_due.data.audio.cut`), each scored and decided as a clip of its own. Scored
        whole, a long recording's pooled features averaged an anomaly away: a generated fan clip that
        scored 2.06 against TWFR-GMM's threshold of 1.59 scored -1.06 as the last 10 s of a 60 s
        recording."""
        typical = getattr(self, "clip_frames_", None)
        return cut(n_samples, 0 if typical is None else typical * self.features.hop_length - 1)  # as many frames

    @property
    def taught(self) -> bool:
        """Whether the fitted model had something to learn from its training clips. A network
        trained to tell classes apart had nothing where it saw a single class (the embedding of a
        machine type with one section, no attributes and no other machine types beside it); an
        ensemble leaves such a member out."""
        return True

    def would_learn(self, clips: pd.DataFrame, outliers: pd.DataFrame | None = None) -> bool:
        """Whether fitting on ``clips`` (and ``outliers``' rows) would teach it something: what
        :attr:`taught` will say, known before the training (an ensemble does not train a member it
        would leave out)."""
        return True

    # ------------------------------------------------------------------ the contract
    def fit(
        self,
        features: Features,
        clips: pd.DataFrame,
        *,
        checkpoint: str | Path | None = None,
        progress: Progress | None = None,
        outliers: tuple[Features, pd.DataFrame] | None = None,
    ) -> Detector:
        """Train on the features of normal clips; then fit the decision threshold to the
        training clips' scores (gamma distribution, ``threshold_quantile``).

        ``checkpoint`` names a folder where long trainings save their state every epoch and from
        which a new call resumes. ``outliers``: features and clip rows of other machine types'
        normal clips, for detectors that ``uses_outliers`` (ignored by the others).
        """
        for what, c in (("training", clips), ("outlier", None if outliers is None else outliers[1])):
            if c is not None and "label" in c and (c["label"] == "anomaly").any():
                raise ModelError(f"{self.name}: {what} clips must be normal (unsupervised ASD)")
        if len(clips) == 0:
            raise ModelError(f"{self.name}: no training clips")
        if "machine" in clips and clips["machine"].nunique() > 1:  # their sections would be taken for one's
            raise ModelError(f"{self.name}: training clips of {', '.join(sorted(map(str, clips['machine'].unique())))}"
                             ": a model learns one machine type (fit one per machine type; other machine types' "
                             "clips go in as outliers)")  # fmt: skip
        clips = self._check_input(features, clips, self.min_frames)
        if outliers is not None:
            outliers = (outliers[0], self._check_input(*outliers, self.min_frames))
        self.__dict__.pop("clip_frames_", None)  # a model fitted again: its scoring needs no length yet
        self._fit(features, clips, checkpoint=checkpoint, progress=progress, outliers=outliers)
        self.sections_ = sorted(int(s) for s in clips["section"].unique())
        self.clip_frames_ = int(np.median(features.lengths))
        parts = self._train_domain_scores(features, clips)  # before _train_scores, which may free what it used
        self.train_scores_ = self._shaped(self._train_scores(features, clips), "_train_scores", len(clips))
        if not np.isfinite(self.train_scores_).all():
            raise ModelError(f"{self.name}: training gave non-finite scores (diverged?); try a lower learning rate")
        self.train_domain_scores_ = (self._both(self.train_scores_) if parts is None
                                     else self._shaped(parts, "_train_domain_scores", len(clips), 2))  # fmt: skip
        self.held_out_ = self._shaped(self._held_out(clips), "_held_out", len(clips)).astype(bool)
        self._fit_threshold()
        return self

    def _fit_threshold(self) -> None:
        rows = calibration_rows(self.held_out_)
        self.threshold_ = gamma_threshold(self.train_scores_[rows], quantile=self.threshold_quantile)

    def set_false_alarm_rate(self, rate: float) -> Detector:
        """Fit the decision threshold again for another nominal false-alarm rate (``1 -
        threshold_quantile``) from the training scores kept with the model: no retraining, and the
        same threshold as training with that rate gives."""
        self._check_fitted()
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < 1:
            raise ConfigError(f"the false-alarm rate must be a number between 0 and 1 (0.01: one in a hundred "
                              f"normal clips), not {rate!r}")  # fmt: skip
        self.threshold_quantile = 1 - rate
        self._fit_threshold()
        return self

    def score(self, features: Features, clips: pd.DataFrame) -> np.ndarray:
        """Anomaly scores, shape ``(n_clips,)``; higher means more anomalous."""
        clips = self._check_scoring(features, clips)
        if len(clips) == 0:
            return np.zeros(0)
        scores = self._shaped(self._score(features, clips), "_score", len(clips))
        self._check_finite(scores, clips)
        return scores

    def domain_scores(self, features: Features, clips: pd.DataFrame) -> np.ndarray:
        """Each clip's score as the source (column 0) and the target domain (column 1) of its
        section judge it, shape ``(n_clips, 2)``; ``inf`` where a section has no clips of a domain.
        A detector that does not judge by domain gives its score in both columns."""
        clips = self._check_scoring(features, clips)
        if len(clips) == 0:
            return np.zeros((0, 2))
        parts = self._domain_scores(features, clips)
        if parts is None:
            return self._both(self.score(features, clips))
        parts = self._shaped(parts, "_domain_scores", len(clips), 2)
        self._check_finite(parts.min(axis=1), clips)
        return parts

    @staticmethod
    def _both(scores: np.ndarray) -> np.ndarray:
        return np.column_stack([scores, scores])

    def _shaped(self, values, method: str, n: int, columns: int | None = None) -> np.ndarray:
        """``values`` as float64, checked to be one per clip (and ``columns`` per clip where given):
        a detector of one's own (a plugin) that returns another shape is named with its method,
        instead of failing later at an index or, worse, scoring clips with other clips' scores."""
        try:
            out = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ModelError(f"{self.name}: {method} gave no array of numbers ({e})") from None
        want = (n,) if columns is None else (n, columns)
        if out.shape != want:
            per_clip = "one value per clip" if columns is None else f"{columns} values per clip (source, target)"
            raise ModelError(f"{self.name}: {method} gave an array of shape {out.shape} for {n} clips, not {want} "
                             f"({per_clip})")  # fmt: skip
        return out

    def _check_scoring(self, features: Features, clips: pd.DataFrame) -> pd.DataFrame:
        self._check_fitted()
        clips = self._check_input(features, clips, self.scorable_frames)
        unseen = set(int(s) for s in clips["section"].unique()) - set(self.sections_)
        if unseen and self.needs_known_sections:
            raise ModelError(
                f"{self.name}: section(s) {sorted(unseen)} were not in the training data "
                f"(trained on {self.sections_}); this detector cannot score them"
            )
        return clips

    def _check_finite(self, scores: np.ndarray, clips: pd.DataFrame) -> None:
        if not np.isfinite(scores).all():
            bad = (
                clips["filename"].iloc[np.flatnonzero(~np.isfinite(scores))[:3]].tolist() if "filename" in clips else []
            )
            raise ModelError(f"{self.name}: non-finite anomaly score for {', '.join(map(str, bad)) or 'some clips'}")

    def predict(self, features: Features, clips: pd.DataFrame) -> np.ndarray:
        """Decisions: ``score > threshold_`` (True = anomalous)."""
        return self.score(features, clips) > self.threshold_

    def _check_input(self, features: Features, clips: pd.DataFrame, min_frames: int) -> pd.DataFrame:
        if not isinstance(features, Features):
            raise TypeError(f"{self.name}: features must be a Features object (see mimii_due.features.extract)")
        if len(features) != len(clips):
            raise ModelError(f"{self.name}: {len(features)} clips of features but {len(clips)} rows of clip table")
        if features.data.shape[1] != self.features.n_mels:
            raise ModelError(
                f"{self.name}: features have {features.data.shape[1]} bands, the model {self.features.n_mels}"
            )
        short = np.flatnonzero(features.lengths < min_frames)
        if len(short):
            names = clips["filename"].iloc[short[:3]].tolist() if "filename" in clips else short[:3].tolist()
            raise ModelError(
                f"{self.name}: {len(short)} clip(s) shorter than the {min_frames} frames this model needs "
                f"({', '.join(map(str, names))})"
            )
        return clips.reset_index(drop=True)

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
        """Write the artifact (``detector.json`` and ``state.pt``) atomically into ``directory``, a new
        or empty folder or an earlier model's (which it replaces); a file or a folder of other files
        there is refused (:func:`~mimii_due.atomic.atomic_dir`)."""
        self._check_fitted()
        meta = {
            "detector": self.name,
            "version": __version__,
            "params": self.params(),
            "threshold": self.threshold_,
            "sections": self.sections_,
            "train_scores": [float(s) for s in self.train_scores_],
            "held_out": [bool(h) for h in self.held_out_],
            "clip_frames": getattr(self, "clip_frames_", None),
            "history": getattr(self, "history_", []),
        }
        with atomic.atomic_dir(directory, marker="detector.json") as tmp:
            (tmp / "detector.json").write_text(json.dumps(meta, indent=1))
            torch.save(pack(self._state()), tmp / "state.pt")
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> Detector:
        """Load an artifact written by :meth:`save` (of any registered detector when called on
        :class:`Detector`). Nothing in the files is executed: weights load with ``weights_only``."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / "detector.json").read_text())
        except (OSError, ValueError) as e:  # ValueError: not JSON, or not even UTF-8 text
            raise ModelError(f"cannot load detector: detector.json: {str(e).splitlines()[0]}", directory) from e
        if not isinstance(meta, dict) or not isinstance(meta.get("params"), dict):
            raise ModelError("cannot load detector: detector.json is not a saved mimii-due model", directory)
        try:
            state = torch.load(directory / "state.pt", map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError) as e:
            raise ModelError(f"cannot load detector: {str(e).splitlines()[0]}", directory) from e
        except Exception as e:  # the weights-only unpickler refuses anything but tensors and plain data
            raise ModelError(
                f"refusing to load state.pt: it holds more than weights ({type(e).__name__})", directory
            ) from e
        from mimii_due.detectors import detector_class

        try:
            klass = detector_class(meta.get("detector"))
        except UnknownDetectorError as e:
            raise ModelError(f"cannot load the model: {e}", directory) from None
        p = meta["params"]
        try:
            det = klass(
                config=from_dict(klass.config_class, p["config"]) if klass.config_class else None,
                features=from_dict(FeatureConfig, p["features"]),
                threshold_quantile=p["threshold_quantile"],
            )
            det.threshold_ = float(meta["threshold"])
            det.sections_ = list(meta["sections"])
            det.train_scores_ = np.asarray(meta["train_scores"])
            det.held_out_ = np.asarray(meta.get("held_out", [True] * len(det.train_scores_)), bool)
            det.history_ = list(meta.get("history", []))
            if meta.get("clip_frames") is not None:  # saved before 2026-12-07: no length check
                det.clip_frames_ = int(meta["clip_frames"])
            det._set_state(state)
        except UnknownDetectorError as e:  # an ensemble member's plugin not installed here
            raise ModelError(f"cannot load the model: {e}", directory) from None
        except (RuntimeError, KeyError, ValueError, TypeError, ConfigError) as e:  # saved by another version
            raise ModelError(
                f"the saved {meta['detector']} model does not fit this version of mimii-due "
                f"(saved by {meta.get('version', '?')}); retrain it ({str(e).splitlines()[0]})",
                directory,
            ) from e
        return det

    # ------------------------------------------------------------------ for subclasses
    def _fit(self, features: Features, clips: pd.DataFrame, *, checkpoint=None, progress=None,
             outliers=None) -> None:  # fmt: skip
        raise NotImplementedError

    def _score(self, features: Features, clips: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    def _train_scores(self, features: Features, clips: pd.DataFrame) -> np.ndarray:
        """Scores of the training clips, for the threshold (a detector that memorises its
        training clips overrides this with a leave-one-out version)."""
        return self._score(features, clips)

    def _domain_scores(self, features: Features, clips: pd.DataFrame) -> np.ndarray | None:
        """The ``(n_clips, 2)`` source and target parts of ``_score`` for a detector that judges
        by domain; ``None``: it does not."""
        return None

    def _train_domain_scores(self, features: Features, clips: pd.DataFrame) -> np.ndarray | None:
        """The training clips' domain parts (called before ``_train_scores``); a detector whose
        ``_train_scores`` hold clips out overrides this to hold the same clips out."""
        return self._domain_scores(features, clips)

    def _held_out(self, clips: pd.DataFrame) -> np.ndarray:
        """Which training scores to calibrate with as a new clip's (called after ``_train_scores``):
        all, unless a detector that learns its clips says which it did not learn."""
        return np.ones(len(clips), bool)

    def _state(self) -> dict:
        return {}

    def _set_state(self, state: dict) -> None:
        pass


def class_keys(clips: pd.DataFrame) -> np.ndarray:
    """Each clip's section x attributes class, ``"00|strength_1"``: the attributes of its name, else
    those of ``attributes_XX.csv`` (the auxiliary classes and pseudo-anomaly groups of detectors)."""
    n = len(clips)
    attrs = clips["attributes"].fillna("").astype(str).to_numpy() if "attributes" in clips else np.full(n, "")
    if "csv_attributes" in clips:
        attrs = np.where(attrs == "", clips["csv_attributes"].fillna("").astype(str).to_numpy(), attrs)
    return np.array([f"{int(s):02d}|{a}" for s, a in zip(clips["section"], attrs, strict=True)])


def pack(obj: Any) -> Any:
    """Make a state loadable with ``torch.load(weights_only=True)``: numeric numpy arrays become
    tensors, string arrays lists, numpy scalars Python numbers; containers are walked."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            return obj.tolist()
        arr = np.ascontiguousarray(obj)
        return torch.from_numpy(arr if arr.flags.writeable else arr.copy())  # a cluster's object store: read-only
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: pack(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(pack(v) for v in obj)
    return obj


def array(value: Any, dtype=None) -> np.ndarray:
    """The numpy array of a packed value (a tensor or a list)."""
    if isinstance(value, torch.Tensor):
        value = value.numpy()
    return np.asarray(value, dtype=dtype)


MIN_HELD_OUT = 10  # held-out training scores needed to calibrate with them alone
FOLDS = 5  # cross-fitting folds of a detector's held-out training scores


def cross_folds(rows: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """``rows`` in ``FOLDS`` random folds, each to be scored by a model fitted without it; none
    (in-sample scores) where there are fewer than ``2 * FOLDS`` rows to hold out."""
    return np.array_split(rng.permutation(rows), FOLDS) if len(rows) >= 2 * FOLDS else []


def calibration_rows(held_out: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """The training scores to calibrate a threshold or a standardisation with: in each group
    (section), the held-out ones where it has at least ``MIN_HELD_OUT``, else all of the group."""
    held_out = np.asarray(held_out, bool)
    groups = np.zeros(len(held_out), int) if groups is None else np.asarray(groups)
    rows = np.ones(len(held_out), bool)
    for g in np.unique(groups):
        i = groups == g
        if held_out[i].sum() >= MIN_HELD_OUT:
            rows[i] = held_out[i]
    return rows


def robust_scale(scores: np.ndarray) -> tuple[float, float]:
    """Median and robust deviation of scores (interquartile range / 1.349, else the standard
    deviation, else 1): how a new normal clip's score is standardised against held-out ones."""
    dev = float(np.quantile(scores, 0.75) - np.quantile(scores, 0.25)) / 1.349 or float(np.std(scores)) or 1.0
    return float(np.median(scores)), dev


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and precision (pseudo-inverse of the Ledoit-Wolf shrunk covariance) of rows ``x``:
    the shrinkage keeps the estimate sound when there are fewer rows than dimensions."""
    from sklearn.covariance import LedoitWolf

    lw = LedoitWolf().fit(x)
    return lw.location_, np.linalg.pinv(lw.covariance_)

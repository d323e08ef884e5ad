"""An ensemble of detectors by name, each member's scores standardised per section.

Each member is trained on the same features; its scores are standardised per section with its
own training scores (``(score - median) / deviation``), held out where a member learns its own
clips: TWFR-GMM's are 5-fold cross-fitted; the embedding's are its validation clips, which its
network never trained on, where a section has at least ``MIN_HELD_OUT`` of them (its distances to
the clips it learned are mostly smaller than a new normal clip's: at scale 0.2, tuning seeds 0-2,
the validation clips' deviation was 0.55 to 1.85 times the learned clips', median 1.18, above 1
in 12 of 15 machine types; at full size, seeds 0 and 3-5, 0.88 to 1.61, median 1.06). The
ensemble's score is the weighted mean of the members' standardised scores, domain by domain
(below). The threshold is
fitted on the ensemble's training scores like any detector's, on those every member that counts
held out (``_held_out``) where a section has enough. Standardising per section is what the DCASE
2022-2024 ensembles do before adding (Wilkinghoff 2023; Guan et al. 2023 combine TWFR-GMM with a learned
system the same way); without it a member with a large score range would decide alone.

**Domain by domain.** A member that judges a clip by the domain it fits best (TWFR-GMM, the
embedding, Selective Mahalanobis) gives the ensemble both judgements (``Detector.domain_scores``:
the clip as the source domain scores it, and as the target domain does); a member without
domains gives its score for both. Each part is standardised as above, the weighted mean is taken
per domain, and the clip is scored by the domain whose mean is smaller: it is normal where the
members agree on a domain it fits. Before (each member's own score, i.e. its own best domain,
averaged), a clip could pass as a target clip for one member and as a source clip for the other:
on the generated data, a source anomaly near one of the 10 target training clips in TWFR-GMM's
pooled log-mel but not in the embedding (tuning seed 0: the members' best domains differed for
66 %, 50 % and 80 % of the source anomalies of gearbox, pump and slider, for 0-10 % of the normal
clips of every machine type). This rule is ours (the members' per-domain scoring
carried through the ensemble). Measured on generated data, tuning seeds 0-2 (generator version 4,
2023 layout, scale 0.2; the members saved by ``compare_detectors.py --seeds 0,1,2 --scale 0.2
--detectors twfr_gmm,ensemble``, recombined by ``benchmarks/rescore_ensemble.py``): official score
0.815 / 0.787 / 0.779 against 0.793 / 0.772 / 0.776 before and TWFR-GMM's own 0.798 / 0.764 /
0.758 (paired bootstrap sd of the difference 0.006-0.007); with the domain parts of one member
only (the other's score in both) 0.792 / 0.772 / 0.777: it is the agreement that counts. Weights
1, 2, 4, 6, 10 and 20 gave 0.782 / 0.749 / 0.755, 0.803 / 0.774 / 0.773, 0.814 / 0.786 / 0.779,
0.815 / 0.787 / 0.779, 0.816 / 0.785 / 0.777 and 0.813 / 0.780 / 0.771: 6 stands. TWFR-GMM's parts
are each domain's standardised score averaged over its decays (its own score takes the smaller
domain decay by decay, and averages those).

``members`` are registry names, each with settings after a colon where wanted
(``"embedding:networks=5"``, ``"twfr_gmm:decay=auto"``; the syntax of ``compare_detectors.py``'s
rows); the settings are checked when the ensemble is made, and a member's default weight
follows its name.

``weights`` sets each member's share; by default TWFR-GMM counts ``DEFAULT_WEIGHTS["twfr_gmm"]``
(6) times as much as any other member. Chosen on generated data, tuning seeds 0-2 (five machine
types, 2023 layout, scale 0.2; TWFR-GMM with per-domain standardisation, the embedding with
outlier exposure; rescored from the saved members): weights 1, 2, 4, 6 and 10 gave 0.775 / 0.770 /
0.752, 0.807 / 0.793 / 0.777, 0.825 / 0.805 / 0.790, 0.829 / 0.808 / 0.793 and 0.830 / 0.808 /
0.792 official score against TWFR-GMM's own 0.823 / 0.802 / 0.783 and the embedding's 0.661 /
0.660 / 0.687: from 4 on the ensemble is above both members on each seed and the curve is flat.
At full size (990 + 10 training clips, tuning seed 0) the same weights gave 0.857, 0.867, 0.870
(4), 0.869 (6) and 0.866 against TWFR-GMM's 0.858 and the embedding's 0.774. (These were
measured with the embedding standardised by all its training clips; with its validation clips, as
now, the same saved members rescored give 0.793 / 0.774 / 0.766 at weight 1, 0.831 / 0.809 /
0.793 at 6, and at full size 0.862 at 1, 0.869 at 6: the weights matter less, the choice stands. With
TWFR-GMM's every-decay default, which came later, the tuning seeds' saved embeddings rescored give
0.812 / 0.773 / 0.782 at weight 1, 0.841 / 0.797 / 0.808 at 2, 0.851 / 0.810 / 0.821 at 4, 0.853 /
0.814 / 0.821 at 6 and 0.854 / 0.815 / 0.822 at 10, against TWFR-GMM's 0.848 / 0.811 / 0.813: flat
from 6 on, the choice stands. With the embedding's linear spectrum, which came later and makes the
embedding alone about 0.03 better, weights 1, 2, 4 and 6 gave 0.8095 / 0.8011 / 0.7805, 0.833 / 0.812
/ 0.803, 0.845 / 0.816 / 0.813 and 0.848 / 0.817 / 0.816: the choice still stands. With TWFR-GMM's
target density and the generator's version 4 (2026-11-27, tuning seeds 0-2 run afresh, rescored
by ``benchmarks/rescore_ensemble.py``), weights 1, 2, 4, 6 and 10 gave 0.758 / 0.730 / 0.749,
0.778 / 0.751 / 0.768, 0.789 / 0.764 / 0.776, 0.793 / 0.772 / 0.776 and 0.797 / 0.774 / 0.775
against TWFR-GMM's 0.798 / 0.764 / 0.758: flat from 6 on, the choice stands.)
Letting the embedding only raise a score (its standardised score floored at 0, -1 or -2 before
the weighted mean; an experiment script on tuning seeds 0-2, 2026-11-26) gave 0.858 / 0.821 /
0.819, 0.857 / 0.822 / 0.818 and 0.856 / 0.822 / 0.819 at 6:1 against the plain mean's 0.856 /
0.822 / 0.819, and less at 3:1 and 1:1: no reason to change the rule.
It also agrees with what real recordings showed (issue 15: our embedding 0.570 official score on
a held-back DCASE 2023 machine type, TWFR-GMM about 0.73 as published on the 2022 development
set): the training-free member is the one to trust most, the learned one adds to it.

``min_clips``: a member that trains a network (``trains_network``: the embedding, the AE) counts
only in sections with at least this many training clips (default 100); below, the ensemble is its
other members. Where every section has fewer, the network is not trained at all
(``_worth_training``; 60 real normal clips of one machine: 4.0 s for the default ensemble, 14.4 s
when it still trained the embedding it then left out). Measured on generated data at scale 0.05
(50 + 10 training clips per section, seeds 3, 4, 5; without this rule): the ensemble 0.703 /
0.654 / 0.715 against TWFR-GMM's 0.734 / 0.670 / 0.711, i.e. a network that cannot learn from so
few clips pulled the ensemble below its training-free member; at 198 + 10 clips (scale 0.2) it
did not (figures in docs/measurements.md). 100 is a round number between the two, not a tuned
value.

**A member with nothing to learn** (``Detector.taught`` is false; known before training,
``Detector.would_learn``, so it is not trained) is left out everywhere: the
embedding of a machine type with a single class (one section, no attributes, no other machine
types in the data, as a DCASE 2024-2025 machine type with ``noAttributes`` given alone, or one
MIMII machine) has only the feature exchange to learn, which stays at chance there. Measured on
generated data with every machine type's attributes cleared and no outlier exposure (tuning seeds
0-2, 2023 layout, scale 0.2, an experiment script): the embedding alone 0.544 / 0.537 / 0.513
(target AUC 0.43-0.45); the ensemble with it 0.787 / 0.766 / 0.751, without it (this rule) 0.794 /
0.758 / 0.760, TWFR-GMM alone 0.799 / 0.764 / 0.758. At 6:1 that is a tie (+0.003 on average);
at 1:1 the embedding had cost 0.06 (0.721 / 0.715 / 0.693). A network that learned nothing is
noise in the sum, whatever its weight.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mimii_due.config import FeatureConfig, check
from mimii_due.detectors.base import Detector, array, calibration_rows, robust_scale
from mimii_due.errors import ConfigError
from mimii_due.features.extract import Features

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = {"twfr_gmm": 6.0}  # a member's share where ``weights`` is not given (others: 1)


@dataclass(frozen=True)
class EnsembleConfig:
    members: tuple[str, ...] = ("twfr_gmm", "embedding")  # names, or with settings: "embedding:networks=5"
    weights: tuple[float, ...] = ()  # one per member; empty: DEFAULT_WEIGHTS, 1 for members not in it
    min_clips: int = 100  # members that train a network count only in sections with this many training clips
    # (unless every member does)
    seed: int | None = None  # the training seed of every member that takes one (a member's own seed= wins);
    # None: each member's own default (`run --seeds` sets it)

    def __post_init__(self):
        from mimii_due.detectors import detector_class, make_spec, parse_spec

        if not self.members or not all(isinstance(m, str) for m in self.members):
            raise ConfigError("EnsembleConfig.members must name at least one detector")
        for m in self.members:
            if detector_class(parse_spec(m)[0]) is EnsembleDetector:
                raise ConfigError("an ensemble cannot be a member of an ensemble")
            make_spec(m)  # its settings are checked here, before any training
        if self.weights and (len(self.weights) != len(self.members) or min(self.weights) < 0):
            raise ConfigError("EnsembleConfig.weights needs one non-negative weight per member")
        check(self, min_clips=(0, None))
        if self.seed is not None and self.seed < 0:
            raise ConfigError(f"EnsembleConfig.seed must be at least 0, got {self.seed}")


class EnsembleDetector(Detector):
    name = "ensemble"
    config_class = EnsembleConfig

    def default_features(self) -> FeatureConfig:
        """Every member's features: the log-mel, and the whole-clip spectrum if a member reads it."""
        from mimii_due.detectors import make_spec

        bins = [make_spec(m).features.spectrum_bins for m in self.config.members]
        return FeatureConfig(spectrum_bins=max(bins))

    @property
    def min_frames(self) -> int:
        from mimii_due.detectors import make_spec

        return max(make_spec(m, features=self.features).min_frames for m in self.config.members)

    @property
    def needs_known_sections(self) -> bool:  # the normalisation is per section
        return True

    @property
    def uses_outliers(self) -> bool:
        from mimii_due.detectors import detector_class, parse_spec

        return any(detector_class(parse_spec(m)[0]).uses_outliers for m in self.config.members)

    def _seeded(self, spec: str) -> str:
        """A member's spec with the ensemble's ``seed``, where the member takes a seed and its spec
        gives none of its own."""
        from mimii_due.detectors import parse_spec, setting_names

        name, own = parse_spec(spec)
        if self.config.seed is None or "seed" not in setting_names(name) or "seed" in own:
            return spec
        return f"{spec}:seed={self.config.seed}"

    def _fit(self, features: Features, clips: pd.DataFrame, *, checkpoint=None, progress=None,
             outliers=None) -> None:  # fmt: skip
        from mimii_due.detectors import make_spec, spec_folder

        made = [make_spec(self._seeded(spec), features=self.features, threshold_quantile=self.threshold_quantile)
                for spec in self.config.members]  # fmt: skip
        used = self._worth_training(made, clips, None if outliers is None else outliers[1])
        members = []
        for i, k in enumerate(used):
            spec, det = self.config.members[k], made[k]
            sub = None
            if progress:
                sub = lambda d, t, info="", i=i, spec=spec: progress(i, len(used), f"{spec} {info}")  # noqa: E731
            det.fit(features, clips, checkpoint=(checkpoint and f"{checkpoint}/{spec_folder(spec)}"), progress=sub,
                    outliers=outliers)  # fmt: skip
            members.append(det)
            if progress:
                progress(i + 1, len(used), f"{spec} done")
        self.adopt(members, clips, used=used)

    def _worth_training(self, made: list[Detector], clips: pd.DataFrame, outliers: pd.DataFrame | None) -> list[int]:
        """The members to train: not one that would be left out everywhere (a network where every
        section has under ``min_clips`` training clips, one with a single class to learn), unless
        that would leave none. Training it cost time for nothing (one machine's 495 generated clips:
        58.8 s of the embedding's training beside 19.3 s for the rest) and warned of a member the
        user had not chosen."""
        few = bool((clips["section"].value_counts() < self.config.min_clips).all())
        why = {}
        for k, det in enumerate(made):
            if few and det.trains_network:
                why[k] = (f"every section has fewer than {self.config.min_clips} training clips, too few for a network "
                          "to learn from")  # fmt: skip
            elif not det.would_learn(clips, outliers):
                why[k] = "a single class to learn (one section, no attributes, no other machine types beside it)"
        if len(why) == len(made):  # someone must stay to score
            return list(range(len(made)))
        for k, reason in why.items():
            log.warning("the ensemble leaves out %s: %s", self.config.members[k], reason)
        return [k for k in range(len(made)) if k not in why]

    def adopt(self, members: list[Detector], clips: pd.DataFrame, used: list[int] | None = None) -> None:
        """Combine fitted ``members`` (fitted on ``clips``; one per ``config.members``, or those of
        ``used``, their indices there): their standardisation per section, the clip counts and which
        members learned something: what decides who counts where (kept with the model, so a saved
        ensemble scores as it was fitted)."""
        self.used_ = list(range(len(self.config.members))) if used is None else list(used)
        self.members_ = list(members)
        self.norms_ = [self._norms(det.train_scores_, det.held_out_, clips) for det in self.members_]
        self.counts_ = {int(s): int(n) for s, n in clips["section"].value_counts().items()}
        self.taught_ = [bool(det.taught) for det in self.members_]

    @staticmethod
    def _norms(train_scores: np.ndarray, held_out: np.ndarray, clips: pd.DataFrame) -> dict[int, tuple[float, float]]:
        """Each section's median and deviation of the member's training scores, held-out ones
        where the section has enough (``calibration_rows``)."""
        sections = clips["section"].to_numpy()
        rows = calibration_rows(held_out, sections)
        return {int(s): robust_scale(train_scores[rows & (sections == s)]) for s in np.unique(sections)}

    def _combine(self, parts: list[np.ndarray], clips: pd.DataFrame) -> np.ndarray:
        """The ensemble's score from each member's domain parts (``Detector.domain_scores``, ``(n, 2)``):
        per domain the weighted mean of the members' standardised parts, then the smaller domain."""
        sections = clips["section"].to_numpy().astype(int)
        from mimii_due.detectors import parse_spec

        weights = self.config.weights or [DEFAULT_WEIGHTS.get(parse_spec(m)[0], 1.0) for m in self.config.members]
        weights = np.asarray(weights)[self.used_]  # the members trained
        total, wsum = np.zeros((len(sections), 2)), np.zeros(len(sections))
        for w, p, norms, out in zip(weights, parts, self.norms_, self._left_out(sections), strict=True):
            med = np.array([norms[int(x)][0] for x in sections])
            dev = np.array([norms[int(x)][1] for x in sections])
            wi = np.where(out, 0.0, w)  # too few clips, or nothing, to learn from: left out
            p = np.asarray(p, np.float64)
            p = np.where(np.isfinite(p), p, p.min(axis=1, keepdims=True))  # a domain it cannot judge: its score
            total += wi[:, None] * (p - med[:, None]) / dev[:, None]
            wsum += wi
        return (total / np.where(wsum > 0, wsum, 1.0)[:, None]).min(axis=1)

    def _left_out(self, sections: np.ndarray) -> list[np.ndarray]:
        """Per member, per clip: is the member left out there? A member that trains a network is
        where the clip's section has under ``min_clips`` training clips, and a member that had
        nothing to learn (``Detector.taught``) is everywhere; where that would leave no member,
        all of them count (someone must stay to score)."""
        few = np.array([self.counts_[int(x)] < self.config.min_clips for x in sections], bool)
        out = [(few & det.trains_network) | (not t) for det, t in zip(self.members_, self.taught_, strict=True)]
        nobody = np.logical_and.reduce(out)
        return [o & ~nobody for o in out]

    def _score(self, features: Features, clips: pd.DataFrame) -> np.ndarray:
        return self._combine([det.domain_scores(features, clips) for det in self.members_], clips)

    def _train_scores(self, features: Features, clips: pd.DataFrame) -> np.ndarray:
        return self._combine([det.train_domain_scores_ for det in self.members_], clips)

    def _held_out(self, clips: pd.DataFrame) -> np.ndarray:
        """Held out where every member that counts there holds the clip out (a clip some member
        learned scores low)."""
        out = self._left_out(clips["section"].to_numpy().astype(int))
        return np.logical_and.reduce([det.held_out_ | o for det, o in zip(self.members_, out, strict=True)])

    def _state(self) -> dict:
        from mimii_due.detectors.base import pack

        return {
            "members": [
                {
                    "params": det.params(),
                    "threshold": det.threshold_,
                    "sections": det.sections_,
                    "train_scores": det.train_scores_,
                    "held_out": det.held_out_,
                    "state": pack(det._state()),
                }  # fmt: skip
                for det in self.members_
            ],
            "norms": [{int(k): tuple(v) for k, v in n.items()} for n in self.norms_],
            "counts": self.counts_,
            "taught": self.taught_,
            "used": self.used_,
        }

    def _set_state(self, state: dict) -> None:
        from mimii_due.detectors import parse_spec

        self.used_ = [int(k) for k in state.get("used", range(len(self.config.members)))]  # before: all trained
        self.members_ = [load_member(parse_spec(self.config.members[k])[0], m)
                         for k, m in zip(self.used_, state["members"], strict=True)]  # fmt: skip
        self.norms_ = [{int(k): tuple(float(x) for x in v) for k, v in n.items()} for n in state["norms"]]
        self.counts_ = {int(k): int(v) for k, v in state["counts"].items()}
        self.taught_ = [bool(t) for t in state.get("taught", [True] * len(self.members_))]  # before: all counted


def load_member(name: str, saved: dict) -> Detector:
    """One member of a saved ensemble state (``EnsembleDetector._state``'s ``members`` entries)."""
    from mimii_due.config import from_dict
    from mimii_due.detectors import detector_class

    klass = detector_class(name)
    p = saved["params"]
    det = klass(
        config=from_dict(klass.config_class, p["config"]) if klass.config_class else None,
        features=from_dict(FeatureConfig, p["features"]),
        threshold_quantile=p["threshold_quantile"],
    )
    det.threshold_, det.sections_ = float(saved["threshold"]), list(saved["sections"])
    det.train_scores_ = array(saved["train_scores"])
    det.held_out_ = array(saved.get("held_out", np.ones(len(det.train_scores_))), bool)
    det._set_state(saved["state"])
    return det

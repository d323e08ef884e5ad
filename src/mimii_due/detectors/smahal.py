"""Selective Mahalanobis autoencoder (the DCASE 2023 Task 2 baseline's second scoring mode).

The network and its training are the autoencoder baseline's. Scoring differs: for each section,
the reconstruction errors of the training windows of each domain give a mean and a covariance
(Ledoit-Wolf shrinkage: the target domain has only three clips, about 900 windows for 640
dimensions). A clip's score is the Mahalanobis distance of its windows' reconstruction errors,
averaged over the windows, under the source or the target statistics, whichever is smaller:
a normal clip of either domain is close to one of the two.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from mimii_due.detectors.autoencoder import AutoEncoderDetector
from mimii_due.detectors.base import array, ledoit_wolf
from mimii_due.features.extract import Features
from mimii_due.features.logmel import stack_frames


class SelectiveMahalanobisDetector(AutoEncoderDetector):
    name = "smahal"
    needs_known_sections = True

    @torch.no_grad()
    def _errors(self, features: Features, i: int) -> np.ndarray:
        v = stack_frames(torch.from_numpy(features.clip(i)), frames=self.config.frames)
        return (self.model_(v) - v).double().numpy()

    def _fit(self, features: Features, clips: pd.DataFrame, *, checkpoint=None, progress=None,
             outliers=None) -> None:  # fmt: skip
        trained = self.__dict__.pop("_trained", None)  # set by from_autoencoder: reuse its network
        if trained is None:
            super()._fit(features, clips, checkpoint=checkpoint, progress=progress)
        else:
            self.model_, self.history_ = trained.model_, list(getattr(trained, "history_", []))
        self._fit_statistics(features, clips)

    @classmethod
    def from_autoencoder(
        cls, ae: AutoEncoderDetector, features: Features, clips: pd.DataFrame
    ) -> SelectiveMahalanobisDetector:
        """Selective Mahalanobis scoring for an already trained AE (the DCASE 2023 baseline trains
        one network and offers both scores): only the error statistics and threshold are fitted
        on the training clips' ``features``."""
        ae._check_fitted()
        det = cls(config=ae.config, features=ae.features, threshold_quantile=ae.threshold_quantile)
        det._trained = ae
        return det.fit(features, clips)

    def _fit_statistics(self, features: Features, clips: pd.DataFrame) -> None:
        self.model_.eval()
        self.stats_ = {}
        sections, domains = clips["section"].to_numpy(), clips["domain"].to_numpy()
        for section in np.unique(sections):
            for domain in ("source", "target"):
                idx = np.flatnonzero((sections == section) & (domains == domain))
                if len(idx) == 0:
                    continue
                err = np.concatenate([self._errors(features, i) for i in idx])
                self.stats_[(int(section), domain)] = ledoit_wolf(err)

    def _score(self, features: Features, clips: pd.DataFrame) -> np.ndarray:
        return self._domain_scores(features, clips).min(axis=1)

    def _train_domain_scores(self, features: Features, clips: pd.DataFrame) -> np.ndarray:
        self._train_parts = self._domain_scores(features, clips)  # in-sample, as the baseline's threshold
        return self._train_parts

    def _train_scores(self, features: Features, clips: pd.DataFrame) -> np.ndarray:
        return self.__dict__.pop("_train_parts").min(axis=1)  # made just before: not scored twice

    def _domain_scores(self, features: Features, clips: pd.DataFrame) -> np.ndarray:
        """The mean Mahalanobis distance under each domain's statistics (``inf`` without them)."""
        out = np.full((len(features), 2), np.inf)
        for i, section in enumerate(clips["section"].to_numpy()):
            err = self._errors(features, i)
            for j, domain in enumerate(("source", "target")):
                stats = self.stats_.get((int(section), domain))
                if stats is None:
                    continue
                mu, prec = stats
                d = err - mu
                sq = np.sum((d @ prec) * d, axis=1)  # squared Mahalanobis distance of every window
                out[i, j] = float(np.mean(np.sqrt(np.maximum(sq, 0))))
        return out

    def _state(self) -> dict:
        return super()._state() | {"stats": {f"{s}:{d}": (m, p) for (s, d), (m, p) in self.stats_.items()}}

    def _set_state(self, state: dict) -> None:
        super()._set_state(state)
        self.stats_ = {}
        for key, (m, p) in state["stats"].items():
            s, d = key.split(":")
            self.stats_[(int(s), d)] = (array(m), array(p))

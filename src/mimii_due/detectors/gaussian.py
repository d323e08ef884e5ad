"""A simple reference detector: Mahalanobis distance of the clip-mean log-mel.

One Gaussian per section, fitted to the section's normal training clips of the chosen domains
(by default the source domain only, which shows the domain shift plainly), with a Ledoit-Wolf
shrunk covariance because a section may have few clips. The score is the Mahalanobis distance.

Its training scores, which set the threshold, are cross-fitted (``base.FOLDS`` folds of the clips the
Gaussian is fitted to, each scored by a Gaussian fitted without it): in-sample distances are far
smaller than a new clip's when the clips are few against 128 bands. Measured on the real DCASE 2020
clips of one machine (``benchmarks/real_clips.py``: 5-fold over 75 normal clips, 60 to train), the
in-sample threshold raised alarms on 41 of 75 new normal clips at a nominal rate of 0.10.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mimii_due.detectors.base import Detector, array, cross_folds, ledoit_wolf
from mimii_due.features.extract import Features


@dataclass(frozen=True)
class GaussianConfig:
    domains: tuple[str, ...] = ("source",)  # training domains used for the Gaussian


class GaussianDetector(Detector):
    name = "gaussian"
    config_class = GaussianConfig
    needs_known_sections = True

    def _fit(self, features: Features, clips: pd.DataFrame, *, checkpoint=None, progress=None,
             outliers=None) -> None:  # fmt: skip
        x = features.means().astype(np.float64)
        self.models_ = {int(s): ledoit_wolf(x[self._fit_rows(clips, s)]) for s in sorted(clips["section"].unique())}

    def _fit_rows(self, clips: pd.DataFrame, section) -> np.ndarray:
        """The section's clips of the chosen domains (all of its clips if fewer than two)."""
        m = (clips["section"] == section).to_numpy()
        chosen = m & clips["domain"].isin(self.config.domains).to_numpy()
        return chosen if chosen.sum() >= 2 else m

    @staticmethod
    def _distance(x: np.ndarray, model: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        mu, prec = model
        d = x - mu
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, prec, d), 0.0))

    def _score(self, features: Features, clips: pd.DataFrame) -> np.ndarray:
        return self._distances(features.means().astype(np.float64), clips["section"].to_numpy())

    def _distances(self, x: np.ndarray, sections: np.ndarray) -> np.ndarray:
        out = np.empty(len(x))
        for section in np.unique(sections):
            i = sections == section
            out[i] = self._distance(x[i], self.models_[int(section)])
        return out

    def _train_scores(self, features: Features, clips: pd.DataFrame) -> np.ndarray:
        """Each fitted clip scored by a Gaussian fitted without its fold; the others (other domains)
        were never fitted to and keep their score."""
        x = features.means().astype(np.float64)
        out = self._distances(x, clips["section"].to_numpy())
        rng = np.random.default_rng(0)
        for section in sorted(clips["section"].unique()):
            rows = np.flatnonzero(self._fit_rows(clips, section))
            for fold in cross_folds(rows, rng):  # none below 2 * FOLDS clips: in-sample
                out[fold] = self._distance(x[fold], ledoit_wolf(x[np.setdiff1d(rows, fold)]))
        return out

    def _state(self) -> dict:
        return {"models": self.models_}

    def _set_state(self, state: dict) -> None:
        self.models_ = {int(s): (array(m), array(p)) for s, (m, p) in state["models"].items()}

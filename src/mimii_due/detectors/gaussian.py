"""A simple reference detector: Mahalanobis distance of the clip-mean log-mel.

One Gaussian per section, fitted to the section's normal training clips of the chosen domains
(by default the source domain only, which shows the domain shift plainly), with a Ledoit-Wolf
shrunk covariance because a section may have few clips. The score is the Mahalanobis distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mimii_due.detectors.base import Detector, array, ledoit_wolf
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
        self.models_ = {}
        for section in sorted(clips["section"].unique()):
            m = (clips["section"] == section).to_numpy() & clips["domain"].isin(self.config.domains).to_numpy()
            if m.sum() < 2:
                m = (clips["section"] == section).to_numpy()
            self.models_[int(section)] = ledoit_wolf(x[m])

    def _score(self, features: Features, clips: pd.DataFrame) -> np.ndarray:
        x = features.means().astype(np.float64)
        out = np.empty(len(x))
        for i, section in enumerate(clips["section"].to_numpy()):
            mu, prec = self.models_[int(section)]
            d = x[i] - mu
            out[i] = np.sqrt(max(d @ prec @ d, 0.0))
        return out

    def _state(self) -> dict:
        return {"models": self.models_}

    def _set_state(self, state: dict) -> None:
        self.models_ = {int(s): (array(m), array(p)) for s, (m, p) in state["models"].items()}

"""The autoencoder baseline (paper section 3; the official DCASE 2021 Task 2 Keras baseline).

Dense 640 -> 128 x4 -> 8 -> 128 x4 -> 640 with BatchNorm and ReLU after each hidden layer, MSE
loss, Adam (lr 1e-3), batch 512, 100 epochs, 10 % validation, one model per machine type on all
its sections' training clips. A clip's anomaly score is the mean squared reconstruction error over
all its 5-frame windows.

The 5-frame vectors are never materialised for the whole set: each batch gathers its windows from
the log-mel frames by index (``starts + arange(5)``), so memory stays at the log-mel's size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from mimii_due.config import AEConfig
from mimii_due.detectors.base import Detector
from mimii_due.detectors.training import fit_with_config, restore, seeded, torch_device
from mimii_due.features.extract import Features
from mimii_due.features.logmel import stack_frames


class AutoEncoder(nn.Module):
    """The baseline network: ``(batch, frames * n_mels)`` -> reconstruction of the same shape."""

    def __init__(self, input_dim: int = 640, hidden: int = 128, n_hidden: int = 4, bottleneck: int = 8):
        super().__init__()

        def block(i, o):  # Keras BatchNormalization defaults: momentum 0.99, epsilon 1e-3
            return [nn.Linear(i, o), nn.BatchNorm1d(o, eps=1e-3, momentum=0.01), nn.ReLU()]

        enc = block(input_dim, hidden) + sum((block(hidden, hidden) for _ in range(n_hidden - 1)), [])
        dec = block(bottleneck, hidden) + sum((block(hidden, hidden) for _ in range(n_hidden - 1)), [])
        self.net = nn.Sequential(*enc, *block(hidden, bottleneck), *dec, nn.Linear(hidden, input_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AutoEncoderDetector(Detector):
    name = "ae"
    trains_network = True
    config_class = AEConfig

    @property
    def min_frames(self) -> int:
        return self.config.frames

    def _build(self) -> AutoEncoder:
        c = self.config
        return AutoEncoder(c.frames * self.features.n_mels, c.hidden, c.n_hidden, c.bottleneck)

    def _fit(self, features: Features, clips: pd.DataFrame, *, checkpoint=None, progress=None,
             outliers=None) -> None:  # fmt: skip
        c = self.config
        data = torch.from_numpy(features.data).to(torch_device(c.device))
        starts = torch.from_numpy(features.windows(c.frames)[0])
        offs = torch.arange(c.frames)
        with seeded(c.seed):
            model = self._build()
        loss_fn = nn.MSELoss()

        def step(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            x = data[starts[idx, None] + offs].reshape(len(idx), -1)  # gather this batch's windows only
            return loss_fn(model(x), x)

        self.history_ = fit_with_config(
            model, step, len(starts), c, checkpoint=checkpoint, progress=progress, eval_batch_size=8192
        )
        self.model_ = model

    @torch.no_grad()
    def _score(self, features: Features, clips: pd.DataFrame) -> np.ndarray:
        self.model_.eval()
        out = np.empty(len(features))
        for i in range(len(features)):
            v = stack_frames(torch.from_numpy(features.clip(i)), frames=self.config.frames)
            out[i] = float(torch.mean((self.model_(v) - v) ** 2))
        return out

    def _state(self) -> dict:
        return {"model": self.model_.state_dict(), "history": getattr(self, "history_", [])}

    def _set_state(self, state: dict) -> None:
        self.model_ = restore(self._build(), state["model"])
        self.history_ = state.get("history", [])

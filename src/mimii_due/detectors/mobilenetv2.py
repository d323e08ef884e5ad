"""The MobileNetV2 section-classification baseline (paper section 3; official DCASE 2021 code).

The network is the standard MobileNetV2 (Sandler et al., 2018) of ``keras.applications`` with width
multiplier ``alpha = 0.5``, random initialisation, written here in PyTorch (torchvision cannot be
installed beside the local torch wheel). It classifies 64-frame x 128-mel log-mel patches (one every
8 frames) by section. The official code repeats the single log-mel channel three times; we feed
one channel, which is exactly equivalent (a convolution over three identical channels equals one
over a single channel with the kernel summed over channels; a test checks it).

Score of a clip: the mean over its patches of the negative logit of the predicted probability
``p`` of the clip's own section, ``log((1 - p) / p)``, as the paper defines it (``score="paper"``).
The official code misplaces a parenthesis and computes ``log(max(1 - p, eps) - log(max(p, eps)))``;
``score="official"`` reproduces that expression so numbers can be compared with the official
implementation's.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pandas as pd
import torch
from torch import nn

from mimii_due.config import MobileNetV2Config
from mimii_due.detectors.base import Detector, class_keys
from mimii_due.detectors.training import fit_with_config, restore, seeded, torch_device
from mimii_due.errors import ModelError
from mimii_due.features.extract import Features

EPS = sys.float_info.epsilon  # the official code's clipping of p and 1 - p
# (expansion t, channels c, repeats n, first stride s): the MobileNetV2 paper's Table 2
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1)]  # fmt: skip


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels as keras.applications does (never below 90 % of ``v``)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _conv_bn(i: int, o: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> list[nn.Module]:
    # epsilon 1e-3 as keras.applications; the running statistics use PyTorch's momentum (0.1)
    # rather than Keras's 0.999, which leaves them near their initial values for the first
    # thousands of steps, i.e. for every reduced-scale run (they only matter at inference).
    layers = [
        nn.Conv2d(i, o, k, stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(o, eps=1e-3, momentum=0.1),
    ]
    return layers + [nn.ReLU6(inplace=True)] if act else layers


class InvertedResidual(nn.Module):
    def __init__(self, i: int, o: int, stride: int, expansion: int):
        super().__init__()
        hidden = i * expansion
        layers = _conv_bn(i, hidden, 1) if expansion != 1 else []
        layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden)  # depthwise
        layers += _conv_bn(hidden, o, 1, act=False)  # linear bottleneck
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and i == o

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2(nn.Module):
    """``(batch, in_channels, frames, mels)`` -> section logits ``(batch, n_classes)``."""

    def __init__(self, n_classes: int, width: float = 0.5, in_channels: int = 1):
        super().__init__()
        c = make_divisible(32 * width)
        layers: list[nn.Module] = [nn.Sequential(*_conv_bn(in_channels, c, 3, 2))]
        for t, ch, n, s in SETTINGS:
            o = make_divisible(ch * width)
            for k in range(n):
                layers.append(InvertedResidual(c, o, s if k == 0 else 1, t))
                c = o
        last = make_divisible(1280 * width) if width > 1.0 else 1280
        layers.append(nn.Sequential(*_conv_bn(c, last, 1)))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(last, n_classes)
        for m in self.modules():  # Keras defaults: Glorot-uniform kernels, zero biases
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))  # global average pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def negative_logit(logits: torch.Tensor, target: torch.Tensor, formula: str = "paper") -> torch.Tensor:
    """Per-patch score from section logits ``(n, classes)`` and each patch's own section ``(n,)``.

    ``paper``: ``log(max(1 - p, eps)) - log(max(p, eps))`` = ``log((1 - p) / p)``;
    ``official``: ``log(max(1 - p, eps) - log(max(p, eps)))``, the official code's expression.
    Computed from log-probabilities, so ``1 - p`` keeps its precision when ``p`` is near 1.
    """
    logp = torch.log_softmax(logits.double(), dim=1)
    own = logp.gather(1, target[:, None])[:, 0]
    others = logp.scatter(1, target[:, None], -math.inf).logsumexp(dim=1)  # log(1 - p)
    log_eps = math.log(EPS)
    log_1mp, log_p = others.clamp_min(log_eps), own.clamp_min(log_eps)
    if formula == "paper":
        return log_1mp - log_p
    if formula == "official":
        return torch.log(torch.exp(log_1mp) - log_p)
    raise ValueError(f"score must be 'paper' or 'official', not {formula!r}")


class MobileNetV2Detector(Detector):
    name = "mobilenetv2"
    trains_network = True
    config_class = MobileNetV2Config
    needs_known_sections = True

    @property
    def min_frames(self) -> int:
        return self.config.frames  # one patch

    def _build(self, n_classes: int) -> MobileNetV2:
        # channels-last memory: measured about 20 % faster for training on this CPU
        return MobileNetV2(n_classes, width=self.config.width).to(memory_format=torch.channels_last)

    def _patches(self, features: Features) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        starts, owner = features.windows(self.config.frames, self.config.hop_frames)
        if len(starts) == 0:
            raise ModelError(f"clips are shorter than one {self.config.frames}-frame patch")
        return torch.from_numpy(features.data), torch.from_numpy(starts), owner

    def _targets(self, clips: pd.DataFrame) -> np.ndarray:
        """Each clip's class index: its section's, or (one section) its section x attributes class;
        -1 where the clip's attributes were not among the training classes (evaluation names)."""
        if all(isinstance(k, int) for k in self.classes_):
            return np.searchsorted(self.classes_, clips["section"].to_numpy())
        lookup = {k: i for i, k in enumerate(self.classes_)}
        return np.array([lookup.get(k, -1) for k in class_keys(clips)])

    def would_learn(self, clips: pd.DataFrame, outliers: pd.DataFrame | None = None) -> bool:
        """Two sections or more, or with one section two attribute values or more: something to classify
        (else :meth:`_fit` refuses; an ensemble leaves it out without training it)."""
        return clips["section"].nunique() > 1 or len(set(class_keys(clips))) > 1

    def _fit(self, features: Features, clips: pd.DataFrame, *, checkpoint=None, progress=None,
             outliers=None) -> None:  # fmt: skip
        c = self.config
        self.classes_ = sorted(int(s) for s in clips["section"].unique())
        if len(self.classes_) < 2:  # one section (DCASE 2023-2026): classify section x attribute classes
            self.classes_ = sorted(set(class_keys(clips)))
            if len(self.classes_) < 2:
                raise ModelError(
                    "mobilenetv2 classifies sections (or, with one section, its attribute values): these training "
                    "clips have a single section and a single attribute value, so there is nothing to classify"
                )
        data, starts, owner = self._patches(features)
        dev = torch_device(c.device)
        data = data.to(dev)
        labels = torch.from_numpy(self._targets(clips)[owner]).long().to(dev)
        offs = torch.arange(c.frames)
        with seeded(c.seed):
            model = self._build(len(self.classes_))
        loss_fn = nn.CrossEntropyLoss()

        def step(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            x = data[starts[idx, None] + offs].unsqueeze(1)  # (batch, 1, frames, mels): one channel
            return loss_fn(model(x), labels[idx])

        self.history_ = fit_with_config(
            model,
            step,
            len(starts),
            c,
            checkpoint=checkpoint,
            progress=progress,
            eval_batch_size=256,
            data_key={"classes": self.classes_},
            ignore=("epochs", "score"),
        )
        self.model_ = model

    @torch.no_grad()
    def logits(self, features: Features, batch: int = 256) -> tuple[torch.Tensor, np.ndarray]:
        """Class (section) logits of every patch ``(n_patches, n_classes)`` and each patch's clip index."""
        data, starts, owner = self._patches(features)
        offs = torch.arange(self.config.frames)
        self.model_.eval()
        out = [self.model_(data[starts[i : i + batch, None] + offs].unsqueeze(1)) for i in range(0, len(starts), batch)]
        return torch.cat(out), owner

    def _score(self, features: Features, clips: pd.DataFrame) -> np.ndarray:
        logits, owner = self.logits(features)
        target = self._targets(clips)[owner]
        unknown = target < 0  # attributes not seen in training: the most likely class stands in
        target[unknown] = logits[torch.from_numpy(unknown)].argmax(dim=1).numpy()
        per_patch = negative_logit(logits, torch.from_numpy(target).long(), self.config.score).numpy()
        sums = np.bincount(owner, weights=per_patch, minlength=len(features))
        return sums / np.bincount(owner, minlength=len(features))

    def _state(self) -> dict:
        return {"model": self.model_.state_dict(), "classes": self.classes_, "history": getattr(self, "history_", [])}

    def _set_state(self, state: dict) -> None:
        self.classes_ = [int(k) if isinstance(k, int) else str(k) for k in state["classes"]]
        self.model_ = restore(self._build(len(self.classes_)), state["model"])
        self.history_ = state.get("history", [])

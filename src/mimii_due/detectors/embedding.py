"""A discriminative embedding detector for domain shift (the DCASE 2021-2023 state of the art).

A small CNN on log-mel (each mel band standardised; trained on random 128-frame excerpts, applied
to whole clips; pooled over time only, so the frequency layout survives) is trained to classify
*section x attributes* labels (taken from the training file names, e.g. section 00 with
``strength_1``) with an ArcFace margin loss and mixup. Classifying attributes forces the embedding
to notice the small physical changes that also separate anomalies; the margin keeps the classes
compact. Beside the CNN, a small learned branch sees the input's mean spectrum (the mean over
frames of the standardised log-mel) at full frequency resolution, which the strided convolutions
blur (after Wilkinghoff's two-branch systems); the two are joined before the projection.

Score: the cosine distance to the nearest training embedding of the clip's section, computed
against the source and the target training clips separately, taking the smaller. The three
target clips thus define "normal" for the target domain on their own, instead of being drowned
by a thousand source clips. A second, untrained branch on the clip's spectrum (its clip-mean
log-mel, standardised with the section's source statistics) gives a nearest-neighbour distance
the same way; each branch's distance is divided by its median leave-one-out distance on the
training clips and the two are added. The spectrum branch keeps what classification may discard
(a quiet hum or whistle that no attribute depends on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.spatial.distance import cdist
from torch import nn

from mimii_due.config import TRAINING, check, choice
from mimii_due.detectors.base import Detector, array, pack
from mimii_due.detectors.training import fit_with_config, restore, seeded
from mimii_due.errors import ConfigError, ModelError
from mimii_due.features.extract import Features


@dataclass(frozen=True)
class EmbeddingConfig:
    channels: tuple[int, ...] = (16, 32, 64, 128)
    embedding: int = 128
    margin: float = 0.2  # ArcFace additive angular margin (radians)
    scale: float = 16.0  # ArcFace logit scale
    mixup: float = 0.5  # mixup Beta(alpha, alpha); 0 disables it
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    validation_split: float = 0.1
    k: int = 1  # neighbours for the distance
    spectrum: bool = True  # add the spectrum branch's distance (clip-mean log-mel) to the embedding's
    pool: str = "time"  # "time": keep the frequency axis; "both": pool time and frequency
    band_norm: bool = True  # standardise each mel band (else one mean and deviation for all)
    crop: int = (
        128  # train on random excerpts of this many frames (wrapped around shorter clips); scores use whole clips
    )
    spectrum_net: bool = True  # a learned branch on the input's mean spectrum, joined to the CNN's output
    seed: int = 0

    def __post_init__(self):
        check(self, embedding=(1, None), margin=(0.0, 1.5), scale=(0.1, None), mixup=(0.0, None), k=(1, None),
              crop=(1, None), **TRAINING)  # fmt: skip
        choice(self, "pool", ("time", "both"))
        if not self.channels or min(self.channels) < 1:
            raise ConfigError(f"EmbeddingConfig.channels must be positive numbers, got {self.channels!r}")


class EmbeddingNet(nn.Module):
    """``(batch, 1, frames, mels)`` -> embedding ``(batch, embedding)``: strided conv stages,
    mean and max pooling over time, a linear projection. With ``pool="time"`` the frequency axis
    is kept (flattened into the projection): where in the spectrum a change happens matters. With
    ``spectrum_net`` an MLP on the mean over frames of the input joins the projection."""

    def __init__(self, channels=(16, 32, 64, 128), embedding: int = 128, *, n_mels: int = 128, pool: str = "time",
                 spectrum_net: bool = False):  # fmt: skip
        super().__init__()
        layers, c = [], 1
        for o in channels:
            layers += [
                nn.Conv2d(c, o, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(o),
                nn.ReLU(inplace=True),
                nn.Conv2d(o, o, 3, padding=1, bias=False),
                nn.BatchNorm2d(o),
                nn.ReLU(inplace=True),
            ]
            c = o
        self.body = nn.Sequential(*layers)
        freq = n_mels
        for _ in channels:
            freq = (freq + 1) // 2
        self.pool = pool
        width = 2 * c * (freq if pool == "time" else 1)
        self.spectrum = None
        if spectrum_net:  # the mean spectrum over the input's frames: fine frequency detail, no striding
            self.spectrum = nn.Sequential(
                nn.Linear(n_mels, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(inplace=True), nn.Linear(256, 128)
            )
            width += 128
        self.head = nn.Linear(width, embedding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)  # (batch, channels, time, freq)
        dims = (2,) if self.pool == "time" else (2, 3)
        parts = [h.mean(dim=dims).flatten(1), h.amax(dim=dims).flatten(1)]
        if self.spectrum is not None:
            parts.append(self.spectrum(x.mean(dim=2).flatten(1)))
        return self.head(torch.cat(parts, dim=1))


class ArcFace(nn.Module):
    """Additive angular margin softmax head (Deng et al., 2019)."""

    def __init__(self, embedding: int, n_classes: int, margin: float, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, embedding))
        nn.init.xavier_uniform_(self.weight)
        self.margin, self.scale = margin, scale

    def forward(self, emb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cos = F.linear(F.normalize(emb), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        theta = torch.acos(cos.gather(1, target[:, None]))
        target_logit = torch.cos(torch.clamp(theta + self.margin, max=math.pi))
        return self.scale * cos.scatter(1, target[:, None], target_logit)


class EmbeddingDetector(Detector):
    name = "embedding"
    config_class = EmbeddingConfig
    needs_known_sections = True

    def _normed(self, features: Features) -> torch.Tensor:
        """Every frame of every clip, each mel band standardised: ``(total_frames, n_mels)``."""
        return torch.from_numpy(((features.data - self.norm_[0]) / self.norm_[1]).astype(np.float32))

    def _fit(self, features: Features, clips: pd.DataFrame, *, checkpoint=None, progress=None) -> None:
        c = self.config
        if c.band_norm:  # each mel band standardised: quiet bands' changes count as much as loud ones'
            self.norm_ = (features.data.mean(0), features.data.std(0) + 1e-6)
        else:
            self.norm_ = (float(features.data.mean()), float(features.data.std() + 1e-6))
        x = self._normed(features)
        offsets = torch.from_numpy(features.offsets[:-1].copy())
        lengths = torch.from_numpy(features.lengths.copy())
        crop = torch.arange(c.crop)
        keys = [f"{s:02d}|{a}" for s, a in zip(clips["section"], clips["attributes"].fillna(""), strict=True)]
        self.classes_ = sorted(set(keys))
        y = torch.tensor([self.classes_.index(k) for k in keys])
        with seeded(c.seed):
            net = EmbeddingNet(c.channels, c.embedding, n_mels=features.data.shape[1], pool=c.pool,
                               spectrum_net=c.spectrum_net)  # fmt: skip
            head = ArcFace(c.embedding, len(self.classes_), c.margin, c.scale)
        model = nn.ModuleDict({"net": net, "head": head})

        def step(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            # a random excerpt of ``crop`` frames of each clip (wrapped around a shorter clip):
            # machines sound alike at any time offset; every draw comes from the epoch's generator
            start = (torch.rand(len(idx), generator=gen) * lengths[idx]).long()
            rows = offsets[idx, None] + (start[:, None] + crop) % lengths[idx, None]
            xb, yb = x[rows].unsqueeze(1), y[idx]
            if model.training and c.mixup > 0 and len(idx) > 1:
                lam = float(
                    np.random.default_rng(int(torch.randint(2**31, (1,), generator=gen))).beta(c.mixup, c.mixup)
                )
                perm = torch.randperm(len(idx), generator=gen)
                emb = net(lam * xb + (1 - lam) * xb[perm])
                return lam * F.cross_entropy(head(emb, yb), yb) + (1 - lam) * F.cross_entropy(
                    head(emb, yb[perm]), yb[perm]
                )
            return F.cross_entropy(head(net(xb), yb), yb)

        self.history_ = fit_with_config(
            model,
            step,
            len(features),
            c,
            checkpoint=checkpoint,
            progress=progress,
            eval_batch_size=64,
            data_key={"classes": self.classes_},
        )
        self.net_ = net
        self.bank_ = self.embed(features)
        self.bank_sections_ = clips["section"].to_numpy().astype(int)
        self.bank_domains_ = clips["domain"].to_numpy().astype(str)
        self.spectrum_norm_ = {}  # section -> (mean, deviation) of its source clips' clip-mean log-mel
        means = features.means()
        for section in np.unique(self.bank_sections_):
            m = means[(self.bank_sections_ == section) & (self.bank_domains_ == "source")]
            m = m if len(m) > 1 else means[self.bank_sections_ == section]
            self.spectrum_norm_[int(section)] = (m.mean(0), m.std(0) + 1e-3)
        self.spectrum_bank_ = self._spectra(features, self.bank_sections_)
        # Each branch's distance is divided by its section's median leave-one-out training
        # distance, so that both count alike when added.
        self.scales_ = {}
        e, sp = self._distances(self.bank_, self.spectrum_bank_, self.bank_sections_, exclude_self=True)
        for section in np.unique(self.bank_sections_):
            i = self.bank_sections_ == section
            self.scales_[int(section)] = (float(np.median(e[i])) or 1.0, float(np.median(sp[i])) or 1.0)

    @torch.no_grad()
    def embed(self, features: Features) -> np.ndarray:
        """L2-normalised embeddings of whole clips, shape ``(n_clips, embedding)``. Clips of equal
        length share a batch (the network is in evaluation mode, so a clip's embedding does not
        depend on its batch); every clip keeps its own length."""
        self.net_.eval()
        x = self._normed(features)
        out = np.empty((len(features), self.config.embedding), np.float64)
        lengths = features.lengths
        for n in np.unique(lengths):
            same = np.flatnonzero(lengths == n)
            for b in range(0, len(same), 64):
                ids = same[b : b + 64]
                rows = torch.from_numpy(features.offsets[ids][:, None] + np.arange(n))
                out[ids] = self.net_(x[rows].unsqueeze(1)).double().numpy()
        # normalised in float64: cosine distances near 0 lose their digits in float32
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def _spectra(self, features: Features, sections: np.ndarray) -> np.ndarray:
        """The spectrum branch: clip-mean log-mel standardised with the section's source statistics."""
        means = features.means()
        for section in np.unique(sections):
            mu, sd = self.spectrum_norm_[int(section)]
            means[sections == section] = (means[sections == section] - mu) / sd
        return means

    def _nearest(self, query, sections, bank, distance, exclude_self: bool) -> np.ndarray:
        """Mean distance to the ``k`` nearest training clips of the query's section, computed for
        the source and the target clips separately, the smaller taken."""
        out = np.full(len(query), np.inf)
        for section in np.unique(sections):
            qi = np.nonzero(sections == section)[0]
            for domain in ("source", "target"):
                bi = np.nonzero((self.bank_sections_ == section) & (self.bank_domains_ == domain))[0]
                if not len(bi):
                    continue
                d = distance(query[qi], bank[bi])
                if exclude_self:  # training clip i is bank row i: not its own neighbour
                    d[qi[:, None] == bi[None, :]] = np.inf
                out[qi] = np.minimum(out[qi], np.sort(d, axis=1)[:, : self.config.k].mean(axis=1))
        if not np.isfinite(out).all():
            bad = sorted(set(sections[~np.isfinite(out)].tolist()))
            raise ModelError(f"embedding: too few training clips in section(s) {bad} to find neighbours")
        return out

    def _distances(self, emb, spec, sections, exclude_self: bool = False):
        """Both branches' nearest-neighbour distances (cosine for the embedding, Euclidean for the spectrum)."""
        e = self._nearest(emb, sections, self.bank_, lambda a, b: 1 - a @ b.T, exclude_self)
        return e, self._nearest(spec, sections, self.spectrum_bank_, cdist, exclude_self)

    def _combine(self, e: np.ndarray, sp: np.ndarray, sections: np.ndarray) -> np.ndarray:
        if not self.config.spectrum:
            return e
        scale = np.array([self.scales_[int(s)] for s in sections])
        return e / scale[:, 0] + sp / scale[:, 1]

    def _score(self, features: Features, clips: pd.DataFrame) -> np.ndarray:
        sections = clips["section"].to_numpy().astype(int)
        e, sp = self._distances(self.embed(features), self._spectra(features, sections), sections)
        return self._combine(e, sp, sections)

    def _train_scores(self, features: Features, clips: pd.DataFrame) -> np.ndarray:
        # the training clips are the banks' rows: leave-one-out, not its own neighbour
        e, sp = self._distances(self.bank_, self.spectrum_bank_, self.bank_sections_, exclude_self=True)
        return self._combine(e, sp, self.bank_sections_)

    def _state(self) -> dict:
        return {"net": self.net_.state_dict(), "classes": self.classes_, "norm": pack(self.norm_), "bank": self.bank_,
                "bank_sections": self.bank_sections_, "bank_domains": self.bank_domains_,
                "spectrum_norm": self.spectrum_norm_, "spectrum_bank": self.spectrum_bank_, "scales": self.scales_,
                "history": getattr(self, "history_", [])}  # fmt: skip

    def _set_state(self, state: dict) -> None:
        c = self.config
        net = EmbeddingNet(tuple(c.channels), c.embedding, n_mels=self.features.n_mels, pool=c.pool,
                           spectrum_net=c.spectrum_net)  # fmt: skip
        self.net_ = restore(net, state["net"])
        self.classes_, self.norm_ = list(state["classes"]), tuple(array(v, np.float32) for v in state["norm"])
        self.bank_, self.bank_sections_ = array(state["bank"]), array(state["bank_sections"])
        self.bank_domains_ = array(state["bank_domains"])
        self.spectrum_norm_ = {int(k): tuple(array(a) for a in v) for k, v in state["spectrum_norm"].items()}
        self.spectrum_bank_ = array(state["spectrum_bank"])
        self.scales_ = {int(k): tuple(v) for k, v in state["scales"].items()}
        self.history_ = state.get("history", [])

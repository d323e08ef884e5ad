"""How well can the target domain's anomalies be ranked at all? Detectors' rules against oracles.

A diagnostic of a generated (or any labelled) dataset, not of a detector: on each section's target
test clips, the target AUC of distances in two representations, averaged over the sections:

- TWFR-GMM's pooled log-mel at several decays (standardised with the section's source training
  clips; squared Mahalanobis distances under their Ledoit-Wolf covariance): to the nearest target
  training clip (about what ``twfr_gmm``'s target kernels do with 3 clips), to the target training
  clips' mean, and two **oracles** that no detector has, fitted on half of the section's own target
  normal test clips and scored on the rest: the distance to their mean, and a Gaussian with their
  own shrunk covariance;
- where the seed folder holds an ``ensemble`` run, its embedding member (cosine distances): to the
  nearest target training clip, and the oracle, the mean distance to the 3 nearest of those
  held-back normal clips.

If the oracles are no better than the rules, a detector's target domain is limited by the data (its
anomalies lie within its normal variation for these representations), not by the few training
clips. ``docs/measurements.md`` quotes it for the paper's layout.

    python benchmarks/target_ceiling.py /tmp/mimii_due_compare/dcase2021_scale0.1_seed0 ... [--decays 1,0.99,0.9,0.5,0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.covariance import LedoitWolf

from mimii_due import pipeline
from mimii_due.data.index import index
from mimii_due.detectors import make
from mimii_due.detectors.twfr_gmm import gwrp
from mimii_due.evaluation.metrics import auc
from mimii_due.runs import Run


def _shrunk(x: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf covariance of rows ``x``, with TWFR-GMM's ``reg`` on the diagonal."""
    return LedoitWolf().fit(x).covariance_ + 1e-2 * np.eye(x.shape[1])


def _maha(x: np.ndarray, centres: np.ndarray, cov: np.ndarray) -> np.ndarray:
    prec = np.linalg.inv(cov)
    d = x[:, None, :] - centres[None, :, :]
    return np.einsum("nmi,ij,nmj->nm", d, prec, d)


def _masks(clips, section):
    sec = (clips["section"] == section).to_numpy()
    train, dom = (clips["split"] == "train").to_numpy(), clips["domain"].to_numpy()
    test = sec & ~train & (dom == "target")
    y = (clips["label"][test] == "anomaly").to_numpy().astype(int)
    held = np.flatnonzero(y == 0)
    held = np.random.default_rng(section).permutation(held)[: len(held) // 2]  # the oracles' clips
    rest = np.setdiff1d(np.arange(len(y)), held)
    return sec & train & (dom == "source"), sec & train & (dom == "target"), test, y, held, rest


def pooled_rows(x: np.ndarray, clips) -> list[tuple[float, ...]]:
    """Per section: nearest, mean, oracle mean, oracle Gaussian target AUCs on pooled vectors ``x``."""
    out = []
    for s in sorted(clips["section"].unique()):
        src, tgt, test, y, held, rest = _masks(clips, s)
        z = (x - x[src].mean(0)) / (x[src].std(0) + 1e-6)
        cov = _shrunk(z[src])
        zt = z[test]
        nearest = _maha(zt, z[tgt], cov).min(axis=1)
        mean = _maha(zt, z[tgt].mean(0, keepdims=True), cov)[:, 0]
        o_mean = _maha(zt[rest], zt[held].mean(0, keepdims=True), cov)[:, 0]
        o_cov = _maha(zt[rest], zt[held].mean(0, keepdims=True), _shrunk(zt[held]))[:, 0]
        out.append((auc(y, nearest), auc(y, mean), auc(y[rest], o_mean), auc(y[rest], o_cov)))
    return out


def embedding_rows(e: np.ndarray, clips) -> list[tuple[float, float]]:
    """Per section: nearest target training clip, and the oracle's 3 nearest held-back normal clips."""
    out = []
    for s in sorted(clips["section"].unique()):
        _, tgt, test, y, held, rest = _masks(clips, s)
        nearest = (1 - e[test] @ e[tgt].T).min(axis=1)
        oracle = np.sort(1 - e[test][rest] @ e[test][held].T, axis=1)[:, :3].mean(axis=1)
        out.append((auc(y, nearest), auc(y[rest], oracle)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path, help="seed folders holding data/ (and ensemble/)")
    ap.add_argument("--decays", default="1,0.99,0.9,0.5,0", help="TWFR-GMM pooling decays to measure")
    a = ap.parse_args()
    decays = tuple(float(d) for d in a.decays.split(","))
    cfg = make("twfr_gmm").features
    for base in a.runs:
        pooled, emb = {d: [] for d in decays}, []
        ensemble = Run(base / "ensemble") if (base / "ensemble" / "run.json").exists() else None
        for machine, clips in index(base / "data").groupby("machine"):
            f, c = pipeline.features(clips.reset_index(drop=True), cfg=cfg, cache=base / "features")
            for d, x in zip(decays, gwrp(f, decays), strict=True):
                pooled[d] += pooled_rows(x, c)
            if ensemble is not None:
                model = ensemble.load_model(machine)
                fe, ce = pipeline.features(clips.reset_index(drop=True), cfg=model.features, cache=base / "features")
                member = next((m for m in model.members_ if m.name == "embedding"), None)  # one may be left out
                if member is not None:
                    emb += embedding_rows(member.embed(fe), ce)
        print(f"{base.name}: target AUC, mean over {len(pooled[decays[0]])} sections")
        print("  pooled log-mel, decay: nearest target clip / their mean / oracle mean / oracle Gaussian")
        for d in decays:
            print(f"    r = {d:g}: " + " / ".join(f"{v:.3f}" for v in np.mean(pooled[d], axis=0)))
        if emb:
            print("  embedding: nearest target clip / oracle 3 nearest: " + " / ".join(
                f"{v:.3f}" for v in np.mean(emb, axis=0)))  # fmt: skip


if __name__ == "__main__":
    main()

"""Re-measure TWFR-GMM and the ensemble on saved ``compare_detectors.py`` runs without retraining.

TWFR-GMM is training-free and deterministic: it is refitted by the current code on each seed's
saved data. The ensemble's embedding member is the network the saved ``ensemble`` run trained; it is
combined with the refitted TWFR-GMM as the ensemble combines its members (domain by domain, each
standardised per section with its held-out training scores, weighted). So a change to TWFR-GMM or
to the combination is measured on the same data and networks in minutes, not hours. Prints, per
seed folder, the official scores of TWFR-GMM, the embedding member alone and the ensemble at each
``--weights`` (TWFR-GMM's share against the embedding's 1), their bootstrap sd, and each minus
TWFR-GMM with its paired bootstrap sd.

    python benchmarks/rescore_ensemble.py /tmp/mimii_due_compare/dcase2023_scale0.2_seed3 ... [--weights 1,6]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mimii_due import pipeline
from mimii_due.data.index import index
from mimii_due.detectors import make
from mimii_due.detectors.ensemble import load_member
from mimii_due.detectors.training import split_items
from mimii_due.evaluation.metrics import bootstrap_sd, evaluate, official_score
from mimii_due.runs import Run


def saved_embedding(state_file: Path, n_train: int):
    """The embedding member of a saved ensemble. Runs saved before ``held_out`` was stored: its
    validation clips as the embedding draws them (the pipeline gives it as many outlier clips as
    its own, so it split twice ``n_train`` items)."""
    saved = torch.load(state_file, weights_only=True)["members"][1]
    emb = load_member("embedding", saved)
    if "held_out" not in saved:
        val = split_items(2 * n_train, fraction=emb.config.validation_split, seed=emb.config.seed)[1]
        emb.held_out_ = np.isin(np.arange(n_train), val)
    return emb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path, help="seed folders holding data/, features/ and ensemble/")
    ap.add_argument("--weights", default="6", help="TWFR-GMM's weights to try (the embedding's is 1)")
    a = ap.parse_args()
    weights = [float(w) for w in a.weights.split(",")]
    for base in a.runs:
        protocol = Run(base / "ensemble").stamp()["protocol"]  # the metric the saved run was scored with
        t = index(base / "data")
        cfg = make("ensemble").features
        tables = {name: [] for name in ["twfr_gmm", "embedding"] + [f"ensemble {w:g}:1" for w in weights]}
        for machine, clips in t.groupby("machine"):
            train = clips[clips.split == "train"].reset_index(drop=True)
            ftr, ctr = pipeline.features(train, cfg=cfg, cache=base / "features")
            fte, cte = pipeline.features(clips[clips.split == "test"].reset_index(drop=True), cfg=cfg,
                                         cache=base / "features")  # fmt: skip
            twfr = make("twfr_gmm", features=cfg).fit(ftr, ctr)
            emb = saved_embedding(base / "ensemble" / "models" / machine / "state.pt", len(ctr))
            parts = [twfr.domain_scores(fte, cte), emb.domain_scores(fte, cte)]
            tables["twfr_gmm"].append(cte.assign(score=twfr.score(fte, cte), decision=False))
            tables["embedding"].append(cte.assign(score=parts[1].min(axis=1), decision=False))  # its score
            for w in weights:
                ens = make("ensemble", weights=(w, 1.0))
                ens.adopt([twfr, emb], ctr)
                tables[f"ensemble {w:g}:1"].append(cte.assign(score=ens._combine(parts, cte), decision=False))
        full = {k: pd.concat(v, ignore_index=True) for k, v in tables.items()}
        base_score = official_score(evaluate(full["twfr_gmm"], protocol=protocol))
        print(f"{base.name}: twfr_gmm {base_score:.3f} (bootstrap sd "
              f"{bootstrap_sd(full['twfr_gmm'], protocol=protocol):.3f})")  # fmt: skip
        for name, table in full.items():
            if name != "twfr_gmm":
                score = official_score(evaluate(table, protocol=protocol))
                own, paired = (bootstrap_sd(table, versus=v, protocol=protocol) for v in (None, full["twfr_gmm"]))
                print(f"  {name}: {score:.3f} (bootstrap sd {own:.3f}); minus twfr_gmm "
                      f"{score - base_score:+.3f}, paired bootstrap sd {paired:.3f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

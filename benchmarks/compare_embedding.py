"""Settings of the embedding on generated data: the embedding alone and in the ensemble, seed by seed.

``compare_detectors.py`` trains every detector it lists, and the ensemble trains its own embedding,
so each embedding setting would cost two trainings there. Here each setting (``--variants``) is
trained once per seed and machine type, as the pipeline trains it (with outlier exposure:
``pipeline.outlier_clips``); TWFR-GMM is fitted once per seed and machine type (training-free and
deterministic; kept in the seed folder); and the test clips are scored by the embedding alone and
by the ensemble of the two at each of ``--weights`` (TWFR-GMM's share against the embedding's 1),
combined as ``EnsembleDetector`` combines them. The official score is the year's (2023 layout:
the 2022-2025 metric). Every (setting, seed) result is one line of ``OUT/embedding_settings.jsonl``;
a rerun skips those done. The data are ``compare_detectors.py``'s (same folders, generated if
missing).

    python benchmarks/compare_embedding.py [--seeds 3,4,5] [--variants "log:spectrum=log,loss=subcluster_adacos;
        adaproj:spectrum=linear,loss=adaproj"] [--scale 0.2] [--weights 1,6] [--out /tmp/mimii_due_compare]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import detector_params
from mimii_due import pipeline
from mimii_due.data.index import index
from mimii_due.detectors import make
from mimii_due.detectors.base import Detector
from mimii_due.errors import ConfigError
from mimii_due.evaluation.metrics import evaluate, hmean, official_score
from mimii_due.synth.generate import generate

MACHINES = ["fan", "gearbox", "pump", "slider", "valve"]
PROTOCOL = "dcase2022"  # the 2023 layout's metric


def variants(text: str) -> dict[str, dict]:
    """``"name:key=value,key=value;name2:..."`` -> ``{name: params}`` (values read as ``--set`` reads them;
    a list value in brackets, ``channels=[32,64,128,256]``, keeps its commas)."""
    out = {}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        name, _, sets = entry.partition(":")
        try:
            out[name] = detector_params(filter(None, re.split(r",(?![^\[]*\])", sets)))  # lists keep their commas
        except ValueError:
            raise SystemExit(f"--variants: {entry!r} is not name:key=value,...") from None
        try:
            make("embedding", **out[name])  # a wrong key or value is refused here, before any training
        except ConfigError as e:
            raise SystemExit(f"--variants {entry!r}: {e}") from None
    return out


def twfr(base: Path, machine: str, ftr, ctr, cfg):
    """TWFR-GMM of one machine type, fitted once and kept in the seed folder (``Detector.save``)."""
    path = base / "twfr_gmm_models" / machine
    if (path / "detector.json").exists():
        return Detector.load(path)
    det = make("twfr_gmm", features=cfg).fit(ftr, ctr)
    det.save(path)
    return det


def measure(base: Path, params: dict, weights: list[float]) -> dict:
    """Official scores of the embedding alone, TWFR-GMM and their ensemble at each weight, all machine types."""
    table = index(base / "data")
    train_table = table[table.split == "train"]
    cfg = make("ensemble").features
    scored: dict[str, list[pd.DataFrame]] = {}
    for machine, clips in table.groupby("machine"):
        train = clips[clips.split == "train"].reset_index(drop=True)
        ftr, ctr = pipeline.features(train, cfg=cfg, cache=base / "features")
        fte, cte = pipeline.features(clips[clips.split == "test"].reset_index(drop=True), cfg=cfg,
                                     cache=base / "features")  # fmt: skip
        outliers = pipeline.features(pipeline.outlier_clips(train_table, machine, len(ctr)), cfg=cfg,
                                     cache=base / "features")  # fmt: skip
        members = [twfr(base, machine, ftr, ctr, cfg), make("embedding", features=cfg, **params)]
        members[1].fit(ftr, ctr, outliers=outliers if len(outliers[1]) else None)
        parts = [m.domain_scores(fte, cte) for m in members]
        scores = [members[0].score(fte, cte), parts[1].min(axis=1)]  # the embedding's score: its nearer domain
        scored.setdefault("twfr_gmm", []).append(cte.assign(score=scores[0], decision=False))
        scored.setdefault("embedding", []).append(cte.assign(score=scores[1], decision=False))
        for w in weights:
            ens = make("ensemble", weights=(w, 1.0))
            ens.adopt(members, ctr)
            combined = ens._combine(parts, cte)
            scored.setdefault(f"ensemble {w:g}:1", []).append(cte.assign(score=combined, decision=False))
        print(f"  {base.name} {machine} done", flush=True)
    out = {}
    for name, parts in scored.items():
        res = evaluate(pd.concat(parts, ignore_index=True), protocol=PROTOCOL)
        out[name] = {"official": round(official_score(res), 4),
                     "auc": [round(hmean(res[res.domain == d]["AUC"]), 3) for d in ("source", "target")],
                     "machines": {m: round(official_score(g), 3) for m, g in res.groupby("machine")}}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="3,4,5", help="check seeds (README: seeds 0-2 were used for choices)")
    ap.add_argument("--variants", default="log:spectrum=log,loss=subcluster_adacos;"
                    "linear:spectrum=linear,loss=subcluster_adacos;adaproj:spectrum=linear,loss=adaproj",
                    help='"name:key=value,...;name2:..." embedding settings; the first is the reference')  # fmt: skip
    ap.add_argument("--scale", type=float, default=0.2)
    ap.add_argument("--weights", default="6", help="TWFR-GMM's weights in the ensemble (the embedding's is 1)")
    ap.add_argument("--out", default="/tmp/mimii_due_compare")
    a = ap.parse_args()
    settings, weights = variants(a.variants), [float(w) for w in a.weights.split(",")]
    out = Path(a.out)
    log = out / "embedding_settings.jsonl"
    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            done[(r["variant"], json.dumps(r["params"], sort_keys=True), r["seed"], r["scale"])] = r
    rows = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        base = out / f"dcase2023_scale{a.scale}_seed{seed}"
        generate(base / "data", machines=MACHINES, sections=[0], scale=a.scale, seed=seed, min_test=50, workers=2,
                 layout="dcase2023")  # fmt: skip
        for name, params in settings.items():
            key = (name, json.dumps(params, sort_keys=True), seed, a.scale)
            if key not in done or any(f"ensemble {w:g}:1" not in done[key]["scores"] for w in weights):
                t0 = time.perf_counter()
                scores = measure(base, params, weights)
                rec = {"variant": name, "params": params, "seed": seed, "scale": a.scale, "scores": scores,
                       "seconds": round(time.perf_counter() - t0)}  # fmt: skip
                out.mkdir(parents=True, exist_ok=True)
                with log.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                done[key] = rec
            rows.append(done[key])
    names = ["twfr_gmm", "embedding"] + [f"ensemble {w:g}:1" for w in weights]
    print("\n| setting | seed | " + " | ".join(names) + " | embedding AUC source / target |")
    print("|---|---|" + "---|" * len(names) + "---|")
    for r in rows:
        s = r["scores"]
        print(f"| {r['variant']} | {r['seed']} | " + " | ".join(f"{s[n]['official']:.3f}" for n in names)
              + f" | {s['embedding']['auc'][0]:.3f} / {s['embedding']['auc'][1]:.3f} |")  # fmt: skip
    first = next(iter(settings))
    print(f"\n| setting - {first} (same seeds) | " + " | ".join(names[1:]) + " |")
    print("|---|" + "---|" * (len(names) - 1))
    for name in list(settings)[1:]:
        diffs = []
        for n in names[1:]:
            d = np.array([r["scores"][n]["official"] for r in rows if r["variant"] == name]) - np.array(
                [r["scores"][n]["official"] for r in rows if r["variant"] == first])
            diffs.append(f"{d.mean():+.3f} ({int((d > 0).sum())} of {len(d)} seeds above)")
        print(f"| {name} | " + " | ".join(diffs) + " |")


if __name__ == "__main__":
    main()

"""Calibrate the generator per machine type: a grid of (anomaly size, jitter) settings.

Each task generates one machine type (sections 00-02, the paper's layout, ``--scale`` 0.1, 50 + 50
test clips per domain) with one setting of ``synth.generate.ANOMALY_SIZE`` and ``JITTER`` (the
clip-to-clip spread of its physical parameters; the target domain's is ``TARGET_JITTER`` times
that) for that machine type, measures the labelled
reference of ``realism.py`` per section and domain and, with ``--ae``, trains the paper's AE on
the three sections (as Table 4 was made) and reads its AUC per section and domain. Both are also
broken down by anomaly kind (Table 2's kinds, from ``synth_meta.csv``: each kind's anomalous clips
against the normal ones of their section and domain, averaged over the groups), which says what a
setting changes: which faults the clip statistics see and which the frame-level AE finds. Tasks run in
``--workers`` processes (a GPU, where torch sees one, is shared by them); each task's result is
one JSON line in ``OUT/results.jsonl`` (a rerun skips the tasks already there). The summary
prints, per machine type and setting, the reference's median and the AE's source and target AUC
(harmonic means over sections) per seed beside Table 4; with ``--combine`` (one setting per
machine type in the grid), also issue 14's figures over all machine types per seed.

    python benchmarks/calibrate_generator.py --seeds 0,1 --grid "fan=1.6/0.02,2.4/0.05;pump=1.6/0.02" --ae
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np

from mimii_due import atomic
from mimii_due.runs import Run


def parse_grid(text: str) -> list[tuple[str, float, float]]:
    """``"fan=1.6/0.02,2.4/0.05;pump=1.6/0.02"`` ->
    ``[("fan", 1.6, 0.02), ("fan", 2.4, 0.05), ("pump", 1.6, 0.02)]``."""
    from mimii_due.synth.machines import MODELS

    out = []
    for part in filter(None, text.split(";")):
        try:
            machine, settings = part.split("=")
            for s in settings.split(","):
                size, jitter = s.split("/")
                out.append((machine.strip(), float(size), float(jitter)))
        except ValueError:
            raise SystemExit(f"--grid: {part!r} is not machine=size/jitter[,size/jitter...]") from None
        if machine.strip() not in MODELS:
            raise SystemExit(f"--grid: unknown machine type {machine.strip()!r}; choose from {', '.join(MODELS)}")
    return out


def run_task(task: tuple) -> dict:
    machine, a, j, seed, scale, out, ae = task
    import torch

    torch.set_num_threads(1)
    from compare_detectors import label_auc, reference_predictions
    from mimii_due import pipeline
    from mimii_due.synth import generate as g

    g.ANOMALY_SIZE[machine], g.JITTER[machine] = a, j
    base = Path(out) / f"{machine}_a{a}_j{j}_scale{scale}_seed{seed}"
    data = g.generate(base / "data", machines=[machine], sections=[0, 1, 2], scale=scale, seed=seed,
                      min_test=50, workers=1)  # fmt: skip
    pred = reference_predictions(data, base / "features")
    ref = {key: label_auc(grp) for key, grp in pred.groupby(["section", "domain"])}
    rec = {"machine": machine, "a": a, "jitter": j, "scale": scale, "seed": seed,
           "reference": {f"{s:02d}_{d}": r for (s, d), r in ref.items()}}  # fmt: skip
    scores = None
    if ae:
        pipeline.train(base / "ae", data, detector="ae", resume=True, cache=base / "features")
        pipeline.test(base / "ae", data)
        res, _ = pipeline.evaluate(base / "ae")
        rec["ae"] = {f"{int(r.section):02d}_{r.domain}": float(r.AUC) for r in res.itertuples()}
        scores = Run(base / "ae").read_scores()[["path", "score"]]
    rec["kinds"] = kind_aucs(data, pred, scores)
    return rec


def kind_aucs(data: Path, pred, scores=None) -> dict[str, dict[str, float]]:
    """Per anomaly kind: its clip count and the mean over section/domain groups of the AUC of its
    anomalous clips against the group's normal ones, for the reference (and the AE's ``scores``)."""
    import pandas as pd

    from compare_detectors import label_auc

    meta = pd.read_csv(data / "synth_meta.csv", usecols=["path", "anomaly"])
    kind = dict(zip((str((data / p).resolve()) for p in meta.path), meta.anomaly.fillna(""), strict=True))
    pred = pred.assign(kind=[kind[str(Path(p).resolve())] for p in pred.path])
    if scores is not None:
        pred = pred.merge(scores, on="path", how="left", validate="one_to_one")
    out: dict[str, dict[str, list]] = {}
    for _, g in pred.groupby(["section", "domain"]):
        normal = g[g.label == "normal"]
        for k, bad in g[g.label == "anomaly"].groupby("kind"):
            both = pd.concat([normal, bad])
            row = out.setdefault(k, {"n": [], "reference": [], "ae": []})
            row["n"].append(len(bad))
            row["reference"].append(label_auc(both))
            if scores is not None:
                row["ae"].append(label_auc(both, "score"))
    return {k: {"n": int(np.sum(v["n"])), **{c: float(np.mean(v[c])) for c in ("reference", "ae") if v[c]}}
            for k, v in out.items()}  # fmt: skip


def kind_summary(records: list[dict]) -> list[str]:
    """Per machine type, setting and anomaly kind, the reference's and the AE's AUC (mean over seeds)."""
    rows: dict[tuple, list[dict]] = {}
    for r in records:
        for k, v in r.get("kinds", {}).items():
            rows.setdefault((r["machine"], r["a"], r["jitter"], k), []).append(v)
    lines = ["| machine | anomaly size | jitter | anomaly kind | clips | reference AUC | AE AUC | seeds |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (m, a, j, k), vs in sorted(rows.items()):
        ae = [v["ae"] for v in vs if "ae" in v]
        ae_text = f"{np.mean(ae):.3f}" if ae else "-"
        lines.append(f"| {m} | {a} | {j} | {k} | {sum(v['n'] for v in vs)} | "
                     f"{np.mean([v['reference'] for v in vs]):.3f} | {ae_text} | {len(vs)} |")  # fmt: skip
    return lines


def summary(records: list[dict]) -> list[str]:
    from mimii_due.evaluation.metrics import hmean
    from realism import TABLE4_AE_TYPES

    lines = ["| machine | anomaly size | jitter | seed | reference median | AE source / target (Table 4) |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in sorted(records, key=lambda r: (r["machine"], r["a"], r["jitter"], r["seed"])):
        ref = np.median(list(r["reference"].values()))
        ae = "-"
        if "ae" in r:
            s, t = hmean(_ae(r, "source")), hmean(_ae(r, "target"))
            p = TABLE4_AE_TYPES[r["machine"]]
            ae = f"{s:.3f} / {t:.3f} ({p[0]:.3f} / {p[1]:.3f})"
        lines.append(f"| {r['machine']} | {r['a']} | {r['jitter']} | {r['seed']} | {ref:.3f} | {ae} |")
    return lines


def _ae(r: dict, domain: str) -> np.ndarray:
    return np.array([v for k, v in r["ae"].items() if k.endswith(domain)])


def combined(records: list[dict], grid: list[tuple[str, float, float]]) -> list[str]:
    """Issue 14's figures per seed for one generator setting (the grid's one entry per machine
    type), over all its machine types, as ``realism.py`` prints them."""
    from mimii_due.evaluation.metrics import hmean

    chosen = {(m, a, j) for m, a, j in grid}
    lines = []
    for seed in sorted({r["seed"] for r in records}):
        rs = [r for r in records if r["seed"] == seed and (r["machine"], r["a"], r["jitter"]) in chosen]
        if len(rs) < len(chosen) or not all("ae" in r for r in rs):
            continue
        refs = np.array([v for r in rs for v in r["reference"].values()])
        src, tgt = (hmean(np.concatenate([_ae(r, d) for r in rs])) for d in ("source", "target"))
        below = sum(hmean(_ae(r, "target")) < hmean(_ae(r, "source")) for r in rs)
        lines.append(f"seed {seed}: reference median {np.median(refs):.3f}, >= 0.95 {np.mean(refs >= 0.95):.0%}, "
                     f"< 0.80 {np.mean(refs < 0.80):.0%}; AE AUC source {src:.3f}, target {tgt:.3f}; "
                     f"target below source in {below} of {len(rs)} machine types")  # fmt: skip
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1", help="tuning seeds")
    ap.add_argument("--grid", required=True, help='"fan=1.6/0.02,2.4/0.05;pump=1.6/0.02": machine=anomaly/jitter,...')
    ap.add_argument("--scale", type=float, default=0.1)
    ap.add_argument("--ae", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="/tmp/mimii_due_calibrate")
    ap.add_argument("--combine", action="store_true", help="the grid is one setting per machine type: print its "
                    "figures over all machine types per seed, as realism.py does")  # fmt: skip
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "results.jsonl"
    done, lines = [], log.read_text().splitlines() if log.exists() else []
    for line in lines:
        try:
            done.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by an interrupted run: dropped, its task runs again
            print(f"{log}: dropping an unreadable line ({line[:60]!r})")
    if len(done) < len(lines):
        atomic.write_text(log, "".join(json.dumps(r) + "\n" for r in done))
    latest = {(r["machine"], r["a"], r["jitter"], r["seed"]): r for r in done if r.get("scale", 0.1) == a.scale}
    done = list(latest.values())  # a task rerun with --ae replaces its record without the AE
    have = {(r["machine"], r["a"], r["jitter"], r["seed"]) for r in done if a.ae <= ("ae" in r)}
    tasks = [(m, an, j, int(s), a.scale, str(out), a.ae) for s in a.seeds.split(",") for m, an, j in parse_grid(a.grid)
             if (m, an, j, int(s)) not in have]  # fmt: skip
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per task, inherited by the workers
    print(f"{len(tasks)} tasks, {len(have)} already done", flush=True)
    with mp.get_context("spawn").Pool(a.workers) as pool, log.open("a") as f:
        for rec in pool.imap_unordered(run_task, tasks):
            f.write(json.dumps(rec) + "\n")
            f.flush()
            done.append(rec)
            print(summary([rec])[-1], flush=True)
    print("\n".join(summary(done)))
    print("\n".join(kind_summary(done)))
    if a.combine:
        print("\n".join(combined(done, parse_grid(a.grid))))


if __name__ == "__main__":
    main()

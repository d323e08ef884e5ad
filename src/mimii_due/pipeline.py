"""Train, test and evaluate over a run folder: the steps behind ``mimii-due train/test/evaluate/run``.

A run folder holds::

    run.json                      detector, settings, data, machines (written first)
    models/<machine>/             one detector artifact per machine type (see Detector.save)
    checkpoints/<machine>/        training state, saved every epoch (for --resume)
    scores.csv                    every scored test clip: table columns, score, decision
    anomaly_score_*.csv, decision_result_*.csv, result.csv, result.json   official files

Training skips machine types whose model is already saved, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from mimii_due import __version__
from mimii_due.data.index import index
from mimii_due.detectors import make
from mimii_due.detectors.base import Detector
from mimii_due.errors import ModelError
from mimii_due.evaluation.files import atomic_write_text, read_ground_truth, write_results, write_score_files
from mimii_due.evaluation.metrics import evaluate as compute_metrics
from mimii_due.evaluation.metrics import summarize
from mimii_due.features.extract import extract

log = logging.getLogger(__name__)
# (stage, machine, step, total, info): stage is "features", "train" or "score"
Progress = Callable[[str, str, int, int, str], None]


def _machines(table: pd.DataFrame, machines: list[str] | None, where: Path) -> list[str]:
    found = sorted(table["machine"].unique())
    if machines is None:
        return found
    missing = sorted(set(machines) - set(found))
    if missing:
        raise ModelError(f"machine type(s) {', '.join(missing)} not found (found: {', '.join(found)})", where)
    return list(machines)


def read_run(run: str | Path) -> dict:
    path = Path(run) / "run.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"not a run folder ({e})", run) from e


def train(
    run: str | Path,
    data: str | Path,
    *,
    detector: str = "ae",
    machines: list[str] | None = None,
    params: dict | None = None,
    resume: bool = False,
    on_error: str = "raise",
    cache: str | Path | None = None,
    progress: Progress | None = None,
) -> dict:
    """Train one detector per machine type on the training clips under ``data``.

    Without ``resume`` the run folder must not exist; with it, machines already trained are
    skipped and an interrupted training continues from its last epoch.
    """
    run = Path(run)
    params = dict(params or {})
    if run.exists() and any(run.iterdir()) and not resume:
        raise ModelError("run folder exists; pass --resume to continue it, or choose another --out", run)
    table = index(data, on_error=on_error)
    train_table = table[table["split"] == "train"]
    if train_table.empty:
        raise ModelError("no training clips (expected <machine>/train/*.wav)", data)
    ms = _machines(train_table, machines, Path(data))
    cache = (Path(cache) if cache else run / "features").resolve()
    meta = {"detector": detector, "params": params, "data": str(Path(data).resolve()), "machines": ms,
            "cache": str(cache), "version": __version__}  # fmt: skip
    if resume and (run / "run.json").exists():
        old = read_run(run)
        if (old["detector"], old["params"]) != (detector, params):
            raise ModelError("--resume with other settings than the run was started with", run)
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run / "run.json", json.dumps(meta, indent=1))
    for machine in ms:
        target = run / "models" / machine
        if (target / "detector.json").exists():
            log.info("%s: already trained", machine)
            continue
        clips = train_table[train_table["machine"] == machine]
        _, clips = extract(
            clips,
            cache=cache,
            on_error=on_error,
            progress=(lambda d, t, m=machine: progress("features", m, d, t, "")) if progress else None,
        )
        det = make(detector, cache=cache, **params)
        det.fit(
            clips,
            checkpoint=run / "checkpoints" / machine,
            progress=(lambda e, t, info, m=machine: progress("train", m, e, t, info)) if progress else None,
        )
        det.save(target)
        shutil.rmtree(run / "checkpoints" / machine, ignore_errors=True)
    return meta


def load_detector(run: str | Path, machine: str) -> Detector:
    meta = read_run(run)
    return Detector.load(Path(run) / "models" / machine, cache=meta.get("cache"))


def test(
    run: str | Path,
    data: str | Path,
    *,
    on_error: str = "raise",
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Score every test clip of the run's machine types; write ``scores.csv`` and the official
    score and decision CSVs. Unlabelled (evaluation) clips are scored too."""
    run = Path(run)
    meta = read_run(run)
    table = index(data, on_error=on_error)
    test_table = table[(table["split"] == "test") & table["machine"].isin(meta["machines"])]
    if test_table.empty:
        raise ModelError(f"no test clips of {', '.join(meta['machines'])}", data)
    parts = []
    for machine, clips in test_table.groupby("machine", sort=True):
        det = load_detector(run, machine)
        feats, clips = (
            det.load_features(clips, on_error=on_error)
            if progress is None
            else extract(
                clips,
                cfg=det.features,
                cache=det.cache,
                on_error=on_error,
                progress=lambda d, t, m=machine: progress("features", m, d, t, ""),
            )
        )
        scores = det.score(clips, features=feats)
        parts.append(clips.assign(score=scores, decision=scores > det.threshold_, threshold=det.threshold_))
        if progress:
            progress("score", machine, 1, 1, "")
    scores = pd.concat(parts, ignore_index=True)
    for old in list(run.glob("anomaly_score_*.csv")) + list(run.glob("decision_result_*.csv")):
        old.unlink()
    write_score_files(scores, run)
    tmp = run / "scores.csv.tmp"
    scores.to_csv(tmp, index=False)
    tmp.replace(run / "scores.csv")
    return scores


def evaluate(
    run: str | Path, *, ground_truth: str | Path | None = None, max_fpr: float = 0.1
) -> tuple[pd.DataFrame, dict]:
    """Metrics of the run's scores; labels come from the file names or from ``ground_truth``.

    Writes ``result.csv`` and ``result.json``. Sections whose clips carry no label and have no
    ground truth are left out (with a log message).
    """
    run = Path(run)
    try:
        scores = pd.read_csv(run / "scores.csv", dtype={"label": object})
    except OSError as e:
        raise ModelError("no scores.csv: run `mimii-due test` first", run) from e
    if ground_truth is not None:
        gt = read_ground_truth(ground_truth)
        merged = scores.merge(gt, on=["machine", "section", "domain", "filename"], how="left", suffixes=("", "_gt"))
        scores = merged.assign(label=merged["label"].where(merged["label"].notna(), merged["label_gt"])).drop(
            columns="label_gt"
        )
    labelled = scores[scores["label"].notna()]
    if labelled.empty:
        raise ModelError("no labelled test clips: evaluation data needs --ground-truth", run)
    if len(labelled) < len(scores):
        log.info("%d unlabelled clips left out of the evaluation", len(scores) - len(labelled))
    results = compute_metrics(labelled, max_fpr=max_fpr)
    summary = summarize(results)
    write_results(results, summary, run)
    return results, summary

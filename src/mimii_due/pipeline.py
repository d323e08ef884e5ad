"""The file work and the steps behind ``mimii-due train/test/evaluate/run``.

Data flows one way: files -> clip table (:func:`index`) -> features (:func:`features`, once, with
progress and skip-bad) -> detector -> scores -> run folder (:class:`Run`) -> evaluation -> report.
Every setting is checked (detector name, config keys, values and ranges) before anything is
written. Training skips machine types whose model is already saved, so an interrupted run resumes.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from mimii_due import __version__
from mimii_due.config import MAX_FPR, FeatureConfig, feature_settings
from mimii_due.data.audio import LONG
from mimii_due.data.index import index
from mimii_due.data.naming import DOMAINS
from mimii_due.data.years import fits, protocol_for
from mimii_due.detectors import make, merge_spec, spec_folder
from mimii_due.detectors.base import calibration_rows
from mimii_due.engines import Engine, LocalEngine
from mimii_due.errors import AudioError, ConfigError, MimiiDueError, ModelError
from mimii_due.evaluation.files import publish_file_results, read_ground_truth, read_score_files, score_files
from mimii_due.evaluation.metrics import PROTOCOLS, bootstrap_sd, summarize
from mimii_due.evaluation.metrics import evaluate as compute_metrics
from mimii_due.features.extract import Features, extract, is_cached, store
from mimii_due.progress import Progress, StageProgress, for_stage
from mimii_due.runs import Run, over_runs, run_names, run_setting

log = logging.getLogger(__name__)
LONG_TRAINING = 60.0  # seconds: training clips longer than this (at the median) are said to want `split`


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise MimiiDueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")


def _machines(table: pd.DataFrame, machines: list[str] | None, where: Path) -> list[str]:
    found = sorted(table["machine"].unique())
    if machines is None:
        return found
    missing = sorted(set(machines) - set(found))
    if missing:
        raise ModelError(f"machine type(s) {', '.join(missing)} not found (found: {', '.join(found)})", where)
    return list(dict.fromkeys(machines))  # each once: `--machines fan,fan` trains fan once


def _extract_shard(job: tuple) -> tuple[Features, pd.DataFrame, list]:
    table, cfg, on_error = job
    feats, kept = extract(table, cfg=cfg, on_error=on_error)
    return feats, kept, list(kept.attrs.get("skipped", []))


def _extract_on(engine: Engine, clips: pd.DataFrame, cfg: FeatureConfig, cache, on_error: str, progress):
    """:func:`extract` with the uncached clips in shards on ``engine``; the driver keeps the cache."""
    clips = clips.reset_index(drop=True)
    todo = np.array([not (cache and is_cached(p, cfg, cache)) for p in clips["path"]], bool)
    n_shards = max(1, min(int(todo.sum()), 4 * engine.workers))
    shards = [part for part in np.array_split(np.flatnonzero(todo), n_shards) if len(part)]
    results = engine.map(_extract_shard, [(clips.iloc[s], cfg, on_error) for s in shards], progress=progress)
    parts, tables, skipped = [], [], []
    if (~todo).any():  # read from the cache here
        feats, kept = extract(clips[~todo], cfg=cfg, cache=cache, on_error=on_error)
        parts.append(feats)
        tables.append(kept)
        skipped += kept.attrs.get("skipped", [])
    for feats, kept, bad in results:
        if cache:
            store(kept, feats, cfg=cfg, cache=cache)
        parts.append(feats)
        tables.append(kept)
        skipped += bad
    feats = Features.concat(parts)
    table = pd.concat(tables, ignore_index=True)
    row_of = {p: i for i, p in enumerate(clips["path"])}
    order = np.argsort([row_of[p] for p in table["path"]], kind="stable")  # the clips' own order, as locally
    table = table.iloc[order].reset_index(drop=True)
    table.attrs["skipped"] = skipped
    return feats.select(order), table


def features(
    clips: pd.DataFrame,
    *,
    cfg: FeatureConfig = FeatureConfig(),
    min_frames: int = 1,
    cache: str | Path | None = None,
    on_error: str = "raise",
    progress=None,
    engine: Engine | None = None,
) -> tuple[Features, pd.DataFrame]:
    """Features of ``clips`` (the one place the pipeline reads audio), on this machine or, with a
    cluster ``engine``, in shards of the clip table. Clips shorter than ``min_frames`` are bad input
    like an unreadable clip: an error naming them, or (``skip``) reported in ``attrs["skipped"]``
    and left out."""
    if engine is None or engine.name == "local":
        feats, kept = extract(clips, cfg=cfg, cache=cache, on_error=on_error, progress=progress)
    else:
        feats, kept = _extract_on(engine, clips, cfg, cache, on_error, progress)
    short = feats.lengths < min_frames
    if short.any():
        seconds = cfg.hop_length / cfg.sample_rate  # of a frame
        msgs = [(p, f"{p}: too short ({n} frames, {n * seconds:.1f} s; the model needs {min_frames}, "
                    f"{min_frames * seconds:.1f} s)") for p, n in zip(kept["path"][short], feats.lengths[short],
                                                                        strict=True)]  # fmt: skip
        if on_error == "raise":
            raise AudioError(msgs[0][1].split(": ", 1)[1], msgs[0][0])
        for _, m in msgs:
            log.warning("skipping %s", m)
        keep = ~short
        feats = feats.select(keep.nonzero()[0])
        skipped = list(kept.attrs.get("skipped", [])) + msgs
        kept = kept[keep].reset_index(drop=True)
        kept.attrs["skipped"] = skipped
    return feats, kept


def train(
    run: str | Path,
    data: str | Path,
    *,
    detector: str = "ensemble",
    machines: list[str] | None = None,
    params: dict | None = None,
    resume: bool = False,
    retrain: bool = False,
    on_error: str = "raise",
    cache: str | Path | None = None,
    year: int | None = None,
    channel: int = 0,
    feature_params: dict | None = None,
    progress: StageProgress | None = None,
    engine: Engine | None = None,
) -> dict:
    """Train one detector per machine type on the training clips under ``data`` (of multichannel
    recordings, their ``channel``: the models keep it, and read it from every clip they score).
    ``feature_params`` change the detector's log-mel (``{"n_mels": 64}``, :data:`FEATURE_SETTINGS`);
    the models keep them too. ``detector`` may carry settings (``"twfr_gmm:decay=auto"``), added to ``params``;
    ``run.json`` says the detector's name and every setting.

    Without ``resume`` the run folder must not exist; with it, machines already trained are
    skipped and an interrupted training continues from its last epoch. With a cluster ``engine``
    the features are made in shards and the machine types train as parallel tasks. A detector that
    ``uses_outliers`` also trains on other machine types' clips of ``data`` (``outlier_clips``),
    whether or not they are in ``machines``.

    With ``retrain`` an existing run's machine types (or ``machines``) are trained again on the
    training clips ``data`` holds now (a new condition's, after ``collect``), with the run's detector,
    settings, features and channel (others are refused) and each model's false-alarm rate
    (``threshold``). Each model is replaced whole once trained, so a ``serve`` or ``watch`` of the run
    scores with it from its next clip, and the run's test results are seen to be stale. Run again
    with ``retrain`` after an interruption, it trains only the machine types not yet trained again.
    """
    if retrain and resume:
        raise ConfigError("retrain goes on where an interrupted retraining stopped by itself: give it without resume")
    if retrain and not Run(run).exists():
        raise ModelError("no run here to train again: train it first (without --retrain)", run)
    detector, params = merge_spec(detector, params)
    feature_params = feature_settings(feature_params)
    cfg = replace(make(detector, features=feature_params or None, **params).features, channel=channel)  # every
    # setting is checked here, before any file is written
    _check_on_error(on_error)
    keeper = Run(run)
    table = index(data, on_error=on_error, year=year)
    train_table = table[table["split"] == "train"]
    if train_table.empty:
        raise ModelError("no training clips (expected <machine>/train/*.wav)", data)
    ms = _machines(train_table, machines or (Run(run).meta()["machines"] if retrain else None), Path(data))
    cache = (Path(cache) if cache else keeper.path / "features").resolve()
    meta = {"detector": detector, "params": params, "data": str(Path(data).resolve()), "machines": ms,
            "cache": str(cache), "year": int(table["year"].iloc[0]), "channel": channel,
            "features": feature_params}  # fmt: skip
    with keeper.writing():
        keeper.start(meta, resume=resume or retrain)
        since, rates = None, {}
        if retrain:  # a model older than the retraining's start is one to train again
            since, rates = keeper.meta().get("retraining_since") or time.time(), keeper.alarm_rates()
            keeper.update({"retraining_since": since, "data": meta["data"]})
        engine = engine or LocalEngine()
        jobs = []

        def save(machine: str, det, clips: pd.DataFrame) -> None:
            if machine in rates and not math.isclose(rates[machine], 1 - det.threshold_quantile):
                det.set_false_alarm_rate(rates[machine])  # the rate `threshold` set, kept
            keeper.save_model(machine, det)
            _check_threshold_support(machine, det)
            _check_domain_support(machine, det, clips)

        for machine in ms:
            if keeper.has_model(machine) and not (since and keeper.model_time(machine) < since):
                log.info("%s: already trained", machine)
                continue
            det = make(detector, features=cfg, **params)
            feats, clips = features(
                train_table[train_table["machine"] == machine],
                cfg=det.features, min_frames=det.min_frames, cache=cache, on_error=on_error,
                progress=for_stage(progress, "features", machine), engine=engine,
            )  # fmt: skip
            if clips.empty:
                raise ModelError(f"no readable training clips of {machine}", data)
            _check_copies(feats, clips, machine, data)
            _check_lengths(clips, machine, data)
            outliers = None
            if det.uses_outliers and (train_table["machine"] != machine).any():
                outliers = features(
                    outlier_clips(train_table, machine, len(clips)), cfg=det.features, min_frames=det.min_frames,
                    cache=cache, on_error=on_error, progress=for_stage(progress, "features", f"{machine} (outliers)"),
                    engine=engine,
                )  # fmt: skip
                outliers = outliers if len(outliers[1]) else None  # every one skipped as unreadable
            job = (machine, detector, params, cfg, feats, clips, str(keeper.checkpoint_dir(machine)), outliers)
            if engine.name == "local":  # one machine type after the other, with epoch progress
                save(machine, _fit_job(job, for_stage(progress, "train", machine)), clips)
            else:
                jobs.append(job)
        if jobs:  # one training task per machine type on the cluster; the driver saves the models
            done = engine.map(_fit_job, jobs, progress=for_stage(progress, "train", "all machine types"))
            for job, det in zip(jobs, done, strict=True):
                save(job[0], det, job[5])
        if retrain:
            keeper.update({"retraining_since": None})
        return keeper.meta()


def _clips_to_see(det) -> tuple[float, int]:
    """The detector's false-alarm rate and the fewest clips in which one normal clip above its
    threshold is expected (clips x rate at least 1)."""
    rate = 1 - det.threshold_quantile
    return rate, math.ceil(1 / rate - 1e-9)


def _check_threshold_support(machine: str, det) -> np.ndarray:
    """Warn where a threshold rests on fewer training clips than its false-alarm rate can be seen in
    (clips x rate below 1: not one normal clip is expected above it); returns the clips it rests on
    (``calibration_rows``)."""
    rows = calibration_rows(det.held_out_)
    n, (rate, need) = int(rows.sum()), _clips_to_see(det)
    if n < need:
        log.warning("%s: the threshold for a false-alarm rate of %.3g rests on %d training clips, fewer than the %d "
                    "in which one normal clip above it is expected; the alarm rate on new normal clips may be far "
                    "from %.3g (record more normal clips, or set a higher rate with `mimii-due threshold`)",
                    machine, rate, n, need, rate)  # fmt: skip
    return rows


def _check_domain_support(machine: str, det, clips: pd.DataFrame) -> None:
    """Warn where a section's domain (a new operating condition: the target domain) has fewer
    training clips than its false-alarm rate can be seen in: the threshold rests on the other
    domain's clips, and its new normal clips, more varied than so few show, may raise alarms far
    more often (generated data, the MIMII DUE layout's 3 target clips per section, TWFR-GMM and the
    ensemble at a rate of 0.10: 23-56 % of new target normal clips flagged, 5-14 % of the source
    domain's; tuning seeds 0 and 1 at scale 0.1 and seed 7's fan at full size)."""
    rate, need = _clips_to_see(det)
    counts = clips.groupby(["section", "domain"]).size()
    few = counts[(counts < need) & (counts.index.get_level_values("section").isin(
        counts[counts >= need].index.get_level_values("section")))]  # fmt: skip
    if few.empty:  # only beside a domain of its section that has enough: its threshold rests on that one
        return
    groups = ", ".join(f"section {int(sec):02d}'s {dom} domain ({n})" for (sec, dom), n in few.items())
    log.warning("%s: %s: fewer training clips than the %d in which one normal clip above the threshold is expected; "
                "the threshold rests on the other domain's clips, and new normal clips of such a condition may raise "
                "alarms far more often than %.3g (record more clips of it: `collect`)", machine, groups, need, rate)


def _check_lengths(clips: pd.DataFrame, machine: str, data: str | Path) -> None:
    """Warn where training clips run for minutes (a shift recorded in a few files): each is pooled
    into one vector, one example of the machine's sound, and the model will refuse clips under half
    their length; ``split`` cuts them into clips."""
    seconds = (clips["frames"] / clips["sample_rate"]).to_numpy()
    if len(seconds) and np.median(seconds) > LONG_TRAINING:
        lo, hi = seconds.min(), seconds.max()
        log.warning("%s: its %d training clip(s) last %s: each is one example to the detectors, which pool a clip "
                    "into one vector, and the model will refuse clips under half that length; unless the machine "
                    "needs that long to show its sound, cut them into clips (DCASE's are 10 s): `mimii-due split "
                    "%s OUT`", machine, len(seconds), f"{lo:.0f} s" if lo == hi else f"{lo:.0f} to {hi:.0f} s",
                    Path(clips["path"].iloc[0]).parent)  # fmt: skip


def _check_copies(feats: Features, clips: pd.DataFrame, machine: str, data: str | Path) -> None:
    """Training clips that are copies of one another (the same file saved twice under two names)
    teach no variation: a section of nothing but copies is an error (every detector then scored
    every test clip alike, e.g. all 0), a few copies a warning."""
    means = feats.means()
    for section, rows in clips.groupby("section").indices.items():
        distinct = len(np.unique(means[rows], axis=0))
        if distinct == 1 and len(rows) > 1:
            raise ModelError(f"all {len(rows)} training clips of {machine} section {int(section):02d} are the same "
                             "sound (copies of one clip?): there is no normal variation to learn", data)  # fmt: skip
        if distinct < len(rows):
            log.warning("%d of %d training clips of %s section %02d are copies of others", len(rows) - distinct,
                        len(rows), machine, int(section))  # fmt: skip


def outlier_clips(train_table: pd.DataFrame, machine: str, n: int, seed: int = 0) -> pd.DataFrame:
    """Up to ``n`` training clips of the machine types other than ``machine``, drawn at random
    (seeded): the outlier exposure of detectors that learn from auxiliary classes. As many as the
    machine type's own clips, so training costs at most twice as much as without."""
    others = train_table[train_table["machine"] != machine]
    pick = np.random.default_rng(seed).permutation(len(others))[:n]
    return others.iloc[np.sort(pick)]


def _fit_job(job: tuple, progress=None):
    """Train one machine type's detector (here or in a cluster task): the same code either way."""
    machine, detector, params, cfg, feats, clips, checkpoint, outliers = job
    if outliers is not None:
        outliers = (outliers[0].writable(), outliers[1])
    return make(detector, features=cfg, **params).fit(feats.writable(), clips, checkpoint=checkpoint, progress=progress,
                                        outliers=outliers)  # fmt: skip


def _score_job(job: tuple) -> np.ndarray:
    det, feats, clips = job
    return det.score(feats.writable(), clips)


def test(
    run: str | Path,
    data: str | Path,
    *,
    on_error: str = "raise",
    year: int | None = None,
    progress: StageProgress | None = None,
    engine: Engine | None = None,
) -> pd.DataFrame:
    """Score every test clip of the run's machine types; publish ``results/`` (scores.csv and the
    year's official score and decision CSVs). Unlabelled (evaluation) clips are scored too; with a
    cluster ``engine``, features are made in shards and each machine type is scored as a task.
    The data's year (hence its metric) is the run's, recognised or named at ``train``, unless
    ``year`` names another."""
    _check_on_error(on_error)
    keeper = Run(run)
    meta = keeper.meta()
    table = index(data, on_error=on_error, year=year)
    if year is None and meta.get("year") is not None and fits(meta["year"], table):
        table["year"] = meta["year"]  # the run's year, unless it is that of other clips: these are recognised
    test_table = table[(table["split"] == "test") & table["machine"].isin(meta["machines"])]
    if test_table.empty:
        raise ModelError(f"no test clips of {', '.join(meta['machines'])}", data)
    with keeper.writing():
        engine = engine or LocalEngine()
        jobs, skipped = [], list(table.attrs.get("skipped", []))
        for machine, clips in test_table.groupby("machine", sort=True):
            det = keeper.load_model(machine)
            feats, clips = features(clips, cfg=det.features, min_frames=det.scorable_frames, cache=keeper.cache,
                                    on_error=on_error, progress=for_stage(progress, "features", machine),
                                    engine=engine)  # fmt: skip
            skipped += clips.attrs.get("skipped", [])
            _say_long(machine, det, feats, clips)
            jobs.append((det, feats, clips))
        if not any(len(clips) for _, _, clips in jobs):  # an empty results folder would look like a finished test
            raise ModelError(f"none of the {len(test_table)} test clips could be read (all skipped as bad)", data)
        results = engine.map(_score_job, jobs, progress=for_stage(progress, "score", "all machine types"))
        parts = [clips.assign(score=s, decision=s > det.threshold_, threshold=det.threshold_)
                 for (det, _, clips), s in zip(jobs, results, strict=True)]  # fmt: skip
        scores = pd.concat(parts, ignore_index=True)
        keeper.publish_scores(scores, data=data, protocol=protocol_for(table), year=int(table["year"].iloc[0]))
        scores.attrs["skipped"] = skipped
        return scores


def _say_long(machine: str, det, feats, clips: pd.DataFrame) -> None:
    """Name the test clips far longer than the model's training clips: the metrics take one score per
    clip, so each is scored whole, where a fault in part of it is averaged away (``score``, ``serve``
    and ``watch`` decide such a recording window by window: :meth:`Detector.windows`)."""
    typical = getattr(det, "clip_frames_", None)
    long = clips["filename"][feats.lengths > LONG * typical].tolist() if typical else []
    if long:
        log.warning("%d test clip(s) of %s are over %.1f times as long as its training clips (%s): each is scored "
                    "whole, where a fault in part of it is averaged away; `mimii-due split` cuts them into clips "
                    "(`--seconds` the training clips' %.1f s), `mimii-due score` decides them window by window",
                    len(long), machine, LONG, ", ".join(long[:3]) + (", ..." if len(long) > 3 else ""),
                    typical * det.features.hop_length / det.features.sample_rate)  # fmt: skip


def threshold(run: str | Path, *, rate: float, machines: list[str] | None = None) -> dict:
    """Set the models' nominal false-alarm rate: each threshold fitted again from the training
    scores kept with the model (:meth:`Detector.set_false_alarm_rate`; no retraining, seconds).
    A tested run's decisions are updated to the new thresholds (the scores stay), and so is its
    evaluation where every clip's label is in the scores; else (evaluation clips, labelled by a
    ground truth) it is left to ``evaluate``. Returns, per machine type, the old and new threshold,
    the training clips it was fitted on and how many of them it flags, and whether the results were
    updated and evaluated."""
    keeper = Run.of(run)
    meta = keeper.meta()
    chosen = machines or [m for m in meta.get("machines", []) if keeper.has_model(m)]
    unknown = [m for m in chosen if not keeper.has_model(m)]
    if unknown or not chosen:
        raise ModelError(f"no trained model of {', '.join(unknown) or 'any machine type'} here", keeper.path)
    with keeper.writing():
        try:  # a test whose models are still the ones it scored with: its decisions can follow
            scores, stamp = keeper.read_scores(), keeper.stamp()
        except ModelError:
            scores = stamp = None
        try:
            evaluated_as = keeper.read_results()[1].get("protocol")  # evaluated again the same way
        except ModelError:
            evaluated_as = None
        out = {}
        for machine in chosen:
            det = keeper.load_model(machine)
            old = det.threshold_
            det.set_false_alarm_rate(rate)
            keeper.save_model(machine, det)
            rows = _check_threshold_support(machine, det)
            out[machine] = {"old": old, "new": det.threshold_, "clips": int(rows.sum()),
                            "flagged": int((det.train_scores_[rows] > det.threshold_).sum())}  # fmt: skip
            if scores is not None:
                at = scores["machine"] == machine
                scores.loc[at, "threshold"] = det.threshold_
                scores.loc[at, "decision"] = scores.loc[at, "score"] > det.threshold_
        summary = {"updated": scores is not None, "evaluated": False}
        if scores is not None:
            keeper.publish_scores(scores, data=stamp["data"], protocol=stamp["protocol"], year=stamp.get("year"))
            labelled = scores["label"].notna() & scores["domain"].notna()
            if evaluated_as and labelled.all():  # else it may have needed a ground truth: left to `evaluate`
                results, summ = _metrics(scores, evaluated_as, None, MAX_FPR, 0, keeper.path)[:2]
                keeper.publish_results(results, _with_rates(summ, results, keeper))
                summary["evaluated"] = True
        return {"machines": out} | summary


def evaluate(
    run: str | Path,
    *,
    ground_truth: str | Path | None = None,
    protocol: str | None = None,
    max_fpr: float = MAX_FPR,
    bootstrap: int = 0,
) -> tuple[pd.DataFrame, dict]:
    """Metrics of the run's scores under the data's year's protocol (or ``protocol``); labels come
    from the file names or from ``ground_truth``. Writes ``results/result.csv`` and ``result.json``.
    Sections whose clips carry no label and have no ground truth are left out (with a log message).
    ``bootstrap`` draws (0: none) add ``bootstrap_sd`` to the summary: the official score's standard
    deviation over resampled test sets (:func:`evaluation.metrics.bootstrap_sd`)."""
    return _evaluate_run(Run(run), ground_truth, protocol, max_fpr, bootstrap)[:2]


def evaluate_files(
    folder: str | Path,
    *,
    ground_truth: str | Path | None = None,
    protocol: str | None = None,
    max_fpr: float = MAX_FPR,
    bootstrap: int = 0,
) -> tuple[pd.DataFrame, dict]:
    """:func:`evaluate` for a folder of the official score and decision files of any system (a
    challenge submission, the official baselines' output, ours): the year's protocol from the
    files' names (or ``protocol``), labels from the clips' names or ``ground_truth``. Writes
    ``result.csv``, ``result.json`` and the labelled clips (``scores.csv``, for the report) into
    ``folder``."""
    return _evaluate_files(Path(folder), ground_truth, protocol, max_fpr, bootstrap)[:2]


def compare(
    paths: list[str | Path],
    *,
    ground_truth: str | Path | None = None,
    protocol: str | None = None,
    max_fpr: float = MAX_FPR,
    bootstrap: int = 0,
    progress: StageProgress | None = None,
) -> list[dict]:
    """Evaluate each of ``paths`` (a run, a run's results folder, or a folder of any system's
    official score files), each once, writing its results as :func:`evaluate` does. One record per
    path: ``name`` (:func:`~mimii_due.runs.run_names`), ``path``, ``detector`` ("" for score files),
    ``params`` (its settings), ``written`` (where its results are), ``results``, ``summary``,
    ``setting`` (what :func:`~mimii_due.runs.over_runs` compares) and, after the first, ``same_clips`` (tested on the
    first's clips, by name and label).
    With ``bootstrap``, one on the same clips also gets ``versus_first``, its official score minus
    the first's, and ``versus_first_sd``, the paired bootstrap sd of that difference (both scored on
    the same resampled test sets, so the luck they share cancels)."""
    rows, targets = [], {}
    for path in map(Path, paths):  # each once: a run's results folder means the run
        if not path.is_dir():  # before any is evaluated and written
            raise ModelError("not a run folder, nor one of score files: no such folder", path)
        keeper = Run.of(path)
        targets.setdefault((keeper.path if keeper.exists() else path).resolve(), (path, keeper))
    for path, keeper in targets.values():
        if not keeper.exists() and score_files(path):
            results, summary, clips = _evaluate_files(path, ground_truth, protocol, max_fpr, bootstrap, progress)
            detector, written, meta = "", path, {}
        else:
            results, summary, clips = _evaluate_run(keeper, ground_truth, protocol, max_fpr, bootstrap, progress)
            meta = keeper.meta()
            detector, written, path = meta["detector"], keeper.results_dir, keeper.path
        keys = ["machine", "section", "filename"]
        clips = clips.sort_values(keys).reset_index(drop=True)
        setting = run_setting(meta, results["machine"].unique())
        rows.append({"path": path, "detector": detector, "params": meta.get("params") or {}, "written": written,
                     "results": results, "summary": summary, "clips": clips, "setting": setting})  # fmt: skip
        if len(rows) == 1:
            continue
        first, cols = rows[0], [*keys, "domain", "label"]
        same = (summary["protocol"] == first["summary"]["protocol"]
                and clips[cols].astype(str).equals(first["clips"][cols].astype(str)))  # fmt: skip
        rows[-1]["same_clips"] = same
        if same and bootstrap and not (summary["undefined"] or first["summary"]["undefined"]):
            rows[-1]["versus_first"] = summary["official_score"] - first["summary"]["official_score"]
            rows[-1]["versus_first_sd"] = bootstrap_sd(
                clips, versus=first["clips"], protocol=summary["protocol"], n=bootstrap, max_fpr=max_fpr,
                progress=for_stage(progress, "bootstrap", f"{Path(path).name} minus {Path(first['path']).name}"),
            )  # fmt: skip
    for r, name in zip(rows, run_names([(r["path"], r["detector"], r["params"]) for r in rows]), strict=True):
        r["name"] = name
    return rows


def _evaluate_run(keeper: Run, ground_truth, protocol, max_fpr, bootstrap, progress=None) -> tuple:
    """:func:`evaluate`'s work; also returns the labelled clips."""
    _check_bootstrap(bootstrap)
    keeper.meta()  # "not a run folder" before "run test first"
    with keeper.writing():
        scores = keeper.read_scores()
        out = _metrics(scores, protocol or keeper.stamp()["protocol"], ground_truth, max_fpr, bootstrap, keeper.path,
                       for_stage(progress, "bootstrap", keeper.path.name))  # fmt: skip
        keeper.publish_results(out[0], _with_rates(out[1], out[0], keeper))
        return out


def _with_rates(summary: dict, results: pd.DataFrame, keeper: Run) -> dict:
    """``summary`` with ``alarm_rates``: the false-alarm rate each tested machine type's thresholds
    were fitted for, what its false alarms are judged against."""
    tested = set(results["machine"])
    summary["alarm_rates"] = {m: r for m, r in keeper.alarm_rates().items() if m in tested}
    return summary


def _evaluate_files(folder: Path, ground_truth, protocol, max_fpr, bootstrap, progress=None) -> tuple:
    """:func:`evaluate_files`' work; also returns the labelled clips."""
    _check_bootstrap(bootstrap)
    if Run.of(folder).exists():  # its scores.csv and result.json are the run's, kept by the run
        raise ConfigError("this is a run's folder or its results folder: evaluate the run", folder)
    scores, named = read_score_files(folder)
    out = _metrics(scores, protocol or named, ground_truth, max_fpr, bootstrap, folder,
                   for_stage(progress, "bootstrap", folder.name))  # fmt: skip
    publish_file_results(folder, *out)
    return out


def _check_bootstrap(bootstrap: int) -> None:
    if bootstrap < 0 or bootstrap == 1:  # before any work: one draw has no spread
        raise ConfigError(f"bootstrap: 0 (none) or at least 2 resampled test sets, got {bootstrap}")


def _metrics(scores: pd.DataFrame, protocol: str, ground_truth, max_fpr: float, bootstrap: int, where: str | Path,
             progress: Progress | None = None) -> tuple[pd.DataFrame, dict, pd.DataFrame]:  # fmt: skip
    """The evaluation of a score table (one row per test clip), the ground truth filling in the
    labels and domains the clips' names do not give: results, summary and the labelled clips."""
    if protocol not in PROTOCOLS:
        raise MimiiDueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    if ground_truth is not None:
        gt = read_ground_truth(ground_truth).rename(columns={"label": "label_gt", "domain": "domain_gt"})
        merged = scores.merge(gt, on=["machine", "section", "filename"], how="left")
        scores = merged.assign(
            label=merged["label"].where(merged["label"].notna(), merged["label_gt"]),
            domain=merged["domain"].where(merged["domain"].notna(), merged["domain_gt"]),
        ).drop(columns=["label_gt", "domain_gt"])
    labelled = scores[scores["label"].notna() & scores["domain"].notna()]
    if labelled.empty and ground_truth is not None:
        raise ModelError(f"the ground truth names none of the {len(scores)} unlabelled test clips (e.g. "
                         f"{scores['machine'].iloc[0]} {scores['filename'].iloc[0]}): is it this data's year and "
                         "part?", ground_truth)  # fmt: skip
    if labelled.empty:
        raise ModelError("no labelled test clips: evaluation data needs --ground-truth", where)
    if len(labelled) < len(scores):
        log.info("%d unlabelled clips left out of the evaluation", len(scores) - len(labelled))
    if protocol != "dcase2020":  # 2021-2026: each section is tested in both domains
        for (machine, section), g in labelled.groupby(["machine", "section"]):
            for domain in sorted(set(DOMAINS) - set(g["domain"])):
                log.warning("%s section %02d has no %s-domain test clips: the official score leaves that "
                            "domain's AUC out", machine, section, domain)  # fmt: skip
    results = compute_metrics(labelled, protocol=protocol, max_fpr=max_fpr)
    summary = summarize(results)
    for why in summary["undefined"]:  # e.g. new normal recordings before any anomaly was recorded
        log.warning("%s, so its AUC is undefined (its alarms are still counted) and so is the official score", why)
    if bootstrap and summary["undefined"]:
        log.warning("no bootstrap: the official score is undefined")
    elif bootstrap:
        sd = bootstrap_sd(labelled.reset_index(drop=True), protocol=protocol, n=bootstrap, max_fpr=max_fpr,
                          progress=progress)  # fmt: skip
        summary |= {"bootstrap_sd": sd, "bootstrap_draws": bootstrap}
    return results, summary, labelled


# The default dataset of `mimii-due run`: two machine types in the layout the field uses now
# (DCASE 2023: one section, 99 source + 10 target training clips at scale 0.1, 50 normal + 50
# anomalous test clips per domain), small enough that the paper's AE (100 epochs) and our default
# detector train and are evaluated within 5 minutes on 2 cores (228 s measured; at scale 0.2 it
# took 369 s, before outlier exposure). Fan and pump were chosen for the demonstration: on the
# check seeds pump's anomalies are the easiest of the five for the labelled reference, fan's among
# the harder (docs/measurements.md).
DEFAULT_RUN = {"machines": ["fan", "pump"], "sections": [0], "scale": 0.1, "min_test": 50, "seed": 0,
               "layout": "dcase2023", "detectors": ["ae", "ensemble"]}  # fmt: skip


RUN_OUTPUTS = ("data", "features", "report.html", "report.md", "report_files")  # besides a folder per detector


def _check_run_out(out: Path) -> None:
    """``out`` is new, empty or an earlier ``run``'s (which resumes): never a folder of other things,
    a dataset's above all, that the run's folders would be written among."""
    from mimii_due.detectors import REGISTRY
    from mimii_due.runs import LOCK

    if not out.is_dir():
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name not in (*RUN_OUTPUTS, LOCK)
                     and not (p.is_dir() and (p.name.split(":")[0] in REGISTRY or Run(p).exists())))  # fmt: skip
    if foreign:
        raise ConfigError(f"folder exists and is not an earlier `mimii-due run` (it holds {', '.join(foreign[:3])}"
                          f"{', ...' if len(foreign) > 3 else ''}); choose another --out", out)  # fmt: skip


def _params_for(spec: str, params: dict | None) -> dict:
    """The settings of ``params`` that the detector of ``spec`` has (``run --epochs 5`` sets the epochs
    of the detectors that train in epochs and leaves the others alone)."""
    from mimii_due.detectors import parse_spec, setting_names

    known = setting_names(parse_spec(spec)[0])
    return {k: v for k, v in (params or {}).items() if k in known}


def _with_seeds(detectors: list[str], seeds: list[int] | None) -> list[str]:
    """Each of ``detectors`` that takes a seed once per seed, the others once."""
    from mimii_due.detectors import parse_spec, setting_names

    if not seeds:
        return list(detectors)
    if min(seeds) < 0:
        raise ConfigError(f"seeds are whole numbers from 0, not {min(seeds)}")
    out = []
    for det in detectors:
        name, own = parse_spec(det)
        if "seed" in own:
            raise ConfigError(f"detector {det!r} gives its own seed; seeds gives each detector its seeds")
        takes = "seed" in setting_names(name)
        if not takes:
            log.info("%s takes no seed: it is run once", det)
        out += [f"{det}:seed={s}" for s in seeds] if takes else [det]
    return out


def check_detectors(detectors: list[str], params: dict | None, feature_params: dict | None, *,
                    each: bool = True) -> None:  # fmt: skip
    """Raise :class:`ConfigError` where one of ``detectors`` (specs) cannot be made with ``params``
    and ``feature_params``: each detector with the settings of ``params`` it has, as :func:`run` gives
    them (``each=False``: all of them, as :func:`train`)."""
    for det in detectors:
        name, settings = merge_spec(det, _params_for(det, params) if each else params)
        make(name, features=feature_settings(feature_params) or None, **settings)


def run(
    out: str | Path,
    data: str | Path | None = None,
    *,
    detectors: list[str] = tuple(DEFAULT_RUN["detectors"]),
    seeds: list[int] | None = None,
    machines: list[str] | None = None,
    params: dict | None = None,
    scale: float = DEFAULT_RUN["scale"],
    ground_truth: str | Path | None = None,
    on_error: str = "raise",
    year: int | None = None,
    channel: int = 0,
    feature_params: dict | None = None,
    progress: StageProgress | None = None,
    engine: Engine | None = None,
) -> dict:
    """The whole pipeline: (generate) -> train -> test -> evaluate -> report, one run folder per
    detector under ``out``, on this machine or a cluster ``engine`` (``channel``, ``feature_params``:
    as :func:`train`). A detector may carry settings (``"twfr_gmm:decay=auto"``: its folder is
    ``twfr_gmm_decay-auto``), so that variants of one detector are compared; with ``seeds`` each
    detector that takes a seed is run once per seed (``ensemble:seed=0``, ...; the others once).
    Returns ``{"results":
    {detector: results}, "summaries": {detector: summary}, "over_runs": [...], "report": path,
    "seconds": s}``; ``over_runs`` sums up the detectors that differ only in their seed
    (``twfr_gmm:seed=0,twfr_gmm:seed=1``, :func:`~mimii_due.runs.over_runs`)."""
    from mimii_due.report.html import build_report
    from mimii_due.synth.generate import dataset_settings, generate, holds

    t0 = time.perf_counter()
    detectors = list(dict.fromkeys(_with_seeds(detectors, seeds)))  # each once, in the order given
    if not detectors:
        raise ConfigError("no detector to run: name at least one (--detectors ae,ensemble)")
    check_detectors(detectors, params, feature_params)  # every setting checked before anything is written
    folders = {det: spec_folder(det) for det in detectors}
    if len(set(folders.values())) < len(folders):
        raise ConfigError(f"detectors {', '.join(detectors)}: two of them would share a run folder; name each "
                          "variant by other settings")  # fmt: skip
    out = Path(out)  # made by the first step that writes there: bad settings leave nothing
    _check_run_out(out)
    if data is None:
        data = out / "data"
        gen = {"machines": machines or DEFAULT_RUN["machines"], "sections": DEFAULT_RUN["sections"], "scale": scale,
               "seed": DEFAULT_RUN["seed"], "min_test": DEFAULT_RUN["min_test"], "layout": DEFAULT_RUN["layout"]}
        trained = sorted(p.name for p in out.iterdir() if Run(p).exists()) if out.is_dir() else []
        if trained and (data / "synth_done.json").exists() and not holds(data, dataset_settings(**gen)):
            raise ConfigError(f"it holds runs ({', '.join(trained)}) trained on data generated with other settings "
                              "(--scale or --machines); choose another --out", out)  # fmt: skip
        generate(data, **gen, workers=2, progress=for_stage(progress, "generate", "data"), engine=engine)
    data = Path(data)
    gt = ground_truth or (data / "ground_truth" if (data / "ground_truth").is_dir() else None)
    for det in detectors:  # every detector trained and scored before any evaluation, so that test data that
        run_dir = out / folders[det]  # cannot be evaluated (unlabelled, no ground truth) still leaves every model
        train(run_dir, data, detector=det, machines=machines, params=_params_for(det, params), resume=True,
              on_error=on_error,
              cache=out / "features", year=year, channel=channel, feature_params=feature_params, progress=progress,
              engine=engine)  # fmt: skip
        test(run_dir, data, on_error=on_error, year=year, progress=progress, engine=engine)
    try:
        rows = compare([out / folders[d] for d in detectors], ground_truth=gt)
    except MimiiDueError:
        log.error("cannot evaluate; every detector's model and scores are kept in %s", out)
        raise
    report = build_report([out / folders[d] for d in detectors], out / "report.html", data=data)
    return {"results": {d: r["results"] for d, r in zip(detectors, rows, strict=True)},
            "summaries": {d: r["summary"] for d, r in zip(detectors, rows, strict=True)}, "over_runs": over_runs(rows),
            "report": report, "seconds": time.perf_counter() - t0, "version": __version__}  # fmt: skip

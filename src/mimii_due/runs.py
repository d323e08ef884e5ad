"""The run folder's one keeper: what a run folder holds, and which outputs belong together.

::

    .mimii-due.lock             held by the one process writing the folder (train, test, evaluate)
    run.json                    detector, settings, data, machines, year, feature cache (written
                                only after every setting was checked), and what made it
                                (``environment``: Python, platform, CPU, GPU, library versions,
                                detector plugins; ``earlier_environments`` if resumed elsewhere;
                                ``retraining_since`` while a ``train --retrain`` has not finished)
    models/<machine>/           one detector artifact per machine type (see Detector.save)
    checkpoints/<machine>/      training state, saved every epoch (for --resume)
    results/                    the outputs of one `test`, published together (a folder written
                                aside and swapped in): scores.csv, the official score and decision
                                CSVs, stamp.json (which models and data made them); `evaluate`
                                adds result.csv and result.json, stamped with the scores they used

A new ``test`` replaces ``results/`` as a whole, so no result of an earlier test survives beside
new scores; ``read_results`` refuses results whose stamp does not match the scores beside them.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from mimii_due import __version__, atomic
from mimii_due.detectors.base import Detector
from mimii_due.errors import ModelError, StorageError
from mimii_due.evaluation.files import write_results, write_score_files
from mimii_due.evaluation.metrics import results_frame

LOCK = ".mimii-due.lock"


def model_record(folder: Path) -> dict | None:
    """What a saved model's ``detector.json`` says (the model not loaded): its ``detector``,
    ``sections``, the training ``clips`` it was fitted on, its ``threshold``, the false-alarm ``rate``
    that was fitted for and when it was ``saved`` (seconds since the epoch); None where it cannot be read."""
    f = Path(folder) / "detector.json"
    try:
        meta = json.loads(f.read_text())
        return {"detector": str(meta["detector"]), "sections": [int(s) for s in meta["sections"]],
                "clips": len(meta["train_scores"]), "threshold": float(meta["threshold"]),
                "rate": 1.0 - float(meta["params"]["threshold_quantile"]), "saved": f.stat().st_mtime}  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None


def model_threshold(folder: Path) -> tuple[float, float] | None:
    """A saved model's threshold and the false-alarm rate it was fitted for (:func:`model_record`);
    None where it cannot be read."""
    record = model_record(folder)
    return None if record is None else (record["threshold"], record["rate"])


LIBRARIES = ("numpy", "scipy", "scikit-learn", "torch", "librosa", "soundfile", "pandas")  # the numbers rest on these


def environment() -> dict:
    """What a run is made with, for whoever compares or repeats it (kept in ``run.json``, shown in
    the report): Python, the operating system, the CPU and the GPU torch sees, the versions of the
    libraries its numbers rest on, and the detector plugins installed (their packages' versions)."""
    import os
    import platform
    from importlib import metadata

    import torch

    from mimii_due import detectors

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    cpu = platform.processor()
    try:  # Linux names the model here; platform.processor() often says only the architecture
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "packages": {name: version(name) for name in LIBRARIES},
        "plugins": {name: p.package for name, p in detectors.PLUGINS.items()},
    }


def environment_text(env: dict) -> str:
    """One line of :func:`environment`'s record, as the report gives it."""
    packages = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items() if v)
    plugins = ", ".join(f"{k} ({v})" for k, v in env.get("plugins", {}).items())
    plugins = f"; detector plugins: {plugins}" if plugins else ""
    return (f"Python {env.get('python')} on {env.get('platform')}, {env.get('cpu') or 'CPU'} ({env.get('cpus')} "
            f"CPUs), {env.get('gpu') or 'no GPU'}; {packages}{plugins}")  # fmt: skip


def run_names(runs: list[tuple[Path, str, dict]]) -> list[str]:
    """What tables and reports call each of ``runs``, ``(folder, detector, settings)`` (``detector``:
    "" for a folder of another system's score files): ``ensemble`` for a run in a folder of that name,
    ``twfr_gmm:decay=auto`` for one in the folder ``run --detectors`` gives that spec
    (``twfr_gmm_decay-auto``), else ``twfr_gmm (seed1)`` (the folder's name beside the detector's), a
    score files folder by its name; a name two of them would share gets each one's path instead of
    the folder's name."""
    from mimii_due.detectors import format_spec, spec_folder

    def name(detector: str, settings: dict, where: str) -> str:
        if not detector:
            return where
        if where == detector:
            return detector
        spec = format_spec(detector, settings)
        return spec if where == spec_folder(spec) else f"{detector} ({where})"

    first = [name(d, p, Path(f).name) for f, d, p in runs]
    return [name(d, p, str(f)) if first.count(n) > 1 else n for (f, d, p), n in zip(runs, first, strict=True)]


def over_runs_text(group: dict) -> str:
    """One of :func:`over_runs`'s groups as ``evaluate``, ``run`` and the report say it."""
    g = group
    return (f"{g['detector']} over {len(g['runs'])} runs ({', '.join(g['runs'])}): official score mean "
            f"{g['mean']:.4f}, sd {g['sd']:.4f}, from {g['min']:.4f} to {g['max']:.4f}")  # fmt: skip


def run_setting(meta: dict, machines) -> str:
    """What makes runs of one detector the same method but for their seed (:func:`over_runs`): its
    settings but ``seed``, its features and the machine types evaluated, as one comparable text."""
    settings = {k: v for k, v in (meta.get("params") or {}).items() if k != "seed"}
    return json.dumps([settings, meta.get("features") or {}, sorted(machines)], default=str)


def over_runs(rows: list[dict]) -> list[dict]:
    """The official score of each detector over its runs among ``rows`` (``pipeline.compare``'s, or
    any with ``detector``, ``setting`` (:func:`run_setting`), ``summary`` and ``path``), where
    two or more differ only in their seed or their data's (training seeds, or seeds of generated
    data, as papers report a method): the same detector, settings but ``seed``, features and machine
    types, each with a defined score. ``detector``, ``runs`` (their folders' names), ``mean``,
    ``sd`` (with n - 1), ``min``, ``max``."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        score = r["summary"]["official_score"]
        if r["detector"] and score is not None and np.isfinite(score):
            groups.setdefault((r["detector"], r["setting"]), []).append(r)
    out = []
    for (detector, _), rs in groups.items():
        if len(rs) > 1:
            v = np.array([r["summary"]["official_score"] for r in rs])
            out.append({"detector": detector, "runs": [Path(r["path"]).name for r in rs], "mean": float(v.mean()),
                        "sd": float(v.std(ddof=1)), "min": float(v.min()), "max": float(v.max())})  # fmt: skip
    return out


def _started(meta: dict) -> str:
    """How a run was started, as its errors say it: ``ensemble {}``, ``ae {'epochs': 5} reading channel 1``,
    ``twfr_gmm {} with features {'n_mels': 64}``."""
    channel, feats = meta.get("channel", 0), meta.get("features") or {}
    return (f"{meta.get('detector')} {meta.get('params')}" + (f" with features {feats}" if feats else "")
            + (f" reading channel {channel}" if channel else ""))  # fmt: skip


class Run:
    """A run folder. Every module that reads or writes one goes through this class."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def of(cls, path: str | Path) -> Run:
        """The run ``path`` names: a run folder, or a run's results folder (where its official
        score files are, so people point there too)."""
        path = Path(path)
        if path.name == "results" and not (path / "run.json").exists() and (path.parent / "run.json").exists():
            return cls(path.parent)
        return cls(path)

    # ------------------------------------------------------------------ run.json
    @property
    def meta_file(self) -> Path:
        return self.path / "run.json"

    def _record(self, path: Path, missing: str, keys: tuple[str, ...]) -> dict:
        """One of the folder's JSON records, or ``missing`` as a one-line error (absent, damaged,
        not UTF-8 text, or JSON that is not a record with ``keys``)."""
        try:
            out = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ModelError(f"{missing} ({path.name}: {type(e).__name__})", self.path) from e
        if not isinstance(out, dict) or not all(k in out for k in keys):
            raise ModelError(f"{missing} ({path.name} is not the record mimii-due writes)", self.path)
        return out

    def meta(self) -> dict:
        missing = "not a run folder: no readable run.json"
        if not self.exists():  # a folder people point at instead: the main job's, or one inside a run
            inner = sorted(p.parent.name for p in self.path.glob("*/run.json")) if self.path.is_dir() else []
            outer = next((q for q in self.path.parents if (q / "run.json").exists()), None)
            if inner:
                missing += f"; it holds the runs {', '.join(inner)}: name one ({self.path / inner[0]})"
            elif outer is not None:
                missing += f"; it is inside the run {outer}: name that"
        return self._record(self.meta_file, missing, ("detector", "machines"))

    def exists(self) -> bool:
        return self.meta_file.exists()

    def start(self, meta: dict, *, resume: bool) -> None:
        """Create the run folder with ``meta`` (or check it against the existing one on resume)."""
        if self.exists():
            old = self.meta()
            same = (old.get("detector"), old.get("params"), old.get("channel", 0), old.get("features") or {}) == (
                meta["detector"], meta["params"], meta.get("channel", 0), meta.get("features") or {})  # fmt: skip
            if not resume and not (same and not any((self.path / "models").glob("*/detector.json"))):
                raise ModelError("run folder exists; pass --resume to continue it, or choose another --out", self.path)
            if not same:  # `train --resume`, or `run` again with other settings
                raise ModelError(f"this run was started as {_started(old)}, not as {_started(meta)}; choose another "
                                 "--out", self.path)  # fmt: skip
            meta = old | {"machines": sorted(set(old.get("machines", [])) | set(meta["machines"]))}
        elif self.path.exists() and any(p.name not in ("features", LOCK) for p in self.path.iterdir()) and not resume:
            raise ModelError("folder exists and is not an unfinished run; choose another --out", self.path)
        env = environment()
        earlier = []  # a run resumed elsewhere: what made its earlier models
        for e in (*meta.get("earlier_environments", []), meta.get("environment")):
            if e and e != env and e not in earlier:
                earlier.append(e)
        meta = {k: v for k, v in meta.items() if k != "earlier_environments"} | {"version": __version__,
                                                                                 "environment": env}  # fmt: skip
        if earlier:
            meta["earlier_environments"] = earlier
        atomic.write_text(self.meta_file, json.dumps(meta, indent=1))

    def describe(self) -> dict:
        """What the run holds, from its records alone (``info RUN``): ``run.json``'s ``detector``,
        ``params``, ``features``, ``channel``, ``data``, ``year`` and ``version``; ``models``, each
        machine type's :func:`model_record` (None where it has none, or none that reads);
        ``retraining_since`` where a ``--retrain`` stopped before its end; ``tested``: the clips its
        test results hold, or ``error``, why there are none that its models made; ``evaluated``: the
        official score and protocol of those, or ``error``."""
        meta = self.meta()
        out = {k: meta.get(k) for k in ("detector", "params", "features", "channel", "data", "year", "version",
                                        "retraining_since")}  # fmt: skip
        out["models"] = {m: model_record(self.model_dir(m)) for m in meta["machines"]}
        try:
            out["tested"] = {"clips": len(self.read_scores()), "data": self.stamp()["data"]}
        except ModelError as e:
            out["tested"] = {"error": str(e).removeprefix(f"{e.path}: ")}
        try:
            summary = self.read_results()[1]
            out["evaluated"] = {"official_score": summary.get("official_score"), "protocol": summary.get("protocol")}
        except ModelError as e:
            out["evaluated"] = {"error": str(e).removeprefix(f"{e.path}: ")}
        return out

    def update(self, changes: dict) -> None:
        """Change ``run.json``'s entries (a value of None removes its entry), atomically."""
        meta = {k: v for k, v in (self.meta() | changes).items() if v is not None}
        atomic.write_text(self.meta_file, json.dumps(meta, indent=1))

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the folder for one writer. A second ``train``, ``test`` or ``evaluate`` of the same
        run started meanwhile (another shell, a scheduled job) is refused at once, instead of
        training the same models twice or publishing its results over the first one's. The lock is
        the operating system's (``flock``): a writer that is killed releases it."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a file of that name, or a file above it
            raise StorageError(f"cannot make the run folder here ({e.strerror or e})", self.path) from e
        lock = FileLock(self.path / LOCK, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise ModelError("another mimii-due process is writing this run folder (train, test or evaluate); "
                             "wait for it to end, or choose another --out", self.path) from None  # fmt: skip
        try:
            yield
        finally:
            lock.release()

    @property
    def cache(self) -> Path:
        return Path(self.meta().get("cache") or self.path / "features")

    # ------------------------------------------------------------------ models
    def model_dir(self, machine: str) -> Path:
        return self.path / "models" / machine

    def checkpoint_dir(self, machine: str) -> Path:
        return self.path / "checkpoints" / machine

    def has_model(self, machine: str) -> bool:
        return (self.model_dir(machine) / "detector.json").exists()

    def model_time(self, machine: str) -> float:
        """When the model of ``machine`` was saved (its ``detector.json``'s modification time)."""
        return (self.model_dir(machine) / "detector.json").stat().st_mtime

    def save_model(self, machine: str, detector: Detector) -> None:
        detector.save(self.model_dir(machine))
        shutil.rmtree(self.checkpoint_dir(machine), ignore_errors=True)

    def load_model(self, machine: str) -> Detector:
        if not self.has_model(machine):
            raise ModelError(f"no trained model for {machine}: run `mimii-due train` first", self.path)
        return Detector.load(self.model_dir(machine))

    def histories(self) -> dict[str, list]:
        out = {}
        for m in self.meta().get("machines", []):
            f = self.model_dir(m) / "detector.json"
            if f.exists():
                out[m] = json.loads(f.read_text()).get("history", [])
        return out

    def thresholds(self) -> dict[str, tuple[float, float]]:
        """Per machine type, its model's threshold and the false-alarm rate that was fitted for
        (``1 - threshold_quantile``; ``mimii-due threshold`` changes both); machine types without a
        readable model are left out."""
        found = {m: model_threshold(self.model_dir(m)) for m in self.meta().get("machines", [])}
        return {m: t for m, t in found.items() if t is not None}

    def alarm_rates(self) -> dict[str, float]:
        """Per machine type, the false-alarm rate its model's threshold was fitted for."""
        return {m: rate for m, (_, rate) in self.thresholds().items()}

    def _model_stamp(self, machine: str) -> str:
        f = self.model_dir(machine) / "detector.json"
        return hashlib.sha1(f.read_bytes()).hexdigest()[:16] if f.exists() else ""

    # ------------------------------------------------------------------ results
    @property
    def results_dir(self) -> Path:
        return self.path / "results"

    def publish_scores(self, scores: pd.DataFrame, *, data: str | Path, protocol: str,
                       year: int | None = None) -> Path:  # fmt: skip
        """Publish one test's outputs together: scores.csv, the official files and a stamp of the
        models and data (and its year) that made them. Replaces every earlier result (none goes
        stale beside them)."""
        csv_text = scores.to_csv(index=False)
        stamp = {"scores": hashlib.sha1(csv_text.encode()).hexdigest()[:16], "data": str(Path(data).resolve()),
                 "protocol": protocol, "year": year,
                 "models": {m: self._model_stamp(m) for m in sorted(scores["machine"].unique())},
                 "version": __version__}  # fmt: skip
        with atomic.atomic_dir(self.results_dir, marker="stamp.json") as tmp:
            (tmp / "scores.csv").write_text(csv_text)
            write_score_files(scores, tmp, protocol=protocol)
            (tmp / "stamp.json").write_text(json.dumps(stamp, indent=1))
        return self.results_dir

    def stamp(self) -> dict:
        return self._record(self.results_dir / "stamp.json", "no test results: run `mimii-due test` first",
                            ("scores", "models", "protocol"))  # fmt: skip

    def read_scores(self) -> pd.DataFrame:
        stamp = self.stamp()
        try:
            text = (self.results_dir / "scores.csv").read_text()
        except (OSError, ValueError) as e:
            raise ModelError(f"no readable scores.csv beside its stamp ({type(e).__name__}); run `mimii-due test` "
                             "again", self.path) from e  # fmt: skip
        if hashlib.sha1(text.encode()).hexdigest()[:16] != stamp["scores"]:
            raise ModelError(
                "scores.csv does not match its stamp (edited by hand?); run `mimii-due test` again", self.path
            )
        changed = [m for m, s in stamp["models"].items() if self._model_stamp(m) != s]
        if changed:
            raise ModelError(
                f"the models of {', '.join(changed)} changed after the test; run `mimii-due test` again", self.path
            )
        return pd.read_csv(io.StringIO(text), dtype={"label": object, "domain": object, "filename": str})

    def publish_results(self, results: pd.DataFrame, summary: dict) -> None:
        summary = summary | {"scores": self.stamp()["scores"]}
        write_results(results, summary, self.results_dir)

    def read_results(self) -> tuple[pd.DataFrame, dict]:
        """The evaluation of the current scores; refuses results that belong to other scores."""
        stamp = self.stamp()
        payload = self._record(self.results_dir / "result.json", "not evaluated: run `mimii-due evaluate` first",
                               ("scores", "results"))  # fmt: skip
        if payload.get("scores") != stamp["scores"]:
            raise ModelError("result.json was computed from other scores; run `mimii-due evaluate` again", self.path)
        return results_frame(payload["results"]), payload

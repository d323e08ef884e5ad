"""Score new recordings with trained models: any WAV files, any names.

:class:`ModelSet` loads the models of a run folder (or one saved model folder) once and scores
waveforms held in memory; :func:`score_files` reads files and scores them, reporting unreadable
ones instead of stopping. The service, the folder watcher and the ``score`` command all use these.

Which model and section a clip goes to: the machine type and section given, else those in the
clip's name (challenge names), else the model's only machine type and section. A clip whose
machine type or section cannot be decided is an error that says what to pass.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mimii_due import __version__
from mimii_due.config import FeatureConfig
from mimii_due.data import audio
from mimii_due.data.index import regular, wav_files
from mimii_due.data.naming import parse_name
from mimii_due.detectors.base import Detector
from mimii_due.errors import AudioError, FileNameError, MimiiDueError, ModelError, UnknownModelError
from mimii_due.features.extract import features_of
from mimii_due.runs import Run

log = logging.getLogger(__name__)
_MODEL_FILES = ("detector.json", "state.pt")


def _stamp(folder: Path) -> tuple | None:
    """The model files' identity (inode, size, modification time); None while one is missing."""
    try:
        return tuple((st.st_ino, st.st_size, st.st_mtime_ns) for st in ((folder / f).stat() for f in _MODEL_FILES))
    except OSError:
        return None


@dataclass(frozen=True)
class Decision:
    """One scored clip."""

    filename: str
    machine: str
    section: int
    domain: str | None
    score: float
    threshold: float
    decision: bool  # True: anomalous
    detector: str
    model_version: str  # the model artifact's fingerprint
    sha256: str
    window: tuple[float, float] | None = None  # seconds: the part of a long recording decided (Detector.windows)

    def as_dict(self) -> dict:
        """The decision as answered and written (its keys are :data:`DECISION_COLUMNS`)."""
        return dict(zip(DECISION_COLUMNS, (self.filename, self.machine, self.section, self.domain, self.score,
                                           self.threshold, "anomaly" if self.decision else "normal", self.decision,
                                           f"{self.detector}:{self.machine}", self.model_version, __version__),
                        strict=True))  # fmt: skip


DECISION_COLUMNS = ("filename", "machine", "section", "domain", "score", "threshold", "decision", "anomalous", "model",
                    "model_version", "version")  # a table of decisions has these columns, also when it has no rows


class ModelSet:
    """The models of a run folder (one per machine type) or of one model folder, loaded once."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.models: dict[str, Detector] = {}
        self.versions: dict[str, str] = {}
        self.folders: dict[str, Path] = {}
        self.stamps: dict[str, tuple | None] = {}  # the model files as loaded: what refresh() compares
        self._unloadable: dict[str, tuple | None] = {}  # a changed model that would not load, reported once
        if (self.path / "detector.json").exists():
            self._add(self.path.name, self.path)
        elif Run(self.path).exists():
            keeper = Run(self.path)
            for machine in keeper.meta().get("machines", []):
                if keeper.has_model(machine):
                    self._add(machine, keeper.model_dir(machine))
        if not self.models:
            raise ModelError("no trained model here (expected a run folder or a model folder)", self.path)
        self._lock = threading.Lock()  # torch modules are not safe to call from several threads at once

    def __getstate__(self) -> dict:  # to a cluster task: without the lock
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _add(self, machine: str, folder: Path) -> None:
        stamp = _stamp(folder)  # before reading: a change while it is read is seen next time
        det = Detector.load(folder)
        version = hashlib.sha256(b"".join((folder / f).read_bytes() for f in _MODEL_FILES)).hexdigest()[:16]
        self.models[machine], self.versions[machine] = det, version
        self.folders[machine], self.stamps[machine] = folder, stamp

    def refresh(self) -> list[str]:
        """Load again the models whose files changed since they were loaded (a threshold set with
        ``mimii-due threshold``, a machine type retrained), so that a running service or watcher
        decides as the files say; a model that will not load (being rewritten, or broken) stays as
        loaded, said once. Returns the machine types loaded again."""
        again = []
        for machine, folder in list(self.folders.items()):
            stamp = _stamp(folder)
            if stamp is None or stamp == self.stamps[machine] or stamp == self._unloadable.get(machine):
                continue
            old = self.models[machine].threshold_
            try:
                with self._lock:  # one thread loads it; the others, waiting here, find it loaded
                    if stamp == self.stamps[machine]:
                        continue
                    self._add(machine, folder)
            except (MimiiDueError, OSError) as e:
                self._unloadable[machine] = stamp
                log.warning("%s: its model changed on disk but does not load (%s); scoring with the one loaded",
                            machine, e)  # fmt: skip
                continue
            log.warning("%s: model loaded again (changed on disk); threshold %.6g -> %.6g", machine, old,
                        self.models[machine].threshold_)  # fmt: skip
            again.append(machine)
        return again

    def describe(self) -> list[dict]:
        return [{"machine": m, "detector": d.name, "sections": d.sections_, "threshold": d.threshold_,
                 "model_version": self.versions[m], "sample_rate": d.features.sample_rate,
                 "min_seconds": self.min_seconds(m)} for m, d in sorted(self.models.items())]  # fmt: skip

    def check_where(self, machine: str | None, section: int | None, domain: str | None) -> None:
        """Refuse, before any clip is read, a machine type, section or domain that no clip could
        be scored with (``--machine pump`` for a fan model): one error, not one per clip."""
        if machine is not None and machine not in self.models:
            raise UnknownModelError(f"unknown machine type {machine!r}; models: {', '.join(sorted(self.models))}",
                                    self.path)  # fmt: skip
        if domain not in (None, "source", "target"):
            raise MimiiDueError(f"domain must be source or target, not {domain!r}")
        if section is not None and (machine is not None or len(self.models) == 1):
            self.route(str(self.path), machine, section, domain)

    def machine_of(self, path: Path) -> str | None:
        """The machine type a file's folders name, nearest first (``dev_data/fan/test/x.wav``, or a
        watched folder with one subfolder per machine): None if none names a model's."""
        return next((q.name for q in Path(path).parents if q.name in self.models), None)

    def min_seconds(self, machine: str) -> float:
        d = self.models[machine]
        return d.scorable_frames * d.features.hop_length / d.features.sample_rate

    def route(
        self, filename: str, machine: str | None, section: int | None, domain: str | None
    ) -> tuple[str, int, str | None, str]:
        """The machine type, section, domain and attributes a clip is scored as."""
        try:
            name = parse_name(filename)
        except FileNameError:
            name = None
        if machine is None:
            if len(self.models) != 1:
                raise MimiiDueError(f"say which machine type ({', '.join(sorted(self.models))})", filename)
            machine = next(iter(self.models))
        if machine not in self.models:
            raise UnknownModelError(
                f"unknown machine type {machine!r}; models: {', '.join(sorted(self.models))}", filename
            )
        sections = self.models[machine].sections_
        if section is None:
            section = name.section if name is not None else (sections[0] if len(sections) == 1 else None)
        if section is None:
            raise MimiiDueError(f"say which section ({', '.join(f'{s:02d}' for s in sections)})", filename)
        det = self.models[machine]
        if det.needs_known_sections and int(section) not in sections:
            raise UnknownModelError(
                f"section {int(section):02d} is not one {machine} was trained on ({sections})", filename
            )
        if domain is None and name is not None:
            domain = name.domain
        if domain not in (None, "source", "target"):
            raise MimiiDueError(f"domain must be source or target, not {domain!r}", filename)
        return machine, int(section), domain, name.attribute_values if name is not None else ""

    def score_wave(self, y: np.ndarray, *, filename: str, sha256: str = "", machine: str | None = None,
                   section: int | None = None, domain: str | None = None) -> list[Decision]:  # fmt: skip
        """Score one recording's samples (float, at the model's sample rate): one decision for a
        clip, one per window for a recording far longer than the model's training clips (each
        window's name says where it lies: ``line.wav [50.0-60.0 s]``; :meth:`Detector.windows`)."""
        machine, section, domain, attrs = self.route(filename, machine, section, domain)
        det = self.models[machine]
        if not np.isfinite(y).all():
            raise AudioError("the clip holds NaN or infinite samples", filename)
        seconds = len(y) / det.features.sample_rate
        if seconds < self.min_seconds(machine):
            cut = det.scorable_frames > det.min_frames  # the model's own floor, or its training clips'
            why = ", half its training clips' length: a recording cut short?" if cut else ""
            raise AudioError(f"too short ({seconds:.2f} s; this model needs {self.min_seconds(machine):.2f} s{why})",
                             filename)  # fmt: skip
        cuts = det.windows(len(y))
        sr = det.features.sample_rate
        spans = [None] if len(cuts) == 1 else [(a / sr, b / sr) for a, b in cuts]
        names = [filename if w is None else f"{filename} [{w[0]:.1f}-{w[1]:.1f} s]" for w in spans]  # file_label undoes
        clips = pd.DataFrame({"filename": names, "section": section, "domain": domain, "attributes": attrs})
        feats = features_of([y[a:b] for a, b in cuts], cfg=det.features)
        with self._lock:
            scores = det.score(feats, clips)
        return [Decision(name, machine, section, domain, float(score), float(det.threshold_),
                         bool(score > det.threshold_), det.name, self.versions[machine], sha256, w)
                for name, score, w in zip(names, scores, spans, strict=True)]  # fmt: skip

    def score_bytes(self, data: bytes, *, filename: str = "upload", **where) -> list[Decision]:
        """Score a WAV file's bytes (an upload): its decisions, as :meth:`score_wave`; decoded as its
        model reads clips (its sample rate, and of a multichannel recording its channel)."""
        machine = where.get("machine") or (next(iter(self.models)) if len(self.models) == 1 else None)
        cfg = self.models[machine].features if machine in self.models else FeatureConfig()  # else: routing says why
        y = audio.decode(data, name=filename, sr=cfg.sample_rate, channel=cfg.channel)
        return self.score_wave(y, filename=filename, sha256=hashlib.sha256(data).hexdigest(), **where)


def file_label(name: str) -> str:
    """The file's name in a decision's name: ``line.wav`` of a long recording's ``line.wav [50.0-60.0 s]``."""
    return re.sub(r" \[\d+\.\d-\d+\.\d s\]$", "", name)


def wav_paths(paths: list[str | Path]) -> list[Path]:
    """The WAV files among ``paths`` and in the folders among them (recursively), sorted."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += wav_files(p)
        else:
            out.append(p)
    return out


def score_files(
    models: ModelSet, paths: list[str | Path], *, machine: str | None = None, section: int | None = None,
    domain: str | None = None, progress=None, engine=None,
) -> tuple[list[Decision], list[tuple[str, str]]]:  # fmt: skip
    """Score WAV files (and the WAV files in folders). Returns the decisions and, for each clip
    that could not be scored, ``(path, reason)``; one bad clip never stops the others. With a
    cluster ``engine`` the files are scored in shards as tasks (the files must be readable there)."""
    models.check_where(machine, section, domain)
    if not paths:
        raise MimiiDueError("no WAV files or folders given to score")
    gone = [str(p) for p in paths if Path(p).suffix.lower() != ".wav" and not Path(p).exists()]
    if gone:  # a mistyped folder (a missing .wav file is reported among the clips not scored)
        raise MimiiDueError(f"no such file or folder: {', '.join(gone)}")
    files = wav_paths(paths)
    if not files:
        raise MimiiDueError("no WAV files found in " + ", ".join(map(str, paths)))
    where = {"machine": machine, "section": section, "domain": domain}
    if engine is not None and engine.name != "local":
        shards = [files[i : i + 32] for i in range(0, len(files), 32)]
        parts = engine.map(_score_shard, [(models, shard, where) for shard in shards], progress=progress)
        return [d for p in parts for d in p[0]], [f for p in parts for f in p[1]]
    return _score_paths(models, files, where, progress)


def _score_shard(job: tuple) -> tuple[list[Decision], list[tuple[str, str]]]:
    models, files, where = job
    return _score_paths(models, files, where, None)


def scored_name(p: Path) -> str:
    """The name a file is scored under: its own, or with MIMII's ``id_XX/{normal,abnormal}`` folders,
    which carry the section its bare name (``00000000.wav``) does not."""
    try:
        return Path(*p.parts[-3:]).as_posix() if parse_name(p).scheme == "mimii" else p.name
    except FileNameError:
        return p.name


def _score_paths(models: ModelSet, files: list[Path], where: dict, progress) -> tuple[list, list]:
    decisions, failed = [], []
    machine, section, domain = where["machine"], where["section"], where["domain"]
    for k, p in enumerate(files):
        name = scored_name(p)
        try:
            if not regular(p):  # a named pipe would wait for a writer for ever
                raise MimiiDueError("not a regular file (a pipe, socket or device)", name)
            data = p.read_bytes()
            decisions += models.score_bytes(data, filename=name, machine=machine or models.machine_of(p),
                                            section=section, domain=domain)  # fmt: skip
        except OSError as e:
            failed.append((str(p), f"{p}: cannot read ({e.strerror or e})"))
        except MimiiDueError as e:
            failed.append((str(p), str(e).replace(f"{name}: ", f"{p}: ", 1)))
        if progress:
            progress(k + 1, len(files), p.name)
    return decisions, failed

"""Score every WAV that lands in a folder, and what is there at start, recording each decision.

File events come from watchdog; a file is scored once its size and modification time have not
changed for ``settle`` seconds (a recorder still writing it is left alone). A file already in the
record with the same path and content is not scored again, so a restarted watcher picks up where
it stopped without doubles. An unreadable clip is reported once and left unrecorded.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from mimii_due.data.audio import OTHER_AUDIO
from mimii_due.data.index import regular, wav_files
from mimii_due.errors import ConfigError, MimiiDueError
from mimii_due.scoring import Decision, ModelSet, scored_name
from mimii_due.serve.record import Record

log = logging.getLogger(__name__)


def _is_wav(path: Path) -> bool:
    return path.suffix.lower() == ".wav" and not path.name.startswith(".")


class Watcher:
    def __init__(self, models: ModelSet, record: Record, folder: str | Path, *, settle: float = 1.0,
                 machine: str | None = None, section: int | None = None,
                 on_decision: Callable[[Decision, str], None] | None = None,
                 on_error: Callable[[str, str], None] | None = None):  # fmt: skip
        self.models, self.record, self.folder = models, record, Path(folder)
        if not self.folder.is_dir():
            raise MimiiDueError("not a folder to watch", self.folder)
        if not (isinstance(settle, (int, float)) and 0 <= settle < float("inf")):  # nan: no file ever settled
            raise ConfigError(f"settle must be a number of seconds, 0 or more, not {settle!r}")
        models.check_where(machine, section, None)
        self.settle, self.machine, self.section = settle, machine, section
        self.on_decision, self.on_error = on_decision, on_error
        self.pending: queue.Queue[Path] = queue.Queue()
        self.failed: dict[str, tuple[int, int]] = {}  # path -> (size, mtime) already reported as bad
        self.other_formats: set[str] = set()  # audio file extensions already said to be left alone (.flac, .mp3)
        self.scored = 0

    def _enqueue_existing(self) -> None:
        others: list[Path] = []
        for p in wav_files(self.folder, others=others):
            self.pending.put(p)
        for p in others:
            self.not_wav(p)

    def _settled(self, p: Path) -> bool:
        """Unchanged for ``settle`` seconds (a writer still at work keeps touching it)."""
        try:
            return time.time() - p.stat().st_mtime >= self.settle
        except OSError:
            return False

    def process(self, p: Path) -> bool:
        """Score ``p`` if it is complete and new; False when it must be looked at again later."""
        if not p.exists():
            return True
        if not self._settled(p):
            return False
        try:
            st = p.stat()
            data = p.read_bytes() if regular(p) else b""  # a named pipe would wait for a writer for ever
        except OSError:
            return False
        path = str(p.resolve())
        sha = hashlib.sha256(data).hexdigest()
        if self.record.seen("watcher", path, sha):
            return True
        self.models.refresh()  # a threshold set or a model retrained since it started
        try:
            if not regular(p):
                raise MimiiDueError("not a regular file (a pipe, socket or device)", p)
            machine = self.machine or self.models.machine_of(p)
            decisions = self.models.score_bytes(data, filename=scored_name(p), machine=machine, section=self.section)
        except MimiiDueError as e:
            if self.failed.get(path) != (st.st_size, st.st_mtime_ns):
                self.failed[path] = (st.st_size, st.st_mtime_ns)
                if self.on_error:  # the caller reports it, once
                    self.on_error(path, str(e))
                else:
                    log.warning("not scored: %s", e)
            return True
        self.record.add_all(decisions, source="watcher", path=path)  # one, or one per window of a long recording
        self.scored += len(decisions)
        for d in decisions:
            if self.on_decision:  # the decision and the file's path
                self.on_decision(d, path)
        return True

    def not_wav(self, p: Path) -> None:
        """Say, once per kind, that audio files of another format (a recorder set to FLAC or MP3)
        land here and are left alone: a watch that scores nothing must not look like a quiet machine."""
        ext = p.suffix.lower()
        if ext in OTHER_AUDIO and ext not in self.other_formats:
            self.other_formats.add(ext)
            log.warning("%s: %s files are not scored, only WAV files: have the recorder write WAV, or convert them "
                        "(e.g. `ffmpeg -i in%s out.wav`)", p, ext, ext)  # fmt: skip

    def _observe(self):
        """A started watchdog observer that queues every WAV created, changed or moved in."""
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        outer = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):
                if event.is_directory:
                    return
                target = Path(getattr(event, "dest_path", "") or event.src_path)
                if _is_wav(target):
                    outer.pending.put(target)
                else:
                    outer.not_wav(target)

        observer = Observer()
        observer.schedule(Handler(), str(self.folder), recursive=True)
        observer.start()
        return observer

    def run(self, *, stop: threading.Event | None = None, max_seconds: float | None = None) -> int:
        """Watch until ``stop`` is set or ``max_seconds`` pass; returns the clips scored (each
        window of a long recording counts as one)."""
        if max_seconds is not None and not max_seconds > 0:  # nan or 0 or less: it would stop at once
            raise ConfigError(f"max_seconds must be a positive number of seconds, not {max_seconds!r}")
        observer = self._observe()
        self._enqueue_existing()  # after the observer starts: nothing written in between is missed
        stop = stop or threading.Event()
        t_end = time.time() + max_seconds if max_seconds is not None else None
        later: dict[Path, None] = {}
        present, next_look = True, time.time() + 1.0
        try:
            while not stop.is_set() and (t_end is None or time.time() < t_end):
                try:
                    p = self.pending.get(timeout=0.2)
                    later[p] = None
                except queue.Empty:
                    pass
                for q in list(later):
                    if self.process(q):
                        later.pop(q, None)
                if time.time() >= next_look:  # a deleted or unmounted folder: say so, and watch it again when back
                    next_look, here = time.time() + 1.0, self.folder.is_dir()
                    if present and not here:
                        log.warning("%s is gone (deleted or unmounted); waiting for it to come back", self.folder)
                    elif here and not present:
                        log.warning("%s is back; watching it again", self.folder)
                        observer.stop()
                        observer.join(timeout=5)
                        observer = self._observe()  # the old watch held the folder that was removed
                        self._enqueue_existing()
                    present = here
        finally:
            observer.stop()
            observer.join(timeout=5)
        return self.scored

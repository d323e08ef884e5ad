"""The record of every decision: one SQLite database file.

A row is committed (and, with ``synchronous=FULL``, on disk) before :meth:`Record.add` returns, so
a decision is answered only after it is recorded, and a killed process loses nothing it answered.
One connection, used under a lock by every thread (the service's workers, the watcher). SQLite's
rollback journal, not its write-ahead log: a committed decision is in the database file itself,
never in a side file (``-wal``) that a copy, a move or a clean-up of the record leaves behind. A
record removed or moved away while in use (a clean-up; a rotation, ``mv decisions.sqlite
decisions-2026-11.sqlite``) is noticed at the next use, and a new one is started at the path, with
a warning. (In WAL mode a moved record kept its last decisions in the ``-wal`` file left at the old
name, and after a removal every decision failed: "no such table".)
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mimii_due.errors import StorageError
from mimii_due.runs import Run
from mimii_due.scoring import Decision

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,            -- seconds since the epoch (UTC)
    machine TEXT NOT NULL,
    section INTEGER NOT NULL,
    domain TEXT,
    filename TEXT NOT NULL,
    score REAL NOT NULL,
    threshold REAL NOT NULL,
    decision INTEGER NOT NULL,     -- 1: anomalous
    detector TEXT NOT NULL,
    model_version TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    source TEXT NOT NULL,          -- upload, file or watcher
    path TEXT                      -- the file scored (watcher, file) or the kept copy (--keep-audio)
);
CREATE INDEX IF NOT EXISTS by_machine ON decisions (machine, section, time);
CREATE INDEX IF NOT EXISTS by_path ON decisions (source, path);
"""


def default_path(served: str | Path) -> Path:
    """Where the decisions of a served run or model folder are recorded unless told: in the run
    folder. Never inside a model folder (``RUN/models/fan``): it is removed to retrain that machine
    type, and a record there would go with it. A model folder of a run records in its run; a lone
    one beside itself."""
    p = Path(served)
    if not (p / "detector.json").exists():
        return p / "decisions.sqlite"
    run = Run(p.parent.parent)
    if run.exists() and run.model_dir(p.name) == p:
        return run.path / "decisions.sqlite"
    return p.parent / f"{p.name}.decisions.sqlite"


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file ``path`` is now (device and inode); None when there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class Record:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._con: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open()
        except (OSError, sqlite3.Error) as e:
            raise StorageError(f"cannot open the decision record ({e})", self.path) from e

    def _open(self) -> None:
        con = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        con.execute("PRAGMA journal_mode=DELETE")  # also turns a record made in WAL mode back
        con.execute("PRAGMA synchronous=FULL")
        con.row_factory = sqlite3.Row
        con.executescript(SCHEMA)
        con.commit()
        self._con, self._identity = con, _identity(self.path)

    @contextmanager
    def _use(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; a new record where the file was removed or replaced."""
        with self._lock:
            if self._con is None or _identity(self.path) != self._identity:
                if self._con is not None:
                    log.warning("%s was removed or moved away while in use; recording into a new one there", self.path)
                    self._con.close()
                    if _identity(self.path) is None:  # a removed record's journals must not join the new one
                        for suffix in ("-journal", "-wal", "-shm"):
                            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                try:
                    self._open()
                except (OSError, sqlite3.Error) as e:
                    self._con = None
                    raise StorageError(f"cannot open the decision record ({e})", self.path) from e
            yield self._con

    def add(self, d: Decision, *, source: str, path: str | None = None) -> int:
        """Insert and commit one decision; returns its id."""
        return self.add_all([d], source=source, path=path)[0]

    def add_all(self, decisions: list[Decision], *, source: str, path: str | None = None) -> list[int]:
        """Insert and commit the decisions of one file (the windows of a long recording) together,
        all or none; returns their ids."""
        try:
            with self._use() as con, con:  # one transaction: committed when the block ends
                now, ids = time.time(), []
                for d in decisions:
                    cur = con.execute(
                        "INSERT INTO decisions (time, machine, section, domain, filename, score, threshold, decision,"
                        " detector, model_version, sha256, source, path) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (now, d.machine, d.section, d.domain, d.filename, d.score, d.threshold, int(d.decision),
                         d.detector, d.model_version, d.sha256, source, path),
                    )  # fmt: skip
                    ids.append(int(cur.lastrowid))
            return ids
        except sqlite3.Error as e:
            raise StorageError(f"cannot record the decision ({e})", self.path) from e

    def seen(self, source: str, path: str, sha256: str) -> bool:
        """Whether this file (same path and content) was already recorded from ``source``."""
        with self._use() as con:
            sql = "SELECT 1 FROM decisions WHERE source = ? AND path = ? AND sha256 = ? LIMIT 1"
            return con.execute(sql, (source, path, sha256)).fetchone() is not None

    def count(self) -> int:
        with self._use() as con:
            return int(con.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])

    def recent(self, *, limit: int = 500, machine: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM decisions", []
        if machine is not None:
            sql, args = sql + " WHERE machine = ?", [machine]
        with self._use() as con:
            rows = con.execute(sql + " ORDER BY id DESC LIMIT ?", [*args, limit]).fetchall()
        return [dict(r) for r in reversed(rows)]

    def select(self, *, machine: str | None = None, section: int | None = None, since: float | None = None,
               until: float | None = None) -> list[dict]:  # fmt: skip
        """The decisions of a machine type and section (``None``: any) recorded between ``since``
        and ``until`` (seconds since the epoch; ``None``: no bound), oldest first."""
        where, args = [], []
        for sql, value in (("machine = ?", machine), ("section = ?", section), ("time >= ?", since),
                           ("time <= ?", until)):  # fmt: skip
            if value is not None:
                where.append(sql)
                args.append(value)
        with self._use() as con:
            rows = con.execute("SELECT * FROM decisions" + (" WHERE " + " AND ".join(where) if where else "")
                               + " ORDER BY id", args).fetchall()  # fmt: skip
        return [dict(r) for r in rows]

    def last_times(self, *, until: float | None = None) -> dict[tuple[str, int], float]:
        """Each machine type and section's last decision time (seconds since the epoch), of those
        recorded up to ``until`` (``None``: all)."""
        sql = "SELECT machine, section, MAX(time) FROM decisions" + (" WHERE time <= ?" if until is not None else "")
        with self._use() as con:
            rows = con.execute(sql + " GROUP BY machine, section", () if until is None else (until,)).fetchall()
        return {(machine, int(section)): float(t) for machine, section, t in rows}

    def latest(self, n: int) -> dict[tuple[str, int], list[bool]]:
        """Each machine type and section's last ``n`` decisions (anomalous or not), oldest first."""
        sql = ("SELECT machine, section, decision FROM (SELECT machine, section, decision, id, ROW_NUMBER() OVER "
               "(PARTITION BY machine, section ORDER BY id DESC) AS back FROM decisions) WHERE back <= ? ORDER BY id")
        out: dict[tuple[str, int], list[bool]] = {}
        with self._use() as con:
            for machine, section, decision in con.execute(sql, (n,)):
                out.setdefault((machine, int(section)), []).append(bool(decision))
        return out

    def check(self) -> str:
        """SQLite's own integrity check ("ok" when the database is sound)."""
        with self._use() as con:
            return str(con.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

"""The record of every decision: one SQLite database in WAL mode.

A row is committed (and, with ``synchronous=FULL``, on disk) before :meth:`Record.add` returns, so
a decision is answered only after it is recorded, and a killed process loses nothing it answered.
Each thread gets its own connection (SQLite connections are not shared across threads).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from mimii_due.errors import StorageError
from mimii_due.runs import Run
from mimii_due.scoring import Decision

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


class Record:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = self._con()
            con.executescript(SCHEMA)
            con.commit()
        except (OSError, sqlite3.Error) as e:
            raise StorageError(f"cannot open the decision record ({e})", self.path) from e

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=30)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            con.row_factory = sqlite3.Row
            self._local.con = con
        return con

    def add(self, d: Decision, *, source: str, path: str | None = None) -> int:
        """Insert and commit one decision; returns its id."""
        con = self._con()
        try:
            with con:  # one transaction: committed when the block ends
                cur = con.execute(
                    "INSERT INTO decisions (time, machine, section, domain, filename, score, threshold, decision,"
                    " detector, model_version, sha256, source, path) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (time.time(), d.machine, d.section, d.domain, d.filename, d.score, d.threshold, int(d.decision),
                     d.detector, d.model_version, d.sha256, source, path),
                )  # fmt: skip
            return int(cur.lastrowid)
        except sqlite3.Error as e:
            raise StorageError(f"cannot record the decision ({e})", self.path) from e

    def seen(self, source: str, path: str, sha256: str) -> bool:
        """Whether this file (same path and content) was already recorded from ``source``."""
        row = (
            self._con()
            .execute(
                "SELECT 1 FROM decisions WHERE source = ? AND path = ? AND sha256 = ? LIMIT 1", (source, path, sha256)
            )
            .fetchone()
        )
        return row is not None

    def count(self) -> int:
        return int(self._con().execute("SELECT COUNT(*) FROM decisions").fetchone()[0])

    def recent(self, *, limit: int = 500, machine: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM decisions", []
        if machine is not None:
            sql, args = sql + " WHERE machine = ?", [machine]
        rows = self._con().execute(sql + " ORDER BY id DESC LIMIT ?", [*args, limit]).fetchall()
        return [dict(r) for r in reversed(rows)]

    def check(self) -> str:
        """SQLite's own integrity check ("ok" when the database is sound)."""
        return str(self._con().execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

"""Recorded clips back into training data (``mimii-due collect``): from monitoring to retraining.

A machine's sound changes for reasons that are not faults: a new speed, load, product or place (a
domain shift). Its alarms then rise (``score`` says when more than chance explains them). Once
people have checked that the machine is sound, the clips recorded since are what a new model
needs: copied into ``recordings/<machine>/train/target/`` they are the new operating condition's
clips (the target domain), and ``train`` learns both conditions.

The decision record names each clip: a watched file, or the service's kept copy (``serve
--keep-audio``; without it an upload is not kept, and cannot be collected). :func:`collect` copies
the clips of one machine type and section scored within a time range, each once (by content),
atomically, under a name that says when it was scored (``20261207T081500Z_<12 hex digits of its
hash>_<its name>.wav``), and only where the file at the recorded path still holds what was scored
(a watched file overwritten or removed since is left out, and counted). Clips decided anomalous are
copied too, unless ``normal_only`` (which leaves out a long recording if any of its windows was
decided anomalous): after a domain shift, the alarms are the new condition's normal
clips that the old model had not heard, the ones a new model most needs. Refused: a folder that
overlaps the watched one (the watch would score the copies again), and one in a dataset named as
the challenges name their clips (the copies' names fit none of its patterns: it would not index).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from mimii_due import atomic
from mimii_due.data.index import wav_files
from mimii_due.data.naming import parse_name
from mimii_due.errors import ConfigError, FileNameError
from mimii_due.scoring import file_label
from mimii_due.serve.record import Record


@dataclass
class Collected:
    machine: str
    section: int
    copied: list[Path] = field(default_factory=list)  # new files in the folder, oldest first
    present: int = 0  # already there from an earlier collect
    anomalous: int = 0  # left out: decided anomalous (normal_only)
    not_kept: int = 0  # uploads scored without --keep-audio
    missing: list[str] = field(default_factory=list)  # recorded paths gone, or now holding other content


def _only(values: set, what: str, option: str):
    if len(values) > 1:
        raise ConfigError(f"the decisions in that time hold {what} {', '.join(map(str, sorted(values)))}: "
                          f"say which ({option})")  # fmt: skip
    return next(iter(values))


def _name(row: dict) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(row["time"]))
    stem = re.sub(r"[^\w.-]+", "_", Path(file_label(row["filename"])).stem)[:80] or "clip"
    return f"{stamp}_{row['sha256'][:12]}_{stem}.wav"


def collect(record: Record, out: str | Path, *, machine: str | None = None, section: int | None = None,
            since: float | None = None, until: float | None = None, normal_only: bool = False,
            limit: int | None = None) -> Collected:  # fmt: skip
    """Copy the recorded clips of one machine type and section scored between ``since`` and
    ``until`` (seconds since the epoch) into ``out``; with ``limit``, the most recent ``limit`` of
    them. The machine type and section may be left out where the record holds one in that time."""
    if limit is not None and not (isinstance(limit, int) and limit >= 1):
        raise ConfigError(f"the number of clips to collect must be at least 1, not {limit!r}")
    rows = record.select(machine=machine, section=section, since=since, until=until)
    if not rows:
        where = " ".join(x for x in (machine, None if section is None else f"section {section:02d}") if x)
        raise ConfigError(f"no decisions {'of ' + where + ' ' if where else ''}recorded in that time", record.path)
    found = Collected(_only({r["machine"] for r in rows}, "machine types", "--machine"),
                      _only({r["section"] for r in rows}, "sections", "--section"))  # fmt: skip
    chosen, seen = [], set()
    flagged = {r["sha256"] for r in rows if r["decision"]} if normal_only else set()  # any window of it, too
    for row in reversed(rows):  # the most recent first: a limit keeps those
        if row["sha256"] in seen:
            continue
        if row["sha256"] in flagged:
            seen.add(row["sha256"])
            found.anomalous += 1
        elif not row["path"]:
            found.not_kept += 1
        else:
            seen.add(row["sha256"])
            chosen.append(row)
    out = Path(out)
    _check_out(out, chosen[:limit])
    for row in reversed(chosen[:limit]):  # oldest first
        dest = out / _name(row)
        if dest.exists():
            found.present += 1
            continue
        try:
            data = Path(row["path"]).read_bytes()
        except OSError:
            data = None
        if data is None or hashlib.sha256(data).hexdigest() != row["sha256"]:
            found.missing.append(row["path"])
            continue
        atomic.write_with(dest, lambda tmp, data=data: tmp.write_bytes(data))
        found.copied.append(dest)
    return found


def _challenge_named(folder: Path) -> Path | None:
    """A clip under ``folder`` named as the challenges name theirs, if any."""
    for path in wav_files(folder) if folder.is_dir() else []:
        try:
            parse_name(path)
        except FileNameError:
            continue
        return path
    return None


def _check_out(out: Path, rows: list[dict]) -> None:
    """Refuse a folder where the copies would do harm: one holding the clips collected (a watched
    folder: the watch would score its copies again), or a dataset named as the challenges name
    their clips (the copies' names fit none of its patterns, and it would no longer index)."""
    here, inside = out.resolve(), []
    for row in rows:  # a watch watches its folder's subfolders too
        folder = Path(row["path"]).resolve().parent
        if here == folder or here in folder.parents or folder in here.parents:
            inside.append(row["path"])
    if inside:
        raise ConfigError(f"{out} overlaps the folder of the clips being collected ({inside[0]}; a watched "
                          "folder?): a watch there would score the copies again; collect into training data, e.g. "
                          "recordings/<machine>/train/target/")
    train = next((q for q in (out, *out.parents) if q.name == "train"), None)
    named = _challenge_named(out if train is None else train.parent)
    if named is not None:
        raise ConfigError(f"{out} is in a dataset named as the challenges name their clips ({named}): the copies, "
                          "named by when they were scored, would fit none of its patterns and it would no longer "
                          "index; collect into your own recordings (any names: recordings/<machine>/train/target/)")

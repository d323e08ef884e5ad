"""Folder -> clip table: one pandas row per clip, the index everything else passes around.

Layouts read (``root`` may be any of these folders or a parent of them):

- MIMII DUE / DCASE 2021 Task 2: ``dev_data/<machine>/{train,source_test,target_test}/*.wav`` and
  ``eval_data/<machine>/{train,source_test,target_test}/*.wav`` (evaluation test names carry no label)
- DCASE 2020 Task 2: ``<machine>/{train,test}/{normal,anomaly}_id_XX_XXXXXXXX.wav``
- a single machine folder: ``<machine>/{train,source_test,target_test}``

Only WAV headers are read, so a full-size dataset (about 42,000 clips) indexes in seconds.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from mimii_due.data.audio import read_header
from mimii_due.data.naming import parse_name
from mimii_due.errors import LayoutError, MimiiDueError

log = logging.getLogger(__name__)

SPLIT_FOLDERS = ("train", "test", "source_test", "target_test")
PARTS = {"dev_data": "dev", "eval_data": "eval"}
COLUMNS = [
    "path", "filename", "part", "machine", "section", "domain", "split", "label", "clip",
    "attributes", "sample_rate", "channels", "frames",
]  # fmt: skip


def _wav_files(root: Path) -> list[Path]:
    out: list[Path] = []
    stack = [root]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                if e.is_dir(follow_symlinks=True):
                    stack.append(Path(e.path))
                elif e.name.lower().endswith(".wav"):
                    out.append(Path(e.path))
    out.sort()
    return out


def _row(path: Path) -> dict:
    folder = path.parent.name
    if folder not in SPLIT_FOLDERS:
        raise LayoutError(f"clip is in folder '{folder}', expected one of {', '.join(SPLIT_FOLDERS)}", path)
    machine_dir = path.parent.parent
    name = parse_name(path)
    split = name.split or folder  # DCASE 2020 names carry no split: the folder says it
    if folder.endswith("_test") and (name.split != "test" or not folder.startswith(name.domain)):
        raise LayoutError(f"a {name.domain} {name.split} clip is in folder '{folder}'", path)
    if folder == "train" and split != "train":
        raise LayoutError("a test clip is in folder 'train'", path)
    info = read_header(path)
    return {
        "path": str(path),
        "filename": path.name,
        "part": PARTS.get(machine_dir.parent.name, "dev" if name.scheme == "dcase2020" else None),
        "machine": machine_dir.name,
        "section": name.section,
        "domain": name.domain,
        "split": split,
        "label": name.label,
        "clip": name.index,
        "attributes": name.attribute_string,
        "sample_rate": info.sample_rate,
        "channels": info.channels,
        "frames": info.frames,
    }


def index(root: str | Path, *, on_error: str = "raise") -> pd.DataFrame:
    """Index every clip under ``root``.

    Parameters
    ----------
    root : a dataset folder in one of the layouts above.
    on_error : ``"raise"`` (default) stops at the first bad file; ``"skip"`` logs it, leaves it out,
        and lists ``(path, message)`` pairs in ``table.attrs["skipped"]``.

    Returns
    -------
    pandas.DataFrame with columns :data:`COLUMNS`, sorted by machine, section, domain, split, label
    and clip. ``label`` is ``None`` for unlabelled evaluation clips; ``part`` is ``"dev"``,
    ``"eval"`` or ``None`` (a lone machine folder).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError("on_error must be 'raise' or 'skip'")
    root = Path(root)
    if not root.is_dir():
        raise LayoutError("not a folder", root)
    rows, skipped = [], []
    for path in _wav_files(root):
        try:
            rows.append(_row(path))
        except MimiiDueError as e:
            if on_error == "raise":
                raise
            log.warning("skipping %s", e)
            skipped.append((str(path), str(e)))
    if not rows:
        raise LayoutError(
            "no clips found (expected dev_data/<machine>/train/*.wav, <machine>/train/*.wav, ...)",
            root,
        )
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["label"] = table["label"].astype(object).where(table["label"].notna(), None)
    table = table.sort_values(
        ["machine", "section", "domain", "split", "label", "clip", "path"], na_position="last", kind="stable"
    ).reset_index(drop=True)
    table.attrs["skipped"] = skipped
    return table

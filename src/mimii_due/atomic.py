"""Write files and folders so that a crash never leaves half of one: the package's one helper.

Everything is written to a hidden temporary name beside the target and renamed over it. An
``OSError`` (disk full, no permission, a read-only folder) becomes a :class:`StorageError` that
names the path, and the temporary file is removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mimii_due.errors import StorageError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers that look at it work);
    on success it replaces ``path``, on any error it is removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"cannot create the folder ({e.strerror or e})", path.parent) from e
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise StorageError(f"cannot write ({e.strerror or e})", path) from e
    finally:
        if tmp.exists():
            tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_with(path: str | Path, writer: Callable[[Path], object]) -> Path:
    """``writer(tmp)`` writes the content to ``tmp``; it is then renamed to ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


@contextmanager
def atomic_dir(path: str | Path, *, marker: str) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path`` (an old
    folder there is removed only after the new one is in place), on error it is removed.

    Only a folder this helper wrote before is replaced: an empty one, or one holding ``marker``
    (the file every such folder gets, ``detector.json`` of a model). Anything else at ``path``, a
    file or a folder of other files (``det.save("data")``), is refused before any work, never
    removed."""
    path = Path(path)
    _check_replaceable(path, marker)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as e:
        raise StorageError(f"cannot create a folder ({e.strerror or e})", path.parent) from e
    try:
        yield tmp
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        raise StorageError(f"cannot write ({e.strerror or e})", path) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_replaceable(path: Path, marker: str) -> None:
    if not path.exists():
        return
    if not path.is_dir():
        raise StorageError("is a file, not a folder this writes; it is left as it is: choose a new or empty folder",
                           path)  # fmt: skip
    try:
        entries = sorted(e.name for e in path.iterdir())
    except OSError as e:
        raise StorageError(f"cannot read the folder ({e.strerror or e})", path) from e
    if entries and marker not in entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise StorageError(f"holds other files ({shown}) and no {marker}, so it is not a folder this writes; it is "
                           "left as it is: choose a new or empty folder", path)  # fmt: skip

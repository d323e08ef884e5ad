"""The clips a service keeps for retraining (``serve --keep-audio DIR``), within a size limit.

Each scored clip is written once, atomically, under its content hash (``<sha256>.wav``). Kept
without a limit they fill the disk: a 10 s 16 kHz clip is 320 kB, so a recorder sending one every
10 s adds about 2.8 GB a day, and a full disk stops the decision record too (the service then
answers 503). With ``max_bytes`` the oldest kept clips are removed once the folder's kept clips
exceed it, a ring of the most recent recordings. Only the files this keeper names (64 hex digits
and ``.wav``) are ever counted or removed; anything else in the folder is left alone.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

from mimii_due import atomic
from mimii_due.errors import ConfigError, StorageError

log = logging.getLogger(__name__)

_KEPT = re.compile(r"[0-9a-f]{64}\.wav")


class AudioKeeper:
    def __init__(self, folder: str | Path, max_bytes: int | None = None):
        if max_bytes is not None and not (isinstance(max_bytes, int) and max_bytes > 0):
            raise ConfigError(f"the kept audio's limit must be a positive number of bytes, not {max_bytes!r}")
        self.folder, self.max_bytes = Path(folder), max_bytes
        try:  # found out now, not at the first upload
            self.folder.mkdir(parents=True, exist_ok=True)
            kept = [(p.stat().st_mtime_ns, p) for p in self.folder.iterdir() if _KEPT.fullmatch(p.name)]
        except OSError as e:
            raise StorageError(f"cannot keep audio here ({e.strerror or e})", self.folder) from e
        self._sizes = {p: p.stat().st_size for _, p in sorted(kept)}  # oldest first (dicts keep their order)
        self._total = sum(self._sizes.values())
        self._lock = threading.Lock()  # the service scores in several threads
        self.removed = 0
        with self._lock:
            self._trim()

    def keep(self, data: bytes, sha256: str) -> Path:
        """Write ``data`` as ``<sha256>.wav`` (once: the same clip again is the same file, now the newest)."""
        path = self.folder / f"{sha256}.wav"
        with self._lock:
            atomic.write_with(path, lambda tmp: tmp.write_bytes(data))
            if path in self._sizes:  # seen before: it moves to the newest end
                self._total -= self._sizes.pop(path)
            self._sizes[path] = len(data)
            self._total += len(data)
            self._trim()
        return path

    def _trim(self) -> None:
        """Remove the oldest kept clips while over the limit (never the one just kept)."""
        if self.max_bytes is None:
            return
        while self._total > self.max_bytes and len(self._sizes) > 1:
            oldest = next(iter(self._sizes))
            self._total -= self._sizes.pop(oldest)
            try:
                oldest.unlink()
                self.removed += 1
            except FileNotFoundError:  # removed by someone else meanwhile
                pass
            except OSError as e:  # kept on disk, but no longer counted: said, the service goes on
                log.warning("could not remove the kept clip %s (%s)", oldest, e.strerror or e)

"""Clip table -> log-mel features, batched, with an on-disk cache.

Features of all clips are held in one :class:`Features` object: the frames of every clip
concatenated in one float32 array plus offsets, so clips of any length fit and models index
windows and patches without copies. The cache stores one ``.npy`` per clip, keyed by the file's
identity (resolved path, size, modification time) and the feature parameters, so a second run
reads features instead of decoding audio, and an edited file or changed setting is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mimii_due.config import FeatureConfig
from mimii_due.data import audio
from mimii_due.errors import AudioError
from mimii_due.features.logmel import LogMel

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


@dataclass
class Features:
    """Log-mel frames of many clips: ``data`` (total_frames, n_mels), clip ``i`` is
    ``data[offsets[i]:offsets[i + 1]]``."""

    data: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def clip(self, i: int) -> np.ndarray:
        return self.data[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def means(self) -> np.ndarray:
        """Clip-mean log-mel, shape ``(n_clips, n_mels)``."""
        sums = np.add.reduceat(self.data.astype(np.float64), self.offsets[:-1], axis=0)
        return (sums / self.lengths[:, None]).astype(np.float32)


def cache_key(path: str | Path, cfg: FeatureConfig) -> str:
    p = Path(path).resolve()
    st = p.stat()
    ident = json.dumps([str(p), st.st_size, st.st_mtime_ns, asdict(cfg)], sort_keys=True)
    return hashlib.sha1(ident.encode()).hexdigest()


def _cache_file(cache: Path, key: str) -> Path:
    return cache / key[:2] / f"{key}.npy"


def _save(path: Path, x: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, x)
    tmp.replace(path)


def extract(
    table: pd.DataFrame,
    *,
    cfg: FeatureConfig = FeatureConfig(),
    cache: str | Path | None = None,
    on_error: str = "raise",
    batch_size: int = 4,
    read_ahead: int = 64,
    progress: Progress | None = None,
) -> tuple[Features, pd.DataFrame]:
    """Log-mel features of every clip in ``table`` (column ``path``).

    Parameters
    ----------
    on_error : ``"raise"`` stops at the first unreadable clip with an error naming it;
        ``"skip"`` logs it and leaves it out (the returned table lists only the clips kept and
        ``table.attrs["skipped"]`` the ``(path, message)`` pairs).

    Returns
    -------
    (Features, table of the clips kept, in the same order)
    """
    paths = list(table["path"])
    cache = Path(cache) if cache else None
    module = LogMel(cfg)
    results: list[np.ndarray | None] = [None] * len(paths)
    keys = [cache_key(p, cfg) if cache else None for p in paths]
    todo = []
    for i, k in enumerate(keys):
        f = _cache_file(cache, k) if cache else None
        if f is not None and f.exists():
            try:
                results[i] = np.load(f)
                continue
            except (OSError, ValueError):
                log.warning("feature cache file %s is unreadable; recomputing", f)
        todo.append(i)
    done = len(paths) - len(todo)
    if progress:
        progress(done, len(paths))
    skipped = []

    # Decode a chunk, then compute its log-mel in small batches (a few clips keep the STFT's
    # working set in cache). Decoding in a background thread was measured slower on 2 cores: it
    # preempts torch's OpenMP workers.
    for start in range(0, len(todo), read_ahead):
        by_len: dict[int, list] = {}
        for i in todo[start : start + read_ahead]:
            try:
                y = audio.load(paths[i], sr=cfg.sample_rate)
            except AudioError as e:
                if on_error == "raise":
                    raise
                log.warning("skipping %s", e)
                skipped.append((paths[i], str(e)))
                continue
            by_len.setdefault(len(y), []).append((i, y))
        for group in by_len.values():
            for b in range(0, len(group), batch_size):
                part = group[b : b + batch_size]
                out = module(torch.from_numpy(np.stack([y for _, y in part]))).numpy()
                for (i, _), feat in zip(part, out, strict=True):
                    results[i] = feat
                    if cache:
                        _save(_cache_file(cache, keys[i]), feat)
        done = min(len(paths), done + read_ahead)
        if progress:
            progress(done, len(paths))
    kept = [i for i, r in enumerate(results) if r is not None]
    feats = [results[i] for i in kept]
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in feats])]).astype(np.int64)
    data = np.concatenate(feats) if feats else np.zeros((0, cfg.n_mels), np.float32)
    out_table = table.iloc[kept].reset_index(drop=True)
    out_table.attrs["skipped"] = list(table.attrs.get("skipped", [])) + skipped
    return Features(np.ascontiguousarray(data, dtype=np.float32), offsets), out_table

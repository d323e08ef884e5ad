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
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mimii_due import atomic
from mimii_due.config import FeatureConfig
from mimii_due.data import audio
from mimii_due.errors import AudioError
from mimii_due.features.logmel import LogMel, n_frames
from mimii_due.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class Features:
    """Log-mel frames of many clips: ``data`` (total_frames, n_mels), clip ``i`` is
    ``data[offsets[i]:offsets[i + 1]]``; with ``FeatureConfig.spectrum_bins``, ``spectra``
    (n_clips, spectrum_bins) holds each clip's whole-clip magnitude spectrum."""

    data: np.ndarray
    offsets: np.ndarray
    spectra: np.ndarray | None = None

    def windows(self, frames: int, hop: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Every ``frames``-frame window of every clip, one every ``hop`` frames: the row of its
        first frame in ``data`` and the clip it belongs to (the AE's 5-frame vectors, MobileNetV2's
        64-frame patches). A model gathers ``data[starts[:, None] + arange(frames)]`` per batch, so
        the windows are never materialised for the whole set."""
        starts, owner = [], []
        for i, (a, b) in enumerate(zip(self.offsets[:-1], self.offsets[1:], strict=True)):
            s = np.arange(a, b - frames + 1, hop)
            starts.append(s)
            owner.append(np.full(len(s), i))
        if not starts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(starts).astype(np.int64), np.concatenate(owner).astype(np.int64)

    def writable(self) -> Features:
        """These features with arrays this process may write (a cluster's object store hands out
        read-only ones, which torch warns about)."""
        if self.data.flags.writeable and (self.spectra is None or self.spectra.flags.writeable):
            return self
        return Features(self.data.copy(), self.offsets.copy(), None if self.spectra is None else self.spectra.copy())

    @staticmethod
    def concat(parts: list[Features]) -> Features:
        """The clips of several feature sets, one after the other."""
        data = np.concatenate([p.data for p in parts]) if parts else np.zeros((0, 0), np.float32)
        lengths = np.concatenate([p.lengths for p in parts]) if parts else np.zeros(0, np.int64)
        spectra = None
        if parts and parts[0].spectra is not None:
            spectra = np.concatenate([p.spectra for p in parts])
        return Features(data, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), spectra)

    def select(self, idx) -> Features:
        """The features of clips ``idx`` (in that order)."""
        idx = np.asarray(idx, dtype=np.int64)
        parts = [self.clip(int(i)) for i in idx]
        data = np.concatenate(parts) if parts else self.data[:0]
        offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
        return Features(data, offsets, None if self.spectra is None else self.spectra[idx])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def clip(self, i: int) -> np.ndarray:
        return self.data[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def means(self) -> np.ndarray:
        """Clip-mean log-mel, shape ``(n_clips, n_mels)``."""
        sums = np.add.reduceat(self.data, self.offsets[:-1], axis=0, dtype=np.float64)  # no float64 copy of all
        return (sums / self.lengths[:, None]).astype(np.float32)


def cache_key(path: str | Path, cfg: FeatureConfig) -> str:
    p = Path(path).resolve()
    st = p.stat()
    settings = asdict(cfg)
    if not settings["channel"]:  # the first channel: the key of a cache made before the setting existed
        del settings["channel"]
    ident = json.dumps([str(p), st.st_size, st.st_mtime_ns, settings], sort_keys=True)
    return hashlib.sha1(ident.encode()).hexdigest()


def _cache_file(cache: Path, key: str, kind: str = "") -> Path:
    return cache / key[:2] / f"{key}{kind}.npy"


def clip_spectrum(y: np.ndarray, bins: int) -> np.ndarray:
    """The magnitude of one FFT over the whole clip, averaged into ``bins`` equal bands from 0 Hz
    to the Nyquist frequency, shape ``(bins,)``: clips of any length give comparable vectors."""
    import scipy.fft

    mag = np.abs(scipy.fft.rfft(np.asarray(y, dtype=np.float32), workers=1))
    edges = np.linspace(0, len(mag), bins + 1).astype(np.int64)
    starts = np.minimum(edges[:-1], len(mag) - 1)
    sums = np.add.reduceat(mag, starts)
    return (sums / np.maximum(np.diff(edges), 1)).astype(np.float32)


def _save(path: Path, x: np.ndarray) -> None:
    atomic.write_with(path, lambda tmp: np.save(tmp, x))


def is_cached(path: str | Path, cfg: FeatureConfig, cache: str | Path) -> bool:
    """Whether ``cache`` holds the features of ``path`` under ``cfg`` (for the file as it is now)."""
    try:
        key = cache_key(path, cfg)
    except OSError:
        return False
    return _cache_file(Path(cache), key).exists()


def store(table: pd.DataFrame, features: Features, *, cfg: FeatureConfig, cache: str | Path) -> None:
    """Write features computed elsewhere (a cluster task) into the cache, as :func:`extract` does."""
    cache = Path(cache)
    for i, path in enumerate(table["path"]):
        spectrum = features.spectra[i] if features.spectra is not None else None
        _store_clip(cache, cache_key(path, cfg), features.clip(i), spectrum)


def _store_clip(cache: Path, key: str, logmel: np.ndarray, spectrum: np.ndarray | None) -> None:
    if spectrum is not None:  # written first: the log-mel file marks the entry complete
        _save(_cache_file(cache, key, ".spectrum"), spectrum)
    _save(_cache_file(cache, key), logmel)


def features_of(waves: list[np.ndarray], *, cfg: FeatureConfig = FeatureConfig()) -> Features:
    """Features of waveforms already in memory (float samples at ``cfg.sample_rate``), the same
    numbers :func:`extract` computes from files: for a service or a cluster task holding audio."""
    module = LogMel(cfg)
    parts = [module(torch.from_numpy(np.asarray(y, np.float32))[None])[0].numpy() for y in waves]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    data = np.concatenate(parts) if parts else np.zeros((0, cfg.n_mels), np.float32)
    spectra = np.stack([clip_spectrum(y, cfg.spectrum_bins) for y in waves]) if cfg.spectrum_bins and waves else None
    return Features(data, offsets, spectra)


def extract(
    table: pd.DataFrame,
    *,
    cfg: FeatureConfig = FeatureConfig(),
    cache: str | Path | None = None,
    on_error: str = "raise",
    batch_size: int = 2,
    workers: int | None = None,
    progress: Progress | None = None,
) -> tuple[Features, pd.DataFrame]:
    """Log-mel features of every clip in ``table`` (column ``path``).

    Parameters
    ----------
    on_error : ``"raise"`` stops at the first unreadable clip with an error naming it;
        ``"skip"`` logs it and leaves it out (the returned table lists only the clips kept and
        ``table.attrs["skipped"]`` the ``(path, message)`` pairs).
    workers : decoding/computing threads (default: torch's thread count).

    Returns
    -------
    (Features, table of the clips kept, in the same order)
    """
    paths = list(table["path"])
    n = len(paths)
    cache = Path(cache) if cache else None
    module = LogMel(cfg)
    errors: dict[int, AudioError] = {}

    def fail(i: int, e: AudioError) -> None:
        if on_error == "raise":
            raise e
        log.warning("skipping %s", e)
        errors[i] = e

    # Headers first: each clip's frame count is known before decoding, so all features go
    # straight into one preallocated array (no per-clip arrays, no final concatenation; on a VM
    # the page faults of fresh memory were a measurable share of the time).
    infos: list[audio.WavInfo | None] = [None] * n
    for i, p in enumerate(paths):
        try:
            infos[i] = audio.read_header(p)
        except AudioError as e:
            fail(i, e)
    several = [i for i, x in enumerate(infos) if x and x.channels > 1]
    if several:  # once for all clips (MIMII's are 8-channel), not a line per clip
        log.warning("%d of %d clips have several channels (%s: %d); channel %d is kept%s", len(several), n,
                    paths[several[0]], infos[several[0]].channels, cfg.channel,
                    ", the first microphone, as the paper" if cfg.channel == 0 else "")  # fmt: skip
    faster = [i for i, x in enumerate(infos) if x and x.sample_rate > cfg.sample_rate]
    if faster:  # a recorder's 44.1 or 48 kHz: said once, as the channels are
        log.warning("%d of %d clips were recorded at a higher sample rate (%s: %d Hz); they are resampled to %d Hz%s",
                    len(faster), n, paths[faster[0]], infos[faster[0]].sample_rate, cfg.sample_rate,
                    "" if len(faster) == n else " (keep one rate per machine type: the resampler's filter changes "
                    "the top mel bands, above about 7.4 kHz, so resampled and native clips differ there)")  # fmt: skip
    samples = [audio.length_at(x, cfg.sample_rate) if x else 0 for x in infos]
    lengths = np.array([n_frames(k, hop_length=cfg.hop_length) if k else 0 for k in samples], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    data = np.empty((int(offsets[-1]), cfg.n_mels), np.float32)
    spectra = np.empty((n, cfg.spectrum_bins), np.float32) if cfg.spectrum_bins else None
    keys = [cache_key(p, cfg) if cache and infos[i] else None for i, p in enumerate(paths)]

    todo = []
    for i in range(n):
        if infos[i] is None:
            continue
        f = _cache_file(cache, keys[i]) if cache else None
        if f is not None and f.exists():
            try:
                cached = np.load(f)
                spec = np.load(_cache_file(cache, keys[i], ".spectrum")) if spectra is not None else None
                if cached.shape == (lengths[i], cfg.n_mels) and (spec is None or spec.shape == (cfg.spectrum_bins,)):
                    data[offsets[i] : offsets[i + 1]] = cached
                    if spec is not None:
                        spectra[i] = spec
                    continue
            except (OSError, ValueError):
                pass
            log.warning("feature cache file %s is unreadable or stale; recomputing", f)
        todo.append(i)
    done = n - len(todo)
    if progress:
        progress(done, n, "")

    local = threading.local()  # per thread: reused buffers (fresh memory costs page faults)
    half = cfg.n_fft // 2

    def work(batch: list[int]) -> dict[int, AudioError]:
        """Decode and featurise a few clips (equal lengths are stacked into one batch)."""
        bad, by_len = {}, {}
        for i in batch:
            by_len.setdefault(samples[i], []).append(i)
        for n_samples, group in by_len.items():
            buf = getattr(local, "buf", None)
            if buf is None or buf.shape != (len(group), n_samples + 2 * half):
                buf = local.buf = np.zeros((len(group), n_samples + 2 * half), np.float32)  # zero margins
                local.work = {}
            ok = []
            for i in group:
                row = buf[len(ok), half : half + n_samples]
                try:
                    y = audio.load(paths[i], sr=cfg.sample_rate, info=infos[i], out=row, warn_channels=False,
                                   channel=cfg.channel)  # fmt: skip
                except AudioError as e:
                    bad[i] = e
                    continue
                if y.base is not buf:  # not 16-bit PCM, or resampled: decoded elsewhere
                    row[:] = y
                if spectra is not None:
                    spectra[i] = clip_spectrum(row, cfg.spectrum_bins)
                ok.append(i)
            if not ok:
                continue
            feats = module.padded(torch.from_numpy(buf[: len(ok)]), local.work).numpy()
            for i, feat in zip(ok, feats, strict=True):
                data[offsets[i] : offsets[i + 1]] = feat
                if cache:
                    _store_clip(cache, keys[i], feat, spectra[i] if spectra is not None else None)
        return bad

    # Each of ``workers`` threads decodes a few clips and computes their log-mel with one torch
    # thread: decoding (outside the GIL) overlaps computing, and a few clips keep the STFT's
    # working set in cache. Measured faster than one thread driving two torch threads.
    batches = [todo[b : b + batch_size] for b in range(0, len(todo), batch_size)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pool = ThreadPoolExecutor(max(1, workers or threads))
    try:
        for batch, bad in zip(batches, pool.map(work, batches), strict=True):
            for i, e in bad.items():
                fail(i, e)
            done += len(batch)
            if progress:
                progress(done, n, "")
    finally:
        pool.shutdown(cancel_futures=True)  # an error stops the clips not yet started
        torch.set_num_threads(threads)

    kept = [i for i in range(n) if i not in errors]
    if errors:  # compact: drop the rows of the clips left out
        data = np.concatenate([data[offsets[i] : offsets[i + 1]] for i in kept] or [data[:0]])
        offsets = np.concatenate([[0], np.cumsum(lengths[kept])])
        spectra = spectra[kept] if spectra is not None else None
    out_table = table.iloc[kept].reset_index(drop=True)
    out_table.attrs["skipped"] = list(table.attrs.get("skipped", [])) + [(paths[i], str(e)) for i, e in errors.items()]
    return Features(data, offsets.astype(np.int64), spectra), out_table

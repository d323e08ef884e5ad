"""Feature extraction speed: our batched log-mel against the official baseline's per-file loop.

Both run in this process on the same clips (200+ generated 10 s clips); the ratio of clips per
second is the figure (target: at least 8x on a 2-core machine). Reading the WAV files alone and
reading cached features are printed for scale.

    python benchmarks/bench_features.py [--clips 256] [--data /tmp/bench_data]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile

import librosa
import numpy as np

from common import Timer, dataset
from mimii_due.data.audio import load
from mimii_due.features.extract import extract


def official_loop(paths):
    """The official DCASE baseline's file_to_vector_array front end, without the frame stacking."""
    out = []
    for p in paths:
        y, sr = librosa.load(p, sr=None, mono=False)
        mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=1024, hop_length=512, n_mels=128, power=2.0)
        out.append(20.0 / 2.0 * np.log10(mel + sys.float_info.epsilon))
    return out


def best_of(fn, repeats: int) -> float:
    """The shortest of ``repeats`` timed runs (the least disturbed by other work on the machine)."""
    times = []
    for _ in range(repeats):
        with Timer() as t:
            fn()
        times.append(t.seconds)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=256)
    ap.add_argument("--data", default="/tmp/mimii_due_bench_data")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    table = dataset(a.data)
    table = table.iloc[: a.clips].reset_index(drop=True)
    paths = list(table.path)
    n = len(paths)
    official_loop(paths[:4])  # warm up librosa's caches (filterbank, numba)
    extract(table.iloc[:8])
    cache = tempfile.mkdtemp()
    extract(table, cache=cache)
    runs = {
        "read": lambda: [load(p) for p in paths],
        "official": lambda: official_loop(paths),
        "ours": lambda: extract(table),
        "cached": lambda: extract(table, cache=cache),
    }
    try:
        rate = {k: n / best_of(f, a.repeats) for k, f in runs.items()}
    finally:
        shutil.rmtree(cache)
    print(f"{n} clips of 10 s, best of {a.repeats} runs each")
    print(f"read WAV only         {rate['read']:8.1f} clips/s")
    print(f"official per-file     {rate['official']:8.1f} clips/s  (reference)")
    print(f"ours, batched         {rate['ours']:8.1f} clips/s  ratio {rate['ours'] / rate['official']:.1f}x")
    print(f"ours, from the cache  {rate['cached']:8.1f} clips/s  ratio {rate['cached'] / rate['official']:.1f}x")


if __name__ == "__main__":
    main()

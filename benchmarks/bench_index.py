"""Indexing speed: ``index()`` (our RIFF header reader) on 10,000 clip files, against reading the same
headers with ``soundfile.info`` in the same run.

The files are hard links to generated clips in the real layout (cheap to make, real headers).

    python benchmarks/bench_index.py [--files 10000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import soundfile as sf

from common import Timer, dataset
from mimii_due.data.index import index


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--data", default="/tmp/mimii_due_bench_data")
    a = ap.parse_args()
    src = list(dataset(a.data).path)
    with tempfile.TemporaryDirectory() as tmp:
        per_machine = a.files // 5
        for m in ("fan", "gearbox", "pump", "slider", "valve"):
            d = Path(tmp) / "dev_data" / m / "train"
            d.mkdir(parents=True)
            for i in range(per_machine):
                os.link(src[i % len(src)], d / f"section_00_source_train_normal_{i:04d}_attr_1.wav")
        index(tmp)  # warm the directory cache for both
        with Timer() as t_ours:
            table = index(tmp)
        with Timer() as t_sf:
            for p in table.path:
                sf.info(p)
    n = len(table)
    print(f"{n} files")
    print(f"soundfile.info per file   {n / t_sf.seconds:8.0f} files/s  (reference)")
    print(
        f"index() with the table    {n / t_ours.seconds:8.0f} files/s  ratio {t_sf.seconds / t_ours.seconds:.2f}"
        f"  ({t_ours.seconds:.2f} s; 42,000 clips would take about {42_000 / n * t_ours.seconds:.0f} s)"
    )


if __name__ == "__main__":
    main()

"""Autoencoder training: our loop against a bare PyTorch loop, and peak memory.

1. Throughput: vectors per second of the AE detector's training loop (5-frame windows gathered by
   index per batch, never materialised) against a bare loop of the same model on the same vectors
   pre-built in memory, both measured here on the same clips. Target: ratio >= 0.8.
2. Memory: peak RSS of training on N and 2N clips, each in a fresh process, extrapolated linearly
   to a full-size machine type (3,009 clips). Target: < 2 GB.

    python benchmarks/bench_ae.py [--clips 300] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch

from common import Timer, dataset
from mimii_due.detectors import make
from mimii_due.detectors.autoencoder import AutoEncoder
from mimii_due.features.extract import extract

FULL_SIZE_CLIPS = 3009  # one machine type: 3 sections x (about 1000 source + 3 target) clips


def bare_loop(vectors: torch.Tensor, epochs: int, batch: int = 512) -> float:
    torch.manual_seed(0)
    model = AutoEncoder()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.MSELoss()
    model.train()
    with Timer() as t:
        for _ in range(epochs):
            for idx in torch.randperm(len(vectors)).split(batch):
                x = vectors[idx]
                loss = loss_fn(model(x), x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return epochs * len(vectors) / t.seconds


def peak_memory(n_clips: int, data: str) -> float:
    """Peak RSS (MB) of a fresh process while it trains the AE detector on ``n_clips`` clips
    (imports included, the peak reset just before training)."""
    code = f"""
import sys
sys.path.insert(0, 'benchmarks')
from common import dataset
from mimii_due.detectors import make
from mimii_due.features.logmel import LogMel
t = dataset({data!r})
t = t[t.split == 'train'].iloc[:{n_clips}]
LogMel()  # imports done before the peak is reset
open('/proc/self/clear_refs', 'w').write('5')  # reset the peak RSS (VmHWM) to the current RSS
from mimii_due.features.extract import extract
f, t = extract(t, cache={data!r} + '/.features')
make('ae', epochs=1).fit(f, t)
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]
print(int(hwm.split()[1]) / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--data", default="/tmp/mimii_due_bench_data")
    a = ap.parse_args()
    table = dataset(a.data)
    train = table[table.split == "train"].iloc[: a.clips]
    feats, train = extract(train, cache=f"{a.data}/.features")
    starts = torch.from_numpy(feats.windows(5)[0])
    n_vec = len(starts)
    vectors = torch.from_numpy(feats.data)[starts[:, None] + torch.arange(5)].reshape(n_vec, -1)
    bare = bare_loop(vectors, a.epochs)
    det = make("ae", epochs=a.epochs, validation_split=0.0)
    with Timer() as t:
        det.fit(feats, train)
    ours = a.epochs * n_vec / t.seconds
    print(f"{len(train)} clips, {n_vec} vectors, {a.epochs} epochs")
    print(f"bare PyTorch loop (vectors in memory)  {bare:10.0f} vectors/s  (reference)")
    print(f"AE detector training loop              {ours:10.0f} vectors/s  ratio {ours / bare:.2f}")
    del vectors
    n1, n2 = len(train) // 2, len(train)
    m1, m2 = peak_memory(n1, a.data), peak_memory(n2, a.data)
    per_clip = (m2 - m1) / (n2 - n1)
    full = m2 + per_clip * (FULL_SIZE_CLIPS - n2)
    print(f"peak RSS: {m1:.0f} MB at {n1} clips, {m2:.0f} MB at {n2} clips ({per_clip:.2f} MB/clip)")
    print(f"estimated peak for a full-size machine type ({FULL_SIZE_CLIPS} clips): {full:.0f} MB")
    print(json.dumps({"ratio": ours / bare, "full_size_peak_mb": full}))


if __name__ == "__main__":
    main()

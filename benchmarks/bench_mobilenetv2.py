"""MobileNetV2 baseline on the CPU: training and inference patches per second, and the time of one
full-size machine type estimated from them.

Training runs the detector's own loop (patches gathered by index, batch 32, Adam) for one epoch
on generated clips; inference scores them. The reference is the same network's bare forward pass
on a random batch, measured in the same run. Full size: 3 sections x about 1,003 clips x 32
patches per clip x 20 epochs (90 % of the patches train, 10 % validate each epoch).

    python benchmarks/bench_mobilenetv2.py [--clips 60]
"""

from __future__ import annotations

import argparse

import torch

from common import Timer, dataset
from mimii_due.detectors import make
from mimii_due.detectors.mobilenetv2 import MobileNetV2
from mimii_due.features.extract import extract

FULL_CLIPS, PATCHES_PER_CLIP, EPOCHS = 3 * 1003, 32, 20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=60)
    ap.add_argument("--data", default="/tmp/mimii_due_bench_data")
    a = ap.parse_args()
    table = dataset(a.data)
    train = table[table.split == "train"].groupby("section").head(a.clips // 3)
    cache = f"{a.data}/.features"
    feats, train = extract(train, cache=cache)
    det = make("mobilenetv2", epochs=1, validation_split=0.0)
    with Timer() as t_train:  # training, then scoring the training clips for the threshold
        det.fit(feats, train)
    n_patches = len(train) * PATCHES_PER_CLIP
    with Timer() as t_infer:
        det.score(feats, train)
    net = MobileNetV2(3).eval()
    x = torch.randn(256, 1, 64, 128)
    with torch.no_grad():
        net(x)  # warm-up
        with Timer() as t_bare:
            net(x)
    train_rate, infer_rate = n_patches / t_train.seconds, n_patches / t_infer.seconds
    full = (
        FULL_CLIPS * PATCHES_PER_CLIP * EPOCHS * (0.9 / train_rate + 0.1 / infer_rate)
        + FULL_CLIPS * PATCHES_PER_CLIP / infer_rate
    )
    print(f"{len(train)} clips, {n_patches} patches, torch threads: {torch.get_num_threads()}")
    print(f"training   {train_rate:8.1f} patches/s (batch 32)")
    print(
        f"inference  {infer_rate:8.1f} patches/s (batch 256); bare forward pass {256 / t_bare.seconds:.1f}"
        f" patches/s, ratio {infer_rate / (256 / t_bare.seconds):.2f}"
    )
    print(f"estimated full-size machine type (3 sections x 1,003 clips, 20 epochs): {full / 3600:.1f} h")


if __name__ == "__main__":
    main()

"""Every detector on the real recordings we have: ``../shared/real/dcase2020_id00``, 75 normal
10-second clips of one DCASE 2020 machine (ID 00) and one anomalous clip.

Too few anomalies for an AUC, but enough normal clips to ask what a maintenance engineer asks of
an alarm: with a threshold fitted on normal recordings (nominal false-alarm rate 0.10, the gamma
fit of the official code), how often does a *new* normal recording of the same machine raise one?
5-fold cross-validation over the 75 normal clips: each fold trains on 60 and scores the 15 it did
not see and the anomaly. Prints per detector the false-alarm rate over the 75 held-out normal
clips (with its binomial standard error), the anomaly's rank among the held-out normal clips of
each fold (the share scoring below it: an AUC with one anomaly, averaged over folds) and whether
it raised an alarm. The reference is the nominal rate 0.10. MobileNetV2 is left out: one machine ID
without attributes gives it nothing to classify. ``--train N`` trains each fold on N of its clips
only (as few as a new machine may have; the issue's held-back MIMII folds have 10).

    python benchmarks/real_clips.py [--data ../shared/real/dcase2020_id00] [--detectors ...] [--train N]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from mimii_due import pipeline
from mimii_due.config import FeatureConfig
from mimii_due.data.index import index
from mimii_due.detectors import make

NOMINAL = 0.10


def main() -> None:
    ap = argparse.ArgumentParser()
    default = Path(os.environ.get("MIMII_DUE_REAL_DATA", "../shared/real")) / "dcase2020_id00"
    ap.add_argument("--data", type=Path, default=default)
    ap.add_argument("--detectors", default="gaussian,twfr_gmm,ensemble,ae,smahal,embedding")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--train", type=int, default=None, help="training clips per fold (default: all the fold's)")
    ap.add_argument("--cache", default="/tmp/mimii_due_real_clips")
    a = ap.parse_args()
    t = index(a.data)
    normal, anomaly = t[t.label == "normal"].reset_index(drop=True), t[t.label == "anomaly"].reset_index(drop=True)
    print(f"{a.data}: {len(normal)} normal clips, {len(anomaly)} anomalous; {a.folds}-fold over the normal clips"
          + (f", {a.train} training clips per fold" if a.train else ""))  # fmt: skip
    cfg = FeatureConfig(spectrum_bins=make("embedding").features.spectrum_bins)  # what every detector reads
    folds = np.random.default_rng(0).permutation(len(normal)) % a.folds
    splits = [(pipeline.features(normal[folds != k].assign(split="train").iloc[: a.train], cfg=cfg, cache=a.cache),
               pipeline.features(normal[folds == k], cfg=cfg, cache=a.cache)) for k in range(a.folds)]  # fmt: skip
    fan, can = pipeline.features(anomaly, cfg=cfg, cache=a.cache)
    print("| detector | false alarms on new normal clips (nominal 0.10) | anomaly's rank among them | "
          "anomaly raised an alarm |\n|---|---|---|---|")  # fmt: skip
    for det in a.detectors.split(","):
        alarms, ranks, caught = 0, [], 0
        for (ftr, ctr), (fte, cte) in splits:
            model = make(det).fit(ftr, ctr)
            s_normal, s_anomaly = model.score(fte, cte), model.score(fan, can)
            alarms += int((s_normal > model.threshold_).sum())
            ranks.append(float(np.mean(s_normal < s_anomaly[0])))
            caught += int(s_anomaly[0] > model.threshold_)
        rate = alarms / len(normal)
        se = np.sqrt(NOMINAL * (1 - NOMINAL) / len(normal))
        print(f"| {det} | {rate:.3f} ({alarms} of {len(normal)}; {(rate - NOMINAL) / se:+.1f} standard errors of the "
              f"nominal rate) | {np.mean(ranks):.2f} | {caught} of {a.folds} folds |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

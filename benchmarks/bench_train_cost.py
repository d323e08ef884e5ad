"""Training cost of every detector at full size: one machine type of the 2023 layout, 990 + 10
training clips and 100 + 100 test clips (generated, 10 s), trained, scored and evaluated. A second
machine type (pump) is in the dataset, as in every DCASE development set: detectors with outlier
exposure (the embedding) also train on as many of its clips.

Prints wall seconds, training clips/s and the process's peak resident memory so far per
detector, and the ratio to the old embedding detector's 239 s measured on this machine (issue
15's reference; the new default may cost at most twice that). AE and MobileNetV2 run with a
reduced number of epochs; their full-size time adds the missing epochs at the mean wall time of
the epochs run (the model's history records each epoch's seconds; said in the output).

``--devices cpu,cuda`` trains each network detector (AE, MobileNetV2, embedding) on each device
and prints its time against the first device's, measured in the same run (the ensemble's network
members train where ``device="auto"`` puts them: the GPU when there is one).

``--layout dcase2021``: one machine type of the MIMII DUE layout (DCASE 2021 development set)
instead, three sections of about 1,000 source + 3 target training clips each and 100 + 100 test
clips per section (Table 1 at scale 1), about three times the 2023 layout's training clips.

    python benchmarks/bench_train_cost.py [--detectors twfr_gmm,embedding,ensemble,gaussian,ae]
        [--devices cpu,cuda] [--workers 2] [--layout dcase2023|dcase2021]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path

import numpy as np

from mimii_due import pipeline
from mimii_due.data.index import index
from mimii_due.detectors import REGISTRY, make
from mimii_due.runs import Run
from mimii_due.synth.generate import generate

REFERENCE_S = 239.0  # the previous embedding detector: train + test + evaluate of such a machine type


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--detectors", default="twfr_gmm,embedding,ensemble,gaussian,ae")
    ap.add_argument("--ae-epochs", type=int, default=5)
    ap.add_argument("--devices", default="auto", help="devices the network detectors train on, e.g. cpu,cuda")
    ap.add_argument("--workers", type=int, default=2, help="processes generating the clips")
    ap.add_argument("--layout", default="dcase2023", choices=["dcase2023", "dcase2021"])
    ap.add_argument("--out", default="/tmp/mimii_due_bench_cost")
    a = ap.parse_args()
    out = Path(a.out) / a.layout if a.layout != "dcase2023" else Path(a.out)
    sections = [0] if a.layout == "dcase2023" else [0, 1, 2]
    data = generate(out / "data", machines=["fan", "pump"], sections=sections, scale=1.0, seed=7, min_test=50,
                    workers=a.workers, layout=a.layout)  # fmt: skip
    everything = index(data)
    t = everything[everything.machine == "fan"]
    n_train = int((t.split == "train").sum())
    print(f"{n_train} training clips, {int((t.split == 'test').sum())} test clips")
    t0 = time.perf_counter()
    pipeline.features(everything, cache=out / "features", cfg=make("embedding").features)
    print(f"features of both machine types (log-mel + whole-clip spectrum, cached for all): "
          f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    jobs = [(det, dev) for det in a.detectors.split(",") for dev in a.devices.split(",")
            if dev == a.devices.split(",")[0] or "device" in vars(REGISTRY[det].config_class())]  # fmt: skip
    first: dict[str, float] = {}
    for det, dev in jobs:
        reduced = det in ("ae", "mobilenetv2")  # epochs cut, the full time extrapolated
        params = {"epochs": a.ae_epochs} if reduced else {}
        if "device" in vars(REGISTRY[det].config_class()):
            params["device"] = dev
        run = out / f"{det}_{dev}"
        shutil.rmtree(run, ignore_errors=True)
        t1 = time.perf_counter()
        pipeline.train(run, data, detector=det, params=params, cache=out / "features", machines=["fan"])
        t_train = time.perf_counter() - t1
        pipeline.test(run, data)
        _, summary = pipeline.evaluate(run)
        wall = time.perf_counter() - t1
        note = ""
        if reduced:
            full = {"ae": 100, "mobilenetv2": 20}[det]
            epoch_s = np.mean([h["seconds"] for h in Run(run).load_model("fan").history_])
            wall_full = wall + epoch_s * (full - a.ae_epochs)
            note = f" ({a.ae_epochs} epochs, {epoch_s:.1f} s each; {full} epochs extrapolated: {wall_full:.0f} s)"
            wall = wall_full
        score = summary["official_score"]
        first.setdefault(det, wall)
        on = f" on {dev}, {wall / first[det]:.2f} of the first device's time" if "device" in params else ""
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux
        print(f"{det:10s} wall {wall:6.0f} s  train {n_train / t_train:7.1f} clips/s  ratio to the reference "
              f"{wall / REFERENCE_S:.2f}  official score {score:.3f}  peak memory of the run so far {peak:.2f} GB"
              f"{note}{on}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

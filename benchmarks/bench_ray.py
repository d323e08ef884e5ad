"""The same job on this machine and on a local Ray cluster with 1 and 2 worker CPUs.

Job: features of a generated dataset (2 machine types, the 2023 layout), then TWFR-GMM and the AE
(2 epochs) trained per machine type and the test clips scored. Prints the wall time of each and
the ratio to the local run measured in the same invocation (Ray's overhead on one machine), and
the per-clip feature cost and per-epoch AE cost that the README's cluster estimate uses.

    python benchmarks/bench_ray.py [--scale 0.1] [--out /tmp/mimii_due_bench_ray]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import ray

from mimii_due import pipeline
from mimii_due.data.index import index
from mimii_due.engines import get_engine
from mimii_due.synth.generate import generate


def job(data: Path, out: Path, engine) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    t = {}
    t0 = time.perf_counter()
    table = index(data)
    pipeline.features(table, cache=out / "features", engine=engine)
    t["features"] = time.perf_counter() - t0
    for det, params in (("twfr_gmm", {}), ("ae", {"epochs": 2})):
        t1 = time.perf_counter()
        pipeline.train(out / det, data, detector=det, params=params, cache=out / "features", engine=engine)
        pipeline.test(out / det, data, engine=engine)
        t[det] = time.perf_counter() - t1
    t["total"] = time.perf_counter() - t0
    return t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=0.1)
    ap.add_argument("--out", default="/tmp/mimii_due_bench_ray")
    a = ap.parse_args()
    out = Path(a.out)
    data = generate(out / "data", machines=["fan", "valve"], sections=[0], scale=a.scale, seed=0, min_test=50,
                    workers=2, layout="dcase2023")  # fmt: skip
    n = len(index(data))
    results = {"local": job(data, out / "local", get_engine("local"))}
    for cpus in (1, 2):
        t0 = time.perf_counter()
        engine = get_engine("ray", num_cpus=cpus)
        start = time.perf_counter() - t0
        results[f"ray {cpus} CPU"] = job(data, out / f"ray{cpus}", engine) | {"start": start}
        engine.close()
        assert not ray.is_initialized()
    base = results["local"]["total"]
    print(f"{n} clips (2 machine types); wall seconds per stage, ratio of the total to the local run")
    print(
        f"{'engine':12s} {'features':>9s} {'twfr_gmm':>9s} {'ae (2 ep)':>9s} {'total':>8s} {'ratio':>6s}"
        f" {'ray start':>9s}"
    )
    for name, r in results.items():
        print(f"{name:12s} {r['features']:9.1f} {r['twfr_gmm']:9.1f} {r['ae']:9.1f} {r['total']:8.1f} "
              f"{r['total'] / base:6.2f} {r.get('start', 0):9.1f}")  # fmt: skip
    print(f"local feature cost: {1000 * results['local']['features'] / n:.1f} ms per clip")


if __name__ == "__main__":
    main()

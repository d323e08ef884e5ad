"""Domain shift of the synthetic data, measured with the simple reference detector.

Generates the development sections (00-02) of all five machine types, fits the Gaussian
(Mahalanobis on clip-mean log-mel) detector on each section's source-domain training clips and
prints the source and target AUC per section, beside the clip-generation speed.

    python benchmarks/synth_reference.py [--scale 0.2] [--workers 2] [--out /tmp/synth_ref]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from mimii_due.data.index import index
from mimii_due.detectors import make
from mimii_due.evaluation.metrics import auc
from mimii_due.features.extract import extract
from mimii_due.synth.generate import generate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=0.2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/synth_ref")
    a = ap.parse_args()
    t0 = time.perf_counter()
    generate(a.out, sections=[0, 1, 2], scale=a.scale, seed=a.seed, workers=a.workers)
    gen_s = time.perf_counter() - t0
    t = index(a.out)
    print(f"generated {len(t)} clips in {gen_s:.1f} s: {len(t) / gen_s:.1f} clips/s with {a.workers} workers")
    rows = []
    for machine, g in t.groupby("machine"):
        det = make("gaussian").fit(*extract(g[g.split == "train"], cache=f"{a.out}/.features"))
        fte, te = extract(g[g.split == "test"], cache=f"{a.out}/.features")
        te = te.assign(score=det.score(fte, te))
        for (section, domain), h in te.groupby(["section", "domain"]):
            rows.append(
                {
                    "machine": machine,
                    "section": section,
                    "domain": domain,
                    "AUC": auc((h.label == "anomaly").to_numpy(), h.score.to_numpy()),
                }
            )
    table = pd.DataFrame(rows).pivot_table(index=["machine", "section"], columns="domain", values="AUC")
    table["gap"] = table["source"] - table["target"]
    print(table.round(3).to_string())
    print(
        f"mean source AUC {table.source.mean():.3f}, mean target AUC {table.target.mean():.3f}, "
        f"sections with source > target: {(table.gap > 0).sum()} of {len(table)}"
    )


if __name__ == "__main__":
    main()

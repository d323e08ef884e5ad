"""Issue 7's comparison: every detector on one generated dataset, one table.

Generates the development sections of all five machine types at ``--scale`` (fixed seed), then
for each detector trains (paper settings for the baselines), tests and evaluates it, and prints
the official score and the harmonic means of AUC and pAUC per domain. Runs are resumable: a rerun
skips what is done. Results also go to ``OUT/comparison.md``.

    python benchmarks/compare_detectors.py [--scale 0.1] [--min-test 50] [--out /tmp/mimii_due_compare]
        [--detectors embedding,ae,smahal,mobilenetv2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from mimii_due import pipeline
from mimii_due.data.index import index
from mimii_due.detectors.smahal import SelectiveMahalanobisDetector
from mimii_due.evaluation.metrics import hmean
from mimii_due.features.extract import extract
from mimii_due.report.tables import results_markdown
from mimii_due.runs import Run
from mimii_due.synth.generate import generate


def smahal_from_ae(ae_run: Path, run: Path, data: Path) -> None:
    """Selective Mahalanobis runs on the AE run's networks (identical to training smahal, which
    trains the same AE with the same seed, but without doing it twice)."""
    source, keeper = Run(ae_run), Run(run)
    meta = source.meta()
    keeper.start(meta | {"detector": "smahal", "from": str(ae_run)}, resume=True)
    table = index(data)
    for machine in meta["machines"]:
        if keeper.has_model(machine):
            continue
        ae = source.load_model(machine)
        feats, clips = pipeline.features(
            table[(table.split == "train") & (table.machine == machine)], cache=source.cache
        )
        keeper.save_model(machine, SelectiveMahalanobisDetector.from_autoencoder(ae, feats, clips))


def supervised_reference(data: Path, cache: Path) -> dict[str, list[float]]:
    """Not a detector: how separable the anomalies are at all with log-mel statistics. Per section
    and domain, a logistic regression on the test clips' clip-mean and clip-deviation log-mel,
    trained with their labels, scored by 5-fold cross-validation. Returns AUC and pAUC lists per
    domain."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    table = index(data)
    test = table[table.split == "test"]
    out = {f"{d} {m}": [] for d in ("source", "target") for m in ("AUC", "pAUC")}
    for (_, _, domain), clips in test.groupby(["machine", "section", "domain"]):
        feats, clips = extract(clips, cache=cache)
        x = np.concatenate([feats.means(), [feats.clip(i).std(0) for i in range(len(feats))]], axis=1)
        y = (clips.label == "anomaly").to_numpy()
        model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=10, max_iter=5000))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", FutureWarning)  # scikit-learn 1.8 announcing changed attributes
            p = cross_val_predict(model, x, y, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                                  method="predict_proba")[:, 1]  # fmt: skip
        out[f"{domain} AUC"].append(roc_auc_score(y, p))
        out[f"{domain} pAUC"].append(roc_auc_score(y, p, max_fpr=0.1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-test", type=int, default=50, help="test clips per label, domain and section")
    ap.add_argument("--out", default="/tmp/mimii_due_compare")
    ap.add_argument("--detectors", default="ensemble,twfr_gmm,embedding,ae,smahal,mobilenetv2")
    ap.add_argument("--no-reference", dest="reference", action="store_false",
                    help="leave out the supervised reference row (how separable the anomalies are at all)")  # fmt: skip
    a = ap.parse_args()
    out = Path(a.out)
    data = generate(out / "data", sections=[0, 1, 2], scale=a.scale, seed=a.seed, min_test=a.min_test, workers=2)
    results, lines = {}, []
    for det in a.detectors.split(","):
        t0 = time.perf_counter()
        run = out / det
        if det == "smahal" and (out / "ae" / "run.json").exists():
            smahal_from_ae(out / "ae", run, data)  # the same network as "ae": no second training
        else:
            pipeline.train(run, data, detector=det, resume=True, cache=out / "features")
        pipeline.test(run, data)
        res, summary = pipeline.evaluate(run)
        results[det] = res
        row = (
            f"| {det} | {summary['official_score']:.3f} | "
            + " | ".join(f"{hmean(res[res.domain == d][m]):.3f}" for d in ("source", "target") for m in ("AUC", "pAUC"))
            + f" | {time.perf_counter() - t0:.0f} |"
        )
        lines.append(row)
        print(row, flush=True)
    if a.reference:
        ref = supervised_reference(data, out / "features")
        values = [v for vs in ref.values() for v in vs]
        row = f"| supervised reference (uses test labels; not a detector) | {hmean(values):.3f} | " + " | ".join(
            f"{hmean(v):.3f}" for v in ref.values()
        )
        lines.append(row + " | |")
        print(row, flush=True)
    head = (
        "| detector | official score | source AUC (hmean) | source pAUC | target AUC (hmean) | target pAUC "
        "| wall s (this run) |\n|---|---|---|---|---|---|---|"
    )
    text = (
        f"scale {a.scale}, seed {a.seed}, {a.min_test}+ test clips per label and domain, sections 00-02 of "
        f"all five machine types\n\n{head}\n" + "\n".join(lines) + "\n\n" + results_markdown(results) + "\n"
    )
    (out / "comparison.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

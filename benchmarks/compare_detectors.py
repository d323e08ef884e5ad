"""Every detector on generated data of several seeds: mean and spread of the official score.

For each seed, generates a dataset (``--layout dcase2023``: the 2022-2025 layout, one section per
machine type, scored with the 2023 metric; ``dcase2021``: MIMII DUE sections 00-02, the paper's
metric), then trains (paper settings for the baselines), tests and evaluates each detector and
prints one row per seed and detector, then each detector's mean and standard deviation over seeds.
Runs resume: a rerun skips what is done. Results also go to ``OUT/comparison.md``. A row whose
models an earlier run trained says so in its time column ("saved models", and when they were
saved): the current code scores them, but a change to how a detector *fits* does not reach them,
so after such a change use a new ``--out`` (or ``rescore_ensemble.py``, which refits TWFR-GMM).

    python benchmarks/compare_detectors.py [--seeds 3,4,5] [--scale 0.2] [--layout dcase2023]
        [--detectors ensemble,twfr_gmm,embedding,gaussian,ae] [--out /tmp/mimii_due_compare]

A detector may carry settings, read as ``--set`` reads them: ``twfr_gmm:domains=pooled``, ``ae:seed=1``
(its own row and run folder).

Paired differences (``--against``, default the first detector): every detector runs on the same
generated data of a seed, so the seed-to-seed variation of the data (one product per machine type
and seed, 50 + 50 test clips per domain) moves all detectors together. The spread of one
detector's score over seeds mixes that variation with the method's; the difference to another
detector on the same seeds cancels the shared part. The table gives its mean, its spread and on
how many seeds it is above zero: that, not two overlapping means, says whether one method beats
another.

The test clips' share of the spread (``--bootstrap N``, default 100 draws; 0: off): each row also
gives the standard deviation of its official score over bootstrap test sets drawn from its own
(``evaluation.metrics.bootstrap_sd``), the spread that 50 + 50 test clips per domain cause by
themselves; the summary gives its mean beside each detector's spread over seeds. A spread over
seeds near it is the test clips' luck; the rest is the data's seed and the method's own noise.
The paired table gives the same for each difference to ``--against``, both scores computed on the
same bootstrap draws: the luck two detectors do not share.

The supervised reference row (``--reference``) is not a detector: a logistic regression on the
test clips' own labels (clip mean and deviation of the log-mel, 5-fold cross-validated), i.e. how
separable the anomalies are at all with clip statistics.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from mimii_due import pipeline
from mimii_due.data.index import index
from mimii_due.detectors import parse_spec, spec_folder, split_specs
from mimii_due.detectors.smahal import SelectiveMahalanobisDetector
from mimii_due.evaluation.metrics import bootstrap_sd, hmean
from mimii_due.features.extract import extract
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
        train = table[(table.split == "train") & (table.machine == machine)]
        feats, clips = pipeline.features(train, cache=source.cache)
        keeper.save_model(machine, SelectiveMahalanobisDetector.from_autoencoder(ae, feats, clips))


def reference_predictions(data: Path, cache: Path):
    """The labelled reference's cross-validated probability of "anomaly" for every test clip
    (column ``reference``), fitted per (machine, section, domain); not a detector."""
    import warnings

    import pandas as pd
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    table = index(data)
    parts = []
    for _, clips in table[table.split == "test"].groupby(["machine", "section", "domain"]):
        feats, clips = extract(clips, cache=cache)
        x = np.concatenate([feats.means(), [feats.clip(i).std(0) for i in range(len(feats))]], axis=1)
        y = (clips.label == "anomaly").to_numpy()
        model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=10, max_iter=5000))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", FutureWarning)
            p = cross_val_predict(model, x, y, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                                  method="predict_proba")[:, 1]  # fmt: skip
        parts.append(clips.assign(reference=p))
    return pd.concat(parts, ignore_index=True)


def label_auc(clips, column: str = "reference") -> float:
    """The AUC of ``column`` (the reference's predictions, or a detector's scores) for the clips' labels."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(clips.label == "anomaly", clips[column]))


def supervised_reference(data: Path, cache: Path) -> dict[tuple[str, int, str], float]:
    """AUCs of the labelled reference per (machine, section, domain) (not a detector)."""
    pred = reference_predictions(data, cache)
    return {key: label_auc(g) for key, g in pred.groupby(["machine", "section", "domain"])}


def paired(rows: dict[str, list[float]], against: str, luck: dict[str, list[float]] | None = None) -> list[str]:
    """Markdown lines: each detector's official score minus ``against``'s on the same seeds (mean,
    spread, seeds above zero; ``luck``: the mean paired bootstrap sd of the difference). Population
    standard deviations, as in the summary table."""
    base = np.asarray(rows[against])
    out = [f"| detector - {against} (same seeds) | mean difference | spread (std) | seeds above "
           "| test clips alone (paired bootstrap sd) |", "|---|---|---|---|---|"]  # fmt: skip
    for det, v in rows.items():
        if det in (against, "reference"):
            continue
        d = np.asarray(v) - base
        sd = f"{np.mean(luck[det]):.3f}" if luck and det in luck else "-"
        out.append(f"| {det} | {d.mean():+.3f} | {d.std():.3f} | {int((d > 0).sum())} of {len(d)} | {sd} |")
    return out


def saved_models(run: Run, machines: list[str]) -> str:
    """What the time column says of models an earlier run trained: nothing where none were saved,
    else "saved models" (or "some saved models") and when the newest was saved."""
    saved = [run.model_dir(m) / "detector.json" for m in machines if run.has_model(m)]
    if not saved:
        return ""
    when = datetime.fromtimestamp(max(f.stat().st_mtime for f in saved), tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f" ({'saved' if len(saved) == len(machines) else 'some saved'} models, {when})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="3,4,5", help="check seeds (README: seeds 0-2 were used for choices)")
    ap.add_argument("--scale", type=float, default=0.2)
    ap.add_argument("--layout", default="dcase2023", choices=["dcase2023", "dcase2021"])
    ap.add_argument("--min-test", type=int, default=50, help="test clips per label, domain and section")
    ap.add_argument("--out", default="/tmp/mimii_due_compare")
    ap.add_argument("--detectors", default="ensemble,twfr_gmm,embedding,gaussian,ae")
    ap.add_argument("--machines", default=None, help="comma-separated machine types (default: all five)")
    ap.add_argument("--reference", action="store_true", help="add the supervised reference row")
    ap.add_argument("--bootstrap", type=int, default=100, help="bootstrap draws of the test clips per run (0: none)")
    ap.add_argument("--against", default=None, help="detector the others are compared with, seed by seed "
                    "(default: the first of --detectors)")  # fmt: skip
    a = ap.parse_args()
    if a.against and a.against not in split_specs(a.detectors):
        ap.error(f"--against {a.against!r} is not one of --detectors {a.detectors!r}")
    out = Path(a.out)
    machines = a.machines.split(",") if a.machines else ["fan", "gearbox", "pump", "slider", "valve"]
    sections = [0] if a.layout == "dcase2023" else [0, 1, 2]
    rows: dict[str, list[float]] = {}
    luck: dict[str, list[float]] = {}  # bootstrap sd of each run's official score
    paired_luck: dict[str, list[float]] = {}  # ... of its difference to ``against``'s on the same draws
    against = a.against or split_specs(a.detectors)[0]
    lines = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        base = out / f"{a.layout}_scale{a.scale}_seed{seed}"
        data = generate(base / "data", machines=machines, sections=sections, scale=a.scale, seed=seed,
                        min_test=a.min_test, workers=2, layout=a.layout)  # fmt: skip
        tables = {}
        for det in split_specs(a.detectors):
            t0 = time.perf_counter()
            run = base / spec_folder(det)
            saved = saved_models(Run(run), machines)
            name, params = parse_spec(det)
            if det == "smahal" and (base / "ae" / "run.json").exists():
                smahal_from_ae(base / "ae", run, data)  # the same network as "ae": no second training
            else:
                pipeline.train(run, data, detector=name, params=params, resume=True, cache=base / "features")
            pipeline.test(run, data)
            res, summary = pipeline.evaluate(run)
            rows.setdefault(det, []).append(summary["official_score"])
            if a.bootstrap:
                tables[det] = Run(run).read_scores().sort_values("path", ignore_index=True)
                luck.setdefault(det, []).append(bootstrap_sd(tables[det], protocol=summary["protocol"], n=a.bootstrap))
            auc = {d: hmean(res[res.domain == d]["AUC"]) for d in ("source", "target")}
            sd = f"{luck[det][-1]:.3f}" if a.bootstrap else "-"
            line = (f"| {seed} | {det} | {summary['official_score']:.3f} | {sd} | {auc['source']:.3f} "
                    f"| {auc['target']:.3f} | {hmean(res.drop_duplicates(['machine', 'section'])['pAUC']):.3f} "
                    f"| {time.perf_counter() - t0:.0f}{saved} |")  # fmt: skip
            lines.append(line)
            print(line, flush=True)
        for det in tables:
            if det != against and against in tables:
                paired_luck.setdefault(det, []).append(
                    bootstrap_sd(tables[det], versus=tables[against], protocol=summary["protocol"], n=a.bootstrap))
        if a.reference:
            ref = list(supervised_reference(data, base / "features").values())
            rows.setdefault("reference", []).append(float(np.median(ref)))
            print(f"| {seed} | labelled reference (median AUC over sections/domains) | {np.median(ref):.3f} |")
    head = ("| seed | detector | official score | test-set sd (bootstrap) | AUC source (hmean) | AUC target | pAUC "
            "| wall s |\n" + "|---" * 8 + "|")  # fmt: skip
    summary = ["| detector | official score, mean | spread (std over seeds) | test clips alone (mean bootstrap sd) "
               "| seeds |", "|---|---|---|---|---|"]  # fmt: skip
    for det, v in rows.items():
        sd = f"{np.mean(luck[det]):.3f}" if det in luck else "-"
        summary.append(f"| {det} | {np.mean(v):.3f} | {np.std(v):.3f} | {sd} | {len(v)} |")
    text = (
        f"layout {a.layout}, scale {a.scale}, seeds {a.seeds}\n\n{head}\n"
        + "\n".join(lines)
        + "\n\n"
        + "\n".join(summary)
        + "\n\n"
        + "\n".join(paired(rows, against, paired_luck))
        + "\n"
    )
    (out / "comparison.md").parent.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

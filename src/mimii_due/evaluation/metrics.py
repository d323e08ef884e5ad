"""DCASE Task 2 metrics of each year: AUC, pAUC (p = 0.1), precision/recall/F1, means, official score.

pAUC is scikit-learn's ``roc_auc_score(max_fpr=0.1)``, the McClish-standardised partial AUC that
the official evaluators report. The protocols (``PROTOCOLS``), as the organisers' evaluators compute them:

- ``dcase2020``: per machine ID (our ``section``), AUC and pAUC over all its test clips;
- ``dcase2021`` (the paper's): per section and domain, AUC and pAUC over that domain's clips;
- ``dcase2022`` (2022-2026): per section, the AUC of each domain over that domain's normal clips and
  *all* anomalous clips of the section, and one pAUC over every clip of the section; precision,
  recall and F1 per domain over that domain's clips.

Results are one row per machine, section and domain (for ``dcase2022`` each domain's row carries
the section's pAUC; for ``dcase2020`` the domain is ``source``), with a ``protocol`` column. The
official score is the harmonic mean of every AUC and pAUC that the year's evaluator counts
(``dcase2022``: each section's source AUC, target AUC and pAUC, the pAUC once).

Each row also counts the alarms: ``false_alarms`` (normal clips decided anomalous, of
``n_normal``) and ``detected`` (anomalous clips decided anomalous, of ``n_anomaly``). Where a
group lacks normal or anomalous clips (an engineer's test folder of new normal recordings, before
any anomaly was recorded), its AUC and pAUC are undefined (NaN), the row says why (``undefined``),
the alarms are still counted, and the official score is undefined (NaN): a harmonic mean over
the sections that happen to have both would not be the year's score.

:func:`bootstrap_sd` says how much of an official score is the luck of the test clips: its
standard deviation over test sets drawn with replacement from the one at hand.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.stats
from sklearn.metrics import roc_auc_score

from mimii_due.config import MAX_FPR
from mimii_due.errors import MimiiDueError
from mimii_due.progress import Progress

METRICS = ("AUC", "pAUC", "precision", "recall", "F1")
SCORE_COLUMNS = ("machine", "section", "domain", "label", "score", "decision")  # what evaluate takes, per test clip
BOTH = "source, target"  # dcase2022: the one pAUC of a section, over both domains (its evaluators' label)
PROTOCOLS = ("dcase2020", "dcase2021", "dcase2022")


def protocol_of(year: int) -> str:
    """The evaluation protocol of a challenge year (2022 to 2025 share one)."""
    return "dcase2020" if year <= 2020 else "dcase2021" if year == 2021 else "dcase2022"


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; ``labels`` 1 = anomalous."""
    return float(roc_auc_score(labels, scores))


def pauc(labels: np.ndarray, scores: np.ndarray, *, max_fpr: float = MAX_FPR) -> float:
    """Standardised partial AUC over FPR in [0, max_fpr] (McClish), as scikit-learn and DCASE."""
    return float(roc_auc_score(labels, scores, max_fpr=max_fpr))


def prf(labels: np.ndarray, decisions: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall and F1 of binary decisions (0 where undefined)."""
    labels, decisions = np.asarray(labels, bool), np.asarray(decisions, bool)
    tp = float(np.sum(labels & decisions))
    p = tp / max(float(np.sum(decisions)), 1e-12) if decisions.any() else 0.0
    r = tp / max(float(np.sum(labels)), 1e-12) if labels.any() else 0.0
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return p, r, f


def scored_as(results: pd.DataFrame, protocol: str) -> bool:
    """Are ``results`` (``evaluate``'s rows) scored under ``protocol``?"""
    return "protocol" in results and bool((results["protocol"] == protocol).any())


def section_paucs(results: pd.DataFrame) -> pd.Series:
    """The one pAUC of each section of ``dcase2022`` results (``evaluate``'s rows), indexed by
    ``(machine, section)``: it is on each of the section's domain rows, so whichever domain the
    section was tested on."""
    return results.drop_duplicates(["machine", "section"]).set_index(["machine", "section"])["pAUC"]


def hmean(values) -> float:
    v = np.asarray(list(values), dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan")
    return float(scipy.stats.hmean(np.maximum(v, np.finfo(float).eps)))


def _missing(y: np.ndarray) -> str:
    """Why an AUC over labels ``y`` is undefined ("" where it is defined)."""
    if not (y == 0).any():
        return "no normal test clips"
    return "" if (y == 1).any() else "no anomalous test clips"


def _areas(y: np.ndarray, s: np.ndarray, max_fpr: float) -> tuple[float, float, str]:
    """AUC, pAUC and "" where ``y`` holds both labels; NaN, NaN and the reason where not."""
    why = _missing(y)
    if why:
        return float("nan"), float("nan"), why
    return auc(y, s), pauc(y, s, max_fpr=max_fpr), ""


def evaluate(scores: pd.DataFrame, *, protocol: str = "dcase2021", max_fpr: float = MAX_FPR) -> pd.DataFrame:
    """Metrics per machine, section and domain under ``protocol``.

    ``scores`` has one row per test clip with columns machine, section, domain, label
    ("normal"/"anomaly"), score and decision (bool).
    """
    if protocol not in PROTOCOLS:
        raise MimiiDueError(f"unknown evaluation protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns and not (c == "domain" and protocol == "dcase2020")]
    if missing:
        raise MimiiDueError(f"the scores lack column(s) {', '.join(missing)}: evaluate takes one row per test clip "
                            f"with {', '.join(SCORE_COLUMNS)}")  # fmt: skip
    bad = ~np.isfinite(pd.to_numeric(scores["score"], errors="coerce").to_numpy(np.float64))
    if bad.any():  # an AUC of them is no AUC (scikit-learn's "Input contains NaN" named no clip)
        names = scores["filename"] if "filename" in scores else scores.index.astype(str)
        raise MimiiDueError(f"{int(bad.sum())} of {len(scores)} clips have no finite score (e.g. "
                            f"{', '.join(map(str, names[bad][:3]))}): score every clip before evaluating")  # fmt: skip
    rows = []
    for (machine, section), sec in scores.groupby(["machine", "section"], sort=True):
        y_all = (sec["label"] == "anomaly").to_numpy().astype(int)
        s_all, d_all = sec["score"].to_numpy(), sec["decision"].to_numpy().astype(bool)
        row = {"machine": machine, "section": int(section), "protocol": protocol}
        if protocol == "dcase2020":
            a, pa, why = _areas(y_all, s_all, max_fpr)
            rows.append(row | {"domain": "source"} | _values(a, pa, y_all, d_all, why))
            continue
        if protocol == "dcase2022":
            section_pauc = _areas(y_all, s_all, max_fpr)[1]
        for domain in ("source", "target"):
            in_domain = (sec["domain"] == domain).to_numpy()
            if not in_domain.any():
                continue
            y = y_all[in_domain]
            if protocol == "dcase2021":
                a, pa, why = _areas(y, s_all[in_domain], max_fpr)
            else:  # this domain's normal clips against every anomalous clip of the section
                keep = in_domain | (y_all == 1)
                a, _, why = _areas(y_all[keep], s_all[keep], max_fpr)
                pa = section_pauc
                why = why or ("" if np.isfinite(pa) else _missing(y_all))
            rows.append(row | {"domain": domain} | _values(a, pa, y, d_all[in_domain], why))
    columns = ["machine", "section", "domain", *METRICS, "n_normal", "n_anomaly", "false_alarms", "detected",
               "undefined", "protocol"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def _values(a: float, pa: float, y: np.ndarray, decisions: np.ndarray, why: str) -> dict:
    """One row's metrics: the areas, precision, recall and F1 of the decisions, the alarm counts."""
    p, r, f = prf(y, decisions)
    return {"AUC": a, "pAUC": pa, "precision": p, "recall": r, "F1": f, "n_normal": int((y == 0).sum()),
            "n_anomaly": int(y.sum()), "false_alarms": int((decisions & (y == 0)).sum()),
            "detected": int((decisions & (y == 1)).sum()), "undefined": why}  # fmt: skip


def undefined(results: pd.DataFrame) -> list[str]:
    """Why the official score of ``results`` is undefined: one line per row whose AUC or pAUC is
    (empty where every area is defined)."""
    if "undefined" not in results:
        return []
    rows = results[results["undefined"].fillna("").astype(str) != ""]
    return [f"{r.machine} section {int(r.section):02d} {r.domain}: {r.undefined}" for r in rows.itertuples()]


def results_frame(records: list[dict]) -> pd.DataFrame:
    """Results read back from ``result.json`` (undefined areas are written as null): the metric
    columns as floats again."""
    results = pd.DataFrame(records)
    for m in METRICS:
        if m in results:
            results[m] = pd.to_numeric(results[m], errors="coerce").astype(float)
    return results


def official_score(results: pd.DataFrame) -> float:
    """The harmonic mean of every AUC and pAUC the results' protocol counts."""
    protocol = results["protocol"].iloc[0] if "protocol" in results and len(results) else "dcase2021"
    paucs = results["pAUC"]
    if protocol == "dcase2022":  # one pAUC per section, not one per domain row
        paucs = section_paucs(results)
    values = np.concatenate([results["AUC"].to_numpy(np.float64), paucs.to_numpy(np.float64)])
    if not np.isfinite(values).all():  # a section without both labels (:func:`undefined` says which)
        return float("nan")
    return hmean(values)


def summarize(results: pd.DataFrame) -> dict:
    """Arithmetic and harmonic means per machine, per domain and overall, and the official score.

    Returns ``{"machines": {machine: {"amean": {...}, "hmean": {...}}}, "domains": {...},
    "overall": {...}, "official_score": float (NaN where undefined), "machine_scores": {machine:
    the official score of its rows alone}, "undefined": [why, ...],
    "alarms": {"n_normal", "false_alarms", "n_anomaly", "detected"}, "alarms_by_domain": {domain: the
    same counts of its clips}, "protocol": str}``. The alarms by domain matter under domain shift:
    a threshold that rests on the source clips can sound far more often on a new condition's
    normal clips (``pipeline._check_domain_support``).
    """

    def means(df):
        out = {"amean": {m: float(df[m].mean()) for m in METRICS}, "hmean": {m: hmean(df[m]) for m in METRICS}}
        if scored_as(df, "dcase2022"):  # a section's pAUC is on each domain row
            paucs = section_paucs(df)
            out["amean"]["pAUC"], out["hmean"]["pAUC"] = float(paucs.mean()), hmean(paucs)
        return out

    counts = ("n_normal", "false_alarms", "n_anomaly", "detected")
    return {
        "machines": {m: means(g) for m, g in results.groupby("machine")},
        "domains": {d: means(g) for d, g in results.groupby("domain")},
        "overall": means(results),
        "official_score": official_score(results),
        "machine_scores": {m: official_score(g) for m, g in results.groupby("machine")},  # as papers tabulate
        "undefined": undefined(results),
        "alarms": {c: int(results[c].sum()) for c in counts if c in results},
        "alarms_by_domain": {d: {c: int(g[c].sum()) for c in counts if c in g} for d, g in results.groupby("domain")},
        "protocol": str(results["protocol"].iloc[0]) if "protocol" in results and len(results) else "dcase2021",
    }


def bootstrap_sd(scores: pd.DataFrame, *, versus: pd.DataFrame | None = None, protocol: str = "dcase2021",
                 n: int = 100, seed: int = 0, max_fpr: float = MAX_FPR,
                 progress: Progress | None = None) -> float:  # fmt: skip
    """Standard deviation of the official score over ``n`` bootstrap test sets: each draws, with
    replacement, as many clips as there are from every machine, section, domain and label group of
    ``scores`` (so every AUC keeps its normal and anomalous clips). With the DCASE 2022-2025 test
    sets (50 + 50 clips per domain and section) it is 0.013 to 0.017 for the detectors measured
    on generated data (README): differences between methods below that are the test clips' luck.

    ``versus`` (another detector's scores of the same clips, rows in the same order): the standard
    deviation of the *difference* of the two official scores, both computed on the same draws.
    ``progress`` hears of each draw (a DCASE 2022 development set, 4,200 test clips, takes about
    0.2 s a draw on a 2-core CPU).
    """
    if n < 2:
        raise MimiiDueError(f"bootstrap_sd needs at least 2 draws, got {n}")
    keys = ["machine", "section", "domain", "label"]
    same = versus is None or versus[keys].astype(str).reset_index(drop=True).equals(
        scores[keys].astype(str).reset_index(drop=True))  # as text: the two tables' dtypes may differ
    if not same:
        raise MimiiDueError("bootstrap_sd: the two score tables do not hold the same clips in the same order")
    rng = np.random.default_rng(seed)
    groups = list(scores.groupby(keys).indices.values())  # row positions

    def official(table, rows):
        return official_score(evaluate(table.iloc[rows].reset_index(drop=True), protocol=protocol, max_fpr=max_fpr))

    draws = []
    for _ in range(n):
        rows = np.concatenate([rng.choice(g, len(g)) for g in groups])
        draws.append(official(scores, rows) - (official(versus, rows) if versus is not None else 0.0))
        if progress:
            progress(len(draws), n, "")
    return float(np.std(draws))

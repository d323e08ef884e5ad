"""DCASE Task 2 metrics: AUC, pAUC (p = 0.1), precision/recall/F1 at the threshold, and means.

pAUC is scikit-learn's ``roc_auc_score(max_fpr=0.1)``, the McClish-standardised partial AUC that
the official evaluator reports. The official score of DCASE 2021 is the harmonic mean of every
section's and domain's AUC and pAUC over all machine types.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.stats
from sklearn.metrics import roc_auc_score

METRICS = ("AUC", "pAUC", "precision", "recall", "F1")


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; ``labels`` 1 = anomalous."""
    return float(roc_auc_score(labels, scores))


def pauc(labels: np.ndarray, scores: np.ndarray, *, max_fpr: float = 0.1) -> float:
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


def hmean(values) -> float:
    v = np.asarray(list(values), dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan")
    return float(scipy.stats.hmean(np.maximum(v, np.finfo(float).eps)))


def evaluate(scores: pd.DataFrame, *, max_fpr: float = 0.1) -> pd.DataFrame:
    """Metrics per machine, section and domain.

    ``scores`` has one row per test clip with columns machine, section, domain, label
    ("normal"/"anomaly"), score and decision (bool). Returns one row per machine/section/domain
    with :data:`METRICS` and the clip counts.
    """
    rows = []
    for (machine, section, domain), g in scores.groupby(["machine", "section", "domain"], sort=True):
        y = (g["label"] == "anomaly").to_numpy().astype(int)
        if y.min() == y.max():
            raise ValueError(f"{machine} section {section:02d} {domain}: needs normal and anomalous clips")
        s = g["score"].to_numpy()
        p, r, f = prf(y, g["decision"].to_numpy())
        rows.append({"machine": machine, "section": int(section), "domain": domain, "AUC": auc(y, s),
                     "pAUC": pauc(y, s, max_fpr=max_fpr), "precision": p, "recall": r, "F1": f,
                     "n_normal": int((y == 0).sum()), "n_anomaly": int(y.sum())})  # fmt: skip
    return pd.DataFrame(rows)


def summarize(results: pd.DataFrame) -> dict:
    """Arithmetic and harmonic means per machine, per domain and overall, and the official score.

    Returns ``{"machines": {machine: {"amean": {...}, "hmean": {...}}}, "domains": {...},
    "overall": {...}, "official_score": float}``.
    """

    def means(df):
        return {"amean": {m: float(df[m].mean()) for m in METRICS}, "hmean": {m: hmean(df[m]) for m in METRICS}}

    out = {
        "machines": {m: means(g) for m, g in results.groupby("machine")},
        "domains": {d: means(g) for d, g in results.groupby("domain")},
        "overall": means(results),
    }
    out["official_score"] = hmean(np.concatenate([results["AUC"].to_numpy(), results["pAUC"].to_numpy()]))
    return out

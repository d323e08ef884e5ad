"""The official DCASE Task 2 files: score and decision CSVs, ``result.csv``, ground truth.

- ``anomaly_score_<machine>_section_<XX>_<domain>_test.csv``: ``filename,score`` rows, no header;
- ``decision_result_<machine>_section_<XX>_<domain>_test.csv``: ``filename,0|1`` rows, no header;
- ``result.csv``: one block per machine type (section, domain, AUC, pAUC, precision, recall,
  F1 score, then the arithmetic and harmonic means), then the means over everything and the
  official score;
- ground truth: ``filename,label`` rows (1 = anomalous), one file per machine, section and domain
  named ``ground_truth_<machine>_section_<XX>_<domain>_test.csv``, as the official evaluator's.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pandas as pd

from mimii_due.errors import MimiiDueError
from mimii_due.evaluation.metrics import METRICS

_GT = re.compile(r"ground_truth_(?P<machine>.+)_section_(?P<section>\d{2})_(?P<domain>source|target)_test\.csv$")


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _rows_csv(rows) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def write_score_files(scores: pd.DataFrame, directory: str | Path) -> list[Path]:
    """Write the per machine/section/domain score and decision CSVs; return their paths."""
    directory = Path(directory)
    written = []
    for (machine, section, domain), g in scores.groupby(["machine", "section", "domain"], sort=True):
        stem = f"{machine}_section_{int(section):02d}_{domain}_test.csv"
        atomic_write_text(
            directory / f"anomaly_score_{stem}",
            _rows_csv(zip(g["filename"], (f"{s:.8g}" for s in g["score"]), strict=True)),
        )
        atomic_write_text(
            directory / f"decision_result_{stem}", _rows_csv(zip(g["filename"], g["decision"].astype(int), strict=True))
        )
        written += [directory / f"anomaly_score_{stem}", directory / f"decision_result_{stem}"]
    return written


def read_ground_truth(path: str | Path) -> pd.DataFrame:
    """Ground truth as a table (machine, section, domain, filename, label).

    ``path`` is a folder of official ``ground_truth_*.csv`` files or one such file.
    """
    path = Path(path)
    files = sorted(path.glob("ground_truth_*.csv")) if path.is_dir() else [path]
    if not files:
        raise MimiiDueError("no ground_truth_<machine>_section_<XX>_<domain>_test.csv files found", path)
    rows = []
    for f in files:
        m = _GT.search(f.name)
        if not m:
            raise MimiiDueError(
                "ground-truth file name must be ground_truth_<machine>_section_<XX>_<domain>_test.csv", f
            )
        with open(f, newline="") as fh:
            for i, r in enumerate(csv.reader(fh)):
                if not r:
                    continue
                if len(r) < 2 or r[1].strip() not in ("0", "1"):
                    raise MimiiDueError(f"line {i + 1}: expected 'filename,0|1', got {','.join(r)!r}", f)
                rows.append(
                    {
                        "machine": m["machine"],
                        "section": int(m["section"]),
                        "domain": m["domain"],
                        "filename": r[0].strip(),
                        "label": "anomaly" if r[1].strip() == "1" else "normal",
                    }
                )
    return pd.DataFrame(rows)


def _fmt(v) -> str:
    return f"{v:.6f}" if isinstance(v, float) else str(v)


def write_results(results: pd.DataFrame, summary: dict, directory: str | Path) -> None:
    """``result.csv`` in the official block layout and ``result.json`` with the same numbers."""
    directory = Path(directory)
    header = ["section", "domain", "AUC", "pAUC", "precision", "recall", "F1 score"]
    rows: list[list] = []
    for machine, g in results.groupby("machine", sort=True):
        rows += [[machine], header]
        for r in g.itertuples(index=False):
            rows.append([f"{r.section:02d}", r.domain] + [_fmt(getattr(r, m)) for m in METRICS])
        s = summary["machines"][machine]
        rows.append(["arithmetic mean", ""] + [_fmt(s["amean"][m]) for m in METRICS])
        rows.append(["harmonic mean", ""] + [_fmt(s["hmean"][m]) for m in METRICS])
        rows.append([])
    o = summary["overall"]
    rows.append(["", ""] + header[2:])
    rows.append(
        ["arithmetic mean over all machine types, sections, and domains", ""] + [_fmt(o["amean"][m]) for m in METRICS]
    )
    rows.append(
        ["harmonic mean over all machine types, sections, and domains", ""] + [_fmt(o["hmean"][m]) for m in METRICS]
    )
    rows.append([])
    rows.append(["official score", "", _fmt(summary["official_score"])])
    atomic_write_text(directory / "result.csv", _rows_csv(rows))
    payload = {"results": results.to_dict(orient="records"), **summary}
    atomic_write_text(directory / "result.json", json.dumps(payload, indent=1))

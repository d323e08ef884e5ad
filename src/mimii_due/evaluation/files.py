"""The official DCASE Task 2 files of each year: score and decision CSVs, ``result.csv``, ground truth.

Score and decision files hold ``filename,score`` / ``filename,0|1`` rows, no header, one file per

- ``dcase2020``: machine and ID: ``anomaly_score_<machine>_id_<XX>.csv``;
- ``dcase2021``: machine, section and domain: ``anomaly_score_<machine>_section_<XX>_<domain>_test.csv``;
- ``dcase2022`` (2022-2026): machine and section: ``anomaly_score_<machine>_section_<XX>_test.csv``.

``result.csv`` follows the layout of the year's official evaluator output. Ground truth: the
organisers' ``ground_truth_*.csv`` files (``filename,0|1``, 1 = anomalous), per section and domain
(2021) or per section (2022-2025, with the domains in a ``ground_truth_domain`` folder beside them
and, for evaluation names, the full names in ``ground_truth_attributes``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from mimii_due import atomic
from mimii_due.data.naming import DOMAINS
from mimii_due.errors import MimiiDueError
from mimii_due.evaluation.metrics import BOTH, METRICS, results_frame, section_paucs

_GT = re.compile(
    r"ground_truth_(?P<machine>.+?)_(?:section|id)_(?P<section>\d{2})(?:_(?P<domain>source|target))?(?:_test)?\.csv$"
)


def _rows_csv(rows) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def score_file_groups(scores: pd.DataFrame, protocol: str):
    """``(stem, rows)`` of each official score file: the part after ``anomaly_score_``."""
    if protocol == "dcase2021":
        for (machine, section, domain), g in scores.groupby(["machine", "section", "domain"], sort=True):
            yield f"{machine}_section_{int(section):02d}_{domain}_test.csv", g
    elif protocol == "dcase2020":
        for (machine, section), g in scores.groupby(["machine", "section"], sort=True):
            yield f"{machine}_id_{int(section):02d}.csv", g
    else:
        for (machine, section), g in scores.groupby(["machine", "section"], sort=True):
            yield f"{machine}_section_{int(section):02d}_test.csv", g


def write_score_files(scores: pd.DataFrame, directory: str | Path, *, protocol: str = "dcase2021") -> list[Path]:
    """Write the year's score and decision CSVs into ``directory``; return their paths."""
    directory = Path(directory)
    written = []
    for stem, g in score_file_groups(scores, protocol):
        atomic.write_text(
            directory / f"anomaly_score_{stem}",
            _rows_csv(zip(g["filename"], (f"{s:.8g}" for s in g["score"]), strict=True)),
        )
        atomic.write_text(
            directory / f"decision_result_{stem}", _rows_csv(zip(g["filename"], g["decision"].astype(int), strict=True))
        )
        written += [directory / f"anomaly_score_{stem}", directory / f"decision_result_{stem}"]
    return written


def _csv_rows(f: Path) -> list[list[str]]:
    """The rows of a CSV file (ground truth, scores; UTF-8, with or without the byte-order mark
    that spreadsheet programs write), or a one-line error naming the file."""
    try:
        with open(f, newline="", encoding="utf-8-sig") as fh:
            text = fh.read()
    except OSError as e:
        raise MimiiDueError(f"cannot read file ({e.strerror or e})", f) from e
    except UnicodeDecodeError as e:
        raise MimiiDueError(f"not a CSV text file ({e})", f) from e
    if "\x00" in text:
        raise MimiiDueError("not a CSV text file (it holds NUL bytes)", f)
    return list(csv.reader(io.StringIO(text, newline="")))


def _read_pairs(f: Path, values: tuple[str, ...] = ("0", "1")) -> list[tuple[str, str]]:
    out = []
    for i, r in enumerate(_csv_rows(f)):
        if not r:
            continue
        if len(r) < 2 or r[1].strip() not in values:
            raise MimiiDueError(f"line {i + 1}: expected 'filename,{'|'.join(values)}', got {','.join(r)!r}", f)
        out.append((r[0].strip(), r[1].strip()))
    return out


# The submission names of every year; the 2023-2025 official baselines' own names too
# (``anomaly_score_DCASE2023T2fan_section_00_test_seed13711_id(0_)_Eval.csv``), as their evaluators read them.
_SCORES = re.compile(
    r"anomaly_score_(?:DCASE20\d\dT2)?(?P<machine>.+?)_(?:(?P<id>id)_(?P<n>\d{2})|section_(?P<section>\d{2})"
    r"(?:_(?P<domain>source|target))?_test)(?:_seed\d+.*)?\.csv"
)


def score_files(directory: str | Path) -> list[Path]:
    """The official score files (``anomaly_score_*.csv``) in ``directory``, sorted; none where it
    is no folder."""
    directory = Path(directory)
    return sorted(directory.glob("anomaly_score_*.csv")) if directory.is_dir() else []


def read_score_files(directory: str | Path) -> tuple[pd.DataFrame, str]:
    """The official score and decision files in ``directory`` (any system's) as one table (machine,
    section, filename, domain, label, score, decision: the domain and label where the clip's name or
    the file's name says them, else None) and the protocol their names follow: ``dcase2020``
    (``_id_XX.csv``), ``dcase2021`` (``_section_XX_<domain>_test.csv``) or ``dcase2022``."""
    from mimii_due.data.naming import parse_name

    directory = Path(directory)
    files = score_files(directory)
    if not files:
        raise MimiiDueError("neither a run folder nor a folder of official score files "
                            "(anomaly_score_<machine>_section_<XX>[_<domain>]_test.csv)", directory)  # fmt: skip
    rows, protocols, seen = [], {}, {}
    for f in files:
        m = _SCORES.fullmatch(f.name)
        if not m:
            raise MimiiDueError("a score file's name must be anomaly_score_<machine>_section_<XX>[_<domain>]_test.csv "
                                "(or _id_<XX>.csv, 2020)", f)  # fmt: skip
        key = (m["machine"], m["section"] or m["n"], m["domain"])
        if key in seen:  # two systems' or two seeds' files: whose scores count?
            raise MimiiDueError(f"{seen[key]} and {f.name} score the same clips; keep one of them here", directory)
        seen[key] = f.name
        protocols[f.name] = "dcase2020" if m["id"] else "dcase2021" if m["domain"] else "dcase2022"
        decision_file = f.with_name("decision_result_" + f.name.removeprefix("anomaly_score_"))
        if not decision_file.exists():
            raise MimiiDueError(f"no {decision_file.name} beside it (the official files come in pairs)", f)
        decisions = {Path(n).name: v for n, v in _read_pairs(decision_file)}  # a system may write paths
        for i, r in enumerate(_csv_rows(f)):
            if not r:
                continue
            try:
                score = float(r[1])
            except (IndexError, ValueError):
                score = float("nan")
            if len(r) < 2 or not np.isfinite(score):
                raise MimiiDueError(f"line {i + 1}: expected 'filename,score' with a finite score, got {','.join(r)!r}",
                                    f)  # fmt: skip
            name = Path(r[0].strip()).name  # the official files name clips without their folder
            if name not in decisions:
                raise MimiiDueError(f"{name} has a score but no decision in {decision_file.name}", f)
            try:
                clip = parse_name(name)
            except MimiiDueError:  # a name of no challenge: the ground truth may still know it
                clip = None
            rows.append({"machine": m["machine"], "section": int(m["section"] or m["n"]), "filename": name,
                         "domain": m["domain"] or (clip.domain if clip else None),
                         "label": clip.label if clip else None, "score": score,
                         "decision": decisions[name] == "1"})  # fmt: skip
    if len(set(protocols.values())) > 1:
        example = sorted({p: f for f, p in protocols.items()}.values())  # one file of each naming
        raise MimiiDueError(f"the score files follow the naming of several years: {', '.join(example)}", directory)
    if not rows:
        raise MimiiDueError("the score files list no clips", directory)
    return pd.DataFrame(rows), next(iter(protocols.values()))


def _files_digest(directory: Path) -> str:
    """What a folder's official score and decision files hold, in 16 hex digits."""
    h = hashlib.sha1()
    for f in sorted([*score_files(directory), *directory.glob("decision_result_*.csv")]):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def publish_file_results(directory: str | Path, results: pd.DataFrame, summary: dict, labelled: pd.DataFrame) -> None:
    """The evaluation of a folder of score files, beside them: its labelled clips (``scores.csv``)
    first, then ``result.csv`` and ``result.json``, which records what the score files held."""
    directory = Path(directory)
    atomic.write_text(directory / "scores.csv", labelled.to_csv(index=False))
    write_results(results, summary | {"scores": _files_digest(directory)}, directory)


def read_file_results(directory: str | Path) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """:func:`publish_file_results`' results, summary and labelled clips; refuses results of
    other score files than the folder holds now."""
    directory = Path(directory)
    try:
        payload = json.loads((directory / "result.json").read_text())
        scores = pd.read_csv(directory / "scores.csv", dtype={"label": object, "domain": object, "filename": str})
    except (OSError, ValueError) as e:
        raise MimiiDueError(f"not evaluated ({type(e).__name__}): run `mimii-due evaluate` on it first",
                            directory) from e  # fmt: skip
    if not isinstance(payload, dict) or payload.get("scores") != _files_digest(directory):
        raise MimiiDueError("result.json was computed from other score files; run `mimii-due evaluate` again",
                            directory)  # fmt: skip
    return results_frame(payload["results"]), payload, scores


def read_ground_truth(path: str | Path) -> pd.DataFrame:
    """Ground truth as a table (machine, section, domain, filename, label); ``domain`` is None
    where the files do not say it (2022-2025 evaluation names without a domain folder).

    ``path`` is one ``ground_truth_*.csv`` file, or a folder of them, or the folder of an
    official evaluator (``ground_truth_data/``, ``ground_truth_domain/``, ``ground_truth_attributes/``).
    """
    path = Path(path)
    if not path.exists():
        raise MimiiDueError("no such file or folder of ground truth", path)
    lists = sorted(path.glob("eval_data_list_*.csv")) if path.is_dir() else [path]
    if lists and lists[0].name.startswith("eval_data_list_"):
        return pd.concat([_read_eval_data_list(f) for f in lists], ignore_index=True)
    data_dir = path / "ground_truth_data" if (path / "ground_truth_data").is_dir() else path
    files = sorted(data_dir.glob("ground_truth_*.csv")) if data_dir.is_dir() else [path]
    if not files:
        raise MimiiDueError("no ground_truth_<machine>_section_<XX>[_<domain>]_test.csv files found", path)
    rows = []
    for f in files:
        m = _GT.search(f.name)
        if not m:
            raise MimiiDueError(
                "ground-truth file name must be ground_truth_<machine>_section_<XX>[_<domain>]_test.csv", f
            )
        domains = {}
        dom_file = data_dir.parent / "ground_truth_domain" / f.name
        if m["domain"] is None and dom_file.exists():
            domains = {n: "target" if v == "1" else "source" for n, v in _read_pairs(dom_file)}
        pairs = _read_pairs(f)
        if not pairs:
            raise MimiiDueError("the ground-truth file lists no clips", f)
        for name, value in pairs:
            domain = m["domain"] or domains.get(name)
            label = "anomaly" if value == "1" else "normal"
            rows.append({"machine": m["machine"], "section": int(m["section"]), "domain": domain, "filename": name,
                         "label": label})  # fmt: skip
    return pd.DataFrame(rows, columns=["machine", "section", "domain", "filename", "label"])


def _read_eval_data_list(f: Path) -> pd.DataFrame:
    """The organisers' ``eval_data_list_<year>.csv``: a machine type alone on a line, then
    ``evaluation name,labelled name`` pairs; the labelled name gives the domain and the label."""
    from mimii_due.data.naming import parse_name

    rows, machine = [], None
    for i, r in enumerate(_csv_rows(f)):
        if not r or not r[0].strip():
            continue
        if len(r) == 1:
            machine = r[0].strip()
            continue
        try:
            short, full = parse_name(r[0].strip()), parse_name(r[1].strip())
        except MimiiDueError as e:
            raise MimiiDueError(f"line {i + 1}: {e}", f) from e
        if machine is None or full.label is None or short.section != full.section:
            raise MimiiDueError(f"line {i + 1}: expected a machine type line, then name pairs", f)
        rows.append({"machine": machine, "section": full.section, "domain": full.domain,
                     "filename": r[0].strip(), "label": full.label})  # fmt: skip
    if not rows:
        raise MimiiDueError("no evaluation clips listed (expected a machine type line, then name pairs)", f)
    return pd.DataFrame(rows, columns=["machine", "section", "domain", "filename", "label"])


def _fmt(v) -> str:
    return f"{v:.6f}" if isinstance(v, float) else str(v)


def write_results(results: pd.DataFrame, summary: dict, directory: str | Path) -> None:
    """``result.csv`` in the year's official layout and ``result.json`` with the same numbers."""
    protocol = summary.get("protocol", "dcase2021")
    rows = _result_rows_2022(results, summary) if protocol == "dcase2022" else _result_rows(results, summary, protocol)
    atomic.write_text(Path(directory) / "result.csv", _rows_csv(rows))
    payload = {"results": results.to_dict(orient="records"), **summary}
    atomic.write_text(Path(directory) / "result.json", json.dumps(_no_nan(payload), indent=1))


def _no_nan(value):
    """``value`` with every NaN (an undefined AUC or score) as None: null in JSON, which every
    reader takes (Python's ``NaN`` is not JSON)."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return None if isinstance(value, float) and value != value else value


def _result_rows(results: pd.DataFrame, summary: dict, protocol: str) -> list[list]:
    """The 2021 evaluator's layout (a row per section and domain), or the 2020 one's (a row per
    machine ID, no domain column: 2020 has no domains); each with precision, recall and F1 beside
    AUC and pAUC, then the means and the official score."""
    per_id = protocol == "dcase2020"
    header = ["id", "AUC", "pAUC", "precision", "recall", "F1 score"] if per_id else \
        ["section", "domain", "AUC", "pAUC", "precision", "recall", "F1 score"]  # fmt: skip
    blank = [] if per_id else [""]  # the domain column's place in the rows without one
    rows: list[list] = []
    for machine, g in results.groupby("machine", sort=True):
        rows += [[machine], header]
        for r in g.itertuples(index=False):
            rows.append([f"{r.section:02d}"] + ([] if per_id else [r.domain]) + [_fmt(getattr(r, m)) for m in METRICS])
        s = summary["machines"][machine]
        rows.append(["arithmetic mean", *blank] + [_fmt(s["amean"][m]) for m in METRICS])
        rows.append(["harmonic mean", *blank] + [_fmt(s["hmean"][m]) for m in METRICS])
        rows.append([])
    o = summary["overall"]
    over = "all machine types and IDs" if per_id else "all machine types, sections, and domains"
    rows.append(["", *blank] + header[-5:])
    rows.append([f"arithmetic mean over {over}", *blank] + [_fmt(o["amean"][m]) for m in METRICS])
    rows.append([f"harmonic mean over {over}", *blank] + [_fmt(o["hmean"][m]) for m in METRICS])
    rows.append([])
    rows.append(["official score", *blank, _fmt(summary["official_score"])])
    return rows


def _result_rows_2022(results: pd.DataFrame, summary: dict) -> list[list]:
    """The 2022-2025 evaluators' layout: one row per section with both domains' AUCs, the pAUC,
    and each domain's precision, recall and F1; then the means of each column."""
    from mimii_due.evaluation.metrics import hmean

    header = ["section", "AUC (source)", "AUC (target)", "pAUC", "precision (source)", "precision (target)",
              "recall (source)", "recall (target)", "F1 score (source)", "F1 score (target)"]  # fmt: skip
    cols = [("AUC", "source"), ("AUC", "target"), ("pAUC", BOTH)]
    cols += [(m, dom) for m in ("precision", "recall", "F1") for dom in ("source", "target")]
    rows: list[list] = []
    for machine, g in results.groupby("machine", sort=True):
        rows += [[machine], header]
        table = g.pivot_table(index="section", columns="domain", values=list(METRICS))
        table = table.reindex(columns=pd.MultiIndex.from_product([METRICS, DOMAINS]))  # a domain not tested: nan
        table[("pAUC", BOTH)] = section_paucs(g).droplevel("machine")  # a section tested in one domain has it too
        for section, r in table.iterrows():
            rows.append([f"{section:02d}"] + [_fmt(float(r[c])) for c in cols])
        rows.append(["arithmetic mean"] + [_fmt(float(table[c].mean())) for c in cols])
        rows.append(["harmonic mean"] + [_fmt(hmean(table[c])) for c in cols])
        rows.append([])
    src, tgt = results[results.domain == "source"], results[results.domain == "target"]
    paucs = section_paucs(results)
    rows.append(["", "AUC (source)", "AUC (target)", "pAUC"])
    rows.append(["harmonic mean over all machine types and sections", _fmt(hmean(src["AUC"])),
                 _fmt(hmean(tgt["AUC"])), _fmt(hmean(paucs))])  # fmt: skip
    rows.append([])
    rows.append(["official score", _fmt(summary["official_score"])])
    return rows

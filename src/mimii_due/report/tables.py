"""Table-4-style result tables: per machine type and section, source and target AUC and pAUC,
several detectors side by side."""

from __future__ import annotations

import numpy as np
import pandas as pd
from rich.table import Table

from mimii_due.data.table1 import MACHINE_TITLES
from mimii_due.evaluation.metrics import BOTH, hmean, official_score, scored_as, section_paucs


def column_name(name: str, metric: str, domain: str) -> str:
    """A ``table4`` column as one line of text: "ensemble AUC source" (2020's have no domain)."""
    return f"{name} {metric} {domain}".rstrip()


def table4(runs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per machine/section, columns ``(detector, metric, domain)``; then per-detector
    harmonic means over sections (per domain) and the official score in ``attrs``. Runs scored
    as 2022-2025 have one pAUC column, ``(detector, "pAUC", BOTH)``, as their evaluators
    print it ("pAUC (source, target)"), not the same section pAUC under each domain; runs scored as
    2020 is (per machine ID, no domains) have no domain in their columns' names."""
    frames, means = [], {}
    for name, res in runs.items():
        p = res.set_index(["machine", "section", "domain"])[["AUC", "pAUC"]].astype(float).unstack("domain")
        means[name] = {(m, d): hmean(res[res.domain == d][m]) for m, d in p.columns}
        if scored_as(res, "dcase2022"):
            pauc = section_paucs(res)
            p = p.drop(columns="pAUC", level=0)
            p[("pAUC", BOTH)] = pauc  # aligned on (machine, section)
            means[name] = {k: v for k, v in means[name].items() if k[0] == "AUC"} | {("pAUC", BOTH): hmean(pauc)}
        if scored_as(res, "dcase2020"):  # its one "domain" is ours, not the year's
            p.columns = pd.MultiIndex.from_tuples([(m, "") for m, _ in p.columns])
            means[name] = {(m, ""): v for (m, _), v in means[name].items()}
        p.columns = pd.MultiIndex.from_tuples([(name, m, d) for m, d in p.columns])
        frames.append(p)
    wide = pd.concat(frames, axis=1).sort_index()
    wide.attrs["hmean"] = means
    wide.attrs["official"] = {name: official_score(res) for name, res in runs.items()}
    return wide


def _cols(wide: pd.DataFrame) -> list[tuple[str, str, str]]:
    return list(wide.columns)


def number(v: float, digits: int = 3) -> str:
    """A metric as the tables show it; an undefined one (NaN: a section without anomalous or
    without normal test clips) as a dash."""
    return f"{v:.{digits}f}" if np.isfinite(v) else "-"


def official_text(v: float, digits: int = 3) -> str:
    """An official score, or "undefined" where a section lacks anomalous or normal test clips."""
    return number(v, digits) if np.isfinite(v) else "undefined"


def results_table(runs: dict[str, pd.DataFrame], title: str = "AUC / pAUC (Table 4 style)") -> Table:
    """A rich table for the terminal."""
    wide = table4(runs)
    t = Table(title=title)
    t.add_column("machine")
    t.add_column("section")
    for name, metric, domain in _cols(wide):
        t.add_column(f"{name}\n{metric}\n{domain}".rstrip(), justify="right", no_wrap=True, min_width=len(domain))
    for (machine, section), row in wide.iterrows():
        t.add_row(MACHINE_TITLES.get(machine, machine), f"{section:02d}", *(number(v) for v in row.to_numpy()))
    t.add_section()
    firsts = {next(i for i, c in enumerate(_cols(wide)) if c[0] == n) for n in wide.attrs["official"]}  # each run's
    t.add_row("harmonic mean", "", *(number(wide.attrs["hmean"][n][(m, d)]) for n, m, d in _cols(wide)))
    t.add_row(
        "official score",
        "",
        *(official_text(wide.attrs["official"][n]) if c in firsts else "" for c, (n, m, d) in enumerate(_cols(wide))),
    )
    return t


def machine_scores(runs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Each machine type's official score (its own rows' harmonic mean, as papers tabulate them),
    one column per run, as text ("undefined" where a section lacks a label)."""
    columns = {name: {MACHINE_TITLES.get(m, m): official_text(official_score(g)) for m, g in res.groupby("machine")}
               for name, res in runs.items()}  # fmt: skip
    return pd.DataFrame(columns).fillna("")  # a machine type a run was not tested on: blank


def markdown_table(table: pd.DataFrame, first: str) -> list[str]:
    """A table of text as Markdown lines, its index in the first column (named ``first``)."""
    lines = ["| " + " | ".join([first, *table.columns]) + " |", "|---" * (1 + len(table.columns)) + "|"]
    return lines + ["| " + " | ".join([str(i), *map(str, r)]) + " |" for i, r in zip(table.index, table.to_numpy(),
                                                                                     strict=True)]  # fmt: skip


def alarms(results: pd.DataFrame) -> pd.DataFrame | None:
    """Per machine type, and per domain where the test clips have several (a new condition's
    normal clips can raise far more alarms than the usual one's), how many normal test clips the
    thresholds flagged (false alarms) and how many anomalous ones (detections), as "k of n (rate)";
    None for results evaluated before the counts were kept."""
    if "false_alarms" not in results:
        return None
    by = ["machine", "domain"] if results["domain"].nunique() > 1 else ["machine"]
    g = results.groupby(by)[["n_normal", "false_alarms", "n_anomaly", "detected"]].sum()

    def share(k, n):
        return f"{k} of {n} ({k / n:.1%})" if n else "no clips"

    return pd.DataFrame(
        {"normal clips flagged (false alarms)": [share(r.false_alarms, r.n_normal) for r in g.itertuples()],
         "anomalous clips flagged (detected)": [share(r.detected, r.n_anomaly) for r in g.itertuples()]},
        index=[f"{MACHINE_TITLES.get(k[0], k[0])}, {k[1]}" if len(by) > 1 else MACHINE_TITLES.get(k, k)
               for k in g.index],
    ).rename_axis("machine type, domain" if len(by) > 1 else "machine type")  # fmt: skip


def results_markdown(runs: dict[str, pd.DataFrame]) -> str:
    """The same table in Markdown."""
    wide = table4(runs)
    head = ["Machine", "Section"] + [column_name(*c) for c in _cols(wide)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (machine, section), row in wide.iterrows():
        lines.append(
            "| "
            + " | ".join(
                [MACHINE_TITLES.get(machine, machine), f"{section:02d}"] + [number(v) for v in row.to_numpy()]
            )
            + " |"
        )
    lines.append(
        "| harmonic mean | | " + " | ".join(number(wide.attrs["hmean"][n][(m, d)]) for n, m, d in _cols(wide)) + " |"
    )
    lines.append("")
    lines.append(
        "Official score (harmonic mean of all AUC and pAUC): "
        + ", ".join(f"{n} {official_text(v)}" for n, v in wide.attrs["official"].items())
    )
    return "\n".join(lines)

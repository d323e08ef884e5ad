"""The report of one or several runs: one self-contained HTML file (figures embedded) and a
Markdown version beside it (figures in ``<name>_files/``)."""

from __future__ import annotations

import base64
import html
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from mimii_due import __version__, atomic
from mimii_due.data.index import index
from mimii_due.errors import ConfigError, StorageError
from mimii_due.evaluation.files import read_file_results, score_files
from mimii_due.report import figures
from mimii_due.report.tables import (
    alarms,
    column_name,
    machine_scores,
    markdown_table,
    official_text,
    results_markdown,
    table4,
)
from mimii_due.runs import Run, environment_text, over_runs, over_runs_text, run_names, run_setting

log = logging.getLogger(__name__)

# Set on <body> once the page has loaded: how many images decoded, of how many (checked by a test
# in headless Chromium, and useful to anyone debugging a report).
_CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
});
</script>"""
_STYLE = """<style>
body { font-family: sans-serif; margin: 2em; max-width: 1400px; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; } img { max-width: 100%; } pre { background: #f6f6f6; padding: 1em; }
</style>"""


def _run_info(run: Path) -> dict:
    keeper = Run.of(run)  # a run's results folder means the run
    if not keeper.exists() and score_files(run):  # another system's evaluated score files
        results, summary, scores = read_file_results(run)
        return {"path": run, "meta": {"score files": str(run), "protocol": summary["protocol"]}, "results": results,
                "summary": summary, "histories": {}, "scores": scores, "cache": None,
                "tested_on": None}  # fmt: skip
    meta = keeper.meta()  # not a run folder: says so, and which runs it holds or is in
    results, summary = keeper.read_results()  # refuses results that do not belong to the scores
    run = keeper.path
    return {"path": run, "meta": meta, "results": results, "summary": summary, "histories": keeper.histories(),
            "scores": keeper.read_scores(), "cache": keeper.cache,
            "tested_on": keeper.stamp().get("data", "?")}  # fmt: skip


def _md_image(title: str, files: Path, f: Path) -> str:
    """A Markdown image of ``f``, linked relative to the report: percent-encoded, since a link with
    a space (a report named ``my report.html``) is no link in Markdown."""
    return f"![{title}]({quote(f'{files.name}/{f.name}')})"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'


def _wide_html(wide: pd.DataFrame) -> str:
    df = wide.copy()
    df.columns = [column_name(*c) for c in df.columns]
    df.index = [f"{m} {s:02d}" for m, s in df.index]
    h = pd.DataFrame(
        [{column_name(n, m, d): wide.attrs["hmean"][n][(m, d)] for n, m, d in wide.columns}], index=["harmonic mean"]
    )
    return pd.concat([df, h]).to_html(float_format=lambda v: f"{v:.3f}", na_rep="-", border=0)


def build_report(runs: list[str | Path], out: str | Path, *, data: str | Path | None = None, seed: int = 0) -> Path:
    """Write ``out`` (HTML) and ``out`` with suffix ``.md``; return the HTML path.

    ``data`` (default: the first run's data folder, if it still exists) adds the paper's Figure 1
    and Figure 2 and the clip counts.
    """
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):  # the Markdown twin goes beside it, as .md
        raise ConfigError(f"the report is an HTML file: name it .html (its Markdown twin is written beside it as "
                          f".md), not '{out.name}'", out)  # fmt: skip
    infos = {}  # every run checked before anything is written; each once (a run's results folder is the run)
    for info in (_run_info(Path(r).resolve()) for r in runs):
        infos.setdefault(info["path"], info)
    infos = list(infos.values())
    names = run_names([(i["path"], i["meta"].get("detector", ""), i["meta"].get("params") or {}) for i in infos])
    for info, name in zip(infos, names, strict=True):
        info["name"] = name
    files = out.parent / f"{out.stem}_files"
    try:
        files.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"cannot create the folder ({e.strerror or e})", files) from e
    wide = table4({i["name"]: i["results"] for i in infos})
    parts = [
        f"<h1>mimii-due report</h1><p>{len(infos)} run(s); mimii-due {__version__}; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}</p>",
        "<h2>Results (Table 4 style: AUC per machine type, section and domain; pAUC per domain, or per section "
        "as the 2022-2025 evaluators give it)</h2>",
        _wide_html(wide),
        "<p>Official score (the year's evaluator: harmonic mean of its AUCs and pAUCs): "
        + ", ".join(f"<b>{html.escape(n)}</b> {official_text(v, 4)}" for n, v in wide.attrs["official"].items())
        + "</p>",
    ]
    md = ["# mimii-due report", "", results_markdown({i["name"]: i["results"] for i in infos}), ""]
    seeds = over_runs([{"detector": i["meta"].get("detector", ""), "summary": i["summary"], "path": i["path"],
                        "setting": run_setting(i["meta"], i["results"]["machine"].unique())} for i in infos])
    for line in map(over_runs_text, seeds):  # one detector at several seeds (or data seeds), as papers report it
        parts.append(f"<p>{html.escape(line)}</p>")
        md += [line, ""]
    per_machine = machine_scores({i["name"]: i["results"] for i in infos})
    if len(per_machine) > 1:
        parts += ["<p>Official score per machine type:</p>", per_machine.to_html(border=0)]
        md += ["Official score per machine type:", "", *markdown_table(per_machine, "machine type"), ""]
    undefined = [f"{i['name']}: {why}" for i in infos for why in i["summary"].get("undefined", [])]
    if undefined:  # e.g. a test folder of new normal recordings: the alarms below still say how it does
        line = "Undefined AUC (a section without both labels): " + "; ".join(undefined)
        parts.append(f"<p>{html.escape(line)}</p>")
        md += [line, ""]
    tested = dict.fromkeys(i["tested_on"] for i in infos if i["tested_on"])  # score files do not say
    if len(tested) > 1:  # side by side, yet not on the same clips: say so where the figures are
        warning = ("These runs were tested on different data (" + "; ".join(f"{i['name']}: {i['tested_on']}"
                   for i in infos if i["tested_on"]) + "), so their figures are not a comparison on the same "
                   "clips.")  # fmt: skip
        log.warning("%s", warning)
        parts.append(f"<p><b>Warning:</b> {html.escape(warning)}</p>")
        md += [f"**Warning:** {warning}", ""]
    data = Path(data) if data else next((Path(i["meta"]["data"]) for i in infos if "data" in i["meta"]), None)
    if data is not None and data.is_dir():
        table = index(data, on_error="skip")
        counts = table.groupby(["machine", "split", "domain"]).size().unstack(["split", "domain"]).fillna(0).astype(int)
        parts += [f"<h2>Data</h2><p>{html.escape(str(data))}: {len(table)} clips</p>", counts.to_html(border=0)]
        md += ["## Data", "", f"{data}: {len(table)} clips", ""]
        channel = infos[0]["meta"].get("channel", 0)  # of multichannel clips, the one the (first) run read
        figs = [
            ("Figure 1: power spectrograms of normal clips",
             figures.spectrograms(table, files / "spectrograms.png", on_error="skip", channel=channel))  # fmt: skip
        ]
        test = table[table["split"] == "test"]
        if len(test) >= 5:
            from mimii_due.config import FeatureConfig
            from mimii_due.features.extract import extract

            feats, test = extract(test, cfg=FeatureConfig(channel=channel), cache=infos[0]["cache"], on_error="skip")
            figs.append(
                (
                    "Figure 2: t-SNE of test clips (clip-mean log-mel; colour = domain, marker = label)",
                    figures.tsne(test, feats.means(), files / "tsne.png", seed=seed),
                )
            )
        for title, f in figs:
            parts += [f"<h3>{html.escape(title)}</h3>", _img(f)]
            md += [f"### {title}", "", _md_image(title, files, f), ""]
    for k, info in enumerate(infos):
        tag = f"run{k}"
        where = f"{info['path']}, " + (f"tested on {info['tested_on']}" if info["tested_on"] else "score files")
        for key, what in (("params", "settings"), ("features", "features")):  # trained with, where not the defaults
            given = info["meta"].get(key) or {}
            if given:
                where += f"; {what} " + ", ".join(f"{a}={b}" for a, b in given.items())
        if "environment" in info["meta"]:  # runs trained before 2026-12-07 did not record it
            where += f"; trained with mimii-due {info['meta'].get('version', '?')}, " + environment_text(
                info["meta"]["environment"])  # fmt: skip
            where += "".join(f" (earlier models: {environment_text(e)})" for e in info["meta"].get(
                "earlier_environments", []))  # fmt: skip
        parts.append(f"<h2>Run: {html.escape(info['name'])}</h2><p>{html.escape(where)}</p>")
        md += [f"## Run: {info['name']}", "", where, ""]
        figs = [
            (
                "ROC curves (shaded: the pAUC range, FPR <= 0.1)",
                figures.roc_curves(info["scores"], files / f"{tag}_roc.png"),
            ),
            (
                "Anomaly scores and the decision threshold",
                figures.score_histograms(info["scores"], files / f"{tag}_scores.png"),
            ),
        ]
        counted = alarms(info["results"])
        if counted is not None:
            parts += ["<h3>Alarms on the test clips</h3>", counted.to_html(border=0)]
            md += ["### Alarms on the test clips", "", *markdown_table(counted, counted.index.name), ""]
        loss = figures.loss_curves(info["histories"], files / f"{tag}_loss.png")
        if loss:
            figs.append(("Training and validation loss", loss))
        for title, f in figs:
            parts += [f"<h3>{html.escape(title)}</h3>", _img(f)]
            md += [f"### {title}", "", _md_image(title, files, f), ""]
        config = json.dumps(info["meta"], indent=1)
        parts.append(f"<h3>Configuration</h3><pre>{html.escape(config)}</pre>")
        md += ["### Configuration", "", "```json", config, "```", ""]
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>mimii-due report</title>{_STYLE}</head>"
        f"<body>{''.join(parts)}{_CHECK}</body></html>"
    )
    atomic.write_text(out, page)
    atomic.write_text(out.with_suffix(".md"), "\n".join(md))
    return out

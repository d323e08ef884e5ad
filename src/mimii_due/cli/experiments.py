"""The experiment commands: detectors, train, test, evaluate, report, plot, run."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import Progress

from mimii_due.cli import (
    ADDRESS,
    CHANNEL,
    ENGINE,
    TASK_CPUS,
    YEAR,
    _engine,
    _machines,
    app,
    console,
    plot_app,
    progress_bar,
    stdout,
)
from mimii_due.errors import ConfigError, MimiiDueError


def _settings(items: list[str] | None, option: str) -> dict:
    """``KEY=VALUE`` items of a repeatable option, read as ``--set`` reads them."""
    from mimii_due.config import setting

    out: dict = {}
    for item in items or []:
        try:
            key, value = setting(item)
        except ConfigError as e:
            raise MimiiDueError(f"{option}: {e}") from None
        out[key] = value
    return out


FEATURES = typer.Option(None, "--features", help="Log-mel settings, KEY=VALUE: n_fft, hop_length, n_mels, power "
                        "(default the paper's 1024, 512, 128, 2.0); the models keep them.")  # fmt: skip


CONFIG = typer.Option(None, "--config", help="A config file of how to make the detector: YAML with detector (or "
                      "detectors), params and features; or a run's run.json, to train as it was trained. Options "
                      "given on the command line win.")  # fmt: skip


def _with_config(config: Path | None, detectors: list[str], params: dict, features: dict, *, default: list[str],
                 each: bool) -> tuple:  # fmt: skip
    """The detectors (else ``default``), settings and features of a ``--config`` file, with those of
    the command line over them, checked as ``run`` (``each``: each detector the settings it has) or
    ``train`` (one detector, every setting) takes them: ``(detectors, params, features)``."""
    from mimii_due.errors import ConfigError
    from mimii_due.pipeline import check_detectors

    if config is not None:
        from mimii_due.config import read_config

        c = read_config(config)
        if c["passed_over"]:
            console.print(f"{escape(str(config))}: {', '.join(c['passed_over'])} not used (the command line says the "
                          "data: DATA, --machines, --year, --channel)", highlight=False, soft_wrap=True)  # fmt: skip
        detectors, params, features = detectors or c["detectors"], c["params"] | params, c["features"] | features
    detectors = detectors or default
    if not each and len(detectors) > 1:
        raise MimiiDueError(f"{config} names {len(detectors)} detectors ({', '.join(detectors)}); train trains one: "
                            "pick it with --detector")  # fmt: skip
    if config is not None:  # a bad setting of the file named with the file
        try:
            check_detectors(detectors, params, features, each=each)
        except ConfigError as e:
            raise ConfigError(f"{e} (the settings of this file with the command line's)", config) from None
    return detectors, params, features


def _params(epochs: int | None, batch_size: int | None, seed: int | None, extra: list[str]) -> dict:
    params: dict = {}
    for k, v in (("epochs", epochs), ("batch_size", batch_size), ("seed", seed)):
        if v is not None:
            params[k] = v
    return params | _settings(extra, "--set")


class _PipelineProgress:
    """Rich progress bars for the pipeline's (stage, machine, step, total, info) reports."""

    def __init__(self, bar: Progress):
        self.bar, self.tasks = bar, {}

    def __call__(self, stage: str, machine: str, step: int, total: int, info: str) -> None:
        key = (stage, machine)
        if key not in self.tasks:
            self.tasks[key] = self.bar.add_task(f"{stage} {machine}", total=total, info="")
        self.bar.update(self.tasks[key], completed=step, total=total, info=info)


def _on_error(skip_bad: bool) -> str:
    return "skip" if skip_bad else "raise"


SKIP_BAD = typer.Option(False, "--skip-bad", help="Report and skip unreadable clips instead of stopping.")


def _report_skipped(table) -> None:
    for _, msg in table.attrs.get("skipped", []):
        console.print(f"[yellow]skipped[/yellow] {escape(msg)}", highlight=False, soft_wrap=True)


@app.command()
def train(
    data: Path = typer.Argument(..., help="Dataset folder (training clips are read from */train/)."),
    out: Path = typer.Option(..., "--out", help="Run folder to create."),
    detector: str = typer.Option(
        None,
        "--detector",
        help="Detector name: ensemble (default; with --retrain the run's), twfr_gmm, embedding, ae, mobilenetv2, "
        "smahal, gaussian, or an installed plugin's; settings may follow after colons (twfr_gmm:decay=auto), as with "
        "--set.",
    ),
    machines: str = typer.Option(None, help="Comma-separated machine types (default: all found)."),
    epochs: int = typer.Option(None, help="Override the paper's number of epochs."),
    batch_size: int = typer.Option(None, "--batch-size", help="Override the paper's batch size."),
    seed: int = typer.Option(None, help="Seed of initialisation and shuffling."),
    set_: list[str] = typer.Option(None, "--set", help="Other detector settings, KEY=VALUE."),
    members: str = typer.Option(
        None, help="The ensemble's members, comma-separated (default twfr_gmm,embedding), each with settings "
        "after a colon where wanted (embedding:networks=5); --detector ensemble only."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
    retrain: bool = typer.Option(False, "--retrain", help="Train the run in --out again on the clips DATA holds now "
                                 "(after `collect`), as it was trained; a `serve` or `watch` of it takes each new "
                                 "model from its next clip."),  # fmt: skip
    cache: Path = typer.Option(None, help="Feature cache folder (default: RUN/features)."),
    skip_bad: bool = SKIP_BAD,
    year: int = YEAR,
    channel: int = CHANNEL,
    features: list[str] = FEATURES,
    config: Path = CONFIG,
    engine: str = ENGINE,
    address: str = ADDRESS,
    task_cpus: float = TASK_CPUS,
) -> None:
    """Train one detector per machine type."""
    from mimii_due import pipeline
    from mimii_due.detectors import format_spec, parse_spec, split_specs
    from mimii_due.runs import Run

    # --retrain: trained again as it was; what else is given must agree with that
    was = Run(out).meta() if retrain and Run(out).exists() else {}
    named, params, feature_params = _with_config(config, [detector] if detector else [],
                                                 (was.get("params") or {}) | _params(epochs, batch_size, seed, set_),
                                                 (was.get("features") or {}) | _settings(features, "--features"),
                                                 default=[was.get("detector", "ensemble")], each=False)  # fmt: skip
    detector, channel = named[0], channel or was.get("channel", 0)
    if members is not None:
        if parse_spec(detector)[0] != "ensemble":
            raise MimiiDueError(f"--members is a setting of the ensemble, not of {detector!r}")
        params["members"] = split_specs(members)
    with _engine(engine, address, task_cpus) as eng, progress_bar() as bar:
        meta = pipeline.train(
            out,
            data,
            detector=detector,
            machines=_machines(machines),
            params=params,
            resume=resume,
            retrain=retrain,
            on_error=_on_error(skip_bad),
            cache=cache,
            year=year,
            channel=channel,
            feature_params=feature_params,
            progress=_PipelineProgress(bar),
            engine=eng,
        )
    again = " again" if retrain else ""
    stdout.print(f"trained {format_spec(meta['detector'], meta['params'])}{again} for {', '.join(meta['machines'])} "
                 f"in {out}")  # fmt: skip
    if retrain:
        stdout.print("a running `serve` or `watch` of it scores with the new models from its next clip; its test "
                     "results were the earlier models': `mimii-due test` it again", markup=False)  # fmt: skip


@app.command()
def detectors(
    as_json: bool = typer.Option(False, "--json", help="The same as JSON, for scripts."),
) -> None:
    """The detectors there are: the built-in ones and those installed plugins provide (with their
    package), what each is, and its settings with their defaults (train --set KEY=VALUE)."""
    import json

    from mimii_due.detectors import catalogue

    rows = catalogue()
    if as_json:
        stdout.print_json(json.dumps(rows, default=list))
        return
    for row in rows:
        settings = " ".join(f"{k}={_setting_text(v)}" for k, v in row["settings"].items()) or "none"
        stdout.print(f"[bold]{escape(row['name'])}[/bold] ({escape(row['source'])}): {escape(row['about'])}\n"
                     f"  settings: {escape(settings)}", soft_wrap=True, highlight=False)  # fmt: skip


def _setting_text(value) -> str:
    """A default as ``--set`` takes it: a list comma-separated, ``[]`` for an empty one."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value)) if value else "[]"
    return "null" if value is None else str(value)


@app.command()
def test(
    run: Path = typer.Argument(..., help="Run folder made by `mimii-due train`."),
    data: Path = typer.Argument(..., help="Dataset folder (test clips are read from *_test/ and test/)."),
    skip_bad: bool = SKIP_BAD,
    year: int = typer.Option(None, "--year", help="DCASE year of the test data (default: the run's)."),
    engine: str = ENGINE,
    address: str = ADDRESS,
    task_cpus: float = TASK_CPUS,
) -> None:
    """Score the test clips and write the official anomaly-score and decision CSV files."""
    from mimii_due import pipeline

    with _engine(engine, address, task_cpus) as eng, progress_bar() as bar:
        scores = pipeline.test(run, data, on_error=_on_error(skip_bad), year=year, progress=_PipelineProgress(bar),
                               engine=eng)  # fmt: skip
    _report_skipped(scores)
    stdout.print(f"scored {len(scores)} clips; files in {run / 'results'}")


@app.command()
def evaluate(
    runs: list[Path] = typer.Argument(
        ..., help="Run folders with scores (after `mimii-due test`), or folders of any system's official "
        "anomaly_score_*.csv and decision_result_*.csv files; several are shown side by side."
    ),
    ground_truth: Path = typer.Option(None, "--ground-truth", help="Ground-truth CSV file or folder."),
    protocol: str = typer.Option(
        None, help="dcase2020, dcase2021 or dcase2022 (2022-2026); default: the data's year (or the score files')."
    ),
    bootstrap: int = typer.Option(0, min=0, max=100_000, help="Bootstrap draws of the test clips (1,000 is "
                                  "plenty): the official score's sd."),
) -> None:
    """AUC, pAUC, precision, recall and F1 per machine, section and domain, as the year's
    official evaluator computes them; result.csv in its layout. With --bootstrap N, also how much
    the official score would move with another test set of the same size, and for several on the
    same clips, each one's difference from the first with its paired bootstrap sd. Given a folder
    of official score files (a submission, a baseline's output), it evaluates those."""
    from mimii_due import pipeline
    from mimii_due.report.tables import official_text, results_table
    from mimii_due.runs import over_runs

    with progress_bar(transient=True) as bar:  # the bootstrap's draws take a while on a whole development set
        rows = pipeline.compare(runs, ground_truth=ground_truth, protocol=protocol, bootstrap=bootstrap,
                                progress=_PipelineProgress(bar))  # fmt: skip
    stdout.print(results_table({r["name"]: r["results"] for r in rows}))
    for r in rows:
        s = r["summary"]
        luck = f" (bootstrap sd {s['bootstrap_sd']:.4f} over {bootstrap} test sets)" if "bootstrap_sd" in s else ""
        who = f"{r['name']}: " if len(rows) > 1 else ""
        _print_summary(who, s)
        line = f"{who}official score ({s['protocol']}) {official_text(s['official_score'], 4)}{luck}"
        if "versus_first" in r:
            line += (f"; minus {rows[0]['name']}: {r['versus_first']:+.4f} (paired bootstrap sd "
                     f"{r['versus_first_sd']:.4f})")  # fmt: skip
        stdout.print(f"{line}; result.csv in {r['written']}", markup=False)
    _print_over_runs(over_runs(rows))
    if not all(r.get("same_clips", True) for r in rows):  # side by side, yet not on the same test clips
        console.print(f"[yellow]warning[/yellow] not all were evaluated on the test clips of {rows[0]['name']} (their "
                      "names, labels or year differ), so the table is not a comparison on the same clips")  # fmt: skip


def _seeds(text: str | None) -> list[int] | None:
    """``--seeds 0,1,2``."""
    try:
        return [int(s) for s in _machines(text)] if text else None
    except ValueError:
        raise MimiiDueError(f"--seeds takes whole numbers such as 0,1,2, not {text!r}") from None


def _print_over_runs(groups: list[dict]) -> None:
    """A detector's official score over its runs of several seeds (:func:`~mimii_due.runs.over_runs`)."""
    from mimii_due.runs import over_runs_text

    for g in groups:
        stdout.print(over_runs_text(g), markup=False)


def _print_summary(who: str, summary: dict) -> None:
    """The alarms on the test clips and, for several machine types, each one's official score."""
    from mimii_due.report.tables import official_text

    line = _alarm_line(summary["alarms"], summary.get("alarm_rates"), summary.get("alarms_by_domain"))
    stdout.print(f"{who}{line}", markup=False)
    if len(summary["machine_scores"]) > 1:
        each = ", ".join(f"{m} {official_text(v)}" for m, v in summary["machine_scores"].items())
        stdout.print(f"{who}official score per machine type: {each}", markup=False)


def _alarm_line(alarms: dict, rates: dict | None = None, by_domain: dict | None = None) -> str:
    """How often the thresholds flagged the test clips: false alarms on the normal ones and
    detections of the anomalous ones (what an engineer sees of a detector in use), the normal
    ones domain by domain where the test clips have several (a new condition's clips can raise
    far more alarms than the usual one's); with the rate the thresholds were fitted for (one for
    all machine types), whether the false alarms are more than chance gives at that rate (exact
    binomial test)."""
    from mimii_due.evaluation.threshold import EXCESS_P, excess_alarms_p

    def share(k: int, n: int, what: str) -> str:
        return f"{k} of {n} {what} ({k / n:.1%})" if n else f"no {what}"

    k, n = alarms["false_alarms"], alarms["n_normal"]
    normal = share(k, n, "normal test clips")
    if by_domain and len(by_domain) > 1 and n:  # "182 of 600 normal test clips (30.3%; source 21 of 300, 7.0%; ...)"
        each = "; ".join(f"{d} {c['false_alarms']} of {c['n_normal']}" + (f", {c['false_alarms'] / c['n_normal']:.1%}"
                         if c["n_normal"] else "") for d, c in by_domain.items())  # fmt: skip
        normal = f"{k} of {n} normal test clips ({k / n:.1%}; {each})"
    line = f"flagged {normal}, {share(alarms['detected'], alarms['n_anomaly'], 'anomalous test clips')}"
    expected = set((rates or {}).values())
    if len(expected) == 1 and alarms["n_normal"] and 0 < (rate := expected.pop()) < 1:
        p = excess_alarms_p(alarms["false_alarms"], alarms["n_normal"], rate)
        verdict = "more than chance gives at that rate" if p < EXCESS_P else "within what chance gives"
        line += f"; the thresholds expect {rate:.1%} of normal clips: {verdict} (binomial test, p = {p:.2g})"
    return line


@app.command()
def report(
    runs: list[Path] = typer.Argument(
        ..., help="One or more evaluated run folders, or folders of another system's score files (evaluated)."
    ),
    out: Path = typer.Option(None, "--out", help="HTML file to write (default: FIRST_RUN/report.html)."),
    data: Path = typer.Option(None, help="Dataset for Figures 1 and 2 (default: the first run's data)."),
) -> None:
    """One self-contained HTML report (and a Markdown twin) of one or several runs side by side."""
    from mimii_due.report.html import build_report

    path = build_report(runs, out or runs[0] / "report.html", data=data)
    stdout.print(f"report: {path} (and {path.with_suffix('.md')})")


@plot_app.command("spectrograms")
def plot_spectrograms(
    data: Path = typer.Argument(..., help="Dataset folder."),
    out: Path = typer.Option(Path("spectrograms.png"), "--out", help="PNG file to write."),
    skip_bad: bool = SKIP_BAD,
    channel: int = CHANNEL,
) -> None:
    """The paper's Figure 1: a power spectrogram of one normal clip per machine type."""
    from mimii_due.data.index import index
    from mimii_due.report.figures import spectrograms

    table = index(data, on_error=_on_error(skip_bad))
    _report_skipped(table)
    stdout.print(f"wrote {spectrograms(table, out, on_error=_on_error(skip_bad), channel=channel)}")


@plot_app.command("tsne")
def plot_tsne(
    run: Path = typer.Argument(..., help="Run folder (gives the machine types and the feature cache)."),
    data: Path = typer.Argument(..., help="Dataset folder."),
    out: Path = typer.Option(Path("tsne.png"), "--out", help="PNG file to write."),
    seed: int = typer.Option(0, min=0, max=2**32 - 1, help="t-SNE seed."),
    skip_bad: bool = SKIP_BAD,
) -> None:
    """The paper's Figure 2: t-SNE of the test clips' clip-mean log-mel, by domain and label."""
    from mimii_due.config import FeatureConfig
    from mimii_due.data.index import index
    from mimii_due.features.extract import extract
    from mimii_due.report.figures import tsne
    from mimii_due.runs import Run

    keeper = Run(run)
    t = index(data, on_error=_on_error(skip_bad))
    t = t[(t.split == "test") & t.machine.isin(keeper.meta()["machines"])]
    cfg = FeatureConfig(channel=keeper.meta().get("channel", 0))  # the log-mel of the channel the run read
    feats, t = extract(t, cfg=cfg, cache=keeper.cache, on_error=_on_error(skip_bad))
    _report_skipped(t)
    stdout.print(f"wrote {tsne(t, feats.means(), out, seed=seed)}")


@app.command()
def run(
    data: Path = typer.Argument(None, help="Dataset folder; without it a small synthetic dataset is generated."),
    out: Path = typer.Option(Path("mimii_due_run"), "--out", help="Folder for data, runs and report."),
    detectors: str = typer.Option(
        None, help="Comma-separated detectors to train and compare (default ae,ensemble), each with settings after "
        "colons where wanted (twfr_gmm,twfr_gmm:decay=auto; a list in brackets: ensemble:members=[twfr_gmm,ae]); "
        "each gets a folder in --out (twfr_gmm_decay-auto)."
    ),
    machines: str = typer.Option(None, help="Comma-separated machine types (default: all)."),
    epochs: int = typer.Option(None, help="Override the paper's number of epochs (every detector)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Override the paper's batch size."),
    seeds: str = typer.Option(None, help="Comma-separated training seeds: each detector that takes a seed trained "
                              "once per seed (ensemble:seed=0, ...), its official score's mean and sd over them "
                              "printed, as papers report a method."),  # fmt: skip
    scale: float = typer.Option(
        None, help="Size of the generated dataset (no DATA; default: the main job's, 99 + 10 training clips)."
    ),
    ground_truth: Path = typer.Option(None, "--ground-truth", help="Ground truth of unlabelled test clips."),
    skip_bad: bool = SKIP_BAD,
    year: int = YEAR,
    channel: int = CHANNEL,
    features: list[str] = FEATURES,
    config: Path = CONFIG,
    engine: str = ENGINE,
    address: str = ADDRESS,
    task_cpus: float = TASK_CPUS,
) -> None:
    """The whole pipeline: (generate) -> train -> test -> evaluate -> Table-4-style result."""
    from mimii_due import pipeline
    from mimii_due.detectors import split_specs
    from mimii_due.report.tables import official_text, results_table

    given = split_specs(detectors)
    named, params, feature_params = _with_config(config, given, _params(epochs, batch_size, None, []),
                                                 _settings(features, "--features"),
                                                 default=list(pipeline.DEFAULT_RUN["detectors"]), each=True)
    if detectors is not None and not given:  # --detectors "": none, which run refuses
        named = []

    with _engine(engine, address, task_cpus) as eng, progress_bar() as bar:
        done = pipeline.run(
            out, data, detectors=named, seeds=_seeds(seeds), machines=_machines(machines),
            params=params, ground_truth=ground_truth,
            **({} if scale is None else {"scale": scale}),  # default: pipeline.DEFAULT_RUN
            on_error=_on_error(skip_bad), year=year, channel=channel, feature_params=feature_params,
            progress=_PipelineProgress(bar), engine=eng,
        )  # fmt: skip
    stdout.print(results_table(done["results"]))
    for name, s in done["summaries"].items():
        _print_summary(f"{name}: ", s)
        stdout.print(f"{name}: official score {official_text(s['official_score'])} ({s['protocol']})", markup=False)
    _print_over_runs(done["over_runs"])
    stdout.print(f"runs in {out}; wall time {done['seconds']:.0f} s")
    stdout.print(f"report: {done['report']} (open it in a browser)")



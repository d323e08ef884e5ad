"""The ``mimii-due`` command: thin commands over library functions.

Package errors become a one-line message and exit code 1 (a traceback only with ``--debug``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

from mimii_due.errors import ConfigError, MimiiDueError


class _Group(TyperGroup):
    """Turns the package's errors into a one-line message and exit code 1 (traceback with --debug)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MimiiDueError as e:
            if _DEBUG:
                raise
            _fail(ctx, str(e))
        except OSError as e:  # disk full, permissions, a loop of links: the path and the reason, no traceback
            if _DEBUG:
                raise
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            _fail(ctx, f"{where}{e.strerror or e}")
        except KeyboardInterrupt:  # Ctrl-C: say what is kept and how to go on, instead of exiting without a word
            console.print("interrupted; every file written so far is whole. A `train` goes on from its last epoch's "
                          "checkpoint when run again with --resume (`run` resumes by itself).", soft_wrap=True)
            ctx.exit(130)


def _fail(ctx, message: str) -> None:
    # soft_wrap: one line, never broken inside a file name when stderr is not a terminal
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    ctx.exit(1)


# rich_markup_mode=None: help texts are plain (brackets such as "[c-d, c+d]" stay as written)
app = typer.Typer(
    add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0], cls=_Group, rich_markup_mode=None
)
plot_app = typer.Typer(no_args_is_help=True, help="Draw the paper's figures.", rich_markup_mode=None)
app.add_typer(plot_app, name="plot")
console = Console(stderr=True)
stdout = Console(width=None if sys.stdout.isatty() else 200)  # no wrapped tables in logs
_DEBUG = False


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    global _DEBUG
    _DEBUG = debug
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    logging.captureWarnings(True)  # a MultichannelWarning becomes one log line, not a source listing
    import warnings

    warnings.formatwarning = lambda message, category, *a, **k: f"{category.__name__}: {message}"


def progress_bar(transient: bool = False, download: bool = False) -> Progress:
    cols = [TextColumn("{task.description}"), BarColumn()]
    cols += [DownloadColumn()] if download else [TextColumn("{task.completed}/{task.total}")]
    cols += [TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    return Progress(*cols, console=console, transient=transient)


YEAR = typer.Option(
    None, "--year", help="DCASE year of the data, 2020-2026, or 2019 for MIMII (default: recognised from the data)."
)


ENGINE = typer.Option("local", "--engine", help="local, or ray: a Ray cluster (pip install 'mimii-due[ray]').")
ADDRESS = typer.Option(None, "--address", help="A running Ray cluster to join from one of its nodes (head:6379, auto).")
TASK_CPUS = typer.Option(1.0, "--task-cpus", help="CPUs each Ray task asks for.")


def _engine(name: str, address: str | None, task_cpus: float):
    from mimii_due.engines import get_engine

    if address and name != "ray":
        raise MimiiDueError("--address is for --engine ray")
    return get_engine(name, address=address, task_cpus=task_cpus)


def _machines(value: str | None) -> list[str] | None:
    return [m.strip() for m in value.split(",") if m.strip()] if value else None


def _snrs(value: str | None) -> list[int] | None:
    try:
        return [int(v.removesuffix("dB")) for v in _machines(value)] if value else None
    except ValueError:
        raise MimiiDueError(f"--snr takes whole decibels such as 6,0,-6, not {value!r}") from None


DB_HELP = "SQLite record of decisions (default: RUN/decisions.sqlite, also when serving RUN/models/<machine>)."
MACHINE_HELP = ("Machine type of the clips (default: the model's only one, or the nearest folder named after "
                "one of the models, e.g. dev_data/fan/test/).")


# ----------------------------------------------------------------------------------------- data


@app.command()
def info(
    path: Path = typer.Argument(..., help="A dataset folder (dev_data/, eval_data/, a machine folder...)."),
    strict: bool = typer.Option(False, help="Exit non-zero when any count differs from the year's counts."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Report and skip unreadable clips."),
    year: int = YEAR,
) -> None:
    """Count the clips found, say which DCASE year they are, and compare them with its counts
    (2021: the paper's Table 1)."""
    from mimii_due.data.index import index
    from mimii_due.data.table1 import compare
    from mimii_due.data.years import name_of

    named = year is not None
    table = index(path, on_error="skip" if skip_bad else "raise", year=year)
    year = int(table["year"].iloc[0])
    cmp = compare(table, year)
    where = "Table 1" if year == 2021 else name_of(year)
    stdout.print(
        f"{name_of(year)} data ({'named with --year' if named else 'recognised from the layout and names'})",
        markup=False,
    )
    t = Table(title=f"{len(table)} clips in {path}" + (f" (found / {where})" if year else ""))
    for col in ("machine", "section", "domain", "train", "test normal", "test anomaly", "test total", "differs"):
        t.add_column(col)

    def pair(r, k: str) -> str:
        paper = getattr(r, f"paper_{k}")
        return f"{getattr(r, f'found_{k}')} / {'-' if paper is None or paper != paper else int(paper)}"

    for r in cmp.itertuples(index=False):
        t.add_row(
            r.machine,
            f"{r.section:02d}",
            r.domain,
            pair(r, "train"),
            pair(r, "test_normal"),
            pair(r, "test_anomaly"),
            pair(r, "test_total"),
            f"[red]{r.differs}[/red]" if r.differences else "[green]ok[/green]",
        )
    stdout.print(t)
    n_diff = int((cmp.differences != "").sum())
    rates = sorted(table.sample_rate.unique())
    compared = f"{n_diff} of {len(cmp)} machine/section/domain rows differ from {where}" if year else (
        "no challenge's counts to compare with (train/: normal clips; test/normal/, test/anomaly/: test clips)")
    stdout.print(f"{compared}; sample rates (Hz): {', '.join(map(str, rates))}", markup=False)
    for _, msg in table.attrs.get("skipped", []):
        console.print(f"[yellow]skipped[/yellow] {msg}")
    if strict and n_diff:
        raise typer.Exit(2)


@app.command()
def download(
    dest: Path = typer.Option(..., "--dest", help="Folder to download and unpack into."),
    machines: str = typer.Option(None, help="Comma-separated machine types, e.g. fan,valve (default all)."),
    part: str = typer.Option("dev", help="dev (development set), eval (additional training + evaluation) or all."),
    year: int = typer.Option(None, "--year", help="DCASE year 2020-2026 (default: MIMII DUE, --source)."),
    source: str = typer.Option(
        "mimii-due", help="mimii-due (Zenodo 4740355), dcase2020 ... dcase2026, or mimii (MIMII, Zenodo 3384388)."
    ),
    snr: str = typer.Option(None, help="MIMII only: comma-separated noise levels in dB, e.g. 6,0 (default all)."),
    ground_truth: int = typer.Option(None, "--ground-truth", help="Fetch the evaluation ground truth of this year."),
    base_url: str = typer.Option(None, help="Zenodo (or ground-truth) address, for mirrors and tests."),
    keep_archives: bool = typer.Option(False, help="Keep the zip files after unpacking."),
) -> None:
    """Download a dataset from Zenodo, or a year's evaluation ground truth: resumable, verified,
    unpacked, safe to rerun."""
    from mimii_due.data import download as dl

    with progress_bar(download=True) as bar:
        tasks: dict[str, int] = {}

        def cb(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total or None, info="")
            bar.update(tasks[name], completed=done)

        if ground_truth is not None:
            path = dl.download_ground_truth(ground_truth, dest, base_url=base_url or dl.GROUND_TRUTH_URL, progress=cb)
            names = [path.name]
        else:
            names = dl.download(
                dest,
                machines=_machines(machines),
                part=part,
                source=("mimii" if year == 2019 else f"dcase{year}") if year else source,
                base_url=base_url or dl.ZENODO,
                keep_archives=keep_archives,
                progress=cb,
                snrs=_snrs(snr),
            )
    stdout.print(f"{len(names)} file(s) ready in {dest}: {', '.join(names)}")


# ------------------------------------------------------------------------------------ synthetic


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Output folder (gets dev_data/, eval_data/, ground_truth/)."),
    machines: str = typer.Option(None, help="Comma-separated machine types (default: all five)."),
    sections: str = typer.Option(None, help="Comma-separated section numbers, e.g. 0,1,2 (default: 0-5)."),
    scale: float = typer.Option(1.0, help="Fraction of Table 1's clip counts (1 = about 42,000 clips)."),
    seed: int = typer.Option(0, min=0, max=2**32 - 1, help="Same seed, same bytes, whatever the number of workers."),
    severity: float = typer.Option(1.0, help="Scales every anomaly's size (1 = the default, hard mix)."),
    snr_offset: float = typer.Option(0.0, help="Shift every SNR of Table 1 by this many dB (0 = the paper)."),
    workers: int = typer.Option(1, help="Worker processes."),
    layout: str = typer.Option("dcase2021", help="dcase2021 (MIMII DUE) or dcase2023 (2022-2025: one section, test/)."),
    engine: str = ENGINE,
    address: str = ADDRESS,
    task_cpus: float = TASK_CPUS,
) -> None:
    """Generate a synthetic MIMII-DUE-like dataset in the real layout, with its ground truth."""
    from mimii_due.data.table1 import MACHINES, SECTIONS
    from mimii_due.synth.generate import generate

    ms = _machines(machines) or list(MACHINES)
    try:
        ss = [int(s) for s in sections.split(",")] if sections else list(SECTIONS)
    except ValueError as e:
        raise MimiiDueError(f"--sections takes section numbers like 0,1,2, not {sections!r}") from e
    if layout == "dcase2023" and not sections:
        ss = [0]
    with _engine(engine, address, task_cpus) as eng, progress_bar() as bar:
        task = bar.add_task("synth", total=None, info="")
        generate(
            out,
            machines=ms,
            sections=ss,
            scale=scale,
            seed=seed,
            severity=severity,
            snr_offset=snr_offset,
            workers=workers,
            layout=layout,
            progress=lambda done, total, info="": bar.update(task, completed=done, total=total),
            engine=eng,
        )
    stdout.print(f"dataset written to {out}")


@app.command()
def mix(
    out: Path = typer.Argument(..., help="Output folder (the clean folder's layout is kept)."),
    clean: Path = typer.Option(..., "--clean", help="Folder of clean machine recordings (one section)."),
    noise: Path = typer.Option(..., "--noise", help="Folder of background-noise recordings."),
    snr: float = typer.Option(..., "--snr", help="SNR centre c in dB (Table 1)."),
    spread: float = typer.Option(0.0, "--spread", help="SNR spread d: uniform over [c-d, c+d]."),
    rt60: float = typer.Option(None, "--rt60", help="Convolve with a room impulse response of this RT60 (s)."),
    seed: int = typer.Option(0, min=0, max=2**32 - 1, help="Seed of the SNR and noise draws."),
) -> None:
    """Apply the paper's section 2.2 mixing to your own clean and noise recordings."""
    from mimii_due.synth.generate import mix_folder

    with progress_bar() as bar:
        task = bar.add_task("mix", total=None, info="")
        recs = mix_folder(
            clean,
            noise,
            out,
            snr=snr,
            spread=spread,
            rt60=rt60,
            seed=seed,
            progress=lambda done, total, info="": bar.update(task, completed=done, total=total),
        )
    clipped = sum(r["clipped"] for r in recs)
    stdout.print(f"{len(recs)} clips mixed into {out}" + (f" ({clipped} clipped at full scale)" if clipped else ""))


# ------------------------------------------------------------------------------------ pipeline


def _params(epochs: int | None, batch_size: int | None, seed: int | None, extra: list[str]) -> dict:
    params: dict = {}
    for k, v in (("epochs", epochs), ("batch_size", batch_size), ("seed", seed)):
        if v is not None:
            params[k] = v
    from mimii_due.config import setting

    for item in extra or []:
        try:
            key, value = setting(item)
        except ConfigError as e:
            raise MimiiDueError(f"--set: {e}") from None
        params[key] = value
    return params


class _PipelineProgress:
    """Rich progress bars for the pipeline's (stage, machine, step, total, info) reports."""

    def __init__(self, bar: Progress):
        self.bar, self.tasks = bar, {}

    def __call__(self, stage: str, machine: str, step: int, total: int, info: str) -> None:
        key = (stage, machine)
        if key not in self.tasks:
            self.tasks[key] = self.bar.add_task(f"{stage} {machine}", total=total, info="")
        self.bar.update(self.tasks[key], completed=step, total=total, info=info)


def _detector_names() -> str:
    from mimii_due.detectors import REGISTRY

    return ", ".join(REGISTRY)


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
        "ensemble",
        "--detector",
        help="Detector name: ensemble (default), twfr_gmm, embedding, ae, mobilenetv2, smahal, gaussian.",
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
    cache: Path = typer.Option(None, help="Feature cache folder (default: RUN/features)."),
    skip_bad: bool = SKIP_BAD,
    year: int = YEAR,
    engine: str = ENGINE,
    address: str = ADDRESS,
    task_cpus: float = TASK_CPUS,
) -> None:
    """Train one detector per machine type."""
    from mimii_due import pipeline

    params = _params(epochs, batch_size, seed, set_)
    if members is not None:
        if detector != "ensemble":
            raise MimiiDueError(f"--members is a setting of the ensemble, not of {detector!r}")
        params["members"] = _machines(members) or []
    with _engine(engine, address, task_cpus) as eng, progress_bar() as bar:
        meta = pipeline.train(
            out,
            data,
            detector=detector,
            machines=_machines(machines),
            params=params,
            resume=resume,
            on_error=_on_error(skip_bad),
            cache=cache,
            year=year,
            progress=_PipelineProgress(bar),
            engine=eng,
        )
    stdout.print(f"trained {detector} for {', '.join(meta['machines'])} in {out}")


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
    bootstrap: int = typer.Option(0, min=0, help="Bootstrap draws of the test clips: the official score's sd."),
) -> None:
    """AUC, pAUC, precision, recall and F1 per machine, section and domain, as the year's
    official evaluator computes them; result.csv in its layout. With --bootstrap N, also how much
    the official score would move with another test set of the same size, and for several on the
    same clips, each one's difference from the first with its paired bootstrap sd. Given a folder
    of official score files (a submission, a baseline's output), it evaluates those."""
    from mimii_due import pipeline
    from mimii_due.report.tables import official_text, results_table

    rows = pipeline.compare(runs, ground_truth=ground_truth, protocol=protocol, bootstrap=bootstrap)
    stdout.print(results_table({r["name"]: r["results"] for r in rows}))
    for r in rows:
        s = r["summary"]
        luck = f" (bootstrap sd {s['bootstrap_sd']:.4f} over {bootstrap} test sets)" if "bootstrap_sd" in s else ""
        who = f"{r['name']}: " if len(rows) > 1 else ""
        stdout.print(f"{who}{_alarm_line(s['alarms'])}", markup=False)
        line = f"{who}official score ({s['protocol']}) {official_text(s['official_score'], 4)}{luck}"
        if "versus_first" in r:
            line += (f"; minus {rows[0]['name']}: {r['versus_first']:+.4f} (paired bootstrap sd "
                     f"{r['versus_first_sd']:.4f})")  # fmt: skip
        stdout.print(f"{line}; result.csv in {r['written']}", markup=False)
    if not all(r.get("same_clips", True) for r in rows):  # side by side, yet not on the same test clips
        console.print(f"[yellow]warning[/yellow] not all were evaluated on the test clips of {rows[0]['name']} (their "
                      "names, labels or year differ), so the table is not a comparison on the same clips")  # fmt: skip


def _alarm_line(alarms: dict) -> str:
    """How often the thresholds flagged the test clips: false alarms on the normal ones and
    detections of the anomalous ones (what an engineer sees of a detector in use)."""
    def share(k: int, n: int, what: str) -> str:
        return f"{k} of {n} {what} ({k / n:.1%})" if n else f"no {what}"

    return (f"flagged {share(alarms['false_alarms'], alarms['n_normal'], 'normal test clips')}, "
            f"{share(alarms['detected'], alarms['n_anomaly'], 'anomalous test clips')}")  # fmt: skip


@app.command()
def threshold(
    run: Path = typer.Argument(..., help="A run folder (after `mimii-due train`)."),
    rate: float = typer.Option(..., "--rate", help="Nominal false-alarm rate: 0.01, one in a hundred normal clips."),
    machines: str = typer.Option(None, help="Comma-separated machine types (default: all the run's)."),
) -> None:
    """Set how often the alarm may sound on normal clips: each model's threshold fitted again from
    its training scores, without retraining (default rate 0.10, the official code's). A tested run's
    decisions follow, and its evaluation where every test clip is labelled by its name. A running
    `serve` or `watch` of the run decides with the new threshold from its next clip."""
    from mimii_due import pipeline

    out = pipeline.threshold(run, rate=rate, machines=_machines(machines))
    for machine, t in out["machines"].items():
        stdout.print(f"{machine}: threshold {t['old']:.6g} -> {t['new']:.6g} (nominal false-alarm rate {rate:g}; "
                     f"it flags {t['flagged']} of the {t['clips']} training clips it was fitted on)",
                     markup=False)  # fmt: skip
    if out["updated"]:
        stdout.print("the test's decisions follow the new thresholds" + (
            "; evaluated again" if out["evaluated"] else
            "; run `mimii-due evaluate` (with the --ground-truth of evaluation clips) for precision, recall and F1"))
    stdout.print("a running `mimii-due serve` or `watch` of this run decides with them from its next clip",
                 markup=False)


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
) -> None:
    """The paper's Figure 1: a power spectrogram of one normal clip per machine type."""
    from mimii_due.data.index import index
    from mimii_due.report.figures import spectrograms

    table = index(data, on_error=_on_error(skip_bad))
    _report_skipped(table)
    stdout.print(f"wrote {spectrograms(table, out, on_error=_on_error(skip_bad))}")


@plot_app.command("tsne")
def plot_tsne(
    run: Path = typer.Argument(..., help="Run folder (gives the machine types and the feature cache)."),
    data: Path = typer.Argument(..., help="Dataset folder."),
    out: Path = typer.Option(Path("tsne.png"), "--out", help="PNG file to write."),
    seed: int = typer.Option(0, min=0, max=2**32 - 1, help="t-SNE seed."),
    skip_bad: bool = SKIP_BAD,
) -> None:
    """The paper's Figure 2: t-SNE of the test clips' clip-mean log-mel, by domain and label."""
    from mimii_due.data.index import index
    from mimii_due.features.extract import extract
    from mimii_due.report.figures import tsne
    from mimii_due.runs import Run

    keeper = Run(run)
    t = index(data, on_error=_on_error(skip_bad))
    t = t[(t.split == "test") & t.machine.isin(keeper.meta()["machines"])]
    feats, t = extract(t, cache=keeper.cache, on_error=_on_error(skip_bad))
    _report_skipped(t)
    stdout.print(f"wrote {tsne(t, feats.means(), out, seed=seed)}")


@app.command()
def run(
    data: Path = typer.Argument(None, help="Dataset folder; without it a small synthetic dataset is generated."),
    out: Path = typer.Option(Path("mimii_due_run"), "--out", help="Folder for data, runs and report."),
    detectors: str = typer.Option("ae,ensemble", help="Comma-separated detectors to train and compare."),
    machines: str = typer.Option(None, help="Comma-separated machine types (default: all)."),
    epochs: int = typer.Option(None, help="Override the paper's number of epochs (every detector)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Override the paper's batch size."),
    scale: float = typer.Option(
        None, help="Size of the generated dataset (no DATA; default: the main job's, 99 + 10 training clips)."
    ),
    ground_truth: Path = typer.Option(None, "--ground-truth", help="Ground truth of unlabelled test clips."),
    skip_bad: bool = SKIP_BAD,
    year: int = YEAR,
    engine: str = ENGINE,
    address: str = ADDRESS,
    task_cpus: float = TASK_CPUS,
) -> None:
    """The whole pipeline: (generate) -> train -> test -> evaluate -> Table-4-style result."""
    from mimii_due import pipeline
    from mimii_due.report.tables import official_text, results_table

    with _engine(engine, address, task_cpus) as eng, progress_bar() as bar:
        done = pipeline.run(
            out, data, detectors=_machines(detectors) or [], machines=_machines(machines),
            params=_params(epochs, batch_size, None, []), ground_truth=ground_truth,
            **({} if scale is None else {"scale": scale}),  # default: pipeline.DEFAULT_RUN
            on_error=_on_error(skip_bad), year=year, progress=_PipelineProgress(bar), engine=eng,
        )  # fmt: skip
    stdout.print(results_table(done["results"]))
    from mimii_due.evaluation.metrics import summarize

    for name, res in done["results"].items():
        s = summarize(res)
        stdout.print(f"{name}: {_alarm_line(s['alarms'])}", markup=False)
        stdout.print(f"{name}: official score {official_text(s['official_score'])} ({s['protocol']})", markup=False)
    stdout.print(f"runs in {out}; wall time {done['seconds']:.0f} s")
    stdout.print(f"report: {done['report']} (open it in a browser)")


# ---------------------------------------------------------------------------------- production


@app.command()
def score(
    model: Path = typer.Argument(..., help="A run folder or one saved model folder (RUN/models/<machine>)."),
    paths: list[Path] = typer.Argument(..., help="WAV files or folders of them (any names)."),
    machine: str = typer.Option(None, help=MACHINE_HELP),
    section: int = typer.Option(None, help="Section of the clips (default: from the names or the model)."),
    domain: str = typer.Option(None, help="source or target, where known."),
    out: Path = typer.Option(None, "--out", help="Write the table to this file."),
    fmt: str = typer.Option(None, "--format", help="csv or json (default: from --out's suffix, else csv)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Report clips that cannot be scored and exit 0 "
                                  "(default: the rest are scored and written, then exit 1)."),
    engine: str = ENGINE,
    address: str = ADDRESS,
    task_cpus: float = TASK_CPUS,
) -> None:
    """Score new recordings: a table of file, score, threshold and decision. A clip that cannot be
    scored (corrupt, silent, too short) never stops the others; it is reported, and fails the
    command unless --skip-bad."""
    import json

    from mimii_due import atomic
    from mimii_due.scoring import ModelSet, score_files

    fmt = fmt or ("json" if out is not None and out.suffix.lower() == ".json" else "csv")
    if fmt not in ("csv", "json"):
        raise MimiiDueError(f"--format must be csv or json, not {fmt!r}")
    if out is not None and out.suffix.lower() == ".wav":  # a recording (perhaps one scored here) is no table
        raise MimiiDueError("--out names a WAV file: the table of scores goes to a .csv or .json file", out)
    models = ModelSet(model)
    with _engine(engine, address, task_cpus) as eng, progress_bar(transient=True) as bar:
        task = bar.add_task("score", total=None, info="")

        def tick(done: int, total: int, info: str) -> None:
            bar.update(task, completed=done, total=total, info=info)

        decisions, failed = score_files(models, paths, machine=machine, section=section, domain=domain, progress=tick,
                                        engine=eng)  # fmt: skip
    t = Table(title=f"{len(decisions)} clip(s) scored with {model}")
    for col in ("file", "machine", "section", "score", "threshold", "decision"):
        t.add_column(col)
    for d in decisions:
        t.add_row(d.filename, d.machine, f"{d.section:02d}", f"{d.score:.6g}", f"{d.threshold:.6g}",
                  "[red]anomaly[/red]" if d.decision else "normal")  # fmt: skip
    stdout.print(t)
    if decisions:  # on a batch of new normal recordings: how often the alarm sounds, against what it should
        rates = sorted({round(1 - models.models[d.machine].threshold_quantile, 6) for d in decisions})
        flagged = sum(d.decision for d in decisions)
        stdout.print(f"{flagged} of {len(decisions)} flagged as anomalous ({flagged / len(decisions):.1%}); on normal "
                     f"clips the thresholds expect about {' / '.join(f'{r:.1%}' for r in rates)} (`mimii-due "
                     "threshold` sets it)", markup=False)  # fmt: skip
    for _, msg in failed:
        console.print(f"[yellow]not scored[/yellow] {escape(msg)}", highlight=False, soft_wrap=True)
    if out is not None:
        rows = [d.as_dict() for d in decisions]
        if fmt == "json":
            atomic.write_text(out, json.dumps(rows, indent=1))
        else:
            import pandas as pd

            atomic.write_text(out, pd.DataFrame(rows).to_csv(index=False))
        stdout.print(f"wrote {out}")
    if failed and (not decisions or not skip_bad):
        raise typer.Exit(1)


ON_ANOMALY_HELP = ("Run this command for each anomaly: the decision as JSON on its stdin, MIMII_DUE_FILE, _MACHINE, "
                   "_SECTION, _SCORE, _THRESHOLD set.")
ALARM_AFTER_HELP = ("K/N, e.g. 3/5: run the --on-anomaly command once a machine type and section has K anomalous "
                    "clips among its last N, and again only after that has cleared (default: for every anomaly).")


def _alarm(on_anomaly: str | None, alarm_after: str | None):
    """The user's alarm command, or None; --alarm-after without --on-anomaly is refused."""
    from mimii_due.serve.alarm import AlarmCommand, parse_after

    if on_anomaly is None:
        if alarm_after is not None:
            raise ConfigError("--alarm-after says when to run the --on-anomaly command: give that command too")
        return None
    return AlarmCommand(on_anomaly, after=parse_after(alarm_after) if alarm_after is not None else None)


def _token(token: str | None) -> str | None:
    import os

    return token or os.environ.get("MIMII_DUE_TOKEN") or None


@app.command()
def serve(
    run: Path = typer.Argument(..., help="A run folder (or one model folder) to serve."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; anything but loopback needs a token."),
    port: int = typer.Option(8000, help="TCP port (0: any free one, printed)."),
    token: str = typer.Option(None, help="Bearer token required on every request (or MIMII_DUE_TOKEN)."),
    db: Path = typer.Option(None, help=DB_HELP),
    keep_audio: Path = typer.Option(None, "--keep-audio", help="Keep every scored clip here (for retraining)."),
    max_mb: float = typer.Option(16.0, "--max-mb", help="Largest upload accepted, in MB."),
    threads: int = typer.Option(1, help="torch threads for scoring."),
    on_anomaly: str = typer.Option(None, "--on-anomaly", help=ON_ANOMALY_HELP),
    alarm_after: str = typer.Option(None, "--alarm-after", help=ALARM_AFTER_HELP),
) -> None:
    """An HTTP scoring service with a dashboard at / and Prometheus metrics at /metrics; with
    --on-anomaly, an anomaly also runs a command of yours (a mail, a chat message, a light)."""
    from mimii_due.serve.app import serve as _serve

    def announce(url: str) -> None:
        console.print(f"serving {run} on {url} (dashboard), POST /v1/score; Ctrl-C stops")

    _serve(run, host=host, port=port, token=_token(token), db=db, keep_audio=keep_audio,
           max_bytes=int(max_mb * 1024 * 1024), threads=threads, alarm=_alarm(on_anomaly, alarm_after),
           announce=announce)  # fmt: skip


@app.command()
def watch(
    run: Path = typer.Argument(..., help="A run folder (or one model folder)."),
    folder: Path = typer.Argument(..., help="Folder where new recordings land."),
    db: Path = typer.Option(None, help=DB_HELP),
    machine: str = typer.Option(None, help=MACHINE_HELP),
    section: int = typer.Option(None, help="Section of the clips."),
    settle: float = typer.Option(1.0, help="Seconds a file must stay unchanged before it is scored."),
    max_seconds: float = typer.Option(None, "--max-seconds", help="Stop after this long (default: run until Ctrl-C)."),
    on_anomaly: str = typer.Option(None, "--on-anomaly", help=ON_ANOMALY_HELP),
    alarm_after: str = typer.Option(None, "--alarm-after", help=ALARM_AFTER_HELP),
) -> None:
    """Score every WAV already in FOLDER and every new one, recording each decision; with
    --on-anomaly, an anomaly also runs a command of yours (a mail, a chat message, a light)."""
    from mimii_due.scoring import ModelSet
    from mimii_due.serve.record import Record, default_path
    from mimii_due.serve.watch import Watcher

    alarm = _alarm(on_anomaly, alarm_after)

    def show(d, path: str) -> None:
        tag = "[red]ANOMALY[/red]" if d.decision else "normal"
        stdout.print(
            f"{d.filename}  {d.machine} {d.section:02d}  score {d.score:.6g} (threshold {d.threshold:.6g})  {tag}"
        )
        if alarm is not None:
            alarm(d, path)

    def bad(path: str, message: str) -> None:
        console.print(f"[yellow]not scored[/yellow] {escape(message)}", soft_wrap=True)

    record = Record(db or default_path(run))
    w = Watcher(ModelSet(run), record, folder, settle=settle, machine=machine, section=section, on_decision=show,
                on_error=bad)  # fmt: skip
    console.print(f"watching {folder}; Ctrl-C stops")
    try:
        n = w.run(max_seconds=max_seconds)
    except KeyboardInterrupt:
        n = w.scored
    finally:
        if alarm is not None:
            alarm.close()
    sent = f"; {alarm.sent} alarm(s) sent, {alarm.failed} failed" if alarm is not None else ""
    console.print(f"{n} clip(s) scored{sent}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""The data commands: info, download, synth, mix, split."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

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
    progress_bar,
    stdout,
)
from mimii_due.errors import MimiiDueError


def _snrs(value: str | None) -> list[int] | None:
    try:
        return [int(v.removesuffix("dB")) for v in _machines(value)] if value else None
    except ValueError:
        raise MimiiDueError(f"--snr takes whole decibels such as 6,0,-6, not {value!r}") from None


@app.command()
def info(
    path: Path = typer.Argument(..., help="A dataset folder (dev_data/, eval_data/, a machine folder...)."),
    strict: bool = typer.Option(False, help="Exit non-zero when any count differs from the year's counts."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Report and skip unreadable clips."),
    year: int = YEAR,
    audio: bool = typer.Option(False, "--audio", help="Also decode every clip and look for recording faults: "
                               "clipping, a level far from its training clips', DC offset, damaged data."),
    channel: int = CHANNEL,
) -> None:
    """Count the clips found, say which DCASE year they are, and compare them with its counts
    (2021: the paper's Table 1); with --audio, check the recordings themselves. Of a run folder (or
    a model folder): what it holds, its models, thresholds, test results and evaluation."""
    from mimii_due.data.index import index
    from mimii_due.data.table1 import compare
    from mimii_due.data.years import name_of
    from mimii_due.runs import Run

    if (path / "detector.json").exists() or Run.of(path).exists():
        _describe_run(path)
        return
    held = sorted(p.parent for p in path.glob("*/run.json")) if path.is_dir() else []
    if held:  # a `run --out` folder: its runs, a line each
        _describe_runs(held)
        return

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
        "no challenge's counts to compare with (train/: normal clips; test/normal/, test/anomaly/: test clips; "
        "a target/ folder right under one of them: clips of a new operating condition, the target domain)")
    channels = sorted(int(c) for c in table.channels.unique())
    read = f" (of multichannel clips channel {channel} is read; --channel N names another)" if channels[-1] > 1 else ""
    stdout.print(f"{compared}; sample rates (Hz): {', '.join(map(str, rates))}; channels: "
                 f"{', '.join(map(str, channels))}{read}", markup=False)  # fmt: skip
    for _, msg in table.attrs.get("skipped", []):
        console.print(f"[yellow]skipped[/yellow] {msg}")
    found = _audio_problems(table, channel) if audio else 0
    if strict and (n_diff or found):
        raise typer.Exit(2)


def _describe_runs(folders: list[Path]) -> None:
    """``info`` of a folder of runs (``run --out``): each run's detector, machine types and official score."""
    from mimii_due.report.tables import official_text
    from mimii_due.runs import Run, run_names

    about = [Run(f).describe() for f in folders]
    names = run_names([(f, a["detector"], a["params"] or {}) for f, a in zip(folders, about, strict=True)])
    n = len(folders)
    stdout.print(f"{n} run{'s' if n > 1 else ''} (`mimii-due info RUN` says more of one):", markup=False)
    for a, name in zip(about, names, strict=True):
        e = a["evaluated"] if "error" not in a["tested"] else a["tested"]
        state = e["error"] if "error" in e else f"official score {official_text(e['official_score'])} ({e['protocol']})"
        stdout.print(f"  {name}: {', '.join(a['models'])}; {state}", markup=False, soft_wrap=True)


def _describe_run(path: Path) -> None:
    """``info`` of a run folder, a run's results folder or a model folder."""
    import time

    from mimii_due.detectors import format_spec
    from mimii_due.runs import Run, model_record

    def when(t: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))

    if (path / "detector.json").exists():  # a model folder
        about, models = {}, {path.name: model_record(path)}
        if models[path.name] is None:
            raise MimiiDueError("a model folder whose detector.json does not read", path)
        stdout.print(f"model folder {path}: {models[path.name]['detector']}", markup=False)
    else:
        keeper = Run.of(path)
        about = keeper.describe()
        models = about["models"]
        feats = ", ".join(f"{k}={v}" for k, v in (about["features"] or {}).items())
        stdout.print(f"run folder {keeper.path}: {format_spec(about['detector'], about['params'])}"
                     + (f", features {feats}" if feats else "") + (f", channel {about['channel']}" if about["channel"]
                     else "") + f"; trained with mimii-due {about['version']} on {about['data']}",
                     markup=False, soft_wrap=True)  # fmt: skip
    t = Table()
    for col in ("machine", "sections", "training clips", "threshold", "false-alarm rate", "model saved (UTC)"):
        t.add_column(col)
    for machine, m in models.items():
        if m is None:
            t.add_row(escape(machine), "no model that reads", "", "", "", "")
        else:
            t.add_row(escape(machine), ", ".join(f"{s:02d}" for s in m["sections"]), str(m["clips"]),
                      f"{m['threshold']:.6g}", f"{m['rate']:.4g}", when(m["saved"]))  # fmt: skip
    stdout.print(t)
    if not about:
        return
    if about.get("retraining_since"):
        console.print(f"[yellow]a retraining started at {when(about['retraining_since'])} UTC stopped before its "
                      "end[/]: `mimii-due train DATA --out RUN --retrain` again goes on with it",
                      highlight=False)  # fmt: skip
    tested, evaluated = about["tested"], about["evaluated"]
    if "error" in tested:
        stdout.print(f"test results: {tested['error']}", markup=False, soft_wrap=True)
        return
    from mimii_due.report.tables import official_text

    stdout.print(f"test results: {tested['clips']} clips of {tested['data']}, scored by these models", markup=False,
                 soft_wrap=True)  # fmt: skip
    score = evaluated.get("official_score")
    stdout.print("evaluation: " + (evaluated["error"] if "error" in evaluated else
                                   f"official score {official_text(score)} ({evaluated['protocol']})"), markup=False)


def _audio_problems(table, channel: int) -> int:
    """``info --audio``: every clip decoded and measured; the problems found listed (the first 20)."""
    from mimii_due.data import quality

    with progress_bar(transient=True) as bar:
        task = bar.add_task("audio", total=len(table), info="")
        measured = quality.measure(table, channel=channel,
                                   progress=lambda done, total, info="": bar.update(task, completed=done))
    found = quality.problems(measured)
    levels = measured["level_db"].dropna()
    spread = f"level {levels.min():.1f} to {levels.max():.1f} dBFS; " if len(levels) else ""
    stdout.print(f"audio: {len(levels)} of {len(measured)} clips decoded; {spread}{found['path'].nunique()} with a "
                 "problem" + (":" if len(found) else ""), markup=False)  # fmt: skip
    for r in found.head(20).itertuples():
        console.print(f"[yellow]{r.problem}[/yellow] {escape(r.path)}: {escape(r.detail)}", soft_wrap=True)
    if len(found) > 20:
        console.print(f"... and {len(found) - 20} more")
    levels, n = quality.channel_levels(table)
    if levels:  # which microphone hears the machine: the loudest is usually the one on it
        stdout.print(f"channel levels (median of {n} multichannel clips, dBFS): " + ", ".join(
            f"{c}: {v:.1f}" for c, v in levels.items()) + f"; channel {channel} is read (--channel N)",
            markup=False)  # fmt: skip
    return len(found)


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




@app.command()
def synth(
    out: Path = typer.Argument(..., help="Output folder (gets dev_data/, eval_data/, ground_truth/)."),
    machines: str = typer.Option(None, help="Comma-separated machine types (default: all five)."),
    sections: str = typer.Option(None, help="Comma-separated section numbers, e.g. 0,1,2 "
                                 "(default: 0-5; 0 in the dcase2023 layout)."),
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
    from mimii_due.data.table1 import MACHINES
    from mimii_due.synth.generate import generate

    ms = _machines(machines) or list(MACHINES)
    try:
        ss = [int(s) for s in sections.split(",")] if sections else None  # None: the layout's own
    except ValueError as e:
        raise MimiiDueError(f"--sections takes section numbers like 0,1,2, not {sections!r}") from e
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
    channel: int = CHANNEL,
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
            channel=channel,
            progress=lambda done, total, info="": bar.update(task, completed=done, total=total),
        )
    clipped = sum(r["clipped"] for r in recs)
    stdout.print(f"{len(recs)} clips mixed into {out}" + (f" ({clipped} clipped at full scale)" if clipped else ""))


@app.command()
def split(
    recordings: Path = typer.Argument(..., help="A folder of recordings (e.g. recordings/pump/train)."),
    out: Path = typer.Argument(..., help="A new folder for the clips (the folders below RECORDINGS are kept)."),
    seconds: float = typer.Option(10.0, "--seconds", help="The clips' length (DCASE's and MIMII's are 10 s)."),
) -> None:
    """Cut long recordings (a shift, an hour) into clips to train on: the detectors learn from many
    clips of about the length they will score, and pool each clip into one vector. A recorder's
    FLAC, AIFF or Wave64 files become WAV clips, sample for sample."""
    from mimii_due.data.split import split_folder

    with progress_bar() as bar:
        task = bar.add_task("split", total=None, info="")
        recs = split_folder(recordings, out, seconds=seconds,
                            progress=lambda done, total, info="": bar.update(task, completed=done, total=total))
    cut = len({r["source"] for r in recs if r["start_s"] > 0})
    converted = sum(not r["source"].lower().endswith(".wav") for r in recs)
    stdout.print(f"{len(recs)} clips in {out} ({cut} recording(s) cut into clips of {seconds:g} s, the others "
                 "copied as they are" + (f"; {converted} clip(s) from FLAC, AIFF or Wave64 written as WAV" if converted
                 else "") + "; split_meta.csv says where each clip lies)", markup=False)  # fmt: skip

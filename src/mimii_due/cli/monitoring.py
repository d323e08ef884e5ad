"""The production commands: threshold, score, serve, watch."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from mimii_due.cli import ADDRESS, ENGINE, TASK_CPUS, _engine, _machines, app, console, progress_bar, stdout
from mimii_due.errors import ConfigError, MimiiDueError

DB_HELP = "SQLite record of decisions (default: RUN/decisions.sqlite, also when serving RUN/models/<machine>)."
MACHINE_HELP = ("Machine type of the clips (default: the model's only one, or the nearest folder named after "
                "one of the models, e.g. dev_data/fan/test/).")


# ------------------------------------------------------------------------------------ pipeline


@app.command()
def threshold(
    run: Path = typer.Argument(..., help="A run folder (after `mimii-due train`)."),
    rate: float = typer.Option(None, "--rate", help="Nominal false-alarm rate: 0.01, one in a hundred normal clips."),
    every: str = typer.Option(None, "--every", help="Or: one false alarm on a sound machine this seldom, e.g. 7d "
                              "(with --clip-every, and --alarm-after as the watch or service uses it)."),
    clip_every: str = typer.Option(None, "--clip-every", help="With --every: how often a clip is scored, e.g. 10s."),
    alarm_after: str = typer.Option(None, "--alarm-after", help="With --every: the watch's or service's K/N."),
    machines: str = typer.Option(None, help="Comma-separated machine types (default: all the run's)."),
) -> None:
    """Set how often the alarm may sound on normal clips: each model's threshold fitted again from
    its training scores, without retraining (default rate 0.10, the official code's). A tested run's
    decisions follow, and its evaluation where every test clip is labelled by its name. A running
    `serve` or `watch` of the run decides with the new threshold from its next clip."""
    from mimii_due import pipeline

    rate = _rate(rate, every, clip_every, alarm_after)
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


def _rate(rate: float | None, every: str | None, clip_every: str | None, alarm_after: str | None) -> float:
    """``threshold``'s false-alarm rate per clip: given, or the one at which a sound machine sounds
    the alarm once ``every`` (each anomalous clip, or K of N: :func:`serve.alarm.rate_for`)."""
    from mimii_due.cli import _seconds
    from mimii_due.serve.alarm import false_alarm_every, parse_after, rate_for

    if (rate is None) == (every is None):
        raise ConfigError("give --rate (per clip) or --every (one false alarm this seldom, e.g. 7d), one of them")
    if rate is not None:
        if clip_every is not None or alarm_after is not None:
            raise ConfigError("--clip-every and --alarm-after go with --every")
        return rate
    if clip_every is None:
        raise ConfigError("--every needs --clip-every: how often a clip is scored (e.g. 10s), to count the clips")
    for option, text in (("--every", every), ("--clip-every", clip_every)):
        if not _seconds(text):
            raise ConfigError(f"{option} takes a duration such as 7d, 12h, 90m or 10s, not {text!r}")
    span, clip = _seconds(every), _seconds(clip_every)
    k, n = parse_after(alarm_after) if alarm_after is not None else (None, None)
    if k is None and span <= clip:
        raise ConfigError(f"--every {every} is not longer than --clip-every {clip_every}: with each anomalous clip "
                          "an alarm, that is every clip an alarm; give a longer time")  # fmt: skip
    rate = clip / span if k is None else rate_for(span / clip, k, n)  # without K/N each anomalous clip sounds it
    every_clips = 1 / rate if k is None else false_alarm_every(rate, k, n)
    how = "each anomalous clip" if k is None else f"{k} of {n} anomalous clips"
    stdout.print(f"rate {rate:.4g} per clip: with {how} an alarm and a clip every {clip_every}, a sound machine "
                 f"sounds it about once every {every} ({every_clips:,.0f} clips; independent clips)",
                 markup=False)  # fmt: skip
    return rate


@app.command()
def score(
    model: Path = typer.Argument(..., help="A run folder or one saved model folder (RUN/models/<machine>)."),
    paths: list[Path] = typer.Argument(..., help="WAV files or folders of them (any names)."),
    machine: str = typer.Option(None, help=MACHINE_HELP),
    section: int = typer.Option(None, help="Section of the clips (default: from the names or the model)."),
    domain: str = typer.Option(None, help="source or target, where known."),
    out: Path = typer.Option(None, "--out", help="Write the table to this file (- : to standard output, alone)."),
    fmt: str = typer.Option(None, "--format", help="csv or json (default: from --out's suffix, else csv); without "
                            "--out, the table in that format is all that goes to standard output (for a script)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Report clips that cannot be scored and exit 0 "
                                  "(default: the rest are scored and written, then exit 1)."),
    engine: str = ENGINE,
    address: str = ADDRESS,
    task_cpus: float = TASK_CPUS,
) -> None:
    """Score new recordings: a table of file, score, threshold and decision. A clip that cannot be
    scored (corrupt, silent, too short) never stops the others; it is reported, and fails the
    command unless --skip-bad."""
    from mimii_due import atomic
    from mimii_due.evaluation.threshold import EXCESS_P, excess_alarms_p
    from mimii_due.scoring import ModelSet, score_files

    piped = (out is None and fmt is not None) or str(out) == "-"  # the table alone on stdout; the rest on stderr
    out = None if piped else out
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
    said = console if piped else stdout
    if piped:
        sys.stdout.write(_decision_table(decisions, fmt))
        sys.stdout.flush()
    else:
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
        said.print(f"{flagged} of {len(decisions)} flagged as anomalous ({flagged / len(decisions):.1%}); on normal "
                   f"clips the thresholds expect about {' / '.join(f'{r:.1%}' for r in rates)} (`mimii-due "
                   "threshold` sets it)", markup=False)  # fmt: skip
        if len(rates) == 1 and 0 < rates[0] < 1:  # one rate to test against
            p = excess_alarms_p(flagged, len(decisions), rates[0])
            verdict = ("more than the rate explains: the machine, its sound or the recording may have changed since "
                       "the training clips, or the threshold does not carry over to new clips (a new operating "
                       "condition of a sound machine? put a few of its clips into <machine>/train/target/ and train "
                       "again)" if p < EXCESS_P else "within what chance gives")  # fmt: skip
            said.print(f"if these clips are normal, that many alarms or more come by chance with p = {p:.2g} "
                       f"(binomial test): {verdict}", markup=False)  # fmt: skip
    for _, msg in failed:
        console.print(f"[yellow]not scored[/yellow] {escape(msg)}", highlight=False, soft_wrap=True)
    if out is not None:
        atomic.write_text(out, _decision_table(decisions, fmt))
        stdout.print(f"wrote {out}")
    if failed and (not decisions or not skip_bad):
        raise typer.Exit(1)


def _decision_table(decisions: list, fmt: str) -> str:
    """The decisions as ``score --out`` writes them: a CSV table or a JSON list, with every column."""
    import json

    import pandas as pd

    from mimii_due.scoring import DECISION_COLUMNS

    rows = [d.as_dict() for d in decisions]
    if fmt == "json":
        return json.dumps(rows, indent=1) + "\n"
    return pd.DataFrame(rows, columns=list(DECISION_COLUMNS)).to_csv(index=False)


ON_ANOMALY_HELP = ("Run this command for each anomaly: the decision as JSON on its stdin, MIMII_DUE_FILE, _MACHINE, "
                   "_SECTION, _SCORE, _THRESHOLD set.")
ALARM_AFTER_HELP = ("K/N, e.g. 3/5: run the --on-anomaly command once a machine type and section has K anomalous "
                    "clips among its last N, and again only after that has cleared (default: for every anomaly).")


EXPLAIN_HELP = ("With --on-anomaly: tell each alarm's command where the clip differs from the training clips "
                "(`why` and `bands` in its JSON, MIMII_DUE_WHY; a service explains the clips it keeps, --keep-audio).")


def _alarm(on_anomaly: str | None, alarm_after: str | None, explain: bool = False):
    """The user's alarm command, or None; --alarm-after or --explain without --on-anomaly is refused."""
    from mimii_due.serve.alarm import AlarmCommand, parse_after

    if on_anomaly is None:
        for given, option in ((alarm_after is not None, "--alarm-after says when"), (explain, "--explain says why")):
            if given:
                raise ConfigError(f"{option} to run the --on-anomaly command: give that command too")
        return None
    return AlarmCommand(on_anomaly, after=parse_after(alarm_after) if alarm_after is not None else None)


def _prepare_alarm(alarm, models, run: Path, explain: bool) -> None:
    """Say how often --alarm-after would sound on a sound machine at the models' thresholds; with
    --explain, give the alarm what tells it why."""
    if explain:
        from mimii_due.report.explain import Explainer

        alarm.explainer = Explainer(run, models)
    if alarm is not None:
        for line in alarm.expectation(1 - det.threshold_quantile for det in models.models.values()):
            console.print(line, markup=False, highlight=False)


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
    keep_max_mb: float = typer.Option(None, "--keep-max-mb", help="With --keep-audio: remove the oldest kept clips "
                                      "once they exceed this many MB (default: keep all)."),
    max_mb: float = typer.Option(16.0, "--max-mb", help="Largest upload accepted, in MB."),
    threads: int = typer.Option(1, help="torch threads for scoring."),
    on_anomaly: str = typer.Option(None, "--on-anomaly", help=ON_ANOMALY_HELP),
    alarm_after: str = typer.Option(None, "--alarm-after", help=ALARM_AFTER_HELP),
    explain: bool = typer.Option(False, "--explain", help=EXPLAIN_HELP),
) -> None:
    """An HTTP scoring service with a dashboard at / and Prometheus metrics at /metrics; with
    --on-anomaly, an anomaly also runs a command of yours (a mail, a chat message, a light)."""
    from mimii_due.scoring import ModelSet
    from mimii_due.serve.app import serve as _serve

    def announce(url: str) -> None:
        console.print(f"serving {run} on {url} (dashboard), POST /v1/score; Ctrl-C stops")

    if keep_max_mb is not None and keep_audio is None:
        raise ConfigError("--keep-max-mb limits the audio that --keep-audio keeps: give that folder too")
    if keep_max_mb is not None and not 0 < keep_max_mb < 1e9:  # nan and inf too
        raise ConfigError(f"--keep-max-mb must be a positive number of MB, not {keep_max_mb!r}")
    keep_max = None if keep_max_mb is None else max(1, int(keep_max_mb * 1024 * 1024))
    alarm = _alarm(on_anomaly, alarm_after, explain)
    models = ModelSet(run)
    _prepare_alarm(alarm, models, run, explain)
    _serve(run, host=host, port=port, token=_token(token), db=db, keep_audio=keep_audio, keep_max_bytes=keep_max,
           max_bytes=int(max_mb * 1024 * 1024), threads=threads, alarm=alarm, announce=announce,
           models=models)  # fmt: skip


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
    explain: bool = typer.Option(False, "--explain", help=EXPLAIN_HELP),
) -> None:
    """Score every WAV already in FOLDER and every new one, recording each decision; with
    --on-anomaly, an anomaly also runs a command of yours (a mail, a chat message, a light)."""
    from mimii_due.scoring import ModelSet
    from mimii_due.serve.record import Record, default_path
    from mimii_due.serve.watch import Watcher

    alarm = _alarm(on_anomaly, alarm_after, explain)

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
    models = ModelSet(run)
    _prepare_alarm(alarm, models, run, explain)
    if alarm is not None:
        alarm.resume(record)  # a watch started again goes on counting K of N from its record
    w = Watcher(models, record, folder, settle=settle, machine=machine, section=section, on_decision=show,
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

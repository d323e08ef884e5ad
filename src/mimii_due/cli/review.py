"""What a watch or service recorded, looked at: how each machine did (status), the score history
(plot history), why an alarm sounded (explain), and the recorded clips back into training data
(collect)."""

from __future__ import annotations

from pathlib import Path

import typer

from mimii_due.cli import _seconds, app, plot_app, stdout
from mimii_due.cli.monitoring import DB_HELP, MACHINE_HELP
from mimii_due.errors import ConfigError, MimiiDueError


def _span(since: str | None, until: str | None) -> tuple[float | None, float | None]:
    """``--since`` and ``--until`` as seconds since the epoch, the first not after the second."""
    start, end = _when(since, "--since"), _when(until, "--until")
    if start is not None and end is not None and start > end:
        raise ConfigError(f"--since {since} is after --until {until}: nothing lies between them")
    return start, end


def _said(text: str) -> str:
    """A ``--since``/``--until`` as a reader takes it: ``12h ago``, or the time as given."""
    return f"{text.strip()} ago" if _seconds(text) is not None else text


def _when(text: str | None, option: str) -> float | None:
    """``--since``/``--until``: an ISO 8601 time (UTC unless it carries an offset) or a time ago
    (``90m``, ``12h``, ``7d``), as seconds since the epoch."""
    import time
    from datetime import UTC, datetime

    if text is None:
        return None
    ago = _seconds(text)
    if ago is not None:
        return time.time() - ago
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} takes a time such as 2026-12-07T08:00 (UTC unless it says +01:00) or a time "
                          f"ago such as 12h or 7d, not {text!r}") from None  # fmt: skip
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def _thresholds(run: Path) -> dict[str, tuple[float, float]]:
    """Each machine type's threshold now and the false-alarm rate it expects, where its model is
    still there (read from the model files, not loaded)."""
    from mimii_due.runs import Run, model_threshold

    if (Path(run) / "detector.json").exists():  # one model folder
        found = model_threshold(run)
        return {} if found is None else {Path(run).name: found}
    try:
        return Run(run).thresholds()
    except MimiiDueError:
        return {}


SINCE_HELP = "From: 2026-12-07T08:00 (UTC unless it says +01:00), or a time ago: 12h, 7d (default: the first)."
UNTIL_HELP = "Up to, in the same form (default: now)."
RUN_HELP = "The run folder (or model folder) that is or was served or watched."


def _recorded(run: Path, db: Path | None):
    """The decision record of a run that was served or watched (never a new, empty one)."""
    from mimii_due.serve.record import Record, default_path

    db = db or default_path(run)
    if not db.exists():
        raise MimiiDueError("no decision record here: serve or watch the run first, or give --db", db)
    return Record(db)


@app.command()
def collect(
    run: Path = typer.Argument(..., help=RUN_HELP),
    out: Path = typer.Argument(..., help="Where the clips go, e.g. recordings/pump/train/target/."),
    db: Path = typer.Option(None, help=DB_HELP),
    machine: str = typer.Option(None, help="Machine type (default: the only one recorded in that time)."),
    section: int = typer.Option(None, help="Section (default: the only one recorded in that time)."),
    since: str = typer.Option(None, help=SINCE_HELP),
    until: str = typer.Option(None, help=UNTIL_HELP),
    normal_only: bool = typer.Option(False, "--normal-only", help="Only clips decided normal (default: all: after a "
                                     "change of operating condition its alarms are normal clips a new model needs)."),
    limit: int = typer.Option(None, help="At most this many clips, the most recent (e.g. 10, as DCASE 2022-2025 "
                              "give of a new condition)."),
) -> None:
    """Copy recorded clips of one machine type (the watched files, or the service's --keep-audio
    copies) into a folder for training: after a change of operating condition that people have
    checked, into recordings/<machine>/train/target/, then train again."""
    from mimii_due.serve.collect import collect as _collect

    if since is None and limit is None:  # a record of months would copy every clip it kept
        raise ConfigError("say which clips: --since (e.g. 12h, since the change) or --limit (e.g. the 10 most recent)")
    start, end = _span(since, until)
    got = _collect(_recorded(run, db), out, machine=machine, section=section, since=start, until=end,
                   normal_only=normal_only, limit=limit)  # fmt: skip
    said = [f"{got.present} already there"] if got.present else []
    if got.anomalous:
        said.append(f"{got.anomalous} decided anomalous left out (--normal-only)")
    if got.not_kept:
        said.append(f"{got.not_kept} uploads not kept (serve with --keep-audio to keep them)")
    if got.missing:
        said.append(f"{len(got.missing)} no longer as scored (removed or overwritten since), e.g. {got.missing[0]}")
    stdout.print(f"copied {len(got.copied)} clip(s) of {got.machine} section {got.section:02d} into {out}"
                 + (f"; {'; '.join(said)}" if said else ""), markup=False)  # fmt: skip


@plot_app.command("history")
def plot_history(
    run: Path = typer.Argument(..., help=RUN_HELP),
    db: Path = typer.Option(None, help=DB_HELP),
    machine: str = typer.Option(None, help="Only this machine type (default: every one recorded)."),
    since: str = typer.Option(None, help=SINCE_HELP),
    until: str = typer.Option(None, help=UNTIL_HELP),
    window: int = typer.Option(20, help="Clips in the moving share of anomalous decisions."),
    out: Path = typer.Option(Path("history.png"), "--out", help="Image file to write (.png, .pdf, .svg)."),
) -> None:
    """The score history a watch or service recorded: each clip's score and decision over time,
    the threshold, and the share of anomalous clips against the rate the threshold expects."""
    import pandas as pd

    from mimii_due.report.figures import score_history

    start, end = _span(since, until)
    record = _recorded(run, db)
    rows = record.select(machine=machine, since=start, until=end)
    if not rows:
        raise ConfigError(f"no decisions {'of ' + machine + ' ' if machine else ''}recorded in that time", record.path)
    expected = {m: rate for m, (_, rate) in _thresholds(run).items()}
    stdout.print(f"wrote {score_history(pd.DataFrame(rows), out, window=window, expected=expected)}")


@app.command()
def explain(
    model: Path = typer.Argument(..., help="A run folder or one saved model folder (RUN/models/<machine>)."),
    clip: Path = typer.Argument(..., help="The WAV file to explain (an alarm's clip)."),
    machine: str = typer.Option(None, help=MACHINE_HELP),
    section: int = typer.Option(None, help="Section of the clip (default: from its name or the model)."),
    data: Path = typer.Option(None, help="The data folder the model was trained from (default: the run's)."),
    out: Path = typer.Option(Path("explain.png"), "--out", help="Image file to write (.png, .pdf, .svg)."),
) -> None:
    """Why a clip was flagged: its score, and where in the spectrum it differs from its machine's
    training clips (each mel band's mean level and loudest frame against their spread), drawn."""
    from mimii_due.report.explain import explain_file
    from mimii_due.report.figures import explanation

    d, e, frames = explain_file(model, clip, machine=machine, section=section, data=data)
    verdict = "ANOMALY" if d.decision else "normal"
    stdout.print(f"{clip}: {d.machine} section {d.section:02d}, score {d.score:.6g} (threshold {d.threshold:.6g}), "
                 f"{verdict}", markup=False)  # fmt: skip
    stdout.print(e.summary(), markup=False)
    title = f"{clip.name}, score {d.score:.4g} / threshold {d.threshold:.4g} ({verdict.lower()})"
    stdout.print(f"wrote {explanation(e, frames, out, title=title, machine=d.machine)}")


@app.command()
def status(
    run: Path = typer.Argument(..., help=RUN_HELP),
    db: Path = typer.Option(None, help=DB_HELP),
    since: str = typer.Option("24h", help="From: 2026-12-07T08:00 (UTC unless it says +01:00), or a time ago: "
                              "12h, 7d."),
    until: str = typer.Option(None, help=UNTIL_HELP),
    strict: bool = typer.Option(False, help="Exit 2 when a machine type alarmed more than chance explains, "
                                "or sent no clips in that time though it had before (for a daily check from cron)."),
    alarm_after: str = typer.Option(None, "--alarm-after", help="Also count the alarms K/N would have raised on these "
                                    "decisions (to choose K/N on one's own history)."),
) -> None:
    """How each machine type and section did in a time (default: the last 24 h): clips scored,
    alarms against the rate the threshold expects (exact binomial test), the last alarm; and which
    sent no clips in that time though they had before (a recorder that stopped)."""
    import math
    from datetime import UTC, datetime

    from rich.table import Table

    from mimii_due.evaluation.threshold import EXCESS_P, excess_alarms_p
    from mimii_due.serve.alarm import parse_after, raised_at

    start, end = _span(since, until)
    after = parse_after(alarm_after) if alarm_after is not None else None
    record = _recorded(run, db)
    rows = record.select(since=start, until=end)
    when = (f"in the last {since.strip()}" if until is None and _seconds(since) is not None
            else f"since {_said(since)}" + (f" until {_said(until)}" if until is not None else ""))  # fmt: skip
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["machine"], r["section"]), []).append(r)
    silent = [f"{m} section {s:02d} (last {datetime.fromtimestamp(at, UTC):%Y-%m-%d %H:%M:%S})"
              for (m, s), at in sorted(record.last_times(until=end).items()) if (m, s) not in groups]  # fmt: skip
    if not rows:  # an error, also for a cron check: every recorder may have stopped
        raise ConfigError(f"no decisions recorded {when}" + (f"; the last from {', '.join(silent)}" if silent else ""),
                          record.path)  # fmt: skip
    now = _thresholds(run)
    t = Table(title=f"{len(rows)} clips scored {when}")
    for col in ("machine", "section", "clips", "alarms", "share", "expected", "p (binomial)", "last alarm (UTC)",
                *([f"raised by {alarm_after}"] if after else [])):  # fmt: skip
        t.add_column(col)
    excess, earlier = [], []
    for (machine, section), g in sorted(groups.items()):
        flagged = [r for r in g if r["decision"]]
        threshold, rate = now.get(machine, (None, None))
        # only the decisions made with today's threshold are tested against its rate (a threshold set
        # stricter this morning would otherwise make yesterday's alarms look like too many)
        tested = [r for r in g if threshold is not None and math.isclose(r["threshold"], threshold, rel_tol=1e-9)]
        if len(tested) < len(g) and threshold is not None:
            earlier.append(f"{machine} section {section:02d} ({len(g) - len(tested)})")
        p = (excess_alarms_p(sum(r["decision"] for r in tested), len(tested), rate)
             if rate is not None and 0 < rate < 1 and tested else None)  # fmt: skip
        if p is not None and p < EXCESS_P:
            excess.append(f"{machine} section {section:02d}")
        last = datetime.fromtimestamp(flagged[-1]["time"], UTC).strftime("%Y-%m-%d %H:%M:%S") if flagged else "-"
        raised = [str(len(raised_at([r["decision"] for r in g], *after)))] if after else []
        t.add_row(machine, f"{section:02d}", str(len(g)), str(len(flagged)), f"{len(flagged) / len(g):.1%}",
                  "-" if rate is None else f"{rate:.1%}", "-" if p is None else f"{p:.2g}", last, *raised)  # fmt: skip
    stdout.print(t)
    if silent:  # recorded before, nothing in this time: a recorder or a machine that stopped
        stdout.print(f"no clips in that time from: {', '.join(silent)}: a recorder, its network or the machine "
                     "may have stopped", markup=False)  # fmt: skip
    if earlier:
        stdout.print("decided with an earlier threshold (set by `threshold`, or of a model before `train --retrain`), "
                     "so left out of the binomial test against today's rate: "
                     + ", ".join(earlier), markup=False)  # fmt: skip
    if excess:
        stdout.print(f"more alarms than the thresholds' rate explains (p < {EXCESS_P}): {', '.join(excess)}: the "
                     "machine, its sound or the recording may have changed (`mimii-due plot history`, "
                     "`mimii-due explain` on an alarm's clip)", markup=False)  # fmt: skip
    else:
        stdout.print("every machine type's alarms are within what chance gives at its threshold's rate", markup=False)
    if strict and (excess or silent):
        raise typer.Exit(2)

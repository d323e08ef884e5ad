"""The ``mimii-due`` command: thin commands over library functions.

Package errors become a one-line message and exit code 1 (a traceback only with ``--debug``).
This module holds the command group and what the commands share; the commands are in
``data`` (info, download, synth, mix), ``experiments`` (train, test, evaluate, report, plot, run),
``monitoring`` (threshold, score, serve, watch) and ``review`` (status, plot history, explain, collect).
"""

from __future__ import annotations

import logging
import re
import sys

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from typer.core import TyperGroup

from mimii_due.errors import MimiiDueError


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
plot_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                       help="Draw the paper's figures, and the score history of a watch or service.")
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


class _Bars(Progress):
    """A task whose total is not known yet stays hidden until its first report: a command refused
    before its work starts shows its error, not an empty bar ("mix 0/None") above it."""

    def add_task(self, description, *args, total=100.0, **kwargs):
        if total is None:
            kwargs.setdefault("visible", False)
        return super().add_task(description, *args, total=total, **kwargs)

    def update(self, task_id, **kwargs):
        kwargs.setdefault("visible", True)
        super().update(task_id, **kwargs)


def progress_bar(transient: bool = False, download: bool = False) -> Progress:
    cols = [TextColumn("{task.description}"), BarColumn()]
    cols += [DownloadColumn()] if download else [MofNCompleteColumn()]
    cols += [TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    return _Bars(*cols, console=console, transient=transient)


YEAR = typer.Option(
    None, "--year", help="DCASE year of the data, 2020-2026, or 2019 for MIMII (default: recognised from the data; "
    "one of the years whose clips look as these do: 2022-2026 share names and layout)."
)


CHANNEL = typer.Option(0, "--channel", min=0, max=1023, help="Of multichannel recordings, the channel to read, "
                       "counted from 0 (default 0: the first microphone, as the paper); the models keep it.")
ENGINE = typer.Option("local", "--engine", help="local, or ray: a Ray cluster (pip install 'mimii-due[ray]').")
ADDRESS = typer.Option(None, "--address", help="A running Ray cluster to join from one of its nodes (head:6379, auto).")
TASK_CPUS = typer.Option(1.0, "--task-cpus", help="CPUs each Ray task asks for.")


def _engine(name: str, address: str | None, task_cpus: float):
    from mimii_due.engines import get_engine

    if address and name != "ray":
        raise MimiiDueError("--address is for --engine ray")
    return get_engine(name, address=address, task_cpus=task_cpus)


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*")  # 10s, 90m, 12h, 7d


def _seconds(text: str) -> float | None:
    """``10s``, ``90m``, ``12h``, ``7d`` as seconds; None where ``text`` is not such a duration."""
    m = _DURATION.fullmatch(text)
    return float(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]] if m else None


def _machines(value: str | None) -> list[str] | None:
    return [m.strip() for m in value.split(",") if m.strip()] if value else None


# the commands, registered on ``app`` as their modules load
from mimii_due.cli import data, experiments, monitoring, review  # noqa: E402, F401


def main() -> None:
    app()

"""The one progress-callback type of the package.

Long work reports ``progress(done, total, info)``; the pipeline, which runs steps for several
machine types, reports ``progress(stage, machine, done, total, info)``. The CLI draws both.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int, str], None]  # (done, total, info)
StageProgress = Callable[[str, str, int, int, str], None]  # (stage, machine, done, total, info)


def for_stage(progress: StageProgress | None, stage: str, machine: str) -> Progress | None:
    """A :data:`Progress` that reports to ``progress`` under ``stage`` and ``machine``."""
    if progress is None:
        return None
    return lambda done, total, info="": progress(stage, machine, done, total, info)

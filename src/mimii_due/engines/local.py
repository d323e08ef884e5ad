"""The local engine: every task runs here, one after the other (the library's own threads and
processes still parallelise feature extraction and generation)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mimii_due.progress import Progress


class Engine:
    """Maps ``fn`` over ``items`` and returns the results in the items' order."""

    name = "engine"
    workers = 1  # how many tasks run at once

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], *, progress: Progress | None = None,
            cpus: float | None = None) -> list[Any]:  # fmt: skip
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalEngine(Engine):
    name = "local"

    def map(self, fn, items, *, progress=None, cpus=None):
        out = []
        for k, item in enumerate(items):
            out.append(fn(item))
            if progress:
                progress(k + 1, len(items), "")
        return out

"""Where work runs: on this machine (``local``, the default) or on a Ray cluster (``ray``).

An engine maps a function over items and returns the results in order; the pipeline gives it
feature extraction over shards of the clip table, one training per machine type, and scoring.
Both engines run the same library functions on the same inputs, so results are the same; the
driver (this process) writes every output file, atomically, as on one machine.
"""

from __future__ import annotations

from mimii_due.engines.local import Engine, LocalEngine
from mimii_due.errors import ConfigError

ENGINES = ("local", "ray")


def get_engine(name: str = "local", *, address: str | None = None, num_cpus: int | None = None,
               task_cpus: float = 1.0) -> Engine:  # fmt: skip
    """An engine by name. ``address``: a running Ray cluster to join (``head:6379`` or ``auto``);
    without it a local Ray is started with ``num_cpus``. ``task_cpus``: CPUs each task asks for."""
    if name == "local":
        return LocalEngine()
    if name == "ray":
        from mimii_due.engines.ray_engine import RayEngine

        return RayEngine(address=address, num_cpus=num_cpus, task_cpus=task_cpus)
    raise ConfigError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")

"""The Ray engine: tasks on a Ray cluster (a local one started for the run, or ``address``).

Each task is retried by Ray when its worker dies (``max_retries``), so a killed worker costs a
rerun of its task, not the run. Results come back to the driver in the items' order; progress is
reported as tasks finish. Torch in a task uses ``threads`` threads (default: the CPUs the task asks
for, so parallel tasks do not fight over cores); with the thread count of a local run, a training
gives exactly the same weights as that run (float sums depend on how work is split over threads).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from mimii_due.engines.local import Engine
from mimii_due.errors import ConfigError, MimiiDueError

log = logging.getLogger(__name__)


def _run(fn: Callable, item: Any, threads: int, fault_once: str | None) -> Any:
    import torch

    if fault_once and not os.path.exists(fault_once):  # fault injection for tests: die once, mid-task
        open(fault_once, "w").close()
        os._exit(1)
    torch.set_num_threads(threads)
    return fn(item)


class RayEngine(Engine):
    name = "ray"

    def __init__(self, *, address: str | None = None, num_cpus: int | None = None, task_cpus: float = 1.0,
                 max_retries: int = 3, fault_once: str | None = None, threads: int | None = None):  # fmt: skip
        try:
            import ray
        except ImportError as e:
            raise ConfigError("the Ray engine needs Ray: pip install 'mimii-due[ray]'") from e
        if task_cpus <= 0:
            raise ConfigError(f"CPUs per task must be positive, not {task_cpus}")
        self.ray, self.task_cpus, self.max_retries, self.fault_once = ray, task_cpus, max_retries, fault_once
        self._owns = not ray.is_initialized()
        if self._owns:
            import torch

            kw = {"address": address} if address else {"num_cpus": num_cpus}
            try:
                ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kw)
            except Exception as e:  # ConnectionError and Ray's own errors
                hint = ""
                if address and "RAY_AUTH_MODE" not in os.environ:  # Ray's token check refuses such a driver
                    hint = (" (a cluster that checks Ray's token: set RAY_AUTH_MODE=token here, with the cluster's "
                            "token in RAY_AUTH_TOKEN or ~/.ray/auth_token)")
                raise MimiiDueError(
                    f"cannot start or join the Ray cluster{f' at {address}' if address else ''}: {e}{hint}"
                ) from e
            self.threads = torch.get_num_threads()
        else:
            import torch

            self.threads = torch.get_num_threads()
        largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=0)
        if task_cpus > largest:  # a task runs on one node: none could start, and the run would wait forever
            why = (f"each task asks for {task_cpus:g} CPUs, but the largest node of the Ray cluster has {largest:g}, "
                   "so no task could start (--task-cpus)")  # fmt: skip
            if not address:  # the local Ray started here cannot grow
                self.close()
                raise ConfigError(why)
            log.warning("%s, unless the cluster adds a larger node", why)
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1) // task_cpus))
        self._remote = ray.remote(_run)

    def map(self, fn, items, *, progress=None, cpus=None):
        ray = self.ray
        opts = {"num_cpus": cpus or self.task_cpus, "max_retries": self.max_retries}
        fn_ref = ray.put(fn)
        refs = [self._remote.options(**opts).remote(fn_ref, item, self.threads, self.fault_once) for item in items]
        index = {r: i for i, r in enumerate(refs)}
        out: list[Any] = [None] * len(refs)
        pending, done = list(refs), 0
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for r in ready:
                    out[index[r]] = ray.get(r)
                    done += 1
                    if progress:
                        progress(done, len(refs), "")
        except ray.exceptions.RayTaskError as e:  # an error raised by our code in the task: re-raise it
            if isinstance(e.cause, MimiiDueError):  # bad input: its own one-line message, as on one machine
                raise e.cause from None
            raise e.as_instanceof_cause() from None  # a bug: with the task's traceback
        except ray.exceptions.RayError as e:
            raise MimiiDueError(f"a Ray task failed after {self.max_retries} retries: {e}") from e
        return out

    def close(self) -> None:
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()

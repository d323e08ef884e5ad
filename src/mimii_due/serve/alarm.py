"""An alarm that reaches someone: a command run for each anomalous decision (``watch`` and ``serve
--on-anomaly``; the service's Prometheus metrics and dashboard show them too).

The command is a program and its arguments (split as a shell would, never run by one), given the
decision as JSON on its standard input and as ``MIMII_DUE_*`` environment variables: a mail, a chat
message, a stack light. Commands run one at a time in a thread of their own, each within
``timeout`` seconds, so scoring never waits for them; one that fails or hangs is reported, and the
watch or the service goes on.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

from mimii_due.errors import ConfigError
from mimii_due.scoring import Decision

log = logging.getLogger(__name__)


class AlarmCommand:
    def __init__(self, command: str, *, timeout: float = 30.0):
        try:
            argv = shlex.split(command)
        except ValueError as e:  # an unclosed quote
            raise ConfigError(f"the alarm command {command!r} cannot be split into arguments ({e})") from None
        if not argv:
            raise ConfigError("the alarm command is empty")
        if shutil.which(argv[0]) is None:
            raise ConfigError(f"the alarm command's program {argv[0]!r} is not found (not on PATH, or not executable)")
        if not timeout > 0:
            raise ConfigError(f"the alarm command's timeout must be a positive number of seconds, not {timeout!r}")
        self.argv, self.timeout = argv, timeout
        self.sent = self.failed = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mimii-due-alarm")

    def __call__(self, d: Decision, path: str | None = None) -> None:
        """Sound the alarm for ``d`` if it is an anomaly (returns at once)."""
        if d.decision:
            self._pool.submit(self._run, d, path)

    def _run(self, d: Decision, path: str | None) -> None:
        env = os.environ | {"MIMII_DUE_FILE": path or d.filename, "MIMII_DUE_MACHINE": d.machine,
                            "MIMII_DUE_SECTION": f"{d.section:02d}", "MIMII_DUE_SCORE": repr(d.score),
                            "MIMII_DUE_THRESHOLD": repr(d.threshold)}  # fmt: skip
        payload = json.dumps(d.as_dict() | {"path": path}).encode()
        try:
            r = subprocess.run(self.argv, input=payload, env=env, capture_output=True, timeout=self.timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            self.failed += 1
            log.warning("alarm command for %s failed: %s", path or d.filename, e)
            return
        if r.returncode != 0:
            self.failed += 1
            tail = r.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            log.warning("alarm command for %s exited with %d %s", path or d.filename, r.returncode, tail[0])
        else:
            self.sent += 1

    def close(self) -> None:
        """Wait for the alarms already started."""
        self._pool.shutdown(wait=True)

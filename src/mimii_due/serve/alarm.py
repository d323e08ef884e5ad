"""An alarm that reaches someone: a command run for each anomalous decision (``watch`` and ``serve
--on-anomaly``; the service's Prometheus metrics and dashboard show them too).

The command is a program and its arguments (split as a shell would, never run by one), given the
decision as JSON on its standard input and as ``MIMII_DUE_*`` environment variables: a mail, a chat
message, a stack light. Commands run one at a time in a thread of their own, each within
``timeout`` seconds, so scoring never waits for them; one that fails or hangs is reported, and the
watch or the service goes on.

**K of N** (``after=(k, n)``, ``--alarm-after 3/5``): each anomalous clip is not yet an alarm that
people can trust. At the usual false-alarm rate of 0.10 per clip, a recorder that sends a clip
every 10 seconds raises one for about every 100 seconds of normal running. With ``after``, a machine
type and section's alarm is raised when at least ``k`` of its last ``n`` clips are anomalous: the
command runs once then, and again only after the alarm has cleared (fewer than ``k`` of the last
``n``; said in the log). A watch or a service that starts again (a restart, a crash, a new
model) goes on from the decision record: each machine type and section's last ``n`` decisions
there fill its count (:meth:`AlarmCommand.resume`), so an alarm raised before is not raised a
second time for the same clips, and anomalies shortly before the restart still count. (The alarm is
raised exactly while ``k`` of the last ``n`` are anomalous, so those ``n`` decisions are all it
needs to know.) Without ``after``, every anomalous clip runs the command.

How often does a sound machine raise it? :func:`false_alarm_every`: with independent normal clips
each flagged with probability ``p``, an alarm is raised at a clip exactly when the ``n - 1`` clips
before it hold ``k - 1`` anomalous ones, the clip before those was normal and this one is anomalous,
so about once every ``1 / (C(n-1, k-1) p^k (1-p)^(n-k+1))`` clips: 229 clips for 3 of 5 at 0.10
(38 minutes at a clip every 10 s; the chance that a given 5 hold 3, 0.0086, undercounts the
windows that overlap), 172,000 clips for 3 of 5 at 0.01 (20 days). ``watch`` and ``serve`` say it
when they start; :func:`rate_for` gives the rate for a wanted interval (``threshold --every``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import shutil
import subprocess
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from mimii_due.errors import ConfigError
from mimii_due.scoring import Decision

log = logging.getLogger(__name__)


def false_alarm_every(rate: float, k: int, n: int) -> float:
    """The mean number of clips between alarms raised by K of N on a sound machine whose clips
    are each flagged independently with probability ``rate`` (inf where none can be raised)."""
    per_clip = math.comb(n - 1, k - 1) * rate**k * (1 - rate) ** (n - k + 1)
    return 1 / per_clip if per_clip > 0 else math.inf


def rate_for(every: float, k: int = 1, n: int = 1) -> float:
    """The per-clip false-alarm rate at which K of N sounds once every ``every`` clips on a sound
    machine (the inverse of :func:`false_alarm_every` below its most frequent rate, ``k / (n + 1)``:
    thresholds are for rare alarms)."""
    top = k / (n + 1)  # where the alarm sounds most often
    most = false_alarm_every(top, k, n)
    if not every >= most:
        raise ConfigError(f"{k} of {n} sounds at most once every {most:.3g} clips, at any rate: it cannot sound on "
                          f"a sound machine as often as once every {every:.3g} clips")  # fmt: skip
    lo, hi = 0.0, top
    for _ in range(200):  # bisection: the interval shrinks below any float's resolution
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if false_alarm_every(mid, k, n) > every else (lo, mid)
    return (lo + hi) / 2


def raised_at(flags, k: int, n: int) -> list[int]:
    """Where K of N raises its alarm in a machine's sequence of decisions (``True``: anomalous), as
    :class:`AlarmCommand` does: the clips at which K of the last N become anomalous again."""
    window: deque = deque(maxlen=n)
    out, up = [], False
    for i, flag in enumerate(flags):
        window.append(bool(flag))
        now = sum(window) >= k
        if now and not up:
            out.append(i)
        up = now
    return out


def parse_after(text: str) -> tuple[int, int]:
    """``"3/5"`` -> ``(3, 5)``: raise the alarm when 3 of the last 5 clips are anomalous."""
    k, slash, n = text.partition("/")
    if not (slash and k.strip().isdigit() and n.strip().isdigit()):
        raise ConfigError(f"--alarm-after takes K/N, e.g. 3/5 (3 anomalous clips of the last 5), not {text!r}")
    return _checked((int(k), int(n)), f"--alarm-after {text}")


def _checked(after, shown: str | None = None) -> tuple[int, int]:
    if not (isinstance(after, tuple) and len(after) == 2 and all(isinstance(x, int) for x in after)
            and 1 <= after[0] <= after[1] <= 1000):  # fmt: skip
        raise ConfigError(f"the alarm needs K of the last N clips with 1 <= K <= N <= 1000, not {shown or repr(after)}")
    return after


class AlarmCommand:
    def __init__(self, command: str, *, timeout: float = 30.0, after: tuple[int, int] | None = None,
                 explainer=None):  # fmt: skip
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
        self.argv, self.timeout, self.after = argv, timeout, None if after is None else _checked(after)
        self.explainer = explainer  # (path, decision) -> an Explanation: why, told to the command
        self._unexplained: set[tuple[str, int]] = set()  # machine types and sections it failed for, said once
        self.sent = self.failed = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mimii-due-alarm")
        self._recent: dict[tuple[str, int], deque] = {}  # per machine type and section: the last n decisions
        self._raised: set[tuple[str, int]] = set()
        self._lock = threading.Lock()  # the service decides in several threads

    def __call__(self, d: Decision, path: str | None = None) -> None:
        """Count ``d`` and sound the alarm if it calls for one (returns at once)."""
        if self.after is None:
            if d.decision:
                self._pool.submit(self._run, d, path, None)
            return
        k, n = self.after
        key = (d.machine, d.section)
        with self._lock:
            window = self._recent.setdefault(key, deque(maxlen=n))
            window.append(bool(d.decision))
            count, was = sum(window), key in self._raised
            if count >= k and not was:
                self._raised.add(key)
                self._pool.submit(self._run, d, path, (count, len(window)))
            elif count < k and was:
                self._raised.discard(key)
                log.warning("alarm of %s section %02d cleared: %d of its last %d clips anomalous", d.machine,
                            d.section, count, len(window))  # fmt: skip

    def expectation(self, rates) -> list[str]:
        """What K of N means for a sound machine at each of the thresholds' false-alarm ``rates``
        (lines to show when a watch or service starts; none without ``after``)."""
        if self.after is None:
            return []
        k, n = self.after
        lines = []
        for rate in sorted(set(rates)):
            every = false_alarm_every(rate, k, n)
            hours = every * 10 / 3600
            lines.append(f"--alarm-after {k}/{n} at the thresholds' false-alarm rate {rate:.3g} per clip: on a sound "
                         f"machine (independent clips) about one alarm every {every:,.0f} clips ({hours:,.1f} h at "
                         "a clip every 10 s); `mimii-due threshold --every 7d --clip-every 10s --alarm-after K/N` sets "
                         "it")  # fmt: skip
        return lines

    def resume(self, record) -> None:
        """Go on from the decisions already in ``record`` (a :class:`~mimii_due.serve.record.Record`):
        each machine type and section's last ``n`` fill its count, and its alarm counts as raised
        (already sent) where ``k`` of them are anomalous. Nothing is run."""
        if self.after is None:
            return
        k, n = self.after
        with self._lock:
            for key, last in record.latest(n).items():
                self._recent[key] = deque(last, maxlen=n)
                if sum(last) >= k:
                    self._raised.add(key)
                    log.warning("alarm of %s section %02d still raised from before: %d of its last %d recorded "
                                "clips anomalous; it is sent again only after it has cleared", key[0], key[1],
                                sum(last), len(last))  # fmt: skip

    def states(self) -> dict[tuple[str, int], bool]:
        """Each machine type and section counted so far, and whether its K-of-N alarm is raised now."""
        with self._lock:
            return {key: key in self._raised for key in sorted(self._recent)}

    def _run(self, d: Decision, path: str | None, recent: tuple[int, int] | None) -> None:
        env = os.environ | {"MIMII_DUE_FILE": path or d.filename, "MIMII_DUE_MACHINE": d.machine,
                            "MIMII_DUE_SECTION": f"{d.section:02d}", "MIMII_DUE_SCORE": repr(d.score),
                            "MIMII_DUE_THRESHOLD": repr(d.threshold)}  # fmt: skip
        facts = d.as_dict() | {"path": path}
        if recent is not None:  # K of N: how many of the machine's last clips were anomalous
            env["MIMII_DUE_RECENT"] = f"{recent[0]}/{recent[1]}"
            facts |= {"recent_anomalies": recent[0], "recent_clips": recent[1]}
        if self.explainer is not None and path:  # where the clip differs from the training clips
            try:
                e = self.explainer(path, d)
                env["MIMII_DUE_WHY"] = facts["why"] = e.summary()
                facts["bands"] = [{"pooling": pool, "hz": round(f, 1), "z": round(z, 2)}
                                  for pool, f, z in e.strongest()]  # fmt: skip
            except Exception as err:  # the alarm goes out without it
                if (d.machine, d.section) not in self._unexplained:
                    self._unexplained.add((d.machine, d.section))
                    log.warning("alarms of %s section %02d go out without why: %s", d.machine, d.section, err)
        payload = json.dumps(facts).encode()
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

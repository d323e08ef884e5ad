"""The scoring service: an ASGI app (FastAPI) over :class:`~mimii_due.scoring.ModelSet`.

``POST /v1/score``   a WAV as the body (or a multipart upload, field ``file``); query parameters
                     ``machine``, ``section``, ``domain``, ``filename`` (a label only, never a path).
                     Answers the decision after its row is committed to the record (a recording
                     far longer than the model's training clips: its most anomalous window's, with
                     ``windows``, every window's; ``Detector.windows``).
``GET /v1/models``   the models loaded; ``GET /v1/decisions`` the recent decisions (the dashboard's data);
                     ``GET /v1/alarms`` the K-of-N alarms raised now and the alarm commands run
``GET /healthz``     liveness; ``GET /metrics`` Prometheus text format (with an alarm command, its
                     state: ``mimii_due_alarm_raised``, ``mimii_due_alarm_commands``); ``GET /`` the dashboard

Models load once, and again where their files change (``ModelSet.refresh``: a threshold set with
``mimii-due threshold``, a machine type retrained); scoring runs in a worker thread, off the event
loop, where torch uses ``threads`` threads (set in that thread: the process that made the app keeps
its own setting). Bad requests get a 4xx with ``{"error": "..."}`` and the service keeps serving.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.exceptions import HTTPException as StarletteHTTPException

from mimii_due import __version__
from mimii_due.errors import AudioError, ConfigError, MimiiDueError, StorageError, UnknownModelError
from mimii_due.scoring import Decision, ModelSet
from mimii_due.serve.alarm import AlarmCommand
from mimii_due.serve.keep import AudioKeeper
from mimii_due.serve.record import Record, default_path

MAX_BYTES = 16 * 1024 * 1024  # a 10 s 16 kHz 16-bit clip is 320 kB; 8-channel 24-bit ones fit too


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class _AlarmMetrics:
    """The alarm's state at each scrape: ``mimii_due_alarm_raised`` (1 while a machine type and
    section's K-of-N alarm is raised, 0 once cleared; with ``--alarm-after``) and the commands run."""

    def __init__(self, alarm: AlarmCommand):
        self.alarm = alarm

    def collect(self):
        if self.alarm.after is not None:
            raised = GaugeMetricFamily("mimii_due_alarm_raised", "1 while K of the last N clips are anomalous",
                                       labels=["machine", "section"])  # fmt: skip
            for (machine, section), up in self.alarm.states().items():
                raised.add_metric([machine, f"{section:02d}"], float(up))
            yield raised
        commands = CounterMetricFamily("mimii_due_alarm_commands", "Alarm commands run", labels=["result"])
        commands.add_metric(["sent"], self.alarm.sent)
        commands.add_metric(["failed"], self.alarm.failed)
        yield commands


class _LastClip:
    """``mimii_due_last_clip_timestamp_seconds{machine,section}``: when each machine type and
    section's last clip was scored (from the record at start, then each answer), so that an alerting
    rule can tell a recorder that stopped sending (``time() - ... > 600``) from a quiet, sound machine."""

    def __init__(self, record: Record):
        self.times = record.last_times()

    def saw(self, d: Decision) -> None:
        self.times[(d.machine, d.section)] = time.time()

    def collect(self):
        last = GaugeMetricFamily("mimii_due_last_clip_timestamp_seconds", "When the last clip was scored",
                                 labels=["machine", "section"])  # fmt: skip
        for (machine, section), t in sorted(self.times.items()):
            last.add_metric([machine, f"{section:02d}"], t)
        yield last


def create_app(
    models: ModelSet,
    record: Record,
    *,
    token: str | None = None,
    keep_audio: str | Path | None = None,
    keep_max_bytes: int | None = None,
    max_bytes: int = MAX_BYTES,
    threads: int = 1,
    alarm: Callable[[Decision, str | None], None] | None = None,
) -> FastAPI:
    if not (isinstance(max_bytes, int) and max_bytes > 0) or not (isinstance(threads, int) and threads >= 1):
        raise ConfigError(f"the largest upload must be positive and the threads at least 1, not {max_bytes!r} "
                          f"bytes and {threads!r}")  # fmt: skip
    keep = AudioKeeper(keep_audio, keep_max_bytes) if keep_audio else None  # the oldest removed past the limit
    app = FastAPI(title="mimii-due", version=__version__)
    registry = CollectorRegistry()
    requests = Counter("mimii_due_requests", "HTTP requests", ["endpoint", "status"], registry=registry)
    latency = Histogram("mimii_due_score_seconds", "Time to answer POST /v1/score", registry=registry,
                        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))  # fmt: skip
    decisions = Counter("mimii_due_decisions", "Decisions", ["machine", "section", "decision"], registry=registry)
    if isinstance(alarm, AlarmCommand):
        alarm.resume(record)  # a restarted service goes on counting K of N from its record
        registry.register(_AlarmMetrics(alarm))
    last_clip = _LastClip(record)
    registry.register(last_clip)
    dashboard = (Path(__file__).with_name("dashboard.html")).read_text()

    @app.middleware("http")
    async def count_and_guard(request: Request, call_next):
        path = request.url.path
        if token and path not in ("/healthz", "/") and request.headers.get("authorization") != f"Bearer {token}":
            response = _error(401, "missing or wrong bearer token (Authorization: Bearer <token>)")
        else:
            try:
                response = await call_next(request)
            except Exception as e:  # never a traceback to the client; the service keeps serving
                response = _error(500, f"internal error ({type(e).__name__})")
        requests.labels(path if path in ("/v1/score", "/v1/models", "/v1/decisions", "/v1/alarms", "/healthz",
                                         "/metrics", "/")
                        else "other", str(response.status_code)).inc()  # fmt: skip
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):  # FastAPI's own checks, in our shape
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(x) for x in first.get("loc", ())[1:]) or "request"
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):  # unknown path, wrong method
        response = _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")
        response.headers.update(exc.headers or {})  # a 405's Allow
        return response

    async def _body(request: Request) -> bytes | JSONResponse:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
            return _error(413, f"upload larger than {max_bytes} bytes")
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            try:
                form = await request.form()
            except Exception as e:
                return _error(400, f"unreadable multipart body ({type(e).__name__})")
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                return _error(400, "multipart upload needs a file field named 'file'")
            data = await upload.read()
        else:
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    return _error(413, f"upload larger than {max_bytes} bytes")
                chunks.append(chunk)
            data = b"".join(chunks)
        if len(data) > max_bytes:
            return _error(413, f"upload larger than {max_bytes} bytes")
        if not data:
            return _error(400, "empty body: send a WAV file")
        return data

    @app.post("/v1/score")
    async def score(request: Request, machine: str | None = None, section: str | None = None,
                    domain: str | None = None, filename: str = "upload.wav"):  # fmt: skip
        t0 = time.perf_counter()
        data = await _body(request)
        if isinstance(data, JSONResponse):
            return data
        label = Path(filename).name[:200] or "upload.wav"  # a label in the record, never opened
        try:
            sec = int(section) if section is not None else None
        except ValueError:
            return _error(400, f"section must be a number like 0 or 00, not {section!r}")

        def work():
            torch.set_num_threads(max(1, threads))  # this worker thread's count: the caller's stays as it was
            models.refresh()  # a threshold set or a model retrained since: decided as the files now say
            ds = models.score_bytes(data, filename=label, machine=machine, section=sec, domain=domain)
            kept = None
            if keep is not None:  # the clip kept for retraining, under its content hash
                kept = str(keep.keep(data, ds[0].sha256))
            rows = record.add_all(ds, source="upload", path=kept)  # committed before we answer
            for d in ds if alarm is not None else ():  # an anomaly runs the user's command, beside the answer
                alarm(d, kept)
            return ds, rows

        try:
            ds, rows = await run_in_threadpool(work)
        except AudioError as e:
            return _error(422, str(e))
        except UnknownModelError as e:
            return _error(404, str(e))
        except StorageError as e:  # our disk, not the request: the client may send it again
            return _error(503, f"not answered, the decision could not be kept: {e}")
        except MimiiDueError as e:
            return _error(400, str(e))
        for d in ds:
            decisions.labels(d.machine, f"{d.section:02d}", "anomaly" if d.decision else "normal").inc()
            last_clip.saw(d)
        latency.observe(time.perf_counter() - t0)
        answers = [d.as_dict() | {"id": row, "sha256": d.sha256} for d, row in zip(ds, rows, strict=True)]
        if len(answers) == 1:
            return answers[0]
        worst = max(answers, key=lambda a: a["score"])  # a long recording: its most anomalous window, and each
        return worst | {"windows": answers}

    @app.get("/v1/models")
    async def list_models():
        await run_in_threadpool(models.refresh)
        return {"models": [m | {"expected_rate": 1 - models.models[m["machine"]].threshold_quantile}
                           for m in models.describe()], "version": __version__}  # fmt: skip

    @app.get("/v1/decisions")
    async def recent(limit: int = 500, machine: str | None = None):
        limit = max(1, min(int(limit), 5000))
        return {"decisions": await run_in_threadpool(record.recent, limit=limit, machine=machine)}

    @app.get("/v1/alarms")
    async def alarms():
        if not isinstance(alarm, AlarmCommand):
            return {"after": None, "raised": [], "sent": 0, "failed": 0}
        after = None if alarm.after is None else f"{alarm.after[0]}/{alarm.after[1]}"
        raised = [{"machine": m, "section": s} for (m, s), up in alarm.states().items() if up]
        return {"after": after, "raised": raised, "sent": alarm.sent, "failed": alarm.failed}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "models": sorted(models.models), "version": __version__}

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return dashboard

    return app


def serve(run: str | Path, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          db: str | Path | None = None, keep_audio: str | Path | None = None, keep_max_bytes: int | None = None,
          max_bytes: int = MAX_BYTES,
          threads: int = 1, alarm: AlarmCommand | None = None,
          announce: Callable[[str], None] | None = None, models: ModelSet | None = None) -> None:  # fmt: skip
    """Load the models and serve until stopped. Binding anything but loopback needs a token. The
    socket is bound here, before uvicorn starts, so a port in use or an address that is not this
    machine's is a one-line error; ``announce`` gets the address once it is bound. ``models``: the
    run's models, where the caller has loaded them already."""
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        raise MimiiDueError(f"binding {host} exposes the service: set a bearer token (--token or MIMII_DUE_TOKEN)")
    models = models or ModelSet(run)
    record = Record(db or default_path(run))
    app = create_app(models, record, token=token, keep_audio=keep_audio, keep_max_bytes=keep_max_bytes,
                     max_bytes=max_bytes, threads=threads, alarm=alarm)  # fmt: skip
    try:
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except (OSError, OverflowError) as e:  # OverflowError: a port outside 0-65535
        raise MimiiDueError(f"cannot listen on {host}:{port} ({getattr(e, 'strerror', None) or e})") from None
    if announce:
        announce(f"http://{host}:{sock.getsockname()[1]}/")
    with sock:
        try:
            uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
        finally:
            if alarm is not None:
                alarm.close()

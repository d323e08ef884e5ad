"""Load and fault benchmark of the scoring service, on loopback only, bounded in time and count.

Trains TWFR-GMM on a small generated dataset, starts `mimii-due serve` as a real process on a free
127.0.0.1 port, and runs N concurrent clients for a fixed time: clips/s, p50/p99 latency, the count
of 5xx answers (must be 0), and a check that the database holds exactly one row per answered
request. Then kills the server with SIGKILL under load, restarts it and checks the database
(SQLite's integrity check; every answered decision present). The in-process throughput of scoring
the same clips (ModelSet.score_bytes in a loop) is measured in the same run for the ratio.

    python benchmarks/bench_serve.py [--clients 4] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from mimii_due import pipeline
from mimii_due.data.index import index
from mimii_due.scoring import ModelSet
from mimii_due.synth.generate import generate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(run: Path, db: Path, port: int) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "mimii_due.cli", "serve", str(run), "--port", str(port), "--db",
                          str(db)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    t_end = time.time() + 60
    while time.time() < t_end:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return p
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    p.kill()
    raise SystemExit("the server did not start")


def load(port: int, clips: list[bytes], clients: int, seconds: float, stop: threading.Event | None = None):
    answered, latencies, errors5xx, failures = [], [], [0], [0]
    lock = threading.Lock()
    t_end = time.time() + seconds

    def client(k: int) -> None:
        i = k
        while time.time() < t_end and not (stop and stop.is_set()):
            data = clips[i % len(clips)]
            i += clients
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/score?machine=fan&section=0", data=data)
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    body = json.loads(r.read())
                with lock:
                    answered.append(body["id"])
                    latencies.append(time.perf_counter() - t0)
            except urllib.error.HTTPError as e:
                with lock:
                    errors5xx[0] += e.code >= 500
            except (urllib.error.URLError, OSError):
                with lock:
                    failures[0] += 1  # connection refused/reset (the killed server)
                return

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answered, latencies, errors5xx[0], failures[0], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--out", default="/tmp/mimii_due_bench_serve")
    a = ap.parse_args()
    out = Path(a.out)
    data = generate(out / "data", machines=["fan"], sections=[0], scale=0.05, seed=0, min_test=10, workers=2,
                    layout="dcase2023")  # fmt: skip
    run = out / "run"
    if not (run / "models" / "fan" / "detector.json").exists():
        pipeline.train(run, data, detector="twfr_gmm")
    t = index(data)
    clips = [Path(p).read_bytes() for p in t[t.split == "test"].path]
    models = ModelSet(run)
    t0 = time.perf_counter()
    for c in clips:
        models.score_bytes(c, machine="fan", section=0)
    inproc = len(clips) / (time.perf_counter() - t0)

    db = out / "decisions.sqlite"
    db.unlink(missing_ok=True)
    port = free_port()
    server = start(run, db, port)
    answered, lat, n5xx, _, wall = load(port, clips, a.clients, a.seconds)
    rows = sqlite3.connect(db).execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
    rate = len(answered) / wall
    p50, p99 = 1000 * np.percentile(lat, 50), 1000 * np.percentile(lat, 99)
    print(f"{a.clients} clients for {a.seconds:.0f} s: {len(answered)} clips answered, {rate:.1f} clips/s; "
          f"p50 {p50:.0f} ms, p99 {p99:.0f} ms; 5xx: {n5xx}")  # fmt: skip
    print(f"in-process scoring of the same clips: {inproc:.1f} clips/s; service / in-process = {rate / inproc:.2f}")
    print(f"database rows {rows} == answered requests {len(answered)}: {rows == len(answered)}")

    stop = threading.Event()
    result = {}
    keys = ("answered", "lat", "n5xx", "fail", "wall")
    th = threading.Thread(target=lambda: result.update(zip(keys, load(port, clips, a.clients, 30, stop), strict=True)))
    th.start()
    time.sleep(3)
    server.send_signal(signal.SIGKILL)
    server.wait(timeout=10)
    stop.set()
    th.join()
    con = sqlite3.connect(db)
    ok = con.execute("PRAGMA integrity_check").fetchone()[0]
    ids = {r[0] for r in con.execute("SELECT id FROM decisions")}
    con.close()
    missing = set(result["answered"]) - ids
    print(f"SIGKILL under load after {len(result['answered'])} more answers: integrity_check {ok!r}, "
          f"answered decisions missing from the database: {len(missing)}, 5xx: {result['n5xx']}")  # fmt: skip
    server = start(run, db, port)
    try:
        answered2, _, n5xx2, _, _ = load(port, clips, 1, 2)
        print(f"restarted: {len(answered2)} more answers, 5xx {n5xx2}, next id {min(answered2)} > {max(ids)}")
    finally:
        server.kill()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()

"""Production monitoring: `score`, the service (in-process and as a real process), the record,
the dashboard in headless Chromium, and the folder watcher."""

import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mimii_due.cli import app as cli
from mimii_due.data.index import index
from mimii_due.errors import ConfigError, MimiiDueError
from mimii_due.scoring import ModelSet
from mimii_due.serve.app import create_app
from mimii_due.serve.record import Record
from mimii_due.serve.watch import Watcher

runner = CliRunner()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve") / "run"
    r = runner.invoke(cli, ["train", str(tiny_dataset), "--out", str(out), "--detector", "gaussian"])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def clips(tiny_dataset):
    t = index(tiny_dataset)
    return t[(t.machine == "valve") & (t.split == "test") & (t.section == 0)]


def wav_bytes(y, sr=16000, subtype="PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, subtype=subtype, format="WAV")
    return buf.getvalue()


@pytest.fixture
def service(run, tmp_path):
    record = Record(tmp_path / "d.sqlite")
    client = TestClient(create_app(ModelSet(run), record, keep_audio=tmp_path / "kept", max_bytes=1_000_000))
    return client, record


def test_kept_audio_stays_within_its_limit_the_oldest_removed(run, clips, tmp_path):
    """--keep-max-mb: a ring of the most recent clips; the user's other files and the record untouched."""
    import hashlib

    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")  # not ours: never counted nor removed
    data = [open(p, "rb").read() for p in clips.path[:4]]
    assert len({len(d) for d in data}) == 1  # equal sizes: the limit holds two and a half of them
    old = kept / ("0" * 64 + ".wav")  # kept by an earlier run of the service: counted, the oldest
    old.write_bytes(data[0])
    os.utime(old, (1, 1))
    record = Record(tmp_path / "d.sqlite")
    client = TestClient(create_app(ModelSet(run), record, keep_audio=kept, keep_max_bytes=int(len(data[0]) * 2.5)))
    for i, d in enumerate(data):
        assert client.post(f"/v1/score?machine=valve&section=00&filename=c{i}.wav", content=d).status_code == 200
    names = sorted(p.name for p in kept.iterdir())
    newest = sorted(hashlib.sha256(d).hexdigest() + ".wav" for d in data[2:])
    assert names == sorted([*newest, "notes.txt"])  # the two newest clips, and the user's file
    assert len(record.recent()) == 4  # every decision kept in the record
    with pytest.raises(ConfigError, match="positive number of bytes"):
        create_app(ModelSet(run), record, keep_audio=kept, keep_max_bytes=0)
    r = runner.invoke(cli, ["serve", str(run), "--port", "0", "--keep-max-mb", "5", "--db", str(tmp_path / "d.sqlite")])
    assert r.exit_code == 1 and "give that folder too" in r.output and "serving" not in r.output
    for bad in ("0", "-1", "nan", "inf"):
        r = runner.invoke(cli, ["serve", str(run), "--port", "0", "--keep-audio", str(kept), "--keep-max-mb", bad,
                                "--db", str(tmp_path / "d.sqlite")])  # fmt: skip
        assert r.exit_code == 1 and "positive number of MB" in r.output and "serving" not in r.output, r.output


def test_score_command_scores_any_names_and_reports_bad_clips(run, clips, tmp_path):
    folder = tmp_path / "new"
    folder.mkdir()
    for i, p in enumerate(clips.path[:3]):
        shutil.copy(p, folder / f"recording_{i}.wav")  # names that carry nothing
    (folder / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    args = ["score", str(run), str(folder), "--machine", "valve", "--section", "0", "--out", str(tmp_path / "s.json"),
            "--format", "json"]  # fmt: skip
    r = runner.invoke(cli, args)  # the bad clip fails the command, after the others are scored and written
    assert r.exit_code == 1 and "broken.wav" in r.output and "not scored" in r.output
    assert len(json.loads((tmp_path / "s.json").read_text())) == 3
    r = runner.invoke(cli, [*args, "--skip-bad"])
    assert r.exit_code == 0, r.output
    assert "recording_0.wav" in r.output and "broken.wav" in r.output and "not scored" in r.output
    rows = json.loads((tmp_path / "s.json").read_text())
    assert len(rows) == 3 and {x["machine"] for x in rows} == {"valve"}
    assert all((x["score"] > x["threshold"]) == (x["decision"] == "anomaly") for x in rows)
    flagged = sum(x["decision"] == "anomaly" for x in rows)
    assert f"{flagged} of 3 flagged as anomalous ({flagged / 3:.1%}); on normal clips the thresholds expect about " \
        "10.0%" in " ".join(r.output.split())
    import scipy.stats  # is that many alarms more than the rate gives by chance? the exact binomial tail

    p = scipy.stats.binom.sf(flagged - 1, 3, 0.1)
    verdict = "more than the rate explains" if p < 0.01 else "within what chance gives"
    assert f"that many alarms or more come by chance with p = {p:.2g} (binomial test): {verdict}" in " ".join(
        r.output.split())
    # a model folder alone, challenge names: machine and section come from the model and the name
    r = runner.invoke(cli, ["score", str(run / "models" / "valve"), *clips.path[:2]])
    assert r.exit_code == 0, r.output and "2 clip(s) scored" in r.output


def test_service_settings_it_cannot_serve_with_are_refused_at_start(run, tmp_path):
    """Each of these started a service that failed every upload (413 for all, a kept copy that
    could not be written, torch refusing 0 threads)."""
    from mimii_due.errors import ConfigError, StorageError

    record = Record(tmp_path / "d.sqlite")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(StorageError, match="cannot keep audio here"):
        create_app(ModelSet(run), record, keep_audio=tmp_path / "a_file")
    for kw in ({"max_bytes": 0}, {"max_bytes": -5}, {"threads": 0}):
        with pytest.raises(ConfigError, match="largest upload must be positive and the threads at least 1"):
            create_app(ModelSet(run), record, **kw)
    r = runner.invoke(cli, ["serve", str(run), "--port", "0", "--max-mb", "-1", "--db", str(tmp_path / "d.sqlite")])
    assert r.exit_code == 1 and "largest upload must be positive" in r.output and "serving" not in r.output


def test_decisions_of_a_served_model_folder_are_recorded_in_its_run_and_survive_a_retrain(tiny_dataset, clips,
                                                                                          tmp_path):  # fmt: skip
    """The record went into RUN/models/valve/, which retraining replaces whole: the decisions with it."""
    from mimii_due.serve.record import default_path

    run = tmp_path / "run"
    args = ["train", str(tiny_dataset), "--out", str(run), "--detector", "gaussian", "--machines", "valve"]
    assert runner.invoke(cli, args).exit_code == 0
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(clips.path.iloc[0], folder / clips.filename.iloc[0])
    r = runner.invoke(cli, ["watch", str(run / "models" / "valve"), str(folder), "--max-seconds", "3"])
    assert r.exit_code == 0 and "1 clip(s) scored" in r.output, r.output
    assert default_path(run / "models" / "valve") == run / "decisions.sqlite" == default_path(run)
    shutil.rmtree(run / "models")  # retrain from scratch into the same run
    assert runner.invoke(cli, [*args, "--resume"]).exit_code == 0
    assert Record(run / "decisions.sqlite").count() == 1
    lone = tmp_path / "lone"
    shutil.copytree(run / "models" / "valve", lone / "valve")  # a model folder copied out of its run
    assert default_path(lone / "valve") == lone / "valve.decisions.sqlite"


def test_a_watcher_that_could_never_score_or_would_stop_at_once_is_refused(run, tmp_path):
    """--settle nan: no file ever counted as settled, so nothing was scored and nothing said why."""
    from mimii_due.errors import ConfigError

    record = Record(tmp_path / "d.sqlite")
    for settle in (float("nan"), -1.0, float("inf")):
        with pytest.raises(ConfigError, match="settle must be a number of seconds, 0 or more"):
            Watcher(ModelSet(run), record, tmp_path, machine="valve", settle=settle)
    w = Watcher(ModelSet(run), record, tmp_path, machine="valve", settle=0.0)
    for seconds in (float("nan"), 0.0, -1.0):
        with pytest.raises(ConfigError, match="max_seconds must be a positive number"):
            w.run(max_seconds=seconds)


def test_score_with_a_format_and_no_out_writes_that_table_alone_to_standard_output(run, clips, tmp_path):
    r = runner.invoke(cli, ["score", str(run), *clips.path[:3], "--out", str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    written = json.loads((tmp_path / "s.json").read_text())
    r = runner.invoke(cli, ["score", str(run), *clips.path[:3], "--format", "json"])  # for a script: | jq
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == written  # nothing else on stdout; the flagged count goes to stderr
    assert "flagged as anomalous" in r.stderr
    r = runner.invoke(cli, ["score", str(run), *clips.path[:3], "--out", "-"])  # csv, the default
    assert r.exit_code == 0, r.output
    table = pd.read_csv(io.StringIO(r.stdout))
    assert list(table["filename"]) == [w["filename"] for w in written]
    assert np.allclose(table["score"], [w["score"] for w in written])
    assert not (Path("-").exists())


def test_score_writes_json_when_out_says_json(run, clips, tmp_path):
    r = runner.invoke(cli, ["score", str(run), *clips.path[:2], "--out", str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    assert [x["machine"] for x in json.loads((tmp_path / "s.json").read_text())] == ["valve", "valve"]
    r = runner.invoke(cli, ["score", str(run), *clips.path[:2], "--out", str(tmp_path / "s.json"), "--format", "csv"])
    assert r.exit_code == 0 and (tmp_path / "s.json").read_text().startswith("filename,")  # asked for: csv
    recording = tmp_path / "rec.wav"
    shutil.copy(clips.path.iloc[0], recording)
    before = recording.read_bytes()
    r = runner.invoke(cli, ["score", str(run), str(recording), "--out", str(recording)])  # a slip of the keyboard
    assert r.exit_code == 1 and "--out names a WAV file" in r.output and recording.read_bytes() == before
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.wav").write_bytes(b"not audio")
    r = runner.invoke(cli, ["score", str(run), str(tmp_path / "broken"), "--machine", "valve", "--out",
                            str(tmp_path / "s.csv")])  # no clip scored: the table still has its columns
    assert r.exit_code == 1 and (tmp_path / "s.csv").read_text().startswith("filename,machine,section,"), r.output
    r = runner.invoke(cli, ["score", str(run), str(tmp_path / "recrodings")])  # a mistyped folder: said so
    assert r.exit_code == 1 and f"no such file or folder: {tmp_path / 'recrodings'}" in r.output, r.output


def test_score_and_watch_take_the_machine_type_from_a_folder_named_after_it(run, tiny_dataset, tmp_path):
    """``score RUN dev_data/`` and a watched folder with one subfolder per machine type: no --machine."""
    t = index(tiny_dataset)
    t = t[(t.part == "dev") & (t.split == "test")]
    folders = [tiny_dataset / "dev_data" / m / "source_test" for m in ("fan", "valve")]
    r = runner.invoke(cli, ["score", str(run), *map(str, folders), "--out", str(tmp_path / "s.csv")])
    assert r.exit_code == 0, r.output
    got = pd.read_csv(tmp_path / "s.csv")
    want = t[t.path.str.contains("/source_test/")]
    assert len(got) == len(want) and len(set(got.machine)) == 2
    assert sorted(zip(got.filename, got.machine, strict=True)) == sorted(zip(want.filename, want.machine, strict=True))
    incoming = tmp_path / "incoming"
    first = {m: t[t.machine == m].iloc[0] for m in ("fan", "valve")}
    for m, clip in first.items():  # incoming/<machine>/line_1/: the nearest named folder counts
        (incoming / m / "line_1").mkdir(parents=True)
        shutil.copy(clip.path, incoming / m / "line_1" / clip.filename)
    (incoming / "unsorted.wav").write_bytes(open(t.path.iloc[0], "rb").read())
    record = Record(tmp_path / "d.sqlite")
    errors = []
    w = Watcher(ModelSet(run), record, incoming, settle=0.1, on_error=lambda p, e: errors.append((p, e)))
    w.run(max_seconds=3)
    scored = {(r["filename"], r["machine"]) for r in record.recent()}
    assert scored == {(clip.filename, m) for m, clip in first.items()}
    assert len(errors) == 1 and "unsorted.wav" in errors[0][0] and "say which machine type" in errors[0][1]


@pytest.mark.parametrize(("where", "words"), [(["--machine", "pump"], "unknown machine type 'pump'"),
                                              (["--machine", "valve", "--section", "7"], "section 07 is not one valve"),
                                              (["--domain", "x"], "domain must be source or target")])  # fmt: skip
def test_a_machine_or_section_no_clip_can_be_scored_with_is_refused_once_before_scoring(run, clips, tmp_path, where,
                                                                                        words):  # fmt: skip
    r = runner.invoke(cli, ["score", str(run), *clips.path[:3], *where])
    assert r.exit_code == 1 and words in r.output and "not scored" not in r.output, r.output
    if "--domain" not in where:
        machine, section = where[1], int(where[3]) if len(where) > 2 else None
        with pytest.raises(MimiiDueError, match=words):
            Watcher(ModelSet(run), Record(tmp_path / "d.sqlite"), tmp_path, machine=machine, section=section)


def test_service_scores_records_and_answers_json(service, clips):
    client, record = service
    data = open(clips.path.iloc[0], "rb").read()
    r = client.post("/v1/score?machine=valve&section=00", content=data, headers={"content-type": "audio/wav"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["machine"] == "valve" and body["section"] == 0 and body["model"] == "gaussian:valve"
    assert body["anomalous"] == (body["score"] > body["threshold"]) and body["version"]
    assert record.count() == 1 and record.recent()[0]["sha256"] == body["sha256"]
    # the same clip as a multipart upload; machine and section from its challenge name
    r = client.post("/v1/score", files={"file": (clips.filename.iloc[0], data, "audio/wav")},
                    params={"filename": clips.filename.iloc[0], "machine": "valve"})  # fmt: skip
    assert r.status_code == 200 and r.json()["score"] == pytest.approx(body["score"])
    assert record.count() == 2
    models = client.get("/v1/models").json()["models"]
    assert {m["machine"] for m in models} == {"fan", "valve"} and models[0]["expected_rate"] == pytest.approx(0.1)
    assert client.get("/healthz").json()["status"] == "ok"
    metrics = client.get("/metrics").text
    assert 'mimii_due_requests_total{endpoint="/v1/score",status="200"} 2.0' in metrics
    assert "mimii_due_score_seconds_bucket" in metrics
    pattern = r'mimii_due_decisions_total\{decision="(normal|anomaly)",machine="valve",section="00"\} 2.0'
    assert re.search(pattern, metrics)
    assert client.get("/v1/decisions").json()["decisions"][-1]["source"] == "upload"
    # when each machine type's last clip came: for an alerting rule on a recorder that stopped sending
    last = re.search(r'mimii_due_last_clip_timestamp_seconds\{machine="valve",section="00"\} (\S+)', metrics)
    assert last and float(last[1]) == pytest.approx(record.recent()[-1]["time"], abs=5)


def test_a_record_moved_or_removed_while_serving_starts_anew_and_what_it_held_stays_in_the_moved_file(
    service, clips, tmp_path, caplog
):  # fmt: skip
    client, record = service
    data = open(clips.path.iloc[0], "rb").read()

    def post() -> dict:
        r = client.post("/v1/score?machine=valve&section=00", content=data)
        return r.status_code, r.json()

    assert post()[0] == 200 and post()[0] == 200
    rotated = tmp_path / "d-2026-11.sqlite"
    os.rename(record.path, rotated)  # a rotation moves the main file only
    with caplog.at_level("WARNING"):
        status, body = post()
    assert status == 200 and body["id"] == 1, body  # a new record at the path
    assert "removed or moved away" in caplog.text
    old = sqlite3.connect(rotated)
    assert old.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 2  # the moved file holds both
    old.close()
    for f in tmp_path.glob("d.sqlite*"):  # a clean-up removes the record
        f.unlink()
    assert post()[1]["id"] == 1 and post()[1]["id"] == 2
    assert record.count() == 2 and record.check() == "ok" and record.recent()[-1]["id"] == 2
    for f in tmp_path.glob("d.sqlite*"):  # a record that cannot be made: 503, nothing answered; back when it can
        f.unlink()
    record.path.mkdir()
    status, body = post()
    assert status == 503 and "could not be kept" in body["error"] and str(record.path) in body["error"]
    record.path.rmdir()
    assert post()[1]["id"] == 1 and client.get("/healthz").status_code == 200


def test_a_48_khz_upload_is_resampled_and_scored_as_the_same_file_is_by_score(service, run, clips, tmp_path):
    """A recorder's 48 kHz clip: 422 "sample rate" before; now resampled to 16 kHz, as ``score`` does."""
    import librosa

    from mimii_due.scoring import score_files

    client, _ = service
    y = sf.read(clips.path.iloc[0], dtype="float32")[0][:96000]  # 6 s: the fixture service takes up to 1 MB
    data = wav_bytes(librosa.resample(y, orig_sr=16000, target_sr=48000), 48000, "PCM_24")
    r = client.post("/v1/score?machine=valve&section=00", content=data)
    assert r.status_code == 200, r.text
    (tmp_path / "rec48.wav").write_bytes(data)
    decisions, failed = score_files(ModelSet(run), [tmp_path / "rec48.wav"], machine="valve", section=0)
    assert not failed and r.json()["score"] == pytest.approx(decisions[0].score, rel=1e-9)


def test_a_running_service_and_watcher_decide_with_a_threshold_set_after_they_started(run, clips, tmp_path, caplog):
    """`mimii-due threshold` on a served run: it took a restart before, which is easily forgotten."""
    from mimii_due import pipeline

    mine = tmp_path / "run"
    shutil.copytree(run, mine)
    models, record = ModelSet(mine), Record(tmp_path / "d.sqlite")
    client = TestClient(create_app(models, record))
    data = open(clips.path.iloc[0], "rb").read()
    first = client.post("/v1/score?machine=valve&section=00", content=data).json()
    (tmp_path / "in").mkdir()
    watcher = Watcher(models, record, tmp_path / "in", machine="valve", section=0, settle=0.0)
    new = pipeline.threshold(mine, rate=0.01)["machines"]["valve"]["new"]
    assert new > first["threshold"]
    with caplog.at_level("WARNING"):
        second = client.post("/v1/score?machine=valve&section=00", content=data).json()
    assert second["threshold"] == pytest.approx(new) and second["score"] == pytest.approx(first["score"])
    assert second["model_version"] != first["model_version"] and "valve: model loaded again" in caplog.text
    rates = {m["machine"]: m["expected_rate"] for m in client.get("/v1/models").json()["models"]}
    assert rates["valve"] == pytest.approx(0.01) and rates["fan"] == pytest.approx(0.01)
    shutil.copy(clips.path.iloc[0], tmp_path / "in" / "c.wav")
    assert watcher.process(tmp_path / "in" / "c.wav") and record.recent()[-1]["threshold"] == pytest.approx(new)
    (mine / "models" / "valve" / "detector.json").write_text("{")  # broken (or half written): the loaded one stays
    caplog.clear()
    with caplog.at_level("WARNING"):
        for _ in range(2):
            r = client.post("/v1/score?machine=valve&section=00", content=data)
            assert r.status_code == 200 and r.json()["threshold"] == pytest.approx(new)
    assert caplog.text.count("does not load") == 1


def _float_wav_with_nan() -> bytes:
    y = np.zeros(16000, np.float32)
    y[100] = np.nan
    return wav_bytes(y, subtype="FLOAT")


@pytest.mark.parametrize(
    "body, params, status, words",
    [
        (b"hello, not a wav", {"machine": "valve"}, 422, "not a WAV"),
        (b"", {"machine": "valve"}, 400, "empty body"),
        ("truncated", {"machine": "valve"}, 422, "truncated"),
        ("rate", {"machine": "valve"}, 422, "sample rate is 8000 Hz"),
        ("nan", {"machine": "valve"}, 422, "NaN"),
        ("short", {"machine": "valve", "section": "0"}, 422, "too short"),
        ("silent", {"machine": "valve", "section": "0"}, 422, "digital silence"),
        ("ok", {"machine": "pump"}, 404, "unknown machine type"),
        ("ok", {"machine": "valve", "section": "x"}, 400, "section must be a number"),
        ("ok", {"machine": "valve", "section": "7"}, 404, "section 07"),
        ("ok", {}, 400, "say which machine type"),
        ("big", {"machine": "valve"}, 413, "larger than"),
        ("ok", {"machine": "valve", "section": "0", "filename": "../../etc/passwd"}, 200, ""),
    ],
)  # fmt: skip
def test_bad_requests_get_a_4xx_that_says_why_and_the_service_keeps_serving(service, clips, body, params, status,
                                                                              words):  # fmt: skip
    client, record = service
    good = open(clips.path.iloc[0], "rb").read()
    body = {"truncated": good[: len(good) // 2], "rate": wav_bytes(np.zeros(8000, np.float32), sr=8000),
            "nan": _float_wav_with_nan(), "short": wav_bytes(np.sin(np.arange(100, dtype=np.float32))), "ok": good,
            "silent": wav_bytes(np.zeros(16000, np.float32)), "big": good * 4}.get(body, body)  # fmt: skip
    r = client.post("/v1/score", content=body, params=params)
    assert r.status_code == status, r.text
    if status != 200:
        assert words in r.json()["error"]
        assert record.count() == 0  # nothing recorded for a refused request
    else:
        assert r.json()["filename"] == "passwd"  # the name is a label, never a path
    assert client.post("/v1/score?machine=valve&section=0", content=good).status_code == 200  # still serving


@pytest.mark.parametrize(
    "url, status, words",
    [
        ("/v1/decisions?limit=abc", 422, "limit: Input should be a valid integer"),
        ("/v1/nothing", 404, "GET /v1/nothing: Not Found"),
        ("/v1/score", 405, "GET /v1/score: Method Not Allowed"),
    ],
)
def test_the_frameworks_own_refusals_say_why_in_the_same_shape(service, url, status, words):
    client, _ = service
    r = client.get(url)
    assert r.status_code == status and words in r.json()["error"], r.text
    assert status != 405 or r.headers["allow"] == "POST"
    assert client.get("/healthz").status_code == 200


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=3000), cut=st.integers(0, 60), flip=st.integers(0, 255))
def test_random_bytes_and_mutated_headers_never_give_a_5xx(service, clips, data, cut, flip):
    client, _ = service
    header = bytearray(wav_bytes(np.zeros(20000, np.float32))[:44])
    header[cut % 44] = flip  # one mutated header byte, then random samples
    for body in (data, bytes(header) + data):
        r = client.post("/v1/score?machine=valve&section=0", content=body)
        assert r.status_code < 500, r.text


def test_scoring_uses_the_services_torch_threads_and_the_callers_setting_stays(run, clips, tmp_path):
    # set once for the whole process before, it made a later training in the same process differ from
    # a fresh process's in the last bits (the resume test of test_reliability.py, when run after this file)
    before = torch.get_num_threads()
    models, seen = ModelSet(run), []
    score_bytes = models.score_bytes
    models.score_bytes = lambda *a, **k: seen.append(torch.get_num_threads()) or score_bytes(*a, **k)
    client = TestClient(create_app(models, Record(tmp_path / "d.sqlite"), threads=before + 1))
    r = client.post("/v1/score?machine=valve&section=0", content=open(clips.path.iloc[0], "rb").read())
    assert r.status_code == 200, r.text
    assert seen == [before + 1] and torch.get_num_threads() == before


def test_a_token_is_required_when_set(run, tmp_path):
    client = TestClient(create_app(ModelSet(run), Record(tmp_path / "d.sqlite"), token="s3cret"))
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/healthz").status_code == 200
    r = runner.invoke(cli, ["serve", str(run), "--host", "0.0.0.0"])
    assert r.exit_code == 1 and "token" in r.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(run, db, port, *extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "mimii_due.cli", "serve", str(run), "--port", str(port),
                             "--db", str(db), *extra], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip


def _wait_up(url: str, proc, seconds: float = 60) -> None:
    t_end = time.time() + seconds
    while time.time() < t_end:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise AssertionError("server did not come up")


def _post(url: str, data: bytes, query: str = "machine=valve&section=0") -> dict:
    req = urllib.request.Request(f"{url}/v1/score?{query}", data=data, headers={"content-type": "audio/wav"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _dump_dom(url: str, profile) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--virtual-time-budget=4000", "--dump-dom", url]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def test_real_process_serves_survives_sigkill_and_shows_clips_on_the_dashboard(run, clips, tmp_path):
    port, db = _free_port(), tmp_path / "d.sqlite"
    url = f"http://127.0.0.1:{port}"
    proc = _start(run, db, port)
    try:
        _wait_up(url, proc)
        if CHROMIUM:
            before = _dump_dom(url + "/", tmp_path / "p1")
            assert 'data-decisions="0"' in before
        answers = [_post(url, open(p, "rb").read()) for p in clips.path[:4]]
        assert all(a["machine"] == "valve" for a in answers)
        if CHROMIUM:  # the dashboard draws the new decisions (scores against the threshold, drift, alarms)
            page = _dump_dom(url + "/", tmp_path / "p2")
            assert 'data-decisions="4"' in page and "valve section 00: scores" in page and "<circle" in page
        stop = threading.Event()
        sent = []

        def load():  # clients keep posting while the server is killed
            while not stop.is_set():
                try:
                    sent.append(_post(url, open(clips.path.iloc[5], "rb").read()))
                except (urllib.error.URLError, OSError, ValueError):
                    return

        threads = [threading.Thread(target=load) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    ids = {r[0] for r in con.execute("SELECT id FROM decisions")}
    assert {a["id"] for a in answers + sent} <= ids  # every answered decision was recorded first
    con.close()
    proc = _start(run, db, port)
    try:
        _wait_up(url, proc)
        assert _post(url, open(clips.path.iloc[0], "rb").read())["id"] == max(ids) + 1
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_a_restarted_service_shows_the_alarm_raised_before_in_v1_alarms_and_on_the_dashboard(run, tmp_path):
    """`serve --alarm-after 2/3` as a real process on a record whose valve alarm was raised: GET
    /v1/alarms and the dashboard say so at once; the start says how often 2/3 sounds on a sound machine."""
    from mimii_due.scoring import Decision

    record = Record(tmp_path / "d.sqlite")
    for i, flag in enumerate((0, 1, 1)):
        record.add(Decision(f"{i}.wav", "valve", 0, None, float(flag), 0.5, bool(flag), "gaussian", "v", "0"),
                   source="upload")  # fmt: skip
    record.close()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(run, tmp_path / "d.sqlite", port, "--on-anomaly", "true", "--alarm-after", "2/3")
    try:
        _wait_up(url, proc)
        with urllib.request.urlopen(url + "/v1/alarms", timeout=10) as r:
            assert json.load(r) == {"after": "2/3", "raised": [{"machine": "valve", "section": 0}], "sent": 0,
                                    "failed": 0}  # fmt: skip
        if CHROMIUM:
            page = _dump_dom(url + "/", tmp_path / "p")
            assert 'data-raised="1"' in page and "ALARM RAISED (2/3): valve section 00" in page
    finally:
        proc.kill()
        out = proc.communicate(timeout=10)[0].decode()
    assert "--alarm-after 2/3 at the thresholds' false-alarm rate 0.1 per clip" in out, out
    assert "still raised from before: 2 of its last 3 recorded clips anomalous" in out, out
    client = TestClient(create_app(ModelSet(run), Record(tmp_path / "e.sqlite")))  # no alarm command
    assert client.get("/v1/alarms").json() == {"after": None, "raised": [], "sent": 0, "failed": 0}


def test_serve_on_a_taken_port_is_a_one_line_error_and_port_0_takes_a_free_one(run, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = runner.invoke(cli, ["serve", str(run), "--port", str(port), "--db", str(tmp_path / "d.sqlite")])
        assert r.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in r.output, r.output
        assert "serving" not in r.output and "Traceback" not in r.output  # nothing announced that does not serve
    r = runner.invoke(cli, ["serve", str(run), "--port", "70000", "--db", str(tmp_path / "d.sqlite")])
    assert r.exit_code == 1 and "cannot listen on 127.0.0.1:70000" in r.output and "Traceback" not in r.output
    proc = subprocess.Popen([sys.executable, "-m", "mimii_due.cli", "serve", str(run), "--port", "0", "--db",
                             str(tmp_path / "d.sqlite")], env=dict(os.environ, PYTHONUNBUFFERED="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    timer = threading.Timer(120, proc.kill)  # bounds the read below
    timer.start()
    try:
        url = None
        for line in proc.stdout:  # a warning may come first; the timer bounds the wait
            if url := re.search(r"http://127\.0\.0\.1:(\d+)", line):
                break
        assert url and int(url[1]) > 0
        _wait_up(url[0], proc)
    finally:
        timer.cancel()
        proc.terminate()
        proc.wait(timeout=30)


def test_the_watch_command_says_once_that_a_clip_is_not_scored(run, tmp_path, caplog):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "c.wav").write_bytes(b"not audio")
    r = runner.invoke(cli, ["watch", str(run), str(tmp_path / "in"), "--machine", "valve", "--settle", "0.1",
                            "--max-seconds", "2", "--db", str(tmp_path / "d.sqlite")])  # fmt: skip
    assert r.exit_code == 0 and "0 clip(s) scored" in r.output, r.output
    assert r.output.count("c.wav") == 1 and "not scored" in r.output, r.output
    assert not [x for x in caplog.records if "c.wav" in x.getMessage()]  # not logged beside it


def test_watch_on_anomaly_runs_a_command_for_each_anomaly_and_goes_on_when_it_fails(run, clips, tmp_path,
                                                                                     monkeypatch):  # fmt: skip
    (tmp_path / "in").mkdir()
    for i, p in enumerate(clips.path[:6]):
        shutil.copy(p, tmp_path / "in" / f"clip {i}.wav")
    monkeypatch.setenv("ALARMS", str(tmp_path / "alarms.txt"))
    script = ("import json, os, sys; d = json.load(sys.stdin); "
              "open(os.environ['ALARMS'], 'a').write(d['filename'] + ' ' + os.environ['MIMII_DUE_SCORE'] + '\\n')")
    db = tmp_path / "d.sqlite"
    args = ["watch", str(run), str(tmp_path / "in"), "--machine", "valve", "--section", "0", "--settle", "0",
            "--max-seconds", "3", "--db", str(db)]  # fmt: skip
    r = runner.invoke(cli, [*args, "--on-anomaly", shlex.join([sys.executable, "-c", script])])
    assert r.exit_code == 0 and "6 clip(s) scored" in r.output, r.output
    rows = Record(db).recent()
    anomalies = {(Path(x["path"]).name, x["score"]) for x in rows if x["decision"] == 1}
    assert 0 < len(anomalies) < 6  # the test clips hold both; only the anomalies sounded the alarm
    lines = (tmp_path / "alarms.txt").read_text().splitlines()
    assert {(line.rsplit(" ", 1)[0], float(line.rsplit(" ", 1)[1])) for line in lines} == anomalies
    assert f"{len(anomalies)} alarm(s) sent, 0 failed" in r.output
    alarmed = sorted(anomalies)[0][0]  # an anomaly again, with a command that fails: said, the watch goes on
    shutil.copy(tmp_path / "in" / alarmed, tmp_path / "again.wav")
    for p in (tmp_path / "in").glob("clip*.wav"):
        p.unlink()
    shutil.move(tmp_path / "again.wav", tmp_path / "in" / "again.wav")
    r = runner.invoke(cli, [*args, "--on-anomaly", shlex.join([sys.executable, "-c", "raise SystemExit(3)"])])
    assert r.exit_code == 0 and "1 clip(s) scored; 0 alarm(s) sent, 1 failed" in r.output, r.output
    for command, words in (("no-such-program-here --x", "not found"), ("", "empty"), ("'unclosed", "cannot be split")):
        r = runner.invoke(cli, [*args, "--on-anomaly", command])
        assert r.exit_code == 1 and words in r.output, r.output


def test_an_alarm_after_k_of_n_anomalous_clips_is_raised_once_and_again_after_it_cleared(tmp_path, monkeypatch,
                                                                                        caplog):  # fmt: skip
    """--alarm-after 2/3: a machine's alarm is raised when 2 of its last 3 clips are anomalous, the command
    runs once then, and again only after the alarm cleared; another machine's lone anomalies raise none."""
    from mimii_due.scoring import Decision
    from mimii_due.serve.alarm import AlarmCommand

    monkeypatch.setenv("ALARMS", str(tmp_path / "alarms.txt"))
    script = ("import json, os, sys; d = json.load(sys.stdin); open(os.environ['ALARMS'], 'a').write("
              "json.dumps([d['filename'], d['recent_anomalies'], d['recent_clips'], os.environ['MIMII_DUE_RECENT']])"
              " + '\\n')")  # fmt: skip
    alarm = AlarmCommand(shlex.join([sys.executable, "-c", script]), after=(2, 3))
    valve = "ANAAANNNAA"  # windows of 3: raised at clip 3 (A N A), cleared at clip 7 (A N N), raised at clip 10
    pump = "ANNANNA"  # never 2 of its last 3

    def decide(machine, i, flag):
        anomalous = flag == "A"
        return Decision(f"{machine}{i}.wav", machine, 0, None, float(anomalous), 0.5, anomalous, "gaussian", "v", "0")

    with caplog.at_level("WARNING"):
        for i in range(max(len(valve), len(pump))):  # interleaved, as a service sees several machines
            for machine, flags in (("valve", valve), ("pump", pump)):
                if i < len(flags):
                    alarm(decide(machine, i + 1, flags[i]))
        alarm.close()
    got = [json.loads(line) for line in (tmp_path / "alarms.txt").read_text().splitlines()]
    assert got == [["valve3.wav", 2, 3, "2/3"], ["valve10.wav", 2, 3, "2/3"]]
    assert alarm.sent == 2 and alarm.failed == 0
    assert "alarm of valve section 00 cleared: 1 of its last 3 clips anomalous" in caplog.text
    for bad in ((0, 3), (4, 3), (1, 1001), (2.0, 3)):
        with pytest.raises(ConfigError, match="K of the last N"):
            AlarmCommand(shlex.join([sys.executable, "-c", "pass"]), after=bad)


def test_how_often_k_of_n_sounds_on_a_sound_machine_is_what_the_alarm_does():
    """false_alarm_every: the exact rate of raised alarms over every sequence of n + 1 independent
    clips, and the count AlarmCommand raises on a long random sequence of decisions."""
    import itertools
    import math

    from mimii_due.scoring import Decision
    from mimii_due.serve.alarm import AlarmCommand, false_alarm_every, raised_at

    for p, k, n in ((0.1, 3, 5), (0.3, 2, 3), (0.01, 1, 1), (0.2, 4, 4), (0.05, 2, 6)):
        exact = sum(math.prod(p if x else 1 - p for x in seq)
                    for seq in itertools.product((0, 1), repeat=n + 1)
                    if sum(seq[1:]) >= k > sum(seq[:-1]))  # fmt: skip
        assert false_alarm_every(p, k, n) == pytest.approx(1 / exact, rel=1e-9)
    assert round(false_alarm_every(0.1, 3, 5)) == 229 and round(false_alarm_every(0.01, 3, 5), -3) == 172_000
    flags = np.random.default_rng(0).random(3000) < 0.3
    alarm = AlarmCommand("true", after=(2, 3))
    for i, flag in enumerate(flags):
        alarm(Decision(f"{i}.wav", "valve", 0, None, float(flag), 0.5, bool(flag), "gaussian", "v", "0"))
    alarm.close()
    expected = 3000 / false_alarm_every(0.3, 2, 3)  # 264.6
    assert alarm.sent == pytest.approx(expected, abs=4 * math.sqrt(expected)) and alarm.failed == 0
    assert len(raised_at(flags, 2, 3)) == alarm.sent  # the replay of a record raises where the alarm did
    assert "about one alarm every 229 clips (0.6 h" in AlarmCommand("true", after=(3, 5)).expectation([0.1])[0]
    assert AlarmCommand("true").expectation([0.1]) == []


def test_threshold_every_sets_the_rate_at_which_a_sound_machine_sounds_the_alarm_that_seldom(run, tmp_path):
    """`threshold --every 7d --clip-every 10s [--alarm-after 3/5]`: the per-clip rate at which K of N
    (or each anomalous clip) sounds once a week at a clip every 10 s, set as --rate would set it."""
    from mimii_due.detectors.base import Detector
    from mimii_due.serve.alarm import false_alarm_every, rate_for

    for every, k, n in ((229, 3, 5), (60480, 3, 5), (1e6, 2, 3), (50, 1, 1)):
        assert false_alarm_every(rate_for(every, k, n), k, n) == pytest.approx(every, rel=1e-9)
    with pytest.raises(ConfigError, match="3 of 5 sounds at most once every 10.7 clips"):
        rate_for(6, 3, 5)
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    args = ["threshold", str(copy), "--machines", "valve"]
    for extra, rate in ((["--every", "7d", "--clip-every", "10s", "--alarm-after", "3/5"], rate_for(60480, 3, 5)),
                        (["--every", "1d", "--clip-every", "10s"], 10 / 86400)):  # fmt: skip
        r = runner.invoke(cli, [*args, *extra])
        assert r.exit_code == 0 and f"rate {rate:.4g} per clip" in r.output, r.output
        assert 1 - Detector.load(copy / "models" / "valve").threshold_quantile == pytest.approx(rate, rel=1e-9)
    for extra, words in ((["--every", "7d"], "--every needs --clip-every"), ([], "give --rate (per clip) or "),
                         (["--every", "1y", "--clip-every", "10s"], "--every takes a duration such as 7d"),
                         (["--every", "10s", "--clip-every", "10s"], "is not longer than --clip-every 10s"),
                         (["--every", "7d", "--clip-every", "10s", "--alarm-after", "0/5"], "1 <= K <= N"),
                         (["--rate", "0.1", "--clip-every", "10s"], "go with --every")):  # fmt: skip
        r = runner.invoke(cli, [*args, *extra])
        assert r.exit_code == 1 and words in r.output, r.output


def test_a_restarted_watch_or_service_goes_on_counting_k_of_n_from_its_record(run, clips, tmp_path, monkeypatch,
                                                                             caplog):  # fmt: skip
    """The K-of-N counts start from each machine type and section's last N decisions in the record: an
    alarm raised before the restart is not sent again for the same clips, and anomalies just before it
    still count; the service's /metrics shows which alarms are raised."""
    from mimii_due.scoring import Decision
    from mimii_due.serve.alarm import AlarmCommand

    def decide(machine, i, flag):
        anomalous = flag == "A"
        return Decision(f"{machine}{i}.wav", machine, 0, None, float(anomalous), 0.5, anomalous, "gaussian", "v", "0")

    record = Record(tmp_path / "d.sqlite")
    before = {"valve": "NNNAAN", "pump": "AANNNA", "fan": "N"}  # last 3: valve A A N (raised), pump N N A (not)
    for i in range(6):
        for machine, flags in before.items():
            if i < len(flags):
                record.add(decide(machine, i + 1, flags[i]), source="watcher")
    assert record.latest(3) == {("valve", 0): [True, True, False], ("pump", 0): [False, False, True],
                                ("fan", 0): [False]}  # fmt: skip
    monkeypatch.setenv("ALARMS", str(tmp_path / "alarms.txt"))
    script = "import json, os, sys; open(os.environ['ALARMS'], 'a').write(json.load(sys.stdin)['filename'] + '\\n')"
    alarm = AlarmCommand(shlex.join([sys.executable, "-c", script]), after=(2, 3))
    with caplog.at_level("WARNING"):
        alarm.resume(record)
    assert "alarm of valve section 00 still raised from before: 2 of its last 3 recorded clips anomalous" in caplog.text
    assert alarm.states() == {("fan", 0): False, ("pump", 0): False, ("valve", 0): True}
    for d in (decide("valve", 7, "A"), decide("pump", 7, "A"), decide("fan", 2, "A")):
        alarm(d)  # valve: still raised, not sent again; pump: N A A, raised now; fan: N A, one of two
    alarm.close()
    assert (tmp_path / "alarms.txt").read_text().split() == ["pump7.wav"] and alarm.sent == 1

    # the service: resumed from its record when it starts, and the raised alarms in /metrics
    record.add(decide("valve", 8, "A"), source="watcher")
    alarm = AlarmCommand(shlex.join([sys.executable, "-c", script]), after=(2, 3))
    client = TestClient(create_app(ModelSet(run), record, alarm=alarm))
    metrics = client.get("/metrics").text
    assert 'mimii_due_alarm_raised{machine="valve",section="00"} 1.0' in metrics
    assert 'mimii_due_alarm_raised{machine="fan",section="00"} 0.0' in metrics
    assert 'mimii_due_alarm_commands_total{result="sent"} 0.0' in metrics
    models = ModelSet(run)
    where = {"machine": "valve", "section": 0}
    normal = [p for p in clips.path if not models.score_bytes(Path(p).read_bytes(), **where)[0].decision]
    for i, p in enumerate(normal[:3]):  # three clips the model calls normal clear valve's alarm
        a = client.post(f"/v1/score?machine=valve&section=00&filename=n{i}.wav", content=open(p, "rb").read()).json()
        assert not a["anomalous"]
    alarm.close()
    assert 'mimii_due_alarm_raised{machine="valve",section="00"} 0.0' in client.get("/metrics").text
    assert (tmp_path / "alarms.txt").read_text().split() == ["pump7.wav"]


def test_a_recording_far_longer_than_the_training_clips_is_decided_window_by_window(run, tiny_dataset, tmp_path):
    """A recorder that writes a minute per file: scored whole, the pooled features averaged a fault in
    one part of it away. Each window of the training clips' length is decided as a clip, named by where
    it lies (`score`, the service, a watch), `explain` explains the worst one, and `collect
    --normal-only` leaves the recording out."""
    from mimii_due.data.audio import load, write
    from mimii_due.features.extract import features_of
    from mimii_due.report.explain import explain_file
    from mimii_due.serve.collect import collect

    models = ModelSet(run)
    det, where = models.models["valve"], {"machine": "valve", "section": 0}
    t = index(tiny_dataset)
    train = t[(t.machine == "valve") & (t.split == "train") & (t.section == 0) & (t.domain == "source")].path
    normal = [load(p) for p in train if not models.score_bytes(Path(p).read_bytes(), **where)[0].decision][:4]
    assert len(normal) == 4 and {len(y) for y in normal} == {160000}
    faulty = normal[0] + 0.01 * np.sin(2 * np.pi * 3000 * np.arange(160000) / 16000)  # a tone in the last 10 s of 50
    line = np.concatenate([*normal, faulty]).astype(np.float32)
    folder = tmp_path / "incoming"
    folder.mkdir()
    write(folder / "line.wav", line)
    assert det.windows(len(line) // 5) == [(0, len(line) // 5)] and det.windows(int(1.5 * 160255)) == [(0, 240382)]

    ds = models.score_bytes((folder / "line.wav").read_bytes(), filename="line.wav", **where)
    assert [d.filename for d in ds] == [f"line.wav [{10 * i}.0-{10 * i + 10}.0 s]" for i in range(5)]
    assert [d.decision for d in ds] == [False] * 4 + [True] and ds[-1].window == pytest.approx((40, 50), abs=0.03)
    row = pd.DataFrame([{"filename": "line.wav", "section": 0, "domain": None, "attributes": ""}])
    whole = det.score(features_of([line], cfg=det.features), row)[0]
    assert whole < det.threshold_ < ds[-1].score  # scored whole (as before): the fault diluted, no alarm
    score_alone = models.score_bytes(wav_bytes(faulty), filename="f.wav", **where)[0].score
    assert ds[-1].score == pytest.approx(score_alone, rel=0.05)

    record = Record(tmp_path / "d.sqlite")
    client = TestClient(create_app(models, record, keep_audio=tmp_path / "kept"))
    r = client.post("/v1/score?machine=valve&section=0&filename=line.wav", content=(folder / "line.wav").read_bytes())
    body = r.json()
    assert r.status_code == 200 and body["filename"] == "line.wav [40.0-50.0 s]" and body["anomalous"], r.text
    assert [w["anomalous"] for w in body["windows"]] == [False] * 4 + [True] and record.count() == 5
    w = Watcher(models, record, folder, settle=0.0, **where)
    assert w.process(folder / "line.wav") and w.scored == 5
    assert w.process(folder / "line.wav") and w.scored == 5  # seen: not scored again
    assert [r["decision"] for r in record.select() if r["source"] == "watcher"] == [0, 0, 0, 0, 1]
    got = collect(record, tmp_path / "own" / "valve" / "train", normal_only=True)
    assert got.copied == [] and got.anomalous == 1  # one recording, left out whole

    d, e, frames = explain_file(run, folder / "line.wav", **where)
    assert d.filename == "line.wav [40.0-50.0 s]" and len(frames) == 313
    (top_pool, top_hz, _), *_ = e.strongest()
    assert top_pool == "mean" and abs(top_hz - 3000) < 300, e.strongest()


def test_collect_copies_recorded_clips_of_one_machine_into_a_training_folder_once_each(run, clips, tmp_path):
    """`collect`: the clips a watch scored and a service kept, of one machine type and section, within a
    time range, copied under names that say when they were scored, once each; a file overwritten or
    removed since, or an upload not kept, is counted and left out; in train/target/ they are own
    recordings' target domain."""
    from dataclasses import replace

    from mimii_due.serve.collect import collect

    paths = list(clips.path[:6])
    folder = tmp_path / "incoming"
    folder.mkdir()
    record = Record(tmp_path / "d.sqlite")
    w = Watcher(ModelSet(run), record, folder, settle=0.0, machine="valve", section=0)
    for i, p in enumerate(paths):
        shutil.copy(p, folder / f"c{i}.wav")
        assert w.process(folder / f"c{i}.wav")
    shutil.copy(paths[1], folder / "same as c1.wav")  # the same clip again: copied once
    assert w.process(folder / "same as c1.wav") and w.scored == 7
    [d] = ModelSet(run).score_bytes(Path(paths[0]).read_bytes(), filename="up.wav", machine="valve", section=0)
    record.add(d, source="upload", path=None)  # an upload scored without --keep-audio: nothing to copy
    rows = record.select()
    assert len(rows) == 8 and {r["machine"] for r in rows} == {"valve"}
    (folder / "c5.wav").write_bytes(Path(paths[0]).read_bytes())  # overwritten since it was scored
    (folder / "c4.wav").unlink()  # removed since

    out = tmp_path / "recordings" / "valve" / "train" / "target"
    got = collect(record, out)
    assert (got.machine, got.section, got.not_kept, got.present) == ("valve", 0, 1, 0)
    assert sorted(Path(m).name for m in got.missing) == ["c4.wav", "c5.wav"]
    names = [p.name.split("_", 2)[2] for p in got.copied]  # oldest first; the same clip under its latest name
    assert names == ["c0.wav", "c2.wav", "c3.wav", "same_as_c1.wav"]
    for copied, src in zip(got.copied, [paths[0], paths[2], paths[3], paths[1]], strict=True):
        assert copied.read_bytes() == Path(src).read_bytes() and copied.parent == out
    again = collect(record, out)  # a second collect adds nothing
    assert again.copied == [] and again.present == 4
    newest = collect(record, tmp_path / "two", limit=3)  # the most recent three kept: c1 again, c5 (changed), c4 (gone)
    assert [p.name.split("_", 2)[2] for p in newest.copied] == ["same_as_c1.wav"] and len(newest.missing) == 2
    normal = collect(record, tmp_path / "normal", normal_only=True)
    flagged = {r["filename"] for r in rows if r["decision"] and r["path"]}
    assert 0 < len(flagged) < 7 and normal.anomalous == len(flagged) + int(rows[-1]["decision"])
    assert {p.name.split("_", 2)[2] for p in normal.copied} == {"c0.wav", "same_as_c1.wav", "c2.wav", "c3.wav"} - {
        "same_as_c1.wav" if f == "c1.wav" else f for f in flagged}
    shutil.copy(paths[5], out.parent / "usual.wav")  # beside a clip of the usual condition
    t = index(tmp_path / "recordings")
    assert t.domain.value_counts().to_dict() == {"target": 4, "source": 1} and set(t.year) == {0}
    # refused: the watched folder (the watch would score the copies again), a challenge-named dataset
    # (its clips named section_00_..., the copies would stop it indexing); nothing is copied
    valve = Path(paths[0]).parents[1]  # the test data: .../valve/{train,test}/section_00_...
    before = len(index(valve.parent))
    for where, words in ((folder, "overlaps the folder of the clips being collected"), (folder / "sub", "overlaps"),
                         (tmp_path, "overlaps"),
                         (valve / "train", "in a dataset named as the challenges name their clips"),
                         (valve / "train" / "target", "named as the challenges")):  # fmt: skip
        with pytest.raises(ConfigError, match=words):
            collect(record, where)
    assert not (valve / "train" / "target").exists() and len(index(valve.parent)) == before

    # the command: a record of two machine types needs --machine; a time range with nothing in it is an error
    record.add(replace(d, machine="fan"), source="upload", path=None)
    args = ["collect", str(run), str(tmp_path / "cli"), "--db", str(tmp_path / "d.sqlite")]
    r = runner.invoke(cli, args)
    assert r.exit_code == 1 and "say which clips: --since" in r.output, r.output
    r = runner.invoke(cli, [*args, "--since", "1d"])
    assert r.exit_code == 1 and "hold machine types fan, valve: say which (--machine)" in r.output, r.output
    r = runner.invoke(cli, [*args, "--machine", "valve", "--since", "1h", "--normal-only"])
    assert r.exit_code == 0, r.output
    assert f"copied {len(normal.copied)} clip(s) of valve section 00 into" in r.output
    assert f"{len(flagged) + int(rows[-1]['decision'])} decided anomalous left out" in " ".join(r.output.split())
    for when, words in ((["--until", "2000-01-01", "--limit", "5"], "no decisions of valve recorded in that time"),
                        (["--since", "yesterday"], "--since takes a time such as")):  # fmt: skip
        r = runner.invoke(cli, [*args, "--machine", "valve", *when])
        assert r.exit_code == 1 and words in " ".join(r.output.split()), r.output


def test_plot_history_draws_the_recorded_scores_one_panel_per_machine_type_and_section(run, tmp_path):
    """`plot history`: the record's decisions over time, one panel per machine type and section (the
    image grows with them), a machine type or a time range chosen; nothing to draw is an error."""
    from dataclasses import replace

    from matplotlib.image import imread

    from mimii_due.scoring import Decision

    record = Record(tmp_path / "d.sqlite")
    for i in range(30):
        d = Decision(f"c{i}.wav", "valve", 0, None, float(i % 7), 5.5, i % 7 > 5.5, "gaussian", "v", "0")
        record.add(d, source="upload")
        record.add(replace(d, machine="fan", section=3), source="upload")
    args = ["plot", "history", str(run), "--db", str(tmp_path / "d.sqlite")]
    heights = {}
    for name, extra in (("both", []), ("valve", ["--machine", "valve"])):
        r = runner.invoke(cli, [*args, *extra, "--out", str(tmp_path / f"{name}.png")])
        assert r.exit_code == 0 and "wrote" in r.output, r.output
        heights[name] = imread(tmp_path / f"{name}.png").shape[0]
    assert heights["both"] > 1.7 * heights["valve"]  # two panels against one
    for extra, words in ((["--machine", "pump"], "no decisions of pump recorded in that time"),
                         (["--since", "2099-01-01"], "no decisions recorded in that time"),
                         (["--window", "0"], "moving window must be at least 1 clip")):  # fmt: skip
        r = runner.invoke(cli, [*args, *extra, "--out", str(tmp_path / "x.png")])
        assert r.exit_code == 1 and words in " ".join(r.output.split()) and not (tmp_path / "x.png").exists(), r.output
    r = runner.invoke(cli, ["plot", "history", str(run), "--db", str(tmp_path / "none.sqlite")])
    assert r.exit_code == 1 and "no decision record here" in r.output


def test_explain_finds_the_band_a_clip_differs_in_steady_tone_or_brief_click(run, tiny_dataset, clips, tmp_path):
    """`explain`: a normal clip with a steady 3 kHz tone added differs most in the mean level near 3 kHz,
    one with a 30 ms burst at 6 kHz in the loudest frame near 6 kHz; both louder (+), drawn; a run whose
    training clips moved needs --data."""
    from mimii_due.data.audio import load, write
    from mimii_due.report.explain import explain_file

    y = load(clips[clips.label == "normal"].path.iloc[0])
    t = np.arange(len(y)) / 16000
    tone = y + 0.05 * np.sin(2 * np.pi * 3000 * t)
    click = y.copy()
    click[16000:16480] += 0.5 * np.sin(2 * np.pi * 6000 * t[:480])
    for name, wave, pool, hz in (("tone", tone, "mean", 3000), ("click", click, "loudest frame", 6000)):
        write(tmp_path / f"{name}.wav", wave.astype(np.float32))
        d, e, frames = explain_file(run, tmp_path / f"{name}.wav", machine="valve", section=0)
        (top_pool, top_hz, top_z), *_ = e.strongest()
        assert (d.machine, d.section, e.domain) == ("valve", 0, "source") and e.n_train > 10
        assert top_pool == pool and abs(top_hz - hz) < 0.1 * hz and top_z > 5, e.strongest()
        assert frames.shape[1] == 128 and len(e.centres_hz) == 128
    r = runner.invoke(cli, ["explain", str(run), str(tmp_path / "tone.wav"), "--machine", "valve", "--section", "0",
                            "--out", str(tmp_path / "tone.png")])  # fmt: skip
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and "the bands most unlike them: mean at 2." in text and (tmp_path / "tone.png").exists()
    r = runner.invoke(cli, ["explain", str(run), str(tmp_path / "tone.wav"), "--machine", "valve", "--section", "0",
                            "--data", str(tmp_path / "gone")])  # fmt: skip
    assert r.exit_code == 1 and "the training clips are not at" in " ".join(r.output.split()), r.output
    r = runner.invoke(cli, ["explain", str(run), str(tmp_path), "--machine", "valve"])  # a folder: which clip?
    assert r.exit_code == 1 and "explain takes one WAV file, not a folder" in " ".join(r.output.split()), r.output


def test_status_counts_each_machines_alarms_against_its_rate_and_strict_fails_where_chance_does_not_explain(
        run, tmp_path):  # fmt: skip
    """`status`: per machine type and section, the clips and alarms in a time, the binomial p at the
    thresholds' rate (10 %), the last alarm; --strict exits 2 where p < 0.01; decisions made with an
    earlier threshold are left out of the test against today's rate."""
    import scipy.stats

    from mimii_due.runs import Run
    from mimii_due.scoring import Decision

    record, now = Record(tmp_path / "d.sqlite"), Run(run).thresholds()
    assert {m: rate for m, (_, rate) in now.items()} == {"fan": pytest.approx(0.1), "valve": pytest.approx(0.1)}
    for machine, section, flags in (("valve", 0, [1, 0, 0] + [0] * 27), ("fan", 3, [1, 0] * 10)):
        for i, flag in enumerate(flags):
            d = Decision(f"{i}.wav", machine, section, None, float(flag), now[machine][0], bool(flag), "gaussian",
                         "v", "0")  # fmt: skip
            record.add(d, source="upload")
    args = ["status", str(run), "--db", str(tmp_path / "d.sqlite")]
    r = runner.invoke(cli, args)
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and "50 clips scored in the last 24h" in text, r.output
    p_fan = scipy.stats.binomtest(10, 20, 0.1, alternative="greater").pvalue
    p_valve = scipy.stats.binomtest(1, 30, 0.1, alternative="greater").pvalue
    assert f"│ fan │ 03 │ 20 │ 10 │ 50.0% │ 10.0% │ {p_fan:.2g} │" in text
    assert f"│ valve │ 00 │ 30 │ 1 │ 3.3% │ 10.0% │ {p_valve:.2g} │" in text
    assert "more alarms than the thresholds' rate explains (p < 0.01): fan section 03:" in text
    assert runner.invoke(cli, [*args, "--strict"]).exit_code == 2
    r = runner.invoke(cli, [*args, "--alarm-after", "2/3"])  # fan's 1 0 1 0 ... raises 2/3 at clips 3, 5, ..., 19
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and "raised by 2/3" in text and f"{p_fan:.2g} │ " in text, r.output
    assert re.search(r"│ fan │ 03 │ 20 │ 10 │ [^│]+│[^│]+│[^│]+│[^│]+│ 9 │", text) and re.search(
        r"│ valve │ 00 │ 30 │ 1 │ [^│]+│[^│]+│[^│]+│[^│]+│ 0 │", text), r.output
    r = runner.invoke(cli, [*args, "--since", "2099-01-01"])
    assert r.exit_code == 1 and "no decisions recorded since 2099-01-01; the last from fan section 03" in " ".join(
        r.output.split()), r.output
    r = runner.invoke(cli, [*args, "--since", "2h", "--until", "2099-01-01"])
    assert r.exit_code == 0 and "50 clips scored since 2h ago until 2099-01-01" in " ".join(r.output.split())
    # valve at a threshold set since to a rate of 10 % (was 50 %: 15 alarms of 30 then): only today's 30 tested
    for i in range(30):
        record.add(Decision(f"old{i}.wav", "valve", 0, None, 1.0, 0.25, i % 2 == 0, "gaussian", "v", "0"),
                   source="upload")  # fmt: skip
    r = runner.invoke(cli, [*args, "--strict"])
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and f"│ valve │ 00 │ 60 │ 16 │ 26.7% │ 10.0% │ {p_valve:.2g} │" in text, r.output
    assert "left out of the binomial test against today's rate: valve section 00 (30)" in text
    assert "explains (p < 0.01): fan section 03:" in text  # fan's alarms, not valve's
    # a machine that sent clips two days ago and none since: named, and --strict fails for it alone
    quiet = Record(tmp_path / "q.sqlite")
    for machine in ("pump", "valve"):
        quiet.add(Decision("a.wav", machine, 0, None, 0.0, now["valve"][0], False, "gaussian", "v", "0"),
                  source="upload")  # fmt: skip
    with sqlite3.connect(tmp_path / "q.sqlite") as con:
        con.execute("UPDATE decisions SET time = time - 2 * 86400 WHERE machine = 'pump'")
    quiet_args = ["status", str(run), "--db", str(tmp_path / "q.sqlite"), "--strict"]
    r = runner.invoke(cli, quiet_args)
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and "no clips in that time from: pump section 00 (last 20" in text, r.output
    assert "every machine type's alarms are within what chance gives" in text
    assert runner.invoke(cli, [*quiet_args, "--since", "3d"]).exit_code == 0
    for extra, words in ((["--alarm-after", "0/5"], "1 <= K <= N <= 1000, not --alarm-after 0/5"),
                         (["--until", "2020-01-01"], "--since 24h is after --until 2020-01-01")):  # fmt: skip
        r = runner.invoke(cli, [*args, *extra])
        assert r.exit_code == 1 and words in " ".join(r.output.split()), r.output


def test_watch_explain_tells_the_alarm_command_where_the_clip_differs(run, clips, tmp_path, monkeypatch):
    """`watch --on-anomaly CMD --explain`: the command of an alarm on a clip with a 3 kHz tone added
    gets `why` (the mean level near 3 kHz, louder) and `bands` in its JSON and MIMII_DUE_WHY."""
    from mimii_due.data.audio import load, write

    y = load(clips[clips.label == "normal"].path.iloc[0])
    (tmp_path / "in").mkdir()
    write(tmp_path / "in" / "tone.wav", (y + 0.05 * np.sin(2 * np.pi * 3000 * np.arange(len(y)) / 16000)))
    monkeypatch.setenv("ALARMS", str(tmp_path / "alarms.json"))
    script = ("import json, os, sys; d = json.load(sys.stdin); d['env'] = os.environ['MIMII_DUE_WHY']; "
              "open(os.environ['ALARMS'], 'w').write(json.dumps(d))")  # fmt: skip
    args = ["watch", str(run), str(tmp_path / "in"), "--machine", "valve", "--section", "0", "--settle", "0",
            "--max-seconds", "3", "--db", str(tmp_path / "d.sqlite"),
            "--on-anomaly", shlex.join([sys.executable, "-c", script])]  # fmt: skip
    r = runner.invoke(cli, [*args, "--explain"])
    assert r.exit_code == 0 and "1 alarm(s) sent, 0 failed" in r.output, r.output
    got = json.loads((tmp_path / "alarms.json").read_text())
    assert got["filename"] == "tone.wav" and got["why"] == got["env"] and "the bands most unlike them" in got["why"]
    top = got["bands"][0]
    assert top["pooling"] == "mean" and abs(top["hz"] - 3000) < 300 and top["z"] > 5, got["bands"]
    r = runner.invoke(cli, ["watch", str(run), str(tmp_path / "in"), "--explain", "--max-seconds", "1"])
    assert r.exit_code == 1 and "--explain says why to run the --on-anomaly command" in r.output, r.output


def test_watch_alarm_after_is_checked_before_the_watch_starts(run, tmp_path):
    (tmp_path / "in").mkdir()
    args = ["watch", str(run), str(tmp_path / "in"), "--max-seconds", "1", "--db", str(tmp_path / "d.sqlite")]
    command = shlex.join([sys.executable, "-c", "pass"])
    for extra, words in ((["--alarm-after", "3/5"], "give that command too"),
                         (["--on-anomaly", command, "--alarm-after", "3-5"], "takes K/N"),
                         (["--on-anomaly", command, "--alarm-after", "6/5"], "1 <= K <= N")):  # fmt: skip
        r = runner.invoke(cli, [*args, *extra])
        assert r.exit_code == 1 and words in r.output and "watching" not in r.output, r.output
    r = runner.invoke(cli, [*args, "--on-anomaly", command, "--alarm-after", "3/5"])
    assert r.exit_code == 0 and "0 clip(s) scored; 0 alarm(s) sent, 0 failed" in r.output, r.output


def test_the_service_runs_the_alarm_command_for_each_anomaly_it_answers(run, clips, tmp_path, monkeypatch):
    from mimii_due.serve.alarm import AlarmCommand

    monkeypatch.setenv("ALARMS", str(tmp_path / "alarms.txt"))
    script = "import json, os, sys; open(os.environ['ALARMS'], 'a').write(json.load(sys.stdin)['filename'] + '\\n')"
    alarm = AlarmCommand(shlex.join([sys.executable, "-c", script]))
    client = TestClient(create_app(ModelSet(run), Record(tmp_path / "d.sqlite"), alarm=alarm))
    answers = [client.post(f"/v1/score?machine=valve&section=00&filename=c{i}.wav", content=open(p, "rb").read()).json()
               for i, p in enumerate(clips.path[:6])]  # fmt: skip
    alarm.close()
    flagged = sorted(a["filename"] for a in answers if a["anomalous"])
    assert 0 < len(flagged) < 6 and sorted((tmp_path / "alarms.txt").read_text().split()) == flagged
    assert alarm.sent == len(flagged) and alarm.failed == 0


@contextmanager
def _watching(run, record, folder, *, settle):
    """A watcher of valve section 00's clips in ``folder``, running in a thread while the block runs."""
    stop = threading.Event()
    w = Watcher(ModelSet(run), record, folder, settle=settle, machine="valve", section=0)
    t = threading.Thread(target=w.run, kwargs={"stop": stop, "max_seconds": 60})
    t.start()
    try:
        yield w
    finally:
        stop.set()
        t.join(timeout=30)


def test_a_watched_folder_that_goes_and_comes_back_is_said_and_watched_again(run, clips, tmp_path, caplog):
    folder = tmp_path / "share"  # a network share unmounted and mounted again
    folder.mkdir()
    record = Record(tmp_path / "d.sqlite")
    with _watching(run, record, folder, settle=0.2):
        time.sleep(0.5)
        shutil.rmtree(folder)
        t_end = time.time() + 10
        while "is gone" not in caplog.text and time.time() < t_end:
            time.sleep(0.1)
        folder.mkdir()
        shutil.copy(clips.path.iloc[0], folder / "after.wav")
        t_end = time.time() + 20
        while record.count() < 1 and time.time() < t_end:
            time.sleep(0.2)
    assert "is gone (deleted or unmounted)" in caplog.text and "is back; watching it again" in caplog.text
    assert [r["filename"] for r in record.recent()] == ["after.wav"]


def test_watcher_scores_existing_and_new_clips_once_each(run, clips, tmp_path):
    folder = tmp_path / "incoming"
    folder.mkdir()
    shutil.copy(clips.path.iloc[0], folder / "a.wav")
    record = Record(tmp_path / "d.sqlite")
    with _watching(run, record, folder, settle=0.5):
        data = open(clips.path.iloc[1], "rb").read()
        with open(folder / "b.wav", "wb") as f:  # written in two goes: scored only when complete
            f.write(data[: len(data) // 2])
            f.flush()
            time.sleep(0.2)
            f.write(data[len(data) // 2 :])
        (folder / "c.wav").write_bytes(b"not audio")
        t_end = time.time() + 30
        while record.count() < 2 and time.time() < t_end:
            time.sleep(0.2)
    rows = record.recent()
    assert sorted(r["filename"] for r in rows) == ["a.wav", "b.wav"] and {r["source"] for r in rows} == {"watcher"}
    import hashlib

    assert [r["sha256"] for r in rows if r["filename"] == "b.wav"] == [hashlib.sha256(data).hexdigest()]
    # a restarted watcher does not score a clip twice
    again = Watcher(ModelSet(run), record, folder, settle=0.5, machine="valve", section=0)
    assert again.run(max_seconds=2) == 0 and record.count() == 2


def test_a_watch_says_once_that_a_recorders_flac_files_are_not_scored(run, clips, tmp_path, caplog):
    folder = tmp_path / "incoming"
    (folder / "old").mkdir(parents=True)
    (folder / "old" / "x.mp3").write_bytes(b"ID3" + bytes(100))  # there before the watch starts
    record = Record(tmp_path / "d.sqlite")
    with caplog.at_level("WARNING"), _watching(run, record, folder, settle=0.1):
        for name in ("a.flac", "b.flac"):
            (folder / name).write_bytes(b"fLaC" + bytes(100))
        shutil.copy(clips.path.iloc[0], folder / "c.wav")
        t_end = time.time() + 30
        while (record.count() < 1 or ".flac files are not scored" not in caplog.text) and time.time() < t_end:
            time.sleep(0.2)
    assert record.count() == 1 and caplog.text.count(".flac files are not scored, only WAV files") == 1, caplog.text
    assert caplog.text.count(".mp3 files are not scored") == 1


def test_a_named_pipe_among_the_clips_is_reported_and_never_waited_on(run, clips, tmp_path, caplog):
    """A pipe (or socket, or device) named like a clip: reading it waits for a writer for ever, so
    `score` and a watch hung at it and scored nothing after it. It is reported and the others scored."""
    from mimii_due.scoring import score_files

    folder = tmp_path / "incoming"
    folder.mkdir()
    shutil.copy(clips.path.iloc[0], folder / "b.wav")
    os.mkfifo(folder / "a.wav")
    errors, out = [], {}

    def work():
        out["score"] = score_files(ModelSet(run), [folder], machine="valve", section=0)
        out["named"] = score_files(ModelSet(run), [folder / "a.wav"], machine="valve", section=0)
        w = Watcher(ModelSet(run), Record(tmp_path / "d.sqlite"), folder, settle=0.0, machine="valve", section=0,
                    on_error=lambda path, why: errors.append(why))  # fmt: skip
        out["watched"] = (w.process(folder / "a.wav"), w.process(folder / "b.wav"), w.scored)

    with caplog.at_level("WARNING"):
        t = threading.Thread(target=work, daemon=True)
        t.start()
        t.join(timeout=60)
    if t.is_alive():  # it waits on the pipe: let it go, and fail
        with open(folder / "a.wav", "wb"):
            pass
        pytest.fail("reading the named pipe waited for a writer")
    decisions, failed = out["score"]
    assert [d.filename for d in decisions] == ["b.wav"] and failed == []
    assert "skipping " + str(folder / "a.wav") + ": not a regular file" in caplog.text
    assert out["named"][0] == [] and out["named"][1] == [(str(folder / "a.wav"),
                                                          f"{folder / 'a.wav'}: not a regular file (a pipe, socket or "
                                                          "device)")]  # fmt: skip
    assert out["watched"] == (True, True, 1) and len(errors) == 1 and "not a regular file" in errors[0]

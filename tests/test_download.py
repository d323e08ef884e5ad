"""The whole download path against a local Zenodo-like server on 127.0.0.1."""

import hashlib
import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from typer.testing import CliRunner

from mimii_due.cli import app
from mimii_due.data.audio import write
from mimii_due.data.download import download, record_files
from mimii_due.data.index import index
from mimii_due.errors import DownloadError


def make_zip(tmp_path, machine, n=3):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(n):
            p = tmp_path / f"{machine}{i}.wav"
            write(p, np.random.default_rng(i).normal(0, 0.1, 16000))
            z.write(p, f"{machine}/train/section_00_source_train_normal_{i:04d}_strength_1.wav")
    return buf.getvalue()


class Zenodo:
    """Serves /api/records/<id> and /files/<name> with HTTP Range, optionally cutting a transfer."""

    def __init__(self, files, record=4740355):
        self.files, self.record = files, record
        self.cut_once = set()  # names whose first transfer stops half-way
        self.bad_md5 = set()  # names whose listed checksum is wrong
        self.record_body = None  # bytes to answer the record request with instead of its JSON
        self.requests = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("Range")))
                if self.path == f"/api/records/{outer.record}":
                    meta = {
                        "files": [
                            {
                                "key": k,
                                "size": len(v),
                                "checksum": "md5:" + ("0" * 32 if k in outer.bad_md5 else hashlib.md5(v).hexdigest()),
                                "links": {"self": f"{outer.url}/files/{k}"},
                            }
                            for k, v in outer.files.items()
                        ]
                    }
                    body = json.dumps(meta).encode() if outer.record_body is None else outer.record_body
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                name = self.path.rsplit("/", 1)[-1]
                data = outer.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if name in outer.cut_once:
                    outer.cut_once.discard(name)
                    self.wfile.write(data[start : start + (len(data) - start) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                self.wfile.write(data[start:])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def zenodo(tmp_path):
    z = Zenodo(
        {
            "dev_data_fan.zip": make_zip(tmp_path, "fan"),
            "dev_data_valve.zip": make_zip(tmp_path, "valve"),
            "eval_data_train_fan.zip": make_zip(tmp_path, "fan", 2),
        }
    )
    yield z
    z.server.shutdown()


def test_download_unpacks_into_the_index_layout_and_is_idempotent(zenodo, tmp_path):
    dest = tmp_path / "data"
    names = download(dest, machines=["fan"], part="dev", base_url=zenodo.url)
    assert names == ["dev_data_fan.zip"]
    t = index(dest)
    assert set(t.machine) == {"fan"} and len(t) == 3 and set(t.part) == {"dev"}
    n = len(zenodo.requests)
    download(dest, machines=["fan"], part="dev", base_url=zenodo.url)  # marker: nothing fetched again
    assert [r for r in zenodo.requests[n:] if r[0].startswith("/files")] == []
    download(dest, part="all", base_url=zenodo.url)
    assert set(index(dest).part) == {"dev", "eval"}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"\xff\xfe<html>maintenance</html>", "cannot read Zenodo record"),  # a proxy's page, not JSON
        (b"[1, 2]", "not in the record layout"),
        (b'{"files": [{"key": "dev_data_fan.zip", "checksum": "md5:00", "links": {}}]}', "not in the record layout"),
        (b'{"files": [{"key": "dev_data_fan.zip", "checksum": "sha1:00"}]}', "has no MD5 checksum"),
    ],
)
def test_an_answer_that_is_not_a_zenodo_record_is_a_download_error(zenodo, tmp_path, body, words):
    zenodo.record_body = body
    with pytest.raises(DownloadError, match=words):
        record_files(zenodo.record, base_url=zenodo.url)
    r = CliRunner().invoke(app, ["download", "--dest", str(tmp_path / "d"), "--base-url", zenodo.url])  # fmt: skip
    assert r.exit_code == 1 and words in r.output and "Traceback" not in r.output


def test_interrupted_transfer_resumes_with_range(zenodo, tmp_path):
    dest = tmp_path / "data"
    zenodo.cut_once.add("dev_data_valve.zip")
    with pytest.raises(DownloadError, match="rerun to resume"):
        download(dest, machines=["valve"], base_url=zenodo.url)
    part = dest / ".downloads" / "dev_data_valve.zip.part"
    assert 0 < part.stat().st_size < len(zenodo.files["dev_data_valve.zip"])
    download(dest, machines=["valve"], base_url=zenodo.url)
    ranged = [r for r in zenodo.requests if r[0].endswith("dev_data_valve.zip") and r[1]]
    assert ranged and ranged[-1][1].startswith("bytes=")
    assert len(index(dest)) == 3


def test_corrupted_archive_is_refused_and_deleted(zenodo, tmp_path):
    dest = tmp_path / "data"
    zenodo.bad_md5.add("dev_data_fan.zip")
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(dest, machines=["fan"], base_url=zenodo.url)
    assert not list((dest / ".downloads").glob("dev_data_fan.zip*"))
    assert not (dest / "dev_data").exists()


def test_download_command(zenodo, tmp_path):
    r = CliRunner().invoke(
        app, ["download", "--dest", str(tmp_path / "d"), "--machines", "valve", "--base-url", zenodo.url]
    )
    assert r.exit_code == 0, r.output
    assert "1 file(s) ready" in r.output
    n = len(zenodo.requests)  # a machine type the source has not: said before any request
    for machines, words in (("Valve", "no machine type 'Valve' (did you mean valve?)"),
                            ("ToyCar", "mimii-due has no machine type 'ToyCar'; it has fan, gearbox")):  # fmt: skip
        r = CliRunner().invoke(app, ["download", "--dest", str(tmp_path / "d"), "--machines", machines,
                                     "--base-url", zenodo.url])  # fmt: skip
        assert r.exit_code == 1 and words in " ".join(r.output.split()), r.output
    assert len(zenodo.requests) == n


def make_zip_2023(tmp_path, machine):
    """A 2022-2025 development archive (``dev_<machine>.zip``): <machine>/{train,test}."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i, name in enumerate(
            [
                "train/section_00_source_train_normal_0000_m-n_X.wav",
                "train/section_00_target_train_normal_0000_m-n_Y.wav",
                "test/section_00_source_test_anomaly_0000_m-n_X.wav",
            ]  # fmt: skip
        ):
            p = tmp_path / f"{machine}{i}.wav"
            write(p, np.random.default_rng(i).normal(0, 0.1, 16000))
            z.write(p, f"{machine}/{name}")
    return buf.getvalue()


def test_every_year_downloads_by_its_record_and_indexes_as_that_year(tmp_path):
    z = Zenodo({"dev_fan.zip": make_zip_2023(tmp_path, "fan"), "dev_valve.zip": make_zip_2023(tmp_path, "valve")},
               record=7882613)  # fmt: skip
    try:
        r = CliRunner().invoke(app, ["download", "--dest", str(tmp_path / "d"), "--year", "2023", "--machines", "fan",
                                     "--base-url", z.url])  # fmt: skip
        assert r.exit_code == 0, r.output
        t = index(tmp_path / "d")
        assert set(t.machine) == {"fan"} and set(t.year) == {2023} and set(t.part) == {"dev"}
        assert sorted(t.split) == ["test", "train", "train"]
        r = CliRunner().invoke(app, ["download", "--dest", str(tmp_path / "d"), "--year", "2024", "--machines", "fan",
                                     "--base-url", z.url])  # another year into the same folder  # fmt: skip
        assert r.exit_code == 1 and "it holds the dcase2023 download; put dcase2024 into another folder" in r.output
        assert len(index(tmp_path / "d")) == len(t)
    finally:
        z.server.shutdown()


def test_an_archive_with_a_bad_member_leaves_no_clip_and_is_deleted(tmp_path):
    data = bytearray(make_zip(tmp_path, "fan", 4))
    pos = data.find(b"data", 200) + 100  # inside the second member's samples: its CRC no longer matches
    data[pos : pos + 50] = bytes(50)
    z = Zenodo({"dev_data_fan.zip": bytes(data)})  # the listed MD5 is the corrupt file's own
    try:
        with pytest.raises(DownloadError, match="deleted, rerun"):
            download(tmp_path / "d", machines=["fan"], base_url=z.url)
        assert not list((tmp_path / "d").rglob("*.wav")) and not list((tmp_path / "d").rglob("*.tmp"))
        assert not (tmp_path / "d" / ".downloads" / "dev_data_fan.zip").exists()
    finally:
        z.server.shutdown()


def test_ground_truth_of_a_year_is_fetched_verified_and_used_by_evaluate(tmp_path):
    from mimii_due.data.download import download_ground_truth
    from mimii_due.evaluation.files import read_ground_truth

    good = (b"fan\nsection_00_0000.wav,section_00_source_test_anomaly_0003_m-n_X.wav\n"
            b"section_00_0001.wav,section_00_target_test_normal_0007_m-n_Y.wav\n")  # fmt: skip
    z = Zenodo({"eval_data_list_2023.csv": good, "eval_data_list_2024.csv": b"fan\nnot,a pair\n"})
    try:
        path = download_ground_truth(2023, tmp_path / "d", base_url=f"{z.url}/files")
        n = len(z.requests)
        assert download_ground_truth(2023, tmp_path / "d", base_url=f"{z.url}/files") == path
        assert len(z.requests) == n  # verified copy kept: nothing fetched again
        gt = read_ground_truth(path)
        assert gt.to_dict("records") == [
            {"machine": "fan", "section": 0, "domain": "source", "filename": "section_00_0000.wav", "label": "anomaly"},
            {"machine": "fan", "section": 0, "domain": "target", "filename": "section_00_0001.wav", "label": "normal"},
        ]
        with pytest.raises(DownloadError, match="line 2"):
            download_ground_truth(2024, tmp_path / "d", base_url=f"{z.url}/files")
        assert not (tmp_path / "d" / "ground_truth" / "eval_data_list_2024.csv").exists()
    finally:
        z.server.shutdown()


def make_mimii_zip(tmp_path, machine):
    """A MIMII archive (``6_dB_fan.zip``): <machine>/id_00/{normal,abnormal}/XXXXXXXX.wav, 3 + 2 clips."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for folder, n in (("normal", 3), ("abnormal", 2)):
            for i in range(n):
                p = tmp_path / f"{machine}_{folder}{i}.wav"
                write(p, np.random.default_rng(i).normal(0, 0.1, 16000))
                z.write(p, f"{machine}/id_00/{folder}/{i:08d}.wav")
    return buf.getvalue()


def test_mimii_downloads_each_snr_under_its_own_folder(tmp_path):
    z = Zenodo({name: make_mimii_zip(tmp_path, name.split("_")[-1].removesuffix(".zip"))
                for name in ("6_dB_fan.zip", "-6_dB_fan.zip", "6_dB_valve.zip")}, record=3384388)  # fmt: skip
    try:
        r = CliRunner().invoke(app, ["download", "--dest", str(tmp_path / "d"), "--year", "2019", "--machines",
                                     "fan", "--snr=-6", "--base-url", z.url])  # fmt: skip  # 2019: MIMII, as in index
        assert r.exit_code == 0, r.output
        assert "-6_dB_fan.zip" in r.output and "6_dB_valve.zip" not in r.output
        t = index(tmp_path / "d")
        assert set(t.machine) == {"fan_-6dB"} and set(t.year) == {2019} and sorted(t.split) == ["test"] * 4 + ["train"]
        assert download(tmp_path / "d", source="mimii", base_url=z.url) == sorted(z.files, key=list(z.files).index)
        assert set(index(tmp_path / "d").machine) == {"fan_-6dB", "fan_6dB", "valve_6dB"}
        with pytest.raises(DownloadError, match="only for MIMII"):
            download(tmp_path / "d", source="dcase2023", snrs=[6], base_url=z.url)
    finally:
        z.server.shutdown()


def test_2026_downloads_from_its_records_and_indexes_as_2026(tmp_path):
    z = Zenodo({"dev_valveEmu.zip": make_zip_2023(tmp_path, "valveEmu"), "dev_ToyCar_r2.zip": make_zip_2023(tmp_path,
               "ToyCar")}, record=19336329)  # the 2026 development record; ToyCar's archive is its second release
    try:
        r = CliRunner().invoke(app, ["download", "--dest", str(tmp_path / "d"), "--year", "2026", "--base-url", z.url])
        assert r.exit_code == 0, r.output
        t = index(tmp_path / "d")
        assert set(t.machine) == {"valveEmu", "ToyCar"} and set(t.year) == {2026} and set(t.part) == {"dev"}
    finally:
        z.server.shutdown()

import shutil
from pathlib import Path

import pytest

from mimii_due.data.audio import write
from mimii_due.data.index import COLUMNS, index
from mimii_due.errors import AudioError, FileNameError, LayoutError


def test_index_reads_dev_and_eval_layout(tiny_dataset):
    t = index(tiny_dataset)
    assert list(t.columns) == COLUMNS
    assert set(t.machine) == {"fan", "valve"}
    assert set(t.part) == {"dev", "eval"}
    dev = t[t.part == "dev"]
    assert set(dev.label) == {"normal", "anomaly"}
    ev = t[(t.part == "eval") & (t.split == "test")]
    assert ev.label.isna().all() and len(ev) > 0
    train = t[t.split == "train"]
    assert (train.label == "normal").all() and (train.attributes != "").all()
    assert (t.sample_rate == 16000).all() and (t.channels == 1).all() and (t.frames == 160000).all()
    assert set(t[t.split == "train"].groupby(["machine", "section", "domain"]).size()[:, :, "target"]) == {3}


def test_single_machine_folder_and_dcase2020_layout(tiny_dataset, tmp_path):
    t = index(tiny_dataset / "dev_data" / "fan")
    assert set(t.machine) == {"fan"} and len(t) > 0
    root = tmp_path / "dcase2020" / "pump"
    for split, names in {
        "train": ["normal_id_00_00000000.wav", "normal_id_02_00000001.wav"],
        "test": ["anomaly_id_00_00000000.wav", "normal_id_00_00000003.wav"],
    }.items():
        (root / split).mkdir(parents=True)
        for n in names:
            write(root / split / n, [0.1] * 1600)
    t = index(tmp_path / "dcase2020")
    assert list(t.split) == ["test", "test", "train", "train"]
    assert set(t.machine) == {"pump"} and set(t.section) == {0, 2}


def test_bad_name_is_reported_or_skipped(tiny_dataset, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(tiny_dataset / "dev_data" / "fan", root / "dev_data" / "fan")
    bad = root / "dev_data" / "fan" / "train" / "recording_001.wav"
    write(bad, [0.0] * 100)
    with pytest.raises(FileNameError, match="recording_001.wav"):
        index(root)
    t = index(root, on_error="skip")
    assert bad.name not in set(t.filename)
    assert t.attrs["skipped"][0][0] == str(bad)


def test_a_clip_named_by_another_challenge_is_a_stray_not_the_year(tiny_2023, tmp_path):
    """One DCASE 2020 name copied into a 2023 folder made the whole folder DCASE 2020 (and its metric)."""
    root = tmp_path / "d"
    shutil.copytree(tiny_2023 / "dev_data" / "fan", root / "dev_data" / "fan")
    assert set(index(root).year) == {2023}
    stray = root / "dev_data" / "fan" / "test" / "anomaly_id_00_00000000.wav"
    shutil.copy(next((root / "dev_data" / "fan" / "test").glob("*.wav")), stray)
    with pytest.raises(LayoutError, match="named as DCASE 2020 clips in a folder of DCASE 2021-2026 clips") as e:
        index(root)
    assert stray.name in str(e.value)
    t = index(root, on_error="skip")
    assert set(t.year) == {2023} and stray.name not in set(t.filename)
    assert [p for p, _ in t.attrs["skipped"]] == [str(stray)]


def test_clip_in_wrong_folder_and_truncated_header(tiny_dataset, tmp_path):
    root = tmp_path / "fan"
    (root / "target_test").mkdir(parents=True)
    src = next((tiny_dataset / "dev_data" / "fan" / "source_test").glob("*.wav"))
    shutil.copy(src, root / "target_test" / src.name)
    with pytest.raises(LayoutError, match="source test clip is in folder 'target_test'"):
        index(root)
    shutil.rmtree(root / "target_test")
    (root / "source_test").mkdir()
    (root / "source_test" / src.name).write_bytes(src.read_bytes()[:5000])
    with pytest.raises(AudioError, match="truncated"):
        index(root)


def test_index_reads_headers_of_many_files(tiny_dataset, tmp_path):
    """2,000 files (hard links) in one folder; the speed itself is measured by benchmarks/bench_index.py."""
    src = next((tiny_dataset / "dev_data" / "fan" / "train").glob("*.wav"))
    d = tmp_path / "fan" / "train"
    d.mkdir(parents=True)
    for i in range(2000):
        (d / f"section_00_source_train_normal_{i:04d}_strength_1.wav").hardlink_to(src)
    t = index(tmp_path / "fan")
    assert len(t) == 2000 and list(t["clip"]) == list(range(2000)) and (t.frames == 160000).all()


def test_real_dcase2020_clips_index(real_data):
    t = index(real_data)
    assert len(t) == 76
    assert set(t.split) == {"train", "test"}
    assert (t[t.split == "train"].label == "normal").all()
    assert (t.sample_rate == 16000).all()


def test_own_recordings_of_a_new_operating_condition_are_the_target_domain(tiny_dataset, tmp_path):
    """A ``target`` folder right under train/, test/normal/ or test/anomaly/ holds clips of a new
    operating condition (the target domain); every other clip is source, also a deeper ``target``."""
    from mimii_due.data.years import protocol_for

    fan = sorted((tiny_dataset / "dev_data" / "fan" / "train").glob("*.wav"))
    root = tmp_path / "recordings" / "pump"
    places = {"train/a.wav": "source", "train/target/b.wav": "target", "train/target/day 2/c.wav": "target",
              "train/2026/target/d.wav": "source", "train/target.wav": "source", "test/normal/target/e.wav": "target",
              "test/anomaly/target/f.wav": "target", "test/anomaly/g.wav": "source"}  # fmt: skip
    for i, rel in enumerate(places):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(fan[i], root / rel)
    t = index(tmp_path / "recordings")
    assert dict(zip(t.filename, t.domain, strict=True)) == {Path(k).name: v for k, v in places.items()}
    assert set(t.year) == {0} and protocol_for(t) == "dcase2022"  # each domain's AUC: the new condition on its own
    for rel in ("test/normal/target/e.wav", "test/anomaly/target/f.wav"):
        (root / rel).unlink()  # target clips in training only: the test clips evaluated as 2020 is
    assert protocol_for(index(tmp_path / "recordings")) == "dcase2020"
    for rel in ("train/a.wav", "train/2026/target/d.wav", "train/target.wav"):
        (root / rel).unlink()  # a new condition and no usual one to judge it beside
    with pytest.raises(LayoutError, match="pump's training clips are all in train/target/"):
        index(tmp_path / "recordings")


def test_a_folder_of_archives_not_yet_unpacked_says_so(tmp_path):
    with pytest.raises(LayoutError, match="no clips found") as e:
        index(tmp_path)  # empty: no hint
    assert "unpack" not in str(e.value)
    (tmp_path / "dev").mkdir()
    for name in ("dev_data_fan.zip", "dev/dev_valve.zip"):
        (tmp_path / name).write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip archive
    with pytest.raises(LayoutError, match="it holds dev_data_fan.zip, dev_valve.zip: unpack the archives first"):
        index(tmp_path)


def test_a_folder_of_flac_or_mp3_recordings_says_they_are_not_read_and_what_to_do(tmp_path):
    (tmp_path / "pump" / "train").mkdir(parents=True)
    for name in ("a.flac", "b.FLAC", "c.mp3"):
        (tmp_path / "pump" / "train" / name).write_bytes(b"fLaC" + bytes(100))
    with pytest.raises(LayoutError, match=r"it holds audio files of other formats \(2 \.flac, 1 \.mp3\), which are "
                                          r"not read: convert them to WAV \(`mimii-due split FOLDER OUT` does for "
                                          r"FLAC, AIFF and W64\) \(record WAV where you can: a lossy"):  # fmt: skip
        index(tmp_path)
    (tmp_path / "pump" / "train" / "c.mp3").unlink()
    with pytest.raises(LayoutError, match=r"\(2 \.flac\), which are not read: convert them to WAV \(`mimii-due "
                                          r"split FOLDER OUT` does for FLAC, AIFF and W64\)$"):  # fmt: skip
        index(tmp_path)
    (tmp_path / "pump" / "train" / "a.flac").rename(tmp_path / "pump" / "train" / "a.mp3")
    (tmp_path / "pump" / "train" / "b.FLAC").unlink()
    with pytest.raises(LayoutError, match=r"\(1 \.mp3\), which are not read: convert them to WAV \(record WAV"):
        index(tmp_path)


def test_flac_files_beside_the_wav_clips_are_said_not_to_be_read(tmp_path, caplog):
    """A recorder switched to FLAC part of the way: its FLAC recordings would be left out unsaid."""
    import numpy as np

    (tmp_path / "pump" / "train" / "tuesday").mkdir(parents=True)
    for i in range(3):
        write(tmp_path / "pump" / "train" / f"m{i}.wav", 0.1 * np.sin(np.arange(16000) * (0.1 + 0.01 * i)))
    (tmp_path / "pump" / "train" / "tuesday" / "t0.flac").write_bytes(b"fLaC" + bytes(100))
    (tmp_path / "pump" / "train" / "tuesday" / ".hidden.flac").write_bytes(b"fLaC" + bytes(100))
    with caplog.at_level("WARNING"):
        assert len(index(tmp_path)) == 3
    assert "also holds audio files of other formats (1 .flac), which are not read: convert them to WAV (`mimii-due " \
           "split FOLDER OUT` does for FLAC, AIFF and W64) (e.g. " in caplog.text and "t0.flac" in caplog.text


def test_own_recordings_under_any_names_are_normal_training_and_labelled_test_clips(tiny_dataset, tmp_path):
    """A maintenance engineer's recordings: train/ (any depth) holds normal clips, test/normal and
    test/anomaly the labelled test clips; one section, the source domain, no challenge (year 0)."""
    fan = sorted((tiny_dataset / "dev_data" / "fan" / "train").glob("*.wav"))
    root = tmp_path / "recordings" / "pump"
    places = {"train/2026-11-01/08 00.wav": fan[0], "train/2026-11-01/09 00.wav": fan[1], "train/b.wav": fan[2],
              "train/a.WAV": fan[3], "test/normal/ok 1.wav": fan[4], "test/anomaly/knock.wav": fan[5]}  # fmt: skip
    for rel, src in places.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / rel)
    t = index(tmp_path / "recordings")
    assert set(t.year) == {0} and set(t.scheme) == {"own"} and set(t.machine) == {"pump"}
    assert set(t.section) == {0} and set(t.domain) == {"source"}
    train = t[t.split == "train"]
    assert list(train.filename) == ["08 00.wav", "09 00.wav", "a.WAV", "b.wav"] and list(train["clip"]) == [0, 1, 2, 3]
    assert (train.label == "normal").all()
    test = t[t.split == "test"].set_index("filename")
    assert test.label.to_dict() == {"knock.wav": "anomaly", "ok 1.wav": "normal"}
    shutil.copy(fan[6], root / "test" / "anomaly" / "b.wav")  # results name clips by name: refused
    with pytest.raises(LayoutError, match="two clips of pump are named b.wav"):
        index(tmp_path / "recordings")
    (root / "test" / "anomaly" / "b.wav").unlink()
    shutil.copy(fan[6], root / "test" / "odd.wav")  # test clips need their label's folder
    with pytest.raises(FileNameError, match="odd.wav: file name fits no"):
        index(tmp_path / "recordings")
    (root / "test" / "odd.wav").unlink()
    dcase = root / "test" / "anomaly" / "section_00_source_test_normal_0001_strength_1.wav"
    shutil.copy(fan[6], dcase)  # a challenge's name in one's own test/anomaly/: the folder says what it is
    test = index(tmp_path / "recordings").query("split == 'test'").set_index("filename")
    assert test.loc[dcase.name, "label"] == "anomaly" and test.loc[dcase.name, "scheme"] == "own"

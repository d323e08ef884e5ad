"""`mimii-due split`: long recordings cut into clips to train on, and `train` saying when they want it."""

from itertools import pairwise

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from mimii_due.cli import app
from mimii_due.data.audio import cut
from mimii_due.data.split import split_folder
from mimii_due.errors import ConfigError, MimiiDueError

runner = CliRunner()
SR = 16000


def noise(seconds: float, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).clip(-1, 1)


def test_cut_covers_a_recording_with_clips_of_the_length_asked():
    assert cut(15, 10) == [(0, 15)] and cut(16, 10) == [(0, 10), (6, 16)]  # 1.5 clip lengths: one clip
    assert cut(50, 10) == [(0, 10), (10, 20), (20, 30), (30, 40), (40, 50)]
    spans = cut(123_457, 1000)
    assert len(spans) == 124 and spans[0][0] == 0 and spans[-1][1] == 123_457
    assert all(b - a == 1000 for a, b in spans) and all(b >= a2 for (_, b), (a2, _) in pairwise(spans))


def test_split_cuts_long_recordings_exactly_and_copies_short_ones(tmp_path):
    src = tmp_path / "recordings" / "pump" / "train"
    (src / "monday").mkdir(parents=True)
    shift = noise(50, 0)
    sf.write(src / "monday" / "shift.wav", shift, SR, subtype="PCM_16")
    sf.write(src / "b.wav", np.stack([noise(60, 1), noise(60, 2)], axis=1), 48000, subtype="PCM_24")  # 20 s
    sf.write(src / "c.wav", noise(12, 3), SR, subtype="PCM_16")  # under 1.5 clips: copied as it is
    out = tmp_path / "clips" / "pump" / "train"
    r = runner.invoke(app, ["split", str(src), str(out)])
    assert r.exit_code == 0 and "8 clips in" in r.output and "2 recording(s) cut" in " ".join(r.output.split())
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav"))
    assert names == ["b_0000.wav", "b_0001.wav", "c.wav", *[f"monday/shift_{j:04d}.wav" for j in range(5)]]
    expected = sf.read(src / "monday" / "shift.wav", dtype="int16")[0]
    got = sf.read(out / "monday" / "shift_0003.wav", dtype="int16")[0]
    np.testing.assert_array_equal(got, expected[30 * SR : 40 * SR])  # the samples themselves, not re-quantised
    b = sf.read(src / "b.wav", dtype="int32")[0]
    info = sf.info(out / "b_0001.wav")
    assert (info.samplerate, info.channels, info.subtype) == (48000, 2, "PCM_24")
    np.testing.assert_array_equal(sf.read(out / "b_0001.wav", dtype="int32")[0], b[len(b) - 480_000 :])
    assert (out / "c.wav").read_bytes() == (src / "c.wav").read_bytes()
    meta = (out / "split_meta.csv").read_text().splitlines()
    assert meta[0] == "clip,source,start_s,end_s" and len(meta) == 9 and "monday/shift_0004.wav," in meta[-1]
    assert meta[-1].endswith(",40.0,50.0")
    again = split_folder(src, out, seconds=25)  # an earlier split's folder is written again, none of it left
    assert [r["clip"] for r in again] == ["b.wav", "c.wav", "monday/shift_0000.wav", "monday/shift_0001.wav"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav")) == sorted(r["clip"] for r in again)
    assert not (out / ".split_unfinished").exists()


def test_split_makes_wav_clips_of_a_recorders_flac_aiff_and_wave64_files_sample_for_sample(tmp_path):
    """The toolkit reads WAV only; a recorder set to FLAC (or AIFF, Wave64) gets its files cut and
    converted into WAV clips, the samples themselves, which then index and train as any clips."""
    from mimii_due.data.audio import load

    src = tmp_path / "recordings" / "pump" / "train"
    src.mkdir(parents=True)
    shift = (noise(35, 0) * 32767).astype(np.int16)
    sf.write(src / "shift.flac", np.stack([shift, shift[::-1]], axis=1), SR, subtype="PCM_16")
    sf.write(src / "short.flac", noise(8, 1), SR, subtype="PCM_24")
    sf.write(src / "b.aiff", noise(12, 2), SR, subtype="PCM_16")
    sf.write(src / "c.w64", noise(9, 3), SR, subtype="FLOAT")
    out = tmp_path / "clips" / "pump" / "train"
    r = runner.invoke(app, ["split", str(src), str(out)])
    assert r.exit_code == 0, r.output
    assert "7 clip(s) from FLAC, AIFF or Wave64 written as WAV" in " ".join(r.output.split()), r.output
    names = sorted(p.name for p in out.iterdir() if p.name != "split_meta.csv")
    assert names == ["b.wav", "c.wav", "shift_0000.wav", "shift_0001.wav", "shift_0002.wav", "shift_0003.wav",
                     "short.wav"]  # fmt: skip
    got = sf.read(out / "shift_0001.wav", dtype="int16")[0]
    start = cut(35 * SR, 10 * SR)[1][0]
    np.testing.assert_array_equal(got, np.stack([shift, shift[::-1]], axis=1)[start : start + 10 * SR])
    for name, source in (("short.wav", "short.flac"), ("b.wav", "b.aiff"), ("c.wav", "c.w64")):
        info = sf.info(out / name)
        assert info.format == "WAV" and info.subtype == sf.info(src / source).subtype
        np.testing.assert_array_equal(load(out / name), sf.read(src / source, dtype="float32")[0])
    (src / "bad.flac").write_bytes(b"fLaC" + bytes(30))
    with pytest.raises(MimiiDueError, match=r"bad\.flac: cannot read it as FLAC"):
        split_folder(src, tmp_path / "other")


def test_split_refuses_what_would_mix_or_lose_recordings(tmp_path):
    src = tmp_path / "rec"
    src.mkdir()
    sf.write(src / "a.wav", noise(30, 0), SR)
    sf.write(src / "a_0001.wav", noise(5, 1), SR)  # what cutting a.wav would also be called
    cases = [(src / "out", "inside it"), (tmp_path, "above it"), (src, "the recordings' folder")]
    for out, words in cases:
        with pytest.raises(ConfigError, match=words):
            split_folder(src, out)
    with pytest.raises(ConfigError, match="would both give a_0001.wav: rename one"):
        split_folder(src, tmp_path / "o1")
    (src / "a_0001.wav").unlink()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds files that no split wrote"):
        split_folder(src, mine)
    for bad in (0, 0.5, 601, float("nan"), True):
        with pytest.raises(ConfigError, match="from 1 to 600 seconds"):
            split_folder(src, tmp_path / "o2", seconds=bad)
    assert sorted(p.name for p in src.iterdir()) == ["a.wav"] and not (tmp_path / "o1").exists()


def test_train_says_when_its_training_clips_last_minutes(tmp_path, caplog):
    """A shift recorded in two files: two examples, and a model that refuses 10 s clips; said, with
    the command that cuts them. Cut, they train a model that scores 10 s clips."""
    from mimii_due import pipeline

    rec = tmp_path / "recordings" / "pump"
    (rec / "train").mkdir(parents=True)
    for k in range(2):
        sf.write(rec / "train" / f"shift{k}.wav", noise(90, k), SR)
    with caplog.at_level("WARNING"):
        pipeline.train(tmp_path / "run", tmp_path / "recordings", detector="gaussian")
    assert "pump: its 2 training clip(s) last 90 s: each is one example" in caplog.text
    assert f"`mimii-due split {rec / 'train'} OUT`" in caplog.text
    caplog.clear()
    split_folder(rec / "train", tmp_path / "clips" / "pump" / "train")
    with caplog.at_level("WARNING"):
        pipeline.train(tmp_path / "run10", tmp_path / "clips", detector="gaussian")
    assert "training clip(s) last" not in caplog.text
    from mimii_due.scoring import ModelSet

    wav = tmp_path / "new.wav"
    sf.write(wav, noise(10, 7), SR)
    [d] = ModelSet(tmp_path / "run10").score_bytes(wav.read_bytes(), filename="new.wav")
    assert d.machine == "pump" and d.window is None

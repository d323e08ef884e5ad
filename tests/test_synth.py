import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mimii_due.cli import app
from mimii_due.data.audio import load, read_header, write
from mimii_due.data.index import index
from mimii_due.data.table1 import MACHINES, TABLE1
from mimii_due.synth import generate as g
from mimii_due.synth.machines import MODELS
from mimii_due.synth.mixing import measure_rt60, room_impulse_response, section_power


def test_plan_full_scale_matches_table1():
    tasks = pd.DataFrame([t.__dict__ for t in g.plan(scale=1.0)])
    train = tasks[tasks.split == "train"].groupby(["machine", "section", "domain"]).size()
    for (m, s), row in TABLE1.items():
        assert train[(m, s, "source")] == row.source.train and train[(m, s, "target")] == 3
        test = tasks[(tasks.machine == m) & (tasks.section == s) & (tasks.split == "test")]
        assert (test.domain == "source").sum() == row.source.test_total
    assert len(tasks) > 42000


def test_scaled_plan_keeps_three_target_clips_and_both_labels():
    tasks = pd.DataFrame([t.__dict__ for t in g.plan(scale=0.05)])
    for (m, s, d), grp in tasks.groupby(["machine", "section", "domain"]):
        assert (grp.split == "train").sum() == (3 if d == "target" else round(TABLE1[(m, s)].source.train * 0.05))
        test = grp[grp.split == "test"]
        assert set(test.label) == {"normal", "anomaly"}
        assert set(test[test.label == "anomaly"].anomaly) <= set(MODELS[m].anomalies)


def test_each_section_has_its_own_anomaly_kind_and_the_2023_section_has_every_kind():
    tasks = pd.DataFrame([t.__dict__ for t in g.plan(scale=0.02)])
    bad = tasks[tasks.label == "anomaly"]
    for m in MACHINES:
        kinds = MODELS[m].anomalies
        per_section = bad[bad.machine == m].groupby("section").anomaly.unique()
        assert all(len(k) == 1 for k in per_section)  # one product, one fault (both domains)
        assert {k[0] for k in per_section} == set(kinds)  # six sections cover Table 2's kinds
        assert per_section[0][0] == kinds[0] and per_section[1][0] == kinds[1 % len(kinds)]
        t23 = pd.DataFrame([t.__dict__ for t in g.plan(machines=[m], sections=[0], layout="dcase2023", scale=0.2)])
        assert set(t23[t23.label == "anomaly"].anomaly) == set(kinds)


def test_output_format_layout_and_ground_truth(tiny_dataset):
    t = index(tiny_dataset)
    info = read_header(t.path[0])
    assert (info.sample_rate, info.channels, info.frames, info.bits) == (16000, 1, 160000, 16)
    meta = pd.read_csv(tiny_dataset / "synth_meta.csv")
    assert len(meta) == len(t)
    gt = pd.read_csv(
        tiny_dataset / "ground_truth" / "ground_truth_fan_section_03_source_test.csv",
        header=None,
        names=["filename", "label"],
    )
    ev = meta[(meta.machine == "fan") & (meta.section == 3) & (meta.domain == "source") & (meta.split == "test")]
    truth = dict(zip(ev.path.str.split("/").str[-1], (ev.label == "anomaly").astype(int), strict=True))
    assert dict(zip(gt.filename, gt.label, strict=True)) == truth and set(gt.label) == {0, 1}


def test_section_mixing_snr_is_exact_on_the_written_files(tiny_dataset):
    meta = pd.read_csv(tiny_dataset / "synth_meta.csv", keep_default_na=False)
    for m in ("fan", "valve"):
        rows = meta[(meta.machine == m) & (meta.section == 0)]
        tasks = [t for t in g.plan(machines=[m], sections=[0], scale=0.02, seed=3)]
        cleans = [g.clean_clip(t, 3) for t in tasks]
        a = section_power(cleans)
        assert a == pytest.approx(rows.section_power.iloc[0], rel=1e-9)
        for t, clean in list(zip(tasks, cleans, strict=True))[::7]:
            r = rows[rows.path == t.relpath].iloc[0]
            y = load(tiny_dataset / t.relpath).astype(np.float64) / r.gain
            noise = y - clean
            measured = 10 * np.log10(a / np.mean(noise**2))
            assert abs(measured - r.snr_db) < 0.1
            row = TABLE1[(m, 0)].domain(t.domain)
            assert row.snr - row.snr_spread - 1e-9 <= r.snr_db <= row.snr + row.snr_spread + 1e-9


def test_target_noise_factory_and_snr_shifts_follow_table1():
    fan2 = [t for t in g.plan(machines=["fan"], sections=[2], scale=0.01)]
    assert {g.noise_choice(t, 0)[1] for t in fan2 if t.domain == "source"} == {0}
    assert {g.noise_choice(t, 0)[1] for t in fan2 if t.domain == "target"} == {1}
    pump1 = [t for t in g.plan(machines=["pump"], sections=[1], scale=0.01)]
    assert {g.noise_choice(t, 0)[0] for t in pump1 if t.domain == "target"} == {-18.0}
    spread = [g.noise_choice(t, 0)[0] for t in g.plan(machines=["gearbox"], sections=[5], scale=0.01)]
    assert min(spread) >= -18.5 and max(spread) <= -15.5 and np.std(spread) > 0.3


@pytest.mark.parametrize("seed", [0, 1])
def test_room_impulse_response_rt60(seed):
    h = room_impulse_response(rt60=0.3, seed=seed)
    assert abs(measure_rt60(h) - 0.3) < 0.03
    import pyroomacoustics as pra

    assert abs(pra.experimental.measure_rt60(h, fs=16000, decay_db=20) - 0.3) < 0.03


def test_same_seed_same_bytes_with_any_number_of_workers(tmp_path):
    def digest(root):
        return {
            p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.wav"))
        }

    a = g.generate(tmp_path / "a", machines=["gearbox"], sections=[1], scale=0.005, seed=9, workers=1)
    b = g.generate(tmp_path / "b", machines=["gearbox"], sections=[1], scale=0.005, seed=9, workers=2)
    c = g.generate(tmp_path / "c", machines=["gearbox"], sections=[1], scale=0.005, seed=10, workers=1)
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)


def test_anomaly_size_and_jitter_act_on_their_machine_type_only(monkeypatch):
    def plans():
        tasks = g.plan(machines=["fan", "valve"], sections=[0], scale=0.02)
        sev = {m: np.array([t.severity for t in tasks if t.machine == m and t.anomaly]) for m in ("fan", "valve")}
        same = {m: [t for t in tasks if t.machine == m and t.label == "normal" and t.domain == "source"
                    and t.attribute == tasks[0].attribute] for m in ("fan", "valve")}  # fmt: skip
        return sev, {m: [g.clip_params(t, 0) for t in same[m]] for m in same}

    sev, params = plans()
    monkeypatch.setitem(g.ANOMALY_SIZE, "fan", 2 * g.ANOMALY_SIZE["fan"])
    monkeypatch.setitem(g.JITTER, "fan", 5 * g.JITTER["fan"])
    sev2, params2 = plans()
    np.testing.assert_allclose(sev2["fan"], 2 * sev["fan"])
    np.testing.assert_array_equal(sev2["valve"], sev["valve"])
    assert params2["valve"] == params["valve"]
    spread = [np.std([p["rot_hz"] for p in ps["fan"]]) for ps in (params, params2)]
    assert len(params["fan"]) >= 5 and spread[1] == pytest.approx(5 * spread[0], rel=1e-6)  # the same draws


def test_target_domain_clips_spread_target_jitter_times_as_much(monkeypatch):
    tasks = [t for t in g.plan(machines=["fan"], sections=[0], scale=0.05) if t.label == "normal" and t.split == "test"]

    def spread():
        rot = {d: [g.clip_params(t, 0)["rot_hz"] for t in tasks if t.domain == d] for d in ("source", "target")}
        return {d: np.std(v) for d, v in rot.items()}

    factor, default = g.TARGET_JITTER, spread()
    monkeypatch.setattr(g, "TARGET_JITTER", 1.0)
    one = spread()
    assert factor > 1 and default["source"] == one["source"] and one["target"] > 0
    assert default["target"] == pytest.approx(factor * one["target"], rel=1e-6)  # the same draws


@pytest.mark.parametrize("machine", MACHINES)
def test_every_anomaly_changes_the_sound(machine):
    task = [t for t in g.plan(machines=[machine], sections=[0], scale=0.01) if t.label == "anomaly"][0]
    normal = g.clean_clip(task.__class__(**{**task.__dict__, "anomaly": "", "severity": 0.0}), 0)
    for kind in MODELS[machine].anomalies:
        faulty = g.clean_clip(task.__class__(**{**task.__dict__, "anomaly": kind, "severity": 1.0}), 0)
        assert np.isfinite(faulty).all()
        assert not np.allclose(faulty, normal), kind


def test_mix_command_on_users_recordings(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "clean").mkdir()
    (tmp_path / "noise").mkdir()
    for i in range(4):  # a recorder's upper-case ".WAV" counts, a hidden file does not
        name = f"m{i}.{'WAV' if i == 3 else 'wav'}"
        write(tmp_path / "clean" / name, 0.1 * np.sin(np.arange(16000) * (0.1 + 0.01 * i)))
    for j in range(2):
        write(tmp_path / "noise" / f"n{j}.wav", rng.normal(0, 0.05, 40000))
    write(tmp_path / "clean" / ".m4.wav", np.zeros(100))
    r = CliRunner().invoke(
        app,
        [
            "mix",
            str(tmp_path / "out"),
            "--clean",
            str(tmp_path / "clean"),
            "--noise",
            str(tmp_path / "noise"),
            "--snr",
            "-6",
            "--spread",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    outs = sorted(p for p in (tmp_path / "out").iterdir() if p.name != "mix_meta.csv")
    assert [p.name for p in outs] == ["m0.wav", "m1.wav", "m2.wav", "m3.WAV"]
    a = section_power([load(tmp_path / "clean" / p.name) for p in outs])
    for p in outs:
        clean = load(tmp_path / "clean" / p.name).astype(np.float64)
        noise = load(p).astype(np.float64) - clean
        assert -7.05 < 10 * np.log10(a / np.mean(noise**2)) < -4.95
    before = {p.name: p.read_bytes() for p in (tmp_path / "clean").iterdir()}
    for out, where in ((tmp_path / "clean", "clean"), (tmp_path / "noise" / "mixed", "noise")):
        r = CliRunner().invoke(app, ["mix", str(out), "--clean", str(tmp_path / "clean"), "--noise",
                                     str(tmp_path / "noise"), "--snr", "0"])  # fmt: skip
        assert r.exit_code == 1 and f"the output folder is the {where} recordings' folder or inside it" in r.output
    assert {p.name: p.read_bytes() for p in (tmp_path / "clean").iterdir()} == before  # mixed in place before
    assert not (tmp_path / "noise" / "mixed").exists()


def test_mix_of_multichannel_recordings_mixes_the_channel_named(tmp_path):
    """Clean and noise recordings on channel 1 of two-channel files (channel 0: another microphone):
    `mix --channel 1` gives the mix of the one-channel recordings, sample for sample."""
    import soundfile as sf

    rng = np.random.default_rng(1)
    for kind, n in (("clean", 3), ("noise", 2)):
        for sub in ("mono", "stereo"):
            (tmp_path / sub / kind).mkdir(parents=True)
        for i in range(n):
            y = 0.1 * np.sin(np.arange(16000) * (0.1 + 0.01 * i)) if kind == "clean" else rng.normal(0, 0.05, 24000)
            write(tmp_path / "mono" / kind / f"{kind}{i}.wav", y)
            y16 = sf.read(tmp_path / "mono" / kind / f"{kind}{i}.wav", dtype="int16")[0]
            other = rng.integers(-3000, 3000, len(y16)).astype(np.int16)
            sf.write(tmp_path / "stereo" / kind / f"{kind}{i}.wav", np.stack([other, y16], 1), 16000, subtype="PCM_16")
    for sub, extra in (("mono", []), ("stereo", ["--channel", "1"])):
        r = CliRunner().invoke(app, ["mix", str(tmp_path / sub / "out"), "--clean", str(tmp_path / sub / "clean"),
                                     "--noise", str(tmp_path / sub / "noise"), "--snr", "0", *extra])  # fmt: skip
        assert r.exit_code == 0, r.output
    for i in range(3):
        name = f"clean{i}.wav"
        assert (tmp_path / "stereo" / "out" / name).read_bytes() == (tmp_path / "mono" / "out" / name).read_bytes()


def test_mix_records_each_clip_and_never_writes_over_or_removes_recordings_it_did_not_write(tmp_path):
    from mimii_due.errors import ConfigError

    for folder, n in (("clean", 3), ("noise", 1)):
        for i in range(n):
            write(tmp_path / folder / "sub" / f"{folder}{i}.wav", 0.1 * np.sin(np.arange(16000) * (0.1 + 0.02 * i)))
    out = tmp_path / "out"
    kw = {"snr": -3.0, "spread": 2.0, "seed": 4}
    recs = g.mix_folder(tmp_path / "clean", tmp_path / "noise", out, **kw)
    meta = pd.read_csv(out / "mix_meta.csv")
    assert list(meta.path) == ["sub/clean0.wav", "sub/clean1.wav", "sub/clean2.wav"] == [r["path"] for r in recs]
    assert meta.snr_db.between(-5, -1).all() and (meta.noise == str(tmp_path / "noise" / "sub" / "noise0.wav")).all()
    assert not (out / "mix_incomplete.json").exists()
    theirs = out / "sub" / "clean1.wav"  # someone's recording, put where a mixed clip was
    write(theirs, np.full(16000, 0.25))
    write(out / "field" / "pump.wav", np.full(16000, 0.5))
    before = {p: p.read_bytes() for p in (theirs, out / "field" / "pump.wav")}
    (out / "mix_meta.csv").unlink()  # as in a folder that mix did not make: every clip counts as theirs
    with pytest.raises(ConfigError, match="it holds 4 WAV files that mimii-due mix did not write"):
        g.mix_folder(tmp_path / "clean", tmp_path / "noise", out, **kw)
    assert {p: p.read_bytes() for p in before} == before and not (out / "mix_incomplete.json").exists()
    shutil.rmtree(out)
    g.mix_folder(tmp_path / "clean", tmp_path / "noise", out, **kw)
    write(out / "field" / "pump.wav", np.full(16000, 0.5))
    with pytest.raises(ConfigError, match="1 WAV files .* \\(e.g. field/pump.wav\\)"):  # was deleted as stale
        g.mix_folder(tmp_path / "clean", tmp_path / "noise", out, **kw)
    assert (out / "field" / "pump.wav").read_bytes() == before[out / "field" / "pump.wav"]
    shutil.rmtree(out / "field")
    (tmp_path / "clean" / "sub" / "clean2.wav").unlink()  # a smaller mix: its earlier clip is no part of it
    g.mix_folder(tmp_path / "clean", tmp_path / "noise", out, **kw)
    assert sorted(p.name for p in out.rglob("*.wav")) == ["clean0.wav", "clean1.wav"]
    assert len(pd.read_csv(out / "mix_meta.csv")) == 2


def test_a_seed_numpy_cannot_take_is_refused_before_anything_is_written(tmp_path):
    from mimii_due.errors import ConfigError

    with pytest.raises(ConfigError, match="seed must be a whole number from 0"):
        g.generate(tmp_path / "d", machines=["fan"], sections=[0], scale=0.01, seed=-1)
    with pytest.raises(ConfigError, match="seed must be a whole number from 0"):
        g.mix_folder(tmp_path, tmp_path, tmp_path / "m", snr=0.0, seed=-1)
    assert not (tmp_path / "d").exists() and not (tmp_path / "m").exists()
    r = CliRunner().invoke(app, ["synth", str(tmp_path / "d"), "--seed", "-1"])  # was numpy's ValueError traceback
    assert r.exit_code == 2 and "greater than or equal to 0" in r.output and not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--snr", "nan"], "SNR must be a finite number"),  # it wrote silent clips
        (["--snr", "inf"], "SNR must be a finite number"),
        (["--snr", "0", "--spread", "-2"], "not negative"),  # a traceback from numpy
        (["--snr", "0", "--rt60", "-1"], "RT60 must be between 0.15 and 3.0 s"),  # pyroomacoustics' ValueError
        (["--snr", "0", "--rt60", "100"], "RT60 must be between 0.15 and 3.0 s"),  # out of memory in the image method
    ],
)
def test_mix_refuses_settings_it_cannot_honour_before_writing_anything(tmp_path, args, words):
    for folder in ("clean", "noise"):
        (tmp_path / folder).mkdir()
        write(tmp_path / folder / "a.wav", 0.1 * np.sin(np.arange(16000) * 0.1))
    r = CliRunner().invoke(app, ["mix", str(tmp_path / "out"), "--clean", str(tmp_path / "clean"), "--noise",
                                 str(tmp_path / "noise"), *args])  # fmt: skip
    assert r.exit_code == 1 and words in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "out").exists()


def test_mix_refuses_a_noise_folder_holding_the_clean_recordings(tmp_path):
    """--noise the --clean folder (or one above it): each machine would be mixed with its own sound."""
    (tmp_path / "rec" / "clean").mkdir(parents=True)
    write(tmp_path / "rec" / "clean" / "a.wav", 0.1 * np.sin(np.arange(16000) * 0.1))
    for noise in ("rec/clean", "rec"):
        r = CliRunner().invoke(app, ["mix", str(tmp_path / "out"), "--clean", str(tmp_path / "rec" / "clean"),
                                     "--noise", str(tmp_path / noise), "--snr", "0"])  # fmt: skip
        assert r.exit_code == 1 and "the clean and the noise recordings share files" in r.output, r.output
    assert not (tmp_path / "out").exists()


def test_synth_command_and_rerun_is_a_no_op(tmp_path, monkeypatch):
    args = ["synth", str(tmp_path / "d"), "--machines", "pump", "--sections", "4", "--scale", "0.005"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    t = index(tmp_path / "d")
    assert set(t.part) == {"eval"} and t[t.split == "test"].label.isna().all()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "d").rglob("*.wav")}
    assert CliRunner().invoke(app, args).exit_code == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "d").rglob("*.wav")} == before
    monkeypatch.setitem(g.ANOMALY_SIZE, "pump", 2 * g.ANOMALY_SIZE["pump"])  # a new calibration: made again
    assert CliRunner().invoke(app, args).exit_code == 0
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "d").rglob("*.wav")}
    assert after.keys() == before.keys() and all(after[p] != before[p] for p in before)


def test_synth_never_mixes_its_clips_with_others(tmp_path):
    """Someone's recordings are never overwritten or mixed in; an earlier generation's extra clips
    do not pass for part of a smaller new one."""
    from mimii_due.errors import ConfigError

    mine = tmp_path / "recordings" / "dev_data" / "fan" / "train" / "section_00_source_train_normal_0000_a_1.wav"
    mine.parent.mkdir(parents=True)
    write(mine, np.sin(np.arange(16000) / 7.0).astype(np.float32))
    before = mine.read_bytes()
    kw = {"machines": ["fan"], "sections": [0], "seed": 2, "layout": "dcase2023", "min_test": 3}
    with pytest.raises(ConfigError, match="it holds 1 WAV files that mimii-due synth did not write"):
        g.generate(tmp_path / "recordings", scale=0.01, **kw)
    assert mine.read_bytes() == before and not (tmp_path / "recordings" / "synth_done.json").exists()
    out = tmp_path / "gen"
    g.generate(out, scale=0.02, **kw)
    g.generate(out, scale=0.01, **kw)
    want = len(g.plan(scale=0.01, **kw))
    assert len(index(out)) == want == len(pd.read_csv(out / "synth_meta.csv"))
    # a recording put into the generated folder afterwards: not removed as a clip of an earlier generation
    theirs = out / "mine" / "my_recording.wav"
    theirs.parent.mkdir()
    shutil.copy(mine, theirs)
    with pytest.raises(ConfigError, match="it holds 1 WAV files that mimii-due synth did not write .*my_recording"):
        g.generate(out, scale=0.02, **kw)
    assert theirs.read_bytes() == before and len(index(out / "dev_data")) == want  # removed before
    theirs.unlink()
    (out / "synth_meta.csv").unlink()  # as after a kill: the settings' plan vouches for the clips
    (out / "synth_done.json").rename(out / g.INCOMPLETE)
    g.generate(out, scale=0.01, **kw)
    assert len(index(out)) == want


def test_generation_whose_worker_processes_die_fails_naming_the_folder_instead_of_hanging(tmp_path):
    """Worker processes that cannot start (here: the calling script is read from standard input, which
    a spawned worker cannot import) fail the run with a clear error; multiprocessing.Pool started
    new ones for ever, and the run hung."""
    import subprocess
    import sys

    script = ("from mimii_due.synth.generate import generate\n"
              f"generate({str(tmp_path / 'out')!r}, machines=['valve'], sections=[0], scale=0.02, seed=4, workers=2)\n")
    r = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "out: a process generating clips ended abruptly" in r.stderr and "run again to finish" in r.stderr
    assert not (tmp_path / "out" / "synth_done.json").exists()

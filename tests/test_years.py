"""The DCASE years: names, layouts, year recognition, counts, and real files of 2020 and 2023."""

import json
import logging
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mimii_due.cli import app
from mimii_due.data.audio import MultichannelWarning
from mimii_due.data.index import index
from mimii_due.data.naming import format_name, parse_name
from mimii_due.data.table1 import compare
from mimii_due.data.years import expected
from mimii_due.detectors import BUILT_IN, make
from mimii_due.errors import FileNameError, LayoutError
from mimii_due.evaluation.metrics import bootstrap_sd
from mimii_due.features.extract import extract
from mimii_due.runs import Run

runner = CliRunner()


@pytest.mark.parametrize(
    "name, section, domain, split, label, attrs",
    [
        ("section_00_target_test_anomaly_0015_car_A2_spd_6_mic_2.wav", 0, "target", "test", "anomaly",
         "car_A2_spd_6_mic_2"),
        ("section_00_source_train_normal_0073_volt_1.5_wt_0.wav", 0, "source", "train", "normal", "volt_1.5_wt_0"),
        ("section_00_source_train_normal_0001_noAttributes.wav", 0, "source", "train", "normal", ""),
        ("section_00_0001.wav", 0, None, "test", None, ""),
        ("id_05_00000012.wav", 5, "source", "test", None, ""),
        ("anomaly_id_04_00000315.wav", 4, "source", "", "anomaly", ""),
    ],
)  # fmt: skip
def test_names_of_every_year_parse_and_round_trip(name, section, domain, split, label, attrs):
    c = parse_name(name)
    assert (c.section, c.domain, c.split, c.label, c.attribute_values) == (section, domain, split, label, attrs)
    assert format_name(c) == name


def test_real_2023_clips_index_with_year_machine_domain_label_and_attributes(real_2023):
    t = index(real_2023)
    assert len(t) == 24 and set(t.year) == {2023}
    assert sorted(t.machine.unique()) == ["ToyTrain", "bearing", "fan", "gearbox", "slider", "valve"]
    assert set(t.section) == {0} and set(t.split) == {"train", "test"}
    row = t[t.filename == "section_00_target_test_anomaly_0015_car_A2_spd_6_mic_2.wav"].iloc[0]
    assert (row.machine, row.domain, row.label, row.attributes) == (
        "ToyTrain",
        "target",
        "anomaly",
        "car_A2_spd_6_mic_2",
    )
    assert set(t[t.machine == "ToyTrain"].frames) == {12 * 16000} and set(t[t.machine == "fan"].frames) == {160000}
    for r in t.itertuples():  # every field agrees with the name it came from
        c = parse_name(r.filename)
        assert (r.domain, r.label, r.attributes) == (c.domain, c.label, c.attribute_values)


def test_real_2020_samples_index_as_2020_with_every_machine_type(real_2020_samples):
    t = index(real_2020_samples)
    assert len(t) == 93 and set(t.year) == {2020} and set(t.split) == {"test"}
    counts = t.groupby(["machine", "label"]).size().unstack()
    assert counts.loc["fan"].to_dict() == {"anomaly": 8, "normal": 9}
    assert counts.loc["pump"].to_dict() == {"anomaly": 6, "normal": 10}
    assert set(t[t.machine == "ToyCar"].frames) == {11 * 16000}
    assert (t.label.isin(["normal", "anomaly"])).all()


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_every_detector_trains_and_scores_on_real_2023_clips(name, real_2023):
    from test_detectors import FAST  # tests/ is on sys.path (pytest's prepend import mode)

    t = index(real_2023)
    machines = ["ToyTrain"] if name == "mobilenetv2" else sorted(t.machine.unique())  # mobilenetv2: attribute classes
    for machine in machines:
        m = t[t.machine == machine]
        det = make(name, **FAST[name])
        det.fit(*extract(m[m.split == "train"], cfg=det.features))
        scores = det.score(*extract(m[m.split == "test"], cfg=det.features))
        assert scores.shape == (2,) and np.isfinite(scores).all()


def test_generated_2023_layout_has_its_counts_names_and_attribute_files(tiny_2023):
    t = index(tiny_2023)
    assert set(t.year) == {2023} and set(t.section) == {0} and set(t.folder) == {"train", "test"}
    fan = t[t.machine == "fan"]
    assert (fan.split == "train").sum() == round(990 * 0.02) + 10  # 20 source + always 10 target
    assert ((fan.split == "test") & (fan.label == "anomaly") & (fan.domain == "target")).sum() == 6
    assert (fan.attributes != "").all()
    assert (fan.csv_attributes == fan.attributes).all()  # attributes_00.csv agrees with the names
    assert (tiny_2023 / "dev_data" / "fan" / "attributes_00.csv").exists()


def _renamed_copy(src, dst, rename):
    for p in sorted(src.rglob("*.wav")):
        new = rename(p)
        if new is not None:
            new.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, new)
    return dst


@pytest.mark.parametrize("year", [2020, 2021, 2022, 2023, 2025])
def test_info_names_the_year_and_compares_its_counts(year, tiny_dataset, tiny_2023, tmp_path):
    if year == 2021:
        root, args = tiny_dataset, []
    elif year == 2023:
        root, args = tiny_2023, []
    elif year == 2025:
        root, args = tiny_2023, ["--year", "2025"]
    elif year == 2022:  # three sections in one test/ folder

        def rename(p):
            c = parse_name(p)
            return (
                tmp_path
                / "d"
                / p.parent.parent.name
                / p.parent.name
                / format_name(type(c)(**{**c.__dict__, "section": c.index % 3}))
            )

        root, args = _renamed_copy(tiny_2023, tmp_path / "d", rename), []
    else:  # 2020 names: normal_id_00_XXXXXXXX.wav in <machine>/{train,test}

        def rename(p):
            c = parse_name(p)
            return tmp_path / "d" / p.parent.parent.name / p.parent.name / f"{c.label}_id_00_{c.index:08d}.wav"

        root, args = _renamed_copy(tiny_2023, tmp_path / "d", rename), []
    r = runner.invoke(app, ["info", str(root), *args])
    assert r.exit_code == 0, r.output
    assert f"DCASE {year}" in r.output
    cmp = compare(index(root, year=year), year)
    if year in (2022, 2023, 2025):  # generated at scale 0.02: 20 source clips against the year's 990; 10 target
        assert (cmp.paper_train.dropna().isin([990, 10])).all()
        src = cmp.domain == "source"
        assert cmp[src].differs.str.contains("train").all()
        if year != 2022:  # the renamed 2022 copy spreads the 10 target clips over three sections
            assert not cmp[~src].differs.str.contains("train").any()
    if year == 2021:
        assert "Table 1" in r.output
    if year == 2020:  # id_00 is tabulated for the MIMII machine types (development), not for others
        mimii = cmp.machine.isin(["fan", "pump", "slider", "valve"])
        assert cmp[mimii].differs.str.contains("train").all() and (cmp[mimii].paper_test_normal == 100).all()
        assert cmp[~mimii].differs.str.contains("not in").all()


def test_2020_development_counts_per_machine_id_add_up_to_the_published_totals():
    totals = {"fan": (3675, 1875), "pump": (3349, 856), "slider": (2804, 1290), "valve": (3291, 879)}
    for machine, (train, test) in totals.items():
        rows = [expected(2020, machine, i) for i in (0, 2, 4, 6)]
        assert sum(r.source.train for r in rows) == train
        assert sum(r.source.test_total for r in rows) == test
    assert expected(2020, "fan", 1) is None  # an evaluation ID: not tabulated
    assert expected(2020, "ToyCar", 1).source.test_total is None  # toy test counts unknown: not compared


def test_a_2020_clip_table_with_the_published_counts_compares_clean():
    rows = []
    for split, label, n in (("train", "normal", 911), ("test", "normal", 100), ("test", "anomaly", 407)):
        rows += [{"machine": "fan", "section": 0, "domain": "source", "split": split, "label": label}] * n
    rows += [{"machine": "ToyCar", "section": 1, "domain": "source", "split": "train", "label": "normal"}] * 1000
    rows += [{"machine": "ToyCar", "section": 1, "domain": "source", "split": "test", "label": "anomaly"}] * 7
    cmp = compare(pd.DataFrame(rows), 2020)
    assert (cmp.differences == "").all(), cmp.differences.tolist()
    short = compare(pd.DataFrame(rows[1:]), 2020)  # one training clip missing
    assert short.set_index("machine").loc["fan", "differs"] == "train"


def test_2023_data_through_train_test_evaluate_with_the_2023_metric(tiny_2023, tmp_path):
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", str(tiny_2023), "--out", str(run), "--detector", "twfr_gmm"]).exit_code == 0
    r = runner.invoke(app, ["test", str(run), str(tiny_2023)])
    assert r.exit_code == 0, r.output
    assert (run / "results" / "anomaly_score_fan_section_00_test.csv").exists()  # no domain in 2022-2025 names
    r = runner.invoke(app, ["evaluate", str(run)])
    assert r.exit_code == 0, r.output and "dcase2022" in r.output
    text = (run / "results" / "result.csv").read_text()
    assert "AUC (source),AUC (target),pAUC" in text
    res = pd.read_json(run / "results" / "result.json", typ="series")
    assert res["protocol"] == "dcase2022" and "bootstrap_sd" not in res
    r = runner.invoke(app, ["evaluate", str(run), "--bootstrap", "20"])  # the test clips' luck, on request
    assert r.exit_code == 0 and "bootstrap sd" in r.output, r.output
    res = pd.read_json(run / "results" / "result.json", typ="series")
    scores = Run(run).read_scores()
    sd = bootstrap_sd(scores, protocol="dcase2022", n=20)
    assert res["bootstrap_draws"] == 20 and sd > 0 and res["bootstrap_sd"] == pytest.approx(sd, rel=1e-12)


def test_the_year_named_at_train_is_the_year_test_scores_with(tiny_2023, tmp_path):
    run = tmp_path / "run"
    args = ["train", str(tiny_2023), "--out", str(run), "--detector", "gaussian", "--machines", "fan", "--year", "2025"]
    assert runner.invoke(app, args).exit_code == 0
    assert runner.invoke(app, ["test", str(run), str(tiny_2023)]).exit_code == 0  # no --year: the run's
    assert (Run(run).stamp()["year"], Run(run).stamp()["protocol"]) == (2025, "dcase2022")
    assert runner.invoke(app, ["test", str(run), str(tiny_2023), "--year", "2023"]).exit_code == 0
    assert Run(run).stamp()["year"] == 2023
    # the run's year is that of its training clips: own recordings tested with it are recognised as such
    own = tmp_path / "own" / "fan"
    for split, folder in (("train", own / "train"), ("test", own / "test" / "normal")):
        folder.mkdir(parents=True)
        for i, p in enumerate(sorted((tiny_2023 / "dev_data" / "fan" / split).glob("*normal*.wav"))[:3]):
            shutil.copy(p, folder / f"rec_{split}_{i}.wav")
    r = runner.invoke(app, ["test", str(run), str(own.parent)])
    assert r.exit_code == 0 and Run(run).stamp()["year"] == 0, r.output
    with pytest.raises(LayoutError, match="they are own recordings; name no year"):
        index(own.parent, year=2023)
    # a year whose clips look otherwise would score these by another metric (2020's: no domains): refused
    r = runner.invoke(app, ["test", str(run), str(tiny_2023), "--year", "2020"])
    assert r.exit_code == 1 and "--year 2020 does not fit these clips: they are named and laid out as DCASE " \
        "2022-2026 clips; name 2022, 2023, 2024, 2025 or 2026" in " ".join(r.output.split()), r.output
    assert Run(run).stamp()["year"] == 0  # the refused test left the results as they were


def test_a_test_set_of_one_domain_is_evaluated_with_that_domain_and_a_warning(tiny_2023, tmp_path, caplog):
    """A user who scores only the source clips (a subset, a folder copied in part) gets the AUCs
    there are, empty target columns and a warning, not a KeyError."""
    data = tmp_path / "data"
    shutil.copytree(tiny_2023 / "dev_data" / "fan", data / "fan")
    for p in (data / "fan" / "test").glob("*_target_*"):
        p.unlink()
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", str(data), "--out", str(run), "--detector", "gaussian"]).exit_code == 0
    assert runner.invoke(app, ["test", str(run), str(data)]).exit_code == 0
    with caplog.at_level("WARNING"):
        r = runner.invoke(app, ["evaluate", str(run)])
    assert r.exit_code == 0, r.output
    assert "fan section 00 has no target-domain test clips" in caplog.text
    results, summary = Run(run).read_results()
    assert list(results.domain) == ["source"] and 0 <= summary["official_score"] <= 1
    row = (run / "results" / "result.csv").read_text().splitlines()[2].split(",")
    assert row[0] == "00" and row[2] == "nan" and float(row[1]) == pytest.approx(results.AUC.iloc[0])


def make_mimii(root, *, level="6dB", machine="fan", ids=(0, 2), n_normal=14, n_abnormal=4, seconds=1.0):
    """MIMII's layout as its archives unpack: <level>/<machine>/id_XX/{normal,abnormal}/XXXXXXXX.wav,
    8-channel 16-bit WAVs (WAVE_FORMAT_EXTENSIBLE, as the real files); anomalies add a 3 kHz tone."""
    import soundfile as sf

    t = np.arange(int(16000 * seconds)) / 16000
    for ident in ids:
        rng = np.random.default_rng(ident)
        for folder, n in (("normal", n_normal), ("abnormal", n_abnormal)):
            d = root / level / machine / f"id_{ident:02d}" / folder
            d.mkdir(parents=True)
            for i in range(n):
                y = 0.2 * np.sin(2 * np.pi * 440 * t) + rng.normal(0, 0.02, (8, len(t)))
                if folder == "abnormal":
                    y[0] += 0.2 * np.sin(2 * np.pi * 3000 * t)
                sf.write(str(d / f"{i:08d}.wav"), (y.T * 32767).astype("<i2"), 16000, subtype="PCM_16",
                         format="WAVEX")  # fmt: skip
    return root


def test_mimii_layout_indexes_with_the_baseline_split(tmp_path, caplog):
    root = make_mimii(tmp_path / "mimii")
    assert parse_name(root / "6dB/fan/id_02/abnormal/00000003.wav").label == "anomaly"
    with pytest.raises(FileNameError, match="fits no"):  # a bare MIMII name says nothing of its ID or label
        parse_name("00000003.wav")
    t = index(root)
    assert set(t.year) == {2019} and set(t.machine) == {"fan_6dB"} and (t.channels == 8).all()
    assert (root / "6dB/fan/id_00/normal/00000000.wav").read_bytes()[20:22] == b"\xfe\xff"  # EXTENSIBLE
    fan = t[t.section == 0]
    test = fan[fan.split == "test"]
    # MIMII's baseline split: as many normal test clips as anomalous ones, the first by name
    assert (test.label == "anomaly").sum() == 4 and (test.label == "normal").sum() == 4
    assert sorted(test[test.label == "normal"]["clip"]) == [0, 1, 2, 3]
    assert len(fan[fan.split == "train"]) == 10 and set(fan[fan.split == "train"].label) == {"normal"}
    assert "anomaly_id_00_00000003.wav" in set(test.filename)  # unique per ID, as DCASE 2020 named them
    assert len(set(zip(t.machine, t.section, t.filename, strict=True))) == len(t)
    r = runner.invoke(app, ["info", str(root)])
    assert r.exit_code == 0 and "MIMII data" in r.output, r.output
    cmp = compare(t, 2019).set_index(["machine", "section"])
    assert cmp.loc[("fan_6dB", 0), "paper_train"] == 1011 - 407 and cmp.loc[("fan_6dB", 0), "paper_test_anomaly"] == 407
    assert expected(2019, "fan_-6dB", 0).source.snr == -6 and expected(2019, "fan", 1) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", MultichannelWarning)  # features say it once, not per clip
        with caplog.at_level(logging.WARNING, logger="mimii_due.features.extract"):
            feats, _ = extract(fan)
    said = [r.getMessage() for r in caplog.records if "several channels" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"{len(fan)} of {len(fan)} clips") and len(feats) == len(fan)


def test_mimii_noise_levels_are_separate_machine_types_and_never_mixed(tmp_path):
    for level, name in (("6dB", "valve_6dB"), ("min6dB", "valve_-6dB"), ("0_dB_valve", "valve_0dB")):
        make_mimii(tmp_path / level, level=level, machine="valve", ids=(0,), n_normal=3, n_abnormal=1)
        assert set(index(tmp_path / level).machine) == {name}  # 0_dB_valve: an archive unzipped under its name
    root = tmp_path / "levels"
    for level in ("6dB", "-6dB"):
        make_mimii(root, level=level, machine="valve", ids=(0,), n_normal=3, n_abnormal=1)
    t = index(root)
    assert sorted(set(t.machine)) == ["valve_-6dB", "valve_6dB"] and len(t) == 8
    assert (t.groupby("machine")["split"].apply(lambda s: (s == "train").sum()) == 2).all()  # split per level
    for level in ("noise_a", "noise_b"):  # folders the index cannot read a level from
        make_mimii(tmp_path / "unnamed", level=level, machine="valve", ids=(0,), n_normal=3, n_abnormal=1)
    with pytest.raises(LayoutError, match="there twice"):
        index(tmp_path / "unnamed")


def test_mimii_trains_tests_and_evaluates_per_machine_id_and_scores_files_by_their_folders(tmp_path):
    root = make_mimii(tmp_path / "mimii") / "6dB"
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", str(root), "--out", str(run), "--detector", "twfr_gmm"])
    assert r.exit_code == 0, r.output
    assert runner.invoke(app, ["test", str(run), str(root)]).exit_code == 0
    assert (run / "results" / "anomaly_score_fan_6dB_id_02.csv").exists()
    r = runner.invoke(app, ["evaluate", str(run)])
    assert r.exit_code == 0, r.output
    res = pd.read_json(run / "results" / "result.json", typ="series")
    assert res["protocol"] == "dcase2020" and res["official_score"] > 0.9  # the 3 kHz tone stands out
    r = runner.invoke(app, ["score", str(run), str(root / "fan/id_02/abnormal/00000001.wav"), "--format", "json",
                            "--out", str(tmp_path / "s.json")])  # the folders route a bare MIMII name to its ID
    assert r.exit_code == 0, r.output
    [d] = json.loads((tmp_path / "s.json").read_text())
    assert (d["filename"], d["machine"], d["section"], d["decision"]) == (
        "id_02/abnormal/00000001.wav", "fan_6dB", 2, "anomaly")  # fmt: skip


def test_2026_two_channel_clips_of_its_machine_types_are_read_as_2026_and_scored_with_its_metric(tiny_2023, tmp_path):
    import soundfile as sf

    from mimii_due.data.audio import load

    root = tmp_path / "dcase2026"
    rng = np.random.default_rng(0)
    for p in sorted((tiny_2023 / "dev_data" / "valve").rglob("*.wav")):  # valve becomes 2026's valveEmu,
        out = root / "dev_data" / "valveEmu" / p.parent.name / p.name  # near (0) and far (1) microphones
        out.parent.mkdir(parents=True, exist_ok=True)
        y = load(p)
        sf.write(str(out), np.stack([y, 0.3 * y + rng.normal(0, 0.05, len(y))], axis=1), 16000, subtype="PCM_16")
    t = index(root)
    assert set(t.year) == {2026} and (t.channels == 2).all() and set(t.machine) == {"valveEmu"}
    r = runner.invoke(app, ["info", str(root)])
    assert r.exit_code == 0 and "DCASE 2026 data" in r.output, r.output
    cmp = compare(t, 2026)
    assert (cmp.differences == "").all() and cmp.paper_train.isna().all()  # counts not tabulated: not compared
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", str(root), "--out", str(run), "--detector", "twfr_gmm"]).exit_code == 0
    assert runner.invoke(app, ["test", str(run), str(root)]).exit_code == 0
    assert (run / "results" / "anomaly_score_valveEmu_section_00_test.csv").exists()
    r = runner.invoke(app, ["evaluate", str(run)])
    assert r.exit_code == 0, r.output
    assert pd.read_json(run / "results" / "result.json", typ="series")["protocol"] == "dcase2022"
    assert index(tiny_2023, year=2026)["year"].iloc[0] == 2026  # --year names it where the names cannot

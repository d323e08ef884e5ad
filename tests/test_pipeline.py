"""The commands end to end on a tiny generated dataset."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from mimii_due import pipeline
from mimii_due.cli import app
from mimii_due.data.index import index
from mimii_due.data.naming import parse_name

runner = CliRunner()


def test_train_test_evaluate_on_dev_and_eval_data(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", str(tiny_dataset), "--out", str(run), "--detector", "ae", "--epochs", "2"])
    assert r.exit_code == 0, r.output
    assert (run / "models" / "fan" / "detector.json").exists() and (run / "models" / "valve" / "state.pt").exists()
    r = runner.invoke(app, ["test", str(run), str(tiny_dataset)])
    assert r.exit_code == 0, r.output
    res_dir = run / "results"
    scores = pd.read_csv(res_dir / "scores.csv")
    assert len(scores) == len(index(tiny_dataset).query("split == 'test'"))
    # official files: one per machine/section/domain, eval clips (unlabelled names) included
    f = res_dir / "anomaly_score_fan_section_03_target_test.csv"
    rows = f.read_text().splitlines()
    assert rows and parse_name(rows[0].split(",")[0]).label is None
    assert (res_dir / "decision_result_valve_section_00_source_test.csv").exists()
    # without ground truth only the labelled (development) sections are evaluated
    r = runner.invoke(app, ["evaluate", str(run)])
    assert r.exit_code == 0, r.output
    res = pd.read_json(res_dir / "result.json", typ="series")
    assert {(x["machine"], x["section"]) for x in res["results"]} == {("fan", 0), ("valve", 0)}
    r = runner.invoke(app, ["evaluate", str(run), "--ground-truth", str(tiny_dataset / "ground_truth")])
    assert r.exit_code == 0, r.output
    res = pd.read_json(res_dir / "result.json", typ="series")
    assert {x["section"] for x in res["results"]} == {0, 3}
    assert 0 < res["official_score"] <= 1
    text = (res_dir / "result.csv").read_text()
    assert text.startswith("fan\nsection,domain,AUC,pAUC,precision,recall,F1 score\n00,source,")
    before = (res_dir / "result.json").read_bytes()
    r = runner.invoke(app, ["evaluate", str(run), "--bootstrap", "1"])  # one draw has no spread
    assert r.exit_code == 1 and "bootstrap: 0 (none) or at least 2 resampled test sets, got 1" in r.output
    assert (res_dir / "result.json").read_bytes() == before


def test_existing_run_needs_resume_and_resume_skips_trained_machines(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    args = ["train", str(tiny_dataset), "--out", str(run), "--detector", "ae", "--epochs", "1", "--machines", "valve"]
    assert runner.invoke(app, args).exit_code == 0
    r = runner.invoke(app, args)
    assert r.exit_code == 1 and "--resume" in r.output
    stamp = (run / "models" / "valve" / "state.pt").stat().st_mtime_ns
    assert runner.invoke(app, args + ["--resume"]).exit_code == 0
    assert (run / "models" / "valve" / "state.pt").stat().st_mtime_ns == stamp
    r = runner.invoke(app, [*args[:7], "2", *args[8:], "--resume"])  # other settings: says which, not "--resume"
    assert r.exit_code == 1 and "this run was started as ae {'epochs': 1}, not as ae {'epochs': 2}" in r.output
    twice = ["train", str(tiny_dataset), "--out", str(tmp_path / "run2"), "--detector", "gaussian", "--machines",
             "valve,valve"]  # fmt: skip
    r = runner.invoke(app, twice)  # a machine type named twice counts once
    assert r.exit_code == 0 and "for valve in" in r.output
    assert json.loads((tmp_path / "run2" / "run.json").read_text())["machines"] == ["valve"]


def test_corrupt_clip_fails_with_its_name_or_is_skipped(tiny_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset / "dev_data" / "valve", data / "dev_data" / "valve")
    bad = sorted((data / "dev_data" / "valve" / "train").glob("*.wav"))[1]
    bad.write_bytes(bad.read_bytes()[:1000])
    r = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "r1"), "--detector", "ae", "--epochs", "1"])
    assert r.exit_code == 1 and bad.name in r.output and "truncated" in r.output
    r = runner.invoke(
        app, ["train", str(data), "--out", str(tmp_path / "r2"), "--detector", "ae", "--epochs", "1", "--skip-bad"]
    )
    assert r.exit_code == 0, r.output


def test_run_command_end_to_end(tiny_dataset, tmp_path):
    r = runner.invoke(
        app, ["run", str(tiny_dataset), "--out", str(tmp_path / "o"), "--epochs", "1", "--machines", "valve"]
    )
    assert r.exit_code == 0, r.output
    assert "Table 4" in r.output and "Valve" in r.output and "official score" in r.output
    assert "ae" in r.output and "ensemble" in r.output  # the paper's AE beside our default detector
    assert (tmp_path / "o" / "report.html").exists() and (tmp_path / "o" / "report.md").exists()


def test_run_compares_variants_of_one_detector_given_with_their_settings(tiny_dataset, tmp_path):
    from mimii_due.runs import Run

    out = tmp_path / "o"
    specs = "twfr_gmm,twfr_gmm:decay=auto:neighbours=0,ensemble:members=[twfr_gmm,gaussian]:weights=[1,1]"
    r = runner.invoke(app, ["run", str(tiny_dataset), "--out", str(out), "--machines", "valve", "--detectors", specs])
    assert r.exit_code == 0, r.output
    folders = {"twfr_gmm": ("twfr_gmm", {}),
               "twfr_gmm_decay-auto_neighbours-0": ("twfr_gmm", {"decay": "auto", "neighbours": 0}),
               "ensemble_members-twfr_gmm-gaussian_weights-1-1": ("ensemble", {"members": ["twfr_gmm", "gaussian"],
                                                                               "weights": [1, 1]})}  # fmt: skip
    assert sorted(p.name for p in out.iterdir() if Run(p).exists()) == sorted(folders)
    for folder, (detector, params) in folders.items():
        meta = Run(out / folder).meta()
        assert (meta["detector"], meta["params"]) == (detector, params)
    model = Run(out / "twfr_gmm_decay-auto_neighbours-0").load_model("valve")
    assert (model.config.decay, model.config.neighbours) == ("auto", 0)  # the settings reached the detector
    assert Run(out / "ensemble_members-twfr_gmm-gaussian_weights-1-1").load_model("valve").config.members == (
        "twfr_gmm", "gaussian")
    scores = [Run(out / f).read_scores().sort_values("path")["score"].to_numpy() for f in folders]
    assert not np.allclose(scores[0], scores[1])
    for spec in ("twfr_gmm:decay=auto:neighbours=0", "ensemble:members=[twfr_gmm,gaussian]:weights=[1,1]"):
        assert f"{spec}: official score" in r.output  # each variant by its spec, in the output and the report
        assert spec in (out / "report.md").read_text()
    # a variant is the same run as the detector trained with those settings by --set: the resume takes it
    r = runner.invoke(app, ["train", str(tiny_dataset), "--out", str(out / "twfr_gmm_decay-auto_neighbours-0"),
                            "--machines", "valve", "--detector", "twfr_gmm", "--set", "decay=auto", "--set",
                            "neighbours=0", "--resume"])  # fmt: skip
    assert r.exit_code == 0, r.output


def test_run_of_a_detector_at_several_seeds_sums_them_up_as_papers_report_a_method(tiny_2023, tmp_path):
    out = tmp_path / "o"
    r = runner.invoke(app, ["run", str(tiny_2023), "--out", str(out), "--machines", "fan", "--detectors",
                            "embedding:seed=0:epochs=1,gaussian,embedding:seed=1:epochs=1"])  # fmt: skip
    assert r.exit_code == 0, r.output
    got = [float(x) for x in re.findall(r"embedding:seed=\d:epochs=1: official score (\S+) ", r.output)]
    assert len(got) == 2 and got[0] != got[1]  # two trainings, two scores
    line = re.search(r"embedding over 2 runs \(embedding_seed-0_epochs-1, embedding_seed-1_epochs-1\): official "
                     r"score mean (\S+), sd (\S+), from (\S+) to (\S+)\n", r.output)  # fmt: skip
    assert line, r.output
    want = [np.mean(got), np.std(got, ddof=1), min(got), max(got)]
    assert [float(v.rstrip(",")) for v in line.groups()] == pytest.approx(want, abs=2e-3)  # printed to 3 digits above
    assert r.output.count(" over ") == 1  # gaussian is no one's seed


def test_run_with_seeds_trains_each_detector_that_takes_one_once_per_seed_the_ensembles_members_too(tiny_2023,
                                                                                                     tmp_path):
    from mimii_due.runs import Run

    out = tmp_path / "o"
    ens = "ensemble:members=[twfr_gmm,embedding:epochs=1]:min_clips=0"  # the embedding counts at this size too
    r = runner.invoke(app, ["run", str(tiny_2023), "--out", str(out), "--machines", "fan", "--detectors",
                            f"gaussian,{ens}", "--seeds", "0,1"])  # fmt: skip
    assert r.exit_code == 0, r.output
    folders = sorted(p.name for p in out.iterdir() if Run(p).exists())
    assert folders == ["ensemble_members-twfr_gmm-embedding_epochs-1_min_clips-0_seed-0",
                       "ensemble_members-twfr_gmm-embedding_epochs-1_min_clips-0_seed-1", "gaussian"]  # fmt: skip
    for seed in (0, 1):  # the ensemble's seed reached the member that takes one
        ensemble = Run(out / folders[seed]).load_model("fan")
        assert ensemble.config.seed == seed and ensemble.members_[1].config.seed == seed
    scores = [Run(out / f).read_scores().sort_values("path")["score"].to_numpy() for f in folders[:2]]
    assert not np.allclose(*scores)  # two trainings
    assert "ensemble over 2 runs" in r.output and r.output.count(" over ") == 1  # gaussian takes no seed: once
    for bad, message in ((["--seeds", "0,x"], "--seeds takes whole numbers"),
                         (["--detectors", "twfr_gmm:seed=3", "--seeds", "0,1"], "gives its own seed")):  # fmt: skip
        r = runner.invoke(app, ["run", str(tiny_2023), "--out", str(tmp_path / "o2"), *bad])
        assert r.exit_code == 1 and message in r.output and not (tmp_path / "o2").exists(), r.output


@pytest.mark.parametrize("args, message", [
    (["--detectors", "ae:epochs=3", "--epochs", "5"], "sets epochs=3, and epochs=5 is given besides"),
    (["--detectors", "ensemble:weights=[6 ,1],ensemble:weights=[6, 1]"], "would share a run folder"),
    (["--detectors", "twfr_gmm:decay"], "a setting is KEY=VALUE"),
    (["--detectors", "twfr_gmm:bogus=1"], "unknown setting(s) for TWFRConfig: bogus"),
])  # fmt: skip
def test_run_refuses_bad_detector_specs_before_writing(tiny_dataset, tmp_path, args, message):
    r = runner.invoke(app, ["run", str(tiny_dataset), "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 1 and message in r.output, r.output
    assert not (tmp_path / "o").exists()


def test_a_config_file_or_a_runs_run_json_trains_as_it_says_and_the_command_line_wins(tiny_dataset, tmp_path):
    from mimii_due.runs import Run

    a, b = tmp_path / "a", tmp_path / "b"
    args = ["--machines", "valve", "--features", "n_mels=64"]
    r = runner.invoke(app, ["train", str(tiny_dataset), "--out", str(a), "--detector", "twfr_gmm:decay=auto", *args])
    assert r.exit_code == 0, r.output
    meta = json.loads((a / "run.json").read_text())  # as a run resumed on another machine records it
    (a / "run.json").write_text(json.dumps(meta | {"earlier_environments": [meta["environment"]]}))
    r = runner.invoke(app, ["train", str(tiny_dataset), "--out", str(b), "--config", str(a / "run.json"),
                            "--machines", "valve"])  # fmt: skip  # train as that run was trained
    assert r.exit_code == 0, r.output
    assert "data, earlier_environments, environment, machines" in r.output and "not used" in r.output  # a's data
    meta_a, meta_b = Run(a).meta(), Run(b).meta()
    for key, want in (("detector", "twfr_gmm"), ("params", {"decay": "auto"}), ("features", {"n_mels": 64})):
        assert meta_a[key] == meta_b[key] == want
    for run in (a, b):
        assert runner.invoke(app, ["test", str(run), str(tiny_dataset)]).exit_code == 0
    assert np.array_equal(Run(a).read_scores()["score"], Run(b).read_scores()["score"])

    config = tmp_path / "exp.yaml"  # a hand-written one for `run`, with options over it
    config.write_text("detectors: [gaussian, 'twfr_gmm:decay=auto']\nparams: {reg: 1e-3}\nfeatures: {n_mels: 64}\n")
    out = tmp_path / "o"
    r = runner.invoke(app, ["run", str(tiny_dataset), "--out", str(out), "--config", str(config), "--machines", "valve",
                            "--features", "n_mels=32"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir() if Run(p).exists()) == ["gaussian", "twfr_gmm_decay-auto"]
    meta = Run(out / "twfr_gmm_decay-auto").meta()
    assert (meta["params"], meta["features"]) == ({"decay": "auto", "reg": 1e-3}, {"n_mels": 32})
    assert Run(out / "gaussian").meta()["params"] == {}  # a setting goes to the detectors that have it, as --set
    again = ["run", str(tiny_dataset), "--out", str(out), "--config", str(config), "--machines", "valve", "--detectors",
             "gaussian"]  # fmt: skip  # --detectors over the file's
    r = runner.invoke(app, again)  # the file's features, not those the run was made with
    assert r.exit_code == 1 and "features {'n_mels': 32}, not as gaussian {} with features {'n_mels': 64}" in r.output
    r = runner.invoke(app, [*again, "--features", "n_mels=32"])
    assert r.exit_code == 0 and "gaussian: official score" in r.output, r.output
    assert "twfr_gmm:decay=auto: official score" not in r.output


@pytest.mark.parametrize("text, message", [
    ("detector: gaussian\nmachines: [fan]\nepochs: 3\n", "unknown key(s) epochs: a config file says detector, "
     "detectors, params, features"),
    ("detector: gaussian\ndetectors: [ae]\n", "it has both detector and detectors"),
    ("- gaussian\n", "a config file is a mapping"),
    ("detector: [1, 2]\n", "detector(s) must be names"),
    ("detector: gaussian\nparams: [1]\n", "params must be a mapping"),
    ("detector: gaussian\nfeatures: {sample_rate: 8000}\n", "feature setting(s) sample_rate cannot be set"),
    ("detector: gaussian\nparams: {bogus: 1}\n", "unknown setting(s) for GaussianConfig: bogus"),
    ("detectors: gaussian,twfr_gmm\n", "names 2 detectors (gaussian, twfr_gmm); train trains one"),
    ("detector: {a: [\n", "not a readable YAML or JSON file"),
])  # fmt: skip
def test_a_bad_config_file_is_refused_by_name_before_anything_is_written(tiny_dataset, tmp_path, text, message):
    config = tmp_path / "exp.yaml"
    config.write_text(text)
    r = runner.invoke(app, ["train", str(tiny_dataset), "--out", str(tmp_path / "run"), "--config", str(config)])
    assert r.exit_code == 1 and message in r.output, r.output
    assert str(config) in r.output and not (tmp_path / "run").exists()
    r = runner.invoke(app, ["train", str(tiny_dataset), "--out", str(tmp_path / "run"), "--config", str(tmp_path)])
    assert r.exit_code == 1 and "cannot read the config file" in r.output, r.output


def test_retrain_trains_a_served_run_again_on_the_clips_collected_since_keeping_its_rate(tiny_2023, tmp_path):
    import os
    import time

    from mimii_due.runs import Run
    from mimii_due.scoring import ModelSet, score_files

    rec, run = tmp_path / "recordings", tmp_path / "run"
    for machine in ("fan", "valve"):  # one's own recordings of the usual condition
        (rec / machine / "train").mkdir(parents=True)
        for i, f in enumerate(sorted((tiny_2023 / "dev_data" / machine / "train").glob("*source_train*"))):
            shutil.copy(f, rec / machine / "train" / f"clip_{i}.wav")
    r = runner.invoke(app, ["train", str(rec), "--out", str(run), "--detector", "twfr_gmm:decay=auto"])
    assert r.exit_code == 0, r.output
    assert runner.invoke(app, ["threshold", str(run), "--rate", "0.05"]).exit_code == 0
    served = ModelSet(run)  # a running service's models
    new_normal = sorted((tiny_2023 / "dev_data" / "fan" / "test").glob("*target_test_normal*"))
    before = np.array([d.score for d in score_files(served, new_normal, machine="fan")[0]])
    (rec / "fan" / "train" / "target").mkdir()  # a new condition's clips, collected and checked
    for i, f in enumerate(sorted((tiny_2023 / "dev_data" / "fan" / "train").glob("*target_train*"))):
        shutil.copy(f, rec / "fan" / "train" / "target" / f"new_{i}.wav")
    valve_model = (run / "models" / "valve" / "detector.json").read_bytes()

    r = runner.invoke(app, ["train", str(rec), "--out", str(run), "--retrain", "--machines", "fan"])
    assert r.exit_code == 0 and "trained twfr_gmm:decay=auto again for" in r.output, r.output
    meta = Run(run).meta()
    assert (meta["detector"], meta["params"], "retraining_since" in meta) == ("twfr_gmm", {"decay": "auto"}, False)
    fan = Run(run).load_model("fan")
    assert fan.threshold_quantile == pytest.approx(0.95)  # the rate `threshold` set is kept
    assert (run / "models" / "valve" / "detector.json").read_bytes() == valve_model  # --machines fan only
    assert served.refresh() == ["fan"]  # the service takes the new model from its next clip
    after = np.array([d.score for d in score_files(served, new_normal, machine="fan")[0]])
    assert np.median(after) < np.median(before)  # the new condition's normal clips now fit a domain it learned
    with pytest.raises(Exception, match="changed after the test|no test results"):
        Run(run).read_scores()

    # an interrupted retraining goes on with the machine types not yet trained again
    since = time.time()
    Run(run).update({"retraining_since": since})
    for machine, when in (("fan", since + 5), ("valve", since - 100)):  # fan trained again before it stopped
        os.utime(run / "models" / machine / "detector.json", (when, when))
    r = runner.invoke(app, ["train", str(rec), "--out", str(run), "--retrain"])
    assert r.exit_code == 0, r.output
    assert Run(run).model_time("fan") == since + 5 and Run(run).model_time("valve") > since  # valve alone trained
    assert "retraining_since" not in Run(run).meta()
    assert Run(run).load_model("valve").threshold_quantile == pytest.approx(0.95)

    Run(run).update({"retraining_since": time.time()})  # `info` says what a stopped retraining left
    r = runner.invoke(app, ["info", str(run)])
    assert r.exit_code == 0 and "stopped before its end" in r.output and "--retrain` again goes on" in r.output

    r = runner.invoke(app, ["train", str(rec), "--out", str(run), "--retrain", "--set", "decay=0.9"])
    assert r.exit_code == 1 and "this run was started as twfr_gmm {'decay': 'auto'}" in r.output, r.output
    r = runner.invoke(app, ["train", str(rec), "--out", str(tmp_path / "none"), "--retrain"])
    assert r.exit_code == 1 and "no run here to train again" in r.output, r.output


def test_info_of_a_run_says_what_it_holds_its_thresholds_and_whether_its_results_are_its_models(tiny_2023, tmp_path):
    from mimii_due.runs import Run, model_threshold

    run, data = tmp_path / "run", tmp_path / "data"
    shutil.copytree(tiny_2023, data)
    for args in (["train", str(data), "--out", str(run), "--detector", "gaussian", "--features", "n_mels=64"],
                 ["test", str(run), str(data)], ["evaluate", str(run)], ["threshold", str(run), "--rate", "0.2",
                 "--machines", "fan"]):  # fmt: skip
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
    official = json.loads((run / "results" / "result.json").read_text())["official_score"]
    for where in (run, run / "results"):
        r = runner.invoke(app, ["info", str(where)])
        assert r.exit_code == 0, r.output
        assert f"run folder {run}: gaussian, features n_mels=64; trained with mimii-due" in r.output
        for machine, rate in (("fan", "0.2"), ("valve", "0.1")):
            threshold, _ = model_threshold(run / "models" / machine)
            row = next(line for line in r.output.splitlines() if f" {machine} " in line)
            cells = [c.strip() for c in row.strip("│ ").split("│")]
            assert cells[:5] == [machine, "00", str(len(Run(run).load_model(machine).train_scores_)),
                                 f"{threshold:.6g}", rate]  # fmt: skip
        assert "scored by these models" in r.output and f"official score {official:.3f} (dcase2022)" in r.output
    r = runner.invoke(app, ["info", str(run / "models" / "valve")])
    assert r.exit_code == 0 and "model folder" in r.output and " valve " in r.output, r.output
    r = runner.invoke(app, ["info", str(tmp_path)])  # a folder of runs (`run --out`): a line each
    assert r.exit_code == 0 and f"1 run (`mimii-due info RUN` says more of one):\n  gaussian (run): fan, valve; " \
        f"official score {official:.3f} (dcase2022)" in r.output, r.output
    next((data / "dev_data" / "valve" / "train").glob("*.wav")).unlink()  # valve trained again on other clips
    r = runner.invoke(app, ["train", str(data), "--out", str(run), "--retrain", "--machines", "valve"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["info", str(run)])
    assert "test results: the models of valve changed after the test; run `mimii-due test` again" in r.output, r.output
    assert "evaluation" not in r.output


def test_train_and_test_on_real_dcase2020_layout(real_data, tmp_path):
    """A smoke run on real machine sound: the DCASE 2020 names and layout through train and test."""
    run, data = tmp_path / "run", tmp_path / "data"
    data.mkdir()
    (data / real_data.name).symlink_to(real_data)
    r = runner.invoke(app, ["train", str(data), "--out", str(run), "--detector", "ae", "--epochs", "1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["test", str(run), str(data)])
    assert r.exit_code == 0, r.output
    scores = pd.read_csv(run / "results" / "scores.csv")
    assert list(scores.filename) == ["anomaly_id_00_00000000.wav"] and scores.score.notna().all()
    assert (run / "results" / "anomaly_score_dcase2020_id00_id_00.csv").exists()  # the 2020 file names


def test_own_recordings_of_real_machine_sound_under_any_names_train_test_and_evaluate(real_data, tmp_path):
    """A maintenance engineer's folder: 60 real normal recordings named by date in pump/train/, 15 in
    test/normal/, the real anomalous clip in test/anomaly/; no challenge names anywhere."""
    normal = sorted((real_data / "train").glob("*.wav"))
    data = tmp_path / "recordings" / "pump"
    for i, src in enumerate(normal):
        dest = (
            data / "train" / f"2026-11-{i % 28 + 1:02d} shift {i}.wav"
            if i < 60
            else data / "test" / "normal" / f"check {i}.wav"
        )
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(src)
    (data / "test" / "anomaly").mkdir()
    (data / "test" / "anomaly" / "grinding noise.wav").symlink_to(next((real_data / "test").glob("*.wav")))
    r = runner.invoke(app, ["info", str(tmp_path / "recordings")])
    assert r.exit_code == 0 and "own recordings" in r.output and "no challenge's counts" in r.output, r.output
    run = tmp_path / "run"
    r = runner.invoke(app, ["run", str(tmp_path / "recordings"), "--out", str(run), "--detectors", "gaussian"])
    assert r.exit_code == 0, r.output
    scores = pd.read_csv(run / "gaussian" / "results" / "scores.csv")
    assert (
        len(scores) == 16
        and set(scores.label) == {"normal", "anomaly"}
        and "grinding noise.wav" in set(scores.filename)
    )
    result = json.loads((run / "gaussian" / "results" / "result.json").read_text())
    auc = roc_auc_score(scores.label == "anomaly", scores.score)
    assert result["results"][0]["AUC"] == pytest.approx(auc) and result["protocol"] == "dcase2020"
    r = runner.invoke(
        app, ["score", str(run / "gaussian"), str(data / "test" / "anomaly"), "--out", str(tmp_path / "s.csv")]
    )
    assert r.exit_code == 0, r.output
    assert pd.read_csv(tmp_path / "s.csv").score.iloc[0] == pytest.approx(
        scores.set_index("filename").score["grinding noise.wav"]
    )


def test_own_recordings_with_a_target_folder_are_scored_as_the_challenge_scores_its_domains(tiny_2023, tmp_path):
    """The clips of a DCASE 2023 machine type under own names, the target domain's in ``target``
    folders: TWFR-GMM judges them domain by domain as it does the challenge's clips (the same scores
    and official score); the same clips without the ``target`` folder in train/ are one domain."""
    src = tiny_2023 / "dev_data" / "valve"
    for variant, split_domains in (("domains", True), ("one", False)):
        for f in sorted(src.rglob("*.wav")):
            _, _, domain, split, label, *_ = f.stem.split("_")
            below = "target" if domain == "target" and (split == "test" or split_domains) else ""
            folder = Path("train") if split == "train" else Path("test", label)
            dest = tmp_path / variant / "valve" / folder / below / f"rec {f.stem[11:]}.wav"  # no challenge name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(f)
    runs = {}
    for name, data in (("challenge", src.parent.parent), ("domains", tmp_path / "domains"), ("one", tmp_path / "one")):
        extra = ["--machines", "valve"] if name == "challenge" else []
        out = tmp_path / "runs" / name
        r = runner.invoke(app, ["run", str(data), "--out", str(out), "--detectors", "twfr_gmm", *extra])
        assert r.exit_code == 0, r.output
        runs[name] = (pd.read_csv(out / "twfr_gmm" / "results" / "scores.csv"),
                      json.loads((out / "twfr_gmm" / "results" / "result.json").read_text()))  # fmt: skip
    challenge, domains, one = runs["challenge"], runs["domains"], runs["one"]
    assert domains[1]["protocol"] == one[1]["protocol"] == challenge[1]["protocol"] == "dcase2022"
    assert sorted(domains[0].score) == pytest.approx(sorted(challenge[0].score), rel=1e-9)
    assert domains[1]["official_score"] == pytest.approx(challenge[1]["official_score"])
    assert sorted(one[0].score) != pytest.approx(sorted(challenge[0].score), rel=1e-6)


def test_test_names_the_clips_far_longer_than_the_training_clips(tiny_2023, tmp_path, caplog):
    """The metrics take one score per clip, so `test` scores each whole, and names the clips over 1.5
    times the training clips' length, where a fault in part of a clip is averaged away."""
    import soundfile as sf

    from mimii_due import pipeline

    src, own = tiny_2023 / "dev_data" / "valve", tmp_path / "recordings" / "valve"
    for folder, pattern in (("train", "train/*source*"), ("test/normal", "test/*source*normal*"),
                            ("test/anomaly", "test/*source*anomaly*")):  # fmt: skip
        (own / folder).mkdir(parents=True)
        for f in sorted(src.glob(pattern + ".wav"))[:20]:
            (own / folder / f"rec {f.stem[11:]}.wav").symlink_to(f)
    three = sorted(src.glob("test/*source*normal*.wav"))[:3]
    sf.write(own / "test" / "normal" / "an hour.wav", np.concatenate([sf.read(f)[0] for f in three]), 16000)
    pipeline.train(tmp_path / "run", tmp_path / "recordings", detector="gaussian")
    with caplog.at_level("WARNING"):
        scores = pipeline.test(tmp_path / "run", tmp_path / "recordings")
    assert "1 test clip(s) of valve are over 1.5 times as long as its training clips (an hour.wav)" in caplog.text
    assert "an hour.wav" in set(scores.filename) and len(scores) == len(list(own.glob("test/*/*.wav")))


def test_threshold_sets_the_false_alarm_rate_and_a_tested_runs_decisions_and_evaluation_follow(tiny_2023, tmp_path,
                                                                                                caplog):  # fmt: skip
    run = tmp_path / "run"
    train = ["train", str(tiny_2023), "--out", str(run), "--detector", "gaussian"]
    for args in (train, ["test", str(run), str(tiny_2023)], ["evaluate", str(run)]):
        assert runner.invoke(app, args).exit_code == 0
    before = pd.read_csv(run / "results" / "scores.csv")
    model_before = (run / "models" / "fan" / "detector.json").read_bytes()
    for bad, words in ((["--rate", "1.5"], "between 0 and 1"), (["--rate", "0.01", "--machines", "pump"], "pump")):
        r = runner.invoke(app, ["threshold", str(run), *bad])
        assert r.exit_code == 1 and words in r.output, r.output
    assert (run / "models" / "fan" / "detector.json").read_bytes() == model_before  # a refusal changes nothing
    with caplog.at_level("WARNING"):
        r = runner.invoke(app, ["threshold", str(run), "--rate", "0.01"])
    assert r.exit_code == 0 and "evaluated again" in r.output and "fan: threshold" in r.output, r.output
    n = len(index(tiny_2023).query("machine == 'fan' and split == 'train'"))  # fewer than 100: said
    assert f"fan: the threshold for a false-alarm rate of 0.01 rests on {n} training clips, fewer than the 100" \
        in caplog.text
    after = pd.read_csv(run / "results" / "scores.csv")
    np.testing.assert_array_equal(after.score, before.score)  # no rescoring, no retraining
    assert (after.threshold > before.threshold).all() and (after.decision == (after.score > after.threshold)).all()
    assert after.decision.sum() < before.decision.sum()
    evaluated = json.loads((run / "results" / "result.json").read_text())
    assert evaluated["alarm_rates"] == {"fan": pytest.approx(0.01), "valve": pytest.approx(0.01)}  # judged by those
    assert runner.invoke(app, ["evaluate", str(run)]).exit_code == 0  # what evaluate makes of the new decisions
    again = json.loads((run / "results" / "result.json").read_text())
    assert again["results"] == evaluated["results"] and again["alarm_rates"] == evaluated["alarm_rates"]
    assert runner.invoke(app, ["report", str(run)]).exit_code == 0  # nothing stale
    assert runner.invoke(app, ["threshold", str(run), "--rate", "0.1"]).exit_code == 0
    models = json.loads((run / "models" / "fan" / "detector.json").read_text())
    assert models["threshold"] == pytest.approx(json.loads(model_before)["threshold"], rel=1e-12)  # back again


def test_threshold_leaves_an_evaluation_that_took_a_ground_truth_to_evaluate(tiny_dataset, tmp_path):
    """Evaluation clips are labelled by a ground truth the run does not keep: evaluating the scores'
    labelled clips alone would have dropped the evaluation sections from result.json without a word."""
    run, gt = tmp_path / "run", str(tiny_dataset / "ground_truth")
    for args in (["train", str(tiny_dataset), "--out", str(run), "--detector", "gaussian"],
                 ["test", str(run), str(tiny_dataset)], ["evaluate", str(run), "--ground-truth", gt]):  # fmt: skip
        assert runner.invoke(app, args).exit_code == 0
    r = runner.invoke(app, ["threshold", str(run), "--rate", "0.05"])
    assert r.exit_code == 0 and "run `mimii-due evaluate` (with the --ground-truth" in " ".join(r.output.split())
    assert not (run / "results" / "result.json").exists()  # none that belongs to other decisions
    assert runner.invoke(app, ["evaluate", str(run), "--ground-truth", gt]).exit_code == 0
    sections = {x["section"] for x in json.loads((run / "results" / "result.json").read_text())["results"]}
    assert sections == {0, 3}


def test_a_new_test_leaves_no_stale_results_and_report_refuses_mixed_outputs(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    assert (
        runner.invoke(
            app,
            ["train", str(tiny_dataset), "--out", str(run), "--detector", "ae", "--epochs", "1", "--machines", "valve"],
        ).exit_code
        == 0
    )
    assert runner.invoke(app, ["test", str(run), str(tiny_dataset)]).exit_code == 0
    assert runner.invoke(app, ["evaluate", str(run)]).exit_code == 0
    assert (run / "results" / "result.csv").exists()
    assert runner.invoke(app, ["test", str(run), str(tiny_dataset)]).exit_code == 0
    assert not (run / "results" / "result.csv").exists()  # the old evaluation went with the old scores
    r = runner.invoke(app, ["report", str(run)])
    assert r.exit_code == 1 and "evaluate" in r.output and not (run / "report_files").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--detector", "nope"], "unknown detector"),
        (["--set", "lr=abc"], "lr must be float"),
        (["--batch-size", "0"], "batch_size must be at least 1"),
        (["--seed", "-1"], "seed must be between"),
        (["--epochs", "0"], "epochs must be at least 1"),
    ],
)
def test_bad_settings_write_nothing_and_a_retry_works(tiny_dataset, tmp_path, args, message):
    run = tmp_path / "run"
    r = runner.invoke(
        app, ["train", str(tiny_dataset), "--out", str(run), "--machines", "valve", "--detector", "ae"] + args
    )
    assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output
    assert not run.exists()
    r = runner.invoke(
        app, ["train", str(tiny_dataset), "--out", str(run), "--machines", "valve", "--detector", "ae", "--epochs", "1"]
    )
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("args, message", [(["--scale", "0"], "scale must be a positive number"),
                                           (["--machines", "bogus"], "unknown machine type 'bogus'")])
def test_run_with_bad_generator_settings_makes_no_folder(tmp_path, args, message):
    r = runner.invoke(app, ["run", "--out", str(tmp_path / "o"), "--detectors", "gaussian"] + args)
    assert r.exit_code == 1 and message in r.output, r.output
    assert not (tmp_path / "o").exists()


def test_run_refuses_to_regenerate_data_under_runs_trained_on_the_earlier_data(tmp_path):
    out = tmp_path / "o"
    args = ["run", "--out", str(out), "--detectors", "gaussian", "--machines", "fan"]
    assert runner.invoke(app, args + ["--scale", "0.02"]).exit_code == 0
    models = (out / "gaussian" / "models" / "fan" / "state.pt").read_bytes()
    data = (out / "data" / "synth_done.json").read_text()
    r = runner.invoke(app, args + ["--scale", "0.03"])  # the models would be kept and tested on other data
    assert r.exit_code == 1 and "trained on data generated with other settings" in r.output, r.output
    assert (out / "data" / "synth_done.json").read_text() == data
    assert (out / "gaussian" / "models" / "fan" / "state.pt").read_bytes() == models
    assert runner.invoke(app, args + ["--scale", "0.02"]).exit_code == 0  # the same settings resume
    r = runner.invoke(app, args + ["--scale", "0.02", "--detectors", "gaussian,twfr_gmm"])  # one more: it resumes
    assert r.exit_code == 0 and (out / "twfr_gmm" / "models" / "fan").is_dir(), r.output
    # --out naming a folder that is not an earlier run (the data folder, a slip): refused, nothing written
    for folder, words in ((out / "data", "it holds dev_data, synth_done.json, synth_meta.csv"),
                          (tmp_path, "it holds o")):  # fmt: skip
        before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
        r = runner.invoke(app, ["run", "--out", str(folder), "--detectors", "gaussian", "--machines", "fan",
                                "--scale", "0.02"])  # fmt: skip
        assert r.exit_code == 1 and "is not an earlier `mimii-due run`" in r.output and words in r.output, r.output
        assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before


def test_members_names_the_ensembles_members_and_is_refused_for_other_detectors(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    args = ["train", str(tiny_dataset), "--out", str(run), "--machines", "fan"]
    r = runner.invoke(app, [*args, "--detector", "ensemble", "--members", "twfr_gmm,gaussian"])
    assert r.exit_code == 0, r.output
    meta = json.loads((run / "models" / "fan" / "detector.json").read_text())
    assert meta["params"]["config"]["members"] == ["twfr_gmm", "gaussian"]
    r = runner.invoke(app, [*args[:3], str(tmp_path / "run3"), *args[4:], "--detector", "ensemble", "--members",
                            "twfr_gmm:decay=auto,gaussian"])  # fmt: skip
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "run3" / "models" / "fan" / "detector.json").read_text())
    assert meta["params"]["config"]["members"] == ["twfr_gmm:decay=auto", "gaussian"]
    args[3] = str(tmp_path / "run2")
    r = runner.invoke(app, [*args, "--detector", "twfr_gmm", "--members", "gaussian"])
    assert r.exit_code != 0 and "--members" in r.output and not (tmp_path / "run2").exists()


def test_outlier_clips_come_from_the_other_machine_types_only(tiny_dataset):
    from mimii_due.pipeline import outlier_clips

    train = index(tiny_dataset).query("split == 'train'")
    n_fan = (train.machine == "fan").sum()
    rows = outlier_clips(train, "fan", n_fan)
    assert set(rows.machine) == {"valve"} and len(rows) == min(n_fan, (train.machine == "valve").sum())
    assert rows.path.is_unique and rows.equals(outlier_clips(train, "fan", n_fan))  # seeded: same draw
    assert len(outlier_clips(train, "fan", 3)) == 3
    assert outlier_clips(train[train.machine == "fan"], "fan", 5).empty


def test_training_one_machine_type_exposes_the_embedding_to_the_others(tiny_dataset, tmp_path):
    from mimii_due import pipeline
    from mimii_due.runs import Run

    pipeline.train(tmp_path / "run", tiny_dataset, detector="embedding", machines=["fan"], params={"epochs": 1})
    det = Run(tmp_path / "run").load_model("fan")
    assert any(c.startswith("valve|") for c in det.classes_)  # valve's classes were learned beside fan's
    assert all(not c.startswith("fan|") for c in det.classes_)


def test_run_evaluates_a_test_set_with_a_domain_of_anomalies_only_and_says_what_is_undefined(tiny_2023, tmp_path,
                                                                                             caplog):  # fmt: skip
    """Before, the run stopped at the evaluation ("no normal test clips") after training; now the
    undefined AUC and official score are said, the defined ones given, and the report written."""
    data = tmp_path / "data"
    shutil.copytree(tiny_2023, data)
    for p in (data / "dev_data" / "fan" / "test").glob("*_target_test_normal_*.wav"):
        p.unlink()  # fan's target domain keeps only anomalies: its AUC is undefined
    with caplog.at_level("WARNING"):
        r = runner.invoke(app, ["run", str(data), "--out", str(tmp_path / "out"), "--detectors", "twfr_gmm,gaussian"])
    assert r.exit_code == 0, r.output
    assert "twfr_gmm: official score undefined" in r.output and "gaussian: official score undefined" in r.output
    for det in ("twfr_gmm", "gaussian"):  # valve's own score is defined, and given
        valve = json.loads((tmp_path / "out" / det / "results" / "result.json").read_text())["machine_scores"]["valve"]
        assert f"{det}: official score per machine type: fan undefined, valve {valve:.3f}" in r.output
    assert "fan section 00 target: no normal test clips" in caplog.text
    for det in ("twfr_gmm", "gaussian"):
        result = json.loads((tmp_path / "out" / det / "results" / "result.json").read_text())
        rows = {(x["machine"], x["domain"]): x for x in result["results"]}
        assert rows[("fan", "target")]["AUC"] is None and rows[("fan", "target")]["n_normal"] == 0
        assert all(x["AUC"] is not None for k, x in rows.items() if k != ("fan", "target"))
        assert result["official_score"] is None
        assert result["undefined"] == ["fan section 00 target: no normal test clips"]
    assert (tmp_path / "out" / "report.html").exists()


def test_new_normal_recordings_alone_give_the_false_alarm_rate(real_data, tmp_path):
    """A maintenance engineer who has recorded no anomaly yet: 60 real normal recordings to train on and 15
    new ones to test. The run says how many of the new ones raised an alarm, as the decisions in scores.csv
    do, and that no AUC can be computed; the report shows the alarms."""
    data = tmp_path / "recordings" / "pump"
    for i, src in enumerate(sorted((real_data / "train").glob("*.wav"))):
        dest = data / "train" / f"day {i}.wav" if i < 60 else data / "test" / "normal" / f"new {i}.wav"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(src)
    out = tmp_path / "run"
    r = runner.invoke(app, ["run", str(tmp_path / "recordings"), "--out", str(out), "--detectors", "gaussian"])
    assert r.exit_code == 0, r.output
    scores = pd.read_csv(out / "gaussian" / "results" / "scores.csv")
    k = int(scores["decision"].sum())
    assert len(scores) == 15 and set(scores.label) == {"normal"}
    assert f"gaussian: flagged {k} of 15 normal test clips ({k / 15:.1%}), no anomalous test clips" in r.output
    import scipy.stats  # against the rate the threshold was fitted for: the exact binomial tail

    p = scipy.stats.binom.sf(k - 1, 15, 0.1)
    verdict = "more than chance gives at that rate" if p < 0.01 else "within what chance gives"
    assert f"the thresholds expect 10.0% of normal clips: {verdict} (binomial test, p = {p:.2g})" in " ".join(
        r.output.split())
    assert "gaussian: official score undefined" in r.output
    result = json.loads((out / "gaussian" / "results" / "result.json").read_text())
    assert result["alarms"] == {"n_normal": 15, "false_alarms": k, "n_anomaly": 0, "detected": 0}
    assert result["alarm_rates"] == {"pump": pytest.approx(0.1)}
    page = (out / "report.html").read_text()
    assert "Alarms on the test clips" in page and f"{k} of 15 ({k / 15:.1%})" in page
    assert "pump section 00 source: no anomalous test clips" in page
    twin = (out / "report.md").read_text()
    assert "pump section 00 source: no anomalous test clips" in twin
    assert f"| Pump | {k} of 15 ({k / 15:.1%}) | no clips |" in twin


def test_run_trains_and_scores_every_detector_before_an_evaluation_that_cannot_be_done(tiny_2023, tmp_path):
    from mimii_due.errors import MimiiDueError
    from mimii_due.pipeline import run

    data = tmp_path / "data"
    shutil.copytree(tiny_2023, data)
    for machine in ("fan", "valve"):  # evaluation names, no labels, and no ground truth given
        for i, p in enumerate(sorted((data / "dev_data" / machine / "test").glob("*.wav"))):
            p.rename(p.with_name(f"section_00_{i:04d}.wav"))
    with pytest.raises(MimiiDueError, match="no labelled test clips: evaluation data needs --ground-truth"):
        run(tmp_path / "out", data, detectors=["twfr_gmm", "gaussian"])
    for det in ("twfr_gmm", "gaussian"):  # nothing lost: both models and both score tables are there
        scores = pd.read_csv(tmp_path / "out" / det / "results" / "scores.csv")
        assert set(scores["machine"]) == {"fan", "valve"} and scores["score"].notna().all()


def test_the_channel_a_recorder_put_the_machine_on_is_trained_on_and_read_by_its_models(tiny_2023, tmp_path):
    """A two-channel recorder with the machine's microphone on channel 1 (channel 0: another, far
    microphone's noise). `--channel 1` trains on it, the models keep it, and `test`, `score` and
    the service read it from every clip: the scores of the one-channel clips, to the last digit."""
    import soundfile as sf

    from mimii_due import pipeline
    from mimii_due.errors import ModelError
    from mimii_due.scoring import ModelSet, score_files

    src, stereo = tiny_2023 / "dev_data" / "valve", tmp_path / "stereo" / "dev_data" / "valve"
    shutil.copytree(src, stereo)
    rng = np.random.default_rng(0)
    for f in stereo.rglob("*.wav"):
        y, sr = sf.read(f, dtype="int16")
        sf.write(f, np.stack([rng.normal(0, 300, len(y)).astype(np.int16), y], axis=1), sr, subtype="PCM_16")
    r = runner.invoke(app, ["info", str(tmp_path / "stereo"), "--audio", "--channel", "1"])
    assert r.exit_code == 0 and "channels: 2 (of multichannel clips channel 1 is read" in r.output, r.output
    assert "54 of 54 clips decoded" in r.output and "0 with a problem" in r.output, r.output
    import re  # which microphone hears the machine: the noise of sd 300 is -40.8 dBFS, the clips louder

    levels = re.search(r"channel levels \(median of 20 multichannel clips, dBFS\): 0: (\S+), 1: (\S+); channel 1 "
                       r"is read", " ".join(r.output.split()))  # fmt: skip
    assert levels and float(levels[1]) == -40.8 and float(levels[2]) > -35, r.output
    r = runner.invoke(app, ["info", str(tmp_path / "stereo"), "--audio", "--channel", "2"])
    assert "0 of 54 clips decoded" in r.output and "has 2 channels, so no channel 2 to read" in r.output, r.output
    pipeline.train(tmp_path / "mono", tiny_2023, detector="twfr_gmm", machines=["valve"])
    r = runner.invoke(app, ["train", str(tmp_path / "stereo"), "--out", str(tmp_path / "ch1"), "--detector",
                            "twfr_gmm", "--channel", "1"])  # fmt: skip
    assert r.exit_code == 0, r.output
    pipeline.train(tmp_path / "ch0", tmp_path / "stereo", detector="twfr_gmm")
    mono = pipeline.test(tmp_path / "mono", tiny_2023)
    ch1 = pipeline.test(tmp_path / "ch1", tmp_path / "stereo")
    ch0 = pipeline.test(tmp_path / "ch0", tmp_path / "stereo")
    assert list(ch1.filename) == list(mono.filename)
    np.testing.assert_array_equal(ch1.score, mono.score)
    assert np.abs(ch0.score.to_numpy() - mono.score.to_numpy()).max() > 0.1  # channel 0 is another sound

    clip = sorted(stereo.glob("test/*anomaly*.wav"))[0]
    [d1], failed = score_files(ModelSet(tmp_path / "ch1"), [clip])
    [d], _ = score_files(ModelSet(tmp_path / "mono"), [src / "test" / clip.name])
    assert not failed and d1.score == d.score
    _, failed = score_files(ModelSet(tmp_path / "ch1"), [src / "test" / clip.name])
    assert failed and "has 1 channel, so no channel 1 to read" in failed[0][1]
    with pytest.raises(ModelError, match="started as twfr_gmm {} reading channel 1, not as twfr_gmm {} reading "
                                         "channel 2"):  # fmt: skip
        pipeline.train(tmp_path / "ch1", tmp_path / "stereo", detector="twfr_gmm", channel=2, resume=True)


def test_train_warns_where_a_sections_domain_has_too_few_clips_for_its_false_alarm_rate(tiny_dataset, tiny_2023,
                                                                                         tmp_path, caplog):  # fmt: skip
    """MIMII DUE gives 3 target-domain training clips per section: at a rate of 0.10, fewer than
    the 10 in which one normal clip above the threshold is expected, so the threshold rests on the
    source clips and new target normal clips may raise alarms far more often; said per section.
    The 2022-2025 layouts' 10 target clips are enough for that rate, and say nothing."""
    counts = index(tiny_dataset).query("split == 'train' and machine == 'fan'").groupby(["section", "domain"]).size()
    assert counts[(0, "target")] == counts[(3, "target")] == 3 and counts[(0, "source")] >= 10
    with caplog.at_level("WARNING"):
        pipeline.train(tmp_path / "run", tiny_dataset, detector="twfr_gmm", machines=["fan"])
    assert ("fan: section 00's target domain (3), section 03's target domain (3): fewer training clips than the 10 "
            "in which one normal clip above the threshold is expected") in caplog.text  # fmt: skip
    caplog.clear()
    with caplog.at_level("WARNING"):
        pipeline.train(tmp_path / "run2023", tiny_2023, detector="twfr_gmm", machines=["fan"])
    assert index(tiny_2023).query("split == 'train' and machine == 'fan' and domain == 'target'").shape[0] == 10
    assert "domain (" not in caplog.text and "fewer training clips" not in caplog.text


def test_evaluate_and_the_report_give_the_false_alarms_domain_by_domain(tiny_2023, tmp_path):
    """A threshold that rests on the source clips can sound far more often on a new condition's
    normal clips (MIMII DUE-sized generated fan: 7.0 % of source, 53.7 % of target normal clips):
    the total alone hides it, so `evaluate` and the report give each domain's count."""
    run = tmp_path / "run"
    for args in (["train", str(tiny_2023), "--out", str(run), "--detector", "gaussian"],
                 ["test", str(run), str(tiny_2023)]):  # fmt: skip
        assert runner.invoke(app, args).exit_code == 0
    r = runner.invoke(app, ["evaluate", str(run)])
    assert r.exit_code == 0, r.output
    scores = pd.read_csv(run / "results" / "scores.csv")
    normal = scores[scores.label == "normal"]
    each = []
    for d in ("source", "target"):
        k, n = int(normal[normal.domain == d].decision.sum()), int((normal.domain == d).sum())
        each.append(f"{d} {k} of {n}, {k / n:.1%}")
    total = f"flagged {int(normal.decision.sum())} of {len(normal)} normal test clips ({normal.decision.mean():.1%}"
    assert f"{total}; {'; '.join(each)})" in " ".join(r.output.split()), r.output
    assert runner.invoke(app, ["report", str(run)]).exit_code == 0
    md = (run / "report.md").read_text()
    fan = normal[normal.machine == "fan"]
    k, n = int(fan[fan.domain == "target"].decision.sum()), int((fan.domain == "target").sum())
    assert "| machine type, domain |" in md and f"| Fan, target | {k} of {n} ({k / n:.1%}) |" in md


def test_a_run_records_what_made_it_and_keeps_what_made_its_earlier_models(tmp_path):
    """run.json says which Python, platform, CPU and library versions trained the run; resumed
    with others (another machine, a newer torch), the earlier ones are kept, each once, and the
    report's line for them says which."""
    import platform

    from mimii_due.runs import Run, environment, environment_text

    keeper, meta = Run(tmp_path / "run"), {"detector": "gaussian", "params": {}, "machines": ["fan"]}
    keeper.start(meta, resume=False)
    now = keeper.meta()["environment"]
    assert now == environment() and now["python"] == platform.python_version()
    assert now["packages"]["numpy"] == np.__version__ and now["cpus"] >= 1
    assert "earlier_environments" not in keeper.meta()
    other = now | {"python": "3.12.1", "packages": now["packages"] | {"torch": "2.99.0"}}
    keeper.meta_file.write_text(json.dumps(keeper.meta() | {"environment": other}))  # as if trained elsewhere first
    for _ in range(2):
        keeper.start(meta, resume=True)
        assert keeper.meta()["environment"] == now and keeper.meta()["earlier_environments"] == [other]
    assert "Python 3.12.1 on" in environment_text(other) and "torch 2.99.0" in environment_text(other)


def test_features_set_the_log_mel_the_models_keep_and_read_every_clip_with(tiny_2023, tmp_path):
    """`--features n_mels=64 --features hop_length=256`: the run trains on that log-mel, its models keep
    it, `test` and `score` read clips with it, and the run, its resumption and the report say so."""
    from mimii_due.detectors.base import Detector
    from mimii_due.errors import ModelError
    from mimii_due.scoring import ModelSet, score_files

    out = tmp_path / "mel64"
    r = runner.invoke(app, ["train", str(tiny_2023), "--out", str(out), "--detector", "twfr_gmm", "--machines",
                            "valve", "--features", "n_mels=64", "--features", "hop_length=256"])  # fmt: skip
    assert r.exit_code == 0, r.output
    det = Detector.load(out / "models" / "valve")
    assert (det.features.n_mels, det.features.hop_length, det.features.n_fft) == (64, 256, 1024)
    assert json.loads((out / "run.json").read_text())["features"] == {"n_mels": 64, "hop_length": 256}
    scores = pipeline.test(out, tiny_2023)
    pipeline.train(tmp_path / "paper", tiny_2023, detector="twfr_gmm", machines=["valve"])
    paper = pipeline.test(tmp_path / "paper", tiny_2023)
    assert list(scores.filename) == list(paper.filename)
    assert np.abs(scores.score.to_numpy() - paper.score.to_numpy()).max() > 0.01  # another log-mel, other scores
    clip = Path(scores.path.iloc[0])
    [d], failed = score_files(ModelSet(out), [clip])
    assert not failed and d.score == pytest.approx(scores.score.iloc[0], rel=1e-6)

    with pytest.raises(ModelError, match=r"started as twfr_gmm \{\} with features \{'n_mels': 64, 'hop_length': "
                                         r"256\}, not as twfr_gmm \{\}"):  # fmt: skip
        pipeline.train(out, tiny_2023, detector="twfr_gmm", resume=True)
    pipeline.train(out, tiny_2023, detector="twfr_gmm", resume=True,
                   feature_params={"hop_length": 256, "n_mels": 64})  # the same settings: fan trained beside valve
    assert Detector.load(out / "models" / "fan").features.n_mels == 64
    pipeline.evaluate(out)
    r = runner.invoke(app, ["report", str(out)])
    assert r.exit_code == 0, r.output
    assert "; features n_mels=64, hop_length=256;" in (out / "report.md").read_text()

    for setting, words in (("sample_rate=8000", "feature setting.s. sample_rate cannot be set; --features takes "
                            "n_fft, hop_length, n_mels, power"), ("n_mels=0", "n_mels must be at least 1"),
                           ("n_mels", "--features: a setting is KEY=VALUE")):  # fmt: skip
        r = runner.invoke(app, ["train", str(tiny_2023), "--out", str(tmp_path / "bad"), "--detector", "twfr_gmm",
                                "--features", setting])  # fmt: skip
        assert r.exit_code != 0 and re.search(words, r.output), r.output
        assert not (tmp_path / "bad").exists()

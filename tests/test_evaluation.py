import numpy as np
import pandas as pd
import pytest
import scipy.stats

from mimii_due.errors import MimiiDueError
from mimii_due.evaluation.files import read_ground_truth, write_results, write_score_files
from mimii_due.evaluation.metrics import auc, bootstrap_sd, evaluate, hmean, official_score, pauc, prf, summarize
from mimii_due.evaluation.threshold import gamma_threshold


def test_auc_and_pauc_hand_computed():
    y = np.array([0, 0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.8, 0.7, 0.9])
    # pairs (anomaly > normal): 0.7 beats 3 of 4, 0.9 beats 4 of 4 -> 7/8
    assert auc(y, s) == pytest.approx(7 / 8)
    # ROC: FPR 0 at TPR 0.5 (threshold 0.9), so the partial area over [0, 0.1] is 0.1 * 0.5 = 0.05;
    # McClish: 0.5 * (1 + (A - min) / (max - min)), min = 0.1^2 / 2, max = 0.1
    raw = 0.05
    assert pauc(y, s, max_fpr=0.1) == pytest.approx(0.5 * (1 + (raw - 0.005) / (0.1 - 0.005)))


def test_precision_recall_f1_and_hmean():
    p, r, f = prf(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
    assert (p, r, f) == (0.5, 0.5, 0.5)
    assert prf(np.array([1, 0]), np.array([0, 0])) == (0.0, 0.0, 0.0)
    assert hmean([0.5, 1.0]) == pytest.approx(2 / 3)


def test_excess_alarms_is_the_binomial_tail():
    from mimii_due.evaluation.threshold import excess_alarms_p

    assert excess_alarms_p(0, 15, 0.1) == 1.0
    assert excess_alarms_p(6, 15, 0.1) == pytest.approx(scipy.stats.binom.sf(5, 15, 0.1))  # 0.0022: too many
    assert excess_alarms_p(6, 15, 0.1) < 0.01 < excess_alarms_p(3, 8, 0.1)
    with pytest.raises(ValueError, match="flagged <= clips"):
        excess_alarms_p(4, 3, 0.1)


def test_gamma_threshold_is_the_official_quantile():
    s = scipy.stats.gamma.rvs(3.0, loc=1.0, scale=0.5, size=4000, random_state=0)
    shape, loc, scale = scipy.stats.gamma.fit(s)
    assert gamma_threshold(s) == pytest.approx(scipy.stats.gamma.ppf(0.9, shape, loc=loc, scale=scale))
    assert abs(np.mean(s > gamma_threshold(s)) - 0.1) < 0.02
    assert gamma_threshold(np.ones(10)) == 1.0  # degenerate scores: the empirical quantile
    # standardised, heavy-tailed scores (a domain's few clips spread widely): where the fitted gamma
    # leaves far from a tenth of the scores above it, the empirical quantile decides
    rng = np.random.default_rng(1)
    wide = np.r_[rng.normal(0, 1, 200), rng.standard_t(1, 10) * 10]
    shape, loc, scale = scipy.stats.gamma.fit(wide)
    assert abs(np.mean(wide > scipy.stats.gamma.ppf(0.9, shape, loc=loc, scale=scale)) - 0.1) > 0.05
    assert gamma_threshold(wide) == pytest.approx(np.quantile(wide, 0.9))


def scores_table():
    rng = np.random.default_rng(0)
    rows = []
    for machine in ("fan", "pump"):
        for section in (0, 1):
            for domain in ("source", "target"):
                for i in range(20):
                    label = "anomaly" if i % 2 else "normal"
                    s = rng.normal(1.0 if label == "anomaly" else 0.0)
                    rows.append(
                        {
                            "machine": machine,
                            "section": section,
                            "domain": domain,
                            "label": label,
                            "filename": f"section_{section:02d}_{domain}_test_{label}_{i:04d}.wav",
                            "score": s,
                            "decision": s > 0.5,
                        }
                    )
    return pd.DataFrame(rows)


def test_evaluate_and_official_files(tmp_path):
    sc = scores_table()
    res = evaluate(sc)
    assert len(res) == 8 and set(res.columns) >= {"AUC", "pAUC", "precision", "recall", "F1"}
    g = sc[(sc.machine == "fan") & (sc.section == 1) & (sc.domain == "target")]
    r = res[(res.machine == "fan") & (res.section == 1) & (res.domain == "target")].iloc[0]
    assert r.AUC == pytest.approx(auc((g.label == "anomaly").to_numpy(), g.score.to_numpy()))
    summ = summarize(res)
    assert summ["official_score"] == pytest.approx(scipy.stats.hmean(np.r_[res.AUC, res.pAUC]))
    assert summ["machines"]["fan"]["amean"]["AUC"] == pytest.approx(res[res.machine == "fan"].AUC.mean())
    write_score_files(sc, tmp_path)
    f = tmp_path / "anomaly_score_fan_section_01_target_test.csv"
    lines = f.read_text().splitlines()
    assert len(lines) == 20 and lines[0].split(",")[0] == g.filename.iloc[0]
    float(lines[0].split(",")[1])
    d = (tmp_path / "decision_result_fan_section_01_target_test.csv").read_text().splitlines()
    assert {x.split(",")[1] for x in d} <= {"0", "1"}
    write_results(res, summ, tmp_path)
    text = (tmp_path / "result.csv").read_text().splitlines()
    assert text[0] == "fan" and text[1] == "section,domain,AUC,pAUC,precision,recall,F1 score"
    assert text[-1].startswith("official score")
    assert (tmp_path / "result.json").exists()


def test_ground_truth_files_are_read_and_checked(tmp_path):
    (tmp_path / "ground_truth_fan_section_03_source_test.csv").write_text(
        "section_03_source_test_0000.wav,1\nsection_03_source_test_0001.wav,0\n"
    )
    gt = read_ground_truth(tmp_path)
    assert list(gt.label) == ["anomaly", "normal"] and set(gt.machine) == {"fan"}
    (tmp_path / "ground_truth_fan_section_04_source_test.csv").write_text("a.wav,maybe\n")
    with pytest.raises(MimiiDueError, match="line 1"):
        read_ground_truth(tmp_path)
    with pytest.raises(MimiiDueError, match="no such file or folder of ground truth"):
        read_ground_truth(tmp_path / "ground_truth_fan_section_03_source_tset.csv")


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("ground_truth_fan_section_00_test.csv", b"\xff\xfe\x00binary", "not a CSV text file"),
        ("ground_truth_fan_section_00_test.csv", b"a.wav\x00,1\n", "not a CSV text file"),  # a NUL byte
        ("ground_truth_fan_section_00_test.csv", b"", "lists no clips"),
        ("eval_data_list_2023.csv", b"fan\n", "no evaluation clips listed"),
    ],
)
def test_a_ground_truth_that_is_not_text_or_lists_nothing_is_refused_by_name(tmp_path, name, content, words):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(MimiiDueError, match=words) as e:
        read_ground_truth(tmp_path)
    assert name in str(e.value)


def test_a_ground_truth_saved_by_a_spreadsheet_keeps_its_first_clip(tmp_path):
    """Spreadsheet programs start a UTF-8 CSV with a byte-order mark; it is not part of the name."""
    f = tmp_path / "ground_truth_fan_section_00_source_test.csv"
    f.write_bytes("section_00_source_test_0000.wav,1\r\nsection_00_source_test_0001.wav,0\r\n".encode("utf-8-sig"))
    gt = read_ground_truth(f)
    assert list(gt.filename) == ["section_00_source_test_0000.wav", "section_00_source_test_0001.wav"]
    assert list(gt.label) == ["anomaly", "normal"]


def test_the_2022_to_2025_metric_against_a_hand_computation(tmp_path):
    """DCASE 2023 evaluator: per section, each domain's AUC over its normal clips and *all*
    anomalies of the section; one pAUC over every clip; official score = hmean of all of them."""
    rows = [  # (domain, label, score)
        ("source", "normal", 0.1), ("source", "normal", 0.4), ("source", "anomaly", 0.5), ("source", "anomaly", 0.2),
        ("target", "normal", 0.3), ("target", "normal", 0.6), ("target", "anomaly", 0.7), ("target", "anomaly", 0.35),
    ]  # fmt: skip
    df = pd.DataFrame(rows, columns=["domain", "label", "score"]).assign(machine="ToyCar", section=0)
    df["decision"] = df["score"] > 0.45
    df["filename"] = [f"section_00_{d}_test_{lab}_{i:04d}.wav" for i, (d, lab, _) in enumerate(rows)]
    res = evaluate(df, protocol="dcase2022")
    got = res.set_index("domain")
    anomalies = [0.5, 0.2, 0.7, 0.35]
    # source: normals 0.1, 0.4 against the four anomalies: pairs won 4 + (0.5, 0.7 beat 0.4) = 6 of 8
    assert got.loc["source", "AUC"] == pytest.approx(6 / 8)
    assert got.loc["source", "AUC"] == pytest.approx(auc(np.r_[0, 0, 1, 1, 1, 1], np.r_[0.1, 0.4, anomalies]))
    # target: normals 0.3, 0.6 against the four anomalies: 0.3 loses to 0.5, 0.7, 0.35; 0.6 to 0.7 -> 4 of 8
    assert got.loc["target", "AUC"] == pytest.approx(4 / 8)
    section_pauc = pauc(np.r_[0, 0, 1, 1, 0, 0, 1, 1], df["score"].to_numpy())
    assert got.loc["source", "pAUC"] == got.loc["target", "pAUC"] == pytest.approx(section_pauc)
    summ = summarize(res)
    assert summ["official_score"] == pytest.approx(scipy.stats.hmean([6 / 8, 4 / 8, section_pauc]))
    # precision/recall per domain over that domain's clips only: source decisions 0,0,1,0
    assert (got.loc["source", "precision"], got.loc["source", "recall"]) == (1.0, 0.5)
    write_results(res, summ, tmp_path)
    text = (tmp_path / "result.csv").read_text().splitlines()
    assert text[1].startswith("section,AUC (source),AUC (target),pAUC,precision (source)")
    assert text[2].startswith("00,0.750000,0.500000,")
    assert text[-1] == f"official score,{summ['official_score']:.6f}"
    # the official files of 2022-2025: one per machine and section, no domain in the name
    write_score_files(df, tmp_path, protocol="dcase2022")
    assert len((tmp_path / "anomaly_score_ToyCar_section_00_test.csv").read_text().splitlines()) == 8


def test_the_2022_to_2025_tables_show_the_one_section_pauc_once_even_for_a_section_tested_in_one_domain(tmp_path):
    """The 2022-2025 evaluators print one pAUC per section, "pAUC (source, target)": the tables
    show it in one column so labelled (not the same number as a source and a target pAUC), and a
    section whose test clips are all of one domain (new recordings of a new condition) has it in
    result.csv and the tables, as the official score counts it."""
    from mimii_due.report.tables import results_markdown, table4

    rng = np.random.default_rng(0)
    rows = [(0, d, lab) for d in ("source", "target") for lab in ("normal", "anomaly") for _ in range(6)]
    rows += [(1, "target", lab) for lab in ("normal", "anomaly") for _ in range(6)]  # section 01: target clips only
    df = pd.DataFrame(rows, columns=["section", "domain", "label"]).assign(machine="fan")
    df["score"] = rng.normal(size=len(df)) + (df["label"] == "anomaly")
    df["decision"] = df["score"] > 0.5
    res = evaluate(df, protocol="dcase2022")
    paucs = [pauc((g["label"] == "anomaly").to_numpy().astype(int), g["score"].to_numpy())
             for _, g in df.groupby("section")]  # fmt: skip
    wide = table4({"det": res})
    assert [c for c in wide.columns if c[1] == "pAUC"] == [("det", "pAUC", "source, target")]
    assert wide[("det", "pAUC", "source, target")].to_numpy() == pytest.approx(paucs)
    assert wide.attrs["hmean"]["det"][("pAUC", "source, target")] == pytest.approx(scipy.stats.hmean(paucs))
    assert "det pAUC source, target" in results_markdown({"det": res})
    summary = summarize(res)  # result.json's means count each section's pAUC once, as result.csv does
    assert summary["machines"]["fan"]["hmean"]["pAUC"] == summary["overall"]["hmean"]["pAUC"] == pytest.approx(
        scipy.stats.hmean(paucs)
    )
    write_results(res, summary, tmp_path)
    lines = (tmp_path / "result.csv").read_text().splitlines()
    section_01 = next(line for line in lines if line.startswith("01,")).split(",")
    assert section_01[1] == "nan" and float(section_01[3]) == pytest.approx(paucs[1], abs=1e-6)
    # the 2021 layout keeps a pAUC per domain, as its evaluator prints it
    wide21 = table4({"det": evaluate(df, protocol="dcase2021")})
    assert [c[2] for c in wide21.columns if c[1] == "pAUC"] == ["source", "target"]


@pytest.mark.parametrize("protocol", ["dcase2020", "dcase2021", "dcase2022"])
def test_a_section_without_anomalies_counts_false_alarms_and_leaves_the_official_score_undefined(protocol, tmp_path):
    """New normal recordings before any anomaly was recorded: no AUC there, and no official score
    (a harmonic mean over the sections that happen to have both labels is not the year's score),
    but every section's alarms are counted."""
    rng = np.random.default_rng(0)
    rows = [{"machine": m, "section": 0, "domain": d, "label": lab, "score": rng.normal()}
            for m in ("fan", "pump") for d in ("source", "target") for lab in ("normal", "anomaly")
            for _ in range(6) if not (m == "pump" and lab == "anomaly")]  # fmt: skip
    df = pd.DataFrame(rows)
    df["decision"] = df["score"] > 0.5
    res = evaluate(df, protocol=protocol).set_index(["machine", "domain"])
    pump, fan = res.loc["pump"], res.loc["fan"]
    assert pump["AUC"].isna().all() and pump["pAUC"].isna().all()
    assert set(pump["undefined"]) == {"no anomalous test clips"} and set(fan["undefined"]) == {""}
    assert fan["AUC"].notna().all() and fan["pAUC"].notna().all()
    normal = df[df.label == "normal"]
    for machine, g in res.groupby(level="machine"):  # the counts are the decisions, machine by machine
        clips = normal[normal.machine == machine]
        assert g["false_alarms"].sum() == clips["decision"].sum() and g["n_normal"].sum() == len(clips)
    summ = summarize(res.reset_index())
    assert np.isnan(summ["official_score"]) and np.isnan(official_score(res.reset_index()))
    assert summ["undefined"] and all(u.startswith("pump section 00") for u in summ["undefined"])
    assert summ["alarms"] == {"n_normal": len(normal), "false_alarms": int(normal["decision"].sum()),
                              "n_anomaly": int((df.label == "anomaly").sum()),
                              "detected": int(df[df.label == "anomaly"]["decision"].sum())}  # fmt: skip
    if protocol == "dcase2020":  # no domains in 2020: one row per section, all its clips
        assert summ["alarms_by_domain"] == {"source": summ["alarms"]}
    for d in ("source", "target") if protocol != "dcase2020" else ():  # a new condition's alarms on their own
        nrm, ano = df[(df.domain == d) & (df.label == "normal")], df[(df.domain == d) & (df.label == "anomaly")]
        assert summ["alarms_by_domain"][d] == {"n_normal": len(nrm), "false_alarms": int(nrm.decision.sum()),
                                               "n_anomaly": len(ano), "detected": int(ano.decision.sum())}  # fmt: skip
    assert summ["machines"]["fan"]["hmean"]["AUC"] == pytest.approx(hmean(fan["AUC"]))  # fan's own are defined
    flat = res.reset_index()
    assert summ["machine_scores"]["fan"] == pytest.approx(official_score(flat[flat.machine == "fan"]))
    assert np.isnan(summ["machine_scores"]["pump"])
    write_results(res.reset_index(), summ, tmp_path)  # undefined is null in JSON, which any reader takes
    import json

    payload = json.loads((tmp_path / "result.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert payload["official_score"] is None
    assert all(r["AUC"] is None for r in payload["results"] if r["machine"] == "pump")
    df.loc[(df.machine == "pump") & (df.domain == "target"), "label"] = "anomaly"  # a domain without normal clips
    res = evaluate(df, protocol=protocol)
    got = res[res.machine == "pump"].set_index("domain")["undefined"].to_dict()
    expected = {  # 2020: one group of both labels; 2021: each domain alone; 2022: the source's AUC counts the
        # section's anomalies (the target's), the target's has no normal clips of its own
        "dcase2020": {"source": ""},
        "dcase2021": {"source": "no anomalous test clips", "target": "no normal test clips"},
        "dcase2022": {"source": "", "target": "no normal test clips"},
    }[protocol]  # fmt: skip
    assert got == expected
    defined = res[(res.machine == "pump")].set_index("domain")["AUC"].notna().to_dict()
    assert defined == {d: why == "" for d, why in expected.items()}


def _test_set(rng, n, shift=1.0):
    """Two machine types, one section, 50-style test sets: n normal and n anomalous clips per domain."""
    rows = [{"machine": m, "section": 0, "domain": d, "label": lab, "decision": False,
             "score": rng.normal(shift if lab == "anomaly" else 0.0)}
            for m in ("fan", "valve") for d in ("source", "target") for lab in ("normal", "anomaly")
            for _ in range(n)]  # fmt: skip
    return pd.DataFrame(rows)


def test_bootstrap_sd_matches_the_spread_over_independent_test_sets():
    rng = np.random.default_rng(0)
    one = _test_set(rng, 50)
    sd = bootstrap_sd(one, protocol="dcase2022", n=100, seed=1)
    assert sd == bootstrap_sd(one, protocol="dcase2022", n=100, seed=1)  # seeded
    fresh = [official_score(evaluate(_test_set(rng, 50), protocol="dcase2022")) for _ in range(60)]
    assert 0.6 < sd / np.std(fresh) < 1.6, (sd, np.std(fresh))
    assert 0.35 < bootstrap_sd(_test_set(rng, 200), protocol="dcase2022", n=100) / sd < 0.7  # 4x the clips: ~half
    perfect = one.assign(score=(one.label == "anomaly").astype(float) * 10 + rng.random(len(one)))
    heard = []  # long on a whole development set: each draw is reported
    assert bootstrap_sd(perfect, protocol="dcase2022", n=20, progress=lambda d, t, i: heard.append((d, t))) == 0.0
    assert heard == [(k, 20) for k in range(1, 21)]
    with pytest.raises(MimiiDueError, match="at least 2 draws"):
        bootstrap_sd(one, n=1)


def test_the_paired_bootstrap_cancels_the_luck_two_detectors_share():
    """Two detectors that see the same clips share their luck: the spread of their difference
    is much smaller than either's, and zero against itself."""
    rng = np.random.default_rng(2)
    a = _test_set(rng, 50)
    b = a.assign(score=a.score + rng.normal(0, 0.3, len(a)))  # a close variant of a
    alone = bootstrap_sd(a, protocol="dcase2022", n=60)
    paired = bootstrap_sd(a, versus=b, protocol="dcase2022", n=60)
    assert 0 < paired < 0.6 * alone
    assert bootstrap_sd(a, versus=a, protocol="dcase2022", n=5) == 0.0
    with pytest.raises(MimiiDueError, match="same clips in the same order"):
        bootstrap_sd(a, versus=b.iloc[::-1], n=5)


def test_a_ground_truth_that_names_none_of_the_clips_says_so(tiny_dataset, tmp_path):
    """Evaluation clips carry no labels; a ground truth of another year or part matched none of them
    and the error said only "evaluation data needs --ground-truth", which the user had given."""
    import shutil

    from typer.testing import CliRunner

    from mimii_due.cli import app

    data, run = tmp_path / "eval", tmp_path / "run"
    shutil.copytree(tiny_dataset / "eval_data" / "fan", data / "eval_data" / "fan")
    runner = CliRunner()
    assert runner.invoke(app, ["train", str(data), "--out", str(run), "--detector", "gaussian"]).exit_code == 0
    assert runner.invoke(app, ["test", str(run), str(data)]).exit_code == 0
    other = tmp_path / "gt"
    other.mkdir()
    (other / "ground_truth_fan_section_03_source_test.csv").write_text("section_03_source_test_9999.wav,1\n")
    r = runner.invoke(app, ["evaluate", str(run), "--ground-truth", str(other)])
    assert r.exit_code == 1 and "the ground truth names none of the" in r.output and str(other) in r.output
    r = runner.invoke(app, ["evaluate", str(run), "--ground-truth", str(tiny_dataset / "ground_truth")])
    assert r.exit_code == 0, r.output


def _run_scores(data, tmp_path, name):
    from typer.testing import CliRunner

    from mimii_due.cli import app

    runner, run = CliRunner(), tmp_path / name
    for cmd in (["train", str(data), "--out", str(run), "--detector", "gaussian"], ["test", str(run), str(data)]):
        assert runner.invoke(app, cmd).exit_code == 0
    return runner, app, run


@pytest.mark.parametrize("layout", ["dcase2021", "dcase2023"])
def test_any_systems_official_score_files_are_evaluated_as_a_run_is(tiny_dataset, tiny_2023, tmp_path, layout):
    """A folder of anomaly_score_*.csv / decision_result_*.csv (a submission, a baseline's output)
    gives the figures the run that wrote them gives, labels from names or the ground truth."""
    import shutil

    data = tiny_dataset if layout == "dcase2021" else tiny_2023
    runner, app, run = _run_scores(data, tmp_path, "run")
    gt = ["--ground-truth", str(data / "ground_truth")] if (data / "ground_truth").is_dir() else []
    r = runner.invoke(app, ["evaluate", str(run), *gt])
    assert r.exit_code == 0, r.output
    sub = tmp_path / "submission"
    sub.mkdir()
    for f in [*(run / "results").glob("anomaly_score_*.csv"), *(run / "results").glob("decision_result_*.csv")]:
        shutil.copy(f, sub)  # the official files alone
    r = runner.invoke(app, ["evaluate", str(sub), *gt])
    assert r.exit_code == 0, r.output
    assert "official score (" + ("dcase2021" if layout == "dcase2021" else "dcase2022") in r.output
    assert (sub / "result.csv").read_text() == (run / "results" / "result.csv").read_text()
    if gt:  # the evaluation section is scored only with its ground truth
        assert {x["section"] for x in pd.read_json(sub / "result.json", typ="series")["results"]} == {0, 3}
    before = (run / "results" / "scores.csv").read_bytes()
    r = runner.invoke(app, ["evaluate", str(run / "results"), *gt])  # a run's results folder means the run
    assert r.exit_code == 0 and "result.csv in " + str(run / "results") in r.output, r.output
    assert (run / "results" / "scores.csv").read_bytes() == before  # still the run's, matching its stamp
    r = runner.invoke(app, ["evaluate", str(sub), str(run), *gt])  # side by side: a submission and our run
    assert r.exit_code == 0 and "submission: official score" in r.output, r.output
    assert "gaussian (run): official score" in r.output  # the run's folder beside its detector's name
    assert "not all were evaluated on the test clips of" not in r.output
    r = runner.invoke(app, ["evaluate", str(sub), str(run), *gt, "--bootstrap", "5"])  # the same scores: no difference
    assert r.exit_code == 0 and "minus submission: +0.0000 (paired bootstrap sd 0.0000)" in r.output, r.output
    for f in sub.glob("*_valve_*"):
        f.unlink()
    r = runner.invoke(app, ["evaluate", str(sub), str(run), *gt])
    assert r.exit_code == 0 and "not all were evaluated on the test clips of" in r.output, r.output


def test_bad_score_file_folders_are_refused_naming_the_file(tiny_2023, tmp_path):
    import shutil

    from mimii_due.pipeline import evaluate_files

    _, _, run = _run_scores(tiny_2023, tmp_path, "run")
    sub = tmp_path / "s"
    shutil.copytree(run / "results", sub)
    (sub / "decision_result_fan_section_00_test.csv").unlink()
    with pytest.raises(MimiiDueError, match="no decision_result_fan_section_00_test.csv beside it"):
        evaluate_files(sub)
    shutil.copy(run / "results" / "decision_result_fan_section_00_test.csv", sub)
    (sub / "anomaly_score_pump_section_00_source_test.csv").write_text("section_00_source_test_normal_0000.wav,1\n")
    (sub / "decision_result_pump_section_00_source_test.csv").write_text("section_00_source_test_normal_0000.wav,0\n")
    with pytest.raises(MimiiDueError, match="the naming of several years"):
        evaluate_files(sub)
    for f in sub.glob("*pump*"):
        f.unlink()
    score_file = sub / "anomaly_score_valve_section_00_test.csv"
    good = score_file.read_text()
    score_file.write_text(good + "section_00_target_test_normal_9999.wav,nan\n")
    with pytest.raises(MimiiDueError, match="expected 'filename,score' with a finite score") as e:
        evaluate_files(sub)
    assert str(score_file) in str(e.value)
    score_file.write_text(good)
    for f in sub.glob("*_valve_section_00_test.csv"):  # the official 2023 baseline's names for the same files
        baseline = f.name.replace("_valve_", "_DCASE2023T2valve_").replace(".csv", "_seed13711_id(0_)_Eval.csv")
        f.rename(f.with_name(baseline))
    assert set(evaluate_files(sub)[0]["machine"]) == {"fan", "valve"}
    (sub / "result.csv").unlink()
    shutil.copy(run / "results" / "anomaly_score_valve_section_00_test.csv", sub)
    with pytest.raises(MimiiDueError, match="_seed13711_id.0_._Eval.csv and anomaly_score_valve_section_00_test.csv "
                                            "score the same clips"):  # fmt: skip
        evaluate_files(sub)
    with pytest.raises(MimiiDueError, match="neither a run folder nor a folder of official score files"):
        evaluate_files(tmp_path / "nothing")
    assert not (sub / "result.csv").exists()  # a refused folder gets no result


def test_dcase2020_score_files_are_evaluated_per_machine_id(tmp_path):
    from mimii_due.pipeline import evaluate_files

    rows = [(f"normal_id_00_{i:08d}.wav", i / 10) for i in range(6)] + [
        (f"fan/test/anomaly_id_00_{i:08d}.wav", 0.25 + i / 10) for i in range(4)  # a system that writes paths
    ]
    (tmp_path / "anomaly_score_fan_id_00.csv").write_text("".join(f"{n},{s}\n" for n, s in rows))
    (tmp_path / "decision_result_fan_id_00.csv").write_text("".join(f"{n},{int(s > 0.4)}\n" for n, s in rows))
    results, summary = evaluate_files(tmp_path)
    y, s = [0] * 6 + [1] * 4, [x for _, x in rows]
    assert summary["protocol"] == "dcase2020" and results["AUC"].tolist() == [auc(np.array(y), np.array(s))] == [0.75]
    assert results["pAUC"].iloc[0] == pytest.approx(pauc(np.array(y), np.array(s)))
    text = (tmp_path / "result.csv").read_text()  # the 2020 evaluator's layout: a row per ID, no domain column
    assert text.startswith("fan\nid,AUC,pAUC,precision,recall,F1 score\n00,0.750000,")
    assert text.rstrip().endswith(f"official score,{summary['official_score']:.6f}") and ",source," not in text
    from mimii_due.report.tables import results_markdown, table4  # and so do the tables: AUC and pAUC per ID

    assert list(table4({"sys": results}).columns) == [("sys", "AUC", ""), ("sys", "pAUC", "")]
    assert "| sys AUC | sys pAUC |" in results_markdown({"sys": results})


def test_compare_gives_each_systems_difference_from_the_first_with_its_paired_bootstrap_sd(tiny_2023, tmp_path):
    import shutil

    from mimii_due.pipeline import compare

    _, _, run = _run_scores(tiny_2023, tmp_path, "run")
    noisy = tmp_path / "noisy"  # another system: the same clips, its scores blurred
    noisy.mkdir()
    rng = np.random.default_rng(0)
    for f in (run / "results").glob("decision_result_*.csv"):
        shutil.copy(f, noisy)
    for f in (run / "results").glob("anomaly_score_*.csv"):
        rows = [line.split(",") for line in f.read_text().splitlines()]
        (noisy / f.name).write_text("".join(f"{n},{float(s) + rng.normal(0, 5)}\n" for n, s in rows))
    with pytest.raises(MimiiDueError, match="no such folder"):  # found before any is evaluated
        compare([noisy, tmp_path / "typo"])
    assert not (noisy / "result.json").exists()
    rows = compare([run, noisy, run / "results", noisy], bootstrap=40)
    assert [r["name"] for r in rows] == ["gaussian (run)", "noisy"]  # each once; the results folder is the run
    first, other = rows
    assert other["same_clips"] and other["versus_first"] == pytest.approx(
        other["summary"]["official_score"] - first["summary"]["official_score"])
    assert other["versus_first"] != 0 and other["versus_first_sd"] == pytest.approx(
        bootstrap_sd(other["clips"], versus=first["clips"], protocol="dcase2022", n=40))
    assert 0 < other["versus_first_sd"] < other["summary"]["bootstrap_sd"] + first["summary"]["bootstrap_sd"]


def test_evaluate_gives_a_detectors_official_score_over_its_seeds(tiny_2023, tmp_path):
    """Runs that differ only in their seed are summed up as papers report a method (mean, sd over the
    runs); a run with other settings, or of another detector, stays apart."""
    import json
    import re

    from typer.testing import CliRunner

    from mimii_due.cli import app
    from mimii_due.pipeline import compare
    from mimii_due.runs import over_runs

    runner = CliRunner()
    for name, extra in (("seed0", ["--set", "seed=0"]), ("seed1", ["--set", "seed=1"]), ("seed2", ["--set", "seed=2"]),
                        ("mel64", ["--features", "n_mels=64"]), ("plain", [])):  # fmt: skip
        detector = "gaussian" if name == "plain" else "twfr_gmm"
        for cmd in (["train", str(tiny_2023), "--out", str(tmp_path / name), "--detector", detector, *extra],
                    ["test", str(tmp_path / name), str(tiny_2023)]):  # fmt: skip
            r = runner.invoke(app, cmd)
            assert r.exit_code == 0, r.output
    runs = [str(tmp_path / n) for n in ("seed0", "mel64", "seed1", "plain", "seed2")]
    r = runner.invoke(app, ["evaluate", *runs])
    assert r.exit_code == 0, r.output
    scores = [json.loads((tmp_path / n / "results" / "result.json").read_text())["official_score"]
              for n in ("seed0", "seed1", "seed2")]  # fmt: skip
    assert len(set(scores)) > 1  # the seeds gave other mixtures
    line = re.search(r"twfr_gmm over 3 runs \(seed0, seed1, seed2\): official score mean (\S+), sd (\S+), from (\S+) "
                     r"to (\S+)\n", r.output)  # fmt: skip
    assert line, r.output
    want = [np.mean(scores), np.std(scores, ddof=1), min(scores), max(scores)]
    assert [float(v.rstrip(",")) for v in line.groups()] == pytest.approx(want, abs=6e-5)
    assert r.output.count(" over ") == 1  # mel64 and the gaussian run are no one's seeds
    assert [g["runs"] for g in over_runs(compare(runs))] == [["seed0", "seed1", "seed2"]]
    r = runner.invoke(app, ["report", *runs, "--out", str(tmp_path / "rep.html")])  # the report says the same line
    assert r.exit_code == 0, r.output
    md = (tmp_path / "rep.md").read_text()
    assert line.group(0).strip() in md and md.count(" over ") == 1


def test_run_names_say_the_folder_where_it_is_not_the_detectors_name_and_the_path_where_two_would_match():
    from pathlib import Path

    from mimii_due.runs import run_names

    runs = [(Path("a/ensemble"), "ensemble", {}), (Path("a/seed1"), "twfr_gmm", {"seed": 1}),
            (Path("a/twfr_gmm"), "twfr_gmm", {}), (Path("b/twfr_gmm"), "twfr_gmm", {"seed": 1}),
            (Path("x/baseline"), "", {}), (Path("a/twfr_gmm_decay-auto"), "twfr_gmm", {"decay": "auto"}),
            (Path("a/ensemble_members-twfr_gmm-ae_epochs-5"), "ensemble", {"members": ["twfr_gmm", "ae:epochs=5"]}),
            (Path("a/twfr_gmm_reg-1e-2"), "twfr_gmm", {"reg": 0.01})]  # fmt: skip
    assert run_names(runs) == ["ensemble", "twfr_gmm (seed1)", "twfr_gmm (a/twfr_gmm)", "twfr_gmm (b/twfr_gmm)",
                               "baseline", "twfr_gmm:decay=auto", "ensemble:members=[twfr_gmm,ae:epochs=5]",
                               "twfr_gmm (twfr_gmm_reg-1e-2)"]  # fmt: skip

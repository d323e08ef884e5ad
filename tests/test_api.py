"""README's "From Python" example runs as written, and the library's steps agree with the scoring path."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mimii_due.errors import ConfigError
from mimii_due.synth.generate import dataset_settings, plan

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(r"^## From Python\n.*?^```python\n(.*?)^```", text, re.S | re.M)
    assert found, "README.md has no python block under '## From Python'"
    return found.group(1)


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(_example(), "README.md (From Python)", "exec"), ns)
    results, scores, decisions, bad = ns["results"], ns["scores"], ns["decisions"], ns["bad"]

    assert list(results["domain"]) == ["source", "target"]  # the 2022-2025 metric: one row per domain
    assert ((results["AUC"] > 0.6) & (results["AUC"] <= 1)).all(), results
    assert len(scores) == 40 and set(scores["label"]) == {"normal", "anomaly"}  # min_test=10: 10 per label and domain
    out = capsys.readouterr().out
    assert "official score" in out and "of 40 clips flagged; 0 could not be read" in out

    # the saved model scores the same files, read again from disk, as the detector scored them in memory
    assert bad == [] and len(decisions) == 40
    by_name = {d.filename: d for d in decisions}
    names = [Path(p).name for p in scores["path"]]
    np.testing.assert_allclose([by_name[n].score for n in names], scores["score"], rtol=1e-6, atol=1e-9)
    assert [by_name[n].decision for n in names] == scores["decision"].tolist()
    assert (tmp_path / "models" / "fan" / "detector.json").is_file()


def test_sections_default_to_the_layouts_own():
    """generate(layout="dcase2023") without sections makes the layout's one section (it raised
    "pick one, not [0, 1, 2, 3, 4, 5]"); the paper's layout keeps all six."""
    assert dataset_settings(layout="dcase2023")["sections"] == [0]
    assert dataset_settings()["sections"] == [0, 1, 2, 3, 4, 5]
    tasks = plan(machines=["fan"], scale=0.01, layout="dcase2023")
    assert {t.section for t in tasks} == {0}
    assert {t.section for t in plan(machines=["fan"], scale=0.01)} == {0, 1, 2, 3, 4, 5}
    with pytest.raises(ConfigError, match="one section per machine type"):
        plan(machines=["fan"], sections=[0, 1], scale=0.01, layout="dcase2023")


def test_library_misuse_is_named(tiny_2023):
    """Two machine types' clips fitted as one model (their sections would be mixed) and scores without
    a column were taken silently, or failed with a bare KeyError."""
    from mimii_due.data.index import index
    from mimii_due.detectors import make
    from mimii_due.errors import MimiiDueError, ModelError
    from mimii_due.evaluation import metrics
    from mimii_due.pipeline import features

    clips = index(tiny_2023)
    train = clips[clips["split"] == "train"]
    assert train["machine"].nunique() > 1
    det = make("gaussian")
    x, train = features(train, cfg=det.features)
    names = ", ".join(sorted(train["machine"].unique()))
    with pytest.raises(ModelError, match=f"training clips of {names}: a model learns one machine type"):
        det.fit(x, train)
    test = clips[clips["split"] == "test"].assign(score=0.0)
    with pytest.raises(MimiiDueError, match="the scores lack column.s. decision: evaluate takes one row per test clip"):
        metrics.evaluate(test, protocol="dcase2022")
    results = metrics.evaluate(test.drop(columns="domain").assign(decision=False), protocol="dcase2020")
    assert (results["domain"] == "source").all()  # the 2020 metric needs no domain
    unscored = test.assign(score=np.where(np.arange(len(test)) == 2, np.nan, 0.5), decision=False)
    with pytest.raises(MimiiDueError, match=f"1 of {len(test)} clips have no finite score .e.g. "
                                            f"{unscored['filename'].iloc[2]}.: score every clip"):  # fmt: skip
        metrics.evaluate(unscored, protocol="dcase2022")  # it was scikit-learn's "Input contains NaN"


def test_scoring_nothing_is_said(tmp_path):
    from mimii_due.detectors import make
    from mimii_due.errors import MimiiDueError
    from mimii_due.features.extract import features_of
    from mimii_due.scoring import ModelSet, score_files

    rng = np.random.default_rng(0)
    waves = [rng.normal(0, 0.1, 16000 * 2).astype(np.float32) for _ in range(12)]
    clips = pd.DataFrame({"machine": "pump", "section": 0, "domain": "source", "label": "normal",
                          "filename": [f"c{i}.wav" for i in range(12)]})  # fmt: skip
    make("gaussian").fit(features_of(waves), clips).save(tmp_path / "model")
    with pytest.raises(MimiiDueError, match="no WAV files or folders given to score"):  # "no WAV files found in "
        score_files(ModelSet(tmp_path / "model"), [])


def test_features_given_as_a_dict_of_settings():
    """make(name, features={...}) was stored as the dict, failing later at the first clip."""
    from mimii_due.detectors import make

    det = make("twfr_gmm", features={"n_mels": 64})
    assert det.features.n_mels == 64 and det.features.hop_length == make("twfr_gmm").features.hop_length
    ens = make("ensemble", features={"n_mels": 64})  # the detector's own features, with that one setting changed
    assert ens.features.n_mels == 64 and ens.features.spectrum_bins == make("ensemble").features.spectrum_bins > 0
    with pytest.raises(ConfigError, match="unknown setting.s. for FeatureConfig: bands"):
        make("twfr_gmm", features={"bands": 64})
    with pytest.raises(ConfigError, match="features must be a FeatureConfig or a dict of its settings, not int"):
        make("twfr_gmm", features=64)

"""Detector plugins: a detector another installed package names under the entry-point group
``mimii_due.detectors`` is found by name, trains, tests, evaluates and loads like a built-in one;
one that cannot be used is left out with a warning naming it, and the rest work."""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mimii_due import detectors
from mimii_due.detectors.base import Detector
from mimii_due.errors import ModelError, UnknownDetectorError

PLUGIN = '''
import numpy as np

from mimii_due.detectors.base import Detector, array


class ClipDistance(Detector):
    """Distance of a clip's mean log-mel to its section's mean: a plugin for the tests."""

    name = "clipdist"
    needs_known_sections = True

    def _fit(self, features, clips, **kw):
        x, s = features.means(), clips["section"].to_numpy()
        self.centres_ = {int(k): x[s == k].mean(axis=0) for k in np.unique(s)}

    def _score(self, features, clips):
        x = features.means()
        return np.array([np.linalg.norm(v - self.centres_[int(k)]) for v, k in zip(x, clips["section"])])

    def _state(self):
        return {"centres": self.centres_}

    def _set_state(self, state):
        self.centres_ = {int(k): array(v) for k, v in state["centres"].items()}


class NotADetector:
    name = "notdet"


class Unfinished(Detector):
    name = "unfinished"
'''

ENTRY_POINTS = {
    "toy_asd": """
        [mimii_due.detectors]
        clipdist = toy_asd:ClipDistance
        broken = toy_asd_missing:Nope
        gaussian = toy_asd:ClipDistance
        renamed = toy_asd:ClipDistance
        notdet = toy_asd:NotADetector
        unfinished = toy_asd:Unfinished
        """,
    "toy_asd_again": """
        [mimii_due.detectors]
        clipdist = toy_asd:ClipDistance
        """,
}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A folder that, put on the path, is two installed packages with detector entry points."""
    root = tmp_path_factory.mktemp("site")
    (root / "toy_asd.py").write_text(PLUGIN)
    for dist, eps in ENTRY_POINTS.items():
        info = root / f"{dist}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(textwrap.dedent(eps))
    return root


def test_plugins_found_and_unusable_ones_named(site, monkeypatch, caplog):
    monkeypatch.syspath_prepend(str(site))
    with caplog.at_level(logging.WARNING, logger="mimii_due.detectors"):
        found = detectors.plugins()
    assert list(found) == ["clipdist"] and found["clipdist"].detector.__name__ == "ClipDistance"
    assert found["clipdist"].package in ("toy_asd 0.1", "toy_asd_again 0.1")  # whichever was found first
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert "detector plugin 'broken' (toy_asd_missing:Nope, from toy_asd) left out: it does not import" in said
    assert "'gaussian' is a built-in detector's name" in said
    assert "'renamed' (toy_asd:ClipDistance, from toy_asd) left out: its class says name = 'clipdist'" in said
    assert "NotADetector'> is not a subclass of mimii_due.detectors.base.Detector" in said
    assert "Unfinished does not implement _fit and _score" in said
    assert said.count("left out: 'clipdist' is the name of detector plugin 'clipdist' (toy_asd:ClipDistance, from "
                      "toy_asd") == 1  # the package found second
    assert len(caplog.records) == 6


def test_plugin_is_a_detector_like_ours(site, monkeypatch, easy_dataset, tmp_path):
    """Registered, a plugin is made by name, joins an ensemble, and saves and loads; its model
    cannot be loaded where the plugin is not installed, which is said."""
    from mimii_due import pipeline

    monkeypatch.syspath_prepend(str(site))
    found = {name: p.detector for name, p in detectors.plugins().items()}
    monkeypatch.setattr(detectors, "REGISTRY", {**detectors.REGISTRY, **found})
    det = detectors.make("clipdist", threshold_quantile=0.8)
    assert type(det).__name__ == "ClipDistance" and det.threshold_quantile == 0.8
    ens = detectors.make("ensemble", members=("twfr_gmm", "clipdist"))
    assert not ens.uses_outliers

    pipeline.train(tmp_path / "run", easy_dataset, detector="ensemble", params={"members": ("twfr_gmm", "clipdist")})
    scores = pipeline.test(tmp_path / "run", easy_dataset)
    assert len(scores) and np.isfinite(scores["score"]).all()
    model = tmp_path / "run" / "models" / "fan"
    again = detectors.Detector.load(model)
    assert [type(m).__name__ for m in again.members_] == ["TWFRGMMDetector", "ClipDistance"]

    monkeypatch.setattr(detectors, "REGISTRY", dict(detectors.BUILT_IN))  # the plugin not installed
    with pytest.raises(ModelError, match="cannot load the model: unknown detector 'clipdist': neither a built-in "
                       r"detector \(ae, .*\) nor an installed detector plugin"):
        detectors.Detector.load(model)
    with pytest.raises(UnknownDetectorError, match="unknown detector 'clipdist'"):
        detectors.make("clipdist")


def _cli(*args, site: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, "-m", "mimii_due.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip


def test_plugin_through_the_cli_in_a_real_process(site, easy_dataset, tmp_path):
    """Installed (on the path of a new process), the plugin is found by the CLI: train, test and
    evaluate give its official score, with the unusable plugins named on stderr and nothing else
    stopped; its scores are the distances it defines."""
    run = tmp_path / "run"
    r = _cli("train", easy_dataset, "--out", run, "--detector", "clipdist", site=site)
    assert r.returncode == 0, r.stderr
    assert "detector plugin 'broken' (toy_asd_missing:Nope, from toy_asd) left out" in r.stderr
    for cmd in (("test", run, easy_dataset), ("evaluate", run)):
        r = _cli(*cmd, site=site)
        assert r.returncode == 0, r.stderr
    env = json.loads((run / "run.json").read_text())["environment"]  # what made the run, its plugin included
    assert env["plugins"] in ({"clipdist": "toy_asd 0.1"}, {"clipdist": "toy_asd_again 0.1"})
    assert env["python"] == platform.python_version() and env["packages"]["numpy"] == np.__version__
    result = json.loads((run / "results" / "result.json").read_text())
    assert result["protocol"] == "dcase2021" and 0.5 < result["official_score"] <= 1.0  # large anomalies here
    scores = pd.read_csv(run / "results" / "scores.csv")
    normal = scores[scores["label"] == "normal"]
    assert scores.loc[scores["label"] == "anomaly", "score"].mean() > normal["score"].mean()

    r = _cli("detectors", site=site)  # what is there: ours, and the plugin with its package
    assert r.returncode == 0, r.stderr
    assert re.search(r"clipdist \(plugin, toy_asd(_again)? 0\.1\): Distance of a clip's mean log-mel to its "
                     r"section's mean: a plugin for the tests\.\n  settings: none", r.stdout), r.stdout
    assert "twfr_gmm (built in): TWFR-GMM" in r.stdout and "broken" not in r.stdout

    r = _cli("score", run, scores["path"].iloc[0])  # no plugin on this process's path
    assert r.returncode != 0
    assert "unknown detector 'clipdist'" in r.stderr and "plugin" in r.stderr and "Traceback" not in r.stderr


class _Misshapen(Detector):
    """A detector of one's own whose scores are not one per clip."""

    name = "misshapen"
    extra = 1  # scores beyond the clips'
    columns = None  # domain parts per clip, if it judges by domain

    def _fit(self, features, clips, **kw):
        pass

    def _score(self, features, clips):
        return np.zeros(len(clips) + self.extra)

    def _domain_scores(self, features, clips):
        return None if self.columns is None else np.zeros((len(clips), self.columns))


@pytest.mark.parametrize(("extra", "columns", "method", "shape"), [
    (1, None, "_train_scores", "(7,) for 6 clips, not (6,) (one value per clip)"),
    (0, 1, "_train_domain_scores", "(6, 1) for 6 clips, not (6, 2) (2 values per clip (source, target))"),
])  # fmt: skip
def test_a_detector_whose_scores_are_not_one_per_clip_is_named_with_its_method(extra, columns, method, shape):
    from mimii_due.features.extract import Features

    det = type("Misshapen", (_Misshapen,), {"extra": extra, "columns": columns})()
    rng = np.random.default_rng(0)
    feats = Features(rng.normal(size=(60, 128)).astype(np.float32), np.arange(0, 61, 10), None)
    clips = pd.DataFrame({"filename": [f"c{i}.wav" for i in range(6)], "section": 0, "domain": "source"})
    with pytest.raises(ModelError, match=rf"^misshapen: {method} gave an array of shape {re.escape(shape)}$"):
        det.fit(feats, clips)
    det.extra, det.columns = 0, None  # fitted as it should be, it then scores with a wrong shape
    det.fit(feats, clips)
    det.extra = -1
    with pytest.raises(ModelError, match=r"^misshapen: _score gave an array of shape \(5,\) for 6 clips"):
        det.score(feats, clips)


def test_the_detectors_command_gives_every_detector_with_defaults_that_set_takes_back():
    """`mimii-due detectors` lists each built-in detector with its settings; each default, written
    as it prints it, is what `--set KEY=VALUE` reads back into the same setting."""
    from typer.testing import CliRunner

    from mimii_due.cli import app
    from mimii_due.cli.experiments import _setting_text
    from mimii_due.config import setting

    r = CliRunner().invoke(app, ["detectors"])
    assert r.exit_code == 0, r.output
    for name in detectors.BUILT_IN:
        assert f"{name} (built in): " in r.output
    rows = json.loads(CliRunner().invoke(app, ["detectors", "--json"]).output)
    assert [row["name"] for row in rows] == list(detectors.REGISTRY)
    ens = next(row for row in rows if row["name"] == "ensemble")
    assert ens["settings"] == {"members": ["twfr_gmm", "embedding"], "weights": [], "min_clips": 100, "seed": None}
    for row in rows:
        written = [f"{k}={_setting_text(v)}" for k, v in row["settings"].items()]
        assert f"settings: {' '.join(written) or 'none'}" in r.output
        again = detectors.make(row["name"], **dict(map(setting, written)))
        assert again.config == detectors.make(row["name"]).config, row["name"]

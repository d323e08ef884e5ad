"""Figures and the HTML report, checked as a person would: opened in headless Chromium."""

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image
from typer.testing import CliRunner

from mimii_due import __version__
from mimii_due.cli import app

runner = CliRunner()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def two_runs(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for det, extra in (("ae", ["--epochs", "2"]), ("gaussian", [])):
        args = ["train", str(tiny_dataset), "--out", str(root / det), "--detector", det, "--cache", str(root / "f")]
        assert runner.invoke(app, args + extra).exit_code == 0
        assert runner.invoke(app, ["test", str(root / det), str(tiny_dataset)]).exit_code == 0
        r = runner.invoke(app, ["evaluate", str(root / det), "--ground-truth", str(tiny_dataset / "ground_truth")])
        assert r.exit_code == 0, r.output
    return root


def test_report_of_two_runs_side_by_side(two_runs, tiny_dataset):
    out = two_runs / "report.html"
    r = runner.invoke(app, ["report", str(two_runs / "ae"), str(two_runs / "gaussian"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert page.count('<img src="data:image/png;base64,') >= 2 + 2 * 2 + 1  # figs 1-2, ROC+hist x2, loss
    assert "ae AUC source" in page and "gaussian AUC target" in page and "Official score" in page
    assert "Warning" not in page and page.count(f"tested on {tiny_dataset}") == 2  # the same clips
    md = out.with_suffix(".md").read_text()
    env = pd.read_json(two_runs / "ae" / "run.json", typ="series")["environment"]  # what trained each run
    made = f"trained with mimii-due {__version__}, Python {env['python']} on {env['platform']}"
    assert page.count(made) == 2 and md.count(made) == 2 and f"torch {env['packages']['torch']}" in md
    ae, ga = (pd.read_json(two_runs / d / "results" / "result.json", typ="series")["machine_scores"]
              for d in ("ae", "gaussian"))  # each machine type's official score, as result.json has it  # fmt: skip
    for machine in ("fan", "valve"):
        assert f"| {machine.title()} | {ae[machine]:.3f} | {ga[machine]:.3f} |" in md
    for f in re.findall(r"\]\((report_files/[^)]+)\)", md):
        with Image.open(two_runs / f) as im:
            im.verify()


def test_a_report_named_with_spaces_links_its_figures_in_markdown(two_runs, tmp_path):
    from urllib.parse import unquote

    out = tmp_path / "my report é.html"
    assert runner.invoke(app, ["report", str(two_runs / "gaussian"), "--out", str(out)]).exit_code == 0
    links = re.findall(r"!\[[^]]*\]\(([^)]*)\)", out.with_suffix(".md").read_text())
    assert len(links) >= 3 and all(" " not in x for x in links)  # a space ends a Markdown link
    for x in links:
        assert x.startswith("my%20report%20%C3%A9_files/")
        with Image.open(tmp_path / unquote(x)) as im:
            im.verify()


def test_a_report_puts_another_systems_score_files_beside_a_run(two_runs, tiny_dataset, tmp_path):
    sub = tmp_path / "team_a"  # a submission: the official files alone
    sub.mkdir()
    results = two_runs / "ae" / "results"
    for f in [*results.glob("anomaly_score_*"), *results.glob("decision_result_*")]:
        shutil.copy(f, sub)
    r = runner.invoke(app, ["report", str(sub), "--out", str(tmp_path / "r0.html")])
    assert r.exit_code == 1 and "not evaluated" in r.output and "mimii-due evaluate" in r.output
    gt = ["--ground-truth", str(tiny_dataset / "ground_truth")]
    assert runner.invoke(app, ["evaluate", str(sub), *gt]).exit_code == 0
    out = tmp_path / "r.html"
    r = runner.invoke(app, ["report", str(two_runs / "gaussian"), str(sub), "--out", str(out)])
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert "<h2>Run: team_a</h2>" in page and "score files" in page and "Warning" not in page
    assert page.count('<img src="data:image/png;base64,') >= 2 + 2 * 2  # figs 1-2, ROC + histogram each
    ae = pd.read_json(two_runs / "ae" / "results" / "result.json", typ="series")["official_score"]
    assert pd.read_json(sub / "result.json", typ="series")["official_score"] == ae  # the run's own figure
    with open(sub / "anomaly_score_fan_section_00_source_test.csv", "a") as f:
        f.write("section_00_source_test_normal_9999.wav,0.5\n")  # the files changed after the evaluation
    r = runner.invoke(app, ["report", str(sub), "--out", str(out)])
    assert r.exit_code == 1 and "computed from other score files" in r.output


def test_a_run_named_twice_is_reported_once_and_two_runs_of_one_name_apart(two_runs, tmp_path):
    shutil.copytree(two_runs / "gaussian", tmp_path / "copy" / "gaussian")
    out = tmp_path / "r.html"
    runs = [str(two_runs / "gaussian"), str(two_runs / "gaussian" / "results"), str(tmp_path / "copy" / "gaussian")]
    assert runner.invoke(app, ["report", *runs, "--out", str(out)]).exit_code == 0  # a results folder is its run
    page = out.read_text()
    assert page.count("<h2>Run: ") == 2 and f"<b>gaussian ({tmp_path / 'copy' / 'gaussian'})</b>" in page
    assert f"<b>gaussian ({two_runs / 'gaussian'})</b>" in page  # both where they are, neither as the one
    assert "<b>gaussian</b>" not in page


def test_a_report_named_other_than_html_is_refused_before_its_markdown_overwrites_it(two_runs, tmp_path):
    for name in ("r.md", "r"):  # r.md: the HTML was written there, then the Markdown over it
        r = runner.invoke(app, ["report", str(two_runs / "gaussian"), "--out", str(tmp_path / name)])
        assert r.exit_code == 1 and "the report is an HTML file: name it .html" in r.output, r.output
    assert list(tmp_path.iterdir()) == []


def test_a_report_of_runs_tested_on_different_data_says_so(two_runs, tiny_dataset, tmp_path):
    data = tmp_path / "valve_only"
    shutil.copytree(tiny_dataset / "dev_data" / "valve", data / "dev_data" / "valve")
    run = tmp_path / "other"
    for cmd in (["train", str(data), "--out", str(run), "--detector", "gaussian"], ["test", str(run), str(data)],
                ["evaluate", str(run)]):  # fmt: skip
        assert runner.invoke(app, cmd).exit_code == 0
    out = tmp_path / "r.html"
    r = runner.invoke(app, ["report", str(two_runs / "gaussian"), str(run), "--out", str(out)])
    assert r.exit_code == 0, r.output
    md = out.with_suffix(".md").read_text()
    assert "**Warning:** These runs were tested on different data" in md
    assert f"gaussian: {tiny_dataset}" in md and f"gaussian (other): {data}" in md
    assert "tested on different data" in out.read_text()


def test_t_sne_of_a_machine_type_with_too_few_test_clips_says_so_in_its_panel(tmp_path):
    import pandas as pd

    from mimii_due.report.figures import tsne

    rng = np.random.default_rng(0)
    table = pd.DataFrame({"machine": ["fan"] + ["valve"] * 8, "domain": ["source", "target"] + ["source"] * 7,
                          "label": ["normal", "anomaly"] * 4 + [None]})  # fmt: skip
    out = tsne(table, rng.normal(size=(9, 16)), tmp_path / "t.png")  # fan: one clip, t-SNE cannot place it
    with Image.open(out) as im:
        assert im.size[0] > 1.5 * im.size[1]  # both panels drawn, side by side


def test_a_figure_path_matplotlib_cannot_write_is_a_one_line_error(tiny_dataset, tmp_path):
    for out in (tmp_path / "s.foo", tmp_path):  # an unknown suffix; a folder (was matplotlib's ValueError)
        r = runner.invoke(app, ["plot", "spectrograms", str(tiny_dataset), "--out", str(out)])
        assert r.exit_code == 1 and "a figure is written as .png, .pdf, .svg" in r.output
        assert "Traceback" not in r.output
    r = runner.invoke(app, ["plot", "spectrograms", str(tiny_dataset), "--out", str(tmp_path / "s.svg")])
    assert r.exit_code == 0 and (tmp_path / "s.svg").read_text().lstrip().startswith("<?xml")


def test_plot_commands_write_pngs(two_runs, tiny_dataset, tmp_path):
    r = runner.invoke(app, ["plot", "spectrograms", str(tiny_dataset), "--out", str(tmp_path / "s.png")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["plot", "tsne", str(two_runs / "ae"), str(tiny_dataset), "--out", str(tmp_path / "t.png")])
    assert r.exit_code == 0, r.output
    for name in ("s.png", "t.png"):
        with Image.open(tmp_path / name) as im:
            assert im.size[0] > 300 and im.size[1] > 200


def test_a_silent_clip_is_skipped_in_figure_1_with_skip_bad_and_in_the_report(two_runs, tiny_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    first = sorted((data / "dev_data" / "fan" / "train").glob("section_00_source_train_normal_*.wav"))[0]
    sf.write(first, np.zeros(16000, np.float32), 16000, subtype="PCM_16")  # the clip Figure 1 draws for fan
    args = ["plot", "spectrograms", str(data), "--out", str(tmp_path / "s.png")]
    r = runner.invoke(app, args)
    assert r.exit_code == 1 and first.name in r.output and "digital silence" in r.output
    r = runner.invoke(app, [*args, "--skip-bad"])
    assert r.exit_code == 0, r.output
    with Image.open(tmp_path / "s.png") as im:  # both machine types drawn, fan from its next clip
        assert im.size[0] > 2 * 300
    out = tmp_path / "report.html"  # a report draws its figures from what can be read, as it indexes
    r = runner.invoke(app, ["report", str(two_runs / "gaussian"), "--data", str(data), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "Figure 1" in out.read_text()


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package 'chromium')")
def test_report_opens_in_headless_chromium(two_runs, tmp_path):
    out = two_runs / "report_browser.html"
    assert runner.invoke(app, ["report", str(two_runs / "ae"), "--out", str(out)]).exit_code == 0
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
        out.as_uri(),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    m = re.search(r'data-images="(\d+)/(\d+)"', p.stdout)
    assert m, "the page's load handler did not run"
    ok, total = int(m[1]), int(m[2])
    assert total >= 5 and ok == total
    assert "Uncaught" not in p.stderr

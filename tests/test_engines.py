"""The Ray engine gives the same results as one machine: features, models, scores, generated data."""

import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from mimii_due import pipeline
from mimii_due.cli import app
from mimii_due.config import FeatureConfig
from mimii_due.data.index import index
from mimii_due.engines import get_engine
from mimii_due.errors import AudioError, ConfigError
from mimii_due.features.extract import extract
from mimii_due.runs import Run
from mimii_due.synth.generate import generate

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'mimii-due[ray]')")
runner = CliRunner()


@pytest.fixture(scope="module")
def engine():
    eng = get_engine("ray", num_cpus=2)  # a local Ray cluster for this module
    yield eng
    eng.close()


def test_features_on_ray_equal_the_local_ones_bit_for_bit(engine, tiny_dataset, tmp_path):
    t = index(tiny_dataset)
    clips = t[t.machine == "fan"]
    cfg = FeatureConfig(spectrum_bins=4096)
    local, kept = extract(clips, cfg=cfg)
    remote, kept_r = pipeline.features(clips, cfg=cfg, cache=tmp_path / "c", engine=engine)
    assert list(kept_r.path) == list(kept.path)
    assert np.array_equal(remote.data, local.data) and np.array_equal(remote.offsets, local.offsets)
    assert np.array_equal(remote.spectra, local.spectra)
    again, _ = pipeline.features(clips, cfg=cfg, cache=tmp_path / "c", engine=engine)  # the driver's cache
    assert np.array_equal(again.data, local.data)


def test_bad_input_on_ray_is_the_same_one_line_error_as_on_one_machine(engine, tiny_dataset, tmp_path):
    clips = index(tiny_dataset)
    clips = clips[(clips.machine == "valve") & (clips.split == "train")].head(6).reset_index(drop=True)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000, subtype="PCM_16")
    clips.loc[2, "path"] = str(silent)
    with pytest.raises(AudioError) as e:
        pipeline.features(clips, engine=engine)
    assert type(e.value) is AudioError and str(e.value).startswith(f"{silent}: digital silence")  # no task traceback
    feats, kept = pipeline.features(clips, engine=engine, on_error="skip")
    assert len(feats) == len(kept) == 5 and str(silent) not in set(kept.path)


def test_training_and_scores_on_ray_equal_the_local_run_and_survive_a_killed_worker(engine, tiny_dataset, tmp_path):
    from mimii_due.engines.ray_engine import RayEngine

    marker = tmp_path / "killed-once"
    # joins the running cluster; its first task kills its worker; torch threads as in this process
    faulty = RayEngine(fault_once=str(marker), threads=torch.get_num_threads())
    for name, eng in (("local", None), ("ray", faulty)):
        pipeline.train(tmp_path / name, tiny_dataset, detector="ae", params={"epochs": 2, "batch_size": 256},
                       engine=eng)  # fmt: skip
    assert marker.exists()  # a worker did die, and its task was retried
    for machine in ("fan", "valve"):
        a, b = Run(tmp_path / "local").load_model(machine), Run(tmp_path / "ray").load_model(machine)
        for k, v in a.model_.state_dict().items():
            torch.testing.assert_close(b.model_.state_dict()[k], v, rtol=0, atol=0)
        assert a.threshold_ == b.threshold_
    s_local = pipeline.test(tmp_path / "local", tiny_dataset)
    s_ray = pipeline.test(tmp_path / "ray", tiny_dataset, engine=engine)
    assert list(s_local.filename) == list(s_ray.filename)
    np.testing.assert_allclose(s_ray.score, s_local.score, rtol=0, atol=1e-6)


def test_generated_data_on_ray_is_byte_identical(engine, tmp_path):
    kw = {"machines": ["valve"], "sections": [0], "scale": 0.005, "seed": 9, "min_test": 2}
    a = generate(tmp_path / "local", workers=1, **kw)
    b = generate(tmp_path / "ray", engine=engine, **kw)
    files = sorted(p.relative_to(a) for p in a.rglob("*.wav"))
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*.wav"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_run_on_ray_prints_the_same_table_as_without(engine, tiny_dataset, tmp_path):
    outputs = []
    for extra in ([], ["--engine", "ray"]):
        r = runner.invoke(app, ["run", str(tiny_dataset), "--out", str(tmp_path / f"o{len(extra)}"), "--detectors",
                                "gaussian,twfr_gmm", "--machines", "valve", *extra])  # fmt: skip
        assert r.exit_code == 0, r.output
        outputs.append(r.output.split("Table 4")[-1].split("runs in")[0])
    assert outputs[0] == outputs[1]


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'mimii-due\[ray\]'"):
        get_engine("ray")


def test_an_interrupted_training_resumes_on_ray_from_its_checkpoints(engine, tiny_dataset, tmp_path):
    from mimii_due.engines.ray_engine import RayEngine

    same_threads = RayEngine(threads=torch.get_num_threads())
    params = {"epochs": 3, "batch_size": 256}
    pipeline.train(tmp_path / "straight", tiny_dataset, detector="ae", params=params, machines=["fan"])
    # "interrupted" after epoch 1: the checkpoint of a 1-epoch run, then --resume on the cluster
    t = index(tiny_dataset)
    feats, clips = pipeline.features(t[(t.split == "train") & (t.machine == "fan")])
    from mimii_due.detectors import make

    make("ae", epochs=1, batch_size=256).fit(feats, clips, checkpoint=tmp_path / "run" / "checkpoints" / "fan")
    Run(tmp_path / "run").start({"detector": "ae", "params": params, "machines": ["fan"]}, resume=True)
    pipeline.train(tmp_path / "run", tiny_dataset, detector="ae", params=params, machines=["fan"], resume=True,
                   engine=same_threads)  # fmt: skip
    a, b = Run(tmp_path / "straight").load_model("fan"), Run(tmp_path / "run").load_model("fan")
    assert [h["epoch"] for h in b.history_] == [1, 2, 3]
    for k, v in a.model_.state_dict().items():
        torch.testing.assert_close(b.model_.state_dict()[k], v, rtol=0, atol=0)


def test_tasks_larger_than_any_node_are_refused_instead_of_waiting_forever(engine, tiny_dataset, tmp_path):
    """--task-cpus 4 on a 2-CPU Ray: no task could ever be placed, and `train` waited without end."""
    with pytest.raises(ConfigError, match="each task asks for 4 CPUs, but the largest node of the Ray cluster has 2"):
        get_engine("ray", task_cpus=4)
    r = runner.invoke(app, ["train", str(tiny_dataset), "--out", str(tmp_path / "r"), "--detector", "gaussian",
                            "--engine", "ray", "--task-cpus", "4"])  # fmt: skip
    assert r.exit_code == 1 and "no task could start (--task-cpus)" in r.output and not (tmp_path / "r").exists()
    assert engine.map(abs, [-1, -2]) == [1, 2]  # the cluster is still there for the next command

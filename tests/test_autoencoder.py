import numpy as np
import pytest
import torch

from mimii_due.data.index import index
from mimii_due.detectors import make
from mimii_due.detectors.autoencoder import AutoEncoder
from mimii_due.errors import ModelError
from mimii_due.evaluation.metrics import auc
from mimii_due.features.extract import extract
from mimii_due.features.logmel import stack_frames


def test_architecture_is_the_papers():
    m = AutoEncoder()
    linear = [x for x in m.net if isinstance(x, torch.nn.Linear)]
    assert [(x.in_features, x.out_features) for x in linear] == (
        [(640, 128)] + [(128, 128)] * 3 + [(128, 8), (8, 128)] + [(128, 128)] * 3 + [(128, 640)]
    )
    assert sum(isinstance(x, torch.nn.BatchNorm1d) for x in m.net) == 9
    assert sum(isinstance(x, torch.nn.ReLU) for x in m.net) == 9
    assert isinstance(m.net[-1], torch.nn.Linear)  # no activation after the output layer


def test_gathered_windows_equal_stacked_frames(tiny_dataset):
    feats, _ = extract(index(tiny_dataset)[:3])
    starts = feats.windows(5)[0]
    assert len(starts) == 3 * (313 - 4)
    gathered = torch.from_numpy(feats.data)[torch.from_numpy(starts)[:, None] + torch.arange(5)].reshape(-1, 640)
    np.testing.assert_array_equal(gathered[:309].numpy(), stack_frames(feats.clip(0), frames=5))


def test_ae_detects_easy_anomalies(easy_dataset, tmp_path):
    t = index(easy_dataset)
    det = make("ae", epochs=8).fit(*extract(t[t.split == "train"], cache=tmp_path))
    ftest, test = extract(t[t.split == "test"], cache=tmp_path)
    s = det.score(ftest, test)
    assert auc((test.label == "anomaly").to_numpy(), s) > 0.9
    assert len(det.history_) == 8 and det.history_[-1]["loss"] < det.history_[0]["loss"]


def test_interrupted_training_resumes_to_the_same_weights(tiny_dataset, tmp_path):
    t = index(tiny_dataset)
    ftrain, train = extract(t[(t.split == "train") & (t.machine == "fan")])
    straight = make("ae", epochs=4, batch_size=256).fit(ftrain, train, checkpoint=tmp_path / "a")
    make("ae", epochs=2, batch_size=256).fit(ftrain, train, checkpoint=tmp_path / "b")  # "crash"
    resumed = make("ae", epochs=4, batch_size=256).fit(ftrain, train, checkpoint=tmp_path / "b")
    assert [h["epoch"] for h in resumed.history_] == [1, 2, 3, 4]
    for k, v in straight.model_.state_dict().items():
        torch.testing.assert_close(resumed.model_.state_dict()[k], v, rtol=0, atol=0)
    with pytest.raises(ModelError, match="other settings"):
        make("ae", epochs=4, batch_size=128).fit(ftrain, train, checkpoint=tmp_path / "b")


@pytest.mark.parametrize("networks", [1, 2])
def test_interrupted_embedding_training_resumes_to_the_same_model(tiny_dataset, tmp_path, networks, caplog):
    """Every random draw of a training step (crops, mixup) comes from the epoch's generator; with
    several networks each resumes from its own checkpoint."""
    t = index(tiny_dataset)
    ftrain, train = extract(t[(t.split == "train") & (t.machine == "fan")], cfg=make("embedding").features)
    straight = make("embedding", epochs=3, networks=networks).fit(ftrain, train, checkpoint=tmp_path / "a")
    make("embedding", epochs=1, networks=networks).fit(ftrain, train, checkpoint=tmp_path / "b")  # "killed" at epoch 1
    with caplog.at_level("INFO", logger="mimii_due.detectors.training"):
        resumed = make("embedding", epochs=3, networks=networks).fit(ftrain, train, checkpoint=tmp_path / "b")
    assert caplog.text.count("resuming from epoch 1 of 3") == networks  # each network from its own checkpoint
    for a, b in zip(straight.nets_, resumed.nets_, strict=True):
        for k, v in a.state_dict().items():
            torch.testing.assert_close(b.state_dict()[k], v, rtol=0, atol=0)
    assert resumed.threshold_ == straight.threshold_

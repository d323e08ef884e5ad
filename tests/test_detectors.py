"""One contract test, parametrised over the registry: every detector must pass it."""

import json

import numpy as np
import pytest

from mimii_due.data.index import index
from mimii_due.detectors import REGISTRY, make
from mimii_due.detectors.base import Detector
from mimii_due.errors import ModelError, NotFittedError
from mimii_due.evaluation.metrics import auc

# Settings that keep each detector's contract test fast; every registered detector needs an entry.
FAST = {
    "gaussian": {},
    "ae": {"epochs": 10},
    "mobilenetv2": {"epochs": 2, "lr": 1e-3},
    "smahal": {"epochs": 10},
    "embedding": {"epochs": 3},
}


@pytest.fixture(scope="module")
def easy(easy_dataset):
    t = index(easy_dataset)
    return t[t.split == "train"], t[t.split == "test"]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_contract(name, easy, tmp_path):
    assert name in FAST, f"add fast settings for {name} to FAST"
    train, test = easy
    det = make(name, cache=tmp_path / "f", **FAST[name])
    assert not hasattr(det, "threshold_")  # __init__ stores settings only
    with pytest.raises(NotFittedError):
        det.score(test)
    assert det.fit(train) is det
    assert np.isfinite(det.threshold_) and det.train_scores_.shape == (len(train),)
    scores = det.score(test)
    assert scores.shape == (len(test),) and np.isfinite(scores).all()
    np.testing.assert_array_equal(det.predict(test), scores > det.threshold_)
    src = (test.domain == "source").to_numpy()
    # higher means more anomalous: on easy data the anomalies score higher
    assert auc((test.label[src] == "anomaly").to_numpy(), scores[src]) > 0.7
    det.save(tmp_path / "model")
    loaded = Detector.load(tmp_path / "model")
    assert type(loaded) is type(det) and loaded.threshold_ == det.threshold_
    np.testing.assert_allclose(loaded.score(test), scores, rtol=1e-6, atol=1e-9)


def test_a_saved_model_that_does_not_fit_the_code_is_a_clear_error(easy, tmp_path):
    train, _ = easy
    train = train[(train.machine == train.machine.iloc[0]) & (train.section == train.section.iloc[0])]
    make("embedding", epochs=1, cache=tmp_path / "f").fit(train).save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "detector.json").read_text())
    meta["params"]["config"]["spectrum_net"] = False  # as if saved by a version without that branch
    (tmp_path / "model" / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="retrain") as e:
        Detector.load(tmp_path / "model")
    assert str(tmp_path / "model") in str(e.value)  # names the folder, not just the word "model"


def test_training_on_anomalies_is_refused(easy):
    train, test = easy
    with pytest.raises(ModelError, match="normal"):
        make("gaussian").fit(test)


def test_unknown_detector_and_setting():
    with pytest.raises(Exception, match="unknown detector"):
        make("nope")
    with pytest.raises(Exception, match="unknown setting"):
        make("ae", epoch=3)


def test_selective_mahalanobis_from_a_trained_ae_equals_training_it(tiny_dataset, tmp_path):
    from mimii_due.detectors.smahal import SelectiveMahalanobisDetector

    t = index(tiny_dataset)
    fan = t[(t.machine == "fan") & (t.section == 0)]
    train, test = fan[fan.split == "train"], fan[fan.split == "test"]
    direct = make("smahal", epochs=2, batch_size=256, cache=tmp_path).fit(train)
    ae = make("ae", epochs=2, batch_size=256, cache=tmp_path).fit(train)
    derived = SelectiveMahalanobisDetector.from_autoencoder(ae, train)
    np.testing.assert_allclose(derived.score(test), direct.score(test), rtol=1e-6)
    assert derived.threshold_ == pytest.approx(direct.threshold_)
    # the smaller of the two domain distances: a target normal clip is scored against target statistics
    assert set(direct.stats_) == {(0, "source"), (0, "target")}

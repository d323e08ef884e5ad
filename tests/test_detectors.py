"""One contract test, parametrised over the registry: every detector must pass it."""

import json

import numpy as np
import pytest
import torch

from mimii_due.config import FeatureConfig
from mimii_due.data.index import index
from mimii_due.detectors import BUILT_IN, REGISTRY, make
from mimii_due.detectors.base import Detector, pack
from mimii_due.detectors.embedding import EmbeddingConfig
from mimii_due.detectors.twfr_gmm import gwrp
from mimii_due.errors import ConfigError, ModelError, NotFittedError, StorageError
from mimii_due.evaluation.metrics import auc
from mimii_due.features.extract import Features, extract

# Settings that keep each detector's contract test fast; every built-in detector needs an entry (the contract
# tests run on the built-in ones, whatever plugins are installed).
FAST = {
    "gaussian": {},
    "ae": {"epochs": 10},
    # source AUC (floor 0.7): 2 epochs 0.64 on an Intel CPU, 4 there 1.0; on an AMD EPYC 4 epochs 0.667 / 0.741 /
    # 6 epochs 0.654 / 0.642 (model seeds 0 / 1), 8 epochs 0.877 / 0.963 / 0.938 (seeds 0 / 1 / 2), 10: 0.889 / 0.926
    "mobilenetv2": {"epochs": 8, "lr": 1e-3},
    "smahal": {"epochs": 10},
    "embedding": {"epochs": 8},
    "twfr_gmm": {},
    "ensemble": {"members": ("twfr_gmm", "gaussian")},
}


@pytest.fixture(scope="module")
def easy(easy_dataset, tmp_path_factory):
    t = index(easy_dataset)
    cache = tmp_path_factory.mktemp("cache")
    train, test = t[t.split == "train"], t[t.split == "test"]
    cfg = FeatureConfig(spectrum_bins=EmbeddingConfig().spectrum_bins)  # what every detector reads
    (ftrain, train), (ftest, test) = extract(train, cache=cache, cfg=cfg), extract(test, cache=cache, cfg=cfg)
    return ftrain, train, ftest, test


def _subset(feats: Features, idx, cut: dict | None = None) -> Features:
    """Features of clips ``idx`` (clip i cut to ``cut[i]`` frames where given)."""
    cut = cut or {}
    parts = [feats.clip(i)[: cut.get(i, None)] for i in idx]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    return Features(np.concatenate(parts), offsets, None if feats.spectra is None else feats.spectra[idx])


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_contract(name, easy, tmp_path):
    assert name in FAST, f"add fast settings for {name} to FAST"
    ftrain, train, ftest, test = easy
    det = make(name, **FAST[name])
    assert not hasattr(det, "threshold_")  # __init__ stores settings only
    with pytest.raises(NotFittedError):
        det.score(ftest, test)
    assert det.fit(ftrain, train) is det
    assert np.isfinite(det.threshold_) and det.train_scores_.shape == (len(train),)
    scores = det.score(ftest, test)
    assert scores.shape == (len(test),) and np.isfinite(scores).all()
    np.testing.assert_array_equal(det.predict(ftest, test), scores > det.threshold_)
    # the domain parts: the smaller is the score (TWFR-GMM: at least it, being averaged over decays first)
    parts = det.domain_scores(ftest, test)
    assert parts.shape == (len(test), 2) and np.isfinite(parts.min(axis=1)).all()
    assert (parts.min(axis=1) >= scores - 1e-9).all() and det.train_domain_scores_.shape == (len(train), 2)
    if name != "twfr_gmm":
        np.testing.assert_allclose(parts.min(axis=1), scores, rtol=1e-9)
    src = (test.domain == "source").to_numpy()
    # higher means more anomalous: on easy data the anomalies score higher
    assert auc((test.label[src] == "anomaly").to_numpy(), scores[src]) > 0.7
    # a clip's score does not depend on the other clips in the call, also with clips of unequal lengths
    idx = [0, 5, len(test) - 1]
    cut = {5: det.scorable_frames + 20}  # one clip much shorter than the others
    short_test = test.iloc[idx].reset_index(drop=True)
    together = det.score(_subset(ftest, idx, cut), short_test)
    for k, i in enumerate(idx):
        alone = det.score(_subset(ftest, [i], cut), short_test.iloc[[k]])
        np.testing.assert_allclose(alone, together[k : k + 1], rtol=1e-4, atol=1e-6)  # float32 nets
    np.testing.assert_allclose(together[[0, 2]], scores[[0, len(test) - 1]], rtol=1e-4, atol=1e-6)
    # a clip cut to under half the training clips' length is a broken recording, refused by name
    assert det.scorable_frames == max(det.min_frames, (int(np.median(ftrain.lengths)) + 1) // 2)
    with pytest.raises(ModelError, match=f"shorter than the {det.scorable_frames} frames.*{test.filename[5]}"):
        det.score(_subset(ftest, idx, {5: det.scorable_frames - 1}), short_test)
    det.save(tmp_path / "model")
    loaded = Detector.load(tmp_path / "model")
    assert type(loaded) is type(det) and loaded.threshold_ == det.threshold_
    assert loaded.scorable_frames == det.scorable_frames
    np.testing.assert_array_equal(loaded.held_out_, det.held_out_)
    np.testing.assert_allclose(loaded.score(ftest, test), scores, rtol=1e-6, atol=1e-9)


def test_save_replaces_an_earlier_model_but_never_a_file_or_a_folder_of_other_files(easy, tmp_path):
    """det.save(PATH) replaced whatever was at PATH: a file, or a folder of one's data with everything in it."""
    ftrain, train, ftest, test = easy
    det = make("gaussian").fit(ftrain, train)
    (tmp_path / "notes.txt").write_text("mine")
    data = tmp_path / "data"
    data.mkdir()
    (data / "clip.wav").write_bytes(b"RIFF")
    for where, words in ((tmp_path / "notes.txt", "is a file"), (data, r"holds other files \(clip.wav\)"),
                         (tmp_path, r"holds other files \(data, notes.txt\) and no detector.json")):  # fmt: skip
        with pytest.raises(StorageError, match=words):
            det.save(where)
    assert (tmp_path / "notes.txt").read_text() == "mine" and (data / "clip.wav").read_bytes() == b"RIFF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes.txt"]  # no temporary folder left either
    (tmp_path / "empty").mkdir()
    det.save(tmp_path / "empty")  # an empty folder, then an earlier model, are replaced
    det.set_false_alarm_rate(0.01).save(tmp_path / "empty")
    assert Detector.load(tmp_path / "empty").threshold_ == det.threshold_


@pytest.mark.parametrize("name", ["twfr_gmm", "ensemble"])
def test_a_new_false_alarm_rate_gives_the_threshold_training_with_it_gives_without_retraining(name, easy, tmp_path):
    ftrain, train, ftest, test = easy
    det = make(name, **FAST[name]).fit(ftrain, train)
    det.save(tmp_path / "model")
    strict = make(name, **FAST[name], threshold_quantile=0.99).fit(ftrain, train)
    loaded = Detector.load(tmp_path / "model").set_false_alarm_rate(0.01)
    assert loaded.threshold_ == pytest.approx(strict.threshold_, rel=1e-12) and loaded.threshold_ > det.threshold_
    assert loaded.threshold_quantile == pytest.approx(0.99)
    np.testing.assert_array_equal(loaded.predict(ftest, test), strict.predict(ftest, test))
    for bad in (0, 1, 1.5, float("nan"), True, "0.1"):
        with pytest.raises(ConfigError, match="false-alarm rate must be a number between 0 and 1"):
            loaded.set_false_alarm_rate(bad)
    assert loaded.threshold_ == pytest.approx(strict.threshold_, rel=1e-12)  # a refusal changes nothing


def test_a_saved_model_that_does_not_fit_the_code_is_a_clear_error(easy, tmp_path):
    ftrain, train, _, _ = easy
    make("embedding", epochs=1).fit(ftrain, train).save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "detector.json").read_text())
    meta["params"]["config"]["embedding"] = 64  # as if saved by a version with other layers
    (tmp_path / "model" / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="retrain") as e:
        Detector.load(tmp_path / "model")
    assert str(tmp_path / "model") in str(e.value)  # names the folder, not just the word "model"


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"\xff\xfe garbage", "detector.json"), (b"[1, 2]", "not a saved mimii-due model"), (b"{}", "not a saved"),
     (b"", "detector.json")],
)
def test_a_damaged_detector_json_is_a_clear_error_not_a_traceback(easy, tmp_path, content, words):
    ftrain, train, _, _ = easy
    make("gaussian").fit(ftrain, train).save(tmp_path / "model")
    (tmp_path / "model" / "detector.json").write_bytes(content)
    with pytest.raises(ModelError, match=words) as e:
        Detector.load(tmp_path / "model")
    assert str(tmp_path / "model") in str(e.value) and "refusing" not in str(e.value)


def test_an_embedding_saved_before_the_linear_spectrum_still_scores_as_it_was_trained(easy, tmp_path):
    import torch

    ftrain, train, ftest, test = easy
    old = make("embedding", epochs=1, spectrum="log").fit(ftrain, train)
    old.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "detector.json").read_text())
    del meta["params"]["config"]["spectrum"]  # as saved by the version that knew only the log spectrum
    (tmp_path / "model" / "detector.json").write_text(json.dumps(meta))
    state = torch.load(tmp_path / "model" / "state.pt", weights_only=True)
    del state["spectrum"]
    torch.save(state, tmp_path / "model" / "state.pt")
    loaded = Detector.load(tmp_path / "model")
    assert loaded.config.spectrum == "linear" and loaded.spectrum_ == "log"
    np.testing.assert_allclose(loaded.score(ftest, test), old.score(ftest, test), rtol=1e-6, atol=1e-9)
    new = make("embedding", epochs=1).fit(ftrain, train)  # the default reads linear magnitudes
    assert new.spectrum_ == "linear" and np.all(new.spec_norm_[1] == new.spec_norm_[1][0])  # one scale for all bins
    spec, _ = new._inputs(ftest)
    np.testing.assert_allclose(spec.numpy()[:, :5], ftest.spectra[:, :5] / new.spec_norm_[1][0], rtol=1e-5)


def test_adaproj_gives_each_class_the_angle_to_its_subspace():
    import torch

    from mimii_due.detectors.embedding import AngularHead

    head = AngularHead(8, n_classes=2, subclusters=3, loss="adaproj")
    with torch.no_grad():
        head.centres.copy_(torch.eye(8)[:6])  # class 0 spans e0-e2, class 1 e3-e5
    x = torch.zeros(3, 8)
    x[0, [0, 1]] = 1.0  # in class 0's subspace, anywhere in it: as close as can be
    x[1, [2, 6]] = 1.0  # 45 degrees off class 0's subspace, orthogonal to class 1's
    x[2, [3, 4, 5]] = 2.0
    cos = head(x) / head.scale
    np.testing.assert_allclose(cos.detach().numpy(), [[1, 0], [2**-0.5, 0], [0, 1]], atol=1e-6)
    sc = AngularHead(8, n_classes=2, subclusters=3, loss="subcluster_adacos")
    sc.load_state_dict(head.state_dict())  # sub-clusters: log of the summed exp(scale * cos) to each centre
    expected = np.log(2 * np.exp(sc.scale * 2**-0.5) + 1)  # 45 degrees from e0 and e1, 90 from e2
    np.testing.assert_allclose(sc(x[:1])[0, 0].item(), expected, rtol=1e-5)


def test_a_model_file_that_would_run_code_is_refused(easy, tmp_path):
    import torch

    ftrain, train, _, _ = easy
    make("gaussian").fit(ftrain, train).save(tmp_path / "model")
    torch.save({"models": {0: (np.zeros(3), object())}}, tmp_path / "model" / "state.pt")  # pickles a class
    with pytest.raises(ModelError, match="more than weights"):
        Detector.load(tmp_path / "model")


def test_training_on_anomalies_is_refused(easy):
    _, _, ftest, test = easy
    with pytest.raises(ModelError, match="normal"):
        make("gaussian").fit(ftest, test)


def test_too_short_clips_are_a_clear_error(easy):
    ftrain, train, ftest, test = easy
    det = make("ae", epochs=1).fit(ftrain, train)
    with pytest.raises(ModelError, match="shorter than the 5 frames"):  # the AE's 5-frame context
        det.fit(_subset(ftrain, range(len(train)), {0: 3}), train)
    with pytest.raises(ModelError, match=f"shorter than the {det.scorable_frames} frames"):  # half its training clips'
        det.score(_subset(ftest, [0], {0: 3}), test.iloc[[0]])


@pytest.mark.parametrize(
    "name, settings, message",
    [
        ("nope", {}, "unknown detector"),
        ("ae", {"epoch": 3}, "unknown setting"),
        ("ae", {"lr": "abc"}, "lr must be float"),
        ("ae", {"batch_size": 0}, "batch_size must be at least 1"),
        ("ae", {"seed": -1}, "seed must be between"),
        ("ae", {"epochs": 0}, "epochs must be at least 1"),
        ("embedding", {"subclusters": 0}, "subclusters must be between"),
        ("embedding", {"spectrum": "mel"}, "spectrum must be one of linear, log"),
        ("embedding", {"loss": "arcface"}, "loss must be one of adaproj, subcluster_adacos"),
        ("ensemble", {"members": ("twfr_gmm", "nope")}, "unknown detector"),
        ("ensemble", {"members": ("twfr_gmm:decay", "gaussian")}, "'twfr_gmm:decay': a setting is KEY=VALUE"),
        ("ensemble", {"members": ("twfr_gmm:decays=0.9",)}, "unknown setting.*decays"),
        ("ensemble", {"members": ("embedding:networks=0",)}, "networks must be between"),
        ("ensemble", {"members": "twfr_gmm,nope"}, "unknown detector 'nope'"),  # --set members=..., not letters
        ("ensemble", {"weights": 1}, "weights needs one non-negative weight per member"),  # (1,), not a TypeError
        ("ensemble", {"weights": [6, "x"]}, "weights must be a list of float values"),
        ("ensemble", {"weights": "6,x"}, r"weights must be a list of float values, got \(6, 'x'\)"),
        ("ensemble", {"members": [1, 2]}, "members must be a list of str values"),
        ("twfr_gmm", {"domains": "both"}, "domains must be 'separate' or 'pooled'"),
        ("ae", {"device": "gpu"}, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ("embedding", {"device": "cuda:x"}, "device must be"),
        ("mobilenetv2", {"device": ""}, "device must be"),
    ],
)
def test_settings_are_checked_when_the_detector_is_made(name, settings, message):
    with pytest.raises(ConfigError, match=message):
        make(name, **settings)


def test_a_list_setting_is_given_as_on_the_command_line():
    """`--set members=twfr_gmm,gaussian --set weights=6,1`: both lists split at commas, numbers read as numbers."""
    from mimii_due.config import setting

    det = make("ensemble", **dict(map(setting, ["members=twfr_gmm,gaussian", "weights=6,1"])))
    assert det.config.members == ("twfr_gmm", "gaussian") and det.config.weights == (6, 1)
    assert make("ensemble", members="twfr_gmm", weights=6).config.weights == (6,)


def test_a_number_in_exponent_form_is_a_number():
    """`--set lr=1e-5`, as people write a learning rate: YAML 1.1 reads it as text, and it was
    refused ("lr must be float, got '1e-5'"); in a list too, and text that only starts like one stays text."""
    from mimii_due.config import setting

    assert make("ae", **dict([setting("lr=1e-5")])).config.lr == 1e-5
    assert make("ae", **dict([setting("lr=2.5E-3")])).config.lr == 0.0025
    ens = make("ensemble", **dict(map(setting, ["members=twfr_gmm,gaussian", "weights=6,1e0"])))
    assert ens.config.weights == (6, 1)
    assert setting("device=1e5x") == ("device", "1e5x")


def test_selective_mahalanobis_from_a_trained_ae_equals_training_it(tiny_dataset, tmp_path):
    from mimii_due.detectors.smahal import SelectiveMahalanobisDetector

    t = index(tiny_dataset)
    fan = t[(t.machine == "fan") & (t.section == 0)]
    (ftrain, train), (ftest, test) = extract(fan[fan.split == "train"]), extract(fan[fan.split == "test"])  # log-mel
    direct = make("smahal", epochs=2, batch_size=256).fit(ftrain, train)
    ae = make("ae", epochs=2, batch_size=256).fit(ftrain, train)
    derived = SelectiveMahalanobisDetector.from_autoencoder(ae, ftrain, train)
    np.testing.assert_allclose(derived.score(ftest, test), direct.score(ftest, test), rtol=1e-6)
    assert derived.threshold_ == pytest.approx(direct.threshold_)
    # the smaller of the two domain distances: a target normal clip is scored against target statistics
    assert set(direct.stats_) == {(0, "source"), (0, "target")}


def test_embedding_networks_are_averaged_and_the_first_is_the_single_network(easy, tmp_path):
    """``networks=2``: a second network with the next seed on the same training items; the
    domain distances are the two networks' mean (the published system adds five networks')."""
    ftrain, train, ftest, test = easy
    one = make("embedding", epochs=1).fit(ftrain, train)
    two = make("embedding", epochs=1, networks=2).fit(ftrain, train, checkpoint=tmp_path / "ckpt")
    for k, v in one.nets_[0].state_dict().items():  # the first network is the single network
        np.testing.assert_array_equal(two.nets_[0].state_dict()[k].numpy(), v.numpy())
    assert not all(np.array_equal(two.nets_[1].state_dict()[k].numpy(), v.numpy())
                   for k, v in one.nets_[0].state_dict().items())  # fmt: skip
    assert (tmp_path / "ckpt" / "checkpoint.pt").exists()
    assert (tmp_path / "ckpt" / "network2" / "checkpoint.pt").exists()
    second = np.zeros((len(test), 2))
    sections = test["section"].to_numpy().astype(int)
    emb = two.embed(ftest, network=1)
    for s in np.unique(sections):
        second[sections == s] = two._section_parts(emb[sections == s], two.banks_[1][int(s)])
    np.testing.assert_allclose(two.domain_scores(ftest, test), (one.domain_scores(ftest, test) + second) / 2)
    np.testing.assert_array_equal(two.held_out_, one.held_out_)  # the same validation clips for both
    second_loss = torch.load(tmp_path / "ckpt" / "network2" / "checkpoint.pt", weights_only=True)["history"][0]["loss"]
    assert len(two.history_) == 1  # one record per epoch: the networks' mean loss
    assert two.history_[0]["loss"] == pytest.approx((one.history_[0]["loss"] + second_loss) / 2)
    assert second_loss != pytest.approx(one.history_[0]["loss"])
    two.save(tmp_path / "model")
    back = Detector.load(tmp_path / "model")
    assert back.config.networks == 2
    np.testing.assert_allclose(back.score(ftest, test), two.score(ftest, test), rtol=1e-9)
    with pytest.raises(ConfigError, match="networks"):
        make("embedding", networks=0)
    one.save(tmp_path / "old")  # a model saved before several networks: one "net" and its "banks"
    state = torch.load(tmp_path / "old" / "state.pt", weights_only=True)
    net = state.pop("networks")[0]
    torch.save(state | {"net": net["net"], "banks": net["banks"]}, tmp_path / "old" / "state.pt")
    np.testing.assert_allclose(Detector.load(tmp_path / "old").score(ftest, test), one.score(ftest, test), rtol=1e-9)
    meta = json.loads((tmp_path / "model" / "detector.json").read_text())
    meta["params"]["config"]["networks"] = 3  # settings that do not match the saved networks
    (tmp_path / "model" / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="2 networks"):
        Detector.load(tmp_path / "model")


def _as_other_machine(clips):
    return clips.assign(machine="other")


def test_outlier_exposure_adds_classes_but_stays_out_of_the_model_of_normal_sound(easy):
    ftrain, train, ftest, test = easy
    other = (ftrain, _as_other_machine(train))  # another machine type's clips (here: relabelled copies)
    plain = make("embedding", epochs=1).fit(ftrain, train)
    exposed = make("embedding", epochs=1).fit(ftrain, train, outliers=other)
    own = set(plain.classes_)
    assert own < set(exposed.classes_)
    assert set(exposed.classes_) - own == {f"other|{k}" for k in own}
    assert exposed.banks_[0].keys() == plain.banks_[0].keys()  # scored against our clips only
    for s, bank in exposed.banks_[0].items():
        assert len(bank["target"]) == len(plain.banks_[0][s]["target"])
    assert exposed.train_scores_.shape == (len(train),)
    assert not np.allclose(exposed.score(ftest, test), plain.score(ftest, test))  # the network did change
    with pytest.raises(ModelError, match="outlier clips must be normal"):
        make("embedding", epochs=1).fit(ftrain, train, outliers=(ftest, _as_other_machine(test)))


def test_detectors_without_outlier_exposure_ignore_the_outliers(easy):
    ftrain, train, ftest, test = easy
    assert not REGISTRY["twfr_gmm"].uses_outliers and make("ensemble").uses_outliers
    a = make("twfr_gmm").fit(ftrain, train).score(ftest, test)
    b = make("twfr_gmm").fit(ftrain, train, outliers=(ftrain, _as_other_machine(train))).score(ftest, test)
    np.testing.assert_array_equal(a, b)


def test_twfr_gmm_training_scores_are_held_out(easy):
    """The mixture fits its own clips better than new ones: the training scores that set the
    threshold and the ensemble's standardisation come from models that did not see the clip."""
    ftrain, train, ftest, test = easy
    det = make("twfr_gmm").fit(ftrain, train)
    in_sample = det.score(ftrain, train)
    src = (train.domain == "source").to_numpy()
    assert np.median(det.train_scores_[src]) > np.median(in_sample[src]) + 1.0
    normal = (test.label == "normal").to_numpy() & (test.domain == "source").to_numpy()
    test_normal = det.score(ftest, test)[normal]  # new normal clips: nearer the held-out scores
    gap_held, gap_in = (abs(np.median(test_normal) - np.median(s[src])) for s in (det.train_scores_, in_sample))
    assert gap_held < gap_in


def _clips(rng, n, shift, anomaly=0.0, frames=12, bands=128):
    """Log-mel-like clips: a level around ``shift`` that varies from clip to clip along a few
    smooth directions, as machine sound does (+ ``anomaly`` in 10 bands)."""
    directions = np.cos(np.outer(np.arange(bands) / bands * np.pi, np.arange(1, 5)))  # the same in every call
    parts = []
    for _ in range(n):
        level = shift + directions @ rng.normal(0, 1, 4) + rng.normal(0, 0.1, bands)
        level[:10] += anomaly
        parts.append(level + rng.normal(0, 0.3, (frames, bands)))
    return parts


def _features(parts) -> Features:
    """Features of clips given as frame arrays (``_clips``)."""
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    return Features(np.concatenate(parts).astype(np.float32), offsets)


def test_twfr_gmm_judges_a_clip_on_the_scale_of_the_domain_it_fits(tmp_path):
    """Ten target clips cannot model their domain as well as 200 source clips model theirs: under one
    likelihood new target normal clips look worse than source anomalies. Each domain's NLL is
    standardised with its own held-out clips, so they do not (the 2022-2025 AUC of a domain counts
    its normal clips against all anomalies)."""
    import pandas as pd

    rng = np.random.default_rng(0)
    groups = [("train", "source", 200, 0.0, 0.0), ("train", "target", 10, 3.0, 0.0),
              ("test", "source", 40, 0.0, 0.0), ("test", "target", 40, 3.0, 0.0),
              ("test", "source", 40, 0.0, 0.6), ("test", "target", 40, 3.0, 0.6)]  # split, domain, n, shift, anomaly
    made = {"train": ([], []), "test": ([], [])}
    for split, domain, n, shift, anomaly in groups:
        made[split][0].extend(_clips(rng, n, shift, anomaly))
        label = "anomaly" if anomaly else "normal"
        first = len(made[split][1])
        made[split][1].extend({"section": 0, "domain": domain, "label": label, "filename": f"{split}_{first + i}.wav"}
                              for i in range(n))  # fmt: skip

    ftrain, train = _features(made["train"][0]), pd.DataFrame(made["train"][1])
    ftest, test = _features(made["test"][0]), pd.DataFrame(made["test"][1])
    det = make("twfr_gmm", decay=1.0).fit(ftrain, train.drop(columns="label"))
    scores = det.score(ftest, test)
    anomalous = (test.label == "anomaly").to_numpy()
    target_normal = ~anomalous & (test.domain == "target").to_numpy()
    keep = target_normal | anomalous
    assert auc(anomalous[keep], scores[keep]) > 0.95
    kernels = make("twfr_gmm", decay=1.0, neighbours=0).fit(ftrain, train.drop(columns="label"))
    assert auc(anomalous[keep], kernels.score(ftest, test)[keep]) > 0.95  # Gaussian kernels on the target clips
    src, tgt = kernels._nlls(kernels.models_[0][0], gwrp(ftest, 1.0))
    one_likelihood = -np.logaddexp(-src, -tgt)  # both densities, equally weighted: the paper's single model
    assert auc(anomalous[keep], one_likelihood[keep]) < 0.6
    pooled = make("twfr_gmm", decay=1.0, domains="pooled").fit(ftrain, train.drop(columns="label"))
    assert len(pooled.models_[0][0]["targets"]) == 0  # the paper's one mixture of all clips
    assert auc(anomalous[keep], pooled.score(ftest, test)[keep]) < auc(anomalous[keep], scores[keep]) - 0.1
    held = det.train_scores_  # centred per domain on held-out clips
    for domain in ("source", "target"):
        assert abs(np.median(held[(train.domain == domain).to_numpy()])) < 0.5


def test_twfr_gmm_target_clips_amid_others_judge_strictly():
    """Each target clip's distance is scaled by its local density (its mean distance to its nearest
    training clips, Wilkinghoff et al. 2025): a target clip amid the source clips (a condition that
    sounds like the source) judges a clip at a given distance more strictly than a lone one far
    from the rest, and without the scaling (``neighbours=0``) both judge alike."""
    import pandas as pd

    rng = np.random.default_rng(2)
    near, far = _clips(rng, 5, 0.0), _clips(rng, 5, 4.0)  # target clips amid the source ones, and apart
    parts = _clips(rng, 200, 0.0) + near + far
    train = pd.DataFrame({"section": 0, "domain": ["source"] * 200 + ["target"] * 10,
                          "filename": [f"c{i}.wav" for i in range(210)]})  # fmt: skip
    det = make("twfr_gmm", decay=1.0).fit(_features(parts), train)
    model = det.models_[0][0]
    assert (model["density"][5:].min() > 2 * model["density"][:5].max()), model["density"]
    step = np.zeros(128)
    step[:10] = 0.5  # the same displacement from a near and from a far target clip
    probes = [near[0] + step, far[0] + step]
    strict, lenient = det._nlls(model, gwrp(_features(probes), 1.0))[1]
    assert strict > 2 * lenient
    kernels = make("twfr_gmm", decay=1.0, neighbours=0).fit(_features(parts), train)
    a, b = kernels._nlls(kernels.models_[0][0], gwrp(_features(probes), 1.0))[1]
    assert abs(a - b) < 0.25 * abs(a)
    twelve = pd.DataFrame({"section": 0, "domain": ["source"] * 200 + ["target"] * 12,
                           "filename": [f"c{i}.wav" for i in range(212)]})  # fmt: skip
    same = make("twfr_gmm", decay=1.0).fit(_features(parts[:200] + near[:1] * 12), twelve)  # 10 neighbours at 0
    assert np.isfinite(same.score(_features(probes), train.iloc[:2])).all()


def _events(rng, n, kind="", frames=100, bands=128):
    """Noise clips; ``kind`` "short": one loud frame in 8 bands, "faint": a small level in them throughout."""
    out = []
    for _ in range(n):
        x = rng.normal(0, 1, (frames, bands))
        if kind == "short":
            x[rng.integers(frames), :8] += 5.0
        elif kind == "faint":
            x[:, :8] += 0.35
        out.append(x)
    return out


def test_twfr_gmm_multiscale_finds_short_loud_and_long_faint_anomalies():
    """An anomaly of one loud frame hardly moves the clip mean (``r = 1``); a faint one over the
    whole clip hardly moves its loudest frame (``r = 0``). The default, every decay's model
    averaged, finds both; each single extreme misses one. With fewer clips than bands: the mean."""
    import pandas as pd

    rng = np.random.default_rng(1)
    clips = lambda n, kind="": _events(rng, n, kind)  # noqa: E731
    table = lambda n, domain="source": pd.DataFrame({"section": 0, "domain": [domain] * n})  # noqa: E731
    ftrain, train = _features(clips(150)), table(150)
    normal, short, faint = clips(40), clips(40, "short"), clips(40, "faint")
    y = np.r_[np.zeros(40), np.ones(40)]
    aucs = {}
    for decay in ("multiscale", 1.0, 0.0):
        det = make("twfr_gmm", decay=decay).fit(ftrain, train)
        score = lambda parts: det.score(_features(parts), table(len(parts)))  # noqa: E731, B023
        aucs[decay] = [auc(y, np.r_[score(normal), score(kind)]) for kind in (short, faint)]
    assert aucs["multiscale"][0] > 0.85 and aucs["multiscale"][1] > 0.85, aucs
    assert aucs[1.0][0] < 0.75 and aucs[0.0][1] < 0.75, aucs  # the mean misses the short one, the maximum the faint one
    det = make("twfr_gmm").fit(ftrain, train)
    assert len(det.models_) == len(det.decays_) == 10
    few = make("twfr_gmm").fit(_features(clips(100)), table(100))  # no more clips than bands: the mean alone
    assert few.decays_ == (1.0,) and len(few.models_) == 1
    assert np.allclose(gwrp(ftrain, (1.0, 0.0))[0], ftrain.means())  # r = 1 is the clip mean


def test_twfr_gmm_auto_chooses_the_decay_that_tells_operating_conditions_apart():
    """``decay="auto"``: the decay whose pooled features best separate one attribute group from the
    others. Groups that differ by one loud frame per clip call for the maximum's end of the range,
    groups that differ by a faint level over the whole clip for the mean's."""
    import pandas as pd

    rng = np.random.default_rng(2)
    clips = lambda n, kind: _events(rng, n, kind)  # noqa: E731
    table = pd.DataFrame({"section": 0, "domain": "source", "attributes": ["g_1"] * 60 + ["g_2"] * 60})
    for kind, ok in (("short", lambda r: r <= 0.8), ("faint", lambda r: r >= 0.99)):
        det = make("twfr_gmm", decay="auto").fit(_features(clips(60, "") + clips(60, kind)), table)
        assert len(det.decays_) == 1 and ok(det.decays_[0]), (kind, det.decays_)


def test_ensemble_weights_twfr_gmm_six_times_by_default(easy):
    from mimii_due.detectors.ensemble import DEFAULT_WEIGHTS

    ftrain, train, ftest, test = easy
    ens = make("ensemble", members=("twfr_gmm", "gaussian")).fit(ftrain, train)
    z = []  # each member's standardised domain parts (the Gaussian has none: its score in both)
    for det, norms in zip(ens.members_, ens.norms_, strict=True):
        med = np.array([norms[int(s)][0] for s in test.section])[:, None]
        dev = np.array([norms[int(s)][1] for s in test.section])[:, None]
        z.append((det.domain_scores(ftest, test) - med) / dev)
    w = DEFAULT_WEIGHTS["twfr_gmm"]
    assert w == 6.0
    np.testing.assert_allclose(ens.score(ftest, test), ((w * z[0] + z[1]) / (w + 1)).min(axis=1))
    equal = make("ensemble", members=("twfr_gmm", "gaussian"), weights=(1.0, 1.0)).fit(ftrain, train)
    np.testing.assert_allclose(equal.score(ftest, test), ((z[0] + z[1]) / 2).min(axis=1))


def test_ensemble_members_take_settings_after_their_name(easy, tmp_path):
    """``"twfr_gmm:decay=0.9"``: the member is made with that setting, keeps its name's default
    weight, and the ensemble saves and loads with it."""
    ftrain, train, ftest, test = easy
    ens = make("ensemble", members=("twfr_gmm:decay=0.9", "gaussian")).fit(ftrain, train, checkpoint=tmp_path / "c")
    tw = ens.members_[0]
    assert tw.config.decay == 0.9 and tw.decays_ == (0.9,)
    alone = make("twfr_gmm", decay=0.9).fit(ftrain, train)
    np.testing.assert_allclose(tw.score(ftest, test), alone.score(ftest, test))
    six = make("ensemble", members=("twfr_gmm:decay=0.9", "gaussian"), weights=(6.0, 1.0)).fit(ftrain, train)
    np.testing.assert_allclose(ens.score(ftest, test), six.score(ftest, test))  # 6, as for "twfr_gmm"
    ens.save(tmp_path / "model")
    np.testing.assert_allclose(Detector.load(tmp_path / "model").score(ftest, test), ens.score(ftest, test))


def test_set_members_takes_a_comma_separated_list_as_the_members_option_does():
    ens = make("ensemble", members="twfr_gmm:decay=0.9, gaussian")  # `--set members=twfr_gmm:decay=0.9,gaussian`
    assert ens.config.members == ("twfr_gmm:decay=0.9", "gaussian")


def test_ensemble_combines_its_members_domain_by_domain(easy):
    """A clip is normal if the members agree on a domain it fits: one member placing it in the
    source domain and the other in the target domain (each alone would call it normal) makes it
    anomalous, as a member's domain it cannot judge (``inf``) takes that member's score."""
    ftrain, train, ftest, test = easy
    ens = make("ensemble", members=("twfr_gmm", "gaussian"), weights=(1.0, 1.0)).fit(ftrain, train)
    rows = test.iloc[:3].reset_index(drop=True)
    med = [np.array([n[int(s)][0] for s in rows.section]) for n in ens.norms_]
    dev = [np.array([n[int(s)][1] for s in rows.section]) for n in ens.norms_]
    fits = [[-2.0, 5.0], [-2.0, 5.0], [5.0, np.inf]]  # member 0: fits the source domain (standardised)
    other = [[-2.0, 5.0], [5.0, -2.0], [-2.0, 3.0]]  # member 1: agrees, disagrees, ...
    parts = [np.array(p) * d[:, None] + m[:, None] for p, m, d in ((fits, med[0], dev[0]), (other, med[1], dev[1]))]
    np.testing.assert_allclose(ens._combine(parts, rows), [-2.0, 1.5, 1.5])


def test_ensemble_leaves_out_networks_where_a_section_has_few_clips(easy):
    ftrain, train, ftest, test = easy
    assert train.section.value_counts().max() < 100  # every section below the default min_clips
    members = ("twfr_gmm", "embedding")
    few = make("ensemble", members=members).fit(ftrain, train)
    (tw,) = few.members_  # the network, left out in every section, is not even trained
    assert few.used_ == [0]
    med = np.array([few.norms_[0][int(s)][0] for s in test.section])
    dev = np.array([few.norms_[0][int(s)][1] for s in test.section])
    alone = (tw.domain_scores(ftest, test).min(axis=1) - med) / dev  # TWFR-GMM alone
    np.testing.assert_allclose(few.score(ftest, test), alone)
    both = make("ensemble", members=members, min_clips=0).fit(ftrain, train)
    assert not np.allclose(both.score(ftest, test), few.score(ftest, test))
    # calibrated on the clips every member that counts held out: all where the network is left out
    assert few.held_out_.all() and not both.members_[1].held_out_.all()
    np.testing.assert_array_equal(both.held_out_, both.members_[1].held_out_)
    only_network = make("ensemble", members=("embedding",)).fit(ftrain, train)
    assert only_network.score(ftest, test).std() > 0  # not left out: someone must score


def test_ensemble_leaves_out_an_embedding_that_saw_a_single_class(easy, caplog, tmp_path):
    """One section without attributes and no other machine types: the embedding has one class,
    so only the feature exchange (at chance there) is left to learn; the ensemble is then its
    other members. Given another machine type's clips it has classes again and counts."""
    ftrain, train, ftest, test = easy
    keep = np.flatnonzero((train.section == 0).to_numpy())
    ftrain, train = _subset(ftrain, keep), train.iloc[keep].assign(attributes="").reset_index(drop=True)
    keep = np.flatnonzero((test.section == 0).to_numpy())
    ftest, test = _subset(ftest, keep), test.iloc[keep].assign(attributes="").reset_index(drop=True)
    members = ("twfr_gmm", "embedding")
    with caplog.at_level("WARNING"):
        one = make("ensemble", members=members, min_clips=0, weights=(1.0, 1.0)).fit(ftrain, train)
    assert "leaves out embedding: a single class" in caplog.text
    assert one.used_ == [0] and len(one.members_) == 1  # known before training: not trained at all
    twfr_only = make("ensemble", members=("twfr_gmm",)).fit(ftrain, train)
    np.testing.assert_allclose(one.score(ftest, test), twfr_only.score(ftest, test))
    assert one.threshold_ == pytest.approx(twfr_only.threshold_)
    one.save(tmp_path / "model")  # the saved ensemble scores as it was fitted
    np.testing.assert_allclose(Detector.load(tmp_path / "model").score(ftest, test), one.score(ftest, test))
    assert torch.load(tmp_path / "model" / "state.pt", weights_only=True)["used"] == [0]
    # a model saved by the versions that trained such a member and left it out by ``taught``
    old = make("ensemble", members=members, min_clips=0, weights=(1.0, 1.0))
    old._worth_training = lambda made, clips, outliers: [0, 1]
    old.fit(ftrain, train)
    assert old.members_[1].classes_ == ["00|"] and not old.members_[1].taught and old.members_[0].taught
    np.testing.assert_allclose(old.score(ftest, test), twfr_only.score(ftest, test))
    old.save(tmp_path / "old")
    state = torch.load(tmp_path / "old" / "state.pt", weights_only=True)
    assert state["taught"] == [True, False]
    del state["taught"], state["used"]  # as saved before either rule: every member trained and counted
    torch.save(state, tmp_path / "old" / "state.pt")
    loaded = Detector.load(tmp_path / "old")
    assert loaded.used_ == [0, 1] and not np.allclose(loaded.score(ftest, test), one.score(ftest, test))
    other = (ftrain, _as_other_machine(train))  # another machine type beside it: classes to tell apart
    exposed = make("ensemble", members=members, min_clips=0, weights=(1.0, 1.0)).fit(ftrain, train, outliers=other)
    assert exposed.members_[1].taught and not np.allclose(exposed.score(ftest, test), twfr_only.score(ftest, test))
    alone = make("ensemble", members=("embedding",), min_clips=0).fit(ftrain, train)
    assert alone.score(ftest, test).std() > 0  # the only member is never left out


def test_calibration_uses_held_out_training_scores_where_a_section_has_enough():
    import pandas as pd

    from mimii_due.detectors.base import MIN_HELD_OUT, calibration_rows
    from mimii_due.detectors.ensemble import EnsembleDetector

    sections = np.repeat([0, 1], 40)
    held = np.zeros(80, bool)
    held[:MIN_HELD_OUT] = True  # section 0: enough held-out clips
    held[40 : 40 + MIN_HELD_OUT - 1] = True  # section 1: one too few
    rows = calibration_rows(held, sections)
    np.testing.assert_array_equal(rows[:40], held[:40])
    assert rows[40:].all()
    scores = np.r_[np.full(MIN_HELD_OUT, 5.0), np.zeros(30), np.arange(40.0)]  # held-out clips score higher
    norms = EnsembleDetector._norms(scores, held, pd.DataFrame({"section": sections}))
    assert norms[0][0] == 5.0 and norms[1][0] == np.median(np.arange(40.0))


def test_the_embedding_calibrates_with_the_clips_it_did_not_train_on(easy):
    """The network learns its training clips (their distances are smaller than a new normal
    clip's: measured in ``detectors/ensemble.py``), so the threshold comes from the validation
    clips it never trained on, where there are enough of them."""
    from mimii_due.detectors.training import split_items
    from mimii_due.evaluation.threshold import gamma_threshold

    ftrain, train, ftest, test = easy
    det = make("embedding", epochs=8, validation_split=0.5).fit(ftrain, train)
    validation = split_items(len(train), fraction=0.5, seed=0)[1]
    np.testing.assert_array_equal(np.flatnonzero(det.held_out_), validation)
    assert det.threshold_ == gamma_threshold(det.train_scores_[det.held_out_])
    assert det.threshold_ != gamma_threshold(det.train_scores_)
    few = make("embedding", epochs=1, validation_split=0.05).fit(ftrain, train)  # too few held out: all
    assert 0 < few.held_out_.sum() < 10 and few.threshold_ == gamma_threshold(few.train_scores_)


def test_the_embedding_repeats_the_few_target_clips_up_to_target_repeat(easy, monkeypatch):
    """Balanced sampling: each target clip is seen up to ``target_repeat`` times an epoch, so that
    the target domain is about a fifth of what the network sees; the source clips once."""
    from mimii_due.detectors import embedding

    ftrain, train, _, _ = easy
    seen = []
    real = embedding.fit_with_config
    monkeypatch.setattr(embedding, "fit_with_config", lambda *a, **k: seen.append(k["repeat"]) or real(*a, **k))
    target = (train.domain == "target").to_numpy()
    share = (~target).sum() // (4 * target.sum())
    assert target.any() and share >= 2  # the easy data has few target clips
    for cap in (1, 20):  # the cap, then the share
        make("embedding", epochs=1, target_repeat=cap).fit(ftrain, train)
        np.testing.assert_array_equal(seen[-1], np.where(target, min(cap, share), 1))
    with pytest.raises(ConfigError, match="target_repeat"):
        EmbeddingConfig(target_repeat=0)


@pytest.mark.parametrize("spectrum", ["linear", "log"])
def test_the_embedding_scales_its_inputs_block_by_block_as_on_whole_arrays(easy, monkeypatch, spectrum):
    """The network's inputs (the own clips' and the other machine types' one after the other) are
    written block by block, not made from whole-array float64 temporaries (a DCASE 2021-sized machine
    type with outlier exposure peaked at 6.6 GB that way): every value as the whole-array
    arithmetic gives it, across block boundaries and parts, and the same network trained."""
    from mimii_due.detectors import embedding

    ftrain, train, ftest, _ = easy
    det = make("embedding", epochs=1, spectrum=spectrum).fit(ftrain, train)
    whole = ftrain.spectra.astype(np.float64)
    whole = np.log(whole + 1e-6) if spectrum == "log" else whole
    concat = Features.concat([ftrain, ftest])
    spec_whole = np.r_[whole, np.log(ftest.spectra.astype(np.float64) + 1e-6) if spectrum == "log"
                       else ftest.spectra.astype(np.float64)]  # fmt: skip
    expected_spec = ((spec_whole - det.spec_norm_[0]) / det.spec_norm_[1]).astype(np.float32)
    expected_mel = ((concat.data - det.mel_norm_[0]) / det.mel_norm_[1]).astype(np.float32)
    monkeypatch.setattr(embedding, "_BLOCK", 3)  # blocks that split both parts unevenly
    spec, mel = det._inputs(ftrain, ftest)
    assert spec.dtype == mel.dtype == torch.float32
    np.testing.assert_array_equal(spec.numpy(), expected_spec)
    np.testing.assert_array_equal(mel.numpy(), expected_mel)
    small = make("embedding", epochs=1, spectrum=spectrum).fit(ftrain, train)  # trained with blocks of 3
    np.testing.assert_array_equal(small.train_scores_, det.train_scores_)


def test_a_gpu_that_is_not_there_is_a_clear_error_and_auto_falls_back_to_the_cpu(easy):
    import torch

    from mimii_due.detectors.training import torch_device

    n = torch.cuda.device_count()
    assert torch_device("cpu").type == "cpu"
    assert torch_device("auto").type == ("cuda" if n else "cpu")
    with pytest.raises(ConfigError, match=f"device 'cuda:{n}' was asked for, but torch sees {n} CUDA GPU"):
        torch_device(f"cuda:{n}")
    ftrain, train, _, _ = easy
    with pytest.raises(ConfigError, match="was asked for"):  # before any training
        make("ae", epochs=1, device=f"cuda:{n}").fit(ftrain, train)


def test_training_on_a_gpu_holds_cudnn_to_deterministic_kernels_and_restores_the_settings():
    """cuDNN's fastest convolution kernels add in a varying order: two seeded runs of the embedding
    on an H100 differed after one epoch. While a network trains on a CUDA device only the
    deterministic ones are used; the user's settings come back afterwards, also after an error;
    on the CPU nothing changes (only the flags are touched here: no GPU is needed)."""
    from mimii_due.detectors.training import repeatable

    cudnn = torch.backends.cudnn
    before = cudnn.deterministic, cudnn.benchmark
    try:
        cudnn.deterministic, cudnn.benchmark = False, True  # a user's fast settings
        with repeatable(torch.device("cpu")):
            assert (cudnn.deterministic, cudnn.benchmark) == (False, True)
        with pytest.raises(RuntimeError, match="inside"):
            with repeatable(torch.device("cuda")):
                assert (cudnn.deterministic, cudnn.benchmark) == (True, False)
                raise RuntimeError("inside")
        assert (cudnn.deterministic, cudnn.benchmark) == (False, True)
    finally:
        cudnn.deterministic, cudnn.benchmark = before


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA GPU on this machine")
@pytest.mark.parametrize("name", ["ae", "embedding", "mobilenetv2"])
def test_networks_train_on_a_gpu_and_come_back_to_the_cpu(name, easy, tmp_path):
    """A GPU-trained model draws the same batches (indices and random draws stay on the CPU) but
    its float arithmetic differs, so it is not the CPU model (measured on an H200: MobileNetV2
    after two epochs ranks the test clips with a Spearman correlation of 0.27 to the CPU model's,
    its source AUC 0.69 here); it must learn and score, save and load on the CPU."""
    ftrain, train, ftest, test = easy
    det = make(name, **FAST[name], device="cuda").fit(ftrain, train)
    net = det.nets_[0] if name == "embedding" else det.model_
    assert all(p.device.type == "cpu" for p in net.parameters())
    scores = det.score(ftest, test)
    src = (test.domain == "source").to_numpy()
    assert np.isfinite(scores).all() and auc((test.label[src] == "anomaly").to_numpy(), scores[src]) > 0.6
    det.save(tmp_path / "model")
    np.testing.assert_allclose(Detector.load(tmp_path / "model").score(ftest, test), scores, rtol=1e-6, atol=1e-9)


def test_the_gaussian_threshold_is_set_by_clips_it_was_not_fitted_to():
    """60 clips against 128 bands: in-sample Mahalanobis distances are smaller than a new clip's,
    most in the tail that sets the threshold (on real DCASE 2020 clips, an in-sample threshold
    alarmed on 41 of 75 new normal clips at a nominal 0.10). Cross-fitted training scores bring the
    false-alarm rate near the nominal (here 0.09 against 0.47 in-sample)."""
    import pandas as pd

    from mimii_due.evaluation.threshold import gamma_threshold

    rng = np.random.default_rng(1)

    clips = pd.DataFrame({"section": 0, "domain": "source", "filename": [f"{i}.wav" for i in range(60)]})
    ftrain, fnew = _features(_clips(rng, 60, 0.0)), _features(_clips(rng, 400, 0.0))
    new = pd.DataFrame({"section": 0, "domain": "source", "filename": [f"n{i}.wav" for i in range(400)]})
    det = make("gaussian").fit(ftrain, clips)
    scores = det.score(fnew, new)
    in_sample = gamma_threshold(det.score(ftrain, clips))  # what the threshold was before
    assert 0.03 < np.mean(scores > det.threshold_) < 0.2 and np.mean(scores > in_sample) > 0.3
    assert make("gaussian").fit(ftrain, clips).threshold_ == det.threshold_  # seeded folds
    few = make("gaussian").fit(_subset(ftrain, range(9)), clips.iloc[:9])  # under 2 x FOLDS clips: in-sample
    np.testing.assert_allclose(few.train_scores_, few.score(_subset(ftrain, range(9)), clips.iloc[:9]))


def test_twfr_gmm_threshold_holds_its_false_alarm_rate_on_new_real_recordings(real_data, tmp_path):
    """The default's training-free member on 75 real normal recordings of one DCASE 2020 machine:
    fitted on 60, its threshold (nominal false-alarm rate 0.10) alarms on few of the 15 it did not
    see, over 5 folds (``benchmarks/real_clips.py`` measured 6 of 75)."""
    t = index(real_data)
    normal = t[t.label == "normal"].reset_index(drop=True)
    feats, normal = extract(normal, cache=tmp_path)
    folds = np.random.default_rng(0).permutation(len(normal)) % 5
    alarms = 0
    for k in range(5):
        fit, new = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        det = make("twfr_gmm").fit(feats.select(fit), normal.iloc[fit].assign(split="train"))
        assert det.decays_ == (1.0,)  # 60 clips, 128 bands: the clip mean
        alarms += int((det.score(feats.select(new), normal.iloc[new]) > det.threshold_).sum())
    assert alarms <= 15, f"{alarms} of {len(normal)} new normal clips alarmed"  # nominal 7.5


def test_a_read_only_state_array_is_saved_from_a_copy():
    # a model trained on a cluster comes back through its object store with read-only arrays; torch
    # warned "The given NumPy array is not writable" when such a model was saved
    frozen = np.arange(6.0).reshape(2, 3)
    frozen.flags.writeable = False
    free = np.arange(6.0)
    packed = pack({"frozen": frozen, "free": free})
    assert torch.equal(packed["frozen"], torch.arange(6.0, dtype=torch.float64).reshape(2, 3))
    assert not np.shares_memory(packed["frozen"].numpy(), frozen)
    assert np.shares_memory(packed["free"].numpy(), free)  # a writable one is not copied

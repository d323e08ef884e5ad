import math

import numpy as np
import pytest
import torch

from mimii_due.data.index import index
from mimii_due.detectors import make
from mimii_due.detectors.mobilenetv2 import EPS, MobileNetV2, make_divisible, negative_logit
from mimii_due.errors import ModelError
from mimii_due.features.extract import extract


def test_architecture_width_half_as_keras():
    m = MobileNetV2(n_classes=3, width=0.5)
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    assert convs[0].out_channels == 16 and convs[0].stride == (2, 2)  # first block: 32 * 0.5
    assert convs[-1].out_channels == 1280  # last conv stays 1280 for width <= 1
    assert [make_divisible(c * 0.5) for c in (16, 24, 32, 64, 96, 160, 320)] == [8, 16, 16, 32, 48, 80, 160]
    out = m(torch.zeros(2, 1, 64, 128))
    assert out.shape == (2, 3)
    n_params = sum(p.numel() for p in m.parameters())
    assert 600_000 < n_params < 800_000  # keras MobileNetV2(alpha=0.5) without its 1000-class top: ~0.7 M


def test_one_channel_equals_the_official_three_repeated_channels():
    torch.manual_seed(0)
    three = MobileNetV2(n_classes=3, in_channels=3).eval()
    one = MobileNetV2(n_classes=3, in_channels=1).eval()
    state = three.state_dict()
    first = "features.0.0.weight"
    state[first] = state[first].sum(dim=1, keepdim=True)
    one.load_state_dict(state)
    x = torch.randn(4, 1, 64, 128)
    torch.testing.assert_close(one(x), three(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4)


def test_score_formulas_on_hand_made_probabilities():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5], [1.0, 0.0, 0.0]], dtype=torch.float64)
    logits = torch.log(p.clamp_min(1e-300))
    target = torch.tensor([0, 2, 0])
    paper = negative_logit(logits, target, "paper").numpy()
    np.testing.assert_allclose(paper[:2], [math.log(0.3 / 0.7), math.log(0.5 / 0.5)], atol=1e-12)
    assert paper[2] == pytest.approx(math.log(EPS))  # 1 - p clipped at eps, as the official code
    official = negative_logit(logits, target, "official").numpy()
    np.testing.assert_allclose(official[:2], [math.log(0.3 - math.log(0.7)), math.log(0.5 - math.log(0.5))], atol=1e-12)


def test_patches_every_8_frames():
    feats, _ = extract_stub()
    starts, owner = feats.windows(64, 8)
    assert len(starts) == 2 * 32 and starts[1] - starts[0] == 8 and owner[-1] == 1


def extract_stub():
    from mimii_due.features.extract import Features

    data = np.zeros((2 * 313, 128), np.float32)
    return Features(data, np.array([0, 313, 626])), None


def test_tells_sections_apart_and_refuses_unseen_sections(tiny_dataset, easy_dataset, tmp_path):
    t = index(easy_dataset)
    (ftrain, train), (feats, test) = extract(t[t.split == "train"]), extract(t[t.split == "test"])
    det = make("mobilenetv2", epochs=2, lr=1e-3).fit(ftrain, train)
    logits, owner = det.logits(feats)
    clip_pred = np.array([logits[owner == i].mean(0).argmax().item() for i in range(len(test))])
    accuracy = np.mean(np.array(det.classes_)[clip_pred] == test.section.to_numpy())
    assert accuracy > 0.6  # chance is 1/3
    other = index(tiny_dataset)
    with pytest.raises(ModelError, match="section"):
        det.score(*extract(other[(other.section == 3) & (other.machine == "fan")]))


def test_one_section_classifies_attributes_and_one_class_is_a_clear_error(easy_dataset, tmp_path):
    t = index(easy_dataset)
    one = t[(t.split == "train") & (t.section == 0)]
    assert one.attributes.nunique() >= 2
    det = make("mobilenetv2", epochs=1, lr=1e-3).fit(*extract(one))
    assert all("|" in k for k in det.classes_) and len(det.classes_) == one.attributes.nunique()
    test = t[(t.split == "test") & (t.section == 0)]
    assert np.isfinite(det.score(*extract(test))).all()
    single = one[one.attributes == one.attributes.iloc[0]]
    with pytest.raises(ModelError, match="nothing to classify"):
        make("mobilenetv2", epochs=1).fit(*extract(single))
    assert make("mobilenetv2").would_learn(one) and not make("mobilenetv2").would_learn(single)
    # as an ensemble member it is left out, untrained, instead of stopping the ensemble
    ens = make("ensemble", members=("twfr_gmm", "mobilenetv2"), min_clips=0).fit(*extract(single))
    assert ens.used_ == [0] and np.isfinite(ens.score(*extract(test))).all()

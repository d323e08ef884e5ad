import pytest
from hypothesis import given
from hypothesis import strategies as st

from mimii_due.data.naming import ClipName, format_name, parse_name
from mimii_due.errors import FileNameError

EXAMPLES = [
    "section_00_source_train_normal_0000_strength_1_ambient.wav",
    "section_01_target_test_anomaly_0042.wav",
    "section_03_source_test_0123.wav",
    "normal_id_00_00000000.wav",
    "anomaly_id_02_00000012.wav",
    "section_02_target_train_normal_0002_volt_1.3_wt_30.wav",
]


@pytest.mark.parametrize("name", EXAMPLES)
def test_round_trip_examples(name):
    assert format_name(parse_name(name)) == name


def test_training_name_attributes_are_ordered_pairs_and_lone_tokens():
    c = parse_name("section_00_source_train_normal_0000_strength_1_ambient.wav")
    assert (c.section, c.domain, c.split, c.label, c.index) == (0, "source", "train", "normal", 0)
    assert c.attributes == (("strength", "1"), ("ambient", None))


def test_eval_name_has_no_label_and_dcase2020_has_no_domain_shift():
    c = parse_name("section_03_source_test_0123.wav")
    assert c.label is None and c.split == "test" and c.index == 123
    d = parse_name("anomaly_id_02_00000012.wav")
    assert (d.scheme, d.label, d.section, d.index, d.domain) == ("dcase2020", "anomaly", 2, 12, "source")


@pytest.mark.parametrize("name", [*EXAMPLES, "section_00_0001.wav"])
def test_an_upper_case_extension_is_a_wav_file_too(name):
    """Recorders on Windows write ``.WAV``; the folder walk takes them, so the names must parse."""
    upper = name.removesuffix(".wav") + ".WAV"
    assert parse_name(upper) == parse_name(name)
    assert format_name(parse_name(upper)) == name


@pytest.mark.parametrize(
    "bad",
    [
        "fan_0001.wav",
        "section_0_source_train_normal_0000.wav",
        "section_00_source_train_0000.wav",
        "section_00_source_test_normal_0000.flac",
    ],
)
def test_bad_names_are_reported_with_the_path(bad):
    with pytest.raises(FileNameError, match=bad.replace(".", r"\.")):
        parse_name(f"/data/fan/train/{bad}")


token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=6)


@given(
    section=st.integers(0, 99),
    domain=st.sampled_from(["source", "target"]),
    split=st.sampled_from(["train", "test"]),
    label=st.sampled_from(["normal", "anomaly", None]),
    index=st.integers(0, 99999),
    digits=st.integers(1, 8),
    tokens=st.lists(token, max_size=5),
)
def test_round_trip_property(section, domain, split, label, index, digits, tokens):
    if split == "train" and label is None:
        label = "normal"
    digits = max(digits, len(str(index)))
    name = (
        "_".join(
            [f"section_{section:02d}", domain, split] + ([label] if label else []) + [f"{index:0{digits}d}"] + tokens
        )
        + ".wav"
    )
    parsed = parse_name(name)
    assert format_name(parsed) == name
    assert parse_name(format_name(parsed)) == parsed


@given(label=st.sampled_from(["normal", "anomaly"]), section=st.integers(0, 99), index=st.integers(0, 10**8 - 1))
def test_round_trip_property_dcase2020(label, section, index):
    c = ClipName(
        section=section, domain="source", split="", label=label, index=index, index_digits=8, scheme="dcase2020"
    )
    assert parse_name(format_name(c)) == c

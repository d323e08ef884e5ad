import sys

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mimii_due.config import FeatureConfig
from mimii_due.data import audio
from mimii_due.data.index import index
from mimii_due.features import extract as extract_mod
from mimii_due.features.extract import extract
from mimii_due.features.logmel import LogMel, logmel, n_frames, stack_frames


def official(y):
    """The official baseline's per-file features (librosa.melspectrogram + 10 log10)."""
    mel = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=1024, hop_length=512, n_mels=128, power=2.0)
    return (10.0 * np.log10(np.maximum(mel, sys.float_info.epsilon))).T


def test_parity_with_librosa_on_generated_clips(tiny_dataset):
    t = index(tiny_dataset)
    for p in t.path[::25]:
        y = audio.load(p)
        assert np.abs(logmel(y) - official(y)).max() < 1e-3


def test_parity_with_librosa_on_real_recordings(real_data):
    for p in sorted((real_data / "train").glob("*.wav"))[:3]:
        y = audio.load(p)
        assert np.abs(logmel(y) - official(y)).max() < 1e-3


@pytest.mark.parametrize(("n_fft", "hop", "n_mels", "power"), [(512, 256, 64, 2.0), (1024, 512, 128, 1.0)])
def test_parity_with_librosa_for_other_settings(n_fft, hop, n_mels, power):
    cfg = FeatureConfig(n_fft=n_fft, hop_length=hop, n_mels=n_mels, power=power)
    y = np.random.default_rng(2).normal(0, 0.1, 20000).astype(np.float32)
    mel = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=n_fft, hop_length=hop, n_mels=n_mels, power=power)
    expected = (10.0 * np.log10(np.maximum(mel, sys.float_info.epsilon))).T
    assert np.abs(logmel(y, cfg=cfg) - expected).max() < 1e-3


def test_reused_workspace_gives_the_same_features():
    module = LogMel()
    rng = np.random.default_rng(3)
    work = {}
    for _ in range(2):  # the second call reuses the first call's buffers
        batch = torch.from_numpy(rng.normal(0, 0.1, (2, 16000)).astype(np.float32))
        got = module.padded(torch.nn.functional.pad(batch, (512, 512)), work).clone()
        torch.testing.assert_close(got, module(batch))
    assert work["shape"] == (2, n_frames(16000, hop_length=512))


def test_batched_equals_per_clip():
    rng = np.random.default_rng(0)
    batch = rng.normal(0, 0.1, (4, 16000)).astype(np.float32)
    together = logmel(batch)
    for i in range(4):
        np.testing.assert_allclose(together[i], logmel(batch[i]), atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1024, 20000))
def test_frame_count_for_any_length(n):
    y = np.zeros(n, np.float32) + 0.01
    assert logmel(y).shape == (n_frames(n, hop_length=512), 128)


def test_stack_frames_matches_the_official_vector_layout():
    spec = np.random.default_rng(1).normal(size=(20, 128)).astype(np.float32)
    n_vec = 20 - 5 + 1
    vectors = np.zeros((n_vec, 640), np.float32)
    for t in range(5):  # official: vectors[:, n_mels*t : n_mels*(t+1)] = log_mel[:, t : t + n_vectors].T
        vectors[:, 128 * t : 128 * (t + 1)] = spec[t : t + n_vec]
    np.testing.assert_array_equal(stack_frames(spec, frames=5), vectors)
    np.testing.assert_array_equal(stack_frames(torch.from_numpy(spec), frames=5).numpy(), vectors)


def test_cache_second_run_reads_features_without_decoding(tiny_dataset, tmp_path, monkeypatch):
    t = index(tiny_dataset)[:12]
    first, _ = extract(t, cache=tmp_path / "cache")
    monkeypatch.setattr(extract_mod.audio, "load", lambda *a, **k: pytest.fail("decoded audio despite the cache"))
    second, _ = extract(t, cache=tmp_path / "cache")
    np.testing.assert_array_equal(first.data, second.data)
    # another feature setting is another cache entry
    monkeypatch.undo()
    other, _ = extract(t, cache=tmp_path / "cache", cfg=FeatureConfig(n_mels=64))
    assert other.data.shape[1] == 64


def test_corrupt_clip_is_named_or_skipped(tiny_dataset, tmp_path):
    t = index(tiny_dataset)[:5].copy()
    bad = tmp_path / "section_00_source_train_normal_0099.wav"
    bad.write_bytes(open(t.path[0], "rb").read()[:3000])
    t.loc[2, "path"] = str(bad)
    with pytest.raises(audio.AudioError, match="section_00_source_train_normal_0099.wav"):
        extract(t)
    feats, kept = extract(t, on_error="skip")
    assert len(kept) == 4 and len(feats) == 4 and kept.attrs["skipped"][0][0] == str(bad)
    np.testing.assert_allclose(feats.means()[0], feats.clip(0).mean(axis=0), rtol=1e-5)


@pytest.mark.parametrize("subtype", ["IMA_ADPCM", "MS_ADPCM", "GSM610", "ULAW"])
def test_compressed_wavs_are_featurised_at_their_decoded_length(tiny_dataset, tmp_path, subtype):
    """ADPCM and GSM WAVs (some field recorders write them) pack many samples per block: the header's
    block count is not the clip's length, which broke the batch buffer (a ValueError traceback)."""
    t = index(tiny_dataset)[:3].copy()
    y = audio.load(t.path[1])
    p = tmp_path / "section_00_source_train_normal_0098.wav"
    sf.write(p, y, 16000, subtype=subtype)
    t.loc[1, "path"] = str(p)
    decoded = sf.read(p, dtype="float32")[0]
    assert audio.read_header(p).frames == len(decoded)
    feats, kept = extract(t)
    assert len(kept) == 3 and feats.lengths[1] == n_frames(len(decoded), hop_length=512)
    np.testing.assert_allclose(feats.clip(1), logmel(decoded), atol=1e-3)


@pytest.mark.parametrize("rate", [48000, 44100])
def test_clips_recorded_at_a_higher_rate_are_resampled_and_featurised_as_their_16_khz_twin(tiny_dataset, tmp_path,
                                                                                         rate, caplog):  # fmt: skip
    """A recorder's 44.1 or 48 kHz clips among 16 kHz ones: each is resampled to 16 kHz (it was refused:
    "resample the file first"), featurised at its resampled length, and said once."""
    t = index(tiny_dataset)[:3].copy()
    y = audio.load(t.path[1])
    p = tmp_path / "recorder.wav"
    sf.write(p, librosa.resample(y, orig_sr=16000, target_sr=rate), rate, subtype="PCM_24")
    t.loc[1, "path"] = str(p)
    with caplog.at_level("WARNING"):
        feats, kept = extract(t)
    assert len(kept) == 3 and f"1 of 3 clips were recorded at a higher sample rate ({p}: {rate} Hz)" in caplog.text
    assert feats.lengths[1] == n_frames(audio.length_at(audio.read_header(p)), hop_length=512) == feats.lengths[0]
    twin = logmel(y)  # the 16 kHz original: the same sound in every band up to the top mel bands' edge
    assert np.median(np.abs(feats.clip(1)[:, :120] - twin[:, :120])) < 0.01
    assert np.abs(feats.clip(1) - feats.clip(0)).mean() > 10 * np.median(np.abs(feats.clip(1)[:, :120] - twin[:, :120]))

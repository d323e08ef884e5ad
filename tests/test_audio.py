import struct

import numpy as np
import pytest
import soundfile as sf

from mimii_due.data.audio import MultichannelWarning, load, read_header, write
from mimii_due.errors import AudioError

SR = 16000


def tone(n=SR, f=440.0):
    return (0.5 * np.sin(2 * np.pi * f * np.arange(n) / SR)).astype(np.float32)


def test_pcm16_round_trip(tmp_path):
    p = tmp_path / "a.wav"
    write(p, tone())
    y = load(p)
    assert y.dtype == np.float32 and y.shape == (SR,)
    np.testing.assert_allclose(y, tone(), atol=1 / 32768)
    # our PCM decoder and libsndfile agree sample for sample
    np.testing.assert_array_equal(y, sf.read(p, dtype="float32")[0])


def test_eight_channel_extensible_gives_channel_zero_with_a_warning(tmp_path):
    p = tmp_path / "mimii8.wav"
    data = np.stack([tone(f=100.0 * (c + 1)) for c in range(8)], axis=1)
    sf.write(p, data, SR, subtype="PCM_16", format="WAVEX")
    raw = p.read_bytes()
    assert struct.unpack("<H", raw[20:22])[0] == 0xFFFE  # WAVE_FORMAT_EXTENSIBLE, as the MIMII clips
    assert read_header(p).channels == 8
    with pytest.warns(MultichannelWarning, match="channel 0"):
        y = load(p)
    np.testing.assert_allclose(y, data[:, 0], atol=1 / 32768)


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])  # our decoder, and soundfile's
def test_a_chosen_channel_is_read_and_one_the_file_lacks_is_named(tmp_path, subtype):
    p = tmp_path / "stereo3.wav"
    data = np.stack([tone(f=100.0 * (c + 1)) for c in range(3)], axis=1)
    sf.write(p, data, SR, subtype=subtype)
    for c in range(3):
        with pytest.warns(MultichannelWarning, match=f"keeping channel {c}"):
            np.testing.assert_allclose(load(p, channel=c), data[:, c], atol=1 / 32768)
    with pytest.raises(AudioError, match=r"stereo3\.wav: has 3 channels, so no channel 3 to read"):
        load(p, channel=3)
    write(tmp_path / "mono.wav", tone())
    with pytest.raises(AudioError, match=r"mono\.wav: has 1 channel, so no channel 1"):
        load(tmp_path / "mono.wav", channel=1)


def test_a_higher_sample_rate_is_resampled_and_a_lower_one_refused(tmp_path):
    p = tmp_path / "sr.wav"
    sf.write(p, 0.5 * np.sin(2 * np.pi * 440 * np.arange(32000) / 32000), 32000, subtype="PCM_16")  # 1 s, 440 Hz
    y = load(p)
    assert y.shape == (16000,) == (read_header(p).frames // 2,)
    assert np.argmax(np.abs(np.fft.rfft(y))) == 440  # 1 Hz bins: the tone is where it was
    sf.write(p, tone(8000), 8000, subtype="PCM_16")
    with pytest.raises(AudioError, match="sample rate is 8000 Hz, below the 16000 Hz .* above 4000 Hz was never"):
        load(p)


@pytest.mark.parametrize("declared", [0xFFFFFFFF, 0x7FFFFFFF, 0])
@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24"])
def test_a_streamed_wav_loads_whole_and_one_whose_header_was_never_finished_says_so(tmp_path, declared, subtype):
    """A writer to a pipe or stream (`ffmpeg ... pipe:`, `arecord | tee`) cannot know the length and
    declares 2 GiB or more: the data runs to the end of the file, as other readers take it (we refused
    it as truncated). A header left at 0 bytes with data after it (a recorder that stopped before
    closing the file) is named as such, not as a clip without samples."""
    p = tmp_path / "stream.wav"
    sf.write(p, tone(), SR, subtype=subtype)
    raw = bytearray(p.read_bytes())
    at = raw.find(b"data") + 4
    raw[4:8] = raw[at : at + 4] = struct.pack("<I", declared)
    p.write_bytes(bytes(raw))
    if declared == 0:
        with pytest.raises(AudioError, match=r"declares no data, yet \d+ bytes follow it: a recording whose header"):
            load(p)
        return
    assert read_header(p).frames == SR
    np.testing.assert_allclose(load(p), tone(), atol=1 / 32768)
    p.write_bytes(bytes(raw[: len(raw) - 101]))  # cut mid-sample: the whole samples before the cut
    assert read_header(p).frames == SR - 101 // (2 if subtype == "PCM_16" else 3) - 1


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24"])
def test_rf64_the_wav_of_recordings_past_4_gib_is_read_and_wave64_is_named(tmp_path, subtype):
    """A long multichannel recording (8 channels of 24 bits at 48 kHz pass 4 GiB in 62 minutes) is
    written as RF64, whose sizes are in a ds64 chunk: read as WAV (it was "not a WAV file"). Sony's
    Wave64 is named, with what to do."""
    p = tmp_path / "long.wav"
    sf.write(p, tone(3 * SR), SR, format="RF64", subtype=subtype)
    assert p.read_bytes()[:4] == b"RF64" and read_header(p).frames == 3 * SR
    np.testing.assert_allclose(load(p), tone(3 * SR), atol=1 / 32768)
    sf.write(tmp_path / "a.w64", tone(), SR, format="W64", subtype=subtype)
    with pytest.raises(AudioError, match=r"a Sony Wave64 \(W64\) file, not a WAV file: convert it"):
        load(tmp_path / "a.w64")


@pytest.mark.parametrize("fmt, name, ext", [("FLAC", "a FLAC", "flac"), ("AIFF", "an AIFF", "aiff"),
                                            ("OGG", r"an Ogg \(Vorbis or Opus, lossy\)", "ogg"),
                                            ("ID3", r"an MP3 \(lossy\)", "mp3"),
                                            ("M4A", r"an MP4/M4A \(AAC, lossy\)", "m4a")])  # fmt: skip
def test_a_recorders_flac_mp3_ogg_aiff_or_m4a_file_is_named_with_what_to_do(tmp_path, fmt, name, ext):
    p = tmp_path / "clip.wav"  # named .wav, as a misconfigured recorder or a renamed copy has it
    if fmt == "ID3":
        p.write_bytes(b"ID3\x03" + bytes(1000))
    elif fmt == "M4A":
        p.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(1000))
    else:
        sf.write(p, tone(), SR, format=fmt)
    split = "" if "lossy" in name else "; `mimii-due split` converts a folder of them, sample for sample"
    with pytest.raises(AudioError, match=rf"clip\.wav: {name} file, not a WAV file: convert it to WAV "
                                         rf"\(e\.g\. `ffmpeg -i in\.{ext} out\.wav`{split}\)"):  # fmt: skip
        load(p)


@pytest.mark.parametrize("case", ["empty", "truncated", "not_wav", "nan", "no_samples", "silence", "dc"])
def test_bad_files_raise_audio_error_naming_the_file(tmp_path, case):
    p = tmp_path / f"{case}.wav"
    if case == "empty":
        p.write_bytes(b"")
        msg = "empty"
    elif case == "truncated":
        write(p, tone())
        p.write_bytes(p.read_bytes()[:20000])
        msg = "truncated"
    elif case == "not_wav":
        p.write_bytes(b"hello, not a wav" + bytes(1000))
        msg = "not a WAV"
    elif case == "nan":
        y = tone()
        y[100] = np.nan
        sf.write(p, y, SR, subtype="FLOAT")
        msg = "NaN"
    elif case in ("silence", "dc"):  # a dead or muted microphone: one value throughout
        write(p, np.full(SR, 0.0 if case == "silence" else 0.25, np.float32))
        msg = f"digital silence: every sample is {0 if case == 'silence' else 0.25}"
    else:
        sf.write(p, np.zeros(0, np.float32), SR, subtype="PCM_16")
        msg = "no samples"
    with pytest.raises(AudioError, match=msg) as e:
        load(p)
    assert str(p) in str(e.value)


def test_real_recordings_load(real_data):
    files = sorted((real_data / "train").glob("*.wav"))
    assert len(files) >= 10
    y = load(files[0])
    assert y.dtype == np.float32 and y.shape == (160000,)
    assert 1e-4 < float(np.std(y)) < 0.5  # real machine sound, neither silent nor clipped


def test_info_audio_finds_clipping_level_jumps_dc_offset_and_silence(tiny_dataset, tmp_path):
    """`info --audio` decodes every clip: a clip recorded too hot (clipped), one with the gain 20 dB
    down, one with a DC offset, one of digital silence, a test clip cut to 3 s and one stored as GSM
    6.10 are named; a quieter anomaly is not a level problem, a 24-bit one no problem."""
    from typer.testing import CliRunner

    from mimii_due.cli import app

    runner = CliRunner()
    fan = sorted((tiny_dataset / "dev_data" / "fan" / "train").glob("*.wav"))
    root = tmp_path / "recordings" / "pump"
    (root / "train").mkdir(parents=True)
    (root / "test" / "anomaly").mkdir(parents=True)
    waves = {f"ok {i}.wav": load(f) for i, f in enumerate(fan[:8])}
    y = load(fan[8])
    waves |= {"hot.wav": np.clip(y / np.abs(y).max() * 3, -1, 1), "gain.wav": y * 0.1, "dc.wav": y + 0.05}
    for name, w in waves.items():
        write(root / "train" / name, w)
    write(root / "test" / "anomaly" / "quiet.wav", y * 0.1)
    write(root / "test" / "anomaly" / "cut.wav", y[: 3 * 16000])
    (root / "test" / "normal").mkdir()
    for subtype in ("GSM610", "PCM_24"):
        sf.write(root / "test" / "normal" / f"{subtype}.wav", y, 16000, subtype=subtype)
    damaged = root / "train" / "muted.wav"
    write(damaged, np.zeros_like(y))  # a disconnected microphone: a sound header, only decoding finds it
    r = runner.invoke(app, ["info", str(tmp_path / "recordings"), "--audio", "--strict"])
    text = " ".join(r.output.split())
    assert r.exit_code == 2, r.output
    assert "audio: 15 of 16 clips decoded" in text and "6 with a problem" in text
    assert f"clipped {root / 'train' / 'hot.wav'}:" in text
    assert f"level {root / 'train' / 'gain.wav'}:" in text
    assert "-20.0 dB from the median of pump section 00 source" in text
    assert f"DC offset {root / 'train' / 'dc.wav'}: mean +0.050" in text
    assert f"unreadable {damaged}: digital silence" in text
    assert f"cut short {root / 'test' / 'anomaly' / 'cut.wav'}: 3.00 s, under half the 10.00 s of pump" in text
    assert f"lossy codec {root / 'test' / 'normal' / 'GSM610.wav'}: encoded as GSM 6.10" in text
    assert "quiet.wav" not in text and "PCM_24" not in text


def test_info_audio_finds_no_recording_fault_in_real_recordings(real_data):
    from typer.testing import CliRunner

    from mimii_due.cli import app

    r = CliRunner().invoke(app, ["info", str(real_data), "--audio"])
    assert r.exit_code == 0 and "audio: 76 of 76 clips decoded" in r.output and "0 with a problem" in r.output, r.output

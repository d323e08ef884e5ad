"""What in a folder of recordings is not the machine (``mimii-due info --audio``).

Recordings go wrong in ways that raise alarms no machine fault explains, and that a model trained
on them learns as normal: a gain turned up until the converter clips, a gain changed or a
microphone moved between sessions (the level jumps), a faulty preamplifier (a DC offset). Each clip
is decoded at its own rate and measured:

- **clipped**: at least ``CLIPPED_SHARE`` (0.1 %) of its samples at full scale (``|y| >= 0.999``);
- **level**: its RMS level (dBFS, the DC offset removed) more than ``LEVEL_DB`` (15 dB) from the
  median of the training clips of its machine type, section and domain; clips meant to be normal
  only (an anomaly may well be louder);
- **DC offset**: a mean above ``DC_OFFSET`` (1 % of full scale);
- **cut short**: under half the median length of its machine type, section and domain's training
  clips (a recorder stopped early, a copy broken off): a trained model refuses to score such a
  clip (``Detector.scorable_frames``), and in the training clips it is a few frames' statistics
  learned as normal;
- **unreadable**: its data cannot be decoded (truncated, damaged), which an index of headers alone
  does not find;
- **lossy codec**: stored in a WAV with a block codec (ADPCM, GSM 6.10, MP3): its distortion is
  heard as the machine's sound (a normal generated valve test clip, 2023 layout, scale 0.05, seed
  12, scored by TWFR-GMM trained on the 16-bit PCM training clips: -0.05 as 24-bit PCM, 0.55 as
  IMA ADPCM, 47 as MS ADPCM, 68 as GSM 6.10, against a threshold of 6.9).

On the 193 real DCASE clips in ``../shared/real`` (2020 and 2023, eleven machine types, normal and
anomalous) none is clipped and the largest DC offset is 0.003 % of full scale; the levels of one
machine's normal clips spread by up to 5.0 dB within a DCASE 2020 machine ID (0.3 dB over the 75
clips of ID 00) and 8.8 dB within a DCASE 2023 machine type (bearing, across its operating
conditions), so the level limit leaves room for a machine's own variation and still names a gain
switched by 20 dB or a microphone moved to several times its distance.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mimii_due.data import audio
from mimii_due.data.audio import read_header
from mimii_due.errors import AudioError
from mimii_due.progress import Progress

CLIPPED_SHARE = 0.001
LEVEL_DB = 15.0
DC_OFFSET = 0.01
LOSSY = {0x0002: "MS ADPCM", 0x0011: "IMA ADPCM", 0x0031: "GSM 6.10", 0x0050: "MPEG", 0x0055: "MP3"}  # WAV format tags


def measure(table: pd.DataFrame, *, channel: int = 0, progress: Progress | None = None) -> pd.DataFrame:
    """Per clip of an indexed table (of a multichannel recording, its ``channel``): ``clipped`` (share
    of samples at full scale), ``level_db``, ``dc``, ``codec`` (a lossy one's name, else None),
    ``error`` (why it could not be read, else None)."""
    rows = []
    for i, r in enumerate(table.itertuples(index=False)):
        try:
            codec = LOSSY.get(read_header(r.path).format_tag)
            y = audio.load(r.path, sr=int(r.sample_rate), warn_channels=False, channel=channel).astype(np.float64)
            dc = float(y.mean())
            rms = float(np.sqrt(np.mean((y - dc) ** 2)))
            rows.append((float(np.mean(np.abs(y) >= 0.999)), 20 * np.log10(max(rms, 1e-10)), dc, codec, None))
        except AudioError as e:
            rows.append((np.nan, np.nan, np.nan, None, str(e).removeprefix(f"{r.path}: ")))
        if progress:
            progress(i + 1, len(table), "")
    names = ("clipped", "level_db", "dc", "codec", "error")
    return table.assign(**dict(zip(names, zip(*rows, strict=True), strict=True)))


def channel_levels(table: pd.DataFrame, *, clips: int = 20) -> tuple[dict[int, float], int]:
    """Of multichannel clips (up to ``clips`` of them, spread over the table), each channel's median
    RMS level in dBFS: which microphone hears the machine, and which hears little (``--channel``);
    and how many clips were measured."""
    import soundfile as sf

    several = table[table["channels"] > 1]
    rows = several.iloc[np.unique(np.linspace(0, len(several) - 1, min(clips, len(several))).astype(int))]
    levels: dict[int, list[float]] = {}
    measured = 0
    for path in rows["path"]:
        try:
            data = sf.read(str(path), dtype="float64", always_2d=True)[0]
        except Exception:  # soundfile's errors; `measure` names the clip
            continue
        measured += 1
        rms = np.sqrt(np.mean((data - data.mean(axis=0)) ** 2, axis=0))
        for c, r in enumerate(rms):
            levels.setdefault(c, []).append(20 * np.log10(max(r, 1e-10)))
    return {c: float(np.median(v)) for c, v in levels.items()}, measured


def problems(measured: pd.DataFrame) -> pd.DataFrame:
    """The clips worth a look, one row per clip and problem: ``path``, ``problem``, ``detail``."""
    out = [(r.path, "unreadable", r.error) for r in measured[measured["error"].notna()].itertuples()]
    for r in measured[measured["clipped"] >= CLIPPED_SHARE].itertuples():
        out.append((r.path, "clipped", f"{r.clipped:.2%} of its samples at full scale"))
    for r in measured[measured["dc"].abs() > DC_OFFSET].itertuples():
        out.append((r.path, "DC offset", f"mean {r.dc:+.3f} of full scale"))
    for r in measured[measured["codec"].notna()].itertuples():
        out.append((r.path, "lossy codec", f"encoded as {r.codec}: its distortion is heard as the machine's sound "
                    "(record as PCM WAV)"))  # fmt: skip
    keys = ["machine", "section", "domain"]
    reference = measured[measured["split"] == "train"].groupby(keys)["level_db"].median().rename("reference")
    normal = measured[measured["label"] != "anomaly"].join(reference, on=keys)
    for r in normal[(normal["level_db"] - normal["reference"]).abs() > LEVEL_DB].itertuples():
        out.append((r.path, "level", f"{r.level_db:.1f} dBFS, {r.level_db - r.reference:+.1f} dB from the median "
                    f"of {r.machine} section {int(r.section):02d} {r.domain}'s training clips"))  # fmt: skip
    timed = measured.assign(seconds=measured["frames"] / measured["sample_rate"])
    typical = timed[timed["split"] == "train"].groupby(keys)["seconds"].median().rename("typical")
    timed = timed.join(typical, on=keys)
    for r in timed[timed["seconds"] < timed["typical"] / 2].itertuples():
        out.append((r.path, "cut short", f"{r.seconds:.2f} s, under half the {r.typical:.2f} s of {r.machine} "
                    f"section {int(r.section):02d} {r.domain}'s training clips (median); a trained model refuses "
                    "to score a clip this short"))  # fmt: skip
    return pd.DataFrame(out, columns=["path", "problem", "detail"])

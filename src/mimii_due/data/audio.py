"""Read WAV files strictly: float32 mono at 16 kHz, or a clear error naming the file.

The header reader parses the RIFF chunks itself (no decoding), so indexing tens of thousands of
clips takes seconds and a truncated file is caught from its header alone. 16-bit PCM, the format
of every MIMII DUE clip, is decoded straight from the file; any other WAV format (float, 24-bit,
WAVE_FORMAT_EXTENSIBLE of the original 8-channel MIMII clips) goes through soundfile. RF64, the
WAV of recordings past 4 GiB (its sizes in a ``ds64`` chunk), is read as WAV.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mimii_due.config import SAMPLE_RATE
from mimii_due.errors import AudioError

_PCM = 1
_FLOAT = 3
_EXTENSIBLE = 0xFFFE  # 65534: used by the original 8-channel MIMII clips
_UNCOMPRESSED = (_PCM, _FLOAT, 6, 7)  # and A-law, mu-law: one block per frame
# A data size of 2 GiB or more than the file holds: the placeholder that a writer to a pipe or stream
# leaves, not knowing the length (ffmpeg 0xFFFFFFFF, arecord about 0x7FFFFFFF); the data runs to the end.
_STREAMED = 0x7FFF0000


class MultichannelWarning(UserWarning):
    """A multichannel file was reduced to one of its channels."""


@dataclass(frozen=True)
class WavInfo:
    """What a WAV header says. ``frames`` counts the samples per channel actually on disk."""

    sample_rate: int
    channels: int
    frames: int
    bits: int
    format_tag: int
    data_offset: int


# Audio files that are not WAV, by their file names' endings (which the index says it left out) and by
# their first bytes (named, so that a recorder's FLAC or MP3 is not just "not a WAV file"). Lossy ones
# (MP3, Ogg, AAC) also change the sound a model hears as the machine's.
LOSSLESS = (".flac", ".aif", ".aiff", ".w64")  # formats `split` reads and writes as WAV clips, sample for sample
LOSSY = (".mp3", ".ogg", ".opus", ".m4a", ".aac")
OTHER_AUDIO = LOSSLESS + LOSSY
_OTHER_FORMATS = ((b"fLaC", "a FLAC", "flac"), (b"OggS", "an Ogg (Vorbis or Opus, lossy)", "ogg"),
                  (b"ID3", "an MP3 (lossy)", "mp3"), (b"\xff\xfb", "an MP3 (lossy)", "mp3"),
                  (b"\xff\xf3", "an MP3 (lossy)", "mp3"), (b"FORM", "an AIFF", "aiff"),
                  (b"riff\x2e\x91\xcf\x11", "a Sony Wave64 (W64)", "w64"))  # fmt: skip


def _other_format(head: bytes) -> tuple[str, str] | None:
    """The format (its name with an article, its usual file extension) of a file that starts with
    ``head`` (12 bytes), where it is a known one that is not WAV."""
    if head[4:8] == b"ftyp":  # an MP4 container: M4A, AAC
        return "an MP4/M4A (AAC, lossy)", "m4a"
    return next(((name, ext) for magic, name, ext in _OTHER_FORMATS if head.startswith(magic)), None)


def read_header(path: str | Path) -> WavInfo:
    """Parse the RIFF header of ``path`` without decoding audio.

    Raises
    ------
    AudioError
        If the file is empty, not RIFF/WAVE, has no ``fmt``/``data`` chunk, or is truncated
        (fewer data bytes on disk than the header declares, unless it declares the 2 GiB or more
        of a stream's writer, which could not know the length), or declares no data where some
        follows (a recording whose header was never finished).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(12)
            if size == 0:
                raise AudioError("file is empty (0 bytes)", path)
            other = _other_format(head)
            if other:
                split = ("; `mimii-due split` converts a folder of them, sample for sample"
                         if f".{other[1]}" in LOSSLESS else "")  # fmt: skip
                raise AudioError(f"{other[0]} file, not a WAV file: convert it to WAV (e.g. `ffmpeg -i in.{other[1]} "
                                 f"out.wav`{split})", path)  # fmt: skip
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
                raise AudioError("not a WAV file (no RIFF/WAVE header)", path)
            fmt = big = None  # big: the data size of an RF64 file (a WAV past 4 GiB), from its ds64 chunk
            pos = 12
            while True:
                f.seek(pos)
                chunk = f.read(8)
                if len(chunk) < 8:
                    raise AudioError("truncated WAV: no 'data' chunk found", path)
                cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"ds64" and head[:4] != b"RIFF":
                    body = f.read(16)
                    if len(body) < 16:
                        raise AudioError("truncated WAV: 'ds64' chunk is too short", path)
                    big = struct.unpack("<Q", body[8:16])[0]
                elif cid == b"fmt ":
                    body = f.read(min(csize, 40))
                    if len(body) < 16:
                        raise AudioError("truncated WAV: 'fmt ' chunk is too short", path)
                    tag, ch, sr, _, block, bits = struct.unpack("<HHIIHH", body[:16])
                    if tag == _EXTENSIBLE and len(body) >= 26:
                        tag = struct.unpack("<H", body[24:26])[0]  # sub-format GUID's first field
                    fmt = (tag, ch, sr, block, bits)
                elif cid == b"data":
                    if fmt is None:
                        raise AudioError("malformed WAV: 'data' chunk before 'fmt ' chunk", path)
                    tag, ch, sr, block, bits = fmt
                    if ch < 1 or sr < 1 or block < 1:
                        raise AudioError(f"malformed WAV header ({ch} channels, {sr} Hz)", path)
                    available = size - (pos + 8)
                    if csize == 0xFFFFFFFF and big is not None:
                        csize = big
                    if csize >= _STREAMED and available < csize:  # a writer that could not know the length
                        csize = available - available % block
                    if available < csize:
                        raise AudioError(
                            f"truncated WAV: header declares {csize} data bytes, file holds {available}",
                            path,
                        )
                    if csize == 0 and available >= block:
                        raise AudioError(f"the header declares no data, yet {available} bytes follow it: a "
                                         "recording whose header was never finished (its recorder stopped before "
                                         "closing the file?)", path)  # fmt: skip
                    frames = csize // block
                    if tag not in _UNCOMPRESSED:  # ADPCM, GSM: a block holds many frames; ask the decoder
                        frames = _decoded_frames(path)
                    return WavInfo(sr, ch, frames, bits, tag, pos + 8)
                pos += 8 + csize + (csize & 1)
    except OSError as e:
        raise AudioError(f"cannot read file: {e.strerror or e}", path) from e


def _decoded_frames(path: Path) -> int:
    import soundfile as sf

    try:
        return sf.info(str(path)).frames
    except (RuntimeError, OSError) as e:  # soundfile's LibsndfileError is a RuntimeError
        raise AudioError(f"unsupported or damaged compressed WAV ({e})", path) from e


def load(
    path: str | Path,
    *,
    sr: int = SAMPLE_RATE,
    info: WavInfo | None = None,
    out: np.ndarray | None = None,
    warn_channels: bool = True,
    channel: int = 0,
) -> np.ndarray:
    """Load a clip as float32 mono samples in [-1, 1] at ``sr`` Hz.

    Parameters
    ----------
    path : WAV file.
    sr : the sample rate wanted (16 kHz, the dataset's). A file recorded at a higher rate (a
        recorder's 44.1 or 48 kHz) is resampled to it (librosa, soxr); one at a lower rate is
        refused: the band it never recorded cannot be made up.
    info : the header, if already read (saves one read).
    out : a float32 array of the clip's length to write 16-bit samples into (saves allocating one;
        ignored when it does not fit).
    warn_channels : warn when a multichannel file is reduced to one channel (a caller that reads
        many clips says it once for all of them instead).
    channel : the channel read from a multichannel file, counted from 0 (``FeatureConfig.channel``).

    Returns
    -------
    np.ndarray, shape (n_samples,), float32.
        Multichannel files give ``channel`` (0: the first microphone, as the paper), with a warning.

    Raises
    ------
    AudioError
        Empty, truncated, non-WAV, unsupported or NaN/inf-holding files, digital silence (every
        sample the same value), a sample rate below ``sr``, or fewer channels than ``channel`` needs.
    """
    path = Path(path)
    info = info or read_header(path)
    if info.frames == 0:
        raise AudioError("WAV file holds no samples", path)
    if channel >= info.channels:
        raise AudioError(f"has {info.channels} channel{'s' if info.channels > 1 else ''}, so no channel {channel} "
                         "to read (channels count from 0)", path)  # fmt: skip
    if info.sample_rate < sr:
        raise AudioError(f"sample rate is {info.sample_rate} Hz, below the {sr} Hz the models use: the sound "
                         f"above {info.sample_rate // 2} Hz was never recorded (record at {sr} Hz or more)",
                         path)  # fmt: skip
    if info.format_tag == _PCM and info.bits == 16:
        n_bytes = 2 * info.frames * info.channels
        try:  # one read into bytes measured several times faster than np.fromfile
            with open(path, "rb") as f:
                f.seek(info.data_offset)
                buf = f.read(n_bytes)
        except OSError as e:
            raise AudioError(f"cannot read file: {e.strerror or e}", path) from e
        if len(buf) != n_bytes:
            raise AudioError(f"truncated: {len(buf)} of {n_bytes} data bytes on disk", path)
        raw = np.frombuffer(buf, dtype="<i2")
        if info.channels > 1:
            raw = raw.reshape(-1, info.channels)[:, channel]
        if out is not None and out.shape == raw.shape and info.sample_rate == sr:
            y = np.multiply(raw, np.float32(1 / 32768), out=out)
        else:
            y = np.multiply(raw, np.float32(1 / 32768), dtype=np.float32)
    else:
        import soundfile as sf

        try:
            data, _ = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as e:  # soundfile raises RuntimeError/LibsndfileError/TypeError
            raise AudioError(f"cannot decode WAV data: {e}", path) from e
        y = np.ascontiguousarray(data[:, channel])
    if info.channels > 1 and warn_channels:
        warnings.warn(
            f"{path}: {info.channels} channels, keeping channel {channel}"
            + (" (the first microphone, as the paper)" if channel == 0 else ""),
            MultichannelWarning,
            stacklevel=2,
        )
    if info.format_tag != _PCM and not np.isfinite(y).all():  # integer PCM is always finite
        raise AudioError("WAV holds NaN or infinite samples", path)
    if len(y) > 1 and not (y != y[0]).any():  # one value throughout: no machine sounds so
        raise AudioError(f"digital silence: every sample is {float(y[0]):g} (a disconnected or muted microphone?)",
                         path)  # fmt: skip
    if info.sample_rate != sr:
        import librosa

        y = librosa.resample(y, orig_sr=info.sample_rate, target_sr=sr).astype(np.float32)
    return y


LONG = 1.5  # a recording over this many clip lengths is cut into clips (scored window by window, `split`)


def cut(n_samples: int, size: int) -> list[tuple[int, int]]:
    """Where a recording of ``n_samples`` samples is cut into clips of ``size`` samples:
    ``[(0, n_samples)]`` up to ``LONG`` clip lengths; a longer one into clips evenly spaced from
    its first sample to its last (neighbours may overlap a little; every sample is in one)."""
    if size < 1 or n_samples <= LONG * size:
        return [(0, n_samples)]
    starts = np.linspace(0, n_samples - size, -(-n_samples // size)).round().astype(int)
    return [(int(a), int(a) + size) for a in starts]


def length_at(info: WavInfo, sr: int = SAMPLE_RATE) -> int:
    """How many samples :func:`load` returns for a file: its frames, or as many at ``sr`` where it
    was recorded at a higher rate (librosa's resampled length)."""
    return info.frames if info.sample_rate == sr else int(np.ceil(info.frames * sr / info.sample_rate))


def write(path: str | Path, y: np.ndarray, *, sr: int = SAMPLE_RATE) -> None:
    """Write mono float samples as 16-bit PCM WAV, atomically (temporary name, then rename)."""
    import soundfile as sf

    from mimii_due.atomic import atomic_path

    pcm = np.clip(np.round(np.asarray(y, dtype=np.float64) * 32768.0), -32768, 32767).astype("<i2")
    with atomic_path(path) as tmp:
        try:
            sf.write(str(tmp), pcm, sr, subtype="PCM_16", format="WAV")
        except sf.LibsndfileError as e:  # e.g. "System error" on a full disk
            raise OSError(str(e)) from e


def decode(data: bytes, *, name: str = "upload", sr: int = SAMPLE_RATE, channel: int = 0) -> np.ndarray:
    """:func:`load` for WAV bytes in memory (an upload), with the same checks; errors name ``name``.

    The bytes go to a private temporary file (our name, never the caller's) and are read from there.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mimii-due-") as d:
        p = Path(d) / "clip.wav"
        p.write_bytes(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MultichannelWarning)
                return load(p, sr=sr, channel=channel)
        except AudioError as e:
            raise AudioError(str(e).replace(f"{p}: ", ""), name) from None

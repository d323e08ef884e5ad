"""Long recordings cut into clips for training (``mimii-due split``).

The detectors learn a machine's normal sound from many clips of about the length they will score
(DCASE's and MIMII's are 10 s): each clip is pooled into one vector, so a recording of a whole shift
is one example of the machine's sound, and a model trained on such recordings refuses the clips of
a few seconds it is later sent (under half its training clips' length). :func:`split_folder` cuts
every WAV under a folder longer than 1.5 clip lengths into clips of ``seconds``, evenly spaced from
its start to its end (:func:`~mimii_due.data.audio.cut`, as a long recording is scored), keeping
its sample rate, channels and sample format, the folder layout and its name
(``day1.wav`` -> ``day1_0000.wav``, ``day1_0001.wav``, ...); shorter ones are copied as they are.
A recorder's FLAC, AIFF or Wave64 files, which the rest of the toolkit does not read, are cut or
converted the same way into WAV clips, sample for sample (``day1.flac`` -> ``day1_0000.wav``).
Each file is written atomically; ``split_meta.csv`` records each clip's source and where in it it
lies. The recordings themselves are never touched: the output folder may not be theirs, inside
theirs or above it, and may hold only an earlier split's output (it is then written again, its
clips that this split does not make removed).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from mimii_due import atomic
from mimii_due.data.audio import LOSSLESS, WavInfo, cut, read_header
from mimii_due.data.index import wav_files
from mimii_due.errors import AudioError, ConfigError, MimiiDueError
from mimii_due.progress import Progress

META = "split_meta.csv"
_WAV_SUBTYPES = ("PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")  # written as they were read
UNFINISHED = ".split_unfinished"  # while a split writes: the clips it will have made (a second run may replace them)


def _exact(subtype: str) -> str:
    """The sample type that reads and writes a format's samples unchanged."""
    return "int16" if subtype == "PCM_16" else "int32" if subtype in ("PCM_24", "PCM_32") else "float64"


def _header(p: Path) -> WavInfo:
    """A WAV's header (read strictly), or what soundfile says of a FLAC, AIFF or Wave64 file."""
    if p.suffix.lower() == ".wav":
        return read_header(p)
    import soundfile as sf

    try:
        i = sf.info(str(p))
    except Exception as e:  # soundfile raises RuntimeError/LibsndfileError/TypeError
        raise AudioError(f"cannot read it as {p.suffix[1:].upper()} ({e})", p) from e
    return WavInfo(i.samplerate, i.channels, i.frames, 0, 0, 0)


def _earlier(out: Path) -> set[Path]:
    """The clips an earlier split wrote into ``out`` (finished, or stopped while writing)."""
    try:
        return {Path(c) for c in pd.read_csv(out / META)["clip"]}
    except (OSError, ValueError, KeyError, pd.errors.EmptyDataError):
        pass
    try:
        return {Path(c) for c in json.loads((out / UNFINISHED).read_text())}
    except (OSError, ValueError, TypeError):
        return set()


def split_folder(src: str | Path, out: str | Path, *, seconds: float = 10.0,
                 progress: Progress | None = None) -> list[dict]:  # fmt: skip
    """Cut the WAV files under ``src`` into clips of ``seconds`` in ``out`` (module docstring).
    Returns one record per clip written: its path relative to ``out``, its source, start and end (s)."""
    import soundfile as sf

    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 1 <= seconds <= 600:
        raise ConfigError(f"the clip length must be from 1 to 600 seconds (DCASE's clips are 10), not {seconds!r}")
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise MimiiDueError("not a folder of recordings", src)
    here, there = src.resolve(), out.resolve()
    if there.is_relative_to(here) or here.is_relative_to(there):
        raise ConfigError("the output folder is the recordings' folder, inside it or above it: the clips would mix "
                          "with the recordings; choose another", out)  # fmt: skip
    if out.exists() and any(out.iterdir()) and not ((out / META).exists() or (out / UNFINISHED).exists()):
        raise ConfigError("the output folder holds files that no split wrote: choose a new or empty folder", out)
    files = wav_files(src, (".wav", *LOSSLESS))
    if not files:
        raise ConfigError("no WAV (or FLAC, AIFF, Wave64) files found", src)
    plan, names = [], {}
    for p in files:
        info = _header(p)  # a damaged recording is named before anything is written
        rel = p.relative_to(src)
        wav = p.suffix.lower() == ".wav"
        spans = cut(info.frames, round(seconds * info.sample_rate))
        for j, span in enumerate(spans):
            stem = rel.stem if len(spans) == 1 else f"{rel.stem}_{j:04d}"
            name = rel.with_name(stem + (rel.suffix if wav else ".wav"))  # a FLAC's clips are WAV files
            if name in names:
                raise ConfigError(f"{names[name]} and {p} would both give {name}: rename one", src)
            names[name] = p
            plan.append((p, name, span, info.sample_rate, len(spans) == 1 and wav))
    earlier = _earlier(out) - set(names)  # an earlier split's clips that this one does not make
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / UNFINISHED, json.dumps([n.as_posix() for n in names]))
    (out / META).unlink(missing_ok=True)
    for name in earlier:
        (out / name).unlink(missing_ok=True)
    records = []
    for k, (p, name, (a, b), sr, whole) in enumerate(plan):
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if whole:  # a WAV short enough to stay one clip: the file as it is
            atomic.write_with(target, lambda tmp, p=p: shutil.copyfile(p, tmp))
        else:
            with sf.SoundFile(p) as f:
                f.seek(a)
                data, subtype = f.read(b - a, dtype=_exact(f.subtype), always_2d=True), f.subtype
            subtype = subtype if subtype in _WAV_SUBTYPES else "PCM_16"  # 8-bit FLAC, exactly
            atomic.write_with(target, lambda tmp, d=data, r=sr, s=subtype: sf.write(tmp, d, r, subtype=s, format="WAV"))
        records.append({"clip": name.as_posix(), "source": str(p), "start_s": a / sr, "end_s": b / sr})
        if progress:
            progress(k + 1, len(plan), name.name)
    atomic.write_with(out / META, lambda tmp: pd.DataFrame(records).to_csv(tmp, index=False))
    (out / UNFINISHED).unlink()
    return records

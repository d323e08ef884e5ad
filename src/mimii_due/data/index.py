"""Folder -> clip table: one pandas row per clip, the index everything else passes around.

Layouts read (``root`` may be any of these folders or a parent of them):

- MIMII DUE / DCASE 2021 Task 2: ``dev_data/<machine>/{train,source_test,target_test}/*.wav`` and
  ``eval_data/<machine>/{train,source_test,target_test}/*.wav`` (evaluation test names carry no label)
- DCASE 2020 Task 2: ``<machine>/{train,test}/{normal,anomaly}_id_XX_XXXXXXXX.wav``
- DCASE 2022-2026 Task 2: ``<machine>/{train,test}/section_XX_...wav`` (also under ``dev_data/`` or
  ``eval_data/``, ``dev_data/raw/``...), with ``attributes_XX.csv`` beside the split folders and
  the 2025 ``supplemental/`` clips (split ``supplemental``, not used for training by default)
- a single machine folder: ``<machine>/{train,source_test,target_test}``
- your own recordings, under any names: ``<machine>/train/**/*.wav`` (normal clips) and, to
  evaluate, ``<machine>/test/normal/**/*.wav`` and ``<machine>/test/anomaly/**/*.wav``; one
  section (00), year 0 ("own recordings"). A folder named ``target`` right under ``train/`` (or
  ``test/normal/``, ``test/anomaly/``) holds clips of a new operating condition, the target
  domain of DCASE 2022-2025 (a few clips of a new speed, load or place, beside the many of the
  usual one, the source domain); every other clip is source. Evaluated as 2020 is (per machine
  type), or, where test clips are in a ``target`` folder, as 2022-2025 are (each domain's AUC).
  A name that fits a challenge's pattern is read as that challenge's clip, and one folder holds
  one kind: a misnamed clip among challenge clips is the naming error it always was.
- MIMII (Purohit et al. 2019, Zenodo 3384388; the year column says 2019):
  ``[<snr>dB/]<machine>/id_XX/{normal,abnormal}/XXXXXXXX.wav``, as its archives unpack. MIMII has
  no split; the index makes the one of MIMII's public baseline: per machine ID, the first (by name)
  as many normal clips as there are anomalous ones are test clips with every anomalous clip, the
  other normal clips train. Under an SNR folder (``6dB``, ``0dB``, ``-6dB``; also ``min6dB`` or the
  archive's name, ``-6_dB_fan``) the machine type is named with it, ``fan_6dB``, so the three noise
  levels of one machine are separate models and results, as MIMII reports them; the same clip
  found twice (levels in folders not named so) is an error, never a mix. MIMII's names repeat in every folder, so the
  ``filename`` column holds the name DCASE 2020 gave the same clip (``anomaly_id_00_00000000.wav``).

The year is recognised from the layout and names (:func:`mimii_due.data.years.detect_year`) or
named (``year=``); it is in the ``year`` column. Attributes from ``attributes_XX.csv`` files land
in the ``csv_attributes`` column beside those parsed from the names (``attributes``).

Only WAV headers are read, so a full-size dataset (about 42,000 clips) indexes in seconds.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import replace
from pathlib import Path

import pandas as pd

from mimii_due.data.audio import LOSSLESS, LOSSY, OTHER_AUDIO, read_header
from mimii_due.data.naming import format_name, mimii_folders, parse_name
from mimii_due.data.years import check_year, detect_year
from mimii_due.errors import FileNameError, LayoutError, MimiiDueError, StorageError

log = logging.getLogger(__name__)

SPLIT_FOLDERS = ("train", "test", "source_test", "target_test", "supplemental")
# MIMII's noise-level folders: 6dB, -6dB, min6dB, or an archive's name (-6_dB_fan, unzipped into its own folder)
_SNR_FOLDER = re.compile(r"^(?P<sign>-|min|minus|\+|plus)?(?P<db>\d+)_?db(?:_[a-z]+)?$", re.IGNORECASE)
PARTS = {"dev_data": "dev", "eval_data": "eval"}
COLUMNS = [
    "path", "filename", "part", "machine", "section", "domain", "split", "label", "clip",
    "attributes", "csv_attributes", "sample_rate", "channels", "frames", "year", "scheme", "folder",
]  # fmt: skip


def regular(path: Path) -> bool:
    """False for a path that is there but is no regular file (a named pipe, a socket, a device); a
    missing one or a broken link is left for its reader to report."""
    return path.is_file() or not path.exists()


def other_formats(paths: list[Path]) -> str:
    """What to say of audio files of other formats (a recorder's FLAC or MP3; ``wav_files``'s
    ``others``), which nothing but ``split`` reads: "audio files of other formats (2 .flac), ..."."""
    counts: dict[str, int] = {}
    for p in paths:
        counts[p.suffix.lower()] = counts.get(p.suffix.lower(), 0) + 1
    found = ", ".join(f"{n} {ext}" for ext, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    kinds = set(counts)
    split = " (`mimii-due split FOLDER OUT` does for FLAC, AIFF and W64)" if kinds & set(LOSSLESS) else ""
    lossy = (" (record WAV where you can: a lossy codec's distortion is heard as the machine's sound)"
             if kinds & set(LOSSY) else "")  # fmt: skip
    return f"audio files of other formats ({found}), which are not read: convert them to WAV{split}{lossy}"


def wav_files(root: Path, suffixes: tuple[str, ...] = (".wav",), others: list[Path] | None = None) -> list[Path]:
    """Every WAV file under ``root`` (hidden ones left out), sorted; links followed, loops skipped.
    ``suffixes``: the files' endings, in lower case (``split`` also reads FLAC and AIFF); ``others``:
    a list that the audio files of other formats found on the way (``OTHER_AUDIO``) are added to."""
    out: list[Path] = []
    stack, seen = [root], set()
    while stack:
        d = stack.pop()
        try:
            real = d.resolve(strict=True)
            if real in seen:  # a symlink loop or a folder linked twice
                log.warning("skipping %s: already indexed as %s", d, real)
                continue
            seen.add(real)
            with os.scandir(d) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=True):
                        stack.append(Path(e.path))
                    elif e.name.lower().endswith(suffixes) and not e.name.startswith("."):
                        if not regular(Path(e.path)):  # reading a named pipe waits for a writer: for ever
                            log.warning("skipping %s: not a regular file (a pipe, socket or device)", e.path)
                            continue
                        out.append(Path(e.path))
                    elif others is not None and e.name.lower().endswith(OTHER_AUDIO) and not e.name.startswith("."):
                        others.append(Path(e.path))
        except (OSError, RuntimeError) as e:  # RuntimeError: resolve() in a symlink loop
            raise StorageError(f"cannot read the folder ({getattr(e, 'strerror', None) or e})", d) from e
    out.sort()
    return out


# The naming families no challenge mixes: a clip of another family in a dataset folder is a stray
# (copied in by hand), and it would decide the year (detect_year) and the metric for the whole folder.
_FAMILY = {"dcase2021": "DCASE 2021-2026", "eval2022": "DCASE 2021-2026", "dcase2020": "DCASE 2020", "mimii": "MIMII",
           "own": "own recordings"}  # fmt: skip


def _one_naming(table: pd.DataFrame, on_error: str, skipped: list) -> pd.DataFrame:
    """``table`` if its clips are named by one challenge; else an error naming a stray clip, or
    (``skip``) the clips of the smaller family reported and left out."""
    family = table["scheme"].map(_FAMILY)
    if family.nunique() < 2:
        return table
    major = family.value_counts().index[0]
    stray = table[family != major]
    misnamed = stray[stray["scheme"] == "own"]["path"]  # among challenge clips: the naming error, as ever
    if on_error == "raise" and major != _FAMILY["own"] and len(misnamed):
        parse_name(misnamed.iloc[0])  # raises it, with the patterns expected
    folder = major if major == _FAMILY["own"] else f"{major} clips"
    why = f"named as {family[stray.index[0]]} clips in a folder of {folder}"
    if on_error == "raise":
        raise LayoutError(f"{why} ({len(stray)} such); keep one challenge's clips per folder", stray["path"].iloc[0])
    for path, fam in zip(stray["path"], family[stray.index], strict=True):
        why = f"named as {fam} clips in a folder of {folder}"
        if fam == _FAMILY["own"]:
            try:
                parse_name(path)
            except MimiiDueError as e:
                why = str(e).removeprefix(f"{path}: ")
        log.warning("skipping %s: %s", path, why)
        skipped.append((path, f"{path}: {why}"))
    return table[family == major].reset_index(drop=True)


def _part(machine_dir: Path, scheme: str) -> str | None:
    for parent in machine_dir.parents:
        if parent.name in PARTS:
            return PARTS[parent.name]
    return "dev" if scheme in ("dcase2020", "mimii") else None


def _mimii_machine(machine_dir: Path) -> str:
    """A MIMII machine folder's name, with the SNR of the folder above it where there is one."""
    m = _SNR_FOLDER.match(machine_dir.parent.name)
    if not m:
        return machine_dir.name
    minus = m["sign"] is not None and m["sign"].lower() in ("-", "min", "minus") and int(m["db"]) != 0
    return f"{machine_dir.name}_{'-' if minus else ''}{int(m['db'])}dB"


def _mimii_splits(table: pd.DataFrame) -> pd.Series:
    """MIMII's baseline split: per machine and ID, the first (by name) as many normal clips as there
    are anomalous ones are test clips, with every anomalous clip; the other normal clips train."""
    split = pd.Series("test", index=table.index, dtype=object)
    mimii = table[table["scheme"] == "mimii"]
    twice = mimii[mimii.duplicated(["machine", "section", "label", "clip"], keep=False)]
    if len(twice):  # e.g. two noise levels under folders the index cannot tell apart: never mix them
        raise LayoutError(f"MIMII clip {twice['filename'].iloc[0]} of {twice['machine'].iloc[0]} is there twice "
                          f"({twice['path'].iloc[0]}, {twice['path'].iloc[1]}); put each noise level in its own "
                          "folder named 6dB, 0dB or -6dB, or index one level at a time")  # fmt: skip
    for _, clips in mimii.groupby(["machine", "section"]):
        normal = clips[clips["label"] == "normal"].sort_values("path")
        n_test = int((clips["label"] == "anomaly").sum())
        split[normal.index[n_test:]] = "train"
    return split.where(table["scheme"] == "mimii", table["split"])


def _own_clips(table: pd.DataFrame) -> pd.DataFrame:
    """Own recordings numbered by name within their machine type, split and label; a name given
    twice in one machine type is an error (scores and results name clips by their names)."""
    own = table[table["scheme"] == "own"]
    if own.empty:
        return table
    twice = own[own.duplicated(["machine", "filename"], keep=False)]
    if len(twice):
        raise LayoutError(f"two clips of {twice['machine'].iloc[0]} are named {twice['filename'].iloc[0]} "
                          f"({twice['path'].iloc[0]}, {twice['path'].iloc[1]}); give each clip of a machine type "
                          "its own name", twice["path"].iloc[0])  # fmt: skip
    train = own[own["split"] == "train"]
    lone = [m for m, domains in train.groupby("machine")["domain"].agg(set).items() if domains == {"target"}]
    if lone:  # a new condition is judged beside the usual one: without it there is nothing to be beside
        raise LayoutError(f"{lone[0]}'s training clips are all in train/target/, which holds a few clips of a new "
                          "operating condition beside the usual condition's clips in train/: put those in "
                          f"{lone[0]}/train/", train.loc[train["machine"] == lone[0], "path"].iloc[0])  # fmt: skip
    table = table.copy()
    table.loc[own.index, "clip"] = own.groupby(["machine", "split", "label"])["filename"].rank(method="first") - 1
    table["clip"] = table["clip"].astype(int)
    return table


def _csv_attributes(machine_dir: Path) -> dict[str, str]:
    """``attributes_XX.csv`` of a machine folder: file name -> ``key_value`` string of its columns."""
    out: dict[str, str] = {}
    for f in sorted(machine_dir.glob("attributes_*.csv")):
        try:
            df = pd.read_csv(f, dtype=str).fillna("")
        except (OSError, ValueError) as e:
            raise LayoutError(f"unreadable attributes file ({e})", f) from e
        if "file_name" not in df.columns:
            raise LayoutError("attributes file has no 'file_name' column", f)
        params = [c for c in df.columns if c.endswith("p") and c[:-1] + "v" in df.columns]  # d1p, d1v, ...
        others = [c for c in df.columns if c != "file_name" and c not in params and c[:-1] + "p" not in params]
        for r in df.to_dict("records"):
            pairs = [(r[c], r[c[:-1] + "v"]) for c in params] + [(c, r[c]) for c in others]
            out[Path(r["file_name"]).name] = "_".join(f"{k}_{v}" for k, v in pairs if k and v != "")
    return out


def _own_place(path: Path) -> tuple[Path, str, str, str] | None:
    """Where a clip of one's own recordings is: (machine folder, split, label, domain) from the
    nearest ``train`` or ``test/normal``, ``test/anomaly`` folder above it, the domain ``target``
    where the folder right under that one is named so; None when neither is."""
    for q in path.parents:
        if q.name == "train" or (q.name in ("normal", "anomaly") and q.parent.name == "test"):
            below = path.relative_to(q).parts
            domain = "target" if len(below) > 1 and below[0] == "target" else "source"
            if q.name == "train":
                return q.parent, "train", "normal", domain
            return q.parent.parent, "test", q.name, domain
    return None


def _own_row(path: Path, place: tuple[Path, str, str, str]) -> dict:
    machine_dir, split, label, domain = place
    info = read_header(path)
    return {"path": str(path), "filename": path.name, "part": None, "machine": machine_dir.name, "section": 0,
            "domain": domain, "split": split, "label": label, "clip": 0, "attributes": "", "csv_attributes": None,
            "sample_rate": info.sample_rate, "channels": info.channels, "frames": info.frames, "year": None,
            "scheme": "own", "folder": path.parent.name}  # fmt: skip


def _row(path: Path) -> dict:
    try:
        name = parse_name(path)
    except FileNameError as e:
        place = _own_place(path)
        if place is not None:
            return _own_row(path, place)
        own = "<machine>/train/ (normal), <machine>/test/normal/, <machine>/test/anomaly/"
        raise FileNameError(f"{str(e).removeprefix(f'{path}: ')}; or, your own recordings under any names: {own}",
                            path) from None  # fmt: skip
    folder = path.parent.name
    mimii = mimii_folders(path) is not None
    if folder not in SPLIT_FOLDERS and not mimii:
        place = _own_place(path)
        if place is not None and place[1] == "test":  # test/normal/, test/anomaly/: one's own, whatever the name
            return _own_row(path, place)
        raise LayoutError(f"clip is in folder '{folder}', expected one of {', '.join(SPLIT_FOLDERS)}"
                          " (or MIMII's id_XX/normal, id_XX/abnormal)", path)  # fmt: skip
    machine_dir = path.parent.parent.parent if mimii else path.parent.parent
    split = name.split or folder  # DCASE 2020 names carry no split: the folder says it
    if folder.endswith("_test") and (name.split != "test" or not folder.startswith(name.domain)):
        raise LayoutError(f"a {name.domain} {name.split} clip is in folder '{folder}'", path)
    if folder == "train" and split != "train":
        raise LayoutError("a test clip is in folder 'train'", path)
    if folder == "supplemental":
        split = "supplemental"
    info = read_header(path)
    return {
        "path": str(path),
        "filename": format_name(replace(name, scheme="dcase2020")) if mimii else path.name,
        "part": _part(machine_dir, name.scheme),
        "machine": _mimii_machine(machine_dir) if mimii else machine_dir.name,
        "section": name.section,
        "domain": name.domain,
        "split": split,
        "label": name.label,
        "clip": name.index,
        "attributes": name.attribute_values,
        "csv_attributes": None,
        "sample_rate": info.sample_rate,
        "channels": info.channels,
        "frames": info.frames,
        "year": None,
        "scheme": name.scheme,
        "folder": folder,
    }


def index(root: str | Path, *, on_error: str = "raise", year: int | None = None) -> pd.DataFrame:
    """Index every clip under ``root``.

    Parameters
    ----------
    root : a dataset folder in one of the layouts above.
    on_error : ``"raise"`` (default) stops at the first bad file; ``"skip"`` logs it, leaves it out,
        and lists ``(path, message)`` pairs in ``table.attrs["skipped"]``.
    year : the DCASE year of the data (default: recognised from the layout and names).

    Returns
    -------
    pandas.DataFrame with columns :data:`COLUMNS`, sorted by machine, section, domain, split, label
    and clip. ``label`` is ``None`` for unlabelled evaluation clips; ``part`` is ``"dev"``,
    ``"eval"`` or ``None`` (a lone machine folder).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError("on_error must be 'raise' or 'skip'")
    root = Path(root)
    if not root.is_dir():
        raise LayoutError("not a folder", root)
    for folder in [root, *list(root.resolve().parents)[:3]]:
        if (folder / "synth_incomplete.json").exists():
            raise LayoutError("an interrupted `mimii-due synth` left this folder incomplete; rerun it", folder)
    rows, skipped, others = [], [], []
    for path in wav_files(root, others=others):
        try:
            rows.append(_row(path))
        except MimiiDueError as e:
            if on_error == "raise":
                raise
            log.warning("skipping %s", e)
            skipped.append((str(path), str(e)))
    if not rows:
        archives = sorted(p.name for p in [*root.glob("*.zip"), *root.glob("*/*.zip")])[:3] if root.is_dir() else []
        unpack = f"; it holds {', '.join(archives)}: unpack the archives first" if archives else (
            f"; it holds {other_formats(others)}" if others else "")  # fmt: skip
        raise LayoutError(
            f"no clips found (expected dev_data/<machine>/train/*.wav, <machine>/train/*.wav, ...){unpack}", root
        )
    if others:  # a recorder switched to FLAC part of the way: those recordings would be lost unsaid
        log.warning("%s also holds %s (e.g. %s)", root, other_formats(others), min(others))
    table = pd.DataFrame(rows, columns=COLUMNS)
    table = _one_naming(table, on_error, skipped)
    table["label"] = table["label"].astype(object).where(table["label"].notna(), None)
    table["split"] = _mimii_splits(table)
    table = _own_clips(table)
    table["domain"] = table["domain"].astype(object).where(table["domain"].notna(), None)
    csv_attrs: dict[str, str] = {}
    for machine_dir in sorted({Path(p).parent.parent for p in table["path"]}):
        csv_attrs.update({str(machine_dir / n): v for n, v in _csv_attributes(machine_dir).items()})
    if csv_attrs:
        keys = [str(Path(p).parent.parent / Path(p).name) for p in table["path"]]
        table["csv_attributes"] = [csv_attrs.get(k) for k in keys]
    table["year"] = check_year(year, table) if year is not None else detect_year(table)
    table = table.sort_values(
        ["machine", "section", "domain", "split", "label", "clip", "path"], na_position="last", kind="stable"
    ).reset_index(drop=True)
    table.attrs["skipped"] = skipped
    return table

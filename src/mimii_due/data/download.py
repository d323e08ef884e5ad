"""Download every DCASE Task 2 year (2020-2026), MIMII DUE and MIMII from Zenodo, and each year's
evaluation ground truth: resumable, verified, unpacked, idempotent.

Each archive is fetched to ``<dest>/.downloads/<name>.part`` with HTTP Range requests (an
interrupted transfer continues where it stopped), checked against the MD5 the Zenodo record lists,
unpacked into the layout :func:`mimii_due.data.index.index` reads (``dev_data/<machine>/...``,
``eval_data/<machine>/...``), and marked done (``<dest>/.downloads/<name>.done``) so a rerun skips it.
Records per year: the development set (``dev``), the additional training and the evaluation test
clips (``eval``), as the organisers' baseline scripts download them. MIMII (``mimii``) has one
record of archives per SNR and machine type (``-6_dB_fan.zip``: ``fan/id_00/normal/...``), each
unpacked under its SNR (``<dest>/-6dB/fan/...``), the layout the index reads; ``snrs`` picks levels.

The ground truth of the evaluation sets is the organisers' ``eval_data_list_<year>.csv`` (a line
per machine type, then ``evaluation name,labelled name`` pairs), from the official baseline's
repository. GitHub lists no checksum, so a file is verified by its content (every pair parses, the
two names agree on the section) and its SHA-256 is recorded in the completion marker.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import re
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mimii_due import atomic
from mimii_due.errors import DownloadError

log = logging.getLogger(__name__)

ZENODO = "https://zenodo.org"
# Public Zenodo records (brief and issue #2).
RECORDS = {
    "mimii-due": {"dev": [4740355], "eval": [4740355]},
    "mimii": {"dev": [3384388], "eval": []},  # MIMII (Purohit et al. 2019): no evaluation set
    "dcase2020": {"dev": [3678171], "eval": [3727685, 3841772]},
    "dcase2021": {"dev": [4562016], "eval": [4660992, 4884786]},
    "dcase2022": {"dev": [6355122], "eval": [6462969, 6586456]},
    "dcase2023": {"dev": [7882613], "eval": [7830345, 7860847]},
    "dcase2024": {"dev": [10902294], "eval": [11259435, 11363076]},
    "dcase2025": {"dev": [15097779], "eval": [15392814, 15519362]},
    "dcase2026": {"dev": [19336329], "eval": [20151556, 20437238]},
}
GROUND_TRUTH_URL = "https://raw.githubusercontent.com/nttcslab/dcase2023_task2_baseline_ae/main/datasets"
_CHUNK = 1 << 20
_MIMII_ARCHIVE = re.compile(r"^(?P<snr>-?\d+)_dB_(?P<machine>[A-Za-z]+)\.zip$")  # -6_dB_fan.zip

Progress = Callable[[str, int, int], None]  # (archive name, bytes done, bytes total)


@dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str
    size: int
    md5: str


def record_files(record: int, *, base_url: str = ZENODO, timeout: float = 60) -> list[RemoteFile]:
    """The files of a Zenodo record, from its JSON API (``/api/records/<id>``)."""
    url = f"{base_url.rstrip('/')}/api/records/{record}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            meta = json.load(r)
    except (urllib.error.URLError, OSError, ValueError) as e:  # ValueError: not JSON, or not text
        raise DownloadError(f"cannot read Zenodo record {record} at {url}: {e}") from e
    files = []
    try:
        for f in meta.get("files", []):
            algo, _, digest = f.get("checksum", "").partition(":")
            if algo != "md5":
                raise DownloadError(f"record {record}: file {f.get('key')} has no MD5 checksum")
            link = f["links"].get("self") or f["links"]["content"]
            files.append(RemoteFile(f["key"], link, int(f.get("size", 0)), digest))
    except (AttributeError, KeyError, TypeError, ValueError) as e:  # JSON, but not a Zenodo record's
        raise DownloadError(f"Zenodo record {record} at {url} is not in the record layout expected "
                            f"({type(e).__name__}: {e})") from e  # fmt: skip
    return files


def _wanted(name: str, part: str, machines: list[str] | None, snrs: list[int] | None = None) -> bool:
    stem = name.removesuffix(".zip")
    if not name.endswith(".zip"):
        return False
    if snrs is not None and not ((m := _MIMII_ARCHIVE.match(name)) and int(m["snr"]) in snrs):
        return False
    archive_part = "eval" if stem.startswith("eval") else "dev"  # dev_data_fan, dev_fan, eval_data_fan_train...
    if part != "all" and archive_part != part:
        return False
    return machines is None or any(m in stem.split("_") for m in machines)


def fetch(remote: RemoteFile, target: Path, *, progress: Progress | None = None, timeout: float = 60) -> Path:
    """Download ``remote`` to ``target`` (resuming ``target.part``) and verify its MD5.

    A checksum mismatch deletes the partial file and raises :class:`DownloadError`.
    """
    part = target.with_name(target.name + ".part")
    done = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(remote.url)
    if done:
        req.add_header("Range", f"bytes={done}-")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            if done and r.status != 206:  # server ignored the range: start again
                done = 0
            mode = "ab" if done else "wb"
            total = remote.size or done + int(r.headers.get("Content-Length", 0))
            with open(part, mode) as f:
                while chunk := r.read(_CHUNK):
                    f.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(remote.name, done, total)
    except urllib.error.HTTPError as e:
        if e.code == 416 and done:  # range not satisfiable: we already hold every byte
            pass
        else:
            raise DownloadError(f"HTTP {e.code} for {remote.url}") from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise DownloadError(f"transfer of {remote.name} stopped at {done} bytes ({e}); rerun to resume") from e
    if remote.size and part.stat().st_size < remote.size:
        raise DownloadError(
            f"transfer of {remote.name} stopped at {part.stat().st_size} of {remote.size} bytes; rerun to resume"
        )
    md5 = hashlib.md5()
    with open(part, "rb") as f:
        while chunk := f.read(_CHUNK):
            md5.update(chunk)
    if remote.md5 and md5.hexdigest() != remote.md5:
        part.unlink()
        raise DownloadError(
            f"checksum mismatch (md5 {md5.hexdigest()}, record says {remote.md5}); the file was deleted",
            target,
        )
    part.replace(target)
    return target


def unpack(archive: Path, dest: Path) -> None:
    """Unpack a dataset archive into ``dest`` in the index's layout, all or nothing.

    Archives whose entries start with ``dev_data/`` or ``eval_data/`` unpack into ``dest``; the
    Zenodo archives (``<machine>/train/...``) unpack into ``dest/dev_data`` or ``dest/eval_data``
    by the archive's name, MIMII's (``6_dB_fan.zip``) into ``dest/6dB``. Every member is first
    extracted (and CRC-checked) into a staging folder beside the archive; only when all are good
    are they moved into place, so a bad archive leaves no clip behind. A bad archive is deleted
    (its MD5 may have matched a corrupt upload).
    """
    staging = archive.with_name(archive.name + ".unpack")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if not n.endswith("/")]
            top = {PurePosixPath(n).parts[0] for n in names}
            mimii = _MIMII_ARCHIVE.match(archive.name)
            if mimii:
                root = dest / f"{int(mimii['snr'])}dB"
            elif top <= {"dev_data", "eval_data"}:
                root = dest
            else:
                root = dest / ("eval_data" if archive.name.startswith("eval") else "dev_data")
            for n in names:
                p = PurePosixPath(n)
                if p.is_absolute() or ".." in p.parts:
                    raise DownloadError(f"unsafe path in archive: {n}", archive)
                out = staging.joinpath(*p.parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                with z.open(n) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)  # zipfile checks each member's CRC at its end
    except (zipfile.BadZipFile, zlib_error(), EOFError) as e:
        shutil.rmtree(staging, ignore_errors=True)
        archive.unlink(missing_ok=True)
        raise DownloadError(f"broken zip archive ({e}); it was deleted, rerun to download it again", archive) from e
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise DownloadError(f"cannot unpack ({e.strerror or e})", archive) from e
    for n in names:
        parts = PurePosixPath(n).parts
        out = root.joinpath(*parts)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging.joinpath(*parts).replace(out)
    shutil.rmtree(staging, ignore_errors=True)


def zlib_error() -> type[Exception]:
    import zlib

    return zlib.error


def _check_machines(source: str, machines: list[str] | None) -> None:
    """Machine types the source does not have, refused before anything is fetched (a misspelt
    ``toycar`` matched no archive, which was said only after the records were read)."""
    from mimii_due.data.years import SPECS

    year = {"mimii": 2019, "mimii-due": 2021}.get(source) or int(source.removeprefix("dcase"))
    known = SPECS[year].dev_machines + SPECS[year].eval_machines
    if source == "mimii-due":  # DCASE 2021's MIMII half; its ToyCar and ToyTrain are ToyADMOS2's record
        known = tuple(m for m in known if not m.startswith("Toy"))
    for m in machines or []:
        if m not in known:
            like = [k for k in known if k.lower() == m.lower()]
            raise DownloadError(f"{source} has no machine type {m!r}" + (f" (did you mean {like[0]}?)" if like else "")
                                + f"; it has {', '.join(dict.fromkeys(known))}")  # fmt: skip


def download(
    dest: str | Path,
    *,
    machines: list[str] | None = None,
    part: str = "dev",
    source: str = "mimii-due",
    base_url: str = ZENODO,
    keep_archives: bool = False,
    progress: Progress | None = None,
    snrs: list[int] | None = None,
) -> list[str]:
    """Download, verify and unpack the chosen archives into ``dest``; return their names.

    ``source``: ``mimii-due``, ``dcase2020`` ... ``dcase2026`` or ``mimii``; ``part``: ``dev``
    (development set), ``eval`` (additional training and evaluation test clips) or ``all``;
    ``snrs``: MIMII's noise levels to fetch (of 6, 0 and -6 dB; default all). Archives already
    marked done are skipped, so running it again is safe and cheap.
    """
    if part not in ("dev", "eval", "all"):
        raise DownloadError(f"part must be dev, eval or all, not {part!r}")
    if source not in RECORDS:
        raise DownloadError(f"source must be one of {', '.join(RECORDS)}, not {source!r}")
    if snrs is not None and source != "mimii":
        raise DownloadError(f"SNRs are chosen only for MIMII (--source mimii), not for {source}")
    _check_machines(source, machines)
    dest = Path(dest)
    work = dest / ".downloads"
    family = "dcase2021" if source == "mimii-due" else source  # MIMII DUE is DCASE 2021's MIMII data
    held = work / "source.txt"  # what was unpacked here: one year per folder, as the index reads one
    there = held.read_text().strip() if held.exists() else family
    if there != family:
        raise DownloadError(f"it holds the {there} download; put {family} into another folder (the two years' "
                            "clips would mix into one dataset)", dest)  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    records = sorted({r for p in (("dev", "eval") if part == "all" else (part,)) for r in RECORDS[source][p]})
    wanted = [f for r in records for f in record_files(r, base_url=base_url)
              if _wanted(f.name, part, machines, snrs)]  # fmt: skip
    if not wanted:
        raise DownloadError(f"no archive in records {records} matches part={part} machines={machines}"
                            + (f" snrs={snrs}" if snrs is not None else ""))  # fmt: skip
    for f in wanted:
        marker = work / f"{f.name}.done"
        if marker.exists() and marker.read_text().strip() == f.md5:
            log.info("%s already downloaded and unpacked", f.name)
            continue
        archive = work / f.name
        if not archive.exists():
            fetch(f, archive, progress=progress)
        if not held.exists():
            atomic.write_text(held, family + "\n")
        unpack(archive, dest)
        atomic.write_text(marker, f.md5 + "\n")
        if not keep_archives:
            archive.unlink()
    return [f.name for f in wanted]


def check_ground_truth_list(path: Path) -> int:
    """Verify an ``eval_data_list_<year>.csv`` by its content (the evaluation parser reads every
    pair); return its number of clips."""
    from mimii_due.errors import MimiiDueError
    from mimii_due.evaluation.files import read_ground_truth

    try:
        n = len(read_ground_truth(path))
    except MimiiDueError as e:
        raise DownloadError(str(e).replace(f"{path}: ", ""), path) from e
    if n == 0:
        raise DownloadError("no labelled clips in the ground-truth list", path)
    return n


def download_ground_truth(
    year: int, dest: str | Path, *, base_url: str = GROUND_TRUTH_URL, progress: Progress | None = None
) -> Path:
    """Fetch the organisers' evaluation ground truth of ``year`` into
    ``dest/ground_truth/eval_data_list_<year>.csv`` (resumable, verified by content, idempotent)."""
    if year not in (2020, 2021, 2022, 2023, 2024, 2025):
        raise DownloadError(f"no ground truth for year {year}; choose 2020-2025 (2026's is not where we fetch them)")
    dest = Path(dest)
    name = f"eval_data_list_{year}.csv"
    target = dest / "ground_truth" / name
    marker = dest / ".downloads" / f"{name}.done"
    if target.exists() and marker.exists() and marker.read_text().strip() == _sha256(target):
        log.info("%s already downloaded", name)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    marker.parent.mkdir(parents=True, exist_ok=True)
    staged = marker.parent / name
    fetch(RemoteFile(name, f"{base_url.rstrip('/')}/{name}", 0, ""), staged, progress=progress)
    try:
        check_ground_truth_list(staged)
    except DownloadError:
        staged.unlink(missing_ok=True)
        raise
    staged.replace(target)
    atomic.write_text(marker, _sha256(target) + "\n")
    return target


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()

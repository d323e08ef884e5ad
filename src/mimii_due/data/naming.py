"""Parse and format the file names of MIMII DUE / DCASE 2021 Task 2, DCASE 2020 Task 2 and MIMII.

Patterns (examples from the real data):

- training, MIMII DUE / DCASE 2021: ``section_00_source_train_normal_0000_strength_1_ambient.wav``
- development test: ``section_01_target_test_anomaly_0042.wav``
- evaluation test, no label: ``section_03_source_test_0123.wav``
- DCASE 2022-2026: the same pattern with attributes in every name
  (``section_00_source_train_normal_0001_car_A1_spd_28V_mic_1.wav``, ``..._0001_noAttributes.wav``);
  evaluation test names carry neither domain nor label: ``section_00_0001.wav``
- DCASE 2020: ``normal_id_00_00000000.wav``, ``anomaly_id_02_00000012.wav``; evaluation ``id_05_00000000.wav``
- MIMII (Purohit et al. 2019, the recordings behind DCASE 2020's fan, pump, slider and valve): the
  name is only the clip number, the folders say the rest: ``id_00/normal/00000000.wav``,
  ``id_02/abnormal/00000012.wav``; such a name is parsed only with its two folders

Attributes are the ``_``-separated tokens after the clip index. They are kept in order: a token
followed by a value-like token (one holding a digit) forms a ``(key, value)`` pair; any other token
is kept on its own as ``(token, None)``. ``format_name(parse_name(n)) == n`` for every valid name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mimii_due.errors import FileNameError

DOMAINS = ("source", "target")
LABELS = ("normal", "anomaly")

_DCASE2021 = re.compile(
    r"^section_(?P<section>\d{2})_(?P<domain>source|target)_(?P<split>train|test)"
    r"(?:_(?P<label>normal|anomaly))?_(?P<index>\d+)(?P<attrs>(?:_[^_]+)*)\.(?i:wav)$"
)
_DCASE2020 = re.compile(r"^(?:(?P<label>normal|anomaly)_)?id_(?P<section>\d{2})_(?P<index>\d+)\.(?i:wav)$")
_EVAL2022 = re.compile(r"^section_(?P<section>\d{2})_(?P<index>\d+)\.(?i:wav)$")
_MIMII_NAME = re.compile(r"^(?P<index>\d+)\.(?i:wav)$")
_MIMII_ID = re.compile(r"^id_(?P<section>\d{2})$")
_MIMII_LABELS = {"normal": "normal", "abnormal": "anomaly"}  # MIMII's folder -> our label
NO_ATTRIBUTES = "noAttributes"  # the 2023-2025 names' token for a machine type without attributes

Attributes = tuple[tuple[str, str | None], ...]


@dataclass(frozen=True)
class ClipName:
    """The attributes a file name carries.

    ``label`` is ``None`` for unlabelled evaluation clips, ``domain`` is ``None`` where the name does
    not say it (2022-2025 evaluation names); ``index_digits`` keeps the zero padding so that
    formatting gives the same name back.
    """

    section: int
    domain: str | None
    split: str
    label: str | None
    index: int
    index_digits: int = 4
    attributes: Attributes = ()
    scheme: str = "dcase2021"  # or "dcase2020", "eval2022" (``section_00_0001.wav``), "mimii"

    @property
    def attribute_string(self) -> str:
        """Attributes as they appear in the name, e.g. ``strength_1_ambient`` (empty if none)."""
        return "_".join(t for pair in self.attributes for t in pair if t is not None)

    @property
    def attribute_values(self) -> str:
        """The attributes as the clip table holds them: empty for ``noAttributes``."""
        s = self.attribute_string
        return "" if s == NO_ATTRIBUTES else s


def _looks_like_value(token: str) -> bool:
    return any(c.isdigit() for c in token)


def parse_attributes(tokens: list[str]) -> Attributes:
    """Group attribute tokens into ordered ``(key, value)`` pairs, lone tokens as ``(token, None)``."""
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(tokens):
        if i + 1 < len(tokens) and not _looks_like_value(tokens[i]) and _looks_like_value(tokens[i + 1]):
            out.append((tokens[i], tokens[i + 1]))
            i += 2
        else:
            out.append((tokens[i], None))
            i += 1
    return tuple(out)


def mimii_folders(path: str | Path) -> tuple[int, str] | None:
    """The section and label MIMII's two folders give a clip (``id_02/abnormal/...`` -> ``(2, "anomaly")``),
    or None where the path does not end in them."""
    parent = Path(path).parent
    ident = _MIMII_ID.match(parent.parent.name)
    return (int(ident["section"]), _MIMII_LABELS[parent.name]) if ident and parent.name in _MIMII_LABELS else None


def parse_name(name: str | Path) -> ClipName:
    """Parse a clip's file name (a bare name or a path; only the name is used).

    Raises
    ------
    FileNameError
        When the name fits no pattern; the message names the path given.
    """
    base = Path(name).name
    m = _DCASE2021.match(base)
    if m:
        tokens = m["attrs"].split("_")[1:] if m["attrs"] else []
        label = m["label"]
        if m["split"] == "train" and label is None:
            raise FileNameError("training clip names must say normal or anomaly", name)
        return ClipName(
            section=int(m["section"]),
            domain=m["domain"],
            split=m["split"],
            label=label,
            index=int(m["index"]),
            index_digits=len(m["index"]),
            attributes=parse_attributes(tokens),
            scheme="dcase2021",
        )
    m = _DCASE2020.match(base)
    if m:
        return ClipName(
            section=int(m["section"]),
            domain="source",
            split="" if m["label"] else "test",  # labelled 2020 names do not carry the split; the folder does
            label=m["label"],
            index=int(m["index"]),
            index_digits=len(m["index"]),
            scheme="dcase2020",
        )
    m = _EVAL2022.match(base)
    if m:
        return ClipName(section=int(m["section"]), domain=None, split="test", label=None, index=int(m["index"]),
                        index_digits=len(m["index"]), scheme="eval2022")  # fmt: skip
    m, folders = _MIMII_NAME.match(base), mimii_folders(name)
    if m and folders:  # MIMII gives no split: the index assigns it
        return ClipName(section=folders[0], domain="source", split="", label=folders[1], index=int(m["index"]),
                        index_digits=len(m["index"]), scheme="mimii")  # fmt: skip
    raise FileNameError(
        "file name fits no MIMII DUE / DCASE pattern (expected e.g. "
        "'section_00_source_train_normal_0000.wav', 'section_00_0001.wav', 'normal_id_00_00000000.wav' "
        "or MIMII's 'id_00/normal/00000000.wav')",
        name,
    )


def format_name(clip: ClipName) -> str:
    """The file name of ``clip``; the inverse of :func:`parse_name` (for MIMII the name alone,
    without the ``id_XX/normal/`` folders that carry its section and label)."""
    index = f"{clip.index:0{clip.index_digits}d}"
    if clip.scheme == "mimii":
        return f"{index}.wav"
    if clip.scheme == "dcase2020":
        return f"{clip.label}_id_{clip.section:02d}_{index}.wav" if clip.label else f"id_{clip.section:02d}_{index}.wav"
    if clip.scheme == "eval2022":
        return f"section_{clip.section:02d}_{index}.wav"
    parts = [f"section_{clip.section:02d}", clip.domain, clip.split]
    if clip.label is not None:
        parts.append(clip.label)
    parts.append(index)
    attrs = clip.attribute_string
    if attrs:
        parts.append(attrs)
    return "_".join(parts) + ".wav"

"""The DCASE Task 2 years as data: machine types, sections, clip counts, evaluation protocol.

From each year's task description. 2021 is MIMII DUE, whose counts are the paper's Table 1
(:mod:`mimii_due.data.table1`). From 2022 on every section has 990 source and 10 target training
clips and, in the development set, 50 normal and 50 anomalous test clips per domain; 2023-2025 have
one section (00) per machine type, and evaluation machine types differ from the development ones.
For 2020 the development set is tabulated per machine ID (:data:`COUNTS_2020`); the additional
training and evaluation IDs of 2020 are not (``info`` lists the clips found and says so).
2026 ("noise-aware" ASD) keeps the 2023-2025 layout and names with two-channel clips of 6, 10 or
16 s recorded near and far from the machine (the task's Zenodo records); its clip counts are not
tabulated here, so ``info`` lists what it finds without comparing.

0 stands for a user's own recordings under any names (``<machine>/train/`` normal clips, optionally
``<machine>/test/normal/`` and ``test/anomaly/``; :mod:`mimii_due.data.index`): no challenge, no
counts, one section, evaluated as 2020 is (per machine type), or as 2022-2025 are where some test
clips are of a new operating condition (a ``target`` folder: :func:`protocol_for`).

2019 stands for MIMII (Purohit et al., DCASE 2019 workshop), the recordings DCASE 2020 took its fan,
pump, slider and valve from: four machine IDs per type, no domains, evaluated as 2020 is (per ID).
Its counts are MIMII's Table 1 split as MIMII's public baseline splits them (:mod:`mimii_due.data.index`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from mimii_due.data.table1 import TABLE1, DomainCounts, SectionRow
from mimii_due.errors import LayoutError
from mimii_due.evaluation.metrics import protocol_of

YEARS = (2019, 2020, 2021, 2022, 2023, 2024, 2025, 2026)
_DEV_2022 = ("ToyCar", "ToyTrain", "bearing", "fan", "gearbox", "slider", "valve")


@dataclass(frozen=True)
class Year:
    year: int
    dev_machines: tuple[str, ...]
    eval_machines: tuple[str, ...]
    dev_sections: tuple[int, ...]
    eval_sections: tuple[int, ...]
    layout: str

    @property
    def protocol(self) -> str:
        return protocol_of(self.year)


OWN = 0  # a user's own recordings: no challenge year

SPECS = {
    OWN: Year(OWN, (), (), (0,), (), "<machine>/train/*.wav, <machine>/test/{normal,anomaly}/*.wav, any names"),
    2019: Year(2019, ("fan", "pump", "slider", "valve"), (), (0, 2, 4, 6), (),
               "[<snr>dB/]<machine>/id_XX/{normal,abnormal}/XXXXXXXX.wav"),
    2020: Year(2020, ("ToyCar", "ToyConveyor", "fan", "pump", "slider", "valve"),
               ("ToyCar", "ToyConveyor", "fan", "pump", "slider", "valve"), tuple(range(7)), tuple(range(7)),
               "<machine>/{train,test}/{normal,anomaly}_id_XX_XXXXXXXX.wav"),
    2021: Year(2021, ("fan", "gearbox", "pump", "slider", "valve", "ToyCar", "ToyTrain"),
               ("fan", "gearbox", "pump", "slider", "valve", "ToyCar", "ToyTrain"), (0, 1, 2), (3, 4, 5),
               "<machine>/{train,source_test,target_test}/section_XX_<domain>_<split>_<label>_XXXX_<attrs>.wav"),
    2022: Year(2022, _DEV_2022, _DEV_2022, (0, 1, 2), (3, 4, 5),
               "<machine>/{train,test}/section_XX_<domain>_<split>_<label>_XXXX_<attrs>.wav"),
    2023: Year(2023, _DEV_2022, ("ToyDrone", "ToyNscale", "ToyTank", "Vacuum", "bandsaw", "grinder", "shaker"), (0,),
               (0,), "<machine>/{train,test}/section_00_<domain>_<split>_<label>_XXXX_<attrs>.wav"),
    2024: Year(2024, _DEV_2022, ("3DPrinter", "AirCompressor", "BrushlessMotor", "HairDryer", "HoveringDrone",
                                 "RoboticArm", "Scanner", "ToothBrush", "ToyCircuit"), (0,), (0,),
               "<machine>/{train,test}/section_00_..., attributes_00.csv"),
    2025: Year(2025, _DEV_2022, ("AutoTrash", "BandSealer", "CoffeeGrinder", "HomeCamera", "Polisher", "ScrewFeeder",
                                 "ToyPet", "ToyRCCar"), (0,), (0,),
               "<machine>/{train,test,supplemental}/section_00_..., attributes_00.csv"),
    2026: Year(2026, ("ToyCar", "ToyCarEmu", "bearingEmu", "fan", "gearboxEmu", "sliderEmu", "valveEmu"),
               ("ToyDrone", "ToothBrush", "SewingMachine", "BlowerDustCollector", "Sander"), (0,), (0,),
               "<machine>/{train,test}/section_00_..., attributes_00.csv; two-channel clips"),
}  # fmt: skip
# The machine types that only 2026 has (its ToyCar and fan, ToyDrone and ToothBrush appeared before)
_ONLY_2026 = set(SPECS[2026].dev_machines + SPECS[2026].eval_machines) - {
    m for y, spec in SPECS.items() if y != 2026 for m in spec.dev_machines + spec.eval_machines
}

# DCASE 2020 development set per machine ID: (training clips, test normal, test anomalous).
# fan/pump/slider/valve are the MIMII recordings of those IDs (MIMII, Purohit et al. 2019, Table 1:
# normal / abnormal segments per model ID); the 2020 split keeps 100 normal clips per ID for the
# test set with every anomalous clip, which gives the published totals (training: fan 3675, pump
# 3349, slider 2804, valve 3291; test: 1875, 856, 1290, 879). ToyCar and ToyConveyor (ToyADMOS)
# have 1,000 training clips per ID; their per-ID test counts are not tabulated (None: not compared).
# MIMII itself (2019 here) splits the same clips as its public baseline does (``expected``).
_MIMII_TABLE1 = {
    "fan": {0: (1011, 407), 2: (1016, 359), 4: (1033, 348), 6: (1015, 361)},
    "pump": {0: (1006, 143), 2: (1005, 111), 4: (702, 100), 6: (1036, 102)},
    "slider": {0: (1068, 356), 2: (1068, 267), 4: (534, 178), 6: (534, 89)},
    "valve": {0: (991, 119), 2: (708, 120), 4: (1000, 120), 6: (992, 120)},
}
COUNTS_2020: dict[tuple[str, int], tuple[int, int | None, int | None]] = {
    **{(m, i): (nrm - 100, 100, abn) for m, ids in _MIMII_TABLE1.items() for i, (nrm, abn) in ids.items()},
    **{("ToyCar", i): (1000, None, None) for i in (1, 2, 3, 4)},
    **{("ToyConveyor", i): (1000, None, None) for i in (1, 2, 3)},
}


def name_of(year: int) -> str:
    """How messages name a year's data: ``DCASE 2023``, ``MIMII`` for 2019, ``own recordings`` for 0."""
    return "own recordings" if year == OWN else "MIMII" if year == 2019 else f"DCASE {year}"


def protocol_for(table: pd.DataFrame) -> str:
    """How an indexed folder's test clips are evaluated: as its year's evaluator does; own
    recordings as 2020 (per machine type), or as 2022-2025 (each domain's AUC, so that a new
    operating condition's clips are judged on their own) where some test clips are of the target
    domain."""
    year = int(table["year"].iloc[0])
    if year == OWN and ((table["split"] == "test") & (table["domain"] == "target")).any():
        return protocol_of(2022)
    return protocol_of(year)


def detect_year(table: pd.DataFrame) -> int:
    """The challenge year of an indexed folder, from its layout and names.

    Own recordings (no challenge names) give 0; MIMII's ``id_XX/normal`` folders 2019; DCASE 2020
    names (``normal_id_00_...``) 2020; ``source_test``/``target_test`` folders 2021; a single
    ``test/`` folder with section names 2022-2026: 2022 where a machine type has several sections
    or sections 03-05, 2026 for the machine types only it has, 2025 where there are
    ``supplemental`` clips or 2025 evaluation machine types, 2024 for its evaluation machine types,
    else 2023 (2023-2026 development sets look alike; name the year with ``--year`` to be exact).
    """
    if (table["scheme"] == "own").all():
        return OWN
    if (table["scheme"] == "mimii").any():
        return 2019
    if (table["scheme"] == "dcase2020").any():
        return 2020
    if table["folder"].isin(["source_test", "target_test"]).any():
        return 2021
    machines = set(table["machine"])
    if (table["section"] > 0).any():
        return 2022
    if machines & _ONLY_2026:
        return 2026
    if (table["split"] == "supplemental").any() or machines & set(SPECS[2025].eval_machines):
        return 2025
    if machines & set(SPECS[2024].eval_machines):
        return 2024
    return 2023


_FAMILIES = ((OWN,), (2019,), (2020,), (2021,), (2022, 2023, 2024, 2025, 2026))  # years whose clips look alike


def _family(table: pd.DataFrame) -> tuple[int, tuple[int, ...]]:
    """The year recognised from ``table`` and the years whose clips look as its clips do."""
    found = detect_year(table)
    return found, next(f for f in _FAMILIES if found in f)


def fits(year: int, table: pd.DataFrame) -> bool:
    """Whether ``year`` may be named for the clips of ``table`` (2022-2026 share their names and
    layout, so any of them may be named for such clips; 2020 for them would score them by 2020's
    metric, without domains)."""
    return year in _family(table)[1]


def check_year(year: int, table: pd.DataFrame | None = None) -> int:
    """``year`` if it is a known one and, given the indexed ``table``, one that :func:`fits` it."""
    if year not in SPECS:
        raise LayoutError(f"unknown DCASE year {year}; choose from {', '.join(map(str, YEARS))}")
    if table is not None:
        found, family = _family(table)
        if year not in family:
            *head, last = map(str, family)
            what, fits = (("own recordings", "no year") if found == OWN else
                          (f"named and laid out as DCASE {'-'.join(dict.fromkeys((str(family[0]), last)))} clips",
                           f"{', '.join(head)} or {last}" if head else last))  # fmt: skip
            raise LayoutError(f"--year {year} does not fit these clips: they are {what}; name {fits} (the year "
                              "decides the metric they are scored by)")  # fmt: skip
    return year


def expected(year: int, machine: str, section: int) -> SectionRow | None:
    """The counts a year's task description gives for a machine type and section (None: not known)."""
    if year == 2021:
        return TABLE1.get((machine, section))
    if year == 2019:  # MIMII: "fan" or "fan_6dB"; every SNR holds the same clips
        kind, _, level = machine.partition("_")
        ids = _MIMII_TABLE1.get(kind, {})
        if section not in ids:
            return None
        nrm, abn = ids[section]
        snr = float(level.removesuffix("dB")) if level.endswith("dB") else float("nan")
        none = DomainCounts(0, 0, 0, 0, float("nan"), 0.0)  # MIMII has no target domain
        return SectionRow(machine, section, DomainCounts(nrm - abn, abn, abn, 2 * abn, snr, 0.0), none,
                          f"MIMII, machine ID {section:02d}")  # fmt: skip
    if year == 2020:
        if (machine, section) not in COUNTS_2020:
            return None
        train, nrm, abn = COUNTS_2020[machine, section]
        total = None if nrm is None else nrm + abn
        none = DomainCounts(0, 0, 0, 0, float("nan"), 0.0)  # 2020 has no target domain
        return SectionRow(machine, section, DomainCounts(train, nrm, abn, total, float("nan"), 0.0), none,
                          f"DCASE 2020 development, machine ID {section:02d}")  # fmt: skip
    spec = SPECS[year]
    if section not in spec.dev_sections + spec.eval_sections:
        return None
    if machine not in spec.dev_machines + spec.eval_machines:
        return None
    if year == 2026:  # counts not tabulated: nothing to compare
        unknown = DomainCounts(None, None, None, None, float("nan"), 0.0)
        return SectionRow(machine, section, unknown, unknown, "DCASE 2026 section (counts not tabulated)")
    dev = machine in spec.dev_machines and section in spec.dev_sections
    nrm, abn = (50, 50) if dev else (None, None)
    src = DomainCounts(990, nrm, abn, 100, float("nan"), 0.0)
    tgt = DomainCounts(10, nrm, abn, 100, float("nan"), 0.0)
    return SectionRow(machine, section, src, tgt, f"DCASE {year} {'development' if dev else 'evaluation'} section")

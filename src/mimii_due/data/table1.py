"""The paper's Table 1 as data, and the comparison of an indexed copy of the dataset with it.

Sections 03-05 were the DCASE 2021 evaluation data, so the paper gives only their test totals
(normal + anomalous) per domain: for them the comparison checks totals.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

MACHINES = ("fan", "gearbox", "pump", "slider", "valve")
MACHINE_TITLES = {"fan": "Fan", "gearbox": "Gearbox", "pump": "Pump", "slider": "Slide rail",
                  "valve": "Valve"}  # fmt: skip
SECTIONS = (0, 1, 2, 3, 4, 5)


@dataclass(frozen=True)
class DomainCounts:
    train: int | None  # normal training clips (None where not tabulated: DCASE 2026)
    test_normal: int | None  # None where the paper keeps the breakdown secret (sections 03-05)
    test_anomaly: int | None
    test_total: int | None  # None where the counts are not known (DCASE 2020 toy machines' test sets)
    snr: float  # centre c of the SNR in dB
    snr_spread: float  # d: each clip's SNR is uniform over [c - d, c + d]


@dataclass(frozen=True)
class SectionRow:
    machine: str
    section: int
    source: DomainCounts
    target: DomainCounts
    description: str

    def domain(self, domain: str) -> DomainCounts:
        return self.source if domain == "source" else self.target


def _d(train, nrm, abn, snr, spread=0.0):
    if isinstance(nrm, int) and abn is None:  # only a total given
        return DomainCounts(train, None, None, nrm, snr, spread)
    return DomainCounts(train, nrm, abn, nrm + abn, snr, spread)


# Table 1 of the paper: (train, test normal, test anomaly | test total, SNR c, SNR d) per domain.
_ROWS = [
    ("fan", 0, _d(1000, 100, 100, -9), _d(3, 100, 100, -9), "Wind strength variations between domains"),
    ("fan", 1, _d(1000, 100, 100, -12), _d(3, 100, 100, -12),
     "Two products from the same manufacturer with size variations between domains"),
    ("fan", 2, _d(1000, 100, 100, -9), _d(3, 100, 100, -9), "Factory noise variations between domains"),
    ("fan", 3, _d(1000, 200, None, -9, 1.5), _d(3, 200, None, -9, 1.5),
     "Wind strength variations between domains"),
    ("fan", 4, _d(1000, 200, None, -9, 1.5), _d(3, 200, None, -9, 1.5),
     "Wind strength variations between domains"),
    ("fan", 5, _d(1000, 200, None, -9, 1.5), _d(3, 200, None, -9, 1.5),
     "Wind temperature variations between domains"),
    ("gearbox", 0, _d(1001, 165, 105, -15), _d(3, 108, 108, -15), "Voltage variations between domains"),
    ("gearbox", 1, _d(1008, 108, 108, -15), _d(3, 108, 108, -15), "Arm-length variations between domains"),
    ("gearbox", 2, _d(1008, 108, 138, -15), _d(3, 105, 120, -15), "Weight variations between domains"),
    ("gearbox", 3, _d(1005, 234, None, -15, 1.5), _d(3, 286, None, -15, 1.5),
     "Voltage variations between domains"),
    ("gearbox", 4, _d(1092, 252, None, -15, 1.5), _d(3, 234, None, -15, 1.5),
     "Arm-length variations between domains"),
    ("gearbox", 5, _d(1008, 210, None, -17, 1.5), _d(3, 212, None, -17, 1.5),
     "Voltage and arm-length variations between domains"),
    ("pump", 0, _d(1000, 100, 100, -9), _d(3, 100, 100, -9),
     "Submersible pump; viscosity variations b/w domains"),
    ("pump", 1, _d(1000, 100, 100, -12), _d(3, 100, 100, -18), "SNR variations between domains"),
    ("pump", 2, _d(1000, 100, 100, -9), _d(3, 100, 100, -9),
     "Multiple pumps running simultaneously in the target domain; anomaly condition indicating an "
     "abnormality in one or more of the pumps"),
    ("pump", 3, _d(1000, 200, None, -11, 1.5), _d(3, 200, None, -11, 1.5),
     "Submersible pump; viscosity variations b/w domains"),
    ("pump", 4, _d(1000, 200, None, -9, 1.5), _d(3, 200, None, -9, 1.5),
     "Factory noise variations between domains"),
    ("pump", 5, _d(1000, 200, None, -9, 1.5), _d(3, 200, None, -9, 1.5),
     "Multiple pumps running simultaneously in the target domain; anomaly condition indicating an "
     "abnormality in one or more of the pumps"),
    ("slider", 0, _d(1000, 100, 100, -12), _d(3, 100, 100, -12),
     "Ball screw type; velocity variations between domains"),
    ("slider", 1, _d(1000, 100, 100, -12), _d(3, 98, 100, -12),
     "Ball screw type; operation mode changes b/w domains"),
    ("slider", 2, _d(1000, 110, 102, -10), _d(3, 102, 102, -10),
     "Belt type; belt material variations between domains"),
    ("slider", 3, _d(1000, 200, None, -12, 1.5), _d(3, 200, None, -12, 1.5),
     "Ball screw type; velocity variations between domains"),
    ("slider", 4, _d(1000, 200, None, -14, 1.5), _d(3, 200, None, -14, 1.5),
     "Ball screw type; operation mode changes b/w domains"),
    ("slider", 5, _d(1000, 204, None, -12, 1.5), _d(3, 203, None, -12, 1.5),
     "Belt type; belt material variations between domains"),
    ("valve", 0, _d(1000, 100, 100, -9), _d(3, 100, 100, -12), "Open/close timing variations between domains"),
    ("valve", 1, _d(1000, 100, 100, -9), _d(3, 100, 100, -12), "No pump running in the source domain"),
    ("valve", 2, _d(1000, 100, 100, -12), _d(3, 100, 100, -10),
     "Two valves running simultaneously in the target domain; anomaly condition indicates a small "
     "piece of metal is caught in one of the valves"),
    ("valve", 3, _d(1000, 200, None, -9, 1.5), _d(3, 200, None, -9, 1.5),
     "Open/close timing variations between domains"),
    ("valve", 4, _d(1000, 200, None, -9, 1.5), _d(3, 200, None, -9, 1.5),
     "No pump running in the source domain; water flowing in the target domain"),
    ("valve", 5, _d(1000, 200, None, -12, 1.5), _d(3, 200, None, -12, 1.5),
     "Two valves running simultaneously in the target domain; anomaly condition indicates a small "
     "piece of metal is caught in one of the valves"),
]  # fmt: skip

TABLE1: dict[tuple[str, int], SectionRow] = {(m, s): SectionRow(m, s, src, tgt, desc) for m, s, src, tgt, desc in _ROWS}

# The paper's "Total" row: source train, source test, target train, target test.
TOTALS = {"source_train": 30122, "source_test": 6274, "target_train": 90, "target_test": 6182}


def expected_counts() -> pd.DataFrame:
    """Table 1 as one row per machine, section and domain."""
    rows = []
    for row in TABLE1.values():
        for domain in ("source", "target"):
            d = row.domain(domain)
            rows.append({"machine": row.machine, "section": row.section, "domain": domain,
                         "train": d.train, "test_normal": d.test_normal, "test_anomaly": d.test_anomaly,
                         "test_total": d.test_total, "snr": d.snr, "snr_spread": d.snr_spread,
                         "description": row.description})  # fmt: skip
    return pd.DataFrame(rows)


def compare(table: pd.DataFrame, year: int = 2021) -> pd.DataFrame:
    """Counts of an indexed dataset beside its year's (Table 1 for 2021), one row per
    machine/section/domain found (domain ``?`` for evaluation names that do not carry one: their
    test total is compared with both domains' together).

    Returns a DataFrame with ``found_*`` and ``paper_*`` columns, ``differences`` (a sentence,
    empty when the counts agree) and ``differs`` (the names of the counts that differ). Machines or
    sections not in Table 1 are reported as such.
    Where a section's test labels are unknown (evaluation data) only the totals are compared.
    """
    from mimii_due.data.years import OWN, expected, name_of

    out = []
    table = table.assign(domain=table["domain"].fillna("?"))
    keys = table[["machine", "section", "domain"]].drop_duplicates().itertuples(index=False)
    for machine, section, domain in sorted(keys):
        sub = table[(table.machine == machine) & (table.section == section) & (table.domain == domain)]
        test = sub[sub.split == "test"]
        found = {
            "train": int((sub.split == "train").sum()),
            "test_normal": int((test.label == "normal").sum()),
            "test_anomaly": int((test.label == "anomaly").sum()),
            "test_total": len(test),
        }
        labelled = test.label.notna().all() and len(test) > 0
        row = expected(year, machine, int(section))
        rec = {"machine": machine, "section": int(section), "domain": domain}
        rec.update({f"found_{k}": v for k, v in found.items()})
        diffs, keys_differ = [], []
        where = "Table 1" if year == 2021 else f"the {name_of(year)} counts"
        if row is None:
            rec.update({f"paper_{k}": None for k in found})
            if year != OWN:  # own recordings have no counts to be compared with
                diffs.append(f"not in {where}")
        else:
            paper = row.domain(domain) if domain != "?" else _both(row)
            for k in found:
                rec[f"paper_{k}"] = getattr(paper, k)
            checks = ["train", "test_total"] if domain != "?" else ["test_total"]
            if labelled and paper.test_normal is not None:
                checks += ["test_normal", "test_anomaly"]
            for k in checks:
                if getattr(paper, k) is None:
                    continue
                if found[k] != getattr(paper, k):
                    diffs.append(f"{k} {found[k]} != {getattr(paper, k)}")
                    keys_differ.append(k)
        rec["differences"] = "; ".join(diffs)
        rec["differs"] = ", ".join(keys_differ) if row is not None or year == OWN else f"not in {where}"
        out.append(rec)
    return pd.DataFrame(out)


def _both(row: SectionRow) -> DomainCounts:
    """Both domains' counts together (for test clips whose names do not say their domain)."""
    s, t = row.source, row.target
    total = None if s.test_total is None or t.test_total is None else s.test_total + t.test_total
    train = None if s.train is None or t.train is None else s.train + t.train
    return DomainCounts(train, None, None, total, s.snr, s.snr_spread)

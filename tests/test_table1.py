from typer.testing import CliRunner

from mimii_due.cli import app
from mimii_due.data.index import index
from mimii_due.data.table1 import TABLE1, TOTALS, compare, expected_counts


def test_table1_rows_and_the_papers_totals():
    assert len(TABLE1) == 30
    e = expected_counts()
    assert e[e.domain == "source"].train.sum() == TOTALS["source_train"]
    assert e[e.domain == "target"].train.sum() == TOTALS["target_train"]
    # The paper's Total row for test clips (6274 / 6182) does not equal the sum of its own rows
    # (6244 / 6194); we keep the rows, which are what a copy of the dataset is compared with.
    assert e[e.domain == "source"].test_total.sum() == 6244
    assert e[e.domain == "target"].test_total.sum() == 6194
    assert TABLE1[("pump", 1)].target.snr == -18 and TABLE1[("valve", 0)].target.snr == -12


def test_compare_flags_each_difference(tiny_dataset):
    c = compare(index(tiny_dataset))
    row = c[(c.machine == "fan") & (c.section == 0) & (c.domain == "target")].iloc[0]
    assert row.found_train == 3 and row.paper_train == 3
    assert "train" not in row.differs.split(", ") and "test_total" in row.differs
    src = c[(c.machine == "fan") & (c.section == 0) & (c.domain == "source")].iloc[0]
    assert "train" in src.differs.split(", ")


def test_info_command_prints_comparison_and_strict_fails(tiny_dataset):
    r = CliRunner().invoke(app, ["info", str(tiny_dataset)])
    assert r.exit_code == 0, r.output
    assert "Table 1" in r.output and "fan" in r.output and "valve" in r.output
    r = CliRunner().invoke(app, ["info", "--strict", str(tiny_dataset)])
    assert r.exit_code != 0

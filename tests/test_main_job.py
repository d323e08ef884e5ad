"""The main job at its default size (slow: several minutes; `pytest -m slow`)."""

import pytest
from typer.testing import CliRunner

from mimii_due.cli import app


@pytest.mark.slow
def test_the_main_job_trains_the_ae_and_the_ensemble_and_writes_the_report(tmp_path):
    r = CliRunner().invoke(app, ["run", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert "ae: official score" in r.output and "ensemble: official score" in r.output
    assert (tmp_path / "o" / "report.html").exists() and "report:" in r.output

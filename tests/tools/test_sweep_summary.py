"""fer-sweep-summary: the summary of a sweep that was cut off before its end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fer_lightning.tools.sweep_summary import main


def test_a_cut_off_sweep_gets_its_summary_with_the_unfinished_job(tmp_path: Path, capsys) -> None:
    finished, cut_off = tmp_path / "0", tmp_path / "1"
    for job_dir, model in ((finished, "a"), (cut_off, "b")):
        (job_dir / ".hydra").mkdir(parents=True)
        (job_dir / ".hydra" / "overrides.yaml").write_text(f"- model={model}\n")
    (finished / "metrics.json").write_text(json.dumps({"val/acc": 0.6, "test/acc": 0.59, "params": 1000.0}))
    main([str(tmp_path)])
    table = capsys.readouterr().out
    assert "2 jobs: 1 ok, 1 failed" in table
    assert "model=b" in table
    assert "no result: killed, or still running" in table
    assert (tmp_path / "summary.md").read_text() in table + "\n"
    assert "params" in (tmp_path / "summary.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_a_directory_without_jobs_is_named(tmp_path: Path, make: str, capsys) -> None:
    sweep_dir = tmp_path / "sweep"
    if make == "empty":
        sweep_dir.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main([str(sweep_dir)])
    assert exit_info.value.code == 2
    assert str(sweep_dir) in capsys.readouterr().err

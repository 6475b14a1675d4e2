"""fer-keep-run: a finished run's small files kept in the run's layout, so the summary and the report read them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fer_lightning.sweep.summary import collect_rows
from fer_lightning.tools.keep_run import keep_run, main
from fer_lightning.utils.html_report import write_html_report
from tests.tools.test_html_report import make_run


def finished_run(run_dir: Path) -> Path:
    make_run(run_dir, ["model=mini_xception", "seed=3"], [0.5, 0.6, 0.55])
    (run_dir / "speed.json").write_text(json.dumps({"choice": {"label": "bf16 channels_last"}}))
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"\0" * 4096)
    return run_dir


def test_kept_files_are_the_runs_text_in_its_layout_and_no_checkpoint(tmp_path: Path, capsys) -> None:
    run_dir = finished_run(tmp_path / "logs" / "run")
    dest = tmp_path / "experiments" / "study" / "mini_xception"
    main([str(run_dir), str(dest)])
    kept = sorted(str(path.relative_to(dest)) for path in dest.rglob("*") if path.is_file())
    assert kept == sorted(
        [
            ".hydra/overrides.yaml",
            "csv/metrics.csv",
            "metrics.json",
            "per_class_test.json",
            "per_class_test.md",
            "speed.json",
        ]
    )
    for name in kept:
        assert (dest / name).read_bytes() == (run_dir / name).read_bytes()
    assert f"kept {len(kept)} files" in capsys.readouterr().out
    # the kept row reads as the run does: its summary row and its report's learning curves
    (row,) = collect_rows(dest.parent)
    assert row["overrides"] == ["model=mini_xception", "seed=3"]
    assert row["status"] == "ok"
    html = write_html_report(dest).read_text()
    assert "From <code>csv/metrics.csv</code>" in html
    assert "learning curves: not available" not in html


def test_an_unfinished_run_is_named_and_nothing_is_copied(tmp_path: Path, capsys) -> None:
    run_dir = make_run(tmp_path / "run", ["model=a"], [0.5], tested=False)
    (run_dir / "metrics.json").unlink(missing_ok=True)
    dest = tmp_path / "kept"
    with pytest.raises(SystemExit) as exit_info:
        main([str(run_dir), str(dest)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert str(run_dir) in error
    assert "metrics.json" in error
    assert "not a finished run" in error
    assert not dest.exists()


def test_files_already_kept_are_replaced_only_when_asked(tmp_path: Path) -> None:
    run_dir = finished_run(tmp_path / "run")
    dest = tmp_path / "kept"
    keep_run(run_dir, dest)
    (dest / "metrics.json").write_text("{}")
    with pytest.raises(ValueError, match=r"already holds metrics\.json.*--overwrite"):
        keep_run(run_dir, dest)
    assert (dest / "metrics.json").read_text() == "{}"
    keep_run(run_dir, dest, overwrite=True)
    assert (dest / "metrics.json").read_bytes() == (run_dir / "metrics.json").read_bytes()

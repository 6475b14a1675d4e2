"""Sweep summaries: every job a row (failed, killed, skipped ones too), and mean ± std per configuration when the
sweep varies the seed."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fer_lightning.sweep.summary import collect_rows, sort_rows, write_summary


def read_summary(sweep_dir: Path) -> list[dict]:
    with (sweep_dir / "summary.csv").open() as file:
        return list(csv.DictReader(file))


def fake_job(sweep_dir: Path, name: str, overrides: list[str], metrics: dict | None = None, error: str = "") -> None:
    job_dir = sweep_dir / name
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    if metrics is not None:
        (job_dir / "metrics.json").write_text(json.dumps(metrics))
    if metrics is not None or error:
        record = {"job": int(name), "overrides": overrides, "status": "failed" if error else "ok", "error": error}
        (job_dir / "job.json").write_text(json.dumps(record))


def test_summary_sorts_by_val_acc_and_keeps_failed_and_killed_jobs(tmp_path: Path) -> None:
    fake_job(tmp_path, "0", ["lr=1", "seed=1"], {"val/acc": 0.40, "test/acc": 0.38, "epochs": 3, "wall_time_s": 75.0})
    fake_job(tmp_path, "1", ["lr=2", "seed=1"], error="ValueError: Invalid learning rate: -1")
    fake_job(tmp_path, "2", ["lr=3", "seed=1"], {"val/acc": 0.55, "test/acc": 0.52, "epochs": 3, "wall_time_s": 9.5})
    fake_job(tmp_path, "3", ["lr=4", "seed=1"])  # started (Hydra wrote its overrides), never finished
    (tmp_path / ".submitit").mkdir()  # launcher folders are not jobs

    write_summary(tmp_path, sort_rows(collect_rows(tmp_path)))

    rows = read_summary(tmp_path)
    assert [(r["job"], r["status"]) for r in rows] == [("2", "ok"), ("0", "ok"), ("1", "failed"), ("3", "failed")]
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[0]["overrides"] == "lr=3 seed=1"
    assert float(rows[0]["val/acc"]) == 0.55
    assert rows[2]["error"] == "ValueError: Invalid learning rate: -1"
    assert "no result" in rows[3]["error"]
    markdown = (tmp_path / "summary.md").read_text()
    assert "4 jobs: 2 ok, 2 failed" in markdown
    assert "shared by every job: `seed=1`" in markdown
    assert "| 1 | 2 | ok | lr=3 | 0.5500 | 0.5200 |  | 3 | 9.5 s |  |" in markdown
    assert "1.2 min" in markdown


def metrics(val: float, test: float, f1: float = 0.1) -> dict:
    return {"val/acc": val, "test/acc": test, "test/f1_macro": f1, "epochs": 2, "wall_time_s": 1.0}


def test_a_sweep_over_seeds_is_also_summarised_per_configuration(tmp_path: Path) -> None:
    runs = {  # (lr, seed): (val/acc, test/acc)
        ("1", "0"): (0.50, 0.48),
        ("1", "1"): (0.54, 0.50),
        ("1", "2"): (0.58, 0.55),
        ("2", "0"): (0.60, 0.58),
        ("2", "1"): (0.62, 0.57),
    }
    for num, ((lr, seed), (val, test)) in enumerate(runs.items()):
        fake_job(tmp_path, str(num), ["model=x", f"lr={lr}", f"seed={seed}"], metrics(val, test))
    fake_job(tmp_path, "5", ["model=x", "lr=2", "seed=2"], error="RuntimeError: out of memory")
    fake_job(tmp_path, "6", ["model=x", "lr=3", "seed=0"], error="ValueError: Invalid learning rate: -1")

    write_summary(tmp_path, sort_rows(collect_rows(tmp_path)))

    with (tmp_path / "summary_by_config.csv").open() as file:
        configs = list(csv.DictReader(file))
    assert [(c["rank"], c["config"], c["n"], c["failed"]) for c in configs] == [
        ("1", "model=x lr=2", "2", "1"),  # best mean val/acc first; the failed seed is counted, not averaged
        ("2", "model=x lr=1", "3", "0"),
        ("3", "model=x lr=3", "0", "1"),  # nothing to average: last
    ]
    assert configs[1]["seeds"] == "0 1 2"
    assert float(configs[1]["val/acc_mean"]) == pytest.approx(0.54)
    assert float(configs[1]["val/acc_std"]) == pytest.approx(statistics.stdev([0.50, 0.54, 0.58]))
    assert float(configs[0]["test/acc_mean"]) == pytest.approx(0.575)
    assert float(configs[0]["test/acc_std"]) == pytest.approx(statistics.stdev([0.58, 0.57]))
    assert float(configs[0]["test/f1_macro_mean"]) == pytest.approx(0.1)
    assert configs[2]["val/acc_mean"] == configs[2]["val/acc_std"] == ""
    assert len(read_summary(tmp_path)) == 7  # the per-run rows stay
    markdown = (tmp_path / "summary.md").read_text()
    by_config, runs_table = markdown.split("## Runs")
    assert "| 1 | lr=2 | 2 | 1 | 0 1 2 | 0.6100 ± 0.0141 | 0.5750 ± 0.0071 | 0.1000 ± 0.0000 |" in by_config
    assert "| 3 | lr=3 | 0 | 1 | 0 |  |  |  |" in by_config
    assert "| 1 | 4 | ok | lr=2 seed=1 | 0.6200 |" in runs_table


def test_a_single_run_per_configuration_has_no_std(tmp_path: Path) -> None:
    fake_job(tmp_path, "0", ["lr=1", "seed=0"], metrics(0.5, 0.4))
    fake_job(tmp_path, "1", ["lr=1", "seed=1"], metrics(0.7, 0.6))
    fake_job(tmp_path, "2", ["lr=2", "seed=0"], metrics(0.6, 0.5))
    write_summary(tmp_path, sort_rows(collect_rows(tmp_path)))
    markdown = (tmp_path / "summary.md").read_text()
    assert "| 1 | lr=1 | 2 | 0 | 0 1 | 0.6000 ± 0.1414 |" in markdown
    assert "| 2 | lr=2 | 1 | 0 | 0 | 0.6000 | 0.5000 | 0.1000 |" in markdown


def test_without_varying_seeds_there_is_no_per_configuration_summary(tmp_path: Path) -> None:
    (tmp_path / "summary_by_config.csv").write_text("stale\n")  # from an earlier summary of this directory
    fake_job(tmp_path, "0", ["lr=1", "seed=0"], metrics(0.5, 0.4))
    fake_job(tmp_path, "1", ["lr=2", "seed=0"], metrics(0.6, 0.5))
    write_summary(tmp_path, sort_rows(collect_rows(tmp_path)))
    assert not (tmp_path / "summary_by_config.csv").exists()
    markdown = (tmp_path / "summary.md").read_text()
    assert "By configuration" not in markdown
    assert "## Runs" not in markdown


def test_skipped_and_resumed_jobs_are_rows_with_their_metrics(tmp_path: Path) -> None:
    fake_job(tmp_path, "0", ["lr=1", "resume=True"], metrics(0.5, 0.4))
    fake_job(tmp_path, "1", ["lr=2", "resume=True"], metrics(0.6, 0.5))
    fake_job(tmp_path, "2", ["lr=3"], metrics(0.4, 0.3))  # written by the first, interrupted run
    for job, note in (("0", "skipped"), ("1", "from interrupted.ckpt")):
        record = json.loads((tmp_path / job / "job.json").read_text())
        (tmp_path / job / "job.json").write_text(json.dumps(record | {"resume": note}))

    write_summary(tmp_path, sort_rows(collect_rows(tmp_path)))

    rows = read_summary(tmp_path)
    assert [(r["job"], r["status"], r["overrides"], r["resume"]) for r in rows] == [
        ("1", "ok", "lr=2", "from interrupted.ckpt"),  # resume=True is how it ran, not which job it is
        ("0", "ok", "lr=1", "skipped"),
        ("2", "ok", "lr=3", ""),
    ]
    markdown = (tmp_path / "summary.md").read_text()
    assert "3 jobs: 3 ok, 0 failed (1 skipped as finished earlier, 1 resumed from a checkpoint)" in markdown
    assert "| 2 | 0 | ok | lr=1 | 0.5000 | 0.4000 | 0.1000 | 2 | 1.0 s |  | skipped |" in markdown


def test_a_leaderboard_has_view_accuracy_and_cost_columns_where_jobs_report_them(tmp_path: Path) -> None:
    costs = {"params": 56951.0, "macs": 5.5e6, "train_images_per_s": 812.4, "test_flip/acc": 0.61}
    fake_job(tmp_path, "0", ["model=a"], metrics(0.60, 0.58) | costs)
    fake_job(tmp_path, "1", ["model=b"], metrics(0.50, 0.49))  # an older job without them: empty cells

    write_summary(tmp_path, sort_rows(collect_rows(tmp_path)))

    rows = read_summary(tmp_path)
    assert list(rows[0]).index("test_flip/acc") == list(rows[0]).index("test/acc") + 1
    assert (rows[0]["test_flip/acc"], rows[0]["params"], rows[1]["params"]) == ("0.61", "56951.0", "")
    markdown = (tmp_path / "summary.md").read_text()
    assert "| val/acc | test/acc | test_flip/acc | test/f1_macro | epochs | wall_time_s | params | macs |" in markdown
    assert "| 0.6000 | 0.5800 | 0.6100 | 0.1000 | 2 | 1.0 s | 56,951 | 5.5M | 812 |" in markdown


def test_a_plain_sweep_has_no_leaderboard_columns(tmp_path: Path) -> None:
    fake_job(tmp_path, "0", ["lr=1"], metrics(0.60, 0.58))
    write_summary(tmp_path, sort_rows(collect_rows(tmp_path)))
    assert not {"params", "macs", "train_images_per_s", "test_flip/acc"} & set(read_summary(tmp_path)[0])


def test_a_job_with_a_damaged_file_is_a_failed_row_naming_it_and_the_others_are_kept(tmp_path: Path) -> None:
    fake_job(tmp_path, "0", ["model=a"], metrics(0.6, 0.58))
    fake_job(tmp_path, "1", ["model=b"], metrics(0.5, 0.48))
    fake_job(tmp_path, "2", ["model=c"])
    (tmp_path / "1" / "metrics.json").write_text('{"val/acc": 0.5, "test/a')  # cut off mid-write
    (tmp_path / "2" / ".hydra" / "overrides.yaml").write_text("- model=c\n- [unclosed\n")
    rows = {row["job"]: row for row in collect_rows(tmp_path)}
    assert rows[0]["status"] == "ok"
    assert rows[1]["status"] == rows["2"]["status"] == "failed"
    assert rows[1]["error"].startswith(f"{tmp_path / '1' / 'metrics.json'}: cannot be read (JSONDecodeError")
    assert rows["2"]["error"].startswith(f"{tmp_path / '2' / '.hydra' / 'overrides.yaml'}: cannot be read (")
    write_summary(tmp_path, sort_rows(list(rows.values())))
    assert len(read_summary(tmp_path)) == 3

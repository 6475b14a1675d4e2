"""Sweep summaries of k-fold cross-validation: a sweep over `data.fold` is grouped by its overrides minus the fold
(and the seed), mean ± std over the folds; and one real multirun over 2 folds of the synthetic data."""

from __future__ import annotations

import csv
import re
import statistics
from pathlib import Path

import pytest

from fer_lightning.errors import USER_ERROR_EXIT
from fer_lightning.sweep.summary import collect_rows, sort_rows, write_summary
from tests.scripts import run_script
from tests.sweep.test_summary import fake_job, metrics, read_summary

KFOLD = ["data.split=kfold", "data.folds=5"]


def read_configs(sweep_dir: Path) -> list[dict]:
    with (sweep_dir / "summary_by_config.csv").open() as file:
        return list(csv.DictReader(file))


def test_a_sweep_over_folds_is_summarised_per_configuration(tmp_path: Path) -> None:
    val = {"a": [0.50, 0.52, 0.54, 0.56, 0.58], "b": [0.60, 0.61, 0.62, 0.63, 0.64]}
    for num, (model, fold) in enumerate((model, fold) for model in "ab" for fold in range(5)):
        overrides = [f"model={model}", *KFOLD, f"data.fold={fold}", "seed=0"]
        fake_job(tmp_path, str(num), overrides, metrics(val[model][fold], 0.4 + fold / 100))

    write_summary(tmp_path, sort_rows(collect_rows(tmp_path)))

    configs = read_configs(tmp_path)
    assert [(c["rank"], c["config"], c["n"], c["failed"]) for c in configs] == [
        ("1", "model=b data.split=kfold data.folds=5", "5", "0"),  # the fold (and the seed) left out
        ("2", "model=a data.split=kfold data.folds=5", "5", "0"),
    ]
    assert (configs[0]["folds"], configs[0]["seeds"]) == ("0 1 2 3 4", "0")
    assert float(configs[1]["val/acc_mean"]) == pytest.approx(0.54)
    assert float(configs[1]["val/acc_std"]) == pytest.approx(statistics.stdev(val["a"]))
    assert float(configs[0]["test/acc_mean"]) == pytest.approx(0.42)
    assert float(configs[0]["test/acc_std"]) == pytest.approx(statistics.stdev([0.40, 0.41, 0.42, 0.43, 0.44]))
    assert len(read_summary(tmp_path)) == 10  # the per-fold rows stay
    by_config, runs_table = (tmp_path / "summary.md").read_text().split("## Runs")
    assert "## By configuration (mean ± std over folds, best mean val/acc first)" in by_config
    assert "| rank | config | n | failed | folds | val/acc | test/acc | test/f1_macro |" in by_config  # no seeds
    assert "| 2 | model=a | 5 | 0 | 0 1 2 3 4 | 0.5400 ± 0.0316 | 0.4200 ± 0.0158 | 0.1000 ± 0.0000 |" in by_config
    assert "| model=a data.fold=0 |" in runs_table


def test_a_grid_of_folds_and_seeds_is_grouped_over_both(tmp_path: Path) -> None:
    values = {(0, 0): 0.50, (0, 1): 0.54, (1, 0): 0.58, (1, 1): 0.62}  # (fold, seed): val/acc
    for num, ((fold, seed), val) in enumerate(values.items()):
        fake_job(tmp_path, str(num), ["model=a", f"data.fold={fold}", f"seed={seed}"], metrics(val, 0.5))
    fake_job(tmp_path, "4", ["model=a", "data.fold=2", "seed=0"], error="RuntimeError: out of memory")

    write_summary(tmp_path, sort_rows(collect_rows(tmp_path)))

    (config,) = read_configs(tmp_path)
    assert (config["config"], config["n"], config["failed"]) == ("model=a", "4", "1")  # the failed fold counted
    assert (config["folds"], config["seeds"]) == ("0 1 2", "0 1")  # each listed once
    assert float(config["val/acc_mean"]) == pytest.approx(0.56)
    assert float(config["val/acc_std"]) == pytest.approx(statistics.stdev(values.values()))
    markdown = (tmp_path / "summary.md").read_text()
    assert "(mean ± std over folds and seeds, best mean val/acc first)" in markdown
    assert "| rank | config | n | failed | seeds | folds | val/acc |" in markdown
    assert "| 1 | (the shared overrides) | 4 | 1 | 0 1 | 0 1 2 | 0.5600 ± 0.0516 |" in markdown


def test_a_single_fold_run_has_no_per_configuration_summary(tmp_path: Path) -> None:
    fake_job(tmp_path, "0", ["model=a", *KFOLD, "data.fold=0"], metrics(0.5, 0.4))
    fake_job(tmp_path, "1", ["model=b", *KFOLD, "data.fold=0"], metrics(0.6, 0.5))
    write_summary(tmp_path, sort_rows(collect_rows(tmp_path)))
    assert not (tmp_path / "summary_by_config.csv").exists()
    assert "By configuration" not in (tmp_path / "summary.md").read_text()


SYNTHETIC = [  # the embedded synthetic data, small: 140 / 42 / 42 rows, drawn in a second
    "data=synthetic",
    "+data.synthetic.num_train=140",
    "+data.synthetic.num_val=42",
    "+data.synthetic.num_test=42",
]
TINY = ["model=tiny_xception", "debug=limit", "trainer.max_epochs=1", "data.batch_size=8", "logger=none"]


def test_a_kfold_multirun_on_synthetic_data_reports_mean_and_std_over_folds(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run_script(
        "train.py", "-m", *SYNTHETIC, f"data.path={tmp_path / 'synthetic.csv'}", *TINY,
        "data.split=kfold", "data.folds=2", "data.fold=0,1", f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_summary(sweep_dir)
    folds = sorted((r["status"], *(o for o in r["overrides"].split() if o.startswith("data.fold="))) for r in rows)
    assert folds == [("ok", "data.fold=0"), ("ok", "data.fold=1")]
    (config,) = read_configs(sweep_dir)
    assert (config["n"], config["failed"], config["folds"]) == ("2", "0", "0 1")
    assert 0.0 <= float(config["val/acc_mean"]) <= 1.0
    assert float(config["val/acc_std"]) >= 0.0
    markdown = (sweep_dir / "summary.md").read_text()
    assert "mean ± std over folds" in markdown
    # val/acc, test/acc and test/f1_macro: mean ± std over the 2 folds
    assert re.search(r"\| 1 \| \(the shared overrides\) \| 2 \| 0 \| 0 1 \|( \d\.\d{4} ± \d\.\d{4} \|){3}", markdown)
    logs = "".join(path.read_text() for path in sweep_dir.glob("*/*.log"))
    # 224 rows: Training + PublicTest (182) folded in halves, PrivateTest (42) the test split of both folds
    for fold in (0, 1):
        assert f"k-fold: fold {fold} of 2 over 182 train_val rows (seed 0): 91 train, 91 val; 42 test" in logs


def test_train_refuses_a_fold_out_of_range_before_reading_the_data(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "fer2013.csv"
    result = run_script(
        "train.py", "data.split=kfold", "data.folds=5", "data.fold=5", f"data.path={missing}",
        f"hydra.run.dir={tmp_path}/run", cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == USER_ERROR_EXIT, result.stderr[-3000:]
    assert "error: data.fold=5: expected an integer in [0, data.folds = 5)" in result.stderr
    assert "Traceback" not in result.stderr

"""A sweep's summary: one row per job directory, and per configuration (mean ± std over seeds and / or folds) when
seeds or k-fold folds vary.

`summary.csv` and `summary.md` list every job of the sweep directory (skipped, resumed, failed and killed ones
included), best val/acc first. When the sweep varies `seed` or `data.fold` (k-fold cross-validation,
`data.split=kfold`), `summary_by_config.csv` and a second table in `summary.md` group the runs by their overrides
minus `seed` and `data.fold`: n runs, mean ± sample std (n - 1) of val/acc, test/acc and test/f1_macro, best mean
val/acc first. Over folds, val/acc is the cross-validation estimate (each fold's val is its held-out fold), test/acc
the spread of the k models on the one untouched test split.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

JOB_FILE, ERROR_FILE, METRICS_FILE = "job.json", "error.txt", "metrics.json"
OVERRIDES_FILE = ".hydra/overrides.yaml"  # Hydra's, in every job directory
METRIC_COLUMNS = ("val/acc", "test/acc", "test/f1_macro", "epochs", "wall_time_s")
# shown when some job has them: the model's size and speed (training.model_costs / training_rate) and PrivateTest
# under `report_tta`'s views (`test_flip/acc`, ...), for leaderboards (experiment=leaderboard)
COST_COLUMNS = ("params", "macs", "train_images_per_s")
COLUMNS = ("rank", "job", "status", "overrides", *METRIC_COLUMNS, "error", "resume", "dir")
AGGREGATED = ("val/acc", "test/acc", "test/f1_macro")
CONFIG_COLUMNS = (
    "rank",
    "config",
    "n",
    "failed",
    "seeds",
    "folds",
    *(f"{metric}_{stat}" for metric in AGGREGATED for stat in ("mean", "std")),
)
SEED_KEY = "seed"
FOLD_KEY = "data.fold"  # k-fold cross-validation: one job per fold
REPEAT_KEYS = (SEED_KEY, FOLD_KEY)  # what repeats a configuration: grouped over, not part of it


def override_key(override: str) -> str:
    """`+seed=3` -> `seed`: the config key an override sets."""
    return override.split("=", 1)[0].lstrip("+~")


def without(overrides: Iterable[str], *keys: str) -> list[str]:
    return [o for o in overrides if override_key(o) not in keys]


def job_identity(overrides: Iterable[str]) -> list[str]:
    """What makes a job that job: its overrides minus `resume=...` (re-running a sweep with resume=true adds it)."""
    return without(overrides, "resume")


def read_overrides(path: Path) -> list[str]:
    """A job's `.hydra/overrides.yaml` (Hydra's list of command-line overrides)."""
    overrides = OmegaConf.load(path)
    if not OmegaConf.is_list(overrides):
        raise ValueError(f"expected a list of overrides, got {type(overrides).__name__}")
    return [str(override) for override in overrides]


def read_job_files(files: dict[str, Path]) -> tuple[dict, dict, str]:
    """(job.json record, metrics.json, problem) of one job. A damaged file (cut off, not JSON / YAML) is named in
    `problem`, the row's error, so that one broken job never stops the summary of the others."""
    record, metrics = {}, {}
    for name, path in files.items():
        if not path.exists() or (name == OVERRIDES_FILE and "overrides" in record):
            continue
        try:
            if name == OVERRIDES_FILE:
                record["overrides"] = read_overrides(path)
            else:
                (record if name == JOB_FILE else metrics).update(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError, yaml.YAMLError) as error:  # JSON and decoding errors are ValueErrors
            return record, {}, f"{path}: cannot be read ({type(error).__name__}: {error})"
    return record, metrics, ""


def collect_rows(sweep_dir: Path) -> list[dict]:
    """One row per job directory (one holding `job.json`, `metrics.json` or Hydra's `.hydra/`)."""
    rows = []
    for job_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = {name: job_dir / name for name in (JOB_FILE, METRICS_FILE, OVERRIDES_FILE)}
        if not any(path.exists() for path in files.values()):
            continue  # not a job directory
        record, metrics, damaged = read_job_files(files)
        row = {"job": record.get("job", job_dir.name), "overrides": job_identity(record.get("overrides", []))}
        row |= {key: metrics.get(key) for key in METRIC_COLUMNS}
        row |= {key: value for key, value in metrics.items() if key in COST_COLUMNS or is_view_accuracy(key)}
        row["error"] = damaged or record.get("error") or ("" if metrics else "no result: killed, or still running")
        row["status"] = "failed" if row["error"] else "ok"
        row["resume"] = record.get("resume", "")
        row["dir"] = job_dir.name
        rows.append(row)
    return rows


def is_view_accuracy(key: str) -> bool:
    """`test_flip/acc`: PrivateTest accuracy under one of report_tta's views."""
    return key.startswith("test_") and key.endswith("/acc")


def row_columns(rows: list[dict]) -> tuple[str, ...]:
    """COLUMNS with the optional ones some row has, the views' accuracies after test/acc, costs after the metrics."""
    present = {key for row in rows for key in row}
    views = tuple(sorted(key for key in present if is_view_accuracy(key)))
    costs = tuple(key for key in COST_COLUMNS if key in present)
    at = COLUMNS.index("test/acc") + 1
    columns = (*COLUMNS[:at], *views, *COLUMNS[at:])
    at = columns.index("wall_time_s") + 1
    return (*columns[:at], *costs, *columns[at:])


def usable(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)


def sort_rows(rows: list[dict], metric: str = "val/acc") -> list[dict]:
    """Successful jobs by `metric` (best first), then the failed ones by job number."""

    def key(row: dict) -> tuple:
        value = row.get(metric)
        ranked = row["status"] == "ok" and usable(value)
        return (not ranked, -value if ranked else 0.0, str(row["job"]).zfill(8))

    return [{"rank": i, **row} for i, row in enumerate(sorted(rows, key=key), start=1)]


def numbers_first(value: str) -> tuple:
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def values_of(rows: list[dict], key: str) -> list[str]:
    """The distinct values the rows' overrides give `key`, numbers in numeric order."""
    values = {o.split("=", 1)[1] for row in rows for o in row["overrides"] if override_key(o) == key}
    return sorted(values, key=numbers_first)


def seeds_vary(rows: list[dict]) -> bool:
    return len(values_of(rows, SEED_KEY)) > 1


def folds_vary(rows: list[dict]) -> bool:
    return len(values_of(rows, FOLD_KEY)) > 1


def repeats_vary(rows: list[dict]) -> bool:
    """Whether runs repeat a configuration (other seeds, other folds): then they are also summarised per config."""
    return seeds_vary(rows) or folds_vary(rows)


def group_by_config(rows: list[dict]) -> list[dict]:
    """One row per configuration (overrides minus seed and fold) with n successful runs and mean / std of each
    metric."""
    groups: dict[tuple[str, ...], list[dict]] = {}
    for row in rows:  # sorted key: the same configuration however its overrides were listed
        groups.setdefault(tuple(sorted(without(row["overrides"], *REPEAT_KEYS))), []).append(row)
    configs = []
    for members in groups.values():
        ok = [row for row in members if row["status"] == "ok"]
        config = without(members[0]["overrides"], *REPEAT_KEYS)
        group = {"config": config, "n": len(ok), "failed": len(members) - len(ok)}
        # every seed / fold of the group, failed runs' included; each listed once (a fold x seed grid repeats them)
        group["seeds"] = " ".join(values_of(members, SEED_KEY))
        group["folds"] = " ".join(values_of(members, FOLD_KEY))
        for metric in AGGREGATED:
            values = [row[metric] for row in ok if usable(row.get(metric))]
            group[f"{metric}_mean"] = statistics.fmean(values) if values else None
            group[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else None
        configs.append(group)
    return sort_rows([g | {"status": "ok" if g["n"] else "failed", "job": ""} for g in configs], "val/acc_mean")


def write_summary(sweep_dir: Path, rows: list[dict]) -> None:
    """summary.csv with every override of every job; summary.md with those that vary, the shared ones above;
    summary_by_config.csv (and its table in summary.md) when the sweep varies the seed or the k-fold fold."""
    columns = row_columns(rows)
    write_csv(sweep_dir / "summary.csv", columns, [row | {"overrides": " ".join(row["overrides"])} for row in rows])
    by_config = sweep_dir / "summary_by_config.csv"
    if repeats_vary(rows):
        configs = group_by_config(rows)
        write_csv(by_config, CONFIG_COLUMNS, [c | {"config": " ".join(c["config"])} for c in configs])
    else:
        by_config.unlink(missing_ok=True)  # left by an earlier summary of this directory
    (sweep_dir / "summary.md").write_text(summary_markdown(sweep_dir, rows))


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if row.get(key) is None else row[key] for key in columns})


def format_cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "wall_time_s":
        return f"{value / 60:.1f} min" if value >= 60 else f"{value:.1f} s"
    if key == "params":
        return f"{value:,.0f}"
    if key == "macs":
        return f"{value / 1e6:,.1f}M"
    if key == "train_images_per_s":
        return f"{value:.0f}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|")


def markdown_table(columns: list[str], rows: list[dict], right_aligned: set[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |"]
    lines.append("|" + "|".join("---:" if c in right_aligned else "---" for c in columns) + "|")
    lines += ["| " + " | ".join(format_cell(c, row.get(c)) for c in columns) + " |" for row in rows]
    return lines


def summary_markdown(sweep_dir: Path, rows: list[dict]) -> str:
    ok = sum(row["status"] == "ok" for row in rows)
    skipped = sum(row.get("resume") == "skipped" for row in rows)
    resumed = sum(str(row.get("resume", "")).startswith("from ") for row in rows)
    shared = set.intersection(*(set(row["overrides"]) for row in rows)) if rows else set()
    counts = f"{len(rows)} jobs: {ok} ok, {len(rows) - ok} failed"
    if skipped or resumed:
        counts += f" ({skipped} skipped as finished earlier, {resumed} resumed from a checkpoint)"
    lines = [
        f"# Sweep {sweep_dir.name}",
        "",
        f"{counts}; sorted by val/acc (best first). Directory: {sweep_dir}",
        "",
        f"Overrides shared by every job: `{' '.join(o for o in rows[0]['overrides'] if o in shared)}`" if rows else "",
        "",
    ]
    if repeats_vary(rows):
        repeats = [key for key, vary in (("folds", folds_vary(rows)), ("seeds", seeds_vary(rows))) if vary]
        lines += config_markdown(group_by_config(rows), shared, repeats) + ["", "## Runs", ""]
    columns = [c for c in row_columns(rows) if c != "dir" and (c != "resume" or skipped or resumed)]
    cells = [row | {"overrides": " ".join(o for o in row["overrides"] if o not in shared)} for row in rows]
    numeric = {c for c in columns if c not in ("status", "overrides", "error", "resume")}
    lines += markdown_table(columns, cells, numeric)
    return "\n".join(lines) + "\n"


def config_markdown(configs: list[dict], shared: set[str], repeats: list[str]) -> list[str]:
    """The by-configuration table: `mean ± std` cells (the std is left out of a single run); a `seeds` and / or
    `folds` column for what the sweep repeats configurations over (`repeats`)."""
    cells = []
    for config in configs:
        cell = {k: config[k] for k in ("rank", "n", "failed", "seeds", "folds")}
        cell["config"] = " ".join(o for o in config["config"] if o not in shared) or "(the shared overrides)"
        for metric in AGGREGATED:
            mean, std = config[f"{metric}_mean"], config[f"{metric}_std"]
            cell[metric] = "" if mean is None else f"{mean:.4f}" + ("" if std is None else f" ± {std:.4f}")
        cells.append(cell)
    title = [f"## By configuration (mean ± std over {' and '.join(repeats)}, best mean val/acc first)", ""]
    columns = ["rank", "config", "n", "failed", *(key for key in ("seeds", "folds") if key in repeats), *AGGREGATED]
    return title + markdown_table(columns, cells, {"rank", "n", "failed", *AGGREGATED})

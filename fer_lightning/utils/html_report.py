"""`report.html`: one self-contained page (inline CSS, figures as base64 PNG, no script, no URL) for a training run's
directory or a sweep's, to read a run without a W&B account. `fer-report DIR` writes it (fer_lightning.tools.
html_report); train.py writes it at the end of every run, and a multirun at the end of the sweep.

A run's page: the headline metrics (metrics.json), its learning curves (csv/metrics.csv, from `logger=csv`), the
test split's confusion matrix and per-class table (confusion_matrix_test.png, per_class_test.json) and those of any
other split a later eval wrote, with eval's reliability diagram (reliability_<split>.png) where there is one. A
sweep's page: its summary table (summary.csv, or the job directories when the sweep has none yet), every job's
val/acc curve on one figure, and links to the jobs' own pages. Whatever is missing (a run still training, a failed
job, another logger) is said to be "not available".
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml

from fer_lightning.errors import UserError
from fer_lightning.sweep.summary import JOB_FILE, OVERRIDES_FILE, collect_rows, format_cell, read_overrides, sort_rows
from fer_lightning.utils.html_report_plots import (
    curve,
    fit_rows,
    learning_curve_figures,
    plot_curves,
    png_img,
    read_metrics_csv,
)

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
RUN_MARKERS = ("metrics.json", "csv/metrics.csv", OVERRIDES_FILE)
SWEEP_MARKERS = ("summary.csv", "multirun.yaml")
HEADLINE = ("val/acc", "test/acc", "test/f1_macro", "val/f1_macro", "val/loss", "test/loss", "epochs", "wall_time_s")
HIDDEN_SUMMARY_COLUMNS = ("dir",)
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; background: #fff; }
h1 { border-bottom: 2px solid #3465a4; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #eef2f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { background: #fbeaea; }
img.figure { display: block; max-width: 100%; margin: .5em 0 1em; border: 1px solid #ddd; }
div.figures { display: flex; flex-wrap: wrap; gap: 0 1em; }
div.figures img.figure { width: calc(50% - .5em); box-sizing: border-box; }
p.na { color: #a33; font-style: italic; } p.note { color: #555; } code { background: #f3f3f3; padding: 0 .2em; }
"""


def esc(value: object) -> str:
    return html.escape(str(value))


def not_available(what: str, why: str = "") -> str:
    return f'<p class="na">{esc(what)}: not available{esc(f" ({why})" if why else "")}</p>'


def html_table(columns: Sequence[str], rows: Iterable[dict], numeric: Iterable[str] = (), raw: str = "") -> str:
    """A table of `rows`' cells (escaped; the column named `raw` holds ready HTML); a row with status failed is red."""
    numeric = set(numeric)
    lines = ["<table>", "<tr>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr>"]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "")
            text = value if column == raw else esc("" if value is None else value)
            cells.append(f'<td class="num">{text}</td>' if column in numeric else f"<td>{text}</td>")
        failed = ' class="failed"' if row.get("status") == "failed" else ""
        lines.append(f"<tr{failed}>" + "".join(cells) + "</tr>")
    return "\n".join([*lines, "</table>"])


def page(title: str, sections: Sequence[str]) -> str:
    body = "\n".join(sections)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{esc(title)}</title>\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n<h1>{esc(title)}</h1>\n{body}\n</body>\n</html>\n"
    )


def read_json(path: Path) -> tuple[dict | None, str]:
    """The JSON object in `path`, or None and why not."""
    if not path.exists():
        return None, f"no {path.name}"
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return None, f"{path.name} unreadable: {error}"
    return (value, "") if isinstance(value, dict) else (None, f"{path.name} holds no JSON object")


def metrics_csv(run_dir: Path) -> Path | None:
    """The CSVLogger file of a run: `csv/metrics.csv` (conf/logger/csv.yaml), else one a level down."""
    path = run_dir / "csv" / "metrics.csv"
    return path if path.exists() else next(iter(sorted(run_dir.glob("*/metrics.csv"))), None)


def report_kind(directory: Path) -> str:
    """`run` or `sweep`; a user error naming the directory and what was expected when it is neither."""
    if not directory.is_dir():
        raise UserError(f"{directory} is not a directory: expected a training run's or a sweep's output directory")
    if any((directory / name).exists() for name in SWEEP_MARKERS) or any(directory.glob(f"*/{JOB_FILE}")):
        return "sweep"
    if any((directory / name).exists() for name in RUN_MARKERS):
        return "run"
    raise UserError(
        f"{directory} is neither a training run directory (expected {', '.join(RUN_MARKERS)}) nor a sweep directory "
        f"(expected {', '.join(SWEEP_MARKERS)} or job subdirectories with {JOB_FILE})"
    )


# ---------------------------------------------------------------- a run


def headline_section(metrics: dict | None, why: str) -> str:
    if metrics is None:
        return "<h2>Headline metrics</h2>\n" + not_available("metrics.json", why or "the run has not finished")
    scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    keys = [k for k in HEADLINE if k in scalars] + sorted(k for k in scalars if k not in HEADLINE)
    rows = [{"metric": k, "value": summary_cell(k, scalars[k])} for k in keys]
    rows += [{"metric": k, "value": v} for k, v in metrics.items() if isinstance(v, str)]  # best_checkpoint
    return "<h2>Headline metrics</h2>\n" + html_table(["metric", "value"], rows, numeric=["value"])


def curves_section(run_dir: Path) -> str:
    heading = "<h2>Learning curves</h2>\n"
    path = metrics_csv(run_dir)
    if path is None:
        return heading + not_available("learning curves", "no csv/metrics.csv: the run did not use logger=csv")
    figures = learning_curve_figures(read_metrics_csv(path))
    note = f'<p class="note">From <code>{esc(path.relative_to(run_dir))}</code>.</p>\n'
    if not figures:
        return heading + note + not_available("learning curves", "no rows yet")
    return heading + note + '<div class="figures">\n' + "\n".join(figures) + "\n</div>"


def report_splits(run_dir: Path) -> list[str]:
    """The splits with a report in the run directory, test first (training writes test; eval may add others)."""
    files = [*run_dir.glob("per_class_*.json"), *run_dir.glob("confusion_matrix_*.png")]
    found = {path.stem.split("_", 2)[-1] for path in files}  # per_class_<split>, confusion_matrix_<split>
    return ["test", *sorted(found - {"test"})]


def confusion_matrix_img(run_dir: Path, split: str, report: dict | None) -> str:
    """The run's own PNG; drawn again from per_class_<split>.json when only that is there."""
    path = run_dir / f"confusion_matrix_{split}.png"
    if path.exists():
        return png_img(path.read_bytes(), f"confusion matrix ({split})")
    if report is None or "confusion_matrix" not in report:
        return not_available(f"confusion matrix ({split})", f"no {path.name}")
    from fer_lightning.utils.report import plot_confusion_matrix

    buffer, names = io.BytesIO(), [row["class"] for row in report["classes"]]
    plot_confusion_matrix(report["confusion_matrix"], names, buffer, f"{split}")  # savefig takes a file object
    return png_img(buffer.getvalue(), f"confusion matrix ({split})")


def split_section(run_dir: Path, split: str) -> str:
    report, why = read_json(run_dir / f"per_class_{split}.json")
    heading = f"<h2>{esc(split.capitalize())} split</h2>\n"
    if report is None and not (run_dir / f"confusion_matrix_{split}.png").exists():
        return heading + not_available(f"{split} split report", why or "the run has not been tested yet")
    parts = [heading, confusion_matrix_img(run_dir, split, report)]
    reliability = run_dir / f"reliability_{split}.png"  # eval.py's, before / after calibration
    if reliability.exists():
        parts.append(png_img(reliability.read_bytes(), f"reliability diagram ({split})"))
    if report is None or "classes" not in report:
        return "".join([*parts, not_available(f"per-class table ({split})", why)])
    matrix = report.get("confusion_matrix") or []
    total, correct = sum(map(sum, matrix)), sum(row[i] for i, row in enumerate(matrix))
    if total:
        parts.append(f'<p class="note">Accuracy {correct / total:.2%} on {total} images.</p>\n')
    columns = ["class", "precision", "recall", "f1", "support"]
    rows = [{k: format_cell(k, v) for k, v in row.items()} for row in report["classes"]]
    return "".join([*parts, html_table(columns, rows, numeric=columns[1:])])


def overrides_section(run_dir: Path) -> str:
    path = run_dir / OVERRIDES_FILE
    try:
        overrides = " ".join(read_overrides(path)) if path.exists() else ""
    except (OSError, ValueError, yaml.YAMLError) as error:  # a damaged file: said on the page, the rest still shown
        return not_available(f"{path}", f"cannot be read: {type(error).__name__}")
    text = f"<code>{esc(overrides)}</code>" if overrides else "none"
    return f'<p class="note">Directory <code>{esc(run_dir)}</code>; overrides: {text}.</p>'


def run_page(run_dir: Path) -> str:
    metrics, why = read_json(run_dir / "metrics.json")
    sections = [overrides_section(run_dir), headline_section(metrics, why), curves_section(run_dir)]
    sections += [split_section(run_dir, split) for split in report_splits(run_dir)]
    return page(f"fer-report: {run_dir.name}", sections)


# ---------------------------------------------------------------- a sweep


def summary_rows(sweep_dir: Path) -> tuple[list[dict], str]:
    """The rows of summary.csv; the job directories' (the same rows) when the sweep has not written it yet."""
    path = sweep_dir / "summary.csv"
    if path.exists():
        with path.open(newline="") as file:
            return list(csv.DictReader(file)), "From <code>summary.csv</code>."
    rows = [row | {"overrides": " ".join(row["overrides"])} for row in sort_rows(collect_rows(sweep_dir))]
    return rows, "No <code>summary.csv</code> yet (the sweep was cut off, or is still running): read from its jobs."


def parse_number(value: object) -> int | float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    try:
        return int(str(value))
    except ValueError:
        try:
            return float(str(value))
        except ValueError:
            return None


def is_number_or_empty(value: object) -> bool:
    return value in (None, "") or parse_number(value) is not None


def summary_cell(key: str, value: object) -> str:
    """A summary cell as summary.md shows it (summary.csv's cells are text: numbers are parsed back first)."""
    number = parse_number(value) if value not in (None, "") else None
    if number is None:
        return "" if value is None else str(value)
    if isinstance(number, int) and key not in ("wall_time_s", "params", "macs", "train_images_per_s"):
        return str(number)
    return format_cell(key, float(number))


def shared_overrides(rows: list[dict]) -> list[str]:
    lists = [str(row.get("overrides") or "").split() for row in rows]
    shared = set.intersection(*map(set, lists)) if len(lists) > 1 else set()
    return [o for o in lists[0] if o in shared] if lists else []


def varying(overrides: object, shared: Sequence[str]) -> str:
    return " ".join(o for o in str(overrides or "").split() if o not in shared)


def sweep_table(sweep_dir: Path, rows: list[dict], shared: Sequence[str], config_column: str) -> str:
    """A summary table: the overrides every job shares left out, numbers formatted, a link to each job's page."""
    columns = [c for c in (rows[0] if rows else {}) if c not in HIDDEN_SUMMARY_COLUMNS]
    columns = [c for c in columns if any(row.get(c) not in (None, "") for row in rows)]  # e.g. resume, unused
    cells = []
    for row in rows:
        cell = {c: summary_cell(c, row.get(c)) for c in columns} | {"status": row.get("status", "")}
        cell[config_column] = varying(row.get(config_column), shared) or "(the shared overrides)"
        job_page = sweep_dir / str(row.get("dir", "")) / REPORT_FILE
        if row.get("dir") and job_page.exists():
            cell["page"] = f'<a href="{esc(row["dir"])}/{REPORT_FILE}">{esc(row["dir"])}/{REPORT_FILE}</a>'
        cells.append(cell)
    if any("page" in cell for cell in cells):
        columns.append("page")
    numeric = [c for c in columns if c != config_column and all(is_number_or_empty(r.get(c)) for r in rows)]
    return html_table(columns, cells, numeric, raw="page")


def val_acc_section(sweep_dir: Path, rows: list[dict], shared: Sequence[str]) -> str:
    """Every job's val/acc curve on one figure, the legend saying which job (its own overrides)."""
    curves, missing = [], []
    for row in rows:
        label = f"job {row.get('job', row.get('dir'))}: {varying(row.get('overrides'), shared) or '(shared)'}"
        path = metrics_csv(sweep_dir / str(row.get("dir", row.get("job"))))
        points = curve(fit_rows(read_metrics_csv(path)), "val/acc") if path is not None else ("", [], [])
        if points[1]:
            curves.append((label, points))
        else:
            missing.append(label)
    heading = "<h2>val/acc of every job</h2>\n"
    figure = plot_curves("val/acc per job", curves) if curves else not_available("val/acc curves")
    notes = "".join(not_available(f"{label} val/acc curve", "no csv/metrics.csv rows") for label in missing)
    return heading + figure + "\n" + notes


def by_config_section(sweep_dir: Path, shared: Sequence[str]) -> str:
    path = sweep_dir / "summary_by_config.csv"
    if not path.exists():
        return ""
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    return "<h2>By configuration (mean ± std)</h2>\n" + sweep_table(sweep_dir, rows, shared, "config")


def sweep_page(sweep_dir: Path) -> str:
    rows, source = summary_rows(sweep_dir)
    shared = shared_overrides(rows)
    ok = sum(row.get("status") == "ok" for row in rows)
    intro = (
        f'<p class="note">Directory <code>{esc(sweep_dir)}</code>: {len(rows)} jobs, {ok} ok, {len(rows) - ok} '
        f"failed. Overrides shared by every job: <code>{esc(' '.join(shared)) or 'none'}</code>.</p>"
    )
    summary = sweep_table(sweep_dir, rows, shared, "overrides") if rows else not_available("summary", "no jobs")
    sections = [intro, by_config_section(sweep_dir, shared), "<h2>Runs</h2>", f'<p class="note">{source}</p>']
    sections += [summary, val_acc_section(sweep_dir, rows, shared)]
    return page(f"fer-report: {sweep_dir.name}", sections)


# ---------------------------------------------------------------- the page


def write_html_report(directory: Path) -> Path:
    """`<directory>/report.html` for a run or a sweep directory; its path."""
    directory = Path(directory).absolute()
    kind = report_kind(directory)
    text = run_page(directory) if kind == "run" else sweep_page(directory)
    path = directory / REPORT_FILE
    path.write_text(text, encoding="utf-8")
    return path


def write_html_report_safely(directory: Path) -> Path | None:
    """At the end of a run or a sweep: the page, or a warning when it cannot be written (never the run's failure)."""
    try:
        path = write_html_report(directory)
    except Exception as error:
        log.warning("report.html not written in %s: %s: %s", directory, type(error).__name__, error)
        return None
    log.info("HTML report: %s", path)
    return path

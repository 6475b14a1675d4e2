"""The figures of `report.html` (fer_lightning.utils.html_report): learning curves read from a CSVLogger's
`metrics.csv`, drawn with matplotlib and inlined as base64 PNG `<img>` tags, so the page needs no other file.

`metrics.csv` is sparse: each `self.log` call writes its own row (train metrics on one, val on another, both at the
epoch's last step), and the cells of the other metrics are empty. After the fit, `trainer.validate` and `trainer.test`
of the selected checkpoint add one row each at the next step: no point of a learning curve (`fit_rows` drops them).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path

Row = dict[str, float]
Curve = tuple[str, list[float], list[float]]  # (x axis: epoch / step / row, xs, ys)

# (figure title, which metrics it plots, log scale); test/* (one value each) and time/* are no curves
FIGURES: tuple[tuple[str, Callable[[str], bool], bool], ...] = (
    ("loss", lambda key: key.endswith("loss"), False),
    ("accuracy and macro-F1", lambda key: key.endswith(("/acc", "/acc_best")) or "f1" in key, False),
    ("learning rate", lambda key: key.endswith("/lr") or key.startswith("lr-"), True),
)
NO_CURVES = ("test", "time/", "epoch", "step")


def read_metrics_csv(path: Path) -> list[Row]:
    """The rows of a CSVLogger `metrics.csv`, each with its filled numeric cells only."""
    rows = []
    with path.open(newline="") as file:
        for record in csv.DictReader(file):
            row = {}
            for key, text in record.items():
                try:
                    row[key] = float(text)
                except (TypeError, ValueError):  # empty cell, a text value, a ragged row (key None)
                    continue
            rows.append(row)
    return rows


def fit_rows(rows: list[Row]) -> list[Row]:
    """The rows the fit logged: those up to the last step with a train/* metric (all rows when there is none)."""
    train_steps = [row["step"] for row in rows if "step" in row and any(key.startswith("train/") for key in row)]
    if not train_steps:
        return rows
    last = max(train_steps)
    return [row for row in rows if row.get("step", last) <= last]


def curve(rows: list[Row], metric: str) -> Curve:
    """`metric` against the epoch when it has one value per epoch (epoch-level logging), else against the step."""
    points = [row for row in rows if metric in row and math.isfinite(row[metric])]
    epochs = [row.get("epoch") for row in points]
    if None not in epochs and len(set(epochs)) == len(epochs):
        axis = "epoch"
    else:
        axis = "step" if all("step" in row for row in points) else "row"
    xs = [row[axis] if axis != "row" else float(i) for i, row in enumerate(points)]
    return axis, xs, [row[metric] for row in points]


def curve_metrics(rows: list[Row]) -> list[str]:
    keys = dict.fromkeys(key for row in rows for key in row)  # first-seen order
    return [key for key in keys if not key.startswith(NO_CURVES)]


def new_figure(width: float = 7.0, height: float = 3.6):
    from matplotlib.figure import Figure  # no pyplot: no backend, no global state

    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.subplots()


def figure_img(figure, alt: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return png_img(buffer.getvalue(), alt)


def png_img(data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img class="figure" alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def plot_curves(title: str, curves: Sequence[tuple[str, Curve]], log_scale: bool = False) -> str:
    """One figure of labelled curves (a single point is drawn as a marker) as an `<img>` tag."""
    from matplotlib.ticker import MaxNLocator

    figure, ax = new_figure()
    axes = set()
    for label, (axis, xs, ys) in curves:
        ax.plot(xs, ys, marker="o", markersize=3, label=label)
        axes.add(axis)
    if log_scale and all(y > 0 for _, (_, _, ys) in curves for y in ys):
        ax.set_yscale("log")
    ax.set(title=title, xlabel=" / ".join(sorted(axes)))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and steps
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return figure_img(figure, title)


def learning_curve_figures(rows: list[Row]) -> list[str]:
    """The loss, accuracy / F1 and learning-rate figures of one run (those it has metrics for)."""
    rows, metrics, images = fit_rows(rows), curve_metrics(rows), []
    for title, wanted, log_scale in FIGURES:
        curves = [(metric, curve(rows, metric)) for metric in metrics if wanted(metric)]
        curves = [(label, points) for label, points in curves if points[1]]
        if curves:
            images.append(plot_curves(title, curves, log_scale))
    return images

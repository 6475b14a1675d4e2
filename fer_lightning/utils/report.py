"""Run reports: metrics.json, a confusion-matrix PNG and a per-class table, for training and eval alike."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf


def per_class_rows(confmat: np.ndarray, class_names: Sequence[str]) -> list[dict]:
    """Precision, recall (= per-class accuracy), F1 and support from a confusion matrix (rows = true class)."""
    confmat = np.asarray(confmat, dtype=np.float64)
    true_pos = np.diag(confmat)
    support, predicted = confmat.sum(1), confmat.sum(0)
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    recall = np.divide(true_pos, support, out=np.zeros_like(true_pos), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(true_pos), where=denom > 0)
    return [
        {"class": name, "precision": p, "recall": r, "f1": f, "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)
    ]


def per_class_markdown(rows: list[dict], title: str) -> str:
    lines = [f"# {title}", "", "| class | precision | recall | f1 | support |", "|---|---:|---:|---:|---:|"]
    lines += [
        f"| {r['class']} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | {r['support']} |" for r in rows
    ]
    return "\n".join(lines) + "\n"


def plot_confusion_matrix(confmat: np.ndarray, class_names: Sequence[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    confmat = np.asarray(confmat)
    normalised = confmat / np.clip(confmat.sum(1, keepdims=True), 1, None)
    size = max(5.0, 0.8 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set(xticks=range(len(class_names)), yticks=range(len(class_names)), xlabel="predicted", ylabel="true")
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_yticklabels(class_names)
    for (i, j), count in np.ndenumerate(confmat):
        colour = "white" if normalised[i, j] > 0.5 else "black"
        ax.text(j, i, f"{int(count)}\n{normalised[i, j]:.0%}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_split_report(out_dir: Path, split: str, confmat: np.ndarray, class_names: Sequence[str]) -> None:
    """`confusion_matrix_<split>.png`, `per_class_<split>.md` and `.json` in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = per_class_rows(confmat, class_names)
    accuracy = float(np.trace(confmat) / max(np.sum(confmat), 1))
    title = f"{split}: accuracy {accuracy:.2%} on {int(np.sum(confmat))} images"
    plot_confusion_matrix(confmat, class_names, out_dir / f"confusion_matrix_{split}.png", title)
    (out_dir / f"per_class_{split}.md").write_text(per_class_markdown(rows, title))
    payload = {"classes": rows, "confusion_matrix": np.asarray(confmat).astype(int).tolist()}
    (out_dir / f"per_class_{split}.json").write_text(json.dumps(payload, indent=2))


def write_metrics_json(path: Path, metrics: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float) + "\n")


def write_run_config(out_dir: Path, cfg: DictConfig) -> None:
    """`config_resolved.yaml`: the run's config with every interpolation resolved (`.hydra/` keeps the unresolved)."""
    (out_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


def per_class_accuracy(class_names: Sequence[str], values) -> dict[str, float]:
    """{class: accuracy} for metrics.json, from a metric's per-class vector (a tensor or an array)."""
    return dict(zip(class_names, np.asarray(values, dtype=np.float64).tolist(), strict=True))

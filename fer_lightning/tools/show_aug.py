"""`fer-show-aug aug=heavy [data=...] [--num 16]` (`python -m fer_lightning.tools.show_aug`): a PNG grid of real
training images and augmented draws.

Rows: `--images` training images (one per class first, then seeded picks); columns: the image as stored, then `--num`
draws of the `aug` preset's train transform, exactly as the DataLoader workers apply it. Crops smaller than the
stored image are shown centred on a grey cell of the stored size, so their scale is visible. The trailing `key=value`
arguments are Hydra overrides of the train config (which data, which preset); the grid goes to `--out`, by default
`aug.png` in a run directory of its own (`logs/show_aug/runs/<time>/`).

A second panel beside it (unless `--no-compare-device`) shows the same images through the preset's `device` node
(`data.loader=device`: `BatchAugment`, per-sample draws on a whole batch), so the two can be compared.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import hydra
import numpy as np
import torch
from matplotlib.figure import Figure, SubFigure
from omegaconf import DictConfig

from fer_lightning.config import compose, group_choice, parse_with_overrides
from fer_lightning.data.device_loader import to_device_tensors
from fer_lightning.data.sampling import hard_labels
from fer_lightning.errors import console_script


def pick_rows(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """One random row of each class first (in class order), then random other rows, up to `count`."""
    rng = np.random.default_rng(seed)
    first = [rng.choice(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    rest = rng.permutation(np.setdiff1d(np.arange(len(labels)), first))
    return np.concatenate([first, rest])[:count].astype(int)


def on_cell(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`image` centred on a grey canvas of `shape` (when it is smaller, e.g. a random crop)."""
    if image.shape[:2] == shape[:2]:
        return image
    canvas = np.full((max(shape[0], image.shape[0]), max(shape[1], image.shape[1]), *image.shape[2:]), 128, np.uint8)
    top, left = (canvas.shape[0] - image.shape[0]) // 2, (canvas.shape[1] - image.shape[1]) // 2
    canvas[top : top + image.shape[0], left : left + image.shape[1]] = image
    return canvas


def augmented_grid(images: np.ndarray, transform, num: int, seed: int) -> list[list[np.ndarray]]:
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)
    rows = []
    for image in images:
        draws = [transform(image=image)["image"] if transform is not None else image for _ in range(num)]
        rows.append([image, *(on_cell(draw, image.shape) for draw in draws)])
    return rows


def device_grid(images: np.ndarray, augment: torch.nn.Module | None, num: int, seed: int) -> list[list[np.ndarray]]:
    """The same rows through the device path: each image repeated `num` times as one batch, augmented at once."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for image in images:
        batch, _ = to_device_tensors(np.repeat(image[None], num, 0), np.zeros(num, np.int64), torch.device("cpu"))
        draws = augment(batch, generator) if augment is not None else batch
        cells = [draw.permute(1, 2, 0).squeeze(-1).numpy() for draw in draws]  # (C, h, w) -> (h, w) or (h, w, C)
        rows.append([image, *(on_cell(cell, image.shape) for cell in cells)])
    return rows


def plot_grid(panels: dict[str, list[list[np.ndarray]]], row_titles: list[str], title: str) -> Figure:
    """One panel per {panel title: rows}, side by side."""
    rows = next(iter(panels.values()))
    size = (1.1 * len(rows[0]) * len(panels), 1.2 * len(rows) + 0.6)
    figure = Figure(figsize=size, layout="constrained")
    for subfigure, (name, panel) in zip(figure.subfigures(1, len(panels), squeeze=False)[0], panels.items()):
        draw_panel(subfigure, panel, row_titles, name)
    figure.suptitle(title, fontsize=10)
    return figure


def draw_panel(figure: SubFigure, rows: list[list[np.ndarray]], row_titles: list[str], title: str) -> None:
    axes = figure.subplots(len(rows), len(rows[0]), squeeze=False)
    for r, cells in enumerate(rows):
        for c, cell in enumerate(cells):
            axis = axes[r, c]
            axis.imshow(cell, cmap="gray" if cell.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if c == 0:
                axis.set_ylabel(row_titles[r], fontsize=8)
            if r == 0:
                axis.set_title("stored" if c == 0 else f"draw {c}", fontsize=8)
    figure.suptitle(title, fontsize=9)


def write_aug_grid(
    cfg: DictConfig, out: Path, num: int = 8, images: int = 7, seed: int = 0, compare_device: bool = True
) -> Path:
    """Decode the configured data, draw the grid and save it to `out`; returns the path."""
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    stored, targets = datamodule.splits["train"]
    labels = hard_labels(targets)
    rows = pick_rows(labels, images, seed)
    picked = np.asarray(stored[rows])
    panels = {"workers: albumentations, per image": augmented_grid(picked, datamodule.train_transform, num, seed)}
    if compare_device:
        panels["data.loader=device: BatchAugment, per batch"] = device_grid(
            picked, datamodule.device_transform, num, seed
        )
    names = [datamodule.class_names[labels[r]] for r in rows]
    aug_name = group_choice("aug") or "?"
    title = f"aug={aug_name}: train transform on {datamodule.path.name} (crop {cfg.aug.crop_size or 'none'})"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_grid(panels, names, title).savefig(out, dpi=100)
    return out


def run(argv: Sequence[str] | None = None) -> Path:
    """Compose the config, write the grid; returns its path."""
    parser = argparse.ArgumentParser(prog="fer-show-aug", description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=8, help="augmented draws per image (columns after the stored one)")
    parser.add_argument("--images", type=int, default=7, help="training images (rows), one per class first")
    parser.add_argument("--seed", type=int, default=0, help="seeds the picks and the draws (and the config's seed)")
    parser.add_argument("--out", type=Path, default=None, help="PNG to write; default: aug.png in the run directory")
    parser.add_argument(
        "--compare-device", action=argparse.BooleanOptionalAction, default=True,
        help="a second panel: the same images through the device path (BatchAugment)",
    )  # fmt: skip
    args = parse_with_overrides(parser, argv)
    cfg = compose("train", ["task_name=show_aug", f"seed={args.seed}", *args.overrides])
    out = args.out or Path(cfg.paths.output_dir) / "aug.png"
    out = write_aug_grid(cfg, out, args.num, args.images, args.seed, args.compare_device)
    print(f"wrote {out}")
    return out


main = console_script(run)


if __name__ == "__main__":
    main()

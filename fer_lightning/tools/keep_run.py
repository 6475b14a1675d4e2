"""`fer-keep-run RUN_DIR DEST_DIR`: copy a finished run's small result files into the repository (experiments/).

    fer-keep-run logs/leaderboard/mini_xception experiments/leaderboard/mini_xception
    fer-sweep-summary experiments/leaderboard      # the table, from the kept rows

A run directory lives under logs/, which a session's machine may not keep; its checkpoints are too large for a
repository (weights go through fer-pack-weights). What lasts is its text: final metrics, the per-epoch history,
the per-class table, the speed autotune's measurements, the overrides and resolved config that reproduce it. They
keep the run's own layout, so fer-sweep-summary and fer-report read a kept directory as they read the run.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path

from fer_lightning.errors import UserError, exit_on_user_error

# written by every finished run (metrics.json only once it has tested): without them there is nothing to report
REQUIRED_FILES = ("metrics.json", ".hydra/overrides.yaml")
# written where the run used them (the CSV logger, the speed autotune, a test split with per-class reports)
OPTIONAL_FILES = (
    "csv/metrics.csv",
    "per_class_test.md",
    "per_class_test.json",
    "speed.json",
    "config_resolved.yaml",
)


def keep_run(run_dir: Path, dest_dir: Path, overwrite: bool = False) -> list[Path]:
    """Copy the run's small files to dest_dir (same relative paths); the copied destination paths."""
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    missing = [name for name in REQUIRED_FILES if not (run_dir / name).is_file()]
    if missing:
        raise UserError(
            f"{run_dir} has no {', '.join(missing)}: not a finished run (a run writes metrics.json after its test; an "
            "interrupted one resumes with `python train.py ckpt_path=<run>/checkpoints/last.ckpt hydra.run.dir=<run>`)"
        )
    names = [*REQUIRED_FILES, *(name for name in OPTIONAL_FILES if (run_dir / name).is_file())]
    existing = [name for name in names if (dest_dir / name).exists()]
    if existing and not overwrite:
        raise UserError(f"{dest_dir} already holds {', '.join(existing)}; pass --overwrite to replace them")
    copied = []
    for name in names:
        target = dest_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / name, target)
        copied.append(target)
    return copied


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fer-keep-run", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished run's directory (hydra.run.dir, or a multirun job)")
    parser.add_argument("dest_dir", type=Path, help="where to keep its files, e.g. experiments/<study>/<row>")
    parser.add_argument("--overwrite", action="store_true", help="replace files already kept there")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        copied = keep_run(args.run_dir, args.dest_dir, args.overwrite)
    total = sum(path.stat().st_size for path in copied)
    print(f"kept {len(copied)} files ({total / 1024:.1f} KiB) in {args.dest_dir}:")
    for path in copied:
        print(f"  {path}")


if __name__ == "__main__":
    main()

"""`fer-sweep-summary SWEEP_DIR`: write a sweep directory's summary.csv / summary.md now and print the table.

A multirun writes its summary when it ends; a sweep cut off by a session's end, Ctrl-C or a killed launcher (or one
still running) has none, or an old one. This collects the same rows from the job directories: finished jobs with
their metrics.json, the others as "no result: killed, or still running".
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from fer_lightning.errors import UserError, exit_on_user_error
from fer_lightning.sweep.summary import collect_rows, sort_rows, summary_markdown, write_summary


def summarise(sweep_dir: Path) -> str:
    if not sweep_dir.is_dir():
        raise UserError(f"sweep directory {sweep_dir} does not exist")
    rows = sort_rows(collect_rows(sweep_dir))
    if not rows:
        raise UserError(f"{sweep_dir} holds no job directories (subfolders with .hydra/, job.json or metrics.json)")
    write_summary(sweep_dir, rows)
    return summary_markdown(sweep_dir, rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fer-sweep-summary", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun's directory (hydra.sweep.dir)")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        print(summarise(args.sweep_dir))


if __name__ == "__main__":
    main()

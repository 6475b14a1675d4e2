"""`fer-report DIR` (`python -m fer_lightning.tools.html_report`): `DIR/report.html`, one self-contained page of a
training run's or a sweep's results: plots without a W&B account.

A run directory (hydra.run.dir): headline metrics, learning curves (logger=csv), the test confusion matrix and
per-class table. A sweep directory (hydra.sweep.dir): the summary table and every job's val/acc curve. train.py and
multiruns write the page themselves when they end; this writes it again, e.g. for a run still training or a sweep
cut off before its end. The page is fer_lightning.utils.html_report's.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from fer_lightning.errors import UserError, exit_on_user_error
from fer_lightning.utils.html_report import write_html_report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fer-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="a training run's directory or a sweep's (hydra.sweep.dir)")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        if not args.directory.exists():
            raise UserError(f"{args.directory} does not exist: expected a training run's or a sweep's directory")
        print(write_html_report(args.directory))


if __name__ == "__main__":
    main()

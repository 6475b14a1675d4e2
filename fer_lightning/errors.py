"""User errors: a bad file, path or value the user gave. The entry points print them as one clear message and exit
with status 2 (`exit_on_user_error`); anything else is a bug and keeps its traceback. A leaf module (it imports
nothing of fer_lightning), so every package, data/ and models/ included, may raise these."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

USER_ERROR_EXIT = 2  # the conventional status for a usage error (argparse, sh)


class UserError(ValueError):
    """Raised for what the user can fix; the message names the file, row or key and what was expected."""


# FileNotFoundError: a data file, checkpoint or input that is not where the user said
USER_ERRORS = (UserError, FileNotFoundError)


def full_error_wanted() -> bool:
    """Hydra's own switch for full tracebacks, honoured for user errors too."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Around an entry point: a user error becomes `error: <message>` on stderr and exit status 2, without the
    traceback (set HYDRA_FULL_ERROR=1 to see it). It is logged too, so the run's log file keeps it."""
    try:
        yield
    except USER_ERRORS as error:
        if full_error_wanted():
            raise
        log_to_files(f"{type(error).__name__}: {error}")
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(USER_ERROR_EXIT) from None


def console_script(run: Callable[[Sequence[str] | None], object]) -> Callable[[Sequence[str] | None], None]:
    """A console script's `main` around a tool's `run(argv)`: what `run` prints and exit status 0, or 2 with one
    message on a user error. `main` returns None because a console script's return value becomes its status."""

    def main(argv: Sequence[str] | None = None) -> None:
        with exit_on_user_error():  # missing data, a bad value: one message, exit status 2
            run(argv)

    main.__doc__ = f"The console script of {run.__module__}: `run(argv)`, its user errors as exit status 2."
    return main


def log_to_files(message: str) -> None:
    """Log `message` at ERROR to the log files only (the run's `<task>.log`): the console gets it once, from
    stderr, instead of twice."""
    logger = logging.getLogger("fer_lightning")
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)

"""Types and ranges of the user-facing config values, checked before a command does any work.

The configs are yaml with `_target_` nodes spread over many groups, so instead of Hydra structured configs (one
dataclass per option of every group) the few values a user sets by hand are checked here, on the composed config,
by key. A bad one would otherwise surface late and far away: `optimizer.lr=abc` as a TypeError inside torch's
optimizer, `data.batch_size=0` as a DataLoader error (or a ZeroDivisionError with `data.loader=device`) after the
data is loaded, `trainer.max_epochs=0` as a run that "succeeds" and reports an untrained model.

A key absent from the config is not checked (eval has no optimizer, predict no data node). Values from the command
line arrive as Hydra parsed them: `1e-3` a float, `64` an int, `abc` a string; a number given as a string is
refused, since the code it feeds would refuse it too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fer_lightning.data.kfold import KFOLD_DEFAULTS, kfold_option_errors
from fer_lightning.errors import UserError

_ABSENT = object()


class ConfigValueError(UserError):
    """A config value of the wrong type or out of range; the message names the key, the value and what it takes."""


def is_number(value: Any) -> bool:
    """A finite int or float; bools are ints to Python but not numbers to a user."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Rule:
    key: str
    expected: str  # what the message says the key takes
    accepts: Callable[[Any], bool]


RULES = (
    Rule("optimizer.lr", "a number > 0", lambda v: is_number(v) and v > 0),
    Rule("optimizer.weight_decay", "a number >= 0", lambda v: is_number(v) and v >= 0),
    Rule("data.batch_size", "an integer >= 1", lambda v: is_int(v) and v >= 1),
    Rule("data.eval_batch_size", "an integer >= 1 or null", lambda v: v is None or (is_int(v) and v >= 1)),
    Rule("data.num_workers", "an integer >= 0", lambda v: is_int(v) and v >= 0),
    # null: Lightning's own default (1000 epochs unless max_steps is set); -1: no limit, as Lightning reads it
    Rule(
        "trainer.max_epochs",
        "an integer >= 1, or -1 for no limit, or null",
        lambda v: v is None or (is_int(v) and (v >= 1 or v == -1)),
    ),
    Rule("module.label_smoothing", "a number in [0, 1)", lambda v: is_number(v) and 0 <= v < 1),
    Rule("module.mixup_alpha", "a number >= 0 (0 = off)", lambda v: is_number(v) and v >= 0),
    Rule("module.cutmix_alpha", "a number >= 0 (0 = off)", lambda v: is_number(v) and v >= 0),
)


def config_errors(cfg: DictConfig) -> list[str]:
    """One message per bad value, `key=value: expected ...`, in RULES order, then the split keys; empty when all
    are good."""
    errors = []
    for rule in RULES:
        value = OmegaConf.select(cfg, rule.key, default=_ABSENT)
        if value is not _ABSENT and not rule.accepts(value):
            errors.append(f"{rule.key}={value!r}: expected {rule.expected}")
    return errors + split_errors(cfg)


def split_errors(cfg: DictConfig) -> list[str]:
    """data.split and, for `kfold`, data.folds / data.fold / data.kfold_pool: checked together, not by RULES, since
    data.fold's range depends on data.folds. (Whether data.folds fits the smallest class needs the data: the
    DataModule checks that at setup, before training.)"""
    split = OmegaConf.select(cfg, "data.split", default=_ABSENT)
    if split is _ABSENT:
        return []  # no data node (export, predict)
    keys = {"folds": "data.folds", "fold": "data.fold", "pool": "data.kfold_pool"}
    values = {name: OmegaConf.select(cfg, key, default=KFOLD_DEFAULTS[name]) for name, key in keys.items()}
    return kfold_option_errors(split, **values)


def check_config(cfg: DictConfig) -> DictConfig:
    """`cfg` itself when its values are good, else a ConfigValueError naming every bad one."""
    errors = config_errors(cfg)
    if errors:
        raise ConfigValueError("; ".join(errors))
    return cfg

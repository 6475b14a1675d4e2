"""k-fold cross-validation (`data.split=kfold`): seeded, class-stratified folds over a pool of rows.

The pool is built from the split the data defines, as `data.split=usage` reads it (`sampling.assign_splits`), so
the test split is the very same one a usage run evaluates and is never folded:

- `kfold_pool=train_val` (default): train + val rows are folded (FER2013: Training + PublicTest);
- `kfold_pool=train`: only the train rows are folded; the data's own val rows (PublicTest) are left unused.

Data without a test split (an image_folder tree without split folders) gets one as `usage` does: a seeded
stratified `data.split_fractions[2]` of its rows (seed `data.split_seed`), held out before folding. Fold k is the
val split of job k and the other folds its train split; every pool row is in exactly one fold.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from fer_lightning.data.sampling import SPLIT_MODES, assign_splits
from fer_lightning.errors import UserError

log = logging.getLogger(__name__)

KFOLD = "kfold"
SPLIT_CHOICES = (*SPLIT_MODES, KFOLD)
# which of the usage splits (0 train, 1 val) the folds are cut from
KFOLD_POOLS = {"train_val": (0, 1), "train": (0,)}
KFOLD_DEFAULTS = {"folds": 5, "fold": 0, "pool": "train_val"}  # as conf/data/fer2013.yaml and FERDataModule
UNUSED = -1  # a row in no split (kfold_pool=train: the data's own val rows)


def is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def kfold_option_errors(split: object, folds: object, fold: object, pool: object) -> list[str]:
    """One `key=value: expected ...` message per bad value of data.split and, with `kfold`, of the fold keys
    (checked together: data.fold's range depends on data.folds); empty when all are good."""
    if split not in SPLIT_CHOICES:
        return [f"data.split={split!r}: expected one of {list(SPLIT_CHOICES)}"]
    if split != KFOLD:
        return []  # the fold keys are not used: a usage / stratified run does not depend on them
    errors = []
    folds_ok = is_int(folds) and folds >= 2
    if not folds_ok:
        errors.append(f"data.folds={folds!r}: expected an integer >= 2 (the number of folds)")
    if not (is_int(fold) and fold >= 0 and (not folds_ok or fold < folds)):
        upper = f"data.folds = {folds}" if folds_ok else "data.folds"
        errors.append(f"data.fold={fold!r}: expected an integer in [0, {upper})")
    if not isinstance(pool, str) or pool not in KFOLD_POOLS:  # a list from the command line is unhashable
        errors.append(f"data.kfold_pool={pool!r}: expected one of {list(KFOLD_POOLS)}")
    return errors


def check_kfold_options(split: object, folds: object, fold: object, pool: object) -> None:
    """The split mode, and with `kfold` the fold options, checked before any data is read."""
    errors = kfold_option_errors(split, folds, fold, pool)
    if errors:
        raise UserError("; ".join(errors))


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index (0 .. folds - 1) per row: each class is shuffled (seeded) and dealt round-robin, so a class's
    count differs by at most 1 between folds. Each class starts dealing where the previous one stopped, so the
    folds' sizes differ by at most 1 too (not every class's remainder lands on fold 0)."""
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), dtype=np.int64)
    start = 0
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        fold_of[rows] = (start + np.arange(len(rows))) % folds
        start = (start + len(rows)) % folds
    return fold_of


def check_folds_fit(labels: np.ndarray, folds: int, class_names: Sequence[str] | None = None) -> None:
    """Every fold needs every class of the pool: data.folds may not exceed the smallest class count."""
    classes, counts = np.unique(labels, return_counts=True)
    if not len(classes):
        raise UserError("data.split=kfold: the pool to fold is empty; check the data or data.kfold_pool")
    smallest = int(np.argmin(counts))
    if folds > counts[smallest]:
        label = int(classes[smallest])
        name = class_names[label] if class_names is not None and label < len(class_names) else str(label)
        raise UserError(
            f"data.folds={folds}: expected at most {counts[smallest]}, the rows of the smallest class "
            f"({name!r}) in the pool to fold (data.kfold_pool)"
        )


def kfold_splits(
    labels: np.ndarray,
    given: np.ndarray,
    *,
    folds: int,
    fold: int,
    pool: str,
    fractions: Sequence[float],
    seed: int,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Split index per row for fold `fold`: 0 train (the other folds), 1 val (this fold), 2 test (as usage gives
    it), -1 unused. The folds depend on (labels, pool, folds, seed) only, not on `fold`: the jobs of a sweep over
    data.fold=0..k-1 cut the same folds."""
    check_kfold_options(KFOLD, folds, fold, pool)
    usage = assign_splits(labels, given, "usage", fractions, seed)
    in_pool = np.flatnonzero(np.isin(usage, KFOLD_POOLS[pool]))
    check_folds_fit(labels[in_pool], folds, class_names)
    split = np.where(usage == 2, 2, UNUSED).astype(np.int8)
    split[in_pool] = np.where(stratified_folds(labels[in_pool], folds, seed) == fold, 1, 0)
    log.info(
        "k-fold: fold %d of %d over %d %s rows (seed %d): %d train, %d val; %d test rows untouched",
        fold, folds, len(in_pool), pool, seed, (split == 0).sum(), (split == 1).sum(), (split == 2).sum(),
    )  # fmt: skip
    return split


def split_rows(
    labels: np.ndarray,
    given: np.ndarray,
    mode: str,
    fractions: Sequence[float],
    seed: int,
    kfold: dict | None = None,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """The split of every row for any `data.split` mode; `kfold` holds folds, fold and pool for mode `kfold`."""
    if mode != KFOLD:
        return assign_splits(labels, given, mode, fractions, seed)
    return kfold_splits(
        labels, given, fractions=fractions, seed=seed, class_names=class_names, **(kfold or KFOLD_DEFAULTS)
    )

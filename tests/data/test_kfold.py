"""k-fold cross-validation (`data.split=kfold`, fer_lightning/data/kfold.py): the folds partition the pool, are
stratified and seeded, the test split stays the usage split's, and bad fold options stop before any data is read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fer_lightning.config_schema import ConfigValueError, check_config
from fer_lightning.data.datamodule import FERDataModule
from fer_lightning.data.kfold import UNUSED, kfold_splits, stratified_folds
from fer_lightning.data.sampling import assign_splits
from fer_lightning.errors import UserError
from tests.conftest import compose_train
from tests.data.test_datamodule import datamodule

FRACTIONS = (0.8, 0.1, 0.1)


def imbalanced_labels(seed: int = 0) -> np.ndarray:
    """7 classes of 12 to 61 rows, shuffled: class counts that no fold count divides evenly."""
    counts = [23, 12, 31, 61, 40, 17, 44]
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(7), counts))


def usage_given(labels: np.ndarray) -> np.ndarray:
    """A FER2013-like Usage column: 70% train, 15% val, 15% test, interleaved."""
    return np.resize(np.array([0] * 14 + [1] * 3 + [2] * 3, dtype=np.int8), len(labels))


def fold_split(labels: np.ndarray, given: np.ndarray, fold: int, folds: int = 5, **options) -> np.ndarray:
    options = {"pool": "train_val", "fractions": FRACTIONS, "seed": 0} | options
    return kfold_splits(labels, given, folds=folds, fold=fold, **options)


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_folds_are_stratified_within_one_row_per_class_and_balanced_in_size(folds: int) -> None:
    labels = imbalanced_labels()
    fold_of = stratified_folds(labels, folds, seed=0)
    assert set(np.unique(fold_of)) == set(range(folds))
    for label in range(7):
        per_fold = np.bincount(fold_of[labels == label], minlength=folds)
        assert per_fold.max() - per_fold.min() <= 1, (label, per_fold)
    sizes = np.bincount(fold_of, minlength=folds)
    assert sizes.max() - sizes.min() <= 1, sizes


def test_every_pool_row_is_in_exactly_one_folds_val_and_the_test_split_is_untouched() -> None:
    labels = imbalanced_labels()
    given = usage_given(labels)
    usage = assign_splits(labels, given, "usage", FRACTIONS, 0)
    pool = np.flatnonzero(usage < 2)
    splits = [fold_split(labels, given, fold) for fold in range(5)]
    val_rows = [np.flatnonzero(split == 1) for split in splits]
    assert np.array_equal(np.sort(np.concatenate(val_rows)), pool)  # a partition: each pool row once
    for split, val in zip(splits, val_rows):
        assert np.array_equal(np.flatnonzero(split == 0), np.setdiff1d(pool, val))  # train = the other folds
        assert np.array_equal(split == 2, usage == 2)
        assert not (split == UNUSED).any()


def test_kfold_pool_train_folds_only_the_train_rows_and_leaves_val_unused() -> None:
    labels = imbalanced_labels()
    given = usage_given(labels)
    splits = [fold_split(labels, given, fold, folds=3, pool="train") for fold in range(3)]
    val = np.sort(np.concatenate([np.flatnonzero(split == 1) for split in splits]))
    assert np.array_equal(val, np.flatnonzero(given == 0))
    for split in splits:
        assert np.array_equal(split == UNUSED, given == 1)  # the data's own val rows are in no split
        assert np.array_equal(split == 2, given == 2)


def test_folds_are_seeded_reproducible_and_another_seed_gives_other_folds() -> None:
    labels = imbalanced_labels()
    given = usage_given(labels)
    assert np.array_equal(fold_split(labels, given, 1, seed=3), fold_split(labels, given, 1, seed=3))
    assert not np.array_equal(fold_split(labels, given, 1, seed=3), fold_split(labels, given, 1, seed=4))


def test_data_without_splits_holds_out_the_split_fractions_test_part_before_folding() -> None:
    labels = imbalanced_labels()
    given = np.full(len(labels), -1, dtype=np.int8)  # an image_folder tree without split folders
    usage_test = assign_splits(labels, given, "usage", FRACTIONS, 7) == 2
    splits = [fold_split(labels, given, fold, folds=4, seed=7) for fold in range(4)]
    for split in splits:
        assert np.array_equal(split == 2, usage_test)  # seeded by data.split_seed, as data.split=usage does
    val = np.sort(np.concatenate([np.flatnonzero(split == 1) for split in splits]))
    assert np.array_equal(val, np.flatnonzero(~usage_test))  # every other row is folded
    assert usage_test.sum() == pytest.approx(0.1 * len(labels), abs=7)  # about fractions[2], rounded per class


def image_bytes(images: np.ndarray) -> list[bytes]:
    return sorted(image.tobytes() for image in images)


def test_fer_csv_folds_cover_training_and_public_test_and_keep_private_test(fer_csv: Path, tmp_path: Path) -> None:
    usage = datamodule(tmp_path, [f"data.path={fer_csv}"]).splits
    options = [f"data.path={fer_csv}", "data.split=kfold", "data.folds=3"]
    folds = [datamodule(tmp_path, [*options, f"data.fold={fold}"]).splits for fold in range(3)]
    pool = image_bytes(np.concatenate([usage["train"][0], usage["val"][0]]))
    assert image_bytes(np.concatenate([splits["val"][0] for splits in folds])) == pool
    for splits in folds:
        assert len(splits["train"][1]) + len(splits["val"][1]) == 42 + 14
        assert set(np.bincount(splits["val"][1], minlength=7)) <= {2, 3}  # 8 rows per class in 3 folds
        assert np.array_equal(splits["test"][0], usage["test"][0])  # PrivateTest, untouched and in its order
        assert np.array_equal(splits["test"][1], usage["test"][1])


def test_folds_larger_than_the_smallest_class_is_an_error_at_setup(fer_csv: Path, tmp_path: Path) -> None:
    # fer_csv: 6 Training + 2 PublicTest rows of every class; the pool train_val holds 8 per class, train 6
    options = [f"data.path={fer_csv}", "data.split=kfold"]
    with pytest.raises(UserError, match=r"data.folds=9: expected at most 8, the rows of the smallest class \('angry'"):
        datamodule(tmp_path, [*options, "data.folds=9"])
    with pytest.raises(UserError, match=r"data.folds=7: expected at most 6"):
        datamodule(tmp_path, [*options, "data.folds=7", "data.kfold_pool=train"])
    assert len(datamodule(tmp_path, [*options, "data.folds=8", "data.fold=7"]).splits["val"][1]) == 7


BAD_OPTIONS = [
    ({"fold": 5}, "data.fold=5: expected an integer in [0, data.folds = 5)"),
    ({"fold": -1}, "data.fold=-1: expected an integer in [0, data.folds = 5)"),
    ({"fold": "0"}, "data.fold='0': expected an integer in [0, data.folds = 5)"),
    ({"folds": 1, "fold": 0}, "data.folds=1: expected an integer >= 2 (the number of folds)"),
    ({"folds": 2.5}, "data.folds=2.5: expected an integer >= 2 (the number of folds)"),
    ({"kfold_pool": "all"}, "data.kfold_pool='all': expected one of ['train_val', 'train']"),
]


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS, ids=[m.split(":")[0] for _, m in BAD_OPTIONS])
def test_a_bad_fold_option_names_key_and_value_before_the_data_is_read(options: dict, message: str) -> None:
    with pytest.raises(UserError) as error:
        FERDataModule("/nowhere/fer2013.csv", split="kfold", **options)  # no file: nothing was read
    assert str(error.value) == message


def test_the_config_check_refuses_bad_fold_options_and_ignores_them_outside_kfold(tmp_path: Path) -> None:
    cfg = compose_train(["data.split=kfold", "data.folds=3", "data.fold=3"], tmp_path)
    with pytest.raises(ConfigValueError, match=r"^data.fold=3: expected an integer in \[0, data.folds = 3\)$"):
        check_config(cfg)
    cfg = compose_train(["data.split=kfold", "data.folds=1", "data.fold=-1"], tmp_path)
    with pytest.raises(ConfigValueError, match=r"data.folds=1: .*; data.fold=-1: expected an integer in \[0, data"):
        check_config(cfg)  # every bad key at once
    with pytest.raises(ConfigValueError, match=r"data.split='kfolds': expected one of \['usage', 'stratified'"):
        check_config(compose_train(["data.split=kfolds"], tmp_path))
    check_config(compose_train(["data.split=kfold", "data.folds=2", "data.fold=1"], tmp_path))
    check_config(compose_train(["data.folds=1", "data.fold=9"], tmp_path))  # split=usage: the fold keys are unused

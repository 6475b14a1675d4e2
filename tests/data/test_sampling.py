"""Seeded stratified splits, the split policy of each source, class weights and the balanced sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fer_lightning.data.sampling import (
    assign_splits,
    balanced_sampler,
    class_weights,
    hard_labels,
    stratified_split,
)

LABELS = np.repeat(np.arange(3), [100, 50, 10])


def test_stratified_split_keeps_class_proportions_and_is_seeded() -> None:
    split = stratified_split(LABELS, [0.8, 0.1, 0.1], seed=0)
    for label, count in zip(range(3), (100, 50, 10)):
        sizes = np.bincount(split[label == LABELS], minlength=3)
        assert sizes.tolist() == [
            round(0.8 * count),
            round(0.9 * count) - round(0.8 * count),
            count - round(0.9 * count),
        ]
    assert np.array_equal(split, stratified_split(LABELS, [0.8, 0.1, 0.1], seed=0))
    assert not np.array_equal(split, stratified_split(LABELS, [0.8, 0.1, 0.1], seed=1))


def test_usage_mode_keeps_given_splits_and_stratified_mode_resplits() -> None:
    given = np.repeat(np.array([0, 1, 2], np.int8), [120, 20, 20])
    assert np.array_equal(assign_splits(LABELS, given, "usage", [0.8, 0.1, 0.1], 0), given)
    resplit = assign_splits(LABELS, given, "stratified", [0.5, 0.25, 0.25], 0)
    assert np.bincount(resplit).tolist() == [80, 41, 39]  # per class: 50/25/25, 25/13/12, 5/3/2 (rounded cuts)


def test_missing_val_is_carved_from_train() -> None:
    given = np.where(np.arange(len(LABELS)) % 5 == 0, 2, 0).astype(np.int8)  # train and test only
    split = assign_splits(LABELS, given, "usage", [0.8, 0.1, 0.1], 0)
    assert (split[given == 2] == 2).all()
    assert (split == 1).sum() == round(0.1 * (given == 0).sum())


def test_bad_split_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="data.split must be one of"):
        assign_splits(LABELS, np.zeros(len(LABELS)), "random", [0.8, 0.1, 0.1], 0)
    with pytest.raises(ValueError, match="split_fractions must be 3 fractions"):
        stratified_split(LABELS, [0.8, 0.2], 0)


def test_class_weights_are_inverse_frequency() -> None:
    weights = class_weights(LABELS, 4)  # class 3 is absent
    expected = [160 / (4 * 100), 160 / (4 * 50), 160 / (4 * 10), 0.0]
    torch.testing.assert_close(weights, torch.tensor(expected))


def test_balanced_sampler_draws_classes_equally() -> None:
    torch.manual_seed(0)
    draws = np.array(list(balanced_sampler(LABELS, 3)))
    assert len(draws) == len(LABELS)
    shares = np.bincount(LABELS[draws], minlength=3) / len(draws)
    assert np.allclose(shares, 1 / 3, atol=0.1)


def test_hard_labels_of_soft_targets_are_the_argmax() -> None:
    assert hard_labels(np.array([[0.2, 0.8], [0.6, 0.4]])).tolist() == [1, 0]
    assert hard_labels(np.array([1, 0])).tolist() == [1, 0]

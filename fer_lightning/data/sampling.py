"""Splits and class balance: seeded stratified splits, class weights for the loss, a class-balanced sampler."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

from fer_lightning.errors import UserError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLIT_MODES = ("usage", "stratified")
BALANCE_MODES = ("none", "weighted_loss", "weighted_sampler")


def hard_labels(targets: np.ndarray) -> np.ndarray:
    """Class indices of targets that are indices (N,) or probability vectors (N, K) (their argmax)."""
    return np.asarray(targets).argmax(1) if np.ndim(targets) == 2 else np.asarray(targets)


def check_fractions(fractions: Sequence[float]) -> np.ndarray:
    values = np.asarray(fractions, dtype=np.float64)
    if values.shape != (3,) or (values < 0).any() or values[0] <= 0:
        raise UserError(f"data.split_fractions must be 3 fractions (train > 0, val, test >= 0), got {list(fractions)}")
    return values / values.sum()


def stratified_split(labels: np.ndarray, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Split index (0, 1, 2) per row: every class is shuffled (seeded) and cut by `fractions` (rounded)."""
    fractions = check_fractions(fractions)
    rng = np.random.default_rng(seed)
    split = np.zeros(len(labels), dtype=np.int8)
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        cuts = np.round(np.cumsum(fractions)[:2] * len(rows)).astype(int)
        split[rows[cuts[0] : cuts[1]]] = 1
        split[rows[cuts[1] :]] = 2
    return split


def assign_splits(
    labels: np.ndarray, given: np.ndarray, mode: str, fractions: Sequence[float], seed: int
) -> np.ndarray:
    """Final split of every row.

    `usage` keeps the split the source gives (FER2013's Usage, train/val/test folders, Kaggle file-name prefixes);
    rows it does not assign (-1) are split by `fractions`, and a source without val (or test) rows gets them as a
    seeded stratified `fractions[1]` (or `[2]`) of its train rows. `stratified` re-splits every row by `fractions`.
    """
    if mode not in SPLIT_MODES:
        raise UserError(f"data.split must be one of {list(SPLIT_MODES)}, got {mode!r}")
    fractions = check_fractions(fractions)
    split = np.asarray(given, dtype=np.int8).copy() if mode == "usage" else np.full(len(labels), -1, np.int8)
    pool = np.flatnonzero(split < 0)
    if len(pool):
        split[pool] = stratified_split(labels[pool], fractions, seed)
    for target in (1, 2):
        if not (split == target).any() and fractions[target] > 0:
            train = np.flatnonzero(split == 0)
            carved = train[stratified_split(labels[train], [1 - fractions[target], fractions[target], 0], seed) == 1]
            split[carved] = target
            log.info(
                "no %s rows in the data: %d taken from train (stratified, seed %d)", SPLITS[target], len(carved), seed
            )
    return split


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(hard_labels(labels), minlength=num_classes)[:num_classes]


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights N / (K * count), 1 on average over the samples' classes; an absent class gets 0."""
    counts = class_counts(labels, num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.as_tensor(weights, dtype=torch.float32)


def balanced_sampler(labels: np.ndarray, num_classes: int) -> WeightedRandomSampler:
    """Draws every class equally often (with replacement), one epoch = as many draws as samples."""
    counts = class_counts(labels, num_classes)
    per_sample = 1.0 / counts[hard_labels(labels)]
    return WeightedRandomSampler(torch.as_tensor(per_sample, dtype=torch.double), len(per_sample), replacement=True)

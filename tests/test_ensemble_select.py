"""ensemble_select=best_val: every subset scored on val, the best reported on test; ties to the smaller ensemble."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fer_lightning.ensemble_select import (
    best_per_size,
    check_selection,
    rank_subsets,
    selection_entry,
    subsets_markdown,
)
from fer_lightning.errors import UserError


def one_hot_votes(predictions: list[int], classes: int = 3, confidence: float = 0.6) -> torch.Tensor:
    """Probabilities that put `confidence` on each image's predicted class and spread the rest."""
    probs = torch.full((len(predictions), classes), (1 - confidence) / (classes - 1))
    probs[torch.arange(len(predictions)), torch.tensor(predictions)] = confidence
    return probs


def test_the_subset_best_on_val_is_chosen_and_test_is_only_reported() -> None:
    labels = torch.tensor([0, 1, 2, 0])
    # member 0 is right on val 2/4, member 1 3/4, member 2 4/4; on test member 0 is perfect and member 2 poor
    val = ([one_hot_votes([0, 1, 0, 1]), one_hot_votes([0, 1, 2, 1]), one_hot_votes([0, 1, 2, 0])], labels)
    test = ([one_hot_votes([0, 1, 2, 0]), one_hot_votes([0, 1, 2, 1]), one_hot_votes([1, 0, 2, 1])], labels)
    ranking = rank_subsets(val, test)
    assert len(ranking) == 7
    assert ranking[0]["members"] == [2]
    assert ranking[0]["val/acc"] == 1.0
    assert ranking[0]["test/acc"] == 0.25  # reported as it is, though member 0 alone would score 1.0 on test
    assert [row["val/acc"] for row in ranking] == sorted((row["val/acc"] for row in ranking), reverse=True)


def test_the_mean_of_probabilities_decides_a_subset_and_ties_go_to_fewer_members() -> None:
    labels = torch.tensor([0, 0])
    confident_right = torch.tensor([[0.9, 0.1], [0.9, 0.1]])
    slightly_wrong = torch.tensor([[0.4, 0.6], [0.4, 0.6]])
    split = ([confident_right, slightly_wrong], labels)
    ranking = rank_subsets(split, split)
    # {0} and {0, 1} are both right on both images (mean 0.65 vs 0.35): the single member ranks first
    assert [row["members"] for row in ranking] == [[0], [0, 1], [1]]
    assert [row["val/acc"] for row in ranking] == [1.0, 1.0, 0.0]


def test_probability_labels_count_their_argmax() -> None:
    soft_labels = torch.tensor([[0.7, 0.3], [0.2, 0.8]])
    split = ([torch.tensor([[0.6, 0.4], [0.6, 0.4]])], soft_labels)
    assert rank_subsets(split, split)[0]["val/acc"] == 0.5


def test_best_per_size_and_the_report_name_every_member() -> None:
    labels = torch.tensor([0, 1, 1])
    members = [one_hot_votes([0, 1, 0], 2), one_hot_votes([0, 0, 1], 2), one_hot_votes([1, 1, 1], 2)]
    ranking = rank_subsets((members, labels), (members, labels))
    per_size = best_per_size(ranking)
    assert [len(row["members"]) for row in per_size] == [1, 2, 3]
    for row in per_size:
        same_size = [r["val/acc"] for r in ranking if len(r["members"]) == len(row["members"])]
        assert row["val/acc"] == max(same_size)
    paths = ["a.ckpt", "b.ckpt", "c.ckpt"]
    report = subsets_markdown(ranking, paths, "fer_lightning.data.views.FlipViews")
    for index, path in enumerate(paths, start=1):
        assert f"{index}. `{path}`" in report
    assert "FlipViews" in report
    assert report.count("\n| ") == 2 * 1 + 3 + 7  # a header row per table, 3 best-per-size rows, 7 subsets
    entry = selection_entry(ranking, paths)
    assert entry["chosen"] == [paths[i] for i in ranking[0]["members"]]
    assert len(entry["best_per_size"]) == 3


@pytest.mark.parametrize(
    ("selection", "split", "count", "message"),
    [
        ("best", "both", 3, "expected one of all, best_val"),
        ("best_val", "test", 3, "needs split=both, got split=test"),
        ("best_val", "both", 13, "at most 12 checkpoints"),
    ],
)
def test_a_selection_that_cannot_follow_the_protocol_is_refused(selection, split, count, message) -> None:
    with pytest.raises(UserError, match=message):
        check_selection(selection, split, count)


def test_all_members_needs_no_val_split() -> None:
    check_selection("all", "test", 40)


def test_the_eval_config_offers_the_choice(tmp_path: Path) -> None:
    from tests.conftest import compose_train

    cfg = compose_train(["ckpt_path=[a.ckpt,b.ckpt]"], tmp_path, config_name="eval")
    assert cfg.ensemble_select == "all"

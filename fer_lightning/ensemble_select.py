"""Which members make the best ensemble, chosen on the val split: `eval.py ckpt_path=[...] ensemble_select=best_val`.

Every non-empty subset of the members is scored by the val (PublicTest) accuracy of its mean softmax probabilities,
from each member's probabilities computed once per split (2^N - 1 subsets cost N evaluations, not 2^N). The best is
reported on the test split (PrivateTest): the FER2013 protocol of selecting on PublicTest and reporting PrivateTest,
here for the choice of members. Ties on val go to the smaller ensemble (cheaper to run), then to the earlier members
in the order given. The test accuracy of every subset is listed beside its val accuracy for the record, never used to
choose: picking the subset with the best PrivateTest would be selecting on the test split.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import torch

from fer_lightning.errors import UserError
from fer_lightning.losses import hard_targets

SELECTIONS = ("all", "best_val")
# 2^12 - 1 = 4,095 subsets, each a mean over at most 12 (N, K) tensors: seconds on one core; past that, exhaustive
# search is the wrong tool (a greedy forward selection would be the next step) and it is refused rather than slow
MAX_MEMBERS = 12


def check_selection(selection: str, split: str, num_members: int) -> None:
    """ensemble_select's value, and what best_val needs: both splits (choose on val, report test), few members."""
    if selection not in SELECTIONS:
        raise UserError(f"ensemble_select={selection!r}: expected one of {', '.join(SELECTIONS)}")
    if selection != "best_val":
        return
    if split != "both":
        raise UserError(
            f"ensemble_select=best_val chooses the members on the val split and reports the test split: it needs "
            f"split=both, got split={split}"
        )
    if num_members > MAX_MEMBERS:
        raise UserError(
            f"ensemble_select=best_val scores every subset of the members: at most {MAX_MEMBERS} checkpoints "
            f"(2^{MAX_MEMBERS} - 1 subsets), got {num_members}"
        )


def subset_accuracy(member_probs: Sequence[torch.Tensor], targets: torch.Tensor, members: Sequence[int]) -> float:
    """Accuracy of the mean of the chosen members' probabilities (argmax, as the metrics count it)."""
    mean = torch.stack([member_probs[index] for index in members]).mean(0)
    return (mean.argmax(-1) == hard_targets(targets)).float().mean().item()


def rank_subsets(
    val: tuple[Sequence[torch.Tensor], torch.Tensor], test: tuple[Sequence[torch.Tensor], torch.Tensor]
) -> list[dict]:
    """Every non-empty subset of member indices with its val and test accuracy, best val first (ties: fewer members,
    then the earlier members). val and test are (per-member probabilities, labels) of one split each."""
    count = len(val[0])
    rows = []
    for size in range(1, count + 1):
        for members in itertools.combinations(range(count), size):
            rows.append(
                {
                    "members": list(members),
                    "val/acc": subset_accuracy(*val, members),
                    "test/acc": subset_accuracy(*test, members),
                }
            )
    return sorted(rows, key=lambda row: (-row["val/acc"], len(row["members"]), row["members"]))


def best_per_size(ranking: Sequence[dict]) -> list[dict]:
    """The best-on-val subset of each size (1, 2, ... all), in size order: the 'best 2, best 3, all' of a study."""
    best: dict[int, dict] = {}
    for row in ranking:  # ranking is best first, so the first row seen of each size is its best
        best.setdefault(len(row["members"]), row)
    return [best[size] for size in sorted(best)]


def subsets_markdown(ranking: Sequence[dict], paths: Sequence[str], tta: str | None) -> str:
    """ensemble_subsets.md: the members, the best subset of each size, then every subset ranked by val accuracy."""
    lines = ["# Ensemble subsets, chosen on val (PublicTest), reported on test (PrivateTest)", ""]
    lines += [f"TTA: {tta or 'none'}. Mean of the members' softmax probabilities. Members:", ""]
    lines += [f"{index + 1}. `{path}`" for index, path in enumerate(paths)]

    def table(rows: Sequence[dict]) -> list[str]:
        out = ["| members | size | val/acc | test/acc |", "|---|--:|--:|--:|"]
        for row in rows:
            names = "+".join(str(index + 1) for index in row["members"])
            out.append(f"| {names} | {len(row['members'])} | {row['val/acc']:.4f} | {row['test/acc']:.4f} |")
        return out

    lines += ["", "## Best on val of each size", "", *table(best_per_size(ranking))]
    lines += ["", f"## All {len(ranking)} subsets, best val first (chosen: the first row)", "", *table(ranking), ""]
    return "\n".join(lines)


def write_subsets_report(path: Path, ranking: Sequence[dict], paths: Sequence[str], tta: str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(subsets_markdown(ranking, paths, tta))


def selection_entry(ranking: Sequence[dict], paths: Sequence[str]) -> dict:
    """metrics.json's record of the choice: the rule, the chosen checkpoints, and the best subset of each size."""
    chosen = ranking[0]["members"]
    return {
        "rule": "best val/acc over every non-empty subset (ties: fewer members, then earlier)",
        "chosen": [paths[index] for index in chosen],
        "best_per_size": [
            {"members": [paths[i] for i in row["members"]], "val/acc": row["val/acc"], "test/acc": row["test/acc"]}
            for row in best_per_size(ranking)
        ],
    }

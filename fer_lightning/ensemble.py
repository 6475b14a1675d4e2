"""Checkpoint ensembles in eval: `python eval.py ckpt_path=[a.ckpt,b.ckpt]` averages the members' class probabilities.

Each member is fed as it was trained: image size, crop, channels and mean/std come from its own checkpoint, so a
48 px mini_xception, a 64 px one and a model trained on 40 px crops can be combined. `tta=` applies to every member,
its views cut at each member's own crop size. A member's probabilities are the softmax of its logits (averaged over
the TTA views first, exactly as a single model's eval does); the ensemble's are their mean over members. Metrics are
`lit_module.eval_metrics` (torchmetrics) on those probabilities, so every key means what it means for one model.

All members see the same images in the same order (one data file, one split, no shuffling); their labels are
compared and must agree. The ensemble runs in one process on one device: DDP (`trainer.devices>1`) is refused,
because each rank's predictions would come back sharded (and padded) by the distributed sampler.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn import functional as F

from fer_lightning.calibration import checkpoint_temperature, expected_calibration_error, plot_reliability
from fer_lightning.checkpoint import apply_checkpoint_preprocessing, load_module, match_data_classes
from fer_lightning.ensemble_select import check_selection, rank_subsets, selection_entry, write_subsets_report
from fer_lightning.errors import UserError
from fer_lightning.lit_module import FERLitModule, eval_metrics
from fer_lightning.losses import hard_targets
from fer_lightning.speed import eval_precision
from fer_lightning.utils.report import per_class_accuracy, write_metrics_json, write_run_config, write_split_report
from fer_lightning.utils.rich_config import print_config_tree

SCALARS = ("acc", "f1_macro", "loss", "ece")


@dataclass
class Member:
    path: str
    module: FERLitModule

    @property
    def preprocessing(self) -> dict:
        return dict(self.module.hparams.get("preprocessing", {}))


class MemberProbabilities(L.LightningModule):
    """`trainer.predict` for one member: (softmax probabilities, labels) per batch, at the member's stored
    temperature (`eval.py calibrate=true`; 1 when it has none). FERLitModule has no predict_step of its own (its
    batches carry labels), hence this wrapper."""

    def __init__(self, member: FERLitModule, temperature: float = 1.0) -> None:
        super().__init__()
        self.member, self.temperature = member, temperature

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> tuple[torch.Tensor, ...]:
        images, targets = batch
        logits = self.member(images).float()  # float: under bf16 the mean would lose digits
        return (logits / self.temperature).softmax(-1), targets


def load_members(paths: Sequence[str]) -> list[Member]:
    """Every checkpoint is loaded before any data is read, so a bad path fails at once (checkpoint.py names it)."""
    members = [Member(path, load_module(path)) for path in paths]
    first = members[0]
    for other in members[1:]:
        counts = (first.module.hparams.num_classes, other.module.hparams.num_classes)
        if counts[0] != counts[1] or first.module.class_names != other.module.class_names:
            raise UserError(
                f"ensemble members must predict the same classes: {first.path} predicts {counts[0]} "
                f"{first.module.class_names} but {other.path} predicts {counts[1]} {other.module.class_names}"
            )
    return members


def member_datamodules(cfg: DictConfig, members: Sequence[Member]) -> list[L.LightningDataModule]:
    """One datamodule per distinct (image size, channels, crop): members fed alike share the decoded arrays."""
    shared: dict[tuple, L.LightningDataModule] = {}
    datamodules = []
    for member in members:
        member_cfg = copy.deepcopy(cfg)  # data.crop_size and tta.size interpolate aug.crop_size: per member
        apply_checkpoint_preprocessing(member_cfg, member.preprocessing)
        key = (member_cfg.data.image_size, member_cfg.data.in_chans, member_cfg.aug.crop_size)
        if key not in shared:
            datamodule = hydra.utils.instantiate(member_cfg.data)
            datamodule.prepare_data()
            datamodule.setup("test")
            shared[key] = datamodule
        datamodule = shared[key]
        match_data_classes(member.path, member.module, datamodule, cfg.data.path)  # by name, as a single eval
        datamodules.append(datamodule)
    return datamodules


def predict_split(trainer: L.Trainer, member: Member, datamodule, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    datamodule.test_split = split  # test_dataloader never shuffles: every member sees the same order
    temperature = checkpoint_temperature(member.preprocessing, member.path)
    wrapper = MemberProbabilities(member.module, temperature)
    outputs = trainer.predict(wrapper, datamodule.test_dataloader(), return_predictions=True)
    return torch.cat([probs for probs, _ in outputs]), torch.cat([targets for _, targets in outputs])


def check_same_labels(reference: tuple[str, torch.Tensor], path: str, targets: torch.Tensor, split: str) -> None:
    first, expected = reference
    if expected.shape != targets.shape or not torch.equal(expected, targets):
        raise UserError(
            f"the {split} labels seen by {path} ({len(targets)} images) differ from those seen by {first} "
            f"({len(expected)} images): every member must evaluate the same images in the same order"
        )


def score(probs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """eval_metrics on probabilities, plus the loss: the cross-entropy of the (averaged) predictive distribution,
    which for one member equals its test/loss (soft_cross_entropy of its logits)."""
    metrics = eval_metrics(probs.shape[-1])
    metrics.update(probs, hard_targets(targets))
    values = metrics.compute()
    soft = targets.float() if targets.is_floating_point() else F.one_hot(targets, probs.shape[-1]).float()
    values["loss"] = -(soft * probs.clamp_min(torch.finfo(probs.dtype).tiny).log()).sum(-1).mean()
    values["ece"] = torch.tensor(expected_calibration_error(probs, targets))  # as a single eval reports it
    values["probs"], values["targets"] = probs, targets  # for the reliability diagram
    return values


def member_probabilities(
    trainer: L.Trainer, members: Sequence[Member], datamodules: Sequence, split: str
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each member's probabilities on one split, and the labels they all saw."""
    member_probs, reference = [], None
    for member, datamodule in zip(members, datamodules, strict=True):
        probs, targets = predict_split(trainer, member, datamodule, split)
        if reference is None:
            reference = (member.path, targets)
        check_same_labels(reference, member.path, targets, split)
        member_probs.append(probs)
    return member_probs, reference[1]


def evaluate_split(
    member_probs: Sequence[torch.Tensor], targets: torch.Tensor, chosen: Sequence[int]
) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """The ensemble's metrics (the chosen members' mean probabilities) and each member's, on one split."""
    ensemble = torch.stack([member_probs[index] for index in chosen]).mean(0)
    return score(ensemble, targets), [score(probs, targets) for probs in member_probs]


def member_entry(member: Member, datamodule) -> dict:
    """What the member was fed: sizes as its datamodule actually made them, mean/std as its checkpoint records."""
    sizes = {key: getattr(datamodule, key) for key in ("image_size", "crop_size", "in_chans")}
    normalisation = {key: member.preprocessing.get(key) for key in ("mean", "std")}
    return {"ckpt_path": member.path, "preprocessing": sizes | normalisation}


def run_ensemble_eval(cfg: DictConfig) -> dict:
    """metrics.json with the ensemble's metrics under a single model's keys and `members` beside them; the
    confusion matrix and per-class report are the ensemble's. With ensemble_select=best_val the ensemble is the
    subset of members best on val (ensemble_select.py), and ensemble_subsets.md lists every subset."""
    paths = [str(path) for path in cfg.ckpt_path]
    selection = cfg.get("ensemble_select", "all")
    check_selection(selection, cfg.split, len(paths))
    members = load_members(paths)
    print_config_tree(cfg)
    precision = eval_precision(cfg.trainer.precision, [m.module.hparams.get("trained_precision") for m in members])
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[], precision=precision)
    if trainer.world_size > 1:
        raise UserError(
            f"an ensemble (ckpt_path with {len(paths)} checkpoints) is evaluated in one process on one device, not "
            f"with DDP ({trainer.world_size} processes): use trainer.devices=1"
        )
    datamodules = member_datamodules(cfg, members)
    class_names = list(datamodules[0].class_names)
    output_dir = Path(cfg.paths.output_dir)
    tta = OmegaConf.select(cfg, "tta._target_")
    metrics: dict = {"checkpoint": paths, "tta": tta, "ensemble": "mean_softmax"}
    entries = [member_entry(member, dm) for member, dm in zip(members, datamodules, strict=True)]
    splits = ("val", "test") if cfg.split == "both" else (cfg.split,)
    probs = {split: member_probabilities(trainer, members, datamodules, split) for split in splits}
    chosen = list(range(len(members)))
    if selection == "best_val":
        ranking = rank_subsets(probs["val"], probs["test"])
        chosen = ranking[0]["members"]
        metrics["selection"] = selection_entry(ranking, paths)
        write_subsets_report(output_dir / "ensemble_subsets.md", ranking, paths, tta)
    for split in splits:
        ensemble, per_member = evaluate_split(*probs[split], chosen)
        metrics |= {f"{split}/{key}": ensemble[key].item() for key in SCALARS}
        metrics[f"{split}/per_class_acc"] = per_class_accuracy(class_names, ensemble["per_class_acc"])
        for entry, values in zip(entries, per_member, strict=True):
            entry |= {f"{split}/{key}": values[key].item() for key in SCALARS}
        write_split_report(output_dir, split, ensemble["confmat"].numpy(), class_names)
        panel = (f"{split}: ensemble of {len(chosen)} (mean of probabilities)", ensemble["probs"])
        plot_reliability([panel], ensemble["targets"], output_dir / f"reliability_{split}.png")
    metrics["members"] = [entry | {"in_ensemble": index in chosen} for index, entry in enumerate(entries)]
    write_run_config(output_dir, cfg)
    write_metrics_json(output_dir / "metrics.json", metrics)
    print(f"\n{summary_table(metrics, splits)}\nRun directory: {output_dir}")
    return metrics


def summary_table(metrics: dict, splits: Sequence[str]) -> str:
    """Member rows and the ensemble row: accuracy and macro F1 per split, each member's input and checkpoint."""
    columns = [f"{split}/{key}" for split in splits for key in ("acc", "f1_macro")]
    rows = [["model", "input", *columns, "checkpoint"]]
    for index, entry in enumerate(metrics["members"], start=1):
        prep = entry["preprocessing"]
        size = f"{prep['image_size']}px" + (f" crop {prep['crop_size']}" if prep["crop_size"] else "")
        size += f" {prep['in_chans']}ch" if prep["in_chans"] != 1 else ""
        rows.append([f"member {index}", size, *(f"{entry[c]:.4f}" for c in columns), entry["ckpt_path"]])
    chosen = [index for index, entry in enumerate(metrics["members"], start=1) if entry["in_ensemble"]]
    how = f"mean of {len(chosen)}" + (
        f" (members {'+'.join(map(str, chosen))}, chosen on val)" if "selection" in metrics else ""
    )
    rows.append(["ensemble", "", *(f"{metrics[c]:.4f}" for c in columns), how])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)

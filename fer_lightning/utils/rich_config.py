"""Print the composed config as a rich tree at the start of a run, and save it beside the run's outputs."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from rich import print as rich_print
from rich.syntax import Syntax
from rich.tree import Tree

FIRST_GROUPS = ("data", "model", "aug", "module", "optimizer", "scheduler", "trainer")


def print_config_tree(cfg: DictConfig, resolve: bool = True) -> None:
    tree = Tree("config", style="dim")
    ordered = [k for k in FIRST_GROUPS if k in cfg] + [k for k in cfg if k not in FIRST_GROUPS]
    for key in ordered:
        node = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=resolve) if isinstance(node, DictConfig) else str(node)
        tree.add(key, style="bold").add(Syntax(text, "yaml", theme="ansi_dark"))
    rich_print(tree)

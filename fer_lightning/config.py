"""The one home of config wiring: where conf/ is, the OmegaConf resolvers it uses, and config -> objects.

The entry points (`cli.py`) take CONFIG_DIR from here; tools (`bench/`, `tools/`) and the tests compose the train
config through `compose`; nothing imports an entry script for any of it. Importing this module (the package's
`__init__.py` does) registers the resolvers, so every way of composing conf/ resolves them.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

# conf/ sits beside the package in the repository (install with `pip install -e .`).
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def _image_folder_info(key: str, path: str):
    """`${image_folder:num_classes,${data.path}}`: a fact read from an image tree (see data/formats/folders.py)."""
    from fer_lightning.data.formats.folders import image_folder_info

    value = image_folder_info(path)[key]
    return ListConfig(value) if isinstance(value, list) else value  # a plain list breaks OmegaConf.resolve


# `${fer.cwd:}`, the directory a command runs in, for paths.root_dir: Hydra's `${hydra:runtime.cwd}` cannot be
# resolved where a multirun computes its sweep directory (before any job has set HydraConfig).
if not OmegaConf.has_resolver("fer.cwd"):
    OmegaConf.register_new_resolver("fer.cwd", os.getcwd)
if not OmegaConf.has_resolver("image_folder"):
    OmegaConf.register_new_resolver("image_folder", _image_folder_info, use_cache=True)
# `${fer.not:${trainer.deterministic}}`: trainer=gpu's cuDNN autotuning, off where a run asks for determinism
if not OmegaConf.has_resolver("fer.not"):
    OmegaConf.register_new_resolver("fer.not", lambda value: not value)


def compose(
    config_name: str = "train", overrides: Sequence[str] = (), output_dir: str | os.PathLike | None = None
) -> DictConfig:
    """conf/<config_name>.yaml with Hydra `overrides`, as the entry point would compose it, outside `@hydra.main`.

    `${hydra:...}` interpolations (`paths.output_dir`, the run directory) resolve as in a run: the run directory is
    `output_dir`, else the one Hydra would create (`hydra.run.dir`, not created here). The `hydra` node itself is
    left out of the result; `HydraConfig.get()` answers for it (the group choices, say).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir) if output_dir is not None else cfg.hydra.run.dir
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # `${hydra:...}` resolves through HydraConfig; the node itself is read-only
    return cfg


def group_choice(group: str) -> str | None:
    """The option of a config group (`aug` -> `heavy`) in the config composed last (by Hydra or `compose`)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None


def instantiate_list(cfg: DictConfig | None) -> list:
    """Instantiate every `_target_` node of a group such as `callbacks` or `logger` (null entries are skipped)."""
    import hydra

    if not cfg:
        return []
    return [hydra.utils.instantiate(node) for node in cfg.values() if node is not None and "_target_" in node]


def model_config(cfg: DictConfig) -> dict:
    """The model node without `_target_` (instantiate would build it): `create_model(**model_config)`, as stored
    in every checkpoint."""
    return {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "_target_"}


# `key=value`, `+key=value`, `++key=value`, `~key[=value]`: what Hydra takes on a command line
OVERRIDE = re.compile(r"^(~[A-Za-z_][\w.@/-]*(=.*)?|\+{0,2}[A-Za-z_][\w.@/-]*=.*)$", re.DOTALL)


def parse_with_overrides(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The argument rule of every tool that composes the train config: its own options through argparse, and Hydra
    overrides of that config (`model=resnet18 aug=heavy data.path=...`) as positional `key=value` arguments anywhere
    on the line, in `args.overrides`. They are picked out before argparse parses the rest, so an option taking
    several values (`--models a b aug=heavy`) cannot swallow them."""
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="Hydra overrides of the train config (conf/train.yaml)"
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args([arg for arg in argv if not OVERRIDE.match(arg)])
    args.overrides = [arg for arg in argv if OVERRIDE.match(arg)]
    return args

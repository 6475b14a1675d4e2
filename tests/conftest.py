"""Shared fixtures: small FER2013-format CSVs made by the tests, and the real configs composed for CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from fer_lightning.cli import CONFIG_DIR
from tests.scripts import one_thread  # noqa: F401 (a fixture, shared by every test module)

REAL_FER2013 = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013"


def write_fer_csv(path: Path, counts: dict[str, int], num_classes: int = 7, seed: int = 0) -> Path:
    """A FER2013-format CSV with random pixels; every class appears in every usage when counts allow."""
    rng = np.random.default_rng(seed)
    lines = ["emotion,pixels,Usage"]
    for usage, count in counts.items():
        for i in range(count):
            pixels = " ".join(map(str, rng.integers(0, 256, 48 * 48)))
            lines.append(f"{i % num_classes},{pixels},{usage}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def fer_csv(tmp_path: Path) -> Path:
    return write_fer_csv(tmp_path / "fer2013.csv", {"Training": 42, "PublicTest": 14, "PrivateTest": 14})


@pytest.fixture
def real_fer2013() -> Path:
    path = REAL_FER2013 / "fer2013.csv.gz"
    if not path.exists():
        pytest.skip(f"real FER2013 not found at {path}")
    return path


def compose_train(overrides: list[str], tmp_path: Path, config_name: str = "train") -> DictConfig:
    """Compose the real config as `train.py` would, with outputs under tmp_path, for the CPU."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # `${hydra:...}` resolves through HydraConfig; the node itself is read-only
    return cfg

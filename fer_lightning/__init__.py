"""fer-lightning: a PyTorch Lightning + Hydra framework for facial expression recognition."""

# Registers the OmegaConf resolvers conf/ uses (`fer.cwd`, `image_folder`) on import, so every way of composing the
# config (train.py, tools, tests, your own `hydra.compose`) resolves them.
from fer_lightning import config  # noqa: F401

__version__ = "0.1.0"

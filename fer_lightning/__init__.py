"""fer-lightning: a PyTorch Lightning + Hydra framework for facial expression recognition."""

__version__ = "0.1.0"

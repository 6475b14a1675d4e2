"""Lightning callbacks of our own: resumable interruptions (checkpoint + RNG state) and W&B test predictions."""

from fer_lightning.callbacks.resume import InterruptCheckpoint, RNGStateCheckpoint
from fer_lightning.callbacks.wandb_predictions import WandbTestPredictions

__all__ = ["InterruptCheckpoint", "RNGStateCheckpoint", "WandbTestPredictions"]

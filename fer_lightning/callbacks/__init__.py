"""Lightning callbacks of our own: resumable interruptions (checkpoint + RNG state), W&B test predictions, and
channels_last convolutions where they are faster."""

from fer_lightning.callbacks.memory_format import ChannelsLast
from fer_lightning.callbacks.resume import InterruptCheckpoint, RNGStateCheckpoint
from fer_lightning.callbacks.training_clock import TrainingClock
from fer_lightning.callbacks.wandb_predictions import WandbTestPredictions

__all__ = ["ChannelsLast", "InterruptCheckpoint", "RNGStateCheckpoint", "TrainingClock", "WandbTestPredictions"]

"""Lightning callbacks of our own: resumable interruptions (checkpoint + RNG state), W&B test predictions,
channels_last convolutions where they are faster, DDP's SIGTERM check without a host sync per step, and
ModelCheckpoint without the last.ckpt Lightning wrote under fast_dev_run."""

from fer_lightning.callbacks.ddp_sigterm import DDPSigtermEveryNSteps
from fer_lightning.callbacks.memory_format import ChannelsLast
from fer_lightning.callbacks.model_checkpoint import FERModelCheckpoint
from fer_lightning.callbacks.resume import InterruptCheckpoint, RNGStateCheckpoint
from fer_lightning.callbacks.training_clock import TrainingClock
from fer_lightning.callbacks.wandb_predictions import WandbTestPredictions

__all__ = [
    "ChannelsLast",
    "DDPSigtermEveryNSteps",
    "FERModelCheckpoint",
    "InterruptCheckpoint",
    "RNGStateCheckpoint",
    "TrainingClock",
    "WandbTestPredictions",
]

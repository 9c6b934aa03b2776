"""The one trainer: optimisers, schedules, clipping, checkpoints, resume, DDP, callbacks."""

from seqlab.training.trainer import Callback, Trainer, TrainResult, train

__all__ = ["Callback", "TrainResult", "Trainer", "train"]

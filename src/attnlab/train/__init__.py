"""attnlab.train: the trainer, checkpoints (safetensors + JSON), schedules, the loss and signal handling."""

from attnlab.core.train_config import TrainConfig, train_config_from_dict
from attnlab.train.checkpoint import Checkpoint, capture_rng, load_checkpoint, restore_rng, save_checkpoint
from attnlab.train.loss import loss_evaluator, masked_cross_entropy, token_loss
from attnlab.train.schedule import WarmupSchedule, lr_factor
from attnlab.train.signals import StopSignals, TrainingInterrupted
from attnlab.train.trainer import BatchSource, Trainer, TrainResult, build_optimizer

__all__ = [
    "BatchSource",
    "Checkpoint",
    "StopSignals",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingInterrupted",
    "WarmupSchedule",
    "build_optimizer",
    "capture_rng",
    "load_checkpoint",
    "loss_evaluator",
    "lr_factor",
    "masked_cross_entropy",
    "restore_rng",
    "save_checkpoint",
    "token_loss",
    "train_config_from_dict",
]

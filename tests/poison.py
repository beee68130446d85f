"""A real Lightning callback that makes training diverge on purpose, to test non-finite loss handling."""

import math

import torch
from lightning.pytorch import Callback


class PoisonWeightsAtEpoch(Callback):
    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                pl_module.output_layer.weight.fill_(math.nan)

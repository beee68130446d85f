"""Real Lightning callbacks that let tests look inside a run started as a separate process."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from lightning.pytorch import Callback


class SaveWeightsPerRank(Callback):
    """At the end of training, every process saves its model's weights to `dirpath/weights_rank<R>.pt`."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_train_end(self, trainer, pl_module) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in pl_module.state_dict().items()},
                   self.dirpath / f"weights_rank{trainer.global_rank}.pt")


class PauseAtEpoch(Callback):
    """After epoch `epoch` (1-based) has ended and its checkpoint is written, touch `marker` and wait.

    A test that waits for the marker knows exactly which epoch the run is in when it sends a signal.
    Runs after ModelCheckpoint because callbacks are called in the order they are given and this one
    is added last (`+callbacks.zz_pause...`, Hydra keeps the config's order: new keys come last).
    """

    def __init__(self, epoch: int, marker: str, seconds: float = 60.0) -> None:
        self.epoch, self.marker, self.seconds = epoch, Path(marker), seconds

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 == self.epoch:
            self.marker.write_text(str(self.epoch))
            time.sleep(self.seconds)  # the signal lands here

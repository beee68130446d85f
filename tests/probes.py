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
    """Once `epochs` epochs have ended (and their checkpoints are written), touch `marker` and wait.

    A test that waits for the marker knows exactly where the run is when it sends a signal: at the
    start of epoch `epochs + 1`, with `last.ckpt` holding epoch `epochs`. It pauses once: a resumed
    run that finds the marker goes straight on.
    """

    def __init__(self, epochs: int, marker: str, seconds: float = 120.0, only_for: str | None = None) -> None:
        self.epochs, self.marker, self.seconds, self.only_for = epochs, Path(marker), seconds, only_for

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.only_for is not None and pl_module.name != self.only_for:
            return  # in a sweep: pause only the job of this wiring
        if trainer.current_epoch == self.epochs and not self.marker.exists():
            self.marker.write_text(str(self.epochs))
            time.sleep(self.seconds)  # the signal lands here


class FillDiskAtEpoch(Callback):
    """At the start of epoch `epoch` (0-based), fill the file system of `ballast` with one big file, once.

    The next write of the run (a checkpoint at the end of that epoch) then meets a full disk. The
    `marker` (on another file system) makes a resumed run leave the disk alone.
    """

    def __init__(self, epoch: int, ballast: str, marker: str) -> None:
        self.epoch, self.ballast, self.marker = epoch, Path(ballast), Path(marker)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch != self.epoch or self.marker.exists():
            return
        self.marker.write_text("filled")
        chunk = bytes(4096)
        with open(self.ballast, "wb", buffering=0) as handle:
            try:
                while True:
                    handle.write(chunk)
            except OSError:
                pass


class FailOnce(Callback):
    """Fails the first run that reaches epoch `epoch` of wiring `only_for` (creating `marker`); later runs pass."""

    def __init__(self, marker: str, only_for: str, epoch: int = 1) -> None:
        self.marker, self.only_for, self.epoch = Path(marker), only_for, epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if pl_module.name == self.only_for and trainer.current_epoch == self.epoch and not self.marker.exists():
            self.marker.write_text("failed once")
            raise RuntimeError("a failure on purpose (tests/probes.py FailOnce)")

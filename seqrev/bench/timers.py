"""Lightning callbacks that time a run for the benchmark: when its first epoch starts, how long it trains."""

from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch import Callback


class FirstStepTimer(Callback):
    """Writes the wall-clock time (time.time()) at which the first training epoch starts to `path`.

    The whole-process measurement adds it to a run with
    `+callbacks.first_step_timer._target_=seqrev.bench.timers.FirstStepTimer +callbacks.first_step_timer.path=FILE`.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.written = False

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # per epoch, not per batch: steps stay grouped
        if not self.written:
            self.path.write_text(repr(time.time()))
            self.written = True


class TrainingTimer(Callback):
    """Wall seconds from the start to the end of training (all epochs, validation included)."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.started = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self.seconds = time.perf_counter() - self.started

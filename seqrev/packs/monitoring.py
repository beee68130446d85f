"""Lightning's EarlyStopping and ModelCheckpoint rules, applied by a pack at each member's epoch end.

No loop calls these callbacks' hooks in a pack: a member's own instances (from its config) are updated
here, on their public state, which their `state_dict` saves in Lightning's layout. tests/test_monitoring.py
checks these rules against the callbacks themselves in a real Trainer.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint


def should_stop(stopper: EarlyStopping, value: float, epoch: int) -> bool:
    """EarlyStopping's rule for one epoch's monitored value, as Lightning evaluates it (in float32, with
    its thresholds, `min_delta` and patience); records the stopped epoch."""
    current, better = torch.tensor(value), stopper.monitor_op
    if stopper.check_finite and not torch.isfinite(current):
        stop = True
    elif stopper.stopping_threshold is not None and better(current, stopper.stopping_threshold):
        stop = True
    elif stopper.divergence_threshold is not None and better(-current, -stopper.divergence_threshold):
        stop = True
    elif better(current - stopper.min_delta, stopper.best_score):
        stopper.best_score, stopper.wait_count, stop = current, 0, False
    else:
        stopper.wait_count += 1
        stop = stopper.wait_count >= stopper.patience
    if stop:
        stopper.stopped_epoch = epoch
    return stop


def file_written(callback: ModelCheckpoint) -> Path:
    """The one file a `save_top_k=1` ModelCheckpoint with a fixed `filename` writes."""
    return Path(callback.dirpath) / f"{callback.filename}{callback.FILE_EXTENSION}"


def should_save(callback: ModelCheckpoint, value: float | None) -> bool:
    """ModelCheckpoint's rule at `save_top_k=1`: without a monitor, every epoch; with one, the first value
    and each better than the best so far (NaN counts as the worst); records the new best."""
    path = str(file_written(callback))
    callback.last_model_path = ""
    if callback.monitor is None:
        callback.best_model_path = path
        return True
    current = torch.tensor(value)
    if torch.isnan(current):
        current = torch.tensor(math.inf if callback.mode == "min" else -math.inf)
    better = {"min": torch.lt, "max": torch.gt}[callback.mode]
    if callback.best_k_models and not better(current, callback.best_model_score):
        callback.current_score = current
        return False
    callback.best_k_models = {path: current}
    callback.best_model_path = callback.kth_best_model_path = path
    callback.best_model_score = callback.kth_value = callback.current_score = current
    return True

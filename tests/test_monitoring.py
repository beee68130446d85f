"""A pack's members stop and keep their best checkpoint by the rules of Lightning's own callbacks: the same
sequences of monitored values fed to seqrev.packs.monitoring and to EarlyStopping / ModelCheckpoint in a real
Trainer give the same epoch to stop at and the same best epoch."""

import math

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from seqrev.packs.monitoring import should_save, should_stop

NAN = math.nan


class Scripted(LightningModule):
    """Logs the next value of a script as its monitored metric at every validation; learns nothing."""

    def __init__(self, monitor: str, values: list[float]) -> None:
        super().__init__()
        self.monitor, self.values = monitor, values
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.weight * batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log(self.monitor, self.values[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.ones(1, 1)))

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.ones(1, 1)))


def callbacks(tmp_path, monitor: str, mode: str, **stopping) -> tuple[EarlyStopping, ModelCheckpoint]:
    return (EarlyStopping(monitor=monitor, mode=mode, **stopping),
            ModelCheckpoint(dirpath=tmp_path, filename="best", monitor=monitor, mode=mode, save_top_k=1,
                            enable_version_counter=False))


SCRIPTS = [
    ("val/loss", "min", [3.0, 2.0, 2.0, 2.0, 2.0, 1.0, 1.0], {"patience": 3}),  # ties do not improve
    ("val/loss", "min", [3.0, 2.8, 2.5, 2.4, 2.35, 2.3, 1.0, 0.9], {"patience": 2, "min_delta": 0.2}),
    ("val/loss", "min", [3.0, 2.0, NAN, 1.0, 0.5], {"patience": 5}),  # NaN stops (check_finite)
    ("val/loss", "min", [3.0, 2.0, NAN, 1.0, 0.5], {"patience": 5, "check_finite": False}),  # ... or counts as worst
    ("val/loss", "min", [NAN, 2.0, 2.5, 1.0], {"patience": 5, "check_finite": False}),  # a NaN first is saved
    ("val/loss", "min", [3.0, 2.0, 2.5, 1.0], {"patience": 0}),
    ("val/loss", "min", [3.0, 2.0, 1.5, 1.0], {"patience": 5, "stopping_threshold": 1.6}),
    ("val/loss", "min", [3.0, 2.0, 9.0, 1.0], {"patience": 5, "divergence_threshold": 5.0}),
    ("val/acc", "max", [0.1, 0.5, 0.5, 0.4, 0.6, 0.6, 0.6], {"patience": 2}),
    ("val/acc", "max", [0.1, 0.2, 0.25, 0.3, 0.9], {"patience": 1, "min_delta": 0.1}),
]


@pytest.mark.parametrize(("monitor", "mode", "values", "stopping"), SCRIPTS)
def test_a_members_rules_stop_and_keep_the_best_where_lightnings_callbacks_do(tmp_path, monitor, mode, values,
                                                                              stopping):
    stopper, best = callbacks(tmp_path / "lightning", monitor, mode, **stopping)
    trainer = Trainer(max_epochs=len(values), callbacks=[stopper, best], logger=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(Scripted(monitor, values))
    lightning_best = torch.load(tmp_path / "lightning" / "best.ckpt", weights_only=True)["epoch"]

    ours_stopper, ours_best = callbacks(tmp_path / "pack", monitor, mode, **stopping)
    epochs_run, best_epoch = len(values), None
    for epoch, value in enumerate(values):
        stop = should_stop(ours_stopper, value, epoch)
        if should_save(ours_best, value):
            best_epoch = epoch
        if stop:
            epochs_run = epoch + 1
            break
    assert (epochs_run, ours_stopper.stopped_epoch, ours_stopper.wait_count) == (
        trainer.current_epoch, stopper.stopped_epoch, stopper.wait_count)
    assert best_epoch == lightning_best
    assert ours_best.best_model_score.item() == pytest.approx(best.best_model_score.item(), nan_ok=True)

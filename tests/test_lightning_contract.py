"""Lightning's contract under seqrev: on the same seed, a seqrev run and a reference LightningModule
with Lightning's automatic optimisation (the same wiring's layers, Adam, loss and batches) see the same
training hooks in the same order with the same batch indices and global_step, and end with the same
weights, whatever Trainer options or Lightning callbacks a user brings."""

import re
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import (
    GradientAccumulationScheduler,
    LearningRateMonitor,
    ModelCheckpoint,
    StochasticWeightAveraging,
)
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seqrev.run import build, train

from conftest import compose_config
from probes import HookLog, record_module_hooks

# 300 pairs less the 10% validation tail: 270 rows, 9 training batches of 32 an epoch; 30 validation
# pairs in 2 batches of 16.
SMALL = ("model=both_outputs", "data.n_train=300", "data.n_test=50", "data.eval_batch_size=16",
         "trainer.max_epochs=3")
HOOKS = ("+callbacks.hooks._target_=probes.HookLog",)


class Reference(LightningModule):
    """What a Lightning user writes: `training_step` returns the loss, Lightning does the rest."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        return torch.nn.functional.cross_entropy(self.net(inputs).flatten(0, 1), targets.flatten())

    def validation_step(self, batch, batch_idx):
        inputs, targets = batch
        self.log("val/loss", torch.nn.functional.cross_entropy(self.net(inputs).flatten(0, 1), targets.flatten()))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3, eps=1e-7)  # Keras' Adam, as seqrev's default


def reference_run(cfg, callbacks=(), module_hooks: bool = False, logger=False, **options):
    """Lightning's own loop on the same data and initial weights (seeded as seqrev.train.build seeds)."""
    seed_everything(cfg.seed, verbose=False)
    data = instantiate(cfg.data)  # no group size: one batch per call
    net = instantiate(cfg.model)
    model = (record_module_hooks(Reference) if module_hooks else Reference)(net)
    trainer = Trainer(max_epochs=cfg.trainer.max_epochs, accelerator="cpu", devices=1, logger=logger,
                      enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      callbacks=list(callbacks), **options)
    trainer.fit(model, datamodule=data)
    return trainer, model


def seqrev_run(*overrides, output_dir):
    data, model, trainer = build(compose_config(*SMALL, *overrides, output_dir=output_dir))
    trainer.fit(model, datamodule=data)
    return trainer, model


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name.removeprefix("net."): value for name, value in module.state_dict().items()}


def assert_same_weights(ours: torch.nn.Module, reference: torch.nn.Module) -> None:
    reference_weights = weights(reference)
    for name, value in weights(ours).items():
        assert torch.allclose(value, reference_weights[name], atol=1e-6), name


def hook_calls(trainer) -> list[tuple]:
    return next(c for c in trainer.callbacks if isinstance(c, HookLog)).hook_calls


CASES = {
    "default": {},
    "clip_norm": {"gradient_clip_val": 0.05},
    "clip_value": {"gradient_clip_val": 0.002, "gradient_clip_algorithm": "value"},
    "accumulate": {"accumulate_grad_batches": 2},
    "max_steps": {"max_steps": 13},
    "limit_train_batches_number": {"limit_train_batches": 3},
    "limit_train_batches_fraction": {"limit_train_batches": 0.5},
    "limit_val_batches_number": {"limit_val_batches": 1},
    "limit_val_batches_fraction": {"limit_val_batches": 0.5},
    "val_check_interval_number": {"val_check_interval": 4},
    "val_check_interval_fraction": {"val_check_interval": 0.5},
    "check_val_every_n_epoch": {"check_val_every_n_epoch": 2},
}


@pytest.mark.parametrize("options", CASES.values(), ids=CASES.keys())
def test_hooks_steps_and_weights_equal_lightnings_own_loop(tmp_path, options):
    overrides = [f"trainer.{key}={value}" for key, value in options.items()]
    ours, our_model = seqrev_run(*HOOKS, *overrides, output_dir=tmp_path)
    cfg = compose_config(*SMALL, output_dir=tmp_path)
    theirs, their_model = reference_run(cfg, callbacks=[HookLog()], **options)
    assert hook_calls(ours) == hook_calls(theirs)
    assert len(hook_calls(ours)) > 30  # every batch and step was seen, not just epochs
    assert ours.global_step == theirs.global_step
    assert_same_weights(our_model, their_model)


def test_the_module_hooks_of_a_wiring_are_called_as_lightning_calls_them(tmp_path):
    ours, our_model = seqrev_run("model._target_=probes.RecordedBothOutputs", "trainer.accumulate_grad_batches=2",
                                 output_dir=tmp_path)
    theirs, their_model = reference_run(compose_config(*SMALL, output_dir=tmp_path), module_hooks=True,
                                        accumulate_grad_batches=2)
    assert our_model.hook_calls == their_model.hook_calls
    assert [call[0] for call in our_model.hook_calls].count("on_before_optimizer_step") == 3 * 5
    assert_same_weights(our_model, their_model)


def test_the_default_run_groups_batches_and_still_equals_lightnings_own_loop(tmp_path):
    ours, our_model = seqrev_run(output_dir=tmp_path)
    assert not our_model.automatic_optimization  # several batches per call: the fast path was taken
    theirs, their_model = reference_run(compose_config(*SMALL, output_dir=tmp_path))
    assert ours.global_step == theirs.global_step == 3 * 9
    assert_same_weights(our_model, their_model)


@pytest.mark.parametrize("overrides,grouped,reason", [
    ((), True, None),
    (HOOKS, False, "HookLog acts on every training batch (on_train_batch_start)"),
    (("trainer.max_steps=5",), False, "trainer.max_steps=5 counts optimiser steps"),
    (("trainer.limit_train_batches=1",), False, "trainer.limit_train_batches=1 counts batches"),
    (("trainer.limit_val_batches=1", "trainer.check_val_every_n_epoch=2"), True, None),
    (("trainer.gradient_clip_val=1.0",), False, "trainer.gradient_clip_val clips"),
    (("+trainer.max_time=00:01:00:00",), False, "Timer acts on every training batch"),
    (("+callbacks.t._target_=lightning.pytorch.callbacks.Timer", "+callbacks.t.duration=00:01:00:00"), False,
     "Timer acts on every training batch"),
    (("+callbacks.t._target_=lightning.pytorch.callbacks.Timer", "+callbacks.t.duration=00:01:00:00",
      "+callbacks.t.interval=epoch"), True, None),
    (("+callbacks.lr._target_=lightning.pytorch.callbacks.LearningRateMonitor",), False,
     "LearningRateMonitor acts on every training batch"),
    (("+callbacks.lr._target_=lightning.pytorch.callbacks.LearningRateMonitor",
      "+callbacks.lr.logging_interval=epoch"), True, None),
    (("+callbacks.c._target_=lightning.pytorch.callbacks.ModelCheckpoint", "+callbacks.c.every_n_train_steps=5"),
     False, "ModelCheckpoint acts on every training batch"),
    (("+callbacks.s._target_=lightning.pytorch.callbacks.StochasticWeightAveraging", "+callbacks.s.swa_lrs=0.001"),
     False, "StochasticWeightAveraging needs Lightning's automatic optimisation"),
    (("model._target_=probes.RecordedBothOutputs",), False, "RecordedBothOutputs overrides on_train_batch_start"),
])
def test_batches_are_grouped_only_when_nothing_acts_per_batch_and_the_console_says_why(
        tmp_path, caplog, overrides, grouped, reason):
    caplog.set_level("INFO", logger="seqrev")
    data, model, trainer = build(compose_config(*SMALL, *overrides, output_dir=tmp_path))
    assert model.automatic_optimization is not grouped
    assert (data.group_size == 64) is grouped
    said = [r.message for r in caplog.records if "one batch per Lightning call" in r.message]
    if reason is None:
        assert not said
    else:
        assert len(said) == 1 and reason in said[0], said


def test_one_batch_per_call_is_lightnings_loop_and_says_nothing(tmp_path, caplog):
    caplog.set_level("INFO", logger="seqrev")
    data, model, _ = build(compose_config(*SMALL, *HOOKS, "data.steps_per_call=1", output_dir=tmp_path))
    assert model.automatic_optimization and data.group_size is None
    assert "one batch per Lightning call" not in caplog.text


def test_learning_rate_monitor_logs_every_n_steps_as_in_lightning(tmp_path):
    monitor = ("+callbacks.lr._target_=lightning.pytorch.callbacks.LearningRateMonitor",
               "+callbacks.lr.logging_interval=step", "trainer.log_every_n_steps=4")
    seqrev_run(*monitor, output_dir=tmp_path / "ours")
    reference_run(compose_config(*SMALL, output_dir=tmp_path), callbacks=[LearningRateMonitor("step")],
                  logger=TensorBoardLogger(tmp_path / "theirs", name="", version=""), log_every_n_steps=4)

    def steps(folder: Path) -> list[int]:
        events = EventAccumulator(str(folder))
        events.Reload()
        tag = next(t for t in events.Tags()["scalars"] if t.startswith("lr-"))
        return [e.step for e in events.Scalars(tag)]

    assert steps(tmp_path / "ours") == steps(tmp_path / "theirs") == [3, 7, 11, 15, 19, 23]  # 27 steps


def test_model_checkpoint_every_n_train_steps_writes_what_lightning_writes(tmp_path):
    every = ("+callbacks.c._target_=lightning.pytorch.callbacks.ModelCheckpoint",
             f"+callbacks.c.dirpath={tmp_path / 'ours'}", "+callbacks.c.filename='{step}'",
             "+callbacks.c.every_n_train_steps=10", "+callbacks.c.save_top_k=-1")
    seqrev_run(*every, output_dir=tmp_path / "run")
    reference_run(compose_config(*SMALL, output_dir=tmp_path), callbacks=[
        ModelCheckpoint(tmp_path / "theirs", "{step}", every_n_train_steps=10, save_top_k=-1)])
    written = sorted(p.name for p in (tmp_path / "ours").iterdir())
    assert written == sorted(p.name for p in (tmp_path / "theirs").iterdir()) == ["step=10.ckpt", "step=20.ckpt"]


@pytest.mark.parametrize("target,settings,callback", [
    ("StochasticWeightAveraging", {"swa_lrs": 0.01, "swa_epoch_start": 1},
     lambda: StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=1)),
    ("GradientAccumulationScheduler", {"scheduling": "{0: 1, 1: 3}"},
     lambda: GradientAccumulationScheduler(scheduling={0: 1, 1: 3})),
])
def test_lightnings_training_callbacks_work_as_documented(tmp_path, target, settings, callback):
    overrides = [f"+callbacks.x._target_=lightning.pytorch.callbacks.{target}",
                 *(f"+callbacks.x.{key}={value}" for key, value in settings.items())]
    ours, our_model = seqrev_run(*overrides, output_dir=tmp_path)
    theirs, their_model = reference_run(compose_config(*SMALL, output_dir=tmp_path), callbacks=[callback()])
    assert ours.global_step == theirs.global_step
    assert_same_weights(our_model, their_model)
    plain, plain_model = reference_run(compose_config(*SMALL, output_dir=tmp_path))
    assert not torch.allclose(weights(plain_model)["layer1.weight_ih_l0"], weights(our_model)["layer1.weight_ih_l0"])


def test_the_console_shows_each_epochs_own_numbers(tmp_path, caplog):
    caplog.set_level("INFO", logger="seqrev")
    train(compose_config(*SMALL, "callbacks.epoch_log.every_n_epochs=1", output_dir=tmp_path))
    shown = {int(m[1]): float(m[2]) for m in re.finditer(r"epoch (\d+)/3: train/loss ([\d.]+)", caplog.text)}
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    logged = [e.value for e in events.Scalars("train/loss")]
    assert sorted(shown) == [1, 2, 3]
    assert [shown[epoch] for epoch in (1, 2, 3)] == pytest.approx(logged, abs=5e-5)
    assert len(set(logged)) == 3


def test_no_private_lightning_attribute_is_used():
    root = Path(__file__).resolve().parents[1] / "seqrev"
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "fit_loop" not in text, path
        # Lightning's objects by the names seqrev gives them; Hydra's own keys (`model._target_`) are no attributes
        owner = r"(trainer|strategy|optimizer|callback|pl_module|model|module|datamodule|data)"
        assert not re.search(owner + r"\._(?!(target|recursive|convert|partial)_)[a-z]", text), path
        assert not re.search(r"lightning[\w.]*\._", text), path

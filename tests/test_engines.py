"""Which engine trains a job (seqrev.engines): in process, from real Trainers and models, in milliseconds.
Lightning's own loop wherever something acts per batch or per optimiser step; grouped steps otherwise."""

import pytest
from hydra.utils import instantiate
from lightning.pytorch import Callback
from omegaconf import OmegaConf

from seqrev.engines import Job, choose
from seqrev.models.wirings import BothOutputs

from conftest import compose_config


class TakesItsOwnStep(BothOutputs, abstract=True):
    """A wiring of a user's that overrides a step hook: Lightning must run that step as documented."""

    def optimizer_step(self, *args, **kwargs):
        return super().optimizer_step(*args, **kwargs)


class CountsBatches(Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        pass


def built(tmp_path, *overrides: str, model=None, callbacks=()) -> Job:
    """A job as seqrev.run.build makes it: the config, its Trainer (with its callbacks) and model."""
    cfg = compose_config(*overrides, output_dir=tmp_path)
    made = [instantiate(settings) for settings in cfg.callbacks.values()]
    settings = {id(c): OmegaConf.to_container(s, resolve=True) for c, s in zip(made, cfg.callbacks.values())}
    trainer = instantiate(cfg.trainer, callbacks=[*made, *callbacks], logger=False, _convert_="all")
    model = model or instantiate(cfg.model)
    return Job(cfg, None, trainer, model, settings)


def test_the_default_run_is_grouped(tmp_path):
    assert choose(built(tmp_path)) == ("grouped", "nothing acts per batch")


def test_a_wiring_that_overrides_a_step_hook_takes_lightnings_own_loop(tmp_path):
    model = TakesItsOwnStep(n_features=10, timesteps=4)
    assert choose(built(tmp_path, model=model)) == ("per_batch", "TakesItsOwnStep overrides optimizer_step")


@pytest.mark.parametrize(("override", "reason"), [
    ("trainer.accumulate_grad_batches=2", "trainer.accumulate_grad_batches=2 counts batches"),
    ("trainer.max_steps=30", "trainer.max_steps=30 counts optimiser steps"),
    ("trainer.gradient_clip_val=1.0", "trainer.gradient_clip_val clips in Lightning's optimiser step"),
    ("trainer.limit_train_batches=5", "trainer.limit_train_batches=5 counts batches"),
    ("data.steps_per_call=1", "data.steps_per_call=1"),
])
def test_an_option_counted_in_batches_or_steps_alone_takes_lightnings_own_loop(tmp_path, override, reason):
    assert choose(built(tmp_path, override)) == ("per_batch", reason)


def test_a_callback_that_acts_per_batch_takes_lightnings_own_loop(tmp_path):
    job = built(tmp_path, callbacks=[CountsBatches()])
    assert choose(job) == ("per_batch", "CountsBatches acts on every training batch (on_train_batch_end)")

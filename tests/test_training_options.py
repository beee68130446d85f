"""Lightning's training options under seqrev's fast step: the same numbers as Lightning's own automatic
optimisation, for clipping and accumulation; learning-rate schedules that step, log and resume."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch import Trainer, seed_everything
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seqrev.models.wirings import BothOutputs
from seqrev.train import build, train

from conftest import ROOT, compose_config, run_cli, wait_until_paused

SMALL = ("data.n_train=300", "data.n_test=50", "trainer.max_epochs=2")


class AutomaticBothOutputs(BothOutputs):
    """The same model trained by Lightning's automatic optimisation: its own clipping and accumulation."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.automatic_optimization = True

    def training_step(self, batches, batch_idx):
        [(inputs, targets)] = batches  # one batch per call (data.steps_per_call=1)
        return self.loss(self(inputs), targets)


def lightning_reference(cfg, **trainer_options) -> dict[str, torch.Tensor]:
    """Final weights of Lightning's own loop on the same data, initial weights and batches."""
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    del kwargs["_target_"], kwargs["_recursive_"]
    seed_everything(cfg.seed, verbose=False)  # as seqrev.train.build: seed, data, then the model's weights
    data = instantiate(cfg.data, steps_per_call=1)
    model = AutomaticBothOutputs(**kwargs)
    trainer = Trainer(max_epochs=cfg.trainer.max_epochs, accelerator="cpu", devices=1, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, **trainer_options)
    trainer.fit(model, datamodule=data)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, trainer.global_step


def seqrev_weights(cfg) -> tuple[dict[str, torch.Tensor], int]:
    data, model, trainer = build(cfg)
    trainer.fit(model, datamodule=data)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, trainer.global_step


def assert_same_weights(a: dict, b: dict) -> None:
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


@pytest.mark.parametrize("algorithm,value", [("norm", 0.05), ("value", 0.002)])
def test_clipping_equals_lightnings_own(tmp_path, algorithm, value):
    cfg = compose_config(*SMALL, "model=both_outputs", f"trainer.gradient_clip_val={value}",
                         f"trainer.gradient_clip_algorithm={algorithm}", output_dir=tmp_path)
    reference, _ = lightning_reference(cfg, gradient_clip_val=value, gradient_clip_algorithm=algorithm)
    clipped, _ = seqrev_weights(cfg)  # several batches per Lightning call (data.steps_per_call=64)
    assert_same_weights(clipped, reference)
    unclipped, _ = seqrev_weights(compose_config(*SMALL, "model=both_outputs", output_dir=tmp_path / "plain"))
    assert not torch.allclose(unclipped["layer1.weight_ih_l0"], clipped["layer1.weight_ih_l0"], atol=1e-4)


def test_accumulation_equals_lightnings_own_and_counts_optimiser_steps(tmp_path):
    # 300 pairs less the 10% validation tail: 270 rows, 9 batches of 32 an epoch (the last one of 14)
    cfg = compose_config(*SMALL, "model=both_outputs", "trainer.accumulate_grad_batches=2", "data.steps_per_call=4",
                         output_dir=tmp_path)
    reference, reference_steps = lightning_reference(cfg, accumulate_grad_batches=2)
    accumulated, steps = seqrev_weights(cfg)
    assert steps == reference_steps == 2 * 5  # 9 batches and N=2: 5 steps an epoch, the last of one batch
    assert_same_weights(accumulated, reference)


def test_the_default_57_batches_with_accumulation_2_take_29_steps_an_epoch(tmp_path):
    cfg = compose_config("trainer.max_epochs=1", "trainer.accumulate_grad_batches=2", output_dir=tmp_path)
    data, model, trainer = build(cfg)
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 29
    assert all(state["step"] == 29 for state in model.optimizers().optimizer.state.values())


def learning_rates(run_dir) -> list[float]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [e.value for e in events.Scalars("train/learning_rate")]


def test_cosine_schedule_steps_once_an_epoch_and_is_logged(tmp_path):
    results = train(compose_config(*SMALL, "trainer.max_epochs=4", "scheduler=cosine", output_dir=tmp_path))
    assert results["scheduler"] == "CosineAnnealingLR"
    rates = learning_rates(tmp_path)
    expected = [0.001 * (1 + torch.cos(torch.tensor(torch.pi * e / 4)).item()) / 2 for e in range(4)]
    assert rates == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_plateau_schedule_cuts_the_rate_after_patience_epochs_without_progress(tmp_path):
    # progress only counts above 0.5 of validation loss, and patience 1: the rate must be cut, and soon
    results = train(compose_config(*SMALL, "trainer.max_epochs=6", "scheduler=plateau", "model.scheduler.patience=1",
                                   "model.scheduler.threshold=0.5", "callbacks.early_stopping.patience=100",
                                   output_dir=tmp_path))
    assert results["scheduler"] == "ReduceLROnPlateau"
    rates = learning_rates(tmp_path)
    # epoch 1 sets the best; epochs 2 and 3 do not beat it by 0.5: the rate for epoch 4 is cut by Keras' factor
    assert rates == pytest.approx([1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5], rel=1e-5)


def test_the_tutorials_constant_rate_is_the_default(tmp_path):
    results = train(compose_config(*SMALL, output_dir=tmp_path))
    assert results["scheduler"] == "none"
    assert learning_rates(tmp_path) == pytest.approx([0.001, 0.001])


@pytest.mark.slow
def test_a_resumed_run_with_a_schedule_equals_an_uninterrupted_one(tmp_path):
    line = (*SMALL, "trainer.max_epochs=5", "scheduler=cosine", "trainer.gradient_clip_val=0.5",
            "trainer.accumulate_grad_batches=2", "callbacks.early_stopping.patience=100")
    whole = run_cli(*line, f"hydra.run.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-2000:]
    run_dir, marker = tmp_path / "killed", tmp_path / "paused"
    process = subprocess.Popen(
        [sys.executable, "-m", "seqrev.train", *line, f"hydra.run.dir={run_dir}",
         "+callbacks.pause._target_=probes.PauseAtEpoch", "+callbacks.pause.epochs=2",
         f"+callbacks.pause.marker={marker}"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "tests")}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    wait_until_paused(marker, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = run_cli(f"resume={run_dir}", env={"PYTHONPATH": str(ROOT / "tests")})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got, expected = (json.loads((d / "results.json").read_text()) for d in (run_dir, tmp_path / "whole"))
    for key in ("val_loss", "test_acc", "train_acc", "test_loss", "epochs_run"):
        assert got[key] == expected[key], key
    assert learning_rates(run_dir) == pytest.approx(learning_rates(tmp_path / "whole"))


@pytest.mark.parametrize("args,sentence", [
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1 is not allowed"),
    (["trainer.gradient_clip_algorithm=max"], "trainer.gradient_clip_algorithm='max' is not allowed"),
    (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0 is not allowed"),
])
def test_bad_training_options_are_one_sentence(tmp_path, args, sentence):
    from seqrev.config import validate
    from seqrev.errors import ConfigError
    with pytest.raises(ConfigError, match=sentence.replace("(", r"\(")):
        validate(compose_config(*args, output_dir=tmp_path))

"""Learning-rate schedules that step once an epoch, log and resume, whether batches are grouped or not
(clipping, accumulation and Lightning's other options: tests/test_lightning_contract.py)."""

import json
import signal

import pytest
import torch
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import seqrev
from seqrev.run import train

from conftest import ROOT, TINY, compose_config, pause_at, run_cli, start_paused

TWO_EPOCHS = (*TINY, "trainer.max_epochs=2")



def learning_rates(run_dir) -> list[float]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [e.value for e in events.Scalars("train/learning_rate")]


@pytest.mark.parametrize("steps_per_call", [64, 1])  # stepped by seqrev under grouped steps, else by Lightning
def test_cosine_schedule_steps_once_an_epoch_and_is_logged(tmp_path, steps_per_call):
    results = train(compose_config(*TWO_EPOCHS, "trainer.max_epochs=4", "scheduler=cosine",
                                   f"data.steps_per_call={steps_per_call}", output_dir=tmp_path))
    assert results["scheduler"] == "CosineAnnealingLR"
    rates = learning_rates(tmp_path)
    expected = [0.001 * (1 + torch.cos(torch.tensor(torch.pi * e / 4)).item()) / 2 for e in range(4)]
    assert rates == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("steps_per_call", [64, 1])
def test_plateau_schedule_cuts_the_rate_after_patience_epochs_without_progress(tmp_path, steps_per_call):
    # progress only counts above 0.5 of validation loss, and patience 1: the rate must be cut, and soon
    results = train(compose_config(*TINY, "trainer.max_epochs=6", "scheduler=plateau", "model.scheduler.patience=1",
                                   "model.scheduler.threshold=0.5", "callbacks.early_stopping.patience=100",
                                   f"data.steps_per_call={steps_per_call}",
                                   output_dir=tmp_path))
    assert results["scheduler"] == "ReduceLROnPlateau"
    rates = learning_rates(tmp_path)
    # epoch 1 sets the best; epochs 2 and 3 do not beat it by 0.5: the rate for epoch 4 is cut by Keras' factor
    assert rates == pytest.approx([1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5], rel=1e-5)


def test_the_tutorials_constant_rate_is_the_default(tmp_path):
    results = train(compose_config(*TWO_EPOCHS, output_dir=tmp_path))
    assert results["scheduler"] == "none"
    assert learning_rates(tmp_path) == pytest.approx([0.001, 0.001])


@pytest.mark.slow
def test_a_resumed_run_with_a_schedule_equals_an_uninterrupted_one(tmp_path):
    line = (*TWO_EPOCHS, "trainer.max_epochs=5", "scheduler=cosine", "trainer.gradient_clip_val=0.5",
            "trainer.accumulate_grad_batches=2", "callbacks.early_stopping.patience=100")
    whole = run_cli(*line, f"hydra.run.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-2000:]
    run_dir, marker = tmp_path / "killed", tmp_path / "paused"
    process = start_paused([*line, f"hydra.run.dir={run_dir}", *pause_at(2, marker)], marker)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = run_cli(f"resume={run_dir}", "+callbacks.pause._target_=probes.PauseAtEpoch",  # accepted knowingly
                      env={"PYTHONPATH": str(ROOT / "tests")})
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


@pytest.mark.parametrize("validation", [(), ("trainer.val_check_interval=0.5",),
                                        ("trainer.check_val_every_n_epoch=2",)])
@pytest.mark.parametrize("max_steps", [4, 9, 14])  # below, at and above one epoch (TINY: 9 batches an epoch)
def test_max_steps_works_with_the_default_callbacks_and_says_which_weights_were_tested(tmp_path, max_steps,
                                                                                       validation):
    cfg = compose_config(*TINY, f"trainer.max_steps={max_steps}", *validation, output_dir=tmp_path)
    results = train(cfg)
    validations = {(): max_steps // 9, ("trainer.val_check_interval=0.5",): max_steps // 4,
                   ("trainer.check_val_every_n_epoch=2",): max_steps // 18}[validation]  # before training stopped
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert results["status"] == "ok" and last["global_step"] == max_steps
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file() == (validations > 0)
    assert results["tested"].startswith(f"the weights at the end of training (step {max_steps})")
    assert ("no validation ran during training" in results["tested"]) == (validations == 0)
    data = instantiate(cfg.data)
    data.prepare()
    tested = seqrev.load(tmp_path, checkpoint="last").evaluate(data.test_dataloader())  # what training ended with
    assert results["test_acc"] == pytest.approx(tested["acc"], abs=1e-6)

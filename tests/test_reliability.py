import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from seqrev.run import train

from conftest import (
    PAUSE_TARGET,
    PROBES,
    TINY,
    compose_config,
    pause_at,
    run_cli,
    start_paused,
    started_a_second_earlier,
)

METRICS = ("train_acc", "val_acc", "val_loss", "test_acc", "test_seq_acc", "test_loss", "test_acc_per_position",
           "epochs_run", "stopped_early")

BAD_VALUES = [  # checked in-process on the composed config: milliseconds each
    (["data.timesteps=0"], "data.timesteps=0 is not allowed"),
    (["data.timesteps=abc"], "data.timesteps='abc' is not allowed"),
    (["data.min_timesteps=9"], "data.min_timesteps=9 is not allowed: it must be a whole number of at least 1 and at "
                               "most 4"),
    (["data.min_timesteps=0"], "data.min_timesteps=0 is not allowed"),
    (["data.task=shuffle"], "data.task='shuffle' is not allowed: choose one of reverse, copy"),
    (["data.n_features=1"], "data.n_features=1 is not allowed"),
    (["data.n_train=1"], "data.n_train=1 is not allowed"),
    (["data.n_test=0"], "data.n_test=0 is not allowed"),
    (["data.val_fraction=1.5"], "data.val_fraction=1.5 is not allowed"),
    (["data.val_fraction=0.0001"], "leave at least one validation pair"),
    (["data.batch_size=0"], "data.batch_size=0 is not allowed"),
    (["data.steps_per_call=0"], "data.steps_per_call=0 is not allowed"),
    (["data.eval_batch_size=0"], "data.eval_batch_size=0 is not allowed"),
    (["threads=0"], "threads=0 is not allowed"),
    (["model.units=-3"], "model.units=-3 is not allowed"),
    (["model.init=xavier"], "choose one of keras, torch"),
    (["model.cell=transformer"], "model.cell='transformer' is not allowed: choose one of lstm, gru, rnn"),
    (["model=attention", "model.attention=dot"], "model.attention='dot' is not allowed: choose one of multiplicative"),
    (["model.optimizer.lr=-0.1"], "model.optimizer.lr=-0.1 is not allowed"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 is not allowed"),
    (["trainer.max_steps=0"], "trainer.max_steps=0 is not allowed"),
    (["trainer.limit_train_batches=1.5"], "trainer.limit_train_batches=1.5 is not allowed"),
    (["trainer.limit_val_batches=0"], "trainer.limit_val_batches=0 is not allowed"),
    (["trainer.limit_test_batches=-2"], "trainer.limit_test_batches=-2 is not allowed"),
    (["trainer.val_check_interval=0.0"], "trainer.val_check_interval=0.0 is not allowed"),
    (["trainer.check_val_every_n_epoch=0"], "trainer.check_val_every_n_epoch=0 is not allowed"),
    (["trainer.precision=16-mixed"], "trainer.precision='16-mixed' is not allowed"),
    (["callbacks.early_stopping.patience=-1"], "callbacks.early_stopping.patience=-1 is not allowed"),
    (["seed=-1"], "seed=-1 is not allowed"),
    (["trainer=gpu"], "this machine has no CUDA GPU"),
    (["trainer.devices=0"], "trainer.devices=0 is not allowed"),
    (["trainer.deterministic=maybe"], "trainer.deterministic='maybe' is not allowed: it must be true or false"),
    (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps=0 is not allowed"),
    (["+trainer.min_epoch=3"], "trainer.min_epoch is not an option of Lightning's Trainer; did you mean "
                               "trainer.min_epochs?"),
    (["+trainer.callbacks=[]"], "trainer.callbacks is not allowed: seqrev gives the Trainer its callbacks"),
    (["+trainer.max_time=abc"], "trainer.max_time='abc' is not allowed: Lightning's Trainer refused it "
                                "(`Timer(duration='abc')` is not a valid duration"),
    (["+trainer.enable_checkpointing=false"], "trainer.enable_checkpointing=False is not allowed: Lightning's Trainer "
                                              "refused it (Trainer was configured with `enable_checkpointing=False` "
                                              "but found `ModelCheckpoint` in callbacks list"),
    (["+trainer.benchmark=1"], "trainer.benchmark=1 is not allowed: Lightning's Trainer refused it"),
]


@pytest.mark.parametrize("args,sentence", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_a_bad_value_is_one_sentence(tmp_path, args, sentence):
    from seqrev.config import validate
    from seqrev.errors import ConfigError
    with pytest.raises(ConfigError) as refused:
        validate(compose_config(*args, output_dir=tmp_path), cuda_available=False)  # as on a machine without CUDA
    assert sentence in str(refused.value)
    assert "\n" not in str(refused.value) and str(refused.value).endswith((".", "?"))


BAD_LINES = [  # through the command line as a user types it: exit status 2, one line on stderr
    (["data.timesteps=0"], "data.timesteps=0 is not allowed"),
    (["model=nope"], "model='nope' is not allowed: choose one of attention, both_outputs"),
    (["trainer=tpu"], "trainer='tpu' is not allowed: choose one of cpu, ddp, default, gpu"),
    (["logger=[tensorboard,mlfow]"], "logger='mlfow' is not allowed: choose one of csv, mlflow, tensorboard, wandb."),
    (["data.timestep=4"], "`data.timestep` is not a setting of data=reversed; did you mean `data.timesteps`"),
    (["model.unit=32"], "`model.unit` is not a setting of model=both_outputs; did you mean `model.units`"),
    (["callbacks.x._target_=a.B"], "`+callbacks.x._target_=...` for a new key"),
    (["resume=/no/such/run"], "there is no such directory"),
    (["+trainer.max_time=abc"], "trainer.max_time='abc' is not allowed: Lightning's Trainer refused it"),
    (["+callbacks.x._target_=nope.Nope"], "callbacks.x._target_='nope.Nope' cannot be found: there is no module "
                                          "'nope'"),
    (["model.optimizer._target_=torch.optim.Adamm"], "model.optimizer._target_='torch.optim.Adamm' cannot be found: "
                                                     "torch.optim has no 'Adamm'"),
    (["+foo=1"], "`foo` is not a setting seqrev reads; for labels of your own, use `+tags.foo=...`"),
    (["foo=1"], "`foo` is not a setting; check the spelling, or write `+tags.foo=...` for a label of your own"),
    (["+model.optimizer.wd=0.1"], "`model.optimizer.wd` is not a setting of torch.optim.Adam (it takes"),
    (["+data.n_trains=5"], "`data.n_trains` is not a setting of seqrev.data.SequenceData; did you mean "
                           "`data.n_train`?"),
]


BAD_SWEEPS = [  # a launcher's settings: refused before Hydra makes the sweep's folder
    (["hydra/launcher=packed", "hydra.launcher.n_jobs=abc"], "hydra.launcher.n_jobs='abc' is not allowed: give a "
                                                             "whole number of processes"),
    (["hydra/launcher=packed", "hydra.launcher.n_jobs=0"], "hydra.launcher.n_jobs=0 is not allowed"),
    (["hydra/launcher=packed", "hydra.launcher.njobs=2"], "hydra.launcher.njobs=2 is not allowed: Key 'njobs' is not"),
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=abc"], "hydra.launcher.n_jobs=abc is not allowed: Value 'abc' of "
                                                             "type 'str' could not be converted to Integer"),
    (["hydra/launcher=joblib", "hydra.launcher.backend=nope"], "hydra.launcher.backend=nope is not allowed: joblib "
                                                               "refused it (Invalid backend: nope"),
    (["hydra/launcher=slurm", "hydra.launcher.timeout_min=-5"], "hydra.launcher.timeout_min=-5 is not allowed: it "
                                                                "must be a whole number of at least 1"),
]


@pytest.mark.parametrize("args,sentence", BAD_SWEEPS, ids=[" ".join(a) for a, _ in BAD_SWEEPS])
def test_a_bad_launcher_or_trainer_setting_ends_a_sweep_in_one_sentence_before_its_folder(tmp_path, seqrev_train,
                                                                                           args, sentence):
    sweep = tmp_path / "sweep"
    done = seqrev_train("-m", *args, "seed=0,1", *TINY, "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and sentence in done.stderr, done.stderr[-2000:]
    assert not sweep.exists()


@pytest.mark.parametrize("args,sentence", BAD_LINES, ids=[" ".join(a) for a, _ in BAD_LINES])
def test_bad_input_on_the_command_line_ends_in_one_sentence_and_exit_status_2(tmp_path, seqrev_train, args, sentence):
    run_dir = tmp_path / "run"
    done = seqrev_train(*args, f"hydra.run.dir={run_dir}")
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("seqrev: "), done.stderr[-2000:]
    assert sentence in done.stderr
    assert not run_dir.exists()  # no half-made run directory left behind


@pytest.mark.slow
def test_hydra_full_error_still_gives_the_whole_traceback(tmp_path):
    done = run_cli("data.timesteps=0", f"hydra.run.dir={tmp_path / 'run'}", env={"HYDRA_FULL_ERROR": "1"})
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "seqrev/config.py" in done.stderr  # down to where it was refused


@pytest.mark.parametrize("asked", [None, "1"])
def test_a_sweep_jobs_failure_is_raised_as_it_is_only_when_hydra_full_error_asks(tmp_path, seqrev_train, asked):
    """HYDRA_FULL_ERROR=1 reaches a sweep's job as a value, whatever process it runs in: its error is raised
    as it is; without it the job's failure is recorded and the sweep goes on. Either way the variable is as
    the user had it once the command has ended."""
    import os

    line = ("-m", "seed=0", *TINY, "trainer.max_epochs=2", f"hydra.sweep.dir={tmp_path / 'sweep'}",
            "+callbacks.fail._target_=probes.FailOnce", f"+callbacks.fail.marker={tmp_path / 'failed'}",
            "+callbacks.fail.only_for=both_outputs")
    if asked is None:
        done = seqrev_train(*line)
        assert done.returncode == 0 and "0 done, 1 failed" in done.stdout, done.stderr[-2000:]
        assert "HYDRA_FULL_ERROR" not in os.environ
    else:
        with pytest.raises(RuntimeError, match="a failure on purpose"):
            seqrev_train(*line, env={"HYDRA_FULL_ERROR": asked})
        assert os.environ["HYDRA_FULL_ERROR"] == asked


def test_labels_of_ones_own_go_under_tags_and_are_recorded(tmp_path):
    import seqrev

    results = seqrev.fit("model=single_default", *TINY, "trainer.max_epochs=1", "+tags.team=blue", "+tags.try=3",
                         f"hydra.run.dir={tmp_path / 'run'}")
    assert results["tags"] == {"team": "blue", "try": 3}


def test_resume_with_fewer_epochs_or_steps_than_the_run_trained_is_refused_before_it_starts(tmp_path, seqrev_train):
    run = tmp_path / "run"
    first = seqrev_train("model=single_default", *TINY, "trainer.max_epochs=3", f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-2000:]
    (run / "results.json").unlink()  # as a run killed after its third epoch leaves its folder
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    for key, given, done in (("max_epochs", 2, 3), ("max_steps", 5, 27)):
        refused = seqrev_train(f"resume={run}", f"trainer.{key}={given}")
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr[-2000:]
        assert (f"trainer.{key}={given}: that run has already trained {done} {key[4:]}; give at least {done}"
                in refused.stderr)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before
    assert seqrev_train(f"resume={run}", "trainer.max_epochs=3").returncode == 0  # as many as it trained: it ends


def test_a_typo_in_a_sweep_is_refused_before_any_job_runs(tmp_path, seqrev_train):
    sweep = tmp_path / "sweep"
    done = seqrev_train("-m", "model=return_state,both_outputs", "model.unitz=8", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 2 and "`model.unitz` is not a setting" in done.stderr
    assert not sweep.exists()


def test_a_folder_that_is_not_a_run_and_a_corrupt_checkpoint_are_refused(tmp_path, seqrev_train):
    not_a_run = tmp_path / "plain"
    not_a_run.mkdir()
    done = seqrev_train(f"resume={not_a_run}")
    assert done.returncode == 2 and "is not a seqrev run directory" in done.stderr

    run_dir = tmp_path / "run"
    assert seqrev_train(*TINY, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}").returncode == 0
    (run_dir / "results.json").unlink()  # pretend the run died, then break its checkpoint
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    done = seqrev_train(f"resume={run_dir}")
    assert done.returncode == 2 and "is not a readable checkpoint" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == b"not a checkpoint"  # nothing touched
    assert not (run_dir / "results.json").exists()  # the refusal wrote nothing either


def test_a_finished_run_is_never_overwritten(tmp_path, seqrev_train):
    run_dir = tmp_path / "run"
    assert seqrev_train(*TINY, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}").returncode == 0
    before = (run_dir / "results.json").read_text()
    again = seqrev_train(*TINY, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}")
    assert again.returncode == 2 and "already holds a run's results.json" in again.stderr
    resumed = seqrev_train(f"resume={run_dir}")
    assert resumed.returncode == 2 and "that run finished when it reached trainer.max_epochs=1" in resumed.stderr
    assert (run_dir / "results.json").read_text() == before


def metrics_of(results: dict) -> dict:
    return {key: results[key] for key in METRICS}


def test_same_seed_same_numbers_and_different_seed_different_numbers(tmp_path):
    runs = [train(compose_config(*TINY, "trainer.max_epochs=3", f"seed={seed}", output_dir=tmp_path / str(i)))
            for i, seed in enumerate((5, 5, 6))]
    assert metrics_of(runs[0]) == metrics_of(runs[1])
    assert metrics_of(runs[0]) != metrics_of(runs[2])


def test_non_finite_loss_fails_the_run_with_a_clear_message(tmp_path, seqrev_train):
    run_dir = tmp_path / "run"
    done = seqrev_train(*TINY, "trainer.max_epochs=4", f"hydra.run.dir={run_dir}",
                   "+callbacks.poison._target_=poison.PoisonWeightsAtEpoch")
    assert done.returncode != 0
    assert "training diverged at epoch 1: the loss is nan" in done.stderr
    assert "Traceback" not in done.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed" and "diverged" in results["error"]


def start_paused_run(run_dir: Path, pause_after: int, *args: str) -> tuple[subprocess.Popen, Path]:
    """A run that stops and waits once `pause_after` epochs are done; returns it and its marker file."""
    marker = run_dir.parent / f"{run_dir.name}.paused"
    # a shell starts background jobs with SIGINT ignored, and children inherit that: undo it, so
    # Ctrl-C reaches the run however the test suite itself was started
    process = start_paused([*TINY, *args, f"hydra.run.dir={run_dir}", *pause_at(pause_after, marker)], marker,
                           stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return process, marker


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    epochs = ("trainer.max_epochs=8", "callbacks.early_stopping.patience=100")
    whole = run_cli(*TINY, *epochs, f"hydra.run.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-2000:]

    run_dir = tmp_path / "killed"
    process, _ = start_paused_run(run_dir, 3, *epochs)
    process.send_signal(signal.SIGKILL)  # after exactly 3 epochs
    process.wait()
    assert not (run_dir / "results.json").exists()
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2

    resumed = run_cli(f"resume={run_dir}", PAUSE_TARGET, env=PROBES)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout
    expected = json.loads((tmp_path / "whole" / "results.json").read_text())
    got = json.loads((run_dir / "results.json").read_text())
    assert got["resumed"] is True and got["status"] == "ok"
    assert metrics_of(got) == metrics_of(expected)
    assert len(list(run_dir.glob("events.out.tfevents.*"))) >= 2  # one TensorBoard run, both sessions in it


@pytest.mark.slow
def test_sigint_stops_gracefully_with_a_checkpoint_and_resumes_exactly(tmp_path):
    epochs = ("trainer.max_epochs=4", "callbacks.early_stopping.patience=100")
    whole = run_cli(*TINY, *epochs, f"hydra.run.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-2000:]

    run_dir = tmp_path / "run"
    process, _ = start_paused_run(run_dir, 2, "trainer.max_epochs=100", "callbacks.early_stopping.patience=100")
    process.send_signal(signal.SIGINT)  # after exactly 2 epochs
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "interrupted" and results["epochs_run"] == 2
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    assert "Traceback" not in stderr
    resumed = run_cli(f"resume={run_dir}", "trainer.max_epochs=4", PAUSE_TARGET, env=PROBES)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = json.loads((run_dir / "results.json").read_text())
    expected = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert got["resumed"] is True and metrics_of(got) == metrics_of(expected)


def test_resume_continues_from_the_last_checkpoint_not_the_best(tmp_path):
    run = tmp_path / "run"
    train(compose_config(*TINY, "trainer.max_epochs=2", output_dir=run))
    (run / "checkpoints" / "best.ckpt").unlink()  # only last.ckpt holds where the run stopped
    (run / "results.json").unlink()
    results = train(compose_config(*TINY, "trainer.max_epochs=3", f"resume={run}", output_dir=run))
    assert results["resumed"] is True and results["epochs_run"] == 3


def test_seqrevs_own_trainer_options_are_the_ones_its_configs_set():
    """seqrev.config.TRAINER_KEYS tells a user's own `+trainer.KEY` from seqrev's: it is conf/trainer's keys."""
    import yaml

    from seqrev.config import TRAINER_KEYS

    from conftest import CONF

    keys = set()
    for path in (CONF / "trainer").glob("*.yaml"):
        settings = yaml.safe_load(path.read_text()) or {}
        keys |= set(settings.get("trainer", settings)) - {"defaults"}
    assert keys == TRAINER_KEYS


@pytest.mark.parametrize("engine", ["data.steps_per_call=8", "data.steps_per_call=1"], ids=["grouped", "per_batch"])
def test_a_run_resumed_from_before_its_last_logged_epoch_shows_each_epoch_once_in_tensorboard(tmp_path, engine):
    """Killed after logging an epoch but before that epoch's checkpoint was on disk: resumed, the run logs
    that epoch again, and TensorBoard's readers keep only the resumed run's points from there on."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, kept = tmp_path / "run", tmp_path / "kept"
    every_epoch = ("+callbacks.keep._target_=lightning.pytorch.callbacks.ModelCheckpoint",
                   "+callbacks.keep.save_top_k=-1", f"+callbacks.keep.dirpath={kept}",
                   "+callbacks.keep.filename='{epoch}'", "+callbacks.keep.monitor=val/acc",
                   "+callbacks.keep.mode=max")  # every epoch's checkpoint kept
    line = (*TINY, engine, "trainer.max_epochs=3", *every_epoch)
    train(compose_config(*line, output_dir=run))
    (kept / "epoch=1.ckpt").replace(run / "checkpoints" / "last.ckpt")  # the killed run's: two epochs, not three
    (run / "results.json").unlink()
    started_a_second_earlier(run)  # as a killed run started before its resumed one: its events sort first
    train(compose_config(*line, f"resume={run}", output_dir=run))
    events = EventAccumulator(str(run))
    events.Reload()
    steps = {tag: [e.step for e in events.Scalars(tag)] for tag in ("val/loss", "train/loss", "test/acc")}
    assert len(steps["val/loss"]) == len(steps["train/loss"]) == 3, steps
    assert steps["val/loss"] == sorted(set(steps["val/loss"])) and len(steps["test/acc"]) == 1, steps
    epochs = [int(e.value) for e in events.Scalars("epoch")]
    assert epochs == sorted(epochs), epochs

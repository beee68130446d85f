"""One run as a function of its config: validate, build, fit, score, publish.

Nothing here reads global state: the caller (`seqrev.train`, for the command line and `seqrev.fit`)
passes in what Hydra knows, such as the name the model's config file gives it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from seqrev import trackers
from seqrev.config import validate
from seqrev.lifecycle import record_interrupt
from seqrev.publish import Example, log_to_tensorboard, print_report
from seqrev.results import RunIdentity, RunResults, describe, write_results
from seqrev.rundir import SavedTraining, last_checkpoint, read_resume

log = logging.getLogger("seqrev")


def train(cfg: DictConfig, model_name: str | None = None, saved: SavedTraining | None = None) -> RunResults:
    """One run, start to finish: build, fit, score, publish. Raises on failure; the caller records it.

    `model_name` is the name of the model's config file (`model=NAME`); by default the wiring's own. `saved`:
    the checkpoint it continues from, when the caller has read it (else `cfg.resume`'s, read here)."""
    validate(cfg)
    saved = saved or read_resume(cfg.resume)
    datamodule, model, trainer = build(cfg, resuming=saved is not None)
    run_dir = Path(cfg.paths.output_dir)
    resume_from = saved.path if saved else None
    about = describe(cfg, model_name or getattr(model, "name", None))  # a model of ones own may have no name
    if resume_from is None:
        trackers.log_settings(trainer.loggers, about)
    elif trainer.is_global_zero:
        trackers.resume_tensorboard(trainer.loggers, saved.epochs)
    failed = True
    try:
        fit_seconds = fit(trainer, model, datamodule, about, run_dir, resume_from)
        results, examples = score(trainer, model, datamodule, cfg.examples)
        results = RunResults(**about, status="ok", **results, fit_seconds=round(fit_seconds, 3),
                             resumed=resume_from is not None, run_dir=str(run_dir))
        if trainer.is_global_zero:  # with several processes (trainer=ddp) only rank 0 writes
            publish(trainer.loggers, trainer.global_step, results, examples)
        failed = False
    finally:
        trackers.close(trainer.loggers, failed)
    return results


def build(cfg: DictConfig, resuming: bool = False):
    """Threads, seeds, then the data module, model and trainer (with callbacks and loggers) from the config
    (`resuming`: its loggers continue the trackers' runs of the run it continues)."""
    import torch
    from hydra.utils import instantiate
    from lightning.pytorch import seed_everything

    from seqrev.console import quiet_lightning
    from seqrev.engines import Job, choose

    quiet_lightning()
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed, workers=False, verbose=False)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    callbacks, callback_settings = [], {}  # what each callback was made with: seqrev.engines reads it
    for settings in (cfg.get("callbacks") or {}).values():
        callbacks.append(instantiate(settings))
        callback_settings[id(callbacks[-1])] = OmegaConf.to_container(settings, resolve=True)
    loggers = trackers.make_loggers(cfg, Path(cfg.paths.output_dir), resuming=resuming)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=list(loggers.values()) or False, _convert_="all")
    if trainer.is_global_zero:
        trackers.record_ids(loggers, Path(cfg.paths.output_dir))
    set_determinism(bool(cfg.trainer.get("deterministic")))
    choice = choose(Job(cfg, None, trainer, model, callback_settings))
    if choice.engine == "grouped":
        model.use_grouped_steps()
        datamodule.group_size = datamodule.steps_per_call
    elif datamodule.steps_per_call > 1:  # asked for one batch per call (data.steps_per_call=1): nothing to say
        log.info(f"training one batch per Lightning call: {choice.reason}")
    return datamodule, model, trainer


def apply_determinism(deterministic: bool) -> None:
    """`trainer.deterministic` for training no Trainer drives (a pack): what the Trainer applies (its
    `_set_torch_flags`: deterministic algorithms, cuBLAS's workspace, no cuDNN benchmark), then seqrev's own."""
    import os

    import torch

    torch.use_deterministic_algorithms(deterministic)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    set_determinism(deterministic)


def set_determinism(deterministic: bool) -> None:
    """The flags `deterministic` leaves to seqrev (the Trainer has already chosen deterministic kernels).

    Always set both ways, so a previous job in the same process cannot leak its setting. TF32 in
    cuDNN (on by default for RNNs) is off under `deterministic`, so GPU runs repeat exactly; and
    filling fresh memory with NaN (PyTorch's default under deterministic algorithms, a kernel launch
    per allocation) is off, because seqrev never reads memory it has not written.
    """
    import torch

    torch.backends.cudnn.allow_tf32 = not deterministic
    torch.utils.deterministic.fill_uninitialized_memory = not deterministic


def fit(trainer, model, datamodule, about: RunIdentity, run_dir: Path, resume_from: Path | None) -> float:
    """Train; the wall seconds it took. Ctrl-C leaves `status: interrupted` and the last checkpoint."""
    announce(log.info, about, model, trainer.max_epochs, trainer.early_stopping_callback, resume_from,
             max_steps=trainer.max_steps)
    started = time.perf_counter()
    try:
        with own_checkpoints_expected(resume_from):
            trainer.fit(model, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
    except SystemExit:
        if trainer.interrupted:  # Lightning turns Ctrl-C into SystemExit after its graceful shutdown
            record_interrupt(run_dir, about, trainer.current_epoch)
            log.info(f"interrupted: the last checkpoint is {last_checkpoint(run_dir)}; "
                     f"continue with: python -m seqrev.train resume={run_dir}")
        raise
    if trainer.interrupted:
        raise RuntimeError("training stopped before it finished")
    return time.perf_counter() - started


@contextmanager
def own_checkpoints_expected(resume_from: Path | None) -> Iterator[None]:
    """While a run continues from its own last checkpoint: no warning from Lightning that the folder it wrote
    that checkpoint in "exists and is not empty" (it is meant to). Every other warning still shows."""
    import os
    import re
    import warnings

    with warnings.catch_warnings():
        if resume_from is not None:  # Lightning names the folder by its real path
            folder = re.escape(os.path.realpath(resume_from.parent))
            warnings.filterwarnings("ignore", message=f"Checkpoint directory {folder} exists and is not empty")
        yield


def announce(say: Callable[[str], None], about: RunIdentity, model, max_epochs: int, stopper,
             resume_from: Path | None, engine: str = "", max_steps: int = -1) -> None:
    """A run's first two console lines: what it trains, and for how long (`engine`: how, when not alone)."""
    say(f"{about['model']}: {model.trainable_params:,} trainable parameters, T={about['timesteps']}, "
        f"{about['n_features']} features, {about['units']} units, seed {about['seed']}{engine}")
    say(f"training for up to {max_epochs} epochs" + (f" or {max_steps} steps" if max_steps > 0 else "")
        + (f" with EarlyStopping(monitor={stopper.monitor}, patience={stopper.patience})" if stopper else "")
        + (f", resuming from {resume_from}" if resume_from else "") + " ...")


def score(trainer, model, datamodule, n_examples: int) -> tuple[dict[str, Any], list[Example]]:
    """The trained model's scores (test set through the Trainer, the tutorial's after-training train
    accuracy on every training pair) and its answers to the first `n_examples` test pairs."""
    extra = extra_scalars(trainer)  # read before testing, which starts the logged values afresh
    validated = "val" in model.last_scores  # not when training ended before any validation, or was resumed
    if not validated:  # after its last epoch (killed while testing)
        trainer.validate(model, datamodule=datamodule, verbose=False)
    trainer.test(model, datamodule=datamodule, verbose=False)
    from seqrev.callbacks import History

    stopper = trainer.early_stopping_callback
    history = next((c for c in trainer.callbacks if isinstance(c, History)), None)
    scores = final_scores(model, datamodule, model.last_scores["val"], model.last_scores["test"],
                          trainer.current_epoch, bool(stopper and stopper.stopped_epoch > 0),
                          {**extra, **extra_scalars(trainer)}, tested(trainer.global_step, validated), history)
    return scores, test_examples(model, datamodule, n_examples)


def tested(global_step: int, validated: bool) -> str:
    """Which weights a run's test scores are of: always its last (the tutorial's protocol restores no best)."""
    return f"the weights at the end of training (step {global_step})" + (
        "" if validated else "; no validation ran during training, so there is no best.ckpt")


def final_scores(model, datamodule, val: dict[str, Any], test: dict[str, Any], epochs_run: int,
                 stopped_early: bool, extra: dict[str, float], tested: str, history=None) -> dict[str, Any]:
    """What results.json says of a trained model: its validation and test scores as given, the tutorial's
    after-training accuracy on every training pair (validation tail included), its validations' history."""
    train = model.evaluate(datamodule.train_full_dataloader())
    return {"trainable_params": model.trainable_params, "epochs_run": epochs_run, "stopped_early": stopped_early,
            "tested": tested, "history": history.validations if history is not None else [],
            "train_acc": train["acc"], "train_seq_acc": train["seq_acc"],
            "val_acc": float(val["acc"]), "val_loss": float(val["loss"]),
            "test_acc": test["acc"], "test_seq_acc": test["seq_acc"], "test_loss": test["loss"],
            "test_acc_per_position": test["acc_per_position"], "extra": extra}


def test_examples(model, datamodule, n_examples: int) -> list[Example]:
    """The model's answers to the first `n_examples` test pairs, as symbol lists (padding cut off)."""
    from seqrev.tasks import until_end

    inputs, targets = (t[:n_examples] for t in datamodule.test)
    predictions = model.predict(inputs).cpu()
    return [Example(until_end(x.argmax(-1).tolist(), model.pad), until_end(y.tolist(), model.pad),
                    until_end(p.tolist(), model.pad))
            for x, y, p in zip(inputs.cpu(), targets.cpu(), predictions)]


def extra_scalars(trainer) -> dict[str, float]:
    """Scalars a callback of the user's logged under `extra/` (their latest values): a convention that puts
    them into results.json, TensorBoard's HPARAMS and the report's CSV (README "Your own experiments")."""
    return {key.removeprefix("extra/"): float(value) for key, value in trainer.callback_metrics.items()
            if key.startswith("extra/")}


def publish(loggers: list, step: int, results: RunResults, examples: list[Example]) -> None:
    """results.json, then TensorBoard's HPARAMS and examples and the other trackers' final metrics (at
    training step `step`), then the tutorial's printout."""
    results["examples"] = [example._asdict() for example in examples]
    write_results(results["run_dir"], results)
    log_to_tensorboard(loggers, step, results, examples)
    trackers.log_results(loggers, results, step)
    print_report(results, examples)

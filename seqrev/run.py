"""One run as a function of its config: validate, build, fit, score, publish.

Nothing here reads global state: the caller (`seqrev.train`, for the command line and `seqrev.fit`)
passes in what Hydra knows, such as the name the model's config file gives it.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch import seed_everything
from omegaconf import DictConfig, OmegaConf

from seqrev import trackers
from seqrev.callbacks import History
from seqrev.config import set_determinism, validate
from seqrev.console import quiet_lightning
from seqrev.engines import Job, choose
from seqrev.lifecycle import job_interrupted
from seqrev.publish import Example, announce, final_scores, publish_run, test_examples, tested
from seqrev.results import RunIdentity, RunResults, describe
from seqrev.rundir import SavedTraining, read_resume

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
            publish_run(trainer.loggers, trainer.global_step, results, examples)
        failed = False
    finally:
        trackers.close(trainer.loggers, failed)
    return results


def build(cfg: DictConfig, resuming: bool = False):
    """Threads, seeds, then the data module, model and trainer (with callbacks and loggers) from the config
    (`resuming`: its loggers continue the trackers' runs of the run it continues)."""
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
            job_interrupted(run_dir, about, trainer.current_epoch)
        raise
    if trainer.interrupted:
        raise RuntimeError("training stopped before it finished")
    return time.perf_counter() - started


@contextmanager
def own_checkpoints_expected(resume_from: Path | None) -> Iterator[None]:
    """While a run continues from its own last checkpoint: no warning from Lightning that the folder it wrote
    that checkpoint in "exists and is not empty" (it is meant to). Every other warning still shows."""
    with warnings.catch_warnings():
        if resume_from is not None:  # Lightning names the folder by its real path
            folder = re.escape(os.path.realpath(resume_from.parent))
            warnings.filterwarnings("ignore", message=f"Checkpoint directory {folder} exists and is not empty")
        yield


def score(trainer, model, datamodule, n_examples: int) -> tuple[dict[str, Any], list[Example]]:
    """The trained model's scores (test set through the Trainer, the tutorial's after-training train
    accuracy on every training pair) and its answers to the first `n_examples` test pairs."""
    extra = extra_scalars(trainer)  # read before testing, which starts the logged values afresh
    validated = "val" in model.last_scores  # not when training ended before any validation, or was resumed
    if not validated:  # after its last epoch (killed while testing)
        trainer.validate(model, datamodule=datamodule, verbose=False)
    trainer.test(model, datamodule=datamodule, verbose=False)
    stopper = trainer.early_stopping_callback
    history = next((c for c in trainer.callbacks if isinstance(c, History)), None)
    scores = final_scores(model, datamodule, model.last_scores["val"], model.last_scores["test"],
                          trainer.current_epoch, bool(stopper and stopper.stopped_epoch > 0),
                          {**extra, **extra_scalars(trainer)}, tested(trainer.global_step, validated), history)
    return scores, test_examples(model, datamodule, n_examples)


def extra_scalars(trainer) -> dict[str, float]:
    """Scalars a callback of the user's logged under `extra/` (their latest values): a convention that puts
    them into results.json, TensorBoard's HPARAMS and the report's CSV (README "Your own experiments")."""
    return {key.removeprefix("extra/"): float(value) for key, value in trainer.callback_metrics.items()
            if key.startswith("extra/")}



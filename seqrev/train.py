"""`python -m seqrev.train`: build everything from the config, fit, test, report, write results.json.

Returns the metric named by `optimized_metric`, for Hydra sweepers.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import shutil
import sys
import threading
import time
import traceback
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from seqrev.catalog import CONFIG_DIR
from seqrev.config import SWEPT_ENV, validate
from seqrev.errors import EXPECTED_ERRORS, ConfigError, RunDirError
from seqrev.preflight import SWEEP_FLAGS, check_command_line, output_folder, swept_keys
from seqrev.publish import Example, log_to_tensorboard, print_report, symbols
from seqrev.results import FILENAME, RunIdentity, RunResults, read_results, write_results
from seqrev.rundir import continue_job, fail, last_checkpoint, refuse_existing_results, rewrite_argv_for_resume

log = logging.getLogger("seqrev")


def describe(cfg: DictConfig) -> RunIdentity:
    """The fields that say what a run is, readable even from a config that failed validation."""
    select = lambda key: OmegaConf.select(cfg, key, default=None, throw_on_missing=False)  # noqa: E731
    return {"model": _model_name(str(select("model._target_") or "")), "timesteps": select("data.timesteps"),
            "n_features": select("data.n_features"), "units": select("model.units"), "seed": select("seed"),
            "task": select("data.task"), "min_timesteps": select("data.min_timesteps"), "cell": select("model.cell"),
            "scheduler": str(select("model.scheduler._target_") or "none").rpartition(".")[2],
            "config": experiment_settings(cfg)}


# What defines an experiment, recorded in results.json under `config` so runs compare without .hydra/
# (the report groups by whatever of it varies): everything but where files go and how fast it runs.
NOT_THE_EXPERIMENT = ("data._target_", "data.eval_batch_size", "data.steps_per_call", "model._target_",
                      "model._recursive_", "trainer._target_", "trainer.default_root_dir", "trainer.plugins",
                      "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
                      "trainer.num_sanity_val_steps", "trainer.deterministic")


def experiment_settings(cfg: DictConfig) -> dict[str, Any] | None:
    """The resolved data, model (optimizer and schedule included), trainer and early-stopping settings."""
    try:
        settings = {
            "data": OmegaConf.to_container(cfg.data, resolve=True),
            "model": OmegaConf.to_container(cfg.model, resolve=True),
            "trainer": OmegaConf.to_container(cfg.trainer, resolve=True),
            "early_stopping": OmegaConf.to_container(cfg.callbacks.early_stopping, resolve=True)
            if OmegaConf.select(cfg, "callbacks.early_stopping") is not None else None,
        }
    except Exception:  # noqa: BLE001 - a config that cannot resolve (it failed validation): no record
        return None
    for key in NOT_THE_EXPERIMENT:
        section, _, name = key.partition(".")
        if isinstance(settings.get(section), dict):
            settings[section].pop(name, None)
    if isinstance(settings["early_stopping"], dict):
        settings["early_stopping"].pop("_target_", None)
    return settings


def _model_name(target: str) -> str | None:
    """The name the model's config file gives it (`model=NAME`); else the wiring's own name."""
    from hydra.core.hydra_config import HydraConfig

    from seqrev.models import WIRINGS  # cheap: training imports the models anyway

    if HydraConfig.initialized() and HydraConfig.get().runtime.choices.get("model"):
        return HydraConfig.get().runtime.choices["model"]
    return next((name for name, cls in WIRINGS.items() if f"{cls.__module__}.{cls.__name__}" == target), target or None)


def build(cfg: DictConfig):
    """Threads, seeds, then the data module, model and trainer (with callbacks and loggers) from the config."""
    import torch
    from hydra.utils import instantiate
    from lightning.pytorch import seed_everything

    from seqrev.stepping import plan_steps

    # `import lightning` gives its logger a console handler of its own; Hydra's handlers already print
    # and file every record, so without this each Lightning message would appear twice.
    logging.getLogger("lightning").handlers.clear()
    quiet_lightning_advertising()
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")  # torch/Lightning version skew
    warnings.filterwarnings("ignore", message=r".*The `srun` command is available.*")  # seqrev runs Slurm jobs itself
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed, workers=False, verbose=False)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    callbacks, callback_settings = [], {}  # what each callback was made with: seqrev.stepping reads it
    for settings in (cfg.get("callbacks") or {}).values():
        callbacks.append(instantiate(settings))
        callback_settings[id(callbacks[-1])] = OmegaConf.to_container(settings, resolve=True)
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, _convert_="all")
    set_determinism(bool(cfg.trainer.get("deterministic")))
    plan_steps(trainer, model, datamodule, callback_settings)
    return datamodule, model, trainer


class _NoAdvertising(logging.Filter):
    """Drops Lightning's tips about products (e.g. "💡 Tip: ... litlogger ..."): not about this run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


def quiet_lightning_advertising() -> None:
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoAdvertising) for f in logger.filters):
            logger.addFilter(_NoAdvertising())


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


def train(cfg: DictConfig) -> RunResults:
    """One run, start to finish: build, fit, score, publish. Raises on failure; the caller records it."""
    validate(cfg)
    datamodule, model, trainer = build(cfg)
    run_dir = Path(cfg.paths.output_dir)
    resume_from = last_checkpoint(Path(cfg.resume)) if cfg.resume else None
    about = describe(cfg)
    fit_seconds = fit(trainer, model, datamodule, about, run_dir, resume_from)
    results, examples = score(trainer, model, datamodule, cfg.examples)
    results = RunResults(**about, status="ok", **results, fit_seconds=round(fit_seconds, 3),
                         resumed=resume_from is not None, run_dir=str(run_dir))
    if trainer.is_global_zero:  # with several processes (trainer=ddp) only rank 0 writes
        publish(trainer, cfg, results, examples)
    return results


def fit(trainer, model, datamodule, about: RunIdentity, run_dir: Path, resume_from: Path | None) -> float:
    """Train; the wall seconds it took. Ctrl-C leaves `status: interrupted` and the last checkpoint."""
    stopper = trainer.early_stopping_callback
    log.info(f"{about['model']}: {model.trainable_params:,} trainable parameters, T={about['timesteps']}, "
             f"{about['n_features']} features, {about['units']} units, seed {about['seed']}")
    log.info(f"training for up to {trainer.max_epochs} epochs"
             + (f" with EarlyStopping(monitor={stopper.monitor}, patience={stopper.patience})" if stopper else "")
             + (f", resuming from {resume_from}" if resume_from else "") + " ...")
    started = time.perf_counter()
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
    except SystemExit:
        if trainer.interrupted:  # Lightning turns Ctrl-C into SystemExit after its graceful shutdown
            write_results(run_dir, {**about, "status": "interrupted", "epochs_run": trainer.current_epoch,
                                    "error": "interrupted by the user (SIGINT)", "run_dir": str(run_dir)})
            log.info(f"interrupted: the last checkpoint is {last_checkpoint(run_dir)}; "
                     f"continue with: python -m seqrev.train resume={run_dir}")
        raise
    if trainer.interrupted:
        raise RuntimeError("training stopped before it finished")
    return time.perf_counter() - started


def score(trainer, model, datamodule, n_examples: int) -> tuple[dict[str, Any], list[Example]]:
    """The trained model's scores (test set through the Trainer, the tutorial's after-training train
    accuracy on every training pair) and its answers to the first `n_examples` test pairs."""
    extra = extra_scalars(trainer)  # read before testing, which starts the logged values afresh
    if "val" not in model.last_scores:  # resumed after its last epoch (killed while testing): nothing validated
        trainer.validate(model, datamodule=datamodule, verbose=False)
    trainer.test(model, datamodule=datamodule, verbose=False)
    train_scores = model.evaluate(datamodule.train_full_dataloader())
    stopper = trainer.early_stopping_callback
    val, test = model.last_scores["val"], model.last_scores["test"]
    scores = {
        "trainable_params": model.trainable_params, "epochs_run": trainer.current_epoch,
        "stopped_early": bool(stopper and stopper.stopped_epoch > 0),
        "train_acc": train_scores["acc"], "train_seq_acc": train_scores["seq_acc"],
        "val_acc": val["acc"], "val_loss": val["loss"],
        "test_acc": test["acc"], "test_seq_acc": test["seq_acc"], "test_loss": test["loss"],
        "test_acc_per_position": test["acc_per_position"],
        "extra": {**extra, **extra_scalars(trainer)},
    }
    inputs, targets = (t[:n_examples] for t in datamodule.test)
    predictions = model.predict(inputs).cpu()
    examples = [Example(symbols(x.argmax(-1), model.pad), symbols(y, model.pad), symbols(p, model.pad))
                for x, y, p in zip(inputs.cpu(), targets.cpu(), predictions)]
    return scores, examples


def extra_scalars(trainer) -> dict[str, float]:
    """Scalars a callback of the user's logged under `extra/` (their latest values): a convention that puts
    them into results.json, TensorBoard's HPARAMS and the report's CSV (README "Your own experiments")."""
    return {key.removeprefix("extra/"): float(value) for key, value in trainer.callback_metrics.items()
            if key.startswith("extra/")}


def publish(trainer, cfg: DictConfig, results: RunResults, examples: list[Example]) -> None:
    """results.json, then TensorBoard's HPARAMS and examples, then the tutorial's printout."""
    write_results(results["run_dir"], results)
    log_to_tensorboard(trainer, cfg, results, examples)
    print_report(results, examples)


def record_failure(cfg: DictConfig, error: BaseException) -> str | None:
    """results.json with `status: failed` and the cause; or, when it cannot be written, why not."""
    run_dir = Path(OmegaConf.select(cfg, "paths.output_dir", default="."))
    results = {**describe(cfg), "status": "failed", "error": describe_error(error, run_dir),
               "error_type": type(error).__name__, "run_dir": str(run_dir)}
    if not isinstance(error, EXPECTED_ERRORS) and storage_problem(error) is None:
        results["traceback"] = traceback.format_exc()
    try:
        write_results(run_dir, results)
    except OSError as second:
        return f"results.json could not be written either ({second.strerror or second})"
    return None


STORAGE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EROFS: "the file system is read-only",
                  errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                  errno.EDQUOT: "the disk quota is exceeded"}


def storage_problem(error: BaseException) -> OSError | None:
    """The OSError about storage (full, read-only, no permission) behind `error`, if that is what it is."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None


def describe_error(error: BaseException, run_dir: Path | None = None) -> str:
    """One sentence for any failure: the user's mistake as said, a storage problem as what, where, why
    (the run folder stands for the file when the error names none, as TensorBoard's does not)."""
    if isinstance(error, EXPECTED_ERRORS):
        return str(error)
    problem = storage_problem(error)
    if problem is not None:
        where = f" {problem.filename}" if problem.filename else f" in {run_dir}" if run_dir else ""
        return f"could not write{where}: {STORAGE_ERRNOS[problem.errno]}"
    return f"{type(error).__name__}: {error}"


def quiet_storage_errors_in_threads() -> None:
    """TensorBoard writes its events from a thread of its own. When the disk fills, that thread dies and
    Python prints its traceback; TensorBoard then hands the same error to the next write in the main
    thread, which says it in one sentence. So a storage error in a thread is left to that sentence."""
    default = threading.excepthook
    if getattr(default, "seqrev", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if storage_problem(args.exc_value) is None:
            default(args)

    hook.seqrev = True
    threading.excepthook = hook


def continue_sweep_job(cfg: DictConfig) -> RunResults | None:
    """A sweep job's folder as a re-run sweep finds it: the stored results of a finished job (nothing
    in its folder changes), else None after setting `cfg.resume` for a job killed mid-training."""
    from hydra.core.hydra_config import HydraConfig

    job_dir = Path(cfg.paths.output_dir)
    action, epochs = continue_job(job_dir, list(HydraConfig.get().overrides.task))
    if action == "skip":
        log.info(f"skipped (finished): {job_dir}")
        return read_results(job_dir / FILENAME)
    if action == "resume":
        log.info(f"resuming from epoch {epochs}: {job_dir}")
        with open_dict(cfg):
            cfg.resume = str(job_dir)
    return None


def _remove_if_only_hydra_files(run_dir: Path) -> None:
    """Remove a run directory that holds nothing but what Hydra wrote at start-up."""
    from seqrev.runlock import LOCK_FILE

    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {".hydra", "train.log", LOCK_FILE}:
        shutil.rmtree(run_dir, ignore_errors=True)


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path="pkg://seqrev.conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra entry point: one job, holding its folder's lock (seqrev.runlock) from before its first write
    to its end. A job whose folder another live process holds is left to it: a sweep goes on to the next."""
    from seqrev.runlock import FolderBusy, run_folder_lock

    logging.raiseExceptions = False  # a full disk must not turn every later log line into a traceback
    quiet_storage_errors_in_threads()
    try:
        with run_folder_lock(Path(cfg.paths.output_dir)):
            return run_job(cfg)
    except FolderBusy as busy:
        if _in_multirun():
            log.warning(str(busy))
            return math.nan
        fail(str(busy))


def run_job(cfg: DictConfig) -> float:
    """One job and its metric. In a sweep a failed job is recorded and the sweep goes on, and a sweep run
    again continues: finished jobs are skipped, killed ones resumed, failed ones re-run."""
    if _in_multirun():
        try:
            finished = continue_sweep_job(cfg)
        except RunDirError as refused:
            log.error(f"job refused: {refused}")
            return math.nan
        if finished is not None:
            value = finished.get(cfg.optimized_metric)
            return float(value) if isinstance(value, (int, float)) else math.nan
    try:
        results = train(cfg)
    except Exception as error:  # noqa: BLE001 - every failure is recorded in results.json
        if wants_tracebacks():
            raise
        message = describe_error(error, Path(OmegaConf.select(cfg, "paths.output_dir", default=".")))
        sweep = _in_multirun()
        if isinstance(error, ConfigError) and not sweep:  # nothing ran: leave no half-made run directory behind
            _remove_if_only_hydra_files(Path(cfg.paths.output_dir))
            unrecorded = None
        else:
            unrecorded = record_failure(cfg, error)
        if unrecorded:
            message += f"; {unrecorded}"
        if sweep:  # the sweep goes on; this job's folder says what went wrong
            log.error(f"job failed: {message}")
            return math.nan
        fail(message, status=2 if isinstance(error, EXPECTED_ERRORS) else 1)
    value = results.get(cfg.optimized_metric)
    return float(value) if isinstance(value, (int, float)) else math.nan


TRACEBACKS_ENV = "SEQREV_TRACEBACKS"  # the user's HYDRA_FULL_ERROR, kept while cli() sets Hydra's to 1


def wants_tracebacks() -> bool:
    """Whether the user asked for full tracebacks (`HYDRA_FULL_ERROR=1`)."""
    return os.environ.get(TRACEBACKS_ENV, os.environ.get("HYDRA_FULL_ERROR")) == "1"


def named_run_folder(argv: list[str]) -> Path | None:
    """The folder of a single run whose command line names it (`hydra.run.dir=`, which `resume=` sets)."""
    if SWEEP_FLAGS & set(argv) or not any(a.startswith("hydra.run.dir=") for a in argv[1:]):
        return None
    return output_folder(argv)


def cli() -> None:
    try:
        check_command_line(sys.argv, CONFIG_DIR)
        os.environ[SWEPT_ENV] = ",".join(swept_keys(sys.argv))  # job folders name what the sweep varies
        sys.argv = rewrite_argv_for_resume(sys.argv)
        refuse_existing_results(sys.argv)
    except EXPECTED_ERRORS as error:
        fail(str(error))
    # What fails in Hydra's own code (writing .hydra/ on a full disk, a launcher) comes back here rather
    # than as Hydra's traceback, to be said in one sentence like every other failure.
    os.environ[TRACEBACKS_ENV] = "1" if wants_tracebacks() else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    from seqrev.runlock import FolderBusy, run_folder_lock

    try:
        with ExitStack() as held:
            folder = named_run_folder(sys.argv)
            if folder is not None:  # locked before Hydra writes .hydra/ there: a second process touches nothing
                try:
                    held.enter_context(run_folder_lock(folder))
                except FolderBusy as busy:
                    fail(str(busy))
            main()
    except Exception as error:  # noqa: BLE001 - one sentence for anything main() itself did not say
        if wants_tracebacks():
            raise
        hydra_said = isinstance(error, (HydraException, OmegaConfBaseException))
        message = " ".join(str(error).split()) if hydra_said else describe_error(error, output_folder(sys.argv))
        fail(message, status=2 if hydra_said else 1)


if __name__ == "__main__":
    cli()

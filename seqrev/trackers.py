"""Experiment trackers beside TensorBoard (conf/logger: csv, mlflow, wandb), each Lightning's own logger.

seqrev adds what Lightning leaves to the application: a missing optional package said in one sentence
before anything runs; a resumed run continuing the tracker's run it started (recorded in `trackers.json`);
the run's settings as parameters and its results as `final/<name>` metrics (TensorBoard: seqrev.publish).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import secrets
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from seqrev.errors import ConfigError

# Imports inside functions: Lightning's loggers, TensorBoard's reader, MLflow and W&B (extras) load only where a run
# uses them.

MLFLOW = "lightning.pytorch.loggers.MLFlowLogger"
WANDB = "lightning.pytorch.loggers.WandbLogger"
EXTRAS = {MLFLOW: "mlflow", WANDB: "wandb"}
"""Loggers whose package is an optional extra of seqrev's, named like its package."""
RECORD = "trackers.json"
log = logging.getLogger("seqrev")


def check_installed(cfg: DictConfig) -> None:
    """ConfigError, before anything runs, for a chosen logger whose package is not installed."""
    for name, settings in (cfg.get("logger") or {}).items():
        extra = EXTRAS.get(str((settings or {}).get("_target_")))
        if extra is not None and not _installed(extra):
            raise ConfigError(f"logger={name} needs the {extra} package, which is not installed: "
                              f"pip install 'seqrev[{extra}]' (in a clone: pip install -e '.[{extra}]').")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # an import blocked (sys.modules[name] = None) or half-initialised
        return False


def make_loggers(cfg: DictConfig, run_dir: Path, resuming: bool) -> dict[str, Any]:
    """The config's loggers by their names in it. A resumed run's MLflow and W&B loggers continue the
    runs they started."""
    from hydra.utils import instantiate

    started = read_ids(run_dir) if resuming else {}
    loggers = {}
    for name, settings in (cfg.get("logger") or {}).items():
        target = str(settings.get("_target_"))
        resume: dict[str, Any] = {}
        if target == MLFLOW:
            uri = str(settings.get("tracking_uri") or "")
            if uri.startswith("sqlite:///"):  # a local database: its folder must exist (older MLflow waits for it)
                Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            if started.get(name):
                resume = {"run_id": started[name]}
        elif target == WANDB:  # W&B takes the id it is given, so a run keeps it from its first start
            resume = {"id": started.get(name) or secrets.token_hex(4), "resume": "allow"}
        loggers[name] = instantiate(settings, _convert_="all", **resume)  # plain dicts for the trackers
    return loggers


def read_ids(run_dir: Path) -> dict[str, str]:
    """The trackers' run ids a run folder recorded when it started ({} for none, or an unreadable record)."""
    try:
        ids = json.loads((run_dir / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in ids.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(ids, dict) else {}


def record_ids(loggers: dict[str, Any], run_dir: Path) -> None:
    """Write the MLflow and W&B run ids into the run folder, so that a resumed run continues them."""
    from lightning.pytorch.loggers import MLFlowLogger, WandbLogger

    from seqrev.atomic import atomic_write

    ids = {}
    for name, logger in loggers.items():
        if isinstance(logger, MLFlowLogger):
            ids[name] = _mlflow_run_id(logger)
        elif isinstance(logger, WandbLogger):
            ids[name] = logger.version
    if ids and ids != read_ids(run_dir):
        atomic_write(run_dir / RECORD, lambda handle: handle.write(json.dumps(ids).encode()))


def _mlflow_run_id(logger: Any) -> str:
    """The logger's MLflow run, created now. Jobs that start together may each find the sweep's experiment
    missing and create it: the later creation fails, and a second look finds the experiment made first."""
    from mlflow.exceptions import MlflowException

    try:
        return logger.run_id
    except MlflowException:
        return logger.run_id


def _trackers(loggers: list) -> list:
    from lightning.pytorch.loggers import TensorBoardLogger

    return [logger for logger in loggers if not isinstance(logger, TensorBoardLogger)]


def log_settings(loggers: list, about: dict[str, Any]) -> None:
    """The run's settings as each tracker's parameters (a fresh run only: MLflow's cannot change)."""
    from seqrev.results import run_parameters

    params = run_parameters(about)
    for logger in _trackers(loggers):
        logger.log_hyperparams(params)


def log_results(loggers: list, results: dict[str, Any], step: int) -> None:
    """The final results as in results.json, as `final/<name>` metrics (and `final/extra/<name>`)."""
    from seqrev.results import IDENTITY_FIELDS

    metrics = {f"final/{key}": float(value) for key, value in results.items()
               if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in IDENTITY_FIELDS}
    metrics.update({f"final/extra/{key}": float(value) for key, value in results.get("extra", {}).items()})
    for logger in _trackers(loggers):
        logger.log_metrics(metrics, step=step)
        logger.save()


def close(loggers: list, failed: bool) -> None:
    """End each tracker's run: W&B's run is finished here (Lightning leaves it open), MLflow's marked."""
    from lightning.pytorch.loggers import MLFlowLogger, WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            run = wandb.run
            if run is not None and run.id == logger.version:
                files = Path(run.dir).parent
                run.finish(exit_code=1 if failed else 0)
                if run.offline:
                    log.info(f"W&B run {run.id} (offline): {files}; to upload it: wandb sync {files}")
        elif isinstance(logger, MLFlowLogger):
            logger.finalize("failed" if failed else "success")
            experiment = logger.experiment.get_experiment(logger.experiment_id).name
            log.info(f"MLflow run {logger.run_id} in experiment {experiment!r}")


def resume_tensorboard(loggers: list, epochs: int) -> None:
    """A resumed run's TensorBoard run goes on from the first step after the `epochs` its checkpoint holds.

    What the stopped run logged later (an epoch logged before its checkpoint was on disk, a test) is then
    dropped by TensorBoard's readers, by their rule for a session that starts again, and logged afresh by
    the resumed run: every epoch is shown once. Each engine logs an epoch's metrics at one step, with an
    `epoch` scalar beside them, so the step is read from the run's own events."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event, SessionLog

    for logger in loggers:
        if not isinstance(logger, TensorBoardLogger):
            continue
        steps = [event.step for path in sorted(Path(logger.log_dir).glob("events.out.tfevents.*"))
                 for event in LegacyEventFileLoader(str(path)).Load()
                 if any(value.tag == "epoch" and value.simple_value < epochs for value in event.summary.value)]
        if steps:
            start = Event(step=max(steps) + 1, session_log=SessionLog(status=SessionLog.START))
            logger.experiment.file_writer.add_event(start)

"""A job's lifecycle, the same whichever engine trains it (seqrev.engines): its folder's lock, what it
does with what the folder already holds, the record of a failure or an interrupt, and the metric a
sweeper reads. `seqrev.train.job` (every run and ordinary sweep job) and a pack's launcher (each of
its members, seqrev.packs.launcher) go through these functions and nothing else.
"""

from __future__ import annotations

import logging
import math
import traceback
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf

from seqrev.errors import EXPECTED_ERRORS, RunDirError, describe_error, storage_problem
from seqrev.results import RunIdentity, RunResults, write_results
from seqrev.run import describe

log = logging.getLogger("seqrev")


@dataclass
class Claim:
    """What a job does with its folder: run, resume (from `resume_from`), skip (finished: its `results`),
    or nothing (refused: another process holds it, it holds another job, or it cannot be written)."""

    action: Literal["run", "resume", "skip", "refused"]
    results: RunResults | None = None
    resume_from: Path | None = None


def claim(held: ExitStack, run_dir: Path, overrides: list[str] | None, packed: bool = False) -> Claim:
    """Take `run_dir`'s lock (seqrev.runlock) for as long as `held` lasts, then decide. A sweep's job (its
    `overrides` given) continues what its folder holds (seqrev.continuation; `packed`: a pack's member) and
    a refusal is said in one line; a single run only takes the lock, and a refusal raises."""
    from seqrev.continuation import continue_sweep_job
    from seqrev.runlock import FolderBusy, run_folder_lock

    try:
        held.enter_context(run_folder_lock(run_dir))
        if overrides is None:
            return Claim("run")
        finished, resume_from = continue_sweep_job(run_dir, overrides, packed)
    except FolderBusy as busy:
        if overrides is None:
            raise
        log.warning(str(busy))
        return Claim("refused")
    except RunDirError as refused:
        if overrides is None:
            raise
        log.error(f"job refused: {refused}")
        return Claim("refused")
    except OSError as error:  # its folder cannot be written (a full disk): the job fails, not the sweep
        if overrides is None:
            raise
        log.error(f"job failed: {describe_error(error, run_dir)}")
        return Claim("refused")
    if finished is not None:
        return Claim("skip", results=finished)
    return Claim("resume", resume_from=resume_from) if resume_from is not None else Claim("run")


def record_failure(cfg: DictConfig, error: BaseException, model_name: str | None) -> str:
    """results.json with `status: failed`, the cause and (for an unexpected error) its traceback; the one
    sentence that says what went wrong (and, when results.json could not be written, why not)."""
    run_dir = Path(OmegaConf.select(cfg, "paths.output_dir", default="."))
    message = describe_error(error, run_dir)
    results = {**describe(cfg, model_name), "status": "failed", "error": message,
               "error_type": type(error).__name__, "run_dir": str(run_dir)}
    if not isinstance(error, EXPECTED_ERRORS) and storage_problem(error) is None:
        results["traceback"] = traceback.format_exc()
    try:
        write_results(run_dir, results)
    except OSError as second:
        return f"{message}; results.json could not be written either ({second.strerror or second})"
    return message


def say_failed(message: str, run_dir: Path) -> None:
    """The console's line for a sweep's job that failed (the sweep goes on; its folder says what went wrong)."""
    log.error(f"job failed: {message} ({run_dir.name})")


def record_interrupt(run_dir: Path, about: RunIdentity, epochs_run: int) -> None:
    """results.json for a job stopped by Ctrl-C: its last checkpoint is where it continues from."""
    write_results(run_dir, {**about, "status": "interrupted", "epochs_run": epochs_run,
                            "error": "interrupted by the user (SIGINT)", "run_dir": str(run_dir)})


def metric(cfg: DictConfig, results: dict[str, Any] | None) -> float:
    """What a sweeper reads of a job: its results' `optimized_metric`, NaN for a job with no results."""
    value = (results or {}).get(cfg.optimized_metric)
    return float(value) if isinstance(value, (int, float)) else math.nan

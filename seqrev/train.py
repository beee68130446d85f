"""`python -m seqrev.train`: the command line around one run (seqrev.run) or a sweep of them.

`prepare` checks a command line and expands `resume=`; `launch` hands it to Hydra; `job` takes each run
or sweep job through its lifecycle (seqrev.lifecycle) to seqrev.run, or to a pack of one when it continues
a pack's member (a pack's members go through the same lifecycle from seqrev.packs.launcher). The command
line (`cli`) and `seqrev.fit` differ only in how they end: one sentence and an exit status, or an exception
and the results.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import NamedTuple

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from seqrev.catalog import CONFIG_DIR, HYDRA_CONFIG_PATH
from seqrev.commandline import given, is_sweep, overrides_on, quote
from seqrev.config import SWEPT
from seqrev.errors import EXPECTED_ERRORS, ConfigError, RunDirError, describe_error
from seqrev.preflight import (
    check_command_line,
    check_sweep_folder,
    output_folder,
    pin_sweep_folder,
    swept_keys,
)
from seqrev.results import RunResults
from seqrev.rundir import SavedTraining, refuse_existing_results, rewrite_argv_for_resume
from seqrev.runlock import HeldFolder, run_folder_lock

# Imports inside functions: the engines (torch, Lightning) load in the job, so a bad command line is refused in one
# sentence before they load.

log = logging.getLogger("seqrev")


class CommandLine(NamedTuple):
    """A checked command line, and the checkpoint its `resume=` continues from (read once, here)."""

    argv: list[str]
    resumes: SavedTraining | None = None


def prepare(argv: list[str]) -> CommandLine:
    """A command line checked (ConfigError, RunDirError in one sentence) and with `resume=` expanded."""
    check_command_line(argv, CONFIG_DIR)
    if is_sweep(argv):
        from seqrev import settle

        settle.check_command_line(overrides_on(argv), CONFIG_DIR)
    swept = swept_keys(argv)
    if swept:  # job folders name what the sweep varies
        argv = [*argv, f"+hydra.job.env_set.{SWEPT}={quote(','.join(swept))}"]
    argv, resumes = rewrite_argv_for_resume(argv)
    refuse_existing_results(argv)
    check_sweep_folder(argv, CONFIG_DIR)
    return CommandLine(pin_sweep_folder(argv, CONFIG_DIR), resumes)


def launch(argv: list[str], resumes: SavedTraining | None = None, in_process: bool = False,
           tracebacks: bool = False) -> JobFunction:
    """Hydra's run (or sweep) of a prepared command line, each job by a JobFunction (given the other
    arguments), which is returned. A single run's named folder is locked before Hydra writes `.hydra/` there,
    so a second process touches nothing in it (FolderBusy), and the job is handed the lock. A sweep some of
    whose jobs did not train (refused, busy) or ended without results raises JobsNotRun once it has ended."""
    from seqrev.sweepfolder import new_start

    register_plugins()
    started, sweep = time.time(), is_sweep(argv)
    with ExitStack() as held:
        if sweep:  # its jobs record what they did apart from another start's of the same sweep
            held.enter_context(new_start())
        folder = named_run_folder(argv)
        taken = held.enter_context(run_folder_lock(folder)) if folder is not None else None
        task = JobFunction(in_process, resumes, tracebacks, taken)
        saved, sys.argv = sys.argv, argv  # Hydra reads its command line from sys.argv: the one place it is set
        # What fails in Hydra's own code (writing .hydra/ on a full disk, a launcher) is raised to the caller,
        # to be said in one sentence (the command line) or raised as it is (seqrev.fit), not printed by Hydra.
        user_choice = os.environ.get("HYDRA_FULL_ERROR")
        os.environ["HYDRA_FULL_ERROR"] = "1"
        try:
            main = hydra.main(version_base="1.3", config_path=HYDRA_CONFIG_PATH, config_name="train")
            main(task)()
        finally:
            sys.argv = saved
            if user_choice is None:
                os.environ.pop("HYDRA_FULL_ERROR", None)
            else:
                os.environ["HYDRA_FULL_ERROR"] = user_choice
        if sweep:
            from seqrev.progress import JobsNotRun, read_folders

            sweep_dir = output_folder(argv)
            not_run = read_folders(sweep_dir, started, {}, final=True).not_run if sweep_dir.is_dir() else {}
            if not_run:
                raise JobsNotRun(not_run)
    return task


def register_plugins() -> None:
    """Make `hydra/launcher=packed` (and packed_slurm) and `hydra/sweeper=settle` known to Hydra. Hydra finds
    plugins by walking the `hydra_plugins` package's folders, which an editable install (`pip install -e .`)
    does not add to; registering the classes covers every kind of install."""
    from hydra.core.plugins import Plugins
    from hydra_plugins.seqrev_packed_launcher import packed_slurm_launcher
    from hydra_plugins.seqrev_packed_launcher.packed_launcher import PackedLauncher
    from hydra_plugins.seqrev_packed_launcher.settle_sweeper import SettleSweeper

    Plugins.instance().register(PackedLauncher)
    Plugins.instance().register(SettleSweeper)
    if packed_slurm_launcher.SlurmLauncher is not None:  # hydra/launcher=packed_slurm, with the sweep extra
        Plugins.instance().register(packed_slurm_launcher.PackedSlurmLauncher)
        Plugins.instance().register(packed_slurm_launcher.SlurmLauncherSkippingFinished)


def named_run_folder(argv: list[str]) -> Path | None:
    """The folder of a single run whose command line names it (`hydra.run.dir=`, which `resume=` sets)."""
    if is_sweep(argv) or not given(argv, "hydra.run.dir"):
        return None
    return output_folder(argv)


class JobFunction:
    """What Hydra calls for each run or sweep job: the job, and the metric a sweeper optimises. Under
    `seqrev.fit` (`in_process`), failures are kept for it to raise (past Hydra, which would print a line of
    its own), and so are the results of every job that finished. `resumes`: the checkpoint a single run's
    `resume=` continues from, as `prepare` read it; `tracebacks`: a failed job raises its error as it is (the
    user's HYDRA_FULL_ERROR=1). It travels with the function to the processes a launcher runs jobs in.
    `taken`: the single run's folder, whose lock the launching code holds."""

    def __init__(self, in_process: bool = False, resumes: SavedTraining | None = None, tracebacks: bool = False,
                 taken: HeldFolder | None = None) -> None:
        self.in_process, self.resumes, self.tracebacks, self.taken = in_process, resumes, tracebacks, taken
        self.results: list[RunResults] = []
        self.failure: Exception | None = None

    def __call__(self, cfg: DictConfig) -> float:
        from seqrev.lifecycle import metric

        try:
            results = job(cfg, self)
        except Exception as error:
            if not self.in_process:
                raise
            self.failure = error
            return math.nan
        if results is not None:
            self.results.append(results)
        return metric(cfg, results)


def job(cfg: DictConfig, task: JobFunction) -> RunResults | None:
    """One run or sweep job through its lifecycle (seqrev.lifecycle): its folder's lock held to its end; in
    a sweep, a job whose folder another live process holds left to it, a finished one skipped, a killed one
    resumed, a failed one recorded while the sweep goes on. None when nothing finished. What `task` knows
    (seqrev.fit's or the command line's, the checkpoint already read, the lock already held) is used here."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from seqrev.console import quiet_storage_errors_in_threads, sweep_job_console
    from seqrev.lifecycle import claim, job_failed
    from seqrev.rundir import read_resume

    logging.raiseExceptions = False  # a full disk must not turn every later log line into a traceback
    quiet_storage_errors_in_threads()
    hydra_cfg = HydraConfig.get()
    sweep = hydra_cfg.mode == RunMode.MULTIRUN
    model_name = hydra_cfg.runtime.choices.get("model")
    run_dir = Path(cfg.paths.output_dir)
    with ExitStack() as held:
        if sweep:  # its lines go to its train.log; the sweep's console says how it ended (seqrev.progress)
            held.enter_context(sweep_job_console(str(cfg.get("sweep_console", "jobs")), hydra_cfg.job.num))
        claimed = claim(held, run_dir, list(hydra_cfg.overrides.task) if sweep else None,
                        Path(hydra_cfg.sweep.dir) if sweep else None, task.taken)
        if not claimed.trains:
            return claimed.results
        resumes = task.resumes
        if resumes is not None and not resumes.unchanged():  # written after prepare() read it, before the lock
            raise RunDirError(f"{resumes.path} changed after it was checked (another process wrote it); "
                              "run the command again.")
        try:
            saved = claimed.saved or resumes or read_resume(cfg.get("resume"))
            return train_by_its_engine(cfg, model_name, saved)
        except Exception as error:  # noqa: BLE001 - every failure is recorded in results.json
            if isinstance(error, ConfigError) and not sweep:  # nothing ran: leave no half-made folder behind
                remove_if_only_hydra_files(run_dir)
                message = describe_error(error, run_dir)
            else:
                message = job_failed(cfg, error, model_name, Path(hydra_cfg.sweep.dir) if sweep else None)
            if (task.in_process and not sweep) or task.tracebacks:  # seqrev.fit raises what a run says
                raise
            if not sweep:
                fail(message, status=2 if isinstance(error, EXPECTED_ERRORS) else 1)
            return None  # the sweep goes on


def train_by_its_engine(cfg: DictConfig, model_name: str | None, saved: SavedTraining | None) -> RunResults:
    """seqrev.run.train (Lightning's engines), or a pack of one for a run that continues a pack's member;
    `saved`: the checkpoint it continues from."""
    from seqrev.run import train

    if saved is not None and saved.packed:
        from seqrev.packs.recipe import train_alone

        return train_alone(cfg, model_name, saved)
    return train(cfg, model_name, saved)


def remove_if_only_hydra_files(run_dir: Path) -> None:
    """Remove a run directory that holds nothing but what Hydra wrote at start-up."""
    from seqrev.runlock import LOCK_FILE

    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {".hydra", "train.log", LOCK_FILE}:
        shutil.rmtree(run_dir, ignore_errors=True)


def fail(message: str, status: int = 2) -> None:
    """End the process with one sentence on stderr."""
    print(f"seqrev: {message}", file=sys.stderr)
    raise SystemExit(status)


def cli() -> None:
    """The command line's policy: every failure one sentence and a status (2: the input, 1: anything
    else), full tracebacks only when HYDRA_FULL_ERROR=1 asks for them."""
    try:
        argv, resumes = prepare(sys.argv)
    except EXPECTED_ERRORS as error:
        fail(str(error))
    tracebacks = os.environ.get("HYDRA_FULL_ERROR") == "1"
    try:
        launch(argv, resumes, tracebacks=tracebacks)
    except Exception as error:  # noqa: BLE001 - one sentence for anything job() itself did not say
        if tracebacks:
            raise
        if isinstance(error, EXPECTED_ERRORS):  # a folder another process holds, a refused resume
            fail(str(error))
        hydra_said = isinstance(error, (HydraException, OmegaConfBaseException))
        message = " ".join(str(error).split()) if hydra_said else describe_error(error, output_folder(argv))
        fail(message, status=2 if hydra_said else 1)


if __name__ == "__main__":
    cli()

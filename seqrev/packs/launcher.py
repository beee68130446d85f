"""`hydra/launcher=packed` and `packed_slurm`: a sweep's jobs that differ only in their seeds trained as one
packed model.

The launcher composes every job's config as Hydra would, asks seqrev.engines which jobs a pack can
train, groups those that differ only in their seeds (`pack_key`), and runs packs (seqrev.packs.recipe)
and other jobs (through Hydra's `run_job`) on `n_jobs` processes, one thread each, or each as a Slurm job
(`submit_to_slurm`). A pack's member goes
through seqrev.lifecycle as an ordinary job does, its folder and `.hydra/` written by Hydra's `run_job`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, run_job, setup_globals
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

# Imports inside functions: the launcher's own process imports no torch: what trains loads in the packs' processes.

log = logging.getLogger("seqrev")


@dataclass
class Unit:
    """What one process runs at a time: one ordinary job, or one pack (jobs of one cell)."""

    jobs: list[tuple[int, list[str]]]  # (job number, overrides), in sweep order
    packed: bool
    weight: float = 1.0  # relative running time, to start the longest first
    names: list[str] = field(default_factory=list)
    whole: bool = False  # a pack never split over processes: on a GPU it takes every seed its memory holds


def default_jobs() -> int:
    """One process per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def job_config(hydra_context: HydraContext, config: DictConfig, idx: int, overrides: list[str]) -> DictConfig:
    """A sweep job's config (`hydra` node included) with its number, as every Hydra launcher makes it."""
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    return sweep_config


def task_config(sweep_config: DictConfig) -> DictConfig:
    """The job's own config, as its run would see it (its folder too), with Hydra's state set to this job
    for its interpolations to resolve. Unresolved: resolving `model.padded` would import torch here."""
    sweep_config = copy.deepcopy(sweep_config)
    HydraConfig.instance().set_config(sweep_config)
    subdir = str(OmegaConf.select(sweep_config, "hydra.sweep.subdir"))
    output_dir = os.path.abspath(os.path.join(str(sweep_config.hydra.sweep.dir), subdir))
    with read_write(sweep_config.hydra.runtime), open_dict(sweep_config.hydra.runtime):
        sweep_config.hydra.runtime.output_dir = output_dir
    HydraConfig.instance().set_config(sweep_config)
    task_cfg = copy.deepcopy(sweep_config)
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    return task_cfg


def plan(hydra_context: HydraContext, config: DictConfig, numbered: Sequence[tuple[int, list[str]]], n_jobs: int,
         packing: bool = True) -> list[Unit]:
    """The sweep's jobs (number, overrides) as units of work: packs of jobs that differ only in their seeds,
    ordinary jobs for the rest (each said in one line), big packs split so that every process has work.
    Without `packing`, every job is a unit of its own."""
    from seqrev.engines import Job, choose

    if not packing:
        return [Unit([(idx, list(overrides))], packed=False, names=[f"#{idx}"]) for idx, overrides in numbered]
    cells: dict[tuple[str, ...], list[tuple[int, list[str]]]] = {}
    for idx, overrides in numbered:
        cells.setdefault(cell_of(overrides), []).append((idx, list(overrides)))
    units: list[Unit] = []
    for jobs in cells.values():
        names = [f"#{idx} ({' '.join(overrides)})" for idx, overrides in jobs]
        # One config per cell (composing one takes a noticeable part of a second): its jobs differ only in
        # their seeds. This process stays small, without torch: values are checked where the jobs run, and
        # a pack's process parts members whose resolved settings still differ (run_pack).
        try:
            sweep_config = job_config(hydra_context, config, *jobs[0])
            model_name = sweep_config.hydra.runtime.choices.get("model")
            task_cfg = task_config(sweep_config)
            choice = choose(Job(task_cfg, model_name, alone=len(jobs) == 1), packing=True)
        except Exception:  # noqa: BLE001 - a config that fails is run as an ordinary job, which says why
            units += [ordinary_unit(*job, name, "its config does not resolve (it runs to say why)")
                      for job, name in zip(jobs, names)]
            continue
        if choice.engine != "packed":
            units += [ordinary_unit(*job, name, choice.reason) for job, name in zip(jobs, names)]
        else:
            units.append(Unit(jobs, packed=True, weight=int(task_cfg.data.timesteps) * int(task_cfg.model.units),
                              names=names, whole=str(task_cfg.trainer.accelerator) in ("gpu", "cuda")))
    return spread(units, n_jobs)


def cell_of(overrides: Sequence[str]) -> tuple[str, ...]:
    """A job's overrides but its seeds and where its files go: equal for jobs that differ only in those."""
    def differs_only_by_seed_or_folder(override: str) -> bool:
        key = override.split("=", 1)[0].lstrip("+")
        return key in ("seed", "data.seed", "run_name", "resume") or key.startswith("paths.")

    return tuple(sorted(o for o in overrides if not differs_only_by_seed_or_folder(o)))


def ordinary_unit(idx: int, overrides: list[str], name: str, reason: str) -> Unit:
    log.info(f"packed launcher: job {name} runs as an ordinary job: {reason}")
    return Unit([(idx, overrides)], packed=False, names=[name])


def pack_key(cfg: DictConfig, model_name: str | None) -> str:
    """Equal for two jobs exactly when they differ in nothing but their seeds (and where files go), their
    settings resolved."""
    settings = {}
    for key in cfg.keys():
        if key in ("seed", "paths", "run_name", "resume"):
            continue
        value = cfg[key]
        settings[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    settings.get("data", {}).pop("seed", None)
    for section in ("callbacks", "logger"):
        for entry in (settings.get(section) or {}).values():
            for path_key in ("dirpath", "save_dir", "name", "version", "tracking_uri", "run_name"):
                (entry or {}).pop(path_key, None)  # each job's own folder, or named after it
    settings.get("trainer", {}).pop("default_root_dir", None)
    return json.dumps([model_name, settings], sort_keys=True, default=str)


def spread(units: list[Unit], n_jobs: int) -> list[Unit]:
    """Split the largest packs in two until there are at least `n_jobs` units (or no pack of 4 or more to
    split, but those kept whole: each half stays a pack), so no CPU idles; longest first, so the last to
    finish is a short one."""
    units = list(units)
    while len(units) < n_jobs:
        splittable = [u for u in units if u.packed and not u.whole and len(u.jobs) >= 4]
        if not splittable:
            break
        largest = max(splittable, key=lambda u: len(u.jobs))
        half = len(largest.jobs) // 2
        units.remove(largest)
        for part in (slice(0, half), slice(half, None)):
            units.append(Unit(largest.jobs[part], packed=True, weight=largest.weight, names=largest.names[part]))
    return sorted(units, key=lambda u: -u.weight * (1 + 0.6 * (len(u.jobs) - 1)))


def launch(hydra_context: HydraContext, task_function: Any, config: DictConfig,
           job_overrides: Sequence[Sequence[str]], initial_job_idx: int, n_jobs: int | None) -> list[JobReturn]:
    """Run a sweep's jobs; their returns in the sweep's order."""
    n_jobs = default_jobs() if n_jobs in (None, -1, 0) else int(n_jobs)
    units = start(hydra_context, config, numbered(job_overrides, initial_job_idx), n_jobs)
    say_plan(units, len(job_overrides), f"on {min(n_jobs, len(units))} processes")
    state = Singleton.get_state()
    work = [(hydra_context, config, unit, task_function, state) for unit in units]
    if n_jobs == 1 or len(units) == 1:
        returns = [run_unit(*args) for args in work]
    else:  # as Hydra's joblib launcher: loky's processes, Hydra's state sent along with each unit
        from joblib import Parallel, delayed

        processes = Parallel(n_jobs=min(n_jobs, len(units)), backend="loky")
        returns = processes(delayed(run_unit)(*args) for args in work)
    return in_sweep_order(returns, initial_job_idx, len(job_overrides))


def numbered(job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[tuple[int, list[str]]]:
    return [(initial_job_idx + offset, list(overrides)) for offset, overrides in enumerate(job_overrides)]


def start(hydra_context: HydraContext, config: DictConfig, jobs: Sequence[tuple[int, list[str]]], n_jobs: int,
          packing: bool = True) -> list[Unit]:
    """What every Hydra launcher does first (its globals, logging and the sweep's folder), then the plan."""
    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    return plan(hydra_context, config, jobs, n_jobs, packing)


def in_sweep_order(returns: Iterable[list[tuple[int, JobReturn]]], initial_job_idx: int, n: int) -> list[JobReturn]:
    by_number = {idx: ret for unit_returns in returns for idx, ret in unit_returns}
    return [by_number[initial_job_idx + offset] for offset in range(n)]


def say_plan(units: list[Unit], n_jobs: int, where: str) -> None:
    """The console's line: how many packs (of how many jobs) and ordinary jobs a sweep became, and where."""
    packs = [u for u in units if u.packed]
    sizes = f" ({', '.join(str(len(u.jobs)) for u in packs)} jobs each)" if packs else ""
    log.info(f"packed launcher: {n_jobs} jobs as {len(packs)} packs{sizes} and {len(units) - len(packs)} ordinary "
             f"jobs, {where}")


def submit_to_slurm(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
                    packing: bool = True) -> list[JobReturn]:
    """hydra/launcher=packed_slurm (and, without `packing`, hydra/launcher=slurm): the sweep's jobs that did not
    finish before, as one Slurm job array through submitit, each pack and each other job an element of it,
    with the settings of hydra/launcher=slurm (`launcher.params`, mapped to submitit's as Hydra's submitit
    launcher maps them); the jobs' returns in the sweep's order. Finished jobs are read here, in the
    launching process, and never submitted: a re-run of a finished sweep asks the cluster for nothing."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    jobs = numbered(job_overrides, initial_job_idx)
    finished = finished_before(launcher.config, jobs)
    to_run = [job for job in jobs if job[0] not in finished]
    units = start(launcher.hydra_context, launcher.config, to_run, n_jobs=1, packing=packing)  # packs whole
    if not units:
        log.info(f"slurm: all {len(jobs)} jobs finished before: nothing to submit")
        return in_sweep_order([list(finished.items())], initial_job_idx, len(jobs))
    skipped = f" ({len(finished)} finished before, not submitted)" if finished else ""
    say_plan(units, len(jobs) - len(finished), f"as {len(units)} Slurm jobs{skipped}")
    params = dict(launcher.params)
    executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                                     slurm_max_num_timeout=params.pop("max_num_timeout", 0))
    queue_keys = set(OmegaConf.structured(BaseQueueConf).keys())  # submitit's own; the rest are Slurm's
    executor.update_parameters(**{key if key in queue_keys else f"slurm_{key}": value
                                  for key, value in params.items()})
    submitted = executor.map_array(launcher, units, [Singleton.get_state()] * len(units))
    returns = [job.results()[0] for job in submitted] + [list(finished.items())]
    return in_sweep_order(returns, initial_job_idx, len(jobs))


def finished_before(config: DictConfig, jobs: Sequence[tuple[int, list[str]]]) -> dict[int, JobReturn]:
    """The jobs whose folders say they finished (results ok, for these very overrides), each with the return
    its job would give the sweeper, read from its results.json; each recorded as skipped for the progress
    line (seqrev.sweepfolder)."""
    from seqrev.lifecycle import folders_by_job, metric
    from seqrev.results import FILENAME, read_results
    from seqrev.rundir import run_status
    from seqrev.sweepfolder import record_outcome

    sweep_dir = Path(str(config.hydra.sweep.dir))
    folders = folders_by_job(sweep_dir) if sweep_dir.is_dir() else {}
    finished = {}
    for idx, overrides in jobs:
        folder = folders.get(tuple(overrides))
        if folder is None or not folder.name.startswith(f"{idx}_") or run_status(folder) != "ok":
            continue
        results = read_results(folder / FILENAME)
        ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=metric(config, results),
                        task_name=str(config.hydra.job.name), working_dir=str(folder))
        record_outcome(sweep_dir, folder, "skipped")  # the progress line says so
        finished[idx] = ret
    return finished


def run_unit(hydra_context: HydraContext, config: DictConfig, unit: Unit, task_function: Any,
             singleton_state: dict[Any, Any]) -> list[tuple[int, JobReturn]]:
    """One unit of work, in this process or a worker: (job number, its JobReturn) for each of its jobs."""
    setup_globals()
    Singleton.set_state(singleton_state)
    if not unit.packed:
        return [(idx, ordinary_job(hydra_context, config, idx, overrides, task_function))
                for idx, overrides in unit.jobs]
    return run_pack(hydra_context, config, unit, task_function)


def ordinary_job(hydra_context: HydraContext, config: DictConfig, idx: int, overrides: list[str],
                 task_function: Any) -> JobReturn:
    sweep_config = job_config(hydra_context, config, idx, overrides)
    HydraConfig.instance().set_config(sweep_config)
    return run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


def _member_setup(task_cfg: DictConfig) -> tuple[DictConfig, str | None, list[str]]:
    """What Hydra's `run_job` calls for a pack's member once it has made its folder and `.hydra/`: the
    member's resolved config, its model's config name and its overrides."""
    hydra_cfg = HydraConfig.get()
    task_cfg = copy.deepcopy(task_cfg)
    OmegaConf.resolve(task_cfg)
    return task_cfg, hydra_cfg.runtime.choices.get("model"), list(hydra_cfg.overrides.task)


def run_pack(hydra_context: HydraContext, config: DictConfig, unit: Unit,
             task_function: Any) -> list[tuple[int, JobReturn]]:
    """A pack's jobs, each through the job's lifecycle as an ordinary job (its folder, lock, continuation);
    the members still to train trained together (by how far they got: a killed pack's members resume from
    their checkpoints). The pack's lines go to its members' train.log files (and, with sweep_console=all, to
    the console too)."""
    from seqrev.console import sweep_job_console

    configure_log(_console_only(config.hydra.job_logging), config.hydra.verbose)
    mode = str(OmegaConf.select(config, "sweep_console", default="jobs"))
    with sweep_job_console(mode, f"{unit.jobs[0][0]}-{unit.jobs[-1][0]}"):
        return _run_pack(hydra_context, config, unit, task_function)


def _run_pack(hydra_context: HydraContext, config: DictConfig, unit: Unit,
              task_function: Any) -> list[tuple[int, JobReturn]]:
    from seqrev.engines import Job, choose
    from seqrev.lifecycle import claim, metric
    from seqrev.packs.recipe import Member, train_pack
    from seqrev.results import describe

    returns: dict[int, JobReturn] = {}
    members: dict[int, Member] = {}
    ordinary: list[tuple[int, list[str]]] = []
    with ExitStack() as held:
        for idx, overrides in unit.jobs:
            sweep_config = job_config(hydra_context, config, idx, overrides)
            ret = run_job(hydra_context=hydra_context, task_function=_member_setup, config=sweep_config,
                          job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir", configure_logging=False)
            returns[idx] = ret
            if ret.status != JobStatus.COMPLETED:  # its config did not resolve here: the job says why itself
                ordinary.append((idx, overrides))
                continue
            cfg, model_name, job_overrides = ret.return_value
            run_dir = Path(cfg.paths.output_dir)
            job = claim(held, run_dir, job_overrides, Path(str(config.hydra.sweep.dir)))
            ret.return_value = metric(cfg, job.results)
            if not job.trains:
                continue
            continues = None if job.saved is None else "packed" if job.saved.packed else "lightning"
            choice = choose(Job(cfg, model_name, continues=continues), packing=True)
            if choice.engine != "packed":
                log.info(f"packed launcher: job #{idx} runs as an ordinary job: {choice.reason}")
                ordinary.append((idx, overrides))
                continue
            handler = logging.FileHandler(run_dir / "train.log")
            handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
            members[idx] = Member(cfg, model_name, describe(cfg, model_name), job.saved, handler)
        groups: dict[tuple[int, str], list[Member]] = {}
        for member in members.values():  # a killed pack's members may have saved different epochs last
            epochs = 0 if member.saved is None else member.saved.epochs
            groups.setdefault((epochs, pack_key(member.cfg, member.model_name)), []).append(member)
        for group in groups.values():
            train_pack(group)
    for idx, member in members.items():
        returns[idx].return_value = metric(member.cfg, member.results)
    for idx, overrides in ordinary:
        returns[idx] = ordinary_job(hydra_context, config, idx, overrides, task_function)
    return sorted(returns.items())


def _console_only(job_logging: DictConfig) -> DictConfig:
    """Hydra's job logging without its file handler: a pack's members each write their own train.log."""
    job_logging = copy.deepcopy(job_logging)
    with read_write(job_logging), open_dict(job_logging):
        job_logging.root.handlers = [h for h in job_logging.root.handlers if h != "file"]
        job_logging.handlers.pop("file", None)
    return job_logging

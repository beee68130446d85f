"""Checks of a command line before Hydra runs it: each bad word ends in one sentence (`ConfigError`).

Hydra would refuse the same lines, but over several lines with its search path and exit status 1,
and only after it has made a run folder. Values are checked later, on the composed config
(`seqrev.config.validate`); here only what Hydra itself would stumble on: unknown group options,
unknown keys, and combinations seqrev cannot run.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from seqrev.commandline import given, is_sweep, overrides_on, quote
from seqrev.errors import ConfigError

# Imports inside functions: Hydra's parser and the launchers' modules load only for the lines that need them: most
# checks answer without them.


def check_command_line(argv: list[str], config_dir: Path) -> None:
    """ConfigError for the first thing on `argv` (a `python -m seqrev.train` line) Hydra would refuse."""
    args = overrides_on(argv)
    check_group_choices(args, [config_dir, *search_path(args)])
    if "trainer=ddp" in args and is_sweep(argv):
        raise ConfigError("trainer=ddp is for a single run and cannot be combined with -m (Lightning's DDP "
                          "re-launches the whole sweep in every process); run the sweep with "
                          "hydra/launcher=joblib, or several single trainer=ddp runs.")
    check_keys(args, config_dir)
    if is_sweep(argv):
        check_launcher(args, config_dir)
    check_writable(argv)


def _folder_key(argv: list[str]) -> str:
    return "hydra.sweep.dir" if is_sweep(argv) else "hydra.run.dir"


def output_folder(argv: list[str]) -> Path:
    """The folder a run or sweep writes into: the one given on the command line, else (within) `outputs`."""
    folders = given(argv, _folder_key(argv))
    return Path(folders[-1] if folders else "outputs").absolute()


def check_writable(argv: list[str]) -> None:
    """The folder a run or sweep will write into must be writable: checked before Hydra makes it."""
    key = _folder_key(argv)
    target = output_folder(argv)
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if os.access(existing, os.W_OK):
        return
    read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    why = "the file system is read-only" if read_only else "permission denied"
    raise ConfigError(f"cannot write the run folder {target}: {why} at {existing}; choose another folder with "
                      f"{key}=PATH.")


def swept_keys(argv: list[str]) -> list[str]:
    """The keys a sweep's command line gives several values (`a=1,2`, `range(...)`, `glob(...)`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not is_sweep(argv):
        return []
    try:
        parsed = OverridesParser.create().parse_overrides(overrides_on(argv))
    except Exception:  # noqa: BLE001 - Hydra will say what is wrong with the line
        return []
    return [o.key_or_group for o in parsed if o.is_sweep_override() and not o.is_hydra_override()]


def search_path(args: list[str]) -> list[Path]:
    """The folders of `hydra.searchpath=[file://DIR,...]` on the line: configs of the user's own."""
    folders = []
    for arg in args:
        if arg.startswith("hydra.searchpath="):
            folders += [Path(p) for p in re.findall(r"file://([^,\]'\"]+)", arg)]
    return folders


def check_group_choices(args: list[str], config_dirs: list[Path]) -> None:
    """`group=option` for one of seqrev's config groups must name an option that exists (in seqrev's
    configs or in a folder of the line's `hydra.searchpath`)."""
    for arg in args:
        match = re.fullmatch(r"[+~]?([a-z_]+)=\[?([\w,.-]+)\]?", arg)  # an option, a sweep or a list of them
        if not match or not any((d / match.group(1)).is_dir() for d in config_dirs):
            continue
        group, values = match.groups()
        options = sorted({p.stem for d in config_dirs for p in (d / group).glob("*.yaml")})
        for value in values.split(","):
            if value not in options and value != "null":
                raise ConfigError(f"{group}={value!r} is not allowed: choose one of {', '.join(options)}.")


def first_job(args: list[str]) -> list[str] | None:
    """The overrides of a sweep's first job (a plain line as it is), without Hydra's own keys; None when
    the line is beyond this simple reading (Hydra then judges it itself)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except Exception:  # noqa: BLE001 - a syntax error: Hydra's own message is the best one
        return None
    job = []
    for override in overrides:
        if override.is_hydra_override():
            if override.get_key_element() == "hydra.searchpath":  # the user's own config folders count
                job.append(override.input_line)
            continue
        if override.is_sweep_override():
            try:
                first = next(iter(override.sweep_string_iterator()))
            except Exception:  # noqa: BLE001 - glob() and friends need the option list: skip the check
                return None
            job.append(f"{override.get_key_element()}={first}")
        else:
            job.append(override.input_line)
    return job


def check_keys(args: list[str], config_dir: Path) -> None:
    """Every `key=value` must name a setting that exists; a new key needs `+`. Composes the config of
    the line (of a sweep's first job) once, which takes a fraction of a second."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from seqrev.catalog import compose

    job = first_job(args)
    if not job:
        return
    try:
        cfg = compose(job, config_dir)
    except (HydraException, OmegaConfBaseException) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    else:
        check_new_keys(job, cfg, config_dir)
        check_targets(cfg)
        check_sweep_console(cfg)
        return
    groups = [o for o in job if _is_group(o.split("=", 1)[0].lstrip("+~"), config_dir)
              or o.lstrip("+~").startswith(("hydra.", "hydra/"))]  # they shape the keys
    try:
        base = compose(groups, config_dir, with_hydra=True)
    except (HydraException, OmegaConfBaseException):
        raise ConfigError(first_line) from None
    choices = dict(base.hydra.runtime.choices)
    with open_dict(base):
        del base["hydra"]
    for override in job:
        key = override.split("=", 1)[0]
        if key[:1] in "+~" or key.startswith("hydra.") or _is_group(key, config_dir):
            continue
        if OmegaConf.select(base, key, default=_ABSENT) is _ABSENT:
            raise ConfigError(unknown_key_sentence(base, key, choices.get(key.split(".")[0])))
    raise ConfigError(first_line)


def check_sweep_console(cfg: DictConfig) -> None:
    from seqrev.console import SWEEP_CONSOLES

    mode = cfg.get("sweep_console")
    if mode not in SWEEP_CONSOLES:
        raise ConfigError(f"sweep_console={mode!r} is not allowed: choose one of {', '.join(SWEEP_CONSOLES)}.")


FREE_FORM = "tags"
"""The one place for keys of the user's own (`+tags.NAME=VALUE`): labels seqrev records in results.json and
reads nothing from."""


def _is_group(key: str, config_dir: Path) -> bool:
    return "." not in key and (config_dir / key).is_dir()


def check_new_keys(job: list[str], cfg: DictConfig, config_dir: Path) -> None:
    """A key added with `+` must be one something reads: under `tags`, a Trainer option (checked with the
    Trainer's own rules later), or an argument of the class or function its nearest `_target_` names. Any
    other would be carried along and read by nothing: ConfigError."""
    for override in job:
        key = override.split("=", 1)[0]
        if not key.startswith("+") or key.lstrip("+").startswith(("hydra.", "hydra/")):
            continue
        key = key.lstrip("+")
        if key.split(".")[0] in (FREE_FORM, "trainer") or _is_group(key, config_dir):
            continue
        parts = key.split(".")
        owner = next((i for i in range(len(parts) - 1, 0, -1)
                      if OmegaConf.select(cfg, ".".join(parts[:i]) + "._target_", default=None) is not None), None)
        if owner is None:
            raise ConfigError(f"`{key}` is not a setting seqrev reads; for labels of your own, use "
                              f"`+{FREE_FORM}.{parts[-1]}=...` (recorded in results.json).")
        if parts[owner] == "_target_" or owner + 1 < len(parts):
            continue  # a whole object of the user's (`+callbacks.x._target_=...`), or a setting within a setting
        node = ".".join(parts[:owner])
        target = str(OmegaConf.select(cfg, node + "._target_"))
        accepted = _arguments(target)
        if accepted is not None and parts[owner] not in accepted:
            close = difflib.get_close_matches(parts[owner], sorted(accepted), n=1)
            raise ConfigError(f"`{key}` is not a setting of {target}" + (
                f"; did you mean `{node}.{close[0]}`?" if close else f" (it takes {', '.join(sorted(accepted))})."))


def _arguments(target: str) -> set[str] | None:
    """The keyword arguments `target` (a class or function) takes, through the `**kwargs` its classes pass
    on to their bases; None when it takes any, or cannot be found (check_targets says so)."""
    try:
        found = locate(target)
    except ImportError:
        return None
    chain = [c.__init__ for c in found.__mro__ if "__init__" in vars(c)] if isinstance(found, type) else [found]
    accepted: set[str] = set()
    for function in chain:
        try:
            parameters = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):
            return None
        accepted |= {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            return accepted
    return None


def locate(path: str) -> object:
    """The object a dotted path names, its module imported; ImportError saying what is missing."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            found: object = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and not module_name.startswith(error.name):
                raise ImportError(f"importing {module_name} needs {error.name}, which is not installed") from None
            continue
        for depth, name in enumerate(parts[cut:], start=cut):
            if not hasattr(found, name):
                raise ImportError(f"{'.'.join(parts[:depth])} has no {name!r}")
            found = getattr(found, name)
        return found
    raise ImportError(f"there is no module {parts[0]!r}")


def _targets(node: object, prefix: str = "") -> list[tuple[str, str]]:
    """Every `_target_` of a plain config (a container), with its key."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_" and isinstance(value, str):
                found.append((f"{prefix}_target_", value))
            else:
                found += _targets(value, f"{prefix}{key}.")
    return found


def check_targets(cfg: DictConfig) -> None:
    """ConfigError for the first `_target_` that names nothing importable. Those seqrev's own configs name
    are known to exist (and looking would import Lightning here): only the others are looked up."""
    from seqrev.rundir import seqrev_targets

    known = seqrev_targets()
    container = OmegaConf.to_container(cfg, resolve=False)
    for key, target in _targets({k: v for k, v in container.items() if k != "hydra"}):
        if target in known or "${" in target:
            continue
        try:
            locate(target)
        except ImportError as error:
            raise ConfigError(f"{key}={target!r} cannot be found: {error}; check the spelling, or put its module on "
                              "PYTHONPATH.") from None


_ABSENT = object()


def unknown_key_sentence(cfg: DictConfig, key: str, group_choice: str | None = None) -> str:
    """'`model.unit` is not a setting; did you mean `model.units`?' (or: a new key needs `+`)."""
    group = key.split(".")[0]
    where = f" of {group}={group_choice}" if group_choice else ""
    close = difflib.get_close_matches(key, _all_keys(cfg), n=2, cutoff=0.8)
    new_key = f"`+{key}=...` for a new key" if "." in key else f"`+{FREE_FORM}.{key}=...` for a label of your own"
    if close:
        return f"`{key}` is not a setting{where}; did you mean {' or '.join(f'`{k}`' for k in close)} (or {new_key})?"
    return f"`{key}` is not a setting{where}; check the spelling, or write {new_key}."


def _all_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for name in cfg.keys():
        full = f"{prefix}{name}"
        keys.append(full)
        child = cfg._get_node(name)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            keys.extend(_all_keys(child, full + "."))
    return keys


WHOLE_NUMBERS = {"timeout_min": 1, "nodes": 1, "tasks_per_node": 1, "cpus_per_task": 1, "mem_gb": 1,
                 "array_parallelism": 1, "gpus_per_node": 0, "max_num_timeout": 0, "signal_delay_s": 0}
"""The whole-number settings of conf/hydra/launcher/slurm.yaml (submitit's), and the least each may be."""


def check_launcher(args: list[str], config_dir: Path) -> None:
    """A sweep's launcher settings (`hydra/launcher=`, `hydra.launcher.KEY=`), before Hydra makes the sweep's
    folder: the packed launcher's and slurm.yaml's numbers by seqrev's rules; joblib's by joblib itself,
    whose refusal is handed on under the settings' names."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from seqrev.catalog import compose

    launcher_args = [a for a in args if a.lstrip("+~").startswith(("hydra/launcher=", "hydra.launcher."))]
    if not launcher_args:
        return
    given = " ".join(a for a in launcher_args if "hydra.launcher." in a)
    try:
        line = [*launcher_args, *(a for a in args if a.startswith("hydra.searchpath="))]
        launcher = compose(line, config_dir, with_hydra=True).hydra.launcher
    except (HydraException, OmegaConfBaseException) as error:
        cause = error.__cause__ or error
        raise ConfigError(f"{given or launcher_args[0]} is not allowed: "
                          f"{' '.join(str(cause).split()[:40]).split(' full_key:')[0]}.") from None
    target = str(launcher.get("_target_"))
    settings = {str(key): value for key, value in launcher.items() if key != "_target_"}
    if target.endswith("PackedLauncher"):
        n_jobs = settings.get("n_jobs")
        if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs in (0, -2)
                                   or n_jobs < -1):
            raise ConfigError(f"hydra.launcher.n_jobs={n_jobs!r} is not allowed: give a whole number of processes, at "
                              "least 1, or -1 (or null) for one per core.")
    elif "SlurmLauncher" in target:
        for key, least in WHOLE_NUMBERS.items():
            value = settings.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise ConfigError(f"hydra.launcher.{key}={value!r} is not allowed: it must be a whole number of at "
                                  f"least {least}.")
    elif target.endswith("JoblibLauncher"):
        from joblib import Parallel

        try:
            Parallel(**{k: v for k, v in settings.items() if k in inspect.signature(Parallel).parameters})
        except Exception as error:  # noqa: BLE001 - joblib's own rules, said in one sentence
            raise ConfigError(f"{given} is not allowed: joblib refused it ({' '.join(str(error).split())}).") from None


NAMED_KEYS = ("model", "seed", "data.timesteps", "model.units")
"""Keys whose values every job folder's name shows: jobs that differ in one never share a folder."""


def check_sweep_folder(argv: list[str], config_dir: Path) -> None:
    """A sweep run again into its folder (`hydra.sweep.dir=`) must want, in every job folder it would reuse,
    the job that folder holds (its job.json): else RunDirError, before Hydra writes anything (multirun.yaml
    included). Checked here for Hydra's basic sweeper, whose jobs the command line alone decides; the settle
    sweeper checks its first round itself, and every job is checked again as it starts (lifecycle.claim)."""
    if not is_sweep(argv) or not given(argv, "hydra.sweep.dir"):
        return
    sweep_dir = output_folder(argv)
    if not sweep_dir.is_dir() or not any(sweep_dir.glob("*/job.json")):
        return
    args = overrides_on(argv)
    jobs = basic_sweep_jobs(args, config_dir)
    if jobs is not None:
        check_job_folders(sweep_dir, jobs, lambda number, job: job_folder_name(job, number, args, config_dir))


def check_job_folders(sweep_dir: Path, jobs: list[list[str]], folder_name: Callable[[int, list[str]], str | None],
                      first_number: int = 0) -> None:
    """RunDirError when a job folder of `sweep_dir` holds another job than the one of `jobs` (numbered from
    `first_number`) that `folder_name(number, overrides)` says would be put there."""
    from seqrev.errors import RunDirError
    from seqrev.lifecycle import JOB_FILE, read_job_overrides

    for job_file in sorted(sweep_dir.glob(f"*/{JOB_FILE}")):
        folder = job_file.parent
        number = folder.name.partition("_")[0]
        if not number.isdigit() or not 0 <= int(number) - first_number < len(jobs):
            continue
        theirs, ours = read_job_overrides(job_file), jobs[int(number) - first_number]
        if theirs == ours or _differ_in_a_named_key(theirs, ours):
            continue
        if folder_name(int(number), ours) == folder.name:
            raise RunDirError(f"{folder} holds a job with other settings than this sweep's job there (differing: "
                              f"{', '.join(sorted(set(theirs) ^ set(ours)))}); use another hydra.sweep.dir, or "
                              "delete that folder.")


def _differ_in_a_named_key(first: list[str], second: list[str]) -> bool:
    def named(overrides: list[str]) -> dict[str, str]:
        pairs = (o.split("=", 1) for o in overrides if "=" in o)
        return {key.lstrip("+~"): value for key, value in pairs if key.lstrip("+~") in NAMED_KEYS}

    ours, theirs = named(first), named(second)
    return any(key in theirs and ours[key] != theirs[key] for key in ours)


def basic_sweep_jobs(args: list[str], config_dir: Path) -> list[list[str]] | None:
    """The overrides of each job of the sweep a command line makes, in Hydra's order, when its sweeper is
    Hydra's basic one (its `params` and the line, as BasicSweeper.sweep splits them); None for another
    sweeper, or a line beyond this reading (glob over a config group)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from seqrev.catalog import compose

    first = first_job(args)
    if first is None:
        return None
    hydra_args = [a for a in args if a.lstrip("+~").startswith(("hydra/sweeper=", "hydra.sweeper."))]
    try:
        sweeper = compose([*first, *hydra_args], config_dir, with_hydra=True).hydra.sweeper
        if not str(sweeper.get("_target_")).endswith(".BasicSweeper") or sweeper.get("max_batch_size"):
            return None
        parser = OverridesParser.create()
        task = [o.input_line for o in parser.parse_overrides(args) if not o.is_hydra_override()]
        params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
        return BasicSweeper.split_arguments(parser.parse_overrides(params + task), None)[0]
    except Exception:  # noqa: BLE001 - Hydra says what is wrong with the line when it runs it
        return None


def subdir_of(cfg: DictConfig, number: int) -> str:
    """The folder name (`hydra.sweep.subdir`) Hydra gives job `number` of a composed config: its resolvers
    read Hydra's global config, which this sets (the caller puts back what was there)."""
    from hydra.core.hydra_config import HydraConfig

    with open_dict(cfg):
        cfg.hydra.job.num = number
    HydraConfig.instance().set_config(cfg)
    return str(cfg.hydra.sweep.subdir)


def job_folder_name(overrides: list[str], number: int, args: list[str], config_dir: Path) -> str | None:
    """The folder name Hydra would give job `number` of these overrides."""
    from hydra.core.hydra_config import HydraConfig

    from seqrev.catalog import compose

    hydra_args = [a for a in args if a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    try:
        return subdir_of(compose([*overrides, *hydra_args], config_dir, with_hydra=True), number)
    except Exception:  # noqa: BLE001 - a job that does not compose is refused by Hydra itself
        return None
    finally:
        HydraConfig.instance().cfg = None


def pin_sweep_folder(argv: list[str], config_dir: Path) -> list[str]:
    """A sweep's command line with its folder named (`hydra.sweep.dir=`, by default one named after the time
    now, as Hydra would name it), so that the command line can read what its jobs recorded once it ends."""
    from seqrev.catalog import compose

    if not is_sweep(argv) or given(argv, "hydra.sweep.dir"):
        return argv
    first = first_job(overrides_on(argv))
    try:
        folder = str(compose(first or [], config_dir, with_hydra=True).hydra.sweep.dir)
    except Exception:  # noqa: BLE001 - Hydra says what is wrong with the line when it runs it
        return argv
    return [*argv, f"hydra.sweep.dir={quote(folder)}"]

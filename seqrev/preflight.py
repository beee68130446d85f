"""Checks of a command line before Hydra runs it: each bad word ends in one sentence (`ConfigError`).

Hydra would refuse the same lines, but over several lines with its search path and exit status 1,
and only after it has made a run folder. Values are checked later, on the composed config
(`seqrev.config.validate`); here only what Hydra itself would stumble on: unknown group options,
unknown keys, and combinations seqrev cannot run.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from seqrev.errors import ConfigError

SWEEP_FLAGS = {"-m", "--multirun"}


def check_command_line(argv: list[str], config_dir: Path) -> None:
    """ConfigError for the first thing on `argv` (a `python -m seqrev.train` line) Hydra would refuse."""
    args = [a for a in argv[1:] if not a.startswith("-")]
    check_group_choices(args, [config_dir, *search_path(args)])
    if "trainer=ddp" in args and SWEEP_FLAGS & set(argv):
        raise ConfigError("trainer=ddp is for a single run and cannot be combined with -m (Lightning's DDP "
                          "re-launches the whole sweep in every process); run the sweep with "
                          "hydra/launcher=joblib, or several single trainer=ddp runs.")
    check_keys(args, config_dir)
    if SWEEP_FLAGS & set(argv):
        check_launcher(args, config_dir)
    check_writable(argv)


def _folder_key(argv: list[str]) -> str:
    return "hydra.sweep.dir=" if SWEEP_FLAGS & set(argv) else "hydra.run.dir="


def output_folder(argv: list[str]) -> Path:
    """The folder a run or sweep writes into: the one given on the command line, else (within) `outputs`."""
    from seqrev.rundir import override_value

    given = [override_value(a) for a in argv[1:] if a.startswith(_folder_key(argv))]
    return Path(given[-1] if given else "outputs").absolute()


def check_writable(argv: list[str]) -> None:
    """The folder a run or sweep will write into must be writable: checked before Hydra makes it."""
    import os

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
                      f"{key}PATH.")


def swept_keys(argv: list[str]) -> list[str]:
    """The keys a sweep's command line gives several values (`a=1,2`, `range(...)`, `glob(...)`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not SWEEP_FLAGS & set(argv):
        return []
    try:
        overrides = OverridesParser.create().parse_overrides([a for a in argv[1:] if not a.startswith("-")])
    except Exception:  # noqa: BLE001 - Hydra will say what is wrong with the line
        return []
    return [o.key_or_group for o in overrides if o.is_sweep_override() and not o.is_hydra_override()]


def search_path(args: list[str]) -> list[Path]:
    """The folders of `hydra.searchpath=[file://DIR,...]` on the line: configs of the user's own."""
    import re

    folders = []
    for arg in args:
        if arg.startswith("hydra.searchpath="):
            folders += [Path(p) for p in re.findall(r"file://([^,\]'\"]+)", arg)]
    return folders


def check_group_choices(args: list[str], config_dirs: list[Path]) -> None:
    """`group=option` for one of seqrev's config groups must name an option that exists (in seqrev's
    configs or in a folder of the line's `hydra.searchpath`)."""
    import re

    for arg in args:
        match = re.fullmatch(r"[+~]?([a-z_]+)=\[?([\w,.-]+)\]?", arg)  # an option, a sweep or a list of them
        if not match or not any((d / match.group(1)).is_dir() for d in config_dirs):
            continue
        group, values = match.groups()
        options = sorted({p.stem for d in config_dirs for p in (d / group).glob("*.yaml")})
        for value in values.split(","):
            if value not in options and value != "null":
                raise ConfigError(f"{group}={value!r} is not allowed: choose one of {', '.join(options)}.")


def _one_job(args: list[str]) -> list[str] | None:
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

    job = _one_job(args)
    if not job:
        return
    try:
        compose(job, config_dir)
        return
    except (HydraException, OmegaConfBaseException) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    groups = [o for o in job if "." not in o.split("=", 1)[0] or o.startswith("hydra.")]  # they shape the keys
    try:
        base = compose(groups, config_dir, with_hydra=True)
    except (HydraException, OmegaConfBaseException):
        raise ConfigError(first_line) from None
    choices = dict(base.hydra.runtime.choices)
    with open_dict(base):
        del base["hydra"]
    for override in job:
        key = override.split("=", 1)[0]
        if key[:1] in "+~" or "." not in key or key.startswith("hydra."):
            continue
        if OmegaConf.select(base, key, default=_ABSENT) is _ABSENT:
            raise ConfigError(unknown_key_sentence(base, key, choices.get(key.split(".")[0])))
    raise ConfigError(first_line)


_ABSENT = object()


def unknown_key_sentence(cfg: DictConfig, key: str, group_choice: str | None = None) -> str:
    """'`model.unit` is not a setting; did you mean `model.units`?' (or: a new key needs `+`)."""
    group = key.split(".")[0]
    where = f" of {group}={group_choice}" if group_choice else ""
    close = difflib.get_close_matches(key, _all_keys(cfg), n=2, cutoff=0.8)
    new_key = f"`+{key}=...` for a new key"
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
    elif target.endswith("SlurmLauncher"):
        for key, least in WHOLE_NUMBERS.items():
            value = settings.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise ConfigError(f"hydra.launcher.{key}={value!r} is not allowed: it must be a whole number of at "
                                  f"least {least}.")
    elif target.endswith("JoblibLauncher"):
        import inspect

        from joblib import Parallel

        try:
            Parallel(**{k: v for k, v in settings.items() if k in inspect.signature(Parallel).parameters})
        except Exception as error:  # noqa: BLE001 - joblib's own rules, said in one sentence
            raise ConfigError(f"{given} is not allowed: joblib refused it ({' '.join(str(error).split())}).") from None

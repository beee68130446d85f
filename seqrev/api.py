"""`seqrev.fit(*overrides)`: a run from Python, with the same config and run folder as the command line."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf, open_dict

from seqrev.results import RunResults


def fit(*overrides: str) -> RunResults:
    """Train one run, as `python -m seqrev.train OVERRIDES...` would, and return its results.json.

    The same checks up front (a bad group, key or value raises `ConfigError` with the command line's
    sentence), the same composed config, the same run folder (`outputs/runs/<time>_<name>` or
    `hydra.run.dir=...`), with `.hydra/` and `train.log` in it, so `resume=` works on it too.
    Failures raise; like the command line, a run that started records them in its results.json.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from seqrev.catalog import CONFIG_DIR
    from seqrev.config import validate
    from seqrev.preflight import check_command_line
    from seqrev.rundir import refuse_existing_results
    from seqrev.runlock import run_folder_lock

    overrides = list(overrides)
    argv = ["seqrev.fit", *overrides]
    check_command_line(argv, CONFIG_DIR)
    refuse_existing_results(argv)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # `${hydra:...}` and the run's name resolve as under Hydra
    run_dir = Path(cfg.hydra.run.dir).absolute()
    OmegaConf.set_readonly(cfg.hydra, False)  # compose hands the hydra node over read-only
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.name = "train"
        cfg.hydra.overrides.task = overrides
    HydraConfig.instance().set_config(cfg)
    job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    try:
        validate(job_cfg)  # before the run folder exists, so a bad value leaves nothing behind
    except Exception:
        HydraConfig.instance().cfg = None
        raise
    try:
        with run_folder_lock(run_dir):  # FolderBusy (a RunDirError) when another live process holds it
            return _run(cfg, job_cfg, run_dir, overrides)
    finally:
        HydraConfig.instance().cfg = None  # the next run in this process must not see this one's choices


def _run(cfg, job_cfg, run_dir: Path, overrides: list[str]) -> RunResults:
    """The run itself, in a locked folder: Hydra's records, the log file, then training."""
    from seqrev.train import record_failure, train

    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(job_cfg, hydra_dir / "config.yaml")
    OmegaConf.save(cfg.hydra, hydra_dir / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(overrides), hydra_dir / "overrides.yaml")

    log_file = logging.FileHandler(run_dir / "train.log")
    log_file.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
    seqrev_log = logging.getLogger("seqrev")
    seqrev_log.addHandler(log_file)
    if seqrev_log.getEffectiveLevel() > logging.INFO:
        seqrev_log.setLevel(logging.INFO)
    try:
        return train(job_cfg)
    except Exception as error:
        record_failure(job_cfg, error)
        raise
    finally:
        seqrev_log.removeHandler(log_file)
        log_file.close()

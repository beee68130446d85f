"""What the console shows: each message once, nothing that is not about the run."""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from seqrev.errors import storage_problem


def _no_advertising(record: logging.LogRecord) -> bool:
    """Drops Lightning's tips about products (e.g. "💡 Tip: ... litlogger ..."): not about this run."""
    return "Tip:" not in str(record.msg)


def quiet_lightning() -> None:
    """Lightning's messages once each, without advertising or warnings about version skew."""
    # `import lightning` gives its logger a console handler of its own, and `lightning.pytorch` (or
    # `lightning.fabric`) imported before Hydra set up logging (a callback's module, located when the config
    # is checked) one on stderr that keeps its records from the root's. Hydra's handlers already print and
    # file every record: without this each Lightning message would appear twice, or miss train.log.
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        if _no_advertising not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(_no_advertising)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")  # torch/Lightning version skew
    warnings.filterwarnings("ignore", message=r".*The `srun` command is available.*")  # seqrev runs Slurm jobs itself


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


SWEEP_CONSOLES = ("jobs", "all")
"""`sweep_console`: what a sweep's console shows of its jobs. `jobs`: one line per job as it ends (the
launching process's progress thread prints it, seqrev.progress); `all`: besides, every line each job
prints, prefixed with its number. A job's train.log holds all its lines either way."""


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (
        sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)


class Prefixed(logging.Formatter):
    """Another formatter's lines, each after `prefix`."""

    def __init__(self, inner: logging.Formatter | None, prefix: str) -> None:
        super().__init__()
        self.inner, self.prefix = inner or logging.Formatter(), prefix

    def format(self, record: logging.LogRecord) -> str:
        return self.prefix + self.inner.format(record)


@contextmanager
def sweep_job_console(mode: str, number: object) -> Iterator[None]:
    """For a sweep's job (or a pack) in its process: its log lines and warnings go to its files only
    (`jobs`), or to the console too with `[#number] ` before each (`all`). Restored afterwards."""
    root = logging.getLogger()
    consoles = [h for h in root.handlers if _is_console(h)]
    formats = {h: h.formatter for h in consoles}
    if mode == "all":
        for handler in consoles:
            handler.setFormatter(Prefixed(handler.formatter, f"[#{number}] "))
    else:
        for handler in consoles:
            root.removeHandler(handler)
    logging.captureWarnings(True)  # a job's warnings: into its train.log (and, with `all`, the console)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        for handler in consoles:
            handler.setFormatter(formats[handler])
            if handler not in root.handlers:
                root.addHandler(handler)


class PerJobListing(logging.Filter):
    """Drops Hydra launchers' line per job (`\t#12 : model=... seed=0`): the progress thread prints one
    line per job as it ends instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (message.startswith("\t#") and " : " in message)


LAUNCHER_LOGGERS = ("hydra._internal.core_plugins.basic_launcher", "hydra_plugins.hydra_joblib_launcher._core",
                    "hydra_plugins.hydra_submitit_launcher.submitit_launcher")
"""The loggers of Hydra's launchers, which list every job of a sweep as they launch it."""


def per_job_listing(shown: bool) -> None:
    """In the launching process of a sweep: whether Hydra's launchers list every job as they launch it (not
    with sweep_console=jobs, whose progress thread says how each ended)."""
    for name in LAUNCHER_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, PerJobListing)]:
            logger.removeFilter(old)
        if not shown:
            logger.addFilter(PerJobListing())

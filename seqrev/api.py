"""`seqrev.fit(*overrides)`: a run from Python, made exactly as the command line makes it."""

from __future__ import annotations

import logging

from seqrev.results import RunResults

# Imports inside functions: the command line's modules load when `seqrev.fit` is called, not when seqrev is imported.


def fit(*overrides: str) -> RunResults:
    """Train one run, as `python -m seqrev.train OVERRIDES...` would, and return its results.json.

    The same checks, `resume=` handling, Hydra run, folder and job; failures raise the error the command
    line would have said in one sentence (`ConfigError`, `RunDirError`, ...), recorded as there.
    """
    from hydra.core.hydra_config import HydraConfig

    from seqrev.commandline import is_sweep
    from seqrev.errors import ConfigError
    from seqrev.train import launch, prepare

    if is_sweep(list(overrides)):
        raise ConfigError("seqrev.fit makes one run; for a sweep, use the command line: python -m seqrev.train -m ...")
    argv, resumes = prepare(["seqrev.fit", *overrides])
    root = logging.getLogger()
    saved_handlers = list(root.handlers)
    try:
        task = launch(argv, resumes, in_process=True)
        if task.failure is not None:
            raise task.failure
        return task.results[-1]
    finally:
        for handler in set(root.handlers) - set(saved_handlers):  # the run's log file is closed with it
            root.removeHandler(handler)
            handler.close()
        root.handlers[:] = saved_handlers
        HydraConfig.instance().cfg = None  # the next run in this process must not see this one's choices

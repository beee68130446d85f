"""Hydra's plugin entry for `hydra/launcher=packed` (Hydra finds launchers in the `hydra_plugins` package).

The work is seqrev's (seqrev.packs.launcher); this module stays light, because Hydra imports every
plugin module whenever it starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class PackedLauncher(Launcher):
    """Trains a sweep's jobs that differ only in their seeds as packs, on `n_jobs` processes."""

    def __init__(self, n_jobs: int | None = None) -> None:
        self.n_jobs = n_jobs
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from seqrev.packs.launcher import launch

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        return launch(self.hydra_context, self.task_function, self.config, job_overrides, initial_job_idx,
                      self.n_jobs)


__all__: list[Any] = ["PackedLauncher"]

"""Hydra's plugin entry for `hydra/sweeper=settle`: seeds added, round after round, until every comparison
of wirings is settled (Hydra finds sweepers in the `hydra_plugins` package).

The work is seqrev's (seqrev.settle); this module stays light, because Hydra imports every plugin module
whenever it starts. Any launcher runs the rounds: basic, joblib, packed, packed_slurm, submitit.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class SettleSweeper(Sweeper):
    """Runs a few seeds of every cell, then more seeds only where a comparison of wirings is not settled."""

    def __init__(self, initial_seeds: Any = 3, max_seeds: Any = 30, delta: Any = 2.0,
                 params: dict[str, str] | None = None) -> None:
        self.initial_seeds, self.max_seeds, self.delta = initial_seeds, max_seeds, delta
        self.params = dict(params or {})
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Launcher | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        from seqrev.settle import sweep

        return sweep(self, arguments)


__all__: list[Any] = ["SettleSweeper"]

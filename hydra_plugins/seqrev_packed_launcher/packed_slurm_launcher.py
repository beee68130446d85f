"""Hydra's plugin entries for `hydra/launcher=packed_slurm` (submitit's Slurm launcher, each pack one Slurm
job) and `hydra/launcher=slurm` (each job one Slurm job): neither submits a job that finished before.

The work is seqrev's (seqrev.packs.launcher); this module stays light, because Hydra imports every plugin
module whenever it starts. Without Hydra's submitit plugin (the `sweep` extra) there is no such launcher.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
except ImportError:  # the sweep extra is not installed
    SlurmLauncher = None

if SlurmLauncher is not None:

    class PackedSlurmLauncher(SlurmLauncher):
        """A sweep's packs of seeds (seqrev.packs.launcher.plan) and its other jobs, each one element of one
        Slurm job array, with hydra/launcher=slurm's settings. A requeued element runs its unit again: each
        member continues from its own checkpoint (seqrev.lifecycle), as a requeued ordinary job does."""

        def __call__(self, unit: Any, singleton_state: dict) -> list[tuple[int, JobReturn]]:
            from seqrev.packs.launcher import run_unit

            return run_unit(self.hydra_context, self.config, unit, self.task_function, singleton_state)

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            from seqrev.packs.launcher import submit_to_slurm

            return submit_to_slurm(self, job_overrides, initial_job_idx)


    class SlurmLauncherSkippingFinished(PackedSlurmLauncher):
        """hydra/launcher=slurm: Hydra's submitit Slurm launcher, each job an element of one Slurm job array,
        but a job whose folder says it finished is read in the launching process and never submitted."""

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            from seqrev.packs.launcher import submit_to_slurm

            return submit_to_slurm(self, job_overrides, initial_job_idx, packing=False)

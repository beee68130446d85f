"""Sequence tasks as in-memory tensors, served in shuffled slices.

By default the tutorial's reversed-sequence problem: X is a random sequence of `timesteps` integers
in 0..n_features-1, one-hot encoded; y is X reversed. Other tasks and variable lengths are in
`seqrev.tasks`. Everything is generated up front with vectorised calls, so a training step costs a
tensor slice, never per-sample Python work.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from lightning.pytorch import LightningDataModule

from seqrev.tasks import Batch, is_padded, make_pairs


class Batches:
    """Iterates over an epoch in batches, each a slice of in-memory tensors; or, with `group_size`, in
    lists of that many batches.

    A group is what one grouped Lightning step receives (see `seqrev.engines`): handing the framework
    several batches per call spreads its fixed per-call cost (the idea behind Keras'
    `steps_per_execution`), while the model still takes one optimiser step per batch. With `shuffle`,
    the rows are permuted afresh each epoch by `generator`, whose state the data module checkpoints so
    a resumed run reshuffles exactly as an uninterrupted one would.
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int, group_size: int | None = None,
                 shuffle: bool = False, generator: torch.Generator | None = None, rank: int = 0,
                 world_size: int = 1, equal_shards: bool = True) -> None:
        self.inputs, self.targets = inputs, targets
        self.batch_size, self.group_size = batch_size, group_size
        self.shuffle, self.generator = shuffle, generator
        self.rank, self.world_size, self.equal_shards = rank, world_size, equal_shards

    def n_rows(self) -> int:
        # Training with several processes: every rank gets the same number of rows (a few may sit out an
        # epoch), so that all ranks take the same number of steps and their gradient syncs pair up.
        # Evaluation (`equal_shards=False`) has no syncs per step: every row is scored exactly once.
        if self.equal_shards:
            return len(self.inputs) // self.world_size
        return len(range(self.rank, len(self.inputs), self.world_size))

    def n_batches(self) -> int:
        return math.ceil(self.n_rows() / self.batch_size)

    def __len__(self) -> int:
        return self.n_batches() if self.group_size is None else math.ceil(self.n_batches() / self.group_size)

    def __iter__(self) -> Iterator[Batch | list[Batch]]:
        inputs, targets = self.inputs, self.targets
        if self.shuffle:  # every rank draws the same permutation from the same generator state
            order = torch.randperm(len(inputs), generator=self.generator).to(inputs.device)
            inputs, targets = inputs[order], targets[order]
        if self.world_size > 1:
            end = self.n_rows() * self.world_size if self.equal_shards else len(inputs)
            shard = slice(self.rank, end, self.world_size)
            inputs, targets = inputs[shard], targets[shard]
        batches = list(zip(inputs.split(self.batch_size), targets.split(self.batch_size)))
        if self.group_size is None:
            yield from batches
            return
        for start in range(0, len(batches), self.group_size):
            yield batches[start:start + self.group_size]


class SequenceData(LightningDataModule):
    """Train / validation / test pairs of a sequence task (seqrev.tasks; the tutorial's: reversal).

    Validation is the *last* `val_fraction` of the training pairs, as Keras' `validation_split` takes
    it; "train_full" (all `n_train` pairs, validation tail included) is what the tutorial's final
    train accuracy is measured on.
    """

    def __init__(self, timesteps: int = 4, n_features: int = 10, n_train: int = 2000, n_test: int = 200,
                 val_fraction: float = 0.1, batch_size: int = 32, steps_per_call: int = 1,
                 eval_batch_size: int = 1024, seed: int = 0, task: str = "reverse",
                 min_timesteps: int | None = None) -> None:
        super().__init__()
        self.timesteps, self.n_features = timesteps, n_features
        self.task, self.min_timesteps = task, timesteps if min_timesteps is None else min_timesteps
        self.padded = is_padded(task, timesteps, self.min_timesteps)
        self.n_train, self.n_test, self.val_fraction = n_train, n_test, val_fraction
        self.batch_size, self.steps_per_call, self.eval_batch_size = batch_size, steps_per_call, eval_batch_size
        self.group_size: int | None = None  # training batches per list, once seqrev.engines allows grouping
        self.seed = seed
        self.shuffle_generator = torch.Generator().manual_seed(seed + 1)  # not the data's own stream
        self.train_full = self.train = self.val = self.test = None

    @property
    def n_val(self) -> int:
        return int(self.n_train * self.val_fraction)

    def prepare(self) -> None:
        """Generate every split; the same `seed` always gives the same pairs, whatever else runs."""
        if self.train_full is not None:
            return
        generator = torch.Generator().manual_seed(self.seed)
        pairs = lambda n: make_pairs(self.task, n, self.timesteps, self.n_features, generator,  # noqa: E731
                                     self.min_timesteps)
        self.train_full = pairs(self.n_train)
        self.test = pairs(self.n_test)
        split = self.n_train - self.n_val
        self.train = tuple(t[:split] for t in self.train_full)
        self.val = tuple(t[split:] for t in self.train_full)

    def setup(self, stage: str | None = None) -> None:
        self.prepare()
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if self.train_full[0].device != device:  # once, so no batch is copied to the device per step
            self.train_full, self.train, self.val, self.test = (
                tuple(t.to(device) for t in split) for split in (self.train_full, self.train, self.val, self.test))

    def _shard(self) -> dict[str, int]:
        trainer = self.trainer
        return {"rank": trainer.global_rank, "world_size": trainer.world_size} if trainer is not None else {}

    def train_dataloader(self) -> Batches:
        return Batches(*self.train, self.batch_size, self.group_size, shuffle=True,
                           generator=self.shuffle_generator, **self._shard())

    def val_dataloader(self) -> Batches:
        return self._eval_batches(self.val)

    def test_dataloader(self) -> Batches:
        return self._eval_batches(self.test)

    def train_full_dataloader(self) -> Batches:
        return self._eval_batches(self.train_full)

    def _eval_batches(self, split: Batch) -> Batches:
        # Evaluation has no optimiser step, so batch size only changes speed: means over tokens are exact.
        # Scores are summed across ranks (torchmetrics), so each rank scores its own shard of every pair.
        return Batches(*split, self.eval_batch_size, equal_shards=False, **self._shard())

    def state_dict(self) -> dict:
        # The task travels with every checkpoint, so a model loaded on its own knows what it was taught.
        return {"shuffle_generator": self.shuffle_generator.get_state(), "task": self.task,
                "min_timesteps": self.min_timesteps}

    def load_state_dict(self, state_dict: dict) -> None:
        self.shuffle_generator.set_state(state_dict["shuffle_generator"])

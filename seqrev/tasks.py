"""The registry of sequence tasks, each a vectorised map from input symbols to target symbols.

Symbols are 0..n_features-1; `pad` (= n_features) marks positions past a sequence's end, in inputs
whose length varies (`min_timesteps` < `timesteps`) and in targets shorter than their input. A
model scored on a padded task must predict `pad` at the first position past the target's end (that
is how it says "the sequence ends here"); positions after that are not scored.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from seqrev.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor]
"""A batch as data modules give it and models take it: one-hot inputs (N, T, C) and target symbols (N, T)."""

TargetFunction = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
"""(symbols (N, T), lengths (N,), pad) -> targets (N, T): symbols past a length are `pad` on the way in,
and a target shorter than its input is filled with `pad` on the way out."""


@dataclass(frozen=True)
class Task:
    name: str
    targets: TargetFunction
    shorter_targets: bool = False  # targets may end before the input does: the padding symbol is needed


TASKS: dict[str, Task] = {}
"""Every task by the name `data.task` gives it: seqrev's own by their short names, and each function
of yours marked `@task`, by its dotted path (`data.task=my_tasks.rotate`)."""


def task(name: str | None = None, *, shorter_targets: bool = False) -> Callable[[TargetFunction], TargetFunction]:
    """Register a vectorised target function as a task: `@task()` above `def rotate(symbols, lengths, pad)`
    makes `data.task=<module>.rotate` a task like `reverse`, in training, the report and predict."""
    def register(function: TargetFunction) -> TargetFunction:
        key = name or f"{function.__module__}.{function.__qualname__}"
        TASKS[key] = Task(key, function, shorter_targets)
        return function
    return register


def find_task(name: str, importing: bool = True) -> Task:
    """The task `name` stands for. A dotted path not registered yet has its module imported first (the
    user's own config names it); with `importing=False` (a name read from a checkpoint) it never is.
    ConfigError in one sentence when there is none."""
    if name not in TASKS and importing and isinstance(name, str) and "." in name:
        try:
            importlib.import_module(name.rpartition(".")[0])
        except ImportError as error:
            raise ConfigError(f"data.task={name!r} cannot be imported ({error}).") from None
    if name in TASKS:
        return TASKS[name]
    own = ", ".join(n for n in TASKS if "." not in n)
    raise ConfigError(f"data.task={name!r} is not allowed: choose one of {own}, or give the dotted path of a "
                      "function of yours marked @seqrev.tasks.task().")


def is_padded(task: str, timesteps: int, min_timesteps: int) -> bool:
    """Whether the task needs the padding symbol at all (the tutorial's reversal does not)."""
    return find_task(task).shorter_targets or min_timesteps < timesteps


def _compact(values: torch.Tensor, keep: torch.Tensor, pad: int) -> torch.Tensor:
    """Move the kept values of each row to its front, in order; fill the rest with `pad`."""
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    moved = values.gather(1, order)
    return torch.where(torch.arange(values.shape[1]) < keep.sum(1, keepdim=True), moved, pad)


def _valid(symbols: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return torch.arange(symbols.shape[1]) < lengths.unsqueeze(1)


@task("reverse")
def reverse(symbols: torch.Tensor, lengths: torch.Tensor, pad: int) -> torch.Tensor:
    mirrored = (lengths.unsqueeze(1) - 1 - torch.arange(symbols.shape[1])).clamp(min=0)  # t reads L-1-t
    return torch.where(_valid(symbols, lengths), symbols.gather(1, mirrored), pad)


@task("copy")
def copy(symbols: torch.Tensor, lengths: torch.Tensor, pad: int) -> torch.Tensor:
    return torch.where(_valid(symbols, lengths), symbols, pad)


@task("sort")
def sort(symbols: torch.Tensor, lengths: torch.Tensor, pad: int) -> torch.Tensor:
    return torch.where(_valid(symbols, lengths), symbols, pad).sort(1).values  # pad is the largest: it sorts last


@task("sort_desc")
def sort_desc(symbols: torch.Tensor, lengths: torch.Tensor, pad: int) -> torch.Tensor:
    descending = torch.where(_valid(symbols, lengths), symbols, -1).sort(1, descending=True).values
    return torch.where(descending < 0, pad, descending)


@task("select_even", shorter_targets=True)
def select_even(symbols: torch.Tensor, lengths: torch.Tensor, pad: int) -> torch.Tensor:
    return _compact(symbols, _valid(symbols, lengths) & (symbols % 2 == 0), pad)


@task("select_odd", shorter_targets=True)
def select_odd(symbols: torch.Tensor, lengths: torch.Tensor, pad: int) -> torch.Tensor:
    return _compact(symbols, _valid(symbols, lengths) & (symbols % 2 == 1), pad)


@task("reverse_unique", shorter_targets=True)
def reverse_unique(symbols: torch.Tensor, lengths: torch.Tensor, pad: int) -> torch.Tensor:
    """The reversal with each symbol's repeats after its first appearance left out."""
    reversed_ = reverse(symbols, lengths, pad)
    timesteps = symbols.shape[1]
    seen_before = ((reversed_.unsqueeze(2) == reversed_.unsqueeze(1)) & torch.ones(
        timesteps, timesteps, dtype=torch.bool).tril(-1)).any(2)
    return _compact(reversed_, _valid(symbols, lengths) & ~seen_before, pad)


def targets_for(task: str, symbols: torch.Tensor, lengths: torch.Tensor, pad: int) -> torch.Tensor:
    """Targets (N, T) for input symbols (N, T) whose first `lengths` positions are real."""
    return find_task(task).targets(symbols, lengths, pad)


def make_pairs(task: str, n: int, timesteps: int, n_features: int, generator: torch.Generator,
               min_timesteps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` pairs: one-hot inputs (n, T, C) float32 and class-index targets (n, T) int64.

    C is n_features, plus one for the padding symbol when the task needs it.
    """
    min_timesteps = timesteps if min_timesteps is None else min_timesteps
    padded = is_padded(task, timesteps, min_timesteps)
    pad = n_features
    symbols = torch.randint(0, n_features, (n, timesteps), generator=generator)
    if min_timesteps < timesteps:
        lengths = torch.randint(min_timesteps, timesteps + 1, (n,), generator=generator)
        symbols = torch.where(torch.arange(timesteps) < lengths.unsqueeze(1), symbols, pad)
    else:
        lengths = torch.full((n,), timesteps)
    targets = targets_for(task, symbols, lengths, pad)
    inputs = torch.nn.functional.one_hot(symbols, n_features + int(padded)).float()
    return inputs, targets


def until_end(symbols: list[int], pad: int | None) -> list[int]:
    """A sequence as the symbols it holds: up to its first padding symbol (the end), if the task pads."""
    return symbols[: symbols.index(pad)] if pad is not None and pad in symbols else symbols


def scored_positions(targets: torch.Tensor, pad: int) -> torch.Tensor:
    """(..., N, T) bool: every real target position and the first padded one (the end); not the rest."""
    is_pad = targets == pad
    return ~is_pad | (is_pad & (is_pad.cumsum(-1) == 1))

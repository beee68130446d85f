"""The family of sequence tasks, each a vectorised map from input symbols to target symbols.

Symbols are 0..n_features-1; `pad` (= n_features) marks positions past a sequence's end, in inputs
whose length varies (`min_timesteps` < `timesteps`) and in targets shorter than their input. A
model scored on a padded task must predict `pad` at the first position past the target's end (that
is how it says "the sequence ends here"); positions after that are not scored.
"""

from __future__ import annotations

import torch

TASKS = ("reverse", "copy", "sort", "sort_desc", "select_even", "select_odd", "reverse_unique")
SHORTER_TARGETS = ("select_even", "select_odd", "reverse_unique")  # targets may end before the input


def is_padded(task: str, timesteps: int, min_timesteps: int) -> bool:
    """Whether the task needs the padding symbol at all (the tutorial's reversal does not)."""
    return task in SHORTER_TARGETS or min_timesteps < timesteps


def _compact(values: torch.Tensor, keep: torch.Tensor, pad: int) -> torch.Tensor:
    """Move the kept values of each row to its front, in order; fill the rest with `pad`."""
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    moved = values.gather(1, order)
    return torch.where(torch.arange(values.shape[1]) < keep.sum(1, keepdim=True), moved, pad)


def targets_for(task: str, symbols: torch.Tensor, lengths: torch.Tensor, pad: int) -> torch.Tensor:
    """Targets (N, T) for input symbols (N, T) whose first `lengths` positions are real."""
    n, timesteps = symbols.shape
    steps = torch.arange(timesteps)
    valid = steps < lengths.unsqueeze(1)
    if task == "copy":
        return torch.where(valid, symbols, pad)
    if task in ("reverse", "reverse_unique"):
        mirrored = (lengths.unsqueeze(1) - 1 - steps).clamp(min=0)  # position t reads input L-1-t
        reversed_ = torch.where(valid, symbols.gather(1, mirrored), pad)
        if task == "reverse":
            return reversed_
        seen_before = ((reversed_.unsqueeze(2) == reversed_.unsqueeze(1)) & torch.ones(
            timesteps, timesteps, dtype=torch.bool).tril(-1)).any(2)
        return _compact(reversed_, valid & ~seen_before, pad)
    if task == "sort":
        return torch.where(valid, symbols, pad).sort(1).values  # pad is the largest: it sorts last
    if task == "sort_desc":
        descending = torch.where(valid, symbols, -1).sort(1, descending=True).values
        return torch.where(descending < 0, pad, descending)
    if task in ("select_even", "select_odd"):
        keep = valid & (symbols % 2 == (0 if task == "select_even" else 1))
        return _compact(symbols, keep, pad)
    raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")


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


def scored_positions(targets: torch.Tensor, pad: int) -> torch.Tensor:
    """(N, T) bool: every real target position and the first padded one (the end); not the rest."""
    is_pad = targets == pad
    return ~is_pad | (is_pad & (is_pad.cumsum(1) == 1))

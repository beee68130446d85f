"""A task of your own: each sequence rotated left by one (its first symbol moved to the end).

A task is one vectorised function from input symbols to target symbols, marked `@task()`;
`data.task=my_tasks.rotate` then names it, like `data.task=reverse` names one of seqrev's.
"""

import torch

from seqrev.tasks import task


@task()
def rotate(symbols: torch.Tensor, lengths: torch.Tensor, pad: int) -> torch.Tensor:
    """Position t of a sequence of length L reads input position (t + 1) mod L; past L, the padding symbol."""
    steps = torch.arange(symbols.shape[1])
    source = (steps + 1) % lengths.unsqueeze(1).clamp(min=1)
    return torch.where(steps < lengths.unsqueeze(1), symbols.gather(1, source), pad)

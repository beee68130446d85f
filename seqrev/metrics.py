"""What a sequence-to-sequence model scored over an epoch, accumulated on the device.

One `update` per batch costs a few tensor ops and no host sync; `compute` is read once per epoch.
Token accuracy is Keras' categorical accuracy (argmax match averaged over every sample and
timestep); sequence accuracy counts sequences whose every token is right. With `members`, every
state has a leading member dimension: a pack (seqrev.packs) scores all its members in one update.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import Metric


def token_loss(logits: torch.Tensor, targets: torch.Tensor, scored: torch.Tensor | None = None,
               members: bool = False) -> torch.Tensor:
    """Mean cross-entropy over the tokens of logits (..., T, C) against targets (..., T): over every token,
    or over the `scored` ones only; with `members`, one mean per member (the leading dimension)."""
    if scored is None and not members:
        return nn.functional.cross_entropy(logits.flatten(0, -2), targets.flatten())
    per_token = nn.functional.cross_entropy(logits.flatten(0, -2), targets.flatten(), reduction="none")
    per_token = per_token.view(targets.shape)
    over = tuple(range(1 if members else 0, targets.dim()))
    if scored is None:
        return per_token.mean(over)
    return (per_token * scored).sum(over) / scored.sum(over)


class SequenceScores(Metric):
    """Loss, token, sequence and per-position accuracy over the positions that are scored.

    Positions not scored (past a padded target's end marker, see `seqrev.tasks`) count neither way;
    a sequence is right when every scored position is.
    """

    full_state_update = False

    def __init__(self, timesteps: int, members: int | None = None) -> None:
        super().__init__()
        lead = () if members is None else (members,)
        self.add_state("loss_sum", torch.zeros(lead), dist_reduce_fx="sum")
        self.add_state("correct_per_position", torch.zeros(*lead, timesteps), dist_reduce_fx="sum")
        self.add_state("scored_per_position", torch.zeros(*lead, timesteps), dist_reduce_fx="sum")
        self.add_state("exact_sequences", torch.zeros(lead), dist_reduce_fx="sum")
        self.add_state("n_sequences", torch.zeros(lead), dist_reduce_fx="sum")

    def update_from_logits(self, logits: torch.Tensor, target: torch.Tensor, mean_loss: torch.Tensor,
                           scored: torch.Tensor | None = None) -> None:
        """One batch: logits (B, T, C), target (B, T), the batch's mean loss, which positions count."""
        self.update(logits.argmax(-1) == target, mean_loss.detach() * target.shape[-2], scored)

    def update(self, correct: torch.Tensor, loss_sum: torch.Tensor, scored: torch.Tensor | None = None) -> None:
        """Any number of sequences at once: which tokens were right (..., N, T), their summed loss (...), and
        which positions are scored (all when None)."""
        self.loss_sum += loss_sum
        if scored is None:
            self.correct_per_position += correct.sum(-2)
            self.scored_per_position += correct.shape[-2]
            self.exact_sequences += correct.all(-1).sum(-1)
        else:
            self.correct_per_position += (correct & scored).sum(-2)
            self.scored_per_position += scored.sum(-2)
            self.exact_sequences += (correct | ~scored).all(-1).sum(-1)
        self.n_sequences += correct.shape[-2]

    def compute(self) -> dict[str, torch.Tensor]:
        per_position = self.correct_per_position / self.scored_per_position.clamp(min=1)
        return {"loss": self.loss_sum / self.n_sequences,
                "acc": self.correct_per_position.sum(-1) / self.scored_per_position.sum(-1),
                "seq_acc": self.exact_sequences / self.n_sequences, "acc_per_position": per_position}

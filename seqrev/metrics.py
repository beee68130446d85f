"""What a sequence-to-sequence model scored over an epoch, accumulated on the device.

One `update` per batch costs a few tensor ops and no host sync; `compute` is read once per epoch.
Token accuracy is Keras' categorical accuracy (argmax match averaged over every sample and
timestep); sequence accuracy counts sequences whose every token is right.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


class SequenceScores(Metric):
    """Loss, token, sequence and per-position accuracy over the positions that are scored.

    Positions not scored (past a padded target's end marker, see `seqrev.tasks`) count neither way;
    a sequence is right when every scored position is.
    """

    full_state_update = False

    def __init__(self, timesteps: int) -> None:
        super().__init__()
        self.add_state("loss_sum", torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("correct_per_position", torch.zeros(timesteps), dist_reduce_fx="sum")
        self.add_state("scored_per_position", torch.zeros(timesteps), dist_reduce_fx="sum")
        self.add_state("exact_sequences", torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("n_sequences", torch.zeros(()), dist_reduce_fx="sum")

    def update_from_logits(self, logits: torch.Tensor, target: torch.Tensor, mean_loss: torch.Tensor,
                           scored: torch.Tensor | None = None) -> None:
        """One batch: logits (B, T, C), target (B, T), the batch's mean loss, which positions count."""
        self.update(logits.argmax(-1) == target, mean_loss.detach() * len(target), scored)

    def update(self, correct: torch.Tensor, loss_sum: torch.Tensor, scored: torch.Tensor | None = None) -> None:
        """Any number of sequences at once: which tokens were right (N, T), their summed loss, and which
        positions are scored (all when None)."""
        self.loss_sum += loss_sum
        if scored is None:
            self.correct_per_position += correct.sum(0)
            self.scored_per_position += len(correct)
            self.exact_sequences += correct.all(1).sum()
        else:
            self.correct_per_position += (correct & scored).sum(0)
            self.scored_per_position += scored.sum(0)
            self.exact_sequences += (correct | ~scored).all(1).sum()
        self.n_sequences += len(correct)

    def compute(self) -> dict[str, torch.Tensor]:
        per_position = self.correct_per_position / self.scored_per_position.clamp(min=1)
        return {"loss": self.loss_sum / self.n_sequences,
                "acc": self.correct_per_position.sum() / self.scored_per_position.sum(),
                "seq_acc": self.exact_sequences / self.n_sequences, "acc_per_position": per_position}

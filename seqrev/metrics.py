"""What a sequence-to-sequence model scored over an epoch, accumulated on the device.

One `update` per batch costs a few tensor ops and no host sync; `compute` is read once per epoch.
Token accuracy is Keras' categorical accuracy (argmax match averaged over every sample and
timestep); sequence accuracy counts sequences whose every token is right.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


class SequenceScores(Metric):
    full_state_update = False

    def __init__(self, timesteps: int) -> None:
        super().__init__()
        self.add_state("loss_sum", torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("correct_per_position", torch.zeros(timesteps), dist_reduce_fx="sum")
        self.add_state("exact_sequences", torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("n_sequences", torch.zeros(()), dist_reduce_fx="sum")

    def update_from_logits(self, logits: torch.Tensor, target: torch.Tensor, mean_loss: torch.Tensor) -> None:
        """One batch: logits (B, T, F), target (B, T), the batch's mean loss."""
        self.update(logits.argmax(-1) == target, mean_loss.detach() * len(target))

    def update(self, correct: torch.Tensor, loss_sum: torch.Tensor) -> None:
        """Any number of sequences at once: which tokens were right (N, T) and their summed loss."""
        self.loss_sum += loss_sum
        self.correct_per_position += correct.sum(0)
        self.exact_sequences += correct.all(1).sum()
        self.n_sequences += len(correct)

    def compute(self) -> dict[str, torch.Tensor]:
        per_position = self.correct_per_position / self.n_sequences
        return {"loss": self.loss_sum / self.n_sequences, "acc": per_position.mean(),
                "seq_acc": self.exact_sequences / self.n_sequences, "acc_per_position": per_position}

import pytest
import torch
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_exact_match

from seqrev.metrics import SequenceScores


def test_scores_match_torchmetrics_reference_over_several_batches():
    torch.manual_seed(0)
    scores = SequenceScores(timesteps=5)
    all_logits, all_targets = [], []
    for size in (7, 3, 11):
        logits = torch.randn(size, 5, 4)
        targets = torch.randint(0, 4, (size, 5))
        targets[:2] = logits[:2].argmax(-1)  # a few fully right sequences
        scores.update_from_logits(logits, targets, torch.tensor(0.5))
        all_logits.append(logits)
        all_targets.append(targets)
    logits, targets = torch.cat(all_logits), torch.cat(all_targets)
    result = scores.compute()
    predictions = logits.argmax(-1)
    token = multiclass_accuracy(predictions.flatten(), targets.flatten(), num_classes=4, average="micro")
    exact = multiclass_exact_match(predictions, targets, num_classes=4)
    assert torch.isclose(result["acc"], token) and torch.isclose(result["seq_acc"], exact)
    per_position = (predictions == targets).float().mean(0)
    assert torch.allclose(result["acc_per_position"], per_position)
    assert torch.isclose(result["loss"], torch.tensor(0.5))


def test_perfect_and_wrong_predictions():
    scores = SequenceScores(timesteps=3)
    targets = torch.tensor([[0, 1, 2], [2, 1, 0]])
    logits = torch.nn.functional.one_hot(targets, 3).float()
    logits[1, 2] = torch.tensor([0.0, 0.0, 1.0])  # one wrong token in the second sequence
    scores.update_from_logits(logits, targets, torch.tensor(1.0))
    result = scores.compute()
    assert result["acc"].item() == pytest.approx(5 / 6) and result["seq_acc"].item() == 0.5
    assert result["acc_per_position"].tolist() == [1.0, 1.0, 0.5]

import json

import pytest
import torch

from seqrev.metrics import SequenceScores
from seqrev.run import train
from seqrev.tasks import TASKS, make_pairs, scored_positions, targets_for

from conftest import compose_config

PAD = 10


def reference(task: str, sequence: list[int]) -> list[int]:
    """Each task in plain Python, on the real (unpadded) input symbols."""
    if task == "reverse":
        return sequence[::-1]
    if task == "copy":
        return list(sequence)
    if task == "sort":
        return sorted(sequence)
    if task == "sort_desc":
        return sorted(sequence, reverse=True)
    if task == "select_even":
        return [s for s in sequence if s % 2 == 0]
    if task == "select_odd":
        return [s for s in sequence if s % 2 == 1]
    if task == "reverse_unique":
        seen, out = set(), []
        for s in reversed(sequence):
            if s not in seen:
                seen.add(s)
                out.append(s)
        return out
    raise ValueError(task)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("min_timesteps", [7, 2])
def test_generator_matches_plain_python(task, min_timesteps):
    generator = torch.Generator().manual_seed(0)
    inputs, targets = make_pairs(task, 300, 7, 10, generator, min_timesteps)
    padded = inputs.shape[-1] == 11
    for x, y in zip(inputs.argmax(-1).tolist(), targets.tolist()):
        symbols = [s for s in x if s != PAD]
        assert min_timesteps <= len(symbols) <= 7
        assert x == symbols + [PAD] * (7 - len(symbols))  # inputs padded at the end
        expected = reference(task, symbols)
        assert y == expected + [PAD] * (7 - len(expected))
        if not padded:
            assert PAD not in y


def test_the_tutorials_closing_example():
    symbols = torch.tensor([[3, 2, 3, 5, 2]])
    assert targets_for("reverse_unique", symbols, torch.tensor([5]), PAD).tolist() == [[2, 5, 3, PAD, PAD]]


def test_default_task_is_the_tutorials_reversal_without_padding():
    inputs, targets = make_pairs("reverse", 50, 4, 10, torch.Generator().manual_seed(0))
    assert inputs.shape == (50, 4, 10)
    assert torch.equal(inputs.argmax(-1).flip(1), targets)


def test_only_tokens_and_the_end_marker_are_scored():
    targets = torch.tensor([[4, 5, PAD, PAD], [1, 2, 3, 4]])
    assert scored_positions(targets, PAD).tolist() == [[True, True, True, False], [True, True, True, True]]


def scores_for(predictions: torch.Tensor, targets: torch.Tensor) -> dict:
    scores = SequenceScores(timesteps=targets.shape[1])
    scores.update(predictions == targets, torch.tensor(0.0), scored_positions(targets, PAD))
    return {k: v.tolist() for k, v in scores.compute().items()}


def test_wrong_only_after_the_end_scores_as_perfect_and_a_wrong_length_fails():
    targets = torch.tensor([[4, 5, PAD, PAD, PAD], [1, 2, 3, PAD, PAD]])
    perfect = scores_for(targets.clone(), targets)
    noisy_tail = targets.clone()
    noisy_tail[:, 4] = 7  # wrong only where nothing is scored
    assert scores_for(noisy_tail, targets) == perfect and perfect["seq_acc"] == 1.0
    too_long = targets.clone()
    too_long[0, 2] = 9  # no end marker where the target ends: one token more
    result = scores_for(too_long, targets)
    assert result["seq_acc"] == 0.5 and result["acc"] == pytest.approx(6 / 7)


def test_masked_loss_ignores_unscored_positions():
    from seqrev.models import WIRINGS
    model = WIRINGS["both_outputs"](n_features=10, timesteps=5, units=8, padded=True)
    targets = torch.tensor([[4, 5, PAD, PAD, PAD]])
    logits = torch.randn(1, 5, 11)
    changed = logits.clone()
    changed[0, 3:] = torch.randn(2, 11) * 10  # only unscored positions
    assert torch.isclose(model.loss(logits, targets), model.loss(changed, targets))
    assert model.n_classes == 11 and model(torch.zeros(2, 5, 11)).shape == (2, 5, 11)
    # the mean over scored positions (the two symbols and the end marker), not over every position
    expected = torch.nn.functional.cross_entropy(logits[0, :3], targets[0, :3])
    assert torch.isclose(model.loss(logits, targets), expected)


def test_predicted_symbols_stop_at_the_end_symbol():
    from seqrev.models import WIRINGS
    model = WIRINGS["both_outputs"](n_features=10, timesteps=5, units=8, padded=True)
    answer = torch.tensor([[7, 3, PAD, 4, PAD], [1, 2, 3, 4, 5]])  # what the model says, end symbol included
    model.forward = lambda inputs: torch.nn.functional.one_hot(answer[: len(inputs)], 11).float()
    assert model.predict_symbols([[1, 2], [3, 4, 5, 6, 7]]) == [[7, 3], [1, 2, 3, 4, 5]]


def input_ignoring_baseline(cfg) -> float:
    """Test token accuracy of the best predictor that ignores its input: the most common training
    target at each position, scored on the test pairs exactly as the models are."""
    from hydra.utils import instantiate
    data = instantiate(cfg.data)
    data.prepare()
    train_targets, test_targets = data.train[1], data.test[1]
    n_classes = data.n_features + int(data.padded)
    guess = torch.nn.functional.one_hot(train_targets, n_classes).sum(0).argmax(-1)  # (T,)
    scores = SequenceScores(data.timesteps)
    correct = guess.expand_as(test_targets) == test_targets
    scored = scored_positions(test_targets, data.n_features) if data.padded else None
    scores.update(correct, torch.zeros(()), scored)
    return scores.compute()["acc"].item()


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_a_short_run_learns_each_task_well_above_an_input_ignoring_predictor(tmp_path, task):
    cfg = compose_config("model=attention", f"data.task={task}", "data.timesteps=6", "data.min_timesteps=4",
                         "trainer.max_epochs=15", output_dir=tmp_path)
    baseline = input_ignoring_baseline(cfg)
    results = train(cfg)
    assert results["task"] == task and results["status"] == "ok"
    print(f"{task}: test_acc {results['test_acc']:.3f}, input-ignoring baseline {baseline:.3f}")
    assert results["test_acc"] >= baseline + 0.3, (results["test_acc"], baseline)  # measured: +0.6 to +0.8


def test_a_sweep_over_tasks_reports_one_table_per_task(tmp_path, seqrev_train):
    sweep = tmp_path / "sweep"
    done = seqrev_train("-m", "model=both_outputs", "data.task=reverse,sort", "model.cell=lstm,gru",
                        "trainer.max_epochs=1", "data.n_train=200", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-2000:]
    results = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    assert sorted((r["task"], r["cell"]) for r in results) == [("reverse", "gru"), ("reverse", "lstm"),
                                                               ("sort", "gru"), ("sort", "lstm")]
    text = (sweep / "report.md").read_text()  # the sweep writes its report as it ends
    for heading in ("# data.task=reverse, model.cell=lstm", "# data.task=reverse, model.cell=gru",
                    "# data.task=sort, model.cell=lstm", "# data.task=sort, model.cell=gru"):
        assert heading in text
    assert text.index("data.task=reverse, model.cell=lstm") < text.index("data.task=sort, model.cell=gru")


def test_a_task_of_your_own_is_found_by_its_dotted_path_and_trains(tmp_path, monkeypatch):
    from seqrev.data import SequenceData
    from seqrev.errors import ConfigError
    from seqrev.tasks import find_task

    from conftest import ROOT

    with pytest.raises(ConfigError, match="cannot be imported"):
        find_task("no_such_module.rotate")
    monkeypatch.syspath_prepend(str(ROOT / "docs" / "own_experiment"))  # as `cd docs/own_experiment` does
    assert find_task("my_tasks.rotate").name == "my_tasks.rotate"
    assert targets_for("my_tasks.rotate", torch.tensor([[3, 2, 9, 1], [4, 5, PAD, PAD]]), torch.tensor([4, 2]),
                       PAD).tolist() == [[2, 9, 1, 3], [5, 4, PAD, PAD]]
    data = SequenceData(n_train=50, n_test=10, task="my_tasks.rotate")
    data.setup("fit")
    inputs, targets = data.train
    assert targets.tolist() == inputs.argmax(-1).roll(-1, dims=1).tolist()  # the data module uses it

    cfg = compose_config("data.task=my_tasks.rotate", "data.n_train=200", "data.n_test=20", "trainer.max_epochs=1",
                         output_dir=tmp_path)
    results = train(cfg)
    assert results["task"] == "my_tasks.rotate" and results["config"]["data"]["task"] == "my_tasks.rotate"
    with pytest.raises(ConfigError, match="choose one of reverse, copy, sort.*dotted path"):
        train(compose_config("data.task=rotate", output_dir=tmp_path / "other"))

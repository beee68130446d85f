"""What each wiring's outputs depend on: the tutorial's diagrams as tests, milliseconds each.

Every wiring the project has must be declared below, so a new one is checked from its first commit.
"""

import pytest
import torch

from seqrev.models import WIRINGS

# same: one vector emitted at every position; final: layer 2 (or the output) reads layer 1's final
# state; earlier: it reads layer 1's hidden states before the last; causal: output i reads inputs 1..i only.
DATAFLOW = {
    "single_default": dict(same=True, final=False, earlier=False, causal=False),
    "stacked_default": dict(same=True, final=False, earlier=False, causal=False),
    "return_sequences": dict(same=False, final=False, earlier=True, causal=True),
    "return_state": dict(same=False, final=True, earlier=False, causal=False),
    "both_outputs": dict(same=False, final=True, earlier=True, causal=False),
}
DECODERS = ("encoder_decoder", "attention")
CELLS = ("lstm", "gru", "rnn")
T = 6


def build(name: str, cell: str = "lstm"):
    torch.manual_seed(0)
    return WIRINGS[name](n_features=10, timesteps=T, cell=cell).eval()


def inputs(n: int = 8) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.nn.functional.one_hot(torch.randint(0, 10, (n, T), generator=generator), 10).float()


def with_layer1_output_changed(model, change) -> torch.Tensor:
    """The model's logits when layer 1's output (all_h, final) is replaced by change(all_h, final)."""
    handle = model.layer1.register_forward_hook(lambda module, args, output: change(*output))
    try:
        with torch.no_grad():
            return model(inputs())
    finally:
        handle.remove()


def test_every_wiring_is_declared():
    assert set(WIRINGS) == set(DATAFLOW) | set(DECODERS)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("name", DATAFLOW)
def test_same_vector_at_every_position_only_where_repeated(name, cell):
    with torch.no_grad():
        logits = build(name, cell)(inputs())
    same = all(torch.equal(logits[:, t], logits[:, 0]) for t in range(T))
    assert same == DATAFLOW[name]["same"]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("name", DATAFLOW)
def test_layer_1s_earlier_hidden_states_matter_only_where_read(name, cell):
    model = build(name, cell)
    with torch.no_grad():
        before = model(inputs())

    def shift_all_but_last(all_h, final):  # the last step's state and the final state stay as they were
        changed = all_h.clone()
        changed[:, :-1] += 0.5
        return changed, final

    after = with_layer1_output_changed(model, shift_all_but_last)
    assert (not torch.equal(before, after)) == DATAFLOW[name]["earlier"]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("name", DATAFLOW)
def test_layer_1s_final_state_matters_only_where_passed(name, cell):
    model = build(name, cell)
    with torch.no_grad():
        before = model(inputs())

    def shift_final(all_h, final):  # (h, c) for an LSTM, h for the others; the per-step outputs stay
        return all_h, tuple(part + 0.5 for part in final) if isinstance(final, tuple) else final + 0.5

    after = with_layer1_output_changed(model, shift_final)
    assert (not torch.equal(before, after)) == DATAFLOW[name]["final"]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("name", DATAFLOW)
def test_which_inputs_each_output_position_reads(name, cell):
    model = build(name, cell)
    x = inputs()
    with torch.no_grad():
        before = model(x)
        for t in range(T):
            changed = x.clone()
            changed[:, t] = changed[:, t].roll(1, dims=-1)  # another symbol at step t only
            after = model(changed)
            earlier_unchanged = torch.equal(before[:, :t], after[:, :t])
            assert not torch.equal(before[:, t:], after[:, t:]), f"step {t} changed no later output"
            if DATAFLOW[name]["causal"]:
                assert earlier_unchanged, f"an output before step {t} read input step {t}"
            elif t == T - 1:
                assert not earlier_unchanged, "the first outputs should read the last input"


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("name", DECODERS)
def test_teacher_forced_and_greedy_decoding_agree_when_the_greedy_predictions_are_right(name, cell):
    model = build(name, cell)
    x = inputs()
    with torch.no_grad():
        greedy = model(x)
        predictions = greedy.argmax(-1)
        forced = model.training_forward(x, predictions)  # fed its own predictions: the same path
        assert torch.allclose(forced, greedy, atol=1e-6)
        other = (predictions + 1) % 10  # fed other tokens: the first step is the same, later ones not
        forced_other = model.training_forward(x, other)
        assert torch.allclose(forced_other[:, 0], greedy[:, 0], atol=1e-6)
        assert not torch.allclose(forced_other[:, 1:], greedy[:, 1:], atol=1e-3)

import pytest
import torch

from seqrev.layers import recurrent_layer
from seqrev.models import WIRINGS

STATE_PASSING = {"return_state", "both_outputs"}


def build(name: str, timesteps: int = 4, units: int = 16, **kwargs):
    torch.manual_seed(0)
    return WIRINGS[name](n_features=10, timesteps=timesteps, units=units, **kwargs)


@pytest.mark.parametrize("timesteps,units", [(1, 3), (4, 16), (9, 32)])
def test_output_shape(model_name, timesteps, units):
    model = build(model_name, timesteps, units)
    logits = model(torch.randn(5, timesteps, 10))
    assert logits.shape == (5, timesteps, 10)


@pytest.mark.parametrize("name", sorted(WIRINGS))
def test_every_wiring_has_its_declared_parameter_count_shapes_and_gradients_everywhere(name):
    """For every wiring the project has (and any it gains): the count declared beside the class,
    (B, T, F) logits, and a gradient reaching every trainable parameter."""
    model = build(name)
    assert model.keras_parameters is not None, f"{name}: declare keras_parameters beside the class"
    assert model.trainable_params == model.keras_parameters
    x = torch.nn.functional.one_hot(torch.randint(0, 10, (6, 4)), 10).float()
    targets = x.argmax(-1).flip(1)
    assert model(x).shape == (6, 4, 10)
    model.loss(model.training_forward(x, targets), targets).backward()
    for parameter_name, parameter in model.named_parameters():
        if parameter.requires_grad:
            reached = parameter.grad is not None and parameter.grad.abs().sum() > 0
            assert reached, f"{name}: no gradient at {parameter_name}"


def perturb_final_state(model, delta: float):
    """Add `delta` to layer 1's final state only ((h, c), or h for GRU/RNN); its per-step outputs stay."""
    def hook(module, args, output):
        all_h, state = output
        if isinstance(state, tuple):
            return all_h, tuple(part + delta for part in state)
        return all_h, state + delta
    return model.layer1.register_forward_hook(hook)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_final_state_reaches_layer_2_only_where_wired(model_name, cell):
    model = build(model_name, cell=cell)
    x = torch.nn.functional.one_hot(torch.randint(0, 10, (8, 4)), 10).float()
    with torch.no_grad():
        before = model(x)
        handle = perturb_final_state(model, 0.5)
        after = model(x)
        handle.remove()
    changed = not torch.allclose(before, after)
    assert changed == (model_name in STATE_PASSING), f"{model_name}: state change changed output: {changed}"


def test_state_passing_equals_layer_2_run_from_that_state():
    """both_outputs by hand: layer 2 run on all of layer 1's states, from layer 1's final (h, c)."""
    model = build("both_outputs")
    x = torch.randn(3, 4, 10)
    with torch.no_grad():
        all_h, final = model.layer1(x)
        from_state, _ = model.layer2(all_h, final)
        from_zeros, _ = model.layer2(all_h)
        expected = model.output_layer(from_state)
        assert torch.allclose(model(x), expected)
        assert not torch.allclose(expected, model.output_layer(from_zeros))


def test_keras_initialisation():
    torch.manual_seed(0)
    layer = recurrent_layer(10, 16, "keras")
    units = 16
    assert torch.all(layer.bias_ih_l0[units:2 * units] == 1)  # forget gate
    bias = layer.bias_ih_l0.detach().clone()
    bias[units:2 * units] = 0
    assert torch.all(bias == 0) and torch.all(layer.bias_hh_l0 == 0)
    assert not layer.bias_hh_l0.requires_grad
    recurrent = layer.weight_hh_l0.detach()  # (4u, u): orthonormal columns
    assert torch.allclose(recurrent.T @ recurrent, torch.eye(units), atol=1e-5)
    limit = (6 / (10 + 4 * units)) ** 0.5  # Glorot-uniform over Keras' (inputs, 4u) kernel
    assert layer.weight_ih_l0.abs().max() <= limit


def test_torch_initialisation_is_pytorchs():
    torch.manual_seed(0)
    layer = recurrent_layer(10, 16, "torch")
    assert not torch.allclose(layer.bias_ih_l0[16:32], torch.ones(16))
    assert layer.weight_ih_l0.abs().max() <= 1 / 16 ** 0.5
    assert torch.all(layer.bias_hh_l0 == 0) and not layer.bias_hh_l0.requires_grad


KERAS_LAYER_PARAMS = {  # (inputs, units) -> trainable parameters of Keras' layer
    "lstm": lambda i, u: 4 * (u * (i + u) + u),
    "gru": lambda i, u: 3 * (u * (i + u) + 2 * u),  # GRU(reset_after=True), Keras' default
    "rnn": lambda i, u: u * (i + u) + u,  # SimpleRNN
}


@pytest.mark.parametrize("units", [16, 32])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_parameter_counts_match_keras_for_every_cell(model_name, cell, units):
    """Keras' formulas at any size; at 16 LSTM units, the tutorial's summaries (1,898 and 4,010)."""
    features = 10
    layer = KERAS_LAYER_PARAMS[cell]
    expected = layer(features, units) + units * features + features
    if model_name != "single_default":
        expected += layer(units, units)
    if (cell, units) == ("lstm", 16):
        assert expected == (1898 if model_name == "single_default" else 4010)
    model = build(model_name, cell=cell, units=units)
    assert model.trainable_params == expected
    assert model(torch.randn(2, 4, 10)).shape == (2, 4, 10)
    assert isinstance(model.layer1, {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell])


def test_frozen_bias_does_not_change_with_training(model_name):
    model = build(model_name)
    optimizer = model.configure_optimizers()
    x = torch.nn.functional.one_hot(torch.randint(0, 10, (16, 4)), 10).float()
    y = x.argmax(-1).flip(1)
    before = model.layer1.weight_ih_l0.detach().clone()
    for _ in range(3):
        optimizer.zero_grad()
        model.loss(model(x), y).backward()
        optimizer.step()
    assert torch.all(model.layer1.bias_hh_l0 == 0)
    assert not torch.equal(before, model.layer1.weight_ih_l0)


def test_optimizer_is_keras_adam():
    optimizer = build("both_outputs").configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    group = optimizer.param_groups[0]
    assert group["lr"] == 1e-3 and group["eps"] == 1e-7
    assert all(p.requires_grad for p in group["params"])

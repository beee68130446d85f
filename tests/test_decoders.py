import pytest
import torch

from seqrev.models import WIRINGS
from seqrev.run import build, train

from conftest import compose_config

DECODERS = ["encoder_decoder", "attention"]


def build_model(name: str, timesteps: int = 6, units: int = 8, **kwargs):
    torch.manual_seed(0)
    return WIRINGS[name](n_features=10, timesteps=timesteps, units=units, **kwargs)


def one_hot_pairs(n: int, timesteps: int):
    symbols = torch.randint(0, 10, (n, timesteps))
    return torch.nn.functional.one_hot(symbols, 10).float(), symbols.flip(1)


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("timesteps", [1, 5, 12])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_shapes(name, timesteps, cell):
    model = build_model(name, timesteps, cell=cell)
    inputs, targets = one_hot_pairs(3, timesteps)
    assert model(inputs).shape == (3, timesteps, 10)
    assert model.training_forward(inputs, targets).shape == (3, timesteps, 10)


@pytest.mark.parametrize("name", DECODERS)
def test_greedy_decoding_never_sees_the_target(name):
    model = build_model(name)
    inputs, targets = one_hot_pairs(5, 6)
    other_targets = (targets + 3) % 10
    predicted, teacher_forced = model.scoring_logits(inputs, targets)
    predicted_again, teacher_forced_other = model.scoring_logits(inputs, other_targets)
    assert torch.equal(predicted, predicted_again)  # what is scored does not depend on the targets
    assert not torch.allclose(teacher_forced, teacher_forced_other)  # the loss is teacher-forced
    assert torch.equal(predicted, model(inputs))


def test_greedy_decoding_feeds_back_its_own_predictions():
    """Step t's input is the argmax of step t-1: decoding by hand, one step at a time, agrees."""
    model = build_model("encoder_decoder")
    inputs, _ = one_hot_pairs(4, 6)
    with torch.no_grad():
        logits = model(inputs)
        predictions = logits.argmax(-1)
        by_hand = model.training_forward(inputs, predictions)  # teacher forcing with its own outputs
    assert torch.allclose(by_hand, logits, atol=1e-5)
    assert model.start_token == 10  # a symbol of its own, beyond the data's 0..9


@pytest.mark.parametrize("attention", ["multiplicative", "additive"])
def test_attention_weights_sum_to_one_over_encoder_steps(attention):
    model = build_model("attention", timesteps=7, attention=attention)
    weights = model.attention_weights(one_hot_pairs(3, 7)[0])
    assert weights.shape == (3, 7, 7)
    assert torch.allclose(weights.sum(-1), torch.ones(3, 7), atol=1e-6)
    assert (weights >= 0).all()


def test_teacher_forcing_only_in_training(tmp_path):
    """Training steps only ever run the decoder teacher-forced (the whole target sequence in one call);
    validation decodes one step at a time for its predictions (its loss is the teacher-forced one)."""
    cfg = compose_config("model=encoder_decoder", "data.timesteps=5", "trainer.max_epochs=1", "data.n_train=100",
                         output_dir=tmp_path)
    datamodule, model, trainer = build(cfg)
    lengths = {"train": set(), "eval": set()}
    model.decoder.register_forward_hook(
        lambda module, args, output: lengths["train" if module.training else "eval"].add(args[0].shape[1]))
    trainer.fit(model, datamodule=datamodule)
    assert lengths["train"] == {5}
    assert 1 in lengths["eval"]


@pytest.mark.slow
def test_attention_learns_reversal_at_8_timesteps_and_attends_to_the_mirror_position(tmp_path):
    cfg = compose_config("model=attention", "data.timesteps=8", "trainer.max_epochs=40",
                         "callbacks.early_stopping.patience=100", output_dir=tmp_path)
    results = train(cfg)
    assert results["test_acc"] >= 0.8, results  # chance is 0.1
    assert (tmp_path / "attention.png").is_file()
    model_cfg = compose_config("model=attention", "data.timesteps=8", output_dir=tmp_path)
    from hydra.utils import instantiate
    model = instantiate(model_cfg.model)
    import glob
    checkpoint = torch.load(glob.glob(str(tmp_path / "checkpoints" / "last.ckpt"))[0], weights_only=True)
    model.load_state_dict(checkpoint["state_dict"])
    weights = model.attention_weights(one_hot_pairs(50, 8)[0])
    # For reversal, output step i needs input step T-1-i: the weight mass sits on the anti-diagonal.
    steps = torch.arange(8)
    distance = (steps.view(1, 8) - (7 - steps).view(8, 1)).abs()  # (output step, input step)
    near_mirror = (weights * (distance <= 1)).sum(-1).mean()
    near_diagonal = (weights * ((steps.view(1, 8) - steps.view(8, 1)).abs() <= 1)).sum(-1).mean()
    assert near_mirror >= 0.6 and near_mirror > 2 * near_diagonal, (near_mirror, near_diagonal)

"""Precision modes and determinism flags: what each one makes the layers compute in."""

import pytest
import torch

from seqrev.config import set_determinism, validate
from seqrev.errors import ConfigError
from seqrev.models import WIRINGS
from seqrev.run import train

from conftest import compose_config


@pytest.mark.parametrize("trainer", ["default", "cpu", "ddp"])
def test_precision_is_settable_on_every_trainer(trainer, tmp_path):
    from hydra.utils import instantiate

    cfg = compose_config(f"trainer={trainer}", "trainer.precision=bf16-mixed", output_dir=tmp_path)
    assert instantiate(cfg.trainer, _convert_="all").precision == "bf16-mixed"  # the Trainer it builds computes in it
    default = compose_config(f"trainer={trainer}", output_dir=tmp_path)
    assert instantiate(default.trainer, _convert_="all").precision == "32-true"


@pytest.mark.parametrize("precision", ["16-mixed", "16-true", "half"])
def test_16_bit_float_is_refused_in_one_sentence(precision, tmp_path):
    with pytest.raises(ConfigError, match="no loss scaling") as refused:
        validate(compose_config("trainer=cpu", f"trainer.precision={precision}", output_dir=tmp_path))
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_under_bf16_autocast_recurrent_layers_compute_in_float32_and_dense_in_bfloat16(cell):
    torch.manual_seed(0)
    model = WIRINGS["both_outputs"](n_features=10, timesteps=4, cell=cell)
    dtypes = {}

    def record(name):
        def hook(module, args, output):
            dtypes[name] = (output[0] if isinstance(output, tuple) else output).dtype
        return hook

    for name in ("layer1", "layer2", "output_layer"):
        getattr(model, name).register_forward_hook(record(name))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randn(3, 4, 10))
    assert dtypes == {"layer1": torch.float32, "layer2": torch.float32, "output_layer": torch.bfloat16}
    assert logits.dtype == torch.bfloat16
    dtypes.clear()
    model(torch.randn(3, 4, 10))  # and without autocast, plain float32 throughout
    assert set(dtypes.values()) == {torch.float32}


def test_bf16_mixed_gives_the_same_numbers_for_any_steps_per_call(tmp_path):
    """Autocast caches low-precision copies of the weights for as long as its context lasts, which is a
    whole Lightning call of up to 64 optimiser steps: stale copies would make the numbers depend on it."""
    runs = [train(compose_config("trainer=cpu", "trainer.precision=bf16-mixed", "trainer.max_epochs=2",
                                 "data.n_train=400", f"data.steps_per_call={n}", output_dir=tmp_path / str(n)))
            for n in (1, 64)]
    for key in ("val_loss", "test_acc", "train_acc", "test_loss"):
        assert runs[0][key] == runs[1][key], key
    fp32 = train(compose_config("trainer=cpu", "trainer.max_epochs=2", "data.n_train=400",
                                output_dir=tmp_path / "fp32"))
    assert fp32["val_loss"] != runs[0]["val_loss"]  # bf16 really was used
    assert fp32["val_loss"] == pytest.approx(runs[0]["val_loss"], rel=0.02)  # and it is close to fp32


def test_deterministic_mode_turns_tf32_and_memory_filling_off():
    try:
        set_determinism(True)
        assert torch.backends.cudnn.allow_tf32 is False
        assert torch.utils.deterministic.fill_uninitialized_memory is False
        set_determinism(False)
        assert torch.backends.cudnn.allow_tf32 is True
        assert torch.utils.deterministic.fill_uninitialized_memory is True
    finally:
        set_determinism(False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bf16_true_is_either_run_or_refused_in_one_sentence(tmp_path):
    cfg = compose_config("trainer=gpu", "trainer.precision=bf16-true", "trainer.max_epochs=1", output_dir=tmp_path)
    try:
        validate(cfg)
    except ConfigError as refused:
        assert "cuDNN" in str(refused) and "\n" not in str(refused)
        return
    results = train(cfg)
    assert results["status"] == "ok" and 0 < results["test_acc"] <= 1

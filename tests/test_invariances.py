"""Promises the README makes about a run's numbers: what they do and do not depend on."""

import pytest
import torch
from hydra.utils import instantiate

from seqrev.run import train

from conftest import compose_config

SMALL = ("data.n_train=400", "data.n_test=100")
SCORES = ("train_acc", "val_acc", "val_loss", "test_acc", "test_seq_acc", "test_loss", "test_acc_per_position",
          "epochs_run", "stopped_early")


@pytest.mark.slow
def test_results_do_not_depend_on_steps_per_call(tmp_path):
    """The manual step's central promise: batches per Lightning call change speed, never numbers."""
    runs = [train(compose_config(*SMALL, "trainer.max_epochs=3", f"data.steps_per_call={n}",
                                 output_dir=tmp_path / str(n))) for n in (1, 5, 64)]
    first = {key: runs[0][key] for key in SCORES}
    for run in runs[1:]:
        assert {key: run[key] for key in SCORES} == first


def test_data_seed_fixes_the_data_alone_and_seed_the_model(tmp_path):
    def data_and_model(*overrides):
        cfg = compose_config(*SMALL, *overrides, output_dir=tmp_path)
        data = instantiate(cfg.data)
        data.prepare()
        torch.manual_seed(cfg.seed)  # as seed_everything does before the model is built
        return data, instantiate(cfg.model)

    data_a, model_a = data_and_model("seed=1", "data.seed=7")
    data_b, model_b = data_and_model("seed=2", "data.seed=7")
    assert all(torch.equal(a, b) for a, b in zip(data_a.train_full + data_a.test, data_b.train_full + data_b.test))
    assert not torch.equal(model_a.layer1.weight_ih_l0, model_b.layer1.weight_ih_l0)
    data_c, _ = data_and_model("seed=2")  # without data.seed the data follows seed
    assert not torch.equal(data_a.train_full[0], data_c.train_full[0])


def scores_of_checkpoint(cfg, path) -> dict:
    """Test-set scores of the weights in a checkpoint file."""
    data, model = instantiate(cfg.data), instantiate(cfg.model)
    data.prepare()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
    return model.evaluate(data._eval_batches(data.test))


def test_early_stopping_fires_and_the_test_uses_the_final_weights(tmp_path):
    # patience 0 and a learning rate at which the validation loss soon rises: it must stop early
    cfg = compose_config(*SMALL, "trainer.max_epochs=40", "callbacks.early_stopping.patience=0",
                         "model.optimizer.lr=0.05", output_dir=tmp_path)
    results = train(cfg)
    assert results["stopped_early"] is True and results["epochs_run"] < 40
    checkpoints = tmp_path / "checkpoints"
    # last.ckpt holds the final epoch (what a resume continues from), best.ckpt an earlier one
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == results["epochs_run"] - 1
    assert torch.load(checkpoints / "best.ckpt", weights_only=True)["epoch"] < results["epochs_run"] - 1
    final = scores_of_checkpoint(cfg, checkpoints / "last.ckpt")
    best = scores_of_checkpoint(cfg, checkpoints / "best.ckpt")
    assert results["test_acc"] == pytest.approx(final["acc"], abs=1e-6)
    assert results["test_loss"] == pytest.approx(final["loss"], abs=1e-6)
    assert best["loss"] != final["loss"]  # so the test above tells final from best weights


def test_a_run_that_uses_its_whole_budget_did_not_stop_early(tmp_path):
    cfg = compose_config(*SMALL, "trainer.max_epochs=3", output_dir=tmp_path)
    results = train(cfg)
    assert results["stopped_early"] is False and results["epochs_run"] == 3
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2


@pytest.mark.parametrize("timesteps", [4, 8, 16])
def test_the_reports_mode_baseline_is_the_expected_score_of_the_most_frequent_symbol(timesteps):
    from seqrev.report import mode_baseline
    generator = torch.Generator().manual_seed(0)
    symbols = torch.randint(0, 10, (200_000, timesteps), generator=generator)
    counts = torch.nn.functional.one_hot(symbols, 10).sum(1)
    expected = 100 * (counts.max(1).values.float() / timesteps).mean().item()
    assert mode_baseline(10, timesteps) == pytest.approx(expected, abs=0.15)  # computed exactly by the report

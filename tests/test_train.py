import json
import math

import pytest
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seqrev.data import SequenceData
from seqrev.models import WIRINGS, Seq2SeqModel
from seqrev.run import train

from conftest import compose_config

RESULT_FIELDS = {"model", "timesteps", "n_features", "units", "seed", "trainable_params", "epochs_run",
                 "stopped_early", "train_acc", "val_acc", "test_acc", "test_seq_acc", "test_acc_per_position",
                 "fit_seconds", "status"}


def test_every_model_option_composes_and_instantiates(model_name, tmp_path):
    cfg = compose_config(f"model={model_name}", "data.timesteps=7", "model.units=5", output_dir=tmp_path)
    model, data = instantiate(cfg.model), instantiate(cfg.data)
    assert isinstance(model, Seq2SeqModel) and isinstance(model, WIRINGS[model_name])
    assert isinstance(data, SequenceData)
    assert (model.timesteps, model.n_features, model.units) == (7, 10, 5)  # sizes follow the data config
    assert data.timesteps == 7


def test_default_config_is_the_tutorials(tmp_path):
    cfg = compose_config(output_dir=tmp_path)
    assert cfg.data.timesteps == 4 and cfg.data.n_features == 10
    assert (cfg.data.n_train, cfg.data.n_test, cfg.data.val_fraction, cfg.data.batch_size) == (2000, 200, 0.1, 32)
    assert cfg.model.units == 16 and cfg.trainer.max_epochs == 100
    assert cfg.model.optimizer.lr == 1e-3 and cfg.model.optimizer.eps == 1e-7
    assert cfg.callbacks.early_stopping.monitor == "val/loss" and cfg.callbacks.early_stopping.patience == 5
    assert cfg.trainer.deterministic is False  # explicit; CPU kernels here are deterministic anyway
    assert compose_config("trainer=gpu", output_dir=tmp_path).trainer.deterministic is True


def test_one_epoch_in_process_writes_results_and_tensorboard(tmp_path, caplog):
    caplog.set_level("INFO", logger="seqrev")
    cfg = compose_config("model=return_state", "trainer.max_epochs=2", "data.n_train=400", output_dir=tmp_path)
    returned = train(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    assert RESULT_FIELDS <= results.keys()
    assert results == returned
    assert results["status"] == "ok" and results["model"] == "return_state"
    assert results["epochs_run"] == 2 and results["trainable_params"] == 4010
    for key in ("train_acc", "val_acc", "test_acc", "test_seq_acc"):
        assert 0 <= results[key] <= 1
    assert len(results["test_acc_per_position"]) == 4
    assert results["test_acc"] == pytest.approx(sum(results["test_acc_per_position"]) / 4)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and (tmp_path / "checkpoints" / "best.ckpt").is_file()

    events = EventAccumulator(str(tmp_path))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/seq_acc", "test/acc", "test/seq_acc",
            "hparams/test_acc"} <= scalars
    assert len(events.Scalars("val/loss")) == 2  # once per epoch

    assert events.Scalars("hparams/test_acc")[-1].value == pytest.approx(results["test_acc"])
    assert events.Scalars("test/acc")[-1].value == pytest.approx(results["test_acc"])
    assert "hp_metric" not in scalars
    assert "examples" in "".join(events.Tags()["tensors"])

    assert "PREDICTION ACCURACY (%):" in caplog.text and "Expected:" in caplog.text


def test_global_step_counts_every_optimiser_step(tmp_path):
    from seqrev.run import build
    cfg = compose_config("trainer.max_epochs=3", "data.n_train=400", "data.steps_per_call=5", output_dir=tmp_path)
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    batches_per_epoch = -(-360 // 32)  # 400 pairs less the 10% validation tail, in batches of 32
    assert trainer.global_step == 3 * batches_per_epoch
    optimizer = model.optimizers().optimizer
    assert all(state["step"] == 3 * batches_per_epoch for state in optimizer.state.values())


def test_hparams_tab_has_the_runs_settings_and_metrics(tmp_path):
    from tensorboard.plugins.hparams import plugin_data_pb2
    cfg = compose_config("model=single_default", "trainer.max_epochs=1", "data.n_train=200", "seed=3",
                         output_dir=tmp_path)
    train(cfg)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = session.session_start_info.hparams
    assert hparams["model"].string_value == "single_default" and hparams["seed"].number_value == 3
    assert hparams["timesteps"].number_value == 4 and hparams["units"].number_value == 16
    assert "_hparams_/experiment" not in content  # TensorBoard works out the columns across the runs it shows


def hparams_columns(logdir) -> tuple[list[str], list[str]]:
    """The HPARAMS tab's hyperparameter and metric columns, in order, as TensorBoard's own backend gives them."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import backend_context

    events = plugin_event_multiplexer.EventMultiplexer()
    events.AddRunsFromDirectory(str(logdir))
    events.Reload()
    provider = data_provider.MultiplexerDataProvider(events, str(logdir))
    backend = backend_context.Context(base_plugin.TBContext(data_provider=provider, multiplexer=events,
                                                            logdir=str(logdir)))
    request = context.RequestContext()
    experiment = backend.experiment_from_metadata(request, "", True, backend.hparams_metadata(request, ""),
                                                  backend.hparams_from_data_provider(request, "", None))
    return [h.name for h in experiment.hparam_infos], [m.name.tag for m in experiment.metric_infos]


def test_hparams_lead_with_what_varies_across_the_runs_shown(tmp_path):
    for units, seed in ((8, 1), (12, 1), (8, 2)):  # units and seed vary; everything else is shared
        train(compose_config("model=single_default", "trainer.max_epochs=1", "data.n_train=200", f"seed={seed}",
                             f"model.units={units}", output_dir=tmp_path / f"u{units}s{seed}"))
    hparams, metrics = hparams_columns(tmp_path)
    assert set(hparams[:4]) == {"units", "model.units", "seed", "data.seed"}  # then the rest, alphabetically
    assert hparams[4:] == sorted(hparams[4:]) and "data.n_train" in hparams[4:]
    assert "hparams/test_acc" in metrics


def test_command_line_run_as_a_user_types_it(tmp_path, seqrev_train):
    run_dir = tmp_path / "run"
    done = seqrev_train("model=both_outputs", "data.timesteps=8", "trainer.max_epochs=2", f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["model"] == "both_outputs" and results["timesteps"] == 8 and results["epochs_run"] == 2
    assert len(results["test_acc_per_position"]) == 8
    assert "PREDICTION ACCURACY (%):" in done.stdout and "Expected:" in done.stdout
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "train.log").is_file()
    assert "PREDICTION ACCURACY" in (run_dir / "train.log").read_text()


@pytest.mark.slow
def test_both_outputs_learns_the_reversal_and_return_sequences_does_not(tmp_path):
    both = train(compose_config("model=both_outputs", output_dir=tmp_path / "both"))
    sequences = train(compose_config("model=return_sequences", output_dir=tmp_path / "seq"))
    assert both["test_acc"] >= 0.95, both  # the tutorial reports 97-99%
    assert sequences["test_acc"] <= 0.75, sequences  # the tutorial: 55%
    assert both["test_acc"] - sequences["test_acc"] >= 0.2
    assert math.isfinite(both["fit_seconds"])


def untrained_val_loss(cfg) -> float:
    """The validation loss of the model `train(cfg)` starts from: same seed, same initial weights."""
    from lightning.pytorch import seed_everything
    seed_everything(cfg.seed, verbose=False)
    data, model = instantiate(cfg.data), instantiate(cfg.model)
    data.prepare()
    return model.evaluate(data.val_dataloader())["loss"]


@pytest.mark.parametrize("cell", ["gru", "rnn"])
@pytest.mark.parametrize("model", sorted(WIRINGS))
def test_other_cells_train_end_to_end(tmp_path, cell, model):
    cfg = compose_config(f"model={model}", f"model.cell={cell}", "trainer.max_epochs=3", "data.n_train=300",
                         output_dir=tmp_path)
    before = untrained_val_loss(cfg)
    results = train(cfg)
    assert results["status"] == "ok" and results["cell"] == cell and results["epochs_run"] == 3
    assert results["val_loss"] < before - 0.005, (results["val_loss"], before)  # 27 optimiser steps lowered it

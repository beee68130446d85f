"""What every wiring shares: loss, optimiser, metrics and the train / validate / test steps.

A wiring subclass only builds its layers and says in `forward` how they connect. Each training
call receives a *group* of batches (see `seqrev.data.BatchGroups`) and takes one optimiser step per
batch, so the framework's per-call cost is paid once per group rather than once per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule
from torch import nn

from seqrev.errors import NonFiniteLossError
from seqrev.layers import Cell, Init, dense_layer, recurrent_layer, trainable_parameters
from seqrev.metrics import SequenceScores
from seqrev.tasks import scored_positions

Batch = tuple[torch.Tensor, torch.Tensor]


def optimizer_step_progress(trainer):
    """Lightning's count of optimiser steps under manual optimisation, which `global_step` reads.

    seqrev steps the optimiser itself (see `Seq2SeqModel.training_step`), so it advances this counter
    by hand. It is a private attribute of Lightning's fit loop: `pyproject.toml` bounds Lightning to
    the versions tested, and tests/test_train.py checks `global_step`, so a move fails loudly.
    """
    return trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress


KERAS_ADAM = {"_target_": "torch.optim.Adam", "lr": 1e-3, "eps": 1e-7}
"""Keras' Adam defaults: lr 1e-3 and epsilon 1e-7 (PyTorch's is 1e-8)."""


def settings_class(target: str, kind: str, bases: tuple[type, ...]) -> type:
    """The class a dotted path names (an optimiser or a schedule); ValueError unless it is one of `bases`."""
    import importlib

    module, _, name = target.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise ValueError(f"{kind} {target!r} cannot be found") from None
    if not (isinstance(found, type) and issubclass(found, bases)):
        raise ValueError(f"{kind} {target!r} is not a {' or '.join(b.__name__ for b in bases)}")
    return found


def plain(settings: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Settings as a plain dict (a Hydra DictConfig in, interpolations resolved), for checkpoints."""
    return None if settings is None else {str(key): settings[key] for key in settings}


@dataclass
class StepOptions:
    """Lightning's training options, applied inside seqrev's own step (Lightning refuses them under manual
    optimisation): gradient clipping as `trainer.gradient_clip_val` / `gradient_clip_algorithm` do, and
    `trainer.accumulate_grad_batches` batches per optimiser step (the last incomplete group of an epoch
    still steps; each loss is divided by N, as Lightning does)."""

    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str = "norm"
    accumulate_grad_batches: int = 1


class Seq2SeqModel(LightningModule):
    """Maps one-hot inputs (B, T, F) to logits (B, T, F); trained with cross-entropy over every token."""

    name: ClassVar[str]
    """The wiring's name (its config file's name); a subclass without one is named after its class."""
    keras_parameters: ClassVar[int | None] = None
    """Trainable parameters at 16 units, 10 symbols, T=4, as Keras counts them (tests check it)."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__

    def __init__(self, n_features: int, timesteps: int, units: int = 16, init: Init = "keras", cell: Cell = "lstm",
                 padded: bool = False, optimizer: Mapping[str, Any] | None = None,
                 scheduler: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        # Every checkpoint carries the constructor's arguments, so `Wiring.load_from_checkpoint(path)`
        # rebuilds the model with no config at hand; optimiser and schedule as plain settings, never objects.
        self.optimizer_settings = plain(optimizer) or dict(KERAS_ADAM)
        self.scheduler_settings = plain(scheduler)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)
        self.hparams.update(optimizer=self.optimizer_settings, scheduler=self.scheduler_settings)
        self.step_options = StepOptions()
        self._accumulated = 0  # batches whose gradients wait for the next optimiser step
        self.n_features, self.timesteps, self.units, self.init, self.cell = n_features, timesteps, units, init, cell
        # With padding, one more symbol in and out: "no symbol here" (see seqrev.tasks).
        self.pad = n_features if padded else None
        self.n_classes = n_features + int(padded)
        self.automatic_optimization = False  # several optimiser steps per call, see module docstring
        self.loss_fn = nn.CrossEntropyLoss()
        self.train_scores, self.val_scores, self.test_scores = (SequenceScores(timesteps) for _ in range(3))
        self.last_scores: dict[str, dict] = {}  # the latest epoch's scores per split, as plain numbers

    # -- layers, for subclasses -------------------------------------------------------------------
    def recurrent(self, input_size: int) -> nn.RNNBase:
        """A recurrent layer of the configured cell (LSTM, GRU or plain RNN)."""
        return recurrent_layer(input_size, self.units, self.init, self.cell)

    def dense(self) -> nn.Linear:
        return dense_layer(self.units, self.n_classes, self.init)

    @property
    def trainable_params(self) -> int:
        return trainable_parameters(self)

    # -- training -----------------------------------------------------------------------------------
    def training_forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The forward pass while training. Decoders override it to see the targets (teacher forcing);
        validation, test and prediction always call `forward`, which never does."""
        return self(inputs)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, scored: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy over every token; for padded tasks the mean over `scored` positions only
        (computed from the targets when not given)."""
        if self.pad is None:
            return self.loss_fn(logits.flatten(0, 1), targets.flatten())
        scored = self.scored(targets) if scored is None else scored
        per_token = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
        return (per_token * scored.flatten()).sum() / scored.sum()

    def scored(self, targets: torch.Tensor) -> torch.Tensor | None:
        """Which target positions count (None: all of them)."""
        return None if self.pad is None else scored_positions(targets, self.pad)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["seqrev_wiring"] = self.name  # which class to rebuild (seqrev.load), by name, never by import

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        settings = dict(self.optimizer_settings)
        optimizer_cls = settings_class(settings.pop("_target_"), "optimizer", (torch.optim.Optimizer,))
        optimizer = optimizer_cls([p for p in self.parameters() if p.requires_grad], **settings)
        if not self.scheduler_settings:
            return optimizer
        settings = dict(self.scheduler_settings)
        schedules = (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        scheduler = settings_class(settings.pop("_target_"), "scheduler", schedules)(optimizer, **settings)
        # Stepped by seqrev once per epoch (see on_train_epoch_end); Lightning keeps its state in checkpoints.
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def training_step(self, batches: list[Batch], batch_idx: int) -> None:
        # The per-batch loop is the hot path, and at these model sizes Lightning's per-batch wrappers
        # (LightningOptimizer.step and its closure) cost 10-20% of a step. So each batch is a backward
        # and a plain optimiser step (fp32 and bf16 need no loss scaling; seqrev.config refuses
        # precisions that do), counted in Lightning's own step tracker so that global_step, max_steps
        # and logging stay right. Scores are folded in once per group, not per batch.
        optimizer = self.optimizers().optimizer
        backward = self._backward_function()
        step_progress = optimizer_step_progress(self.trainer)
        autocast = torch.is_autocast_enabled(self.device.type)
        options = self.step_options
        accumulate, clip = options.accumulate_grad_batches, options.gradient_clip_val
        last_call = batch_idx == self.trainer.num_training_batches - 1
        correct, scored, loss_sum = [], [], 0.0
        for i, (inputs, targets) in enumerate(batches):
            logits = self.training_forward(inputs, targets)
            scored.append(self.scored(targets))
            loss = self.loss(logits, targets, scored[-1])
            if self._accumulated == 0:
                optimizer.zero_grad(set_to_none=True)
            backward(loss / accumulate if accumulate > 1 else loss)
            self._accumulated += 1
            if self._accumulated == accumulate or (last_call and i == len(batches) - 1):  # epoch's end steps too
                if clip is not None:
                    self.clip_gradients(optimizer, clip, options.gradient_clip_algorithm)
                step_progress.increment_ready()
                optimizer.step()
                step_progress.increment_completed()
                self._accumulated = 0
                if autocast:  # autocast keeps low-precision copies of the weights until its context ends,
                    torch.clear_autocast_cache()  # which is this whole call: drop them, the weights changed
            correct.append(logits.detach().argmax(-1) == targets)
            loss_sum = loss_sum + loss.detach() * len(targets)
        self.train_scores.update(torch.cat(correct), loss_sum, None if self.pad is None else torch.cat(scored))

    def _backward_function(self) -> Callable[[torch.Tensor], None]:
        """A plain `loss.backward` on one device; otherwise the strategy's own backward (`manual_backward`),
        which is where a multi-process strategy averages gradients (DDP arms its all-reduce there).
        Called once per group of batches, so every optimiser step of the group is synchronised."""
        from lightning.pytorch.strategies import SingleDeviceStrategy

        if type(self.trainer.strategy) is SingleDeviceStrategy:
            return torch.Tensor.backward
        return self.manual_backward

    def validation_step(self, batches: list[Batch], batch_idx: int) -> None:
        self._score(batches, self.val_scores)

    def test_step(self, batches: list[Batch], batch_idx: int) -> None:
        self._score(batches, self.test_scores)

    def _score(self, batches: list[Batch], scores: SequenceScores) -> None:
        for inputs, targets in batches:
            predicted, for_loss = self.scoring_logits(inputs, targets)
            scored = self.scored(targets)
            scores.update_from_logits(predicted, targets, self.loss(for_loss, targets, scored), scored)

    def scoring_logits(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits that accuracies are scored on (always `forward`: what the model does on its own), and
        logits the validation/test loss is computed on (the training objective's)."""
        logits = self(inputs)
        return logits, logits

    # Scores are read and logged once per epoch: no host sync inside the step loop.
    def on_train_epoch_end(self) -> None:
        self._log_scores("train", self.train_scores)
        # The epoch's learning rate, then the schedule's step (after validation, as Lightning steps an
        # epoch-interval schedule; ReduceLROnPlateau reads this epoch's validation loss).
        self.log("train/learning_rate", self.optimizers().optimizer.param_groups[0]["lr"], on_epoch=True)
        scheduler = self.lr_schedulers()
        if scheduler is None:
            return
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(self.trainer.callback_metrics["val/loss"])
        else:
            scheduler.step()

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val", self.val_scores)

    def on_test_epoch_end(self) -> None:
        self._log_scores("test", self.test_scores, per_position=True)

    def _log_scores(self, split: str, scores: SequenceScores, per_position: bool = False) -> None:
        if not scores.update_called and self.trainer.world_size == 1:
            return  # nothing scored; with several processes every rank joins the sync even with no rows
        values = scores.compute()
        scores.reset()
        if split == "train" and not torch.isfinite(values["loss"]):
            raise NonFiniteLossError(
                f"training diverged at epoch {self.current_epoch}: the loss is {values['loss'].item()}; "
                "try a smaller learning rate (model.optimizer.lr)")
        logged = {f"{split}/{key}": values[key] for key in ("loss", "acc", "seq_acc")}
        if per_position:
            logged.update({f"{split}/acc_position_{i}": v for i, v in enumerate(values["acc_per_position"])})
        # Already summed over every process by torchmetrics; sync_dist only keeps the values identical on all ranks.
        self.log_dict(logged, on_step=False, on_epoch=True, sync_dist=True)
        self.last_scores[split] = {key: value.tolist() for key, value in values.items()}

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode and no gradients for the block, then the mode the model was in before."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    def evaluate(self, batches: Iterable[list[Batch]]) -> dict:
        """Scores on any batches, outside the Trainer (the tutorial's after-training train accuracy)."""
        scores = SequenceScores(self.timesteps).to(self.device)
        with self.evaluating():
            for group in batches:
                self._score(group, scores)
        return {key: value.tolist() for key, value in scores.compute().items()}

    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        """Predicted class indices (B, T)."""
        with self.evaluating():
            return self(inputs.to(self.device)).argmax(-1)

    def encode(self, sequences: list[list[int]]) -> torch.Tensor:
        """Symbol lists as the one-hot inputs (B, T, C) this model reads; ValueError, in one sentence, for
        a symbol out of range or a length it cannot take (fixed-length models take exactly `timesteps`)."""
        rows = []
        for sequence in sequences:
            if not sequence:
                raise ValueError("an empty sequence cannot be predicted: give at least one symbol")
            for symbol in sequence:
                if isinstance(symbol, bool) or not isinstance(symbol, int) or not 0 <= symbol < self.n_features:
                    raise ValueError(f"symbol {symbol!r} in {list(sequence)} is not allowed: this model knows the "
                                     f"symbols 0..{self.n_features - 1}")
            if len(sequence) > self.timesteps or (self.pad is None and len(sequence) != self.timesteps):
                needed = f"exactly {self.timesteps}" if self.pad is None else f"at most {self.timesteps}"
                raise ValueError(f"{list(sequence)} has {len(sequence)} symbols: this model was trained on "
                                 f"sequences of {needed} (timesteps={self.timesteps})")
            rows.append(list(sequence) + [self.pad] * (self.timesteps - len(sequence)))
        return nn.functional.one_hot(torch.tensor(rows), self.n_classes).float()

    def predict_symbols(self, sequences: list[list[int]]) -> list[list[int]]:
        """The model's answer to each sequence, as plain lists of ints (cut at the end symbol, if it pads)."""
        predicted = self.predict(self.encode(sequences)).cpu()
        pad = self.pad
        return [row[: row.index(pad)] if pad is not None and pad in row else row for row in predicted.tolist()]

"""What every wiring shares: loss, optimiser, metrics and the train / validate / test steps.

A wiring subclass only builds its layers and says in `forward` how they connect. By default a wiring is
an ordinary LightningModule (one batch per `training_step`, automatic optimisation); seqrev.engines may
switch it to `grouped` steps: a group of batches per call, one optimiser step per batch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch import nn

from seqrev.errors import diverged
from seqrev.layers import Cell, Init, dense_layer, recurrent_layer, trainable_parameters
from seqrev.metrics import SequenceScores, token_loss
from seqrev.tasks import Batch, scored_positions, until_end

KERAS_ADAM = {"_target_": "torch.optim.Adam", "lr": 1e-3, "eps": 1e-7}
"""Keras' Adam defaults: lr 1e-3 and epsilon 1e-7 (PyTorch's is 1e-8)."""


def settings_class(target: str, kind: str, bases: tuple[type, ...]) -> type:
    """The class a dotted path names (an optimiser or a schedule); ValueError unless it is one of `bases`."""
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


WIRINGS: dict[str, type[Seq2SeqModel]] = {}
"""Every wiring imported in this process, by name: seqrev's own (imported with seqrev.models) and each
subclass of yours, registered by being defined. A config names one by its dotted path (`_target_`)."""


class Seq2SeqModel(LightningModule):
    """Maps one-hot inputs (B, T, F) to logits (B, T, F); trained with cross-entropy over every token."""

    name: ClassVar[str]
    """The wiring's name (its config file's name); a subclass without one is named after its class."""
    tutorial_model: ClassVar[int | None] = None
    """Its number among the tutorial's models 1-5 (the report's order), None for any other wiring."""
    packs: ClassVar[bool] = False
    """Whether `forward` treats every row of a batch on its own with the layers seqrev.packs can stack,
    so that a pack (hydra/launcher=packed) can train several of it as one model."""
    keras_parameters: ClassVar[int | None] = None
    """Trainable parameters at 16 units, 10 symbols, T=4, as Keras counts them (tests check it)."""

    def __init_subclass__(cls, abstract: bool = False, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__
        if not abstract:
            WIRINGS[cls.name] = cls

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
        self.n_features, self.timesteps, self.units, self.init, self.cell = n_features, timesteps, units, init, cell
        # With padding, one more symbol in and out: "no symbol here" (see seqrev.tasks).
        self.pad = n_features if padded else None
        self.n_classes = n_features + int(padded)
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

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, scored: torch.Tensor | None = None,
             members: bool = False) -> torch.Tensor:
        """Cross-entropy over every token; for padded tasks the mean over `scored` positions only
        (computed from the targets when not given). With `members`, one loss per member of a pack."""
        return token_loss(logits, targets, self.scored(targets) if scored is None else scored, members)

    def scored(self, targets: torch.Tensor) -> torch.Tensor | None:
        """Which target positions count (None: all of them)."""
        return None if self.pad is None else scored_positions(targets, self.pad)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["seqrev_wiring"] = self.name  # which class to rebuild (seqrev.load), by name, never by import

    def build_optimizer(self, module: nn.Module | None = None) -> tuple[torch.optim.Optimizer, Any]:
        """This wiring's optimiser and schedule (None without one) over `module`'s trainable weights (its
        own by default; a pack's, which holds several members' weights)."""
        settings = dict(self.optimizer_settings)
        optimizer_cls = settings_class(settings.pop("_target_"), "optimizer", (torch.optim.Optimizer,))
        optimizer = optimizer_cls([p for p in (module or self).parameters() if p.requires_grad], **settings)
        if not self.scheduler_settings:
            return optimizer, None
        settings = dict(self.scheduler_settings)
        schedules = (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        return optimizer, settings_class(settings.pop("_target_"), "scheduler", schedules)(optimizer, **settings)

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        optimizer, scheduler = self.build_optimizer()
        if scheduler is None:
            return optimizer
        # Once per epoch: by Lightning, or by seqrev under grouped steps (on_train_epoch_end), where Lightning
        # leaves the schedule to the module. Lightning keeps its state in checkpoints.
        config = {"scheduler": scheduler, "interval": "epoch"}
        if self.automatic_optimization and isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = "val/loss"
        return {"optimizer": optimizer, "lr_scheduler": config}

    def use_grouped_steps(self) -> None:
        """Take a group of batches per `training_step` and step the optimiser once per batch (see the
        module docstring). Only for runs where nothing acts per batch: `seqrev.engines` decides."""
        self.automatic_optimization = False

    def training_step(self, batch: Batch | list[Batch], batch_idx: int) -> torch.Tensor | None:
        if self.automatic_optimization:  # Lightning's own loop: it runs backward, clipping, accumulation, step
            inputs, targets = batch
            logits = self.training_forward(inputs, targets)
            scored = self.scored(targets)
            loss = self.loss(logits, targets, scored)
            self.train_scores.update(logits.detach().argmax(-1) == targets, loss.detach() * len(targets), scored)
            return loss
        self._train_group(batch)
        return None

    def _train_group(self, batches: list[Batch]) -> None:
        # One plain step per batch through Lightning's public optimiser (it counts global_step); the
        # backward is the strategy's own only when it does something (DDP averages gradients there).
        # Scores are folded in once per group, not per batch.
        optimizer = self.optimizers()
        backward = self._backward_function()
        autocast = torch.is_autocast_enabled(self.device.type)
        correct, scored, loss_sum = [], [], 0.0
        for inputs, targets in batches:
            logits = self.training_forward(inputs, targets)
            scored.append(self.scored(targets))
            loss = self.loss(logits, targets, scored[-1])
            optimizer.zero_grad(set_to_none=True)
            backward(loss)
            optimizer.step()
            if autocast:  # autocast keeps low-precision copies of the weights until its context ends,
                torch.clear_autocast_cache()  # which is this whole call: drop them, the weights changed
            correct.append(logits.detach().argmax(-1) == targets)
            loss_sum = loss_sum + loss.detach() * len(targets)
        self.train_scores.update(torch.cat(correct), loss_sum, None if self.pad is None else torch.cat(scored))

    def _backward_function(self) -> Callable[[torch.Tensor], None]:
        """A plain `loss.backward` on one device; otherwise the strategy's own backward (`manual_backward`),
        which is where a multi-process strategy averages gradients (DDP arms its all-reduce there)."""
        if type(self.trainer.strategy) is SingleDeviceStrategy:
            return torch.Tensor.backward
        return self.manual_backward

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._score(batch, self.val_scores)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._score(batch, self.test_scores)

    def _score(self, batch: Batch, scores: SequenceScores) -> None:
        inputs, targets = batch
        predicted, for_loss = self.scoring_logits(inputs, targets)
        scored = self.scored(targets)
        scores.update_from_logits(predicted, targets, self.loss(for_loss, targets, scored), scored)

    def scoring_logits(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits that accuracies are scored on (always `forward`: what the model does on its own), and
        logits the validation/test loss is computed on (the training objective's)."""
        logits = self(inputs)
        return logits, logits

    def on_train_epoch_start(self) -> None:
        # The rate this epoch trains with (Lightning steps an epoch schedule before the epoch's end hooks).
        self.log("train/learning_rate", self.optimizers().optimizer.param_groups[0]["lr"], on_epoch=True)

    # Scores are read and logged once per epoch: no host sync inside the step loop.
    def on_train_epoch_end(self) -> None:
        self._log_scores("train", self.train_scores)
        # Under grouped steps, the schedule's step (after validation, as Lightning steps an epoch-interval
        # schedule; ReduceLROnPlateau reads this epoch's validation loss).
        scheduler = self.lr_schedulers()
        if scheduler is None or self.automatic_optimization:  # Lightning steps it itself
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
            raise diverged(self.current_epoch, values["loss"].item())
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

    def evaluate(self, batches: Iterable[Batch]) -> dict:
        """Scores on any batches, outside the Trainer (the tutorial's after-training train accuracy)."""
        scores = SequenceScores(self.timesteps).to(self.device)
        with self.evaluating():
            for batch in batches:
                self._score(batch, scores)
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
        return [until_end(row, self.pad) for row in predicted.tolist()]

"""Training a pack: K jobs of one cell that differ only in their seeds, as one batched model.

Each member is the experiment its own job would be. Its weights start as `seed=s` starts them (its own
model is built under its own seed, then the weights are stacked: seqrev.packed_layers), its batches
are its own data module's, in its own shuffled order; its loss is its own mean, so the summed loss
gives each member its own gradient, and an element-wise optimiser steps each member as it would alone.
At the end of every epoch each member is validated, early-stopped, checkpointed and logged on its own,
in the order Lightning does it for an ordinary run (train scores, schedule, early stopping, best.ckpt,
last.ckpt). A member that stops (or diverges, or fails) leaves the pack; the others go on.

The recipe is `PackRun`: `setup` (members' models, data, loggers, state to resume), `train` (epochs),
`cleanup` (trackers closed); each finished member is scored and published like an ordinary run.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from seqrev import trackers
from seqrev.errors import NonFiniteLossError, describe_error
from seqrev.models.base import settings_class
from seqrev.packed_layers import (
    choose_layout,
    join_like,
    member_state_dict,
    member_state_dicts,
    pack_models,
    repack,
    rows_in,
    rows_out,
    split_like,
)
from seqrev.results import RunIdentity, RunResults, write_results
from seqrev.rundir import PACK_STATE, last_checkpoint, load_checkpoint

log = logging.getLogger("seqrev")


@dataclass
class Member:
    """One job of a pack: its resolved config, its folder and, once set up, its own model and data."""

    cfg: DictConfig
    model_name: str
    about: RunIdentity
    resume_from: Path | None = None
    model: Any = None  # its own wiring: the weights it starts from and, when it leaves the pack, ends with
    data: Any = None
    loggers: dict[str, Any] = field(default_factory=dict)
    log_file: logging.Handler | None = None
    epochs: int = 0  # epochs trained
    global_step: int = 0
    wait: int = 0  # early stopping: epochs without improvement
    best: float | None = None  # early stopping's best monitored value
    best_checkpoint: float | None = None  # best.ckpt's monitored value
    stopped_epoch: int = 0
    scores: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # the epoch's, per split
    results: RunResults | None = None
    checkpoint: dict[str, Any] | None = None  # the one resumed from, until the pack's optimiser has its state
    callbacks: dict[str, dict[str, Any]] = field(default_factory=dict)  # its callbacks' settings, resolved once

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.paths.output_dir)

    def say(self, message: str, level: int = logging.INFO) -> None:
        """A line in this member's own train.log only."""
        if self.log_file is not None:
            self.log_file.handle(logging.LogRecord("seqrev", level, __file__, 0, message, None, None))


def epoch_scores(logits: torch.Tensor, targets: torch.Tensor, pad: int | None) -> dict[str, torch.Tensor]:
    """Per member (K,): mean loss, token and sequence accuracy, per-position accuracy (K, T), from logits
    (K, N, T, C) and targets (K, N, T); as seqrev.metrics counts them (padding: scored positions only)."""
    K, N, T, C = logits.shape
    per_token = nn.functional.cross_entropy(logits.reshape(-1, C), targets.reshape(-1), reduction="none")
    per_token = per_token.view(K, N, T)
    correct = logits.argmax(-1) == targets
    if pad is None:
        return {"loss": per_token.mean((1, 2)), "acc": correct.float().mean((1, 2)),
                "seq_acc": correct.all(2).float().mean(1), "acc_per_position": correct.float().mean(1)}
    from seqrev.tasks import scored_positions

    scored = scored_positions(targets.reshape(K * N, T), pad).view(K, N, T)
    return {"loss": (per_token * scored).sum((1, 2)) / scored.sum((1, 2)),
            "acc": (correct & scored).sum((1, 2)) / scored.sum((1, 2)),
            "seq_acc": (correct | ~scored).all(2).float().mean(1),
            "acc_per_position": (correct & scored).sum(1) / scored.sum(1).clamp(min=1)}


def member_losses(logits: torch.Tensor, targets: torch.Tensor, pad: int | None) -> torch.Tensor:
    """Each member's training loss (K,), as its own model's `loss` computes it on its batch."""
    K, B, T, C = logits.shape
    per_token = nn.functional.cross_entropy(logits.reshape(-1, C), targets.reshape(-1), reduction="none").view(K, -1)
    if pad is None:
        return per_token.mean(1)
    from seqrev.tasks import scored_positions

    scored = scored_positions(targets.reshape(K * B, T), pad).view(K, -1)
    return (per_token * scored).sum(1) / scored.sum(1)


class PackRun:
    """Trains `members` (all at the same epoch) together; each leaves with its results.json written."""

    def __init__(self, members: list[Member]) -> None:
        self.members = members
        self.active: list[Member] = []
        self.started = 0.0
        self.isolated = False  # stacked for good, once a member's numbers were not finite in the wide layout
        self.writer = CheckpointWriter()
        self._unstacked_at: tuple[int, int] | None = None  # (step, members) the split below was taken at

    # -- setup ----------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Each member's model (under its own seed), data and loggers; then the pack, optimiser and schedule."""
        from hydra.utils import instantiate
        from lightning.pytorch import seed_everything

        from seqrev.config import validate
        from seqrev.console import quiet_lightning

        quiet_lightning()
        first = self.members[0].cfg
        torch.set_num_threads(first.threads)
        accelerator = str(first.trainer.accelerator)
        self.device = torch.device("cuda" if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
                                   else "cpu")
        for member in self.members:
            try:
                validate(member.cfg)
                seed_everything(member.cfg.seed, workers=False, verbose=False)
                callbacks = member.cfg.get("callbacks")
                member.callbacks = OmegaConf.to_container(callbacks, resolve=True) if callbacks else {}
                member.data = instantiate(member.cfg.data)
                member.data.prepare()
                member.model = instantiate(member.cfg.model)
                if member.resume_from is not None:
                    self._restore(member, member.checkpoint or load_checkpoint(last_checkpoint(member.resume_from)))
                member.loggers = trackers.make_loggers(member.cfg, member.run_dir, member.resume_from is not None)
                trackers.record_ids(member.loggers, member.run_dir)
                if member.resume_from is None:
                    trackers.log_settings(list(member.loggers.values()), member.about)
            except Exception as error:  # noqa: BLE001 - a member that cannot start fails alone
                self._fail(member, error)
                continue
            self.active.append(member)
            about, stopper = member.about, member.callbacks.get("early_stopping")
            member.say(f"{about['model']}: {member.model.trainable_params:,} trainable parameters, "
                       f"T={about['timesteps']}, {about['n_features']} features, {about['units']} units, "
                       f"seed {about['seed']}, trained in a pack of {len(self.members)} (hydra/launcher=packed)")
            member.say(f"training for up to {member.cfg.trainer.max_epochs} epochs"
                       + (f" with EarlyStopping(monitor={stopper['monitor']}, patience={stopper['patience']})"
                          if stopper is not None else "")
                       + (f", resuming from {member.resume_from}" if member.resume_from else "") + " ...")
        if not self.active:
            return
        models = [member.model for member in self.active]
        self.layout = choose_layout(len(models), int(first.model.units))
        self.packed = pack_models(models, self.layout).to(self.device).train()
        self.optimizer, self.scheduler = self._optimizer(self.packed, self.active[0].model)
        if self.active[0].resume_from is not None:
            self._restore_optimizer()
        self.data = {split: self._stack(split) for split in ("train", "val")}
        self.batch_size = int(first.data.batch_size)
        self.pad = self.active[0].model.pad

    def _stack(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One split of every active member's data: inputs (K, N, T, C), targets (K, N, T), on the pack's device."""
        return tuple(torch.stack([getattr(member.data, split)[i] for member in self.active]).to(self.device)
                     for i in (0, 1))

    def _optimizer(self, packed: nn.Module, model) -> tuple[torch.optim.Optimizer, Any]:
        settings = dict(model.optimizer_settings)
        optimizer_cls = settings_class(settings.pop("_target_"), "optimizer", (torch.optim.Optimizer,))
        optimizer = optimizer_cls([p for p in packed.parameters() if p.requires_grad], **settings)
        if not model.scheduler_settings:
            return optimizer, None
        settings = dict(model.scheduler_settings)
        scheduler_cls = settings_class(settings.pop("_target_"), "scheduler", (torch.optim.lr_scheduler.LRScheduler,))
        return optimizer, scheduler_cls(optimizer, **settings)

    def _restore(self, member: Member, checkpoint: dict[str, Any]) -> None:
        state = checkpoint[PACK_STATE]
        member.model.load_state_dict(checkpoint["state_dict"])
        member.data.load_state_dict(checkpoint["ReversedSequenceData"])
        member.epochs, member.global_step = int(checkpoint["epoch"]) + 1, int(checkpoint["global_step"])
        member.wait, member.best, member.best_checkpoint = state["wait"], state["best"], state["best_checkpoint"]
        member.checkpoint = checkpoint
        member.say(f"resuming from epoch {member.epochs}: {last_checkpoint(member.run_dir)}")

    def _restore_optimizer(self) -> None:
        """The members' optimiser states, stacked; the schedule's (the same for every member)."""
        states = [member.checkpoint["optimizer_states"][0] for member in self.active]
        params = self.optimizer.param_groups[0]["params"]
        stacked = {index: {key: join_like(self.packed, params[index], [s["state"][index][key] for s in states])
                           if torch.is_tensor(value) and value.dim() > 0 else value
                           for key, value in entry.items()}
                   for index, entry in states[0]["state"].items()}
        self.optimizer.load_state_dict({"state": stacked, "param_groups": states[0]["param_groups"]})
        if self.scheduler is not None:
            self.scheduler.load_state_dict(self.active[0].checkpoint["lr_schedulers"][0])
        for member in self.active:
            member.checkpoint = None

    # -- train ----------------------------------------------------------------------------------------
    def train(self) -> None:
        """Epochs until every member has stopped (early stopping, max_epochs, divergence)."""
        self.started = time.perf_counter()
        self.max_epochs = max_epochs = int(self.members[0].cfg.trainer.max_epochs)
        self.every = every = self._log_every()
        while self.active:
            epoch = self.active[0].epochs
            if epoch >= max_epochs:
                self._leave(list(self.active))
                break
            learning_rate = self.optimizer.param_groups[0]["lr"]
            self._train_epoch()
            self._validate()
            finished = self._end_epoch(epoch, learning_rate)
            if every and ((epoch + 1) % every == 0 or finished):
                losses = [m.scores["val"]["loss"] for m in self.active]
                log.info(f"pack of {len(self.members)} ({self.active[0].about['model']}): epoch {epoch + 1}/"
                         f"{max_epochs}, {len(self.active) - len(finished)} training, val/loss "
                         f"{min(losses):.4f}..{max(losses):.4f}")
            self._leave(finished)

    def _log_every(self) -> int:
        settings = self.active[0].callbacks.get("epoch_log") if self.active else None
        return int(settings.get("every_n_epochs", 10)) if settings is not None else 0

    def _train_epoch(self) -> None:
        """One epoch: every member's batches in its own shuffled order, one optimiser step per batch."""
        inputs, targets = self.data["train"]
        K, N = targets.shape[:2]
        order = torch.stack([torch.randperm(N, generator=m.data.shuffle_generator) for m in self.active])
        order = order.to(self.device)
        inputs = inputs.gather(1, order[:, :, None, None].expand_as(inputs))
        targets = targets.gather(1, order[:, :, None].expand_as(targets))
        loss_sum = torch.zeros(K, device=self.device)
        correct = []
        for start in range(0, N, self.batch_size):
            x, y = inputs[:, start:start + self.batch_size], targets[:, start:start + self.batch_size]
            while True:
                logits = rows_out(self.packed(rows_in(x, self.layout)), K, self.layout)
                losses = member_losses(logits, y, self.pad)
                self.optimizer.zero_grad(set_to_none=True)
                if self.layout == "wide" and not bool(torch.isfinite(losses).all()):
                    self._isolate()
                    continue
                losses.sum().backward()  # each member's loss reaches only its own weights
                if self.layout == "wide" and not self._gradients_finite():
                    self._isolate()
                    continue
                break
            self.optimizer.step()
            loss_sum += losses.detach() * y.shape[1]
            correct.append(logits.detach().argmax(-1) == y)
        correct = torch.cat(correct, 1)
        for member in self.active:
            member.global_step += math.ceil(N / self.batch_size)
        self._train_correct, self._train_loss = correct, loss_sum / N
        self._train_targets = targets

    def _validate(self) -> None:
        """The epoch's scores per member: validation's, and the training batches' (counted as they trained)."""
        inputs, targets = self.data["val"]
        K, N = targets.shape[:2]
        self.packed.eval()
        with torch.no_grad():
            logits = rows_out(self.packed(rows_in(inputs, self.layout)), K, self.layout)
            if self.layout == "wide" and not bool(torch.isfinite(logits).all()):
                self._isolate()
                logits = rows_out(self.packed(rows_in(inputs, self.layout)), K, self.layout)
        self.packed.train()
        val = epoch_scores(logits, targets, self.pad)
        correct, train_targets = self._train_correct, self._train_targets
        if self.pad is None:
            train = {"acc": correct.float().mean((1, 2)), "seq_acc": correct.all(2).float().mean(1)}
        else:
            from seqrev.tasks import scored_positions

            scored = scored_positions(train_targets.reshape(-1, train_targets.shape[2]), self.pad).view(correct.shape)
            train = {"acc": (correct & scored).sum((1, 2)) / scored.sum((1, 2)),
                     "seq_acc": (correct | ~scored).all(2).float().mean(1)}
        train["loss"] = self._train_loss
        for k, member in enumerate(self.active):
            member.scores = {"train": {key: value[k].cpu() for key, value in train.items()},
                             "val": {key: value[k].cpu() for key, value in val.items()}}

    def _end_epoch(self, epoch: int, learning_rate: float) -> list[Member]:
        """Each member's end of epoch, in Lightning's order; the members that leave the pack now."""
        if self.scheduler is not None:
            self.scheduler.step()
        finished = []
        for member, error in self.writer.flush():  # last epoch's checkpoints: a member whose could not be written
            if member in self.active and member.results is None:  # fails, as its own job would
                self._fail(member, error)
                finished.append(member)
        for k, member in enumerate(self.active):
            if member in finished:
                continue
            member.epochs = epoch + 1
            train = member.scores["train"]
            metrics = {f"{split}/{key}": float(member.scores[split][key]) for split in ("val", "train")
                       for key in ("loss", "acc", "seq_acc")}
            metrics.update({"train/learning_rate": learning_rate, "epoch": epoch})
            for logger in member.loggers.values():
                logger.log_metrics(metrics, step=epoch)
            if not torch.isfinite(train["loss"]):
                self._fail(member, NonFiniteLossError(
                    f"training diverged at epoch {epoch}: the loss is {train['loss'].item()}; "
                    "try a smaller learning rate (model.optimizer.lr)"))
                finished.append(member)
                continue
            if self.every and member.epochs % self.every == 0:
                member.say(f"epoch {member.epochs}/{self.max_epochs}: " + ", ".join(
                    f"{key} {metrics[key]:.4f}" for key in ("train/loss", "train/acc", "val/loss", "val/acc")))
            stop = self._early_stopping(member, metrics)
            self._checkpoint(member, k, metrics)
            if stop:
                member.stopped_epoch = epoch
                finished.append(member)
        return finished

    def _early_stopping(self, member: Member, metrics: dict[str, float]) -> bool:
        """Lightning's EarlyStopping criteria (seqrev.packing says which settings packs honour)."""
        settings = member.callbacks.get("early_stopping")
        if settings is None:
            return False
        current = torch.tensor(metrics[settings["monitor"]])  # float32, as Lightning compares it
        mode = settings.get("mode", "min")
        better = torch.lt if mode == "min" else torch.gt
        min_delta = abs(settings.get("min_delta") or 0.0) * (-1 if mode == "min" else 1)
        best = torch.tensor(member.best if member.best is not None else (math.inf if mode == "min" else -math.inf))
        threshold, divergence = settings.get("stopping_threshold"), settings.get("divergence_threshold")
        if settings.get("check_finite") is not False and not torch.isfinite(current):
            return True
        if threshold is not None and better(current, threshold):
            return True
        if divergence is not None and better(-current, -divergence):
            return True
        if better(current - min_delta, best):
            member.best, member.wait = float(current), 0
            return False
        member.wait += 1
        return member.wait >= settings.get("patience", 3)

    def _checkpoint(self, member: Member, k: int, metrics: dict[str, float]) -> None:
        """best.ckpt when the monitored value improved (as ModelCheckpoint's save_top_k=1), then last.ckpt."""
        best, last = member.callbacks.get("model_checkpoint"), member.callbacks.get("last_checkpoint")
        improved = False
        if best is not None:
            mode = best.get("mode", "min")
            value = torch.tensor(metrics[best["monitor"]])
            value = value if torch.isfinite(value) else torch.tensor(math.inf if mode == "min" else -math.inf)
            better = torch.lt if mode == "min" else torch.gt
            improved = member.best_checkpoint is None or bool(better(value, torch.tensor(member.best_checkpoint)))
            if improved:
                member.best_checkpoint = float(value)
        if not improved and last is None:
            return
        paths = ([Path(best["dirpath"]) / "best.ckpt"] if improved else []) + (
            [Path(last["dirpath"]) / "last.ckpt"] if last is not None else [])
        self.writer.write(member, self._member_checkpoint(member, k), paths)

    def _member_checkpoint(self, member: Member, k: int) -> dict[str, Any]:
        """What a member's own Lightning checkpoint would hold that seqrev reads (seqrev.load, predict,
        the report), its optimiser state unstacked, and its pack state (early stopping, best score)."""
        from lightning.pytorch import __version__ as lightning_version

        weights, optimizer_state = self._unstacked()
        return {"epoch": member.epochs - 1, "global_step": member.global_step,
                "pytorch-lightning_version": lightning_version,
                "state_dict": weights[k], "optimizer_states": [optimizer_state[k]],
                "lr_schedulers": [self.scheduler.state_dict()] if self.scheduler is not None else [],
                "hparams_name": "kwargs", "hyper_parameters": dict(member.model.hparams),
                "ReversedSequenceData": member.data.state_dict(), "seqrev_wiring": member.model.name,
                PACK_STATE: {"wait": member.wait, "best": member.best, "best_checkpoint": member.best_checkpoint,
                             "pack_size": len(self.members)}}

    def _unstacked(self) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, Any]]]:
        """Every member's weights and optimiser state, split once per optimiser step (on the CPU)."""
        step = self.active[0].global_step
        if self._unstacked_at != (step, len(self.active)):
            K = len(self.active)
            weights = [{key: value.cpu() for key, value in state.items()} for state in member_state_dicts(self.packed)]
            optimizer = self.optimizer.state_dict()
            params = self.optimizer.param_groups[0]["params"]
            states: list[dict[int, dict[str, Any]]] = [{} for _ in range(K)]
            for index, entry in optimizer["state"].items():
                shape = params[index].shape
                parts = {key: split_like(self.packed, params[index], value.cpu())
                         for key, value in entry.items() if torch.is_tensor(value) and value.shape == shape}
                for k in range(K):
                    states[k][index] = {key: parts[key][k].clone() if key in parts else value
                                        for key, value in entry.items()}
            self._unstacked_value = (weights, [{"state": state, "param_groups": optimizer["param_groups"]}
                                               for state in states])
            self._unstacked_at = (step, K)
        return self._unstacked_value

    # -- members leaving ------------------------------------------------------------------------------
    def _leave(self, finished: list[Member]) -> None:
        """Score and publish the members that finished; the pack goes on without them."""
        if not finished:
            return
        self.writer.flush()  # a member's checkpoints are on disk before its results.json says it finished
        for member in finished:
            if member.results is None:  # failed members have theirs already
                k = self.active.index(member)
                member.model.load_state_dict(member_state_dict(self.packed, k))
                self._finish(member)
        keep = [k for k, member in enumerate(self.active) if member not in finished]
        self.active = [self.active[k] for k in keep]
        if self.active:
            units = int(self.active[0].cfg.model.units)
            self._repack(keep, "stacked" if self.isolated else choose_layout(len(keep), units))

    def _gradients_finite(self) -> bool:
        """Whether every gradient is finite (one host sync): in the wide layout a member's infinite or NaN
        gradient would spread to the others through the zeros between their blocks (0 * inf is NaN)."""
        grads = [p.grad.sum() for p in self.packed.parameters() if p.grad is not None]
        return bool(torch.isfinite(torch.stack(grads).sum()))

    def _isolate(self) -> None:
        """A member's numbers stopped being finite: from here on the pack is stacked, where each member's
        numbers stay its own (the member then fails at the end of the epoch, as its own job would)."""
        log.info(f"pack of {len(self.members)} ({self.active[0].about['model']}): a member's numbers are not "
                 "finite; the pack goes on in the stacked layout, which keeps them from the other members")
        self.isolated = True
        self._repack(list(range(len(self.active))), "stacked")

    def _repack(self, keep: list[int], layout: str) -> None:
        """The pack, its data and its optimiser's state with only the members `keep`, in `layout`."""
        index = torch.tensor(keep, device=self.device)
        old_optimizer, old_scheduler = self.optimizer, self.scheduler
        states = {old: {key: split_like(self.packed, old, value) if torch.is_tensor(value) and value.shape == old.shape
                        else value for key, value in state.items()} for old, state in old_optimizer.state.items()}
        replaced = repack(self.packed, keep, layout)
        self.layout = layout
        self.optimizer, self.scheduler = self._optimizer(self.packed, self.active[0].model)
        for old, new in replaced.items():
            if old in states:
                self.optimizer.state[new] = {key: join_like(self.packed, new, [value[k] for k in keep])
                                             if isinstance(value, list) else value
                                             for key, value in states[old].items()}
        if old_scheduler is not None:
            self.scheduler.load_state_dict(old_scheduler.state_dict())
        for new_group, old_group in zip(self.optimizer.param_groups, old_optimizer.param_groups):
            new_group.update({key: value for key, value in old_group.items() if key != "params"})
        self.data = {split: tuple(t.index_select(0, index) for t in tensors) for split, tensors in self.data.items()}

    def _finish(self, member: Member) -> None:
        """An ordinary run's ending for one member: test and train scores, results.json, the trackers'
        final metrics, the tutorial's printout."""
        from seqrev.run import publish, test_examples

        model, data = member.model.cpu().eval(), member.data
        test = model.evaluate(data.test_dataloader())
        train = model.evaluate(data.train_full_dataloader())
        val = member.scores["val"]
        step = member.epochs
        test_metrics = {f"test/{key}": test[key] for key in ("loss", "acc", "seq_acc")}
        test_metrics.update({f"test/acc_position_{i}": v for i, v in enumerate(test["acc_per_position"])})
        for logger in member.loggers.values():
            logger.log_metrics({**test_metrics, "epoch": step}, step=step)
        settings = member.callbacks.get("early_stopping")
        results = RunResults(
            **member.about, status="ok", trainable_params=model.trainable_params, epochs_run=member.epochs,
            stopped_early=settings is not None and member.stopped_epoch > 0,
            train_acc=train["acc"], train_seq_acc=train["seq_acc"], val_acc=float(val["acc"]),
            val_loss=float(val["loss"]), test_acc=test["acc"], test_seq_acc=test["seq_acc"],
            test_loss=test["loss"], test_acc_per_position=test["acc_per_position"], extra={},
            fit_seconds=round(time.perf_counter() - self.started, 3), resumed=member.resume_from is not None,
            run_dir=str(member.run_dir))
        with writing_to(member):
            publish(list(member.loggers.values()), step, results, test_examples(model, data, member.cfg.examples))
        member.results = results

    def _fail(self, member: Member, error: BaseException) -> None:
        """results.json with `status: failed` and the cause, as an ordinary job records it."""
        from seqrev.errors import EXPECTED_ERRORS
        from seqrev.run import record_failure

        unrecorded = record_failure(member.cfg, error, member.model_name)
        message = describe_error(error, member.run_dir) + (f"; {unrecorded}" if unrecorded else "")
        with writing_to(member):
            log.error(f"job failed: {message} ({member.run_dir.name})")
        if not isinstance(error, EXPECTED_ERRORS):
            member.say(traceback.format_exc(), logging.ERROR)
        member.results = {"status": "failed"}  # type: ignore[typeddict-item]

    # -- cleanup --------------------------------------------------------------------------------------
    def cleanup(self, error: BaseException | None = None) -> None:
        """Members still training when the pack stopped are failed (or interrupted, their checkpoints
        written first); trackers are closed."""
        from lightning.pytorch.loggers import MLFlowLogger

        for member, failure in self.writer.close():
            if member.results is None:
                self._fail(member, failure)
        for member in self.active:
            if member.results is not None:
                continue
            if isinstance(error, KeyboardInterrupt):
                write_results(member.run_dir, {**member.about, "status": "interrupted", "epochs_run": member.epochs,
                                               "error": "interrupted by the user (SIGINT)",
                                               "run_dir": str(member.run_dir)})
                member.results = {"status": "interrupted"}  # type: ignore[typeddict-item]
            elif error is not None:
                self._fail(member, error)
        for member in self.members:
            failed = (member.results or {}).get("status") != "ok"
            for logger in member.loggers.values():
                if not isinstance(logger, MLFlowLogger):  # trackers.close ends MLflow's run with its status
                    logger.finalize("failed" if failed else "success")  # TensorBoard's hparams.yaml, CSV's rows
            trackers.close(list(member.loggers.values()), failed=failed)
            if member.log_file is not None:
                member.log_file.close()


class CheckpointWriter:
    """Members' checkpoints written by a thread of the pack's own, in order, each atomically (seqrev.atomic):
    the disk's wait (fsync) overlaps the next epoch's training. The checkpoint is serialised by the
    caller, so what is written is the state when it was asked for. `flush` waits for every write asked
    so far and hands back those that failed, with their members."""

    def __init__(self) -> None:
        import queue
        import threading

        self.queue: queue.Queue = queue.Queue()
        self.failed: list[tuple[Member, Exception]] = []
        self.thread = threading.Thread(target=self._run, name="seqrev-checkpoints", daemon=True)
        self.thread.start()

    def write(self, member: Member, checkpoint: dict[str, Any], paths: list[Path]) -> None:
        import io

        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        self.queue.put((member, buffer.getvalue(), paths))

    def _run(self) -> None:
        from seqrev.atomic import atomic_write

        while (item := self.queue.get()) is not None:
            member, data, paths = item
            try:
                for path in paths:
                    atomic_write(path, lambda handle, data=data: handle.write(data))
            except Exception as error:  # noqa: BLE001 - handed to the pack, which fails the member
                self.failed.append((member, error))
            finally:
                self.queue.task_done()
        self.queue.task_done()

    def flush(self) -> list[tuple[Member, Exception]]:
        self.queue.join()
        failed, self.failed = self.failed, []
        return failed

    def close(self) -> list[tuple[Member, Exception]]:
        failed = self.flush()
        self.queue.put(None)
        self.thread.join()
        return failed


@contextmanager
def writing_to(member: Member) -> Iterator[None]:
    """For a block: the root logger also writes to the member's train.log (its printout, its failure)."""
    root = logging.getLogger()
    if member.log_file is not None:
        root.addHandler(member.log_file)
    try:
        yield
    finally:
        if member.log_file is not None:
            root.removeHandler(member.log_file)


def train_pack(members: list[Member]) -> None:
    """Setup, train, cleanup: every member ends with its results.json (ok, failed or interrupted)."""
    run = PackRun(members)
    try:
        run.setup()
        if run.active:
            run.train()
    except BaseException as error:
        run.cleanup(error)
        if isinstance(error, Exception):
            return
        raise
    run.cleanup()

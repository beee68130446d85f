"""Training a pack: K jobs of one cell that differ only in their seeds, as one batched model.

Each member is the experiment its own job would be. Its model is built under its own seed and its
weights stacked (seqrev.packs.layers); its batches are its own data module's, in its own shuffled order;
its loss is its own mean, so the summed loss gives each member its own gradient, and an element-wise
optimiser steps each member as it would alone. At each epoch's end every member is validated,
logged, early-stopped and checkpointed on its own, by its own Lightning callbacks' rules
(seqrev.packs.monitoring), in Lightning's order. A member that stops, diverges or fails leaves the
pack; the others go on. What a member shares with an ordinary run is the run's own code: its console
lines and final scores (seqrev.run), the scores (seqrev.metrics), the optimiser (`build_optimizer`),
the checkpoint layout (seqrev.checkpointing) and its record of a failure (seqrev.lifecycle).

The recipe: `setup` (members, the pack, its optimiser), `train` (epochs), `cleanup` (trackers closed).
"""

from __future__ import annotations

import copy
import logging
import math
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from seqrev import trackers
from seqrev.metrics import SequenceScores
from seqrev.packs.layers import (
    choose_layout,
    join_like,
    member_state_dicts,
    pack_models,
    repack,
    rows_in,
    rows_out,
    split_like,
)
from seqrev.packs.monitoring import checkpoint_path, should_save, should_stop
from seqrev.results import RunIdentity, RunResults
from seqrev.rundir import PACK_STATE, last_checkpoint

log = logging.getLogger("seqrev")


@dataclass
class Member:
    """One job of a pack: its resolved config and folder and, once set up, its own model, data and callbacks."""

    cfg: DictConfig
    model_name: str
    about: RunIdentity
    resume_from: Path | None = None
    checkpoint: dict[str, Any] | None = None  # the one it resumes from, until the pack's optimiser has its state
    log_file: logging.Handler | None = None
    model: Any = None  # its own wiring: the weights it starts from and, when it leaves the pack, ends with
    data: Any = None
    callbacks: dict[str, Any] = field(default_factory=dict)
    loggers: dict[str, Any] = field(default_factory=dict)
    epochs: int = 0  # epochs trained
    global_step: int = 0
    val: dict[str, float] = field(default_factory=dict)  # the latest epoch's validation scores
    results: dict[str, Any] | None = None  # its results.json, once it left: ok, failed or interrupted

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.paths.output_dir)

    def say(self, message: str, level: int = logging.INFO) -> None:
        """A line in this member's own train.log only."""
        if self.log_file is not None:
            self.log_file.handle(logging.LogRecord("seqrev", level, __file__, 0, message, None, None))


class PackRun:
    """Trains `members` (all at the same epoch) together; each leaves with its results.json written."""

    def __init__(self, members: list[Member]) -> None:
        self.members, self.active = members, []
        self.isolated = False  # stacked for good, once a member's numbers were not finite in the wide layout
        self.writes: list[tuple[Member, Future]] = []
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="seqrev-checkpoints")  # disk waits overlap training

    # -- setup ----------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Each member's model (under its own seed), data, callbacks and loggers; the pack and its optimiser."""
        from seqrev.config import device
        from seqrev.console import quiet_lightning

        quiet_lightning()
        first = self.members[0].cfg
        torch.set_num_threads(first.threads)
        self.device = torch.device(device(first.trainer.accelerator))
        self.max_epochs, self.batch_size = int(first.trainer.max_epochs), int(first.data.batch_size)
        for member in self.members:
            try:
                self._setup_member(member)
            except Exception as error:  # noqa: BLE001 - a member that cannot start fails alone
                self._fail(member, error)
                continue
            self.active.append(member)
        if not self.active:
            return
        self.template = self.active[0].model  # the wiring's settings: loss, padding, optimiser
        self.layout = choose_layout(len(self.active), self.template.units)
        self.packed = pack_models([member.model for member in self.active], self.layout).to(self.device).train()
        self.optimizer, self.scheduler = self.template.build_optimizer(self.packed)
        if self.active[0].checkpoint is not None:
            self._restore_optimizer()
        self.data = {split: tuple(torch.stack([getattr(m.data, split)[i] for m in self.active]).to(self.device)
                                  for i in (0, 1)) for split in ("train", "val")}  # (K, N, T, C), (K, N, T)

    def _setup_member(self, member: Member) -> None:
        from hydra.utils import instantiate
        from lightning.pytorch import seed_everything

        from seqrev.config import validate
        from seqrev.run import announce

        cfg = member.cfg
        validate(cfg)
        seed_everything(cfg.seed, workers=False, verbose=False)
        member.data = instantiate(cfg.data)
        member.data.prepare()
        member.model = instantiate(cfg.model)
        member.callbacks = {name: instantiate(settings) for name, settings in (cfg.get("callbacks") or {}).items()}
        if member.checkpoint is not None:
            saved = member.checkpoint
            member.model.load_state_dict(saved["state_dict"])
            member.data.load_state_dict(saved[type(member.data).__qualname__])
            for callback in member.callbacks.values():
                if callback.state_key in saved.get("callbacks", {}):
                    callback.load_state_dict(saved["callbacks"][callback.state_key])
            member.epochs, member.global_step = int(saved["epoch"]) + 1, int(saved["global_step"])
            member.say(f"resuming from epoch {member.epochs}: {last_checkpoint(member.run_dir)}")
        member.loggers = trackers.make_loggers(cfg, member.run_dir, member.resume_from is not None)
        trackers.record_ids(member.loggers, member.run_dir)
        if member.resume_from is None:
            trackers.log_settings(list(member.loggers.values()), member.about)
        announce(member.say, member.about, member.model, self.max_epochs, member.callbacks.get("early_stopping"),
                 member.resume_from, f", trained in a pack of {len(self.members)} (hydra/launcher=packed)")

    def _restore_optimizer(self) -> None:
        """The members' optimiser states, stacked; the schedule's (the same for every member)."""
        states = [member.checkpoint["optimizer_states"][0] for member in self.active]
        params = self.optimizer.param_groups[0]["params"]
        stacked = {index: {key: join_like(self.packed, params[index], [s["state"][index][key] for s in states])
                           if torch.is_tensor(value) and value.dim() > 0 else value for key, value in entry.items()}
                   for index, entry in states[0]["state"].items()}
        self.optimizer.load_state_dict({"state": stacked, "param_groups": states[0]["param_groups"]})
        if self.scheduler is not None:
            self.scheduler.load_state_dict(self.active[0].checkpoint["lr_schedulers"][0])
        for member in self.active:
            member.checkpoint = None

    # -- train ----------------------------------------------------------------------------------------
    def train(self) -> None:
        """Epochs until every member has stopped (early stopping, max_epochs, divergence, a failure)."""
        self.started = time.perf_counter()
        epoch_log = self.active[0].callbacks.get("epoch_log") if self.active else None
        every = epoch_log.every_n_epochs if epoch_log is not None else 0
        while self.active:
            epoch = self.active[0].epochs
            if epoch >= self.max_epochs:
                self._leave(list(self.active))
                break
            learning_rate = self.optimizer.param_groups[0]["lr"]
            train = self._train_epoch()
            val = self._score(*self.data["val"])
            finished = self._end_epoch(epoch, learning_rate, train, val)
            if every and ((epoch + 1) % every == 0 or finished):
                log.info(f"pack of {len(self.members)} ({self.active[0].about['model']}): epoch {epoch + 1}/"
                         f"{self.max_epochs}, {len(self.active) - len(finished)} training, val/loss "
                         f"{val['loss'].min():.4f}..{val['loss'].max():.4f}")
            self._leave(finished)

    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Every member's logits (K, N, T, C) for its inputs (K, N, T, C)."""
        return rows_out(self.packed(rows_in(inputs, self.layout)), len(self.active), self.layout)

    def _train_epoch(self) -> dict[str, torch.Tensor]:
        """One epoch: every member's batches in its own shuffled order, one optimiser step per batch; the
        training scores per member, counted as the batches trained."""
        inputs, targets = self.data["train"]
        K, N, T = targets.shape
        order = torch.stack([torch.randperm(N, generator=m.data.shuffle_generator) for m in self.active])
        order = order.to(self.device)
        inputs = inputs.gather(1, order[:, :, None, None].expand_as(inputs))
        targets = targets.gather(1, order[:, :, None].expand_as(targets))
        scores = SequenceScores(T, members=K).to(self.device)
        for start in range(0, N, self.batch_size):
            x, y = inputs[:, start:start + self.batch_size], targets[:, start:start + self.batch_size]
            scored = self.template.scored(y)
            while True:  # once, unless a member's numbers stop being finite in the wide layout
                logits = self._forward(x)
                losses = self.template.loss(logits, y, scored, members=True)
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
            scores.update(logits.detach().argmax(-1) == y, losses.detach() * y.shape[1], scored)
        for member in self.active:
            member.global_step += math.ceil(N / self.batch_size)
        return scores.compute()

    def _score(self, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every member's scores on its own split, in one pass."""
        self.packed.eval()
        with torch.no_grad():
            logits = self._forward(inputs)
            if self.layout == "wide" and not bool(torch.isfinite(logits).all()):
                self._isolate()
                logits = self._forward(inputs)
        self.packed.train()
        scored = self.template.scored(targets)
        losses = self.template.loss(logits, targets, scored, members=True)
        scores = SequenceScores(targets.shape[2], members=len(self.active)).to(self.device)
        scores.update(logits.argmax(-1) == targets, losses * targets.shape[1], scored)
        return scores.compute()

    def _end_epoch(self, epoch: int, learning_rate: float, train: dict[str, torch.Tensor],
                   val: dict[str, torch.Tensor]) -> list[Member]:
        """Each member's end of epoch, in Lightning's order (scores logged, the schedule, early stopping,
        best.ckpt, last.ckpt); the members that leave the pack now."""
        from seqrev.callbacks import epoch_line
        from seqrev.errors import diverged

        if self.scheduler is not None:
            self.scheduler.step()
        finished = self._failed_writes()  # last epoch's checkpoints: a member whose could not be written fails
        for k, member in enumerate(self.active):
            if member in finished:
                continue
            member.epochs = epoch + 1
            metrics = {f"{split}/{key}": float(scores[key].reshape(-1)[k])  # (torchmetrics squeezes a pack of one)
                       for split, scores in (("val", val), ("train", train)) for key in ("loss", "acc", "seq_acc")}
            member.val = {key: metrics[f"val/{key}"] for key in ("loss", "acc")}
            for logger in member.loggers.values():
                logger.log_metrics({**metrics, "train/learning_rate": learning_rate, "epoch": epoch}, step=epoch)
            if not math.isfinite(metrics["train/loss"]):
                self._fail(member, diverged(epoch, metrics["train/loss"]))
                finished.append(member)
                continue
            epoch_log = member.callbacks.get("epoch_log")
            if epoch_log is not None and epoch_log.every_n_epochs and member.epochs % epoch_log.every_n_epochs == 0:
                member.say(epoch_line(member.epochs, self.max_epochs, metrics))
            stopper = member.callbacks.get("early_stopping")
            stop = stopper is not None and should_stop(stopper, metrics[stopper.monitor], epoch)
            saving = [checkpoint_path(callback) for name in ("model_checkpoint", "last_checkpoint")
                      if (callback := member.callbacks.get(name)) is not None
                      and should_save(callback, metrics.get(callback.monitor))]
            if saving:
                self._write(member, self._member_checkpoint(member, k), saving)
            if stop:
                finished.append(member)
        return finished

    def _member_checkpoint(self, member: Member, k: int) -> dict[str, Any]:
        """The member's own training checkpoint: its weights and optimiser state, split from the pack."""
        from seqrev.checkpointing import training_checkpoint

        if getattr(self, "_split_at", None) != (member.global_step, len(self.active)):  # once per epoch end
            self._split = (member_state_dicts(self.packed), self._optimizer_states())
            self._split_at = (member.global_step, len(self.active))
        weights, optimizer_states = self._split
        checkpoint = training_checkpoint(member.model, member.data, member.callbacks.values(), member.epochs - 1,
                                         member.global_step, weights[k], optimizer_states[k],
                                         [self.scheduler.state_dict()] if self.scheduler is not None else [])
        checkpoint[PACK_STATE] = {"pack_size": len(self.members)}  # no loop state: only a pack continues it
        return checkpoint

    def _optimizer_states(self) -> list[dict[str, Any]]:
        """Each active member's optimiser state, as its own optimiser would hold it."""
        state = self.optimizer.state_dict()
        params = self.optimizer.param_groups[0]["params"]
        split = {index: {key: split_like(self.packed, params[index], value) if torch.is_tensor(value)
                         and value.shape == params[index].shape else [value] * len(self.active)
                         for key, value in entry.items()} for index, entry in state["state"].items()}
        return [{"state": {index: {key: parts[k] for key, parts in entry.items()} for index, entry in split.items()},
                 "param_groups": state["param_groups"]} for k in range(len(self.active))]

    def _write(self, member: Member, checkpoint: dict[str, Any], paths: list[Path]) -> None:
        """Write a member's checkpoint atomically to each path, in the writer's thread (a copy taken now)."""
        from seqrev.checkpointing import AtomicCheckpointIO

        checkpoint = copy.deepcopy(checkpoint)  # the state now: training goes on while it is written
        for path in paths:
            self.writes.append((member, self.writer.submit(AtomicCheckpointIO().save_checkpoint, checkpoint, path)))

    def _failed_writes(self) -> list[Member]:
        """Wait for every write asked so far; fail the members whose writes failed (as their own job would)."""
        failed = []
        for member, write in self.writes:
            if write.exception() is not None and member not in failed and member.results is None:
                self._fail(member, write.exception())
                failed.append(member)
        self.writes = []
        return failed

    # -- members leaving ------------------------------------------------------------------------------
    def _leave(self, finished: list[Member]) -> None:
        """Score and publish the members that finished; the pack goes on without them."""
        if not finished:
            return
        finished += [m for m in self._failed_writes() if m not in finished]  # checkpoints on disk before results
        weights = member_state_dicts(self.packed)
        for k, member in enumerate(self.active):
            if member in finished and member.results is None:  # failed members have theirs already
                member.model.load_state_dict(weights[k])
                self._finish(member)
        keep = [k for k, member in enumerate(self.active) if member not in finished]
        if keep:
            self._repack(keep, "stacked" if self.isolated else choose_layout(len(keep), self.template.units))
        self.active = [self.active[k] for k in keep]

    def _gradients_finite(self) -> bool:
        """Whether every gradient is finite (one host sync): in the wide layout a member's infinite or NaN
        gradient would spread to the others through the zeros between their blocks (0 * inf is NaN)."""
        return bool(torch.isfinite(torch.stack([p.grad.sum() for p in self.packed.parameters()
                                                if p.grad is not None]).sum()))

    def _isolate(self) -> None:
        """A member's numbers stopped being finite: from here on the pack is stacked, where each member's
        numbers stay its own (the member then fails at the end of the epoch, as its own job would)."""
        log.info(f"pack of {len(self.members)} ({self.active[0].about['model']}): a member's numbers are not "
                 "finite; the pack goes on in the stacked layout, which keeps them from the other members")
        self.isolated = True
        self._repack(list(range(len(self.active))), "stacked")

    def _repack(self, keep: list[int], layout: str) -> None:
        """The pack, its data and its optimiser's state with only the members `keep`, in `layout`."""
        old_optimizer, old_scheduler = self.optimizer, self.scheduler
        states = {old: {key: split_like(self.packed, old, value) if torch.is_tensor(value) and value.shape == old.shape
                        else value for key, value in state.items()} for old, state in old_optimizer.state.items()}
        replaced = repack(self.packed, keep, layout)
        self.layout = layout
        self.optimizer, self.scheduler = self.template.build_optimizer(self.packed)
        for old, new in replaced.items():
            if old in states:
                self.optimizer.state[new] = {key: join_like(self.packed, new, [value[k] for k in keep])
                                             if isinstance(value, list) else value
                                             for key, value in states[old].items()}
        if old_scheduler is not None:
            self.scheduler.load_state_dict(old_scheduler.state_dict())
        for new_group, old_group in zip(self.optimizer.param_groups, old_optimizer.param_groups):
            new_group.update({key: value for key, value in old_group.items() if key != "params"})
        index = torch.tensor(keep, device=self.device)
        self.data = {split: tuple(t.index_select(0, index) for t in tensors) for split, tensors in self.data.items()}

    def _finish(self, member: Member) -> None:
        """An ordinary run's ending for one member: test and train scores, results.json, the trackers'
        final metrics, the tutorial's printout."""
        from seqrev.run import final_scores, publish, test_examples

        model, data = member.model.cpu().eval(), member.data
        test = model.evaluate(data.test_dataloader())
        test_metrics = {f"test/{key}": test[key] for key in ("loss", "acc", "seq_acc")}
        test_metrics.update({f"test/acc_position_{i}": v for i, v in enumerate(test["acc_per_position"])})
        for logger in member.loggers.values():
            logger.log_metrics({**test_metrics, "epoch": member.epochs}, step=member.epochs)
        stopper = member.callbacks.get("early_stopping")
        scores = final_scores(model, data, member.val, test, member.epochs,
                              stopper is not None and stopper.stopped_epoch > 0, {})
        results = RunResults(**member.about, status="ok", **scores, fit_seconds=round(time.perf_counter() -
                             self.started, 3), resumed=member.resume_from is not None, run_dir=str(member.run_dir))
        with writing_to(member):
            publish(list(member.loggers.values()), member.epochs, results,
                    test_examples(model, data, member.cfg.examples))
        member.results = results

    def _fail(self, member: Member, error: BaseException) -> None:
        """results.json with `status: failed` and the cause, as an ordinary sweep job records it."""
        from seqrev.errors import EXPECTED_ERRORS
        from seqrev.lifecycle import record_failure, say_failed

        message = record_failure(member.cfg, error, member.model_name)
        with writing_to(member):
            say_failed(message, member.run_dir)
        if not isinstance(error, EXPECTED_ERRORS):
            member.say(traceback.format_exc(), logging.ERROR)
        member.results = {"status": "failed"}

    # -- cleanup --------------------------------------------------------------------------------------
    def cleanup(self, error: BaseException | None = None) -> None:
        """Members still training when the pack stopped are failed (or interrupted, their checkpoints
        written first); trackers are closed."""
        from lightning.pytorch.loggers import MLFlowLogger

        from seqrev.lifecycle import record_interrupt

        self._failed_writes()
        self.writer.shutdown()
        for member in self.active:
            if member.results is not None:
                continue
            if isinstance(error, KeyboardInterrupt):
                record_interrupt(member.run_dir, member.about, member.epochs)
                member.results = {"status": "interrupted"}
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

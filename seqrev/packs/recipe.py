"""Training a pack: K jobs of one cell that differ only in their seeds, as one batched model.

Each member (seqrev.packs.member) is the experiment its own job would be: its seed's weights, stacked
(seqrev.packs.layers), its own batches in its own order, its own mean loss, so the summed loss gives each
member its own gradient and an element-wise optimiser steps each as it would alone. What members share
is done here once: forward, backward, the optimiser step, the scores (seqrev.metrics, a leading member
dimension), the checkpoint writes. A member that stops, diverges or fails leaves; the others go on.

The recipe: `setup` (members, the pack, its optimiser), `train` (epochs), `cleanup` (trackers closed).
"""

from __future__ import annotations

import logging
import math
import time

import torch

from seqrev.checkpointing import BackgroundWrites
from seqrev.errors import NonFiniteLossError
from seqrev.metrics import SequenceScores
from seqrev.packs import layers
from seqrev.packs.member import Member

log = logging.getLogger("seqrev")


class PackRun:
    """Trains `members` (all at the same epoch) together; each leaves with its results.json written."""

    def __init__(self, members: list[Member]) -> None:
        self.members, self.active = members, []
        self.isolated = False  # stacked for good, once a member's numbers were not finite in the wide layout
        self.writer = BackgroundWrites()  # the disk's waits overlap training

    def setup(self) -> None:
        """Each member as its own run sets up (a member that cannot start fails alone); the pack, its optimiser
        (with the members' saved states when they resume) and every member's data on the pack's device."""
        from seqrev.config import device
        from seqrev.console import quiet_lightning

        quiet_lightning()
        first = self.members[0].cfg
        torch.set_num_threads(first.threads)
        self.device = torch.device(device(first.trainer.accelerator))
        self.max_epochs, self.batch_size = int(first.trainer.max_epochs), int(first.data.batch_size)
        for member in self.members:
            try:
                member.setup(len(self.members), self.max_epochs)
                self.active.append(member)
            except Exception as error:  # noqa: BLE001 - recorded in its results.json
                member.fail(error)
        if not self.active:
            return
        self.template = self.active[0].model  # what every member shares: loss, padding, optimiser settings
        self.layout = layers.choose_layout(len(self.active), self.template.units)
        self.packed = layers.pack_models([member.model for member in self.active], self.layout).to(self.device).train()
        self.optimizer, self.scheduler = self.template.build_optimizer(self.packed)
        if self.active[0].checkpoint is not None:
            layers.load_member_optimizer_states(self.packed, self.optimizer,
                                         [m.checkpoint["optimizer_states"][0] for m in self.active])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(self.active[0].checkpoint["lr_schedulers"][0])
        self.data = {split: tuple(torch.stack([getattr(m.data, split)[i] for m in self.active]).to(self.device)
                                  for i in (0, 1)) for split in ("train", "val")}  # (K, N, T, C), (K, N, T)

    def train(self) -> None:
        """Epochs until every member has left (early stopping, max_epochs, divergence, a failure)."""
        self.started = time.perf_counter()
        epoch_log = self.active[0].callbacks.get("epoch_log")
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
        return layers.rows_out(self.packed(layers.rows_in(inputs, self.layout)), len(self.active), self.layout)

    def _train_epoch(self) -> dict[str, torch.Tensor]:
        """Every member's batches in its own shuffled order, one optimiser step per batch; the scores per
        member, counted as the batches trained."""
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
        """The schedule's step, then each member's end of epoch and the checkpoints it asks for; the members
        that leave the pack now."""
        if self.scheduler is not None:
            self.scheduler.step()
        finished = self._failed_writes()  # last epoch's checkpoints: a member whose could not be written fails
        split: tuple[list, list] | None = None
        for k, member in enumerate(self.active):
            if member in finished:
                continue
            metrics = {f"{name}/{key}": float(scores[key].reshape(-1)[k])  # (torchmetrics squeezes a pack of one)
                       for name, scores in (("val", val), ("train", train)) for key in ("loss", "acc", "seq_acc")}
            try:
                stop, due = member.end_epoch(epoch, self.max_epochs,
                                             {**metrics, "train/learning_rate": learning_rate, "epoch": epoch})
            except NonFiniteLossError as diverged:
                member.fail(diverged)
                finished.append(member)
                continue
            if due:
                split = split or (layers.member_state_dicts(self.packed),
                                  layers.member_optimizer_states(self.packed, self.optimizer, len(self.active)))
                schedulers = [self.scheduler.state_dict()] if self.scheduler is not None else []
                self.writer.write(member, member.training_checkpoint(split[0][k], split[1][k], schedulers,
                                                                     len(self.members)), due)
            if stop:
                finished.append(member)
        return finished

    def _failed_writes(self) -> list[Member]:
        """Wait for every checkpoint asked so far; a member whose could not be written fails, as its job would."""
        failed = [(member, error) for member, error in self.writer.wait() if member.results is None]
        for member, error in failed:
            member.fail(error)
        return [member for member, _ in failed]

    def _leave(self, finished: list[Member]) -> None:
        """The members that finished end as their own runs end (their checkpoints on disk first); the pack
        goes on without them."""
        if not finished:
            return
        finished += [member for member in self._failed_writes() if member not in finished]
        weights = layers.member_state_dicts(self.packed)
        for k, member in enumerate(self.active):
            if member in finished and member.results is None:  # failed members have theirs already
                member.finish(weights[k], time.perf_counter() - self.started)
        keep = [k for k, member in enumerate(self.active) if member not in finished]
        if keep:
            self._repack(keep, "stacked" if self.isolated else layers.choose_layout(len(keep), self.template.units))
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
        """The pack, its optimiser (state and rate) and its data with only the members `keep`, in `layout`."""
        states = layers.member_optimizer_states(self.packed, self.optimizer, len(self.active))
        old_scheduler = self.scheduler
        layers.repack(self.packed, keep, layout)
        self.layout = layout
        self.optimizer, self.scheduler = self.template.build_optimizer(self.packed)
        layers.load_member_optimizer_states(self.packed, self.optimizer, [states[k] for k in keep])
        if old_scheduler is not None:
            self.scheduler.load_state_dict(old_scheduler.state_dict())
        index = torch.tensor(keep, device=self.device)
        self.data = {split: tuple(t.index_select(0, index) for t in tensors) for split, tensors in self.data.items()}

    def cleanup(self, error: BaseException | None = None) -> None:
        """Members still training when the pack stopped are failed or interrupted (their checkpoints written
        first); every member's trackers are closed."""
        self._failed_writes()
        self.writer.close()
        for member in self.active:
            if member.results is None:
                member.stopped(error)
        for member in self.members:
            member.close()


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

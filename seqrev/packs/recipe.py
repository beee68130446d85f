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
from hydra.utils import instantiate
from omegaconf import DictConfig

from seqrev.checkpointing import BackgroundWrites
from seqrev.config import apply_determinism, device
from seqrev.console import quiet_lightning
from seqrev.engines import Job, choose
from seqrev.errors import NonFiniteLossError
from seqrev.metrics import SequenceScores
from seqrev.packs import layers
from seqrev.packs.member import Member
from seqrev.results import RunResults, describe
from seqrev.rundir import SavedTraining

log = logging.getLogger("seqrev")


class PackRun:
    """Trains `members` (all at the same epoch) together; each leaves with its results.json written."""

    def __init__(self, members: list[Member], layout: layers.Layout | None = None) -> None:
        self.members, self.active, self.layout = members, [], layout  # layout: None for the device's rule
        self.writer = BackgroundWrites()  # the disk's waits overlap training

    def setup(self) -> None:
        """Each member as its own run sets up (a member that cannot start fails alone); the pack, its optimiser
        (with the members' saved states when they resume) and every member's data on the pack's device."""
        quiet_lightning()
        first = self.members[0].cfg
        torch.set_num_threads(first.threads)
        on = torch.device(device(first.trainer.accelerator))
        apply_determinism(bool(first.trainer.get("deterministic")))
        self.max_epochs, self.batch_size = int(first.trainer.max_epochs), int(first.data.batch_size)
        for member in self.members:
            try:
                member.setup(len(self.members), self.max_epochs)
                self.active.append(member)
            except Exception as error:  # noqa: BLE001 - recorded in its results.json
                member.fail(error)
        if not self.active:
            return
        saved = [member.saved and member.saved.contents for member in self.active]
        self.pack = layers.Pack([member.model for member in self.active], on,
                                [c["optimizer_states"][0] for c in saved] if saved[0] else None,
                                saved[0]["lr_schedulers"][0] if saved[0] and saved[0]["lr_schedulers"] else None,
                                self.layout)
        self.data = {split: tuple(torch.stack([getattr(m.data, split)[i] for m in self.active]).to(on)
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
            learning_rate = self.pack.optimizer.param_groups[0]["lr"]
            train = self._train_epoch()
            val = self._score(*self.data["val"])
            finished = self._end_epoch(epoch, learning_rate, train, val)
            if every and len(self.members) > 1 and ((epoch + 1) % every == 0 or finished):
                self._say(f"epoch {epoch + 1}/{self.max_epochs}, {len(self.active) - len(finished)} training, "
                          f"val/loss {val['loss'].min():.4f}..{val['loss'].max():.4f}")
            self._leave(finished)

    def _train_epoch(self) -> dict[str, torch.Tensor]:
        """Every member's batches in its own shuffled order, one optimiser step per batch; the scores per
        member, counted as the batches trained."""
        inputs, targets = self.data["train"]
        K, N, T = targets.shape
        order = torch.stack([torch.randperm(N, generator=m.data.shuffle_generator) for m in self.active])
        order = order.to(inputs.device)
        inputs = inputs.gather(1, order[:, :, None, None].expand_as(inputs))
        targets = targets.gather(1, order[:, :, None].expand_as(targets))
        scores, template = SequenceScores(T, members=K).to(inputs.device), self.pack.template
        for start in range(0, N, self.batch_size):
            x, y = inputs[:, start:start + self.batch_size], targets[:, start:start + self.batch_size]
            scored = template.scored(y)
            while True:  # once, unless a member's numbers stop being finite in the wide layout
                logits = self.pack(x)
                losses = template.loss(logits, y, scored, members=True)
                self.pack.optimizer.zero_grad(set_to_none=True)
                if not self._finite(losses):
                    continue
                losses.sum().backward()  # each member's loss reaches only its own weights
                if self._finite():
                    break
            self.pack.optimizer.step()
            scores.update(logits.detach().argmax(-1) == y, losses.detach() * y.shape[1], scored)
        for member in self.active:
            member.global_step += math.ceil(N / self.batch_size)
        return scores.compute()

    def _score(self, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every member's scores on its own split, in one pass."""
        self.pack.model.eval()
        with torch.no_grad():
            logits = self.pack(inputs)
            if not self._finite(logits):
                logits = self.pack(inputs)
        self.pack.model.train()
        scored = self.pack.template.scored(targets)
        scores = SequenceScores(targets.shape[2], members=len(self.active)).to(inputs.device)
        scores.update(logits.argmax(-1) == targets,
                      self.pack.template.loss(logits, targets, scored, members=True) * targets.shape[1], scored)
        return scores.compute()

    def _finite(self, values: torch.Tensor | None = None) -> bool:
        """`values` (by default the gradients) finite; if not, the pack is now stacked (layers.Pack.finite) and
        the member whose numbers they were fails at the end of the epoch, as its own job would."""
        if self.pack.finite(values):
            return True
        self._say("a member's numbers are not finite; the pack goes on in the stacked layout, which keeps them "
                  "from the other members")
        return False

    def _end_epoch(self, epoch: int, learning_rate: float, train: dict[str, torch.Tensor],
                   val: dict[str, torch.Tensor]) -> list[Member]:
        """The schedule's step, then each member's end of epoch and the checkpoints it asks for; the members
        that leave the pack now."""
        if self.pack.scheduler is not None:
            self.pack.scheduler.step()
        finished = self._failed_writes()  # last epoch's checkpoints: a member whose could not be written fails
        split: tuple[list, list] | None = None
        for k, member in enumerate(self.active):
            if member in finished:
                continue
            metrics = {}
            for name, scores in (("val", val), ("train", train)):
                for key in ("loss", "acc", "seq_acc"):  # reshaped: torchmetrics squeezes a pack of one
                    metrics[f"{name}/{key}"] = float(scores[key].reshape(-1)[k])
            try:
                stop, due = member.end_epoch(epoch, self.max_epochs,
                                             {**metrics, "train/learning_rate": learning_rate, "epoch": epoch})
            except NonFiniteLossError as diverged:
                member.fail(diverged)
                finished.append(member)
                continue
            if due:
                split = split or (self.pack.weights(), self.pack.optimizer_states())
                schedulers = [self.pack.scheduler.state_dict()] if self.pack.scheduler is not None else []
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
        weights = self.pack.weights()
        for k, member in enumerate(self.active):
            if member in finished and member.results is None:  # failed members have theirs already
                member.finish(weights[k], time.perf_counter() - self.started)
        keep = [k for k, member in enumerate(self.active) if member not in finished]
        if keep:
            self.pack.keep(keep)
            index = torch.tensor(keep, device=self.data["train"][0].device)
            for split, tensors in self.data.items():
                self.data[split] = tuple(t.index_select(0, index) for t in tensors)
        self.active = [self.active[k] for k in keep]

    def _say(self, message: str) -> None:
        """A line about the pack: in each member's train.log, and the process's log (its console in a sweep
        with sweep_console=all)."""
        line = f"pack of {len(self.members)} ({self.members[0].about['model']}): {message}"
        log.info(line)
        for member in self.members:
            if member.log_file is not None:
                member.say(line)

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


MEMORY_SHARE = 0.8
"""The share of a GPU's free memory a pack plans to fill; the rest is left to the allocator and CUDA."""


def capacity(cfg: DictConfig, free_memory: int) -> int:
    """How many members of a cell like `cfg`'s fit in `free_memory` bytes (at least one): MEMORY_SHARE of it
    over one member's estimate (layers.member_bytes, on this cell's model and data)."""
    data = instantiate(cfg.data)
    data.prepare()
    per_member = layers.member_bytes(instantiate(cfg.model), data.train, data.val, int(cfg.data.batch_size))
    return max(1, int(MEMORY_SHARE * free_memory // per_member))


def train_pack(members: list[Member], free_memory: int | None = None) -> None:
    """Setup, train, cleanup: every member ends with its results.json (ok, failed or interrupted). On a GPU,
    as many members at a time as its free memory holds (`capacity`; `free_memory` in bytes, read from the
    device when not given), one pack after another; on the CPU, all of them."""
    on = torch.device(device(members[0].cfg.trainer.accelerator))
    if free_memory is None and on.type == "cuda":
        free_memory = torch.cuda.mem_get_info(on)[0]
    size = len(members) if free_memory is None or len(members) == 1 else capacity(members[0].cfg, free_memory)
    if size < len(members):
        log.info(f"pack of {len(members)} ({members[0].about['model']}): {free_memory / 2**30:.2f} GiB free on "
                 f"{on.type} holds {size} members at a time: trained as {math.ceil(len(members) / size)} packs, "
                 f"one after another")
    for start in range(0, len(members), size):
        _train_pack(members[start:start + size])


def _train_pack(members: list[Member]) -> None:
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


def train_alone(cfg: DictConfig, model_name: str | None, saved: SavedTraining) -> RunResults:
    """A single run that continues a pack's member (`saved`: its checkpoint), which only a pack trains: as
    a pack of one, ending as seqrev.run.train ends (its results; what made it fail raised)."""
    choose(Job(cfg, model_name, continues="packed"))  # RunDirError when a pack cannot train it
    member = Member(cfg, model_name, describe(cfg, model_name), saved, alone=True)
    try:
        train_pack([member])
    except KeyboardInterrupt:  # as Lightning ends a run on Ctrl-C (its interrupt recorded and said)
        raise SystemExit(1) from None
    if member.error is not None:
        raise member.error
    return member.results

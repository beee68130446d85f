"""One job of a pack: what its own run would do at each step that is its own, with the run's own code.

It is built as `seqrev.run.build` builds a run, ends each epoch by its own callbacks' rules
(seqrev.packs.monitoring), and leaves with what its run would write (seqrev.publish, seqrev.checkpointing)
or its failure recorded as its job's (seqrev.lifecycle). What members share is the pack's.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch import seed_everything
from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig

from seqrev import trackers
from seqrev.callbacks import epoch_line
from seqrev.checkpointing import training_checkpoint
from seqrev.config import validate
from seqrev.errors import EXPECTED_ERRORS, diverged
from seqrev.lifecycle import job_failed, job_interrupted
from seqrev.packs.monitoring import file_written, should_save, should_stop
from seqrev.publish import announce, final_scores, publish_run, test_examples, tested
from seqrev.results import RunIdentity, RunResults
from seqrev.rundir import PACK_STATE, SavedTraining


@dataclass
class Member:
    """One job of a pack: its resolved config and folder and, once set up, its own model, data and callbacks."""

    cfg: DictConfig
    model_name: str | None
    about: RunIdentity
    saved: SavedTraining | None = None  # the checkpoint it continues from
    log_file: logging.Handler | None = None
    model: Any = None  # its own wiring: the weights it starts from and, when it leaves the pack, ends with
    data: Any = None
    callbacks: dict[str, Any] = field(default_factory=dict)
    loggers: dict[str, Any] = field(default_factory=dict)
    epochs: int = 0  # epochs trained
    global_step: int = 0
    val: dict[str, float] = field(default_factory=dict)  # the latest epoch's validation scores
    results: dict[str, Any] | None = None  # its results.json, once it left: ok, failed or interrupted
    error: BaseException | None = None  # what made it fail
    alone: bool = False  # a single run (a pack of one), whose failure its caller says

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.paths.output_dir)

    def say(self, message: str, level: int = logging.INFO) -> None:
        """A line in this member's own train.log only (alone, the run's log: console and train.log)."""
        if self.log_file is None:
            logging.getLogger("seqrev").log(level, message)
        else:
            self.log_file.handle(logging.LogRecord("seqrev", level, __file__, 0, message, None, None))

    @contextmanager
    def writing_to_its_log(self) -> Iterator[None]:
        """For a block: the root logger also writes to this member's train.log (its printout, its failure)."""
        root = logging.getLogger()
        if self.log_file is not None:
            root.addHandler(self.log_file)
        try:
            yield
        finally:
            if self.log_file is not None:
                root.removeHandler(self.log_file)

    def setup(self, pack_size: int, max_epochs: int) -> None:
        """Its data, model (under its own seed), callbacks and loggers, as its own run builds them; its state
        when it resumes; its first console lines, in its own train.log."""
        validate(self.cfg)
        seed_everything(self.cfg.seed, workers=False, verbose=False)
        self.data = instantiate(self.cfg.data)
        self.data.prepare()
        self.model = instantiate(self.cfg.model)
        self.callbacks = {name: instantiate(settings) for name, settings in (self.cfg.get("callbacks") or {}).items()}
        if self.saved is not None:
            saved = self.saved.contents
            self.model.load_state_dict(saved["state_dict"])
            self.data.load_state_dict(saved[type(self.data).__qualname__])
            for callback in self.callbacks.values():
                if callback.state_key in saved.get("callbacks", {}):
                    callback.load_state_dict(saved["callbacks"][callback.state_key])
            self.epochs, self.global_step = int(saved["epoch"]) + 1, int(saved["global_step"])
            self.say(f"resuming from epoch {self.epochs}: {self.saved.path}")
        self.loggers = trackers.make_loggers(self.cfg, self.run_dir, self.saved is not None)
        trackers.record_ids(self.loggers, self.run_dir)
        if self.saved is not None:
            trackers.resume_tensorboard(list(self.loggers.values()), self.epochs)
        else:
            trackers.log_settings(list(self.loggers.values()), self.about)
        announce(self.say, self.about, self.model, max_epochs, self.callbacks.get("early_stopping"),
                 self.saved and self.run_dir,
                 f", trained in a pack of {pack_size} (hydra/launcher=packed)")

    def end_epoch(self, epoch: int, max_epochs: int, metrics: dict[str, float]) -> tuple[bool, list[Path]]:
        """An epoch's end as an ordinary run's: its scores logged, EpochLog's line, early stopping, then
        best.ckpt and last.ckpt. Whether it stops, and the checkpoint files due now; raises if it diverged."""
        self.epochs = epoch + 1
        self.val = {key: metrics[f"val/{key}"] for key in ("loss", "acc")}
        for logger in self.loggers.values():
            logger.log_metrics(metrics, step=epoch)
        if "history" in self.callbacks:
            self.callbacks["history"].record(epoch, metrics)
        if not math.isfinite(metrics["train/loss"]):
            raise diverged(epoch, metrics["train/loss"])
        epoch_log = self.callbacks.get("epoch_log")
        if epoch_log is not None and epoch_log.every_n_epochs and self.epochs % epoch_log.every_n_epochs == 0:
            self.say(epoch_line(self.epochs, max_epochs, metrics))
        stopper = self.callbacks.get("early_stopping")
        stop = stopper is not None and should_stop(stopper, metrics[stopper.monitor], epoch)
        checkpoints = [self.callbacks[n] for n in ("model_checkpoint", "last_checkpoint") if n in self.callbacks]
        due = [file_written(c) for c in checkpoints if should_save(c, metrics.get(c.monitor))]
        return stop, due

    def training_checkpoint(self, weights: dict[str, torch.Tensor], optimizer_state: dict[str, Any],
                            lr_schedulers: list[dict[str, Any]], pack_size: int) -> dict[str, Any]:
        """Its own training checkpoint, in Lightning's layout, with the weights and optimiser state the pack
        holds for it; no loop state, so a pack alone continues it."""
        checkpoint = training_checkpoint(self.model, self.data, self.callbacks.values(), self.epochs - 1,
                                         self.global_step, weights, optimizer_state, lr_schedulers)
        checkpoint[PACK_STATE] = {"pack_size": pack_size}
        return checkpoint

    def finish(self, weights: dict[str, torch.Tensor], fit_seconds: float) -> None:
        """Its own run's ending, with the weights it trained to: test and train scores, results.json, the
        trackers' final metrics, the tutorial's printout."""
        self.model.load_state_dict(weights)
        model, data = self.model.cpu().eval(), self.data
        test = model.evaluate(data.test_dataloader())
        test_metrics = {f"test/{key}": test[key] for key in ("loss", "acc", "seq_acc")}
        test_metrics.update({f"test/acc_position_{i}": v for i, v in enumerate(test["acc_per_position"])})
        for logger in self.loggers.values():
            logger.log_metrics({**test_metrics, "epoch": self.epochs}, step=self.epochs)
        stopper = self.callbacks.get("early_stopping")
        val = self.val or model.evaluate(data.val_dataloader())  # resumed after its last epoch's checkpoint
        scores = final_scores(model, data, val, test, self.epochs, bool(stopper and stopper.stopped_epoch > 0), {},
                              tested(self.global_step, validated=True), self.callbacks.get("history"))
        results = RunResults(**self.about, status="ok", **scores, fit_seconds=round(fit_seconds, 3),
                             resumed=self.saved is not None, run_dir=str(self.run_dir))
        with self.writing_to_its_log():
            publish_run(list(self.loggers.values()), self.epochs, results,
                        test_examples(model, data, self.cfg.examples))
        self.results = results

    def fail(self, error: BaseException) -> None:
        """Its failure recorded and said as an ordinary sweep job's (its traceback in its own train.log)."""
        with self.writing_to_its_log():  # alone, its run says the failure, as an ordinary run's
            job_failed(self.cfg, error, self.model_name, None if self.alone else self.run_dir.parent)
        self.results, self.error = {"status": "failed"}, error
        if not self.alone and not isinstance(error, EXPECTED_ERRORS):
            self.say(traceback.format_exc(), logging.ERROR)

    def stopped(self, error: BaseException | None) -> None:
        """The pack stopped while this member was still training: interrupted (Ctrl-C), or failed."""
        if isinstance(error, KeyboardInterrupt):
            job_interrupted(self.run_dir, self.about, self.epochs, self.say)
            self.results = {"status": "interrupted"}
        elif error is not None:
            self.fail(error)

    def close(self) -> None:
        """Its trackers finalised with its status, and its log file closed."""
        failed = (self.results or {}).get("status") != "ok"
        for logger in self.loggers.values():
            if not isinstance(logger, MLFlowLogger):  # trackers.close ends MLflow's run with its status
                logger.finalize("failed" if failed else "success")  # TensorBoard's hparams.yaml, CSV's rows
        trackers.close(list(self.loggers.values()), failed=failed)
        if self.log_file is not None:
            self.log_file.close()

"""What a run says and leaves, whichever engine trains it: its first console lines, its scores and examples
once trained, results.json, TensorBoard's HPARAMS and examples, the trackers' final metrics, and the
tutorial's printout."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard.summary import hparams

from seqrev import trackers
from seqrev.results import RunIdentity, RunResults, run_parameters, write_results
from seqrev.tasks import until_end

log = logging.getLogger("seqrev")
HPARAMS_METRICS = ("test_acc", "test_seq_acc", "train_acc", "val_acc", "epochs_run")


class Example(NamedTuple):
    """One test pair and the model's answer, as symbol lists (padding cut off)."""

    input: list[int]
    expected: list[int]
    predicted: list[int]


def log_to_tensorboard(loggers: list, step: int, results: RunResults, examples: list[Example]) -> None:
    """Examples as a table, and the run as a session of TensorBoard's HPARAMS tab: every setting and what
    it is, and the final metrics (`hparams/...`).

    Sessions only, no experiment summary of the run's own: TensorBoard then works out which settings
    differ across the runs it is shown (a sweep, or all of `outputs/`) and lists those first. A run's own
    summary would fix the columns, alphabetically, whatever varies."""
    for logger in loggers:
        if not isinstance(logger, TensorBoardLogger):
            continue
        writer = logger.experiment
        rows = "\n".join(f"| {x} | {y} | {p} | {y == p} |" for x, y, p in examples)
        writer.add_text("examples", "| input | expected | predicted | right |\n|---|---|---|---|\n" + rows,
                        step)
        params = run_parameters(results)
        metrics = {f"hparams/{key}": results[key] for key in HPARAMS_METRICS}
        metrics.update({f"hparams/extra/{key}": value for key, value in results.get("extra", {}).items()})
        logger.log_metrics(metrics, step=0)
        _, session_start, session_end = hparams(params, metrics)
        for summary in (session_start, session_end):
            writer.file_writer.add_summary(summary)  # the writer exists: the examples went through it
        writer.flush()


def print_report(results: RunResults, examples: list[Example]) -> None:
    """The tutorial's printout: accuracies in percent, then examples."""
    finish = "stopped early" if results["stopped_early"] else "no early stop"
    log.info(f"{results['epochs_run']} epoch training finished in {results['fit_seconds']:.1f} s ({finish}); "
             f"tested: {results['tested']}")
    log.info("PREDICTION ACCURACY (%):")
    log.info(f"Train: {100 * results['train_acc']:.3f}, Test: {100 * results['test_acc']:.3f}")
    log.info("SEQUENCE ACCURACY (%):")
    log.info(f"Train: {100 * results['train_seq_acc']:.3f}, Test: {100 * results['test_seq_acc']:.3f}")
    if examples:
        log.info("some examples...")
    for x, y, p in examples:
        log.info(f"Input {x} Expected: {y} Predicted {p} {y == p}")
    log.info(f"results: {Path(results['run_dir']) / 'results.json'}")


def announce(say: Callable[[str], None], about: RunIdentity, model, max_epochs: int, stopper,
             resume_from: Path | None, engine: str = "", max_steps: int = -1) -> None:
    """A run's first two console lines: what it trains, and for how long (`engine`: how, when not alone)."""
    say(f"{about['model']}: {model.trainable_params:,} trainable parameters, T={about['timesteps']}, "
        f"{about['n_features']} features, {about['units']} units, seed {about['seed']}{engine}")
    say(f"training for up to {max_epochs} epochs" + (f" or {max_steps} steps" if max_steps > 0 else "")
        + (f" with EarlyStopping(monitor={stopper.monitor}, patience={stopper.patience})" if stopper else "")
        + (f", resuming from {resume_from}" if resume_from else "") + " ...")


def tested(global_step: int, validated: bool) -> str:
    """Which weights a run's test scores are of: always its last (the tutorial's protocol restores no best)."""
    return f"the weights at the end of training (step {global_step})" + (
        "" if validated else "; no validation ran during training, so there is no best.ckpt")


def final_scores(model, datamodule, val: dict[str, Any], test: dict[str, Any], epochs_run: int,
                 stopped_early: bool, extra: dict[str, float], tested: str, history=None) -> dict[str, Any]:
    """What results.json says of a trained model: its validation and test scores as given, the tutorial's
    after-training accuracy on every training pair (validation tail included), its validations' history."""
    train = model.evaluate(datamodule.train_full_dataloader())
    return {"trainable_params": model.trainable_params, "epochs_run": epochs_run, "stopped_early": stopped_early,
            "tested": tested, "history": history.validations if history is not None else [],
            "train_acc": train["acc"], "train_seq_acc": train["seq_acc"],
            "val_acc": float(val["acc"]), "val_loss": float(val["loss"]),
            "test_acc": test["acc"], "test_seq_acc": test["seq_acc"], "test_loss": test["loss"],
            "test_acc_per_position": test["acc_per_position"], "extra": extra}


def test_examples(model, datamodule, n_examples: int) -> list[Example]:
    """The model's answers to the first `n_examples` test pairs, as symbol lists (padding cut off)."""
    inputs, targets = (t[:n_examples] for t in datamodule.test)
    predictions = model.predict(inputs).cpu()
    return [Example(until_end(x.argmax(-1).tolist(), model.pad), until_end(y.tolist(), model.pad),
                    until_end(p.tolist(), model.pad))
            for x, y, p in zip(inputs.cpu(), targets.cpu(), predictions)]


def publish_run(loggers: list, step: int, results: RunResults, examples: list[Example]) -> None:
    """results.json, then TensorBoard's HPARAMS and examples and the other trackers' final metrics (at
    training step `step`), then the tutorial's printout."""
    results["examples"] = [example._asdict() for example in examples]
    write_results(results["run_dir"], results)
    log_to_tensorboard(loggers, step, results, examples)
    trackers.log_results(loggers, results, step)
    print_report(results, examples)

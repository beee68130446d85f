"""What a finished run shows: TensorBoard's HPARAMS and examples, and the tutorial's printout."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

from seqrev.results import RunResults, run_parameters

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
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch.utils.tensorboard.summary import hparams

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

"""What the console shows: each message once, nothing that is not about the run."""

from __future__ import annotations

import logging
import threading
import warnings

from seqrev.errors import storage_problem


def _no_advertising(record: logging.LogRecord) -> bool:
    """Drops Lightning's tips about products (e.g. "💡 Tip: ... litlogger ..."): not about this run."""
    return "Tip:" not in str(record.msg)


def quiet_lightning() -> None:
    """Lightning's messages once each, without advertising or warnings about version skew."""
    # `import lightning` gives its logger a console handler of its own; Hydra's handlers already print
    # and file every record, so without this each Lightning message would appear twice.
    logging.getLogger("lightning").handlers.clear()
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        if _no_advertising not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(_no_advertising)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")  # torch/Lightning version skew
    warnings.filterwarnings("ignore", message=r".*The `srun` command is available.*")  # seqrev runs Slurm jobs itself


def quiet_storage_errors_in_threads() -> None:
    """TensorBoard writes its events from a thread of its own. When the disk fills, that thread dies and
    Python prints its traceback; TensorBoard then hands the same error to the next write in the main
    thread, which says it in one sentence. So a storage error in a thread is left to that sentence."""
    default = threading.excepthook
    if getattr(default, "seqrev", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if storage_problem(args.exc_value) is None:
            default(args)

    hook.seqrev = True
    threading.excepthook = hook

"""Every user-facing config value, checked in one place before any work starts.

A bad value raises `ConfigError` with one sentence naming the key, the value given and what is
allowed; `seqrev.train` prints that sentence and exits non-zero.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from seqrev.errors import ConfigError

# Imports inside functions: torch, Lightning and the models load where a value is checked against them, so a command
# line is refused before they load.


def _padded(task: str, timesteps: int, min_timesteps: int) -> bool:
    from seqrev.tasks import is_padded

    try:
        return is_padded(task, int(timesteps), int(min_timesteps))
    except (TypeError, ValueError):  # a bad value: validate() names it
        return False


NAMED_IN_RUN_NAME = {"model", "data.timesteps", "model.units", "seed", "size"}
SWEPT = "seqrev_swept"
"""The keys a sweep's command line varies: a value of each job's Hydra config (`hydra.job.env_set`, so
it travels with the job to any process or node), given by `seqrev.train.prepare`."""


def _swept_settings() -> str:
    """',key=value' for each setting a sweep varies beyond the four every job name shows (model,
    timesteps, units, seed), so that two jobs never differ only by their number: e.g. ',n_train=500'."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return ""
    hydra_cfg = HydraConfig.get()
    swept = {key for key in str(hydra_cfg.job.env_set.get(SWEPT, "")).split(",") if key}
    swept |= set((OmegaConf.select(hydra_cfg, "sweeper.params", default=None) or {}).keys())
    swept = {key.lstrip("+~") for key in swept} - NAMED_IN_RUN_NAME
    parts = []
    for override in hydra_cfg.overrides.task:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if key in swept:
            short = key.rpartition(".")[2]
            name = key if short in {"model", "timesteps", "units", "seed", "size"} else short
            parts.append(f",{name}={value.replace('/', '_')}")
    return "".join(parts)


def _group() -> str:
    """What a run belongs to, for trackers that group runs: a sweep's folder name, or "runs" for single runs."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir).name
    return "runs"


# Config files ask whether a task needs the padding class (`${seqrev_padded:task,timesteps,min_timesteps}`)
# and name job folders after what a sweep varies; trackers' configs (conf/logger) group a sweep's jobs
# and name each like its folder, as job folders and TensorBoard name it.
for _name, _resolver in {"seqrev_padded": _padded, "seqrev_swept": _swept_settings, "seqrev_group": _group,
                       "seqrev_job_name": lambda output_dir: Path(output_dir).name}.items():
    OmegaConf.register_new_resolver(_name, _resolver, replace=True)


def device(accelerator: str | None) -> str:
    """The device a run trains on: a CUDA GPU when asked for (or `auto`) and present, else the CPU."""
    import torch

    return "cuda" if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu"


PRECISIONS = ("32", "32-true", "bf16-mixed", "bf16-true", "64", "64-true")
TRAINER_KEYS = frozenset({"_target_", "accelerator", "accumulate_grad_batches", "check_val_every_n_epoch",
                          "default_root_dir", "deterministic", "devices", "enable_model_summary", "enable_progress_bar",
                          "gradient_clip_algorithm", "gradient_clip_val", "limit_test_batches", "limit_train_batches",
                          "limit_val_batches", "log_every_n_steps", "max_epochs", "max_steps", "num_sanity_val_steps",
                          "plugins", "precision", "strategy", "val_check_interval"})
"""The Trainer options seqrev's configs set (conf/trainer, tests/test_reliability.py checks it); any other
is a user's own (`+trainer.KEY=...`)."""


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def _integer(cfg: DictConfig, key: str, minimum: int, maximum: int | None = None) -> int | None:
    value = _get(cfg, key)
    if value is None:
        return None
    upper = f" and at most {maximum}" if maximum is not None else ""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
            maximum is not None and value > maximum):
        raise ConfigError(f"{key}={value!r} is not allowed: it must be a whole number of at least {minimum}{upper}.")
    return value


def _positive_number(cfg: DictConfig, key: str) -> float | None:
    value = _get(cfg, key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{key}={value!r} is not allowed: it must be a finite number above 0.")
    return float(value)


def _batches(cfg: DictConfig, key: str) -> None:
    """Lightning's way of counting batches: a float is a fraction of them, an int a number of them.
    None of these may be zero: a run needs training, validation (early stopping) and test scores."""
    value = _get(cfg, key)
    if value is None or (isinstance(value, float) and 0 < value <= 1):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}={value!r} is not allowed: give a fraction above 0 up to 1.0 (e.g. 0.5) or a "
                          "whole number of batches (e.g. 10).")


def _boolean(cfg: DictConfig, key: str) -> None:
    value = _get(cfg, key)
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is not allowed: it must be true or false.")


def _choice(cfg: DictConfig, key: str, allowed: tuple[str, ...]) -> None:
    value = _get(cfg, key)
    if value is not None and value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed: choose one of {', '.join(allowed)}.")


def validate(cfg: DictConfig, cuda_available: bool | None = None) -> None:
    """Raise ConfigError for the first bad value in a composed seqrev config."""
    from seqrev.layers import CELLS, INITS
    from seqrev.models.decoders import ATTENTION_KINDS
    from seqrev.tasks import find_task

    _integer(cfg, "seed", 0, 2**32 - 1)
    _integer(cfg, "data.seed", 0, 2**32 - 1)
    _integer(cfg, "threads", 1)
    _integer(cfg, "examples", 0)
    timesteps = _integer(cfg, "data.timesteps", 1, 10_000)
    _integer(cfg, "data.min_timesteps", 1, timesteps)
    if _get(cfg, "data.task") is not None:
        find_task(_get(cfg, "data.task"))
    _integer(cfg, "data.n_features", 2)
    n_train = _integer(cfg, "data.n_train", 2)
    _integer(cfg, "data.n_test", 1)
    _integer(cfg, "data.batch_size", 1)
    _integer(cfg, "data.steps_per_call", 1)
    _integer(cfg, "data.eval_batch_size", 1)
    val_fraction = _get(cfg, "data.val_fraction")
    if val_fraction is not None:
        n_val = int(n_train * val_fraction) if isinstance(val_fraction, (int, float)) else 0
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not (
                0 < val_fraction < 1) or n_val < 1 or n_train - n_val < 1:
            raise ConfigError(
                f"data.val_fraction={val_fraction!r} is not allowed: with data.n_train={n_train} it must be between "
                "0 and 1 and leave at least one validation pair and one training pair.")
    _integer(cfg, "model.units", 1)
    _choice(cfg, "model.init", INITS)
    _choice(cfg, "model.cell", CELLS)
    _choice(cfg, "model.attention", ATTENTION_KINDS)
    _positive_number(cfg, "model.optimizer.lr")
    _integer(cfg, "trainer.max_epochs", 1)
    max_steps = _get(cfg, "trainer.max_steps")
    if max_steps != -1:
        _integer(cfg, "trainer.max_steps", 1)
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches", "val_check_interval"):
        _batches(cfg, f"trainer.{key}")
    _integer(cfg, "trainer.check_val_every_n_epoch", 1)
    _positive_number(cfg, "trainer.gradient_clip_val")
    _choice(cfg, "trainer.gradient_clip_algorithm", ("norm", "value"))
    _integer(cfg, "trainer.accumulate_grad_batches", 1)
    precision = _get(cfg, "trainer.precision")
    if precision is not None and str(precision) not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision!r} is not allowed: choose one of {', '.join(PRECISIONS)} "
                          "(seqrev's training step does no loss scaling, which 16-bit float would need).")
    for key in ("deterministic", "enable_model_summary", "enable_progress_bar"):
        _boolean(cfg, f"trainer.{key}")
    _integer(cfg, "trainer.num_sanity_val_steps", -1)
    _integer(cfg, "trainer.log_every_n_steps", 1)
    devices = _get(cfg, "trainer.devices")
    if devices != "auto" and not OmegaConf.is_list(devices):
        _integer(cfg, "trainer.devices", 1)
    _trainer_options(cfg)
    _integer(cfg, "callbacks.early_stopping.patience", 0)
    accelerator = _get(cfg, "trainer.accelerator")
    if accelerator in ("gpu", "cuda", "auto") and cuda_available is None:
        import torch
        cuda_available = torch.cuda.is_available()
    if accelerator in ("gpu", "cuda") and not cuda_available:
        raise ConfigError("trainer.accelerator='gpu' is not allowed: this machine has no CUDA GPU; "
                          "use trainer=default (picks the GPU when present) or trainer=cpu.")
    if str(precision) == "bf16-true" and accelerator in ("gpu", "cuda", "auto") and cuda_available:
        _require_bfloat16_rnn_on_cuda(_get(cfg, "model.cell") or "lstm")
    from seqrev.trackers import check_installed

    check_installed(cfg)


def _trainer_options(cfg: DictConfig) -> None:
    """Trainer options beyond seqrev's own (`+trainer.min_epochs=3`): each must be an argument of Lightning's
    Trainer, and a Trainer built with them and the run's callbacks must accept them. seqrev cannot know
    their rules: Lightning's refusal is handed on, in one sentence, under the settings' names."""
    trainer = _get(cfg, "trainer") or {}
    extra = [str(key) for key in trainer if key not in TRAINER_KEYS]
    if not extra:
        return
    from hydra.utils import instantiate
    from lightning.pytorch import Trainer

    accepted = set(inspect.signature(Trainer.__init__).parameters) - {"self"}
    for key in extra:
        if key in ("callbacks", "logger"):
            raise ConfigError(f"trainer.{key} is not allowed: seqrev gives the Trainer its {key} from the config "
                              f"group {key} (e.g. +{key}.NAME._target_=... or {key}=...).")
        if key not in accepted:
            close = difflib.get_close_matches(key, sorted(accepted), n=1)
            raise ConfigError(f"trainer.{key} is not an option of Lightning's Trainer"
                              + (f"; did you mean trainer.{close[0]}?" if close else "."))
    disabled = logging.root.manager.disable
    logging.disable(logging.INFO)  # the Trainer's lines about devices: the run says them
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            callbacks = [instantiate(settings) for settings in (cfg.get("callbacks") or {}).values()]
            instantiate(cfg.trainer, callbacks=callbacks, logger=False, _convert_="all")
    except Exception as error:  # noqa: BLE001 - Lightning's or Python's refusal, said in one sentence
        given = ", ".join(f"trainer.{key}={trainer[key]!r}" for key in extra)
        cause = error.__cause__ or error  # Hydra's instantiate wraps what the Trainer raised
        said = " ".join(str(cause).split()).rstrip(".") or type(cause).__name__
        raise ConfigError(f"{given} is not allowed: Lightning's Trainer refused it ({said}).") from None
    finally:
        logging.disable(disabled)


def _require_bfloat16_rnn_on_cuda(cell: str) -> None:
    """ConfigError unless this GPU's cuDNN runs a recurrent layer in bfloat16 (older cuDNN builds raise).

    Asked of the library itself, with one tiny layer, rather than from a version table."""
    import torch

    from seqrev.layers import recurrent_layer

    try:
        layer = recurrent_layer(2, 2, cell=cell).to("cuda", torch.bfloat16)
        layer(torch.zeros(1, 2, 2, device="cuda", dtype=torch.bfloat16))[0].sum().backward()
    except RuntimeError as error:
        raise ConfigError(
            f"trainer.precision='bf16-true' is not allowed here: the cuDNN on this GPU cannot run a {cell} layer "
            f"in bfloat16 ({str(error).splitlines()[0]}); use trainer.precision=bf16-mixed or 32-true.") from None


def apply_determinism(deterministic: bool) -> None:
    """`trainer.deterministic` for training no Trainer drives (a pack): what the Trainer applies (its
    `_set_torch_flags`: deterministic algorithms, cuBLAS's workspace, no cuDNN benchmark), then seqrev's own."""
    import torch

    torch.use_deterministic_algorithms(deterministic)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    set_determinism(deterministic)


def set_determinism(deterministic: bool) -> None:
    """The flags `deterministic` leaves to seqrev (the Trainer has already chosen deterministic kernels).

    Always set both ways, so a previous job in the same process cannot leak its setting. TF32 in
    cuDNN (on by default for RNNs) is off under `deterministic`, so GPU runs repeat exactly; and
    filling fresh memory with NaN (PyTorch's default under deterministic algorithms, a kernel launch
    per allocation) is off, because seqrev never reads memory it has not written.
    """
    import torch

    torch.backends.cudnn.allow_tf32 = not deterministic
    torch.utils.deterministic.fill_uninitialized_memory = not deterministic

"""Which sweep jobs train together as one packed model (`hydra/launcher=packed`), and which cannot.

Jobs pack when they differ only in their seeds (`seed`, and `data.seed` that follows it) and what
they run is something a pack reproduces exactly: one of the tutorial's five wirings, an optimiser
and schedule that treat every weight on its own, seqrev's own callbacks, whole epochs of training.
Anything else runs as an ordinary job; `refusal` says why in a few words, for one line on the console.
"""

from __future__ import annotations

import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

PACKED_WIRINGS = ("single_default", "stacked_default", "return_sequences", "return_state", "both_outputs")
"""The tutorial's five wirings: their `forward` treats every row of a batch on its own (seqrev.packed_layers)."""

ELEMENTWISE_OPTIMIZERS = ("torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD", "torch.optim.RMSprop")
"""Optimisers whose update of each weight reads only that weight's gradient and state: on stacked weights
they take every member's step exactly as on its own."""

CALLBACKS = {
    "early_stopping": {"_target_": "lightning.pytorch.callbacks.EarlyStopping", "monitor": None, "mode": None,
                       "patience": None, "min_delta": None, "check_finite": None, "stopping_threshold": None,
                       "divergence_threshold": None, "verbose": None, "strict": None},
    "model_checkpoint": {"_target_": "lightning.pytorch.callbacks.ModelCheckpoint", "dirpath": None,
                         "filename": "best", "monitor": None, "mode": None, "save_top_k": 1,
                         "enable_version_counter": False, "save_last": False, "verbose": None},
    "last_checkpoint": {"_target_": "lightning.pytorch.callbacks.ModelCheckpoint", "dirpath": None,
                        "filename": "last", "monitor": None, "save_top_k": 1, "enable_version_counter": False},
    "epoch_log": {"_target_": "seqrev.callbacks.EpochLog", "every_n_epochs": None},
    "attention_map": {"_target_": "seqrev.callbacks.AttentionMap", "dirpath": None, "n_examples": None},
}
"""seqrev's own callbacks (conf/callbacks/default.yaml) and the settings a pack honours: None where any
value is, else the one value it takes. A pack does their work itself (seqrev.pack_training)."""

TRAINER = {"max_steps": (-1, None), "limit_train_batches": (None, 1.0), "limit_val_batches": (None, 1.0),
           "limit_test_batches": (None, 1.0), "val_check_interval": (None, 1.0), "check_val_every_n_epoch": (1,),
           "precision": ("32-true", "32", 32), "gradient_clip_val": (None, 0, 0.0), "accumulate_grad_batches": (1,),
           "devices": (1, "auto"), "accelerator": ("auto", "cpu", "gpu", "cuda")}
"""Trainer options a pack honours, with the values it takes (anything else: an ordinary job)."""
TRAINER_ANY = {"_target_", "max_epochs", "deterministic", "num_sanity_val_steps", "log_every_n_steps",
               "enable_model_summary", "enable_progress_bar", "default_root_dir", "plugins", "gradient_clip_algorithm"}
"""Trainer options a pack takes whatever their value: its epochs, or what only Lightning's loop shows."""

MONITORED = ("val/loss", "val/acc", "val/seq_acc")


def _select(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def refusal(cfg: DictConfig, model_name: str | None) -> str | None:
    """Why this job cannot be a pack's member, in a few words; None when it can."""
    if model_name not in PACKED_WIRINGS:
        return f"model={model_name} is not one of the tutorial's five wirings, which are what packs train"
    if cfg.get("resume"):
        return "resume= continues one run"
    optimizer = str(_select(cfg, "model.optimizer._target_"))
    if optimizer not in ELEMENTWISE_OPTIMIZERS:
        return f"the optimizer {optimizer} is not one packs step exactly ({', '.join(ELEMENTWISE_OPTIMIZERS)})"
    scheduler = str(_select(cfg, "model.scheduler._target_") or "")
    if scheduler.endswith("ReduceLROnPlateau"):
        return "ReduceLROnPlateau follows each run's own validation loss, and a pack shares one rate"
    for key in (cfg.get("trainer") or {}).keys():
        value = _select(cfg, f"trainer.{key}")
        if key not in TRAINER_ANY and value not in TRAINER.get(key, ()):
            return f"trainer.{key}={value!r} is not something packs do"
    for name, settings in (cfg.get("callbacks") or {}).items():
        reason = _callback_refusal(str(name), settings)
        if reason:
            return reason
    return None


def _callback_refusal(name: str, settings: DictConfig | None) -> str | None:
    honoured = CALLBACKS.get(name)
    target = str((settings or {}).get("_target_"))
    if honoured is None or target != honoured["_target_"]:
        return f"the callback callbacks.{name} ({target}) runs inside Lightning's loop, which packs do not use"
    for key, value in (settings or {}).items():
        if key not in honoured or (honoured[key] is not None and value != honoured[key]):
            return f"callbacks.{name}.{key}={value!r} is not something packs do"
    monitor = (settings or {}).get("monitor")
    if name in ("early_stopping", "model_checkpoint") and monitor not in MONITORED:
        return f"callbacks.{name}.monitor={monitor!r}: packs monitor one of {', '.join(MONITORED)}"
    return None


def pack_key(cfg: DictConfig, model_name: str | None, resolve: bool = True) -> str:
    """Equal for two jobs exactly when they differ in nothing but their seeds (and where files go). With
    `resolve=False`, of the settings as written: jobs equal there may still differ once resolved."""
    settings = {key: OmegaConf.to_container(cfg[key], resolve=resolve) if OmegaConf.is_config(cfg[key]) else cfg[key]
                for key in cfg.keys() if key not in ("seed", "paths", "run_name", "resume")}
    settings.get("data", {}).pop("seed", None)
    for section in ("callbacks", "logger"):
        for entry in (settings.get(section) or {}).values():
            for path_key in ("dirpath", "save_dir", "name", "version", "tracking_uri", "run_name"):
                (entry or {}).pop(path_key, None)  # each job's own folder, or named after it
    settings.get("trainer", {}).pop("default_root_dir", None)
    return json.dumps([model_name, settings], sort_keys=True, default=str)

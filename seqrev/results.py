"""results.json: what one run measured. Plain JSON, written atomically; no torch needed to read it.

`RunResults` is the one definition of its fields: training fills it, TensorBoard's HPARAMS tab,
the report and the tests read it.
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Union, get_args, get_origin, get_type_hints

from omegaconf import OmegaConf

from seqrev.atomic import atomic_write

if TYPE_CHECKING:
    from omegaconf import DictConfig

FILENAME = "results.json"


class RunIdentity(TypedDict):
    """What a run is: readable even from a config that failed validation (values may then be None)."""

    model: str | None
    task: str | None
    cell: str | None
    timesteps: int | None
    min_timesteps: int | None
    n_features: int | None
    units: int | None
    seed: int | None
    scheduler: str | None  # the learning-rate schedule's class name, "none" for the tutorial's constant rate
    config: dict[str, Any] | None  # every setting that defines the experiment: data, model, trainer, early_stopping
    tags: dict[str, Any] | None  # the user's own labels (`+tags.NAME=VALUE`), which nothing reads


class RunScores(TypedDict):
    """What a finished run (status ok) measured; accuracies are fractions in [0, 1]."""

    trainable_params: int
    epochs_run: int
    stopped_early: bool
    tested: str  # which weights the test scores are of
    train_acc: float
    train_seq_acc: float
    val_acc: float
    val_loss: float
    test_acc: float
    test_seq_acc: float
    test_loss: float
    test_acc_per_position: list[float]
    extra: dict[str, float]  # scalars logged under `extra/` by a callback of the user's
    history: list[dict[str, float]]  # each validation: its epoch, val/loss and val/acc (callbacks.history)
    examples: list[dict[str, list[int]]]  # the first test pairs: input, expected, predicted
    fit_seconds: float
    resumed: bool


class RunResults(RunIdentity, RunScores, total=False):
    """results.json. `status` and `run_dir` always; the scores when status is ok; `error` (with
    `error_type`, and `traceback` for an unexpected error) when it is failed or interrupted."""

    status: Literal["ok", "failed", "interrupted"]
    run_dir: str
    error: str
    error_type: str
    traceback: str


IDENTITY_FIELDS: tuple[str, ...] = tuple(get_type_hints(RunIdentity))


def write_results(run_dir: str | Path, results: RunResults | dict[str, Any]) -> Path:
    """Write through a temporary file and a rename, so a reader never sees half a file."""
    path = Path(run_dir) / FILENAME
    text = json.dumps(results, indent=2) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode()))
    return path


def read_results(path: str | Path) -> RunResults:
    """A results.json, its fields checked (`check_fields`); OSError or ValueError, naming the file, if not."""
    with open(path) as handle:
        results = json.load(handle)
    if not isinstance(results, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    check_fields(results, path)
    return results


REQUIRED_WHEN_OK = ("model", "timesteps", "units", "test_acc", "test_seq_acc", "epochs_run", "test_acc_per_position")
"""What every finished run's results.json has held, from the first version on: what the report reads."""


def check_fields(results: dict[str, Any], path: str | Path) -> None:
    """ValueError, naming the file and the field, for a field of RunResults that is missing (status; for a
    finished run REQUIRED_WHEN_OK) or of the wrong type. Fields results.json does not define pass."""
    hints = get_type_hints(RunResults)
    required = ["status", *(REQUIRED_WHEN_OK if results.get("status") == "ok" else ())]
    for key in required:
        if results.get(key) is None:
            raise ValueError(f"{path}: the field {key!r} is missing")
    for key, value in results.items():
        if key in hints and not _fits(value, hints[key]):
            shown = json.dumps(value)[:40]
            raise ValueError(f"{path}: the field {key!r} holds {shown}, which is not {_kind(hints[key])}")


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value has the type a RunResults field declares."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if origin is Literal:
        return value in args
    if origin is list:
        return isinstance(value, list) and all(_fits(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(_fits(item, args[1]) for item in value.values())
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _kind(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Union or str(origin) == "<class 'types.UnionType'>":
        return " or ".join(_kind(arg) for arg in args)
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    names = {float: "a number", int: "a whole number", str: "text", bool: "true or false", type(None): "null"}
    return names.get(hint, f"a {getattr(origin or hint, '__name__', str(hint))}")


def flat_settings(config: dict[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """`config` as {"data.n_train": 2000, "model.optimizer.lr": 0.001, ...}: one key per setting."""
    flat: dict[str, Any] = {}
    for key, value in (config or {}).items():
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else value
    return flat


def run_parameters(run: dict[str, Any]) -> dict[str, int | float | str | bool]:
    """What a run is and every setting of its experiment, one plain value each (None and lists as text):
    the parameters TensorBoard's HPARAMS tab and the other trackers show."""
    params = {key: run.get(key) for key in IDENTITY_FIELDS if key not in ("config", "tags")}
    params.update({key: value for key, value in flat_settings(run.get("config")).items() if key not in params})
    params.update(flat_settings(run.get("tags"), "tags."))
    return {key: value if isinstance(value, (int, float, str, bool)) else str(value) for key, value in params.items()}


def describe(cfg: DictConfig, model_name: str | None = None) -> RunIdentity:
    """The fields that say what a run is, readable even from a config that failed validation. `model_name`:
    its wiring's name, as whoever makes the run knows it (else the class its config names stands for it)."""
    select = lambda key: OmegaConf.select(cfg, key, default=None, throw_on_missing=False)  # noqa: E731
    return {"model": model_name or str(select("model._target_") or "") or None,
            "timesteps": select("data.timesteps"), "n_features": select("data.n_features"),
            "units": select("model.units"), "seed": select("seed"), "task": select("data.task"),
            "min_timesteps": select("data.min_timesteps"), "cell": select("model.cell"),
            "scheduler": str(select("model.scheduler._target_") or "none").rpartition(".")[2],
            "config": experiment_settings(cfg), "tags": _plain(select("tags"))}


def _plain(node: Any) -> Any:
    try:
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    except Exception:  # noqa: BLE001 - labels that cannot resolve are not recorded
        return None


# What defines an experiment, recorded in results.json under `config` so runs compare without .hydra/
# (the report groups by whatever of it varies): everything but where files go and how fast it runs.
NOT_THE_EXPERIMENT = ("data._target_", "data.eval_batch_size", "data.steps_per_call", "model._target_",
                      "model._recursive_", "trainer._target_", "trainer.default_root_dir", "trainer.plugins",
                      "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
                      "trainer.num_sanity_val_steps", "trainer.deterministic")


def experiment_settings(cfg: DictConfig) -> dict[str, Any] | None:
    """The resolved data, model (optimizer and schedule included), trainer and early-stopping settings."""
    try:
        settings = {
            "data": OmegaConf.to_container(cfg.data, resolve=True),
            "model": OmegaConf.to_container(cfg.model, resolve=True),
            "trainer": OmegaConf.to_container(cfg.trainer, resolve=True),
            "early_stopping": OmegaConf.to_container(cfg.callbacks.early_stopping, resolve=True)
            if OmegaConf.select(cfg, "callbacks.early_stopping") is not None else None,
        }
    except Exception:  # noqa: BLE001 - a config that cannot resolve (it failed validation): no record
        return None
    for key in NOT_THE_EXPERIMENT:
        section, _, name = key.partition(".")
        if isinstance(settings.get(section), dict):
            settings[section].pop(name, None)
    if isinstance(settings["early_stopping"], dict):
        settings["early_stopping"].pop("_target_", None)
    return settings

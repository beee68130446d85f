"""results.json: what one run measured. Plain JSON, written atomically; no torch needed to read it.

`RunResults` is the one definition of its fields: training fills it, TensorBoard's HPARAMS tab,
the report and the tests read it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypedDict, get_type_hints

from seqrev.atomic import atomic_write

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


class RunScores(TypedDict):
    """What a finished run (status ok) measured; accuracies are fractions in [0, 1]."""

    trainable_params: int
    epochs_run: int
    stopped_early: bool
    train_acc: float
    train_seq_acc: float
    val_acc: float
    val_loss: float
    test_acc: float
    test_seq_acc: float
    test_loss: float
    test_acc_per_position: list[float]
    extra: dict[str, float]  # scalars logged under `extra/` by a callback of the user's
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
    with open(path) as handle:
        results = json.load(handle)
    if not isinstance(results, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return results


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
    params = {key: run.get(key) for key in IDENTITY_FIELDS if key != "config"}
    params.update({key: value for key, value in flat_settings(run.get("config")).items() if key not in params})
    return {key: value if isinstance(value, (int, float, str, bool)) else str(value) for key, value in params.items()}

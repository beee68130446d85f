"""seqrev's configs without importing torch: which wirings have one (one YAML each in `conf/model/`),
and the train config composed outside a run.

A wiring's name is its config file's name (`model=NAME`); its class says the same in `name`
(tests/test_catalog.py checks both ways). The tutorial's five come first, in its order (models 1-5);
any other wiring follows alphabetically. The report, the benchmark and the tests take the list from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(str(resources.files("seqrev.conf")))
"""seqrev's configs: the repository's conf/, installed as the package seqrev.conf (see pyproject.toml)."""
TUTORIAL_WIRINGS = ("single_default", "stacked_default", "return_sequences", "return_state", "both_outputs")


def ordered(names: Iterable[str]) -> list[str]:
    """Wiring names in report order: the tutorial's models 1-5, then the rest alphabetically."""
    names = set(names)
    return [n for n in TUTORIAL_WIRINGS if n in names] + sorted(names - set(TUTORIAL_WIRINGS))


def wiring_names(config_dir: Path = CONFIG_DIR) -> list[str]:
    """Every wiring that has a config file, in report order."""
    return ordered(p.stem for p in (config_dir / "model").glob("*.yaml"))


def compose(overrides: Iterable[str] = (), config_dir: Path = CONFIG_DIR, with_hydra: bool = False) -> Any:
    """seqrev's train config composed with `overrides`, as Hydra composes a run's (its `hydra` node too,
    with `with_hydra`), outside any run: for checks, the benchmark and tests."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import seqrev.config  # noqa: F401 - registers the resolvers the configs use

    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=list(overrides), return_hydra_config=with_hydra)

"""seqrev's configs without importing torch: the wirings that have one (`conf/model/NAME.yaml`), what
each one's class declares, and the train config composed outside a run.

A class declares `name`, `tutorial_model` and `packs` (seqrev.models.base); they are read here from its
source, so the report and the packed launcher, which never import torch, read the registry the classes
are (tests/test_catalog.py checks both ways).
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

# Imports inside functions: Hydra's composition loads only when a config is composed: the report reads the catalog
# without it.

PACKAGE_DIR = Path(__file__).parent


def _config_source() -> tuple[Path, str]:
    """seqrev's configs and Hydra's name for them: the repository's conf/, installed as the package
    seqrev.conf (pyproject.toml); or, where a clone's seqrev/ shadows the installed package (Python run
    from the clone's root finds the folder first, and it has no conf), the clone's conf/ beside it."""
    try:
        return Path(str(resources.files("seqrev.conf"))), "pkg://seqrev.conf"
    except ModuleNotFoundError:
        return PACKAGE_DIR.parent / "conf", str(PACKAGE_DIR.parent / "conf")


CONFIG_DIR, HYDRA_CONFIG_PATH = _config_source()


class Wiring(NamedTuple):
    """What a wiring's class declares: its name, its number among the tutorial's models, whether it packs."""

    name: str
    tutorial_model: int | None
    packs: bool


def declared(source: Path, class_name: str) -> dict[str, Any]:
    """The constants class `class_name` of the module `source` sets in its body or inherits (from a class of
    the same module or of a seqrev module it imports), as Python would: the source read, not run."""
    body = ast.parse(source.read_text()).body
    node = next((n for n in body if isinstance(n, ast.ClassDef) and n.name == class_name), None)
    if node is None:
        return {}
    imported = {alias.asname or alias.name: module_source(statement.module) for statement in body
                if isinstance(statement, ast.ImportFrom) and (statement.module or "").startswith("seqrev.")
                for alias in statement.names}
    facts: dict[str, Any] = {}
    for base in reversed(node.bases):  # the first base wins, as in Python's method resolution
        if isinstance(base, ast.Name):
            base_source = imported.get(base.id) or source
            if base_source.is_file() and (base_source, base.id) != (source, class_name):
                facts.update({k: v for k, v in declared(base_source, base.id).items() if k != "name"})
    facts.update({target.id: statement.value.value for statement in node.body
                  if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant)
                  for target in statement.targets if isinstance(target, ast.Name)})
    return facts


def module_source(module: str) -> Path:
    """The source file of a seqrev module (`seqrev.models.base`: seqrev/models/base.py)."""
    return PACKAGE_DIR.joinpath(*module.split(".")[1:]).with_suffix(".py")


@functools.cache
def wirings(config_dir: Path = CONFIG_DIR) -> dict[str, Wiring]:
    """Every wiring that has a config file, in report order: the tutorial's models 1-5, then the rest
    alphabetically. A class outside seqrev (a config of your own) is known by its name alone."""
    found = {}
    for path in (config_dir / "model").glob("*.yaml"):
        target = re.search(r"^_target_:\s*([\w.]+)", path.read_text(), re.M)
        module, _, class_name = (target.group(1) if target else "").rpartition(".")
        source = module_source(module)
        facts = declared(source, class_name) if module.startswith("seqrev.") and source.is_file() else {}
        found[path.stem] = Wiring(path.stem, facts.get("tutorial_model"), bool(facts.get("packs", False)))
    return {name: found[name] for name in ordered(found, found)}


def ordered(names: Iterable[str], known: dict[str, Wiring] | None = None) -> list[str]:
    """Wiring names in report order: the tutorial's models 1-5, then the rest alphabetically."""
    known = wirings() if known is None else known

    def order(name: str) -> tuple[int, str]:
        wiring = known.get(name)
        return (wiring.tutorial_model if wiring and wiring.tutorial_model else 99, name)

    return sorted(set(names), key=order)


def wiring_names(config_dir: Path = CONFIG_DIR) -> list[str]:
    """Every wiring that has a config file, in report order."""
    return list(wirings(config_dir))


def compose(overrides: Iterable[str] = (), config_dir: Path = CONFIG_DIR, with_hydra: bool = False) -> Any:
    """seqrev's train config composed with `overrides`, as Hydra composes a run's (its `hydra` node too,
    with `with_hydra`), outside any run: for checks, the benchmark and tests."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import seqrev.config  # noqa: F401 - registers the resolvers the configs use

    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=list(overrides), return_hydra_config=with_hydra)


TUTORIAL_WIRINGS = tuple(name for name, wiring in wirings().items() if wiring.tutorial_model)
"""The tutorial's models 1-5, in its order, as their classes declare them."""

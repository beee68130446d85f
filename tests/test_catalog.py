"""One list of wirings: every config file names exactly one wiring class, and every class has its file."""

import importlib

import yaml

from seqrev.catalog import TUTORIAL_WIRINGS, wiring_names, wirings
from seqrev.models import WIRINGS

from conftest import CONF


def target_class(name: str):
    target = yaml.safe_load((CONF / "model" / f"{name}.yaml").read_text())["_target_"]
    module, _, attribute = target.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def test_every_model_config_maps_to_one_class_and_back():
    names = wiring_names()
    assert names[:5] == list(TUTORIAL_WIRINGS)  # the tutorial's models 1-5 first, in its order
    classes = {name: target_class(name) for name in names}
    assert len(set(classes.values())) == len(classes)  # no class behind two names
    for name, cls in classes.items():
        assert cls.name == name, f"conf/model/{name}.yaml builds {cls.__name__}, whose name is {cls.name!r}"
    assert {name: cls for name, cls in WIRINGS.items()} == classes


def test_what_the_catalog_reads_without_torch_is_what_each_class_declares():
    for name, wiring in wirings().items():
        cls = WIRINGS[name]
        assert (wiring.tutorial_model, wiring.packs) == (cls.tutorial_model, cls.packs), name
    assert [WIRINGS[name].tutorial_model for name in TUTORIAL_WIRINGS] == [1, 2, 3, 4, 5]
    assert not WIRINGS["attention"].packs and WIRINGS["return_state"].packs


def test_a_clone_whose_seqrev_shadows_the_installed_package_finds_the_clones_configs(monkeypatch):
    """From a clone's root Python imports the clone's seqrev/, which has no conf: its configs are the
    clone's conf/ beside it, handed to Hydra as a folder (ci/wheel-check runs it for real)."""
    from importlib import resources

    import seqrev.catalog as catalog

    assert catalog._config_source()[1] == "pkg://seqrev.conf"

    def not_installed(package: str):
        raise ModuleNotFoundError(f"No module named {package!r}")

    monkeypatch.setattr(resources, "files", not_installed)
    folder, hydra_path = catalog._config_source()
    assert hydra_path == str(folder) and (folder / "train.yaml").is_file()
    assert (folder / "model" / "both_outputs.yaml").read_text() == (CONF / "model" / "both_outputs.yaml").read_text()


def test_the_catalog_sees_what_a_class_inherits_as_python_does(tmp_path):
    """A wiring that inherits `packs = True` packs: the catalog's read of the source follows its bases."""
    from seqrev.catalog import declared

    source = tmp_path / "mine.py"
    source.write_text("class Base:\n    packs = True\n    tutorial_model = 3\n    name = 'base'\n\n"
                      "class Other:\n    packs = False\n\n"
                      "class Child(Base):\n    name = 'child'\n\n"
                      "class Mixed(Other, Base):\n    tutorial_model = None\n")
    assert declared(source, "Child") == {"packs": True, "tutorial_model": 3, "name": "child"}
    assert declared(source, "Mixed") == {"packs": False, "tutorial_model": None}
    assert declared(source, "Missing") == {}

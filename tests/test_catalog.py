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

"""The layer table of docs/layers.md (moved there from the README) names exactly the registered
layer types, each in its module."""
import os
import re

import minicaffe
from minicaffe.layer import layer_class, layer_type_list

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "layers.md")


def _table():
    text = open(README, encoding="utf-8").read()
    body = text.split("<!-- layer-table -->")[1].split("<!-- /layer-table -->")[0]
    rows = {}
    for line in body.splitlines():
        m = re.match(r"\| `(\w+)\.py` \| (.+) \|$", line.strip())
        if m:
            names = re.sub(r"\(.*?\)", "", m.group(2))
            rows[m.group(1)] = [n.strip().rstrip("†") for n in names.split(",") if n.strip()]
    return rows


def test_layer_table_is_the_registry():
    rows = _table()
    listed = sorted(t for types in rows.values() for t in types)
    assert listed == layer_type_list()
    for module, types in rows.items():
        for t in types:
            assert layer_class(t).__module__.split(".")[-1] == module, t


def test_dagger_marks_the_host_only_types():
    text = open(README, encoding="utf-8").read().split("<!-- layer-table -->")[1]
    text = text.split("<!-- /layer-table -->")[0]
    host = set(re.findall(r"(\w+)†", text))
    for t in layer_type_list():
        cls = layer_class(t)
        own_gpu = any("forward_gpu" in vars(c) for c in cls.__mro__ if c is not minicaffe.layer.Layer)
        assert (t in host) == (not own_gpu), t

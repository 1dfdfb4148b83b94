"""The ToyHome family's generic trunk: tools/make_trunk trains it on the 64 generic things,
and the shipped file holds exactly the layers every ToyHome net shares."""
import os

import numpy as np
import pytest

from minicaffe import experiments, protoio
from minicaffe.commands import make_trunk
from minicaffe.net import TEST, Net

TRUNK_LAYERS = ["conv1", "conv2", "conv3", "fc6", "fc7"]


def _layers(path):
    p = protoio.read_net_param(path, binary=True)
    return {lp.name: [np.array(b.data).reshape(tuple(b.shape.dim)) for b in lp.blobs]
            for lp in p.layer}


def test_shipped_trunk_matches_the_family():
    got = _layers(make_trunk.default_trunk())
    assert sorted(got) == sorted(TRUNK_LAYERS)
    deploy = experiments.family_file("toyhome", "hash_deploy.prototxt")
    net = Net(deploy, TEST, weights=make_trunk.default_trunk())
    for name in TRUNK_LAYERS:
        w, b = got[name]
        assert w.shape == net.params[name][0].data.shape and np.isfinite(w).all()
        np.testing.assert_array_equal(net.params[name][0].data, w.astype(np.float32))
        np.testing.assert_array_equal(net.params[name][1].data, b.astype(np.float32))
    net.close()


@pytest.mark.integration
def test_make_trunk_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINICAFFE_DATA", str(tmp_path / "data"))
    out = str(tmp_path / "trunk.caffemodel")
    assert make_trunk.main(["--out", out, "--iters", "3", "--per_class", "1"]) == 0
    assert capsys.readouterr().out.strip() == out
    got = _layers(out)
    assert sorted(got) == sorted(TRUNK_LAYERS)          # the classifier (fc8_things) is not kept
    shipped = _layers(make_trunk.default_trunk())
    assert not np.allclose(got["conv1"][0], shipped["conv1"][0])  # a fresh training
    assert os.path.isdir(os.path.join(str(tmp_path / "data"), "toyhome-v1-s0-n1-64px-things"))
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]

"""The rest of pycaffe's surface: the ``import caffe`` alias, Net's batch helpers and raw
accessors, HDF5 weights, Blob's legacy axes, the solver's lr / share_weights, Timer,
Classifier, Detector and caffe.draw; values against NumPy."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import minicaffe as caffe
from minicaffe import draw, protoio
from minicaffe.proto import caffe_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(caffe.__file__)))

IP_NET = """
name: "ipnet"
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" }
                              bias_filler { type: "gaussian" } } }
"""


def run_py(args, tmp_path, extra_path=()):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, *extra_path]))
    return subprocess.run([sys.executable, *args], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=300)


# --- caffe.draw --------------------------------------------------------------------------------

def test_draw_bytes_phases_and_pydot(tmp_path):
    net = protoio.read_net_param(IP_NET + """
    layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "ip" top: "acc"
            include { phase: TEST } }""")
    dot = draw.draw_net(net, "LR", ext="dot").decode()
    assert dot.startswith('digraph "ipnet"') and "acc_Accuracy" in dot
    train = draw.draw_net(net, "TB", ext="dot", phase=caffe.TRAIN).decode()
    assert "acc_Accuracy" not in train and "rankdir=TB" in train
    if draw.shutil.which("dot"):
        png = draw.draw_net(net, "LR")
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        draw.draw_net_to_file(net, str(tmp_path / "n.svg"), phase=caffe.TEST)
        assert "<svg" in (tmp_path / "n.svg").read_text()
    try:
        import pydot  # noqa: F401
    except ImportError:
        return
    graph = draw.get_pydot_graph(net, "LR", phase=caffe.TEST)
    names = {n.get_name().strip('"') for n in graph.get_nodes()}
    assert {"in_Input", "ip_InnerProduct", "acc_Accuracy", "data_blob", "ip_blob"} <= names



"""Every prototxt of ../shared/zoo parses; every net builds and runs forward and backward.

The small nets run in the CI suite; the ImageNet-sized ones are marked slow
(``python -m pytest -m slow tests/test_zoo.py``). Train/val nets get their Data layers swapped
for Input layers of the same shapes (we have no datasets).
"""
import glob
import os

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe import protoio
from minicaffe.proto import caffe_pb2

ZOO = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "zoo"))
DATA_TYPES = ("Data", "ImageData", "MemoryData", "HDF5Data", "WindowData")

pytestmark = pytest.mark.skipif(not os.path.isdir(ZOO), reason="../shared/zoo not present")


def zoo(name):
    return os.path.join(ZOO, name)


def swap_data_for_input(param, shapes):
    """Replace the data layers of ``param`` by one Input layer per data layer with the given
    top shapes (``shapes``: top name → shape; the batch is shapes' first dim)."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    for lp in param.layer:
        if lp.type in DATA_TYPES:
            new = out.layer.add()
            new.name, new.type = lp.name, "Input"
            new.top.extend(lp.top)
            new.include.extend(lp.include)
            for t in lp.top:
                new.input_param.shape.add().dim.extend(shapes[t])
        else:
            out.layer.add().CopyFrom(lp)
    return out


def run_net(param, phase, feed_labels=None):
    net = caffe.Net(param, phase)
    for layer in net.layers:   # untrained BatchNorm statistics: mean 0, variance 1
        if layer.type == "BatchNorm":
            layer.blobs[1].data[...] = 1
            layer.blobs[2].data[...] = 1
    rng = np.random.default_rng(0)
    for name in net.inputs:
        b = net.blobs[name]
        if feed_labels and name in feed_labels:
            b.data[...] = rng.integers(0, feed_labels[name], b.shape)
        else:
            b.data[...] = rng.normal(size=b.shape)
    out = net.forward()
    for k, v in out.items():
        assert np.all(np.isfinite(v)), k
    net.backward()
    for name, params in net.params.items():
        for p in params:
            assert np.all(np.isfinite(p.diff)), name
    return net, out


def test_every_zoo_file_parses():
    files = sorted(glob.glob(os.path.join(ZOO, "*", "*.prototxt")))
    assert len(files) >= 30
    for f in files:
        if "solver" in os.path.basename(f):
            s = protoio.read_solver_param(f)
            assert s.base_lr > 0 or s.type == "AdaDelta", f
        else:
            assert len(protoio.read_net_param(f).layer) > 0, f


def _deploy(name, batch=1):
    p = protoio.read_net_param(zoo(name))
    for lp in p.layer:
        if lp.type == "Input":
            for s in lp.input_param.shape:
                s.dim[0] = batch
    return p


def test_lenet_deploy():
    net, out = run_net(_deploy("bvlc/mnist__lenet.prototxt", 2), caffe.TEST)
    assert out["prob"].shape == (2, 10)
    assert np.allclose(out["prob"].sum(1), 1, atol=1e-5)


def test_cifar10_quick_deploy():
    net, out = run_net(_deploy("bvlc/cifar10__cifar10_quick.prototxt", 2), caffe.TEST)
    assert out["prob"].shape == (2, 10)


@pytest.mark.parametrize("name,shapes,labels", [
    ("bvlc/mnist__lenet_train_test.prototxt", {"data": (4, 1, 28, 28), "label": (4,)}, {"label": 10}),
    ("bvlc/cifar10__cifar10_quick_train_test.prototxt", {"data": (2, 3, 32, 32), "label": (2,)}, {"label": 10}),
    ("bvlc/cifar10__cifar10_full_train_test.prototxt", {"data": (2, 3, 32, 32), "label": (2,)}, {"label": 10}),
    ("bvlc/cifar10__cifar10_full_sigmoid_train_test_bn.prototxt", {"data": (2, 3, 32, 32), "label": (2,)}, {"label": 10}),
    ("bvlc/siamese__mnist_siamese_train_test.prototxt", {"pair_data": (4, 2, 28, 28), "sim": (4,)}, {"sim": 2}),
])
def test_small_train_test_nets(name, shapes, labels):
    p = swap_data_for_input(protoio.read_net_param(zoo(name)), shapes)
    for phase in (caffe.TRAIN, caffe.TEST):
        net, out = run_net(p, phase, labels)
        losses = [k for k in out if net.blob_loss_weights.get(k)]
        assert losses, "no loss output in %s" % name
        if phase == caffe.TEST and "accuracy" in out:
            assert 0 <= float(out["accuracy"]) <= 1


def test_mnist_autoencoder():
    p = swap_data_for_input(protoio.read_net_param(zoo("bvlc/mnist__mnist_autoencoder.prototxt")),
                            {"data": (2, 1, 28, 28)})
    net, out = run_net(p, caffe.TRAIN)
    net.blobs["data"].data[...] = np.random.default_rng(1).random((2, 1, 28, 28))
    out = net.forward()
    assert "cross_entropy_loss" in out and "l2_error" in out


def test_lenet_trains_on_separable_data():
    """LeNet learns a trivially separable two-class problem: the whole pipeline is sound."""
    p = swap_data_for_input(protoio.read_net_param(zoo("bvlc/mnist__lenet_train_test.prototxt")),
                            {"data": (16, 1, 28, 28), "label": (16,)})
    s = caffe_pb2.SolverParameter()
    s.net_param.CopyFrom(p)
    s.base_lr, s.lr_policy, s.momentum, s.random_seed = 0.01, "fixed", 0.9, 3
    solver = caffe.get_solver(s)
    rng = np.random.default_rng(0)
    lab = np.arange(16) % 2
    x = rng.normal(0, 0.1, (16, 1, 28, 28))
    x[lab == 1, :, :14] += 1.0      # class 1 is bright on top
    solver.net.blobs["data"].data[...] = x
    solver.net.blobs["label"].data[...] = lab
    first = solver.net.forward()["loss"].item()
    solver.step(15)
    last = solver.net.forward()["loss"].item()
    assert last < 0.5 * first


LARGE = [
    ("bvlc/bvlc_alexnet__deploy.prototxt", (1, 1000)),
    ("bvlc/bvlc_reference_caffenet__deploy.prototxt", (1, 1000)),
    ("bvlc/bvlc_googlenet__deploy.prototxt", (1, 1000)),
    ("bvlc/net_surgery__bvlc_caffenet_full_conv.prototxt", None),
    ("resnet/ResNet-50-deploy.prototxt", (1, 1000)),
    ("squeezenet/SqueezeNet_v1.1_deploy.prototxt", None),
    ("mobilenet/mobilenet_deploy.prototxt", None),
    ("mobilenet/mobilenet_v2_deploy.prototxt", None),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,prob_shape", LARGE)
def test_large_deploy_nets(name, prob_shape):
    p = _deploy(name, 1)
    p.force_backward = True
    net, out = run_net(p, caffe.TEST)
    prob = out[net.outputs[0]]
    if prob_shape:
        assert prob.shape == prob_shape
    assert np.allclose(prob.reshape(prob.shape[0], prob.shape[1], -1).sum(1), 1, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name,shapes,labels", [
    ("bvlc/bvlc_alexnet__train_val.prototxt", {"data": (1, 3, 227, 227), "label": (1,)}, {"label": 1000}),
    ("bvlc/bvlc_reference_caffenet__train_val.prototxt", {"data": (1, 3, 227, 227), "label": (1,)}, {"label": 1000}),
    ("bvlc/bvlc_googlenet__train_val.prototxt", {"data": (1, 3, 224, 224), "label": (1,)}, {"label": 1000}),
    ("squeezenet/SqueezeNet_v1.1_train_val.prototxt", {"data": (1, 3, 227, 227), "label": (1,)}, {"label": 1000}),
    ("bvlc/finetune_flickr_style__train_val.prototxt", {"data": (1, 3, 227, 227), "label": (1,)}, {"label": 20}),
    ("transfer-caffe/DAN_alexnet_train_val.prototxt",
     {"source_data": (2, 3, 227, 227), "lp_labels": (2,), "target_data": (2, 3, 227, 227),
      "target_label": (2,), "data": (2, 3, 227, 227)}, {"lp_labels": 31, "target_label": 31}),
])
def test_large_train_val_nets(name, shapes, labels):
    p = swap_data_for_input(protoio.read_net_param(zoo(name)), shapes)
    for phase in (caffe.TRAIN, caffe.TEST):
        run_net(p, phase, labels)


def test_the_benchmarks_lenet_is_bvlcs():
    """tools/benchmark's embedded LeNet is the TRAIN net of BVLC's lenet_train_test.prototxt
    (its data layer's settings aside)."""
    from minicaffe.commands import benchmark
    from minicaffe.net import filter_net
    state = caffe_pb2.NetState(phase=caffe_pb2.TRAIN)
    ours = filter_net(protoio.read_net_param(benchmark.LENET), state)
    bvlc = filter_net(protoio.read_net_param(zoo("bvlc/mnist__lenet_train_test.prototxt")), state)
    def layers(p):
        return [(lp.name, lp.type, list(lp.bottom), list(lp.top), list(lp.param),
                 lp.convolution_param, lp.inner_product_param, lp.pooling_param)
                for lp in p.layer if lp.type != "Data"]
    assert layers(ours) == layers(bvlc)

"""The device plumbing: blob sync, mode switching, data staying on the device across a net,
CPU fallback layers in GPU mode, the matrix product (both back ends), the solver in both modes
(the update formulas on the device, GPUUpdater's history mirrors), tools/time --gpu."""
import os
import types

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe import backend, gpu
from minicaffe.blob import HEAD_AT_CPU, HEAD_AT_GPU, SYNCED, Blob
from minicaffe.solver import Solver
from minicaffe.solver.updates import RULES

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
DAH_LAYERS = os.path.join(ROOT, "prototxt", "dah_layers")


def test_blob_heads_and_device_helpers():
    backend.set_mode_gpu()
    assert backend.mode() == backend.GPU
    b = Blob((2, 3), np.float64)
    b.data[...] = np.arange(6).reshape(2, 3) - 2.5
    assert b.data_head == HEAD_AT_CPU
    dev = b.gpu_data(False)
    assert b.data_head == SYNCED and dev.size == 6
    b.diff[...] = 1.0
    b.gpu_diff()
    assert b.diff_head == HEAD_AT_GPU
    assert b.asum_data() == pytest.approx(np.abs(np.arange(6) - 2.5).sum())
    assert b.sumsq_diff() == pytest.approx(6.0)
    b.scale_diff(2.0)
    b.update()                                  # data −= diff, on the device
    assert b.data_head == HEAD_AT_GPU and b.diff_head == HEAD_AT_GPU
    np.testing.assert_allclose(b.data, np.arange(6).reshape(2, 3) - 4.5)
    b.set_diff(0.25)
    assert b.diff_head == HEAD_AT_GPU
    assert b.dot_data_diff() == pytest.approx(0.25 * (np.arange(6) - 4.5).sum())
    fresh = Blob((4,), np.float32)              # never written: zeros on the device
    np.testing.assert_array_equal(fresh.gpu_data().copy_to_host(), 0)
    backend.set_device(0)
    backend.synchronize()


NET = """
name: "mini"
layer { name: "in" type: "Input" top: "x" top: "label"
        input_param { shape { dim: 4 dim: 2 dim: 5 dim: 5 } shape { dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "norm" type: "LRN" bottom: "conv" top: "norm" lrn_param { local_size: 3 } }
layer { name: "pool" type: "Pooling" bottom: "norm" top: "pool"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "py" type: "Python" bottom: "pool" top: "pool2"
        python_param { module: "gpu_pylayer" layer: "Double" } }
layer { name: "fc" type: "InnerProduct" bottom: "pool2" top: "fc"
        inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "drop" type: "Dropout" bottom: "fc" top: "fc" }
layer { name: "bn" type: "BatchNorm" bottom: "fc" top: "bn" }
layer { name: "scale" type: "Scale" bottom: "bn" top: "bn" scale_param { bias_term: true } }
layer { name: "code" type: "TanH" bottom: "bn" top: "code" }
layer { name: "slice" type: "Slice" bottom: "code" top: "code_s" top: "code_t"
        slice_param { axis: 0 } }
layer { name: "lab" type: "Slice" bottom: "label" top: "lab_s" top: "lab_t" slice_param { axis: 0 } }
layer { name: "silence" type: "Silence" bottom: "lab_t" }
layer { name: "mmd" type: "MMDLoss" bottom: "code_s" bottom: "code_t" top: "mmd"
        mmd_param { bandwidth: MEDIAN } }
layer { name: "hash" type: "HashLoss" bottom: "code_s" bottom: "lab_s" top: "hash" }
layer { name: "entropy" type: "EntropyLoss" bottom: "code_t" bottom: "code_s" bottom: "lab_s"
        top: "entropy" entropy_loss_param { num_classes: 2 } }
layer { name: "cls" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "cls" }
"""


@pytest.fixture
def pylayer_module(tmp_path, monkeypatch):
    (tmp_path / "gpu_pylayer.py").write_text(
        "import minicaffe as caffe\n"
        "class Double(caffe.Layer):\n"
        "    def reshape(self, bottom, top):\n"
        "        top[0].reshape(*bottom[0].shape)\n"
        "    def forward(self, bottom, top):\n"
        "        top[0].data[...] = 2 * bottom[0].data\n"
        "    def backward(self, top, propagate_down, bottom):\n"
        "        bottom[0].diff[...] = 2 * top[0].diff\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    net_file = tmp_path / "net.prototxt"
    net_file.write_text(NET)
    return str(net_file)


def _run_net(path, gpu_mode):
    (backend.set_mode_gpu if gpu_mode else backend.set_mode_cpu)()
    backend.set_random_seed(5)
    net = caffe.Net(path, caffe.TRAIN, dtype=np.float64)
    rng = np.random.default_rng(0)
    net.blobs["x"].data[...] = rng.normal(size=(4, 2, 5, 5))
    net.blobs["label"].data[...] = [0, 1, 1, 0]
    net.clear_param_diffs()
    loss = net.forward_backward()
    return net, loss


def test_net_forward_backward_on_the_device(pylayer_module):
    cpu, cpu_loss = _run_net(pylayer_module, False)
    dev, dev_loss = _run_net(pylayer_module, True)
    assert dev_loss == pytest.approx(cpu_loss, rel=1e-5, abs=1e-5)
    # activations never went back to the host, except around the CPU-only Python layer
    for name in ["conv", "norm", "fc", "bn", "code", "code_s", "mmd", "cls"]:
        assert dev.blobs[name].data_head != HEAD_AT_CPU, name
    for name in ["conv", "norm", "fc", "code"]:
        assert dev.blobs[name].diff_head != HEAD_AT_CPU, name
    for layer in dev.layers:
        for b in layer.blobs:
            assert b.diff_head != HEAD_AT_CPU, layer.name
    for name in cpu.params:
        for bc, bd in zip(cpu.params[name], dev.params[name]):
            np.testing.assert_allclose(bd.data, bc.data, rtol=1e-5, atol=1e-5, err_msg=name)
            np.testing.assert_allclose(bd.diff, bc.diff, rtol=1e-5, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(dev.blobs["x"].diff, cpu.blobs["x"].diff, rtol=1e-5, atol=1e-5)


def _solver_param(rule, tmp_path, net=None):
    from google.protobuf import text_format

    from minicaffe import protoio
    p = protoio.read_solver_param(os.path.join(DAH_LAYERS, "solver.prototxt"))
    if net is None:
        p.net = os.path.join(DAH_LAYERS, "train.prototxt")
    else:
        p.ClearField("net")
        text_format.Merge(net, p.net_param)
    p.type = rule
    p.base_lr = 0.01
    p.display = 0
    p.snapshot_prefix = str(tmp_path / rule)
    if rule in ("AdaGrad", "RMSProp"):
        p.momentum = 0.0
    if rule == "Adam":
        p.momentum, p.momentum2, p.delta = 0.9, 0.999, 1e-8
    p.clip_gradients = 5.0
    return p


def _state(s):
    return ([np.array(b.data) for b in s.net.learnable_params],
            [np.array(h) for h in s.history + s.history2])


def _assert_same(a, b):
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def test_short_training_run_same_weights_in_both_modes(tmp_path):
    """The DAH layers' demo net, two iterations: CPU, and GPU (the update on the device, the
    same formulas)."""
    p = _solver_param("SGD", tmp_path)
    runs = []
    for gpu_mode in (False, True):
        (backend.set_mode_gpu if gpu_mode else backend.set_mode_cpu)()
        s = Solver(p, dtype=np.float64)
        s.step(2)
        s.snapshot()
        runs.append(_state(s))
    for w, h in runs[1:]:
        _assert_same(w, runs[0][0])
        _assert_same(h, runs[0][1])


TINY = """
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 3 dim: 4 } } }
layer { name: "fc" type: "InnerProduct" bottom: "x" top: "fc"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" }
                              bias_filler { type: "gaussian" } } }
"""


@pytest.mark.parametrize("regularization", ["L2", "L1"])
def test_device_update_rules(regularization, tmp_path):
    """Every rule on the device against the host (one formula, two compilations): the same synthetic gradients, two
    steps (histories carried over), gradient clipping, iter_size, lr and decay multipliers."""
    grads = [np.random.default_rng(i).normal(size=(2, 4)) * 3 for i in range(2)]
    bias = [np.random.default_rng(9 + i).normal(size=2) for i in range(2)]
    for rule in sorted(RULES):
        p = _solver_param(rule, tmp_path, TINY)
        p.regularization_type = regularization
        p.iter_size = 2
        runs = []
        for gpu_mode in (False, True):
            (backend.set_mode_gpu if gpu_mode else backend.set_mode_cpu)()
            s = Solver(p, dtype=np.float64)
            for g, gb in zip(grads, bias):
                w, b = s.net.learnable_params
                w.diff[...] = g
                b.diff[...] = gb
                s.apply_update()
            if gpu_mode:
                s._gpu_updater.to_host()
            runs.append(_state(s))
        _assert_same(runs[1][0], runs[0][0])
        _assert_same(runs[1][1], runs[0][1])


def test_gemm_through_the_cupy_path(monkeypatch):
    """The CuPy branch of gpu.gemm, run with NumPy standing in for CuPy (simulator arrays)."""
    if not backend.simulator_enabled():
        pytest.skip("the stand-in wraps simulator arrays")
    st = types.SimpleNamespace(as_strided=np.lib.stride_tricks.as_strided)
    fake = types.SimpleNamespace(asarray=lambda a: a._ary, matmul=np.matmul,
                                 multiply=np.multiply, lib=types.SimpleNamespace(stride_tricks=st))
    monkeypatch.setattr(gpu, "cupy_module", lambda: fake)
    rng = np.random.default_rng(0)
    m, n, k, nb = 3, 4, 5, 2
    for ta in (False, True):
        for tb in (False, True):
            A = rng.normal(size=(nb, k, m) if ta else (nb, m, k))
            B = rng.normal(size=(nb, n, k) if tb else (nb, k, n))
            C = rng.normal(size=(nb, m, n))
            opA = A.transpose(0, 2, 1) if ta else A
            opB = B.transpose(0, 2, 1) if tb else B
            for alpha, beta in ((1.0, 0.0), (0.5, 2.0)):
                c = gpu.to_device(C.ravel())
                gpu.gemm(ta, tb, m, n, k, alpha, gpu.to_device(A.ravel()),
                         gpu.to_device(B.ravel()), beta, c, batch=nb)
                np.testing.assert_allclose(c.copy_to_host().reshape(nb, m, n),
                                           alpha * opA @ opB + beta * C)
            c = gpu.to_device(C[0].ravel())
            gpu.gemm(ta, tb, m, n, k, 1.0, gpu.to_device(A.ravel()), gpu.to_device(B.ravel()),
                     1.0, c, batch=nb, reduce=True)
            np.testing.assert_allclose(c.copy_to_host().reshape(m, n),
                                       (opA @ opB).sum(0) + C[0])


def test_tools_time_gpu(pylayer_module, capsys):
    from minicaffe.commands.time import main
    assert main(["--model", pylayer_module, "--iterations", "1", "--gpu", "0"]) == 0
    assert backend.mode() == backend.GPU


def test_resume_on_the_device_continues_exactly(tmp_path):
    """A GPU run resumed from its .solverstate takes the same next step as the run that went
    on: the restored histories reach the device updater (GPUUpdater.from_host)."""
    p = _solver_param("Adam", tmp_path, TINY)
    backend.set_mode_gpu()
    s = Solver(p, dtype=np.float64)
    s.step(2)
    s.snapshot()
    s.step(2)
    went_on = _state(s)
    r = Solver(p, dtype=np.float64)
    r.step(1)                  # the device histories are in use, then overwritten by restore
    r.restore(str(tmp_path / "Adam_iter_2.solverstate"))
    r.step(2)
    _assert_same(_state(r)[0], went_on[0])
    _assert_same(_state(r)[1], went_on[1])
    backend.set_mode_cpu()

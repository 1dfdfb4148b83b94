"""The GradientChecker: Caffe's semantics, passing the first layers, failing a wrong one."""
import sys
import textwrap

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe.gradcheck import GradientChecker, GradientCheckError, empty_tops, gaussian_blobs, make_layer


def test_inner_product_passes():
    layer = make_layer('type: "InnerProduct" inner_product_param { num_output: 10 '
                       'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }')
    bottom = gaussian_blobs([(2, 3, 4, 5)])
    top = empty_tops(1)
    c = GradientChecker(1e-2, 1e-3)
    c.check_gradient_exhaustive(layer, bottom, top)
    assert c.checked > 0
    assert layer.blobs[0].dtype == np.float64


def test_inner_product_transpose_passes():
    layer = make_layer('type: "InnerProduct" inner_product_param { num_output: 4 transpose: true '
                       'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }')
    GradientChecker(1e-2, 1e-3).check_gradient_exhaustive(layer, gaussian_blobs([(2, 3, 2)]), empty_tops(1))


def test_relu_with_kink():
    for slope in (0.0, 0.1):
        layer = make_layer('type: "ReLU" relu_param { negative_slope: %g }' % slope)
        c = GradientChecker(1e-2, 1e-3, 1701, 0.0, 0.01)
        c.check_gradient_eltwise(layer, gaussian_blobs([(2, 3, 4, 5)]), empty_tops(1))
        assert c.checked > 100


def test_softmax_and_softmax_with_loss():
    GradientChecker(1e-2, 1e-3).check_gradient_exhaustive(
        make_layer('type: "Softmax"'), gaussian_blobs([(2, 10, 2, 3)]), empty_tops(1))
    for norm in ("FULL", "VALID", "BATCH_SIZE", "NONE"):
        layer = make_layer('type: "SoftmaxWithLoss" loss_param { normalization: %s ignore_label: 1 }' % norm)
        bottom = gaussian_blobs([(2, 5, 2, 3)])
        lab = caffe.Blob((2, 1, 2, 3), np.float64)
        lab.data[...] = np.random.default_rng(0).integers(0, 5, (2, 1, 2, 3))
        c = GradientChecker(1e-2, 1e-2, 1701)
        c.check_gradient_exhaustive(layer, bottom + [lab], empty_tops(1), check_bottom=0)
        assert c.checked > 0


def test_softmax_with_loss_value_matches_formula():
    layer = make_layer('type: "SoftmaxWithLoss" loss_param { ignore_label: 2 }')
    x = gaussian_blobs([(4, 3)])
    lab = caffe.Blob((4,), np.float64)
    lab.data[...] = [0, 2, 1, 2]
    top = empty_tops(1)
    layer.setup(x + [lab], top)
    layer.forward(x + [lab], top)
    z = x[0].data
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert np.isclose(top[0].data, -(np.log(p[0, 0]) + np.log(p[2, 1])) / 2)


def test_split_and_silence():
    GradientChecker(1e-2, 1e-2).check_gradient(
        make_layer('type: "Split"'), gaussian_blobs([(2, 3)]), empty_tops(3))
    layer = make_layer('type: "Silence"')
    b = gaussian_blobs([(2, 3)])
    b[0].diff[...] = 5
    layer.setup(b, [])
    layer.forward(b, [])
    layer.backward([], [True], b)
    assert np.all(b[0].diff == 0)


def test_dummy_data_and_input():
    layer = make_layer('type: "DummyData" dummy_data_param { shape { dim: 2 dim: 3 } '
                       'shape { dim: 4 } data_filler { type: "constant" value: 3 } }')
    top = empty_tops(2)
    layer.setup([], top)
    assert top[0].shape == (2, 3) and top[1].shape == (4,)
    assert np.all(top[0].data == 3) and np.all(top[1].data == 3)
    layer = make_layer('type: "DummyData" dummy_data_param { num: 2 channels: 1 height: 3 '
                       'width: 3 data_filler { type: "gaussian" } }')
    top = empty_tops(1)
    layer.setup([], top)
    first = top[0].data.copy()
    layer.forward([], top)
    assert top[0].shape == (2, 1, 3, 3) and not np.array_equal(first, top[0].data)


BROKEN = textwrap.dedent('''
    import minicaffe as caffe

    class Double(caffe.Layer):
        """y = 2x, with a deliberately wrong backward when param_str says so."""
        def setup(self, bottom, top):
            self.factor = 3.0 if self.param_str == "broken" else 2.0
        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].shape)
        def forward(self, bottom, top):
            top[0].data[...] = 2 * bottom[0].data
        def backward(self, top, propagate_down, bottom):
            bottom[0].diff[...] = self.factor * top[0].diff

    class Scale(caffe.Layer):
        """y = w * x with a learnable scalar w."""
        def setup(self, bottom, top):
            self.blobs.add_blob(1)
            self.blobs[0].data[...] = 1.5
        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].shape)
        def forward(self, bottom, top):
            top[0].data[...] = self.blobs[0].data[0] * bottom[0].data
        def backward(self, top, propagate_down, bottom):
            self.blobs[0].diff[0] += (top[0].diff * bottom[0].data).sum()
            if propagate_down[0]:
                bottom[0].diff[...] = self.blobs[0].data[0] * top[0].diff
''')


@pytest.fixture
def pymod(tmp_path, monkeypatch):
    (tmp_path / "mc_test_pylayers.py").write_text(BROKEN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "mc_test_pylayers"
    sys.modules.pop("mc_test_pylayers", None)


def test_python_layer_correct_passes_broken_fails(pymod):
    ok = make_layer('type: "Python" python_param { module: "%s" layer: "Double" }' % pymod)
    GradientChecker(1e-2, 1e-3).check_gradient_exhaustive(ok, gaussian_blobs([(2, 3)]), empty_tops(1))
    bad = make_layer('type: "Python" python_param { module: "%s" layer: "Double" '
                     'param_str: "broken" }' % pymod)
    with pytest.raises(GradientCheckError) as ei:
        GradientChecker(1e-2, 1e-3).check_gradient_exhaustive(bad, gaussian_blobs([(2, 3)]), empty_tops(1))
    assert "computed" in str(ei.value) and len(ei.value.failures) == 6


def test_python_layer_with_params_in_a_net(pymod):
    text = """
    force_backward: true
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "s" type: "Python" bottom: "x" top: "y" python_param { module: "%s" layer: "Scale" } }
    """ % pymod
    net = caffe.Net(text, caffe.TRAIN)
    assert list(net.params) == ["s"] and net.params["s"][0].data[0] == 1.5
    x = np.ones((2, 3), np.float32)
    assert np.allclose(net.forward(x=x)["y"], 1.5)
    net.backward(y=np.ones((2, 3), np.float32))
    assert np.isclose(net.params["s"][0].diff[0], 6.0)
    layer = make_layer('type: "Python" python_param { module: "%s" layer: "Scale" }' % pymod)
    GradientChecker(1e-2, 1e-3).check_gradient_exhaustive(layer, gaussian_blobs([(2, 3)]), empty_tops(1))


def test_python_layer_import_error_is_clear():
    with pytest.raises(caffe.NetError, match="cannot import module 'no_such_mod'"):
        make_layer('type: "Python" python_param { module: "no_such_mod" layer: "X" }')


def test_checker_detects_wrong_param_gradient_and_kink_skip():
    layer = make_layer('type: "InnerProduct" inner_product_param { num_output: 2 '
                       'weight_filler { type: "gaussian" } }')
    orig = type(layer).backward_cpu

    def wrong(self, top, pd, bottom):
        orig(self, top, pd, bottom)
        self.blobs[1].diff[...] *= 1.5

    layer.backward_cpu = wrong.__get__(layer)
    with pytest.raises(GradientCheckError, match="param 1"):
        GradientChecker(1e-2, 1e-3).check_gradient(layer, gaussian_blobs([(3, 4)]), empty_tops(1))
    # the kink range skips every element when it covers all inputs
    c = GradientChecker(1e-2, 1e-3, 1701, 0.0, 100.0)
    relu = make_layer('type: "ReLU"')
    c.check_gradient_eltwise(relu, gaussian_blobs([(2, 3)]), empty_tops(1))
    assert c.checked == 0


def test_seed_reset_before_every_forward():
    calls = []

    class Noisy(caffe.Layer):
        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].shape)

        def forward(self, bottom, top):
            r = caffe.backend.rng().random(bottom[0].shape)
            calls.append(r[0, 0])
            top[0].data[...] = bottom[0].data * (r > 0.5)

    mod = type(sys)("mc_noisy")
    mod.Noisy = Noisy
    sys.modules["mc_noisy"] = mod
    try:
        layer = make_layer('type: "Python" python_param { module: "mc_noisy" layer: "Noisy" }')
        b, t = gaussian_blobs([(2, 3)]), empty_tops(1)
        layer.setup(b, t)
        c = GradientChecker(1e-2, 1e-3)
        c._forward(layer, b, t, -1, -1)
        c._forward(layer, b, t, -1, -1)
        assert calls[-1] == calls[-2]
    finally:
        del sys.modules["mc_noisy"]


PYNET = """layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "s" type: "Python" bottom: "x" top: "y" python_param { module: "%s" layer: "%s" } }
"""

WHERE = '''
import minicaffe as caffe

class Where(caffe.Layer):
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)
    def forward(self, bottom, top):
        top[0].data[...] = %s
'''


def test_python_layer_refuses_what_is_not_a_layer(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(PYNET % ("os", "system"))
    with pytest.raises(caffe.NetError, match=r"^%s:2: Python layer s: os.system is not a caffe.Layer "
                       r"subclass \(it is builtin_function_or_method\); refusing to call it$" % path):
        caffe.Net(str(path), caffe.TEST)
    path.write_text(PYNET % ("collections", "OrderedDict"))
    with pytest.raises(caffe.NetError, match="collections.OrderedDict is not a caffe.Layer subclass"):
        caffe.Net(str(path), caffe.TEST)
    path.write_text(PYNET % ("builtins", "exec"))   # a built-in module: no file on sys.path
    with pytest.raises(caffe.NetError, match=r"builtins.exec is not a caffe.Layer subclass"):
        caffe.Net(str(path), caffe.TEST)


def test_python_layer_module_beside_the_prototxt_wins_over_the_cwd(tmp_path, monkeypatch, caplog):
    netdir, cwd = tmp_path / "nets", tmp_path / "elsewhere"
    netdir.mkdir()
    cwd.mkdir()
    (netdir / "net.prototxt").write_text(PYNET % ("mc_where_layer", "Where"))
    (netdir / "mc_where_layer.py").write_text(WHERE % "1.0")
    monkeypatch.chdir(cwd)
    try:
        net = caffe.Net(str(netdir / "net.prototxt"), caffe.TEST)   # found beside the prototxt
        assert net.forward(x=np.zeros((2, 3), np.float32))["y"][0, 0] == 1.0
        sys.modules.pop("mc_where_layer")
        (cwd / "mc_where_layer.py").write_text(WHERE % "2.0")
        with caplog.at_level("WARNING", logger="minicaffe"):
            net = caffe.Net(str(netdir / "net.prototxt"), caffe.TEST)
        assert net.forward(x=np.zeros((2, 3), np.float32))["y"][0, 0] == 1.0
        assert ("Python layer s: module 'mc_where_layer' is imported from %s; %s also has one, "
                "which is not used" % (netdir / "mc_where_layer.py", cwd / "mc_where_layer.py")) in caplog.text
        sys.modules.pop("mc_where_layer")
        monkeypatch.syspath_prepend(str(tmp_path / "explicit"))   # PYTHONPATH comes first
        (tmp_path / "explicit").mkdir()
        (tmp_path / "explicit" / "mc_where_layer.py").write_text(WHERE % "3.0")
        net = caffe.Net(str(netdir / "net.prototxt"), caffe.TEST)
        assert net.forward(x=np.zeros((2, 3), np.float32))["y"][0, 0] == 3.0
    finally:
        sys.modules.pop("mc_where_layer", None)


def test_solver_nets_know_their_file(tmp_path, monkeypatch):
    netdir = tmp_path / "nets"
    netdir.mkdir()
    (netdir / "mc_where_solver.py").write_text(WHERE % "bottom[0].data")
    (netdir / "net.prototxt").write_text(PYNET % ("mc_where_solver", "Where") +
                                         'layer { name: "l" type: "EuclideanLoss" bottom: "y" bottom: "x" top: "loss" }\n')
    (netdir / "solver.prototxt").write_text('net: "net.prototxt" base_lr: 0.1 lr_policy: "fixed"\n')
    monkeypatch.chdir(tmp_path)
    try:
        s = caffe.get_solver(str(netdir / "solver.prototxt"))   # the module is beside the net file
        assert s.net.source == str(netdir / "net.prototxt")
    finally:
        sys.modules.pop("mc_where_solver", None)
    (netdir / "net.prototxt").write_text(PYNET.replace('bottom: "x"', 'bottom: "q"') % ("mc_where_solver", "Where"))
    with pytest.raises(caffe.NetError, match=r"^%s:2: Unknown bottom blob 'q'" % (netdir / "net.prototxt")):
        caffe.get_solver(str(netdir / "solver.prototxt"))
    sys.modules.pop("mc_where_solver", None)

"""The rest of pycaffe's surface: the ``import caffe`` alias, Net's batch helpers and raw
accessors, HDF5 weights, Blob's legacy axes, the solver's lr / share_weights, Timer,
Classifier, Detector and caffe.draw; values against NumPy."""
import os
import re
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


# --- the alias ---------------------------------------------------------------------------------

ALIAS_CHECK = """
import sys, minicaffe
caffe = minicaffe.install_caffe_alias()
assert minicaffe.install_caffe_alias() is caffe          # again: nothing changes
import caffe as c2
from caffe import layers as L, params as P
from caffe.proto import caffe_pb2
import caffe.io, caffe.draw, caffe.net_spec, caffe.coord_map, caffe.proto.caffe_pb2
from caffe.coord_map import crop
from caffe.pycaffe import Net
assert c2 is caffe and L is minicaffe.net_spec.layers and P.Pooling.MAX == 0
assert caffe_pb2 is minicaffe.proto.caffe_pb2 and caffe.io is minicaffe.io and Net is minicaffe.Net
assert type(minicaffe.layers).__name__ == "module"       # minicaffe's own package is untouched
n = caffe.NetSpec(); n.data = L.Input(shape=dict(dim=[1, 2])); n.ip = L.InnerProduct(n.data, num_output=3)
print(caffe.Net(str(n.to_proto()), caffe.TEST).blobs["ip"].shape)
caffe.init_log(0)
caffe.log("hello from pycaffe")
assert not caffe.has_nccl() and caffe.solver_count() == 1
"""


@pytest.mark.integration
def test_install_caffe_alias_gives_pycaffe_names(tmp_path):
    proc = run_py(["-c", ALIAS_CHECK], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(1, 3)"
    assert re.search(r"^I\d{4} [\d:.]+ +\d+ \S+:\d+\] hello from pycaffe$", proc.stderr, re.M)


@pytest.mark.integration
def test_run_a_pycaffe_script_unchanged(tmp_path):
    """A script and its Python layer module both ``import caffe``; argv and sys.path[0] are
    what ``python script.py`` gives."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "double_layer.py").write_text(
        "import caffe\n"
        "class Double(caffe.Layer):\n"
        "    def reshape(self, bottom, top):\n"
        "        top[0].reshape(*bottom[0].data.shape)\n"
        "    def forward(self, bottom, top):\n"
        "        top[0].data[...] = 2 * bottom[0].data\n")
    (tmp_path / "scripts" / "run.py").write_text(
        "import sys, caffe\n"
        "net = caffe.Net(sys.argv[1], caffe.TEST)\n"
        "net.blobs['x'].data[...] = 3\n"
        "print(sys.argv[2], float(net.forward()['y'].sum()))\n")
    (tmp_path / "net.prototxt").write_text(
        'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 } } }\n'
        'layer { name: "d" type: "Python" bottom: "x" top: "y" '
        'python_param { module: "double_layer" layer: "Double" } }\n')
    proc = run_py(["-m", "minicaffe.pycaffe", "scripts/run.py", "net.prototxt", "hello"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["hello", "12.0"]


@pytest.mark.integration
def test_the_alias_never_shadows_a_real_pycaffe(tmp_path):
    fake = tmp_path / "site" / "caffe"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("REAL = True\n")
    (tmp_path / "s.py").write_text("import caffe; print(caffe.REAL)\n")
    proc = run_py(["-m", "minicaffe.pycaffe", "s.py"], tmp_path, [str(tmp_path / "site")])
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "pycaffe is installed" in proc.stderr
    assert str(fake) in proc.stderr
    proc = run_py(["-c", "import minicaffe; minicaffe.install_caffe_alias()"], tmp_path,
                  [str(tmp_path / "site")])
    assert proc.returncode == 1 and "CaffeError: pycaffe is installed" in proc.stderr
    proc = run_py(["-m", "minicaffe.pycaffe"], tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("usage:")


# --- Net: batches, raw accessors ---------------------------------------------------------------

def ip_reference(net, x):
    return x @ net.params["ip"][0].data.T + net.params["ip"][1].data


def test_forward_all_batches_pads_and_trims():
    net = caffe.Net(IP_NET, caffe.TEST)
    x = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)   # 2 batches + 2
    out = net.forward_all(data=x)
    assert set(out) == {"ip"} and out["ip"].shape == (10, 2)
    np.testing.assert_allclose(out["ip"], ip_reference(net, x), rtol=1e-5, atol=1e-6)
    both = net.forward_all(blobs=["data"], data=x)
    np.testing.assert_array_equal(both["data"], x)
    with pytest.raises(caffe.ArgumentError, match="net inputs: data"):
        net.forward_all()
    with pytest.raises(caffe.ArgumentError, match="no blob named image"):
        net.forward_all(image=x)
    with pytest.raises(caffe.ArgumentError, match="different lengths"):
        net.forward_backward_all(data=x, ip=x[:3])


def test_forward_backward_all_gives_input_gradients():
    net = caffe.Net("force_backward: true\n" + IP_NET, caffe.TEST)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    g = rng.normal(size=(6, 2)).astype(np.float32)
    outs, diffs = net.forward_backward_all(data=x, ip=g)
    np.testing.assert_allclose(outs["ip"], ip_reference(net, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(diffs["data"], g @ net.params["ip"][0].data, rtol=1e-5, atol=1e-6)
    assert diffs["data"].shape == (6, 3)
    with pytest.raises(caffe.ArgumentError, match="neither inputs nor outputs"):
        net.forward_backward_all(data=x, label=g)


def test_raw_accessors_follow_pycaffe():
    net = caffe.Net(IP_NET + """
    layer { name: "lbl" type: "Input" top: "label" input_param { shape { dim: 4 } } }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss"
            loss_weight: 2 }""", caffe.TRAIN)
    names = list(net.blobs)
    assert [names[i] for i in net._inputs] == net.inputs == ["data", "label"]
    assert [names[i] for i in net._outputs] == net.outputs == ["loss"]
    assert net._blob_loss_weights == [0.0, 0.0, 0.0, 2.0]
    assert net._blobs[1] is net.blobs["ip"]
    net.blobs["data"].data[...] = 1
    net.blobs["label"].data[...] = 0
    net._forward(0, 1)   # layers 0..1: in, ip
    np.testing.assert_allclose(net.blobs["ip"].data, ip_reference(net, np.ones((4, 3))), rtol=1e-5)


def test_blob_legacy_axes():
    b = caffe.Blob((5, 3, 4, 2))
    assert (b.num, b.channels, b.height, b.width) == (5, 3, 4, 2)
    b = caffe.Blob((7, 9))
    assert (b.num, b.channels, b.height, b.width) == (7, 9, 1, 1)   # Caffe's LegacyShape
    with pytest.raises(caffe.ShapeError, match="at most 4 axes"):
        caffe.Blob((1, 2, 3, 4, 5)).num


# --- HDF5 weights ------------------------------------------------------------------------------

SHARED = """
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "a" type: "InnerProduct" bottom: "data" top: "a" param { name: "w" }
        inner_product_param { num_output: 3 bias_term: false weight_filler { type: "gaussian" } } }
layer { name: "b" type: "InnerProduct" bottom: "a" top: "b" param { name: "w" }
        inner_product_param { num_output: 3 bias_term: false } }
"""


def test_save_and_load_hdf5_in_caffes_layout(tmp_path):
    h5py = pytest.importorskip("h5py")
    net = caffe.Net(IP_NET, caffe.TEST)
    path = str(tmp_path / "w.caffemodel.h5")
    net.save_hdf5(path)
    with h5py.File(path, "r") as f:
        assert sorted(f["data"]) == ["in", "ip"] and sorted(f["data/ip"]) == ["0", "1"]
        np.testing.assert_array_equal(f["data/ip/0"][()], net.params["ip"][0].data)
        assert "diff" not in f
    other = caffe.Net(IP_NET, caffe.TEST)
    other.load_hdf5(path)
    for i in range(2):
        np.testing.assert_array_equal(other.params["ip"][i].data, net.params["ip"][i].data)
    third = caffe.Net(IP_NET, caffe.TEST, weights=path)   # copy_from reads .h5 as Caffe
    np.testing.assert_array_equal(third.params["ip"][0].data, net.params["ip"][0].data)


def test_hdf5_shared_params_stored_once_and_diffs(tmp_path):
    h5py = pytest.importorskip("h5py")
    net = caffe.Net(SHARED, caffe.TEST)
    net.params["a"][0].diff[...] = 4
    path = str(tmp_path / "s.h5")
    net.save_hdf5(path, write_diff=True)
    with h5py.File(path, "r") as f:
        assert list(f["data/a"]) == ["0"] and list(f["data/b"]) == []   # b shares a's weight
        np.testing.assert_array_equal(f["diff/b/0"][()], 4)
    fresh = caffe.Net(SHARED, caffe.TEST)
    fresh.load_hdf5(path)
    np.testing.assert_array_equal(fresh.params["b"][0].data, net.params["a"][0].data)


def test_hdf5_errors_name_the_file(tmp_path, monkeypatch):
    h5py = pytest.importorskip("h5py")
    net = caffe.Net(IP_NET, caffe.TEST)
    bad = str(tmp_path / "bad.h5")
    with h5py.File(bad, "w") as f:
        f.create_dataset("data/ip/0", data=np.zeros((5, 3), np.float32))
        f.create_dataset("data/ip/1", data=np.zeros(2, np.float32))
    before = net.params["ip"][1].data.copy()
    with pytest.raises(caffe.ModelFileError, match="bad.h5: Cannot copy param 0 weights from "
                                                   "layer 'ip'; shape mismatch"):
        net.load_hdf5(bad)
    np.testing.assert_array_equal(net.params["ip"][1].data, before)   # nothing copied
    with pytest.raises(caffe.ModelFileError, match="no such file"):
        net.load_hdf5(str(tmp_path / "none.h5"))
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(caffe.CaffeError, match=r"needs h5py: pip install 'minicaffe\[hdf5\]'"):
        net.save_hdf5(str(tmp_path / "x.h5"))


# --- solver, registry, timer -------------------------------------------------------------------

def test_solver_lr_and_share_weights():
    sp = caffe_pb2.SolverParameter()
    sp.net_param.CopyFrom(protoio.read_net_param(IP_NET))
    sp.base_lr, sp.lr_policy, sp.gamma, sp.stepvalue[:] = 0.1, "multistep", 0.5, [1, 2]
    solver = caffe.SGDSolver(sp)
    assert solver.lr == pytest.approx(0.1)
    solver.iter = 2
    assert solver.lr == pytest.approx(0.05) and solver.current_step == 0   # reading: no change
    net = caffe.Net(IP_NET, caffe.TEST)
    solver.share_weights(net)
    solver.net.params["ip"][0].data[...] = 3
    np.testing.assert_array_equal(net.params["ip"][0].data, 3)


def test_layer_type_list():
    types = caffe.layer_type_list()
    assert {"Data", "Convolution", "InnerProduct", "Python", "MMDLoss"} <= set(types)
    assert "INNER_PRODUCT" not in types and types == sorted(types)


def test_timer():
    t = caffe.Timer()
    assert t.ms == 0
    t.start()
    time.sleep(0.02)
    t.stop()
    assert 15 < t.ms < 1000
    t.start()
    assert t.ms >= 0 and not t.running   # reading a running timer stops it, as Caffe's


# --- Classifier and Detector -------------------------------------------------------------------

# the mean of each channel: predictions that a NumPy reference reproduces exactly
MEAN_NET = """
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 3 dim: 3 dim: 4 dim: 4 } } }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "flat" type: "Flatten" bottom: "pool" top: "prob" }
"""


def test_classifier_oversample_and_centre_crop(tmp_path):
    model = tmp_path / "deploy.prototxt"
    model.write_text(MEAN_NET)
    mean = np.array([0.1, 0.2, 0.3])
    clf = caffe.Classifier(str(model), None, image_dims=(6, 6), mean=mean, raw_scale=2.0,
                           channel_swap=(2, 1, 0))
    rng = np.random.default_rng(4)
    images = [rng.random((6, 6, 3)).astype(np.float32) for _ in range(2)]
    pred = clf.predict(images)            # 20 crops in batches of 3, padded
    assert pred.shape == (2, 3)
    for i, im in enumerate(images):
        crops = caffe.io.oversample([im], (4, 4))
        ref = np.mean([c.mean((0, 1))[::-1] * 2.0 - mean for c in crops], 0)
        np.testing.assert_allclose(pred[i], ref, rtol=1e-5)
    centre = clf.predict(images, oversample=False)
    np.testing.assert_allclose(centre[1], images[1][1:5, 1:5].mean((0, 1))[::-1] * 2.0 - mean,
                               rtol=1e-5)


def test_detector_windows_with_and_without_context(tmp_path):
    model = tmp_path / "deploy.prototxt"
    model.write_text(MEAN_NET)
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[:, :, 0] = np.arange(20)[None, :] * 10          # red rises to the right
    rgb[:10, :, 1] = 255                                # green on the top half
    Image.fromarray(rgb).save(tmp_path / "im.png")
    det = caffe.Detector(str(model), None)
    windows = [np.array([0, 0, 10, 10]), np.array([10, 10, 20, 20])]
    found = det.detect_windows([(str(tmp_path / "im.png"), windows)])
    assert [d["filename"] for d in found] == [str(tmp_path / "im.png")] * 2
    image = rgb / 255.0
    for d, (y0, x0, y1, x1) in zip(found, windows):
        crop = caffe.io.resize_image(image[y0:y1, x0:x1].astype(np.float32), (4, 4))
        np.testing.assert_allclose(d["prediction"], crop.mean((0, 1)), rtol=1e-4)
    padded = caffe.Detector(str(model), None, mean=np.array([0.5, 0.5, 0.5]), context_pad=1)
    crop = padded.crop(image.astype(np.float32), np.array([0, 0, 10, 10]))
    assert crop.shape == (4, 4, 3)
    # R-CNN's warp by hand: the window grows 4/(4 - 2) = 2x around its centre (5.5, 5.5) to
    # the box (-6, -6, 16, 16) of 23 pixels, 4/23 of a pixel each in the input: the 6 pixels
    # above and left of the image become round(6·4/23) = 1 row and column of the mean, the
    # 17 inside become round(17·4/23) = 3, the image's [0:16, 0:16] resized
    np.testing.assert_allclose(crop[0, :], 0.5)
    np.testing.assert_allclose(crop[:, 0], 0.5)
    np.testing.assert_allclose(crop[1:, 1:], caffe.io.resize_image(
        image[0:16, 0:16].astype(np.float32), (3, 3)), rtol=1e-6)
    with pytest.raises(caffe.CaffeError, match="MATLAB"):
        det.detect_selective_search([str(tmp_path / "im.png")])


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


# --- the README's example ----------------------------------------------------------------------

@pytest.mark.integration
def test_readme_netspec_example_writes_a_prototxt_and_trains(tmp_path):
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    block = readme.split("<!-- pycaffe-example -->\n```python\n")[1].split("```\n")[0]
    (tmp_path / "example.py").write_text(block)
    proc = run_py(["-m", "minicaffe.pycaffe", "example.py"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    net = protoio.read_net_param(str(tmp_path / "toy.prototxt"))
    assert [(lp.name, lp.type) for lp in net.layer] == [
        ("data", "Input"), ("ip1", "InnerProduct"), ("relu1", "ReLU"), ("ip2", "InnerProduct"),
        ("loss", "SoftmaxWithLoss"), ("acc", "Accuracy")]
    words = proc.stdout.split()
    loss, acc = float(words[1]), float(words[3])
    # classes 3 apart with unit noise: the best boundary errs Φ(-1.5·√2) ≈ 2 % of the time
    assert loss < 0.3 and acc >= 0.9, proc.stdout

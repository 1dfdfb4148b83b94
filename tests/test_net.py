"""Net construction: Caffe's wiring, split names, outputs, loss weights, backward need,
parameter sharing, and the pycaffe API."""
import numpy as np
import pytest
from google.protobuf import text_format

import minicaffe as caffe
from minicaffe.net import filter_net, insert_splits
from minicaffe.proto import caffe_pb2

MLP = """
name: "mlp"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


def netp(text):
    p = caffe_pb2.NetParameter()
    text_format.Merge(text, p)
    return p


def test_mlp_forward_backward_matches_numpy():
    net = caffe.Net(MLP, caffe.TRAIN)
    x = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    y = np.array([0, 2, 1, 2], np.float32)
    out = net.forward(data=x, label=y)
    w1, b1 = net.params["ip1"][0].data, net.params["ip1"][1].data
    w2, b2 = net.params["ip2"][0].data, net.params["ip2"][1].data
    assert np.allclose(b1, 0.1)
    h = np.maximum(x @ w1.T + b1, 0)
    z = h @ w2.T + b2
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ref = -np.log(p[np.arange(4), y.astype(int)]).mean()
    assert list(out) == ["loss"]
    assert np.isclose(float(out["loss"]), ref, rtol=1e-5)
    net.backward()
    dz = p.copy()
    dz[np.arange(4), y.astype(int)] -= 1
    dz /= 4
    assert np.allclose(net.params["ip2"][0].diff, dz.T @ h, atol=1e-6)
    assert np.allclose(net.params["ip2"][1].diff, dz.sum(0), atol=1e-6)
    dh = (dz @ w2) * (h > 0)
    assert np.allclose(net.params["ip1"][0].diff, dh.T @ x, atol=1e-6)


def test_param_diffs_accumulate_bottom_diffs_overwrite():
    net = caffe.Net(MLP, caffe.TRAIN)
    net.blobs["data"].data[...] = np.random.default_rng(2).normal(size=(4, 3))
    net.blobs["label"].data[...] = [0, 1, 2, 0]
    net.forward()
    net.backward()
    g1 = net.params["ip1"][0].diff.copy()
    d1 = net.blobs["ip1"].diff.copy()
    net.forward()
    net.backward()
    assert np.allclose(net.params["ip1"][0].diff, 2 * g1)
    assert np.allclose(net.blobs["ip1"].diff, d1)


def test_outputs_sorted_by_name_not_declaration():
    text = """
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "b" type: "InnerProduct" bottom: "x" top: "zeta" inner_product_param { num_output: 2 } }
    layer { name: "a" type: "InnerProduct" bottom: "x" top: "Alpha" inner_product_param { num_output: 2 } }
    layer { name: "c" type: "InnerProduct" bottom: "x" top: "beta" inner_product_param { num_output: 2 } }
    """
    net = caffe.Net(text, caffe.TEST)
    assert net.outputs == ["Alpha", "beta", "zeta"]  # byte order: upper case first
    assert net.inputs == ["x"]


def test_split_insertion_names_and_wiring():
    p = netp("""
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "ipA" type: "InnerProduct" bottom: "data" top: "a" }
    layer { name: "ipB" type: "InnerProduct" bottom: "data" top: "b" }
    layer { name: "ipC" type: "InnerProduct" bottom: "a" top: "c" loss_weight: 2 }
    layer { name: "ipD" type: "InnerProduct" bottom: "c" top: "d" }
    """)
    s = insert_splits(p)
    names = [l.name for l in s.layer]
    assert names == ["data", "data_data_0_split", "ipA", "ipB", "ipC", "c_ipC_0_split", "ipD"]
    sp = s.layer[1]
    assert list(sp.top) == ["data_data_0_split_0", "data_data_0_split_1"]
    assert s.layer[2].bottom[0] == "data_data_0_split_0"
    assert s.layer[3].bottom[0] == "data_data_0_split_1"
    # a top with a loss weight and one consumer: split_0 carries the loss, the consumer gets _1
    loss_split = s.layer[5]
    assert list(loss_split.loss_weight) == [2.0, 0.0]
    assert list(s.layer[4].loss_weight) == []
    assert s.layer[6].bottom[0] == "c_ipC_0_split_1"


def test_split_in_place_chain_counts_last_producer():
    p = netp("""
    layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "relu" type: "ReLU" bottom: "x" top: "x" }
    layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "y1" }
    layer { name: "ip2" type: "InnerProduct" bottom: "x" top: "y2" }
    """)
    s = insert_splits(p)
    assert [l.name for l in s.layer] == ["data", "relu", "x_relu_0_split", "ip1", "ip2"]
    assert s.layer[1].bottom[0] == "x" and s.layer[1].top[0] == "x"


def test_split_layer_backward_sums_diffs():
    text = """
    force_backward: true
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "i1" type: "InnerProduct" bottom: "x" top: "y1" inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
    layer { name: "i2" type: "InnerProduct" bottom: "x" top: "y2" inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
    """
    net = caffe.Net(text, caffe.TRAIN)
    assert "x_in_0_split" in net._layer_names
    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    net.forward(x=x)
    d1 = np.ones((2, 2), np.float32)
    d2 = 2 * np.ones((2, 2), np.float32)
    g = net.backward(y1=d1, y2=d2)["x"]
    ref = d1 @ net.params["i1"][0].data + d2 @ net.params["i2"][0].data
    assert np.allclose(g, ref, atol=1e-6)


def test_loss_weight_on_any_layer_and_default_on_loss_layers():
    text = MLP + """
    layer { name: "aux" type: "InnerProduct" bottom: "data" top: "aux" loss_weight: 0.5
            inner_product_param { num_output: 1 weight_filler { type: "gaussian" } } }
    """
    net = caffe.Net(text, caffe.TRAIN)
    assert net.blob_loss_weights["loss"] == 1.0
    assert net.blob_loss_weights["aux"] == 0.5
    assert net.blob_loss_weights["ip2"] == 0.0
    net.blobs["data"].data[...] = np.random.default_rng(3).normal(size=(4, 3))
    net.blobs["label"].data[...] = [0, 1, 2, 0]
    net.forward()
    total = net.forward_prefilled()
    assert np.isclose(total, float(net.blobs["loss"].data) + 0.5 * net.blobs["aux"].data.sum(), rtol=1e-5)
    # the aux top's diff holds its weight, so backward gives d(0.5·Σ aux)/dW = 0.5·Σ x
    net.clear_param_diffs()
    net.backward()
    assert np.allclose(net.params["aux"][0].diff, 0.5 * net.blobs["data"].data.sum(0), atol=1e-5)


def test_loss_weight_log_lines_name_the_layer(caplog):
    import logging
    text = MLP + """
    layer { name: "aux" type: "InnerProduct" bottom: "data" top: "aux_out" loss_weight: 0.5
            inner_product_param { num_output: 1 weight_filler { type: "gaussian" } } }
    """
    with caplog.at_level(logging.INFO, logger="minicaffe"):
        caffe.Net(text, caffe.TRAIN)
    lines = [r.getMessage() for r in caplog.records if "with loss weight" in r.getMessage()]
    assert lines == ["    loss with loss weight 1", "    aux (top aux_out) with loss weight 0.5"]


def test_softmax_with_loss_second_top_prob():
    text = """
    layer { name: "in" type: "Input" top: "x" top: "label" input_param { shape { dim: 3 dim: 4 } shape { dim: 3 } } }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" top: "loss" top: "prob" }
    """
    net = caffe.Net(text, caffe.TRAIN)
    assert net.layers[1].loss_weights == [1.0, 0.0]
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    out = net.forward(x=x, label=np.array([0, 1, 3], np.float32))
    e = np.exp(x - x.max(1, keepdims=True))
    assert np.allclose(out["prob"], e / e.sum(1, keepdims=True), atol=1e-6)


def test_backward_need_pass():
    text = """
    layer { name: "data" type: "Input" top: "data" top: "label" input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }
    layer { name: "frozen" type: "InnerProduct" bottom: "data" top: "f" param { lr_mult: 0 } param { lr_mult: 0 }
            inner_product_param { num_output: 4 } }
    layer { name: "ip" type: "InnerProduct" bottom: "f" top: "ip" inner_product_param { num_output: 3 } }
    layer { name: "side" type: "InnerProduct" bottom: "f" top: "side" inner_product_param { num_output: 2 } }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
    """
    net = caffe.Net(text, caffe.TRAIN)
    need = dict(zip(net._layer_names, net.layer_need_backward))
    assert need["frozen"] is False      # lr_mult 0 and an input bottom: nothing to learn
    assert need["ip"] is True
    assert need["side"] is False        # does not contribute to the loss
    assert need["loss"] is True
    bneed = dict(zip(net._layer_names, net.bottom_need_backward))
    assert bneed["loss"] == [True, False]
    assert bneed["ip"] == [False]
    # propagate_down overrides; force_backward turns everything on except the label
    p = netp(text)
    p.force_backward = True
    net2 = caffe.Net(p, caffe.TRAIN)
    assert all(net2.layer_need_backward)
    assert dict(zip(net2._layer_names, net2.bottom_need_backward))["loss"] == [True, False]


def test_propagate_down_size_checked():
    text = """
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" propagate_down: true propagate_down: false
            inner_product_param { num_output: 2 } }
    """
    with pytest.raises(caffe.NetError, match="propagate_down"):
        caffe.Net(text, caffe.TRAIN)


def test_param_sharing_strict_and_permissive():
    text = """
    layer { name: "in" type: "Input" top: "a" top: "b" input_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 3 } } }
    layer { name: "ipa" type: "InnerProduct" bottom: "a" top: "ya" param { name: "w" lr_mult: 2 } param { name: "bias" }
            inner_product_param { num_output: 4 weight_filler { type: "gaussian" } } }
    layer { name: "ipb" type: "InnerProduct" bottom: "b" top: "yb" param { name: "w" } param { name: "bias" decay_mult: 0 }
            inner_product_param { num_output: 4 weight_filler { type: "gaussian" } } }
    """
    net = caffe.Net(text + "force_backward: true", caffe.TRAIN)
    wa, wb = net.params["ipa"][0], net.params["ipb"][0]
    assert wa.shares_data_with(wb)
    assert len(net.learnable_params) == 2                    # owners only
    assert net.params_lr == [2.0, 1.0]                       # lr_mult inherited from the owner
    assert net.params_weight_decay == [1.0, 0.0]             # decay_mult given by the sharer
    assert net.param_owners == [-1, -1, 0, 1]
    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    net.forward(a=x, b=2 * x)
    net.backward(ya=np.ones((2, 4), np.float32), yb=np.ones((2, 4), np.float32))
    # gradients of both uses add up in one diff
    assert np.allclose(wa.diff, np.ones((4, 2)) @ x + np.ones((4, 2)) @ (2 * x), atol=1e-5)
    i = text.index('name: "ipb"')
    bad = text[:i] + text[i:].replace("num_output: 4", "num_output: 5", 1)
    with pytest.raises(caffe.ShapeError, match="shape mismatch"):
        caffe.Net(bad, caffe.TRAIN)


def test_permissive_sharing_allows_equal_counts():
    text = """
    layer { name: "in" type: "Input" top: "a" top: "b" input_param { shape { dim: 2 dim: 6 } shape { dim: 2 dim: 3 } } }
    layer { name: "ipa" type: "InnerProduct" bottom: "a" top: "ya" param { name: "w" } inner_product_param { num_output: 3 bias_term: false } }
    layer { name: "ipb" type: "InnerProduct" bottom: "b" top: "yb" param { name: "w" share_mode: PERMISSIVE } inner_product_param { num_output: 6 bias_term: false } }
    """
    net = caffe.Net(text, caffe.TRAIN)
    assert net.params["ipa"][0].shares_data_with(net.params["ipb"][0])


def test_phase_level_stage_filtering():
    p = netp("""
    state { level: 1 }
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 1 } } }
    layer { name: "train_only" type: "ReLU" bottom: "x" top: "t" include { phase: TRAIN } }
    layer { name: "test_only" type: "ReLU" bottom: "x" top: "u" include { phase: TEST } }
    layer { name: "not_test" type: "ReLU" bottom: "x" top: "v" exclude { phase: TEST } }
    layer { name: "lvl2" type: "ReLU" bottom: "x" top: "w" include { min_level: 2 } }
    layer { name: "deploy" type: "ReLU" bottom: "x" top: "s" include { stage: "deploy" } }
    layer { name: "nodeploy" type: "ReLU" bottom: "x" top: "n" include { not_stage: "deploy" } }
    layer { name: "either" type: "ReLU" bottom: "x" top: "e" include { phase: TEST } include { stage: "deploy" } }
    """)
    names = lambda net: [l for l in net._layer_names if not l.endswith("split")]  # noqa: E731
    assert names(caffe.Net(p, caffe.TRAIN)) == ["in", "train_only", "not_test", "nodeploy"]
    assert names(caffe.Net(p, caffe.TEST)) == ["in", "test_only", "nodeploy", "either"]
    assert names(caffe.Net(p, caffe.TRAIN, stages=["deploy"], level=2)) == \
        ["in", "train_only", "not_test", "lvl2", "deploy", "either"]
    both = netp('layer { name: "l" type: "ReLU" include { phase: TRAIN } exclude { phase: TEST } }')
    with pytest.raises(caffe.NetError, match="either include"):
        filter_net(both, caffe_pb2.NetState())


def test_layer_phase_inherited():
    net = caffe.Net(MLP, caffe.TRAIN)
    assert all(l.phase == caffe.TRAIN for l in net.layers)
    assert caffe.Net(MLP, caffe.TEST).layers[0].phase == caffe.TEST


def test_wiring_errors():
    with pytest.raises(caffe.NetError, match="Unknown bottom blob 'nope'.*layer 'r'"):
        caffe.Net('layer { name: "r" type: "ReLU" bottom: "nope" top: "y" }', caffe.TEST)
    with pytest.raises(caffe.NetError, match="produced by multiple sources"):
        caffe.Net("""
        layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }
        layer { name: "r1" type: "ReLU" bottom: "x" top: "y" }
        layer { name: "r2" type: "ReLU" bottom: "x" top: "y" }""", caffe.TEST)
    with pytest.raises(caffe.NetError, match="ReLU Layer r takes 1 bottom"):
        caffe.Net("""
        layer { name: "in" type: "Input" top: "x" top: "z" input_param { shape { dim: 1 } } }
        layer { name: "r" type: "ReLU" bottom: "x" bottom: "z" top: "y" }""", caffe.TEST)


def test_unknown_layer_type_lists_known_ones():
    with pytest.raises(caffe.LayerTypeError) as ei:
        caffe.Net('layer { name: "q" type: "Convoluton" }', caffe.TEST)
    msg = str(ei.value)
    assert "Convoluton" in msg and "InnerProduct" in msg and "ReLU" in msg


def test_shape_error_names_layers_and_shapes():
    text = """
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 2 } }
    """
    net = caffe.Net(text, caffe.TEST)
    net.blobs["x"].reshape(2, 5)
    with pytest.raises(caffe.ShapeError) as ei:
        net.forward()
    msg = str(ei.value)
    assert "'ip'" in msg and "'in'" in msg and "(2, 5)" in msg and "(3,)" in msg


def test_net_reshape_and_batch_change():
    net = caffe.Net(MLP, caffe.TRAIN)
    net.blobs["data"].reshape(7, 3)
    net.blobs["label"].reshape(7)
    net.reshape()
    assert net.blobs["ip2"].shape == (7, 3)
    net.blobs["label"].data[...] = 1
    assert np.isfinite(float(net.forward()["loss"]))


def test_forward_start_end_and_blobs_kwarg():
    net = caffe.Net(MLP, caffe.TRAIN)
    net.blobs["data"].data[...] = 1
    out = net.forward(end="ip1", blobs=["data"])
    assert set(out) == {"ip1", "data"}
    with pytest.raises(caffe.NetError, match="do not match net inputs"):
        net.forward(data=np.zeros((4, 3)))
    with pytest.raises(caffe.ShapeError, match="batch sized"):
        net.forward(data=np.zeros((5, 3)), label=np.zeros(5))


def test_layer_and_blob_introspection():
    net = caffe.Net(MLP, caffe.TRAIN)
    assert list(net.blobs) == ["data", "label", "ip1", "ip2", "loss"]
    assert list(net.params) == ["ip1", "ip2"]
    assert net.params["ip1"][0].shape == (5, 3)
    assert net._layer_names == ["data", "ip1", "relu1", "ip2", "loss"]
    assert net.layers[1].type == "InnerProduct"
    assert net.bottom_names["ip2"] == ["ip1"] and net.top_names["relu1"] == ["ip1"]
    assert net.blobs["loss"].shape == ()


BAD_VALUES_NET = """name: "n"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: %s } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { %s } }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip" inner_product_param { %s } }
"""


@pytest.mark.parametrize("dims,conv,ip,layer,message", [
    ("1 dim: 3 dim: 8 dim: 8", "num_output: 2 kernel_size: 3", 'num_output: 0 weight_filler { type: "xavier" }',
     "ip", "inner_product_param.num_output must be > 0, got 0"),
    ("1 dim: 3 dim: 8 dim: 8", 'num_output: 2 kernel_size: 3 weight_filler { type: "msra" variance_norm: FAN_OUT }',
     "num_output: 0", "ip", "num_output must be > 0, got 0"),
    ("1 dim: 3 dim: 8 dim: 8", 'num_output: 2 kernel_size: 3 weight_filler { type: "gaussian" std: -1 }',
     "num_output: 1", "conv1", "gaussian filler: std must be >= 0, got -1"),
    ("1 dim: 3 dim: 8 dim: 8", 'num_output: 2 kernel_size: 3 bias_filler { type: "uniform" min: 1 max: -1 }',
     "num_output: 1", "conv1", r"uniform filler: min \(1\) must be <= max \(-1\)"),
    ("100000 dim: 100000 dim: 100000", "num_output: 2 kernel_size: 3", "num_output: 1",
     "data", r"blob shape \(100000, 100000, 100000\) needs 3.553 PiB \(1000000000000000 values\), "
             r"more than the limit of 4 GiB"),
    ("1 dim: 3 dim: 8 dim: 8", "num_output: 2 kernel_size: 3 pad: 100000", "num_output: 1",
     "conv1", r"blob shape \(1, 2, 200006, 200006\) needs 298 GiB"),
    ("1 dim: 3 dim: 8 dim: 8", "num_output: 2 kernel_size: 4294967295", "num_output: 1",
     "conv1", r"blob shape \(2, 3, 4294967295, 4294967295\) needs 384 EiB \(110680464390717702150 values\)"),
])
def test_absurd_prototxt_values_fail_at_construction(tmp_path, monkeypatch, dims, conv, ip, layer, message):
    monkeypatch.setenv("MINICAFFE_MAX_BLOB_BYTES", str(4 * 2 ** 30))
    path = tmp_path / "bad.prototxt"
    path.write_text(BAD_VALUES_NET % (dims, conv, ip))
    with pytest.raises(caffe.CaffeError, match=r"^%s: layer '%s' \(type \w+\)[^\n]*: [^\n]*%s"
                       % (path, layer, message)) as info:
        caffe.Net(str(path), caffe.TEST)
    assert "\n" not in str(info.value)


def test_blob_limit_is_configurable(monkeypatch):
    monkeypatch.setenv("MINICAFFE_MAX_BLOB_BYTES", "4000")
    caffe.Blob((10, 100))          # 4000 bytes: at the limit
    with pytest.raises(caffe.ShapeError, match=r"blob shape \(10, 101\) needs 3.945 KiB \(1010 values\), "
                       r"more than the limit of 3.906 KiB"):
        caffe.Blob((10, 101))
    monkeypatch.setenv("MINICAFFE_MAX_BLOB_BYTES", "lots")
    with pytest.raises(caffe.ShapeError, match="MINICAFFE_MAX_BLOB_BYTES must be a number of bytes, got 'lots'"):
        caffe.Blob((2,))


def test_unknown_bottom_and_type_name_file_line_and_near_name(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text('name: "n"\n'
                    'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
                    'layer {\n  name: "act"\n  type: "Tanh"\n  bottom: "x"\n  top: "y"\n}\n')
    with pytest.raises(caffe.LayerTypeError, match=r"^%s:4: layer 'act': Unknown layer type: 'Tanh'; "
                       r"did you mean 'TanH'\? \(known types: .*ReLU" % path):
        caffe.Net(str(path), caffe.TEST)
    path.write_text(path.read_text().replace('"Tanh"', '"Convoluton"'))
    with pytest.raises(caffe.LayerTypeError, match="Unknown layer type: 'Convoluton'; did you mean 'Convolution'"):
        caffe.Net(str(path), caffe.TEST)
    path.write_text(path.read_text().replace('"Convoluton"', '"TanH"').replace('bottom: "x"', 'bottom: "z"'))
    with pytest.raises(caffe.NetError, match=r"^%s:4: Unknown bottom blob 'z' \(layer 'act', bottom "
                       r"index 0\)$" % path):
        caffe.Net(str(path), caffe.TEST)
    with pytest.raises(caffe.NetError, match=r"^<string>:1: Unknown bottom blob 'nope'"):
        caffe.Net('layer { name: "r" type: "ReLU" bottom: "nope" top: "y" }', caffe.TEST)


@pytest.mark.parametrize("args,message", [
    ((123,), "Net: expected a prototxt path, prototxt text or a NetParameter, got int"),
    ((None, caffe.TEST), "Net: expected a prototxt path, prototxt text or a NetParameter, got NoneType"),
    (('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 } } }', 7),
     r"phase must be caffe.TRAIN \(0\) or caffe.TEST \(1\), got 7"),
    (('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 } } }', 1.0),
     r"phase must be caffe.TRAIN \(0\) or caffe.TEST \(1\), got 1.0"),
])
def test_api_misuse_is_a_caffe_error(args, message):
    with pytest.raises(caffe.ArgumentError, match="^%s$" % message) as info:
        caffe.Net(*args)
    assert isinstance(info.value, (caffe.CaffeError)) and isinstance(info.value, (TypeError, ValueError))


def test_mean_file_without_data_names_the_file(tmp_path):
    mean = tmp_path / "mean.binaryproto"
    b = caffe_pb2.BlobProto()
    b.shape.dim.extend([1, 3, 2, 2])
    mean.write_bytes(b.SerializeToString())
    text = ('layer { name: "d" type: "DummyData" top: "x" dummy_data_param { shape { dim: 1 dim: 3 dim: 2 dim: 2 } } }\n'
            'layer { name: "t" type: "ImageData" top: "data" top: "label" transform_param { mean_file: "%s" } '
            'image_data_param { source: "%s" batch_size: 1 } }' % (mean, tmp_path / "list.txt"))
    (tmp_path / "list.txt").write_text("a.png 0\n")
    with pytest.raises(caffe.CaffeError, match=r"transform_param mean_file: %s: BlobProto has no data$" % mean):
        caffe.Net(text, caffe.TRAIN)

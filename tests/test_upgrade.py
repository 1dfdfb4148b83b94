"""Net and solver upgrades (Caffe's util/upgrade_proto.cpp)."""

import logging
import os

import pytest
from google.protobuf import text_format

from minicaffe import protoio, upgrade
from minicaffe.errors import PrototxtError
from minicaffe.proto import caffe_pb2

V1_LENET = """
name: "LeNet"
layers {
  name: "mnist"
  type: DATA
  top: "data"
  top: "label"
  data_param { source: "mnist_train_lmdb" backend: LMDB batch_size: 64 scale: 0.00390625 }
  include { phase: TRAIN }
}
layers {
  name: "conv1"
  type: CONVOLUTION
  bottom: "data"
  top: "conv1"
  blobs_lr: 1
  blobs_lr: 2
  weight_decay: 1
  weight_decay: 0
  convolution_param {
    num_output: 20
    kernel_size: 5
    stride: 1
    weight_filler { type: "xavier" }
    bias_filler { type: "constant" }
  }
}
layers {
  name: "pool1"
  type: POOLING
  bottom: "conv1"
  top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 }
}
layers {
  name: "ip1"
  type: INNER_PRODUCT
  bottom: "pool1"
  top: "ip1"
  param: "ip1_w"
  param: "ip1_b"
  blob_share_mode: PERMISSIVE
  blobs_lr: 1
  blobs_lr: 2
  inner_product_param { num_output: 10 }
}
layers { name: "relu1" type: RELU bottom: "ip1" top: "ip1" }
layers {
  name: "accuracy"
  type: ACCURACY
  bottom: "ip1"
  bottom: "label"
  top: "accuracy"
  include { phase: TEST }
}
layers {
  name: "loss"
  type: SOFTMAX_LOSS
  bottom: "ip1"
  bottom: "label"
  top: "loss"
  loss_weight: 2
  exclude { phase: TEST stage: "deploy" }
}
"""


def _net(text):
    return text_format.Parse(text, caffe_pb2.NetParameter())


# ------------------------------------------------------------------------------------------
# V1 -> current


def test_v1_prototxt_upgrades(tmp_path, caplog):
    path = tmp_path / "lenet_v1.prototxt"
    path.write_text(V1_LENET)
    with caplog.at_level(logging.INFO, logger="minicaffe"):
        net = protoio.read_net_param(str(path))
    assert ("Attempting to upgrade input file specified using deprecated V1LayerParameter: "
            + str(path)) in caplog.text
    assert len(net.layers) == 0
    assert [l.type for l in net.layer] == ["Data", "Convolution", "Pooling", "InnerProduct",
                                          "ReLU", "Accuracy", "SoftmaxWithLoss"]
    data, conv, pool, ip, relu, acc, loss = net.layer
    assert net.name == "LeNet"
    # The data transformation upgrade ran first: scale moved to transform_param.
    assert data.transform_param.scale == pytest.approx(0.00390625)
    assert not data.data_param.HasField("scale")
    assert data.data_param.backend == caffe_pb2.DataParameter.LMDB
    assert data.include[0].phase == caffe_pb2.TRAIN
    assert list(data.top) == ["data", "label"]
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1), (2, 0)]
    assert conv.convolution_param.num_output == 20
    assert list(conv.convolution_param.kernel_size) == [5]
    assert conv.convolution_param.weight_filler.type == "xavier"
    assert pool.pooling_param.pool == caffe_pb2.PoolingParameter.MAX
    assert [p.name for p in ip.param] == ["ip1_w", "ip1_b"]
    assert ip.param[0].share_mode == caffe_pb2.ParamSpec.PERMISSIVE
    assert not ip.param[1].HasField("share_mode")
    assert [p.lr_mult for p in ip.param] == [1, 2]
    assert not ip.param[0].HasField("decay_mult")
    assert list(relu.bottom) == list(relu.top) == ["ip1"]
    assert acc.include[0].phase == caffe_pb2.TEST
    assert list(loss.loss_weight) == [2]
    assert loss.exclude[0].phase == caffe_pb2.TEST and list(loss.exclude[0].stage) == ["deploy"]


def test_v1_upgrade_matches_hand_written_v2():
    net = _net(V1_LENET)
    assert upgrade.upgrade_net_as_needed(net)
    expected = _net("""
      name: "LeNet"
      layer { name: "mnist" type: "Data" top: "data" top: "label"
              include { phase: TRAIN } transform_param { scale: 0.00390625 }
              data_param { source: "mnist_train_lmdb" batch_size: 64 backend: LMDB } }
      layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
              param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
              convolution_param { num_output: 20 kernel_size: 5 stride: 1
                                  weight_filler { type: "xavier" }
                                  bias_filler { type: "constant" } } }
      layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
              pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
      layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
              param { name: "ip1_w" share_mode: PERMISSIVE lr_mult: 1 }
              param { name: "ip1_b" lr_mult: 2 }
              inner_product_param { num_output: 10 } }
      layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
      layer { name: "accuracy" type: "Accuracy" bottom: "ip1" bottom: "label"
              top: "accuracy" include { phase: TEST } }
      layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss"
              loss_weight: 2 exclude { phase: TEST stage: "deploy" } }
    """)
    assert net == expected, text_format.MessageToString(net)


def test_v1_binary_caffemodel_keeps_blobs(tmp_path):
    net = caffe_pb2.NetParameter(name="old")
    conv = net.layers.add(name="conv1", type=caffe_pb2.V1LayerParameter.CONVOLUTION)
    conv.bottom.append("data")
    conv.top.append("conv1")
    w = conv.blobs.add(num=2, channels=1, height=3, width=3)
    w.data.extend([float(i) for i in range(18)])
    b = conv.blobs.add(num=1, channels=1, height=1, width=2)
    b.data.extend([0.5, -0.5])
    ip = net.layers.add(name="fc", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
    fw = ip.blobs.add(num=1, channels=1, height=4, width=6)  # V1 IP weight is 1x1xNxK
    fw.data.extend([0.25] * 24)
    # Legacy caffemodels carry bare input names without shapes: they are dropped.
    net.input.append("data")
    path = tmp_path / "old.caffemodel"
    protoio.write_proto_binary(str(path), net)

    got = protoio.read_net_param(str(path))
    assert len(got.layers) == 0 and len(got.input) == 0
    assert [(l.name, l.type) for l in got.layer] == [("conv1", "Convolution"),
                                                     ("fc", "InnerProduct")]
    gw, gb = got.layer[0].blobs
    assert (gw.num, gw.channels, gw.height, gw.width) == (2, 1, 3, 3)
    assert list(gw.data) == [float(i) for i in range(18)]
    assert not gw.HasField("shape")
    assert list(gb.data) == [0.5, -0.5]
    assert (got.layer[1].blobs[0].height, got.layer[1].blobs[0].width) == (4, 6)


def test_v1_with_layer_and_layers_is_refused():
    net = _net('layer { name: "a" type: "ReLU" } layers { name: "b" type: RELU }')
    with pytest.raises(PrototxtError, match="both 'layer' and 'layers'"):
        upgrade.upgrade_net_as_needed(net)


def test_v1_layer_type_table_is_complete():
    for value in caffe_pb2.V1LayerParameter.LayerType.values():
        upgrade.upgrade_v1_layer_type(value)
    assert upgrade.upgrade_v1_layer_type(caffe_pb2.V1LayerParameter.TANH) == "TanH"
    assert upgrade.upgrade_v1_layer_type(caffe_pb2.V1LayerParameter.SOFTMAX_LOSS) == \
        "SoftmaxWithLoss"
    assert upgrade.upgrade_v1_layer_type(caffe_pb2.V1LayerParameter.NONE) == ""


def test_v1_every_param_is_copied():
    v1_fields = [f.name for f in caffe_pb2.V1LayerParameter.DESCRIPTOR.fields
                 if f.name.endswith("_param")]
    assert len(v1_fields) == 30
    net = caffe_pb2.NetParameter()
    l = net.layers.add(name="x", type=caffe_pb2.V1LayerParameter.DATA)
    for name in v1_fields:
        getattr(l, name).SetInParent()
    l.dropout_param.dropout_ratio = 0.3
    upgrade.upgrade_v1_net(net)
    for name in v1_fields:
        assert net.layer[0].HasField(name), name
    assert net.layer[0].dropout_param.dropout_ratio == pytest.approx(0.3)


def test_data_transformation_upgrade_image_and_window_data():
    net = _net("""
      layers { name: "img" type: IMAGE_DATA
               image_data_param { source: "list.txt" mean_file: "m.binaryproto" crop_size: 227
                                  mirror: true batch_size: 2 } }
      layers { name: "win" type: WINDOW_DATA window_data_param { scale: 2 } }
      layers { name: "mem" type: MEMORY_DATA memory_data_param { batch_size: 3 } }
    """)
    assert upgrade.net_needs_data_upgrade(net)
    assert upgrade.upgrade_net_data_transformation(net)
    img = net.layers[0]
    assert img.transform_param.mean_file == "m.binaryproto"
    assert img.transform_param.crop_size == 227 and img.transform_param.mirror
    assert not img.image_data_param.HasField("crop_size")
    assert img.image_data_param.batch_size == 2
    assert net.layers[1].transform_param.scale == 2
    assert not net.layers[2].HasField("transform_param")
    assert not upgrade.net_needs_data_upgrade(net)


# ------------------------------------------------------------------------------------------
# V0


V0_NET = """
name: "v0net"
input: "data"
input_dim: 10 input_dim: 3 input_dim: 32 input_dim: 32
layers {
  layer { name: "pad1" type: "padding" pad: 2 }
  bottom: "data" top: "pad1"
}
layers {
  layer { name: "conv1" type: "conv" num_output: 8 kernelsize: 5 stride: 1 group: 1
          biasterm: false weight_filler { type: "gaussian" std: 0.01 }
          blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 }
  bottom: "pad1" top: "conv1"
}
layers {
  layer { name: "pool1" type: "pool" pool: AVE kernelsize: 3 stride: 2 }
  bottom: "conv1" top: "pool1"
}
layers {
  layer { name: "norm1" type: "lrn" local_size: 3 alpha: 0.0001 beta: 0.75 }
  bottom: "pool1" top: "norm1"
}
layers {
  layer { name: "drop" type: "dropout" dropout_ratio: 0.4 }
  bottom: "norm1" top: "norm1"
}
layers {
  layer { name: "fc" type: "innerproduct" num_output: 10 }
  bottom: "norm1" top: "fc"
}
layers { layer { name: "prob" type: "softmax" } bottom: "fc" top: "prob" }
"""


def test_v0_net_upgrades_all_the_way(caplog):
    net = _net(V0_NET)
    with caplog.at_level(logging.INFO, logger="minicaffe"):
        assert upgrade.upgrade_net_as_needed(net, "v0.prototxt")
    assert "deprecated V0LayerParameter: v0.prototxt" in caplog.text
    names = [l.name for l in net.layer]
    # The padding layer is folded into conv1, and the inputs became an Input layer in front.
    assert names == ["input", "conv1", "pool1", "norm1", "drop", "fc", "prob"]
    types = [l.type for l in net.layer]
    assert types == ["Input", "Convolution", "Pooling", "LRN", "Dropout", "InnerProduct",
                     "Softmax"]
    inp, conv, pool, lrn, drop, fc, prob = net.layer
    assert list(inp.top) == ["data"] and list(inp.input_param.shape[0].dim) == [10, 3, 32, 32]
    assert list(conv.bottom) == ["data"]
    c = conv.convolution_param
    assert list(c.pad) == [2] and list(c.kernel_size) == [5] and list(c.stride) == [1]
    assert c.num_output == 8 and c.group == 1 and c.bias_term is False
    assert c.weight_filler.type == "gaussian"
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1), (2, 0)]
    assert pool.pooling_param.pool == caffe_pb2.PoolingParameter.AVE
    assert (pool.pooling_param.kernel_size, pool.pooling_param.stride) == (3, 2)
    assert lrn.lrn_param.local_size == 3 and lrn.lrn_param.alpha == pytest.approx(1e-4)
    assert drop.dropout_param.dropout_ratio == pytest.approx(0.4)
    assert fc.inner_product_param.num_output == 10
    assert net.name == "v0net" and len(net.layers) == 0
    assert len(net.input) == 0 and len(net.input_dim) == 0


def test_v0_data_layer_fields():
    net = _net("""
      layers { layer { name: "d" type: "data" source: "db" batchsize: 5 scale: 0.5
                       meanfile: "mean.bp" cropsize: 7 mirror: true rand_skip: 3 }
               top: "data" top: "label" }
      layers { layer { name: "w" type: "window_data" source: "w.txt" det_fg_threshold: 0.6
                       det_crop_mode: "square" det_context_pad: 16 } top: "w" }
      layers { layer { name: "o" type: "hdf5_output" hdf5_output_param { file_name: "o.h5" } }
               bottom: "data" }
    """)
    upgrade.upgrade_v0_net(net)
    d, w, o = net.layers
    assert d.type == caffe_pb2.V1LayerParameter.DATA
    assert d.data_param.source == "db" and d.data_param.batch_size == 5
    assert d.data_param.rand_skip == 3
    t = d.transform_param
    assert (t.scale, t.mean_file, t.crop_size, t.mirror) == (0.5, "mean.bp", 7, True)
    assert w.window_data_param.fg_threshold == pytest.approx(0.6)
    assert w.window_data_param.crop_mode == "square"
    assert w.window_data_param.context_pad == 16
    assert o.hdf5_output_param.file_name == "o.h5"


def test_v0_misplaced_field_is_logged_and_skipped(caplog):
    net = _net('layers { layer { name: "r" type: "relu" num_output: 3 } bottom: "x" top: "x" }'
               ' input: "x"')
    with caplog.at_level(logging.ERROR, logger="minicaffe"):
        upgrade.upgrade_v0_net(net)
    assert "Unknown parameter num_output for layer type relu" in caplog.text
    assert net.layers[0].type == caffe_pb2.V1LayerParameter.RELU


def test_v0_unknown_type_and_bad_padding_are_errors():
    with pytest.raises(PrototxtError, match="Unknown layer name: fancy"):
        upgrade.upgrade_v0_net(_net('layers { layer { name: "f" type: "fancy" } }'))
    bad = ('input: "x" layers { layer { name: "p" type: "padding" pad: 1 } bottom: "x" '
           'top: "p" } layers { layer { name: "r" type: "relu" } bottom: "p" top: "r" }')
    with pytest.raises(PrototxtError, match="non-convolutional"):
        upgrade.upgrade_v0_net(_net(bad))
    with pytest.raises(PrototxtError, match="Unknown blob input nowhere"):
        upgrade.upgrade_v0_net(_net('layers { layer { name: "r" type: "relu" } '
                                    'bottom: "nowhere" }'))


# ------------------------------------------------------------------------------------------
# Inputs


def test_input_dim_upgrade_moves_input_layer_first():
    net = _net("""
      input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
      input: "label" input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1
      layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" }
      layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
    """)
    assert upgrade.upgrade_net_input(net)
    assert [l.name for l in net.layer] == ["input", "conv", "relu"]
    inp = net.layer[0]
    assert inp.type == "Input" and list(inp.top) == ["data", "label"]
    assert [list(s.dim) for s in inp.input_param.shape] == [[1, 3, 8, 8], [1, 1, 1, 1]]
    assert not net.input and not net.input_dim and not net.input_shape


def test_input_shape_upgrade():
    net = _net("""
      input: "x" input_shape { dim: 2 dim: 5 }
      input: "y" input_shape { dim: 2 }
      layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" }
    """)
    assert upgrade.upgrade_net_as_needed(net)
    assert [l.name for l in net.layer] == ["input", "ip"]
    assert [list(s.dim) for s in net.layer[0].input_param.shape] == [[2, 5], [2]]
    assert not net.input and not net.input_shape


def test_input_without_shape_is_dropped():
    net = _net('input: "data" layer { name: "relu" type: "ReLU" bottom: "data" top: "r" }')
    assert upgrade.upgrade_net_input(net)
    assert [l.name for l in net.layer] == ["relu"] and not net.input


def test_input_dim_count_mismatch_is_an_error():
    net = _net('input: "a" input: "b" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4')
    with pytest.raises(PrototxtError, match="8 input_dim"):
        upgrade.upgrade_net_input(net)


# ------------------------------------------------------------------------------------------
# BatchNorm and the driver


def test_batchnorm_upgrade():
    net = _net("""
      layer { name: "bn3" type: "BatchNorm" param { lr_mult: 1 } param { lr_mult: 0 }
              param { lr_mult: 1 decay_mult: 2 } }
      layer { name: "bn2" type: "BatchNorm" param { lr_mult: 1 } param { lr_mult: 1 } }
      layer { name: "conv" type: "Convolution" param { lr_mult: 1 } param { lr_mult: 2 }
              param { lr_mult: 3 } }
      layer { name: "bn0" type: "BatchNorm" param { lr_mult: 0 } param { lr_mult: 0 }
              param { lr_mult: 0 } }
    """)
    assert upgrade.net_needs_batchnorm_upgrade(net)
    assert upgrade.upgrade_batchnorm(net)
    assert [(p.lr_mult, p.decay_mult) for p in net.layer[0].param] == [(0, 0)] * 3
    assert all(p.HasField("decay_mult") for p in net.layer[0].param)
    assert [p.lr_mult for p in net.layer[1].param] == [1, 1]
    assert not net.layer[1].param[0].HasField("decay_mult")
    assert [p.lr_mult for p in net.layer[2].param] == [1, 2, 3]
    # already frozen (what BatchNorm's set-up writes): nothing to upgrade
    assert not any(p.HasField("decay_mult") for p in net.layer[3].param)
    assert not upgrade.net_needs_batchnorm_upgrade(caffe_pb2.NetParameter())
    assert not upgrade.net_needs_batchnorm_upgrade(_net(
        'layer { name: "bn" type: "BatchNorm" param { lr_mult: 0 } param { lr_mult: 0 } '
        'param { lr_mult: 0 } }'))


def test_freshly_written_batchnorm_model_logs_no_upgrade(tmp_path, caplog):
    import minicaffe as caffe
    from minicaffe import protoio
    net = caffe.Net('name: "n" layer { name: "data" type: "Input" top: "data" '
                    'input_param { shape { dim: 2 dim: 3 } } } '
                    'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }', caffe.TEST)
    path = str(tmp_path / "bn.caffemodel")
    net.save(path)
    with caplog.at_level(logging.INFO, logger="minicaffe"):
        written = protoio.read_net_param(path, binary=True)
        caffe.Net('name: "n" layer { name: "data" type: "Input" top: "data" '
                  'input_param { shape { dim: 2 dim: 3 } } } '
                  'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }',
                  caffe.TEST, weights=path)
    assert [p.lr_mult for p in written.layer[1].param] == [0, 0, 0]   # set-up's frozen specs
    assert "batch norm" not in caplog.text
    caplog.clear()
    old = 'layer { name: "bn" type: "BatchNorm" %s }' % ("param { lr_mult: 1 } " * 3)
    with caplog.at_level(logging.INFO, logger="minicaffe"):
        upgraded = protoio.read_net_param(old)
    assert [p.lr_mult for p in upgraded.layer[0].param] == [0, 0, 0]
    assert caplog.text.count("Attempting to upgrade batch norm layers") == 1


def test_current_net_is_left_alone(caplog):
    net = _net('layer { name: "data" type: "Input" top: "data" '
               'input_param { shape { dim: 1 } } }')
    before = net.SerializeToString()
    with caplog.at_level(logging.INFO, logger="minicaffe"):
        assert not upgrade.upgrade_net_as_needed(net, "x.prototxt")
    assert net.SerializeToString() == before
    assert not upgrade.net_needs_upgrade(net)
    assert "Attempting" not in caplog.text


# ------------------------------------------------------------------------------------------
# Solver


@pytest.mark.parametrize("enum_name, type_name", [
    ("SGD", "SGD"), ("NESTEROV", "Nesterov"), ("ADAGRAD", "AdaGrad"), ("RMSPROP", "RMSProp"),
    ("ADADELTA", "AdaDelta"), ("ADAM", "Adam")])
def test_solver_type_upgrade(enum_name, type_name):
    s = text_format.Parse("base_lr: 0.1 solver_type: %s" % enum_name, caffe_pb2.SolverParameter())
    assert upgrade.upgrade_solver_as_needed(s, "s.prototxt")
    assert s.type == type_name and not s.HasField("solver_type")


def test_solver_type_and_type_both_set_is_an_error():
    s = text_format.Parse('solver_type: ADAM type: "Adam"', caffe_pb2.SolverParameter())
    with pytest.raises(PrototxtError, match="cannot be both specified"):
        upgrade.upgrade_solver_as_needed(s, "s.prototxt")


def test_solver_without_solver_type_is_unchanged():
    s = caffe_pb2.SolverParameter(type="Adam")
    assert not upgrade.upgrade_solver_as_needed(s)
    assert s.type == "Adam"


def test_snapshot_prefix_defaults(tmp_path, monkeypatch):
    s = caffe_pb2.SolverParameter()
    upgrade.set_solver_defaults(s, os.path.join("models", "lenet_solver.prototxt"))
    assert s.snapshot_prefix == os.path.join("models", "lenet_solver")

    snapdir = tmp_path / "snaps"
    snapdir.mkdir()
    s = caffe_pb2.SolverParameter(snapshot_prefix=str(snapdir))
    upgrade.set_solver_defaults(s, "/somewhere/my_solver.prototxt")
    assert s.snapshot_prefix == os.path.join(str(snapdir), "my_solver")

    # A directory relative to the working directory, as Caffe resolves it.
    monkeypatch.chdir(tmp_path)
    s = caffe_pb2.SolverParameter(snapshot_prefix="snaps/")
    upgrade.set_solver_defaults(s, "a/b/solver.prototxt")
    assert s.snapshot_prefix == os.path.join("snaps/", "solver")

    s = caffe_pb2.SolverParameter(snapshot_prefix="snaps/lenet")
    upgrade.set_solver_defaults(s, "solver.prototxt")
    assert s.snapshot_prefix == "snaps/lenet"

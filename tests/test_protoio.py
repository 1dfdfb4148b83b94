"""Reading and writing net, solver and blob files, and the errors users see."""

import os
import stat

import pytest
from google.protobuf import text_format

from minicaffe import protoio
from minicaffe.errors import CaffeError, ModelFileError, PrototxtError
from minicaffe.proto import caffe_pb2

NET_TEXT = """name: "tiny"
layer {
  name: "data"
  type: "Input"
  top: "data"
  input_param { shape { dim: 2 dim: 3 } }
}
layer {
  name: "ip"
  type: "InnerProduct"
  bottom: "data"
  top: "ip"
  inner_product_param { num_output: 4 }
}
"""


def _write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


def _model(n_values=4000):
    net = caffe_pb2.NetParameter(name="tiny")
    layer = net.layer.add(name="ip", type="InnerProduct")
    blob = layer.blobs.add()
    blob.shape.dim.extend([n_values])
    blob.data.extend([0.5] * n_values)
    return net


def _leftovers(directory):
    return [f for f in os.listdir(directory) if f.endswith(".tmp")]


# ------------------------------------------------------------------------------------------
# read_net_param sources


def test_read_text_path(tmp_path):
    net = protoio.read_net_param(_write(tmp_path, "net.prototxt", NET_TEXT))
    assert net.name == "tiny" and [l.name for l in net.layer] == ["data", "ip"]


def test_read_text_string_and_message():
    net = protoio.read_net_param(NET_TEXT)
    assert net.layer[1].inner_product_param.num_output == 4
    assert protoio.read_net_param('name: "x"').name == "x"
    copy = protoio.read_net_param(net)
    assert copy == net and copy is not net
    copy.name = "changed"
    assert net.name == "tiny"


def test_read_message_is_upgraded_not_mutated():
    old = text_format.Parse('input: "x" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4',
                            caffe_pb2.NetParameter())
    net = protoio.read_net_param(old)
    assert net.layer[0].type == "Input"
    assert list(old.input) == ["x"] and not old.layer


def test_read_binary_by_extension_and_by_content(tmp_path):
    model = _model(10)
    path = str(tmp_path / "m.caffemodel")
    protoio.write_proto_binary(path, model)
    assert protoio.read_net_param(path) == model
    assert protoio.read_net_param(path, binary=True) == model
    # A binary model under a name that does not say so is recognised by its bytes.
    odd = _write(tmp_path, "weights.pb", model.SerializeToString())
    assert protoio.read_net_param(odd) == model
    assert protoio.read_net_param(model.SerializeToString()) == model


def test_write_and_read_text(tmp_path):
    net = protoio.read_net_param(NET_TEXT)
    path = str(tmp_path / "out.prototxt")
    protoio.write_proto_text(path, net)
    with open(path) as f:
        assert f.read() == text_format.MessageToString(net)
    assert protoio.read_net_param(path) == net
    assert protoio.read_proto_text(path, caffe_pb2.NetParameter) == net


# ------------------------------------------------------------------------------------------
# Errors


def test_unknown_field_names_file_line_column_and_field(tmp_path):
    text = 'name: "x"\nlayer {\n  name: "a"\n  bogus_param { x: 1 }\n}\n'
    path = _write(tmp_path, "bad.prototxt", text)
    with pytest.raises(PrototxtError) as info:
        protoio.read_net_param(path)
    msg = str(info.value)
    assert msg.startswith(path + ":4:3: "), msg
    assert "bogus_param" in msg and "caffe.LayerParameter" in msg


def test_bad_enum_and_bad_value(tmp_path):
    path = _write(tmp_path, "bad.prototxt", 'layer {\n  include { phase: TRAINING }\n}\n')
    with pytest.raises(PrototxtError, match=r"bad\.prototxt:2:\d+: .*TRAINING"):
        protoio.read_net_param(path)
    with pytest.raises(PrototxtError, match=r"<string>:1:\d+: .*num_output"):
        protoio.read_net_param('layer { inner_product_param { num_output: -3 } }')


def test_syntax_error_in_string():
    with pytest.raises(PrototxtError, match=r"^<string>:1:\d+: "):
        protoio.read_net_param('layer { name: "a" ')


def test_missing_required_field(tmp_path):
    path = _write(tmp_path, "clip.prototxt", 'layer { name: "c" type: "Clip" '
                  'clip_param { min: 0 } }')
    with pytest.raises(PrototxtError, match=r"clip\.prototxt.*layer\[0\]\.clip_param\.max"):
        protoio.read_net_param(path)


def test_missing_files(tmp_path):
    missing = str(tmp_path / "nope.prototxt")
    with pytest.raises(PrototxtError, match="No such file: " + missing):
        protoio.read_net_param(missing)
    missing_model = str(tmp_path / "nope.caffemodel")
    with pytest.raises(ModelFileError, match="No such file: " + missing_model):
        protoio.read_net_param(missing_model)
    with pytest.raises(ModelFileError, match="No such file"):
        protoio.read_blob_proto(str(tmp_path / "mean.binaryproto"))
    with pytest.raises(PrototxtError, match="No such file"):
        protoio.read_solver_param(str(tmp_path / "solver.prototxt"))
    with pytest.raises(CaffeError):
        protoio.read_net_param(str(tmp_path))  # a directory


def test_truncated_caffemodel(tmp_path):
    path = str(tmp_path / "full.caffemodel")
    protoio.write_proto_binary(path, _model())
    with open(path, "rb") as f:
        data = f.read()
    cut = _write(tmp_path, "cut.caffemodel", data[:len(data) // 2])
    with pytest.raises(ModelFileError) as info:
        protoio.read_net_param(cut)
    assert cut in str(info.value) and "truncated" in str(info.value)


def test_not_a_netparameter(tmp_path):
    junk = _write(tmp_path, "junk.caffemodel", bytes(range(256)) * 4)
    with pytest.raises(ModelFileError, match="junk.caffemodel.*not a NetParameter"):
        protoio.read_net_param(junk)
    # Text handed over as a model.
    text = _write(tmp_path, "text.caffemodel", NET_TEXT)
    with pytest.raises(ModelFileError, match="text.caffemodel"):
        protoio.read_net_param(text)


def test_binary_junk_under_text_name(tmp_path):
    junk = _write(tmp_path, "junk.prototxt", b"\xff\xfe\x00\x01garbage")
    with pytest.raises(ModelFileError, match="junk.prototxt"):
        protoio.read_net_param(junk)


# ------------------------------------------------------------------------------------------
# Solvers and blobs


def test_read_solver_param_upgrades_and_defaults(tmp_path):
    path = _write(tmp_path, "lenet_solver.prototxt",
                  'net: "lenet.prototxt"\nbase_lr: 0.01\nlr_policy: "fixed"\n'
                  'solver_type: NESTEROV\n')
    s = protoio.read_solver_param(path)
    assert s.type == "Nesterov" and not s.HasField("solver_type")
    assert s.snapshot_prefix == str(tmp_path / "lenet_solver")


def test_read_solver_param_errors(tmp_path):
    both = _write(tmp_path, "both.prototxt", 'solver_type: ADAM\ntype: "Adam"\n')
    with pytest.raises(PrototxtError, match="both.prototxt.*cannot be both specified"):
        protoio.read_solver_param(both)
    bad = _write(tmp_path, "bad_solver.prototxt", 'base_lr: 0.1\nlearning_rate: 3\n')
    with pytest.raises(PrototxtError, match=r"bad_solver\.prototxt:2:1: .*learning_rate"):
        protoio.read_solver_param(bad)


def test_read_solver_param_from_text():
    s = protoio.read_solver_param('base_lr: 0.5 lr_policy: "step"')
    assert s.base_lr == 0.5 and not s.HasField("snapshot_prefix")
    s = protoio.read_solver_param('base_lr: 0.5', solver_path="x/solver.prototxt")
    assert s.snapshot_prefix == os.path.join("x", "solver")


def test_blob_proto_round_trip(tmp_path):
    blob = caffe_pb2.BlobProto(num=1, channels=3, height=2, width=2)
    blob.data.extend([float(i) for i in range(12)])
    path = str(tmp_path / "mean.binaryproto")
    protoio.write_proto_binary(path, blob)
    assert protoio.read_blob_proto(path) == blob
    assert protoio.read_proto_binary(path, caffe_pb2.BlobProto) == blob


def test_solverstate_round_trip(tmp_path):
    state = caffe_pb2.SolverState(iter=100, learned_net="x_iter_100.caffemodel", current_step=2)
    state.history.add().data.extend([1.0, 2.0])
    path = str(tmp_path / "x_iter_100.solverstate")
    protoio.write_proto_binary(path, state)
    assert protoio.read_proto_binary(path, caffe_pb2.SolverState) == state


# ------------------------------------------------------------------------------------------
# Atomic writes


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    path = str(tmp_path / "m.caffemodel")
    protoio.write_proto_binary(path, _model(10))
    protoio.write_proto_binary(path, _model(20))
    assert len(protoio.read_net_param(path).layer[0].blobs[0].data) == 20
    assert _leftovers(str(tmp_path)) == []
    assert sorted(os.listdir(str(tmp_path))) == ["m.caffemodel"]
    # Permissions as open() would give, not mkstemp's 0600.
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~mask


def test_failed_write_keeps_the_old_file(tmp_path):
    path = str(tmp_path / "m.caffemodel")
    protoio.write_proto_binary(path, _model(10))
    bad = caffe_pb2.NetParameter()
    bad.layer.add().clip_param.min = 0  # required `max` missing: cannot serialize
    with pytest.raises(ModelFileError, match="m.caffemodel"):
        protoio.write_proto_binary(path, bad)
    assert len(protoio.read_net_param(path).layer[0].blobs[0].data) == 10
    assert _leftovers(str(tmp_path)) == []
    with pytest.raises(ModelFileError, match="Cannot write"):
        protoio.write_proto_binary(str(tmp_path / "no_dir" / "m.caffemodel"), _model(1))


def test_tiny_binary_model_without_nul_bytes(tmp_path):
    # b'\n\x01x' is valid UTF-8 without NULs; its control byte still marks it as binary.
    path = _write(tmp_path, "tiny.model", caffe_pb2.NetParameter(name="x").SerializeToString())
    assert protoio.read_net_param(path).name == "x"
    with pytest.raises(PrototxtError, match="not a text NetParameter"):
        protoio.read_net_param(path, binary=False)


def test_byte_order_mark_is_accepted(tmp_path):
    path = _write(tmp_path, "bom.prototxt", "\ufeff" + NET_TEXT)
    assert protoio.read_net_param(path).name == "tiny"


def test_text_model_hint(tmp_path):
    path = _write(tmp_path, "net.caffemodel", NET_TEXT)
    with pytest.raises(ModelFileError, match="looks like text"):
        protoio.read_net_param(path)

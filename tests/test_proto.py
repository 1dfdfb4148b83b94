"""caffe.proto, the runtime proto2 parser and the caffe_pb2 module it builds."""

import glob
import os
import shutil
import struct
import subprocess
import time

import pytest
from google.protobuf import descriptor_pb2, text_format

from minicaffe import proto as mproto
from minicaffe.proto import ProtoSyntaxError, caffe_pb2, parse_proto

ZOO = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "zoo"))
FDP = descriptor_pb2.FieldDescriptorProto


def _field(msg_cls, name):
    return msg_cls.DESCRIPTOR.fields_by_name[name]


def _protoc_descriptor(tmp_path, proto_path):
    """protoc's FileDescriptorProto for ``proto_path`` (grpc_tools, else a protoc binary)."""
    out = str(tmp_path / "desc.pb")
    args = ["-I" + os.path.dirname(proto_path), "--descriptor_set_out=" + out,
            os.path.basename(proto_path)]
    try:
        from grpc_tools import protoc
    except ImportError:
        protoc = None
    if protoc is not None:
        assert protoc.main(["protoc"] + args) == 0
    elif shutil.which("protoc"):
        subprocess.run(["protoc"] + args, check=True)
    else:
        pytest.skip("neither grpc_tools nor a protoc binary is installed")
    fds = descriptor_pb2.FileDescriptorSet()
    with open(out, "rb") as f:
        fds.ParseFromString(f.read())
    return fds.file[0]


# ------------------------------------------------------------------------------------------
# The module looks like protoc's


def test_caffe_pb2_looks_generated():
    assert caffe_pb2.NetParameter().ByteSize() == 0
    assert (caffe_pb2.TRAIN, caffe_pb2.TEST) == (0, 1)
    assert caffe_pb2.Phase.Value("TRAIN") == 0 and caffe_pb2.Phase.Name(1) == "TEST"
    assert caffe_pb2.V1LayerParameter.INNER_PRODUCT == 14
    assert caffe_pb2.PoolingParameter.MAX == 0
    assert caffe_pb2.PoolingParameter.PoolMethod.Value("AVE") == 1
    assert caffe_pb2.SolverParameter.SolverType.Name(5) == "ADAM"
    assert caffe_pb2.DESCRIPTOR.name == "caffe.proto"
    assert caffe_pb2.DESCRIPTOR.package == "caffe"
    assert caffe_pb2.NetParameter.DESCRIPTOR.full_name == "caffe.NetParameter"
    import sys
    assert sys.modules["minicaffe.proto.caffe_pb2"] is caffe_pb2


def test_descriptor_proto_header():
    fdp = mproto.build_file_descriptor_proto()
    assert (fdp.name, fdp.package, fdp.syntax) == ("caffe.proto", "caffe", "proto2")
    layer = [m for m in fdp.message_type if m.name == "LayerParameter"][0]
    f = [f for f in layer.field if f.name == "convolution_param"][0]
    assert f.type == FDP.TYPE_MESSAGE and f.type_name == ".caffe.ConvolutionParameter"
    assert f.json_name == "convolutionParam"
    solver = [m for m in fdp.message_type if m.name == "SolverParameter"][0]
    defaults = {f.name: f.default_value for f in solver.field if f.HasField("default_value")}
    assert defaults["delta"] == "1e-08"
    assert defaults["momentum2"] == "0.999"
    assert defaults["random_seed"] == "-1"
    assert defaults["solver_mode"] == "GPU"
    assert defaults["type"] == "SGD"
    assert defaults["test_initialization"] == "true"


def test_descriptor_matches_protoc(tmp_path):
    ref = _protoc_descriptor(tmp_path, mproto.PROTO_PATH)
    mine = mproto.build_file_descriptor_proto()
    # protoc leaves `syntax` unset for proto2; everything else must be byte-identical.
    mine.ClearField("syntax")
    ref.ClearField("syntax")
    if mine.SerializeToString() != ref.SerializeToString():
        assert text_format.MessageToString(mine) == text_format.MessageToString(ref)
    assert mine.SerializeToString() == ref.SerializeToString()


def test_parse_is_fast():
    with open(mproto.PROTO_PATH) as f:
        text = f.read()
    start = time.perf_counter()
    parse_proto(text)
    assert time.perf_counter() - start < 1.0


# ------------------------------------------------------------------------------------------
# Field numbers that binary files depend on


@pytest.mark.parametrize("msg, field, number", [
    ("NetParameter", "name", 1), ("NetParameter", "layers", 2), ("NetParameter", "input", 3),
    ("NetParameter", "input_dim", 4), ("NetParameter", "force_backward", 5),
    ("NetParameter", "state", 6), ("NetParameter", "debug_info", 7),
    ("NetParameter", "input_shape", 8), ("NetParameter", "layer", 100),
    ("LayerParameter", "name", 1), ("LayerParameter", "type", 2),
    ("LayerParameter", "bottom", 3), ("LayerParameter", "top", 4),
    ("LayerParameter", "loss_weight", 5), ("LayerParameter", "param", 6),
    ("LayerParameter", "blobs", 7), ("LayerParameter", "include", 8),
    ("LayerParameter", "exclude", 9), ("LayerParameter", "phase", 10),
    ("LayerParameter", "propagate_down", 11), ("LayerParameter", "transform_param", 100),
    ("LayerParameter", "loss_param", 101), ("LayerParameter", "convolution_param", 106),
    ("LayerParameter", "inner_product_param", 117), ("LayerParameter", "pooling_param", 121),
    ("LayerParameter", "batch_norm_param", 139), ("LayerParameter", "input_param", 143),
    ("LayerParameter", "recurrent_param", 146),
    ("LayerParameter", "mmd_param", 147), ("LayerParameter", "gradient_scaler_param", 149),
    ("LayerParameter", "hash_loss_param", 8001), ("LayerParameter", "entropy_loss_param", 8002),
    ("LayerParameter", "quantization_loss_param", 8003),
    ("LayerParameter", "domain_data_param", 8004), ("LayerParameter", "swish_param", 8005),
    ("LayerParameter", "clip_param", 8006),
    ("BlobProto", "num", 1), ("BlobProto", "channels", 2), ("BlobProto", "height", 3),
    ("BlobProto", "width", 4), ("BlobProto", "data", 5), ("BlobProto", "diff", 6),
    ("BlobProto", "shape", 7), ("BlobProto", "double_data", 8), ("BlobProto", "double_diff", 9),
    ("BlobShape", "dim", 1), ("BlobProtoVector", "blobs", 1),
    ("Datum", "channels", 1), ("Datum", "data", 4), ("Datum", "label", 5),
    ("Datum", "float_data", 6), ("Datum", "encoded", 7),
    ("V1LayerParameter", "layer", 1), ("V1LayerParameter", "bottom", 2),
    ("V1LayerParameter", "top", 3), ("V1LayerParameter", "name", 4),
    ("V1LayerParameter", "type", 5), ("V1LayerParameter", "blobs", 6),
    ("V1LayerParameter", "blobs_lr", 7), ("V1LayerParameter", "weight_decay", 8),
    ("V1LayerParameter", "include", 32), ("V1LayerParameter", "loss_weight", 35),
    ("V1LayerParameter", "transform_param", 36), ("V1LayerParameter", "loss_param", 42),
    ("V1LayerParameter", "param", 1001), ("V1LayerParameter", "blob_share_mode", 1002),
    ("V0LayerParameter", "name", 1), ("V0LayerParameter", "type", 2),
    ("V0LayerParameter", "blobs", 50), ("V0LayerParameter", "hdf5_output_param", 1001),
    ("SolverState", "iter", 1), ("SolverState", "learned_net", 2),
    ("SolverState", "history", 3), ("SolverState", "current_step", 4),
    ("SolverParameter", "net", 24), ("SolverParameter", "solver_mode", 17),
    ("SolverParameter", "solver_type", 30), ("SolverParameter", "type", 40),
    ("SolverParameter", "weights", 42), ("SolverParameter", "snapshot_format", 37),
    ("NetState", "phase", 1), ("NetStateRule", "not_stage", 5),
    ("ParamSpec", "lr_mult", 3), ("ParamSpec", "decay_mult", 4),
    ("PoolingParameter", "round_mode", 13), ("ConvolutionParameter", "dilation", 18),
    ("MMDParameter", "kernel_num", 1), ("MMDParameter", "bandwidth", 5),
    ("GradientScalerParameter", "max_iter", 4), ("DomainDataParameter", "target_root_folder", 10),
])
def test_field_numbers(msg, field, number):
    assert _field(getattr(caffe_pb2, msg), field).number == number


def test_packed_fields():
    for msg, name in [("BlobProto", "data"), ("BlobProto", "diff"), ("BlobProto", "double_data"),
                      ("BlobProto", "double_diff"), ("BlobShape", "dim")]:
        fdp = mproto.build_file_descriptor_proto()
        m = [m for m in fdp.message_type if m.name == msg][0]
        f = [f for f in m.field if f.name == name][0]
        assert f.options.packed, (msg, name)
    assert _field(caffe_pb2.BlobShape, "dim").type == FDP.TYPE_INT64


def test_enum_values():
    assert caffe_pb2.LossParameter.VALID == 1 and caffe_pb2.LossParameter.NONE == 3
    assert caffe_pb2.EltwiseParameter.SUM == 1 and caffe_pb2.EltwiseParameter.PROD == 0
    assert caffe_pb2.SolverParameter.GPU == 1 and caffe_pb2.SolverParameter.CPU == 0
    assert caffe_pb2.DataParameter.LMDB == 1
    assert caffe_pb2.V1LayerParameter.SOFTMAX_LOSS == 21
    assert caffe_pb2.V1LayerParameter.DECONVOLUTION == 39
    assert caffe_pb2.V1LayerParameter.PERMISSIVE == 1
    assert caffe_pb2.ParamSpec.PERMISSIVE == 1
    assert caffe_pb2.HingeLossParameter.L1 == 1
    assert caffe_pb2.MMDParameter.MEDIAN == 1
    assert caffe_pb2.HashLossParameter.BATCH_SIZE == 1


def test_defaults():
    assert caffe_pb2.NetState().phase == caffe_pb2.TEST
    assert caffe_pb2.LossParameter().normalization == caffe_pb2.LossParameter.VALID
    assert caffe_pb2.EltwiseParameter().operation == caffe_pb2.EltwiseParameter.SUM
    s = caffe_pb2.SolverParameter()
    assert s.solver_mode == caffe_pb2.SolverParameter.GPU
    assert s.random_seed == -1
    assert s.type == "SGD" and s.regularization_type == "L2"
    assert s.delta == pytest.approx(1e-8) and s.momentum2 == pytest.approx(0.999)
    assert s.average_loss == 1 and s.iter_size == 1 and s.clip_gradients == -1
    assert s.snapshot_format == caffe_pb2.SolverParameter.BINARYPROTO
    assert not s.HasField("lr_policy") and s.lr_policy == ""
    p = caffe_pb2.PoolingParameter()
    assert p.round_mode == caffe_pb2.PoolingParameter.CEIL and p.stride == 1
    assert caffe_pb2.ParamSpec().lr_mult == 1.0 and caffe_pb2.ParamSpec().decay_mult == 1.0
    assert caffe_pb2.FillerParameter().type == "constant"
    assert caffe_pb2.FillerParameter().sparse == -1
    assert caffe_pb2.ConvolutionParameter().bias_term is True
    assert caffe_pb2.ConcatParameter().axis == 1
    assert caffe_pb2.LRNParameter().beta == pytest.approx(0.75)
    assert caffe_pb2.DataParameter().backend == caffe_pb2.DataParameter.LEVELDB
    assert caffe_pb2.BatchNormParameter().eps == pytest.approx(1e-5)
    assert caffe_pb2.MVNParameter().eps == pytest.approx(1e-9)
    assert caffe_pb2.WindowDataParameter().crop_mode == "warp"
    mmd = caffe_pb2.MMDParameter()
    assert (mmd.kernel_num, mmd.kernel_mul, mmd.fix_gamma) == (5, 2.0, False)
    assert mmd.bandwidth == caffe_pb2.MMDParameter.MEAN
    g = caffe_pb2.GradientScalerParameter()
    assert (g.lower_bound, g.upper_bound, g.alpha, g.max_iter, g.threshold_iter) == \
        (0.0, 1.0, 10.0, 1.0, 0)
    assert _field(caffe_pb2.GradientScalerParameter, "max_iter").type == FDP.TYPE_FLOAT
    h = caffe_pb2.HashLossParameter()
    assert (h.scale, h.similar_weight, h.quantization_weight) == (1, 1, 1)
    assert h.normalization == caffe_pb2.HashLossParameter.NONE
    d = caffe_pb2.DomainDataParameter()
    assert (d.per_class, d.shuffle, d.is_color, d.root_folder) == (5, True, True, "")
    assert caffe_pb2.EntropyLossParameter().scale == 1
    assert caffe_pb2.SwishParameter().beta == 1


def test_148_left_unused():
    numbers = {f.number for f in caffe_pb2.LayerParameter.DESCRIPTOR.fields}
    assert 148 not in numbers
    assert len(numbers) == len(caffe_pb2.LayerParameter.DESCRIPTOR.fields)


# ------------------------------------------------------------------------------------------
# Wire format


def test_blobproto_packed_and_unpacked_both_decode():
    values = [1.5, -2.0, 0.25]
    packed = caffe_pb2.BlobProto()
    packed.data.extend(values)
    packed.double_data.extend(values)
    packed.shape.dim.extend([3, 1])
    wire = packed.SerializeToString()
    assert b"\x2a\x0c" in wire  # data packed: one tag (5, length-delimited), 12 bytes

    # The same blob written the old (unpacked) way: one tag per element.
    unpacked = b""
    for v in values:
        unpacked += b"\x2d" + struct.pack("<f", v)  # field 5, wire type 5 (32-bit)
    for v in values:
        unpacked += b"\x41" + struct.pack("<d", v)  # field 8, wire type 1 (64-bit)
    unpacked += b"\x3a\x04" + b"\x08\x03\x08\x01"  # shape { dim: 3 dim: 1 }, dims unpacked
    a = caffe_pb2.BlobProto.FromString(wire)
    b = caffe_pb2.BlobProto.FromString(unpacked)
    assert list(a.data) == list(b.data) == values
    assert list(a.double_data) == list(b.double_data) == values
    assert list(a.shape.dim) == list(b.shape.dim) == [3, 1]
    assert a == b


def test_phase_is_a_varint_on_the_wire():
    s = caffe_pb2.NetState(phase=caffe_pb2.TRAIN)
    assert s.SerializeToString() == b"\x08\x00"


# ------------------------------------------------------------------------------------------
# The zoo


def _zoo_files():
    return sorted(glob.glob(os.path.join(ZOO, "**", "*.prototxt"), recursive=True))


@pytest.mark.skipif(not _zoo_files(), reason="shared/zoo not found")
@pytest.mark.parametrize("path", _zoo_files(), ids=lambda p: os.path.relpath(p, ZOO))
def test_zoo_prototxt_parses_and_round_trips(path):
    cls = caffe_pb2.SolverParameter if "solver" in os.path.basename(path) else \
        caffe_pb2.NetParameter
    with open(path) as f:
        msg = text_format.Parse(f.read(), cls())
    assert msg.ListFields()
    again = text_format.Parse(text_format.MessageToString(msg), cls())
    assert again == msg
    assert cls.FromString(msg.SerializeToString()) == msg


# ------------------------------------------------------------------------------------------
# The parser on its own


SAMPLE = r"""
// comment
syntax = "proto2";
package t.u;
/* block
   comment */
option java_package = "x.y";
enum Top { A = 0; B = 1; }
message Outer {
  message Inner {
    enum Kind { K0 = 0; K1 = 1; }
    optional Kind kind = 1 [default = K1];
  }
  optional Inner inner = 1;
  optional Inner.Kind kind = 2 [default = K0];
  optional .t.u.Top top = 3 [default = B];
  optional Top top2 = 4;
  repeated int32 ints = 5 [packed = true];
  optional float f = 6 [default = 1e-8];
  optional double d = 7 [default = -.5];
  optional float g = 8 [default = 2.0];
  optional int32 h = 9 [default = 0x10];
  optional uint64 big = 10 [default = 18446744073709551615];
  optional string s = 11 [default = "a\"b" 'c\n'];
  optional bytes b = 12 [default = "\001\xff"];
  optional bool flag = 13 [default = true, deprecated = true];
  optional float inf_val = 14 [default = -inf];
  optional int32 some_long_name_2 = 15 [json_name = "custom"];
  optional bytes b2 = 16 [default = "\u00e9\303\251"];
  optional string s2 = 17 [default = "\303\251\x41"];
  reserved 20, 30 to 40;
  reserved "old";
}
"""


def test_parser_sample():
    fdp = parse_proto(SAMPLE, "sample.proto")
    assert fdp.name == "sample.proto" and fdp.package == "t.u"
    assert fdp.options.java_package == "x.y"
    outer = fdp.message_type[0]
    f = {x.name: x for x in outer.field}
    assert f["inner"].type_name == ".t.u.Outer.Inner" and f["inner"].type == FDP.TYPE_MESSAGE
    assert f["kind"].type_name == ".t.u.Outer.Inner.Kind" and f["kind"].type == FDP.TYPE_ENUM
    assert f["kind"].default_value == "K0"
    assert f["top"].type_name == ".t.u.Top" and f["top"].default_value == "B"
    assert f["top2"].type_name == ".t.u.Top"
    assert f["ints"].options.packed and f["ints"].label == FDP.LABEL_REPEATED
    assert f["f"].default_value == "1e-08"
    assert f["d"].default_value == "-0.5"
    assert f["g"].default_value == "2"
    assert f["h"].default_value == "16"
    assert f["big"].default_value == "18446744073709551615"
    assert f["s"].default_value == 'a"bc\n'
    assert f["b"].default_value == "\\001\\377"
    assert f["flag"].default_value == "true" and f["flag"].options.deprecated
    assert f["inf_val"].default_value == "-inf"
    assert f["b2"].default_value == "\\303\\251\\303\\251"
    assert f["s2"].default_value == "\u00e9A"
    assert f["some_long_name_2"].json_name == "custom"
    assert f["top2"].json_name == "top2" and f["inf_val"].json_name == "infVal"
    assert [(r.start, r.end) for r in outer.reserved_range] == [(20, 21), (30, 41)]
    assert list(outer.reserved_name) == ["old"]
    inner = outer.nested_type[0]
    assert inner.field[0].type_name == ".t.u.Outer.Inner.Kind"
    assert inner.field[0].default_value == "K1"


def test_parser_sample_matches_protoc(tmp_path):
    path = tmp_path / "sample.proto"
    path.write_text(SAMPLE)
    ref = _protoc_descriptor(tmp_path, str(path))
    mine = parse_proto(SAMPLE, "sample.proto")
    mine.ClearField("syntax")
    ref.ClearField("syntax")
    assert text_format.MessageToString(mine) == text_format.MessageToString(ref)


def test_build_classes_from_sample():
    ns = mproto.build_classes(parse_proto(SAMPLE, "sample.proto"))
    outer = ns["Outer"]()
    assert outer.kind == 0 and outer.inner.kind == 1
    assert outer.top == ns["B"] == 1
    assert ns["Top"].Value("A") == 0
    assert outer.f == pytest.approx(1e-8)
    assert outer.b == b"\x01\xff"
    assert hasattr(ns["Outer"], "Inner")


@pytest.mark.parametrize("text, where, what", [
    ('syntax = "proto3";', "1:10", "proto2"),
    ("message A { optional int32 x = 1; optional int32 y = 1; }", "1:54", "already been used"),
    ("message A { optional Missing x = 1; }", "1:22", '"Missing" is not defined'),
    ("message A {\n  int32 x = 1;\n}", "2:3", "label"),
    ("message A { optional int32 x = 1 [default = 1.5]; }", "1:45", "integer"),
    ("message A { repeated int32 x = 1 [default = 1]; }", "1:45", "repeated"),
    ("message A { optional string x = 1 [packed = true]; }", "1:29", "packed"),
    ("enum E { A = 0; }\nmessage M { optional E e = 1 [default = Z]; }", "2:41", "no value"),
    ("message A { optional int32 x = 19000; }", "1:32", "reserved"),
    ("message A { reserved 3; optional int32 x = 3; }", "1:9", "reserved"),
    ("import \"other.proto\";", "1:1", "not supported"),
    ("message A { oneof o { int32 x = 1; } }", "1:13", "not supported"),
    ("message A { optional int32 x = 1 }", "1:34", "expected ';'"),
    ("message A { optional int32 x = 1;", "1:34", "end of file"),
    ("message A { /* open", "1:13", "unterminated"),
    ("enum E { A = 0; B = 0; }", "1:6", "same enum value"),
    ("enum E { A = 0; }\nenum F { A = 1; }", "2:10", "already defined"),
])
def test_parser_errors(text, where, what):
    with pytest.raises(ProtoSyntaxError) as info:
        parse_proto(text, "bad.proto")
    msg = str(info.value)
    assert msg.startswith("bad.proto:" + where + ":"), msg
    assert what in msg, msg


def test_allow_oversize_protos_is_harmless():
    assert mproto._allow_oversize_protos() in ("python", "cpp", "upb")


def test_messages_pickle_by_reference():
    import pickle
    net = caffe_pb2.NetParameter(name="x")
    net.layer.add(name="a", type="ReLU")
    assert type(net).__module__ == "minicaffe.proto.caffe_pb2"
    assert pickle.loads(pickle.dumps(net)) == net

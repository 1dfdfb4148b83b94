"""caffe.proto and caffe_pb2.py, the module protoc generates from it."""

import glob
import os
import re
import struct

import pytest
from google.protobuf import descriptor_pb2, text_format

from minicaffe import proto as mproto
from minicaffe.proto import caffe_pb2, regen

ZOO = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "zoo"))
FDP = descriptor_pb2.FieldDescriptorProto


def _field(msg_cls, name):
    return msg_cls.DESCRIPTOR.fields_by_name[name]


def _file_descriptor_proto():
    return descriptor_pb2.FileDescriptorProto.FromString(caffe_pb2.DESCRIPTOR.serialized_pb)


# ------------------------------------------------------------------------------------------
# The module is protoc's


def _gencode_version(text):
    found = re.search(r"^# Protobuf Python Version: (\S+)$", text, re.M)
    return found.group(1) if found else "unknown"


def test_caffe_pb2_is_what_protoc_makes_of_caffe_proto(tmp_path):
    # An edit of caffe.proto without `python minicaffe/proto/regen.py` fails here.
    pytest.importorskip("grpc_tools", reason="grpcio-tools is not installed (pip install "
                        "grpcio-tools==%s to check caffe_pb2.py)" % regen.GRPCIO_TOOLS)
    with open(regen.regenerate(str(tmp_path))) as f:
        fresh = f.read()
    with open(caffe_pb2.__file__) as f:
        committed = f.read()
    if _gencode_version(fresh) != _gencode_version(committed):
        pytest.skip("this grpcio-tools makes Protobuf Python Version %s code, caffe_pb2.py is %s "
                    "(grpcio-tools==%s)" % (_gencode_version(fresh), _gencode_version(committed),
                                            regen.GRPCIO_TOOLS))
    assert fresh == committed


def test_caffe_pb2_looks_generated():
    assert caffe_pb2.NetParameter().ByteSize() == 0
    assert (caffe_pb2.TRAIN, caffe_pb2.TEST) == (0, 1)
    assert caffe_pb2.Phase.Value("TRAIN") == 0 and caffe_pb2.Phase.Name(1) == "TEST"
    assert caffe_pb2.V1LayerParameter.INNER_PRODUCT == 14
    assert caffe_pb2.PoolingParameter.MAX == 0
    assert caffe_pb2.PoolingParameter.PoolMethod.Value("AVE") == 1
    assert caffe_pb2.SolverParameter.SolverType.Name(5) == "ADAM"
    assert caffe_pb2.DESCRIPTOR.name == "minicaffe/proto/caffe.proto"
    assert caffe_pb2.DESCRIPTOR.package == "caffe"
    assert caffe_pb2.NetParameter.DESCRIPTOR.full_name == "caffe.NetParameter"


def test_descriptor_proto_header():
    fdp = _file_descriptor_proto()
    assert (fdp.name, fdp.package) == ("minicaffe/proto/caffe.proto", "caffe")
    layer = [m for m in fdp.message_type if m.name == "LayerParameter"][0]
    f = [f for f in layer.field if f.name == "convolution_param"][0]
    assert f.type == FDP.TYPE_MESSAGE and f.type_name == ".caffe.ConvolutionParameter"
    solver = [m for m in fdp.message_type if m.name == "SolverParameter"][0]
    defaults = {f.name: f.default_value for f in solver.field if f.HasField("default_value")}
    assert defaults["random_seed"] == "-1"
    assert defaults["solver_mode"] == "GPU"
    assert defaults["type"] == "SGD"
    assert defaults["test_initialization"] == "true"


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
        fdp = _file_descriptor_proto()
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
# The package


def test_allow_oversize_protos_is_harmless():
    assert mproto._allow_oversize_protos() in ("python", "cpp", "upb")


def test_messages_pickle_by_reference():
    import pickle
    net = caffe_pb2.NetParameter(name="x")
    net.layer.add(name="a", type="ReLU")
    assert type(net).__module__ == "minicaffe.proto.caffe_pb2"
    assert pickle.loads(pickle.dumps(net)) == net

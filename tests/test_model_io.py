"""Model files: net → .caffemodel → net, legacy shapes, several files, nothing half-loaded."""
import os
import re

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe.proto import caffe_pb2

NET = """
name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 6 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" } bias_filler { type: "uniform" } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
"""


def _weights(net):
    return {k: [b.data.copy() for b in v] for k, v in net.params.items()}


def test_save_and_load_identical_weights(tmp_path):
    a = caffe.Net(NET, caffe.TEST)
    path = str(tmp_path / "m.caffemodel")
    a.save(path)
    caffe.set_random_seed(99)
    b = caffe.Net(NET, caffe.TEST)
    assert not np.array_equal(a.params["ip1"][0].data, b.params["ip1"][0].data)
    b.copy_from(path)
    for k, v in _weights(a).items():
        for x, y in zip(v, _weights(b)[k]):
            assert np.array_equal(x, y)
    c = caffe.Net(NET, caffe.TEST, weights=path)
    d = caffe.Net(NET, path, caffe.TEST)  # the old pycaffe argument order
    assert np.array_equal(c.params["ip2"][0].data, a.params["ip2"][0].data)
    assert np.array_equal(d.params["ip2"][1].data, a.params["ip2"][1].data)


def test_saved_file_is_caffes_structure(tmp_path):
    net = caffe.Net(NET, caffe.TEST)
    path = str(tmp_path / "m.caffemodel")
    net.save(path)
    p = caffe_pb2.NetParameter()
    with open(path, "rb") as f:
        p.ParseFromString(f.read())
    assert p.name == "small"
    assert [l.name for l in p.layer] == ["data", "ip1", "relu", "ip2"]
    ip1 = p.layer[1]
    assert ip1.type == "InnerProduct" and list(ip1.bottom) == ["data"]
    assert list(ip1.blobs[0].shape.dim) == [4, 6]
    assert len(ip1.blobs[0].data) == 24 and len(ip1.blobs[0].diff) == 0
    assert np.allclose(np.array(ip1.blobs[0].data).reshape(4, 6), net.params["ip1"][0].data)
    assert p.layer[0].phase == caffe.TEST
    # data is written packed: tag 0x2a (field 5, wire type 2) appears, not 24 tags 0x2d
    raw = ip1.blobs[0].SerializeToString()
    assert raw.count(b"\x2d") < 24


def test_legacy_4d_blobs_load(tmp_path):
    """A V1 InnerProduct weight stored as 1x1xNxK loads into an (N, K) blob."""
    net = caffe.Net(NET, caffe.TEST)
    p = caffe_pb2.NetParameter()
    l = p.layer.add()
    l.name, l.type = "ip1", "InnerProduct"
    w = np.arange(24, dtype=np.float32).reshape(4, 6)
    b = np.arange(4, dtype=np.float32)
    bw = l.blobs.add()
    bw.num, bw.channels, bw.height, bw.width = 1, 1, 4, 6
    bw.data.extend(w.ravel().tolist())
    bb = l.blobs.add()
    bb.num, bb.channels, bb.height, bb.width = 1, 1, 1, 4
    bb.data.extend(b.tolist())
    path = str(tmp_path / "legacy.caffemodel")
    with open(path, "wb") as f:
        f.write(p.SerializeToString())
    net.copy_from(path)
    assert np.array_equal(net.params["ip1"][0].data, w)
    assert np.array_equal(net.params["ip1"][1].data, b)


def test_several_files_and_ignored_layers(tmp_path):
    a = caffe.Net(NET, caffe.TEST)
    pa = str(tmp_path / "a.caffemodel")
    a.save(pa)
    only2 = caffe_pb2.NetParameter()
    l = only2.layer.add()
    l.name = "ip2"
    l.blobs.add().CopyFrom(caffe.io.array_to_blobproto(np.full((3, 4), 7, np.float32)))
    l.blobs.add().CopyFrom(caffe.io.array_to_blobproto(np.full((3,), 8, np.float32)))
    extra = only2.layer.add()
    extra.name = "not_in_net"
    pb = str(tmp_path / "b.caffemodel")
    with open(pb, "wb") as f:
        f.write(only2.SerializeToString())
    caffe.set_random_seed(5)
    n = caffe.Net(NET, caffe.TEST, weights=pa + "," + pb)
    assert np.array_equal(n.params["ip1"][0].data, a.params["ip1"][0].data)
    assert np.all(n.params["ip2"][0].data == 7) and np.all(n.params["ip2"][1].data == 8)


def test_mismatch_leaves_weights_untouched(tmp_path):
    net = caffe.Net(NET, caffe.TEST)
    before = _weights(net)
    bad = caffe_pb2.NetParameter()
    l = bad.layer.add()
    l.name = "ip1"
    l.blobs.add().CopyFrom(caffe.io.array_to_blobproto(np.zeros((4, 6), np.float32)))
    l.blobs.add().CopyFrom(caffe.io.array_to_blobproto(np.zeros((4,), np.float32)))
    l2 = bad.layer.add()
    l2.name = "ip2"
    l2.blobs.add().CopyFrom(caffe.io.array_to_blobproto(np.zeros((3, 5), np.float32)))
    l2.blobs.add().CopyFrom(caffe.io.array_to_blobproto(np.zeros((3,), np.float32)))
    path = str(tmp_path / "bad.caffemodel")
    with open(path, "wb") as f:
        f.write(bad.SerializeToString())
    with pytest.raises(caffe.ModelFileError) as ei:
        net.copy_from(path)
    msg = str(ei.value)
    assert "ip2" in msg and "(3, 5)" in msg and "(3, 4)" in msg and "rename the layer" in msg
    for k, v in before.items():  # ip1 came first in the file but was not copied
        for x, y in zip(v, _weights(net)[k]):
            assert np.array_equal(x, y)
    l2.ClearField("blobs")
    l2.blobs.add().CopyFrom(caffe.io.array_to_blobproto(np.zeros((3, 4), np.float32)))
    with open(path, "wb") as f:
        f.write(bad.SerializeToString())
    with pytest.raises(caffe.ModelFileError, match="Incompatible number of blobs for layer ip2"):
        net.copy_from(path)


def test_missing_and_truncated_files(tmp_path):
    net = caffe.Net(NET, caffe.TEST)
    with pytest.raises(caffe.CaffeError, match="nope.caffemodel"):
        net.copy_from(str(tmp_path / "nope.caffemodel"))
    path = str(tmp_path / "m.caffemodel")
    net.save(path)
    data = open(path, "rb").read()
    cut = str(tmp_path / "cut.caffemodel")
    with open(cut, "wb") as f:
        f.write(data[: len(data) // 2])
    before = _weights(net)
    with pytest.raises(caffe.ModelFileError, match="cut.caffemodel"):
        net.copy_from(cut)
    assert all(np.array_equal(x, y) for k in before for x, y in zip(before[k], _weights(net)[k]))


def test_save_is_atomic(tmp_path):
    net = caffe.Net(NET, caffe.TEST)
    path = str(tmp_path / "m.caffemodel")
    net.save(path)
    assert os.listdir(str(tmp_path)) == ["m.caffemodel"]


def test_blobproto_roundtrip_and_double():
    for dt in (np.float32, np.float64):
        a = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(dt)
        p = caffe.io.array_to_blobproto(a)
        back = caffe.io.blobproto_to_array(p)
        assert back.dtype == dt and np.array_equal(back, a)
    # unpacked floats (as some writers produce) decode the same way
    p = caffe_pb2.BlobProto()
    p.shape.dim.extend([3])
    p.data.extend([1.0, 2.0, 3.0])
    raw = b"".join([b"\x3a\x03\x0a\x01\x03"] + [b"\x2d" + np.float32(v).tobytes() for v in (1, 2, 3)])
    q = caffe_pb2.BlobProto()
    q.ParseFromString(raw)
    assert np.array_equal(caffe.io.blobproto_to_array(q), [1, 2, 3])
    assert np.array_equal(caffe.io.blobproto_to_array(p), [1, 2, 3])


def test_empty_caffemodel_is_an_error_and_changes_nothing(tmp_path):
    net = caffe.Net(NET, caffe.TEST)
    before = _weights(net)
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    with pytest.raises(caffe.ModelFileError, match=r"^%s: the file is empty \(0 bytes\), not a "
                       r"NetParameter$" % empty):
        net.copy_from(str(empty))
    with pytest.raises(caffe.ModelFileError, match="empty.caffemodel: the file is empty"):
        caffe.Net(NET, caffe.TEST, weights=str(empty))
    for k, v in before.items():
        assert all(np.array_equal(x, y.data) for x, y in zip(v, net.params[k]))


def test_foreign_weights_warn_with_the_count(tmp_path, caplog):
    other = caffe.Net(NET.replace('"ip1"', '"fc1"').replace('"ip2"', '"fc2"'), caffe.TEST)
    path = str(tmp_path / "foreign.caffemodel")
    other.save(path)
    net = caffe.Net(NET, caffe.TEST)
    before = _weights(net)
    with caplog.at_level("INFO", logger="minicaffe"):
        net.copy_from(path)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["%s: 0 of 2 layers with weights matched by name (the file's layers: "
                        "data, fc1, relu, fc2); those layers keep their initial values" % path]
    assert np.array_equal(before["ip1"][0], net.params["ip1"][0].data)
    caplog.clear()
    half = caffe.Net(NET.replace('"ip2"', '"fc2"'), caffe.TEST)
    half.save(path)
    with caplog.at_level("INFO", logger="minicaffe"):
        net.copy_from(path)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert "%s: weights for 1 of 2 layers copied" % path in caplog.text
    assert np.array_equal(net.params["ip1"][0].data, half.params["ip1"][0].data)


@pytest.mark.parametrize("data,field", [
    (b"\x12\x09\x22\x07\xff\xfe\xfd\xfc\xfb\xfa\xf9", "layers[0].name"),   # 11 bytes, V1 layer
    (b"\xa2\x06\x05\x0a\x03\xff\xfe\xfd", "layer[0].name"),
    (b"\x0a\x03\xc3\x28\x41", "name"),
])
def test_invalid_utf8_in_caffemodel_is_one_line(tmp_path, data, field):
    path = tmp_path / "junk.caffemodel"
    path.write_bytes(data)
    with pytest.raises(caffe.ModelFileError, match=r"^%s: field %s is not valid UTF-8 \(b'.*'\): "
                       r"the file is corrupt or not a NetParameter$" % (path, re.escape(field))):
        caffe.Net(NET, caffe.TEST).copy_from(str(path))


@pytest.mark.parametrize("weights", [None, 123, []])
def test_copy_from_misuse(weights):
    with pytest.raises(caffe.ArgumentError, match="copy_from: "):
        caffe.Net(NET, caffe.TEST).copy_from(weights)

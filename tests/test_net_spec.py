"""pycaffe's net_spec (NetSpec, layers, params, to_proto) and coord_map, against the prototxt
and the offsets pycaffe writes for the same Python."""
import numpy as np
import pytest

import minicaffe as caffe
from minicaffe import coord_map as cm
from minicaffe.net_spec import NetSpec, assign_proto, layers as L, params as P, to_proto
from minicaffe.proto import caffe_pb2


def lenet(batch, named=True):
    n = NetSpec() if named else None
    data, label = L.DummyData(shape=[dict(dim=[batch, 1, 28, 28]), dict(dim=[batch])],
                              transform_param=dict(scale=1. / 255), ntop=2)
    conv1 = L.Convolution(data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    pool1 = L.Pooling(conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    ip1 = L.InnerProduct(pool1, num_output=50, weight_filler=dict(type="xavier"))
    relu1 = L.ReLU(ip1, in_place=True)
    ip2 = L.InnerProduct(relu1, num_output=10, weight_filler=dict(type="xavier"))
    loss = L.SoftmaxWithLoss(ip2, label)
    if not named:
        return loss.to_proto()
    n.data, n.label, n.conv1, n.pool1, n.ip1, n.relu1, n.ip2, n.loss = \
        data, label, conv1, pool1, ip1, relu1, ip2, loss
    return n.to_proto()


def wiring(net):
    return [(lp.name, lp.type, list(lp.bottom), list(lp.top)) for lp in net.layer]


def test_named_netspec_writes_the_prototxt_pycaffe_writes():
    net = lenet(8)
    assert wiring(net) == [
        ("data", "DummyData", [], ["data", "label"]),
        ("conv1", "Convolution", ["data"], ["conv1"]),
        ("pool1", "Pooling", ["conv1"], ["pool1"]),
        ("ip1", "InnerProduct", ["pool1"], ["ip1"]),
        ("relu1", "ReLU", ["ip1"], ["ip1"]),            # in place: the bottom's blob
        ("ip2", "InnerProduct", ["ip1"], ["ip2"]),
        ("loss", "SoftmaxWithLoss", ["ip2", "label"], ["loss"])]
    conv = net.layer[1].convolution_param
    assert list(conv.kernel_size) == [5] and conv.num_output == 20    # scalar → repeated
    assert conv.weight_filler.type == "xavier"
    assert net.layer[2].pooling_param.pool == caffe_pb2.PoolingParameter.MAX
    assert list(net.layer[0].dummy_data_param.shape[0].dim) == [8, 1, 28, 28]
    assert abs(net.layer[0].transform_param.scale - 1 / 255) < 1e-9
    built = caffe.Net(str(net), caffe.TRAIN)
    assert built.blobs["conv1"].shape == (8, 20, 24, 24) and built.blobs["ip2"].shape == (8, 10)


def test_anonymous_tops_are_numbered_per_type():
    """pycaffe's auto names: <Type><k>, one counter per type, tops before their layer."""
    assert wiring(lenet(2, named=False)) == [
        ("DummyData1", "DummyData", [], ["DummyData1", "DummyData2"]),
        ("Convolution1", "Convolution", ["DummyData1"], ["Convolution1"]),
        ("Pooling1", "Pooling", ["Convolution1"], ["Pooling1"]),
        ("InnerProduct1", "InnerProduct", ["Pooling1"], ["InnerProduct1"]),
        ("ReLU1", "ReLU", ["InnerProduct1"], ["InnerProduct1"]),
        ("InnerProduct2", "InnerProduct", ["InnerProduct1"], ["InnerProduct2"]),
        ("SoftmaxWithLoss1", "SoftmaxWithLoss", ["InnerProduct2", "DummyData2"],
         ["SoftmaxWithLoss1"])]


def test_layer_fields_generic_params_and_topless_layers():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3]))
    n.ip = L.InnerProduct(n.data, num_output=4, param=[dict(lr_mult=1), dict(lr_mult=2)],
                          loss_weight=0.5, include=dict(phase=caffe.TRAIN), name="fc")
    n["silence"] = L.Silence(n.ip, ntop=0)
    net = n.to_proto()
    ip = net.layer[1]
    assert [p.lr_mult for p in ip.param] == [1, 2] and list(ip.loss_weight) == [0.5]
    assert ip.include[0].phase == caffe.TRAIN
    assert (ip.name, list(ip.top)) == ("fc", ["ip"])   # name= renames the layer, not its top
    assert (net.layer[2].name, list(net.layer[2].top)) == ("silence", [])
    assert n["ip"] is n.ip
    with pytest.raises(AttributeError):
        n.nothing


def test_params_follow_the_field_the_layer_reads():
    x = L.Input(shape=dict(dim=[1, 2, 4, 4]))
    deconv = L.Deconvolution(x, num_output=3, kernel_size=2, stride=2)
    loss = L.SoftmaxWithLoss(deconv, x, ignore_label=255, normalization=P.Loss.VALID)
    mmd = L.MMDLoss(deconv, deconv, kernel_num=3)
    net = to_proto(loss, mmd)
    by_type = {lp.type: lp for lp in net.layer}
    assert by_type["Deconvolution"].convolution_param.num_output == 3
    assert list(by_type["Deconvolution"].convolution_param.stride) == [2]
    assert by_type["SoftmaxWithLoss"].loss_param.ignore_label == 255
    assert by_type["SoftmaxWithLoss"].loss_param.normalization == caffe_pb2.LossParameter.VALID
    assert by_type["MMDLoss"].mmd_param.kernel_num == 3
    pool = to_proto(L.Pooling(x, pool="AVE", kernel_size=2)).layer[1].pooling_param
    assert pool.pool == caffe_pb2.PoolingParameter.AVE   # an enum by its name
    assert (P.Pooling.MAX, P.Pooling.AVE, P.Eltwise.SUM) == (0, 1, 1)


def test_misuse_is_one_clear_argument_error():
    data = L.DummyData(ntop=2)
    with pytest.raises(TypeError, match=r"^Silence input 0 is not a Top \(type is <class 'tuple'>\)$"):
        L.Silence(data, ntop=0)
    with pytest.raises(caffe.ArgumentError, match="neither a field of inner_product_param nor"):
        to_proto(L.InnerProduct(data[0], num_ouput=3))
    with pytest.raises(caffe.ArgumentError, match="not a value of PoolMethod"):
        to_proto(L.Pooling(data[0], pool="MAXIMUM"))
    with pytest.raises(caffe.ArgumentError, match="expected a dict"):
        to_proto(L.Convolution(data[0], weight_filler="xavier"))
    proto = caffe_pb2.LayerParameter()
    with pytest.raises(caffe.ArgumentError, match="has no field 'nonsense'"):
        assign_proto(proto, "nonsense", 1)
    assign_proto(proto, "bottom", "x")
    assert list(proto.bottom) == ["x"]


# --- coord_map ---------------------------------------------------------------------------------

def conv_pool_deconv(ks=3, stride=1, pad=0, pool=2, dstride=2, dpad=0):
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 20, 20]))
    n.conv = L.Convolution(n.data, num_output=2, kernel_size=ks, stride=stride, pad=pad)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=pool, stride=pool)
    n.deconv = L.Deconvolution(n.pool, convolution_param=dict(
        num_output=2, kernel_size=2 * dstride, stride=dstride, pad=dpad))
    return n


@pytest.mark.parametrize("kw, expected", [
    # conv k3: y = x - 1; pool 2: y = x/2 - 1/2; deconv k4 s2: y = 2x + 3/2 → a = 1, b = 0
    (dict(), (1, 0)),
    (dict(pad=2), (1, -2)),          # conv padding moves the output by -pad
    (dict(dpad=3), (1, 3)),          # deconv padding by +pad
    (dict(pool=4, dstride=4), (1, -1)),
    (dict(ks=5, stride=2, pad=1), (2, -1)),   # a strided conv: deconv at twice data's scale
])
def test_coord_map_matches_the_hand_computed_map(kw, expected):
    n = conv_pool_deconv(**kw)
    ax, a, b = cm.coord_map_from_to(n.deconv, n.data)
    assert ax == 1
    assert (float(np.squeeze(a)), float(np.squeeze(b))) == expected


def test_single_maps_compose_and_inverse():
    n = conv_pool_deconv(ks=3, stride=2, pad=1)
    ax, a, b = cm.coord_map(n.conv.fn)
    assert ax == 1 and a[0] == 0.5 and b[0] == 0.0       # (p - (k-1)/2)/s = (1 - 1)/2
    assert cm.coord_map(L.ReLU(n.conv).fn) == (None, 1, 0)
    dil = L.Convolution(n.data, kernel_size=3, dilation=2, num_output=1)
    assert cm.coord_map(dil.fn)[2][0] == -2.0            # effective kernel 5
    assert cm.compose((1, 2.0, 1.0), (None, 3.0, 4.0)) == (1, 6.0, 9.0)
    assert cm.inverse((1, 2.0, 1.0)) == (1, 0.5, -0.5)
    with pytest.raises(cm.AxisMismatchException):
        cm.compose((1, 1, 0), (2, 1, 0))


def test_crop_builds_a_crop_layer_caffe_accepts():
    n = conv_pool_deconv(ks=5, pad=0)     # conv 20 → 16, pool → 8, deconv → 18
    n.crop = cm.crop(n.deconv, n.conv)    # the deconv output cut to conv's 16 x 16, aligned
    proto = n.to_proto()
    crop = proto.layer[-1]
    assert crop.type == "Crop" and list(crop.bottom) == ["deconv", "conv"]
    ax, a, b = cm.coord_map_from_to(n.deconv, n.conv)
    assert crop.crop_param.axis == ax + 1 and list(crop.crop_param.offset) == [int(-b[0])]
    net = caffe.Net(str(proto), caffe.TEST)
    assert net.blobs["crop"].shape == net.blobs["conv"].shape
    net.blobs["deconv"].data[...] = np.arange(net.blobs["deconv"].count()).reshape(
        net.blobs["deconv"].shape)
    net.forward(start="crop", end="crop")
    off = list(crop.crop_param.offset)[0]
    h = net.blobs["conv"].shape[2]
    np.testing.assert_array_equal(net.blobs["crop"].data,
                                  net.blobs["deconv"].data[:, :, off:off + h, off:off + h])


def test_crop_refuses_what_cannot_be_cropped():
    n = conv_pool_deconv(pool=3, dstride=2)
    with pytest.raises(cm.CropError, match="scale mismatch"):
        cm.crop(n.deconv, n.data)
    n = conv_pool_deconv(dpad=10)
    with pytest.raises(AssertionError, match="negative offset"):   # pycaffe's exception type
        cm.crop(n.deconv, n.data)
    n.ip = L.InnerProduct(n.deconv, num_output=2)
    with pytest.raises(RuntimeError, match="connected by spatial layers"):
        cm.coord_map_from_to(n.ip, n.data)
    legacy = L.Convolution(n.data, kernel_h=3, kernel_w=3, num_output=1)
    with pytest.raises(cm.CoordMapError, match="_h/_w"):
        cm.coord_map(legacy.fn)

"""Data layers on the GPU path: their tops (host memory) feed device layers, a writer reads a
device-resident bottom, and GPU mode gives what CPU mode gives."""
import numpy as np
import pytest

import minicaffe as caffe
from minicaffe import backend

h5py = pytest.importorskip("h5py")

NET = """
layer { name: "h5" type: "HDF5Data" top: "data" top: "label"
        hdf5_data_param { source: "%s" batch_size: 3 shuffle: true } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "out" type: "HDF5Output" bottom: "ip" bottom: "label"
        hdf5_output_param { file_name: "%s" } }
"""


@pytest.mark.parametrize("gpu_mode", [False, True])
def test_hdf5data_and_hdf5output_in_both_modes(tmp_path, gpu_mode):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(5, 4)).astype(np.float32)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["data"], f["label"] = data, np.arange(5, dtype=np.float32)
    (tmp_path / "l.txt").write_text(str(tmp_path / "a.h5") + "\n")
    outs = []
    for mode in (False, gpu_mode):
        backend.set_mode_gpu() if mode else backend.set_mode_cpu()
        caffe.set_random_seed(4)
        out = tmp_path / ("out%d.h5" % len(outs))
        net = caffe.Net(NET % (tmp_path / "l.txt", out), caffe.TRAIN)
        net.forward()
        with h5py.File(out, "r") as f:
            outs.append((f["data"][()], f["label"][()]))
        w, b = net.params["ip"][0].data, net.params["ip"][1].data
        label = outs[-1][1].reshape(3).astype(int)
        np.testing.assert_allclose(outs[-1][0].reshape(3, 2), data[label] @ w.T + b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(outs[0][1], outs[1][1])


WINDOW_NET = """
layer { name: "win" type: "WindowData" top: "data" top: "label"
        window_data_param { source: "%s" root_folder: "%s" batch_size: 4 fg_threshold: 0.5
                            bg_threshold: 0.3 context_pad: 2 }
        transform_param { crop_size: 8 mirror: true } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
"""


def test_windowdata_feeds_the_device_as_on_the_host(tmp_path):
    from PIL import Image
    img = np.random.default_rng(1).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(img).save(str(tmp_path / "a.png"))
    (tmp_path / "w.txt").write_text("# 0\na.png\n3 20 24\n3\n1 0.9 2 3 15 12\n2 0.7 5 5 20 18\n"
                                    "0 0.1 0 0 23 19\n")
    outs = []
    for mode in (False, True):
        backend.set_mode_gpu() if mode else backend.set_mode_cpu()
        caffe.set_random_seed(2)
        net = caffe.Net(WINDOW_NET % (tmp_path / "w.txt", str(tmp_path) + "/"), caffe.TRAIN)
        out = [dict((k, v.copy()) for k, v in net.forward().items()) for _ in range(3)]
        net.layers[0].close()
        outs.append(out)
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a["label"], b["label"])
        np.testing.assert_allclose(a["ip"], b["ip"], rtol=1e-5, atol=1e-5)

"""Vision layers: GPU = CPU (several geometries, groups, chunks of images), finite differences
in GPU mode."""
import numpy as np
import pytest
from gpu_helpers import compare, gauss, gradcheck_gpu

from minicaffe.layers import vision

FILL = 'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" }'
CONV = {
    "3x3": 'num_output: 2 kernel_size: 3 %s' % FILL,
    "stride_pad": 'num_output: 2 kernel_size: 2 stride: 2 pad: 1 %s' % FILL,
    "group_dilation": 'num_output: 4 kernel_size: 2 group: 2 dilation: 2 %s' % FILL,
    "1x1": 'num_output: 3 kernel_size: 1 %s' % FILL,
    "rect": 'num_output: 2 kernel_h: 2 kernel_w: 1 stride_h: 1 stride_w: 2 %s' % FILL,
}


@pytest.mark.parametrize("geom", sorted(CONV))
def test_convolution(geom):
    compare('type: "Convolution" convolution_param { %s }' % CONV[geom], [gauss(2, 2, 4, 5)])


@pytest.mark.parametrize("geom", ["3x3", "stride_pad", "group_dilation"])
def test_deconvolution(geom):
    compare('type: "Deconvolution" convolution_param { %s }' % CONV[geom], [gauss(2, 2, 3, 3)])


def test_convolution_in_chunks_1d_float32(monkeypatch):
    monkeypatch.setattr(vision, "GPU_COL_LIMIT", 1)  # one image per chunk
    spec = 'type: "Convolution" convolution_param { %s }' % CONV["stride_pad"]
    compare(spec, [gauss(3, 2, 3, 4)])
    compare(spec, [gauss(3, 2, 3, 4)], dtype=np.float32)
    compare('type: "Convolution" convolution_param { num_output: 2 kernel_size: 2 %s }' % FILL,
            [gauss(2, 2, 5)])


def test_convolution_gradient():
    gradcheck_gpu('type: "Convolution" convolution_param { %s }' % CONV["stride_pad"],
                  [gauss(2, 2, 3, 3, seed=4)], samples=12)
    gradcheck_gpu('type: "Deconvolution" convolution_param { %s }' % CONV["3x3"],
                  [gauss(1, 2, 2, 2, seed=4)], samples=8)


POOL = {
    "max": "pool: MAX kernel_size: 3 stride: 2",
    "max_pad": "pool: MAX kernel_size: 3 stride: 2 pad: 1",
    "ave_pad": "pool: AVE kernel_size: 3 stride: 2 pad: 1",
    "ave_global": "pool: AVE global_pooling: true",
    "max_rect_floor": "pool: MAX kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 round_mode: FLOOR",
}


@pytest.mark.parametrize("kind", sorted(POOL))
def test_pooling(kind):
    compare('type: "Pooling" pooling_param { %s }' % POOL[kind], [gauss(2, 2, 5, 5)])


def test_pooling_mask_top_and_gradient():
    compare('type: "Pooling" pooling_param { %s }' % POOL["max"], [gauss(1, 2, 5, 5)], n_tops=2)
    gradcheck_gpu('type: "Pooling" pooling_param { %s }' % POOL["ave_pad"],
                  [gauss(1, 1, 4, 4, seed=2)], samples=10)
    gradcheck_gpu('type: "Pooling" pooling_param { %s }' % POOL["max"],
                  [gauss(1, 1, 5, 5, seed=2)], samples=10)


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
def test_lrn(region):
    spec = ('type: "LRN" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 norm_region: %s }'
            % region)
    compare(spec, [gauss(2, 4, 3, 3)])
    gradcheck_gpu(spec, [gauss(1, 3, 2, 2, seed=5)], samples=8)


def test_crop():
    compare('type: "Crop" crop_param { axis: 2 offset: 1 offset: 2 }',
            [gauss(2, 2, 5, 5), gauss(2, 1, 3, 2)], propagate_down=[True, False])
    compare('type: "Crop" crop_param { axis: 1 offset: 1 }',
            [gauss(2, 3, 4, 4), gauss(2, 2, 2, 2)], propagate_down=[True, False])


@pytest.mark.parametrize("geom", [
    "kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0",
    "kernel_size: 2 pad: 1 dilation: 2", "kernel_size: 1"])
def test_im2col(geom):
    spec = 'type: "Im2col" convolution_param { %s }' % geom
    compare(spec, [gauss(2, 2, 4, 5)])
    compare(spec, [gauss(2, 2, 4, 5)], dtype=np.float32)


def test_im2col_1d_and_gradient():
    compare('type: "Im2col" convolution_param { kernel_size: 3 pad: 1 stride: 2 }',
            [gauss(2, 3, 5)])
    gradcheck_gpu('type: "Im2col" convolution_param { kernel_size: 2 stride: 1 pad: 1 }',
                  [gauss(1, 2, 3, 3, seed=3)])


@pytest.mark.parametrize("spec", ["pyramid_height: 3 pool: MAX", "pyramid_height: 2 pool: AVE",
                                  "pyramid_height: 1 pool: MAX"])
def test_spp(spec):
    compare('type: "SPP" spp_param { %s }' % spec, [gauss(2, 2, 7, 9)])
    compare('type: "SPP" spp_param { %s }' % spec, [gauss(2, 2, 8, 8)], dtype=np.float32)


def test_spp_gradient():
    gradcheck_gpu('type: "SPP" spp_param { pyramid_height: 2 pool: AVE }',
                  [gauss(1, 2, 5, 4, seed=2)], stepsize=1e-4, threshold=1e-2)

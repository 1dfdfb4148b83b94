"""Normalization layers: GPU = CPU (TRAIN statistics and running sums, global statistics,
in place), finite differences in GPU mode."""
import numpy as np
import pytest
from gpu_helpers import compare, gauss, gradcheck_gpu


def _fill_stats(layer):
    layer.blobs[0].data[...] = np.arange(layer.channels) * 0.3
    layer.blobs[1].data[...] = 1.0 + np.arange(layer.channels)
    layer.blobs[2].data[...] = 2.0


@pytest.mark.parametrize("shape", [(3, 2, 2, 2), (4, 3)])
def test_batch_norm(shape):
    spec = 'type: "BatchNorm" batch_norm_param { moving_average_fraction: 0.9 }'
    compare(spec, [gauss(*shape)], prepare=_fill_stats)   # running sums are compared too
    compare(spec, [gauss(*shape)], phase=1, prepare=_fill_stats)
    compare(spec, [gauss(*shape)], in_place=True, prepare=_fill_stats)


def test_batch_norm_gradient():
    gradcheck_gpu('type: "BatchNorm"', [gauss(3, 2, 2, seed=3)], samples=8)


SCALE = ['type: "Scale" scale_param { filler { type: "gaussian" } }',
         'type: "Scale" scale_param { bias_term: true filler { type: "gaussian" } '
         'bias_filler { type: "gaussian" } }',
         'type: "Scale" scale_param { axis: 0 num_axes: -1 filler { type: "gaussian" } }']


@pytest.mark.parametrize("spec", SCALE)
def test_scale(spec):
    compare(spec, [gauss(2, 3, 2)])
    compare(spec, [gauss(2, 3, 2)], in_place=True)


def test_scale_bias_two_bottoms_and_gradient():
    compare('type: "Scale" scale_param { axis: 1 }', [gauss(2, 3, 2), gauss(3)])
    compare('type: "Bias" bias_param { axis: 1 }', [gauss(2, 3, 2), gauss(3, 2)])
    compare('type: "Bias" bias_param { filler { type: "gaussian" } }', [gauss(2, 3, 2)])
    compare('type: "Bias" bias_param { filler { type: "gaussian" } }', [gauss(2, 3, 2)],
            in_place=True)
    gradcheck_gpu(SCALE[1], [gauss(2, 3, seed=1)])


@pytest.mark.parametrize("params", ["", "across_channels: true", "normalize_variance: false"])
def test_mvn(params):
    spec = 'type: "MVN" mvn_param { %s }' % params
    compare(spec, [gauss(2, 3, 2, 2)])


def test_mvn_gradient():
    gradcheck_gpu('type: "MVN"', [gauss(2, 2, 3, seed=2)], samples=8)

"""Common layers: GPU = CPU, finite differences in GPU mode."""
import numpy as np
import pytest
from gpu_helpers import compare, gauss, gradcheck_gpu

IP = ('type: "InnerProduct" inner_product_param { num_output: 3 weight_filler { type: '
      '"gaussian" } bias_filler { type: "gaussian" } }')
IP_T = ('type: "InnerProduct" inner_product_param { num_output: 3 transpose: true '
        'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }')


@pytest.mark.parametrize("spec", [IP, IP_T])
def test_inner_product(spec):
    compare(spec, [gauss(2, 3, 2)])
    compare(spec, [gauss(2, 3, 2)], dtype=np.float32)


def test_inner_product_gradient():
    gradcheck_gpu(IP, [gauss(2, 4, seed=1)])
    gradcheck_gpu(IP_T, [gauss(2, 4, seed=1)])


def test_split_silence():
    compare('type: "Split"', [gauss(2, 3)], n_tops=3)
    compare('type: "Split"', [gauss(2, 3)], n_tops=1)
    compare('type: "Silence"', [gauss(2, 3), gauss(3)], n_tops=0)


@pytest.mark.parametrize("op", ["PROD", "SUM coeff: 0.5 coeff: -1 coeff: 2", "MAX",
                                "PROD stable_prod_grad: false"])
def test_eltwise(op):
    spec = 'type: "Eltwise" eltwise_param { operation: %s }' % op
    xs = [gauss(2, 3, 2, seed=s) for s in range(3)]
    xs[1][0, 0, 0] = xs[0][0, 0, 0]  # a MAX tie picks bottom 1
    compare(spec, xs)


def test_eltwise_gradient():
    gradcheck_gpu('type: "Eltwise" eltwise_param { operation: PROD }',
                  [gauss(2, 3, seed=s) for s in range(3)])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_concat_slice(axis):
    xs = [gauss(2, 3, 2, seed=1), gauss(2, 3, 2, seed=2)]
    compare('type: "Concat" concat_param { axis: %d }' % axis, xs)
    compare('type: "Slice" slice_param { axis: %d }' % axis, [gauss(2, 4, 2)], n_tops=2)
    compare('type: "Slice" slice_param { axis: 1 slice_point: 1 slice_point: 3 }',
            [gauss(2, 4, 2)], n_tops=3)


def test_concat_slice_single_flatten_reshape():
    compare('type: "Concat"', [gauss(2, 3)])
    compare('type: "Slice"', [gauss(2, 3)])
    compare('type: "Flatten"', [gauss(2, 3, 2)])
    compare('type: "Reshape" reshape_param { shape { dim: 0 dim: -1 } }', [gauss(2, 3, 2)])


@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
def test_reduction(op):
    spec = 'type: "Reduction" reduction_param { operation: %s axis: 1 coeff: 0.7 }' % op
    compare(spec, [gauss(2, 3, 2)])


def test_reduction_all_and_gradient():
    compare('type: "Reduction" reduction_param { operation: SUMSQ }', [gauss(2, 3)])
    gradcheck_gpu('type: "Reduction" reduction_param { operation: SUMSQ axis: 1 }',
                  [gauss(2, 3, seed=2)])


def test_tile():
    compare('type: "Tile" tile_param { axis: 1 tiles: 3 }', [gauss(2, 2, 3)])


def test_embed():
    spec = ('type: "Embed" embed_param { num_output: 3 input_dim: 4 weight_filler { type: '
            '"gaussian" } bias_filler { type: "gaussian" } }')
    compare(spec, [np.array([[0, 3, 1], [3, 3, 2]], float)], propagate_down=[False])


def test_argmax_falls_back():
    compare('type: "ArgMax" argmax_param { top_k: 2 out_max_val: true }', [gauss(2, 5)],
            backward=False, on_device=False)


def test_parameter():
    spec = 'type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }'

    def prepare(layer):
        layer.blobs[0].data[...] = gauss(2, 3, seed=4)
    compare(spec, [], prepare=prepare)
    compare(spec, [], prepare=prepare, dtype=np.float32)


def test_filter():
    sel = np.array([[1.0], [0], [2], [0], [1]])
    compare('type: "Filter"', [gauss(5, 2, 3), gauss(5, 4, seed=1), sel], n_tops=2,
            propagate_down=[True, True, False])
    compare('type: "Filter"', [gauss(5, 3), sel], dtype=np.float32, propagate_down=[True, False])
    compare('type: "Filter"', [gauss(5, 3), np.zeros((5, 1))], propagate_down=[True, False])


def test_batch_reindex():
    idx = np.array([2.0, 0, 2, 3, 2, 2])
    compare('type: "BatchReindex"', [gauss(4, 2, 3), idx], propagate_down=[True, False])
    compare('type: "BatchReindex"', [gauss(4, 3), idx], dtype=np.float32,
            propagate_down=[True, False])


def test_filter_batch_reindex_gradient():
    gradcheck_gpu('type: "BatchReindex"', [gauss(4, 3, seed=2), np.array([3.0, 1, 1, 0])],
                  check_bottom=0)
    gradcheck_gpu('type: "Filter"', [gauss(4, 3, seed=2), np.array([[1.0], [0], [1], [1]])],
                  check_bottom=0)

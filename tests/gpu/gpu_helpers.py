"""Run one layer in CPU mode and in GPU mode on the same inputs and compare everything."""
import numpy as np

from minicaffe import backend
from minicaffe.blob import HEAD_AT_CPU, Blob
from minicaffe.gradcheck import GradientChecker, make_layer

F64_TOL = 1e-5
F32_TOL = 2e-4


def _blobs(arrays, dtype):
    out = []
    for a in arrays:
        b = Blob(a.shape, dtype)
        b.data[...] = a
        out.append(b)
    return out


def _run(spec, arrays, dtype, gpu_mode, propagate_down, n_tops, top_diffs, phase, iteration,
         in_place, prepare):
    if gpu_mode:
        backend.set_mode_gpu()
    else:
        backend.set_mode_cpu()
    backend.set_random_seed(1701)
    layer = make_layer(spec, phase=phase)
    if iteration is not None:
        layer.set_iteration(iteration)
    bottom = _blobs(arrays, dtype)
    top = [bottom[0]] if in_place else [Blob((), dtype) for _ in range(n_tops)]
    layer.setup(bottom, top)
    if len(layer.param_propagate_down) < len(layer.blobs):  # what a Net sets up
        layer.param_propagate_down = [True] * len(layer.blobs)
    if gpu_mode:
        for b in bottom:  # as if an earlier GPU layer had produced them
            b.gpu_data(False)
    if prepare:
        prepare(layer)
    backend.set_random_seed(42)
    loss = layer.forward(bottom, top)
    heads = [t.data_head for t in top]
    fwd = [np.array(t.cpu_data(), dtype=np.float64) for t in top]
    rng = np.random.default_rng(7)
    for i, (t, w) in enumerate(zip(top, layer.loss_weights)):
        if top_diffs is not None and top_diffs[i] is not None:
            t.diff[...] = top_diffs[i]
        elif not w:
            t.diff[...] = rng.normal(size=t.shape)
    for b in layer.blobs:
        b.diff[...] = 0.5  # param diffs must accumulate onto what is there
    if gpu_mode:
        for b in layer.blobs + top:  # the GPU path starts from device copies
            b.gpu_data(False)
            b.gpu_diff(False)
    pd = propagate_down if propagate_down is not None else [True] * len(bottom)
    layer.backward(top, pd, bottom)
    bwd_heads = [b.diff_head for b, p in zip(bottom, pd) if p]
    bwd = [np.array(b.cpu_diff(), dtype=np.float64) if p else None for b, p in zip(bottom, pd)]
    params = [(np.array(b.cpu_data(), dtype=np.float64), np.array(b.cpu_diff(), dtype=np.float64))
              for b in layer.blobs]
    return dict(loss=loss, fwd=fwd, bwd=bwd, params=params, heads=heads, bwd_heads=bwd_heads,
                layer=layer)


def compare(spec, arrays, *, dtype=np.float64, propagate_down=None, n_tops=1, top_diffs=None,
            phase=None, iteration=None, in_place=False, tol=None, backward=True,
            on_device=True, prepare=None):
    """Forward and backward ``spec`` on copies of ``arrays`` in both modes; every top, bottom
    diff, param and param diff must agree within ``tol`` (1e-5 in float64). ``on_device``:
    the layer has GPU kernels, so its tops (and bottom diffs) must stay on the device."""
    tol = tol or (F64_TOL if np.dtype(dtype) == np.float64 else F32_TOL)
    arrays = [np.asarray(a, np.float64) for a in arrays]
    if not backward:
        propagate_down = [False] * len(arrays)
    kw = dict(dtype=dtype, propagate_down=propagate_down, n_tops=n_tops, top_diffs=top_diffs,
              phase=phase, iteration=iteration, in_place=in_place, prepare=prepare)
    cpu = _run(spec, arrays, gpu_mode=False, **kw)
    dev = _run(spec, arrays, gpu_mode=True, **kw)
    if on_device:
        assert all(h != HEAD_AT_CPU for h in dev["heads"]), \
            "GPU forward left a top on the host: %s" % dev["heads"]
        assert all(h != HEAD_AT_CPU for h in dev["bwd_heads"]), \
            "GPU backward left a bottom diff on the host: %s" % dev["bwd_heads"]
    close = dict(rtol=tol, atol=tol)
    np.testing.assert_allclose(dev["loss"], cpu["loss"], **close)
    for i, (g, c) in enumerate(zip(dev["fwd"], cpu["fwd"])):
        np.testing.assert_allclose(g, c, err_msg="top %d" % i, **close)
    for i, (g, c) in enumerate(zip(dev["bwd"], cpu["bwd"])):
        if c is not None:
            np.testing.assert_allclose(g, c, err_msg="bottom diff %d" % i, **close)
    for i, ((gd, gg), (cd, cg)) in enumerate(zip(dev["params"], cpu["params"])):
        np.testing.assert_allclose(gd, cd, err_msg="param %d data" % i, **close)
        np.testing.assert_allclose(gg, cg, err_msg="param %d diff" % i, **close)
    return cpu, dev


def gradcheck_gpu(spec, arrays, *, stepsize=1e-2, threshold=1e-3, check_bottom=-1, samples=None,
                  kink=None, phase=None, n_tops=1, grad_scale=1.0, iteration=None):
    """Caffe's finite-difference check of ``spec`` with the layer running in GPU mode."""
    backend.set_mode_gpu()
    backend.set_random_seed(1701)
    layer = make_layer(spec, phase=phase)
    if iteration is not None:
        layer.set_iteration(iteration)
    bottom = _blobs([np.asarray(a, np.float64) for a in arrays], np.float64)
    top = [Blob((), np.float64) for _ in range(n_tops)]
    k, kr = kink if kink is not None else (getattr(layer, "gradcheck_kink", None) or (0.0, -1.0))
    checker = GradientChecker(stepsize, threshold, 1701, k, kr, samples, grad_scale)
    checker.check_gradient(layer, bottom, top, check_bottom)
    assert checker.checked > 0
    return checker


def gauss(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)

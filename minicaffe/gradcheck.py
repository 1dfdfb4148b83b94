"""Finite-difference gradient checks with Caffe's semantics (test_gradient_check_util.hpp).

``GradientChecker(stepsize, threshold, seed=1701, kink=0, kink_range=-1)``:

- objective: with ``top_id < 0``, E = ½ Σ_tops Σ x² (each top's diff = its data); otherwise
  E = 2·top[top_id][j] (diff 2 there, 0 elsewhere), which overwrites a loss layer's weight;
- the global seed is reset before **every** forward, so Dropout-like layers repeat;
- each element: est = (E(x+h) − E(x−h)) / 2h, skipped when kink − kink_range ≤ |x| ≤
  kink + kink_range; it must satisfy |computed − est| ≤ threshold · max(|computed|, |est|, 1);
- ``check_bottom``: −1 all bottoms and params, i ≥ 0 bottom i plus params, ≤ −2 params only.

Run it in float64 (blobs built with ``dtype=np.float64``). A mismatch raises
``GradientCheckError`` listing the worst elements; the full list is on ``.failures``. When the
layer has a point where it is not differentiable (a ``gradcheck_kink``: ReLU at 0) or a known
reason for finite differences to miss (a ``gradcheck_hint``: MAX pooling's ties), the message
ends with a ``hint:`` line (``kink_hint``).
"""
import numpy as np
from google.protobuf import text_format

from . import backend
from .blob import Blob
from .errors import CaffeError
from .layer import Layer, create_layer
from .proto import caffe_pb2


class GradientCheckError(AssertionError):
    def __init__(self, message, failures):
        super().__init__(message)
        self.failures = failures


class GradientChecker:
    def __init__(self, stepsize, threshold, seed=1701, kink=0.0, kink_range=-1.0, samples=None,
                 grad_scale=1.0):
        self.samples = samples  # check at most this many random elements per blob (None: all)
        # a layer whose backward is deliberately a multiple of the gradient (gradient
        # reversal: −λ) is checked against grad_scale × the finite difference
        self.grad_scale = float(grad_scale)
        self.stepsize = float(stepsize)
        self.threshold = float(threshold)
        self.seed = seed
        self.kink = float(kink)
        self.kink_range = float(kink_range)
        self.checked = 0  # elements compared in the last check (tests assert it is > 0)

    # --- Caffe's three entry points -------------------------------------------------------------
    def check_gradient(self, layer, bottom, top, check_bottom=-1, setup=True):
        if setup:
            layer.setup(bottom, top)
        return self.check_gradient_single(layer, bottom, top, check_bottom, -1, -1)

    def check_gradient_exhaustive(self, layer, bottom, top, check_bottom=-1, setup=True):
        if setup:
            layer.setup(bottom, top)
        if not top:
            raise ValueError("Exhaustive mode requires at least one top blob.")
        failures, checked = [], 0
        for i, t in enumerate(top):
            for j in range(t.count()):
                failures += self.check_gradient_single(layer, bottom, top, check_bottom, i, j,
                                                       raise_on_failure=False)
                checked += self.checked
        self.checked = checked
        self._raise(failures, layer)
        return failures

    def check_gradient_eltwise(self, layer, bottom, top, setup=True):
        if setup:
            layer.setup(bottom, top)
        if not top:
            raise ValueError("Eltwise mode requires at least one top blob.")
        failures, checked = [], 0
        for i, t in enumerate(top):
            for j in range(t.count()):
                failures += self.check_gradient_single(layer, bottom, top, -1, i, j,
                                                       element_wise=True, raise_on_failure=False)
                checked += self.checked
        self.checked = checked
        self._raise(failures, layer)
        return failures

    # --- the core -----------------------------------------------------------------------------
    def _objective(self, top, top_id, top_data_id):
        if top_id < 0:
            loss = 0.0
            for t in top:
                d = t.data
                loss += float(np.dot(d.ravel(), d.ravel()))
                t.diff[...] = d
            return loss / 2.0
        for t in top:
            t.diff[...] = 0
        t = top[top_id]
        t.diff.reshape(-1)[top_data_id] = 2.0
        return float(t.data.reshape(-1)[top_data_id]) * 2.0

    def _forward(self, layer, bottom, top, top_id, top_data_id):
        backend.set_random_seed(self.seed)
        layer.forward(bottom, top)
        return self._objective(top, top_id, top_data_id)

    def check_gradient_single(self, layer, bottom, top, check_bottom=-1, top_id=-1,
                              top_data_id=-1, element_wise=False, raise_on_failure=True):
        if element_wise:
            if layer.blobs:
                raise ValueError("element-wise checks need a layer without parameters")
            n = top[top_id].count()
            if any(b.count() != n for b in bottom):
                raise ValueError("element-wise checks need bottoms as large as the top")
        to_check, names = [], []
        propagate_down = [check_bottom == -1] * len(bottom)
        for i, b in enumerate(layer.blobs):
            b.diff[...] = 0
            to_check.append(b)
            names.append("param %d" % i)
        if check_bottom == -1:
            to_check += list(bottom)
            names += ["bottom %d" % i for i in range(len(bottom))]
        elif check_bottom >= 0:
            if check_bottom >= len(bottom):
                raise ValueError("check_bottom %d but the layer has %d bottoms"
                                 % (check_bottom, len(bottom)))
            to_check.append(bottom[check_bottom])
            names.append("bottom %d" % check_bottom)
            propagate_down[check_bottom] = True
        if not to_check:
            raise ValueError("No blobs to check.")
        if hasattr(layer, "param_propagate_down") and len(layer.param_propagate_down) < len(layer.blobs):
            layer.param_propagate_down = [True] * len(layer.blobs)

        self._forward(layer, bottom, top, top_id, top_data_id)
        layer.backward(top, propagate_down, bottom)
        computed = [np.array(b.diff, dtype=np.float64).ravel() for b in to_check]

        h = self.stepsize
        failures, checked = [], 0
        pick = np.random.default_rng(self.seed)
        for blob, grad, name in zip(to_check, computed, names):
            indices = range(blob.count())
            if self.samples is not None and blob.count() > self.samples:
                indices = sorted(pick.choice(blob.count(), self.samples, replace=False))
            for k in indices:
                est = pos = neg = 0.0
                if not element_wise or k == top_data_id:
                    flat = blob.data.reshape(-1)
                    orig = flat[k]
                    flat[k] = orig + h
                    pos = self._forward(layer, bottom, top, top_id, top_data_id)
                    flat = blob.data.reshape(-1)
                    flat[k] = orig - h
                    neg = self._forward(layer, bottom, top, top_id, top_data_id)
                    blob.data.reshape(-1)[k] = orig
                    est = (pos - neg) / h / 2.0 * self.grad_scale
                feature = float(blob.data.reshape(-1)[k])
                if self.kink - self.kink_range > abs(feature) or abs(feature) > self.kink + self.kink_range:
                    scale = max(abs(grad[k]), abs(est), 1.0)
                    checked += 1
                    err = abs(grad[k] - est)
                    if err > self.threshold * scale:
                        failures.append({"blob": name, "index": k, "top_id": top_id,
                                         "top_data_id": top_data_id, "computed": float(grad[k]),
                                         "estimated": est, "feature": feature,
                                         "error": err / scale})
        self.checked = checked
        if raise_on_failure:
            self._raise(failures, layer)
        return failures

    def _raise(self, failures, layer):
        if not failures:
            return
        worst = sorted(failures, key=lambda f: -f["error"])[:8]
        lines = ["%s Layer %s: %d gradient element(s) off by more than threshold %g:"
                 % (getattr(layer, "type", "?"), getattr(layer, "name", "?"), len(failures),
                    self.threshold)]
        for f in worst:
            lines.append("  %s[%d] (top %d, element %d): computed %.6g, estimated %.6g, x = %.6g"
                         % (f["blob"], f["index"], f["top_id"], f["top_data_id"],
                            f["computed"], f["estimated"], f["feature"]))
        hint = kink_hint(layer, failures, self.stepsize)
        if hint:
            lines.append(hint)
        raise GradientCheckError("\n".join(lines), failures)


def kink_hint(layer, failures, stepsize):
    """A ``hint:`` line when ``failures`` of ``layer`` may come from the finite difference, not
    from its backward: the layer's own ``gradcheck_hint`` (MAX pooling's ties), or failing
    bottom elements within ``stepsize`` of its ``gradcheck_kink`` (|x| = 0 for ReLU), where
    x ± h straddles the kink. None otherwise (the failure is then likely a real one)."""
    if not failures:
        return None
    own = getattr(layer, "gradcheck_hint", None)
    if own:
        return "hint: " + own
    kink = getattr(layer, "gradcheck_kink", None)
    if not kink:
        return None
    k = kink[0]
    near = sum(1 for f in failures
               if f["blob"].startswith("bottom") and abs(abs(f["feature"]) - k) < stepsize)
    if not near:
        return None
    return ("hint: %d of the %d failing elements lie within the stepsize %g of |x| = %g, where "
            "%s is not differentiable: x + h and x - h straddle the kink, so the finite "
            "difference is not the gradient there; a smaller --stepsize, or --kink %g "
            "--kink_range %g (Caffe's GradientChecker kink and kink_range) skips them"
            % (near, len(failures), stepsize, k, getattr(layer, "type", "the layer"), k, stepsize))


def make_layer(layer_param, phase=None):
    """A layer from a LayerParameter or its prototxt text (``'type: "ReLU" name: "r"'``)."""
    if isinstance(layer_param, str):
        text = layer_param
        layer_param = caffe_pb2.LayerParameter()
        text_format.Merge(text, layer_param)
        if not layer_param.name:
            layer_param.name = layer_param.type.lower()
    if phase is not None:
        layer_param.phase = phase
    return create_layer(layer_param)


def gaussian_blobs(shapes, seed=1701, dtype=np.float64, std=1.0):
    """Bottoms as Caffe's layer tests fill them: Gaussian (std 1), seeded."""
    rng = np.random.default_rng(seed)
    out = []
    for s in shapes:
        b = Blob(s, dtype)
        b.data[...] = rng.normal(0.0, std, s)
        out.append(b)
    return out


def empty_tops(n, dtype=np.float64):
    return [Blob((), dtype) for _ in range(n)]


def _overrides_backward(layer):
    # a Python layer's backward is its module's (the core knows no layer class by name)
    return layer.type == "Python" or type(layer).backward_cpu is not Layer.backward_cpu


def fill_net_inputs(net, seed=1701):
    """Gaussian values (std 1) in every Input blob, as Caffe's layer tests; blobs a layer takes
    as labels (a bottom it refuses to backpropagate to) get random labels in {0, 1}."""
    rng = np.random.default_rng(seed)
    labels = set()
    for layer, bnames in zip(net.layers, net.bottom_names.values()):
        for i, name in enumerate(bnames):
            if not layer.allow_force_backward(i):
                labels.add(name)
    for name in net.inputs:
        b = net.blobs[name]
        b.data[...] = rng.integers(0, 2, b.shape) if name in labels else rng.normal(size=b.shape)


def check_net(net, layer_names=None, stepsize=1e-2, threshold=1e-3, samples=None,
              exhaustive=False, kink=0.0, kink_range=-1.0, seed=1701, fill_inputs=True):
    """Layer-wise finite-difference check of a (float64) net, as Caffe's CheckGradientNet:
    each chosen layer is checked on copies of its current bottoms. Returns a list of
    ``(layer name, type, status, checked elements, failures)``; status is "ok", "FAIL" or
    "skipped: <why>". ``fill_inputs`` first fills the Input blobs (``fill_net_inputs``)."""
    if fill_inputs:
        fill_net_inputs(net, seed)
    net.forward_prefilled()
    results = []
    names = layer_names or net.layer_names
    for name in names:
        idx = net.layer_names.index(name) if name in net.layer_names else None
        if idx is None:
            raise CaffeError("no layer named '%s' in the net (layers: %s)"
                             % (name, ", ".join(net.layer_names)))
        layer = net.layers[idx]
        if not _overrides_backward(layer):
            results.append((name, layer.type, "skipped: no backward", 0, []))
            continue
        bottom = []
        for b in net.nodes[idx].bottoms:
            c = Blob(b.shape, np.float64)
            c.data[...] = b.cpu_data()
            bottom.append(c)
        allowed = [i for i in range(len(bottom)) if layer.allow_force_backward(i)]
        if not allowed and not layer.blobs:
            results.append((name, layer.type, "skipped: nothing to check", 0, []))
            continue
        top = [Blob((), np.float64) for _ in net.nodes[idx].tops]
        scale = layer.gradcheck_scale() if hasattr(layer, "gradcheck_scale") else 1.0
        k, kr = kink, kink_range
        if kr < 0 and getattr(layer, "gradcheck_kink", None):
            k, kr = layer.gradcheck_kink   # the layer's own non-differentiable point
        checker = GradientChecker(stepsize, threshold, seed, k, kr, samples, scale)
        failures, checked = [], 0
        runs = [-1] if len(allowed) == len(bottom) else (allowed or [-2])
        try:
            layer.reshape(bottom, top)
            for cb in runs:
                if exhaustive:
                    failures += checker.check_gradient_exhaustive(layer, bottom, top, cb,
                                                                  setup=False) or []
                else:
                    failures += checker.check_gradient_single(layer, bottom, top, cb, -1, -1,
                                                              raise_on_failure=False)
                checked += checker.checked
        except GradientCheckError as exc:
            failures += exc.failures
        except CaffeError as exc:
            results.append((name, layer.type, "skipped: %s" % exc, 0, []))
            continue
        results.append((name, layer.type, "FAIL" if failures else "ok", checked, failures))
    return results

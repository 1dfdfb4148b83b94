"""Update rules (ComputeUpdateValue of sgd_solver.cpp and solvers/*.cpp), one formula each for
both devices.

``apply_rule`` runs one param's whole update — Normalize (÷ passes), Regularize (L2/L1 decay ×
decay_mult), the rule (× lr_mult) and ``w −= step`` — in one pass over memory, leaving the step
in the diff as Caffe does; the host and the device run the same formula (a compiled loop, a
kernel). ``h`` and ``h2`` are the histories in SolverState order. ``GPUUpdater`` mirrors the
solver's host histories on the device: the host arrays stay the ones a snapshot writes, synced
by ``to_host()`` before a snapshot and ``from_host()`` after a restore.
"""
import math

from numba.extending import register_jitable

from minicaffe.blob import SyncedMemory
from minicaffe.errors import CaffeError
from minicaffe.kernels import in_place

# Each rule is one formula for both devices (minicaffe.kernels.in_place): per element, from the
# weight w, the summed gradient g and the histories h, h2, it returns (w − step, step, h[, h2])
# (the one-history rules get h again as h2, unused, and write back three values):
# Normalize (g·scale, scale = 1/passes) and Regularize (decay·w, or decay·sign(w) for L1) of
# sgd_solver.cpp, then the rule's ComputeUpdateValue, then Blob::Update, in one pass. The step
# is left in the diff, as in Caffe. a, b: momentum / rms_decay / β1, β2 as each rule needs;
# corr: Adam's bias correction.

@register_jitable
def _regularized(w, g, scale, decay, l1):
    """Normalize and Regularize of one element: g·scale + decay·(sign(w) for L1, else w); a
    register_jitable function, so the host loop and the device kernel of every rule call it."""
    return g * scale + decay * ((1.0 if w > 0 else (-1.0 if w < 0 else 0.0)) if l1 else w)


@in_place(3)
def sgd(w, g, h, h2, scale, decay, l1, lr, a, b, delta, corr):
    """h = μh + lr·g; step = h."""
    g = _regularized(w, g, scale, decay, l1)
    h = a * h + lr * g
    return w - h, h, h


@in_place(3)
def nesterov(w, g, h, h2, scale, decay, l1, lr, a, b, delta, corr):
    """h' = μh + lr·g; step = (1 + μ)h' − μh."""
    g = _regularized(w, g, scale, decay, l1)
    hn = a * h + lr * g
    step = (1 + a) * hn - a * h
    return w - step, step, hn


@in_place(3)
def adagrad(w, g, h, h2, scale, decay, l1, lr, a, b, delta, corr):
    """H += g²; step = lr·g / (√H + δ)."""
    g = _regularized(w, g, scale, decay, l1)
    h = h + g * g
    step = g * (lr / (math.sqrt(h) + delta))
    return w - step, step, h


@in_place(3)
def rmsprop(w, g, h, h2, scale, decay, l1, lr, a, b, delta, corr):
    """v = ρv + (1 − ρ)g²; step = lr·g / (√v + δ)."""
    g = _regularized(w, g, scale, decay, l1)
    h = a * h + (1 - a) * g * g
    step = g * (lr / (math.sqrt(h) + delta))
    return w - step, step, h


@in_place(4)
def adadelta(w, g, h, h2, scale, decay, l1, lr, a, b, delta, corr):
    """Eg = μEg + (1 − μ)g²; u = g·√((Eu + δ)/(Eg + δ)); Eu = μEu + (1 − μ)u²; step = lr·u."""
    g = _regularized(w, g, scale, decay, l1)
    h = a * h + (1 - a) * g * g
    u = g * math.sqrt((h2 + delta) / (h + delta))
    h2 = a * h2 + (1 - a) * u * u
    return w - u * lr, u * lr, h, h2


@in_place(4)
def adam(w, g, h, h2, scale, decay, l1, lr, a, b, delta, corr):
    """m = β1m + (1 − β1)g; v = β2v + (1 − β2)g²; step = corr·m/(√v + ε) with
    corr = lr·√(1 − β2^t)/(1 − β1^t) (ε outside the correction, as Caffe)."""
    g = _regularized(w, g, scale, decay, l1)
    h = a * h + (1 - a) * g
    h2 = b * h2 + (1 - b) * g * g
    step = h / (math.sqrt(h2) + delta) * corr
    return w - step, step, h, h2


def apply_rule(p, rule, w, g, h, h2, scale, decay, lr, t, device):
    """One param's update, on flat host arrays or (``device``) flat device arrays; ``h2`` is
    None for the one-history rules."""
    a, b, corr = p.momentum, 0.0, 0.0
    if p.type == "RMSProp":
        a = p.rms_decay
    elif p.type == "Adam":
        b = p.momentum2
        corr = lr * math.sqrt(1 - p.momentum2 ** t) / (1 - p.momentum ** t)
    args = (w, g, h, h if h2 is None else h2, scale, decay, p.regularization_type == "L1", lr,
            a, b, p.delta, corr)
    if device:
        rule.gpu(*args)
    else:
        rule(*args)


class GPUUpdater:
    """Solver::ApplyUpdate on the device for one solver's params; ``history`` / ``history2``
    are the solver's host arrays (SolverState order), mirrored on the device."""

    def __init__(self, history, history2):
        # views: syncing back writes into the solver's arrays
        self._host = [h.reshape(-1) for h in list(history) + list(history2 or [])]
        self._mems = [SyncedMemory(h.size, h.dtype) for h in self._host]
        self.from_host()
        self._n = len(history)

    def arrays(self, i):
        """The device histories (h, h2 or None) of param ``i``."""
        h2 = self._mems[self._n + i].gpu() if len(self._mems) > self._n else None
        return self._mems[i].gpu(), h2

    def to_host(self):
        """Copy the device histories into the solver's arrays (before a snapshot)."""
        for m in self._mems:
            m.cpu(mutable=False)

    def from_host(self):
        """The solver's arrays were rewritten (a restore): upload them on the next update."""
        for m, h in zip(self._mems, self._host):
            m.set_cpu(h)


RULES = {
    "SGD": (sgd, 1),
    "Nesterov": (nesterov, 1),
    "AdaGrad": (adagrad, 1),
    "RMSProp": (rmsprop, 1),
    "AdaDelta": (adadelta, 2),
    "Adam": (adam, 2),
}


def check_solver_param(p):
    """Caffe's CHECKs for each solver type, as CaffeErrors."""
    if p.type not in RULES:
        raise CaffeError("Unknown solver type: '%s' (known: %s)" % (p.type, ", ".join(RULES)))
    if p.type in ("AdaGrad", "RMSProp") and p.momentum != 0:
        raise CaffeError("Momentum cannot be used with %s (momentum: %g)" % (p.type, p.momentum))
    if p.type == "RMSProp" and not 0 <= p.rms_decay < 1:
        raise CaffeError("rms_decay should lie in [0, 1), got %g" % p.rms_decay)
    if p.regularization_type not in ("L1", "L2"):
        raise CaffeError("Unknown regularization type: '%s' (L1 or L2)" % p.regularization_type)

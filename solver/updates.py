"""Update rules (ComputeUpdateValue of sgd_solver.cpp and solvers/*.cpp).

Each rule turns the regularised gradient ``g`` (the param's diff) into the step written back
to the diff, so that ``net.update()`` does ``w -= diff``. ``h`` and ``h2`` are the histories in
SolverState order. All arithmetic is in place on the param's dtype.
"""
import numpy as np

from minicaffe.errors import CaffeError


def sgd(g, h, h2, lr, p, t):
    # h = momentum·h + lr·g; diff = h
    h *= p.momentum
    h += lr * g
    g[...] = h


def nesterov(g, h, h2, lr, p, t):
    # h_old = h; h = μh + lr·g; diff = (1+μ)h − μ·h_old
    mu = p.momentum
    old = h.copy()
    h *= mu
    h += lr * g
    np.multiply(h, 1 + mu, out=g)
    g -= mu * old


def adagrad(g, h, h2, lr, p, t):
    # H += g²; diff = lr·g / (sqrt(H) + δ)
    h += g * g
    g *= lr / (np.sqrt(h) + p.delta)


def rmsprop(g, h, h2, lr, p, t):
    # v = ρ·v + (1−ρ)·g²; diff = lr·g / (sqrt(v) + δ)
    h *= p.rms_decay
    h += (1 - p.rms_decay) * g * g
    g *= lr / (np.sqrt(h) + p.delta)


def adadelta(g, h, h2, lr, p, t):
    # Eg = μEg + (1−μ)g²; u = g·sqrt((Eu+δ)/(Eg+δ)); Eu = μEu + (1−μ)u²; diff = lr·u
    mu, d = p.momentum, p.delta
    h *= mu
    h += (1 - mu) * g * g
    g *= np.sqrt((h2 + d) / (h + d))
    h2 *= mu
    h2 += (1 - mu) * g * g
    g *= lr


def adam(g, h, h2, lr, p, t):
    # m = β1m + (1−β1)g; v = β2v + (1−β2)g²;
    # diff = lr·sqrt(1−β2^t)/(1−β1^t) · m/(sqrt(v)+ε)  (ε outside the correction, as Caffe)
    b1, b2 = p.momentum, p.momentum2
    h *= b1
    h += (1 - b1) * g
    h2 *= b2
    h2 += (1 - b2) * g * g
    corr = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    np.divide(h, np.sqrt(h2) + p.delta, out=g)
    g *= corr


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

"""Binary deep neural network, unsupervised (UH-BDNN; Do, Doan & Cheung, ECCV 2016).

Network: input x (D) → hidden layer (``hidden`` sigmoid units) → code layer H (L identity
units) → reconstruction layer (D identity units) fed by the binary codes B. With m points as
rows, B ∈ {-1, +1}^{m x L}, the objective is

    J = 1/(2m) ‖X - B W3ᵀ - c3‖²                     reconstruction
      + λ1/2 (‖W1‖² + ‖W2‖² + ‖W3‖²)                weight decay
      + λ2/(2m) ‖H - B‖²                             binary constraint
      + λ3/2 ‖HᵀH/m - I‖²                            independence
      + λ4/(2m) ‖Hᵀ1‖²                               balance

with H = sigmoid(X W1ᵀ + c1) W2ᵀ + c2. Alternating optimisation, ``n_outer`` times:

- network step (B fixed): (W3, c3) by ridge least squares (closed form); (W1, c1, W2, c2) by
  ``n_steps`` full-batch gradient steps with momentum;
- B step (network fixed): min_B of the reconstruction + binary terms, a binary quadratic
  problem per point solved by discrete coordinate descent (BA's Z-step with μ = λ2).

B starts from the ITQ codes, as in the paper; codes at test time are sgn(H(x)).
``history`` holds J after each outer iteration and never increases.

Simplifications relative to the paper, and why:

- Optimiser: full-batch gradient descent with momentum and an adaptive rate ("bold driver":
  a step that raises J is undone, the momentum cleared and the rate halved; an accepted step
  grows the rate by 5 %) instead of L-BFGS: simple, and J can only go down.
- (W3, c3) are solved exactly rather than by gradient steps (same objective, exact minimum).
- Features are centred and divided by one global scale (their RMS per dimension), so the
  sigmoid layer does not saturate on raw deep features; the geometry is unchanged.
- Defaults λ1 = 1e-5, λ2 = 5e-2, λ3 = 1e-2, λ4 = 1e-6 and 90 hidden units are our
  recollection of the paper's settings (``dah_paper_notes.md`` §4: UNCONFIRMED).
"""
import numpy as np

from .ba import solve_binary_codes
from .itq import ITQ
from .metrics import binarize

__all__ = ["BDNN", "fit_bdnn"]


def _sigmoid(t):
    return 0.5 * (1.0 + np.tanh(0.5 * t))


class BDNN:
    """A fitted UH-BDNN: ``encode(features)`` = sgn(H(x)) in {-1, +1}."""

    def __init__(self, mean, scale, params, history):
        self.mean, self.scale, self.params, self.history = mean, scale, params, history
        self.n_bits = params["W2"].shape[0]

    def hidden_codes(self, features):
        """The code layer's real-valued output H(x)."""
        x = (np.asarray(features, np.float64) - self.mean) / self.scale
        return _forward(self.params, x)[1]

    def encode(self, features):
        return binarize(self.hidden_codes(features))

    @classmethod
    def fit(cls, features, n_bits, seed=0, hidden=90, lambdas=(1e-5, 5e-2, 1e-2, 1e-6),
            n_outer=10, n_steps=50, lr=1.0, momentum=0.9):
        """Fits UH-BDNN with ``n_bits`` bits; ``lambdas`` = (λ1, λ2, λ3, λ4)."""
        rng = np.random.default_rng(seed)
        x = np.asarray(features, np.float64)
        mean = x.mean(axis=0)
        scale = float(np.sqrt(np.mean((x - mean) ** 2))) or 1.0
        x = (x - mean) / scale
        dim = x.shape[1]
        b = ITQ.fit(x, n_bits, seed).encode(x).astype(np.float64)
        p = {"W1": rng.normal(0, 1 / np.sqrt(dim), (hidden, dim)), "c1": np.zeros(hidden),
             "W2": rng.normal(0, 1 / np.sqrt(hidden), (n_bits, hidden)), "c2": np.zeros(n_bits)}
        lam = lambdas
        history = []
        for _ in range(n_outer):
            p["W3"], p["c3"] = _decoder(x, b, lam[0])
            lr = _train_encoder(p, x, b, lam, n_steps, lr, momentum)
            h = _forward(p, x)[1]
            b = solve_binary_codes(x, p["W3"], p["c3"], h, lam[1], b)
            history.append(_objective(p, x, b, lam))
        return cls(mean, scale, p, history)


def _forward(p, x):
    a1 = _sigmoid(x @ p["W1"].T + p["c1"])
    return a1, a1 @ p["W2"].T + p["c2"]


def _decoder(x, b, lam1):
    """argmin over (W3, c3) of 1/(2m)‖X - B W3ᵀ - c3‖² + λ1/2 ‖W3‖² (c3 not decayed)."""
    m, n_bits = b.shape
    ba = np.hstack([b, np.ones((m, 1))])
    reg = lam1 * m * np.eye(n_bits + 1)
    reg[-1, -1] = 0.0
    sol = np.linalg.solve(ba.T @ ba + reg, ba.T @ x)
    return sol[:-1].T, sol[-1]


def _encoder_terms(p, x, b, lam):
    """The part of J that depends on (W1, c1, W2, c2), and its gradients."""
    m, n_bits = b.shape
    lam1, lam2, lam3, lam4 = lam
    a1, h = _forward(p, x)
    corr = h.T @ h / m - np.eye(n_bits)
    colsum = h.sum(axis=0)
    j = (lam1 / 2 * (np.sum(p["W1"] ** 2) + np.sum(p["W2"] ** 2))
         + lam2 / (2 * m) * np.sum((h - b) ** 2) + lam3 / 2 * np.sum(corr ** 2)
         + lam4 / (2 * m) * np.sum(colsum ** 2))
    dh = lam2 / m * (h - b) + 2 * lam3 / m * h @ corr + lam4 / m * colsum
    dz1 = (dh @ p["W2"]) * a1 * (1 - a1)
    grads = {"W2": dh.T @ a1 + lam1 * p["W2"], "c2": dh.sum(axis=0),
             "W1": dz1.T @ x + lam1 * p["W1"], "c1": dz1.sum(axis=0)}
    return j, grads


def _train_encoder(p, x, b, lam, n_steps, lr, momentum):
    keys = ("W1", "c1", "W2", "c2")
    vel = {k: np.zeros_like(p[k]) for k in keys}
    j, g = _encoder_terms(p, x, b, lam)
    for _ in range(n_steps):
        trial = dict(p)
        for k in keys:
            vel[k] = momentum * vel[k] - lr * g[k]
            trial[k] = p[k] + vel[k]
        j_new, g_new = _encoder_terms(trial, x, b, lam)
        if j_new <= j:
            p.update({k: trial[k] for k in keys})
            j, g, lr = j_new, g_new, lr * 1.05
        else:
            vel = {k: np.zeros_like(p[k]) for k in keys}
            lr *= 0.5
    return lr


def _objective(p, x, b, lam):
    m = len(x)
    r = x - b @ p["W3"].T - p["c3"]
    j_enc, _ = _encoder_terms(p, x, b, lam)
    return float(np.sum(r * r) / (2 * m) + lam[0] / 2 * np.sum(p["W3"] ** 2) + j_enc)


fit_bdnn = BDNN.fit

"""Binary autoencoder (BA; Carreira-Perpiñán & Raziperchikolaei, CVPR 2015), trained by the
method of auxiliary coordinates (MAC).

Codes are in {-1, +1} (the paper's {0, 1} codes up to z' = (z + 1)/2, which the decoder's bias
absorbs). Encoder h(x) = sgn(W x + a), linear decoder f(z) = A z + c. MAC introduces one
binary code z_n per point and minimises, for an increasing penalty μ,

    E_μ(h, f, Z) = Σ_n ‖x_n - f(z_n)‖² + μ ‖z_n - h(x_n)‖²

by alternating

- W-step: f by linear least squares on (Z, X); h by fitting each bit's hyperplane to Z;
- Z-step: for each n, min over z ∈ {-1, +1}^L of ‖x_n - A z - c‖² + μ‖z - h(x_n)‖², a binary
  quadratic problem solved by alternating over bits (exact coordinate minimisation, sweeps
  until no bit changes), started from the current z_n and from h(x_n), the better kept;

and stops when Z = h(X) after a Z-step, or at the end of the μ schedule (the encoder h is the
model either way). Z starts from the ITQ codes, as in the paper. ``history`` records E_μ after
each W-step + Z-step iteration and ``mu_history`` the μ it was measured at; for fixed μ it
never increases.

Simplifications relative to the paper, and why:

- Hash function: one ridge least-squares regression of the {-1, +1} targets on [x, 1] for all
  bits at once (a closed form that reuses one factorisation), instead of L linear SVMs. A bit's
  new hyperplane is kept only if it makes no more errors on that bit than the old one, so the
  W-step cannot raise E_μ (an SVM hinge fit has no such guarantee either).
- Z-step: alternating optimisation over bits only, no exhaustive enumeration for small L.
- μ schedule: μ_k = mu0 · mu_factor^k for ``n_mu`` values, ``n_inner`` iterations each; mu0
  defaults to 1e-3 · (mean squared norm of the centred data) / L, i.e. scaled to the data.
- Features are centred (the mean is stored and subtracted at encoding time).

With fewer points than dimensions (n <= D, e.g. a few thousand 4096-d deep features) a linear
hash function can fit any codes, so h(X) = Z after every W-step and the μ-term vanishes; MAC
then only improves the reconstruction until the Z-step stops changing Z. ``ridge`` (times n)
is the regulariser of the hash-function fit.
"""
import numpy as np

from .itq import ITQ
from .metrics import binarize

__all__ = ["BinaryAutoencoder", "fit_ba", "ridge_operator", "solve_binary_codes"]


def ridge_operator(x, ridge):
    """Returns a function Y -> argmin_W ‖[x, 1] W - Y‖² + ridge ‖W‖² ((D+1) x k), reusing one
    factorisation (the primal (D+1)² or the dual n² system, whichever is smaller)."""
    xa = np.hstack([x, np.ones((len(x), 1))])
    n, d = xa.shape
    if d <= n:
        inv = np.linalg.inv(xa.T @ xa + ridge * np.eye(d))
        return lambda y: inv @ (xa.T @ y)
    inv = np.linalg.inv(xa @ xa.T + ridge * np.eye(n))
    return lambda y: xa.T @ (inv @ y)


def _decoder(z, x):
    """Least-squares decoder (A, c) = argmin ‖x - A z - c‖² via the pseudo-inverse of the small
    (L+1)² normal matrix (a constant bit makes it singular; pinv still gives the minimiser)."""
    za = np.hstack([z, np.ones((len(z), 1))])
    dec = np.linalg.pinv(za.T @ za) @ (za.T @ x)
    return dec[:-1].T, dec[-1]


def _coded_objective(x, a, c, z, h, mu):
    """Per-row Σ ‖x - A z - c‖² + μ‖z - h‖²."""
    r = x - z @ a.T - c
    return np.einsum("ij,ij->i", r, r) + mu * np.sum((z - h) ** 2, axis=1)


def _coordinate_descent(z, g, q, max_sweeps):
    """min over z ∈ {±1}^L of zᵀGz - 2zᵀq per row, by exact single-bit updates from z."""
    z = z.copy()
    off = g - np.diag(np.diag(g))
    field = q - z @ off              # best z_l = sgn(field_l), field_l = q_l - Σ_{m≠l} G_lm z_m
    for _ in range(max_sweeps):
        changed = False
        for lb in range(z.shape[1]):
            f = field[:, lb]
            new = np.where(f > 0, 1.0, np.where(f < 0, -1.0, z[:, lb]))
            flip = new != z[:, lb]
            if flip.any():
                changed = True
                delta = new[flip] - z[flip, lb]
                z[flip, lb] = new[flip]
                field[flip] -= delta[:, None] * off[lb][None, :]
        if not changed:
            break
    return z


def solve_binary_codes(x, a, c, h, mu, z, max_sweeps=20):
    """The MAC Z-step: for each row, min over z ∈ {-1, +1}^L of ‖x - A z - c‖² + μ‖z - h‖²,
    from the current codes ``z`` and from ``h``, keeping per row whichever ends lower (so the
    result is never worse than ``z``). x: n x D, A: D x L, c: D, h, z: n x L in {-1, +1}."""
    g = a.T @ a
    q = (x - c) @ a + mu * h
    z1 = _coordinate_descent(np.asarray(z, np.float64), g, q, max_sweeps)
    z2 = _coordinate_descent(np.asarray(h, np.float64), g, q, max_sweeps)

    def quad(t):                    # the row objective up to a constant (‖z‖² = L for ±1 codes)
        return np.sum((t @ g - 2 * q) * t, axis=1)

    better = quad(z2) < quad(z1)
    z1[better] = z2[better]
    return z1


class BinaryAutoencoder:
    """A fitted BA: ``encode(features)`` = sgn(W (x - mean) + a) in {-1, +1}; ``decode(codes)``
    = A z + c + mean."""

    def __init__(self, mean, w, dec_a, dec_c, history, mu_history):
        self.mean, self.w, self.dec_a, self.dec_c = mean, w, dec_a, dec_c
        self.history, self.mu_history = history, mu_history
        self.n_bits = w.shape[1]

    def encode(self, features):
        x = np.asarray(features, np.float64) - self.mean
        return binarize(x @ self.w[:-1] + self.w[-1])

    def decode(self, codes):
        return np.asarray(codes, np.float64) @ self.dec_a.T + self.dec_c + self.mean

    @classmethod
    def fit(cls, features, n_bits, seed=0, mu0=None, mu_factor=2.0, n_mu=12, n_inner=3,
            ridge=1e-3, max_sweeps=20):
        """Fits a BA with ``n_bits`` bits by MAC over μ = mu0 · mu_factor^k, k < n_mu."""
        x = np.asarray(features, np.float64)
        mean = x.mean(axis=0)
        x = x - mean
        z = ITQ.fit(features, n_bits, seed).encode(features).astype(np.float64)
        if mu0 is None:
            mu0 = 1e-3 * np.mean(np.einsum("ij,ij->i", x, x)) / n_bits
        solve_h = ridge_operator(x, ridge * len(x))
        w = solve_h(z)
        proj = x @ w[:-1] + w[-1]
        history, mu_history = [], []
        mu = mu0
        for _ in range(n_mu):
            for _ in range(n_inner):
                # W-step: decoder by least squares, encoder bits kept only if not worse.
                dec_a, dec_c = _decoder(z, x)
                w_new = solve_h(z)
                proj_new = x @ w_new[:-1] + w_new[-1]
                keep = (np.sum(binarize(proj_new) != z, axis=0)
                        <= np.sum(binarize(proj) != z, axis=0))
                w = np.where(keep, w_new, w)
                proj = np.where(keep, proj_new, proj)
                h = binarize(proj).astype(np.float64)
                # Z-step.
                z = solve_binary_codes(x, dec_a, dec_c, h, mu, z, max_sweeps)
                history.append(float(_coded_objective(x, dec_a, dec_c, z, h, mu).sum()))
                mu_history.append(mu)
                if np.array_equal(h, z):
                    return cls(mean, w, *_decoder(z, x), history, mu_history)
            mu *= mu_factor
        return cls(mean, w, *_decoder(z, x), history, mu_history)


fit_ba = BinaryAutoencoder.fit

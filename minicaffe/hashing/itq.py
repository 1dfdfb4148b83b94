"""Iterative quantization (ITQ; Gong & Lazebnik, CVPR 2011), plus the PCA the other baselines
share.

ITQ: zero-centre X, project onto the top c = n_bits principal directions (V = (X - mean) W),
start from a random orthogonal R and alternate, for 50 iterations,

    B = sgn(V R)                                  (fixes R)
    BᵀV = S Ω Ŝᵀ (SVD),  R = Ŝ Sᵀ                 (orthogonal Procrustes, fixes B)

Each step minimises Q(B, R) = ‖B - V R‖²_F exactly in its own variable, so the objective
recorded after every iteration (``history``) never increases. Codes: sgn((x - mean) W R),
sgn(0) = +1.
"""
import numpy as np

from .metrics import binarize

__all__ = ["pca", "ITQ", "fit_itq"]

_EXACT_PCA_LIMIT = 2048


def _sign_fix(components):
    """Makes each principal direction's largest-magnitude entry positive, so the PCA is
    deterministic (eigenvectors are defined up to sign)."""
    idx = np.argmax(np.abs(components), axis=0)
    s = np.sign(components[idx, np.arange(components.shape[1])])
    return components * np.where(s == 0, 1.0, s)


def pca(features, n_components, seed=0):
    """Top principal directions of ``features`` (n x D).

    Returns ``(mean, components, variances)``: components is D x n_components with orthonormal
    columns, variances the matching eigenvalues of the covariance, in decreasing order. Exact
    (eigh of XᵀX or of XXᵀ, whichever is smaller) when min(n, D) <= 2048; otherwise a
    randomized range finder (Halko et al. 2011) with 6 power iterations, seeded by ``seed``.
    """
    x = np.asarray(features, np.float64)
    n, dim = x.shape
    if not 0 < n_components <= min(n, dim):
        raise ValueError(f"pca: n_components = {n_components} must be in 1..min(n, D) = "
                         f"{min(n, dim)}")
    mean = x.mean(axis=0)
    xc = x - mean
    k = n_components
    if min(n, dim) <= _EXACT_PCA_LIMIT:
        if dim <= n:
            w, vec = np.linalg.eigh(xc.T @ xc)
            w, comp = w[::-1][:k], vec[:, ::-1][:, :k]
        else:
            w, vec = np.linalg.eigh(xc @ xc.T)
            w, vec = w[::-1][:k], vec[:, ::-1][:, :k]
            comp = xc.T @ (vec / np.sqrt(np.maximum(w, 1e-300)))
            comp /= np.linalg.norm(comp, axis=0)
    else:
        rng = np.random.default_rng(seed)
        q, _ = np.linalg.qr(xc @ rng.standard_normal((dim, k + max(10, k))))
        for _ in range(6):
            q, _ = np.linalg.qr(xc.T @ q)
            q, _ = np.linalg.qr(xc @ q)
        _, s, vt = np.linalg.svd(q.T @ xc, full_matrices=False)
        w, comp = s[:k] ** 2, vt[:k].T
    return mean, _sign_fix(comp), np.maximum(w, 0.0) / max(n - 1, 1)


def random_rotation(k, rng):
    """A random k x k orthogonal matrix (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.standard_normal((k, k)))
    return q * np.sign(np.diag(r))


def itq_rotation(v, n_iter=50, rng=None):
    """Runs ITQ on already-projected data v (n x c). Returns ``(R, history)``."""
    rng = np.random.default_rng(0) if rng is None else rng
    r = random_rotation(v.shape[1], rng)
    history = []
    for _ in range(n_iter):
        b = binarize(v @ r).astype(np.float64)
        s, _, sh_t = np.linalg.svd(b.T @ v)
        r = sh_t.T @ s.T
        history.append(float(np.sum((b - v @ r) ** 2)))
    return r, history


class ITQ:
    """A fitted ITQ model: ``encode(features)`` gives sgn((x - mean) W R) in {-1, +1}."""

    def __init__(self, mean, components, rotation, history):
        self.mean, self.components, self.rotation = mean, components, rotation
        self.history = history
        self.n_bits = rotation.shape[1]

    def project(self, features):
        """The continuous values (x - mean) W R whose signs are the codes."""
        return (np.asarray(features, np.float64) - self.mean) @ self.components @ self.rotation

    def encode(self, features):
        return binarize(self.project(features))

    @classmethod
    def fit(cls, features, n_bits, seed=0, n_iter=50):
        """Fits ITQ with ``n_bits`` bits (<= D) and ``n_iter`` alternations; ``history`` holds
        ‖B - VR‖²_F after each iteration (non-increasing)."""
        rng = np.random.default_rng(seed)
        mean, comp, _ = pca(features, n_bits, seed)
        v = (np.asarray(features, np.float64) - mean) @ comp
        r, history = itq_rotation(v, n_iter, rng)
        return cls(mean, comp, r, history)


fit_itq = ITQ.fit

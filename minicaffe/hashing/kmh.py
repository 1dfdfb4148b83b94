"""K-means hashing (KMH; He, Wen & Sun, CVPR 2013): affinity-preserving k-means.

In a subspace of b bits there are k = 2^b centres c_0..c_{k-1}; centre i's code is the binary
form of its index i. KMH minimises, over the centres and the assignment a(x),

    E = (1/n) Σ_x ‖x - c_a(x)‖²  +  λ Σ_{i,j} (n_i n_j / n²) (‖c_i - c_j‖ - s·√h(i, j))²

with h(i, j) the Hamming distance between indices i and j (s·√h is the paper's "generalized
Hamming distance"), n_i the size of cluster i and λ = 10. Long codes use the product space:
PCA to ``dims_per_bit * n_bits`` dimensions, those dimensions split into M subspaces of
``bits_per_subspace`` (<= 8) bits each with their variance balanced across subspaces (greedy
eigenvalue allocation, as in OPQ), and the subspace indices concatenated. E is the sum over
subspaces; ``history`` records it after each iteration and never increases.

Encoding: nearest centre in each subspace, its index bits mapped to {-1, +1}; the Hamming
distance between two codes is the sum of the subspace index distances, as in the paper.

Simplifications relative to the paper (all deliberate, none changes the objective):

- Initialisation: ITQ on the top-b principal directions of each subspace; the centres start
  at the vertices of that rotated hypercube with half-side a = mean |VR| (index bit j = sign
  of rotated direction j), where the affinity error is zero. The paper starts from a
  PCA-aligned hypercube.
- Update step: all centres move together by gradient descent with Armijo backtracking
  (``n_update_steps`` steps per iteration), then s is set to its closed-form optimum
  s = Σ w D h^½ / Σ w h. The paper updates one centre at a time by quasi-Newton with s fixed.
- Assignment step: nearest centre, as in the paper. Because the weights n_i n_j / n² depend on
  the assignment, this step can raise E; when it would, the old assignment is kept and that
  subspace stops (counted as converged), which keeps ``history`` non-increasing.
- PCA dimension: ``dims_per_bit * n_bits`` (default: as many dims as bits), capped at D.
"""
import numpy as np

from .itq import itq_rotation, pca

__all__ = ["KMH", "fit_kmh"]


def _index_bits(b):
    """(2^b x b) matrix of the indices' bits in {-1, +1}; bit j of index i is (i >> j) & 1."""
    i = np.arange(2 ** b)[:, None]
    return np.where((i >> np.arange(b)) & 1, 1, -1).astype(np.int8)


def _split_bits(n_bits, per):
    m = -(-n_bits // per)
    return [n_bits // m + (1 if i < n_bits % m else 0) for i in range(m)]


def _allocate(variances, sizes):
    """Greedy eigenvalue allocation: each dimension, in decreasing variance, goes to the
    non-full subspace with the smallest product of variances so far."""
    logs = np.log(np.maximum(variances, 1e-300))
    groups, score = [[] for _ in sizes], np.zeros(len(sizes))
    for d in np.argsort(-variances, kind="stable"):
        open_ = [g for g in range(len(sizes)) if len(groups[g]) < sizes[g]]
        g = min(open_, key=lambda g: (score[g], g))
        groups[g].append(int(d))
        score[g] += logs[d]
    return [np.array(g) for g in groups]


class _Subspace:
    """Affinity-preserving k-means in one subspace, on sufficient statistics."""

    def __init__(self, y, b, lam, rng, n_itq=50):
        self.y, self.b, self.lam = y, b, lam
        self.ysq = np.einsum("ij,ij->i", y, y)
        bits = _index_bits(b)
        self.h = np.sqrt(((b - bits.astype(np.float64) @ bits.T) / 2))      # √Hamming
        top = np.argsort(-y.var(axis=0), kind="stable")[:b]
        v = y[:, top] - y[:, top].mean(axis=0)
        r, _ = itq_rotation(v, n_itq, rng)
        a = np.abs(v @ r).mean()
        self.c = np.repeat(y.mean(axis=0, keepdims=True), 2 ** b, axis=0)
        self.c[:, top] += (a * bits) @ r.T
        self.assign(self.nearest())
        self.s = self.best_scale(self.c)
        self.done = False

    def nearest(self, y=None):
        y = self.y if y is None else y
        d2 = -2.0 * y @ self.c.T + np.einsum("ij,ij->i", self.c, self.c)
        return np.argmin(d2, axis=1)

    def assign(self, a):
        k = len(self.c)
        self.a = a
        self.cnt = np.bincount(a, minlength=k).astype(np.float64)
        self.sum = np.zeros_like(self.c)
        np.add.at(self.sum, a, self.y)
        self.sq = np.bincount(a, weights=self.ysq, minlength=k)
        n = len(self.y)
        self.w = np.outer(self.cnt, self.cnt) / n ** 2

    def _dist(self, c):
        diff = c[:, None, :] - c[None, :, :]
        return diff, np.sqrt(np.sum(diff ** 2, axis=2))

    def best_scale(self, c):
        _, dist = self._dist(c)
        den = np.sum(self.w * self.h ** 2)
        return float(np.sum(self.w * dist * self.h) / den) if den > 0 else 0.0

    def energy(self, c=None, s=None):
        c = self.c if c is None else c
        s = self.s if s is None else s
        n = len(self.y)
        quan = (self.sq.sum() - 2 * np.sum(self.sum * c) + np.sum(self.cnt * np.sum(c * c, 1))) / n
        _, dist = self._dist(c)
        return float(quan + self.lam * np.sum(self.w * (dist - s * self.h) ** 2))

    def grad(self, c):
        n = len(self.y)
        g = 2.0 / n * (self.cnt[:, None] * c - self.sum)
        diff, dist = self._dist(c)
        coef = 4.0 * self.lam * self.w * (dist - self.s * self.h) / np.where(dist > 0, dist, 1.0)
        np.fill_diagonal(coef, 0.0)
        return g + np.einsum("ij,ijk->ik", coef, diff)

    def update_centres(self, steps):
        e = self.energy()
        step = 0.5 * len(self.y) / max(self.cnt.max(), 1.0)       # 1/L of the quantisation term
        for _ in range(steps):
            g = self.grad(self.c)
            gg = float(np.sum(g * g))
            if gg == 0.0:
                break
            while step > 1e-12:
                c_new = self.c - step * g
                e_new = self.energy(c_new)
                if e_new <= e - 1e-4 * step * gg:
                    self.c, e, step = c_new, e_new, step * 2.0
                    break
                step *= 0.5
            else:
                break
        s = self.best_scale(self.c)
        if self.energy(s=s) <= e:
            self.s = s

    def iterate(self, steps):
        if self.done:
            return
        self.update_centres(steps)
        old = (self.a, self.cnt, self.sum, self.sq, self.w)
        e_old = self.energy()
        a = self.nearest()
        if np.array_equal(a, self.a):
            self.done = True
            return
        self.assign(a)
        if self.energy() > e_old:
            self.a, self.cnt, self.sum, self.sq, self.w = old
            self.done = True


class KMH:
    """A fitted K-means hashing model; ``encode(features)`` gives {-1, +1} codes."""

    def __init__(self, mean, components, groups, subspaces, history):
        self.mean, self.components, self.groups = mean, components, groups
        self.centres = [sp.c for sp in subspaces]
        self.bits = [_index_bits(sp.b) for sp in subspaces]
        self.scales = [sp.s for sp in subspaces]
        self.history = history
        self.n_bits = sum(sp.b for sp in subspaces)

    def encode(self, features):
        y = (np.asarray(features, np.float64) - self.mean) @ self.components
        out = []
        for g, c, bits in zip(self.groups, self.centres, self.bits):
            d2 = -2.0 * y[:, g] @ c.T + np.einsum("ij,ij->i", c, c)
            out.append(bits[np.argmin(d2, axis=1)])
        return np.concatenate(out, axis=1)

    @classmethod
    def fit(cls, features, n_bits, seed=0, bits_per_subspace=4, dims_per_bit=1, lam=10.0,
            n_iter=50, n_update_steps=10):
        """Fits KMH with ``n_bits`` bits in subspaces of at most ``bits_per_subspace`` (1..8)
        bits, λ = ``lam``, ``n_iter`` assignment/update iterations."""
        if not 1 <= bits_per_subspace <= 8:
            raise ValueError("bits_per_subspace must be in 1..8 (2^b centres per subspace)")
        rng = np.random.default_rng(seed)
        sizes = _split_bits(n_bits, bits_per_subspace)
        x = np.asarray(features, np.float64)
        n_dims = min(dims_per_bit * n_bits, x.shape[1], x.shape[0])
        if n_dims < n_bits:
            raise ValueError(f"KMH needs at least {n_bits} feature dimensions and samples")
        dims = [s * n_dims // n_bits for s in sizes]
        dims[0] += n_dims - sum(dims)
        mean, comp, var = pca(x, n_dims, seed)
        groups = _allocate(var, dims)
        y = (x - mean) @ comp
        subspaces = [_Subspace(y[:, g], b, lam, rng) for g, b in zip(groups, sizes)]
        history = []
        for _ in range(n_iter):
            for sp in subspaces:
                sp.iterate(n_update_steps)
            history.append(sum(sp.energy() for sp in subspaces))
            if all(sp.done for sp in subspaces):
                break
        return cls(mean, comp, groups, subspaces, history)


fit_kmh = KMH.fit

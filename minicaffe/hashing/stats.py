"""Paired comparisons of two methods over matched runs (the same pair, seed and bit length).

``paired_comparison(a, b)`` asks whether method a beats method b on matched numbers without
assuming the differences are normal: its p-value is the two-sided sign-flip permutation test
(under H0 each difference d_i = a_i − b_i is as likely to be −d_i), exact over all 2^n sign
patterns for n <= 20, else from seeded Monte-Carlo draws; the paired t statistic is reported
beside it for readers who expect one.
"""
import math

import numpy as np

__all__ = ["paired_comparison", "sign_flip_p", "mean_std"]

EXACT_MAX = 20        # 2^20 sign patterns: about 1 M sums, well under a second
DRAWS = 200_000


def sign_flip_p(d, exact_max=EXACT_MAX, draws=DRAWS, seed=0):
    """Two-sided p of the paired sign-flip test: the share of sign patterns s whose
    |Σ s_i d_i| reaches the observed |Σ d_i| (exact), or (1 + hits) / (1 + draws) (Monte-Carlo,
    which never gives 0)."""
    d = np.asarray(d, np.float64).ravel()
    n = d.size
    if n == 0:
        return float("nan")
    observed = abs(d.sum())
    tol = 1e-9 * max(1.0, np.abs(d).sum())   # sums equal up to rounding count as reaching it
    if n <= exact_max:
        sums = np.zeros(1)
        for x in d:                           # all 2^n signed sums, one doubling per element
            sums = np.concatenate([sums + x, sums - x])
        return float(np.mean(np.abs(sums) >= observed - tol))
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, draws, 10_000):
        signs = rng.integers(0, 2, size=(min(10_000, draws - start), n)) * 2 - 1
        hits += int(np.sum(np.abs(signs @ d) >= observed - tol))
    return (1.0 + hits) / (1.0 + draws)


def mean_std(values):
    """(mean, sample standard deviation); the std is 0 for one value."""
    v = np.asarray(values, np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def paired_comparison(a, b, exact_max=EXACT_MAX, draws=DRAWS, seed=0):
    """Matched numbers ``a`` and ``b`` (a_i, b_i from the same run conditions): n, the mean
    and sample std of d = a − b, wins (a > b), losses, ties, the paired t statistic
    mean / (std / √n) (nan when std = 0 or n < 2) and the permutation p-value."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError("paired values need the same length (%d, %d)" % (a.size, b.size))
    d = a - b
    n = d.size
    mean, std = mean_std(d) if n else (float("nan"), float("nan"))
    t = mean / (std / math.sqrt(n)) if n > 1 and std > 0 else float("nan")
    return {"n": int(n), "mean_diff": mean, "std_diff": std,
            "wins": int(np.sum(d > 0)), "losses": int(np.sum(d < 0)), "ties": int(np.sum(d == 0)),
            "t": float(t), "p": sign_flip_p(d, exact_max, draws, seed)}

"""Hashing metrics: hand-computed APs (ties in database order, a query with no relevant item),
protocol B leave-self-out, PR by Hamming radius, recognition accuracy (supplement eq. 6),
each also against a plain loop reference."""
import csv
import math

import numpy as np
import pytest

from minicaffe.hashing import (
    average_precisions,
    binarize,
    class_log_probabilities,
    hamming_distance,
    mean_average_precision,
    pr_to_csv,
    precision_recall_by_radius,
    recognition_accuracy,
)

# 2-bit database of 5 items and 3 queries, used by the hand-checked tests.
DB = np.array([[1, 1], [1, -1], [1, 1], [-1, -1], [-1, 1]])
DB_LABELS = np.array([0, 1, 1, 0, 0])
Q = np.array([[1, 1], [-1, -1], [1, -1]])
Q_LABELS = np.array([0, 1, 2])


def ap_loop(q, ql, db, dl, exclude=None):
    """AP written as a loop: rank by (distance, database index), skip `exclude`."""
    dist = [(int(np.sum(q != b)), k) for k, b in enumerate(db) if k != exclude]
    hits, precs = 0, []
    for rank, (_, k) in enumerate(sorted(dist), start=1):
        if dl[k] == ql:
            hits += 1
            precs.append(hits / rank)
    return sum(precs) / hits if hits else math.nan


def random_codes(rng, n, bits):
    return binarize(rng.normal(size=(n, bits)))


def test_binarize_sign_of_zero_is_plus_one():
    b = binarize(np.array([[-0.5, 0.0, 0.3, -0.0]]))
    assert b.dtype == np.int8
    np.testing.assert_array_equal(b, [[-1, 1, 1, 1]])


def test_hamming_distance_counts_differing_bits():
    rng = np.random.default_rng(0)
    q, db = random_codes(rng, 7, 13), random_codes(rng, 9, 13)
    expected = (q[:, None, :] != db[None, :, :]).sum(axis=2)
    d = hamming_distance(q, db)
    assert np.issubdtype(d.dtype, np.integer)
    np.testing.assert_array_equal(d, expected)


def test_codes_must_be_plus_minus_one():
    with pytest.raises(ValueError, match="binarize"):
        hamming_distance(np.array([[0.2, -1.0]]), DB)


def test_average_precision_by_hand():
    # q0 (label 0): distances 0,1,0,2,1 -> stable order db0, db2, db1, db4, db3;
    #   relevant db0, db4, db3 at ranks 1, 4, 5: AP = (1/1 + 2/4 + 3/5) / 3 = 0.7.
    #   (Ties broken the other way, db2 before db0, would give 0.5333.)
    # q1 (label 1): distances 2,1,2,0,1 -> order db3, db1, db4, db0, db2;
    #   relevant db1, db2 at ranks 2, 5: AP = (1/2 + 2/5) / 2 = 0.45.
    # q2 (label 2): no relevant item -> skipped.
    ap = average_precisions(Q, Q_LABELS, DB, DB_LABELS)
    np.testing.assert_allclose(ap[:2], [0.7, 0.45])
    assert math.isnan(ap[2])
    assert mean_average_precision(Q, Q_LABELS, DB, DB_LABELS) == pytest.approx(0.575)


def test_protocol_b_leaves_self_out_by_hand():
    # Database queried by itself. Item 0 (label 0, code ++) against items 1..4:
    #   distances 1,0,2,1 -> order db2, db1, db4, db3; relevant db4, db3 at ranks 3, 4:
    #   AP = (1/3 + 2/4) / 2 = 5/12. Item 1 (label 1, +-): distances db0 1, db2 1, db3 1,
    #   db4 2 -> order db0, db2, db3, db4; relevant db2 at rank 2: AP = 1/2.
    ap = average_precisions(DB, DB_LABELS, DB, DB_LABELS, exclude_self=True)
    assert ap[0] == pytest.approx(5 / 12)
    assert ap[1] == pytest.approx(1 / 2)
    for i in range(5):
        assert ap[i] == pytest.approx(ap_loop(DB[i], DB_LABELS[i], DB, DB_LABELS, exclude=i))


@pytest.mark.parametrize("exclude_self", [False, True])
def test_average_precision_matches_loop_with_many_ties(exclude_self):
    rng = np.random.default_rng(1)
    db, dl = random_codes(rng, 40, 3), rng.integers(0, 4, 40)         # 3 bits: ties everywhere
    q, ql = (db, dl) if exclude_self else (random_codes(rng, 25, 3), rng.integers(0, 5, 25))
    ap = average_precisions(q, ql, db, dl, exclude_self=exclude_self, chunk=7)
    ref = [ap_loop(q[i], ql[i], db, dl, exclude=i if exclude_self else None)
           for i in range(len(q))]
    np.testing.assert_allclose(ap, ref, equal_nan=True)
    assert mean_average_precision(q, ql, db, dl, exclude_self) == pytest.approx(np.nanmean(ref))


def test_exclude_self_needs_one_set():
    with pytest.raises(ValueError, match="exclude_self"):
        mean_average_precision(Q, Q_LABELS, DB, DB_LABELS, exclude_self=True)


def test_perfect_codes_give_map_one():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 8, 200)
    codes = binarize(rng.normal(size=(8, 32)))[labels]               # one code per class
    assert mean_average_precision(codes, labels, codes, labels) == pytest.approx(1.0)
    assert mean_average_precision(codes, labels, codes, labels, True) == pytest.approx(1.0)


def test_random_codes_give_class_prior():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, 2000)
    codes = random_codes(rng, 2000, 32)
    m = mean_average_precision(codes, labels, codes, labels, exclude_self=True)
    assert abs(m - 0.1) < 0.02


def pr_loop(q, ql, db, dl, exclude_self):
    d = q.shape[1]
    ret, hit, rel = np.zeros(d + 1), np.zeros(d + 1), 0
    for i in range(len(q)):
        keep = np.arange(len(db)) != i if exclude_self else np.ones(len(db), bool)
        dist = (q[i] != db[keep]).sum(axis=1)
        r = dl[keep] == ql[i]
        if not r.any():
            continue
        rel += r.sum()
        for radius in range(d + 1):
            ret[radius] += np.sum(dist <= radius)
            hit[radius] += np.sum((dist <= radius) & r)
    with np.errstate(invalid="ignore"):
        return hit / ret, hit / rel


@pytest.mark.parametrize("exclude_self", [False, True])
def test_precision_recall_by_radius(exclude_self):
    rng = np.random.default_rng(4)
    db, dl = random_codes(rng, 50, 6), rng.integers(0, 3, 50)
    q, ql = (db, dl) if exclude_self else (random_codes(rng, 30, 6), rng.integers(0, 4, 30))
    radius, p, r = precision_recall_by_radius(q, ql, db, dl, exclude_self, chunk=8)
    np.testing.assert_array_equal(radius, np.arange(7))
    p_ref, r_ref = pr_loop(q, ql, db, dl, exclude_self)
    np.testing.assert_allclose(p, p_ref, equal_nan=True)
    np.testing.assert_allclose(r, r_ref)
    assert r[-1] == pytest.approx(1.0)
    assert np.all(np.diff(r) >= 0)


def test_precision_is_nan_where_nothing_is_retrieved():
    # The query is at distance 2 from every database item: nothing within r = 0 or 1.
    radius, p, r = precision_recall_by_radius(np.array([[1, 1]]), [0],
                                              np.array([[-1, -1], [-1, -1]]), [0, 1])
    assert np.isnan(p[0]) and np.isnan(p[1]) and p[2] == pytest.approx(0.5)
    np.testing.assert_allclose(r, [0, 0, 1])


def test_pr_to_csv(tmp_path):
    path = tmp_path / "pr.csv"
    pr_to_csv(path, {"ITQ": ([float("nan"), 0.5], [0.0, 1.0]), "DAH": ([1.0, 0.25], [0.5, 1.0])})
    rows = list(csv.reader(open(path)))
    assert rows[0] == ["method", "radius", "precision", "recall"]
    assert rows[1:] == [["ITQ", "0", "nan", "0.0"], ["ITQ", "1", "0.5", "1.0"],
                        ["DAH", "0", "1.0", "0.5"], ["DAH", "1", "0.25", "1.0"]]


def test_class_log_probabilities_eq6():
    rng = np.random.default_rng(5)
    v, u = rng.normal(size=(6, 4)), rng.normal(size=(9, 4))
    y = np.array([2, 0, 0, 3, 2, 2, 0, 3, 3])                      # class 1 absent
    logp = class_log_probabilities(v, u, y, num_classes=4, chunk=4)
    e = np.exp(v @ u.T)
    ref = np.stack([e[:, y == j].sum(1) for j in range(4)], axis=1) / e.sum(1, keepdims=True)
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(logp, np.log(ref))
    assert np.all(np.isneginf(logp[:, 1]))
    # Stable for huge inner products (exp would overflow): still a distribution over classes.
    big = class_log_probabilities(1000 * v, u, y, num_classes=4)
    assert np.all(np.isfinite(big[:, [0, 2, 3]]))
    np.testing.assert_allclose(np.exp(big).sum(axis=1), 1.0)


def test_recognition_accuracy_sums_over_class_members():
    # Class 0 has one source code at [1, 0]; class 1 has three at [0.5, 0]. For v = [1, 0],
    # eq. 6 compares e^1 = 2.72 with 3 e^0.5 = 4.95: class 1 wins, although its codes are less
    # similar. v = [4, 0]: e^4 = 54.6 vs 3 e^2 = 22.2, class 0 wins. v = [0, 3]: class 2.
    u = np.array([[1, 0], [0.5, 0], [0.5, 0], [0.5, 0], [0, 1]])
    y = np.array([0, 1, 1, 1, 2])
    v = np.array([[1.0, 0], [4.0, 0], [0, 3.0]])
    acc, pred = recognition_accuracy(v, [1, 0, 1], u, y, num_classes=3)
    np.testing.assert_array_equal(pred, [1, 0, 2])
    assert acc == pytest.approx(2 / 3)


def test_recognition_accuracy_on_clusters():
    rng = np.random.default_rng(6)
    proto = np.tanh(3 * rng.normal(size=(5, 16)))
    ys, yt = rng.integers(0, 5, 100), rng.integers(0, 5, 60)
    u = np.tanh(3 * proto[ys] + 0.3 * rng.normal(size=(100, 16)))
    v = np.tanh(3 * proto[yt] + 0.3 * rng.normal(size=(60, 16)))
    acc, pred = recognition_accuracy(v, yt, u, ys, num_classes=5, chunk=16)
    assert acc == 1.0 and pred.shape == (60,)

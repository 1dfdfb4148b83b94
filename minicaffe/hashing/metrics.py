"""Evaluation of hash codes: Hamming ranking mAP, precision-recall by Hamming radius, and
DAH's recognition accuracy (supplement eq. 6).

The protocol is ``dah_spec.md`` §4:

- binary codes are b = sgn(u) with sgn(0) = +1 (the quantisation target of the loss; the
  authors' ``calcMap.m`` uses ``u > 0``, which differs only on exact zeros);
- mAP runs over the FULL Hamming ranking (not top-k), ties kept in database order (a stable
  sort, as MATLAB's ``sort`` in ``calcMap.m``), relevance = same label, queries without any
  relevant item skipped;
- protocol A: target queries against the source database (``exclude_self=False``);
  protocol B: within one set, each item a query against the rest (``exclude_self=True``).

Everything works on query chunks, so memory stays at ``chunk x n_database``.
"""
import csv

import numpy as np

__all__ = ["binarize", "hamming_distance", "average_precisions", "mean_average_precision",
           "precision_recall_by_radius", "pr_to_csv", "class_log_probabilities",
           "recognition_accuracy"]

_CHUNK = 512


def binarize(u):
    """b = sgn(u) in {-1, +1} as int8, with sgn(0) = +1 (``dah_spec.md`` §1)."""
    return np.where(np.asarray(u) >= 0, 1, -1).astype(np.int8)


def _codes(b, name):
    """Checks that ``b`` is a 2-D array of {-1, +1} codes (bool is read as True = +1) and
    returns it as float32, which holds the inner products of up to 2^24 bits exactly."""
    b = np.asarray(b)
    if b.dtype == bool:
        b = np.where(b, 1, -1)
    if b.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (n x bits), got shape {b.shape}")
    if b.size and not np.all(np.abs(b) == 1):
        raise ValueError(f"{name}: codes must be in {{-1, +1}}; binarize() continuous codes first")
    return b.astype(np.float32)


def _pair(query_codes, db_codes):
    q = _codes(query_codes, "query_codes")
    db = _codes(db_codes, "db_codes")
    if q.shape[1] != db.shape[1]:
        raise ValueError(f"query codes have {q.shape[1]} bits, database codes {db.shape[1]}")
    return q, db


def _hamming(q, db):
    d = q.shape[1]
    dist = np.rint((d - q @ db.T) * 0.5)
    return dist.astype(np.int16 if d < 32767 else np.int32)


def hamming_distance(qb, db):
    """Hamming distances between {-1, +1} codes, (d - qb dbᵀ)/2, as an integer matrix
    (n_query x n_database)."""
    q, b = _pair(qb, db)
    return _hamming(q, b)


def _labels(labels, n, name):
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != n:
        raise ValueError(f"{name}: {len(labels)} labels for {n} codes")
    return labels


def _chunks(query_codes, query_labels, db_codes, db_labels, exclude_self, chunk):
    """Yields (dist, relevant) for consecutive query chunks. With exclude_self the query's own
    database entry gets distance d + 1 (it sorts last, after every real item) and is marked
    irrelevant; callers drop it."""
    q, db = _pair(query_codes, db_codes)
    ql = _labels(query_labels, len(q), "query_labels")
    dl = _labels(db_labels, len(db), "db_labels")
    if exclude_self and len(q) != len(db):
        raise ValueError("exclude_self needs the query set to be the database "
                         f"({len(q)} queries, {len(db)} database items)")
    d = q.shape[1]
    for s in range(0, len(q), chunk):
        e = min(s + chunk, len(q))
        dist = _hamming(q[s:e], db)
        rel = ql[s:e, None] == dl[None, :]
        if exclude_self:
            rows = np.arange(e - s)
            dist[rows, rows + s] = d + 1
            rel[rows, rows + s] = False
        yield s, e, dist, rel


def average_precisions(query_codes, query_labels, db_codes, db_labels, exclude_self=False,
                       chunk=_CHUNK):
    """Per-query average precision over the full Hamming ranking; NaN for a query with no
    relevant item.

    AP_q = (1/R_q) Σ_{k: item k relevant} precision@k, with the database ranked by Hamming
    distance with a stable sort (ties in database order) and R_q relevant items in the list.
    """
    n_db = len(np.asarray(db_codes)) - (1 if exclude_self else 0)
    ap = np.full(len(np.asarray(query_codes)), np.nan)
    ranks = np.arange(1, n_db + 1, dtype=np.float64)
    for s, e, dist, rel in _chunks(query_codes, query_labels, db_codes, db_labels,
                                   exclude_self, chunk):
        order = np.argsort(dist, axis=1, kind="stable")[:, :n_db]
        hits = np.take_along_axis(rel, order, axis=1)
        n_rel = hits.sum(axis=1)
        prec = np.cumsum(hits, axis=1) / ranks
        sums = np.where(hits, prec, 0.0).sum(axis=1)
        ok = n_rel > 0
        ap[s:e][ok] = sums[ok] / n_rel[ok]
    return ap


def mean_average_precision(query_codes, query_labels, db_codes, db_labels, exclude_self=False,
                           chunk=_CHUNK):
    """mAP over the full Hamming ranking, the mean of :func:`average_precisions` over the
    queries that have at least one relevant item (``calcMap.m``). Protocol A: target queries,
    source database. Protocol B: ``exclude_self=True`` with queries = database, each item
    removed from its own ranking. Returns NaN when no query has a relevant item."""
    ap = average_precisions(query_codes, query_labels, db_codes, db_labels, exclude_self, chunk)
    ok = ~np.isnan(ap)
    return float(ap[ok].mean()) if ok.any() else float("nan")


def precision_recall_by_radius(query_codes, query_labels, db_codes, db_labels,
                               exclude_self=False, chunk=_CHUNK):
    """Precision and recall of the retrieved set {dist <= r} for every Hamming radius
    r = 0..d, micro-averaged over queries:

        precision(r) = Σ_q |relevant ∩ retrieved_r| / Σ_q |retrieved_r|
        recall(r)    = Σ_q |relevant ∩ retrieved_r| / Σ_q |relevant|

    Queries with no relevant item are skipped, as in the mAP. precision(r) is NaN where no
    query retrieves anything (undefined, not zero); recall(d) = 1. Returns
    ``(radius, precision, recall)``, arrays of length d + 1.
    """
    d = np.asarray(query_codes).shape[1]
    retrieved = np.zeros(d + 2, np.int64)
    hit = np.zeros(d + 2, np.int64)
    n_relevant = 0
    for _s, _e, dist, rel in _chunks(query_codes, query_labels, db_codes, db_labels,
                                   exclude_self, chunk):
        keep = rel.any(axis=1)
        dist, rel = dist[keep], rel[keep]
        retrieved += np.bincount(dist.ravel(), minlength=d + 2)
        hit += np.bincount(dist[rel], minlength=d + 2)
        n_relevant += int(rel.sum())
    retrieved = np.cumsum(retrieved[:d + 1])       # bin d + 1 holds excluded self-matches
    hit = np.cumsum(hit[:d + 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(retrieved > 0, hit / np.maximum(retrieved, 1), np.nan)
        recall = hit / n_relevant if n_relevant else np.full(d + 1, np.nan)
    return np.arange(d + 1), precision, recall


def pr_to_csv(path, rows):
    """Writes precision-recall curves as CSV with columns ``method,radius,precision,recall``.

    ``rows``: a mapping ``{method: (precision, recall)}`` or an iterable of
    ``(method, precision, recall)``; radius is the array index (0..d). NaN is written as
    ``nan``.
    """
    items = rows.items() if hasattr(rows, "items") else ((m, (p, r)) for m, p, r in rows)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "radius", "precision", "recall"])
        for method, (precision, recall) in items:
            for r, (p, c) in enumerate(zip(np.asarray(precision), np.asarray(recall))):
                w.writerow([method, r, repr(float(p)), repr(float(c))])


def class_log_probabilities(target_codes, source_codes, source_labels, num_classes,
                            chunk=_CHUNK):
    """log p_ij of supplement eq. 6 for every target i and class j, against ALL source codes:

        p_ij = Σ_{k: y_k = j} exp(v_iᵀu_k) / Σ_k exp(v_iᵀu_k)

    with continuous codes and unscaled inner products (``test_dah.m``). Computed as a
    log-sum-exp per class (each class's own max subtracted) minus a log-sum-exp over all k;
    a class absent from the source gets -inf. Returns an (n_target x num_classes) array.
    """
    v = np.asarray(target_codes, np.float64)
    u = np.asarray(source_codes, np.float64)
    y = _labels(source_labels, len(u), "source_labels").astype(np.int64)
    if not len(y):
        raise ValueError("class_log_probabilities: no source codes")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"source labels must lie in 0..{num_classes - 1}")
    order = np.argsort(y, kind="stable")
    u, y = u[order], y[order]
    present, starts = np.unique(y, return_index=True)
    out = np.full((len(v), num_classes), -np.inf)
    for s in range(0, len(v), chunk):
        logits = v[s:s + chunk] @ u.T
        cmax = np.maximum.reduceat(logits, starts, axis=1)
        sums = np.add.reduceat(np.exp(logits - np.repeat(cmax, np.diff(np.r_[starts, len(y)]),
                                                          axis=1)), starts, axis=1)
        lse_class = cmax + np.log(sums)
        m = lse_class.max(axis=1, keepdims=True)
        lse_all = m + np.log(np.exp(lse_class - m).sum(axis=1, keepdims=True))
        out[s:s + chunk, present] = lse_class - lse_all
    return out


def recognition_accuracy(target_codes, target_labels, source_codes, source_labels, num_classes,
                         chunk=_CHUNK):
    """DAH recognition accuracy (``dah_spec.md`` §4): each target gets argmax_j p_ij of
    supplement eq. 6 against all source codes (continuous codes, not binarised); the target
    labels are used only to score. Returns ``(accuracy, predictions)``."""
    logp = class_log_probabilities(target_codes, source_codes, source_labels, num_classes, chunk)
    pred = np.argmax(logp, axis=1)
    t = _labels(target_labels, len(pred), "target_labels")
    acc = float(np.mean(pred == t)) if len(pred) else float("nan")
    return acc, pred

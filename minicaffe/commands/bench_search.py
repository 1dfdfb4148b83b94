"""``tools/bench_search``: speed, memory and recall of hash-code search, against float search.

    tools/bench_search [--exact_n 1000000] [--approx_n 10000000] [--hnsw_n 1000000]
                       [--float_n 100000] [--float_dim 4096] [--threads 1,2]
                       [--model DEPLOY --weights W --transform_from TRAIN_NET --root TOYHOME]
                       [--markdown OUT.md]

Prints Markdown tables (and writes them to ``--markdown``):

1. exact search over ``--exact_n`` 64-bit codes, the numpy and faiss (``IndexBinaryFlat``)
   engines at each ``--threads``: queries/s for k = 10, index memory, build time;
2. approximate search over clustered synthetic codes (a random centre per 100 codes, each
   bit flipped with probability 1/16), against exact faiss on the same database:
   ``faiss-mih`` on ``--approx_n`` codes, ``faiss-hnsw`` on ``--hnsw_n``; recall@10 by
   identity (ties at the 10th distance broken otherwise count as misses) and tie-aware (a
   result counts when its distance is within the exact 10th distance), speed ratio;
3. float cosine search (faiss ``IndexFlatIP`` over L2-normalised vectors, else NumPy) over
   ``--float_n`` synthetic ``--float_dim``-d features against 64-bit codes of the same items
   (sign random projections): memory and speed ratio;
4. with ``--model``/``--weights``: a trained hash net over the four ToyHome domains at
   ``--root``: mAP of the Hamming ranking (checked equal to ``metrics.mean_average_precision``)
   and of cosine over ``fc7`` (float), protocol A (Clipart queries, Art database) and all
   domains leave-self-out, with their memory and speed.

Queries are drawn like the database items. Machine load matters: the numbers are wall-clock.
"""
import argparse
import logging
import time

import numpy as np

from minicaffe.datasets import toyhome
from minicaffe.hashing import metrics
from minicaffe.search import HashIndex, encode_images, have_faiss, ranking_average_precisions

from ._cli import run, setup_logging, summary
from .index import folder_entries

log = logging.getLogger("minicaffe")


def build_parser():
    p = argparse.ArgumentParser(prog="bench_search", description=summary(__doc__))
    p.add_argument("--exact_n", type=int, default=1000000, help="codes for the exact search rows")
    p.add_argument("--approx_n", type=int, default=10000000, help="codes for the MIH rows")
    p.add_argument("--hnsw_n", type=int, default=1000000, help="codes for the HNSW rows")
    p.add_argument("--float_n", type=int, default=100000, help="items for the float cosine row")
    p.add_argument("--float_dim", type=int, default=4096, help="dimension of the float features")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts to measure")
    p.add_argument("--queries", type=int, default=200, help="queries per measurement")
    p.add_argument("--mih", default="4:1,3:1,3:2", help="MIH settings nhash:nflip (substrings, "
                   "bit flips probed per substring)")
    p.add_argument("--hnsw_m", type=int, default=16, help="HNSW links per node (M)")
    p.add_argument("--ef_search", default="16,32,64", help="comma-separated HNSW efSearch values")
    p.add_argument("--model", default="", help="ToyHome hash deploy net (section 4)")
    p.add_argument("--weights", default="", help="its .caffemodel")
    p.add_argument("--transform_from", default="", help="training net for the image transformation")
    p.add_argument("--root", default="", help="ToyHome root (default: the cached one)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic codes")
    p.add_argument("--markdown", default="", help="also write the tables to this markdown file")
    return p


def clustered_codes(n, rng, centres=None, per_centre=100, chunk=1 << 20):
    """64-bit codes as (n, 8) uint8: a random centre (``n / per_centre`` of them unless given)
    with each bit flipped with probability 1/16 (the AND of four random words)."""
    if centres is None:
        centres = rng.integers(0, 256, (max(1, n // per_centre), 8), dtype=np.uint8)
        centres = centres.view(np.uint64)[:, 0]
    out = np.empty(n, np.uint64)
    for s in range(0, n, chunk):
        m = min(n, s + chunk) - s
        flips = rng.integers(0, 256, (4, m, 8), dtype=np.uint8).view(np.uint64)[..., 0]
        flip = flips[0] & flips[1] & flips[2] & flips[3]
        out[s:s + m] = centres[rng.integers(0, len(centres), m)] ^ flip
    return out.view(np.uint8).reshape(n, 8), centres


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _mib(nbytes):
    if nbytes < 2 ** 20:
        return "%.1f KiB" % (nbytes / 2.0 ** 10)
    if nbytes < 2 ** 30:
        return "%.1f MiB" % (nbytes / 2.0 ** 20)
    return "%.2f GiB" % (nbytes / 2.0 ** 30)


def _index_bytes(idx):
    eng = idx.build()
    if idx.engine == "numpy":
        return idx.codes.nbytes
    return len(eng.faiss.serialize_index_binary(eng.index))


def _recalls(d, i, exact_d, exact_i):
    k = exact_i.shape[1]
    ident = np.mean([len(set(a[a >= 0]) & set(b)) / k for a, b in zip(i, exact_i)])
    tie = np.mean(np.minimum(((d <= exact_d[:, -1:]) & (i >= 0)).sum(1), k) / k)
    return ident, tie


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def bench_exact(args, rng, threads, have_faiss):
    db, centres = clustered_codes(args.exact_n, rng)
    q, _ = clustered_codes(args.queries, rng, centres)
    rows, ref = [], None
    for engine in ["numpy"] + (["faiss"] if have_faiss else []):
        for t in threads:
            idx = HashIndex(64, engine=engine, threads=t).add(db)
            _, build = _timed(idx.build)
            (d, i), secs = _timed(lambda: idx.search(q, 10))
            same = "—" if ref is None else ("yes" if (i == ref).all() else "NO")
            ref = i if ref is None else ref
            rows.append([engine, t, "%d" % args.exact_n, "%.0f" % (len(q) / secs),
                         _mib(_index_bytes(idx)), "%.2f s" % build, same])
            log.info("exact %s, %d thread(s): %.0f queries/s", engine, t, len(q) / secs)
    return _table(["engine", "threads", "codes", "queries/s (k=10)", "index memory",
                   "build", "same top-10 as numpy"], rows)


def bench_approx(args, rng, threads):
    t = max(threads)
    rows = []
    mih = [tuple(int(v) for v in m.split(":")) for m in args.mih.split(",") if m]
    by_nhash = [[{"mih_nhash": h, "mih_nflip": f} for h2, f in mih if h2 == h]
                for h in sorted({h for h, _ in mih}, reverse=True)]
    runs = [(args.approx_n, "faiss-mih", by_nhash),
            (args.hnsw_n, "faiss-hnsw", [[{"hnsw_m": args.hnsw_m, "ef_search": int(e)}
                                          for e in args.ef_search.split(",")]])]
    for n, engine, groups in runs:
        if n <= 0:
            continue
        db, centres = clustered_codes(n, rng)
        q, _ = clustered_codes(args.queries, rng, centres)
        exact = HashIndex(64, engine="faiss", threads=t).add(db)
        (ed, ei), esecs = _timed(lambda: exact.search(q, 10))
        rows.append(["faiss (exact)", "%d" % n, "", "%.0f" % (len(q) / esecs), "1.00", "1.00",
                     "1.0x", _mib(_index_bytes(exact)), ""])
        log.info("exact faiss over %d codes: %.0f queries/s", n, len(q) / esecs)
        for settings in groups:
            idx = HashIndex(64, engine=engine, threads=t, **settings[0]).add(db)
            _, build = _timed(idx.build)
            for s in settings:
                idx.build().configure(**s)
                (d, i), secs = _timed(lambda: idx.search(q, 10))
                ident, tie = _recalls(d, i, ed, ei)
                rows.append([engine, "%d" % n, ", ".join("%s=%s" % kv for kv in s.items()),
                             "%.0f" % (len(q) / secs), "%.3f" % ident, "%.3f" % tie,
                             "%.1fx" % (esecs / secs), _mib(_index_bytes(idx)), "%.1f s" % build])
                log.info("%s %s: recall@10 %.3f (tie-aware %.3f), %.1fx exact", engine, s,
                         ident, tie, esecs / secs)
        exact = idx = None   # free this database's indexes before the next
    return _table(["engine", "codes", "parameters", "queries/s", "recall@10", "recall@10 "
                   "(tie-aware)", "speed vs exact", "index memory", "build"], rows), t


def _cosine_engine(x, threads, have_faiss):
    if have_faiss:
        import faiss
        faiss.omp_set_num_threads(threads)
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        return lambda q, k: index.search(np.ascontiguousarray(q, np.float32), k)[1]

    def search(q, k):
        sims = q @ x.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        return np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, 1), 1), 1)

    return search


def _normalise(x):
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def bench_float(args, rng, threads, have_faiss):
    n, dim, t = args.float_n, args.float_dim, max(threads)
    centres = rng.standard_normal((max(1, n // 100), dim), dtype=np.float32)
    x = np.empty((n, dim), np.float32)
    for s in range(0, n, 10000):
        m = min(n, s + 10000) - s
        x[s:s + m] = centres[rng.integers(0, len(centres), m)]
        x[s:s + m] += rng.standard_normal((m, dim), dtype=np.float32)
    x = _normalise(x)
    q = _normalise(centres[rng.integers(0, len(centres), args.queries)]
                   + rng.standard_normal((args.queries, dim), dtype=np.float32))
    proj = rng.standard_normal((dim, 64), dtype=np.float32)        # sign random projections
    codes = np.concatenate([x[s:s + 10000] @ proj for s in range(0, n, 10000)])
    search, build = _timed(lambda: _cosine_engine(x, t, have_faiss))
    fi, fsecs = _timed(lambda: search(q, 10))
    rows = [["float cosine (%s)" % ("faiss IndexFlatIP" if have_faiss else "numpy"),
             "%d x %d float32" % (n, dim), _mib(x.nbytes), "%.0f" % (len(q) / fsecs), "1.0x",
             _mib(x.nbytes / n * 1e6), "%.2f s" % build]]
    for engine in ["numpy"] + (["faiss"] if have_faiss else []):
        idx = HashIndex(64, engine=engine, threads=t).add(codes)
        _, hb = _timed(idx.build)
        _, hsecs = _timed(lambda: idx.search(q @ proj, 10))
        rows.append(["Hamming, %s" % engine, "%d x 64 bits" % n, _mib(_index_bytes(idx)),
                     "%.0f" % (len(q) / hsecs), "%.1fx" % (fsecs / hsecs),
                     _mib(8e6), "%.3f s" % hb])
    log.info("float cosine over %d x %d: %.0f queries/s", n, dim, len(q) / fsecs)
    return _table(["search", "database", "memory", "queries/s (k=10, %d threads)" % t,
                   "speed vs float", "memory at 1M items", "build"], rows)


def bench_toyhome(args, threads, have_faiss):
    import os


    root = args.root or toyhome.ensure()
    entries, classes = folder_entries(root)
    enc = encode_images(args.model, args.weights, entries, args.transform_from or None,
                        extra_blobs=["fc7"], progress=True)
    dom = np.array([os.path.relpath(p, root).split(os.sep)[0] for p in enc.paths])
    codes, fc7, labels = enc.codes, enc.features["fc7"], enc.labels
    t = max(threads)
    rows = []
    setups = [("A: Clipart queries, Art database", dom == "Clipart", dom == "Art", False),
              ("all 4 domains, leave-self-out", np.ones(len(dom), bool), np.ones(len(dom), bool),
               True)]
    for name, qm, dm, self_out in setups:
        qc, ql, dc, dl = codes[qm], labels[qm], codes[dm], labels[dm]
        n_db = len(dl)
        idx = HashIndex(codes.shape[1], engine="faiss" if have_faiss else "numpy",
                        threads=t).add(dc, dl)
        (_, hi), hsecs = _timed(lambda: idx.search(qc, n_db))
        if self_out:   # drop each query's own entry (it is in the database)
            hi = np.array([r[r != j] for j, r in enumerate(hi)])
        hmap = float(np.nanmean(ranking_average_precisions(hi, ql, dl)))
        ref = metrics.mean_average_precision(metrics.binarize(qc), ql, metrics.binarize(dc), dl,
                                             exclude_self=self_out)
        fq, fd = _normalise(fc7[qm]), _normalise(fc7[dm])
        fsecs_t0 = time.perf_counter()
        sims = fq @ fd.T
        if self_out:
            np.fill_diagonal(sims, -np.inf)
        fi = np.argsort(-sims, axis=1, kind="stable")[:, :n_db - (1 if self_out else 0)]
        fsecs = time.perf_counter() - fsecs_t0
        fmap = float(np.nanmean(ranking_average_precisions(fi, ql, dl)))
        rows.append([name, "%d / %d" % (len(ql), n_db), "%.4f" % hmap,
                     "%.1e" % abs(hmap - ref), "%.4f" % fmap, _mib(idx.codes.nbytes),
                     _mib(fd.nbytes), "%.1fx" % (fsecs / hsecs)])
        log.info("ToyHome %s: Hamming mAP %.4f (metrics %.4f), fc7 cosine mAP %.4f",
                 name, hmap, ref, fmap)
    return _table(["protocol", "queries / database", "mAP, %d-bit Hamming" % codes.shape[1],
                   "difference from metrics' mAP", "mAP, fc7 cosine (%d-d)" % fc7.shape[1],
                   "hash memory", "float memory", "full-ranking speed, hash vs float"], rows)


def bench_cmd(args):
    setup_logging()
    rng = np.random.default_rng(args.seed)
    threads = [int(t) for t in args.threads.split(",") if t]
    faiss_ok = have_faiss()
    if not faiss_ok:
        log.warning("faiss is not installed (pip install 'minicaffe[search]'): numpy rows only")
    parts = ["### Exact search, 64-bit codes\n\n" + bench_exact(args, rng, threads, faiss_ok)]
    if faiss_ok:
        table, t = bench_approx(args, rng, threads)
        parts.append("### Approximate search, clustered 64-bit codes (%d threads, k = 10)\n\n%s"
                     % (t, table))
    if args.float_n > 0:
        parts.append("### Float cosine vs Hamming, synthetic features\n\n"
                     + bench_float(args, rng, threads, faiss_ok))
    if args.model:
        parts.append("### ToyHome: a trained hash net, Hamming vs fc7 cosine\n\n"
                     + bench_toyhome(args, threads, faiss_ok))
    text = "\n\n".join(parts) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
        log.info("Wrote %s", args.markdown)
    return 0


def main(argv=None):
    return run(bench_cmd, argv, parser=build_parser())

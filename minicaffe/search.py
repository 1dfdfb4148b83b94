"""Search by hash code: a database of packed binary codes with labels and image paths, queried
by Hamming distance (the paper's retrieval), saved as one file.

    from minicaffe.search import HashIndex, encode_images
    enc = encode_images("hash_deploy.prototxt", "dah.caffemodel", "lists/Art.txt",
                        "dah_train.prototxt", root="ROOT/")
    idx = HashIndex(bits=64)
    idx.add(enc.codes, enc.labels, enc.paths)     # continuous codes: bit = (u >= 0)
    dist, ind = idx.search(query_codes, k=10)      # (n_query, k) each, nearest first
    hits = idx.range_search(query_codes, radius=2) # [(distances, indices)] per query
    idx.save("art.hdb"); idx = HashIndex.load("art.hdb")

Codes. A code u (continuous, {-1, +1} or bool) becomes bits b_j = 1 where u_j >= 0, the +1 of
``metrics.binarize`` (sgn with sgn(0) = +1); an integer array holding only 0 and 1 is refused
(pass it as bool) rather than read as all ones. The bits are packed with
``np.packbits(..., bitorder="little")``: bit j of a code is bit (j % 8) of byte j // 8, d/8
bytes a row, so d must be a multiple of 8 (faiss's binary indexes need it too).

Ranking. Items are ordered by Hamming distance, ties in database order, as the stable sort
of ``metrics.average_precisions``: ``search(q, k=len(idx))`` is the ranking the mAP of
``tools/evaluate`` is computed over. Engines:

- ``numpy``: exact; XOR of the packed codes as 64-bit words and ``np.bitwise_count`` (a
  256-entry table on NumPy < 2), over blocks of ``_BLOCK`` items and query chunks of
  ``_QCHUNK``, so memory stays bounded whatever the database size; per block only the items
  within the k-th distance so far are kept (``_NumpyEngine``); ``threads`` query chunks at
  once (1M 64-bit codes: ~300 queries/s on one core, docs/dah.md "Searching by hash code").
- ``faiss``: ``faiss.IndexBinaryFlat``, exact (counting selection, which keeps database order
  on ties); the same results as ``numpy`` (tests/test_search.py).
- ``faiss-mih``: ``faiss.IndexBinaryMultiHash`` (multi-index hashing: ``mih_nhash``
  substrings of d // nhash bits, each probed with up to ``mih_nflip`` flipped bits; the bits
  left over are not hashed but count in the distance), approximate: it finds every item
  within distance nhash·(nflip + 1) − 1 of the query, and the others by chance.
- ``faiss-hnsw``: ``faiss.IndexBinaryHNSW`` (``hnsw_m`` links, ``ef_search``), approximate.
- ``auto``: ``faiss`` when installed, else ``numpy``.

faiss is the optional extra ``pip install 'minicaffe[search]'`` (PyPI ``faiss-cpu``).
Approximate engines return their candidates sorted by (distance, position) too.

The database file (``save`` / ``load``; ``FORMAT`` version ``VERSION``) is a NumPy ``.npz``
archive (a zip; ``np.load(path)`` reads it) of four members:

- ``header.json``: ``{"format": "minicaffe-hashdb", "version": 1, "bits": d, "count": n,
  "bitorder": "little", "net": {...} or null, "classes": [names] or null, "history":
  [{"command", "added", "time"}, ...]}``; ``net`` is the identity of the net that made the
  codes (``net_identity``: the deploy file and the SHA-256 of its layer structure, the weights
  file and its SHA-256, the blob, the image transformation as prototxt text and its SHA-256);
- ``codes.npy``: uint8, n x d/8, the packed bits;
- ``labels.npy``: int32, n (-1: unknown);
- ``paths.txt``: UTF-8, one image path a line (absolute as indexed), n lines.

It is written to a temporary file beside the target and renamed over it (``os.replace``), so
a database is always either the old one or the new one, never half written; ``load`` checks
the members, their CRCs (zip), shapes and counts against the header and names the file in the
one-line error of anything wrong.
"""
import datetime
import hashlib
import io
import json
import logging
import math
import os
import tempfile
import time
import zipfile
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import experiments, protoio
from .errors import CaffeError
from .proto import caffe_pb2
from .transformer import read_image_list

__all__ = ["FORMAT", "VERSION", "ENGINES", "FAISS_HINT", "HashIndex", "Encoded", "pack_codes",
           "unpack_codes", "hamming_packed", "ranking_average_precisions", "encode_images",
           "net_identity", "transform_param_from", "check_same_net", "have_faiss"]

log = logging.getLogger("minicaffe")

FORMAT = "minicaffe-hashdb"
VERSION = 1
ENGINES = ("auto", "numpy", "faiss", "faiss-hnsw", "faiss-mih")
FAISS_HINT = "pip install 'minicaffe[search]'"
_BLOCK = 1 << 18     # database items per distance block
_QCHUNK = 16         # queries per pass: 16 x 2^18 x (8 B XOR + 1 B dist + 1 B mask) = 40 MiB
_POP8 = np.array([bin(i).count("1") for i in range(256)], np.uint8)


# --- codes ------------------------------------------------------------------------------------

def pack_codes(codes, bits=None):
    """Codes (n x d: continuous, {-1, +1}, or bool) -> packed bits, uint8 n x d/8,
    little-endian bit order; bit j = 1 where u_j >= 0. A uint8 array n x d/8 with ``bits`` = d
    is taken as already packed."""
    a = np.asarray(codes)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise CaffeError("codes: expected a 2-D array (n x bits), got shape %s" % (a.shape,))
    if bits is not None and a.dtype == np.uint8 and a.shape[1] * 8 == bits and bits != a.shape[1]:
        return np.ascontiguousarray(a)
    if a.dtype == bool:
        b = a
    else:
        if a.dtype.kind in "iu" and a.size and a.min() >= 0 and a.max() <= 1 and (a == 0).any():
            raise CaffeError("codes: an integer array of 0 and 1 is ambiguous (0 would read as "
                             "+1); pass it as bool (True = +1) or as -1/+1")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise CaffeError("codes: not finite (NaN or infinity)")
        b = a >= 0
    if bits is not None and b.shape[1] != bits:
        raise CaffeError("codes have %d bits, the index %d" % (b.shape[1], bits))
    if b.shape[1] % 8 or b.shape[1] == 0:
        raise CaffeError("codes: the bit length must be a positive multiple of 8 (got %d)"
                         % b.shape[1])
    return np.packbits(b, axis=1, bitorder="little")


def unpack_codes(packed, bits):
    """Packed bits -> {-1, +1} int8 codes, n x bits (``metrics.binarize``'s form)."""
    b = np.unpackbits(np.asarray(packed, np.uint8), axis=1, count=bits, bitorder="little")
    return (b.astype(np.int8) * 2 - 1)


def _words(packed):
    """Packed rows as uint64 words, transposed: (words, n), each word row contiguous (zero
    bytes pad a row to a multiple of 8)."""
    n, w = packed.shape
    pad = -w % 8
    if pad:
        packed = np.concatenate([packed, np.zeros((n, pad), np.uint8)], axis=1)
    return np.ascontiguousarray(np.ascontiguousarray(packed).view(np.uint64).T)


if hasattr(np, "bitwise_count"):             # NumPy >= 2.0
    _popcount = np.bitwise_count
else:
    def _popcount(x):
        return _POP8[x.view(np.uint8)].reshape(x.shape + (8,)).sum(-1, dtype=np.uint8)


def _distances(qw, dbw):
    """Hamming distances (m x B; uint8 up to 192 bits, else uint16) between the word columns
    of ``qw`` (words x m) and ``dbw`` (words x B)."""
    x = np.empty((qw.shape[1], dbw.shape[1]), np.uint64)
    np.bitwise_xor(qw[0][:, None], dbw[0][None, :], out=x)
    dist = _popcount(x)
    if len(qw) > 1:
        dist = dist.astype(np.uint8 if len(qw) < 4 else np.uint16)
        for w in range(1, len(qw)):
            np.bitwise_xor(qw[w][:, None], dbw[w][None, :], out=x)
            dist += _popcount(x)
    return dist


def _nonzero(mask):
    """``np.nonzero`` of a mostly False 2-D mask, scanning it as 64-bit words (8x fewer
    elements; a sparse mask is where the time of a top-k search went)."""
    if mask.shape[1] % 8:
        return np.nonzero(mask)
    words = np.flatnonzero(mask.view(np.uint64))
    flat = (words[:, None] * 8 + np.arange(8)).ravel()
    flat = flat[mask.ravel()[flat]]
    return np.divmod(flat, mask.shape[1])


def hamming_packed(packed_q, packed_db):
    """All Hamming distances between packed codes (n_query x n_database, int32)."""
    qw, dbw = _words(np.asarray(packed_q, np.uint8)), _words(np.asarray(packed_db, np.uint8))
    return np.concatenate([_distances(qw, dbw[:, s:s + _BLOCK]).astype(np.int32)
                           for s in range(0, dbw.shape[1], _BLOCK)]
                          or [np.zeros((qw.shape[1], 0), np.int32)], axis=1)


def ranking_average_precisions(indices, query_labels, db_labels):
    """Average precision of each query over a ranking (``indices``: n_query x k database
    positions, best first): AP = (1/R) sum over relevant ranks of precision@rank, R the
    relevant items in the list, NaN when there are none; with the full ranking this is
    ``metrics.average_precisions``."""
    ind = np.asarray(indices)
    hits = np.asarray(db_labels)[ind] == np.asarray(query_labels).reshape(-1, 1)
    n_rel = hits.sum(1)
    prec = np.cumsum(hits, 1) / np.arange(1, ind.shape[1] + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_rel > 0, np.where(hits, prec, 0).sum(1) / n_rel, np.nan)


# --- engines ----------------------------------------------------------------------------------

def have_faiss():
    """Whether faiss (the ``search`` extra) can be imported."""
    try:
        import faiss
    except ImportError:
        return False
    return faiss is not None


def _faiss(engine):
    try:
        import faiss
    except ImportError:
        raise CaffeError("the %s engine needs faiss, which is not installed: %s"
                         % (engine, FAISS_HINT)) from None
    return faiss


def _sorted_keys(d, i, n):
    """(distance, position) pairs sorted per row; -1 positions (faiss's padding) last."""
    key = np.where(i < 0, np.iinfo(np.int64).max, d.astype(np.int64) * (n + 1) + i)
    order = np.argsort(key, axis=1, kind="stable")
    return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)


class _NumpyEngine:
    """Exact search in NumPy. Top-k per query chunk, block by block: the candidates of a
    block are its items within the k-th smallest distance so far (of the block itself for
    the first: ``np.partition``), merged with the best k by the key distance·(n+1) + position,
    which orders ties by position as a stable sort does."""
    name = "numpy"

    def __init__(self, packed, threads=None, **_):
        self.words = _words(packed)
        self.n = packed.shape[0]
        self.threads = threads or 1

    def _chunks(self, qw, fn):
        starts = range(0, qw.shape[1], _QCHUNK)
        if self.threads > 1 and qw.shape[1] > _QCHUNK:
            with ThreadPoolExecutor(self.threads) as pool:
                return list(pool.map(lambda s: fn(qw[:, s:s + _QCHUNK]), starts))
        return [fn(qw[:, s:s + _QCHUNK]) for s in starts]

    def _top(self, q, k):
        n, m = self.n, q.shape[1]
        sentinel = np.iinfo(np.int64).max
        best = np.full((m, k), sentinel, np.int64)    # sorted keys, sentinel = empty
        for s in range(0, n, _BLOCK):
            dist = _distances(q, self.words[:, s:s + _BLOCK])
            top = np.iinfo(dist.dtype).max
            probe = dist[:, :max(4 * k, 4096)]        # its k-th smallest bounds the block's
            if s == 0 and probe.shape[1] >= k:
                t = np.partition(probe, k - 1, axis=1)[:, k - 1]
            else:
                t = np.where(best[:, -1] != sentinel,
                             np.minimum(best[:, -1] // (n + 1), top), top).astype(dist.dtype)
            rows, cols = _nonzero(dist <= t[:, None])
            keys = dist[rows, cols].astype(np.int64) * (n + 1) + (cols + s)
            rows = np.concatenate([np.repeat(np.arange(m), k), rows])
            keys = np.concatenate([best.ravel(), keys])
            order = np.lexsort((keys, rows))
            rows, keys = rows[order], keys[order]
            rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
            keep = rank < k
            best[rows[keep], rank[keep]] = keys[keep]
        return best // (n + 1), best % (n + 1)

    def search(self, packed_q, k):
        parts = self._chunks(_words(packed_q), lambda q: self._top(q, k))
        return (np.concatenate([p[0] for p in parts]).astype(np.int32),
                np.concatenate([p[1] for p in parts]))

    def range_search(self, packed_q, radius):
        def within(q):
            per = [([], []) for _ in range(q.shape[1])]
            for s in range(0, self.n, _BLOCK):
                dist = _distances(q, self.words[:, s:s + _BLOCK])
                rows, cols = _nonzero(dist <= radius)
                cuts = np.searchsorted(rows, np.arange(1, q.shape[1]))
                for r, cc in enumerate(np.split(cols, cuts)):
                    per[r][0].append(dist[r, cc])
                    per[r][1].append(cc + s)
            out = []
            for ds, is_ in per:
                d, i = np.concatenate(ds).astype(np.int32), np.concatenate(is_).astype(np.int64)
                o = np.argsort(d, kind="stable")      # positions already ascending
                out.append((d[o], i[o]))
            return out

        return [r for part in self._chunks(_words(packed_q), within) for r in part]


class _FaissEngine:
    name = "faiss"

    def __init__(self, packed, threads=None, hnsw_m=32, ef_search=64, ef_construction=40,
                 mih_nhash=4, mih_nflip=1):
        self.faiss = _faiss(self.name)
        self.threads = threads
        self.n, d = len(packed), packed.shape[1] * 8
        self.index = self._make(d, hnsw_m=hnsw_m, ef_construction=ef_construction,
                                mih_nhash=mih_nhash)
        with self._threads():
            self.index.add(np.ascontiguousarray(packed))
        self.configure(ef_search=ef_search, mih_nflip=mih_nflip)

    def _make(self, d, **_):
        index = self.faiss.IndexBinaryFlat(d)
        index.use_heap = False   # counting selection: ties come out in database order
        return index

    def configure(self, **_):
        pass

    def _threads(self):
        faiss, want = self.faiss, self.threads

        class _Scope:
            def __enter__(self):
                self.old = faiss.omp_get_max_threads()
                if want:
                    faiss.omp_set_num_threads(int(want))

            def __exit__(self, *exc):
                faiss.omp_set_num_threads(self.old)

        return _Scope()

    def search(self, packed_q, k):
        with self._threads():
            d, i = self.index.search(np.ascontiguousarray(packed_q), k)
        return _sorted_keys(d.astype(np.int32), i.astype(np.int64), self.n)

    def range_search(self, packed_q, radius):
        with self._threads():
            lims, d, i = self.index.range_search(np.ascontiguousarray(packed_q), int(radius) + 1)
        out = []                                  # faiss keeps distance < radius: hence + 1
        for a, b in zip(lims[:-1], lims[1:]):
            dd, ii = d[a:b].astype(np.int32), i[a:b].astype(np.int64)
            o = np.lexsort((ii, dd))
            out.append((dd[o], ii[o]))
        return out


class _FaissHNSW(_FaissEngine):
    name = "faiss-hnsw"

    def _make(self, d, hnsw_m=32, ef_construction=40, **_):
        index = self.faiss.IndexBinaryHNSW(d, int(hnsw_m))
        index.hnsw.efConstruction = int(ef_construction)
        return index

    def configure(self, ef_search=64, **_):
        self.index.hnsw.efSearch = int(ef_search)

    def range_search(self, packed_q, radius):
        raise CaffeError("the faiss-hnsw engine has no radius search; use numpy, faiss or "
                         "faiss-mih")


class _FaissMIH(_FaissEngine):
    name = "faiss-mih"

    def _make(self, d, mih_nhash=4, **_):
        nhash = int(mih_nhash)
        if not 1 <= nhash <= d or d // nhash > 64:
            raise CaffeError("faiss-mih: cannot split %d bits into %d substrings of at most 64"
                             % (d, nhash))
        return self.faiss.IndexBinaryMultiHash(d, nhash, d // nhash)

    def configure(self, mih_nflip=1, **_):
        self.index.nflip = int(mih_nflip)


_ENGINE_CLASSES = {"numpy": _NumpyEngine, "faiss": _FaissEngine, "faiss-hnsw": _FaissHNSW,
                   "faiss-mih": _FaissMIH}


# --- the index --------------------------------------------------------------------------------

class HashIndex:
    """Binary codes of ``bits`` bits with labels and paths, searched by Hamming distance.

    ``engine`` (see the module docstring): "auto", "numpy", "faiss", "faiss-hnsw", "faiss-mih";
    ``threads``: query threads (numpy) or OpenMP threads (faiss), default: numpy 1, faiss its
    own default; ``options``: ``hnsw_m`` (32), ``ef_search`` (64), ``ef_construction`` (40),
    ``mih_nhash`` (4), ``mih_nflip`` (1). ``meta`` holds the header's ``net``, ``classes``
    and ``history``. The engine is built on the first search after an ``add`` (``build()``
    builds it now)."""

    def __init__(self, bits, engine="auto", threads=None, meta=None, **options):
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits <= 0 \
                or bits % 8:
            raise CaffeError("bits must be a positive multiple of 8 (got %r)" % (bits,))
        self.bits = int(bits)
        self.codes = np.zeros((0, self.bits // 8), np.uint8)
        self.labels = np.zeros(0, np.int32)
        self.paths = []
        self.meta = {"net": None, "classes": None, "history": []}
        self.meta.update(meta or {})
        self.threads = threads
        self.options = options
        self.path = None
        self.set_engine(engine)

    def __len__(self):
        return len(self.labels)

    def __repr__(self):
        return "HashIndex(bits=%d, count=%d, engine=%r)" % (self.bits, len(self), self.engine)

    def set_engine(self, engine, **options):
        if engine not in ENGINES:
            raise CaffeError("unknown engine %r (engines: %s)" % (engine, ", ".join(ENGINES)))
        if engine == "auto":
            engine = "faiss" if have_faiss() else "numpy"
        elif engine != "numpy":
            _faiss(engine)
        self.engine = engine
        self.options.update(options)
        self._built = None

    def add(self, codes, labels=None, paths=None):
        """Append codes (continuous, {-1, +1}, bool, or packed uint8 n x bits/8) with their
        labels (default -1) and paths (default "")."""
        packed = pack_codes(codes, self.bits)
        n = len(packed)
        labels = np.full(n, -1, np.int32) if labels is None else np.asarray(labels).reshape(-1)
        paths = [""] * n if paths is None else [str(p) for p in paths]
        if len(labels) != n or len(paths) != n:
            raise CaffeError("add: %d codes, %d labels, %d paths" % (n, len(labels), len(paths)))
        bad = [p for p in paths if "\n" in p or "\r" in p]
        if bad:
            raise CaffeError("add: a path with a line break: %r" % bad[0])
        self.codes = np.concatenate([self.codes, packed])
        self.labels = np.concatenate([self.labels, labels.astype(np.int32)])
        self.paths.extend(paths)
        self._built = None
        return self

    def build(self):
        """Build the search engine over the current codes; returns it."""
        if self._built is None:
            self._built = _ENGINE_CLASSES[self.engine](self.codes, threads=self.threads,
                                                       **self.options)
        return self._built

    def _queries(self, query):
        q = pack_codes(query, self.bits)
        if not len(self):
            raise CaffeError("the index is empty")
        return q

    def search(self, query, k=10):
        """The k nearest codes of each query: ``(distances, indices)``, int32 and int64 arrays
        n_query x min(k, len), by distance then database position (exact engines: the
        stable Hamming ranking of ``metrics``; approximate: their candidates so sorted; -1
        pads a row an approximate engine could not fill)."""
        if int(k) < 1:
            raise CaffeError("k must be at least 1 (got %r)" % (k,))
        q = self._queries(query)
        return self.build().search(q, min(int(k), len(self)))

    def range_search(self, query, radius):
        """Every item within Hamming distance ``radius`` (inclusive) of each query: a list,
        per query, of ``(distances, indices)`` sorted by distance then position."""
        if int(radius) < 0:
            raise CaffeError("radius must be >= 0 (got %r)" % (radius,))
        q = self._queries(query)
        return self.build().range_search(q, min(int(radius), self.bits))

    def header(self):
        return {"format": FORMAT, "version": VERSION, "bits": self.bits, "count": len(self),
                "bitorder": "little", "net": self.meta.get("net"),
                "classes": self.meta.get("classes"), "history": self.meta.get("history", [])}

    def save(self, path):
        """Write the database file (the module docstring's format) atomically."""
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise CaffeError("cannot write %s: the folder %s does not exist" % (path, folder))
        members = [("header.json", json.dumps(self.header(), indent=1).encode() + b"\n"),
                   ("codes.npy", _npy(self.codes)), ("labels.npy", _npy(self.labels)),
                   ("paths.txt", "".join(p + "\n" for p in self.paths)
                    .encode("utf-8", "surrogateescape"))]

        def write(f):
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
                for name, data in members:
                    z.writestr(name, data, zipfile.ZIP_DEFLATED if name.endswith(".txt")
                               else zipfile.ZIP_STORED)
        protoio.atomic_write(path, write, CaffeError)
        return path

    @classmethod
    def load(cls, path, engine="auto", threads=None, **options):
        """Read a database file; any fault (missing, truncated, not a database, members
        inconsistent with the header) is a CaffeError naming the file."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise CaffeError("%s: no such hash database" % path)
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
                missing = {"header.json", "codes.npy", "labels.npy", "paths.txt"} - names
                if missing:
                    raise ValueError("missing %s" % ", ".join(sorted(missing)))
                head = json.loads(z.read("header.json").decode("utf-8"))
                if not isinstance(head, dict) or head.get("format") != FORMAT:
                    raise ValueError("the header is not a %s header" % FORMAT)
                if head.get("version") != VERSION:
                    raise ValueError("format version %r (this minicaffe reads %d)"
                                     % (head.get("version"), VERSION))
                codes = np.lib.format.read_array(io.BytesIO(z.read("codes.npy")))
                labels = np.lib.format.read_array(io.BytesIO(z.read("labels.npy")))
                paths = z.read("paths.txt").decode("utf-8", "surrogateescape").split("\n")
        except CaffeError:
            raise
        except (OSError, zipfile.BadZipFile, ValueError, KeyError, EOFError,
                zipfile.LargeZipFile) as exc:
            raise CaffeError("%s: not a readable hash database (%s)"
                             % (path, " ".join(str(exc).split()) or type(exc).__name__)) from None
        bits, n = head.get("bits"), head.get("count")
        if paths and paths[-1] == "":
            paths.pop()
        problem = None
        if not isinstance(bits, int) or bits <= 0 or bits % 8 or not isinstance(n, int):
            problem = "bad bits/count in the header"
        elif codes.dtype != np.uint8 or codes.shape != (n, bits // 8):
            problem = "codes are %s %s, the header says %d x %d uint8" % (
                codes.dtype, codes.shape, n, bits // 8)
        elif labels.dtype != np.int32 or labels.shape != (n,):
            problem = "%d labels for %d codes" % (labels.size, n)
        elif len(paths) != n:
            problem = "%d paths for %d codes" % (len(paths), n)
        if problem:
            raise CaffeError("%s: corrupt hash database (%s)" % (path, problem))
        idx = cls(bits, engine=engine, threads=threads,
                  meta={k: head.get(k) for k in ("net", "classes", "history")}, **options)
        idx.meta["history"] = list(idx.meta.get("history") or [])
        idx.codes, idx.labels, idx.paths = codes, labels, paths
        idx.path = path
        return idx

    def record(self, command, added):
        """Note in the header's history how ``added`` items came in."""
        self.meta.setdefault("history", []).append(
            {"command": command, "added": int(added),
             "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})


def _npy(arr):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


# --- the net that makes the codes -------------------------------------------------------------

Encoded = namedtuple("Encoded", "codes labels paths features net")


def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _deploy_sha(net_param):
    """SHA-256 of a deploy net's layer structure: the parsed net (comments and layout do not
    count) with its name cleared and the Input batch size set to 1 (extraction replaces it)."""
    p = caffe_pb2.NetParameter()
    p.CopyFrom(net_param)
    p.name = ""
    for lp in p.layer:
        if lp.type == "Input":
            for s in lp.input_param.shape:
                if len(s.dim):
                    s.dim[0] = 1
    return hashlib.sha256(p.SerializeToString(deterministic=True)).hexdigest()


def transform_param_from(deploy, transform_from=None, raw=False):
    """The NetParameter whose data layer gives the images' transformation, as
    ``experiments.extract`` wants it: ``transform_from`` (a training net: path, text or
    message), else the deploy net's Input layer when it carries a ``transform_param``; with
    ``raw`` only a resize to the input size. Anything else is an error: codes computed
    without the training transformation (mean, scale, crop) are silently wrong."""
    if transform_from is not None and transform_from != "":
        src = protoio.read_net_param(transform_from)
        _transform_layer(src)
        return src
    dep = protoio.read_net_param(deploy)
    inputs = [lp for lp in dep.layer if lp.type == "Input"]
    if not inputs or not len(inputs[0].input_param.shape):
        raise CaffeError("%s has no Input layer with a shape to feed the images to"
                         % _name(deploy))
    shape = inputs[0].input_param.shape[0].dim
    own = inputs[0].HasField("transform_param")
    if not (own or raw):
        raise CaffeError("no image transformation for %s: pass --transform_from TRAIN_NET (the "
                         "training net whose data layer's mean, scale and crop the codes "
                         "need), or --raw to feed unnormalised pixels resized to %dx%d"
                         % (_name(deploy), shape[2], shape[3]))
    fake = caffe_pb2.NetParameter()
    lp = fake.layer.add()
    lp.name, lp.type = "data", "ImageData"
    if own:
        lp.transform_param.CopyFrom(inputs[0].transform_param)
    if not lp.transform_param.crop_size:
        lp.image_data_param.new_height, lp.image_data_param.new_width = shape[2], shape[3]
    return fake


def _transform_layer(train_param):
    return experiments.data_layer(
        train_param, "the net given for the transformation (--transform_from)")


def _name(source):
    return source if isinstance(source, str) and "\n" not in source else "the deploy net"


def _transform_text(train_param):
    """The part of a training net that fixes the images' transformation, as prototxt text."""
    dl = _transform_layer(train_param)
    fake = caffe_pb2.NetParameter()
    lp = fake.layer.add()
    lp.name, lp.type = "data", "ImageData"
    lp.transform_param.CopyFrom(dl.transform_param)
    lp.transform_param.mirror = False
    src = dl.domain_data_param if dl.type == "DomainData" else dl.image_data_param
    p = lp.image_data_param
    p.new_height, p.new_width, p.is_color = src.new_height, src.new_width, src.is_color
    return str(fake)


def net_identity(deploy, weights, transform, blob="code"):
    """What makes a database's codes: deploy file and the SHA-256 of its layer structure,
    weights file and its SHA-256, the blob, and the transformation (``transform``: the
    NetParameter from ``transform_param_from``) as prototxt text and its SHA-256."""
    text = _transform_text(transform)
    dep = protoio.read_net_param(deploy)
    return {"deploy": os.path.abspath(deploy) if isinstance(deploy, str) and os.path.exists(deploy)
            else None,
            "deploy_sha256": _deploy_sha(dep),
            "weights": os.path.abspath(weights), "weights_sha256": _sha256_file(weights),
            "blob": blob, "transform": text,
            "transform_sha256": hashlib.sha256(text.encode()).hexdigest()}


def check_same_net(db_name, db_net, net, db_bits=None, bits=None):
    """One-line CaffeError naming ``db_name`` when ``net`` (a ``net_identity``) or ``bits``
    differ from the database's."""
    if db_bits is not None and bits is not None and db_bits != bits:
        raise CaffeError("%s holds %d-bit codes; the query net's blob gives %d bits"
                         % (db_name, db_bits, bits))
    if not db_net:
        return
    diff = [what for what, key in (("deploy layers", "deploy_sha256"),
                                   ("weights", "weights_sha256"), ("blob", "blob"),
                                   ("image transformation", "transform_sha256"))
            if db_net.get(key) != net.get(key)]
    if diff:
        raise CaffeError("%s was built with another net: its %s differ (database: %s weights "
                         "sha256 %s; query: %s sha256 %s)"
                         % (db_name, ", ".join(diff), db_net.get("weights"),
                            str(db_net.get("weights_sha256"))[:12], net.get("weights"),
                            str(net.get("weights_sha256"))[:12]))


def _hms(s):
    s = int(round(s))
    return "%d:%02d:%02d" % (s // 3600, s % 3600 // 60, s % 60)


def encode_images(deploy, weights, images, transform_from=None, *, root="", blob="code",
                  extra_blobs=(), batch=100, raw=False, progress=True, chunk=None):
    """Run ``deploy`` with ``weights`` over images in the TEST phase (``experiments.extract``)
    and return ``Encoded(codes, labels, paths, features, net)``: the ``blob`` per image
    (continuous), labels (int32; -1 for bare paths), the paths opened (absolute),
    ``{extra blob: array}``, and the ``net_identity``.

    ``images``: a list file ("path label" lines, paths below ``root``), or a sequence of
    paths or (path, label) pairs. ``transform_from``/``raw``: see ``transform_param_from``.
    The images go through in chunks (default: about 20 of them, whole batches) with a
    progress line and an ETA on the log after each when ``progress``."""
    transform = transform_param_from(deploy, transform_from, raw)
    if isinstance(images, (str, os.PathLike)):
        entries = [(p, lab) for p, lab, _ in read_image_list(os.fspath(images))]
        if not entries:
            raise CaffeError("%s has no images" % os.fspath(images))
    else:
        entries = [(p, -1) if isinstance(p, (str, os.PathLike)) else tuple(p) for p in images]
        entries = [(os.path.abspath(os.fspath(p)), int(lab)) for p, lab in entries]
        root = ""
        if not entries:
            raise CaffeError("no images to encode")
    net = net_identity(deploy, weights, transform, blob)
    n = len(entries)
    chunk = chunk or max(batch, int(math.ceil(n / 20.0 / batch)) * batch)
    blobs = [blob] + [b for b in extra_blobs if b != blob]
    feats = {b: [] for b in blobs}
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="minicaffe-encode-") as tmp:
        for s in range(0, n, chunk):
            part = entries[s:s + chunk]
            lst = os.path.join(tmp, "part.txt")
            with open(lst, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.writelines("%s %d\n" % (p, lab) for p, lab in part)
            out, _ = experiments.extract(deploy, weights, lst, root, blobs, transform,
                                         min(batch, len(part)))
            for b in blobs:
                feats[b].append(out[b])
            done = s + len(part)
            if progress:
                el = time.time() - t0
                log.info("Encoded %d/%d images (%.0f%%), %.1f images/s, ETA %s", done, n,
                         100.0 * done / n, done / max(el, 1e-9),
                         _hms(el / done * (n - done)))
    feats = {b: np.concatenate(v) for b, v in feats.items()}
    paths = [os.path.abspath(root + p) for p, _ in entries]
    labels = np.array([lab for _, lab in entries], np.int32)
    return Encoded(feats.pop(blob), labels, paths, feats, net)

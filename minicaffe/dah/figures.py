"""Pictures that explain a DAH run (issue 13): does adaptation pull the target onto the
source, which loss terms drive training, and what does a target query retrieve?

    from minicaffe.dah import figures
    figures.embedding([{"title": "NoDA", "source": xs, "source_labels": ys,
                        "target": xt, "target_labels": yt}, ...], "embedding.png")
    figures.loss_curves({"DAH": "dah.log", "NoDA": "noda.log"}, "loss_curves.png")
    figures.retrieval(queries, database, figures.hamming_ranking(qc, dbc, 10), "retrieval.png")
    figures.pair_figures("figs/", features, trunk=..., lists=..., root=..., logs=...)

Each is a matplotlib figure drawn and written as ``minicaffe.figures`` draws every figure
(headless Agg canvas, optional extra ``pip install 'minicaffe[plot]'``, atomic PNG). t-SNE
needs scikit-learn (``'minicaffe[tsne]'``).

The numbers printed on an embedding are computed in the ORIGINAL feature space, not in the
2-D picture (which a projection can make look aligned or not at will):

- ``MMD²``: the unbiased squared maximum mean discrepancy between source and target with a
  Gaussian kernel at the median bandwidth (:func:`mmd2`); 0 when the domains are the same
  distribution.
- ``centroid ratio``: mean distance between same-class source and target centroids divided by
  the mean distance between different-class ones (:func:`centroid_ratio`); below 1 the target
  classes sit next to their own source classes, 1 means the class structure does not carry
  over. It reads the target labels, which is fine for a picture and never used in training.
"""
import os
import re

import numpy as np

from ..errors import CaffeError
from ..figures import figure as _figure, require as _require, save
from ..hashing import metrics
from ..transformer import read_image_list

__all__ = ["embedding", "embedding_data", "mmd2", "centroid_ratio", "loss_curves",
           "read_loss_terms", "retrieval", "hamming_ranking", "pair_figures"]

_MISSING_SKL = "embedding(method='tsne') needs scikit-learn: pip install 'minicaffe[tsne]'"
_RIGHT, _WRONG, _QUERY = "#1a9850", "#d73027", "#2166ac"
_DPI = 120


# ---------------------------------------------------------------------------- plumbing

def _save(fig, path):
    return save(fig, path, dpi=_DPI)


def _class_colors(n):
    """``n`` qualitative colours: tab10, tab20, or tab20 + tab20b + tab20c (60) cycled; the
    tab20 maps' dark shades first, so that 12 classes get 10 distinct hues before a pale one."""
    matplotlib = _require("matplotlib")
    if n <= 10:
        return list(matplotlib.colormaps["tab10"].colors)[:n]
    names = ("tab20",) if n <= 20 else ("tab20", "tab20b", "tab20c")
    cols = [c for name in names for c in matplotlib.colormaps[name].colors]
    if n <= 20:
        cols = cols[0::2] + cols[1::2]
    return [cols[i % len(cols)] for i in range(n)]


# ---------------------------------------------------------------------------- statistics

def _sq_dists(a, b):
    """Squared Euclidean distances, ‖a‖² + ‖b‖² − 2abᵀ clipped at 0 (float64)."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def _subsample(x, max_n, rng):
    if len(x) <= max_n:
        return x
    return x[np.sort(rng.choice(len(x), max_n, replace=False))]


def mmd2(x, y, seed=0, max_n=500):
    """Unbiased MMD² between the rows of ``x`` and ``y`` with a Gaussian kernel at the median
    bandwidth — how far apart two domains are, in one number that does not depend on a picture:

        k(a, b) = exp(−‖a − b‖² / (2σ²)),  σ = median ‖a − b‖ over distinct pairs of x ∪ y
        MMD² = mean_{i≠j} k(x_i, x_j) + mean_{i≠j} k(y_i, y_j) − 2 mean_{i,j} k(x_i, y_j)

    A domain of more than ``max_n`` rows is first subsampled to ``max_n`` rows (without
    replacement, ``np.random.RandomState(seed).choice``, rows kept in order; x drawn first),
    which keeps the cost at max_n² kernel values. Near 0 (it can dip below) when the domains
    match; at most 2. Needs at least 2 rows in each."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    if len(x) < 2 or len(y) < 2 or x.shape[1] != y.shape[1]:
        raise ValueError("mmd2 needs two sets of >= 2 rows of the same width, got shapes %s "
                         "and %s" % (x.shape, y.shape))
    rng = np.random.RandomState(seed)
    x, y = _subsample(x, max_n, rng), _subsample(y, max_n, rng)
    z = np.concatenate([x, y])
    d = _sq_dists(z, z)
    med = float(np.median(d[np.triu_indices(len(z), 1)]))
    k = np.exp(-d / (2.0 * med)) if med > 0 else np.ones_like(d)
    n, m = len(x), len(y)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1))
                 + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2.0 * kxy.mean())


def centroid_ratio(source, source_labels, target, target_labels):
    """Mean ‖μ_s(c) − μ_t(c)‖ over the classes c present in both domains, divided by the mean
    ‖μ_s(c) − μ_t(c')‖ over c ≠ c' (μ = the class mean of the rows): below 1 the target
    classes sit by their own source classes. NaN with fewer than 2 shared classes."""
    xs, xt = (np.asarray(a, np.float64).reshape(len(a), -1) for a in (source, target))
    ls, lt = np.asarray(source_labels).ravel(), np.asarray(target_labels).ravel()
    classes = np.intersect1d(ls, lt)
    if len(classes) < 2:
        return float("nan")
    cs = np.stack([xs[ls == c].mean(0) for c in classes])
    ct = np.stack([xt[lt == c].mean(0) for c in classes])
    dist = np.sqrt(_sq_dists(cs, ct))
    off = ~np.eye(len(classes), dtype=bool)
    return float(np.diag(dist).mean() / dist[off].mean())


# ---------------------------------------------------------------------------- embedding

def _check_panel(i, p):
    try:
        xs, xt = (np.asarray(p[k], np.float64) for k in ("source", "target"))
        ls, lt = (np.asarray(p[k]).ravel() for k in ("source_labels", "target_labels"))
    except KeyError as exc:
        raise ValueError("embedding: panel %d has no %s (needs title, source, source_labels, "
                         "target, target_labels)" % (i, exc)) from None
    xs, xt = xs.reshape(len(xs), -1), xt.reshape(len(xt), -1)
    if xs.shape[1] != xt.shape[1]:
        raise ValueError("embedding: panel %d: source has %d features, target %d"
                         % (i, xs.shape[1], xt.shape[1]))
    if len(ls) != len(xs) or len(lt) != len(xt):
        raise ValueError("embedding: panel %d: %d/%d source rows/labels, %d/%d target"
                         % (i, len(xs), len(ls), len(xt), len(lt)))
    if len(xs) < 2 or len(xt) < 2:
        raise ValueError("embedding: panel %d needs at least 2 source and 2 target rows" % i)
    return xs, ls, xt, lt


#: Above this min(rows, features) the principal axes come from subspace iteration: numpy's
#: SVD of 4800 x 4096 fc7-like features (an Office-Home pair) takes 149 s on 2 cores, the
#: iteration 9 s for the same axes (coordinates within 1e-5 relative).
_EXACT_SVD_MAX = 1024
_MAX_STEPS = 60


def _principal_axes(xc, dims):
    """The first ``dims`` right singular vectors of ``xc`` (dims × D): numpy's SVD, or for a
    large ``xc`` block subspace iteration on xcᵀxc with a Rayleigh-Ritz step (Halko et al.
    2011, alg. 4.4), run until every axis stops moving (|cos| to the last step > 1 − 1e-10),
    at most ``_MAX_STEPS`` steps: a leading spectrum so flat that the axes have not settled by
    then (white noise) has no preferred pair of directions to show."""
    if min(xc.shape) <= _EXACT_SVD_MAX:
        return np.linalg.svd(xc, full_matrices=False)[2][:dims]
    block = min(dims + 10, min(xc.shape))
    q = np.linalg.qr(xc.T @ (xc @ np.random.RandomState(0).randn(xc.shape[1], block)))[0]
    axes = None
    for _ in range(_MAX_STEPS):
        q = np.linalg.qr(xc.T @ (xc @ q))[0]
        new = (q @ np.linalg.svd(xc @ q, full_matrices=False)[2].T)[:, :dims].T
        if axes is not None and np.all(np.abs(np.sum(new * axes, 1)) > 1 - 1e-10):
            return new
        axes = new
    return axes


def _pca(x, dims=2):
    """The rows of ``x`` centred and projected on its first ``dims`` principal axes; each
    axis's sign is fixed so that its largest loading is positive (as sklearn's svd_flip), so
    a run gives the same picture every time."""
    xc = x - x.mean(0)
    vt = _principal_axes(xc, dims)
    vt = vt * np.sign(vt[np.arange(len(vt)), np.argmax(np.abs(vt), 1)])[:, None]
    y = xc @ vt.T
    if y.shape[1] < dims:  # fewer features (or rows) than dims
        y = np.hstack([y, np.zeros((len(y), dims - y.shape[1]))])
    return y


def _tsne(x, seed):
    _require("sklearn", _MISSING_SKL)
    TSNE = _require("sklearn.manifold", _MISSING_SKL).TSNE
    if x.shape[1] > 50:  # the usual first step: PCA to 50 dimensions, then t-SNE
        x = _pca(x, 50)
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3.0)))
    return TSNE(n_components=2, init="pca", random_state=seed,
                perplexity=perplexity).fit_transform(x)


def embedding_data(panels, method="pca", seed=0):
    """What :func:`embedding` draws, without drawing: per panel a dict with ``source`` and
    ``target`` (N × 2 coordinates of a joint 2-D embedding of both domains), ``mmd2`` and
    ``centroid_ratio`` (in the original feature space). ``method``: "pca" (numpy SVD of the
    centred rows of source and target stacked) or "tsne" (scikit-learn)."""
    if method not in ("pca", "tsne"):
        raise ValueError("embedding: method must be 'pca' or 'tsne', got %r" % (method,))
    out = []
    for i, p in enumerate(panels):
        xs, ls, xt, lt = _check_panel(i, p)
        z = np.concatenate([xs, xt])
        y = _pca(z) if method == "pca" else _tsne(z, seed)
        out.append({"source": y[:len(xs)], "target": y[len(xs):],
                    "mmd2": mmd2(xs, xt, seed), "centroid_ratio": centroid_ratio(xs, ls, xt, lt)})
    return out


def embedding(panels, out_png, method="pca", seed=0, title=None, ncols=None):
    """Scatter plots of source and target embedded together in 2-D, one panel per dict of
    ``panels``: ``{"title": str, "source": (N_s × D), "source_labels": (N_s,), "target":
    (N_t × D), "target_labels": (N_t,)}``, optionally ``"source_name"`` / ``"target_name"``
    for the legend. Colour = class (the same class, the same colour in every panel), marker =
    domain (source ●, target ×); in the top left corner MMD² and the centroid ratio of the
    original features (see the module docstring). ``ncols`` panels per row (default: all in one
    row up to 3). Returns ``out_png``."""
    data = embedding_data(panels, method, seed)
    n = len(panels)
    if n == 0:
        raise ValueError("embedding: no panels")
    ncols = int(ncols or min(n, 3))
    nrows = -(-n // ncols)
    classes = np.unique(np.concatenate([np.concatenate([np.asarray(p["source_labels"]).ravel(),
                                                        np.asarray(p["target_labels"]).ravel()])
                                        for p in panels]))
    colors = np.array(_class_colors(len(classes)))
    fig = _figure(figsize=(4.3 * ncols, 4.3 * nrows + 0.6), layout="constrained")
    from matplotlib.lines import Line2D
    axis = "PC" if method == "pca" else "t-SNE"
    for i, (p, d) in enumerate(zip(panels, data)):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        cs = colors[np.searchsorted(classes, np.asarray(p["source_labels"]).ravel())]
        ct = colors[np.searchsorted(classes, np.asarray(p["target_labels"]).ravel())]
        ax.scatter(d["source"][:, 0], d["source"][:, 1], s=12, c=cs, marker="o",
                   alpha=0.55, linewidths=0)
        ax.scatter(d["target"][:, 0], d["target"][:, 1], s=16, c=ct, marker="x",
                   alpha=0.8, linewidths=0.9)
        pts = np.concatenate([d["source"], d["target"]])
        lo, hi = pts.min(0), pts.max(0)
        span = np.where(hi > lo, hi - lo, 1.0)
        ax.set_xlim(lo[0] - 0.05 * span[0], hi[0] + 0.05 * span[0])
        ax.set_ylim(lo[1] - 0.05 * span[1], hi[1] + 0.32 * span[1])  # room for the notes
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("%s 1" % axis, fontsize=8)
        ax.set_ylabel("%s 2" % axis, fontsize=8)
        ax.set_title(str(p.get("title", "")), fontsize=11)
        ax.text(0.02, 0.98, "MMD² = %.3g\ncentroid ratio = %.3g"
                % (d["mmd2"], d["centroid_ratio"]), transform=ax.transAxes, va="top",
                ha="left", fontsize=8.5,
                bbox=dict(boxstyle="round,pad=0.3", fc="white", ec="0.7", alpha=0.9))
        handles = [Line2D([], [], ls="", marker="o", color="0.35", ms=5, alpha=0.7,
                          label="%s (%d)" % (p.get("source_name", "source"), len(d["source"]))),
                   Line2D([], [], ls="", marker="x", color="0.15", ms=6, mew=1.2,
                          label="%s (%d)" % (p.get("target_name", "target"), len(d["target"])))]
        ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.9,
                  borderpad=0.4, handletextpad=0.3)
    if title:
        fig.suptitle(title, fontsize=13)
    fig.supxlabel("colour = class (%d classes), ● source, × target; MMD² (Gaussian kernel, "
                  "median bandwidth) and centroid ratio (same-class ÷ other-class\n"
                  "source–target centroid distance; < 1: classes carry over) are computed on "
                  "the original features, not on this %s embedding"
                  % (len(classes), "PCA" if method == "pca" else "t-SNE"),
                  fontsize=7.5, color="0.3")
    return _save(fig, out_png)


# ---------------------------------------------------------------------------- loss curves

_NUM = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf))"
# "Iteration 20 (9.1 iter/s, 0.55s/20 iters), loss = 2.9, ETA 0:03" and the final
# "Iteration 200, loss = 0.64"; never "Iteration 20, lr = ..." nor "..., Testing net (#0)"
_TOTAL = re.compile(r"Iteration (\d+)(?: \([^)]*\))?, loss = " + _NUM)
_ITER = re.compile(r"Iteration (\d+)")
# solver.py _log_outputs (Caffe's solver.cpp): "Train net output #k: name = v (* w = w·v loss)"
_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = " + _NUM
                     + r"(?: \(\* " + _NUM + r" = " + _NUM + r" loss\))?")


def _num(s):
    return float(s.replace("-nan", "nan"))


def read_loss_terms(path):
    """The loss terms of a Caffe / minicaffe training log: ``{"total": (iters, loss),
    "terms": {name: (iters, weighted contribution)}, "weights": {name: loss_weight}}`` (arrays).
    A term is a ``Train net output`` line that carries its loss weight, ``(* w = w·v loss)``;
    outputs without one (accuracy) are not loss terms and are left out. The total is the
    solver's displayed ``loss =`` (smoothed over ``average_loss`` iterations, Caffe's rule).
    An output with several values (``#3: x``, ``#4: x``) gives terms ``x[0]``, ``x[1]``.
    ``tools/parse_log`` keeps only the unweighted value, hence this own small parser."""
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise CaffeError("cannot read the training log %s: %s"
                         % (path, exc.strerror or exc)) from None
    total_it, total = [], []
    raw = {}  # (k, name) -> ([iters], [values]); k = the output index
    weights = {}
    iteration = None
    for line in lines:
        m = _TOTAL.search(line)
        if m:
            total_it.append(int(m.group(1)))
            total.append(_num(m.group(2)))
        m = _ITER.search(line)
        if m:
            iteration = int(m.group(1))
            continue
        m = _OUTPUT.search(line)
        if m and m.group(5) is not None and iteration is not None:
            key = (int(m.group(1)), m.group(2))
            its, vals = raw.setdefault(key, ([], []))
            its.append(iteration)
            vals.append(_num(m.group(5)))
            weights[key] = _num(m.group(4))
    counts = {}
    for _, name in raw:
        counts[name] = counts.get(name, 0) + 1
    terms, named_weights, seen = {}, {}, {}
    for (k, name) in sorted(raw):
        label = name
        if counts[name] > 1:
            label = "%s[%d]" % (name, seen.get(name, 0))
            seen[name] = seen.get(name, 0) + 1
        its, vals = raw[(k, name)]
        terms[label] = (np.array(its), np.array(vals))
        named_weights[label] = weights[(k, name)]
    return {"total": (np.array(total_it), np.array(total)), "terms": terms,
            "weights": named_weights}


def _typical(values):
    v = np.abs(values[np.isfinite(values)])
    v = v[v > 0]
    return float(np.median(v)) if len(v) else None


def loss_curves(logs, out_png, title=None):
    """Every weighted loss term and the total loss of one or several training runs against
    the iteration: ``logs`` is one log path or ``{label: path}`` (e.g. DAH and NoDA), one panel
    per run side by side, sharing the y axis. The y axis turns logarithmic when the terms'
    typical (median) sizes span more than 2 decades — symmetric-log when some value is ≤ 0
    (the unbiased MMD can dip below 0) — and its label says so. Returns ``out_png``."""
    if isinstance(logs, (str, os.PathLike)):
        logs = {os.path.splitext(os.path.basename(os.fspath(logs)))[0]: logs}
    if not logs:
        raise ValueError("loss_curves: no logs")
    runs = {label: read_loss_terms(path) for label, path in logs.items()}
    for label, r in runs.items():
        if not r["terms"] and not len(r["total"][0]):
            raise CaffeError("%s has no \"Train net output\" or \"Iteration N ..., loss =\" "
                             "lines (is it the log of a training run with display > 0?)"
                             % logs[label])
    names = []
    for r in runs.values():
        names += [n for n in r["terms"] if n not in names]
    colors = dict(zip(names, _class_colors(max(1, len(names)))))
    all_values = [v for r in runs.values() for _, v in list(r["terms"].values()) + [r["total"]]]
    typical = [t for t in map(_typical, all_values) if t is not None]
    log_y = len(typical) >= 2 and max(typical) / min(typical) > 100.0
    negative = any(np.any(v[np.isfinite(v)] <= 0) for v in all_values)
    fig = _figure(figsize=(max(5.5, 5.2 * len(runs)), 4.6), layout="constrained")
    axes = []
    for i, (label, r) in enumerate(runs.items()):
        ax = fig.add_subplot(1, len(runs), i + 1, sharey=axes[0] if axes else None)
        axes.append(ax)
        for name, (its, vals) in r["terms"].items():
            w = r["weights"][name]
            ax.plot(its, vals, color=colors[name], lw=1.5, marker="o" if len(its) <= 30 else None,
                    ms=3, label="%s (× %g)" % (name, w))
        its, vals = r["total"]
        if len(its):
            ax.plot(its, vals, color="black", lw=2.2, label="total loss")
        ax.set_title(str(label), fontsize=11)
        ax.set_xlabel("iteration")
        ax.grid(True, color="0.9", lw=0.6)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3,
                  frameon=False)
    scale = ""
    if log_y:
        if negative:  # linear within ± the decade below the smallest term's typical size
            lin = 10.0 ** np.floor(np.log10(min(typical)))
            for ax in axes:
                ax.set_yscale("symlog", linthresh=lin, linscale=1.0)
            scale = "\nsymmetric log scale, linear within ±%g" % lin
        else:
            for ax in axes:
                ax.set_yscale("log")
            scale = ", log scale"
    axes[0].set_ylabel("loss (weighted contribution)%s" % scale)
    for ax in axes[1:]:
        ax.tick_params(labelleft=True)
    if title:
        fig.suptitle(title, fontsize=13)
    return _save(fig, out_png)


# ---------------------------------------------------------------------------- retrieval

def hamming_ranking(query_codes, db_codes, k):
    """The top-``k`` database indices for each query (n_queries × k), nearest first, by
    Hamming distance between sign codes (b = sgn u, sgn 0 = +1; continuous codes are
    binarised), ties in database order: the ranking ``minicaffe.hashing.metrics`` scores."""
    dist = metrics.hamming_distance(metrics.binarize(query_codes), metrics.binarize(db_codes))
    if not 0 < k <= dist.shape[1]:
        raise ValueError("hamming_ranking: k = %d, the database has %d items"
                         % (k, dist.shape[1]))
    return np.argsort(dist, axis=1, kind="stable")[:, :k]


def _image_path(root, path):
    """Caffe's root_folder is a prefix (``root + path``); a folder without its slash works too."""
    root = os.fspath(root or "")
    if root and not root.endswith(("/", os.sep)) and os.path.isdir(root):
        return os.path.join(root, path)
    return root + path


def _thumbnail(root, path, px=128):
    from PIL import Image, ImageOps
    full = _image_path(root, path)
    try:
        with Image.open(full) as img:
            img = img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise CaffeError("retrieval: cannot read the image %s: %s" % (full, exc)) from None
    return np.asarray(ImageOps.pad(img, (px, px), color=(255, 255, 255)))


def retrieval(queries, database, ranking, out_png, k=10, title=None, class_names=None, root=""):
    """One row per query: the query image, then its top-``k`` database images (``ranking``:
    n_queries × ≥ k database indices, best first), each framed green when its label is the
    query's and red with a ✗ when not, its rank above and its class below; under the query,
    its class and how many of the k are right. ``queries`` / ``database``: lists of
    (image path, label); paths are read as ``root + path`` (Caffe's root_folder).
    ``class_names``: label → name (list or dict); else "class L". Returns ``out_png``."""
    ranking = np.asarray(ranking)
    if ranking.ndim != 2 or len(ranking) != len(queries) or ranking.shape[1] < k:
        raise ValueError("retrieval: ranking must be n_queries (%d) × at least k (%d), got "
                         "shape %s" % (len(queries), k, ranking.shape))
    if len(queries) == 0:
        raise ValueError("retrieval: no queries")
    if ranking.size and (ranking.min() < 0 or ranking.max() >= len(database)):
        raise ValueError("retrieval: ranking holds indices outside the database (0..%d)"
                         % (len(database) - 1))

    def name(label):
        if class_names is not None:
            try:
                return str(class_names[int(label)])
            except (KeyError, IndexError):
                pass
        return "class %d" % int(label)

    nq = len(queries)
    fig = _figure(figsize=(1.25 * (k + 1) + 0.35, 1.72 * nq + (0.45 if title else 0.1)),
                  layout="constrained")
    gs = fig.add_gridspec(nq, k + 2, width_ratios=[1, 0.18] + [1] * k)
    for r, (qpath, qlabel) in enumerate(queries):
        ax = fig.add_subplot(gs[r, 0])
        ax.imshow(_thumbnail(root, qpath))
        correct = sum(int(database[j][1]) == int(qlabel) for j in ranking[r, :k])
        _frame(ax, _QUERY, 3.0)
        ax.set_title("query", fontsize=8, color=_QUERY, pad=2)
        ax.set_xlabel("%s\n%d/%d right" % (name(qlabel), correct, k), fontsize=7.5, labelpad=2)
        for c, j in enumerate(ranking[r, :k]):
            dpath, dlabel = database[int(j)]
            ok = int(dlabel) == int(qlabel)
            ax = fig.add_subplot(gs[r, c + 2])
            ax.imshow(_thumbnail(root, dpath))
            _frame(ax, _RIGHT if ok else _WRONG, 3.0)
            ax.set_title("#%d" % (c + 1), fontsize=7.5, pad=2)
            ax.set_xlabel(name(dlabel), fontsize=7, labelpad=2, color="black" if ok else _WRONG)
            if not ok:
                ax.text(0.96, 0.95, "✗", transform=ax.transAxes, ha="right", va="top",
                        fontsize=12, color=_WRONG, fontweight="bold",
                        bbox=dict(boxstyle="circle,pad=0.1", fc="white", ec="none", alpha=0.85))
    if title:
        fig.suptitle(title, fontsize=12)
    return _save(fig, out_png)


def _frame(ax, color, width):
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_edgecolor(color)
        s.set_linewidth(width)


# ---------------------------------------------------------------------------- one pair

def _read_list(path):
    return [(p, label) for p, label, _ in read_image_list(path)]


def pair_figures(out_dir, features, *, trunk=None, lists=None, root="", logs=None,
                 class_names=None, source_name="source", target_name="target",
                 retrieval_method="DAH", n_queries=6, k=10, method="pca", seed=0):
    """The four figures of one transfer pair, written into ``out_dir``:

    - ``embedding_fc7.png``: fc7 of the trunk (before adaptation), then of each method;
    - ``embedding_codes.png``: the continuous hash codes of each method that has them;
    - ``loss_curves.png``: every loss term of each method's training log;
    - ``retrieval.png``: ``n_queries`` target images (of different classes, drawn with
      ``seed``) and their top-``k`` source images by Hamming ranking of the codes of
      ``retrieval_method`` (the first method with codes when it has none).

    Inputs (all per domain ``"source"`` / ``"target"``, rows in list-file order):

    - ``features``: ``{method: {"source": {"fc7": (N_s × D), "code": (N_s × bits),
      "label": (N_s,)}, "target": {...}}}`` — ``experiments.extract(hash_deploy, model,
      list, root, ["code", "fc7"], ...)``'s blobs with its labels under ``"label"``, in the
      order to draw (e.g. NoDA then DAH). A method without ``"code"`` (DAN and DANN extract
      ``prob``) is left out of the code embedding and the retrieval; without ``"fc7"``, out of
      the fc7 embedding.
    - ``trunk``: ``{"source": {"fc7": ..., "label": ...}, "target": {...}}`` — the
      starting trunk's fc7 (the weights every method starts from), or None.
    - ``lists``: ``{"source": list file, "target": list file}`` — the Caffe list files the
      features were extracted from (``path label`` lines), and ``root`` their root_folder;
      without them no retrieval figure.
    - ``logs``: ``{method: training log path}``; without them no loss curves.
    - ``class_names``: label → name (``classes.txt`` of ``tools/make_lists``, as a list).

    A figure whose inputs are missing is skipped. Returns ``{file name: path}`` of what was
    written."""
    os.makedirs(out_dir, exist_ok=True)
    pair = "%s → %s" % (source_name, target_name)
    written = {}

    def panel(title, dom, key):
        return {"title": title, "source": dom["source"][key],
                "source_labels": dom["source"]["label"], "target": dom["target"][key],
                "target_labels": dom["target"]["label"], "source_name": source_name,
                "target_name": target_name}

    for key, fname, what in (("fc7", "embedding_fc7.png", "fc7 features"),
                             ("code", "embedding_codes.png", "hash codes")):
        panels = []
        if key == "fc7" and trunk is not None:
            panels.append(panel("trunk (before adaptation)", trunk, key))
        panels += [panel(m, f, key) for m, f in features.items()
                   if key in f["source"] and key in f["target"]]
        if panels:
            written[fname] = embedding(panels, os.path.join(out_dir, fname), method=method,
                                       seed=seed, title="%s, %s" % (what, pair))
    if logs:
        written["loss_curves.png"] = loss_curves(
            logs, os.path.join(out_dir, "loss_curves.png"), title="training losses, %s" % pair)
    coded = [m for m, f in features.items() if "code" in f["source"] and "code" in f["target"]]
    if lists and coded:
        m = retrieval_method if retrieval_method in coded else coded[0]
        src, tgt = _read_list(lists["source"]), _read_list(lists["target"])
        f = features[m]
        for dom, entries in (("source", src), ("target", tgt)):
            if len(entries) != len(f[dom]["code"]):
                raise CaffeError("pair_figures: %s has %d images but %s's %s codes %d rows"
                                 % (lists[dom], len(entries), m, dom, len(f[dom]["code"])))
        rng = np.random.RandomState(seed)
        labels = np.asarray(f["target"]["label"]).ravel()
        classes = rng.permutation(np.unique(labels))[:n_queries]
        picks = [int(rng.choice(np.flatnonzero(labels == c))) for c in classes]
        ranking = hamming_ranking(np.asarray(f["target"]["code"])[picks], f["source"]["code"],
                                  min(k, len(src)))
        written["retrieval.png"] = retrieval(
            [tgt[i] for i in picks], src, ranking, os.path.join(out_dir, "retrieval.png"),
            k=ranking.shape[1], class_names=class_names, root=root,
            title="%s: %s target queries, top-%d source images by Hamming distance"
                  % (m, target_name, ranking.shape[1]))
    return written

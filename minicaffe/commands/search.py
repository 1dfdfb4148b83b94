"""``tools/search``: query a hash database (``tools/index``) with images, by Hamming distance.

    tools/search --db DB (--image FILE [FILE ...] | --list LIST [--root DIR])
                 [-k 10 | --radius R] [--csv OUT.csv] [--png OUT.png]
                 [--engine auto|numpy|faiss|faiss-hnsw|faiss-mih] [--threads N]
                 [--mih_nhash 4] [--mih_nflip 1] [--ef_search 64]
                 [--model DEPLOY] [--weights W] [--transform_from TRAIN_NET] [--gpu N]

The queries are encoded by the net recorded in the database (its deploy file, weights and
image transformation; ``--model``/``--weights``/``--transform_from`` name other copies), which
must be the net that made the database: another bit length, deploy structure, weights, blob or
transformation is refused with one line naming the database. ``-k`` gives the k nearest items
(ties in database order: the ranking of ``tools/evaluate``'s mAP), ``--radius R`` every item
within Hamming distance R (the paper's hash lookup), nearest first.

Results are printed, and written as CSV (``query,query_label,rank,distance,path,label``;
label -1: unknown, as for ``--image`` queries) and, with ``--png``, as a figure drawn with
Pillow: one row for each of the first ``--png_rows`` (20) queries, the query and then its
first ``--png_max`` (10) results with their
distance and class, framed green where the label is the query's and red where it is not
(grey: the query's label is unknown). An unreadable query image stops the command before
anything is written. ``--engine``: see ``minicaffe/search.py`` (faiss engines need
``pip install 'minicaffe[search]'``).
"""
import argparse
import csv
import io
import logging
import os

from minicaffe import protoio
from minicaffe.backend import select_device
from minicaffe.errors import CaffeError
from minicaffe.search import HashIndex, check_same_net, encode_images
from minicaffe.transformer import read_image_list

from ._cli import check_output, run, setup_logging, summary

log = logging.getLogger("minicaffe")


def build_parser():
    p = argparse.ArgumentParser(prog="search", description=summary(__doc__))
    p.add_argument("--db", required=True, help="database file written by tools/index")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--image", nargs="+", help="query image file(s)")
    q.add_argument("--list", help="query list file (path label per line)")
    p.add_argument("--root", default="", help="prefix of the list's paths (root_folder)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("-k", type=int, default=10, help="nearest items per query (default 10)")
    how.add_argument("--radius", type=int, default=None, help="every item within this distance")
    p.add_argument("--csv", default="", help="write the results here")
    p.add_argument("--png", default="", help="draw the queries and their results here")
    p.add_argument("--png_max", type=int, default=10, help="results per query in the figure")
    p.add_argument("--png_rows", type=int, default=20, help="queries in the figure (the first)")
    p.add_argument("--engine", default="auto", choices=["auto", "numpy", "faiss", "faiss-hnsw",
                                                        "faiss-mih"],
                   help="search engine (default auto: faiss when installed, else numpy)")
    p.add_argument("--threads", type=int, default=None, help="search threads (faiss engines)")
    p.add_argument("--mih_nhash", type=int, default=4, help="faiss-mih: substrings (default 4)")
    p.add_argument("--mih_nflip", type=int, default=1, help="faiss-mih: bit flips probed (1)")
    p.add_argument("--ef_search", type=int, default=64, help="faiss-hnsw: efSearch (64)")
    p.add_argument("--model", default="", help="deploy prototxt (default: the database's)")
    p.add_argument("--weights", default="", help="weights (default: the database's)")
    p.add_argument("--transform_from", default="", help="training net for the image "
                   "transformation (default: the one recorded in the database)")
    p.add_argument("--batch", type=int, default=100, help="images per forward (default 100)")
    p.add_argument("--gpu", default=None, help="GPU id (default: the CPU)")
    return p


def check_images(paths):
    """Decode every image; the first that fails is a one-line CaffeError naming it."""
    from PIL import Image

    for p in paths:
        try:
            with Image.open(p) as im:
                im.load()
        except FileNotFoundError:
            raise CaffeError("cannot read query image %s: no such file" % p) from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise CaffeError("cannot read query image %s: %s" % (p, " ".join(str(exc).split())
                                                                  or type(exc).__name__)) from None


def _recorded(path, what, flag, db):
    if not path or not os.path.exists(path):
        raise CaffeError("%s: its %s %s is not there; pass %s" % (db, what, path or "(none "
                         "recorded)", flag))
    return path


def _label_name(label, classes):
    if label < 0:
        return "?"
    return classes[label] if classes and label < len(classes) else str(label)


def result_rows(query_paths, query_labels, results, idx):
    """``[(query, query label, [(rank, distance, path, label), ...])]``"""
    rows = []
    for qp, ql, (dist, ind) in zip(query_paths, query_labels, results):
        rows.append((qp, int(ql), [(r + 1, int(d), idx.paths[i], int(idx.labels[i]))
                                   for r, (d, i) in enumerate(zip(dist, ind)) if i >= 0]))
    return rows


def csv_bytes(rows):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["query", "query_label", "rank", "distance", "path", "label"])
    for qp, ql, hits in rows:
        for rank, d, path, label in hits:
            w.writerow([qp, ql, rank, d, path, label])
    return buf.getvalue().encode("utf-8", "surrogateescape")


def draw_results(rows, classes, max_results=10, thumb=96):
    """The figure of ``rows`` as a PIL image: a row per query, query first, then its results
    framed green (right label), red (wrong) or grey (the query's label is unknown)."""
    from PIL import Image, ImageDraw
    pad, text_h, frame = 8, 28, 4
    cols = 1 + min(max_results, max((len(h) for _, _, h in rows), default=0))
    cell_w, cell_h = thumb + 2 * frame + pad, thumb + 2 * frame + text_h + pad
    fig = Image.new("RGB", (pad + cols * cell_w + pad, pad + len(rows) * cell_h), "white")
    draw = ImageDraw.Draw(fig)

    def cell(r, c, path, colour, lines):
        x, y = pad + c * cell_w + (pad if c else 0), pad + r * cell_h
        draw.rectangle([x, y, x + thumb + 2 * frame - 1, y + thumb + 2 * frame - 1], fill=colour)
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                s = thumb / float(max(im.size))
                im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))),
                               Image.BICUBIC)
        except (OSError, ValueError):
            im = Image.new("RGB", (thumb, thumb), (200, 200, 200))
        fig.paste(im, (x + frame + (thumb - im.width) // 2, y + frame + (thumb - im.height) // 2))
        for j, line in enumerate(lines):
            draw.text((x, y + thumb + 2 * frame + 2 + 12 * j), line[:18], fill=colour
                      if colour != (255, 255, 255) else (0, 0, 0))

    for r, (qp, ql, hits) in enumerate(rows):
        cell(r, 0, qp, (0, 0, 0), ["query", _label_name(ql, classes)])
        for c, (rank, d, path, label) in enumerate(hits[:max_results], 1):
            colour = (150, 150, 150) if ql < 0 else (0, 160, 0) if label == ql else (220, 0, 0)
            mark = "" if ql < 0 or label == ql else " WRONG"
            cell(r, c, path, colour, ["#%d  d=%d%s" % (rank, d, mark), _label_name(label, classes)])
    return fig


def _write_atomic(path, data):
    protoio.atomic_write(path, lambda f: f.write(data), CaffeError)


def search_cmd(args):
    setup_logging()
    select_device(args.gpu)
    for out in (args.csv, args.png):
        if out:
            check_output(out)
    if args.radius is None and args.k < 1:
        raise CaffeError("-k must be at least 1 (got %d)" % args.k)
    idx = HashIndex.load(args.db, engine=args.engine, threads=args.threads,
                         mih_nhash=args.mih_nhash, mih_nflip=args.mih_nflip,
                         ef_search=args.ef_search)
    net = idx.meta.get("net") or {}
    model = args.model or _recorded(net.get("deploy"), "deploy net", "--model", args.db)
    weights = args.weights or _recorded(net.get("weights"), "weights", "--weights", args.db)
    transform = args.transform_from or net.get("transform")
    if not transform:
        raise CaffeError("%s records no image transformation; pass --transform_from" % args.db)
    if args.image:
        queries = [(os.path.abspath(p), -1) for p in args.image]
    else:
        queries = [(os.path.abspath(args.root + p), lab)
                   for p, lab, _ in read_image_list(args.list)]
        if not queries:
            raise CaffeError("%s has no images" % args.list)
    check_images([p for p, _ in queries])
    enc = encode_images(model, weights, queries, transform, blob=net.get("blob", "code"),
                        batch=args.batch, progress=len(queries) > args.batch)
    check_same_net(args.db, net, enc.net, idx.bits, enc.codes.shape[1])
    if args.radius is not None:
        results = idx.range_search(enc.codes, args.radius)
    else:
        dist, ind = idx.search(enc.codes, args.k)
        results = list(zip(dist, ind))
    rows = result_rows(enc.paths, enc.labels, results, idx)
    classes = idx.meta.get("classes")
    fig = draw_results(rows[:args.png_rows], classes, args.png_max) if args.png else None
    for n, (qp, ql, hits) in enumerate(rows, 1):
        what = "%d within radius %d" % (len(hits), args.radius) if args.radius is not None \
            else "%d nearest" % len(hits)
        print("query %d: %s (label %s): %s" % (n, qp, _label_name(ql, classes), what))
        for rank, d, path, label in hits:
            print("  %4d  d=%-3d %-14s %s" % (rank, d, _label_name(label, classes), path))
    if args.csv:
        _write_atomic(args.csv, csv_bytes(rows))
        log.info("Wrote %s", args.csv)
    if fig is not None:
        buf = io.BytesIO()
        fig.save(buf, format="PNG")
        _write_atomic(args.png, buf.getvalue())
        log.info("Wrote %s", args.png)
    return 0


def main(argv=None):
    return run(search_cmd, argv, parser=build_parser())

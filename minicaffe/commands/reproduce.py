"""``tools/reproduce``: train every method and write the paper's tables and figures.

    tools/reproduce [--toy | --root OFFICE_HOME_ROOT] [--pairs Ar:Cl,Pr:Rw | all]
                    [--bits 64 | 16,64,128] [--methods DAH,NoDA,SuH,DAN,DANN,ITQ,KMeans,BA,BDNN]
                    [--out results] [--iters N] [--weights VGG_CNN_F.caffemodel] [--gpu N]

With no data option it uses the embedded ToyHome data (generated and cached on first use).
There is no ImageNet-trained trunk for it, so by default (``--pretrain 300``) each source
domain first trains the NoDA net alone (its own images as the "target" too), and every method
of a pair starts from that model's conv1–fc7 (its hash layer or classifier starts afresh), as
the paper's methods all start from ImageNet VGG-F; on Office-Home, ``--weights
VGG_CNN_F.caffemodel`` plays that part.
For every selected transfer pair and bit length it trains the chosen methods (a model that
already exists in --out is reused, so an interrupted run resumes), extracts codes in the TEST
phase and writes to --out:

- ``accuracy.md`` / ``.csv``: target recognition accuracy (supplement Table 1's shape: DAN,
  DANN, DAH-d per pair, plus NoDA-d, and the average);
- ``map_<d>bits.md`` / ``.csv``: mAP per target domain (Tables 2–3's shape: NoDA, ITQ, KMeans,
  BA, BDNN, DAH, SuH), protocol A (target queries against the source database, the authors'
  code) and protocol B (within the target, leave-self-out);
- ``pr_<d>bits_<target>.csv`` / ``.png``: precision–recall by Hamming radius, one curve per
  method (Figures 1–2);
- ``results.json``: every number, with the command that produced it.

As the supplement's tables: NoDA and DAH use Art as the source for Clipart, Product and
Real World, and Clipart for Art; SuH and the unsupervised baselines (on the NoDA model's fc7
features) use the target domain alone. The mAP tables have a row for each target whose pair
with that source is among --pairs.
"""
import argparse
import json
import logging
import os
import sys
import time

import numpy as np

from ._cli import run, setup_logging

log = logging.getLogger("minicaffe")

SHORT = {"Ar": "Art", "Cl": "Clipart", "Pr": "Product", "Rw": "Real World"}
ORDER = ["Ar", "Cl", "Pr", "Rw"]
ALL_PAIRS = [(s, t) for s in ORDER for t in ORDER if s != t]
MAP_SOURCE = {"Cl": "Ar", "Pr": "Ar", "Rw": "Ar", "Ar": "Cl"}   # the supplement's captions
UNSUPERVISED = ("ITQ", "KMeans", "BA", "BDNN")
ALL_METHODS = ("DAN", "DANN", "DAH", "NoDA", "SuH") + UNSUPERVISED
MAP_COLUMNS = ("NoDA",) + UNSUPERVISED + ("DAH", "SuH")
TOY_PRETRAIN = 300   # iterations of the source-only stage on the embedded data


def parse_pairs(text):
    if text == "all":
        return list(ALL_PAIRS)
    pairs = []
    names = {v.lower().replace(" ", ""): k for k, v in SHORT.items()}
    names.update({k.lower(): k for k in SHORT})
    for item in text.split(","):
        if ":" not in item:
            raise ValueError("a pair is SOURCE:TARGET (e.g. Ar:Cl), got %r" % item)
        s, t = (names.get(x.strip().lower().replace(" ", "")) for x in item.split(":", 1))
        if s is None or t is None or s == t:
            raise ValueError("bad pair %r (domains: Ar, Cl, Pr, Rw or their full names)" % item)
        pairs.append((s, t))
    return pairs


class Progress:
    """Training progress with an ETA over all the planned iterations."""

    def __init__(self, total_iters):
        self.total, self.done, self.t0 = total_iters, 0, time.time()
        self._last = 0.0

    def tick(self, label, it, max_iter, loss):
        now = time.time()
        if it == max_iter or now - self._last > 5:
            done = self.done + it
            rate = done / max(now - self.t0, 1e-9)
            eta = (self.total - done) / rate if rate > 0 else 0
            log.info("[%s] iteration %d/%d, loss %.4g | all runs %d/%d iterations, ETA %s",
                     label, it, max_iter, loss, done, self.total, _hms(eta))
            self._last = now

    def finish(self, iters):
        self.done += iters


def _hms(s):
    s = int(round(s))
    return "%d:%02d:%02d" % (s // 3600, s % 3600 // 60, s % 60)


def plan_runs(pairs, bits, methods):
    """Trainings needed: (method, source, target, bits); bits is None for DAN/DANN."""
    runs = []

    def add(r):
        if r not in runs:
            runs.append(r)
    for s, t in pairs:
        for m in ("DAN", "DANN"):
            if m in methods:
                add((m, s, t, None))
        for b in bits:
            for m in ("DAH", "NoDA"):
                if m in methods or (m == "NoDA" and set(UNSUPERVISED) & set(methods)):
                    add((m, s, t, b))
    for t in map_targets(pairs):
        s = MAP_SOURCE[t]
        for b in bits:
            for m in ("DAH", "NoDA"):
                if m in methods or (m == "NoDA" and set(UNSUPERVISED) & set(methods)):
                    add((m, s, t, b))
            if "SuH" in methods:
                add(("SuH", s, t, b))
    return runs


def map_targets(pairs):
    """The targets of the mAP tables: those whose source in the supplement's tables (Art, or
    Clipart for Art) is paired with them in ``pairs``."""
    return [t for t in ORDER if (MAP_SOURCE[t], t) in pairs]


def run_name(method, s, t, b):
    return "%s_%s-%s%s" % (method, s, t, "" if b is None else "_%dbits" % b)


def reproduce(args):
    from minicaffe import experiments
    from minicaffe.datasets import lists as lists_mod
    from minicaffe.hashing import BASELINES
    from minicaffe.errors import CaffeError
    from .train import select_device
    setup_logging(args.log_level)
    select_device(args.gpu)
    try:
        pairs = parse_pairs(args.pairs)
    except ValueError as exc:
        raise CaffeError(str(exc)) from None
    bits = [int(b) for b in str(args.bits).split(",") if b]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in ALL_METHODS]
    if bad:
        raise CaffeError("unknown method(s) %s (known: %s)" % (", ".join(bad), ", ".join(ALL_METHODS)))
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    if args.root:
        root, family = os.path.abspath(args.root), args.family or "office_home"
    else:
        from minicaffe.datasets import toyhome
        log.info("Preparing the embedded ToyHome data (generated once, then cached)")
        root, family = toyhome.ensure(), args.family or "toyhome"
    list_files = lists_mod.write_lists(root, os.path.join(out, "lists"))
    by_short = {}
    for dom, path in list_files.items():
        for k, v in SHORT.items():
            if v.replace(" ", "").lower() == dom.replace(" ", "").replace("_", "").lower():
                by_short[k] = path
    missing = sorted({d for p in pairs for d in p} - set(by_short), key=ORDER.index)
    if missing:
        raise CaffeError("%s has no domain(s) %s (found: %s)"
                         % (root, ", ".join(SHORT[m] for m in missing), ", ".join(list_files)))
    with open(os.path.join(out, "lists", "classes.txt")) as f:
        num_classes = sum(1 for line in f if line.strip())
    rootp = root.rstrip("/") + "/"

    runs = plan_runs(pairs, bits, methods)
    results_path = os.path.join(out, "results.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    results["command"] = "tools/reproduce " + " ".join(sys.argv[1:]) if args.record_argv else ""
    results.setdefault("runs", {})

    def save():
        tmp = results_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)
        os.replace(tmp, results_path)

    solvers = {}
    for r in runs:
        m, s, t, b = r
        solvers[r] = experiments.configure(
            family, m, source_list=by_short[s], target_list=by_short[t], root=rootp,
            num_classes=num_classes, bits=b, max_iter=args.iters, seed=args.seed,
            per_class=args.per_class,
            snapshot_prefix=os.path.join(out, "models", run_name(*r)),
            display=0 if not args.verbose else None)
    todo = [r for r in runs if not os.path.exists(
        solvers[r].snapshot_prefix + "_iter_%d.caffemodel" % solvers[r].max_iter)]
    pre_iters = args.pretrain if args.pretrain is not None else \
        (0 if (args.root or args.weights) else TOY_PRETRAIN)
    sources = sorted({r[1] for r in runs}, key=ORDER.index) if pre_iters > 0 else []
    pre_solvers = {}
    for s in sources:  # stage 1: the source-only NoDA net, the stand-in for ImageNet weights
        pre_solvers[s] = experiments.configure(
            family, "NoDA", source_list=by_short[s], target_list=by_short[s], root=rootp,
            num_classes=num_classes, bits=bits[0], max_iter=pre_iters, seed=args.seed,
            per_class=args.per_class, snapshot_prefix=os.path.join(out, "models", "pretrain_" + s),
            display=0 if not args.verbose else None)
    pre_todo = [s for s in sources if not os.path.exists(
        pre_solvers[s].snapshot_prefix + "_iter_%d.caffemodel" % pre_iters)]
    progress = Progress(sum(solvers[r].max_iter for r in todo) + pre_iters * len(pre_todo))
    log.info("%d trainings planned (%d already done)%s, %d iterations to run",
             len(runs), len(runs) - len(todo),
             ", after %d source pretrainings of %d iterations" % (len(pre_todo), pre_iters)
             if pre_todo else "", progress.total)

    start = {}  # the weights each source's trainings start from
    for s in sources:
        sp = pre_solvers[s]
        model = sp.snapshot_prefix + "_iter_%d.caffemodel" % pre_iters
        if s in pre_todo:
            log.info("Pretraining on %s alone (NoDA, %d iterations)", SHORT[s], pre_iters)
            model = _train(sp, args, progress, "pretrain_" + s, args.weights or None)
        trunk = sp.snapshot_prefix + "_trunk.caffemodel"
        if s in pre_todo or not os.path.exists(trunk):
            experiments.trunk_weights(model, family, trunk)
        start[s] = trunk
        results.setdefault("pretrain", {})[s] = {"iterations": pre_iters, "model": model}

    for r in runs:
        m, s, t, b = r
        name = run_name(*r)
        sp = solvers[r]
        model = sp.snapshot_prefix + "_iter_%d.caffemodel" % sp.max_iter
        if r in todo:
            log.info("Training %s (%s -> %s%s), %d iterations", m, SHORT[s], SHORT[t],
                     "" if b is None else ", %d bits" % b, sp.max_iter)
            t0 = time.time()
            model = _train(sp, args, progress, name, start.get(s, args.weights or None))
            results["runs"].setdefault(name, {})["train_seconds"] = round(time.time() - t0, 1)
        rec = results["runs"].setdefault(name, {})
        if "evaluated" in rec and not args.reevaluate:
            continue
        deploy = experiments.family_file(family, "cls_deploy.prototxt" if m in ("DAN", "DANN")
                                         else "hash_deploy.prototxt")
        dep = _deploy_param(deploy, b, num_classes)
        blobs = ["prob"] if m in ("DAN", "DANN") else ["code", "fc7"]
        fs, ls = experiments.extract(dep, model, by_short[s], rootp, blobs, sp.net_param)
        ft, lt = experiments.extract(dep, model, by_short[t], rootp, blobs, sp.net_param)
        if m in ("DAN", "DANN"):
            rec["accuracy"] = experiments.evaluate_classifier(ft["prob"], lt)
        else:
            ev = experiments.evaluate_hashing(fs["code"], ls, ft["code"], lt, num_classes)
            rec.update({k: float(ev[k]) for k in ("accuracy", "map_a", "map_b")})
            rec["pr_a"] = [np.nan_to_num(x, nan=-1).tolist() for x in ev["pr_a"]]
            rec["pr_b"] = [np.nan_to_num(x, nan=-1).tolist() for x in ev["pr_b"]]
            if m == "NoDA":
                feats_dir = os.path.join(out, "features")
                os.makedirs(feats_dir, exist_ok=True)
                np.save(os.path.join(feats_dir, name + "_source_fc7.npy"), fs["fc7"])
                np.save(os.path.join(feats_dir, name + "_target_fc7.npy"), ft["fc7"])
                np.save(os.path.join(feats_dir, name + "_source_labels.npy"), ls)
                np.save(os.path.join(feats_dir, name + "_target_labels.npy"), lt)
        rec["evaluated"] = True
        log.info("%s: %s", name, ", ".join("%s %.4f" % (k, rec[k]) for k in
                                            ("accuracy", "map_a", "map_b") if k in rec))
        save()

    # unsupervised baselines on the NoDA model's fc7 features of each mAP target
    for t in map_targets(pairs):
        s = MAP_SOURCE[t]
        for b in bits:
            for m in UNSUPERVISED:
                if m not in methods:
                    continue
                name = run_name(m, s, t, b)
                if results["runs"].get(name, {}).get("evaluated") and not args.reevaluate:
                    continue
                noda = os.path.join(out, "features", run_name("NoDA", s, t, b))
                xs, xt = np.load(noda + "_source_fc7.npy"), np.load(noda + "_target_fc7.npy")
                ls, lt = np.load(noda + "_source_labels.npy"), np.load(noda + "_target_labels.npy")
                t0 = time.time()
                log.info("Fitting %s (%d bits) on the %s features", m, b, SHORT[t])
                model = BASELINES[m](xt, b, seed=args.seed)
                ev = experiments.evaluate_hashing(model.encode(xs).astype(np.float32), ls,
                                                  model.encode(xt).astype(np.float32), lt,
                                                  num_classes, with_accuracy=False)
                results["runs"][name] = {
                    "map_a": float(ev["map_a"]), "map_b": float(ev["map_b"]),
                    "pr_a": [np.nan_to_num(x, nan=-1).tolist() for x in ev["pr_a"]],
                    "pr_b": [np.nan_to_num(x, nan=-1).tolist() for x in ev["pr_b"]],
                    "fit_seconds": round(time.time() - t0, 1), "evaluated": True}
                log.info("%s: map_a %.4f, map_b %.4f", name, ev["map_a"], ev["map_b"])
                save()
    save()
    write_tables(results, pairs, bits, methods, out)
    print_summary(results, pairs, bits, methods)
    return 0


def _train(sp, args, progress, name, weights=None):
    from minicaffe import backend, experiments
    backend.set_random_seed(args.seed)
    quiet = logging.getLogger("minicaffe").level
    if not args.verbose:
        logging.getLogger("minicaffe").setLevel(logging.WARNING)
    try:
        model = experiments.train(sp, weights=weights,
                                  progress=lambda it, mx, loss: _tick(progress, name, it, mx, loss, quiet))
    finally:
        logging.getLogger("minicaffe").setLevel(quiet)
    progress.finish(sp.max_iter)
    return model


def _tick(progress, name, it, mx, loss, level):
    logger = logging.getLogger("minicaffe")
    old = logger.level
    logger.setLevel(level)
    try:
        progress.tick(name, it, mx, loss)
    finally:
        logger.setLevel(old)


def _deploy_param(path, bits, num_classes):
    from minicaffe import protoio
    p = protoio.read_net_param(path)
    for lp in p.layer:
        if lp.name == "fc8_hash" and bits:
            lp.inner_product_param.num_output = bits
        elif lp.name == "fc8" and lp.type == "InnerProduct":
            lp.inner_product_param.num_output = num_classes
    return p


def _fmt(x, pct=False):
    if x is None:
        return "-"
    return "%.2f" % (100 * x) if pct else "%.3f" % x


def _md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _csv(path, header, rows):
    with open(path, "w") as f:
        f.write(",".join(header) + "\n")
        for r in rows:
            f.write(",".join(x.replace(",", ";") for x in r) + "\n")


def table_accuracy(results, pairs, bits, methods):
    header = ["Method"] + ["%s→%s" % (s, t) for s, t in pairs] + ["Avg."]
    rows = []
    names = [("DAN", None), ("DANN", None)] + [("NoDA", b) for b in bits] + [("DAH", b) for b in bits]
    for m, b in names:
        if m not in methods:
            continue
        vals = [results["runs"].get(run_name(m, s, t, b), {}).get("accuracy") for s, t in pairs]
        avg = np.mean(vals) if vals and all(v is not None for v in vals) else None
        rows.append(["%s%s" % (m, "" if b is None else "-%d" % b)] + [_fmt(v, True) for v in vals]
                    + [_fmt(avg, True)])
    return header, rows


def table_map(results, pairs, b, methods, key):
    targets = map_targets(pairs)
    cols = [m for m in MAP_COLUMNS if m in methods]
    header = ["Target (source)"] + cols
    rows, per_col = [], {m: [] for m in cols}
    for t in targets:
        s = MAP_SOURCE[t]
        row = ["%s (%s)" % (SHORT[t], SHORT[s])]
        for m in cols:
            v = results["runs"].get(run_name(m, s, t, b), {}).get(key)
            per_col[m].append(v)
            row.append(_fmt(v))
        rows.append(row)
    rows.append(["Avg."] + [_fmt(np.mean(v) if v and all(x is not None for x in v) else None)
                            for v in per_col.values()])
    return header, rows


def write_tables(results, pairs, bits, methods, out):
    from minicaffe.plot import line_plot
    cmd = results.get("command") or "tools/reproduce"
    if {"DAN", "DANN", "DAH", "NoDA"} & set(methods):
        h, r = table_accuracy(results, pairs, bits, methods)
        with open(os.path.join(out, "accuracy.md"), "w") as f:
            f.write("# Target recognition accuracy (%%)\n\nArgmax of eq. 6 against all source "
                    "images for the hashing methods, softmax for DAN/DANN. `%s`\n\n" % cmd)
            f.write(_md_table(h, r))
        _csv(os.path.join(out, "accuracy.csv"), h, r)
    for b in bits:
        with open(os.path.join(out, "map_%dbits.md" % b), "w") as f:
            f.write("# Mean average precision @%d bits\n\n`%s`\n\n" % (b, cmd))
            for key, title in (("map_a", "Protocol A: target queries against the source database "
                                         "(the authors' code)"),
                               ("map_b", "Protocol B: within the target domain, each image a query "
                                         "against the rest")):
                h, r = table_map(results, pairs, b, methods, key)
                f.write("## %s\n\n" % title + _md_table(h, r) + "\n")
                _csv(os.path.join(out, "map_%dbits_%s.csv" % (b, key[-1])), h, r)
        for t in map_targets(pairs):
            s = MAP_SOURCE[t]
            series, rows = [], []
            for m in MAP_COLUMNS:
                rec = results["runs"].get(run_name(m, s, t, b), {})
                if "pr_b" not in rec:
                    continue
                _, prec, rec_ = (np.asarray(x, float) for x in rec["pr_b"])
                prec = np.where(prec < 0, np.nan, prec)
                series.append({"label": m, "x": rec_, "y": prec})
                rows += [(m, r_, p_, q_) for r_, (p_, q_) in enumerate(zip(prec, rec_))]
            if not series:
                continue
            base = os.path.join(out, "pr_%dbits_%s" % (b, SHORT[t].replace(" ", "_")))
            with open(base + ".csv", "w") as f:
                f.write("method,radius,precision,recall\n")
                for m, r_, p_, q_ in rows:
                    f.write("%s,%d,%s,%.6f\n" % (m, r_, "" if np.isnan(p_) else "%.6f" % p_, q_))
            line_plot(series, base + ".png", title="%s, %d bits (source %s) — within-target PR"
                      % (SHORT[t], b, SHORT[s]), xlabel="Recall", ylabel="Precision",
                      xlim=(0, 1), ylim=(0, 1), markers=True)


def print_summary(results, pairs, bits, methods):
    print()
    if {"DAN", "DANN", "DAH", "NoDA"} & set(methods):
        h, r = table_accuracy(results, pairs, bits, methods)
        print("Target recognition accuracy (%):")
        print(_md_table(h, r))
    for b in bits:
        for key, label in (("map_a", "A: target→source"), ("map_b", "B: within target")):
            h, r = table_map(results, pairs, b, methods, key)
            print("mAP @%d bits, protocol %s:" % (b, label))
            print(_md_table(h, r))


def build_parser():
    p = argparse.ArgumentParser(prog="reproduce", description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--toy", action="store_true", help="the embedded ToyHome data (default)")
    g.add_argument("--root", default="", help="an Office-Home root (OfficeHomeDataset_10072016)")
    p.add_argument("--family", default="", help="prototxt family (toyhome / office_home / a folder)")
    p.add_argument("--pairs", default="all", help="e.g. Ar:Cl,Pr:Rw, or all (default)")
    p.add_argument("--bits", default="16,64,128")
    p.add_argument("--methods", default=",".join(ALL_METHODS))
    p.add_argument("--out", default="results")
    p.add_argument("--iters", type=int, default=None, help="iterations per training (default: the solver's)")
    p.add_argument("--weights", default="", help="pretrained weights (e.g. VGG_CNN_F.caffemodel)")
    p.add_argument("--pretrain", type=int, default=None, metavar="N",
                   help="first train the NoDA net on each source domain alone for N iterations "
                        "(from --weights if given) and start every method from its trunk "
                        "(conv1-fc7): the embedded data's stand-in for ImageNet weights (default: "
                        "%d on the embedded data, 0 with --root or --weights)" % TOY_PRETRAIN)
    p.add_argument("--gpu", default=None)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--per_class", type=int, default=None,
                   help="source images per class in a batch, K (default: the prototxt's)")
    p.add_argument("--reevaluate", action="store_true", help="recompute the numbers of existing models")
    p.add_argument("--verbose", action="store_true", help="show the solvers' logs")
    p.add_argument("--log_level", default="INFO")
    p.set_defaults(record_argv=True)
    return p


def main(argv=None):
    return run(reproduce, argv, parser=build_parser())

"""The DAH experiment pipeline behind ``tools/reproduce`` (its options and outputs are the
command's docstring, ``minicaffe.commands.reproduce``): plan the trainings of every method, pair,
bit length and seed, train them in worker processes, evaluate the codes, fit the unsupervised
baselines and write the paper's tables, comparisons and figures. ``reproduce(**options)`` runs
it from Python."""

import argparse
import collections
import contextlib
import fnmatch
import hashlib
import importlib.util
import json
import logging
import multiprocessing
import os
import queue
import re
import shlex
import signal
import sys
import time
from collections import namedtuple

import numpy as np

from minicaffe import backend, experiments, figures, protoio, threads
from minicaffe.backend import select_device
from minicaffe.dah import figures as dah_figures
from minicaffe.datasets import lists as lists_mod, toyhome
from minicaffe.errors import CaffeError
from minicaffe.glog import GlogFormatter, setup_logging
from minicaffe.hashing import BASELINES
from minicaffe.hashing.stats import mean_std, paired_comparison
from minicaffe.proto import caffe_pb2

log = logging.getLogger("minicaffe")

SHORT = {"Ar": "Art", "Cl": "Clipart", "Pr": "Product", "Rw": "Real World"}
MAP_SOURCE = {"Cl": "Ar", "Pr": "Ar", "Rw": "Ar", "Ar": "Cl"}   # the supplement's captions
UNSUPERVISED = ("ITQ", "KMeans", "BA", "BDNN")
TRAINED = ("DAN", "DANN", "DAH", "NoDA", "SuH")
OPTIONAL = ("DAH_authors",)   # DAH with the authors' code's objective: trained when asked for
ALL_METHODS = TRAINED + UNSUPERVISED   # the default --methods
KNOWN_METHODS = ALL_METHODS + OPTIONAL
MAP_COLUMNS = ("NoDA",) + UNSUPERVISED + ("DAH", "DAH_authors", "SuH")
COMPARED = tuple((a, b) for a in ("DAH", "DAH_authors") for b in ("NoDA", "DAN", "DANN"))
METRICS = (("accuracy", "accuracy"), ("map_a", "mAP A"), ("map_b", "mAP B"))
FIGURE_METHODS = ("NoDA", "DAH", "DAH_authors")   # a pair's figures' panels, in this order
FIGURES = ("embedding_fc7.png", "embedding_codes.png", "loss_curves.png", "retrieval.png")
WARMUP_ITERS = 5     # iterations left out of the ETA's rate (the first ones compile kernels)
LOG_EVERY = 10       # solver display interval for the kept logs (fewer for short runs)
FEATURES = ("source_fc7", "target_fc7", "source_labels", "target_labels")   # kept for NoDA runs

Run = namedtuple("Run", "method source target bits seed")   # source, target: domain folders


# --- domains and pairs ---------------------------------------------------------------------

def domain_tag(domain):
    """A domain's name in run names and table headers: Office-Home's short name (``Real World``,
    ``RealWorld`` -> ``Rw``), else the folder name made file-safe (``my photos`` -> ``my_photos``)."""
    for short, full in SHORT.items():
        if lists_mod.domain_key(domain) == lists_mod.domain_key(full):
            return short
    return re.sub(r"[^\w.+-]+", "_", domain).strip("_") or "domain"


def parse_pairs(text, domains, root=None):
    """``SOURCE:TARGET,...`` or ``all`` -> [(source, target)] of folder names (``match_domain``)."""
    if text.strip() == "all":
        return [(s, t) for s in domains for t in domains if s != t]
    pairs = []
    for item in text.split(","):
        if ":" not in item:
            raise CaffeError("a pair is SOURCE:TARGET (e.g. Ar:Cl), got %r" % item)
        try:
            s, t = (lists_mod.match_domain(domains, x, root) for x in item.split(":", 1))
        except CaffeError as exc:
            raise CaffeError("bad pair %r: %s" % (item, exc)) from None
        if s == t:
            raise CaffeError("bad pair %r: the source and the target are one domain (%s)" % (item, s))
        if (s, t) not in pairs:
            pairs.append((s, t))
    return pairs


def map_rows(pairs, domains):
    """The (source, target) rows of the mAP tables, in domain order of the targets: the
    supplement's source for an Office-Home target when that pair is chosen, else every chosen
    pair with that target."""
    by_tag = {domain_tag(d): d for d in domains}
    rows = []
    for t in domains:
        src = by_tag.get(MAP_SOURCE.get(domain_tag(t)))
        if (src, t) in pairs:
            rows.append((src, t))
        else:
            rows += [(s, tt) for s, tt in pairs if tt == t]
    return rows


def _is_supplement_row(s, t):
    return MAP_SOURCE.get(domain_tag(t)) == domain_tag(s)


def plan_runs(pairs, rows, bits, methods, seeds):
    """Trainings needed, as ``Run``s; bits is None for DAN/DANN. NoDA is trained whenever an
    unsupervised baseline needs its features."""
    wanted = set(methods) | ({"NoDA"} if set(UNSUPERVISED) & set(methods) else set())
    runs = []
    for seed in seeds:
        for s, t in pairs:
            runs += [Run(m, s, t, None, seed) for m in ("DAN", "DANN") if m in wanted]
            runs += [Run(m, s, t, b, seed) for b in bits for m in ("DAH", "NoDA", "DAH_authors")
                     if m in wanted]
        if "SuH" in wanted:
            runs += [Run("SuH", s, t, b, seed) for s, t in rows for b in bits]
    return runs


def run_name(method, s, t, b, seed=1, overrides="", start=""):
    """``DAH_Ar-Cl_64bits``; seed 1 keeps the plain name (so single-seed results stay valid),
    another seed adds ``_s<seed>``, overrides ``_set<hash>``, a start other than the family's
    default ``_<start>`` (``name_tag``). ``s``, ``t`` are domain tags."""
    return "%s_%s-%s%s%s%s%s" % (method, s, t, "" if b is None else "_%dbits" % b,
                                 "" if seed == 1 else "_s%d" % seed,
                                 "_set" + overrides if overrides else "",
                                 "_" + start if start else "")


def pretrain_name(s, seed=1, overrides="", start=""):
    return "pretrain_%s%s%s%s" % (s, "" if seed == 1 else "_s%d" % seed,
                                  "_set" + overrides if overrides else "",
                                  "_" + start if start else "")


# --- --set overrides -----------------------------------------------------------------------

_SEGMENT = re.compile(r"([A-Za-z_]\w*)(?:\[(\d+)\])?$")
_BOOLS = {"true": True, "false": False, "1": True, "0": False}


class Override:
    """One ``--set [METHOD:]LAYER.FIELD[.FIELD...]=VALUE`` or ``[METHOD:]solver.FIELD=VALUE``.

    LAYER is a layer name with fnmatch wildcards; FIELD a LayerParameter (SolverParameter)
    field, ``name[i]`` for an element of a repeated one. A repeated field without an index
    takes the comma-separated VALUE as its whole list; enums go by name (``MEDIAN``). METHOD
    restricts it to one method's nets (``pretrain`` to the source-only stage, which no
    unprefixed override changes). With a wildcard, a layer lacking a message or element on the
    path is left alone; a literal layer name must have it."""

    def __init__(self, text):
        self.text = text.strip()
        key, sep, value = self.text.partition("=")
        prefix, key = key.split(":", 1) if ":" in key else (None, key)
        prefix = prefix and prefix.strip()
        target, dot, path = key.strip().partition(".")
        if not sep or not dot or not path:
            raise CaffeError("--set %s: expected [METHOD:]LAYER.FIELD=VALUE or solver.FIELD=VALUE"
                             % self.text)
        if prefix is not None and prefix not in TRAINED + OPTIONAL + ("pretrain",):
            raise CaffeError("--set %s: unknown method %r (%s, pretrain)"
                             % (self.text, prefix, ", ".join(TRAINED + OPTIONAL)))
        self.method, self.layer = prefix, None if target == "solver" else target
        self.path = []
        for seg in path.split("."):
            m = _SEGMENT.match(seg.strip())
            if not m:
                raise CaffeError("--set %s: bad field %r (name or name[index])" % (self.text, seg))
            self.path.append((m.group(1), None if m.group(2) is None else int(m.group(2))))
        desc = (caffe_pb2.LayerParameter if self.layer else caffe_pb2.SolverParameter).DESCRIPTOR
        self.values = self._convert(self._field(desc), value.strip())
        self.wildcard = self.layer is not None and any(c in self.layer for c in "*?[")

    def _field(self, desc):
        """The descriptor of the last field, checking the path against the schema."""
        for i, (name, idx) in enumerate(self.path):
            f = desc.fields_by_name.get(name)
            if f is None:
                raise CaffeError("--set %s: %s has no field %s (fields: %s)" % (
                    self.text, desc.name, name, ", ".join(sorted(desc.fields_by_name))))
            last = i == len(self.path) - 1
            if idx is not None and not f.is_repeated:
                raise CaffeError("--set %s: %s is not a repeated field" % (self.text, name))
            if f.message_type is not None:
                if last:
                    raise CaffeError("--set %s: %s is a message; name one of its fields (%s)" % (
                        self.text, name, ", ".join(sorted(f.message_type.fields_by_name))))
                if f.is_repeated and idx is None:
                    raise CaffeError("--set %s: %s is repeated; name an element, %s[0]"
                                     % (self.text, name, name))
                desc = f.message_type
            elif not last:
                raise CaffeError("--set %s: %s is not a message" % (self.text, name))
        return f

    def _convert(self, f, text):
        items = text.split(",") if f.is_repeated and self.path[-1][1] is None else [text]
        out = []
        for x in (i.strip() for i in items):
            try:
                if f.cpp_type == f.CPPTYPE_ENUM:
                    v = f.enum_type.values_by_name.get(x) or f.enum_type.values_by_name.get(x.upper())
                    if v is None:
                        raise ValueError(", ".join(f.enum_type.values_by_name))
                    out.append(v.number)
                elif f.cpp_type == f.CPPTYPE_BOOL:
                    out.append(_BOOLS[x.lower()])
                elif f.cpp_type in (f.CPPTYPE_INT32, f.CPPTYPE_INT64, f.CPPTYPE_UINT32,
                                    f.CPPTYPE_UINT64):
                    out.append(int(x) if re.fullmatch(r"[-+]?\d+", x) else int(_integral(x)))
                elif f.cpp_type in (f.CPPTYPE_FLOAT, f.CPPTYPE_DOUBLE):
                    out.append(float(x))
                else:
                    out.append(x)
            except (ValueError, KeyError) as exc:
                raise CaffeError("--set %s: %r is not a value of %s%s" % (
                    self.text, x, f.name, " (%s)" % exc if f.cpp_type == f.CPPTYPE_ENUM else "")) from None
        return out

    def apply(self, sp, method):
        """Change ``sp`` (a SolverParameter with its net_param) of ``method`` ("pretrain" for
        the source-only stage); returns how many layers (or 1 for the solver) changed."""
        if self.method != method and (self.method is not None or method == "pretrain"):
            return 0
        if self.layer is None:
            return int(self._assign(sp, "solver", strict=True))
        return sum(self._assign(lp, "layer %s" % lp.name, strict=not self.wildcard)
                   for lp in sp.net_param.layer if fnmatch.fnmatchcase(lp.name, self.layer))

    def _assign(self, msg, where, strict):
        for name, idx in self.path[:-1]:
            f = msg.DESCRIPTOR.fields_by_name[name]
            if f.is_repeated:
                if idx >= len(getattr(msg, name)):
                    if strict:
                        raise CaffeError("--set %s: %s has no %s[%d]" % (self.text, where, name, idx))
                    return False
                msg = getattr(msg, name)[idx]
            elif not strict and not msg.HasField(name):
                return False
            else:
                msg = getattr(msg, name)
        name, idx = self.path[-1]
        if not msg.DESCRIPTOR.fields_by_name[name].is_repeated:
            setattr(msg, name, self.values[0])
        elif idx is None:
            del getattr(msg, name)[:]
            getattr(msg, name).extend(self.values)
        elif idx < len(getattr(msg, name)):
            getattr(msg, name)[idx] = self.values[0]
        elif strict:
            raise CaffeError("--set %s: %s has no %s[%d]" % (self.text, where, name, idx))
        else:
            return False
        return True


def _integral(x):
    v = float(x)
    if not v.is_integer():
        raise ValueError(x)
    return v


def overrides_hash(texts):
    """A short stable name for a list of overrides (order kept: later ones win)."""
    return hashlib.sha1("\n".join(texts).encode("utf-8")).hexdigest()[:8] if texts else ""


def apply_overrides(overrides, solvers):
    """Apply every override to ``solvers`` ({key: (method, SolverParameter)}); returns
    {method: [texts of the overrides that changed its nets]}. An override that changes
    nothing is an error, before any training."""
    changed = {}
    for o in overrides:
        hits = {}
        for method, sp in solvers.values():
            n = o.apply(sp, method)
            if n:
                hits[method] = max(hits.get(method, 0), n)
                if o.text not in changed.setdefault(method, []):
                    changed[method].append(o.text)
        if not hits:
            planned = sorted({m for m, _ in solvers.values()})
            raise CaffeError("--set %s matches no %s of the planned nets (%s)" % (
                o.text, "layer" if o.layer else "solver", ", ".join(planned)))
        log.info("--set %s changes %s", o.text, ", ".join(
            m if o.layer is None else "%s (%d layer%s)" % (m, n, "" if n == 1 else "s")
            for m, n in sorted(hits.items())))
    return changed


# --- where trainings start -----------------------------------------------------------------

class Start(namedtuple("Start", "pretrain init as_trunk plain")):
    """Where the trainings start: ``pretrain`` iterations of a source-only NoDA stage (0:
    none); ``init`` the .caffemodel the first stage starts from (the pretraining when it runs,
    else every method; None: fresh fillers), ``as_trunk`` when only its conv1–fc7 are taken
    (the heads start afresh); ``plain`` for the family's default start (and ``--weights``
    alone), whose runs keep the plain names."""
    __slots__ = ()


def is_toyhome(family):
    """The shipped toyhome family, by name or as the path of its folder."""
    if family == "toyhome":
        return True
    shipped = os.path.join(experiments.prototxt_dir(), "toyhome")
    return os.path.isdir(family) and os.path.samefile(family, shipped)


def default_start(family):
    """The start of a family's default protocol: for toyhome the generic trunk
    (``tools/make_trunk``, the embedded stand-in for ImageNet VGG-F), else fresh fillers."""
    return experiments.default_trunk() if is_toyhome(family) else None


def start_protocol(args, family):
    """Where every training starts, decided here alone (a ``Start``).

    The toyhome family (the embedded data, or ``--family toyhome`` on a --root) with no start
    option: every method of every pair from the generic trunk's conv1–fc7, as the paper's
    methods all start from ImageNet VGG-F; other families: fresh fillers. ``--trunk FILE``:
    FILE's conv1–fc7 instead, ``--trunk none`` (or ''): fresh fillers; ``--weights FILE``: the
    same from a whole pretrained model (VGG_CNN_F.caffemodel on Office-Home; its 1000-way
    fc8 would not fit the classifier), with the plain run names. ``--pretrain N``: first a source-only NoDA stage
    of N iterations (from --trunk / --weights when given, else from fresh fillers: the
    embedded protocol before the generic trunk), and every method of that source starts
    from its conv1–fc7."""
    pre = args.pretrain or 0
    if args.weights:  # the paper's fine-tuning: trunk only, so ImageNet's 1000-way fc8 never loads
        return Start(pre, args.weights, True, args.pretrain is None)
    default = default_start(family)
    if args.trunk is not None:
        init = None if args.trunk.strip().lower() in ("", "none") else args.trunk
        return Start(pre, init, init is not None,
                     args.pretrain is None and _same_file(init, default))
    if args.pretrain is not None:
        return Start(pre, None, False, pre == 0 and default is None)
    return Start(0, default, default is not None, True)


def _same_file(a, b):
    if a is None or b is None:
        return a is b
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def file_digest(path):
    """The first 8 hex digits of the SHA-1 of a file's bytes."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:8]


def start_identities(start, family):
    """(what the first stage starts from, what the methods' runs start from): ``scratch``,
    ``trunk:<digest>`` or ``weights:<digest>`` of the file's bytes, and for runs after a
    source-only stage ``pretrain<N>`` (+ what the stage started from). Recorded with every
    model and compared before one is reused, so that other start weights retrain it."""
    if start.init is None:
        first = "scratch"
    elif not os.path.isfile(start.init):
        if _same_file(start.init, default_start(family)):
            raise CaffeError("the generic trunk %s is missing: make it with tools/make_trunk, "
                             "or start elsewhere (--trunk FILE, --trunk none, --pretrain 300)"
                             % start.init)
        raise CaffeError("%s: no such file (the start weights)" % start.init)
    else:
        first = "%s:%s" % ("trunk" if start.as_trunk else "weights", file_digest(start.init))
    if not start.pretrain:
        return first, first
    return first, "pretrain%d%s" % (start.pretrain, "" if start.init is None else "+" + first)


def name_tag(identity):
    """A start identity as run names carry it: ``pretrain300+trunk:1a2b3c4d`` ->
    ``pre300_trunk1a2b3c4d``."""
    return identity.replace("pretrain", "pre").replace(":", "").replace("+", "_")


def _recorded_start(rec):
    """The start identity of a recorded run; records from before identities were kept count
    as ``scratch`` when they started from fresh fillers, else as unknown (None)."""
    if "start" in rec:
        return rec["start"]
    return "scratch" if "start_weights" in rec and rec["start_weights"] is None else None


def choose_family(args, root, domains):
    """The net family: ``--family``; on the embedded data toyhome; with ``--root`` alone
    office_home when every domain found is one of Office-Home's (Art, Clipart, Product,
    Real World; case and spaces ignored), else toyhome. The choice is logged with its reason."""
    if args.family:
        return args.family
    if not args.root:
        return "toyhome"
    office = {lists_mod.domain_key(d) for d in SHORT.values()}
    if {lists_mod.domain_key(d) for d in domains} <= office:
        log.info("Net family office_home: the domains of %s (%s) are Office-Home's "
                 "(--family toyhome or DIR to choose another)", root, ", ".join(domains))
        return "office_home"
    log.info("Net family toyhome (the generic trunk, the embedded protocol): the domains of %s "
             "(%s) are not Office-Home's (--family office_home or DIR to choose another)",
             root, ", ".join(domains))
    return "toyhome"


# --- progress and logs ---------------------------------------------------------------------

class Progress:
    """Training progress with an ETA over all the planned iterations, of trainings that may
    run side by side (``running``: the iterations done of each under way). The rate is
    measured from the WARMUP_ITERS-th iteration on: the first iterations compile the
    kernels, and counting them made the first ETA read hours for a job of minutes."""

    def __init__(self, total_iters, warmup=WARMUP_ITERS):
        self.total, self.done, self.warmup = total_iters, 0, warmup
        self.running = {}
        self._mark, self._last = None, 0.0   # _mark: (time, iterations) at the warm-up's end

    def eta(self, done, now):
        """Seconds left after ``done`` iterations, None until the rate is measured."""
        if self._mark is None or done <= self._mark[1]:
            return None
        rate = (done - self._mark[1]) / max(now - self._mark[0], 1e-9)
        return (self.total - done) / rate

    def tick(self, label, it, max_iter, loss):
        now = time.time()
        self.running[label] = it
        done = self.done + sum(self.running.values())
        if self._mark is None and done >= self.warmup:
            self._mark = (now, done)
        if it == max_iter or now - self._last > 5:
            eta = self.eta(done, now)
            log.info("[%s] iteration %d/%d, loss %.4g | all runs %d/%d iterations, ETA %s",
                     label, it, max_iter, loss, done, self.total,
                     "after warm-up" if eta is None else _hms(eta), extra={"progress": True})
            self._last = now

    def finish(self, label, iters):
        self.running.pop(label, None)
        self.done += iters


def _hms(s):
    s = int(round(s))
    return "%d:%02d:%02d" % (s // 3600, s % 3600 // 60, s % 60)


class _Console(logging.Filter):
    """During a training the console shows warnings and the progress lines only (all with
    --verbose), and never below the --log_level."""

    def __init__(self, level, verbose):
        super().__init__()
        self.level, self.verbose = level, verbose

    def filter(self, record):
        return record.levelno >= self.level and (self.verbose or record.levelno >= logging.WARNING
                                                 or getattr(record, "progress", False))


@contextlib.contextmanager
def solver_log(path, verbose=False):
    """Keep the solver's log of one training at INFO in ``path``, in glog's format (the file
    ``tools/parse_log`` and ``tools/plot_log`` read), whatever the console shows."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(GlogFormatter())
    handler.addFilter(lambda record: not getattr(record, "progress", False))
    level = log.getEffectiveLevel()
    console, consoles = _Console(level, verbose), list(log.handlers)
    for h in consoles:
        h.addFilter(console)
    log.addHandler(handler)
    log.setLevel(min(level, logging.INFO))
    try:
        yield path
    finally:
        log.removeHandler(handler)
        handler.close()
        for h in consoles:
            h.removeFilter(console)
        log.setLevel(level)


def display_every(max_iter):
    """The solver's display interval for the kept log: every LOG_EVERY iterations, more often
    in short runs so that a log always has a few rows."""
    return max(1, min(LOG_EVERY, max_iter // LOG_EVERY))


# --- trainings: in this process or in worker processes ---------------------------------------

Job = namedtuple("Job", "name sp weights log verbose")   # one training, picklable for a worker


def train_job(job, tick):
    """One training, the same code in this process (--jobs 1) and in a worker: seeded by its
    solver's random_seed, its solver log kept in ``job.log``, ``tick(iter, max_iter, loss)``
    after every iteration; returns the final model's path. One BLAS / Numba thread unless
    the user set a count (a worker's environment says 1): the model is then the same bytes in
    either place, where BLAS's bits depend on its thread count."""
    backend.set_random_seed(job.sp.random_seed)
    with solver_log(job.log, job.verbose), \
            contextlib.nullcontext() if threads.user_set() else threads.fixed_threads(1):
        return experiments.train(job.sp, weights=job.weights, progress=tick)


def parse_jobs(text):
    """``--jobs``: a number of worker processes; 0 or ``auto`` (returned as 0) for as many
    as this process may use cores."""
    t = str(text).strip().lower()
    if t in ("0", "auto"):
        return 0
    if not re.fullmatch(r"\d+", t):
        raise CaffeError("--jobs %s: a number of worker processes, or auto" % text)
    return int(t)


def worker_count(jobs, pending):
    """How many trainings run at once: ``jobs`` (0: the cores this process may use), never
    more than are pending, at least 1."""
    if not jobs:
        jobs = threads.usable_cores()   # affinity mask and cgroup CPU quota
    return max(1, min(jobs, pending))


def _worker(tasks, results, log_level, gpu, parent):
    """A worker process: trains the Jobs it takes from ``tasks`` one at a time (None: stop),
    reporting every iteration and the end on ``results``. Ctrl-C is the parent's to handle
    (it ends the workers); a worker whose parent has gone stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    level = setup_logging(log_level).level
    log.setLevel(max(level, logging.WARNING))   # the parent has said which device
    select_device(gpu)
    log.setLevel(level)
    while True:
        try:
            job = tasks.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                return
            continue
        if job is None:
            return

        def tick(it, max_iter, loss, name=job.name):
            if os.getppid() != parent:
                raise SystemExit(1)
            results.put(("tick", name, it, max_iter, loss))
        t0 = time.time()
        try:
            model = train_job(job, tick)
        except Exception as exc:   # the parent stops the command with it
            results.put(("failed", job.name, str(exc) if isinstance(exc, CaffeError)
                         else "%s: %s" % (type(exc).__name__, exc)))
            return
        results.put(("done", job.name, model, time.time() - t0))


THREAD_VARS = threads.THREAD_VARS


@contextlib.contextmanager
def _spawning():
    """This process's state while it starts workers ("spawn": each a fresh interpreter): one
    BLAS / Numba thread each unless the user set these variables, as tools/reproduce does for
    itself (numpy and Numba read them at import, so the child's environment must carry them),
    and a ``__main__`` run by path hidden, as "spawn" would run it again in every child and
    the tools/ scripts have no main guard."""
    saved = {v: os.environ.get(v) for v in THREAD_VARS + (threads.MARKER,)}
    if not threads.user_set():   # import minicaffe's defaults are not the user's choice
        threads.set_for_children(os.environ, 1)
    main = sys.modules.get("__main__")
    path = None
    if getattr(getattr(main, "__spec__", None), "name", None) is None:
        path = getattr(main, "__file__", None)
        if path is not None:
            del main.__file__
    try:
        yield
    finally:
        if path is not None:
            main.__file__ = path
        for v, x in saved.items():
            if x is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = x


class Trainings:
    """The trainings of one command, in this process (``workers`` 1) or in that many worker
    processes, each training one at a time single-threaded; a training's model is the same
    bytes either way (the same solver, seed and code, ``train_job``). Used as a context
    manager: leaving it (Ctrl-C, an error) ends the workers."""

    def __init__(self, jobs, workers, progress, log_level="INFO", gpu=None):
        self.jobs, self.progress = jobs, progress   # jobs: {key: Job}
        self.workers = workers if workers > 1 else 0
        self.log_level, self.gpu = log_level, gpu
        self.procs = []

    def __enter__(self):
        if self.workers:
            ctx = multiprocessing.get_context("spawn")
            self._tasks, self._results = ctx.Queue(), ctx.Queue()
            with _spawning():
                for i in range(self.workers):
                    p = ctx.Process(target=_worker, name="reproduce-worker-%d" % (i + 1),
                                    args=(self._tasks, self._results, self.log_level, self.gpu,
                                          os.getpid()), daemon=True)
                    p.start()
                    self.procs.append(p)
        return self

    def __exit__(self, exc_type, *_):
        if not self.procs:
            return
        if exc_type is None:
            for _ in self.procs:
                self._tasks.put(None)
            for p in self.procs:
                p.join(10)
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join()
        self._tasks.cancel_join_thread()

    def run(self, order, deps):
        """Yield ``(key, (model, seconds) or None)`` for every key of ``order``, in this
        process: a key without a Job at once (its model is there), one with a Job when its
        training has ended. A key's training starts only after ``deps[key]`` was yielded, so
        the caller has made what it starts from (a pretraining's trunk)."""
        if not self.workers:
            for key in order:
                yield key, self._train_here(self.jobs[key]) if key in self.jobs else None
            return
        waiting = [k for k in order if k in self.jobs]
        ready = collections.deque((k, None) for k in order if k not in self.jobs)
        handed, running = set(), {}   # running: job name -> key

        def hand_out():
            for k in list(waiting):
                if len(running) >= self.workers:
                    break
                if deps.get(k) is None or deps[k] in handed:
                    waiting.remove(k)
                    running[self.jobs[k].name] = k
                    self._tasks.put(self.jobs[k])

        while waiting or running or ready:
            hand_out()
            if not ready and not running:
                raise RuntimeError("trainings wait on keys never handed: %s" % waiting)
            self._receive(running, ready, block=not ready)
            # a freed worker starts its next training before the caller evaluates this one
            # (and draws its figures): 6 s of the main job's 2 cores were idle there
            hand_out()
            if ready:
                key, trained = ready.popleft()
                handed.add(key)
                yield key, trained

    def _train_here(self, job):
        t0 = time.time()
        model = train_job(job, lambda it, mx, loss: self.progress.tick(job.name, it, mx, loss))
        self.progress.finish(job.name, job.sp.max_iter)
        return model, time.time() - t0

    def _receive(self, running, ready, block):
        """Handle the workers' messages: every one waiting, and with ``block`` at least one."""
        while True:
            try:
                msg = self._results.get(timeout=1.0) if block else self._results.get_nowait()
            except queue.Empty:
                if not block:
                    return
                dead = [p for p in self.procs if not p.is_alive()]
                if dead:
                    raise CaffeError("a worker process ended (exit code %s) while training %s"
                                     % (dead[0].exitcode, ", ".join(sorted(running)))) from None
                continue
            kind, name = msg[:2]
            if kind == "tick":
                self.progress.tick(*msg[1:])
            elif kind == "done":
                key = running.pop(name)
                self.progress.finish(name, self.jobs[key].sp.max_iter)
                ready.append((key, msg[2:]))
            else:
                raise CaffeError("training %s failed: %s" % (name, msg[2]))
            block = False


# --- the command ---------------------------------------------------------------------------

def reproduce(args=None, **options):
    """Train every method and write the tables and figures (the module's docstring): ``args``
    as ``build_parser()`` parses tools/reproduce's command line, or the same options as keywords
    (``reproduce(pairs="Ar:Cl", bits="64", out="results")``, the rest at their defaults).
    Returns 0."""
    if args is not None and options:
        raise TypeError("reproduce() takes parsed args or keyword options, not both")
    if args is None:
        args = build_parser().parse_args([])
        for k, v in options.items():
            if not hasattr(args, k):
                raise TypeError("reproduce() got an unknown option %r" % k)
            setattr(args, k, v)
    setup_logging(args.log_level)
    select_device(args.gpu)
    return Reproduction(args).run()


class Reproduction:
    """One reproduce command, in the order ``run`` takes it: the data and the plan (every
    training's solver and name, ``__init__``), the trainings with each run's evaluation and
    figures as it ends (``train``), the unsupervised baselines on NoDA's features
    (``baselines``) and the tables (``tables``). Keys: a ``Run`` for a method's training,
    ``(source, seed)`` for a source pretraining."""

    def __init__(self, args):
        self.args = args
        self._data()
        self._plan()
        self._results()

    # the data: options, domains, pairs, lists

    def _data(self):
        args = self.args
        self.bits = [int(b) for b in str(args.bits).split(",") if b]
        self.seeds = ([int(x) for x in str(args.seeds).split(",") if x.strip()] if args.seeds
                      else [args.seed])
        self.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        bad = [m for m in self.methods if m not in KNOWN_METHODS]
        if bad:
            raise CaffeError("unknown method(s) %s (known: %s)"
                             % (", ".join(bad), ", ".join(KNOWN_METHODS)))
        self.overrides = [Override(t) for t in args.set]
        self.jobs = parse_jobs(args.jobs)
        self.out = os.path.abspath(args.out)
        if args.root:
            root = os.path.abspath(args.root)
            found = lists_mod.scan(root)
            lists_mod.check_layout(root, found)
            domains = found[0]
            self.pairs = parse_pairs(args.pairs, domains, root)
        else:
            domains = list(toyhome.DOMAINS)
            self.pairs = parse_pairs(args.pairs, domains, "ToyHome")
            log.info("Preparing the embedded ToyHome data (generated once, then cached)")
            root = toyhome.ensure()
            found = lists_mod.scan(root)
        self.root, self.found, self.domains = root, found, domains
        self.family = choose_family(args, root, domains)
        self.start = start_protocol(args, self.family)
        self.first_id, self.run_id = start_identities(self.start, self.family)
        self.num_classes = len(found[1])
        self.tags = {d: domain_tag(d) for d in domains}
        if len(set(self.tags.values())) < len(self.tags):
            raise CaffeError("%s: domains %s have the same file-safe name"
                             % (root, ", ".join(domains)))
        self.rows = map_rows(self.pairs, domains)
        self.lists_dir, self.rootp = os.path.join(self.out, "lists"), root.rstrip("/") + "/"
        self.list_of = {d: os.path.join(self.lists_dir, lists_mod.list_name(d)) for d in domains}

    def configure(self, method, s, t, b, seed, iters):
        """The solver of one training (``experiments.configure``), logging a few rows."""
        sp = experiments.configure(
            self.family, method, source_list=self.list_of[s], target_list=self.list_of[t],
            root=self.rootp, num_classes=self.num_classes, bits=b, max_iter=iters, seed=seed,
            per_class=self.args.per_class, snapshot_prefix="")
        sp.display = display_every(sp.max_iter)
        return sp

    # the plan: solvers, names, snapshot prefixes, start weights

    def _plan(self):
        start, seeds, bits = self.start, self.seeds, self.bits
        self.runs = runs = plan_runs(self.pairs, self.rows, bits, self.methods, seeds)
        self.solvers = {r: (r.method, self.configure(*r, self.args.iters)) for r in runs}
        self.pre_keys = [(s, seed) for seed in seeds for s in self.domains
                         if any(r.source == s and r.seed == seed for r in runs)
                         ] if start.pretrain else []
        for s, seed in self.pre_keys:  # the source-only NoDA net
            self.solvers[(s, seed)] = ("pretrain", self.configure("NoDA", s, s, bits[0], seed,
                                                                  start.pretrain))
        changed = apply_overrides(self.overrides, self.solvers)
        k = max(lp.domain_data_param.per_class for _, sp in self.solvers.values()
                for lp in sp.net_param.layer if lp.type == "DomainData")
        lists_mod.check_layout(self.root, self.found,
                               [d for d in self.domains if any(d in p for p in self.pairs)], k)

        # a method's runs start from the pretraining, so its overrides count in their names too
        pre_set = changed.get("pretrain", [])
        self.changed = {m: changed.get(m, []) if m == "pretrain" else pre_set + changed.get(m, [])
                        for m in TRAINED + OPTIONAL + ("pretrain",)}
        self.hashes = hashes = {m: overrides_hash(texts) for m, texts in self.changed.items()}
        tags = self.tags
        self.start_tag = "" if start.plain else name_tag(self.run_id)
        self.names = {r: run_name(r.method, tags[r.source], tags[r.target], r.bits, r.seed,
                                  hashes.get(r.method, ""), self.start_tag) for r in runs}
        self.names.update({(s, seed): pretrain_name(
            tags[s], seed, hashes.get("pretrain", ""),
            "" if start.init is None else name_tag(self.first_id)) for s, seed in self.pre_keys})
        self.identity = {key: self.first_id if key in self.pre_keys else self.run_id
                         for key in self.names}
        self.models_dir = os.path.join(self.out, "models")
        self.logs_dir = os.path.join(self.out, "logs")
        for key, (_, sp) in self.solvers.items():
            sp.snapshot_prefix = os.path.join(self.models_dir, self.names[key])

        self.init = start.init
        if start.as_trunk:   # its conv1-fc7, named by the content of the file they come from
            self.init = os.path.join(self.models_dir, "start_trunk_%s.caffemodel"
                                     % self.first_id.split(":")[1])
            if not os.path.exists(self.init):
                os.makedirs(self.models_dir, exist_ok=True)
                experiments.trunk_weights(start.init, self.family, self.init)

    def start_of(self, key):
        """The weights a training starts from: its source's pretrained trunk, or ``init``."""
        if key in self.pre_keys or not self.pre_keys:
            return self.init
        return self.trunk_of((key.source, key.seed))

    def trunk_of(self, key):
        """A pretraining's conv1-fc7, which its source's runs start from."""
        return self.solvers[key][1].snapshot_prefix + "_trunk.caffemodel"

    def final(self, key):
        sp = self.solvers[key][1]
        return sp.snapshot_prefix + "_iter_%d.caffemodel" % sp.max_iter

    # results.json: every training's record and numbers, kept across commands

    def _results(self):
        lists_mod.write_lists(self.root, self.lists_dir, self.domains)
        self.results_path = os.path.join(self.out, "results.json")
        self.results = results = (json.load(open(self.results_path))
                                  if os.path.exists(self.results_path) else {})
        argv = getattr(self.args, "argv", None)   # the command line, when it ran as a command
        self.command = "" if argv is None else "tools/reproduce " + shlex.join(argv)
        results["command"] = self.command
        results.setdefault("runs", {})
        self.pre_records = results.setdefault("pretrain", {}) if self.pre_keys else {}
        self.evaluated = set()   # the runs evaluated by this command: the baselines refit these

    def save(self):
        text = json.dumps(self.results, indent=1, sort_keys=True)
        protoio.atomic_write(self.results_path, lambda f: f.write(text.encode()), CaffeError)

    def records(self, key):
        """The dict holding ``key``'s record, and its name there."""
        if key in self.pre_keys:
            return self.pre_records, self.names[key][len("pretrain_"):]
        return self.results["runs"], self.names[key]

    def reusable(self, key):
        """A model in --out is reused when its record says it started from the same weights."""
        model = self.final(key)
        if not os.path.exists(model):
            return False
        where, name = self.records(key)
        was = _recorded_start(where.get(name, {}))
        if was == self.identity[key]:
            return True
        log.warning("%s was trained from %s, not %s: training it again", model,
                    was or "start weights not recorded in %s" % self.results_path,
                    self.identity[key])
        return False

    # the trainings, each run evaluated (and its pair's figures drawn) as it ends

    def train(self):
        runs, pre_keys, names = self.runs, self.pre_keys, self.names
        order = list(pre_keys) + runs
        deps = {r: (r.source, r.seed) for r in runs} if pre_keys else {}
        todo = {key for key in order if not self.reusable(key)}
        todo |= {r for r in runs if deps.get(r) in todo}   # its start is trained again
        os.makedirs(self.models_dir, exist_ok=True)
        self.train_jobs = {}
        for key in order:
            if key in todo:
                sp = self.solvers[key][1]
                protoio.write_proto_text(sp.snapshot_prefix + "_solver.prototxt", sp)
                self.train_jobs[key] = Job(names[key], sp, self.start_of(key),
                                           os.path.join(self.logs_dir, names[key] + ".log"),
                                           self.args.verbose)
        progress = Progress(sum(self.solvers[key][1].max_iter for key in todo))
        workers = worker_count(self.jobs, len(todo))
        n_pre = sum(1 for key in todo if key in pre_keys)
        log.info("%d trainings planned over %d seed(s) (%d already done)%s, %d iterations to "
                 "run%s", len(runs), len(self.seeds), len(runs) - (len(todo) - n_pre),
                 ", after %d source pretrainings of %d iterations" % (n_pre, self.start.pretrain)
                 if n_pre else "", progress.total,
                 " in %d worker processes" % workers if workers > 1 else "")

        draw = figures_wanted(self.args, self.methods)
        groups = {}   # (source, target, bits) -> {first seed's run: None until handled, then fresh}
        for r in runs:
            if draw and r.method in FIGURE_METHODS and r.seed == self.seeds[0]:
                groups.setdefault((r.source, r.target, r.bits), {})[r] = None
        self.groups = {g: runs_ for g, runs_ in groups.items()
                       if {"DAH", "NoDA"} <= {r.method for r in runs_}}

        with Trainings(self.train_jobs, workers, progress, self.args.log_level,
                       self.args.gpu) as trainings:
            for key, trained in trainings.run(order, deps):
                (self.pretrained if key in pre_keys else self.trained_run)(key, trained)

    def train_record(self, key, trained):
        method, sp = self.solvers[key]
        job = self.train_jobs[key]
        return {"command": self.command, "seed": sp.random_seed,
                "overrides": self.changed.get(method, []),
                "train_seconds": round(trained[1], 1), "start_weights": job.weights,
                "start": self.identity[key], "solver": sp.snapshot_prefix + "_solver.prototxt",
                "log": job.log}

    def pretrained(self, key, trained):
        """A source pretraining has ended (or was there): its record and its trunk."""
        where, name = self.records(key)
        if trained:
            where[name] = self.train_record(key, trained)
        where.setdefault(name, {}).update(iterations=self.start.pretrain, model=self.final(key))
        trunk = self.trunk_of(key)
        if trained or not os.path.exists(trunk):
            experiments.trunk_weights(self.final(key), self.family, trunk)
        self.save()

    def features_of(self, r):
        """Where a run's features are kept: NoDA's for the baselines, the figures' runs'."""
        if r.method == "NoDA" or (r.method in FIGURE_METHODS and r.seed == self.seeds[0]):
            return os.path.join(self.out, "features", self.names[r])
        return None

    def trained_run(self, r, trained):
        """A method's training has ended (or was there): its record, its numbers unless they
        are there, and its pair's figures once the pair's last run is in."""
        m, s, t, b, seed = r
        name, sp = self.names[r], self.solvers[r][1]
        runs = self.results["runs"]
        if trained:
            runs[name] = self.train_record(r, trained)
            self.save()
        rec = runs.setdefault(name, {})
        rec.update({"method": m, "source": s, "target": t, "bits": b, "seed": seed})
        fresh = bool(trained)
        if "evaluated" not in rec or self.args.reevaluate:
            rec.update(evaluate_run(self.family, m, b, self.final(r), sp.net_param,
                                    self.list_of[s], self.list_of[t], self.rootp,
                                    self.num_classes, self.features_of(r)), evaluated=True)
            log.info("%s: %s", name, ", ".join("%s %.4f" % (k, rec[k]) for k in
                                                ("accuracy", "map_a", "map_b") if k in rec))
            self.save()
            self.evaluated.add(name)
            fresh = True
        group = self.groups.get((s, t, b), {})
        if r in group:
            group[r] = fresh
            if None not in group.values():
                try:
                    self.pair_figures(s, t, b, group, any(group.values()))
                except (CaffeError, ValueError, OSError) as exc:   # the numbers are kept
                    log.warning("figures of %s -> %s, %d bits failed: %s", s, t, b, exc)

    def pair_figures(self, s, t, b, group, fresh):
        """The figures of one pair and bit length (``minicaffe.dah.figures.pair_figures``)
        from the first seed's runs, redrawn when one of them is new."""
        dah = Run("DAH", s, t, b, self.seeds[0])
        where = os.path.join(self.out, "figures", self.names[dah][len("DAH_"):])
        if not fresh and all(os.path.exists(os.path.join(where, f)) for f in FIGURES):
            return
        lists = {"source": self.list_of[s], "target": self.list_of[t]}
        transform = self.solvers[dah][1].net_param
        feats = {r.method: hash_features(self.family, b, self.final(r), transform, lists,
                                         self.rootp, self.num_classes, self.features_of(r),
                                         reuse=True)
                 for r in sorted(group, key=lambda r: FIGURE_METHODS.index(r.method))}
        weights, trunk = self.start_of(dah), None
        if weights is not None:   # fc7 before adaptation: the start's conv1-fc7
            keep = os.path.join(self.out, "features", "start_%s_%s-%s" % (
                file_digest(weights), self.tags[s], self.tags[t]))
            trunk = hash_features(self.family, b, weights, transform, lists, self.rootp,
                                  self.num_classes, keep, blobs=("fc7",), reuse=True)
        logs = {r.method: os.path.join(self.logs_dir, self.names[r] + ".log") for r in group}
        dah_figures.pair_figures(where, feats, trunk=trunk, lists=lists, root=self.rootp,
                             logs={m: p for m, p in logs.items() if os.path.exists(p)} or None,
                             class_names=self.found[1], source_name=s, target_name=t)
        log.info("Figures of %s -> %s, %d bits: %s", s, t, b, where)

    # the unsupervised baselines, on the NoDA model's fc7 features of each mAP row

    def baselines(self):
        runs = self.results["runs"]
        for seed in self.seeds:
            for s, t in self.rows:
                for b in self.bits:
                    for m in UNSUPERVISED:
                        if m not in self.methods:
                            continue
                        noda = self.names[Run("NoDA", s, t, b, seed)]
                        name = m + noda[len("NoDA"):]
                        if runs.get(name, {}).get("evaluated") and \
                                not self.args.reevaluate and noda not in self.evaluated:
                            continue
                        runs[name] = dict(self.fit_baseline(m, t, b, seed, noda), method=m,
                                          source=s, target=t, bits=b, seed=seed,
                                          command=self.command, features=noda, evaluated=True)
                        log.info("%s: map_a %.4f, map_b %.4f", name, runs[name]["map_a"],
                                 runs[name]["map_b"])
                        self.save()

    def fit_baseline(self, m, t, b, seed, noda):
        """Baseline ``m`` fitted on the target's features of run ``noda``, its codes
        evaluated as the hashing nets' are."""
        feats = os.path.join(self.out, "features", noda)
        xs, xt, ls, lt = (np.load("%s_%s.npy" % (feats, w)) for w in FEATURES)
        t0 = time.time()
        log.info("Fitting %s (%d bits, seed %d) on the %s features", m, b, seed, t)
        model = BASELINES[m](xt, b, seed=seed)
        ev = experiments.evaluate_hashing(model.encode(xs).astype(np.float32), ls,
                                          model.encode(xt).astype(np.float32), lt,
                                          self.num_classes, with_accuracy=False)
        return dict(_numbers(ev), fit_seconds=round(time.time() - t0, 1))

    def tables(self):
        table = Tables(self.results, self.pairs, self.rows, self.bits, self.methods, self.seeds,
                       self.tags, self.hashes, self.start_tag)
        self.results["comparison"] = table.comparison()
        self.save()
        table.write(self.out, self.command)
        table.print_summary()

    def run(self):
        """Train, fit the baselines, write the tables; returns 0."""
        self.train()
        self.baselines()
        self.tables()
        return 0


def figures_wanted(args, methods):
    """Whether to draw each pair's figures: DAH and NoDA planned, no --no_figures, and
    matplotlib there (else one warning line: the precision-recall PNGs need it too)."""
    if importlib.util.find_spec("matplotlib") is None:
        log.warning("figures skipped: pip install 'minicaffe[plot]'")
        return False
    return not args.no_figures and {"DAH", "NoDA"} <= set(methods)


def hash_features(family, bits, weights, transform_from, lists, root, num_classes, keep=None,
                  blobs=("fc7", "code"), reuse=False):
    """``blobs`` of the family's hash deploy net with ``weights`` over each list of ``lists``
    ({domain: list file}), as ``{domain: {blob: (N × D), "label": (N,)}}`` (pair_figures'
    shape). ``keep``: a path prefix where they are written as ``<keep>_<domain>_<blob>.npy``
    (and ``_labels``), and with ``reuse`` read back from when all are there."""
    what = tuple(blobs) + ("labels",)
    path = lambda dom, w: "%s_%s_%s.npy" % (keep, dom, w)  # noqa: E731
    if keep and reuse and all(os.path.exists(path(d, w)) for d in lists for w in what):
        return {d: {("label" if w == "labels" else w): np.load(path(d, w)) for w in what}
                for d in lists}
    dep = _deploy_param(experiments.family_file(family, "hash_deploy.prototxt"), bits,
                        num_classes)
    feats = {}
    for dom, list_file in lists.items():
        f, labels = experiments.extract(dep, weights, list_file, root, list(blobs),
                                        transform_from)
        feats[dom] = dict(f, label=labels)
        if keep:
            os.makedirs(os.path.dirname(keep), exist_ok=True)
            for w in what:
                np.save(path(dom, w), labels if w == "labels" else f[w])
    return feats


def evaluate_run(family, method, bits, model, transform_from, source_list, target_list, root,
                 num_classes, features=None):
    """The numbers of one trained model (dah_spec §4): softmax accuracy for DAN/DANN; eq. 6
    accuracy, mAP A/B and their PR curves for the hashing nets. ``features``: a path prefix
    where its fc7 features, codes and labels are kept (the unsupervised baselines and the
    figures read them)."""
    if method in ("DAN", "DANN"):
        dep = _deploy_param(experiments.family_file(family, "cls_deploy.prototxt"), bits,
                            num_classes)
        ft, lt = experiments.extract(dep, model, target_list, root, ["prob"], transform_from)
        return {"accuracy": experiments.evaluate_classifier(ft["prob"], lt)}
    f = hash_features(family, bits, model, transform_from,
                      {"source": source_list, "target": target_list}, root, num_classes, features)
    return _numbers(experiments.evaluate_hashing(f["source"]["code"], f["source"]["label"],
                                                 f["target"]["code"], f["target"]["label"],
                                                 num_classes))


def _numbers(ev):
    """evaluate_hashing's result for results.json (no NaN: a PR point without items is -1)."""
    out = {k: float(ev[k]) for k in ("accuracy", "map_a", "map_b") if k in ev}
    out.update({k: [np.nan_to_num(x, nan=-1).tolist() for x in ev[k]] for k in ("pr_a", "pr_b")})
    return out


def _deploy_param(path, bits, num_classes):
    p = protoio.read_net_param(path)
    for lp in p.layer:
        if lp.name == "fc8_hash" and bits:
            lp.inner_product_param.num_output = bits
        elif lp.name == "fc8" and lp.type == "InnerProduct":
            lp.inner_product_param.num_output = num_classes
    return p


# --- tables --------------------------------------------------------------------------------

def _fmt(x, pct=False):
    if x is None:
        return "-"
    return "%.2f" % (100 * x) if pct else "%.3f" % x


def _fmt_seeds(values, pct=False):
    """mean ± sample std over seeds; the plain value for one seed; "-" for none."""
    if not values:
        return "-"
    if len(values) == 1:
        return _fmt(values[0], pct)
    mean, std = mean_std(values)
    return "%s ± %s" % (_fmt(mean, pct), _fmt(std, pct))


def _md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _csv(path, header, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.write(",".join(header) + "\n")
        for r in rows:
            f.write(",".join(str(x).replace(",", ";") for x in r) + "\n")


class Tables:
    """The tables, figures and paired comparisons of one reproduce command, read from its
    runs in results.json (the chosen pairs, bits, seeds and overrides)."""

    def __init__(self, results, pairs, rows, bits, methods, seeds, tags, hashes, start=""):
        self.runs, self.pairs, self.rows, self.bits = results["runs"], pairs, rows, bits
        self.methods, self.seeds, self.tags, self.hashes = methods, seeds, tags, hashes
        self.start, self._compared = start, None

    def name(self, m, s, t, b, seed):
        h = self.hashes.get("NoDA" if m in UNSUPERVISED else m, "")
        return run_name(m, self.tags[s], self.tags[t], b, seed, h, self.start)

    def value(self, m, s, t, b, seed, key):
        return self.runs.get(self.name(m, s, t, b, seed), {}).get(key)

    def per_seed(self, m, s, t, b, key):
        return [v for v in (self.value(m, s, t, b, seed, key) for seed in self.seeds)
                if v is not None]

    def average(self, m, cells, b, key):
        """Per seed, the mean over ``cells`` ((source, target) pairs) when all are there."""
        out = []
        for seed in self.seeds:
            v = [self.value(m, s, t, b, seed, key) for s, t in cells]
            if v and all(x is not None for x in v):
                out.append(float(np.mean(v)))
        return out

    def accuracy(self):
        header = (["Method"] + ["%s→%s" % (self.tags[s], self.tags[t]) for s, t in self.pairs]
                  + ["Avg."])
        names = [("DAN", None), ("DANN", None)] + [(m, b) for b in self.bits
                                                   for m in ("NoDA", "DAH", "DAH_authors")]
        rows = []
        for m, b in names:
            if m in self.methods:
                rows.append(["%s%s" % (m, "" if b is None else "-%d" % b)]
                            + [_fmt_seeds(self.per_seed(m, s, t, b, "accuracy"), True)
                               for s, t in self.pairs]
                            + [_fmt_seeds(self.average(m, self.pairs, b, "accuracy"), True)])
        return header, rows

    def map(self, b, key):
        cols = [m for m in MAP_COLUMNS if m in self.methods]
        rows = [["%s (%s)" % (t, s)] + [_fmt_seeds(self.per_seed(m, s, t, b, key)) for m in cols]
                for s, t in self.rows]
        rows.append(["Avg."] + [_fmt_seeds(self.average(m, self.rows, b, key)) for m in cols])
        return ["Target (source)"] + cols, rows

    def comparison(self):
        """DAH against each baseline that ran, per bit length (and over all of them), on
        every metric both have: matched over pairs × seeds."""
        if self._compared is None:
            self._compared = self._compare()
        return self._compared

    def _compare(self):
        out = []
        for a, b_m in COMPARED:
            if a not in self.methods or b_m not in self.methods:
                continue
            groups = [[b] for b in self.bits] + ([self.bits] if len(self.bits) > 1 else [])
            for key, _ in METRICS:
                for group in groups:
                    x, y = [], []
                    for b in group:
                        for s, t in self.pairs:
                            for seed in self.seeds:
                                va = self.value(a, s, t, b, seed, key)
                                vb = self.value(b_m, s, t, None if b_m in ("DAN", "DANN") else b,
                                                seed, key)
                                if va is not None and vb is not None:
                                    x.append(va)
                                    y.append(vb)
                    if x:
                        res = paired_comparison(x, y)
                        out.append(dict(res, a=a, b=b_m, metric=key,
                                        bits="all" if len(group) > 1 else group[0],
                                        t=res["t"] if np.isfinite(res["t"]) else None))
        return out

    def comparison_table(self):
        header = ["Comparison", "bits", "metric", "n", "mean Δ", "std Δ", "wins/losses/ties",
                  "paired t", "p (sign-flip)"]
        label = dict(METRICS)
        rows = []
        for c in self.comparison():
            pct = c["metric"] == "accuracy"
            scale, digits = (100.0, "%+.2f") if pct else (1.0, "%+.4f")
            rows.append(["%s − %s" % (c["a"], c["b"]), str(c["bits"]),
                         label[c["metric"]] + (" (points)" if pct else ""), str(c["n"]),
                         digits % (scale * c["mean_diff"]), (digits % (scale * c["std_diff"]))[1:],
                         "%d/%d/%d" % (c["wins"], c["losses"], c["ties"]),
                         "-" if c["t"] is None else "%.2f" % c["t"], "%.3g" % c["p"]])
        return header, rows

    def write(self, out, cmd):
        cmd = cmd or "tools/reproduce"
        if {"DAN", "DANN", "DAH", "NoDA", "DAH_authors"} & set(self.methods):
            h, r = self.accuracy()
            with open(os.path.join(out, "accuracy.md"), "w", encoding="utf-8") as f:
                f.write("# Target recognition accuracy (%%)\n\nArgmax of eq. 6 against all source "
                        "images for the hashing methods, softmax for DAN/DANN%s. `%s`\n\n"
                        % (self._spread(), cmd))
                f.write(_md_table(h, r))
            _csv(os.path.join(out, "accuracy.csv"), h, r)
        for b in self.bits:
            with open(os.path.join(out, "map_%dbits.md" % b), "w", encoding="utf-8") as f:
                f.write("# Mean average precision @%d bits\n\n`%s`%s\n\n" % (
                    b, cmd, "" if len(self.seeds) == 1 else "\n\nEach cell: %s." % self._spread()[2:]))
                for key, title in (("map_a", "Protocol A: target queries against the source "
                                             "database (the authors' code)"),
                                   ("map_b", "Protocol B: within the target domain, each image "
                                             "a query against the rest")):
                    h, r = self.map(b, key)
                    f.write("## %s\n\n" % title + _md_table(h, r) + "\n")
                    _csv(os.path.join(out, "map_%dbits_%s.csv" % (b, key[-1])), h, r)
            for s, t in self.rows:
                self._pr_figure(out, s, t, b)
        h, r = self.comparison_table()
        if r:
            with open(os.path.join(out, "comparison.md"), "w", encoding="utf-8") as f:
                f.write("# Paired comparisons\n\nDifferences over runs matched by pair, seed and "
                        "bit length (DAN/DANN have one run per pair and seed, matched to DAH at "
                        "each bit length); p is the two-sided sign-flip permutation test (exact "
                        "for n <= 20, else 200,000 draws). `%s`\n\n" % cmd)
                f.write(_md_table(h, r))
            keys = ("a", "b", "bits", "metric", "n", "mean_diff", "std_diff", "wins", "losses",
                    "ties", "t", "p")
            _csv(os.path.join(out, "comparison.csv"), keys,
                 [["" if c[k] is None else "%.6g" % c[k] if isinstance(c[k], float) else c[k]
                   for k in keys] for c in self.comparison()])

    def _spread(self):
        n = len(self.seeds)
        return "" if n == 1 else "; mean ± std over %d seeds (%s)" % (
            n, ", ".join(str(s) for s in self.seeds))

    def _pr_figure(self, out, s, t, b):
        """Precision-recall by Hamming radius within the target, the mean over the seeds."""
        series, lines = [], []
        for m in MAP_COLUMNS:
            names = (self.name(m, s, t, b, seed) for seed in self.seeds)
            curves = [self.runs[n]["pr_b"] for n in names if "pr_b" in self.runs.get(n, {})]
            if not curves:
                continue
            prec = np.array([np.asarray(c[1], float) for c in curves])   # -1: no retrieved item
            seen = (prec >= 0).sum(axis=0)
            prec = np.where(seen > 0, np.where(prec >= 0, prec, 0).sum(axis=0) / np.maximum(seen, 1),
                            np.nan)
            rec_ = np.mean([np.asarray(c[2], float) for c in curves], axis=0)
            series.append({"label": m, "x": rec_, "y": prec})
            lines += [(m, r_, p_, q_) for r_, (p_, q_) in enumerate(zip(prec, rec_))]
        if not series:
            return
        tail = "" if _is_supplement_row(s, t) else "_from_" + self.tags[s]
        base = os.path.join(out, "pr_%dbits_%s%s" % (b, t.replace(" ", "_"), tail))
        with open(base + ".csv", "w", encoding="utf-8") as f:
            f.write("method,radius,precision,recall\n")
            for m, r_, p_, q_ in lines:
                f.write("%s,%d,%s,%.6f\n" % (m, r_, "" if np.isnan(p_) else "%.6f" % p_, q_))
        if figures.available():  # else figures_wanted said "figures skipped"
            figures.line_plot(series, base + ".png", title="%s, %d bits (source %s) — "
                              "within-target PR" % (t, b, s), xlabel="Recall",
                              ylabel="Precision", xlim=(0, 1), ylim=(0, 1), markers=True)

    def headline(self):
        """DAH beside NoDA per bit length: the average over pairs, mean ± std over seeds."""
        lines = []
        if not {"DAH", "NoDA"} <= set(self.methods):
            return lines
        for b in self.bits:
            parts = []
            for key, label in METRICS:
                cells = self.pairs if key == "accuracy" else self.rows
                pct = key == "accuracy"
                dah, noda = (self.average(m, cells, b, key) for m in ("DAH", "NoDA"))
                parts.append("%s DAH %s vs NoDA %s" % (label + (" (%)" if pct else ""),
                                                       _fmt_seeds(dah, pct), _fmt_seeds(noda, pct)))
            lines.append("%d bits: %s" % (b, "; ".join(parts)))
        return lines

    def print_summary(self):
        print()
        if {"DAN", "DANN", "DAH", "NoDA", "DAH_authors"} & set(self.methods):
            h, r = self.accuracy()
            print("Target recognition accuracy (%%)%s:" % self._spread())
            print(_md_table(h, r))
        for b in self.bits:
            for key, label in (("map_a", "A: target→source"), ("map_b", "B: within target")):
                h, r = self.map(b, key)
                print("mAP @%d bits, protocol %s:" % (b, label))
                print(_md_table(h, r))
        head = self.headline()
        if head:
            print("DAH next to NoDA, the average over the pairs%s:" % self._spread())
            print("\n".join(head) + "\n")
        h, r = self.comparison_table()
        if r:
            print("Paired comparisons (matched pairs × seeds × bits; p: sign-flip permutation test):")
            print(_md_table(h, r))


def build_parser(description=None):
    """tools/reproduce's options (the command's --help), which ``reproduce`` takes."""
    p = argparse.ArgumentParser(prog="reproduce", description=description)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--toy", action="store_true", help="the embedded ToyHome data (default)")
    g.add_argument("--root", default="",
                   help="a dataset in the <root>/<Domain>/<Class>/<image> layout "
                        "(OfficeHomeDataset_10072016, Office-31, your own)")
    p.add_argument("--family", default="",
                   help="net family: toyhome, office_home or a folder with the same file names "
                        "(default: toyhome, or office_home for a --root whose domains are "
                        "Office-Home's)")
    p.add_argument("--pairs", default="all",
                   help="SOURCE:TARGET,... by folder name (case, spaces, _ ignored), short name "
                        "(Ar Cl Pr Rw, A D W) or prefix; or all (default)")
    p.add_argument("--bits", default="16,64,128", help="comma-separated code lengths (default 16,64,128)")
    p.add_argument("--methods", default=",".join(ALL_METHODS),
                   help="comma-separated, of %s (default: all but DAH_authors, DAH with the "
                        "objective of the authors' code)" % ", ".join(KNOWN_METHODS))
    p.add_argument("--out", default="results", help="folder for models, logs, tables and figures")
    p.add_argument("--iters", type=int, default=None, help="iterations per training (default: the solver's)")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights", default="", metavar="FILE",
                   help="a pretrained model (e.g. VGG_CNN_F.caffemodel) whose conv1-fc7 every method "
                        "starts from; its classifier (fc8) is not loaded")
    w.add_argument("--trunk", default=None, metavar="FILE",
                   help="a .caffemodel whose conv1-fc7 every method starts from (by layer name; "
                        "heads afresh), or none for fresh fillers (default: the generic trunk "
                        "prototxt/toyhome/things_trunk.caffemodel for the toyhome family, none "
                        "for the others)")
    p.add_argument("--pretrain", type=int, default=None, metavar="N",
                   help="first train the NoDA net on each source domain alone for N iterations "
                        "(from --trunk / --weights if given, else from fresh fillers) and start "
                        "every method from its conv1-fc7: the embedded protocol before the "
                        "generic trunk (--pretrain 300)")
    p.add_argument("--set", action="append", default=[], metavar="[METHOD:]LAYER.FIELD=VALUE",
                   help="change the nets before training: a layer name (fnmatch wildcards) and a "
                        "field path, e.g. mmd_*.loss_weight=10, conv1.param[0].lr_mult=0.1, "
                        "mmd_fc6.mmd_param.bandwidth=MEDIAN, or solver.base_lr=1e-4; DAH: etc. for "
                        "one method, pretrain: for the source-only stage (repeatable)")
    p.add_argument("--gpu", default=None, help="GPU id (default: the CPU)")
    p.add_argument("--seed", type=int, default=1, help="random_seed of every training (default 1)")
    p.add_argument("--seeds", default="", metavar="1,2,3",
                   help="train every run once per seed (default: --seed); tables show mean ± std")
    p.add_argument("--per_class", type=int, default=None,
                   help="source images per class in a batch, K (default: the prototxt's)")
    p.add_argument("--jobs", default="1", metavar="N",
                   help="trainings run at once, each in a worker process with one thread; 0 or "
                        "auto: the cores this process may use (default 1: in this process)")
    p.add_argument("--no_figures", action="store_true",
                   help="no per-pair figures (embeddings, codes, loss curves, retrieval)")
    p.add_argument("--reevaluate", action="store_true", help="recompute the numbers of existing models")
    p.add_argument("--verbose", action="store_true", help="show the solvers' logs")
    p.add_argument("--log_level", default="INFO", help="console log level (default INFO)")
    return p

"""``tools/fuzz``: fuzz the prototxt text parser and net builder, or the .caffemodel reader.

    tools/fuzz --target prototxt|caffemodel [--seconds 600] [--runs N] [--seed 0] [--random]

With atheris installed (``pip install -e '.[fuzz]'``) it runs atheris's coverage-guided
fuzzer over the target for ``--seconds`` (or ``--runs`` inputs), seeded with the target's
seed input; without it, or with ``--random``, it runs ``minicaffe.fuzzing``'s random mutants.
Any exception other than a CaffeError is a finding: the input is written to
``crash-<target>-<n>.bin`` in the current directory and the exit status is 1.
"""
import argparse
import logging
import os
import sys
import tempfile
import time

from minicaffe import fuzzing

from ._cli import run, setup_logging

log = logging.getLogger("minicaffe")


def build_parser():
    p = argparse.ArgumentParser(prog="fuzz", description="Fuzz minicaffe's input paths: prototxt "
                                "text (net construction) or binary .caffemodel (copy_from).")
    p.add_argument("--target", required=True, choices=sorted(fuzzing.TARGETS),
                   help="what to fuzz: prototxt text or a binary .caffemodel")
    p.add_argument("--seconds", type=float, default=600.0, help="how long to run (600)")
    p.add_argument("--runs", type=int, default=0, help="stop after this many inputs (0: no limit)")
    p.add_argument("--seed", type=int, default=0, help="random generator seed (--random)")
    p.add_argument("--random", action="store_true", help="random mutants even with atheris")
    return p


def _save(target, data):
    n = 0
    while os.path.exists("crash-%s-%d.bin" % (target, n)):
        n += 1
    path = "crash-%s-%d.bin" % (target, n)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _random(args):
    deadline = time.time() + args.seconds
    total, seed = 0, args.seed
    while time.time() < deadline and (not args.runs or total < args.runs):
        batch = 200 if not args.runs else min(200, args.runs - total)
        try:
            total += fuzzing.random_run(args.target, batch, seed)
        except Exception as exc:   # noqa: BLE001 - a finding
            path = _save(args.target, exc.mutant)
            log.error("%s: %s: %s (input written to %s)", args.target, type(exc).__name__, exc, path)
            return 1
        seed += 1
    log.info("%s: %d random mutants, no exception outside CaffeError", args.target, total)
    return 0


def _atheris(args, atheris):
    check, seed_bytes, _ = fuzzing.TARGETS[args.target]
    corpus = tempfile.mkdtemp(prefix="minicaffe-fuzz-corpus-")
    with open(os.path.join(corpus, "seed"), "wb") as f:
        f.write(seed_bytes())
    logging.getLogger("minicaffe").setLevel(logging.ERROR)   # the net's set-up lines
    argv = [sys.argv[0], corpus, "-max_total_time=%d" % max(1, int(args.seconds)),
            "-artifact_prefix=crash-%s-" % args.target]
    if args.runs:
        argv.append("-runs=%d" % args.runs)
    atheris.Setup(argv, check)
    atheris.Fuzz()   # exits the process: 0 when time is up, non-zero with a finding
    return 0


def fuzz(args):
    setup_logging()
    if not args.random:
        try:
            import atheris
        except ImportError:
            log.warning("atheris is not installed (pip install -e '.[fuzz]'): random mutants")
        else:
            atheris.instrument_all()   # coverage of minicaffe and protobuf's Python code
            return _atheris(args, atheris)
    return _random(args)


def main(argv=None):
    return run(fuzz, argv, parser=build_parser())

"""``tools/train``: train a net from a solver prototxt, as ``caffe train``.

    tools/train --solver S [--weights a.caffemodel[,b]] [--snapshot X.solverstate] [--gpu N]
                [--level N] [--stage a,b] [--sigint_effect snapshot|stop|none]
                [--sighup_effect snapshot|stop|none] [--debug]

Caffe's single-dash forms (``-solver S``, ``-solver=S``) work too. Ctrl-C snapshots, then
stops (``--sigint_effect``); a NaN loss stops with a snapshot of the last finite state.

Started by an MPI launcher as several ranks (``mpirun -np N tools/train ...``, ``srun``), it
trains data-parallel (minicaffe.parallel): each rank reads its shard of the data, the
gradients are averaged, rank 0 logs, tests and snapshots; with ``--gpu all`` or a list of ids,
local rank k takes the k-th GPU. A failing rank ends the job (MPI_Abort) naming itself.
"""
import argparse
import contextlib
import logging
import signal

from minicaffe import protoio
from minicaffe.backend import select_device
from minicaffe.errors import CaffeError
from minicaffe.parallel import DataParallel, launched_in_parallel
from minicaffe.solver import Solver

from ._cli import run, setup_logging

log = logging.getLogger("minicaffe")


def build_parser():
    p = argparse.ArgumentParser(prog="train", description="Train a net from a solver prototxt.")
    p.add_argument("--solver", required=True, help="solver prototxt")
    p.add_argument("--weights", default="", help="comma-separated .caffemodel files to start from")
    p.add_argument("--snapshot", default="", help=".solverstate to resume from")
    p.add_argument("--gpu", default=None, help="GPU id (uses the solver's solver_mode when absent)")
    p.add_argument("--level", type=int, default=None, help="net state level")
    p.add_argument("--stage", default="", help="comma-separated net state stages")
    p.add_argument("--sigint_effect", default="snapshot", choices=["snapshot", "stop", "none"],
                   help="what Ctrl-C does: snapshot then stop (default), stop, or nothing")
    p.add_argument("--sighup_effect", default="snapshot", choices=["snapshot", "stop", "none"],
                   help="what SIGHUP does: snapshot and go on (default), stop, or nothing")
    p.add_argument("--iterations", type=int, default=None, help=argparse.SUPPRESS)  # ignored, as caffe
    return p


def train(args):
    if args.snapshot and args.weights:
        raise CaffeError("Give a snapshot to resume training or weights to finetune but not both.")
    setup_logging()
    dp = None
    if launched_in_parallel():
        dp = DataParallel()
        dp.limit_threads()
        if not dp.root:  # rank 0 alone logs; the others say only what goes wrong
            log.setLevel(logging.WARNING)
    with dp.abort_on_error() if dp else contextlib.nullcontext():
        sp = protoio.read_solver_param(args.solver)
        select_device(args.gpu, sp, dp.local_rank if dp else None)
        stages = [s for s in args.stage.split(",") if s]
        weights = [w for w in args.weights.split(",") if w]
        solver = Solver(sp, source=args.solver, weights=weights or None, level=args.level,
                        stages=stages or None, parallel=dp)
        signums = [s for s in (signal.SIGINT, getattr(signal, "SIGHUP", None)) if s is not None]
        previous = {s: signal.getsignal(s) for s in signums}
        solver.install_signal_handlers(args.sigint_effect, args.sighup_effect)
        try:
            if args.snapshot:
                log.info("Resuming from %s", args.snapshot)
            log.info("Starting Optimization")
            solver.solve(args.snapshot or None)
        finally:   # train() called in-process (tests, notebooks) leaves Python's handlers
            for s, handler in previous.items():
                signal.signal(s, handler)
    return 0


def main(argv=None):
    return run(train, argv, parser=build_parser())

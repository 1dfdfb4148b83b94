"""``tools/time``: per-layer forward and backward milliseconds, as ``caffe time``.

    tools/time --model M [--iterations 50] [--phase TRAIN|TEST] [--gpu N] [--level N] [--stage a,b]
"""
import argparse
import contextlib
import logging
import time as _time

from minicaffe import backend, threads
from minicaffe.backend import select_device
from minicaffe.net import Net

from ._cli import run, setup_logging

log = logging.getLogger("minicaffe")


def build_parser():
    p = argparse.ArgumentParser(prog="time", description="Time forward/backward per layer.")
    p.add_argument("--model", required=True, help="net prototxt")
    p.add_argument("--iterations", type=int, default=50, help="forward-backward passes (default 50)")
    p.add_argument("--phase", default="TRAIN", choices=["TRAIN", "TEST"],
                   help="the net's phase (default TRAIN)")
    p.add_argument("--weights", default="", help=".caffemodel to time with (default: the fillers)")
    p.add_argument("--gpu", default=None, help="GPU id (default: the CPU)")
    p.add_argument("--level", type=int, default=0, help="net state level")
    p.add_argument("--stage", default="", help="comma-separated net state stages")
    return p


def time_net(net, iterations, sync=lambda: None, governor=None):
    """{layer name: (forward ms, backward ms)} averaged over ``iterations``, plus totals.
    ``governor`` (a minicaffe.threads.Governor) picks the thread count as in training."""
    timed = governor.iteration if governor else contextlib.nullcontext
    nodes = net.nodes
    n = len(nodes)
    fwd, bwd = [0.0] * n, [0.0] * n
    total_fb = 0.0
    # one untimed pass: compile Numba kernels, fill prefetch queues
    net.forward_prefilled()
    net.backward_prefilled()
    iters = []
    for j in range(iterations):
        with timed():
            t_iter = _time.perf_counter()
            for node in nodes:
                t = _time.perf_counter()
                node.forward()
                sync()
                fwd[node.index] += _time.perf_counter() - t
            for node in reversed(nodes):
                t = _time.perf_counter()
                if node.need_backward:
                    node.backward()
                sync()
                bwd[node.index] += _time.perf_counter() - t
            dt = (_time.perf_counter() - t_iter) * 1000
        iters.append(dt)
        total_fb += dt
        log.info("Iteration: %d forward-backward time: %.3f ms.", j + 1, dt)
    k = max(1, iterations)
    return ({name: (f * 1000 / k, b * 1000 / k) for name, f, b in zip(net.layer_names, fwd, bwd)},
            sum(fwd) * 1000 / k, sum(bwd) * 1000 / k, total_fb / k, total_fb)


def time_cmd(args):
    setup_logging()
    select_device(args.gpu)
    stages = [s for s in args.stage.split(",") if s]
    net = Net(args.model, args.phase, weights=args.weights or None, level=args.level,
              stages=stages)
    log.info("Performing Forward")
    log.info("Initial loss: %g", net.forward_prefilled())
    log.info("Performing Backward")
    log.info("*** Benchmark begins ***")
    log.info("Testing for %d iterations.", args.iterations)
    sync = backend.synchronize if backend.mode() == backend.GPU else (lambda: None)
    governor = threads.Governor.for_training(log)
    per_layer, f, b, fb, total = time_net(net, args.iterations, sync=sync, governor=governor)
    log.info("Average time per layer: ")
    for name, (lf, lb) in per_layer.items():
        log.info("%10s\tforward: %.4f ms.", name, lf)
        log.info("%10s\tbackward: %.4f ms.", name, lb)
    log.info("Average Forward pass: %.4f ms.", f)
    log.info("Average Backward pass: %.4f ms.", b)
    log.info("Average Forward-Backward: %.4f ms.", fb)
    log.info("Total Time: %.4f ms.", total)
    log.info("*** Benchmark ends ***")
    return 0


def main(argv=None):
    return run(time_cmd, argv, parser=build_parser())

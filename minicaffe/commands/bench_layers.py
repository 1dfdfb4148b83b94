"""``tools/bench_layers``: the cost of the DAH losses at the paper's sizes, next to a conv layer.

    tools/bench_layers [--n 325] [--repeat 5]

Prints one table: forward and backward milliseconds (median of --repeat runs) of MMDLoss on
fc6/fc7-sized features (n + n × 4096) and on codes (d = 64), HashLoss and EntropyLoss on
d = 64 codes of n source / n target samples, and, as the yardstick, VGG_CNN_F's conv2
(5×5, 64→256, 27×27) at batch 16 — so it is visible that the losses are not the bottleneck.
"""
import argparse
import time

import numpy as np

from minicaffe import backend
from minicaffe.blob import Blob
from minicaffe.gradcheck import make_layer

from ._cli import run


def _median_ms(fn, repeat):
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return float(np.median(out))


def bench(args):
    backend.set_random_seed(0)
    rng = np.random.default_rng(0)
    n = args.n

    def blobs(*arrays):
        out = []
        for a in arrays:
            b = Blob(a.shape, np.float32)
            b.data[...] = a
            out.append(b)
        return out

    labels = np.repeat(np.arange(65), max(1, n // 65))[:n].astype(np.float32)
    cases = [
        ("MMDLoss fc7 (%d+%d x 4096)" % (n, n), 'type: "MMDLoss" mmd_param { kernel_num: 5 }',
         blobs(rng.normal(size=(n, 4096)).astype(np.float32),
               rng.normal(size=(n, 4096)).astype(np.float32))),
        ("MMDLoss fc8 (%d+%d x 64)" % (n, n), 'type: "MMDLoss" mmd_param { kernel_num: 5 }',
         blobs(rng.normal(size=(n, 64)).astype(np.float32), rng.normal(size=(n, 64)).astype(np.float32))),
        ("HashLoss (%d x 64)" % n, 'type: "HashLoss"',
         blobs(np.tanh(rng.normal(size=(n, 64))).astype(np.float32), labels)),
        ("EntropyLoss (%d+%d x 64, C=65)" % (n, n), 'type: "EntropyLoss" entropy_loss_param { num_classes: 65 }',
         blobs(np.tanh(rng.normal(size=(n, 64))).astype(np.float32),
               np.tanh(rng.normal(size=(n, 64))).astype(np.float32), labels)),
    ]
    try:
        conv = ('conv2 5x5 64->256 @27x27, batch 16',
                'type: "Convolution" convolution_param { num_output: 256 kernel_size: 5 pad: 2 '
                'weight_filler { type: "gaussian" std: 0.01 } }',
                blobs(rng.normal(size=(16, 64, 27, 27)).astype(np.float32)))
        make_layer(conv[1])
        cases.append(conv)
    except Exception as exc:  # the vision layers may be absent in a partial install
        print("(no Convolution layer: %s)" % exc)
    rows = []
    for name, text, bottom in cases:
        layer = make_layer(text)
        top = [Blob((), np.float32)]
        layer.setup(bottom, top)
        layer.forward(bottom, top)
        if layer.blobs:
            layer.param_propagate_down = [True] * len(layer.blobs)
        pd = [True] + [False] * (len(bottom) - 1) if "Hash" in name else [True] * len(bottom)
        if "Entropy" in name:
            pd = [True, True, False]
        top[0].diff[...] = 1.0 if top[0].count() == 1 else top[0].diff
        layer.backward(top, pd, bottom)
        f = _median_ms(lambda: layer.forward(bottom, top), args.repeat)
        b = _median_ms(lambda: layer.backward(top, pd, bottom), args.repeat)
        rows.append((name, f, b))
    conv_total = rows[-1][1] + rows[-1][2] if rows and rows[-1][0].startswith("conv2") else None
    print("%-40s %10s %10s %10s" % ("layer", "fwd ms", "bwd ms", "vs conv2"))
    for name, f, b in rows:
        ratio = "%.3fx" % ((f + b) / conv_total) if conv_total else "-"
        print("%-40s %10.2f %10.2f %10s" % (name, f, b, ratio))
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="bench_layers",
                                description="Time the DAH losses at the paper's sizes next to a conv layer.")
    p.add_argument("--n", type=int, default=325, help="samples per domain (the paper: 325)")
    p.add_argument("--repeat", type=int, default=5, help="timings per layer, the median is shown (default 5)")
    return p


def main(argv=None):
    return run(bench, argv, parser=build_parser())

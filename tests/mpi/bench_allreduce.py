"""The per-iteration communication cost of data-parallel training on a real net.

    mpiexec -n 2 python tests/mpi/bench_allreduce.py [--net prototxt/office_home/dah_train_64.prototxt]

Builds the net (its data layer replaced by Input blobs of 2 + 2 images, so no data is needed;
the parameters are the real ones), fills the param diffs, and times on every rank: the
solver's whole per-iteration reduce (pack the diffs into the flat buffer, the one Allreduce,
unpack) and a bare Allreduce of a buffer of the same size. Rank 0 prints the medians.
"""
import argparse
import os
import re
import sys
import time

import numpy as np

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))


def input_net(path, n=2):
    """The train net's text with its DomainData layer replaced by Input blobs of n images."""
    text = open(path).read()
    m = re.search(r'layer \{ name: "data" type: "DomainData".*?\} \}\n', text, re.S)
    crop = int(re.search(r"crop_size: (\d+)", m.group(0)).group(1))
    image = "dim: 3 dim: %d dim: %d" % (crop, crop)
    shapes = " ".join("shape { dim: %d %s }" % (n, image if img else "")
                      for img in (True, False, True, False))
    inp = ('layer { name: "data" type: "Input" top: "source_data" top: "source_label" '
           'top: "target_data" top: "target_label" input_param { %s } }\n' % shapes)
    return text[:m.start()] + inp + text[m.end():]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--net",
                    default=os.path.join(ROOT, "prototxt/office_home/dah_train_64.prototxt"))
    ap.add_argument("--iters", type=int, default=7)
    args = ap.parse_args()
    from mpi4py import MPI

    import minicaffe as caffe
    from minicaffe.parallel import DataParallel
    dp = DataParallel()
    net = caffe.Net(input_net(args.net), caffe.TRAIN)
    rng = np.random.default_rng(dp.rank)
    for b in net.learnable_params:
        b.diff[...] = rng.standard_normal(b.shape, dtype=np.float32)
    solver = type("S", (), {"net": net, "pending_action": None, "requested_action": None})()
    n = sum(b.count() for b, lr in zip(net.learnable_params, net.params_lr) if lr != 0)
    reduce_s, bare_s = [], []
    buf = np.ones(n, np.float32)
    for _i in range(args.iters + 1):
        dp.barrier()
        t = time.perf_counter()
        dp.reduce(solver, 1.0, outputs=True)
        reduce_s.append(time.perf_counter() - t)
        dp.barrier()
        t = time.perf_counter()
        dp.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        bare_s.append(time.perf_counter() - t)
    if dp.root:
        r, b = np.median(reduce_s[1:]) * 1000, np.median(bare_s[1:]) * 1000
        print("%s: %d learned values (%.1f MB float32) on %d ranks, %s"
              % (os.path.basename(args.net), n, n * 4 / 1e6, dp.size,
                 MPI.Get_library_version().splitlines()[0]))
        print("  per-iteration reduce (pack + Allreduce + unpack): %.0f ms (median of %d)"
              % (r, args.iters))
        print("  bare Allreduce of the same buffer:                %.0f ms, %.2f GB/s of buffer"
              % (b, n * 4 / b / 1e6))
    net.close()


if __name__ == "__main__":
    sys.exit(main())

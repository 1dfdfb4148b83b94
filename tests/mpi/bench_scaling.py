"""Images/s of tools/train on one process and on N MPI ranks, on generated images.

    python tests/mpi/bench_scaling.py [--ranks 2] [--iters 60] [--batch 16] [--threads 1]

A small convnet (conv 5×5×16 → pool → conv 3×3×32 → pool → fc 10, softmax) on 32×32 images
from an ImageData list with crop 28 and mirror. Each rank reads `--batch` images per
iteration, so N ranks train on N× the images per iteration; images/s = images read per
second over the iterations after the first display (numba compiles during the first).
``--threads`` caps the BLAS/numba threads of every process (OMP_NUM_THREADS etc.; 0: as
the environment has them).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))

NET = """name: "bench"
layer { name: "data" type: "ImageData" top: "data" top: "label"
        transform_param { scale: 0.00390625 crop_size: 28 mirror: true }
        image_data_param { source: "%(d)s/list.txt" root_folder: "%(d)s/" batch_size: %(batch)d shuffle: true } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 16 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 32 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool2" top: "fc"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""

SOLVER = """net: "%(d)s/net.prototxt"
base_lr: 0.01
momentum: 0.9
lr_policy: "fixed"
max_iter: %(iters)d
display: 10
snapshot: 0
snapshot_after_train: false
random_seed: 1
solver_mode: CPU
"""


def launcher():
    here = os.path.dirname(sys.executable)
    for name in ("mpiexec", "mpirun"):
        if os.path.exists(os.path.join(here, name)):
            return [os.path.join(here, name)]
    exe = shutil.which("mpiexec") or shutil.which("mpirun")
    if not exe:
        sys.exit("no mpiexec: pip install mpi4py mpich")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    return [exe] + (["--oversubscribe"] if "Open MPI" in version else [])


def run(cmd, env):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    rates = [float(x) for x in re.findall(r"Iteration \d+ \(([0-9.e+]+) iter/s", out.stderr)]
    return np.mean(rates[2:])  # the first display has no rate, the second includes compiling


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="mc_bench_")
    rng = np.random.default_rng(0)
    with open(os.path.join(d, "list.txt"), "w") as f:
        for i in range(256):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)).save(
                os.path.join(d, "%03d.png" % i))
            f.write("%03d.png %d\n" % (i, i % 10))
    with open(os.path.join(d, "net.prototxt"), "w") as f:
        f.write(NET % {"d": d, "batch": args.batch})
    solver = os.path.join(d, "solver.prototxt")
    with open(solver, "w") as f:
        f.write(SOLVER % {"d": d, "iters": args.iters})
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    if args.threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS"):
            env[var] = str(args.threads)
    train = [sys.executable, os.path.join(ROOT, "tools", "train"), "--solver", solver]
    one = run(train, env) * args.batch
    many = run(launcher() + ["-n", str(args.ranks)] + train, env) * args.batch * args.ranks
    print("batch %d per process, %s thread(s) per process, %d CPU cores"
          % (args.batch, args.threads or "default", os.cpu_count()))
    print("  1 process : %7.1f images/s" % one)
    print("  %d ranks   : %7.1f images/s  (x%.2f)" % (args.ranks, many, many / one))
    shutil.rmtree(d)


if __name__ == "__main__":
    sys.exit(main())

"""The reduce's device-buffer path (CUDA-aware MPI) against its host path, on Numba's CUDA
simulator or a GPU: run by tests/test_mpi.py as

    NUMBA_ENABLE_CUDASIM=1 MINICAFFE_MPI_CUDA_AWARE=1 python tests/mpi/device_reduce.py DIR

A stand-in communicator of "2 ranks with equal gradients" doubles the buffer it is given;
the device path must hand it a device array and leave the same diffs, loss and outputs as
the host path. Prints OK.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from test_mpi import ONE, OneRank, setup_dir  # noqa: E402

import minicaffe as caffe  # noqa: E402
from minicaffe import backend, parallel  # noqa: E402


class TwoEqualRanks(OneRank):
    def Get_size(self):
        return 2

    def Allreduce(self, inplace, buf, op=None):
        self.device = hasattr(buf, "copy_to_host")
        if self.device:
            buf.copy_to_device(buf.copy_to_host() * 2)
        else:
            buf *= 2


def reduce_once(solver_path, cuda_aware):
    caffe.set_random_seed(3)
    backend.set_mode_gpu()
    dp = parallel.DataParallel(TwoEqualRanks(), ONE)
    dp.cuda_aware = cuda_aware
    solver = caffe.get_solver(solver_path, parallel=dp)
    rng = np.random.default_rng(0)
    for b in solver.net.learnable_params:      # gradients whose newest copy is on the device
        b.diff[...] = rng.standard_normal(b.shape)
        b.gpu_diff()
    solver.pending_action = "snapshot"
    loss, outs, action = dp.reduce(solver, 0.75, outputs=True)
    diffs = [b.cpu_diff().copy() for b in solver.net.learnable_params]
    solver.net.close()
    backend.set_mode_cpu()
    return dp.comm.device, loss, outs, action, diffs


def main():
    solver_path = setup_dir(sys.argv[1], max_iter=1)
    dev = reduce_once(solver_path, True)
    host = reduce_once(solver_path, False)
    assert dev[0] and not host[0], "the device path did not hand MPI a device buffer"
    assert dev[1] == host[1] == 0.75 and dev[3] == host[3] == "snapshot", (dev[1:4], host[1:4])
    assert dev[2].keys() == host[2].keys()
    for a, b in zip(dev[4], host[4]):
        np.testing.assert_array_equal(a, b)
    print("OK")


if __name__ == "__main__":
    main()

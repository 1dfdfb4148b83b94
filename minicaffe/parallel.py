"""Data-parallel training over MPI: ``mpirun -np N tools/train --solver S``.

Synchronous data-parallel SGD, as Caffe's multi-GPU training but across processes and
machines, through ``mpi4py`` (``pip install 'minicaffe[mpi]'``; importing minicaffe never
imports it). Every rank builds the train net, reads its own shard of every data layer
(``set_shard(rank, N)``: batch r of each group of N, see layers/data.py), runs forward and
backward, and then one ``Allreduce`` per iteration sums, over one flat buffer:

    [ param diffs (lr_mult != 0) | BatchNorm running statistics | loss, stop, snapshot | outputs ]

The diffs are summed, so the update's ÷ (iter_size · N) makes N ranks × batch B the
iteration of one process with batch B and ``iter_size: N`` on the same batches; the
statistics, the loss and (on display iterations) the net outputs are averaged; the two flags
make a Ctrl-C or SIGHUP that reached any rank act on all ranks at the same iteration. Then
every rank applies the same update. Rank 0 alone logs, tests and writes snapshots; the
other ranks log warnings and errors only.

Rank 0's weights are broadcast at the start (and after a restore, which rank 0 alone reads),
so the ranks start equal whatever the seed. The global generator (dropout, random fillers) is
then split into one stream per rank; snapshots keep every rank's stream. A rank that raises
calls ``MPI_Abort`` after printing ``rank R of N failed: ...``, which ends the whole job.

With GPUs each rank takes one (``--gpu`` by local rank); diffs go to MPI as device buffers
where the MPI library is CUDA-aware (``MPIX_Query_cuda_support``, or
``MINICAFFE_MPI_CUDA_AWARE=1``), through one host buffer otherwise.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import socket
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import NDArray

from . import backend, threads
from .errors import CaffeError

if TYPE_CHECKING:
    from .blob import Blob
    from .net import Net

#: a minicaffe.solver.Solver (typed loosely: the solver package imports this module)
SolverLike = Any

log = logging.getLogger("minicaffe")

# (rank variable, size variable) that MPI launchers set: Open MPI, MPICH/Intel MPI (hydra,
# and srun --mpi=pmi2), MVAPICH, srun --mpi=pmix, plain srun.
_LAUNCHER_VARS = (("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
                  ("PMI_RANK", "PMI_SIZE"),
                  ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE"),
                  ("PMIX_RANK", "SLURM_STEP_NUM_TASKS"),
                  ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS"))
_LOCAL_RANK_VARS = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "MV2_COMM_WORLD_LOCAL_RANK",
                    "SLURM_LOCALID")

_ACTIONS = {None: (0, 0), "stop": (1, 0), "snapshot": (0, 1), "stop_snapshot": (1, 1)}


def launcher_world(environ: Optional[Mapping[str, str]] = None) -> Optional[Tuple[int, Optional[int]]]:
    """(rank, size) that an MPI launcher (mpirun, mpiexec, srun) put in the environment, size
    None when only the rank is known; None when no launcher started this process."""
    env = os.environ if environ is None else environ
    for rank_var, size_var in _LAUNCHER_VARS:
        if rank_var in env:
            try:
                rank = int(env[rank_var])
                size = int(env[size_var]) if env.get(size_var) else None
            except ValueError:
                continue
            if size is not None or rank_var == "PMIX_RANK":
                return rank, size
    return None


def launched_in_parallel(environ: Optional[Mapping[str, str]] = None) -> bool:
    """True when an MPI launcher started this process as one of several ranks."""
    world = launcher_world(environ)
    return world is not None and (world[1] is None or world[1] > 1)


def _import_mpi(size_hint=None):
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise CaffeError(
            "this process was started by an MPI launcher%s but mpi4py cannot be imported (%s): "
            "install the MPI extra, pip install 'minicaffe[mpi]', and an MPI library (pip "
            "install mpich, or apt-get install libopenmpi-dev openmpi-bin)"
            % (" as one of %d ranks" % size_hint if size_hint else "", exc)) from None
    return MPI


def cuda_aware() -> bool:
    """Whether the loaded MPI library takes device buffers: ``MINICAFFE_MPI_CUDA_AWARE`` (0 or
    1) when set, else the library's ``MPIX_Query_cuda_support()`` (Open MPI, MPICH)."""
    forced = os.environ.get("MINICAFFE_MPI_CUDA_AWARE", "")
    if forced in ("0", "1"):
        return forced == "1"
    if backend.simulator_enabled():
        return False
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({line.split()[-1] for line in f
                           if "libmpi" in line.rsplit("/", 1)[-1] and ".so" in line})
    except OSError:
        return False
    for path in libs:
        try:
            fn = getattr(ctypes.CDLL(path), "MPIX_Query_cuda_support", None)
        except OSError:
            continue
        if fn is not None:
            fn.restype = ctypes.c_int
            return bool(fn())
    return False


class NullComm:
    """The solver's communicator in a single process: DataParallel's interface with one rank,
    where every collective is the identity. The solver talks to a communicator either way
    (``Solver.comm``), so single-process training has no data-parallel branches."""
    rank, size, root = 0, 1, True
    distributed = False     # no other rank: nothing to agree on, nothing to gather

    def __repr__(self) -> str:
        return "NullComm()"

    def agree_seed(self, seed: int) -> int:
        return seed

    def setup(self, net: Net) -> None:
        pass

    def fork_rng(self) -> None:
        pass

    def bcast(self, obj: Any) -> Any:
        return obj

    def gather(self, obj: Any) -> Optional[List[Any]]:
        return [obj]

    def barrier(self) -> None:
        pass

    def mean(self, value: float) -> float:
        return float(value)

    def broadcast_blobs(self, blobs: Sequence[Blob]) -> None:
        pass

    def broadcast_arrays(self, arrays: Sequence[NDArray[Any]]) -> None:
        pass

    def request(self, solver: SolverLike, action: Optional[str]) -> None:
        """A signal's ``action``: acted on after this iteration (one rank agrees at once)."""
        solver.requested_action = action

    def reduce(self, solver: SolverLike, loss: float,
               outputs: bool = False) -> Tuple[float, Optional[Dict[str, NDArray[Any]]], Optional[str]]:
        return float(loss), None, solver.requested_action

    def thread_governor(self, log: Any) -> Optional[threads.Governor]:
        """The thread Governor of the iterations (minicaffe/threads.py), or None where it is
        off (a thread count the user chose, one core, the GPU)."""
        return threads.Governor.for_training(log)

    def comm_summary(self) -> str:
        return ""


class DataParallel:
    """One rank of a data-parallel job. ``DataParallel()`` initialises MPI (mpi4py) on
    ``COMM_WORLD``; ``comm`` (and ``mpi``, the module giving ``IN_PLACE`` and ``SUM``) may be
    any object with mpi4py's communicator methods. Hand it to ``Solver(..., parallel=dp)``
    and run the solver inside ``with dp.abort_on_error():``."""

    def __init__(self, comm: Any = None, mpi: Any = None) -> None:
        if comm is None:
            world = launcher_world()
            mpi = _import_mpi(world[1] if world else None)
            comm = mpi.COMM_WORLD
        self.comm, self.mpi = comm, mpi
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.root = self.rank == 0
        self.local_rank, self.local_size = self._local_rank()
        self.cuda_aware = cuda_aware()
        self.threads: Optional[int] = None   # set by limit_threads()
        self._host = self._dev = None
        self.last_reduce: Dict[str, float] = {}   # values, bytes, seconds of the last Allreduce
        self._times: List[float] = []

    def _local_rank(self):
        """(this rank's index on its machine, the number of ranks there)."""
        shared = getattr(self.mpi, "COMM_TYPE_SHARED", None)
        if shared is not None and hasattr(self.comm, "Split_type"):
            node = self.comm.Split_type(shared)
            try:
                return node.Get_rank(), node.Get_size()
            finally:
                node.Free()
        for var in _LOCAL_RANK_VARS:
            if var in os.environ:
                return int(os.environ[var]), self.size
        return self.rank, self.size

    def limit_threads(self) -> Optional[int]:
        """Unless the user set OMP_NUM_THREADS (or OPENBLAS_, MKL_, NUMBA_NUM_THREADS), give
        each rank its share of the machine's cores for numba's and BLAS's thread pools (BLAS
        through threadpoolctl, part of the mpi extra): N ranks each running as many threads
        as there are cores slow every rank down. A rank the launcher bound to some cores gets
        those; unbound ranks share the cores this process may use (``threads.usable_cores``:
        the affinity mask and the cgroup CPU quota). Returns the thread count, or None."""
        if threads.user_set():
            return None
        usable = threads.usable_cores()
        bound = threads.affinity_cores() < (os.cpu_count() or 1)
        n = usable if bound else max(1, usable // self.local_size)
        try:
            import numba
            numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
        except Exception:  # numba's threading layer unavailable: nothing to limit
            pass
        try:
            from threadpoolctl import threadpool_limits
            self._thread_limits = threadpool_limits(n)
        except ImportError:
            log.warning("threadpoolctl is not installed: BLAS may run as many threads per rank "
                        "as the machine has cores; set OMP_NUM_THREADS or pip install "
                        "threadpoolctl")
        self.threads = n
        return n

    def __repr__(self) -> str:
        return "<DataParallel rank %d of %d (local %d)>" % (self.rank, self.size, self.local_rank)

    # --- set-up ------------------------------------------------------------------------------
    distributed = True

    def request(self, solver: SolverLike, action: Optional[str]) -> None:
        """A signal's ``action`` on this rank: kept until the next ``reduce``, where the ranks
        agree on it and all act on it at the same iteration."""
        solver.pending_action = action

    def thread_governor(self, log: Any) -> Optional[threads.Governor]:
        """None: the ranks' threads are fixed (``limit_threads``), never retried, so every rank
        runs the same number of threads."""
        return None

    def agree_seed(self, seed: int) -> int:
        """``seed`` when >= 0; else one that rank 0 draws, the same on every rank (the data
        shards are cut from one stream, so every rank needs its generators)."""
        if seed >= 0:
            return int(seed)
        drawn = int(np.random.SeedSequence().generate_state(1, np.uint32)[0]) if self.root else None
        return int(self.comm.bcast(drawn, root=0))

    def setup(self, net: Net) -> None:
        """After the nets are built: rank 0's weights everywhere, each data layer on its shard,
        a generator stream per rank."""
        self.broadcast_blobs(net.learnable_params)
        sharded = self.shard(net)
        where = self.gather("pid %d on %s" % (os.getpid(), socket.gethostname()))
        if self.root:
            assert where is not None   # rank 0 gathers every rank's
            log.info("Data-parallel training on %d ranks (MPI): %s", self.size,
                     "; ".join("rank %d %s" % rw for rw in enumerate(where)))
            if self.threads:
                log.info("%d ranks on this machine: %d compute thread(s) each (set "
                         "OMP_NUM_THREADS to choose)", self.local_size, self.threads)
            log.info("Each rank reads batch r of every %d of: %s", self.size,
                     ", ".join(sharded) or "no layer")
            if not sharded:
                log.warning("No layer of the train net reads a sharded stream: every rank sees "
                            "the same data (only random layers differ)")
        self.fork_rng()

    def shard(self, net: Net) -> List[str]:
        """``set_shard(rank, size)`` on every layer (or Python layer) that has it; their names."""
        names = []
        for node in net.nodes:
            for obj in (node.layer, getattr(node.layer, "impl", None)):
                fn = getattr(obj, "set_shard", None)
                if callable(fn):
                    fn(self.rank, self.size)
                    names.append(node.name)
                    break
        return names

    def fork_rng(self) -> None:
        """Give each rank its own stream of the global generator (dropout, random fillers),
        derived from the current state and the rank."""
        base = int(backend.rng().integers(0, 2 ** 63))
        seed = np.random.SeedSequence([base, self.rank]).generate_state(2, np.uint32)
        backend.set_random_seed((int(seed[0]) << 31) ^ int(seed[1]))

    # --- collectives -------------------------------------------------------------------------
    def bcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (a picklable value) on every rank."""
        return self.comm.bcast(obj, root=0)

    def gather(self, obj: Any) -> Optional[List[Any]]:
        """``[obj of rank 0, 1, ...]`` on rank 0, None elsewhere."""
        return self.comm.gather(obj, root=0)

    def barrier(self) -> None:
        self.comm.Barrier()

    def mean(self, value: float) -> float:
        """The mean of a float over the ranks."""
        return float(self.comm.allreduce(float(value))) / self.size

    def broadcast_blobs(self, blobs: Sequence[Blob]) -> None:
        """Rank 0's data of ``blobs`` on every rank (one Bcast)."""
        self.broadcast_arrays([b.data for b in blobs])

    def broadcast_arrays(self, arrays: Sequence[NDArray[Any]]) -> None:
        """Rank 0's values of host ``arrays`` (modified in place) on every rank (one Bcast)."""
        if not arrays:
            return
        buf = np.empty(sum(a.size for a in arrays), arrays[0].dtype)
        if self.root:
            _pack(buf, arrays)
        self.comm.Bcast(buf, root=0)
        if not self.root:
            o = 0
            for a in arrays:
                a[...] = buf[o:o + a.size].reshape(a.shape)
                o += a.size

    # --- the iteration -----------------------------------------------------------------------
    def reduce(self, solver: SolverLike, loss: float,
               outputs: bool = False) -> Tuple[float, Optional[Dict[str, NDArray[Any]]], Optional[str]]:
        """The one Allreduce of an iteration, after the forward/backward passes: sums the param
        diffs, averages the BatchNorm statistics, the loss and (``outputs``) the net's outputs,
        agrees on a requested stop/snapshot. Returns (mean loss, {output: mean values} or None,
        agreed action) and sets ``solver.requested_action`` to that action."""
        net = solver.net
        grads = [p.blob for p in net.learnables if p.lr_mult != 0]
        stats = _batch_norm_stats(net)
        outs = [net.blobs[n] for n in net.outputs] if outputs else []
        local = solver.pending_action or solver.requested_action
        solver.pending_action = None
        head = np.empty(3 + sum(b.count() for b in outs), np.float64)
        head[0] = loss
        head[1:3] = _ACTIONS[local]
        o = 3
        for b in outs:
            head[o:o + b.count()] = b.cpu_data().ravel()
            o += b.count()
        n_grad = sum(b.count() for b in grads)
        n_stat = sum(b.count() for b in stats)
        n = n_grad + n_stat + head.size
        dtype = grads[0].dtype if grads else net.learnable_params[0].dtype if net.learnable_params \
            else np.dtype(np.float32)
        t0 = time.perf_counter()
        if self.cuda_aware and backend.mode() == backend.GPU:
            tail = self._reduce_device(grads, stats, head, n, dtype)
        else:
            tail = self._reduce_host(grads, stats, head, n, dtype)
        seconds = time.perf_counter() - t0
        self._times.append(seconds)
        self.last_reduce = {"values": n, "bytes": n * dtype.itemsize, "seconds": seconds}
        s = n_grad
        for b in stats:
            b.data[...] = (tail[s - n_grad:s - n_grad + b.count()] / self.size).reshape(b.shape)
            s += b.count()
        tail = tail[n_stat:].astype(np.float64) / self.size
        stop, snap = tail[1] > 0, tail[2] > 0
        action = "stop_snapshot" if stop and snap else "stop" if stop else \
            "snapshot" if snap else None
        solver.requested_action = action
        means, o = None, 3
        if outs:
            means = {}
            for name, b in zip(net.outputs, outs):
                means[name] = tail[o:o + b.count()]
                o += b.count()
        return float(tail[0]), means, action

    def _buffer(self, n, dtype):
        if self._host is None or self._host.size < n or self._host.dtype != dtype:
            self._host = np.empty(n, dtype)
        return self._host[:n]

    def _allreduce(self, buf):
        self.comm.Allreduce(self.mpi.IN_PLACE, buf, op=self.mpi.SUM)

    def _reduce_host(self, grads, stats, head, n, dtype):
        buf = self._buffer(n, dtype)
        o = _pack(buf, [b.cpu_diff() for b in grads])
        o = _pack(buf, [b.cpu_data() for b in stats], o)
        buf[o:] = head
        self._allreduce(buf)
        o = 0
        for b in grads:
            b.diff[...] = buf[o:o + b.count()].reshape(b.shape)
            o += b.count()
        return buf[o:].copy()

    def _reduce_device(self, grads, stats, head, n, dtype):
        cuda = backend.cuda()
        if self._dev is None or self._dev.size < n or self._dev.dtype != dtype:
            self._dev = cuda.device_array(n, dtype)
        dev = self._dev[:n]
        o = 0
        for b in grads:
            dev[o:o + b.count()].copy_to_device(b.gpu_diff(False))
            o += b.count()
        host_tail = np.empty(n - o, dtype)
        _pack(host_tail, [b.cpu_data() for b in stats])
        host_tail[host_tail.size - head.size:] = head
        dev[o:].copy_to_device(host_tail)
        cuda.synchronize()
        self._allreduce(dev)
        o = 0
        for b in grads:
            b.gpu_diff().copy_to_device(dev[o:o + b.count()])
            o += b.count()
        dev[o:].copy_to_host(host_tail)
        return host_tail

    def comm_summary(self) -> str:
        """'N values (M MB), T ms an iteration' over the reduces since the last call: the
        time in ``reduce``, waiting for the slowest rank included."""
        if not self._times:
            return ""
        t = 1000 * sum(self._times) / len(self._times)
        self._times = []
        r = self.last_reduce
        return "%d values (%.1f MB), %.1f ms an iteration (with waiting for the slowest rank)" \
            % (r["values"], r["bytes"] / 1e6, t)

    # --- failure -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def abort_on_error(self, prog: str = "train") -> Iterator[DataParallel]:
        """Any exception in the block prints ``prog: error: rank R of N failed: ...`` (with the
        traceback unless it is a CaffeError) and calls MPI_Abort, which ends every rank: a
        failing rank never leaves the others waiting in a collective."""
        try:
            yield self
        except BaseException as exc:
            if isinstance(exc, SystemExit) and exc.code in (None, 0):
                raise
            text = ""
            if not isinstance(exc, (CaffeError, OSError, KeyboardInterrupt, SystemExit)):
                text = traceback.format_exc()
            what = " ".join((str(exc) or type(exc).__name__).split())
            if isinstance(exc, KeyboardInterrupt):
                what = "interrupted"
            text += "%s: error: rank %d of %d failed: %s\n" % (prog, self.rank, self.size, what)
            # one write, then a moment for the launcher to forward it: MPI_Abort kills the
            # ranks at once and Hydra's proxy drops whatever it has not read from the pipe yet
            sys.stdout.flush()
            sys.stderr.write(text)
            sys.stderr.flush()
            if self.size > 1:
                time.sleep(0.5)
            code = 130 if isinstance(exc, KeyboardInterrupt) else 2
            self.comm.Abort(code)
            if self.mpi is not None and hasattr(self.mpi, "Get_version"):
                os._exit(code)  # MPI_Abort may return while the launcher tears the job down
            raise


def _pack(buf, arrays, o=0):
    for a in arrays:
        buf[o:o + a.size] = a.ravel()
        o += a.size
    return o


def _batch_norm_stats(net):
    """The running mean and variance sums of the train-mode BatchNorm layers."""
    return [b for layer in net.layers
            if layer.type == "BatchNorm" and not getattr(layer, "use_global_stats", False)
            for b in layer.blobs[:2]]

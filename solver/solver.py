"""The solver: Caffe's step loop (test, display, update, snapshot) and restore.

Per iteration (solver.cpp:Step): clear param diffs → test (at test_interval) → iter_size
forward/backward passes → smoothed loss → display → ApplyUpdate (lr → clip → /iter_size →
regularise → rule → ``w -= diff`` → ++iter) → snapshot. The iteration is handed to every layer
before each step (``net.set_iteration``): no global message bus.

The solver talks to a communicator, ``self.comm``: ``minicaffe.parallel.NullComm`` in one process,
the ``DataParallel`` handed as ``parallel`` for data-parallel training. After the passes its
``reduce`` sums the diffs over the ranks (one Allreduce; the identity for NullComm) and the update
divides by iter_size × ranks; rank 0 alone tests and writes snapshots.
"""
from __future__ import annotations

import contextlib
import glob
import json
import logging
import math
import os
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import DTypeLike, NDArray

from minicaffe import backend, protoio
from minicaffe.errors import CaffeError, ModelFileError
from minicaffe.net import Net
from minicaffe.parallel import DataParallel, NullComm
from minicaffe.proto import caffe_pb2
from minicaffe.protoio import blobproto_bytes, blobproto_to_array
from minicaffe.threads import Governor

from .lr_policy import check_policy, learning_rate
from .updates import RULES, GPUUpdater, apply_rule, check_solver_param

log = logging.getLogger("minicaffe")


class TrainingDiverged(CaffeError):
    """The loss became NaN or infinite."""


def _resolve(path, solver_path):
    """A net path as Caffe resolves it (the cwd), else relative to the solver file."""
    if os.path.exists(path) or not solver_path:
        return path
    alt = os.path.join(os.path.dirname(os.path.abspath(solver_path)), path)
    return alt if os.path.exists(alt) else path


def check_values(p):
    """The SolverParameter values Caffe refuses (solver.cpp:Init CHECKs the train net count
    and average_loss >= 1) and those it takes but that only make sense as non-negative counts
    (iter_size 0 divides by zero; a negative max_iter, snapshot, display or test_iter is a
    typo). Each message names the field and the value."""
    sources = sum(p.HasField(f) for f in ("train_net_param", "train_net", "net_param", "net"))
    if sources != 1:
        raise CaffeError("no net specified: give exactly one of net, net_param, train_net or "
                         "train_net_param" if not sources else
                         "give exactly one of net, net_param, train_net or train_net_param "
                         "(found %d)" % sources)
    if p.average_loss < 1:
        raise CaffeError("average_loss must be >= 1, got %d" % p.average_loss)
    if p.iter_size < 1:
        raise CaffeError("iter_size must be >= 1, got %d" % p.iter_size)
    for field in ("max_iter", "snapshot", "display", "test_interval"):
        if getattr(p, field) < 0:
            raise CaffeError("%s must be >= 0 (0: never), got %d" % (field, getattr(p, field)))
    if any(n < 0 for n in p.test_iter):
        raise CaffeError("test_iter must be >= 0, got %s" % ", ".join(map(str, p.test_iter)))
    if p.clip_gradients < 0 and p.clip_gradients != -1:
        raise CaffeError("clip_gradients must be >= 0 (the largest L2 norm of the gradients) or "
                         "-1 (the default: no clipping), got %g" % p.clip_gradients)
    if p.snapshot_format == caffe_pb2.SolverParameter.HDF5 and p.HasField("snapshot_format"):
        raise CaffeError("snapshot_format: HDF5 is not supported; use BINARYPROTO")


class Solver:
    """``Solver(solver_prototxt_or_SolverParameter)``; pycaffe's attributes: ``net``,
    ``test_nets``, ``iter``, ``step(n)``, ``solve()``, ``restore()``, ``snapshot()``,
    ``add_callback(on_start, on_gradients_ready)``. ``parallel``: a
    ``minicaffe.parallel.DataParallel`` for data-parallel training (test nets are built on
    rank 0 only). ``source``: the file a SolverParameter was read from (its errors name it and
    its relative net paths resolve beside it), so a caller that has read the file need not
    read it again."""

    def __init__(self, solver: Union[Union[str, "os.PathLike[str]"], Any], *,
                 weights: Union[str, Sequence[str], None] = None, level: Optional[int] = None,
                 stages: Optional[Sequence[str]] = None, dtype: DTypeLike = np.float32,
                 type_override: Optional[str] = None, parallel: Optional[DataParallel] = None,
                 source: Optional[Union[str, "os.PathLike[str]"]] = None) -> None:
        if isinstance(solver, caffe_pb2.SolverParameter):
            p = caffe_pb2.SolverParameter()
            p.CopyFrom(solver)
            self.solver_path = os.fspath(source) if source else ""
        else:
            self.solver_path = os.fspath(solver)
            p = protoio.read_solver_param(self.solver_path)
        if type_override:
            p.type = type_override
        try:
            check_values(p)
            check_solver_param(p)
            check_policy(p)
        except CaffeError as exc:
            raise type(exc)("%s: %s" % (self.solver_path or "<SolverParameter>", exc)) from None
        if level is not None:
            for st in [p.train_state] + list(p.test_state):
                st.level = level
        if stages:
            for st in [p.train_state] + list(p.test_state):
                del st.stage[:]
                st.stage.extend(stages)
        if weights:
            del p.weights[:]
            p.weights.extend(weights if isinstance(weights, (list, tuple)) else [weights])
        self.param = p
        self.dtype = np.dtype(dtype)
        self.rule, self.num_histories = RULES[p.type]
        self.comm: Union[NullComm, DataParallel] = parallel or NullComm()
        self._thread_governor: Union[Governor, None, Literal[False]] = None   # False: off
        seed = self.comm.agree_seed(p.random_seed)
        if seed >= 0:
            backend.set_random_seed(seed)
        self.iter = 0
        self.current_step = 0
        self.callbacks: List[Tuple[Optional[Callable[[], Any]], Optional[Callable[[], Any]]]] = []
        self.iteration_callbacks: List[Callable[[Solver], Any]] = []
        self.requested_action: Optional[str] = None   # "stop" or "snapshot", set by signal handlers
        self._interrupted = False      # Ctrl-C from the Python API during step()
        self.pending_action: Optional[str] = None     # a signal's request, until the ranks agree on it
        self.last_snapshot: Optional[Tuple[str, str]] = None
        self._losses: List[float] = []
        self._smoothed_loss = 0.0
        # seconds in each phase of the iterations so far (logged after solve; tools/reproduce
        # keeps it in each training's log); data waiting is inside forward
        self.time_split: Dict[str, float] = dict.fromkeys(
            ("forward", "backward", "update", "test", "snapshot"), 0.0)
        if self.is_root and p.snapshot:   # as Caffe: not for snapshot_after_train alone
            self._check_snapshot_prefix(self.snapshot_filename(".caffemodel"))   # fail before training
        self.net: Net = self._init_train_net()
        self.test_nets: List[Net] = self._init_test_nets() if self.is_root else []
        for w in p.weights if self.is_root else []:
            for n in [self.net] + self.test_nets:
                n.copy_from(w)
        self.comm.setup(self.net)
        self.history: List[NDArray[Any]] = [np.zeros(b.shape, self.dtype) for b in self.net.learnable_params]
        self.history2: List[NDArray[Any]] = ([np.zeros(b.shape, self.dtype) for b in self.net.learnable_params]
                         if self.num_histories == 2 else [])

    @property
    def type(self) -> str:
        return self.param.type

    @property
    def is_root(self) -> bool:
        """False on the ranks of a data-parallel job other than 0 (they neither log, test nor
        write snapshots)."""
        return self.comm.root

    # --- nets --------------------------------------------------------------------------------
    def _read_net(self, inline=None, path=None):
        """(NetParameter, the file it is written in): a net file resolved as Caffe does, or a
        net_param written inside the solver file (None for a SolverParameter object)."""
        if inline is not None:
            return protoio.read_net_param(inline), self.solver_path or None
        path = _resolve(path, self.solver_path)
        return protoio.read_net_param(path), path

    def _init_train_net(self):
        p = self.param
        if p.HasField("train_net_param"):   # exactly one is set (check_values)
            np_, source = self._read_net(inline=p.train_net_param)
        elif p.HasField("train_net"):
            np_, source = self._read_net(path=p.train_net)
        elif p.HasField("net_param"):
            np_, source = self._read_net(inline=p.net_param)
        else:
            np_, source = self._read_net(path=p.net)
        state = caffe_pb2.NetState()
        state.phase = caffe_pb2.TRAIN
        state.MergeFrom(np_.state)
        state.MergeFrom(self.param.train_state)
        log.info("Creating training net%s", " from net file: " + self.param.net if self.param.net else "")
        return Net(np_, state=state, dtype=self.dtype, source=source)

    def _init_test_nets(self):
        p = self.param
        where = self.solver_path or "<SolverParameter>"
        generic = int(p.HasField("net_param")) + int(p.HasField("net"))
        sources = [self._read_net(inline=x) for x in p.test_net_param]
        sources += [self._read_net(path=x) for x in p.test_net]
        n_specific = len(sources)
        if (len(p.test_iter) < n_specific) if generic else (len(p.test_iter) != n_specific):
            raise CaffeError("%s: test_iter must be specified for each test network (%d test "
                             "net(s) from test_net/test_net_param%s, %d test_iter)"
                             % (where, n_specific, " plus one per extra test_iter from net"
                                if generic else "", len(p.test_iter)))
        n_generic = len(p.test_iter) - n_specific
        if n_generic:
            base = (self._read_net(inline=p.net_param) if p.HasField("net_param")
                    else self._read_net(path=p.net))
            sources += [base] * n_generic
        if p.test_state and len(p.test_state) != len(sources):
            raise CaffeError("%s: test_state must be unspecified or specified once per test net "
                             "(%d test_state, %d test nets)" % (where, len(p.test_state), len(sources)))
        if sources and p.test_interval <= 0:
            raise CaffeError("%s: test_interval must be > 0 when there are test nets (%d test "
                             "net(s), test_interval: %d)" % (where, len(sources), p.test_interval))
        nets = []
        for i, (src, source) in enumerate(sources):
            state = caffe_pb2.NetState()
            state.phase = caffe_pb2.TEST
            state.MergeFrom(src.state)
            if p.test_state:
                state.MergeFrom(p.test_state[i])
            log.info("Creating test net (#%d) specified by %s", i,
                     "test_net_param" if i < len(p.test_net_param) else
                     "test_net file" if i < n_specific else "net")
            nets.append(Net(src, state=state, dtype=self.dtype, source=source))
        return nets

    # --- callbacks ---------------------------------------------------------------------------
    def add_callback(self, on_start: Optional[Callable[[], Any]] = None,
                     on_gradients_ready: Optional[Callable[[], Any]] = None) -> None:
        """pycaffe: ``on_start()`` before each iteration's passes, ``on_gradients_ready()``
        before the update. The step clears the param diffs lazily, so ``on_start`` reads them
        through ``blob.diff`` (zeros), not through an array kept from an earlier iteration."""
        self.callbacks.append((on_start, on_gradients_ready))

    def add_iteration_callback(self, fn: Callable[[Solver], Any]) -> None:
        """``fn(solver)`` after each completed iteration (after the update and snapshot)."""
        self.iteration_callbacks.append(fn)

    # --- the loop ----------------------------------------------------------------------------
    def step(self, iters: int) -> None:
        """Run ``iters`` iterations. Ctrl-C from the Python API (no handler of the tool's
        installed, main thread) behaves as tools/train's default: the iteration finishes, a
        snapshot is written, then KeyboardInterrupt is raised; a second Ctrl-C interrupts at
        once."""
        with self._api_sigint():
            self._step(iters)
        if self._interrupted:
            if self.requested_action == "stop_snapshot" or self.pending_action == "stop_snapshot":
                self.snapshot()   # the signal came during the last iteration
            self._interrupted = False
            self.requested_action = self.pending_action = None
            raise KeyboardInterrupt("stopped at iteration %d after writing %s"
                                    % (self.iter, self.last_snapshot[1] if self.last_snapshot
                                       else "no snapshot (not rank 0)"))

    @contextlib.contextmanager
    def _api_sigint(self):
        """SIGINT → snapshot then stop, while ``step`` runs, unless someone else (tools/train's
        install_signal_handlers, the application) handles SIGINT already."""
        self._interrupted = False
        if (threading.current_thread() is not threading.main_thread()
                or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
            yield
            return

        def handler(signum, frame):
            if self._interrupted:
                raise KeyboardInterrupt
            self._interrupted = True
            log.info("SIGINT received: snapshot then stop after this iteration (Ctrl-C again "
                     "to stop at once)")
            self.comm.request(self, "stop_snapshot")

        signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    @property
    def thread_governor(self) -> Optional[Governor]:
        """The thread Governor of this solver's iterations (minicaffe/threads.py), or None
        where it is off; made at the first ``step``."""
        if self._thread_governor is None:
            gov = self.comm.thread_governor(log)
            self._thread_governor = gov or False
        return self._thread_governor or None

    def _step(self, iters):
        gov = self.thread_governor
        if gov is None:
            return self._iterate(iters, None)
        gov.resume()
        try:
            return self._iterate(iters, gov)
        finally:
            gov.pause()

    def _iterate(self, iters, gov):
        p = self.param
        start_iter = self.iter
        stop_iter = self.iter + iters
        self._losses, self._smoothed_loss = [], 0.0
        t0, iter_t0 = time.time(), self.iter
        while self.iter < stop_iter:
            self.net.clear_param_diffs_lazily()   # apply_update reads every diff: none stays pending
            if p.test_interval and self.iter % p.test_interval == 0 and \
                    (self.iter > 0 or p.test_initialization):
                self.test_all()
                if self.requested_action == "stop":
                    break
            t_compute = gov.clock() if gov else 0.0   # the Governor times the compute only
            for on_start, _ in self.callbacks:
                if on_start:
                    on_start()
            self.net.set_iteration(self.iter)
            display = p.display and self.iter % p.display == 0
            loss = 0.0
            split = self.time_split
            for _ in range(max(1, p.iter_size)):
                t_f = time.perf_counter()
                loss += self.net.forward_prefilled()
                t_b = time.perf_counter()
                self.net.backward_prefilled()
                split["forward"] += t_b - t_f
                split["backward"] += time.perf_counter() - t_b
            loss /= max(1, p.iter_size)
            loss, outputs, _ = self.comm.reduce(self, loss, outputs=bool(display))
            if not math.isfinite(loss):
                self._diverged(loss)
            self._update_smoothed_loss(loss, start_iter, p.average_loss)
            if display:
                dt = time.time() - t0
                rate = (self.iter - iter_t0) / dt if dt > 0 and self.iter > iter_t0 else 0.0
                per = dt / (self.iter - iter_t0) * p.display if self.iter > iter_t0 else 0.0
                eta = ""
                if rate > 0:
                    left = (self.param.max_iter - self.iter) / rate
                    eta = ", ETA %s" % _hms(max(0.0, left))
                log.info("Iteration %d (%.4g iter/s, %.4gs/%d iters), loss = %.6g%s",
                         self.iter, rate, per, p.display, self._smoothed_loss, eta)
                t0, iter_t0 = time.time(), self.iter
                self._log_outputs(self.net, "Train", outputs)
                if self.comm.distributed:
                    log.info("    Allreduce over %d ranks: %s", self.comm.size,
                             self.comm.comm_summary())
            for _, on_grad in self.callbacks:
                if on_grad:
                    on_grad()
            t_u = time.perf_counter()
            self.apply_update()
            split["update"] += time.perf_counter() - t_u
            if gov:
                gov.record(gov.clock() - t_compute)
            if self.requested_action == "snapshot":
                self.snapshot()
                self.requested_action = None
            elif self.requested_action == "stop_snapshot":
                self.snapshot()
                self.requested_action = "stop"
            elif p.snapshot and self.iter % p.snapshot == 0:
                self.snapshot()
            for fn in self.iteration_callbacks:
                fn(self)
            if self.requested_action == "stop":
                break

    def solve(self, resume_file: Optional[Union[str, "os.PathLike[str]"]] = None) -> None:
        p = self.param
        log.info("Solving %s", self.net.name)
        log.info("Learning Rate Policy: %s", p.lr_policy)
        if resume_file:
            log.info("Restoring previous solver status from %s", resume_file)
            self.restore(resume_file)
        self.step(p.max_iter - self.iter)
        if self.requested_action == "stop":
            log.info("Optimization stopped early.")
            return
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self.snapshot()
        if p.display and self.iter % p.display == 0:
            loss = self.comm.mean(self.net.forward_prefilled())
            log.info("Iteration %d, loss = %.6g", self.iter, loss)
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        self._log_time_split()
        log.info("Optimization Done.")

    def data_wait(self) -> float:
        """Seconds the train net's forward passes waited for their data layers' batches."""
        return sum(getattr(n.layer, "data_wait", 0.0) for n in self.net.nodes)

    def _log_time_split(self) -> None:
        t = self.time_split
        log.info("Time split: forward %.1f s (waiting for data %.1f s), backward %.1f s, update "
                 "%.1f s, testing %.1f s, snapshots %.1f s", t["forward"], self.data_wait(),
                 t["backward"], t["update"], t["test"], t["snapshot"])

    def _update_smoothed_loss(self, loss, start_iter, average_loss):
        n = max(1, average_loss)
        if len(self._losses) < n:
            self._losses.append(loss)
            k = len(self._losses)
            self._smoothed_loss = (self._smoothed_loss * (k - 1) + loss) / k
        else:
            idx = (self.iter - start_iter) % n
            self._smoothed_loss += (loss - self._losses[idx]) / n
            self._losses[idx] = loss

    @property
    def smoothed_loss(self) -> float:
        return self._smoothed_loss

    def _log_outputs(self, net, kind, sums):
        k = 0
        for name in net.outputs:
            w = net.blob_loss_weights.get(name, 0.0)
            vals = net.blobs[name].cpu_data().ravel() if sums is None else sums[name]
            for v in vals:
                extra = " (* %g = %g loss)" % (w, w * v) if w else ""
                log.info("    %s net output #%d: %s = %.6g%s", kind, k, name, v, extra)
                k += 1

    def _diverged(self, loss):
        bad = None
        for node in self.net.nodes:
            if any(not np.all(np.isfinite(t.cpu_data())) for t in node.tops):
                bad = node.name
                break
        self.net.clear_param_diffs()
        path = self.snapshot()  # the weights are still those of the last finite step
        raise TrainingDiverged(
            "Loss is %s at iteration %d; the first layer whose output is not finite is %s. %s"
            % (loss, self.iter, "'%s'" % bad if bad else "none (the loss layer itself)",
               "The last finite state was written to %s." % path[1] if path else ""))

    # --- update ------------------------------------------------------------------------------
    def get_learning_rate(self) -> float:
        rate, self.current_step = learning_rate(self.param, self.iter, self.current_step)
        return rate

    def apply_update(self) -> None:
        p = self.param
        rate = self.get_learning_rate()
        if p.display and self.iter % p.display == 0:
            log.info("Iteration %d, lr = %.6g", self.iter, rate)
        params = self.net.learnable_params
        n_passes = max(1, p.iter_size) * self.comm.size
        if p.clip_gradients >= 0:  # where the diffs are: the blobs' own sumsq / scale
            norm = math.sqrt(sum(b.sumsq_diff() for b in params))
            if norm > p.clip_gradients:
                factor = p.clip_gradients / norm
                log.info("Gradient clipping: scaling down gradients (L2 norm %g > %g) by scale "
                         "factor %g", norm, p.clip_gradients, factor)
                for b in params:
                    b.scale_diff(factor)
        device = backend.mode() == backend.GPU
        if device and getattr(self, "_gpu_updater", None) is None:
            self._gpu_updater = GPUUpdater(self.history, self.history2)
        for i, learnable in enumerate(self.net.learnables):   # the records: no list per access
            b = learnable.blob
            if device:
                w, g = b.gpu_data(), b.gpu_diff()
                h, h2 = self._gpu_updater.arrays(i)
            else:
                w, g = b.data.reshape(-1), b.diff.reshape(-1)
                h = self.history[i].reshape(-1)
                h2 = self.history2[i].reshape(-1) if self.history2 else None
            apply_rule(p, self.rule, w, g, h, h2, 1.0 / n_passes,
                       p.weight_decay * learnable.decay_mult,
                       rate * learnable.lr_mult, self.iter + 1, device)
        self.iter += 1

    @property
    def lr(self) -> float:
        """pycaffe's SGDSolver.lr: the learning rate of the current iteration (reading it
        changes nothing, unlike Caffe's GetLearningRate under multistep)."""
        return learning_rate(self.param, self.iter, self.current_step)[0]

    def share_weights(self, net: Net) -> None:
        """pycaffe's Solver.share_weights: ``net``'s same-named layers alias the train net's
        weights (ShareTrainedLayersWith)."""
        net.share_with(self.net)

    # --- testing -----------------------------------------------------------------------------
    def test_all(self) -> None:
        if not self.is_root:
            return
        t0 = time.perf_counter()
        for i in range(len(self.test_nets)):
            self.test(i)
        self.time_split["test"] += time.perf_counter() - t0

    def test(self, i: int) -> Dict[str, Any]:
        p = self.param
        log.info("Iteration %d, Testing net (#%d)", self.iter, i)
        net = self.test_nets[i]
        net.share_with(self.net)
        sums: Dict[str, Any] = {}
        loss = 0.0
        for _ in range(p.test_iter[i]):
            iter_loss = net.forward_prefilled()
            if p.test_compute_loss:
                loss += iter_loss
            for name in net.outputs:
                v = net.blobs[name].cpu_data().astype(np.float64).ravel()
                sums[name] = sums.get(name, 0) + v
        n = max(1, p.test_iter[i])
        if p.test_compute_loss:
            log.info("Test loss: %g", loss / n)
        means = {k: v / n for k, v in sums.items()}
        self._log_outputs(net, "Test", means)
        self.last_test_results = getattr(self, "last_test_results", {})
        self.last_test_results[i] = {k: (v[0] if v.size == 1 else v) for k, v in means.items()}
        return self.last_test_results[i]

    # --- snapshots ---------------------------------------------------------------------------
    def snapshot_filename(self, ext: str) -> str:
        return "%s_iter_%d%s" % (self.param.snapshot_prefix, self.iter, ext)

    def snapshot(self) -> Optional[Tuple[str, str]]:
        """Write ``<prefix>_iter_N.caffemodel`` and ``.solverstate`` (atomically); return both
        paths. The .solverstate is written last and names its .caffemodel, so the newest
        .solverstate always marks the newest complete pair (a crash between the two leaves a
        .caffemodel alone, never a state without its weights; restore refuses a state whose
        model is gone). Temporary files left by a killed write are removed first. Any fault
        is a ModelFileError naming the path. Data-parallel: every rank calls it, rank 0 writes
        (None elsewhere), and no rank goes on before the files are complete."""
        t0 = time.perf_counter()
        try:
            return self._write_snapshot()
        finally:
            self.time_split["snapshot"] += time.perf_counter() - t0

    def _write_snapshot(self) -> Optional[Tuple[str, str]]:
        extra = self._extra_state()
        if not self.is_root:
            self.comm.barrier()
            return None
        model = self.snapshot_filename(".caffemodel")
        self._prepare_snapshot_dir(model)
        log.info("Snapshotting to binary proto file %s", model)
        self.net.save(model, write_diff=self.param.snapshot_diff)
        state_path = self.snapshot_filename(".solverstate")
        log.info("Snapshotting solver state to binary proto file %s", state_path)
        st = caffe_pb2.SolverState()
        st.iter = self.iter
        st.learned_net = model
        st.current_step = self.current_step
        if getattr(self, "_gpu_updater", None) is not None:
            self._gpu_updater.to_host()   # the histories live on the device in GPU mode
        for h in self.history + self.history2:
            st.history.add().MergeFromString(blobproto_bytes(h))
        st.minicaffe_state = json.dumps(extra, default=_jsonable).encode()
        protoio.write_proto_binary(state_path, st)
        self.last_snapshot = (model, state_path)
        self.comm.barrier()
        return model, state_path

    def _check_snapshot_prefix(self, model):
        """The checks of Caffe's CheckSnapshotWritePermissions without writing anything: the
        nearest existing folder on the way to ``model`` is a folder and writable."""
        prefix = "snapshot_prefix %r" % self.param.snapshot_prefix
        probe = os.path.dirname(os.path.abspath(model))
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        if not os.path.isdir(probe):
            raise ModelFileError("Cannot write snapshot %s: %s is a regular file, not a folder "
                                 "(%s)" % (model, probe, prefix))
        if not os.access(probe, os.W_OK):
            raise ModelFileError("Cannot write snapshot %s: the folder %s is not writable (%s)"
                                 % (model, probe, prefix))

    def _prepare_snapshot_dir(self, model):
        """Create the snapshot folder (ModelFileError naming the path when it cannot be: a
        regular file in the way of snapshot_prefix's folder) and remove the temporary files of
        earlier snapshots of this prefix that a killed process left behind."""
        d = os.path.dirname(model) or "."
        prefix = "snapshot_prefix %r" % self.param.snapshot_prefix
        self._check_snapshot_prefix(model)
        try:
            os.makedirs(d, exist_ok=True)
        except OSError as exc:
            raise ModelFileError("Cannot write snapshot %s: cannot create the folder %s: %s (%s)"
                                 % (model, d, exc.strerror or exc, prefix)) from None
        base = glob.escape(os.path.basename(self.param.snapshot_prefix))
        for ext in (".caffemodel", ".solverstate"):
            for stale in glob.glob(os.path.join(glob.escape(d), ".%s_iter_*%s.*.tmp" % (base, ext))):
                try:
                    os.unlink(stale)
                    log.info("Removed %s, left by an interrupted snapshot", stale)
                except OSError:
                    pass

    def _extra_state(self):
        """The generator and the data positions (None on ranks other than 0, which only hand
        rank 0 their generator's state: the data positions are equal on all ranks)."""
        rank_rngs = self.comm.gather(backend.rng_state())
        if not self.is_root:
            return None
        layers = {}
        for key, layer in self._all_layers():
            s = layer.get_state()
            if s is not None:
                layers[key] = s
        extra = {"rng": backend.rng_state(), "layers": layers}
        if self.comm.distributed:   # one process: its generator is "rng"
            extra["rank_rngs"] = rank_rngs
        return extra

    def restore(self, state_file: Union[str, "os.PathLike[str]"]) -> None:
        """Resume from a .solverstate: iteration, lr step, histories, the weights it names and
        (minicaffe's extension) the generator and data positions. The whole file and the model
        it names are read and checked first: a ModelFileError leaves the solver as it was.
        Data-parallel: rank 0 reads the files and hands everything to the other ranks."""
        hist = self.history + self.history2
        it = step = extra = None
        if self.is_root:
            state = _read_solverstate(state_file, hist, self.param.type)
            plan = self.net.copy_plan(state["model"]) if state["model"] else []
            if state["extra"]:
                self._restore_extra(state["extra"], state_file)   # undone if it fails
            for blob, arr in plan:
                blob.data[...] = arr
            for h, a in zip(hist, state["history"]):
                h[...] = a
            it, step, extra = state["iter"], state["current_step"], state["extra"]
        it, step, extra = self.comm.bcast((it, step, extra))
        self.comm.broadcast_blobs(self.net.learnable_params)
        self.comm.broadcast_arrays(hist)
        if not self.is_root and extra:
            self._restore_extra(extra, state_file)
        self.iter, self.current_step = it, step
        if getattr(self, "_gpu_updater", None) is not None:
            self._gpu_updater.from_host()

    def _all_layers(self):
        """(key, layer) for every layer of the train and test nets, keys as in field 8001."""
        for net_name, net in [("train", self.net)] + [("test%d" % i, n) for i, n in enumerate(self.test_nets)]:
            for node in net.nodes:
                yield "%s/%s" % (net_name, node.name), node.layer

    def _restore_extra(self, extra, state_file):
        """The generator and the layers' data positions from field 8001; all or nothing (a
        state a layer refuses puts every generator and layer back and raises)."""
        saved_rng = backend.rng_state()
        layer_states = extra.get("layers", {})
        saved = [(key, layer, layer.get_state()) for key, layer in self._all_layers()
                 if key in layer_states]
        key = "rng"
        try:
            rank_rngs = extra.get("rank_rngs")
            if rank_rngs and len(rank_rngs) == self.comm.size:
                backend.set_rng_state(rank_rngs[self.comm.rank])
            elif "rng" in extra:
                backend.set_rng_state(extra["rng"])
                self.comm.fork_rng()   # a state of another rank count: a stream per rank again
            for key, layer, _ in saved:
                layer.set_state(layer_states[key])
        except Exception as exc:  # noqa: BLE001 - any refusal is a bad file, undone below
            backend.set_rng_state(saved_rng)
            for _, layer, old in saved:   # set_state(what get_state gave) puts a layer back
                layer.set_state(old)
            raise ModelFileError("%s: field 8001 (minicaffe_state): the state for %s does not "
                                 "fit (%s: %s); nothing was restored"
                                 % (state_file, key, type(exc).__name__, exc)) from None

    # --- signals -----------------------------------------------------------------------------
    def install_signal_handlers(self, sigint_effect: str = "snapshot", sighup_effect: str = "snapshot") -> None:
        """Ctrl-C / SIGHUP: finish the current iteration, then snapshot and/or stop."""
        actions = {"stop": "stop", "snapshot": "stop_snapshot", "none": None}

        def handler_for(effect, alt):
            def handler(signum, frame):
                act = actions[effect] if effect in actions else None
                if signum == getattr(signal, "SIGHUP", None) and effect == "snapshot":
                    act = "snapshot"  # SIGHUP snapshots and goes on, as in Caffe
                if act:
                    log.info("%s received: %s after this iteration",
                             signal.Signals(signum).name, act.replace("_", " then "))
                    self.comm.request(self, act)
            return handler

        for eff in (sigint_effect, sighup_effect):
            if eff not in actions:
                raise CaffeError("signal effect must be stop, snapshot or none, got %r" % eff)
        signal.signal(signal.SIGINT, handler_for(sigint_effect, None))
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, handler_for(sighup_effect, None))


def _read_solverstate(state_file, hist, solver_type):
    """Everything ``Solver.restore`` needs from a .solverstate, checked before anything is
    changed: {"iter", "current_step", "history" (arrays shaped as ``hist``), "model" (the
    .caffemodel it names, found as Caffe does or beside the state file; None if it names
    none), "extra" (field 8001 as a dict, or None)}. Any fault is a ModelFileError naming the
    file."""
    st = protoio.read_proto_binary(state_file, caffe_pb2.SolverState)
    if len(st.history) != len(hist):
        raise ModelFileError("%s: incorrect length of history blobs (%d in the file, the %s "
                             "solver on this net needs %d)"
                             % (state_file, len(st.history), solver_type, len(hist)))
    arrays = []
    for i, (h, proto) in enumerate(zip(hist, st.history)):
        try:
            a = blobproto_to_array(proto)
        except CaffeError as exc:
            raise ModelFileError("%s: history blob %d: %s" % (state_file, i, exc)) from None
        if a.size != h.size:
            raise ModelFileError("%s: history blob %d has %d values, the net's param has %d"
                                 % (state_file, i, a.size, h.size))
        arrays.append(a.reshape(h.shape).astype(h.dtype, copy=False))
    if st.iter < 0 or st.current_step < 0:
        raise ModelFileError("%s: iter (%d) and current_step (%d) must be >= 0"
                             % (state_file, st.iter, st.current_step))
    model = None
    if st.learned_net:
        model = st.learned_net
        if not os.path.exists(model):
            alt = os.path.join(os.path.dirname(os.path.abspath(state_file)),
                               os.path.basename(model))
            if not os.path.exists(alt):
                raise ModelFileError("%s: the model it names, %s, is missing (looked there and "
                                     "beside the state file)" % (state_file, st.learned_net))
            model = alt
    return {"iter": st.iter, "current_step": st.current_step, "history": arrays,
            "model": model, "extra": _parse_extra_state(st, state_file)}


def _parse_extra_state(st, state_file):
    """Field 8001 (minicaffe_state) as a dict {"rng": dict, "layers": {key: state},
    "rank_rngs": [dict]}, or None when absent; ModelFileError if it is not that."""
    if not st.HasField("minicaffe_state") or not st.minicaffe_state:
        return None
    where = "%s: field 8001 (minicaffe_state)" % state_file
    try:
        extra = json.loads(st.minicaffe_state.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ModelFileError("%s is not UTF-8 (%s)" % (where, exc)) from None
    except (ValueError, RecursionError) as exc:
        raise ModelFileError("%s is not valid JSON (%s)" % (where, exc)) from None
    if extra is None:
        return None
    if not isinstance(extra, dict):
        raise ModelFileError("%s must be a JSON object, got %s" % (where, type(extra).__name__))
    expected = {"rng": dict, "layers": dict, "rank_rngs": list}
    for key, value in extra.items():
        if key in expected and not isinstance(value, expected[key]):
            raise ModelFileError("%s: '%s' must be a JSON %s, got %s"
                                 % (where, key, "object" if expected[key] is dict else "array",
                                    type(value).__name__))
    if any(not isinstance(r, dict) for r in extra.get("rank_rngs", [])):
        raise ModelFileError("%s: 'rank_rngs' must hold JSON objects" % where)
    return extra


def _jsonable(obj):
    """NumPy arrays and scalars in layer states → JSON."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError("not JSON serialisable: %r" % type(obj))


def _hms(seconds):
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return "%d:%02d:%02d" % (h, m, s) if h else "%d:%02d" % (m, s)


def _typed(name):
    class Typed(Solver):
        def __init__(self, solver, **kw):
            super().__init__(solver, type_override=name, **kw)
    Typed.__name__ = Typed.__qualname__ = name + "Solver"
    Typed.__doc__ = "pycaffe's caffe.%sSolver(path): a Solver of type %s." % (name, name)
    return Typed


SGDSolver = _typed("SGD")
NesterovSolver = _typed("Nesterov")
AdaGradSolver = _typed("AdaGrad")
RMSPropSolver = _typed("RMSProp")
AdaDeltaSolver = _typed("AdaDelta")
AdamSolver = _typed("Adam")


def get_solver(path: Union[Union[str, "os.PathLike[str]"], Any], **kw: Any) -> Solver:
    """pycaffe's caffe.get_solver: a solver of the type the file names."""
    return Solver(path, **kw)

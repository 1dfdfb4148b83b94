"""How many compute threads minicaffe runs: the one place that decides it.

BLAS (OpenBLAS, MKL) and Numba each start a pool of threads when they load. Their default is
the machine's CPUs (OpenBLAS and Numba: the CPUs in this process's affinity mask), which is
too many in a container or a batch job with a CPU quota: 8 threads on a 2-CPU quota are
throttled in turns and run slower than 2. ``default_threads()`` is

- the value the user set, when any of ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
  ``MKL_NUM_THREADS``, ``NUMBA_NUM_THREADS`` is set (the first set, in that order); else
- ``usable_cores()``: the CPUs in ``os.sched_getaffinity(0)`` (``taskset``, ``numactl``,
  Slurm's binding, ``docker --cpuset-cpus``), capped by the cgroup CPU quota rounded up
  (``docker --cpus``, Kubernetes CPU limits, systemd ``CPUQuota``): ``cpu.max`` under cgroup
  v2, ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` under v1, the smallest along this
  process's cgroup and its parents.

``apply()`` runs when ``import minicaffe`` starts, before numpy and Numba load: it sets every
one of those four variables the user left unset to ``default_threads()`` (so a user's
``OMP_NUM_THREADS=1`` also limits Numba, which reads only ``NUMBA_NUM_THREADS``), and records
which it set in ``DEFAULTED``. Child processes inherit the values. A library that was loaded
before ``import minicaffe`` keeps its pool; then Numba is capped with ``numba.set_num_threads``
(in the importing thread) and BLAS through threadpoolctl when it is installed.

That count is the most threads minicaffe runs, not the count it always runs. On a busy machine
(another job on the cores) every Numba parallel region and every threaded BLAS call waits for
its slowest thread, and a descheduled thread makes a small net many times slower than one
thread would be. So while a ``Solver`` trains on the CPU (and while ``tools/time`` times), a
``Governor`` times the iterations and picks, among ``most, most/2, ..., 1`` threads, the count
that is fastest *now*: it tries each for a few iterations (6, or 1–2 for a clearly slower one),
compares their mean times (the rare 10× iterations of a descheduled thread belong to the
cost), runs the fastest for a window that doubles while the choice holds (16 → 512 iterations,
never so short that the trials' slow samples cost more than 5 % of the time), and tries again
at the window's end or as soon as the iterations get 1.5× slower or faster than just after it
chose (the load changed). The thread count does not change a result: every Numba kernel gives
the same bits at any count, and so does BLAS on most builds; where a probe finds that it does
not (``blas_same_bits``), the Governor sets Numba's threads (and the chunk workers) and BLAS
runs on one thread (tests/test_threads.py trains with the count switching under it). It stays
off when the user set a thread variable
(their count is kept), on one core, on the GPU and under MPI (parallel.py splits the cores).
"""
from __future__ import annotations

import contextlib
import math
import os
import statistics
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, MutableMapping, Optional, Tuple

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"

DEFAULTED: Dict[str, str] = {}   # {variable: value} that apply() set because the user had not
# apply() names the variables it set here, so that a child process (tools/reproduce's jobs,
# tools/benchmark's measurements, MPI ranks) knows they are minicaffe's default, not the user's;
# a program that sets a count for its children itself drops it (set_for_children)
MARKER = "MINICAFFE_DEFAULTED_THREADS"


def _count(text: object) -> Optional[int]:
    """A thread count from a variable's value (OpenMP's "4,2" nesting: its first level), or
    None for one that is not a positive number."""
    try:
        n = int(str(text).split(",")[0].strip())
    except ValueError:
        return None
    return n if n >= 1 else None


def user_threads(environ: Optional[Mapping[str, str]] = None) -> Optional[int]:
    """The thread count the user chose through THREAD_VARS (the first valid one set), or None.
    Variables that ``apply()`` set do not count."""
    environ = os.environ if environ is None else environ
    for var in THREAD_VARS:
        if environ.get(var) and DEFAULTED.get(var) != environ[var]:
            n = _count(environ[var])
            if n is not None:
                return n
    return None


def user_set(environ: Optional[Mapping[str, str]] = None) -> bool:
    """True when the user set any of THREAD_VARS (to anything): their choice, left alone."""
    environ = os.environ if environ is None else environ
    return any(environ.get(v) and DEFAULTED.get(v) != environ[v] for v in THREAD_VARS)


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _own_paths(proc_cgroup):
    """{"v2": path, "v1": path} of this process's cgroup in each hierarchy (/proc/self/cgroup:
    "0::/path" for v2, "N:cpu,cpuacct:/path" for v1's cpu controller)."""
    out = {}
    for line in (_read(proc_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            out["v2"] = parts[2]
        elif "cpu" in parts[1].split(","):
            out["v1"] = parts[2]
    return out


def _up(base, path):
    """``base``/``path`` and each parent folder up to ``base``; just ``base`` when ``path`` is
    not mounted there (a container that sees the host's cgroup path but its own mount)."""
    path = (path or "/").strip("/")
    dirs = []
    while path:
        d = os.path.join(base, path)
        if os.path.isdir(d):
            dirs.append(d)
        path = os.path.dirname(path)
    return dirs + [base]


def cgroup_cpu_limit(root: str = CGROUP_ROOT, proc_cgroup: str = PROC_CGROUP) -> Optional[float]:
    """The CPU quota of this process's cgroup in CPUs (a float: quota / period), the smallest
    along the cgroup and its parents over v2 and v1, or None when there is none ("max", -1, no
    cgroup files)."""
    own = _own_paths(proc_cgroup)
    limits = []
    for d in _up(root, own.get("v2")):
        fields = (_read(os.path.join(d, "cpu.max")) or "").split()
        if len(fields) == 2 and fields[0] != "max":
            try:
                limits.append(int(fields[0]) / int(fields[1]))
            except (ValueError, ZeroDivisionError):
                pass
    for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        base = os.path.join(root, name)
        if not os.path.isdir(base):
            continue
        for d in _up(base, own.get("v1")):
            try:
                quota = int(_read(os.path.join(d, "cpu.cfs_quota_us")) or "-1")
                period = int(_read(os.path.join(d, "cpu.cfs_period_us")) or "0")
            except ValueError:
                continue
            if quota > 0 and period > 0:
                limits.append(quota / period)
        break   # cpu and cpu,cpuacct are usually one mount and a link to it
    return min(limits) if limits else None


def affinity_cores() -> int:
    """The CPUs this process may run on (its affinity mask), or all of the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):   # not on Linux
        return max(1, os.cpu_count() or 1)


def usable_cores(root: str = CGROUP_ROOT, proc_cgroup: str = PROC_CGROUP) -> int:
    """The cores this process may use: its affinity mask, capped by the cgroup CPU quota
    (rounded up: 1.5 CPUs of quota -> 2 threads), at least 1."""
    n = affinity_cores()
    limit = cgroup_cpu_limit(root, proc_cgroup)
    if limit is not None:
        n = min(n, max(1, math.ceil(limit - 1e-9)))
    return n


def default_threads(environ: Optional[Mapping[str, str]] = None, root: str = CGROUP_ROOT,
                    proc_cgroup: str = PROC_CGROUP) -> int:
    """The compute threads to run: the user's THREAD_VARS value, else ``usable_cores()``."""
    n = user_threads(environ)
    return n if n is not None else usable_cores(root, proc_cgroup)


def set_for_children(environ: MutableMapping[str, str], n: int) -> None:
    """Give the child processes started with ``environ`` ``n`` threads, as their parent's
    choice: every THREAD_VARS variable, and no MARKER (so they keep the count: no Governor)."""
    for var in THREAD_VARS:
        environ[var] = str(n)
    environ.pop(MARKER, None)


def _inherit(environ):
    """DEFAULTED from a parent's MARKER ("2:OMP_NUM_THREADS,..."): the variables it lists that
    still hold its value were minicaffe's default there, so they are here."""
    value, _, names = environ.get(MARKER, "").partition(":")
    for var in names.split(","):
        if var in THREAD_VARS and environ.get(var) == value:
            DEFAULTED.setdefault(var, value)


def apply(environ: Optional[MutableMapping[str, str]] = None) -> int:
    """Set each THREAD_VARS variable the user left unset to ``default_threads()``; cap the
    pools of Numba and BLAS when they were loaded before. Returns the thread count."""
    environ = os.environ if environ is None else environ
    _inherit(environ)
    n = default_threads(environ)
    numba_loaded = environ is os.environ and "numba" in sys.modules
    for var in THREAD_VARS:
        if environ.get(var) and DEFAULTED.get(var) != environ[var]:
            continue   # the user's (even one we cannot parse: the library's to read)
        if var == "NUMBA_NUM_THREADS" and numba_loaded:
            continue   # a different value once its pool runs makes Numba's next compile fail
        environ[var] = DEFAULTED[var] = str(n)
    if not user_set(environ):   # the count is minicaffe's: its children may govern it too
        environ[MARKER] = "%d:%s" % (n, ",".join(THREAD_VARS))
    if environ is os.environ:
        _cap_loaded(n)
    return n


_BLAS = None   # threadpoolctl's controllers of the loaded BLAS libraries, found once


def _blas_controllers():
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController
            _BLAS = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
        except Exception:   # threadpoolctl is missing or cannot read a library
            _BLAS = []
    return _BLAS


def set_compute_threads(n: int) -> None:
    """Run Numba's parallel regions (from the calling thread) and BLAS calls on ``n`` threads
    (at most the pools' size). Cheap: a Governor calls it when it switches."""
    import numba
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    for c in _blas_controllers():
        c.set_num_threads(n)


@contextlib.contextmanager
def _blas_threads(n: int) -> Iterator[None]:
    """BLAS on ``n`` threads inside; each library's count before comes back after."""
    controllers = _blas_controllers()
    before = [c.num_threads for c in controllers]
    for c, b in zip(controllers, before):
        if b != n:
            c.set_num_threads(n)
    try:
        yield
    finally:
        for c, b in zip(controllers, before):
            if b != n:
                c.set_num_threads(b)


_FIXED: List[int] = []   # fixed_threads' counts, innermost last


@contextlib.contextmanager
def fixed_threads(n: int) -> Iterator[None]:
    """BLAS and Numba on ``n`` threads inside, and no Governor (``Governor.for_training`` is
    None): tools/reproduce's trainings, in its own process as in its one-thread workers. The
    counts before come back after."""
    import numba
    numba_before = numba.get_num_threads()
    _FIXED.append(n)
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    try:
        with _blas_threads(n):
            yield
    finally:
        _FIXED.pop()
        numba.set_num_threads(numba_before)


def set_numba_threads(n: int) -> None:
    """Run Numba's parallel regions (from the calling thread) and the chunk workers on ``n``
    threads, and BLAS on one: what a Governor sets where BLAS's bits depend on its thread
    count. BLAS must then not follow the count (with two threads it also fought the load:
    LeNet's "1 thread" iterations beside one busy process took 56 ms against 31 on one
    thread truly); the convolutions' products run on the chunk workers, one BLAS thread each."""
    import numba
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    for c in _blas_controllers():
        c.set_num_threads(1)


_SAME_BITS: Dict[Tuple[int, ...], bool] = {}
# sgemm shapes of the shipped nets' convolutions (output rows x depth x columns of a chunk)
_PROBE_SHAPES = ((16, 75, 13312), (32, 400, 2560), (64, 288, 3584))


def blas_same_bits(counts: Tuple[int, ...]) -> bool:
    """Whether BLAS's float32 products give the same bits at each of ``counts`` threads,
    probed once per process on three convolution-sized products (a few ms). OpenBLAS
    0.3.31 on a 2-core AMD EPYC gave different last bits at 1 and 2 threads, even for the
    same shapes; on another machine of the same kind it gave the same. True where threadpoolctl
    cannot set BLAS's count (then nothing changes it)."""
    key = tuple(sorted(set(counts)))
    if key not in _SAME_BITS:
        controllers = _blas_controllers()
        same = True
        if controllers and len(key) > 1:
            import numpy as np
            rng = np.random.default_rng(0)
            pairs = [(rng.standard_normal((m, k), np.float32),
                      rng.standard_normal((k, n), np.float32)) for m, k, n in _PROBE_SHAPES]
            ref = None
            for n in key:
                with _blas_threads(n):
                    out = [a @ b for a, b in pairs]
                ref = out if ref is None else ref
                same = same and all(np.array_equal(x, y) for x, y in zip(ref, out))
        _SAME_BITS[key] = same
    return _SAME_BITS[key]


def governed_setter(counts: Tuple[int, ...]) -> Callable[[int], None]:
    """What a Governor switching among ``counts`` sets: BLAS's and Numba's threads, or Numba's
    with BLAS on one thread where BLAS's bits depend on the count (``blas_same_bits``), so that
    no choice of the Governor changes a result."""
    return set_compute_threads if blas_same_bits(counts) else set_numba_threads


class Governor:
    """Picks the fastest thread count while iterations run (see the module's docstring).

    ``with governor.iteration(): ...`` around each iteration's compute (forward, backward,
    update; not tests or snapshots). A trial times the current count first, then each other
    count: ``PROBE`` iterations, fewer when it is already ``ABORT``× slower than the current
    (a descheduled thread can make an iteration ten times slower: one such sample is enough).
    Counts are compared by their mean time, which those outliers belong to. The next trial
    comes after a window that doubles while the choice holds, and never sooner than the
    iterations that pay for the last trial's losing samples within ``BUDGET`` of the time;
    a change of speed by ``DRIFT``× (the median of the last ``RECENT`` against that of the
    first ``RECENT`` after the choice) brings it forward.
    ``choices`` lists every decision as (iteration, threads, {threads: mean seconds});
    ``set_threads`` and ``clock`` are replaceable for tests."""

    PROBE = 6            # timed iterations per thread count in a trial
    ABORT = 1.5          # a count this much slower than the current one after a sample loses
    FIRST_WINDOW = 16    # iterations on a choice before the next trial; doubles while it holds
    MAX_WINDOW = 512
    BUDGET = 0.05        # the trials' losing samples cost at most this share of the time
    DRIFT = 1.5          # the recent median this much slower or faster than at the choice
    RECENT = 8

    def __init__(self, most: int, set_threads: Optional[Callable[[int], Any]] = None,
                 clock: Callable[[], float] = time.perf_counter, warmup: int = 1,
                 log: Any = None) -> None:
        self.counts: List[int] = []
        k = max(1, int(most))
        while k not in self.counts:
            self.counts.append(k)
            k = max(1, k // 2)
        if set_threads is None:
            set_threads = governed_setter(tuple(self.counts))
            if set_threads is set_numba_threads and log is not None:
                log.info("Threads: BLAS gives different bits at %s threads here, so it runs "
                         "on one thread and the Governor sets Numba's",
                         " and ".join(str(c) for c in sorted(self.counts)))
        self._set, self.clock, self.log = set_threads, clock, log
        # the first trial starts on one thread: the count a busy machine never makes wait, so
        # the others are measured against it and a very slow one is out after one sample
        self.threads: int = self.counts[-1]
        self.reference: Optional[float] = None
        self.choices: List[Tuple[int, int, Dict[int, float]]] = []
        self.window, self.gap, self.iterations = self.FIRST_WINDOW, 0, 0
        self._recent: List[float] = []
        self._trial: List[int] = []
        self._times: Dict[int, List[float]] = {}
        self._warmup, self._since = warmup, 0
        self._set(self.threads)
        self._start_trial()

    @classmethod
    def for_training(cls, log: Any = None) -> Optional[Governor]:
        """A Governor for this process, or None when the count is not minicaffe's to choose:
        the user set a thread variable, inside ``fixed_threads``, one core, the GPU, or MPI
        ranks."""
        from . import backend  # here, not above: apply() must run before numpy loads
        n = default_threads()
        if _FIXED or user_set() or n <= 1 or backend.mode() != backend.CPU:
            return None
        try:
            import numba
            numba.set_num_threads(numba.get_num_threads())   # no threading layer: no Governor
        except Exception:
            return None
        return cls(n, log=log)

    @property
    def best(self) -> Optional[int]:
        """The count of the last decision (None before the first)."""
        return self.choices[-1][1] if self.choices else None

    @contextlib.contextmanager
    def iteration(self) -> Iterator[Governor]:
        """Times the block as one iteration (not when it raises)."""
        t0 = self.clock()
        yield self
        self.record(self.clock() - t0)

    def resume(self) -> None:
        """Back to this Governor's count after ``pause`` (between steps every Governor leaves
        all threads on, so at the full count there is nothing to set, unless BLAS runs on one
        thread while it governs)."""
        if self.threads != self.counts[0] or self._set is set_numba_threads:
            self._set(self.threads)

    def pause(self) -> None:
        """Every thread again (BLAS's too), for the code that runs between ``Solver.step``
        calls."""
        if self._set is set_numba_threads:
            set_compute_threads(self.counts[0])
        elif self.threads != self.counts[0]:
            self._set(self.counts[0])

    def record(self, seconds: float) -> None:
        """One iteration took ``seconds`` at ``self.threads``: maybe switch for the next."""
        self.iterations += 1
        if self._warmup > 0:       # the first iterations compile kernels, fill caches
            self._warmup -= 1
            return
        if self._trial:
            times = self._times.setdefault(self.threads, [])
            times.append(seconds)
            if len(times) >= self.PROBE or self._loses(times):
                self._trial.pop(0)
                if self._trial:
                    self._switch(self._trial[0])
                else:
                    self._decide()
            return
        self._since += 1
        self._recent = (self._recent + [seconds])[-self.RECENT:]
        if self._since == self.RECENT:   # the speed of the choice, from as many as the drift's
            self.reference = statistics.median(self._recent)
        if self._since >= max(self.window, self.gap):
            self._start_trial()
        elif self._since >= max(self.gap, 2 * self.RECENT):
            now = statistics.median(self._recent)
            assert self.reference is not None   # set at _since == RECENT, before this
            if now > self.DRIFT * self.reference or now * self.DRIFT < self.reference:
                self.window = self.FIRST_WINDOW   # the load changed: look again soon
                self._start_trial()

    def _loses(self, times):
        """A count under trial is out early when its mean is ABORT× the current count's
        (after 2 samples; after 1 when that one is 2·ABORT× slower: a descheduled thread)."""
        if self.threads == self._trial_first:
            return False
        first = statistics.mean(self._times[self._trial_first])
        mean = statistics.mean(times)
        return mean > (self.ABORT if len(times) >= 2 else 2 * self.ABORT) * first

    def _start_trial(self):
        self._trial = [self.threads] + [c for c in self.counts if c != self.threads]
        self._trial_first = self.threads
        self._times = {}

    def _decide(self):
        means = {c: statistics.mean(t) for c, t in self._times.items()}
        best = min(means, key=lambda c: (means[c], -c))
        if best == self.best:
            self.window = min(2 * self.window, self.MAX_WINDOW)
        else:
            self.window = self.FIRST_WINDOW
            if self.log is not None:
                self.log.info("Threads: %d of %d (an iteration: %s)", best, self.counts[0],
                              ", ".join("%d threads %.4g ms" % (c, means[c] * 1000)
                                        for c in sorted(means, reverse=True)))
        # what the losing samples cost, in iterations of the best, spread over BUDGET
        lost = sum(sum(t) - len(t) * means[best] for c, t in self._times.items() if c != best)
        self.gap = math.ceil(lost / (self.BUDGET * means[best]) - 1e-6) if means[best] > 0 else 0
        self.reference = None
        self._since, self._recent = 0, []
        self.choices.append((self.iterations, best, means))
        self._switch(best)

    def _switch(self, n):
        if n != self.threads:
            self._set(n)
            self.threads = n


def _cap_loaded(n):
    if "numba" in sys.modules:
        try:
            import numba
            if n < numba.config.NUMBA_NUM_THREADS:
                numba.set_num_threads(n)
        except Exception:   # no threading layer: nothing to cap
            pass
    if "numpy" in sys.modules:
        try:
            from threadpoolctl import threadpool_limits
            threadpool_limits(n, user_api="blas")
        except Exception:   # threadpoolctl is optional
            pass


# --- parallel chunks: the CPU convolutions' images in fixed chunks, shared among threads ----
_POOL: List[Tuple[int, Any]] = []   # [(size, ThreadPoolExecutor)] of the chunk workers
_IN_WORKER = threading.local()


def chunk_workers() -> int:
    """How many threads ``map_chunks`` runs now: Numba's count in the calling thread (what the
    Governor or the user set). 1 inside a chunk worker, and where Numba's threading layer
    cannot take parallel kernels from two threads at once (workqueue)."""
    import numba
    n = numba.get_num_threads()   # starts the threading layer if no kernel has yet
    if n <= 1 or getattr(_IN_WORKER, "on", False):
        return 1
    return n if numba.threading_layer() in ("omp", "tbb") else 1


def map_chunks(fn: Callable[[int, Any], Any], items: List[Any]) -> List[Any]:
    """``[fn(worker, item) for item in items]``, the items taken in turn by ``chunk_workers()``
    threads (the caller is worker 0; ``worker`` names its scratch buffers). Each worker runs
    its Numba kernels and BLAS calls on one thread, so a chunk's bits never depend on the
    count, and a descheduled thread only takes fewer chunks (Numba's and BLAS's own pools
    split each call evenly and wait for the slowest thread). ``fn`` must release the GIL in
    its heavy calls (NumPy's BLAS products, ``nogil`` kernels) to run in parallel."""
    import numba
    n = min(len(items), chunk_workers())
    results: List[Any] = [None] * len(items)
    order = iter(range(len(items)))
    lock = threading.Lock()
    failed: List[BaseException] = []

    def work(w: int) -> None:
        _IN_WORKER.on = True
        numba.set_num_threads(1)   # Numba's count is per thread
        try:
            while not failed:
                with lock:
                    i = next(order, None)
                if i is None:
                    return
                results[i] = fn(w, items[i])
        except BaseException as e:   # re-raised in the caller, after the others stop
            failed.append(e)
        finally:
            _IN_WORKER.on = False

    mine = numba.get_num_threads()
    with _blas_threads(1):
        if n > 1:
            if not _POOL or _POOL[0][0] < n - 1:
                from concurrent.futures import ThreadPoolExecutor
                if _POOL:
                    _POOL.pop()[1].shutdown(wait=True)
                _POOL.append((n - 1, ThreadPoolExecutor(n - 1,
                                                        thread_name_prefix="minicaffe-chunk")))
            futures = [_POOL[0][1].submit(work, w) for w in range(1, n)]
        else:
            futures = []
        try:
            work(0)
        finally:
            for f in futures:
                f.result()
            numba.set_num_threads(mine)
    if failed:
        raise failed[0]
    return results

"""minicaffe.threads: the thread count follows the affinity mask and the cgroup CPU quota
(v2 cpu.max, v1 cfs quota / period, along the cgroup's parents), and a user's variable wins."""
import os
import subprocess
import sys

import pytest

from minicaffe import threads
from minicaffe.dah import pipeline


def _cgroup(tmp_path, files, own="0::/\n"):
    """A fake /sys/fs/cgroup under tmp_path/cg with ``files`` ({relative path: text}) and a
    fake /proc/self/cgroup with ``own``."""
    root = tmp_path / "cg"
    root.mkdir(parents=True)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text + "\n")
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(own)
    return str(root), str(proc)


@pytest.fixture
def cpus(monkeypatch):
    """Pretend the affinity mask holds ``n`` CPUs: ``cpus(n)``."""
    def set_cpus(n):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)
    return set_cpus


def test_cgroup_v2_quota_caps_the_affinity(tmp_path, cpus):
    cpus(8)
    root, proc = _cgroup(tmp_path, {"cpu.max": "150000 100000"})
    assert threads.cgroup_cpu_limit(root, proc) == 1.5
    assert threads.usable_cores(root, proc) == 2          # rounded up
    root2, proc2 = _cgroup(tmp_path / "b", {"cpu.max": "max 100000"})
    assert threads.cgroup_cpu_limit(root2, proc2) is None
    assert threads.usable_cores(root2, proc2) == 8


def test_cgroup_v2_smallest_along_the_parents(tmp_path, cpus):
    cpus(16)
    root, proc = _cgroup(tmp_path, {"job/cpu.max": "300000 100000",
                                    "job/step/cpu.max": "max 100000",
                                    "job/step/task/cpu.max": "max 100000"},
                         own="0::/job/step/task\n")
    assert threads.cgroup_cpu_limit(root, proc) == 3.0
    assert threads.usable_cores(root, proc) == 3


def test_cgroup_v2_path_not_mounted_reads_the_root(tmp_path, cpus):
    """A container that sees the host's cgroup path but has its own cgroup at the mount."""
    cpus(4)
    root, proc = _cgroup(tmp_path, {"cpu.max": "100000 100000"}, own="0::/docker/abc123\n")
    assert threads.usable_cores(root, proc) == 1


def test_cgroup_v1_cfs_quota(tmp_path, cpus):
    cpus(4)
    own = "4:memory:/x\n2:cpu,cpuacct:/slice/unit\n0::/\n"
    root, proc = _cgroup(tmp_path, {"cpu/slice/unit/cpu.cfs_quota_us": "-1",
                                    "cpu/slice/unit/cpu.cfs_period_us": "100000",
                                    "cpu/slice/cpu.cfs_quota_us": "250000",
                                    "cpu/slice/cpu.cfs_period_us": "100000",
                                    "cpu/cpu.cfs_quota_us": "-1",
                                    "cpu/cpu.cfs_period_us": "100000"}, own=own)
    assert threads.cgroup_cpu_limit(root, proc) == 2.5
    assert threads.usable_cores(root, proc) == 3
    root2, proc2 = _cgroup(tmp_path / "b", {"cpu/cpu.cfs_quota_us": "50000",
                                            "cpu/cpu.cfs_period_us": "100000"})
    assert threads.usable_cores(root2, proc2) == 1       # half a CPU: still one thread


def test_no_cgroup_files_is_the_affinity_mask(tmp_path, cpus):
    cpus(3)
    root, proc = _cgroup(tmp_path, {})
    assert threads.cgroup_cpu_limit(root, proc) is None
    assert threads.usable_cores(root, proc) == 3
    cpus(1)
    root2, proc2 = _cgroup(tmp_path / "b", {"cpu.max": "400000 100000"})
    assert threads.usable_cores(root2, proc2) == 1       # the mask is below the quota


def test_user_variables_win(tmp_path, cpus, monkeypatch):
    cpus(8)
    root, proc = _cgroup(tmp_path, {"cpu.max": "200000 100000"})
    monkeypatch.setattr(threads, "DEFAULTED", {})
    assert threads.default_threads({}, root, proc) == 2
    for var in threads.THREAD_VARS:
        assert threads.default_threads({var: "5"}, root, proc) == 5
        assert threads.user_set({var: "5"})
    assert threads.default_threads({"OMP_NUM_THREADS": "3,1", "NUMBA_NUM_THREADS": "7"},
                                   root, proc) == 3   # OpenMP's nesting: the first level
    assert threads.default_threads({"OMP_NUM_THREADS": "many", "MKL_NUM_THREADS": "4"},
                                   root, proc) == 4
    assert not threads.user_set({})
    # the values apply() set are not the user's
    monkeypatch.setattr(threads, "DEFAULTED", {"OMP_NUM_THREADS": "2"})
    assert not threads.user_set({"OMP_NUM_THREADS": "2"})
    assert threads.default_threads({"OMP_NUM_THREADS": "2"}, root, proc) == 2
    assert threads.user_set({"OMP_NUM_THREADS": "6"})


def test_apply_fills_the_unset_variables(monkeypatch):
    monkeypatch.setattr(threads, "DEFAULTED", {})
    monkeypatch.setattr(threads, "usable_cores", lambda *a: 3)
    env = {"OPENBLAS_NUM_THREADS": "1", "PATH": "/bin"}
    assert threads.apply(env) == 1                       # the user's value, for all
    assert env == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                   "NUMBA_NUM_THREADS": "1", "PATH": "/bin"}
    assert set(threads.DEFAULTED) == {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"}
    monkeypatch.setattr(threads, "DEFAULTED", {})
    env = {}
    assert threads.apply(env) == 3
    assert threads.DEFAULTED == {v: "3" for v in threads.THREAD_VARS}
    assert env == dict(threads.DEFAULTED, MINICAFFE_DEFAULTED_THREADS="3:" + ",".join(threads.THREAD_VARS))
    # a child inherits that environment: the values are still minicaffe's, not the user's
    monkeypatch.setattr(threads, "DEFAULTED", {})
    child = dict(env)
    assert threads.apply(child) == 3 and not threads.user_set(child)
    child["OMP_NUM_THREADS"] = "1"                       # the parent (or the user) chose 1 for it
    monkeypatch.setattr(threads, "DEFAULTED", {})
    assert threads.apply(child) == 1 and threads.user_set(child)
    assert {child[v] for v in threads.THREAD_VARS} == {"1"}


def test_import_sets_them_before_numba_loads():
    code = ("import os, minicaffe, numba; print(numba.config.NUMBA_NUM_THREADS, "
            "os.environ['OPENBLAS_NUM_THREADS'], sorted(minicaffe.threads.DEFAULTED))")
    env = {k: v for k, v in os.environ.items() if k not in threads.THREAD_VARS}
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip().split(None, 2)
    assert out == ["1", "1", "['MKL_NUM_THREADS', 'NUMBA_NUM_THREADS', 'OPENBLAS_NUM_THREADS']"]


def test_reproduce_jobs_auto_uses_it(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda *a: 3)
    assert pipeline.worker_count(0, 100) == 3 and pipeline.worker_count(0, 2) == 2


def test_reproduce_workers_get_one_thread_unless_the_user_chose(monkeypatch):
    monkeypatch.setattr(threads, "DEFAULTED", {v: "2" for v in threads.THREAD_VARS})
    for v in threads.THREAD_VARS:
        monkeypatch.setenv(v, "2")                       # import minicaffe's defaults
    with pipeline._spawning():
        assert {v: os.environ[v] for v in threads.THREAD_VARS} == \
            {v: "1" for v in threads.THREAD_VARS}
    assert os.environ["OMP_NUM_THREADS"] == "2"
    monkeypatch.setenv("OMP_NUM_THREADS", "4")           # the user's
    with pipeline._spawning():
        assert os.environ["OMP_NUM_THREADS"] == "4"


def test_mpi_ranks_share_the_usable_cores(monkeypatch):
    """tools/train under mpirun: unbound ranks on one machine split threads.usable_cores()."""
    import types

    import numba

    from minicaffe import parallel

    class TwoLocalRanks:
        def Get_rank(self):
            return 0

        def Get_size(self):
            return 2

    set_to = []
    monkeypatch.setattr(numba, "set_num_threads", set_to.append)
    monkeypatch.setitem(sys.modules, "threadpoolctl",
                        types.SimpleNamespace(threadpool_limits=set_to.append))
    monkeypatch.setattr(threads, "DEFAULTED", {v: "6" for v in threads.THREAD_VARS})
    for v in threads.THREAD_VARS:
        monkeypatch.setenv(v, "6")                       # import minicaffe's defaults
    monkeypatch.setattr(threads, "usable_cores", lambda *a: 6)
    monkeypatch.setattr(threads, "affinity_cores", lambda: os.cpu_count() or 1)   # unbound
    dp = parallel.DataParallel(TwoLocalRanks(), types.SimpleNamespace(IN_PLACE=None, SUM=None))
    assert dp.local_size == 2
    assert dp.limit_threads() == 3
    assert set_to[-1] == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")           # the user's: left alone
    assert dp.limit_threads() is None


# --- the Governor: the thread count that is fastest now --------------------------------------

class _Machine:
    """A fake clock whose iterations take ``cost[threads]`` seconds; records every switch."""

    def __init__(self, cost):
        self.cost, self.now, self.switches, self.threads = dict(cost), 0.0, [], None

    def set_threads(self, n):
        self.threads = n
        self.switches.append(n)

    def clock(self):
        return self.now

    def run(self, gov, n):
        for _ in range(n):
            with gov.iteration():
                self.now += self.cost[self.threads]


def test_governor_constants():   # the tests below count iterations with these
    G = threads.Governor
    assert (G.PROBE, G.ABORT, G.FIRST_WINDOW, G.BUDGET, G.DRIFT, G.RECENT) == (6, 1.5, 16, 0.05, 1.5, 8)


def test_governor_tries_each_count_and_keeps_the_fastest():
    m = _Machine({4: 0.35, 2: 0.10, 1: 0.20})
    gov = threads.Governor(4, set_threads=m.set_threads, clock=m.clock, warmup=1)
    assert gov.counts == [4, 2, 1] and m.threads == 1   # the first trial starts on one thread
    m.run(gov, 1 + 6 + 2 + 6)      # the warm-up, 6 on 1 thread, 4 threads out after 2, 6 on 2
    assert gov.best == 2 and m.threads == 2
    assert gov.choices[-1][2] == pytest.approx({4: 0.35, 2: 0.10, 1: 0.20})
    # the losers' samples cost 2·0.25 + 6·0.1 s: 220 iterations of 0.1 s pay for them at 5 %
    assert gov.gap == 220 and gov.window == gov.FIRST_WINDOW
    tried = len(m.switches)
    m.run(gov, 219)
    assert len(m.switches) == tried and not gov._trial
    m.run(gov, 1 + 6)                        # the next trial times the current count first...
    assert gov._trial and m.threads == 4
    m.run(gov, 1 + 2)                        # ...then 4 threads (3.5x) go after one sample
    assert gov.best == 2 and m.threads == 2 and len(gov.choices) == 2
    assert gov.window == 2 * gov.FIRST_WINDOW and gov.gap == 90   # it held; (0.25 + 0.2) / 0.005


def test_governor_counts_the_outliers_a_median_would_hide():
    """Two threads beside a busy process: most iterations fast, one in three 10x slower."""
    class Spiky(_Machine):
        def run(self, gov, n):
            for _ in range(n):
                with gov.iteration():
                    self.k = getattr(self, "k", 0) + 1
                    self.now += (1.0 if self.k % 3 == 0 else 0.1) if self.threads == 2 else 0.12
    m = Spiky({})
    gov = threads.Governor(2, set_threads=m.set_threads, clock=m.clock, warmup=0)
    m.run(gov, 6 + 3)
    assert gov.best == 1 and len(gov.choices) == 1   # medians 0.1 vs 0.12; means 0.4 vs 0.12


def test_governor_drops_a_count_after_one_very_slow_sample():
    m = _Machine({2: 0.5, 1: 0.1})           # a loaded machine, at start-up
    gov = threads.Governor(2, set_threads=m.set_threads, clock=m.clock, warmup=0)
    m.run(gov, 6 + 1)
    assert gov.best == 1 and len(gov.choices) == 1 and gov.gap == 80   # 0.4 / 0.005
    assert m.switches == [1, 2, 1]


def test_governor_tries_again_when_the_load_changes():
    m = _Machine({2: 0.05, 1: 0.08})         # quiet: two threads win
    gov = threads.Governor(2, set_threads=m.set_threads, clock=m.clock, warmup=0)
    m.run(gov, 6 + 6)
    assert gov.best == 2 and gov.gap == 72   # 6·0.03 s lost / (5 % of 0.05 s)
    m.run(gov, 72 + 6 + 2)                   # the next trial: 1 thread out after two samples
    assert gov.best == 2 and gov.window == 32 and gov.gap == 24
    assert gov.best == 2 and gov.window == 32 and gov.gap == 24
    m.run(gov, 10)
    m.cost = {2: 0.40, 1: 0.10}              # another job took a core: 2 threads wait for it
    m.run(gov, 14)                           # 1.5x slower than after the choice: a trial at 24,
    assert gov._trial and gov._since == 24   # before the window's end (32)
    m.run(gov, 12)
    assert gov.best == 1 and m.threads == 1 and gov.window == gov.FIRST_WINDOW
    assert gov.gap == 360                    # 6·0.4 − 6·0.1 s lost / (5 % of 0.1 s)
    m.cost = {2: 0.05, 1: 0.08}              # quiet again: 1 thread 1.25x faster, no drift,
    m.run(gov, 360 + 12)                     # found at the next trial
    assert gov.best == 2 and m.threads == 2
    assert [c[1] for c in gov.choices] == [2, 2, 1, 2]


def test_governor_is_off_when_the_count_is_not_its_to_choose(monkeypatch):
    monkeypatch.setattr(threads, "DEFAULTED", {})
    monkeypatch.setattr(threads, "usable_cores", lambda *a: 2)
    for v in threads.THREAD_VARS:
        monkeypatch.delenv(v, raising=False)
    assert isinstance(threads.Governor.for_training(), threads.Governor)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")          # the user's count is kept
    assert threads.Governor.for_training() is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(threads, "usable_cores", lambda *a: 1)
    assert threads.Governor.for_training() is None


def _toy_solver(max_iter):
    import numpy as np

    from minicaffe.commands import benchmark
    from minicaffe.proto import caffe_pb2
    from minicaffe.solver import Solver
    sp = caffe_pb2.SolverParameter(type="SGD", base_lr=0.01, lr_policy="fixed", momentum=0.9,
                                   weight_decay=5e-4, display=0, max_iter=max_iter, snapshot=0,
                                   random_seed=3, snapshot_prefix="unused")
    sp.train_net_param.CopyFrom(benchmark.minicaffe_net_param("toy", 0))
    solver = Solver(sp)
    rng = np.random.default_rng(0)
    for name, b in solver.net.blobs.items():
        if name.endswith("label"):
            b.data[...] = np.arange(b.shape[0]) * 12 // b.shape[0]
        elif name.endswith("data"):
            b.data[...] = rng.standard_normal(b.shape, np.float32)
    return solver


@pytest.mark.integration
def test_the_thread_count_never_changes_a_result(monkeypatch):
    """The ToyHome DAH net (convolutions, pooling, BatchNorm, the three MMD losses, the hash
    and entropy losses, SGD): 5 iterations with the count switching every iteration give the
    bits of 5 iterations on one thread, so a Governor's choices cannot change a training."""
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba's pool has one thread here (NUMBA_NUM_THREADS=1): nothing to switch")
    monkeypatch.setattr(threads.Governor, "for_training", classmethod(lambda cls, log=None: None))
    runs = []
    switch = threads.governed_setter((2, 1))   # what a Governor switches on this machine
    for schedule in ([1] * 5, [2, 1, 2, 1, 2]):
        solver = _toy_solver(5)
        for n in schedule:
            switch(n)
            solver.step(1)
        runs.append({(k, i): b.data.copy() for k, v in solver.net.params.items()
                     for i, b in enumerate(v)})
    threads.set_compute_threads(numba.config.NUMBA_NUM_THREADS)
    assert runs[0].keys() == runs[1].keys() and len(runs[0]) > 10
    for k in runs[0]:
        assert (runs[0][k] == runs[1][k]).all(), k


def test_the_solver_runs_its_iterations_under_a_governor(monkeypatch):
    import numba
    m = _Machine({2: 0.4, 1: 0.1})
    made = []

    def for_training(cls, log=None):
        made.append(threads.Governor(2, set_threads=m.set_threads, clock=m.clock, warmup=0))
        return made[-1]

    monkeypatch.setattr(threads.Governor, "for_training", classmethod(for_training))
    solver = _toy_solver(12)
    before = numba.get_num_threads()

    def tick():   # each iteration "costs" its count's time on the fake clock
        m.now += m.cost[m.threads]

    solver.add_callback(on_start=tick)
    solver.step(6)
    gov, = made
    assert gov.iterations == 6 and m.threads == 2      # paused: every thread between steps
    solver.step(6)
    assert len(made) == 1 and gov.iterations == 12 and gov.best == 1
    assert m.switches[-2:] == [1, 2]                    # step ran on 1, then gave them back
    assert numba.get_num_threads() == before


def test_the_blas_probe_restores_the_counts_and_agrees_with_a_direct_product(monkeypatch):
    """blas_same_bits compares real products at each count and leaves BLAS's counts as it
    found them; its answer is what one of its products gives when measured here directly."""
    import numpy as np
    controllers = threads._blas_controllers()
    if not controllers:
        pytest.skip("threadpoolctl cannot set this BLAS's threads: nothing to probe")
    monkeypatch.setattr(threads, "_SAME_BITS", {})
    before = [c.num_threads for c in controllers]
    same = threads.blas_same_bits((2, 1))
    assert [c.num_threads for c in controllers] == before
    rng = np.random.default_rng(0)
    pairs = [(rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32))
             for m, k, n in threads._PROBE_SHAPES]
    out = {}
    for n in (1, 2):
        for c in controllers:
            c.set_num_threads(n)
        out[n] = [a @ b for a, b in pairs]
    for c, b in zip(controllers, before):
        c.set_num_threads(b)
    assert same == all(np.array_equal(x, y) for x, y in zip(out[1], out[2]))
    assert threads.blas_same_bits((1,)) is True   # one count: nothing to compare


@pytest.mark.parametrize("same", [True, False])
def test_the_governor_leaves_blas_alone_where_its_bits_depend_on_the_count(monkeypatch, same):
    import logging
    monkeypatch.setattr(threads, "blas_same_bits", lambda counts: same)
    seen = []
    log = logging.getLogger("test-governor")
    monkeypatch.setattr(log, "info", lambda msg, *a: seen.append(msg % a))
    gov = threads.Governor(2, log=log)
    try:
        assert gov._set is (threads.set_compute_threads if same else threads.set_numba_threads)
        assert [m for m in seen if "different bits" in m] == (
            [] if same else ["Threads: BLAS gives different bits at 1 and 2 threads here, so it "
                             "runs on one thread and the Governor sets Numba's"])
    finally:
        threads.set_compute_threads(threads.default_threads())


def test_map_chunks_keeps_the_order_shares_the_items_and_raises_a_workers_error():
    import threading

    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba's pool has one thread here (NUMBA_NUM_THREADS=1): one worker only")
    before = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        assert threads.chunk_workers() == 2 or numba.threading_layer() not in ("omp", "tbb")
        who = {}
        gate = threading.Barrier(2, timeout=10)

        def fn(w, item):
            if item < 2:
                gate.wait()   # the first two items run at once, on two threads
            who[item] = (w, threading.current_thread().name, threads.chunk_workers(),
                         numba.get_num_threads())
            return item * item
        if threads.chunk_workers() == 2:
            assert threads.map_chunks(fn, list(range(7))) == [i * i for i in range(7)]
            assert {w for w, _, _, _ in who.values()} == {0, 1}
            assert {name for _, name, _, _ in who.values()} > {threading.current_thread().name}
            # inside a worker: one thread for Numba, and a nested map runs in that worker
            assert {(c, n) for _, _, c, n in who.values()} == {(1, 1)}
        assert numba.get_num_threads() == 2

        def bad(w, item):
            if item == 3:
                raise ValueError("chunk 3")
            return item
        with pytest.raises(ValueError, match="chunk 3"):
            threads.map_chunks(bad, list(range(6)))
        assert numba.get_num_threads() == 2
        assert threads.map_chunks(bad, [0, 1]) == [0, 1]   # the pool still works
    finally:
        numba.set_num_threads(before)


def test_a_governor_pinning_blas_gives_every_thread_back_between_steps(monkeypatch):
    """Where BLAS runs on one thread while a Governor governs, pause() gives BLAS its full
    count back for the caller's code and resume() pins it again."""
    controllers = threads._blas_controllers()
    if not controllers:
        pytest.skip("threadpoolctl cannot set this BLAS's threads")
    monkeypatch.setattr(threads, "blas_same_bits", lambda counts: False)
    gov = threads.Governor(2)
    try:
        assert [c.num_threads for c in controllers] == [1] * len(controllers)
        gov.pause()
        assert [c.num_threads for c in controllers] == [2] * len(controllers)
        gov.resume()
        assert [c.num_threads for c in controllers] == [1] * len(controllers)
    finally:
        threads.set_compute_threads(threads.default_threads())

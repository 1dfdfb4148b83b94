"""tools/reproduce --jobs N: trainings in worker processes give the same models as in one
process, respect the pretraining dependency, report progress; Ctrl-C ends the workers."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from minicaffe.commands import reproduce
from minicaffe.dah import pipeline
from minicaffe.datasets import toyhome
from minicaffe.errors import CaffeError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("toy") / "toyhome")
    toyhome.generate(root, seed=0, per_class=4, size=40, classes=toyhome.CLASSES[:3])
    return root


def test_jobs_count():
    assert pipeline.parse_jobs("auto") == pipeline.parse_jobs("0") == 0
    assert pipeline.parse_jobs(" 3 ") == 3
    with pytest.raises(CaffeError, match="--jobs many: a number of worker processes, or auto"):
        pipeline.parse_jobs("many")
    from minicaffe import threads
    cores = threads.usable_cores()
    assert pipeline.worker_count(0, 100) == cores
    assert pipeline.worker_count(0, 1) == 1 and pipeline.worker_count(4, 2) == 2
    assert pipeline.worker_count(3, 0) == 1


def test_workers_train_the_same_models(tiny_root, tmp_path, capsys):
    """--jobs 2 against --jobs 1 in the same --out path: every .caffemodel the same bytes,
    every number the same; the pretraining runs before the trainings that start from it."""
    out = str(tmp_path / "res")
    args = ["--root", tiny_root, "--family", "toyhome", "--pairs", "Ar:Cl", "--bits", "8",
            "--methods", "DAH,NoDA,DAN", "--iters", "2", "--pretrain", "2", "--per_class", "2",
            "--no_figures", "--out", out]
    assert reproduce.main(args + ["--jobs", "1"]) == 0
    one = capsys.readouterr().err
    assert "worker processes" not in one
    shutil.move(out, out + "_one")
    assert reproduce.main(args + ["--jobs", "2"]) == 0
    two = capsys.readouterr().err
    assert "3 trainings planned over 1 seed(s) (0 already done), after 1 source pretrainings " \
           "of 2 iterations, 8 iterations to run in 2 worker processes" in two
    assert "all runs 8/8 iterations" in two   # the workers' iterations reach the parent's ETA
    models = sorted(f for f in os.listdir(os.path.join(out, "models")) if f.endswith(".caffemodel"))
    assert models == sorted(f for f in os.listdir(os.path.join(out + "_one", "models"))
                            if f.endswith(".caffemodel"))
    assert len(models) == 5   # pretraining, its trunk, DAH, NoDA, DAN
    for f in models:
        with open(os.path.join(out, "models", f), "rb") as a, \
                open(os.path.join(out + "_one", "models", f), "rb") as b:
            assert a.read() == b.read(), f
    res = [json.load(open(os.path.join(d, "results.json")))["runs"] for d in (out, out + "_one")]
    assert sorted(res[0]) == sorted(res[1]) == ["DAH_Ar-Cl_8bits_pre2", "DAN_Ar-Cl_pre2",
                                                "NoDA_Ar-Cl_8bits_pre2"]
    for name, rec in res[0].items():
        for key in ("accuracy", "map_a", "map_b", "pr_a", "pr_b", "start"):
            assert rec.get(key) == res[1][name].get(key), (name, key)
    # each training started after its pretraining had ended and its trunk was written
    pre = json.load(open(os.path.join(out, "results.json")))["pretrain"]["Ar"]
    trunk = os.path.join(out, "models", "pretrain_Ar_trunk.caffemodel")
    assert all(rec["start_weights"] == trunk for rec in res[0].values())
    assert all(os.path.getmtime(trunk) <= os.path.getmtime(
        os.path.join(out, "logs", name + ".log")) for name in res[0])
    assert pre["start"] == "scratch"


def _children(pid):
    kids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open("/proc/%s/stat" % p) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(p))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc for the worker processes")
def test_ctrl_c_ends_the_workers(tiny_root, tmp_path):
    """The real tools/reproduce (a script without a main guard) with --jobs 2: "spawn" does not
    run the command again in the workers, and Ctrl-C (SIGINT to the process group, as a
    terminal sends it) ends the command and both workers at once."""
    cmd = [sys.executable, os.path.join(REPO, "tools", "reproduce"), "--root", tiny_root,
           "--family", "toyhome", "--pairs", "Ar:Cl", "--bits", "8", "--methods", "DAH,NoDA",
           "--iters", "5000", "--per_class", "2", "--no_figures", "--jobs", "2",
           "--out", str(tmp_path / "res")]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "] iteration " in line:   # a worker is training
                break
        assert "] iteration " in lines[-1], "".join(lines)
        workers = _children(proc.pid)
        assert len(workers) >= 2, workers   # the two workers (and multiprocessing's tracker)
        os.killpg(proc.pid, signal.SIGINT)
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 130, err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = "".join(lines) + err
    assert "reproduce: error: interrupted" in text
    assert text.count("trainings planned") == 1, text   # not run again in the workers
    time.sleep(0.5)
    assert not [p for p in workers if _alive(p)]
    assert not os.path.exists(os.path.join(str(tmp_path), "res", "models",
                                           "DAH_Ar-Cl_8bits_iter_5000.caffemodel"))


def test_a_freed_worker_gets_its_next_training_before_the_caller_handles_the_last():
    """When a training ends, the next one is on the task queue before its key is yielded: the
    caller's evaluation and figures (seconds) no longer leave that worker idle."""
    import queue
    import types
    jobs = {k: types.SimpleNamespace(name=k, sp=types.SimpleNamespace(max_iter=1)) for k in "abc"}
    t = pipeline.Trainings(jobs, 2, pipeline.Progress(3))
    t._tasks, t._results = queue.Queue(), queue.Queue()
    t._results.put(("done", "a", "a.caffemodel", 1.0))
    gen = t.run(list("abc"), {})
    assert next(gen) == ("a", ("a.caffemodel", 1.0))
    handed = [t._tasks.get_nowait().name for _ in range(t._tasks.qsize())]
    assert handed == ["a", "b", "c"]   # c already handed to a's worker
    for k in "bc":
        t._results.put(("done", k, k + ".caffemodel", 1.0))
    assert [key for key, _ in gen] == ["b", "c"]


def test_the_pipeline_takes_the_commands_options_as_keywords():
    """minicaffe.dah.pipeline.reproduce(**options): tools/reproduce's options by name, the rest
    at the command's defaults; a misspelt one is a TypeError, not ignored."""
    with pytest.raises(TypeError, match="unknown option 'method'"):
        pipeline.reproduce(method="DAH")
    with pytest.raises(CaffeError, match=r"unknown method\(s\) Nope"):   # the option reached the plan
        pipeline.reproduce(methods="DAH,Nope")
    defaults = pipeline.build_parser().parse_args([])
    assert (defaults.bits, defaults.pairs, defaults.jobs) == ("16,64,128", "all", "1")


def test_the_plan_without_training(tiny_root, tmp_path):
    """Reproduction(args) makes the plan and trains nothing: one solver per method, pair, bit
    length and seed, one source pretraining per source and seed that its runs start from,
    distinct names and every snapshot in --out/models."""
    args = pipeline.build_parser().parse_args(
        ["--root", tiny_root, "--pairs", "Ar:Cl,Ar:Pr", "--bits", "16", "--methods", "DAH,NoDA",
         "--seeds", "1,2", "--pretrain", "3", "--iters", "2", "--per_class", "2",
         "--out", str(tmp_path)])
    plan = pipeline.Reproduction(args)
    assert len(plan.runs) == 2 * 2 * 2   # pairs × methods × seeds
    assert plan.pre_keys == [("Art", 1), ("Art", 2)]
    assert len(set(plan.names.values())) == len(plan.names) == 10
    r = plan.runs[0]
    assert plan.start_of(r) == plan.trunk_of((r.source, r.seed))
    assert plan.start_of(plan.pre_keys[0]) == plan.init
    assert {sp.max_iter for key, (_, sp) in plan.solvers.items() if key not in plan.pre_keys} == {2}
    assert all(sp.snapshot_prefix.startswith(plan.models_dir) for _, sp in plan.solvers.values())
    assert not os.path.exists(plan.models_dir) or not os.listdir(plan.models_dir)
    assert os.path.exists(plan.list_of["Art"])   # the lists are written

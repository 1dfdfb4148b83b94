"""The fuzz targets (minicaffe.fuzzing, tools/fuzz): a few hundred random mutants of each
input path raise nothing but CaffeError; the targets and mutators do what they say."""
import logging
import random

import pytest

import minicaffe as caffe
from minicaffe import fuzzing
from minicaffe.commands import fuzz as fuzz_cmd


@pytest.fixture(autouse=True)
def quiet():
    logging.getLogger("minicaffe").disabled = True
    yield
    logging.getLogger("minicaffe").disabled = False


@pytest.mark.parametrize("target,runs", [("prototxt", 400), ("caffemodel", 300)])
def test_random_mutants_raise_only_caffe_errors(target, runs):
    assert fuzzing.random_run(target, runs, seed=17) == runs


def test_the_seeds_are_valid_and_mutants_reach_the_builder():
    net = caffe.Net(fuzzing.SEED_PROTOTXT.decode(), caffe.TEST)
    assert list(net.params) == ["conv1", "ip1"]
    rng = random.Random(0)
    built = refused = 0
    for _ in range(200):
        try:
            caffe.Net(fuzzing.mutate_text(fuzzing.SEED_PROTOTXT, rng).decode("latin-1") + "\n", caffe.TEST)
            built += 1
        except caffe.ShapeError:
            refused += 1
        except caffe.CaffeError:
            pass
    assert built >= 10 and refused >= 3   # not all mutants stop in the parser


def test_targets_refuse_code_and_data_sources(monkeypatch):
    called = []
    monkeypatch.setattr(fuzzing, "Net", lambda *a, **k: called.append(a))
    fuzzing.check_prototxt(b'layer { name: "p" type: "Python" top: "x" python_param { module: "os" layer: "system" } }')
    fuzzing.check_prototxt(b'layer { name: "d" type: "ImageData" top: "x" top: "y" image_data_param { source: "/etc/passwd" } }')
    assert called == []
    fuzzing.check_prototxt(b'layer { name: "d" type: "DummyData" top: "x" }')
    assert len(called) == 1


def test_a_finding_carries_its_input(monkeypatch):
    def boom(data):
        raise ZeroDivisionError("found")
    monkeypatch.setitem(fuzzing.TARGETS, "prototxt", (boom,) + fuzzing.TARGETS["prototxt"][1:])
    with pytest.raises(ZeroDivisionError) as info:
        fuzzing.random_run("prototxt", 5)
    assert isinstance(info.value.mutant, bytes) and info.value.mutant


def test_tool_random_mode(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    logging.getLogger("minicaffe").disabled = False
    assert fuzz_cmd.main(["--target", "caffemodel", "--random", "--runs", "50", "--seconds", "30"]) == 0
    assert "caffemodel: 50 random mutants, no exception outside CaffeError" in capsys.readouterr().err

"""Fuzz targets for what a user feeds minicaffe: prototxt text and binary .caffemodel bytes.

The contract they check: any input either works or raises a ``CaffeError`` (one line for
the tools); anything else (``UnicodeDecodeError``, ``ZeroDivisionError``, ``MemoryError``,
``IndexError``...) is a bug. ``tools/fuzz`` runs them under atheris (the optional ``fuzz``
extra, coverage-guided) or, without it, under ``mutate``'s random mutations of the seeds;
``tests/test_fuzz.py`` runs a few hundred random mutants of each in the suite.

The prototxt target builds the net (set-up, reshape, fillers) but does not run it, with the
blob budget lowered to 64 MiB so that a mutated dim is refused instead of allocated. Nets
with layers that would read files or import code (Python, data layers other than Input,
DummyData and MemoryData, HDF5Output) are skipped: a mutant must not run code or touch the
disk.
"""
import os
import random
import re
import tempfile

import numpy as np

from . import protoio
from .errors import CaffeError
from .net import TEST, Net
from .proto import caffe_pb2

#: A net touching the parsers, the upgrades, the wiring checks, the fillers and the shapes.
SEED_PROTOTXT = b'''name: "fuzz"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 1
                            weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "drop" type: "Dropout" bottom: "ip1" top: "ip1" dropout_param { dropout_ratio: 0.5 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
'''

#: Tokens the text mutator splices in: field names and values that have broken things.
TOKENS = [b"num_output: 0", b"4294967295", b"-1", b"pad: 100000", b"kernel_size:", b"layer {",
          b"layers {", b"}", b"{", b'"', b"\xff", b"\xc3", b"dim: 0", b"dim: 100000", b"std: -1",
          b'type: "Tanh"', b'type: "uniform" min: 1 max: -1', b"bottom: \"nope\"", b"top: \"x\"",
          b"axis: -5", b"group: 3", b"stride: 0", b"1e40", b"nan", b"inf", b"include { phase: TEST }",
          b'type: "Reshape" reshape_param { shape { dim: -1 dim: -1 } }', b'type: "Concat"',
          b'type: "Eltwise"', b'type: "Slice" slice_param { slice_point: 7 }', b"loss_weight: 2",
          b"propagate_down: 0", b"name: \"conv1\"", b"input: \"x\" input_dim: 1", b"\x00", b"#"]

#: Nets with these layer types are not built by the prototxt target (they read files or
#: import modules named in the text).
UNSAFE_TYPES = {"Python", "PYTHON", "HDF5Output", "HDF5_OUTPUT"}
SAFE_DATA_TYPES = {"Input", "DummyData", "DUMMY_DATA", "MemoryData", "MEMORY_DATA"}

_MAX_BLOB_BYTES = str(64 * 2 ** 20)
_model_net = None
_model_dir = None


def _unsafe(param):
    """True when building ``param`` (upgraded: V1 layers are in ``layer`` too) would import a
    module or read a data source."""
    for lp in param.layer:
        if lp.type in UNSAFE_TYPES or ("DATA" in lp.type.upper() and lp.type not in SAFE_DATA_TYPES):
            return True
    return False


def check_prototxt(data):
    """Build a net from the bytes ``data`` as prototxt text; a CaffeError is fine."""
    old = os.environ.get("MINICAFFE_MAX_BLOB_BYTES")
    os.environ["MINICAFFE_MAX_BLOB_BYTES"] = _MAX_BLOB_BYTES
    try:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("latin-1")   # still text to the parser, which must refuse it
        text += "\n"   # text, never a path
        try:
            if _unsafe(protoio.read_net_param(text)):
                return
            Net(text, TEST)   # the user's path: parse, upgrade, wire, set up (errors with lines)
        except CaffeError:
            pass
    finally:
        if old is None:
            del os.environ["MINICAFFE_MAX_BLOB_BYTES"]
        else:
            os.environ["MINICAFFE_MAX_BLOB_BYTES"] = old


def seed_caffemodel():
    """The seed net's weights as .caffemodel bytes."""
    return _model_target_net().to_proto().SerializeToString()


def _model_target_net():
    global _model_net
    if _model_net is None:
        _model_net = Net(protoio.read_net_param(SEED_PROTOTXT.decode()), TEST)
    return _model_net


def check_caffemodel(data):
    """Write ``data`` as a .caffemodel file and ``copy_from`` it into the seed net; a
    CaffeError is fine, and then the net's weights must be those it had."""
    global _model_dir
    net = _model_target_net()
    if _model_dir is None:
        _model_dir = tempfile.mkdtemp(prefix="minicaffe-fuzz-")
    path = os.path.join(_model_dir, "mutant.caffemodel")
    with open(path, "wb") as f:
        f.write(data)
    before = [b.data.copy() for b in net.learnable_params]
    try:
        net.copy_from(path)
    except CaffeError:
        if any(not np.array_equal(a, b.data, equal_nan=True)
               for a, b in zip(before, net.learnable_params)):
            raise AssertionError("a failed copy_from changed the weights") from None


_NUMBER = re.compile(rb"(?<![A-Za-z_])-?\d+(\.\d+)?(e-?\d+)?")
_STRING = re.compile(rb'"[^"\n]*"')
_FIELD = re.compile(rb"[A-Za-z_]+\s*:\s*(\"[^\"\n]*\"|[^\s{}]+)|[A-Za-z_]+\s*\{")
NUMBERS = [b"0", b"-1", b"1", b"2", b"3", b"7", b"-5", b"100000", b"4294967295", b"2147483648",
           b"-2147483648", b"1e40", b"0.5", b"-0.5", b"nan", b"inf", b"1e-45"]


def mutate_text(data, rng):
    """One prototxt mutant that mostly still parses: a number, a string or a field replaced,
    deleted or duplicated, a token spliced in; one mutant in four is a byte-level ``mutate``."""
    if rng.random() < 0.25:
        return mutate(data, rng)
    buf = data
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(4)
        pattern = (_NUMBER, _STRING, _FIELD, _FIELD)[op]
        spans = [m.span() for m in pattern.finditer(buf)]
        if not spans:
            continue
        i, j = rng.choice(spans)
        if op == 0:
            new = rng.choice(NUMBERS)
        elif op == 1:
            new = rng.choice([m.group() for m in _STRING.finditer(buf)] + [b'"Tanh"', b'""', b'"\xff"'])
        elif op == 2:
            new = b"" if rng.random() < 0.5 else buf[i:j] + b" " + buf[i:j]
        else:
            new = buf[i:j] + b" " + rng.choice(TOKENS) + b" "
        buf = buf[:i] + new + buf[j:]
    return buf


def mutate_model(data, rng):
    """One .caffemodel mutant: a field of the parsed message changed (layer names, blob
    shapes and lengths, legacy dims, a V1 layer), then bytes mutated one time in two."""
    param = caffe_pb2.NetParameter()
    try:
        param.ParseFromString(data)
    except Exception:   # noqa: BLE001 - an earlier mutant that no longer parses: bytes only
        return mutate(data, rng)
    layers = list(param.layer)
    if layers:
        lp = rng.choice(layers)
        op = rng.randrange(6)
        if op == 0:
            lp.name = rng.choice(["conv1", "ip1", "nope", "", "loss"])
        elif op == 1 and lp.blobs:
            b = rng.choice(lp.blobs)
            b.shape.dim.append(rng.choice([0, 1, 3, 4294967295]))
        elif op == 2 and lp.blobs:
            b = rng.choice(lp.blobs)
            del b.data[rng.randrange(len(b.data) + 1):]
        elif op == 3 and lp.blobs:
            b = rng.choice(lp.blobs)
            b.num, b.channels, b.height, b.width = (rng.choice([0, 1, 2, -1]) for _ in range(4))
        elif op == 4:
            v1 = param.layers.add()
            v1.name = lp.name
            v1.type = rng.choice([0, 4, 14, 33])
        else:
            lp.blobs.add().double_data.extend([1.0, 2.0])
    out = param.SerializeToString()
    return mutate(out, rng) if rng.random() < 0.5 else out


TARGETS = {"prototxt": (check_prototxt, lambda: SEED_PROTOTXT, mutate_text),
           "caffemodel": (check_caffemodel, seed_caffemodel, mutate_model)}


def mutate(data, rng, tokens=TOKENS):
    """One random mutant of ``data``: 1-4 of byte flips, inserted/deleted/duplicated runs,
    truncation and (for text) a spliced token."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        n = len(buf)
        i = rng.randrange(n + 1) if n else 0
        if op == 0 and n:
            buf[min(i, n - 1)] = rng.randrange(256)
        elif op == 1 and n:
            buf[min(i, n - 1)] ^= 1 << rng.randrange(8)
        elif op == 2:
            buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and n:
            del buf[i:i + rng.randint(1, 16)]
        elif op == 4 and n:
            j = rng.randrange(n)
            buf[i:i] = buf[j:j + rng.randint(1, 32)]
        elif op == 5 and n:
            del buf[rng.randrange(n):]
        else:
            buf[i:i] = rng.choice(tokens)
    return bytes(buf)


def random_run(target, runs, seed=0):
    """``runs`` random mutants of the target's seed through the target; returns the number
    run. An exception other than CaffeError propagates, with the mutant in ``exc.mutant``."""
    check, seed_bytes, mutator = TARGETS[target]
    rng = random.Random(seed)
    base = seed_bytes()
    corpus = [base]
    for _ in range(runs):
        data = mutator(rng.choice(corpus), rng)
        try:
            check(data)
        except Exception as exc:   # noqa: BLE001 - the finding: hand it back with its input
            exc.mutant = data
            raise
        if len(corpus) < 64 and rng.random() < 0.1:
            corpus.append(data)      # mutants of mutants reach further
    return runs

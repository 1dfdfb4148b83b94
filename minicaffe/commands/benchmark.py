"""``tools/benchmark``: a CPU training step in minicaffe and in PyTorch, measured side by side.

    tools/benchmark [--nets vgg,lenet,toy] [--batches 8,16,32] [--steps 10] [--warmup 2]
                    [--threads auto|N[,...]] [--rounds 1] [--quick] [--json OUT] [--no_torch]
                    [--load N] [--save_nets DIR] [--rss_every K]

A step is forward + backward + SGD update (momentum 0.9, weight decay 5e-4, each net's
``lr_mult`` / ``decay_mult``), fp32, on inputs that stay in memory (no data loading):

- ``vgg``: the DAH VGG_CNN_F net with its hash layer, d = 64 (prototxt/office_home/
  deploy_64.prototxt: conv1-5, LRN, fc6-7, fc8_hash, BatchNorm, Scale, TanH) at 3×224×224, one
  row per ``--batches`` entry, with ``HashLoss`` (eq 5: scale 1, similar_weight 1, no
  normalisation) on the codes and random labels of 65 classes; in PyTorch the same layers and
  the same loss formula written in torch;
- ``lenet``: BVLC LeNet (BVLC Caffe's examples/mnist/lenet_train_test.prototxt, its Data layer
  swapped for an Input layer) at 1×28×28, batch 64, SoftmaxWithLoss / cross-entropy;
- ``toy``: the ToyHome DAH net (prototxt/toyhome/dah_train.prototxt, DomainData swapped for
  Input) at its training batch, 48 source + 48 target images of 3×32×32, with its three
  MMDLoss (random pairing, median bandwidth), HashLoss and EntropyLoss; in PyTorch the same
  trunk and the losses' formulas written in torch.

Weights without a filler in the prototxt (VGG_CNN_F's trunk) get MSRA fillers, and PyTorch's
weights the same distributions (MSRA, or LeNet's Xavier); the inputs are N(0, 1) (LeNet's
U[0, 1), as MNIST × 1/256). The values only have to stay finite: the time does not depend on
them.

Each measurement is its own subprocess, so its peak RSS (``ru_maxrss``) is that framework's
alone: build the net, ``--warmup`` steps, then ``--steps`` timed steps; a row's images/s is the
batch over the median step. For each net the measurements of every framework and every
``--threads`` setting take turns (``--rounds`` times each), so a load that drifts during the
run falls on all of them. ``--threads`` sets OMP_NUM_THREADS, OPENBLAS_NUM_THREADS,
MKL_NUM_THREADS and NUMBA_NUM_THREADS in the subprocesses (and ``torch.set_num_threads``);
``auto`` (and no ``--threads``) leaves them to this environment, where ``import minicaffe``
set the ones the user did not to ``minicaffe.threads.default_threads()`` (PyTorch runs
without those): minicaffe's default, whose thread Governor picks the count as it trains.
``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` are reported as set, never changed. PyTorch is
optional: without it the PyTorch columns say why.
``--save_nets DIR`` writes the minicaffe nets as prototxt files, for ``tools/time --model``.

``--rss_every K`` reads each measurement's resident memory (``/proc/self/statm``) after
every K-th step and prints, under the table, the first and last readings and the growth
between them: whether memory stays flat over a long run (``--steps 10000 --rss_every 1000``).

``--load N`` measures on a loaded machine: N processes, each a plain Python busy loop on one
CPU, start before the first measurement and are killed (and reaped) after the last, on an
error or Ctrl-C too; they end by themselves if the benchmark dies. The table then has a
``load`` column, its title names the load, and the JSON has ``settings.load`` (also with 0)
and ``load_pids``.
"""
import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# the shipped nets the minicaffe side reads (experiments.family_file: the checkout's prototxt/
# or the installed package's)
VGG_PROTOTXT = ("office_home", "deploy_64.prototxt")
TOY_PROTOTXT = ("toyhome", "dah_train.prototxt")
NETS = ("vgg", "lenet", "toy")
VGG_CLASSES, VGG_SIZE, LENET_BATCH = 65, 224, 64
BASE_LR = {"vgg": 1e-5, "lenet": 0.01, "toy": 1e-5}   # the speed does not depend on them
MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4
# minicaffe.threads.THREAD_VARS, not imported: this module loads in the PyTorch worker, which
# must not import the minicaffe package (its RSS is PyTorch's alone)
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
REPORTED_VARS = THREAD_VARS + ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "NUMBA_THREADING_LAYER",
                                "OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")

# BVLC LeNet's layers (examples/mnist/lenet_train_test.prototxt's TRAIN net; tests/test_zoo.py
# compares them with the zoo's file)
LENET = """name: "LeNet"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" param { lr_mult: 1 }
        param { lr_mult: 2 } convolution_param { num_output: 20 kernel_size: 5 stride: 1
        weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" param { lr_mult: 1 }
        param { lr_mult: 2 } convolution_param { num_output: 50 kernel_size: 5 stride: 1
        weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" param { lr_mult: 1 }
        param { lr_mult: 2 } inner_product_param { num_output: 500
        weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" param { lr_mult: 1 }
        param { lr_mult: 2 } inner_product_param { num_output: 10
        weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


# --- the minicaffe nets ------------------------------------------------------------------------

def _input_layer(lp_from, shapes):
    """An Input layer in place of the data layer ``lp_from``: its tops and include rules, one
    shape per top."""
    from minicaffe.proto import caffe_pb2
    lp = caffe_pb2.LayerParameter(name=lp_from.name, type="Input")
    lp.top.extend(lp_from.top)
    lp.include.extend(lp_from.include)
    lp.exclude.extend(lp_from.exclude)
    for top in lp_from.top:
        lp.input_param.shape.add().dim.extend(shapes[top])
    return lp


def _shipped(where):
    """The NetParameter of a shipped prototxt, ``(family, file name)``."""
    from minicaffe import experiments, protoio
    return protoio.read_net_param(experiments.family_file(*where))


def _toy_sizes():
    """(images per domain, classes, image side) of dah_train.prototxt's DomainData."""
    for lp in _shipped(TOY_PROTOTXT).layer:
        if lp.type == "DomainData":
            p, t = lp.domain_data_param, lp.transform_param
            return (p.per_class * p.num_classes, p.num_classes,
                    t.crop_size or p.new_height or 32)
    raise ValueError("%s has no DomainData layer" % "/".join(TOY_PROTOTXT))


def net_batch(name, batch):
    """The images a step of ``name`` processes (``batch`` is used by vgg only)."""
    if name == "vgg":
        return batch
    if name == "lenet":
        return LENET_BATCH
    return 2 * _toy_sizes()[0]


def minicaffe_net_param(name, batch):
    """The NetParameter of benchmark net ``name``: Input layers in place of the data layers,
    a loss on top, MSRA fillers where the prototxt has none."""
    from minicaffe import protoio
    from minicaffe.proto import caffe_pb2
    out = caffe_pb2.NetParameter()
    if name == "vgg":
        src = _shipped(VGG_PROTOTXT)
        out.name = src.name.replace("_deploy", "") + "_benchmark"
        for lp in src.layer:
            layer = out.layer.add()
            layer.CopyFrom(lp)
            if lp.type == "Input":
                layer.top.append("label")
                del layer.input_param.shape[:]
                layer.input_param.shape.add().dim.extend([batch, 3, VGG_SIZE, VGG_SIZE])
                layer.input_param.shape.add().dim.extend([batch])
        loss = out.layer.add(name="hash_loss", type="HashLoss", bottom=["code", "label"],
                             top=["hash_loss"])
        loss.hash_loss_param.SetInParent()
    elif name == "lenet":
        src = protoio.read_net_param(LENET)
        out.name = src.name
        shapes = {"data": [LENET_BATCH, 1, 28, 28], "label": [LENET_BATCH]}
        for lp in src.layer:
            if lp.type == "Data":
                out.layer.append(_input_layer(lp, shapes))
            else:
                out.layer.add().CopyFrom(lp)
    elif name == "toy":
        src = _shipped(TOY_PROTOTXT)
        n, _, side = _toy_sizes()
        out.name = src.name + "_benchmark"
        for lp in src.layer:
            if lp.type == "DomainData":
                shapes = {t: ([n, 3, side, side] if t.endswith("data") else [n]) for t in lp.top}
                out.layer.append(_input_layer(lp, shapes))
            else:
                out.layer.add().CopyFrom(lp)
    else:
        raise ValueError("unknown net %r (known: %s)" % (name, ", ".join(NETS)))
    for lp in out.layer:
        p = (lp.convolution_param if lp.type == "Convolution" else
             lp.inner_product_param if lp.type == "InnerProduct" else None)
        if p is not None and not p.HasField("weight_filler"):
            p.weight_filler.type = "msra"
    return out


def _labels(name, n, rng):
    import numpy as np
    if name == "vgg":
        return rng.integers(0, VGG_CLASSES, n).astype(np.float32)
    if name == "lenet":
        return rng.integers(0, 10, n).astype(np.float32)
    _, classes, _ = _toy_sizes()
    return (np.arange(n) * classes // n).astype(np.float32)   # class order, as DomainData


def _minicaffe_step(spec):
    import numba
    import numpy as np

    import minicaffe as caffe
    from minicaffe.proto import caffe_pb2
    from minicaffe.solver import Solver
    caffe.set_mode_cpu()
    name, batch = spec["net"], spec["batch"]
    t0 = time.perf_counter()
    sp = caffe_pb2.SolverParameter(type="SGD", base_lr=BASE_LR[name], lr_policy="fixed",
                                   momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, display=0,
                                   max_iter=10 ** 6, snapshot=0, random_seed=1701,
                                   snapshot_prefix=os.path.join(os.getcwd(), "diverged"))
    sp.train_net_param.CopyFrom(minicaffe_net_param(name, batch))
    solver = Solver(sp)
    net = solver.net
    rng = np.random.default_rng(0)
    for lp in sp.train_net_param.layer:
        if lp.type == "Input":
            for top in lp.top:
                b = net.blobs[top]
                if b.data.ndim == 1:
                    b.data[...] = _labels(name, b.shape[0], rng)
                elif name == "lenet":   # MNIST's pixels × 1/256
                    b.data[...] = rng.random(b.shape, np.float32)
                else:
                    b.data[...] = rng.standard_normal(b.shape, np.float32)
    build_s = time.perf_counter() - t0
    marks = {}
    solver.add_callback(on_start=lambda: marks.__setitem__("start", time.perf_counter()),
                        on_gradients_ready=lambda: marks.__setitem__("grads",
                                                                     time.perf_counter()))
    steps, updates, first, rss = [], [], None, []
    for i in range(spec["warmup"] + spec["steps"]):
        t = time.perf_counter()
        solver.step(1)
        end = time.perf_counter()
        if i == 0:
            first = end - t
        if i >= spec["warmup"]:
            steps.append((end - t) * 1000)
            updates.append((end - marks["grads"]) * 1000)
        _rss_trace(rss, i, spec.get("rss_every"))
    info = {"numpy": np.__version__, "numba": numba.__version__,
            "numba_threads": numba.get_num_threads()}
    try:
        info["numba_threading_layer"] = numba.threading_layer()
    except ValueError:  # no parallel kernel has run
        pass
    info["blas"] = _blas_info(np)
    gov = solver.thread_governor
    if gov is not None:   # minicaffe's default: what the thread Governor chose, and when
        info["governor"] = [[it, n, {str(k): round(v * 1000, 2) for k, v in m.items()}]
                            for it, n, m in gov.choices]
    return {"step_ms": steps, "update_ms": updates, "build_s": build_s, "first_step_s": first,
            "rss_mib": rss, "loss": float(solver.smoothed_loss), "info": info,
            "params": int(sum(b.count() for b in net.learnable_params))}


def _blas_info(np):
    """The BLAS libraries loaded in this process (threadpoolctl), else numpy's build config."""
    try:
        from threadpoolctl import threadpool_info
        return [dict({k: d.get(k) for k in ("internal_api", "version", "architecture",
                                            "threading_layer", "num_threads")},
                     library=os.path.basename(d.get("filepath") or ""))
                for d in threadpool_info()]
    except ImportError:
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return [{"internal_api": blas.get("name"), "version": blas.get("version"),
                 "architecture": blas.get("openblas configuration")}]
    except Exception:  # numpy < 1.26 has no mode="dicts"
        return []


# --- the PyTorch nets --------------------------------------------------------------------------

def torch_models(toy_sizes=None, device="cpu"):
    """{name: builder(batch) -> (model, loss_fn(), param groups)}: the layers, shapes,
    lr_mult / decay_mult and loss formulas of the minicaffe nets, on ``device`` (tools/gpu_check
    times "vgg_dah" on CUDA). ``toy_sizes``: (images per domain, classes, image side) of the
    ToyHome net."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def pool(x, k, s):  # Caffe rounds the pooled size up
        return F.max_pool2d(x, k, s, ceil_mode=True)

    def init(model, xavier=False):
        # Caffe's fillers: msra = N(0, 2/fan_in), xavier = U(±sqrt(3/fan_in)); biases 0
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                if xavier:
                    nn.init.uniform_(m.weight, -(3.0 / fan_in) ** 0.5, (3.0 / fan_in) ** 0.5)
                else:
                    nn.init.normal_(m.weight, 0.0, (2.0 / fan_in) ** 0.5)
                nn.init.zeros_(m.bias)

    def groups(pairs):
        return [{"params": [p], "lr_mult": lr, "decay_mult": dec} for p, lr, dec in pairs]

    def trunk_params(layers, lr_w, lr_b, dec_b):
        return [x for m in layers for x in ((m.weight, lr_w, 1.0), (m.bias, lr_b, dec_b))]

    def sgn(u):
        return torch.where(u >= 0, 1.0, -1.0)

    def hash_loss(u, lab, scale=1.0, similar_weight=1.0, qw=1.0, norm=1.0):
        # eq 5 over all ordered pairs + quantisation, as minicaffe's hash_loss
        s = (lab[:, None] == lab[None, :]).to(u.dtype)
        theta = scale * (u @ u.t())
        w = 1.0 + (similar_weight - 1.0) * s
        r = u - sgn(u).detach()
        return ((w * (F.softplus(theta) - s * theta)).sum() + qw * (r * r).sum()) / norm

    def mmd(s, t, kernels=5, mul=2.0):
        # linear-time MK-MMD over random quadruples, median bandwidth (a constant)
        s = s[torch.randperm(s.shape[0], device=s.device)]
        t = t[torch.randperm(t.shape[0], device=t.device)]
        q = min(s.shape[0], t.shape[0]) // 2
        ua, ub, va, vb = s[0:2 * q:2], s[1:2 * q:2], t[0:2 * q:2], t[1:2 * q:2]
        d = [((x - y) ** 2).sum(1) for x, y in ((ua, ub), (va, vb), (ua, vb), (ub, va))]
        base = torch.cat(d).detach().median()
        sig = base * mul ** (torch.arange(kernels, dtype=s.dtype, device=s.device) - kernels // 2)
        k = [torch.exp(-x[:, None] / sig[None, :]) for x in d]
        return (k[0] + k[1] - k[2] - k[3]).sum() / (q * kernels)

    def entropy_loss(v, u, lab, classes):
        a = (v @ u.t()).double()
        logz = torch.logsumexp(a, 1)
        onehot = F.one_hot(lab, classes).bool()
        masked = a[:, :, None].expand(-1, -1, classes).masked_fill(~onehot[None], float("-inf"))
        logp = torch.logsumexp(masked, 1) - logz[:, None]
        p = logp.exp()
        plogp = torch.where(p > 0, p * torch.nan_to_num(logp, neginf=0.0), torch.zeros_like(p))
        return (-plogp.sum() / v.shape[0]).float()

    class VGGCNNF(nn.Module):
        def __init__(self, bits=64):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 11, stride=4)
            self.conv2 = nn.Conv2d(64, 256, 5, padding=2)
            self.conv3 = nn.Conv2d(256, 256, 3, padding=1)
            self.conv4 = nn.Conv2d(256, 256, 3, padding=1)
            self.conv5 = nn.Conv2d(256, 256, 3, padding=1)
            self.fc6 = nn.Linear(256 * 6 * 6, 4096)
            self.fc7 = nn.Linear(4096, 4096)
            self.fc8 = nn.Linear(4096, bits)
            self.bn = nn.BatchNorm1d(bits, momentum=0.05, eps=1e-5)   # BatchNorm + Scale
            self.lrn = nn.LocalResponseNorm(5, alpha=0.0005, beta=0.75, k=2.0)

        def forward(self, x):
            x = pool(self.lrn(F.relu(self.conv1(x))), 3, 2)
            x = pool(self.lrn(F.relu(self.conv2(x))), 3, 2)
            x = F.relu(self.conv4(F.relu(self.conv3(x))))
            x = pool(F.relu(self.conv5(x)), 3, 2)
            f6 = F.relu(self.fc6(x.flatten(1)))
            f7 = F.relu(self.fc7(f6))
            f8 = self.fc8(f7)
            return f6, f7, f8, torch.tanh(self.bn(f8))

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 20, 5)
            self.conv2 = nn.Conv2d(20, 50, 5)
            self.ip1 = nn.Linear(50 * 4 * 4, 500)
            self.ip2 = nn.Linear(500, 10)

        def forward(self, x):
            x = pool(self.conv2(pool(self.conv1(x), 2, 2)), 2, 2)
            return self.ip2(F.relu(self.ip1(x.flatten(1))))

    class Toy(nn.Module):
        def __init__(self, side, bits=64):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 5, padding=2)
            self.conv2 = nn.Conv2d(16, 32, 5, padding=2)
            self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
            for _ in range(3):
                side = -(-(side - 3) // 2) + 1
            self.fc6 = nn.Linear(64 * side * side, 256)
            self.fc7 = nn.Linear(256, 256)
            self.fc8 = nn.Linear(256, bits)
            self.bn = nn.BatchNorm1d(bits, momentum=0.05, eps=1e-5)

        def forward(self, x):
            for conv in (self.conv1, self.conv2, self.conv3):
                x = pool(F.relu(conv(x)), 3, 2)
            f6 = F.relu(self.fc6(x.flatten(1)))
            f7 = F.relu(self.fc7(f6))
            f8 = self.fc8(f7)
            return f6, f7, f8, torch.tanh(self.bn(f8))

    def dah_loss(m, x, n, lab, classes):
        # dah_train*.prototxt's objective: MK-MMD on fc6/fc7/fc8, HashLoss, EntropyLoss
        f6, f7, f8, code = m(x)
        return (mmd(f6[:n], f6[n:]) + mmd(f7[:n], f7[n:]) + mmd(f8[:n], f8[n:])
                + hash_loss(code[:n], lab, 0.5, 10.0, 1.0, float(n))
                + entropy_loss(code[n:], code[:n], lab, classes))

    def vgg_model():
        m = VGGCNNF().to(device)
        init(m)
        trunk = [m.conv1, m.conv2, m.conv3, m.conv4, m.conv5, m.fc6, m.fc7]
        return m, groups(trunk_params(trunk, 0.1, 0.2, 0.0) + trunk_params([m.fc8], 1, 2, 0.0)
                         + [(m.bn.weight, 2, 0.0), (m.bn.bias, 1, 0.0)])

    def vgg(batch):
        m, g = vgg_model()
        x = torch.randn(batch, 3, VGG_SIZE, VGG_SIZE, device=device)
        lab = torch.randint(0, VGG_CLASSES, (batch,), device=device)
        return m, lambda: hash_loss(m(x)[3], lab), g

    def vgg_dah(batch):
        # ``batch`` source + ``batch`` target images, labels in class order (as DomainData)
        m, g = vgg_model()
        x = torch.randn(2 * batch, 3, VGG_SIZE, VGG_SIZE, device=device) * 50
        lab = torch.arange(batch, device=device) * VGG_CLASSES // batch
        return m, lambda: dah_loss(m, x, batch, lab, VGG_CLASSES), g

    def lenet(batch):
        m = LeNet()
        init(m, xavier=True)
        g = groups(trunk_params([m.conv1, m.conv2, m.ip1, m.ip2], 1, 2, 1.0))
        x = torch.rand(batch, 1, 28, 28)   # MNIST's pixels × 1/256
        lab = torch.randint(0, 10, (batch,))
        return m, lambda: F.cross_entropy(m(x), lab), g

    def toy(batch):
        n, classes, side = toy_sizes
        m = Toy(side).to(device)
        init(m)
        g = groups(trunk_params([m.conv1, m.conv2, m.conv3, m.fc6, m.fc7, m.fc8], 1, 2, 0.0)
                   + [(m.bn.weight, 2, 0.0), (m.bn.bias, 1, 0.0)])
        x = torch.randn(2 * n, 3, side, side, device=device)
        lab = torch.arange(n, device=device) * classes // n
        return m, lambda: dah_loss(m, x, n, lab, classes), g

    return {"vgg": vgg, "vgg_dah": vgg_dah, "lenet": lenet, "toy": toy}


def torch_sgd(groups, lr):
    """torch.optim.SGD over ``torch_models``' param groups: the solver's momentum and weight
    decay, each group's lr_mult / decay_mult applied."""
    import torch
    for g in groups:
        g["lr"] = lr * g.pop("lr_mult")
        g["weight_decay"] = WEIGHT_DECAY * g.pop("decay_mult")
    return torch.optim.SGD(groups, lr=lr, momentum=MOMENTUM)


def _torch_step(spec):
    import torch
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(1701)
    name = spec["net"]
    t0 = time.perf_counter()
    model, loss_fn, groups = torch_models(spec.get("toy_sizes"))[name](spec["batch"])
    opt = torch_sgd(groups, BASE_LR[name])
    model.train()
    build_s = time.perf_counter() - t0
    steps, updates, first, loss, rss = [], [], None, None, []
    for i in range(spec["warmup"] + spec["steps"]):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        g = time.perf_counter()
        opt.step()
        end = time.perf_counter()
        if i == 0:
            first = end - t
        if i >= spec["warmup"]:
            steps.append((end - t) * 1000)
            updates.append((end - g) * 1000)
        _rss_trace(rss, i, spec.get("rss_every"))
    import numpy as np
    cfg = torch.__config__.show()
    libs = [ln.strip(" -") for ln in cfg.splitlines()
            if "Math Kernel" in ln or "MKL-DNN" in ln or "CPU capability" in ln
            or "OpenBLAS" in ln]
    info = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(), "torch_libs": libs,
            "blas": _blas_info(np), "imported_minicaffe": "minicaffe" in sys.modules}
    return {"step_ms": steps, "update_ms": updates, "build_s": build_s, "first_step_s": first,
            "rss_mib": rss, "loss": float(loss), "info": info,
            "params": int(sum(p.numel() for p in model.parameters()))}


# --- one measurement in its own process --------------------------------------------------------

def _rss_mib():
    """This process's resident memory now (Linux's /proc/self/statm), None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2.0 ** 20
    except (OSError, ValueError, IndexError):
        return None


def _rss_trace(trace, i, every):
    """Append [step, RSS MiB] after every ``every``-th step (``--rss_every``; 0: never)."""
    if every and (i + 1) % every == 0:
        trace.append([i + 1, _rss_mib()])


def _peak_rss_mib():
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def worker(spec_json):
    """Entry point of a measurement subprocess: prints ``RESULT {json}``; never imports
    minicaffe for a PyTorch measurement (nor torch for a minicaffe one)."""
    spec = json.loads(spec_json)
    try:
        fn = _minicaffe_step if spec["framework"] == "minicaffe" else _torch_step
        out = fn(spec)
        out["peak_rss_mib"] = _peak_rss_mib()
        status = 0
    except Exception as exc:  # reported in the table, with the traceback's last lines
        import traceback
        out = {"error": "%s: %s" % (type(exc).__name__, exc),
               "traceback": traceback.format_exc()[-3000:]}
        status = 1
    sys.stdout.write("RESULT " + json.dumps(out) + "\n")
    sys.stdout.flush()
    return status


# The subprocess loads this file by path under another name, so a PyTorch measurement does not
# import the minicaffe package (numba, every layer) and its RSS is PyTorch's alone.
_BOOT = ("import importlib.util, sys\n"
         "spec = importlib.util.spec_from_file_location('_minicaffe_benchmark', sys.argv[1])\n"
         "mod = importlib.util.module_from_spec(spec)\n"
         "spec.loader.exec_module(mod)\n"
         "sys.exit(mod.worker(sys.argv[2]))\n")


def _minicaffe_defaulted():
    """The idle-thread variables import minicaffe set (minicaffe.WAIT_DEFAULTS)."""
    import minicaffe
    return set(minicaffe.WAIT_DEFAULTED)


def _framework_env(env, fw, threads=None):
    """PyTorch runs in the user's environment: without the OMP_WAIT_POLICY=PASSIVE and
    OPENBLAS_THREAD_TIMEOUT=4 that importing minicaffe sets when the user has not (see
    minicaffe/__init__.py), and without the
    thread counts it sets (minicaffe/threads.py) unless ``--threads`` gave them."""
    if fw == "pytorch":
        from minicaffe import threads as mc_threads
        drop = _minicaffe_defaulted()
        if not threads:
            drop |= {k for k, v in mc_threads.DEFAULTED.items() if env.get(k) == v}
        env = {k: v for k, v in env.items() if k not in drop}
    return env


# A --load process: a bounded busy loop, ending by itself past its time limit or when the
# benchmark that started it has gone; Ctrl-C is the benchmark's to handle (it kills them).
_SPIN = ("# tools/benchmark --load\n"
         "import os, signal, sys, time\n"
         "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
         "end, parent = time.monotonic() + float(sys.argv[1]), int(sys.argv[2])\n"
         "print('spinning', flush=True)\n"
         "x, i = 1.0, 0\n"
         "while True:\n"
         "    x, i = x * 0.999999 + 1e-6, i + 1\n"
         "    if i % 100000 == 0 and (time.monotonic() > end or os.getppid() != parent):\n"
         "        break\n")


@contextlib.contextmanager
def busy_processes(n, limit_s):
    """``n`` processes each spinning one CPU for the duration of the block (at most
    ``limit_s`` seconds); yields their pids once all are running. They are killed and reaped
    when the block ends, by an error or Ctrl-C too."""
    procs = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen(
                [sys.executable, "-c", _SPIN, "%g" % limit_s, str(os.getpid())],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True))
        for p in procs:
            if p.stdout.readline().strip() != "spinning":
                from minicaffe.errors import CaffeError
                raise CaffeError("a --load process did not start (exit status %s)" % p.wait())
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait()
            p.stdout.close()


def measure(spec, env, cwd, timeout):
    cmd = [sys.executable, "-c", _BOOT, os.path.abspath(__file__), json.dumps(spec)]
    try:
        p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": "timed out after %g s" % timeout}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": "exit status %d: %s" % (p.returncode,
                                              (p.stdout[-1000:] + p.stderr[-2000:]).strip())}


# --- the table ---------------------------------------------------------------------------------

def _int_list(text):
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated integers, got %r" % text) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers, got %r" % text)
    return values


def _threads_list(text):
    """--threads: counts, and ``auto`` for the environment's (minicaffe's default: the thread
    Governor's choice; None here)."""
    words = [w.strip() for w in text.split(",") if w.strip()]
    if not words:
        raise argparse.ArgumentTypeError("expected comma-separated counts or auto, got %r" % text)
    out = []
    for w in words:
        t = None if w == "auto" else _int_list(w)[0]
        if t not in out:
            out.append(t)
    return out


def build_parser():
    p = argparse.ArgumentParser(
        prog="benchmark",
        description="Time a CPU training step (forward + backward + SGD update) in minicaffe "
                    "and in PyTorch, side by side.")
    p.add_argument("--nets", default=None,
                   help="comma-separated, of %s (default all; --quick: lenet,toy)"
                        % ",".join(NETS))
    p.add_argument("--batches", type=_int_list, default=None,
                   help="VGG_CNN_F batch sizes (default 8,16,32; --quick: 2); LeNet runs at "
                        "64, the ToyHome net at its training batch")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 10)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2)")
    p.add_argument("--threads", type=_threads_list, default=None,
                   help="threads for both frameworks, comma-separated counts or auto (the "
                        "environment's: minicaffe's default picks them as it trains); several: "
                        "one set of rows each, measured in turn; default: auto")
    p.add_argument("--rounds", type=int, default=1,
                   help="alternate the measurements (frameworks and --threads) this many times "
                        "per row")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: lenet,toy, 1 warm-up and 3 timed steps")
    p.add_argument("--no_torch", action="store_true", help="minicaffe only")
    p.add_argument("--json", default="", help="also write the numbers to this file")
    p.add_argument("--save_nets", default="",
                   help="write the minicaffe nets as prototxt files to this folder")
    p.add_argument("--load", type=int, default=0,
                   help="run this many busy processes (one CPU spin loop each) beside the "
                        "measurements: the speed on a loaded machine (default 0)")
    p.add_argument("--rss_every", type=int, default=0,
                   help="read each measurement's resident memory after every this many steps "
                        "(warm-up included) and print how it grew: flat memory over a long "
                        "run, e.g. --steps 10000 --rss_every 1000 (default 0: not read)")
    p.add_argument("--timeout", type=float, default=1800.0,
                   help="seconds allowed for one measurement")
    return p


def _load():
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return None


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _fmt_blas(blas):
    out = []
    for b in blas:
        where = ", ".join(str(x) for x in (b.get("library"), b.get("architecture"),
                                           b.get("threading_layer")) if x)
        out.append("%s %s [%s] %s threads" % (b.get("internal_api"), b.get("version") or "",
                                             where, b.get("num_threads")))
    return "; ".join(out) or "unknown"


def environment_lines(result):
    env = result["environment"]
    quota = env.get("cgroup_cpu_limit")
    lines = ["cpu: %s, %s logical CPUs, %s usable (affinity)%s"
             % (env["cpu"], env["cpu_count"], env["affinity"],
                ", cgroup CPU quota %g" % quota if quota else ", no cgroup CPU quota"),
             "python %s, %s" % (env["python"], env["platform"]),
             "variables: " + ", ".join("%s=%s" % (k, env["variables"].get(k) or "unset")
                                       for k in REPORTED_VARS)
             + (" (%s: %s)" % ("/".join(env["wait_defaulted"]) or "OMP_WAIT_POLICY",
                               env["omp_wait_policy"]) if "omp_wait_policy" in env else "")]
    if env.get("threads_defaulted"):
        lines.append("threads without --threads: %s = %d, minicaffe's default "
                     "(minicaffe/threads.py: the usable cores, or a thread variable you set); "
                     "PyTorch runs without it"
                     % (", ".join(env["threads_defaulted"]), env["default_threads"]))
    for threads, seen in env["seen"].items():
        mc, pt = seen.get("minicaffe"), seen.get("pytorch")
        head = "threads %s: " % threads
        if mc:
            lines.append(head + "minicaffe: numpy %s BLAS %s; numba %s, %s threads (%s layer)"
                         % (mc["numpy"], _fmt_blas(mc["blas"]), mc["numba"],
                            mc["numba_threads"], mc.get("numba_threading_layer", "?")))
        if pt:
            lines.append(head + "PyTorch %s: %d threads (%d inter-op); %s; loaded: %s"
                         % (pt["torch"], pt["torch_threads"], pt["torch_interop_threads"],
                            ", ".join(pt["torch_libs"]), _fmt_blas(pt["blas"])))
    la, lb = result["load_average"]["start"], result["load_average"]["end"]
    lines.append("load average (1, 5, 15 min): %s at the start, %s at the end"
                 % (" ".join(map(str, la or ())), " ".join(map(str, lb or ()))))
    return lines


def table_lines(rows):
    """The markdown table; a "load" column (busy processes beside it) when a row had some."""
    loaded = any(r.get("load") for r in rows)
    head = ["net", "batch", "threads"] + (["load"] if loaded else []) + [
            "minicaffe img/s", "PyTorch img/s",
            "minicaffe / PyTorch", "minicaffe step ms (update)", "PyTorch step ms (update)",
            "minicaffe peak RSS MiB", "PyTorch peak RSS MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        mc, pt = r.get("minicaffe", {}), r.get("pytorch", {})

        def cell(d, key, fmt):
            if "error" in d:
                return "error"
            if "skipped" in d:
                return "—"
            return fmt % d[key] if key in d else "—"
        ratio = ("%.2f" % (mc["images_per_s"] / pt["images_per_s"])
                 if "images_per_s" in mc and "images_per_s" in pt else "—")
        lines.append("| " + " | ".join([
            r["label"], str(r["batch"]), str(r["threads"])] + (
            [str(r.get("load", 0))] if loaded else []) + [
            cell(mc, "images_per_s", "%.1f"), cell(pt, "images_per_s", "%.1f"), ratio,
            (cell(mc, "median_step_ms", "%.0f") + (" (%.0f)" % mc["median_update_ms"]
                                                  if "median_update_ms" in mc else "")),
            (cell(pt, "median_step_ms", "%.0f") + (" (%.0f)" % pt["median_update_ms"]
                                                  if "median_update_ms" in pt else "")),
            cell(mc, "peak_rss_mib", "%.0f"), cell(pt, "peak_rss_mib", "%.0f")]) + " |")
    return lines


def memory_lines(rows):
    """With --rss_every: each measurement's resident memory at its first reading and its
    last, and the growth between them (a leak grows with the steps; a cache fills once)."""
    lines = []
    for r in rows:
        for fw in ("minicaffe", "pytorch"):
            for k, trace in enumerate(r.get(fw, {}).get("rss_mib", [])):
                if len(trace) < 2 or None in (trace[0][1], trace[-1][1]):
                    continue
                (s0, m0), (s1, m1) = trace[0], trace[-1]
                lines.append("resident memory, %s %s threads %s round %d: %.1f MiB after step "
                             "%d, %.1f after step %d (%+.1f MiB; the readings: %s)"
                             % (fw, r["net"], r["threads"], k + 1, m0, s0, m1, s1, m1 - m0,
                                " ".join("%.0f" % m for _, m in trace)))
    return lines + ([""] if lines else [])


LABELS = {"vgg": "VGG_CNN_F DAH d=64, 224², HashLoss", "lenet": "LeNet 28², SoftmaxWithLoss",
          "toy": "ToyHome DAH 32², 48+48, MMD+hash+entropy"}


def _merge(results):
    """One framework's measurements of a row (one per round) -> medians, max RSS."""
    ok = [r for r in results if "error" not in r]
    if not ok:
        return results[-1]
    steps = [s for r in ok for s in r["step_ms"]]
    updates = [u for r in ok for u in r["update_ms"]]
    out = {"step_ms": steps, "update_ms": updates,
           "median_step_ms": statistics.median(steps),
           "median_update_ms": statistics.median(updates),
           "peak_rss_mib": max(r["peak_rss_mib"] for r in ok),
           "build_s": [r["build_s"] for r in ok], "first_step_s": [r["first_step_s"] for r in ok],
           "rss_mib": [r.get("rss_mib", []) for r in ok],   # per round: [step, MiB]
           "loss": ok[-1]["loss"], "params": ok[-1]["params"]}
    if len(ok) < len(results):
        out["errors"] = [r["error"] for r in results if "error" in r]
    return out


def benchmark_cmd(args):
    nets = (args.nets or ("lenet,toy" if args.quick else ",".join(NETS))).split(",")
    nets = [n.strip() for n in nets if n.strip()]
    bad = [n for n in nets if n not in NETS]
    if bad:
        from ._cli import UsageError
        raise UsageError("unknown net %s (known: %s)" % (", ".join(bad), ", ".join(NETS)))
    batches = args.batches or ([2] if args.quick else [8, 16, 32])
    steps = args.steps if args.steps is not None else (3 if args.quick else 10)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    if steps < 1 or warmup < 0 or args.rounds < 1 or args.load < 0 or args.rss_every < 0:
        from ._cli import UsageError
        raise UsageError("--steps and --rounds must be >= 1, --warmup, --load and --rss_every "
                         ">= 0")
    threads_list = args.threads or [None]
    with_torch = not args.no_torch
    torch_note = ""
    if with_torch:
        import importlib.util
        if importlib.util.find_spec("torch") is None:
            with_torch, torch_note = False, "torch is not importable: pip install torch"
    else:
        torch_note = "--no_torch"

    if args.save_nets:
        from minicaffe import protoio
        os.makedirs(args.save_nets, exist_ok=True)
        for name in nets:
            for b in (batches if name == "vgg" else [None]):
                path = os.path.join(args.save_nets, "%s%s.prototxt"
                                    % (name, "_%d" % b if b else ""))
                protoio.write_proto_text(path, minicaffe_net_param(name, b))
                print("wrote %s" % path, file=sys.stderr)

    from minicaffe import threads as mc_threads
    result = {"command": ["tools/benchmark"] + list(sys.argv[1:]),
              "settings": {"nets": nets, "batches": batches, "steps": steps, "warmup": warmup,
                           "threads": threads_list, "rounds": args.rounds, "load": args.load,
                           "rss_every": args.rss_every},
              "load_average": {"start": _load()},
              "environment": {
                  "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
                  "affinity": mc_threads.affinity_cores(),
                  "cgroup_cpu_limit": mc_threads.cgroup_cpu_limit(),
                  "default_threads": mc_threads.default_threads(),
                  "threads_defaulted": sorted(mc_threads.DEFAULTED),
                  "python": platform.python_version(), "platform": platform.platform(),
                  "variables": {k: os.environ.get(k) for k in REPORTED_VARS},
                  "omp_wait_policy": ("minicaffe's default, set on import; PyTorch runs "
                                      "without it" if _minicaffe_defaulted()
                                      else "as set, for both"),
                  "wait_defaulted": sorted(_minicaffe_defaulted()),
                  "torch": torch_note or "measured", "seen": {}},
              "rows": []}
    frameworks = ["minicaffe"] + (["pytorch"] if with_torch else [])
    measurements = (len(threads_list) * args.rounds * len(frameworks)
                    * sum(len(batches) if name == "vgg" else 1 for name in nets))
    workdir = tempfile.mkdtemp(prefix="minicaffe_benchmark_")
    failed = False
    load = contextlib.ExitStack()
    try:
        if args.load:
            result["load_pids"] = load.enter_context(
                busy_processes(args.load, args.timeout * measurements + 60.0))
            print("benchmark: %d busy process(es) beside the measurements: pid %s"
                  % (args.load, " ".join(map(str, result["load_pids"]))), file=sys.stderr)
        rows = {}
        for name in nets:
            for batch in (batches if name == "vgg" else [None]):
                n = net_batch(name, batch)
                got = {(t, f): [] for t in threads_list for f in frameworks}
                for _ in range(args.rounds):   # every setting in turn: a drifting load hits all
                    for threads in threads_list:
                        env = dict(os.environ)
                        if threads:   # a count of ours: the child keeps it (no Governor)
                            mc_threads.set_for_children(env, threads)
                        key = str(threads) if threads else "auto"
                        seen = result["environment"]["seen"].setdefault(key, {})
                        for fw in frameworks:
                            spec = {"framework": fw, "net": name, "batch": n, "steps": steps,
                                    "warmup": warmup, "threads": threads,
                                    "rss_every": args.rss_every,
                                    "toy_sizes": _toy_sizes() if name == "toy" else None}
                            t0 = time.perf_counter()
                            r = measure(spec, _framework_env(env, fw, threads), workdir,
                                        args.timeout)
                            print("benchmark: %-9s %-5s batch %-3d threads %-3s %s (%.0f s, "
                                  "load %s)" % (fw, name, n, key, (
                                      "%.0f ms/step" % statistics.median(r["step_ms"])
                                      if "step_ms" in r else r.get("error", "")[:200]),
                                      time.perf_counter() - t0,
                                      " ".join(map(str, _load() or ()))), file=sys.stderr)
                            if "info" in r:
                                seen.setdefault(fw, r["info"])
                            got[threads, fw].append(r)
                for threads in threads_list:
                    key = str(threads) if threads else "auto"
                    row = {"net": name, "label": LABELS[name], "batch": n, "threads": key,
                           "load": args.load}
                    for fw in frameworks:
                        m = _merge(got[threads, fw])
                        chosen = [r.get("info", {}).get("governor") for r in got[threads, fw]]
                        if any(chosen):
                            m["governor"] = chosen   # per round: [iteration, threads, {ms}]
                        if "error" not in m:
                            m["images_per_s"] = n / (m["median_step_ms"] / 1000.0)
                        else:
                            failed = True
                        row[fw] = m
                    if not with_torch:
                        row["pytorch"] = {"skipped": torch_note}
                    rows.setdefault(threads, []).append(row)
        for threads in threads_list:   # the table's order: a set of rows per thread setting
            result["rows"] += rows.get(threads, [])
    finally:
        load.close()
        shutil.rmtree(workdir, ignore_errors=True)
    result["load_average"]["end"] = _load()
    lines = ["minicaffe vs PyTorch, CPU training step (forward + backward + SGD momentum %g, "
             "weight decay %g, fp32); median of %d steps after %d warm-up, %d round(s)%s"
             % (MOMENTUM, WEIGHT_DECAY, steps, warmup, args.rounds,
                "; with %d busy process(es) beside it (--load %d)" % (args.load, args.load)
                if args.load else ""), ""]
    lines += table_lines(result["rows"]) + [""] + memory_lines(result["rows"])
    if torch_note:
        lines.append("PyTorch: not measured (%s)" % torch_note)
    lines += environment_lines(result)
    for r in result["rows"]:
        for fw in ("minicaffe", "pytorch"):
            if "error" in r.get(fw, {}):
                lines.append("%s %s batch %d: %s" % (fw, r["net"], r["batch"],
                                                     r[fw]["error"]))
                if r[fw].get("traceback"):
                    lines.append(r[fw]["traceback"])
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 1 if failed else 0


def main(argv=None):
    from ._cli import run
    return run(benchmark_cmd, argv, parser=build_parser())


if __name__ == "__main__":
    sys.exit(main())

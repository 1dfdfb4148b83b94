"""The DAH experiments: configure a shipped net family, train it, extract codes, evaluate.

A *family* is a folder of ``prototxt/`` (``toyhome`` for the embedded data, ``office_home`` for
Office-Home on VGG_CNN_F) holding ``<method>_train.prototxt`` and ``<method>_solver.prototxt``
for the methods trained end to end (DAH, NoDA, SuH, DAN, DANN) and two deploy nets
(``hash_deploy`` → ``code`` and ``fc7``; ``cls_deploy`` → ``prob``). ``DAH_authors``
(``dah_authors_*``) is DAH with the objective of the authors' code (dah_paper_notes §2.4), where
``dah_*`` follows the supplement's layers; it shares ``hash_deploy``. ``configure`` points a
family's files at the chosen lists, bit length and schedule; ``train`` runs the solver;
``extract`` runs a deploy net over a list file in the TEST phase; ``evaluate_hashing`` and
``evaluate_classifier`` compute the paper's numbers (dah_spec §4).
"""
import logging
import math
import os

import numpy as np

from . import protoio
from .errors import CaffeError
from .hashing import metrics
from .net import TEST, Net
from .proto import caffe_pb2
from .solver import Solver
from .transformer import read_image_list

log = logging.getLogger("minicaffe")

HASH_METHODS = ("DAH", "NoDA", "SuH")
CLS_METHODS = ("DAN", "DANN")
TRAINED = HASH_METHODS + CLS_METHODS
AUTHORS_METHODS = ("DAH_authors",)   # a hash net too; kept out of TRAINED (reproduce's five)


def prototxt_dir():
    """The shipped nets and solvers: the checkout's ``prototxt/``, or the installed package's
    copy (``minicaffe/prototxt``, package data)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in (os.path.join(here, "prototxt"), os.path.join(here, "..", "prototxt")):
        if os.path.isdir(cand):
            return os.path.normpath(cand)
    raise CaffeError("the shipped prototxt/ folder was not found next to the minicaffe package "
                     "(%s); reinstall it: pip install ." % here)


def default_trunk():
    """The shipped generic trunk of the ToyHome family (``tools/make_trunk``)."""
    return os.path.join(prototxt_dir(), "toyhome", "things_trunk.caffemodel")


def family_file(family, name):
    path = family if os.path.isdir(family) else os.path.join(prototxt_dir(), family)
    f = os.path.join(path, name)
    if not os.path.exists(f):
        raise CaffeError("no %s in the net family %s" % (name, path))
    return f


def _layers(net, type_name):
    return [lp for lp in net.layer if lp.type == type_name]


def configure(family, method, *, source_list, target_list, root, num_classes, bits=None,
              per_class=None, max_iter=None, snapshot_prefix, seed=1, gamma=None, eta=None,
              base_lr=None, display=None):
    """The SolverParameter (with its net embedded) of ``method`` in ``family``, pointed at the
    given lists (the TEST phase's ImageData layer reads the target list): SuH trains on the
    labelled target (source = target list); ``bits`` sets the hash layer, and where the family
    has ``<method>_solver_<bits>.prototxt`` (its settings for that code length) that solver and
    its net are used instead of ``<method>_solver.prototxt``; ``gamma``/``eta`` override the
    MMD / entropy loss weights; ``max_iter`` rescales an "exp" schedule so the rate still falls 10x over the run.

    ``DAH_authors``: ``gamma``/``eta`` are the code's γ and η (5000 and 1 shipped), written as
    the loss weights γ·Q/N and η·n_t/N that turn the mean-form layers into J_code's sums / N
    (``authors_loss_weights``), recomputed for the batch C·K + C·K that ``num_classes`` and
    ``per_class`` give."""
    known = TRAINED + AUTHORS_METHODS
    if method not in known:
        raise CaffeError("unknown method %r (trained methods: %s)" % (method, ", ".join(known)))
    short = method.lower()
    solver_path = family_file(family, "%s_solver.prototxt" % short)
    if bits:  # a family may tune a method per code length: <method>_solver_<bits>.prototxt
        tuned = os.path.join(os.path.dirname(solver_path), "%s_solver_%d.prototxt" % (short, bits))
        if os.path.exists(tuned):
            solver_path = tuned
    sp = protoio.read_solver_param(solver_path)
    net = protoio.read_net_param(os.path.join(os.path.dirname(solver_path), sp.net))
    sp.ClearField("net")
    dl = _layers(net, "DomainData")[0].domain_data_param
    shipped_n_s = dl.num_classes * dl.per_class
    src = target_list if method == "SuH" else source_list
    for lp in _layers(net, "DomainData"):
        p = lp.domain_data_param
        p.source, p.target_source = src, target_list
        p.root_folder = root
        p.target_root_folder = root
        p.num_classes = num_classes
        if per_class:
            p.per_class = per_class
    for lp in _layers(net, "ImageData"):   # the TEST phase (tools/test) scores the target
        lp.image_data_param.source, lp.image_data_param.root_folder = target_list, root
    k = _layers(net, "DomainData")[0].domain_data_param.per_class
    if method in AUTHORS_METHODS:
        _set_authors_weights(net, shipped_n_s, num_classes * k, gamma, eta)
        gamma = eta = None
    for lp in net.layer:
        if lp.type == "EntropyLoss":
            lp.entropy_loss_param.num_classes = num_classes
            if eta is not None:
                del lp.loss_weight[:]
                lp.loss_weight.append(eta)
        elif lp.type == "MMDLoss" and gamma is not None and method in HASH_METHODS:
            del lp.loss_weight[:]
            lp.loss_weight.append(gamma)
        elif lp.name == "fc8_hash" and bits:
            lp.inner_product_param.num_output = bits
        elif lp.name == "fc8" and lp.type == "InnerProduct":
            lp.inner_product_param.num_output = num_classes
        elif lp.name == "domain_labels":
            for s in lp.dummy_data_param.shape:
                s.dim[0] = num_classes * k
        elif lp.type == "GradientScaler" and max_iter:
            lp.gradient_scaler_param.max_iter = max_iter
    sp.net_param.CopyFrom(net)
    if max_iter:
        if sp.lr_policy == "exp" and sp.max_iter:
            total = sp.gamma ** sp.max_iter       # keep the overall decay of the shipped schedule
            sp.gamma = total ** (1.0 / max_iter)
        sp.max_iter = max_iter
    if base_lr:
        sp.base_lr = base_lr
    if display is not None:
        sp.display = display
    sp.snapshot = 0
    sp.snapshot_after_train = True
    sp.snapshot_prefix = snapshot_prefix
    sp.random_seed = seed
    return sp


def authors_loss_weights(n_s, gamma=1.0, eta=1.0):
    """The loss weights that make the mean-form MMDLoss and EntropyLoss layers compute the
    authors' code's terms of J_code (dah_paper_notes §2.4) on a batch of n_s source + n_s target
    samples (N = 2·n_s): MMDLoss outputs Σ_q Σ_quads h_q / (17·Q) with Q = ⌊n_s/2⌋, so
    (γ/17)·Σ Σ h / N needs γ·Q/N; EntropyLoss outputs H / n_t, so η·H / N needs η·n_t/N.
    Returns (mmd_weight, entropy_weight)."""
    n = 2 * n_s
    return gamma * (n_s // 2) / n, eta * n_s / n


def _set_authors_weights(net, shipped_n_s, n_s, gamma, eta):
    """Rewrite the MMD and entropy loss weights of a ``dah_authors`` net, shipped for batches
    of ``shipped_n_s`` + ``shipped_n_s`` images, for batches of n_s + n_s. γ and η (None: the
    values the shipped weights encode) are the code's."""
    (mmd0, ent0), (mmd1, ent1) = authors_loss_weights(shipped_n_s), authors_loss_weights(n_s)
    for lp in net.layer:
        if lp.type == "MMDLoss":
            unit0, unit1, value = mmd0, mmd1, gamma
        elif lp.type == "EntropyLoss":
            unit0, unit1, value = ent0, ent1, eta
        else:
            continue
        if value is None:
            value = lp.loss_weight[0] / unit0 if lp.loss_weight else 1.0
        del lp.loss_weight[:]
        lp.loss_weight.append(value * unit1)


def train(solver_param, weights=None, progress=None):
    """Train; returns the path of the final .caffemodel. ``progress(iter, max_iter, loss)``
    is called after every iteration."""
    d = os.path.dirname(solver_param.snapshot_prefix)
    if d:
        os.makedirs(d, exist_ok=True)
    solver = Solver(solver_param, weights=weights)
    if progress:
        solver.add_iteration_callback(
            lambda s: progress(s.iter, s.param.max_iter, s.smoothed_loss))
    try:
        solver.solve()
    finally:
        solver.net.close()
        for n in solver.test_nets:
            n.close()
    return solver.snapshot_filename(".caffemodel")


def trunk_weights(model, family, out_path):
    """Write the layers of ``model`` (a .caffemodel) that every net of ``family`` shares (those
    named in both deploy nets: the trunk, conv1 … fc7) to ``out_path``: the pretrained start
    for every method and bit length, whose own heads (hash layer, classifier) start afresh."""
    shared = ({lp.name for lp in protoio.read_net_param(family_file(family, "hash_deploy.prototxt")).layer}
              & {lp.name for lp in protoio.read_net_param(family_file(family, "cls_deploy.prototxt")).layer})
    src = protoio.read_net_param(model, binary=True)
    out = caffe_pb2.NetParameter()
    out.name = src.name
    for lp in list(src.layer) + list(src.layers):
        if lp.name in shared and len(lp.blobs):
            new = out.layer.add()
            new.name, new.type = lp.name, lp.type if isinstance(lp.type, str) else ""
            new.blobs.extend(lp.blobs)
    if not out.layer:
        raise CaffeError("%s has none of the trunk layers %s" % (model, ", ".join(sorted(shared))))
    protoio.write_proto_binary(out_path, out)
    return out_path


def data_layer(train_net_param, what="the training net"):
    """The DomainData or ImageData layer whose transformation ``extract`` copies; ``what``
    names the net in the error."""
    for lp in train_net_param.layer:
        if lp.type in ("DomainData", "ImageData"):
            return lp
    raise CaffeError("%s has no DomainData or ImageData layer to copy the transformation from"
                     % what)


def extract(deploy, weights, list_file, root, blobs, transform_from, batch_size=100):
    """Run ``deploy`` (path or NetParameter) over every image of ``list_file`` in the TEST
    phase and return ({blob: array (N, ...)}, labels (N,)). The image transformation (resize,
    centre crop, mean, scale; no mirror) is the training net's ``transform_from``."""
    net_param = protoio.read_net_param(deploy)
    dl = data_layer(transform_from)
    entries = read_image_list(list_file)
    n = len(entries)
    if n == 0:
        raise CaffeError("%s has no images" % list_file)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    del out.layer[:]
    for lp in net_param.layer:
        if lp.type == "Input":
            new = out.layer.add()
            new.name, new.type = "data", "ImageData"
            new.top.extend(["data", "label"])
            new.transform_param.CopyFrom(dl.transform_param)
            new.transform_param.mirror = False
            p = new.image_data_param
            p.source, p.root_folder, p.batch_size = list_file, root, min(batch_size, n)
            src = dl.domain_data_param if dl.type == "DomainData" else dl.image_data_param
            p.new_height, p.new_width, p.is_color = src.new_height, src.new_width, src.is_color
        else:
            out.layer.add().CopyFrom(lp)
    logger = logging.getLogger("minicaffe")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))  # no "Ignoring source layer" for every loss layer
    try:
        net = Net(out, TEST, weights=weights)
    finally:
        logger.setLevel(level)
    try:
        b = net.blobs["data"].shape[0]
        feats = {k: [] for k in blobs}
        labels = []
        for _ in range(int(math.ceil(n / float(b)))):
            net.forward_prefilled()
            for k in blobs:
                feats[k].append(net.blobs[k].data.reshape(b, -1).copy())
            labels.append(net.blobs["label"].data.copy())
    finally:
        net.close()
    return ({k: np.concatenate(v)[:n] for k, v in feats.items()},
            np.concatenate(labels)[:n].astype(np.int64))


def evaluate_hashing(src_codes, src_labels, tgt_codes, tgt_labels, num_classes,
                     with_accuracy=True):
    """The paper's hashing numbers for one model: target accuracy by eq. 6 against all
    source codes (continuous codes), mAP protocol A (target queries, source database) and B
    (within the target, leave-self-out) on sgn codes, and the PR curves of both."""
    res = {}
    if with_accuracy:
        res["accuracy"], _ = metrics.recognition_accuracy(tgt_codes, tgt_labels, src_codes,
                                                          src_labels, num_classes)
    bs, bt = metrics.binarize(src_codes), metrics.binarize(tgt_codes)
    res["map_a"] = metrics.mean_average_precision(bt, tgt_labels, bs, src_labels)
    res["map_b"] = metrics.mean_average_precision(bt, tgt_labels, bt, tgt_labels, exclude_self=True)
    res["pr_a"] = metrics.precision_recall_by_radius(bt, tgt_labels, bs, src_labels)
    res["pr_b"] = metrics.precision_recall_by_radius(bt, tgt_labels, bt, tgt_labels, exclude_self=True)
    return res


def evaluate_classifier(prob, labels):
    """Target accuracy of a softmax classifier (DAN, DANN): argmax of the probabilities."""
    return float(np.mean(np.argmax(prob, axis=1) == labels))

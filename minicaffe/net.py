"""Net: a DAG of layers built from a NetParameter, with Caffe's construction rules.

Order of construction (net.cpp:Init): filter by phase/level/stage → insert Split layers →
create and set up each layer → backward-need pass → force_backward → outputs → share params.
"""
from __future__ import annotations

import itertools
import logging
import os
import re
from collections import OrderedDict
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from . import hdf5, protoio
from .blob import Blob
from .errors import ArgumentError, CaffeError, LayerTypeError, ModelFileError, NetError, ShapeError
from .layer import Layer, create_layer
from .proto import caffe_pb2
from .protoio import blobproto_shape, blobproto_to_array

log = logging.getLogger("minicaffe")

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST
_LAYER_OPENER = re.compile(r"\blayers?\s*\{")

#: caffe_pb2 messages (protoc's generated classes have no types)
NetParameter = Any
NetState = Any
#: what ``Net`` is built from: a prototxt path, prototxt text or a NetParameter
NetSource = Union[str, "os.PathLike[str]", NetParameter]
#: what ``copy_from`` takes: a path, a comma-separated list of paths, a list of paths or
#: NetParameters, or a NetParameter
Weights = Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]", NetParameter]], NetParameter]


# --- FilterNet -----------------------------------------------------------------------------

def state_meets_rule(state, rule, layer_name=""):
    """NetStateRule matching (net.cpp:StateMeetsRule)."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def filter_net(param, state):
    """The layers of ``param`` that the state includes (a new NetParameter)."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    for lp in param.layer:
        if lp.include and lp.exclude:
            raise NetError("Layer %s: specify either include rules or exclude rules, not both"
                           % lp.name)
        if lp.include:
            keep = any(state_meets_rule(state, r, lp.name) for r in lp.include)
        else:
            keep = not any(state_meets_rule(state, r, lp.name) for r in lp.exclude)
        if keep:
            out.layer.add().CopyFrom(lp)
    return out


# --- InsertSplits --------------------------------------------------------------------------

def split_layer_name(layer_name, blob_name, blob_idx):
    return "%s_%s_%d_split" % (blob_name, layer_name, blob_idx)


def split_blob_name(layer_name, blob_name, blob_idx, split_idx):
    return "%s_%s_%d_split_%d" % (blob_name, layer_name, blob_idx, split_idx)


def insert_splits(param, locate=None):
    """A copy of ``param`` with a Split layer after every top that feeds several consumers
    (util/insert_splits.cpp, Caffe's names). An explicit non-zero loss_weight counts as a use.
    ``locate(layer_name)`` gives the "file:line: " that prefixes an error."""
    last_top = {}
    source_of = {}
    count = {}
    loss_w = {}
    names = [lp.name for lp in param.layer]
    for i, lp in enumerate(param.layer):
        for j, b in enumerate(lp.bottom):
            if b not in last_top:
                raise NetError("%sUnknown bottom blob '%s' (layer '%s', bottom index %d)"
                               % (locate(lp.name) if locate else "", b, lp.name, j))
            source_of[(i, j)] = last_top[b]
            count[last_top[b]] = count.get(last_top[b], 0) + 1
        for j, t in enumerate(lp.top):
            last_top[t] = (i, j)
        for j in range(min(len(lp.loss_weight), len(lp.top))):
            idx = last_top[lp.top[j]]
            loss_w[idx] = lp.loss_weight[j]
            if lp.loss_weight[j]:
                count[idx] = count.get(idx, 0) + 1
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    split_idx = {}
    for i, lp in enumerate(param.layer):
        new = out.layer.add()
        new.CopyFrom(lp)
        for j, b in enumerate(lp.bottom):
            src = source_of[(i, j)]
            if count.get(src, 0) > 1:
                k = split_idx.get(src, 0)
                new.bottom[j] = split_blob_name(names[src[0]], b, src[1], k)
                split_idx[src] = k + 1
        for j, t in enumerate(lp.top):
            n = count.get((i, j), 0)
            if n > 1:
                w = loss_w.get((i, j), 0.0)
                sp = out.layer.add()
                sp.name = split_layer_name(lp.name, t, j)
                sp.type = "Split"
                sp.bottom.append(t)
                for k in range(n):
                    sp.top.append(split_blob_name(lp.name, t, j, k))
                    if w:
                        sp.loss_weight.append(w if k == 0 else 0.0)
                if w:
                    del new.loss_weight[:]
                    split_idx[(i, j)] = split_idx.get((i, j), 0) + 1
    return out


# --- Net -----------------------------------------------------------------------------------

def _phase_value(phase):
    if isinstance(phase, str):
        try:
            return caffe_pb2.Phase.Value(phase.upper())
        except ValueError:
            raise ArgumentError("phase must be TRAIN or TEST, got %r" % phase) from None
    if isinstance(phase, (bool, float)) or not isinstance(phase, (int, np.integer)) \
            or int(phase) not in (TRAIN, TEST):
        raise ArgumentError("phase must be caffe.TRAIN (0) or caffe.TEST (1), got %r" % (phase,))
    return int(phase)


class LayerNode:
    """One layer of a net and its wiring, in the order the layers run: what Caffe keeps in
    parallel vectors (layers_, bottom_vecs_, top_vecs_, bottom_id_vecs_, top_id_vecs_,
    bottom_need_backward_, layer_need_backward_) as one record. ``top_ids`` holds None for a
    top the layer added itself (``needed_auto_tops``); ``propagate_down`` is the per-bottom
    flag its backward gets."""
    __slots__ = ("index", "name", "layer", "bottoms", "tops", "bottom_ids", "top_ids",
                 "propagate_down", "need_backward")

    def __init__(self, index: int, name: str, layer: Layer) -> None:
        self.index, self.name, self.layer = index, name, layer
        self.bottoms: List[Blob] = []
        self.tops: List[Blob] = []
        self.bottom_ids: List[int] = []
        self.top_ids: List[Optional[int]] = []
        self.propagate_down: List[bool] = []
        self.need_backward = False

    def forward(self) -> float:
        """The layer's forward on its blobs; its weighted loss."""
        return self.layer.forward(self.bottoms, self.tops)

    def backward(self) -> None:
        """The layer's backward on its blobs (the caller checks ``need_backward``)."""
        self.layer.backward(self.tops, self.propagate_down, self.bottoms)

    def __repr__(self) -> str:
        return "<LayerNode %d %r (%s)>" % (self.index, self.name, self.layer.type)


class ParamNode:
    """One parameter blob of a layer (an entry of Caffe's params_): ``layer_id``/``index``
    where it sits; ``owner``: the net index of the param whose data it shares (-1: it owns
    its data); ``learnable``: its index in ``Net.learnables``."""
    __slots__ = ("blob", "layer_id", "index", "owner", "learnable")

    def __init__(self, blob: Blob, layer_id: int, index: int, owner: int,
                 learnable: Optional[int]) -> None:
        self.blob, self.layer_id, self.index = blob, layer_id, index
        self.owner, self.learnable = owner, learnable


class Learnable:
    """A param the solver updates (an owner: its sharers follow it) with its multipliers:
    Caffe's learnable_params_, params_lr_, params_weight_decay_ and has_params_lr_/decay_."""
    __slots__ = ("blob", "lr_mult", "decay_mult", "has_lr", "has_decay")

    def __init__(self, blob: Blob, spec: Any) -> None:
        """``spec``: the layer's ParamSpec for this param."""
        self.blob = blob
        self.lr_mult: float = spec.lr_mult
        self.decay_mult: float = spec.decay_mult
        self.has_lr: bool = spec.HasField("lr_mult")
        self.has_decay: bool = spec.HasField("decay_mult")


class Net:
    """A network built from a prototxt (path, text or NetParameter).

    pycaffe forms: ``Net(prototxt, phase)``, ``Net(prototxt, phase, weights=w)``,
    ``Net(prototxt, weights, phase)``; keywords ``level``, ``stages``. ``state`` (a NetState)
    replaces phase/level/stages, as the solver uses it. ``dtype=np.float64`` builds the net in
    double precision (gradient checks). ``source``: the file a NetParameter was read from
    (errors give its lines, Python layers import beside it), as the solver hands it.
    """

    # built by _init: the records and pycaffe's name-keyed views of them
    nodes: List[LayerNode]
    param_nodes: List[ParamNode]
    learnables: List[Learnable]
    blobs: OrderedDict[str, Blob]
    params: OrderedDict[str, List[Blob]]
    layer_dict: OrderedDict[str, Layer]
    bottom_names: OrderedDict[str, List[str]]
    top_names: OrderedDict[str, List[str]]
    blob_loss_weights: OrderedDict[str, float]
    inputs: List[str]
    outputs: List[str]
    phase: int
    name: str

    def __init__(self, network: NetSource, *args: Any, phase: Union[int, str, None] = None,
                 weights: Optional[Weights] = None, level: int = 0, stages: Sequence[str] = (),
                 state: Optional[NetState] = None, dtype: DTypeLike = np.float32,
                 source: Optional[Union[str, "os.PathLike[str]"]] = None) -> None:
        if len(args) == 1:
            phase = args[0]
        elif len(args) == 2:  # the old Net(prototxt, weights, phase)
            weights, phase = args
        elif len(args) > 2:
            raise ArgumentError("Net(network, phase) or Net(network, weights, phase), got %d "
                             "arguments" % (1 + len(args)))
        if not isinstance(network, (str, os.PathLike, caffe_pb2.NetParameter)):
            raise ArgumentError("Net: expected a prototxt path, prototxt text or a NetParameter, "
                             "got %s" % type(network).__name__)
        param = protoio.read_net_param(network)
        is_text = isinstance(network, str) and (
            "\n" in network or not os.path.exists(network))
        self.source: str = "<net>" if is_text or isinstance(network, caffe_pb2.NetParameter) \
            else os.fspath(network)
        if source and self.source == "<net>" and not is_text:
            self.source = os.fspath(source)
        self._source_text = network if is_text else None
        self._net_dir = (None if self.source == "<net>"
                         else os.path.dirname(os.path.abspath(self.source)))
        if state is None:
            state = caffe_pb2.NetState()
            state.CopyFrom(param.state)
            state.phase = _phase_value(TEST if phase is None else phase)
            if stages:
                del state.stage[:]
                state.stage.extend(stages)
            if level:
                state.level = int(level)
        self.dtype = np.dtype(dtype)
        self._init(param, state)
        if weights:
            self.copy_from(weights)

    # --- construction ----------------------------------------------------------------------
    def _init(self, in_param, state):
        self.phase = state.phase
        self.state = state
        self.name = in_param.name
        param = insert_splits(filter_net(in_param, state), self._locate)
        self._param = param
        self.nodes = []                 # one LayerNode per layer, in run order
        self.param_nodes = []           # one ParamNode per param blob, owners and sharers
        self.learnables = []            # one Learnable per param that owns its data
        self.blobs = OrderedDict()
        self.bottom_names = OrderedDict()
        self.top_names = OrderedDict()
        self._blob_names, self._blob_objs, self._blob_need_backward = [], [], []
        self._blob_producer = []
        self.blob_loss_weights = OrderedDict()
        self._input_ids = []
        self._param_names_index = {}
        self._auto_blobs = []

        name_to_idx = {}
        available = set()
        for layer_id, lp in enumerate(param.layer):
            if not lp.HasField("phase"):
                lp.phase = state.phase
            if lp.propagate_down and len(lp.propagate_down) != len(lp.bottom):
                raise NetError("Layer %s: propagate_down must be given 0 or %d times (once per "
                               "bottom), got %d" % (lp.name, len(lp.bottom), len(lp.propagate_down)))
            try:
                layer = create_layer(lp, net_dir=self._net_dir)
            except LayerTypeError as exc:
                raise LayerTypeError("%slayer '%s': %s" % (self._locate(lp.name), lp.name, exc)) from None
            except CaffeError as exc:
                raise type(exc)("%s%s" % (self._locate(lp.name), exc)) from None
            node = LayerNode(layer_id, lp.name, layer)
            self.nodes.append(node)
            bottoms, bids, bneed = node.bottoms, node.bottom_ids, node.propagate_down
            need_backward = False
            for j, bname in enumerate(lp.bottom):
                if bname not in available:
                    raise NetError("%sUnknown bottom blob '%s' (layer '%s', bottom index %d)"
                                   % (self._locate(lp.name), bname, lp.name, j))
                bid = name_to_idx[bname]
                bottoms.append(self._blob_objs[bid])
                bids.append(bid)
                nb = self._blob_need_backward[bid]
                if lp.propagate_down:
                    nb = bool(lp.propagate_down[j])
                bneed.append(nb)
                available.discard(bname)
                need_backward |= self._blob_need_backward[bid]
            tops, tids = node.tops, node.top_ids
            for j, tname in enumerate(lp.top):
                if j < len(lp.bottom) and lp.bottom[j] == tname:  # in-place
                    tid = name_to_idx[tname]
                elif tname in name_to_idx:
                    raise NetError("Top blob '%s' produced by multiple sources (layer '%s' and "
                                   "layer '%s')" % (tname, self._blob_producer[name_to_idx[tname]], lp.name))
                else:
                    tid = len(self._blob_names)
                    self._blob_names.append(tname)
                    self._blob_objs.append(Blob((), self.dtype))
                    self._blob_need_backward.append(False)
                    self._blob_producer.append(lp.name)
                    name_to_idx[tname] = tid
                    self.blobs[tname] = self._blob_objs[tid]
                    if lp.type == "Input":
                        self._input_ids.append(tid)
                tops.append(self._blob_objs[tid])
                tids.append(tid)
                available.add(tname)
            for _ in range(len(lp.top), layer.needed_auto_tops()):
                b = Blob((), self.dtype)
                self._auto_blobs.append(b)
                tops.append(b)
                tids.append(None)
            self.bottom_names[lp.name] = list(lp.bottom)
            self.top_names[lp.name] = list(lp.top)
            try:
                layer.setup(bottoms, tops)
            except CaffeError as exc:
                raise type(exc)(self._describe_failure(layer_id, exc)) from None
            if not lp.loss_weight and any(layer.loss_weights):
                lp.loss_weight.extend(layer.loss_weights)  # LossLayer adds its default weight
            for j, tid in enumerate(tids):
                w = layer.loss_weights[j] if j < len(layer.loss_weights) else 0.0
                if tid is not None:
                    self.blob_loss_weights[self._blob_names[tid]] = w
                if w:   # Caffe's line follows its "Setting up <layer>", which minicaffe omits
                    top = lp.top[j] if j < len(lp.top) else ""
                    log.info("    %s%s with loss weight %g", lp.name,
                             "" if top in ("", lp.name) else " (top %s)" % top, w)
            nparams = len(layer.blobs)
            if len(lp.param) > nparams:
                raise NetError("Too many params specified for layer %s (%d param specs, the layer "
                               "has %d parameter blobs)" % (lp.name, len(lp.param), nparams))
            layer.param_propagate_down = []
            for p in range(nparams):
                spec = lp.param[p] if p < len(lp.param) else caffe_pb2.ParamSpec()
                pn = spec.lr_mult != 0
                need_backward |= pn
                layer.param_propagate_down.append(pn)
            for p in range(nparams):
                self._append_param(layer_id, p)
            node.need_backward = need_backward
            if need_backward:
                for tid in tids:
                    if tid is not None:
                        self._blob_need_backward[tid] = True

        self._backward_need_pass(param)
        self.outputs = sorted(available, key=lambda s: s.encode())
        self.inputs = [self._blob_names[i] for i in self._input_ids]
        self._share_weights()
        self.params = OrderedDict((n.name, n.layer.blobs) for n in self.nodes if n.layer.blobs)
        self.layer_dict = OrderedDict((n.name, n.layer) for n in self.nodes)
        self._blob_index = {n: i for i, n in enumerate(self._blob_names)}

    def _locate(self, layer_name):
        """"file:line: " of the layer named ``layer_name`` in the prototxt text (the first
        ``name: "..."`` with that value after a ``layer {``), "file: " when the line is not
        found, "" for a net given as a NetParameter."""
        text = self._source_text
        if text is None and self.source != "<net>":
            try:
                with open(self.source, encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except OSError:
                text = ""
        if text is None:
            return ""
        where = "<string>" if self.source == "<net>" else self.source
        opener = _LAYER_OPENER.search(text)
        if opener:
            pattern = r"\bname\s*:\s*([\"'])%s\1" % re.escape(layer_name)
            m = re.compile(pattern).search(text, opener.start())
            if m:
                return "%s:%d: " % (where, text.count("\n", 0, m.start()) + 1)
        return "%s: " % where

    def _describe_failure(self, layer_id, exc):
        lp = self._param.layer[layer_id]
        parts = []
        for name, b in zip(lp.bottom, self.nodes[layer_id].bottoms):
            prod = self._blob_producer[self._blob_names.index(name)] if name in self._blob_names else "?"
            parts.append("'%s' from layer '%s' shape %s" % (name, prod, tuple(b.shape)))
        where = "layer '%s' (type %s)" % (lp.name, lp.type)
        if self.source != "<net>":
            where = "%s: %s" % (self.source, where)
        if parts:
            where += " with bottoms " + ", ".join(parts)
        return "%s: %s" % (where, exc)

    def _append_param(self, layer_id, param_id):
        layer = self.nodes[layer_id].layer
        lp = self._param.layer[layer_id]
        spec = lp.param[param_id] if param_id < len(lp.param) else caffe_pb2.ParamSpec()
        pname = spec.name
        blob = layer.blobs[param_id]
        if not pname or pname not in self._param_names_index:
            if pname:
                self._param_names_index[pname] = len(self.param_nodes)
            self.param_nodes.append(ParamNode(blob, layer_id, param_id, -1, len(self.learnables)))
            self.learnables.append(Learnable(blob, spec))
            return
        owner_id = self._param_names_index[pname]
        owner = self.param_nodes[owner_id]
        olid, opid = owner.layer_id, owner.index
        self.param_nodes.append(ParamNode(blob, layer_id, param_id, owner_id, owner.learnable))
        log.info("Sharing parameters '%s' owned by layer '%s', param index %d",
                 pname, self.nodes[olid].name, opid)
        mine, theirs = blob, owner.blob
        if spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE:
            if mine.count() != theirs.count():
                raise ShapeError("Cannot share param '%s' owned by layer '%s' with layer '%s'; "
                                 "count mismatch. Owner layer param shape is %s; sharing layer "
                                 "shape is %s" % (pname, self.nodes[olid].name, lp.name,
                                                  theirs.shape, mine.shape))
        elif mine.shape != theirs.shape:
            raise ShapeError("Cannot share param '%s' owned by layer '%s' with layer '%s'; shape "
                             "mismatch. Owner layer param shape is %s; sharing layer expects "
                             "shape %s" % (pname, self.nodes[olid].name, lp.name,
                                           theirs.shape, mine.shape))
        learnable = self.learnables[owner.learnable]
        if spec.HasField("lr_mult"):
            if learnable.has_lr and learnable.lr_mult != spec.lr_mult:
                raise NetError("Shared param '%s' has mismatched lr_mult." % pname)
            learnable.has_lr, learnable.lr_mult = True, spec.lr_mult
        if spec.HasField("decay_mult"):
            if learnable.has_decay and learnable.decay_mult != spec.decay_mult:
                raise NetError("Shared param '%s' has mismatched decay_mult." % pname)
            learnable.has_decay, learnable.decay_mult = True, spec.decay_mult

    def _share_weights(self):
        for p in self.param_nodes:
            if p.owner >= 0:
                p.blob.share_data(self.param_nodes[p.owner].blob)
                p.blob.share_diff(self.param_nodes[p.owner].blob)

    def _backward_need_pass(self, param):
        under_loss, skip = set(), set()
        for node in reversed(self.nodes):
            layer = node.layer
            contributes, skip_down = False, True
            for j, tid in enumerate(node.top_ids):
                name = self._blob_names[tid] if tid is not None else None
                w = layer.loss_weights[j] if j < len(layer.loss_weights) else 0.0
                if w or name in under_loss:
                    contributes = True
                if name not in skip:
                    skip_down = False
                if contributes and not skip_down:
                    break
            if node.need_backward and skip_down:
                node.need_backward = False
                node.propagate_down[:] = [False] * len(node.bottom_ids)
            if not contributes:
                node.need_backward = False
            log.debug("%s %s backward computation.", node.name,
                      "needs" if node.need_backward else "does not need")
            for j, bid in enumerate(node.bottom_ids):
                if contributes:
                    under_loss.add(self._blob_names[bid])
                else:
                    node.propagate_down[j] = False
                if not node.propagate_down[j]:
                    skip.add(self._blob_names[bid])
        if param.force_backward:
            for node in self.nodes:
                layer = node.layer
                node.need_backward = True
                for j, bid in enumerate(node.bottom_ids):
                    nb = node.propagate_down[j] or layer.allow_force_backward(j)
                    node.propagate_down[j] = nb
                    self._blob_need_backward[bid] = self._blob_need_backward[bid] or nb
                layer.param_propagate_down = [True] * len(layer.blobs)

    # --- the graph as records: what the solver, the timer, gradcheck and MPI iterate -------
    @property
    def layers(self) -> List[Layer]:
        """The layer objects in run order (pycaffe's ``net.layers``)."""
        return [n.layer for n in self.nodes]

    @property
    def _layer_names(self):
        return [n.name for n in self.nodes]

    @property
    def learnable_params(self) -> List[Blob]:
        """The blobs the solver updates, in SolverState.history order (Caffe's
        learnable_params()); ``params_lr`` / ``params_weight_decay`` are their multipliers."""
        return [p.blob for p in self.learnables]

    @property
    def params_lr(self) -> List[float]:
        return [p.lr_mult for p in self.learnables]

    @property
    def params_weight_decay(self) -> List[float]:
        return [p.decay_mult for p in self.learnables]

    @property
    def params_list(self) -> List[Blob]:
        """Every param blob, owners and sharers, in net order (Caffe's params())."""
        return [p.blob for p in self.param_nodes]

    def _top_ids(self, i: int) -> List[int]:
        """pycaffe's Net._top_ids(i): indices into ``_blobs`` of layer i's tops."""
        return [t for t in self.nodes[i].top_ids if t is not None]

    def _bottom_ids(self, i: int) -> List[int]:
        """pycaffe's Net._bottom_ids(i): indices into ``_blobs`` of layer i's bottoms."""
        return list(self.nodes[i].bottom_ids)

    # --- running ---------------------------------------------------------------------------
    def _layer_index(self, name):
        for node in self.nodes:
            if node.name == name:
                return node.index
        raise NetError("Unknown layer name '%s'" % name)

    def _forward_from_to(self, start, end):
        loss = 0.0
        for node in self.nodes[start:end + 1]:
            try:
                loss += node.forward()
            except CaffeError as exc:
                raise type(exc)(self._describe_failure(node.index, exc)) from None
        return loss

    def _backward_from_to(self, start, end):
        for node in self.nodes[end:start + 1][::-1]:
            if node.need_backward:
                node.backward()

    def forward_prefilled(self) -> float:
        """Run every layer forward; return the total weighted loss (Net::Forward)."""
        return self._forward_from_to(0, len(self.nodes) - 1)

    def backward_prefilled(self) -> None:
        """Run every layer that needs it backward, from the loss (Net::Backward)."""
        self._backward_from_to(len(self.nodes) - 1, 0)

    def forward_backward(self) -> float:
        loss = self.forward_prefilled()
        self.backward_prefilled()
        return loss

    _BATCH_WORDS = {"data": ("Input blob arguments", "net inputs", "Input"),
                    "diff": ("Top diff arguments", "net outputs", "Diff")}

    def _set_batch(self, arrays, names, field):
        """pycaffe's forward(**inputs) / backward(**diffs): every one of ``names``, batch sized,
        into the blobs' ``field``."""
        if not arrays:
            return
        what, where, one = self._BATCH_WORDS[field]
        if set(arrays) != set(names):
            raise NetError("%s %s do not match %s %s" % (what, sorted(arrays), where, names))
        for name, arr in arrays.items():
            arr = np.asarray(arr)
            if arr.shape[:1] != self.blobs[name].shape[:1]:
                raise ShapeError("%s '%s' is not batch sized: got shape %s, the blob has shape %s"
                                 % (one, name, arr.shape, self.blobs[name].shape))
            getattr(self.blobs[name], field)[...] = arr

    def forward(self, blobs: Optional[Iterable[str]] = None, start: Optional[str] = None,
                end: Optional[str] = None, **kwargs: ArrayLike) -> Dict[str, NDArray[Any]]:
        """pycaffe's Net.forward: set inputs from kwargs, run [start, end], return
        {output name: data} (the outputs, or the tops of ``end``, plus ``blobs``)."""
        blobs = list(blobs or [])
        start_ind = self._layer_index(start) if start is not None else 0
        if end is not None:
            end_ind = self._layer_index(end)
            outputs = set(self.top_names[end] + blobs)
        else:
            end_ind = len(self.nodes) - 1
            outputs = set(self.outputs + blobs)
        self._set_batch(kwargs, self.inputs, "data")
        self._forward_from_to(start_ind, end_ind)
        return {out: self.blobs[out].data for out in outputs}

    def backward(self, diffs: Optional[Iterable[str]] = None, start: Optional[str] = None,
                 end: Optional[str] = None, **kwargs: ArrayLike) -> Dict[str, NDArray[Any]]:
        """pycaffe's Net.backward: set output diffs from kwargs, run [start, end] in reverse,
        return {input name: diff} (the inputs, or the bottoms of ``end``, plus ``diffs``)."""
        diffs = list(diffs or [])
        start_ind = self._layer_index(start) if start is not None else len(self.nodes) - 1
        if end is not None:
            end_ind = self._layer_index(end)
            outputs = set(self.bottom_names[end] + diffs)
        else:
            end_ind = 0
            outputs = set(self.inputs + diffs)
        self._set_batch(kwargs, self.outputs, "diff")
        self._backward_from_to(start_ind, end_ind)
        return {out: self.blobs[out].diff for out in outputs}

    # --- pycaffe's batch helpers and raw accessors (pycaffe.py, _caffe.cpp) -------------------
    def _forward(self, start, end):
        """pycaffe's Net._forward(start index, end index): ForwardFromTo; the loss."""
        return self._forward_from_to(start, end)

    def _backward(self, start, end):
        """pycaffe's Net._backward(start index, end index): BackwardFromTo."""
        self._backward_from_to(start, end)

    @property
    def _blobs(self):
        """The blobs in net order (pycaffe's raw list behind ``blobs``)."""
        return list(self._blob_objs)

    @property
    def _blob_loss_weights(self):
        """Each blob's loss weight, in net order (pycaffe's list behind blob_loss_weights)."""
        return [self.blob_loss_weights.get(n, 0.0) for n in self._blob_names]

    @property
    def _inputs(self):
        """Indices into ``_blobs`` of the net inputs."""
        return list(self._input_ids)

    @property
    def _outputs(self):
        """Indices into ``_blobs`` of the net outputs."""
        return [self._blob_index[n] for n in self.outputs]

    def _batch(self, arrays: Dict[str, Any]) -> Iterator[Dict[str, NDArray[Any]]]:
        """pycaffe's Net._batch: {blob name: array of N items} in slices of the blobs' batch
        size; the last slice is padded with zeros to a full batch."""
        names = list(arrays)
        unknown = [k for k in names if k not in self.blobs]
        if unknown:
            raise ArgumentError("no blob named %s (net inputs: %s; outputs: %s)" % (
                ", ".join(unknown), ", ".join(self.inputs), ", ".join(self.outputs)))
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        sizes = {len(a) for a in arrays.values()}
        if len(sizes) != 1:
            raise ArgumentError("arrays of different lengths: %s"
                                % ", ".join("%s %d" % (k, len(a)) for k, a in arrays.items()))
        num = sizes.pop()
        batch = self.blobs[names[0]].shape[0] if self.blobs[names[0]].shape else 0
        if batch <= 0:
            raise ShapeError("blob '%s' has shape %s: no batch axis to split %d items over"
                             % (names[0], self.blobs[names[0]].shape, num))
        for i in range(0, num - num % batch, batch):
            yield {k: a[i:i + batch] for k, a in arrays.items()}
        if num % batch:
            yield {k: np.concatenate([a[num - num % batch:],
                                      np.zeros((batch - num % batch,) + a.shape[1:], a.dtype)])
                   for k, a in arrays.items()}

    @staticmethod
    def _gather(parts, num, batch):
        """Per-batch copies → one array of ``num`` items (the padding cut off); a blob without
        the batch axis (a scalar loss) → its values stacked per batch."""
        if all(p.ndim and p.shape[0] == batch for p in parts):
            return np.concatenate(parts)[:num]
        return np.stack(parts)

    def forward_all(self, blobs: Optional[Iterable[str]] = None, **kwargs: ArrayLike) -> Dict[str, NDArray[Any]]:
        """pycaffe's Net.forward_all: ``forward`` over the input arrays (every net input by
        name, any number of items) one batch at a time; {output or ``blobs`` name: array}."""
        if not kwargs:
            raise ArgumentError("forward_all: give the input arrays by name (net inputs: %s)"
                                % ", ".join(self.inputs))
        num = len(next(iter(kwargs.values())))
        parts: Dict[str, List[NDArray[Any]]] = {}
        size = 0
        for batch in self._batch(kwargs):
            size = len(next(iter(batch.values())))
            for name, arr in self.forward(blobs=blobs, **batch).items():
                parts.setdefault(name, []).append(arr.copy())
        return {name: self._gather(p, num, size) for name, p in parts.items()}

    def forward_backward_all(self, blobs: Optional[Iterable[str]] = None, diffs: Optional[Iterable[str]] = None,
                             **kwargs: ArrayLike) -> Tuple[Dict[str, NDArray[Any]], Dict[str, NDArray[Any]]]:
        """pycaffe's Net.forward_backward_all: keywords name net inputs (fed to ``forward``)
        and net outputs (their diffs, fed to ``backward``); runs both a batch at a time
        (without output diffs, backward starts from the loss weights). Returns ({output or
        ``blobs`` name: data}, {input or ``diffs`` name: diff})."""
        fwd = {k: v for k, v in kwargs.items() if k in self.inputs}
        bwd = {k: v for k, v in kwargs.items() if k in self.outputs}
        unknown = sorted(set(kwargs) - set(fwd) - set(bwd))
        if unknown or not kwargs:
            raise ArgumentError("forward_backward_all: %s (net inputs: %s; outputs: %s)" % (
                "%s are neither inputs nor outputs" % ", ".join(unknown) if unknown
                else "give input and/or output diff arrays by name", ", ".join(self.inputs),
                ", ".join(self.outputs)))
        if len({len(v) for v in kwargs.values()}) != 1:
            raise ArgumentError("forward_backward_all: arrays of different lengths: %s" % ", ".join(
                "%s %d" % (k, len(v)) for k, v in kwargs.items()))
        num = len(next(iter(kwargs.values())))
        empty: Iterator[Dict[str, NDArray[Any]]] = iter(())
        fwd_batches = self._batch(fwd) if fwd else empty
        bwd_batches = self._batch(bwd) if bwd else empty
        outs: Dict[str, List[NDArray[Any]]] = {}
        grads: Dict[str, List[NDArray[Any]]] = {}
        size = 0
        no_arrays: Dict[str, NDArray[Any]] = {}
        for fb, bb in itertools.zip_longest(fwd_batches, bwd_batches, fillvalue=no_arrays):
            size = len(next(iter((fb or bb).values())))
            for name, arr in self.forward(blobs=blobs, **fb).items():
                outs.setdefault(name, []).append(arr.copy())
            for name, arr in self.backward(diffs=diffs, **bb).items():
                grads.setdefault(name, []).append(arr.copy())
        return ({n: self._gather(p, num, size) for n, p in outs.items()},
                {n: self._gather(p, num, size) for n, p in grads.items()})

    def reshape(self) -> None:
        for node in self.nodes:
            node.layer.reshape(node.bottoms, node.tops)

    def clear_param_diffs(self) -> None:
        """Zero every learnable param's diff in place (Net::ClearParamDiffs), on the device in
        GPU mode: an array taken earlier with ``d = net.params[name][0].diff`` reads zeros
        afterwards, as in pycaffe."""
        for p in self.learnables:
            p.blob.set_diff(0)

    def clear_param_diffs_lazily(self) -> None:
        """ClearParamDiffs without writing the zeros (``Blob.clear_diff_lazily``), for the
        solver's step, which keeps no diff array across it: the first weight GEMM of the
        backward writes each gradient in place instead of adding a temporary to a memset diff
        (InnerProduct's fc6 dW alone is 151 MB). Measured on fc6/fc7/fc8-sized InnerProducts
        (54 M parameters, batch 16, 2 busy cores, 30 interleaved SGD steps): 569 ms a step
        (median; min 462) this way, 747 ms (min 575) with ``clear_param_diffs``."""
        for p in self.learnables:
            p.blob.clear_diff_lazily()

    def set_iteration(self, iteration: int) -> None:
        """Hand the solver's iteration to every layer (the gradient-reversal schedule)."""
        for node in self.nodes:
            node.layer.set_iteration(iteration)

    @property
    def layer_need_backward(self) -> List[bool]:
        return [n.need_backward for n in self.nodes]

    @property
    def bottom_need_backward(self) -> List[List[bool]]:
        return [list(n.propagate_down) for n in self.nodes]

    @property
    def blob_need_backward(self) -> OrderedDict[str, bool]:
        return OrderedDict(zip(self._blob_names, self._blob_need_backward))

    @property
    def layer_names(self) -> List[str]:
        return list(self._layer_names)

    @property
    def blob_names(self) -> List[str]:
        return list(self._blob_names)

    @property
    def param_owners(self) -> List[int]:
        return [p.owner for p in self.param_nodes]

    def learnable_param_names(self) -> List[str]:
        """'layer[i]' for each learnable param, in SolverState.history order."""
        names = []
        for p in self.param_nodes:
            if p.owner < 0:
                names.append("%s[%d]" % (self.nodes[p.layer_id].name, p.index))
        return names

    def layer_param(self, name: str) -> Any:
        return self._param.layer[self._layer_index(name)]

    # --- weights ---------------------------------------------------------------------------
    def copy_from(self, weights: Weights) -> Net:
        """Load trained weights by layer name (CopyTrainedLayersFrom): a path, a comma-separated
        list or a list of paths, or a NetParameter. All files are checked before anything is
        copied, so a failure leaves the net as it was."""
        for blob, arr in self.copy_plan(weights):
            blob.data[...] = arr
        return self

    def copy_plan(self, weights: Weights) -> List[Tuple[Blob, NDArray[Any]]]:
        """What ``copy_from(weights)`` would copy, as (blob, array) pairs, every file read and
        checked; nothing is changed. An empty file is a ModelFileError; a file that shares no
        layer name with the net's layers with weights gets a warning naming it."""
        if isinstance(weights, (str, os.PathLike)):
            weights = [w for w in os.fspath(weights).split(",") if w]
        elif isinstance(weights, caffe_pb2.NetParameter):
            weights = [weights]
        elif not isinstance(weights, (list, tuple)):
            raise ArgumentError("copy_from: expected a .caffemodel path, a comma-separated list of "
                             "paths, a list or a NetParameter, got %s" % type(weights).__name__)
        if not weights:
            raise ArgumentError("copy_from: no weights file given")
        plan = []
        for w in weights:
            if isinstance(w, caffe_pb2.NetParameter):
                src, label = w, "<NetParameter>"
            elif isinstance(w, (str, os.PathLike)) and os.fspath(w).endswith(".h5"):
                plan.extend(self._plan_copy_hdf5(w))   # Caffe's CopyTrainedLayersFrom does so
                continue
            elif isinstance(w, (str, os.PathLike)):
                label = os.fspath(w)
                src = protoio.read_net_param(w, binary=True)   # an empty file is an error
            else:
                raise ArgumentError("copy_from: expected a path or a NetParameter, got %s"
                                 % type(w).__name__)
            plan.extend(self._plan_copy(src, label))
        return plan

    def _plan_copy(self, param, label):
        plan = []
        with_weights = [n.name for n in self.nodes if n.layer.blobs]
        matched = 0
        for sl in param.layer:
            if sl.name not in self.layer_dict:
                log.info("Ignoring source layer %s", sl.name)
                continue
            target = self.layer_dict[sl.name].blobs
            if target:
                matched += 1
            if len(target) != len(sl.blobs):
                raise ModelFileError("%s: Incompatible number of blobs for layer %s: the file has "
                                     "%d, the net's layer has %d" % (label, sl.name,
                                                                     len(sl.blobs), len(target)))
            for j, (tb, sb) in enumerate(zip(target, sl.blobs)):
                if not tb.shape_equals_proto(sb):
                    raise ModelFileError(
                        "%s: Cannot copy param %d weights from layer '%s'; shape mismatch. Source "
                        "param shape is %s; target param shape is %s. To learn this layer's "
                        "parameters from scratch rather than copying from a saved net, rename the "
                        "layer." % (label, j, sl.name, blobproto_shape(sb), tb.shape))
                try:
                    arr = blobproto_to_array(sb)
                except CaffeError as exc:
                    raise ModelFileError("%s: layer '%s' param %d: %s" % (label, sl.name, j, exc)) from None
                plan.append((tb, arr.reshape(tb.shape)))
        if with_weights and not matched:
            names = [sl.name for sl in param.layer]
            log.warning("%s: 0 of %d layers with weights matched by name (the file's layers: %s); "
                        "those layers keep their initial values", label, len(with_weights),
                        ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") or "none")
        elif matched < len(with_weights):
            log.info("%s: weights for %d of %d layers copied", label, matched, len(with_weights))
        return plan

    def to_proto(self, write_diff: bool = False) -> NetParameter:
        """The NetParameter Caffe writes (Net::ToProto): each layer's parameter with blobs."""
        out = caffe_pb2.NetParameter()
        out.name = self.name
        for lp, layer in zip(self._param.layer, self.layers):
            dst = out.layer.add()
            dst.CopyFrom(lp)
            del dst.blobs[:]
            for b in layer.blobs:
                b.to_proto(dst.blobs.add(), write_diff)
        return out

    def save(self, path: Union[str, "os.PathLike[str]"], write_diff: bool = False) -> None:
        """Write the weights as a binary .caffemodel (atomically)."""
        protoio.write_proto_binary(path, self.to_proto(write_diff))

    def save_hdf5(self, filename: Union[str, "os.PathLike[str]"], write_diff: bool = False) -> None:
        """pycaffe's Net.save_hdf5 (Net::ToHDF5): the weights in Caffe's HDF5 layout
        (``minicaffe.hdf5``): ``data/<layer>/<i>`` for each param a layer owns (shared ones are
        stored once, with their owner), ``diff/<layer>/<i>`` for every param with
        ``write_diff``. Needs h5py (``pip install 'minicaffe[hdf5]'``)."""
        Arrays = Dict[str, Dict[int, NDArray[Any]]]
        data: Arrays = OrderedDict()
        diff: Optional[Arrays] = OrderedDict() if write_diff else None
        for p in self.param_nodes:
            name, j = self.nodes[p.layer_id].name, p.index
            if p.owner < 0:
                data.setdefault(name, {})[j] = p.blob.cpu_data()
            if diff is not None:
                diff.setdefault(name, {})[j] = p.blob.cpu_diff()
        for name in self.layer_dict:   # Caffe writes a group for every layer
            data.setdefault(name, {})
            if diff is not None:
                diff.setdefault(name, {})
        hdf5.write_weights(filename, data, diff)

    def load_hdf5(self, filename: Union[str, "os.PathLike[str]"]) -> Net:
        """pycaffe's Net.load_hdf5 (CopyTrainedLayersFromHDF5): weights from ``save_hdf5``'s
        layout, matched by layer name; all checked before anything is copied. ``copy_from``
        reads a ``.h5`` file this way too, as Caffe does."""
        for blob, arr in self._plan_copy_hdf5(filename):
            blob.data[...] = arr
        return self

    def _plan_copy_hdf5(self, path):
        label = os.fspath(path)
        plan = []
        for name, blobs in hdf5.read_weights(label).items():
            if name not in self.layer_dict:
                log.info("Ignoring source layer %s", name)
                continue
            lid = self._layer_index(name)
            target = self.nodes[lid].layer.blobs
            owners = {p.index: p.owner for p in self.param_nodes if p.layer_id == lid}
            if len(blobs) > len(target) or any(j >= len(target) for j in blobs):
                raise ModelFileError("%s: Incompatible number of blobs for layer %s: the file has "
                                     "%d, the net's layer has %d" % (label, name, len(blobs),
                                                                     len(target)))
            for j, tb in enumerate(target):
                if j not in blobs:
                    if owners[j] >= 0:
                        continue   # shared: its owner's dataset fills it
                    raise ModelFileError("%s: Incompatible number of blobs for layer %s: no "
                                         "dataset data/%s/%d" % (label, name, name, j))
                if tuple(blobs[j].shape) != tb.shape:
                    raise ModelFileError("%s: Cannot copy param %d weights from layer '%s'; shape "
                                         "mismatch. Source param shape is %s; target param shape "
                                         "is %s." % (label, j, name, blobs[j].shape, tb.shape))
                plan.append((tb, blobs[j]))
        return plan

    def share_with(self, other: Net) -> None:
        """Alias the data of ``other``'s same-named layers (ShareTrainedLayersWith)."""
        for sname, sl in other.layer_dict.items():
            if sname not in self.layer_dict:
                continue
            target = self.layer_dict[sname].blobs
            if len(target) != len(sl.blobs):
                raise NetError("Incompatible number of blobs for layer %s" % sname)
            for tb, sb in zip(target, sl.blobs):
                if tb.shape != sb.shape:
                    raise ShapeError("Cannot share param of layer '%s': shape %s vs %s"
                                     % (sname, sb.shape, tb.shape))
                tb.share_data(sb)

    def set_input_arrays(self, data: NDArray[np.float32], labels: NDArray[np.float32]) -> None:
        """pycaffe's Net.set_input_arrays: feed a MemoryData first layer. ``data`` must be a
        C-contiguous float32 (N, C, H, W) array matching memory_data_param, ``labels`` float32
        of shape (N,) or (N, 1, 1, 1), N a multiple of batch_size. The arrays are used in place
        (not copied), as in Caffe."""
        if not self.nodes or self.nodes[0].layer.type != "MemoryData":
            raise NetError("set_input_arrays may only be called if the first layer is a "
                           "MemoryData layer")
        md: Any = self.nodes[0].layer   # a MemoryData layer (layers/data.py)
        if isinstance(labels, np.ndarray) and labels.ndim == 1:
            labels = np.ascontiguousarray(labels[:, None, None, None])
        checks: Tuple[Tuple[str, Any, Tuple[int, int, int]], ...] = (
            ("data array", data, (md.channels, md.height, md.width)),
            ("labels array", labels, (1, 1, 1)))
        for what, arr, dims in checks:
            if not isinstance(arr, np.ndarray):
                raise NetError("set_input_arrays: the %s must be a NumPy array, got %s"
                               % (what, type(arr).__name__))
            if not arr.flags.c_contiguous:
                raise NetError("set_input_arrays: the %s must be C contiguous" % what)
            if arr.dtype != np.float32:
                raise NetError("set_input_arrays: the %s must be float32, got %s"
                               % (what, arr.dtype))
            if arr.ndim != 4 or arr.shape[1:] != dims:
                raise ShapeError("set_input_arrays: the %s has shape %s, expected (N, %d, %d, %d)"
                                 % ((what, arr.shape) + dims))
        if data.shape[0] != labels.shape[0]:
            raise ShapeError("set_input_arrays: data and labels must have the same first "
                             "dimension (%d and %d)" % (data.shape[0], labels.shape[0]))
        if data.shape[0] == 0 or data.shape[0] % md.batch_size:
            raise ShapeError("set_input_arrays: the first dimension of the input arrays (%d) must "
                             "be a positive multiple of batch size (%d)"
                             % (data.shape[0], md.batch_size))
        md.reset(data, labels, data.shape[0])

    def close(self) -> None:
        """Stop the data layers' prefetch threads (they also stop at exit)."""
        for layer in self.layer_dict.values():
            if hasattr(layer, "close"):
                layer.close()

    def __enter__(self) -> Net:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<Net %r: %d layers, phase %s>" % (self.name, len(self.nodes),
                                                   caffe_pb2.Phase.Name(self.phase))

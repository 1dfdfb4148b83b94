"""Drawing a net as a Graphviz graph: pycaffe's ``caffe.draw`` and ``tools/draw_net``.

Caffe's draw.py conventions: one record node per layer labelled "name\\n(Type)" (Pooling
"(Pooling MAX)"; Convolution, Deconvolution and Pooling add "kernel size / stride / pad"
from [0] of the repeated fields), coloured by type (Convolution/Deconvolution #FF5050,
Pooling #FF9900, InnerProduct #CC33FF, others #6495ED; an in-place one-in/one-out layer
#90EE90); blobs are grey octagons (#E0E0E0); edges run bottom -> layer -> top, and the edges
out of Data, Convolution and InnerProduct layers say "Batch N" or num_output. With
rankdir TB/BT the parts of a label are separated by spaces instead of new lines. ``phase``
keeps the layers whose include/exclude rules admit that phase (caffe.TRAIN / caffe.TEST or
"TRAIN" / "TEST"; stage and level are not looked at; a rule without a phase admits every
phase, where pycaffe reads it as TRAIN); None or "ALL" keeps every layer.

The DOT text is written here (``net_to_dot``); images need Graphviz's ``dot`` program on PATH
(``apt-get install graphviz``), and ``get_pydot_graph`` the pydot package
(``pip install 'minicaffe[draw]'``). pycaffe's API: ``draw_net(net, rankdir, ext)`` → bytes,
``draw_net_to_file(net, filename, rankdir, phase, display_lrm)``, ``get_pydot_graph``.
"""
import os
import shutil
import subprocess
import tempfile

from .errors import CaffeError, NetError
from .protoio import atomic_write

__all__ = ["LAYER_COLORS", "NEURON_COLOR", "BLOB_COLOR", "DEFAULT_COLOR", "layer_label",
           "layer_color", "included", "net_to_dot", "render", "draw_net", "draw_net_to_file",
           "get_pydot_graph", "choose_color_by_layertype", "get_pooling_types_dict"]

DEFAULT_COLOR = "#6495ED"
NEURON_COLOR = "#90EE90"
BLOB_COLOR = "#E0E0E0"
LAYER_COLORS = {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
                "InnerProduct": "#CC33FF"}
TEXT_FORMATS = (".dot", ".gv", ".raw")
DOT_FORMATS = (".png", ".svg", ".pdf", ".jpg", ".jpeg", ".gif", ".ps", ".eps")
_BATCH_PARAMS = {"Data": "data_param", "ImageData": "image_data_param",
                 "WindowData": "window_data_param", "HDF5Data": "hdf5_data_param",
                 "MemoryData": "memory_data_param"}
_POOL_NAMES = {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}
_PHASES = {"TRAIN": 0, "TEST": 1}
_PHASE_NAMES = {0: "TRAIN", 1: "TEST"}


def _first(repeated, default):
    return repeated[0] if len(repeated) else default


def layer_label(layer, rankdir="LR", display_lrm=False):
    """Caffe's node label: name, (Type), spatial parameters, optionally lr multipliers."""
    sep = " " if rankdir in ("TB", "BT") else "\n"
    parts = [layer.name]
    if layer.type == "Pooling":
        parts.append("(Pooling %s)" % _POOL_NAMES.get(layer.pooling_param.pool,
                                                      layer.pooling_param.pool))
    else:
        parts.append("(%s)" % layer.type)
    if layer.type in ("Convolution", "Deconvolution", "Pooling"):
        if layer.type == "Pooling":
            pp = layer.pooling_param
            kernel = pp.kernel_size if not pp.HasField("kernel_h") else \
                "%dx%d" % (pp.kernel_h, pp.kernel_w)
            stride = pp.stride if not pp.HasField("stride_h") else \
                "%dx%d" % (pp.stride_h, pp.stride_w)
            pad = pp.pad if not pp.HasField("pad_h") else "%dx%d" % (pp.pad_h, pp.pad_w)
        else:
            cp = layer.convolution_param
            kernel = _first(cp.kernel_size, 1) if not cp.HasField("kernel_h") else \
                "%dx%d" % (cp.kernel_h, cp.kernel_w)
            stride = _first(cp.stride, 1) if not cp.HasField("stride_h") else \
                "%dx%d" % (cp.stride_h, cp.stride_w)
            pad = _first(cp.pad, 0) if not cp.HasField("pad_h") else \
                "%dx%d" % (cp.pad_h, cp.pad_w)
        parts.append(sep.join(["kernel size: %s" % kernel, "stride: %s" % stride,
                               "pad: %s" % pad]))
    if display_lrm and layer.type in ("Convolution", "Deconvolution", "InnerProduct"):
        mults = [p.lr_mult for p in layer.param] + [1.0, 1.0]
        if any(mults[:2]):
            parts.append("lr mult: %.1f, %.1f" % (mults[0], mults[1]))
    return sep.join(parts)


def layer_color(layer):
    """The fill colour of a layer's node."""
    if len(layer.bottom) == 1 and len(layer.top) == 1 and layer.bottom[0] == layer.top[0]:
        return NEURON_COLOR
    return LAYER_COLORS.get(layer.type, DEFAULT_COLOR)


def _edge_label(layer):
    if layer.type in _BATCH_PARAMS:
        param = getattr(layer, _BATCH_PARAMS[layer.type])
        return "Batch %d" % param.batch_size
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return ""


def included(layer, phase):
    """Whether ``layer`` is in ``phase`` (caffe.TRAIN / caffe.TEST, "TRAIN", "TEST", or
    None / "ALL" for every layer), judging only the phase of its include/exclude rules."""
    if phase in (None, "ALL"):
        return True
    if not isinstance(phase, str):
        if phase not in _PHASE_NAMES:
            raise CaffeError("phase must be caffe.TRAIN, caffe.TEST or None, got %r" % (phase,))
        phase = _PHASE_NAMES[phase]
    if len(layer.include) and len(layer.exclude):
        raise NetError("layer %s has both include and exclude rules; specify either "
                       "include rules or exclude rules, not both" % layer.name)
    want = _PHASES[phase]

    def admits(rule):
        return not rule.HasField("phase") or rule.phase == want

    if len(layer.include):
        return any(admits(r) for r in layer.include)
    return not any(admits(r) for r in layer.exclude)


def _quote(text):
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _record(text):
    # In a record label {, }, |, < and > are syntax; escape them (and \ and ").
    out = text.replace("\\", "\\\\")
    for ch in '{}|<>"':
        out = out.replace(ch, "\\" + ch)
    return '"%s"' % out.replace("\n", "\\n")


def net_to_dot(net, rankdir="LR", phase=None, display_lrm=False, label_edges=True):
    """Graphviz DOT text for a ``NetParameter``."""
    if rankdir not in ("LR", "TB", "BT", "RL"):
        raise CaffeError("rankdir must be LR, TB, BT or RL, got %r" % rankdir)
    nodes, edges = {}, []
    for layer in net.layer:
        if not included(layer, phase):
            continue
        lid = "%s_%s" % (layer.name, layer.type)
        nodes[lid] = "%s [label=%s, shape=record, style=filled, fillcolor=%s]" % (
            _quote(lid), _record(layer_label(layer, rankdir, display_lrm)),
            _quote(layer_color(layer)))
        for b in layer.bottom:
            nodes[b + "_blob"] = "%s [label=%s, shape=octagon, style=filled, fillcolor=%s]" % (
                _quote(b + "_blob"), _quote(b), _quote(BLOB_COLOR))
            edges.append((b + "_blob", lid, ""))
        label = _edge_label(layer) if label_edges else ""
        for t in layer.top:
            nodes[t + "_blob"] = "%s [label=%s, shape=octagon, style=filled, fillcolor=%s]" % (
                _quote(t + "_blob"), _quote(t), _quote(BLOB_COLOR))
            edges.append((lid, t + "_blob", label))
    lines = ["digraph %s {" % _quote(net.name or "Net"), "  rankdir=%s;" % rankdir]
    lines += ["  %s;" % n for n in nodes.values()]
    seen = set()
    for src, dst, label in edges:
        if (src, dst, label) in seen:
            continue
        seen.add((src, dst, label))
        lines.append("  %s -> %s%s;" % (_quote(src), _quote(dst),
                                        " [label=%s]" % _quote(label) if label else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


def choose_color_by_layertype(layertype):
    """pycaffe's fill colour of a layer type (in-place layers aside)."""
    return LAYER_COLORS.get(layertype, DEFAULT_COLOR)


def get_pooling_types_dict():
    """{PoolingParameter.PoolMethod number: name}."""
    return dict(_POOL_NAMES)


def _dot_program(what):
    dot = shutil.which("dot")
    if dot is None:
        raise CaffeError("%s needs Graphviz's `dot` program, which is not on PATH: install "
                         "Graphviz (apt-get install graphviz, brew install graphviz or conda "
                         "install graphviz; pip's graphviz package does not include dot) or "
                         "write a .dot file instead" % what)
    return dot


def render(dot_text, fmt, what=None):
    """``dot_text`` laid out by Graphviz's ``dot`` as ``fmt`` (png, svg, pdf...): the bytes.
    CaffeError when ``dot`` is missing or fails."""
    what = what or "drawing a net as %s" % fmt
    dot = _dot_program(what)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "net." + fmt)
        proc = subprocess.run([dot, "-T" + fmt, "-o", out], input=dot_text.encode(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if proc.returncode != 0 or not os.path.exists(out):
            msg = proc.stderr.decode(errors="replace").strip().splitlines()
            raise CaffeError("dot failed %s (exit %d): %s"
                             % (what, proc.returncode, msg[0] if msg else "no message"))
        with open(out, "rb") as f:
            return f.read()


def draw_net(caffe_net, rankdir, ext="png", phase=None, display_lrm=False):
    """pycaffe's draw_net: the NetParameter drawn as ``ext`` (png, svg, pdf...; dot, gv or raw
    give the DOT text), as bytes."""
    ext = ext.lower().lstrip(".")
    dot_text = net_to_dot(caffe_net, rankdir, phase, display_lrm)
    if "." + ext in TEXT_FORMATS:
        return dot_text.encode()
    if "." + ext not in DOT_FORMATS:
        raise CaffeError("unknown output format %r; use one of %s"
                         % (ext, ", ".join(f[1:] for f in TEXT_FORMATS + DOT_FORMATS)))
    return render(dot_text, ext)


def draw_net_to_file(caffe_net, filename, rankdir="LR", phase=None, display_lrm=False):
    """Write the NetParameter as DOT text (.dot/.gv/.raw) or, through Graphviz's ``dot``, as an
    image whose format is the extension of ``filename`` (written atomically). CaffeError when
    ``dot`` is missing or fails."""
    ext = os.path.splitext(filename)[1].lower()
    if ext not in TEXT_FORMATS + DOT_FORMATS:
        raise CaffeError("%s: unknown output format %r; use one of %s" % (
            filename, ext or "(no extension)", ", ".join(TEXT_FORMATS + DOT_FORMATS)))
    dot_text = net_to_dot(caffe_net, rankdir, phase, display_lrm)
    data = dot_text.encode() if ext in TEXT_FORMATS else \
        render(dot_text, ext[1:], "writing %s" % filename)
    atomic_write(filename, lambda f: f.write(data), error=CaffeError)


def get_pydot_graph(caffe_net, rankdir, label_edges=True, phase=None, display_lrm=False):
    """pycaffe's get_pydot_graph: the net as a ``pydot.Dot`` (needs pydot:
    ``pip install 'minicaffe[draw]'``)."""
    try:
        import pydot
    except ImportError:
        raise CaffeError("get_pydot_graph needs pydot: pip install 'minicaffe[draw]' (draw_net "
                         "and draw_net_to_file need only Graphviz's dot)") from None
    return pydot.graph_from_dot_data(net_to_dot(caffe_net, rankdir, phase, display_lrm,
                                                label_edges))[0]

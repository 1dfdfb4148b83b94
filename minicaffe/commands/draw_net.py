"""``tools/draw_net``: draw a net prototxt as a Graphviz graph, as Caffe's python/draw_net.py.

    tools/draw_net NET.prototxt OUT.(dot|png|svg|pdf) [--rankdir LR|TB|BT|RL]
                   [--phase TRAIN|TEST|ALL] [--display_lrm]

Caffe's draw.py conventions: one record node per layer labelled "name\\n(Type)" (Pooling
"(Pooling MAX)"; Convolution, Deconvolution and Pooling add "kernel size / stride / pad"
from [0] of the repeated fields), coloured by type (Convolution/Deconvolution #FF5050,
Pooling #FF9900, InnerProduct #CC33FF, others #6495ED; an in-place one-in/one-out layer
#90EE90); blobs are grey octagons (#E0E0E0); edges run bottom -> layer -> top, and the edges
out of Data, Convolution and InnerProduct layers say "Batch N" or num_output. With
--rankdir TB/BT the parts of a label are separated by spaces instead of new lines.
--phase keeps the layers whose include/exclude rules admit that phase (stage and level are
not looked at; a rule without a phase admits every phase). The default is ALL, as Caffe.

The DOT text is written by this module; .png/.svg/.pdf need Graphviz's ``dot`` on PATH.
"""
import argparse
import os
import shutil
import subprocess
import tempfile

from minicaffe.errors import CaffeError, NetError

from ._cli import run

__all__ = ["LAYER_COLORS", "NEURON_COLOR", "BLOB_COLOR", "DEFAULT_COLOR", "layer_label",
           "layer_color", "included", "net_to_dot", "draw_net_to_file", "main"]

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
    """Whether ``layer`` is in ``phase`` ("TRAIN", "TEST" or None/"ALL" for every layer),
    judging only the phase of its include/exclude rules."""
    if phase in (None, "ALL"):
        return True
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


def _atomic(path, write):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def draw_net_to_file(net, path, rankdir="LR", phase=None, display_lrm=False):
    """Write ``net`` as DOT text (.dot/.gv/.raw) or, through Graphviz's ``dot``, as an image
    whose format is the extension of ``path``. CaffeError when ``dot`` is missing or fails."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in TEXT_FORMATS + DOT_FORMATS:
        raise CaffeError("%s: unknown output format %r; use one of %s" % (
            path, ext or "(no extension)", ", ".join(TEXT_FORMATS + DOT_FORMATS)))
    dot_text = net_to_dot(net, rankdir, phase, display_lrm)
    if ext in TEXT_FORMATS:
        def write(tmp):
            with open(tmp, "w") as f:
                f.write(dot_text)
        _atomic(path, write)
        return
    dot = shutil.which("dot")
    if dot is None:
        raise CaffeError("writing %s needs Graphviz's `dot` program, which is not on PATH: "
                         "install Graphviz (apt-get install graphviz, brew install graphviz or "
                         "conda install graphviz; pip's graphviz package does not include dot) "
                         "or write a .dot file instead" % path)

    def render(tmp):
        proc = subprocess.run([dot, "-T" + ext[1:], "-o", tmp], input=dot_text.encode(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if proc.returncode != 0:
            msg = proc.stderr.decode(errors="replace").strip().splitlines()
            raise CaffeError("dot failed on %s (exit %d): %s"
                             % (path, proc.returncode, msg[0] if msg else "no message"))
    _atomic(path, render)


def build_parser():
    p = argparse.ArgumentParser(prog="draw_net", description="Draw a net as a graph.")
    p.add_argument("input_net_proto_file", metavar="NET.prototxt", help="net definition")
    p.add_argument("output_image_file", metavar="OUT",
                   help="output: .dot (Graphviz text), or .png/.svg/.pdf (needs `dot`)")
    p.add_argument("--rankdir", default="LR", choices=("LR", "TB", "BT", "RL"),
                   help="direction of the graph layout (default LR)")
    p.add_argument("--phase", default="ALL", type=str.upper, choices=("TRAIN", "TEST", "ALL"),
                   help="draw only the layers of this phase (default ALL)")
    p.add_argument("--display_lrm", action="store_true",
                   help="show the lr multipliers of learning layers")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return p


def _draw_net_cmd(args):
    from minicaffe.protoio import read_net_param
    net = read_net_param(args.input_net_proto_file)
    print("Drawing net to %s" % args.output_image_file)
    draw_net_to_file(net, args.output_image_file, args.rankdir, args.phase, args.display_lrm)
    return 0


def main(argv=None):
    return run(_draw_net_cmd, argv, parser=build_parser())

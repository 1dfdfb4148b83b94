"""Upgrades of old net and solver definitions, as Caffe's util/upgrade_proto.cpp does them.

Caffe upgrades every net it reads, text or binary, so old prototxts and old .caffemodel files
(V0 nested ``layer``, V1 ``layers`` with enum types, top-level ``input`` fields, three-param
BatchNorm) keep working. ``upgrade_net_as_needed`` runs the steps in Caffe's order:

1. ``upgrade_v0_net``: V0 ``layers { layer { type: "conv" ... } }`` to V1, folding "padding"
   layers into the pad of the conv/pool that reads them;
2. ``upgrade_net_data_transformation``: scale/mean_file/crop_size/mirror of V1 data layers
   move into ``transform_param``;
3. ``upgrade_v1_net``: V1 ``layers`` to ``layer`` (enum type to string, blobs_lr/weight_decay
   to ``param`` specs);
4. ``upgrade_net_input``: top-level ``input``/``input_shape``/``input_dim`` to an ``Input``
   layer at the front;
5. ``upgrade_batchnorm``: a BatchNorm layer with 3 ``param`` specs gets lr_mult 0, decay_mult 0.

Each step works in place and returns True when it changed the net. Where Caffe stops with
LOG(FATAL) these raise ``PrototxtError``; where Caffe logs an error and goes on, so do they
(logger "minicaffe").
"""

import logging
import os

from .errors import PrototxtError
from .proto import caffe_pb2

log = logging.getLogger("minicaffe")

__all__ = [
    "V1_LAYER_TYPES",
    "V0_LAYER_TYPES",
    "SOLVER_TYPES",
    "net_needs_upgrade",
    "net_needs_v0_to_v1_upgrade",
    "net_needs_data_upgrade",
    "net_needs_v1_to_v2_upgrade",
    "net_needs_input_upgrade",
    "net_needs_batchnorm_upgrade",
    "upgrade_v0_net",
    "upgrade_net_data_transformation",
    "upgrade_v1_net",
    "upgrade_v1_layer_type",
    "upgrade_net_input",
    "upgrade_batchnorm",
    "upgrade_net_as_needed",
    "upgrade_solver_as_needed",
    "set_solver_defaults",
]

_V1 = caffe_pb2.V1LayerParameter

#: V1 LayerType enum value -> current type string (UpgradeV1LayerType).
V1_LAYER_TYPES = {
    _V1.NONE: "",
    _V1.ABSVAL: "AbsVal",
    _V1.ACCURACY: "Accuracy",
    _V1.ARGMAX: "ArgMax",
    _V1.BNLL: "BNLL",
    _V1.CONCAT: "Concat",
    _V1.CONTRASTIVE_LOSS: "ContrastiveLoss",
    _V1.CONVOLUTION: "Convolution",
    _V1.DECONVOLUTION: "Deconvolution",
    _V1.DATA: "Data",
    _V1.DROPOUT: "Dropout",
    _V1.DUMMY_DATA: "DummyData",
    _V1.EUCLIDEAN_LOSS: "EuclideanLoss",
    _V1.ELTWISE: "Eltwise",
    _V1.EXP: "Exp",
    _V1.FLATTEN: "Flatten",
    _V1.HDF5_DATA: "HDF5Data",
    _V1.HDF5_OUTPUT: "HDF5Output",
    _V1.HINGE_LOSS: "HingeLoss",
    _V1.IM2COL: "Im2col",
    _V1.IMAGE_DATA: "ImageData",
    _V1.INFOGAIN_LOSS: "InfogainLoss",
    _V1.INNER_PRODUCT: "InnerProduct",
    _V1.LRN: "LRN",
    _V1.MEMORY_DATA: "MemoryData",
    _V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss",
    _V1.MVN: "MVN",
    _V1.POOLING: "Pooling",
    _V1.POWER: "Power",
    _V1.RELU: "ReLU",
    _V1.SIGMOID: "Sigmoid",
    _V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss",
    _V1.SILENCE: "Silence",
    _V1.SOFTMAX: "Softmax",
    _V1.SOFTMAX_LOSS: "SoftmaxWithLoss",
    _V1.SPLIT: "Split",
    _V1.SLICE: "Slice",
    _V1.TANH: "TanH",
    _V1.WINDOW_DATA: "WindowData",
    _V1.THRESHOLD: "Threshold",
}

#: V0 type string -> V1 LayerType enum value (UpgradeV0LayerType).
V0_LAYER_TYPES = {
    "accuracy": _V1.ACCURACY,
    "bnll": _V1.BNLL,
    "concat": _V1.CONCAT,
    "conv": _V1.CONVOLUTION,
    "data": _V1.DATA,
    "dropout": _V1.DROPOUT,
    "euclidean_loss": _V1.EUCLIDEAN_LOSS,
    "flatten": _V1.FLATTEN,
    "hdf5_data": _V1.HDF5_DATA,
    "hdf5_output": _V1.HDF5_OUTPUT,
    "im2col": _V1.IM2COL,
    "images": _V1.IMAGE_DATA,
    "infogain_loss": _V1.INFOGAIN_LOSS,
    "innerproduct": _V1.INNER_PRODUCT,
    "lrn": _V1.LRN,
    "multinomial_logistic_loss": _V1.MULTINOMIAL_LOGISTIC_LOSS,
    "pool": _V1.POOLING,
    "relu": _V1.RELU,
    "sigmoid": _V1.SIGMOID,
    "softmax": _V1.SOFTMAX,
    "softmax_loss": _V1.SOFTMAX_LOSS,
    "split": _V1.SPLIT,
    "tanh": _V1.TANH,
    "window_data": _V1.WINDOW_DATA,
}

#: Deprecated SolverParameter.solver_type enum value -> ``type`` string (UpgradeSolverType).
SOLVER_TYPES = {
    caffe_pb2.SolverParameter.SGD: "SGD",
    caffe_pb2.SolverParameter.NESTEROV: "Nesterov",
    caffe_pb2.SolverParameter.ADAGRAD: "AdaGrad",
    caffe_pb2.SolverParameter.RMSPROP: "RMSProp",
    caffe_pb2.SolverParameter.ADADELTA: "AdaDelta",
    caffe_pb2.SolverParameter.ADAM: "Adam",
}

# V0 flat field -> {V0 type: (V1 *_param field, field inside it, how)}; how is "set",
# "append" (repeated target) or "copy" (message). Fields in _V0_TRANSFORM go to
# transform_param whatever the type. Straight from UpgradeV0LayerParameter.
_V0_FIELDS = [
    ("num_output", {"conv": ("convolution_param", "num_output", "set"),
                    "innerproduct": ("inner_product_param", "num_output", "set")}),
    ("biasterm", {"conv": ("convolution_param", "bias_term", "set"),
                  "innerproduct": ("inner_product_param", "bias_term", "set")}),
    ("weight_filler", {"conv": ("convolution_param", "weight_filler", "copy"),
                       "innerproduct": ("inner_product_param", "weight_filler", "copy")}),
    ("bias_filler", {"conv": ("convolution_param", "bias_filler", "copy"),
                     "innerproduct": ("inner_product_param", "bias_filler", "copy")}),
    ("pad", {"conv": ("convolution_param", "pad", "append"),
             "pool": ("pooling_param", "pad", "set")}),
    ("kernelsize", {"conv": ("convolution_param", "kernel_size", "append"),
                    "pool": ("pooling_param", "kernel_size", "set")}),
    ("group", {"conv": ("convolution_param", "group", "set")}),
    ("stride", {"conv": ("convolution_param", "stride", "append"),
                "pool": ("pooling_param", "stride", "set")}),
    # V0 and Pooling PoolMethod share numbers (MAX=0, AVE=1, STOCHASTIC=2).
    ("pool", {"pool": ("pooling_param", "pool", "set")}),
    ("dropout_ratio", {"dropout": ("dropout_param", "dropout_ratio", "set")}),
    ("local_size", {"lrn": ("lrn_param", "local_size", "set")}),
    ("alpha", {"lrn": ("lrn_param", "alpha", "set")}),
    ("beta", {"lrn": ("lrn_param", "beta", "set")}),
    ("k", {"lrn": ("lrn_param", "k", "set")}),
    ("source", {"data": ("data_param", "source", "set"),
                "hdf5_data": ("hdf5_data_param", "source", "set"),
                "images": ("image_data_param", "source", "set"),
                "window_data": ("window_data_param", "source", "set"),
                "infogain_loss": ("infogain_loss_param", "source", "set")}),
    ("batchsize", {"data": ("data_param", "batch_size", "set"),
                   "hdf5_data": ("hdf5_data_param", "batch_size", "set"),
                   "images": ("image_data_param", "batch_size", "set"),
                   "window_data": ("window_data_param", "batch_size", "set")}),
    ("rand_skip", {"data": ("data_param", "rand_skip", "set"),
                   "images": ("image_data_param", "rand_skip", "set")}),
    ("shuffle_images", {"images": ("image_data_param", "shuffle", "set")}),
    ("new_height", {"images": ("image_data_param", "new_height", "set")}),
    ("new_width", {"images": ("image_data_param", "new_width", "set")}),
    ("concat_dim", {"concat": ("concat_param", "concat_dim", "set")}),
    ("det_fg_threshold", {"window_data": ("window_data_param", "fg_threshold", "set")}),
    ("det_bg_threshold", {"window_data": ("window_data_param", "bg_threshold", "set")}),
    ("det_fg_fraction", {"window_data": ("window_data_param", "fg_fraction", "set")}),
    ("det_context_pad", {"window_data": ("window_data_param", "context_pad", "set")}),
    ("det_crop_mode", {"window_data": ("window_data_param", "crop_mode", "set")}),
    ("hdf5_output_param", {"hdf5_output": ("hdf5_output_param", None, "copy")}),
]
_V0_TRANSFORM = [("scale", "scale"), ("meanfile", "mean_file"), ("cropsize", "crop_size"),
                 ("mirror", "mirror")]

# V1 data layers whose deprecated transform fields move to transform_param.
_DATA_UPGRADE = [(_V1.DATA, "data_param"), (_V1.IMAGE_DATA, "image_data_param"),
                 (_V1.WINDOW_DATA, "window_data_param")]
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


# --------------------------------------------------------------------------------------------
# Checks


def net_needs_v0_to_v1_upgrade(net):
    """True if any V1 ``layers`` entry nests a V0 ``layer``."""
    return any(l.HasField("layer") for l in net.layers)


def net_needs_data_upgrade(net):
    """True if a V1 Data/ImageData/WindowData layer sets scale/mean_file/crop_size/mirror."""
    for l in net.layers:
        for v1_type, param_name in _DATA_UPGRADE:
            if l.type == v1_type:
                p = getattr(l, param_name)
                if any(p.HasField(f) for f in _TRANSFORM_FIELDS):
                    return True
    return False


def net_needs_v1_to_v2_upgrade(net):
    """True if the net uses the deprecated V1 ``layers`` field."""
    return len(net.layers) > 0


def net_needs_input_upgrade(net):
    """True if the net has top-level ``input`` fields."""
    return len(net.input) > 0


def _old_batchnorm(layer):
    # Caffe's test is "3 param specs" alone, which every model Caffe (or minicaffe) writes
    # passes: BatchNorm's set-up appends param { lr_mult: 0 } per blob. Only a spec that would
    # learn the statistics (lr_mult != 0, which set-up refuses) is the old definition.
    return (layer.type == "BatchNorm" and len(layer.param) == 3
            and any(p.lr_mult != 0 for p in layer.param))


def net_needs_batchnorm_upgrade(net):
    """True if a BatchNorm layer declares 3 ``param`` specs with a non-zero ``lr_mult`` (the
    old definition, where the user froze the statistics by hand)."""
    return any(_old_batchnorm(l) for l in net.layer)


def net_needs_upgrade(net):
    """True if ``upgrade_net_as_needed`` would change ``net``."""
    return (net_needs_v0_to_v1_upgrade(net) or net_needs_v1_to_v2_upgrade(net)
            or net_needs_data_upgrade(net) or net_needs_input_upgrade(net)
            or net_needs_batchnorm_upgrade(net))


# --------------------------------------------------------------------------------------------
# V0 -> V1


def _fold_v0_padding_layers(net):
    """UpgradeV0PaddingLayers: a copy of ``net`` with "padding" layers folded into the pad
    of the conv/pool layer that reads them."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layers[:]
    last_top = {name: -1 for name in net.input}  # blob -> index of the layer writing it
    for i, conn in enumerate(net.layers):
        v0 = conn.layer
        if v0.type != "padding":
            out.layers.add().CopyFrom(conn)
        for j, blob in enumerate(conn.bottom):
            if blob not in last_top:
                raise PrototxtError("Unknown blob input %s to layer %s" % (blob, v0.name or i))
            src_idx = last_top[blob]
            if src_idx == -1:
                continue
            src = net.layers[src_idx]
            if src.layer.type == "padding":
                if v0.type not in ("conv", "pool"):
                    raise PrototxtError("Padding layer input to non-convolutional / non-pooling "
                                        "layer type %s" % v0.type)
                if len(conn.bottom) != 1:
                    raise PrototxtError("Conv Layer takes a single blob as input.")
                if len(src.bottom) != 1:
                    raise PrototxtError("Padding Layer takes a single blob as input.")
                if len(src.top) != 1:
                    raise PrototxtError("Padding Layer produces a single blob as output.")
                folded = out.layers[len(out.layers) - 1]
                folded.layer.pad = src.layer.pad
                folded.bottom[j] = src.bottom[0]
        for blob in conn.top:
            last_top[blob] = i
    return out


def _upgrade_v0_layer(conn, out):
    """UpgradeV0LayerParameter: one V0 connection into the V1 layer ``out``.

    Returns False (after logging) when a V0 field does not apply to the layer's type."""
    compatible = True
    out.bottom.extend(conn.bottom)
    out.top.extend(conn.top)
    if not conn.HasField("layer"):
        return compatible
    v0 = conn.layer
    if v0.HasField("name"):
        out.name = v0.name
    v0_type = v0.type
    if v0.HasField("type"):
        if v0_type not in V0_LAYER_TYPES:
            raise PrototxtError("Unknown layer name: %s" % v0_type)
        out.type = V0_LAYER_TYPES[v0_type]
    for blob in v0.blobs:
        out.blobs.add().CopyFrom(blob)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)
    for field, targets in _V0_FIELDS:
        if not v0.HasField(field):
            continue
        target = targets.get(v0_type)
        if target is None:
            log.error("Unknown parameter %s for layer type %s", field, v0_type)
            compatible = False
            continue
        param_name, sub, how = target
        param = getattr(out, param_name)
        value = getattr(v0, field)
        if how == "set":
            setattr(param, sub, value)
        elif how == "append":
            getattr(param, sub).append(value)
        elif sub is None:
            param.CopyFrom(value)
        else:
            getattr(param, sub).CopyFrom(value)
    for field, sub in _V0_TRANSFORM:
        if v0.HasField(field):
            setattr(out.transform_param, sub, getattr(v0, field))
    return compatible


def upgrade_v0_net(net):
    """V0 nets (each ``layers`` entry nesting a V0 ``layer``) to V1, in place (UpgradeV0Net).

    Padding layers are folded into the following conv/pool. Like Caffe, only name, layers,
    input, input_dim and force_backward survive. Returns True if the net was upgraded.
    """
    if not net_needs_v0_to_v1_upgrade(net):
        return False
    padded = _fold_v0_padding_layers(net)
    compatible = True
    net.Clear()
    if padded.HasField("name"):
        net.name = padded.name
    for conn in padded.layers:
        compatible &= _upgrade_v0_layer(conn, net.layers.add())
    net.input.extend(padded.input)
    net.input_dim.extend(padded.input_dim)
    if padded.HasField("force_backward"):
        net.force_backward = padded.force_backward
    if not compatible:
        log.error("Warning: had one or more problems upgrading V0NetParameter to "
                  "NetParameter (see above); continuing anyway.")
    return True


# --------------------------------------------------------------------------------------------
# Data transformation


def upgrade_net_data_transformation(net):
    """Move scale/mean_file/crop_size/mirror of V1 Data, ImageData and WindowData layers from
    their ``*_data_param`` into ``transform_param``, in place. Returns True if any moved."""
    changed = False
    for l in net.layers:
        for v1_type, param_name in _DATA_UPGRADE:
            if l.type != v1_type:
                continue
            p = getattr(l, param_name)
            for f in _TRANSFORM_FIELDS:
                if p.HasField(f):
                    setattr(l.transform_param, f, getattr(p, f))
                    p.ClearField(f)
                    changed = True
    return changed


# --------------------------------------------------------------------------------------------
# V1 -> current


def upgrade_v1_layer_type(v1_type):
    """The current type string of a V1 LayerType enum value (UpgradeV1LayerType)."""
    try:
        return V1_LAYER_TYPES[v1_type]
    except KeyError:
        raise PrototxtError("Unknown V1LayerParameter layer type: %s" % v1_type) from None


# *_param fields of V1LayerParameter; LayerParameter has each under the same name.
_V1_PARAM_FIELDS = [f.name for f in caffe_pb2.V1LayerParameter.DESCRIPTOR.fields
                    if f.name.endswith("_param")]


def _upgrade_v1_layer(v1, out):
    """UpgradeV1LayerParameter: one V1 layer into the LayerParameter ``out``."""
    compatible = True
    out.bottom.extend(v1.bottom)
    out.top.extend(v1.top)
    if v1.HasField("name"):
        out.name = v1.name
    for rule in v1.include:
        out.include.add().CopyFrom(rule)
    for rule in v1.exclude:
        out.exclude.add().CopyFrom(rule)
    if v1.HasField("type"):
        out.type = upgrade_v1_layer_type(v1.type)
    for blob in v1.blobs:
        out.blobs.add().CopyFrom(blob)

    def spec(i):
        while len(out.param) <= i:
            out.param.add()
        return out.param[i]

    for i, name in enumerate(v1.param):
        spec(i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        # V1 and ParamSpec DimCheckMode share numbers (STRICT=0, PERMISSIVE=1).
        spec(i).share_mode = mode
    for i, lr in enumerate(v1.blobs_lr):
        spec(i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        spec(i).decay_mult = decay
    out.loss_weight.extend(v1.loss_weight)
    for name in _V1_PARAM_FIELDS:
        if v1.HasField(name):
            getattr(out, name).CopyFrom(getattr(v1, name))
    if v1.HasField("layer"):
        log.error("Input NetParameter has V0 layer -- ignoring.")
        compatible = False
    return compatible


def upgrade_v1_net(net):
    """V1 ``layers`` (enum types) to ``layer`` (string types), in place (UpgradeV1Net).

    Raises PrototxtError if the net has both ``layer`` and ``layers``. Returns True if the net
    was upgraded.
    """
    if not net_needs_v1_to_v2_upgrade(net):
        return False
    if len(net.layer) > 0:
        raise PrototxtError(
            "Refusing to upgrade inconsistent NetParameter input; the definition includes both "
            "'layer' and 'layers' fields. The current format defines 'layer' fields with string "
            "type like layer { type: 'Layer' ... } and not layers { type: LAYER ... }. Manually "
            "switch the definition to 'layer' format to continue.")
    compatible = True
    for i, v1 in enumerate(net.layers):
        if not _upgrade_v1_layer(v1, net.layer.add()):
            log.error("Upgrade of input layer %d failed.", i)
            compatible = False
    net.ClearField("layers")
    if not compatible:
        log.error("Warning: had one or more problems upgrading V1LayerParameter (see above); "
                  "continuing anyway.")
    return True


# --------------------------------------------------------------------------------------------
# Inputs and BatchNorm


def upgrade_net_input(net):
    """Top-level ``input`` + ``input_shape``/``input_dim`` to an Input layer named "input" at
    the front of the net, in place (UpgradeNetInput). Inputs without any shape (legacy
    caffemodels) are just dropped. Returns True if the net had inputs."""
    if not net_needs_input_upgrade(net):
        return False
    has_shape = len(net.input_shape) > 0
    has_dim = len(net.input_dim) > 0
    if has_shape or has_dim:
        n = len(net.input)
        if has_shape and len(net.input_shape) < n:
            raise PrototxtError("%d inputs but only %d input_shape entries"
                                % (n, len(net.input_shape)))
        if not has_shape and len(net.input_dim) < 4 * n:
            raise PrototxtError("%d inputs need %d input_dim values (num, channels, height, "
                                "width each), found %d" % (n, 4 * n, len(net.input_dim)))
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        for i, top in enumerate(net.input):
            layer.top.append(top)
            shape = layer.input_param.shape.add()
            if has_shape:
                shape.CopyFrom(net.input_shape[i])
            else:
                shape.dim.extend(net.input_dim[4 * i:4 * i + 4])
        # Repeated message fields have no insert(): rebuild the list with the Input first.
        rest = caffe_pb2.NetParameter()
        rest.layer.MergeFrom(net.layer)
        net.ClearField("layer")
        net.layer.add().CopyFrom(layer)
        net.layer.MergeFrom(rest.layer)
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")
    return True


def upgrade_batchnorm(net):
    """BatchNorm layers of the old definition (``net_needs_batchnorm_upgrade``) get lr_mult 0
    and decay_mult 0 on each param spec (UpgradeNetBatchNorm): its blobs are statistics, never
    learned. Returns True if any."""
    changed = False
    for l in net.layer:
        if _old_batchnorm(l):
            for p in l.param:
                p.lr_mult = 0.0
                p.decay_mult = 0.0
            changed = True
    return changed


def upgrade_net_as_needed(net, source=""):
    """Run every needed upgrade on ``net`` in Caffe's order (UpgradeNetAsNeeded).

    ``source`` (a file name) only appears in the log lines. Returns True if ``net`` changed.
    """
    changed = False
    if net_needs_v0_to_v1_upgrade(net):
        log.info("Attempting to upgrade input file specified using deprecated "
                 "V0LayerParameter: %s", source)
        upgrade_v0_net(net)
        log.warning("Note that future Caffe releases will not support V0NetParameter; use "
                    "upgrade_net_proto_text / upgrade_net_proto_binary to upgrade this and any "
                    "other net protos to the new format.")
        changed = True
    if net_needs_data_upgrade(net):
        log.info("Attempting to upgrade input file specified using deprecated transformation "
                 "parameters: %s", source)
        upgrade_net_data_transformation(net)
        log.info("Successfully upgraded file specified using deprecated data transformation "
                 "parameters.")
        changed = True
    if net_needs_v1_to_v2_upgrade(net):
        log.info("Attempting to upgrade input file specified using deprecated "
                 "V1LayerParameter: %s", source)
        upgrade_v1_net(net)
        log.info("Successfully upgraded file specified using deprecated V1LayerParameter")
        changed = True
    if net_needs_input_upgrade(net):
        log.info("Attempting to upgrade input file specified using deprecated input fields: %s",
                 source)
        upgrade_net_input(net)
        log.info("Successfully upgraded file specified using deprecated input fields.")
        changed = True
    if net_needs_batchnorm_upgrade(net):
        log.info("Attempting to upgrade batch norm layers using deprecated params: %s", source)
        upgrade_batchnorm(net)
        log.info("Successfully upgraded batch norm layers using deprecated params.")
        changed = True
    return changed


# --------------------------------------------------------------------------------------------
# Solver


def upgrade_solver_as_needed(solver, source=""):
    """The deprecated ``solver_type`` enum becomes the ``type`` string, in place
    (UpgradeSolverAsNeeded). Setting both is a PrototxtError. Returns True if upgraded."""
    if not solver.HasField("solver_type"):
        return False
    log.info("Attempting to upgrade input file specified using deprecated 'solver_type' field "
             "(enum)': %s", source)
    if solver.HasField("type"):
        raise PrototxtError("%sFailed to upgrade solver: old solver_type field (enum) and new "
                            "type field (string) cannot be both specified in solver proto text."
                            % (source + ": " if source else ""))
    solver.type = SOLVER_TYPES[solver.solver_type]
    solver.ClearField("solver_type")
    log.info("Successfully upgraded file specified using deprecated 'solver_type' field (enum) "
             "to 'type' field (string).")
    return True


def set_solver_defaults(solver, solver_path):
    """Caffe's snapshot_prefix defaults (UpgradeSnapshotPrefixProperty), in place.

    Unset: the solver file path without its extension. An existing directory (relative to the
    working directory, as in Caffe): ``<dir>/<solver file stem>``. Returns ``solver``.
    """
    if not solver.HasField("snapshot_prefix"):
        solver.snapshot_prefix = os.path.splitext(os.fspath(solver_path))[0]
        log.info("snapshot_prefix was not specified and is set to %s", solver.snapshot_prefix)
    elif os.path.isdir(solver.snapshot_prefix):
        stem = os.path.splitext(os.path.basename(os.fspath(solver_path)))[0]
        solver.snapshot_prefix = os.path.join(solver.snapshot_prefix, stem)
        log.info("snapshot_prefix was a directory and is replaced to %s",
                 solver.snapshot_prefix)
    return solver

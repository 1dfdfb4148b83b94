"""pycaffe's net_spec: nets written in Python, serialised as a NetParameter.

    from minicaffe.net_spec import NetSpec, layers as L, params as P
    n = NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[64, 1, 28, 28]), dict(dim=[64])], ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.relu1 = L.ReLU(n.pool1, in_place=True)
    n.loss = L.SoftmaxWithLoss(n.relu1, n.label)
    open("net.prototxt", "w").write(str(n.to_proto()))

``L.<Type>(*bottoms, **params)`` is a ``Function`` (one layer of that type); it returns its
``Top`` (a tuple of them when ``ntop > 1``, the Function itself when ``ntop=0``). Keyword
arguments go, as in pycaffe, to the layer's own ``<type>_param`` message when it has such a
field, else to the LayerParameter (``loss_weight``, ``param``, ``include``, ``name``...); one
ending in ``param`` always goes to the LayerParameter (``convolution_param=dict(...)``,
``transform_param=dict(...)``). Dicts fill messages, lists fill repeated fields, a scalar given
to a repeated field becomes a one-element list; enum fields also take their value's name
(``pool="MAX"``, a minicaffe extension besides ``P.Pooling.MAX``). Deconvolution and Im2col
take ``convolution_param``'s fields, ``<X>Loss`` types without a parameter of their own take
``<X>Parameter``'s (``MMDLoss`` → ``mmd_param``) or else ``loss_param``'s
(``L.SoftmaxWithLoss(x, y, ignore_label=255)``): what Caffe's layers read (pycaffe looks for
a ``deconvolution_param`` there and fails).

Names: a top assigned to ``NetSpec`` attribute ``n.x`` is the blob ``x``; a layer is named after
its first top (``in_place=True`` keeps the bottom's blob name as its top); anything unnamed gets
``<Type><k>`` with one counter per type, as pycaffe numbers them.

With ``import minicaffe as caffe``, ``caffe.layers`` is minicaffe's layer package; pycaffe's
``caffe.layers`` / ``caffe.params`` generators are ``minicaffe.net_spec.layers`` / ``params``, and
are ``caffe.layers`` / ``caffe.params`` under the pycaffe alias (``minicaffe.pycaffe``).
"""
from collections import Counter, OrderedDict

from google.protobuf.descriptor import FieldDescriptor

from .errors import ArgumentError
from .proto import caffe_pb2

__all__ = ["NetSpec", "Top", "Function", "Layers", "Parameters", "layers", "params",
           "to_proto", "assign_proto", "param_name_dict"]

# Layer types whose parameters live in another type's message (the layer reads that field).
_SHARED_PARAMS = {"Deconvolution": "convolution", "Im2col": "convolution"}


def param_name_dict():
    """{layer type: prefix of its ``*_param`` field}, from the LayerParameter fields whose
    message is ``<Type>Parameter``: 'InnerProduct' → 'inner_product', 'HDF5Data' → 'hdf5_data'."""
    out = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            type_name = field.message_type.name
            if type_name.endswith("Parameter"):
                out[type_name[:-len("Parameter")]] = field.name[:-len("_param")]
    return out


_PARAM_NAMES = param_name_dict()


def _type_param_field(type_name):
    """The LayerParameter field holding ``type_name``'s own parameters, or None."""
    prefix = _SHARED_PARAMS.get(type_name) or _PARAM_NAMES.get(type_name)
    if prefix is None and type_name.endswith("Loss"):
        prefix = _PARAM_NAMES.get(type_name[:-len("Loss")], "loss")
    return prefix + "_param" if prefix else None


def _repeated(field):
    # FieldDescriptor.label is gone in protobuf 7; is_repeated is missing before 5
    if hasattr(field, "is_repeated"):
        return field.is_repeated
    return field.label == FieldDescriptor.LABEL_REPEATED


def _scalar(field, value, where):
    if field.enum_type is not None and isinstance(value, str):
        try:
            return field.enum_type.values_by_name[value].number
        except KeyError:
            raise ArgumentError("%s: %r is not a value of %s (one of %s)" % (
                where, value, field.enum_type.name,
                ", ".join(field.enum_type.values_by_name))) from None
    return value


def assign_proto(proto, name, val):
    """Set field ``name`` of message ``proto`` from a Python value: a dict fills a message, a
    list a repeated field (of messages when its items are dicts), a scalar given to a repeated
    field becomes a one-element list; anything else is assigned."""
    where = "%s.%s" % (proto.DESCRIPTOR.name, name)
    field = proto.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        raise ArgumentError("%s: %s has no field %r" % (where, proto.DESCRIPTOR.name, name))
    is_message = field.type == FieldDescriptor.TYPE_MESSAGE
    if _repeated(field):
        items = val if isinstance(val, (list, tuple)) else [val]
        target = getattr(proto, name)
        for item in items:
            if is_message:
                if not isinstance(item, dict):
                    raise ArgumentError("%s: expected a dict for each %s, got %r"
                                        % (where, field.message_type.name, item))
                sub = target.add()
                for k, v in item.items():
                    assign_proto(sub, k, v)
            else:
                target.append(_scalar(field, item, where))
    elif is_message:
        if not isinstance(val, dict):
            raise ArgumentError("%s: expected a dict for the %s message, got %r"
                                % (where, field.message_type.name, val))
        sub = getattr(proto, name)
        sub.SetInParent()   # an empty dict still marks the message as present
        for k, v in val.items():
            assign_proto(sub, k, v)
    else:
        try:
            setattr(proto, name, _scalar(field, val, where))
        except (TypeError, ValueError) as exc:
            raise ArgumentError("%s: cannot set %r (%s)" % (where, val, exc)) from None


class Top:
    """One output blob of a Function: ``fn`` (the layer), ``n`` (which of its tops)."""

    def __init__(self, fn, n):
        self.fn = fn
        self.n = n

    def to_proto(self):
        """The NetParameter of every layer this top needs."""
        return to_proto(self)

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)


class Function:
    """One layer: ``type_name``, ``inputs`` (Tops), ``params`` (the keyword arguments, less
    ``ntop`` and ``in_place``), ``ntop``, ``in_place``, ``tops``."""

    def __init__(self, type_name, inputs, params):
        for i, inp in enumerate(inputs):
            if not isinstance(inp, Top):
                # pycaffe's message, word for word (ArgumentError is a TypeError)
                raise ArgumentError("%s input %d is not a Top (type is %s)"
                                    % (type_name, i, type(inp)))
        self.type_name = type_name
        self.inputs = tuple(inputs)
        self.params = dict(params)
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        if not isinstance(self.ntop, int) or self.ntop < 0:
            raise ArgumentError("%s: ntop must be an integer >= 0, got %r" % (type_name, self.ntop))
        if self.in_place and len(self.inputs) != self.ntop:
            raise ArgumentError("%s: in_place needs as many tops as bottoms (%d bottoms, ntop=%d)"
                                % (type_name, len(self.inputs), self.ntop))
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _auto_name(self, names, autonames, key):
        if key not in names:
            autonames[self.type_name] += 1
            names[key] = "%s%d" % (self.type_name, autonames[self.type_name])
        return names[key]

    def _to_proto(self, layers, names, autonames):
        if self in layers:
            return
        bottoms = []
        for inp in self.inputs:
            inp._to_proto(layers, names, autonames)
            bottoms.append(layers[inp.fn].top[inp.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottoms)
        if self.in_place:
            layer.top.extend(bottoms)
        else:
            layer.top.extend(self._auto_name(names, autonames, top) for top in self.tops)
        # a layer takes its first top's name; a top-less one its own (or <Type><k>)
        if self.tops and self not in names:
            names[self] = self._auto_name(names, autonames, self.tops[0])
        layer.name = self._auto_name(names, autonames, self)
        own = _type_param_field(self.type_name)
        for k, v in self.params.items():
            if k.endswith("param") or own is None:
                assign_proto(layer, k, v)
            elif k in getattr(layer, own).DESCRIPTOR.fields_by_name:
                assign_proto(getattr(layer, own), k, v)
            elif k in layer.DESCRIPTOR.fields_by_name:
                assign_proto(layer, k, v)
            else:
                raise ArgumentError("L.%s: %r is neither a field of %s nor of LayerParameter"
                                    % (self.type_name, k, own))
        layers[self] = layer


def to_proto(*tops):
    """The NetParameter with every layer needed to compute ``tops`` (blobs named
    ``<Type><k>``; name them with a NetSpec)."""
    layers, names, autonames = OrderedDict(), {}, Counter()
    for top in tops:
        top._to_proto(layers, names, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class NetSpec:
    """Tops assigned as attributes (``n.conv1 = L.Convolution(...)``) or items (``n["conv1"]``);
    ``to_proto()`` writes the layers that produce them, in assignment order, with the
    assigned names."""

    def __init__(self):
        object.__setattr__(self, "tops", OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.__dict__["tops"][name]
        except KeyError:
            raise AttributeError("NetSpec has no top %r" % name) from None

    def __setitem__(self, key, value):
        self.tops[key] = value

    def __getitem__(self, key):
        return self.tops[key]

    def to_proto(self):
        names = {v: k for k, v in self.tops.items()}
        layers, autonames = OrderedDict(), Counter()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


class Layers:
    """``L.<Type>(*bottoms, **params)``: a layer of any type (checked when the net is built)."""

    def __getattr__(self, type_name):
        if type_name.startswith("__"):
            raise AttributeError(type_name)

        def layer_fn(*args, **kwargs):
            fn = Function(type_name, args, kwargs)
            if fn.ntop == 0:
                return fn
            return fn.tops[0] if fn.ntop == 1 else fn.tops
        layer_fn.__name__ = type_name
        return layer_fn


class _EnumValues:
    def __init__(self, message):
        self._message = message

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._message, name)


class Parameters:
    """``P.<Type>.<VALUE>``: an enum value of ``<Type>Parameter`` (``P.Pooling.MAX`` is 0)."""

    def __getattr__(self, type_name):
        if type_name.startswith("__"):
            raise AttributeError(type_name)
        try:
            return _EnumValues(getattr(caffe_pb2, type_name + "Parameter"))
        except AttributeError:
            raise AttributeError("caffe.proto has no %sParameter" % type_name) from None


layers = Layers()
params = Parameters()

"""Data layers: Input, DummyData. (ImageData, MemoryData, Data come with the layer library.)"""
from minicaffe.errors import CaffeError
from minicaffe.fillers import fill
from minicaffe.layer import Layer, register


@register("Input")
class InputLayer(Layer):
    """Input: tops of the shapes in ``input_param { shape }`` (one shape, or one per top);
    the user fills them (``net.blobs[name].data[...] = x``). No forward or backward work."""
    min_num_top = 1

    def layer_setup(self, bottom, top):
        shapes = self.layer_param.input_param.shape
        if len(shapes) not in (1, len(top)):
            raise CaffeError("Input layer %s: input_param must give one shape or one per top "
                             "(%d tops, %d shapes)" % (self.name, len(top), len(shapes)))
        for i, t in enumerate(top):
            if shapes:
                t.reshape(tuple(shapes[0 if len(shapes) == 1 else i].dim))

    def reshape(self, bottom, top):
        pass  # the user reshapes input blobs

    def forward_cpu(self, bottom, top):
        pass


@register("DummyData", "DUMMY_DATA")
class DummyDataLayer(Layer):
    """DummyData: tops filled by ``data_filler`` (one, or one per top; default constant 0).
    Constant fillers fill once; any other filler refills on every forward, as in Caffe."""
    min_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.dummy_data_param
        n = len(top)
        legacy = len(p.num) + len(p.channels) + len(p.height) + len(p.width)
        if legacy:
            for field in (p.num, p.channels, p.height, p.width):
                if len(field) not in (1, n):
                    raise CaffeError("DummyData layer %s: num/channels/height/width must be given "
                                     "once or once per top" % self.name)
            pick = lambda f, i: f[0] if len(f) == 1 else f[i]  # noqa: E731
            shapes = [(pick(p.num, i), pick(p.channels, i), pick(p.height, i), pick(p.width, i))
                      for i in range(n)]
        else:
            if len(p.shape) not in (1, n):
                raise CaffeError("DummyData layer %s: shape must be given once or once per top "
                                 "(%d tops, %d shapes)" % (self.name, n, len(p.shape)))
            shapes = [tuple(p.shape[0 if len(p.shape) == 1 else i].dim) for i in range(n)]
        if len(p.data_filler) not in (0, 1, n):
            raise CaffeError("DummyData layer %s: data_filler must be given 0, 1 or %d times"
                             % (self.name, n))
        self.fillers = [(p.data_filler[0] if len(p.data_filler) == 1 else p.data_filler[i])
                        if p.data_filler else None for i in range(n)]
        self.refill = [f is not None and f.type != "constant" for f in self.fillers]
        for t, s, f in zip(top, shapes, self.fillers):
            t.reshape(s)
            fill(t, f)

    def reshape(self, bottom, top):
        pass

    def forward_cpu(self, bottom, top):
        for t, f, r in zip(top, self.fillers, self.refill):
            if r:
                fill(t, f)

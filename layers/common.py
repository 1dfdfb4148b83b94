"""Common layers: InnerProduct, Split, Silence."""
import numpy as np

from minicaffe.errors import CaffeError
from minicaffe.fillers import fill
from minicaffe.layer import Layer, register


@register("InnerProduct", "INNER_PRODUCT")
class InnerProductLayer(Layer):
    """InnerProduct: y = x·Wᵀ + b with W (N, K), or y = x·W + b with ``transpose`` (W (K, N)).

    Everything from ``axis`` (1) on is flattened to K, which must stay fixed across reshapes;
    the top is ``bottom.shape[:axis] + (N,)``. Backward: dW += dyᵀx, db += Σ dy, dx = dy·W.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.inner_product_param
        if not p.HasField("num_output"):
            raise CaffeError("InnerProduct layer %s: inner_product_param.num_output is required"
                             % self.name)
        self.N = p.num_output
        self.bias_term = p.bias_term
        self.transpose = p.transpose
        self.axis = bottom[0].canonical_axis(p.axis)
        self.K = bottom[0].count(self.axis)
        if self.blobs:
            return
        w = self.make_blob((self.K, self.N) if self.transpose else (self.N, self.K))
        fill(w, p.weight_filler)
        self.blobs = [w]
        if self.bias_term:
            b = self.make_blob((self.N,))
            fill(b, p.bias_filler)
            self.blobs.append(b)

    def reshape(self, bottom, top):
        axis = bottom[0].canonical_axis(self.layer_param.inner_product_param.axis)
        k = bottom[0].count(axis)
        if k != self.K:
            raise self.shape_error("the input size from axis %d (bottom '%s')" % (
                axis, self.layer_param.bottom[0]), (k,), (self.K,))
        self.M = bottom[0].count(0, axis)
        top[0].reshape(bottom[0].shape[:axis] + (self.N,))

    def _w(self):
        w = self.blobs[0].data
        return w if self.transpose else w.T  # (K, N) view either way

    def forward_cpu(self, bottom, top):
        x = bottom[0].data.reshape(self.M, self.K)
        y = top[0].data.reshape(self.M, self.N)
        np.dot(x, self._w(), out=y)
        if self.bias_term:
            y += self.blobs[1].data

    def backward_cpu(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.M, self.N)
        x = bottom[0].data.reshape(self.M, self.K)
        if self.param_propagate_down[0]:
            dw = self.blobs[0].diff
            if self.transpose:
                dw += x.T @ dy
            else:
                dw += dy.T @ x
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff[...] += dy.sum(axis=0)
        if propagate_down[0]:
            np.dot(dy, self._w().T, out=bottom[0].diff.reshape(self.M, self.K))


@register("Split", "SPLIT")
class SplitLayer(Layer):
    """Split: every top shares the bottom's data; backward sums the tops' diffs."""
    exact_num_bottom = 1
    min_num_top = 1

    def reshape(self, bottom, top):
        for t in top:
            if t is bottom[0]:
                raise CaffeError("Split layer %s does not allow in-place computation" % self.name)
            t.reshape(bottom[0].shape)
            t.share_data(bottom[0])

    def forward_cpu(self, bottom, top):
        pass

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        d = bottom[0].diff
        if len(top) == 1:
            d[...] = top[0].diff
            return
        np.add(top[0].diff, top[1].diff, out=d)
        for t in top[2:]:
            d += t.diff


@register("Silence", "SILENCE")
class SilenceLayer(Layer):
    """Silence: consumes bottoms so they are not net outputs; backward writes zeros."""
    min_num_bottom = 1
    exact_num_top = 0

    def reshape(self, bottom, top):
        pass

    def forward_cpu(self, bottom, top):
        pass

    def backward_cpu(self, top, propagate_down, bottom):
        for b, p in zip(bottom, propagate_down):
            if p:
                b.diff[...] = 0

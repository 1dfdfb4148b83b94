"""Caffe's schema: ``caffe.proto`` and ``caffe_pb2.py``, the module protoc generates from it
(committed; ``minicaffe/proto/regen.py`` remakes it after an edit of caffe.proto)::

    from minicaffe.proto import caffe_pb2
    net = caffe_pb2.NetParameter()
    caffe_pb2.TRAIN, caffe_pb2.Phase.Value("TEST"), caffe_pb2.PoolingParameter.MAX
"""

from google.protobuf.internal import api_implementation


def _allow_oversize_protos():
    """Let the C++/upb backends read messages as large as Caffe does (up to 2 GB).

    * cpp backend: ``SetAllowOversizeProtos`` lifts the 64 MB total-size and the recursion
      limits of ``ParseFromString``; without it large .caffemodel files fail to decode.
    * upb backend: the call exists for compatibility and raises upb's nesting-depth limit;
      upb has no total-size limit of its own besides the 2 GB wire-format maximum.
    * pure-Python backend: there is no limit to lift (it is only slow on big models).
    Returns the backend name.
    """
    impl = api_implementation.Type()
    module = None
    try:
        if impl == "cpp":
            from google.protobuf.pyext import _message as module
        elif impl == "upb":
            from google._upb import _message as module
    except ImportError:  # pragma: no cover
        module = None
    setter = getattr(module, "SetAllowOversizeProtos", None)
    if setter is not None:
        setter(True)
    return impl


_allow_oversize_protos()

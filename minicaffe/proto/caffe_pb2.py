"""Caffe's message classes, built at import time from ``caffe.proto`` (no protoc needed).

Use it like the module protoc generates::

    from minicaffe.proto import caffe_pb2
    net = caffe_pb2.NetParameter()
    caffe_pb2.TRAIN, caffe_pb2.Phase.Value("TEST"), caffe_pb2.PoolingParameter.MAX

Importing this module also lets the C++/upb protobuf backends read messages up to Caffe's
2 GB limit (see ``minicaffe.proto._allow_oversize_protos``).
"""

from minicaffe.proto import build_classes as _build_classes

globals().update(_build_classes(module_name=__name__))

del _build_classes

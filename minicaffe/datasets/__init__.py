"""Datasets minicaffe ships or knows the layout of.

``toyhome``: ToyHome, the embedded, procedurally drawn stand-in for Office-Home (same folder
layout, four domains, twelve classes), generated on first use and cached.
``lists``: Caffe list files ("path label") for any ``<root>/<Domain>/<Class>/<image>`` tree,
Office-Home as distributed or ToyHome.
"""

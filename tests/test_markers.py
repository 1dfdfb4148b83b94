"""The integration marker (setup.cfg, tests/conftest.py): the list of integration modules
cannot rot, and the marker is registered."""
import configparser
import os

from conftest import INTEGRATION_MODULES

HERE = os.path.dirname(os.path.abspath(__file__))


def test_every_integration_module_exists():
    missing = [m for m in INTEGRATION_MODULES if not os.path.isfile(os.path.join(HERE, m))]
    assert not missing, "tests/conftest.py's INTEGRATION_MODULES names missing modules: %s" % missing
    assert len(set(INTEGRATION_MODULES)) == len(INTEGRATION_MODULES)


def test_integration_and_slow_markers_are_registered():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(HERE, "..", "setup.cfg"))
    names = [line.split(":")[0].strip() for line in cfg["tool:pytest"]["markers"].strip().splitlines()]
    assert {"slow", "integration"} <= set(names)

"""What `mpremote mip install` and the firmware manifest install is the whole library."""

import json
import os

from aziot_tools import paths


def test_package_json_lists_every_module():
    with open(os.path.join(paths.LIB, "package.json")) as f:
        pkg = json.load(f)
    listed = sorted(dest for dest, _src in pkg["urls"])
    on_disk = sorted("aziot/" + n for n in os.listdir(os.path.join(paths.LIB, "aziot")) if n.endswith(".py"))
    assert listed == on_disk
    assert ["umqtt.simple", "latest"] in pkg["deps"]
    for _dest, src in pkg["urls"]:
        assert os.path.exists(os.path.join(paths.LIB, src)), src


def test_versions_agree():
    with open(os.path.join(paths.LIB, "package.json")) as f:
        version = json.load(f)["version"]
    with open(os.path.join(paths.LIB, "aziot", "__init__.py")) as f:
        assert '__version__ = "%s"' % version in f.read()
    with open(os.path.join(paths.LIB, "manifest.py")) as f:
        assert 'version="%s"' % version in f.read()

"""Fixtures: a hub emulator per test, provisioned devices, device code in micropython.

Device code always runs in the real MicroPython Unix port (a subprocess),
never imported into CPython.
"""

import os
import shutil
import subprocess
import textwrap

import pytest

from aziot_tools import device, paths, pki, provision
from aziot_tools.hub.server import BackgroundHub, ServerIdentity


def _library_form():
    form = os.environ.get("AZIOT_DEVICE_LIB", "py")
    assert form in ("py", "mpy", "frozen"), "AZIOT_DEVICE_LIB must be py, mpy or frozen"
    return form


@pytest.fixture(scope="session")
def unix_lib(tmp_path_factory):
    """The library as the device imports it: AZIOT_DEVICE_LIB=py (default: sources), mpy (as `aziot
    install` copies it) or frozen (nothing on /lib: a binary with the library frozen in)."""
    form = _library_form()
    if form == "mpy":
        from aziot_tools import install

        out = str(tmp_path_factory.mktemp("mpylib"))
        install.compile_library(out)
        return out
    if form == "frozen":
        return str(tmp_path_factory.mktemp("nolib"))
    return device.prepare_unix_lib()


@pytest.fixture(scope="session")
def board_heap_lib(tmp_path_factory):
    """The library for a run in a board-sized heap: .mpy when the default form is sources. Compiling
    the .py library inside a small heap of the 64-bit Unix port fails or passes at thresholds that
    move with the length of file paths (a run passed at 160 KB and failed at 176 KB; another checkout
    failed at 160 KB); `aziot install` puts .mpy on a board, and the README's "Heap" table measures
    the .py form on the 32-bit builds. None: unix_lib's form is used."""
    if _library_form() != "py":
        return None
    from aziot_tools import install

    out = str(tmp_path_factory.mktemp("boardlib"))
    install.compile_library(out)
    return out


@pytest.fixture(scope="session")
def server_pki(tmp_path_factory):
    """Server chains are slow to make (RSA 4096): once per session, copied per hub."""
    state = tmp_path_factory.mktemp("server-pki")
    ServerIdentity(str(state), pki.DEFAULT_HUB_HOST)
    return str(state / "server")


@pytest.fixture
def hub_state(tmp_path, server_pki):
    state = tmp_path / "hub"
    shutil.copytree(server_pki, state / "server")
    return str(state)


@pytest.fixture
def start_hub(hub_state):
    """start_hub(tls_mode=...) -> a running HubEmulator on a free loopback port, stopped after the test."""
    running = []

    def start(tls_mode="standard", **kwargs):
        bg = BackgroundHub(hub_state, port=0, tls_mode=tls_mode, **kwargs)
        hub = bg.__enter__()
        running.append(bg)
        return hub

    yield start
    for bg in reversed(running):
        bg.__exit__(None, None, None)


@pytest.fixture
def hub(start_hub):
    """A standard hub: RSA chain only, MFL ignored, 16 KB records (what nearly every real hub is)."""
    return start_hub()


@pytest.fixture
def preview_hub(start_hub):
    """A preview-mode hub: ECC chain for ECDSA-only offers, MFL honoured."""
    return start_hub("preview")


@pytest.fixture(params=["standard", "preview"])
def any_hub(start_hub, request):
    """The test runs once against each kind of hub."""
    return start_hub(request.param)


@pytest.fixture
def provision_device(hub_state, tmp_path):
    """provision_device(device_id, hub, **kw) -> ProvisionedDevice dialing that hub on loopback."""

    def make(device_id, hub=None, **kwargs):
        if hub is not None:
            kwargs.setdefault("address", "127.0.0.1")
            kwargs.setdefault("port", hub.port)
        image = str(tmp_path / (device_id + ".img"))
        return provision.provision(hub_state, device_id, image, **kwargs)

    return make


def _lib_for(request, unix_lib, heap):
    """unix_lib, or board_heap_lib for a run in a board-sized heap (compiled only when a test asks)."""
    return (request.getfixturevalue("board_heap_lib") if heap else None) or unix_lib


@pytest.fixture
def run_device(tmp_path, unix_lib, request):
    """run_device(image, code, *args) runs `code` as the device app; returns DeviceRun. With heap=,
    the library is board_heap_lib's (.mpy) unless AZIOT_DEVICE_LIB chose mpy or frozen."""
    counter = iter(range(1000))

    def run(image, code, *args, timeout=60, heap=None):
        app = tmp_path / ("app%d.py" % next(counter))
        app.write_text(textwrap.dedent(code))
        return device.run(image, str(app), *args, timeout=timeout, heap=heap,
                          lib_dir=_lib_for(request, unix_lib, heap))

    return run


@pytest.fixture
def mpy(tmp_path, unix_lib):
    """mpy(code) runs code in micropython with /lib-style imports; returns stdout (asserts exit 0)."""

    def run(code, timeout=60):
        script = tmp_path / "snippet.py"
        script.write_text(textwrap.dedent(code))
        proc = subprocess.run([paths.micropython(), str(script)], capture_output=True, text=True,
                              timeout=timeout, env=dict(os.environ, MICROPYPATH=".frozen:" + unix_lib))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    return run


@pytest.fixture
def live_device(tmp_path, unix_lib, request):
    """live_device(image, code) starts `code` as the device app in the background; stopped after the
    test. With heap=, the library is as in run_device."""
    started = []
    counter = iter(range(1000))

    def start(image, code, *args, heap=None):
        app = tmp_path / ("live%d.py" % next(counter))
        app.write_text(textwrap.dedent(code))
        dev = device.LiveDevice(image, str(app), *args, heap=heap,
                                lib_dir=_lib_for(request, unix_lib, heap))
        started.append(dev)
        return dev

    yield start
    for dev in started:
        dev.stop()

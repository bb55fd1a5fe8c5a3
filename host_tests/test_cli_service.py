"""The command line a person drives a demo device with: `aziot hub` + method / twin / c2d."""

import json
import os
import signal
import subprocess
import sys

import pytest

from devicecode import SURFACE_APP, free_port


def aziot(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "aziot_tools.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def hub_process(hub_state):
    """`aziot hub` in the foreground of a subprocess, as a person runs it; interrupted after the test."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "aziot_tools.cli", "hub", "--state", hub_state,
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("service API:"):
            break
    else:
        proc.wait(10)
        pytest.fail("aziot hub did not start: %s" % "".join(lines))
    yield hub_state, port
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 0
    assert not os.path.exists(os.path.join(hub_state, "service.json"))


def test_a_person_drives_a_device_from_the_command_line(hub_process, tmp_path, live_device):
    state, port = hub_process
    image = str(tmp_path / "cli-dev.img")
    proc = aziot("provision", "--state", state, "--device-id", "cli-dev", "--image", image,
                 "--address", "127.0.0.1", "--port", str(port))
    assert proc.returncode == 0, proc.stderr
    device = live_device(image, SURFACE_APP)
    device.expect("READY")

    proc = aziot("method", "--state", state, "cli-dev", "echo", "--payload", '{"a": [1, 2]}')
    assert (proc.returncode, proc.stdout) == (0, 'status 200: {"method": "echo", "got": {"a": [1, 2]}}\n')
    proc = aziot("method", "--state", state, "cli-dev", "boom")
    assert (proc.returncode, proc.stdout) == (2, 'status 500: {"error": "ValueError: sensor offline"}\n')

    proc = aziot("twin", "--state", state, "cli-dev", "--desired", '{"led": "on"}')
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["properties"]["desired"]["led"] == "on"
    device.expect("REPORTED 2")
    twin = json.loads(aziot("twin", "--state", state, "cli-dev").stdout)
    assert twin["properties"]["reported"]["led"] == "on"

    proc = aziot("c2d", "--state", state, "cli-dev", "hello", "--property", "k=v w", "--message-id", "cli-1")
    assert (proc.returncode, proc.stdout) == (0, "queued C2D message cli-1 for cli-dev\n")
    assert device.expect("C2D cli-1") == "C2D cli-1 None None None [[\"k\", \"v w\"]] b'hello'"

    proc = aziot("method", "--state", state, "cli-dev", "stop")
    assert proc.returncode == 0
    device.expect("DONE")
    proc = aziot("method", "--state", state, "cli-dev", "echo", "--timeout", "2")
    assert proc.returncode == 2 and proc.stdout.startswith("status 404: ")


def test_command_line_errors_name_the_problem(hub_process, tmp_path):
    state, _ = hub_process
    proc = aziot("c2d", "--state", state, "nobody", "hi")
    assert (proc.returncode, proc.stderr) == (1, "error: device 'nobody' is not registered\n")
    proc = aziot("twin", "--state", state, "nobody", "--desired", "{not json")
    assert proc.returncode == 1 and "--desired is not JSON" in proc.stderr
    proc = aziot("c2d", "--state", state, "nobody", "hi", "--property", "novalue")
    assert "--property wants NAME=VALUE" in proc.stderr
    elsewhere = str(tmp_path / "no-hub")
    proc = aziot("method", "--state", elsewhere, "dev", "x")
    assert proc.returncode == 1
    assert proc.stderr == "no emulator is running for %s: start one with `aziot hub --state %s`\n" % (
        elsewhere, elsewhere)

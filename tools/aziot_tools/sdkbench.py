"""QoS 1 telemetry beside the official Azure IoT Python SDK, on the same emulator.

Each client runs as a process of its own, in alternating rounds so that a
busy moment of this host hits both: the SDK (azure-iot-device under
CPython) and aziot under each MicroPython binary at hand. Per client and
round: N messages sent one after the other (each waits for its PUBACK), and
the same process with none sent; their difference in CPU time (user +
system, from wait4) over N is the CPU per message, free of start-up and
connect. Peak RSS is the process's own: native for the MicroPython builds;
the PyPI Unix port runs inside a CPython process, so its RSS is CPython's.
"""

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading

from . import device, pki, provision
from .hub.registry import Registry
from .hub.server import BackgroundHub

HOST = "localhost"  # the SDK checks the server certificate against the name it dials

SDK_APP = r"""
import sys, time
import paho.mqtt.client as mqtt
from azure.iot.device import IoTHubDeviceClient, Message, X509

emulator_port, device_id, cert, key, roots, n, size = sys.argv[1:8]
connect = mqtt.Client.connect


def to_emulator(self, host, port=1883, *args, **kwargs):  # the SDK dials 8883 only
    return connect(self, host, int(emulator_port) if port == 8883 else port, *args, **kwargs)


mqtt.Client.connect = to_emulator
with open(roots) as f:
    client = IoTHubDeviceClient.create_from_x509_certificate(
        x509=X509(cert, key), hostname="localhost", device_id=device_id, server_verification_cert=f.read())
client.connect()
payload = "x" * int(size)
t0 = time.perf_counter()
for i in range(int(n)):
    client.send_message(Message(payload))
print("SEND_US", int((time.perf_counter() - t0) * 1e6), flush=True)
sys.stdin.readline()  # the bench reads the peak RSS meanwhile
client.shutdown()
"""

AZIOT_APP = """
import sys, time
from aziot.hub import HubClient
n, size = int(sys.argv[1]), int(sys.argv[2])
hub = HubClient.from_flash()
hub.connect()
payload = b"x" * size
t0 = time.ticks_us()
for i in range(n):
    hub.send_telemetry(payload, content_type=None, content_encoding=None)
print("SEND_US", time.ticks_diff(time.ticks_us(), t0))
sys.stdin.readline()  # the bench reads the peak RSS meanwhile
hub.disconnect()
"""


def run_measured(cmd, timeout=300) -> tuple:
    """(stdout, CPU seconds user + system, peak RSS KB) of one child process.

    The app prints SEND_US and waits for its stdin to close, so the peak RSS
    is read from /proc while it still runs: wait4's ru_maxrss would carry
    the forking CPython's RSS across exec."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    timer = threading.Timer(timeout, lambda: proc.send_signal(signal.SIGKILL))
    timer.start()
    lines, rss = [], None
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("SEND_US"):
                rss = _peak_rss_kb(proc.pid)
                break
        proc.stdin.close()
        lines.append(proc.stdout.read())
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        timer.cancel()
    out = "".join(lines)
    if proc.returncode or rss is None:
        raise RuntimeError("%s failed (%d):\n%s" % (os.path.basename(cmd[0]), proc.returncode, out))
    return out, usage.ru_utime + usage.ru_stime, rss


def _peak_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(next(l for l in f if l.startswith("VmHWM:")).split()[1])


def _send_us(out):
    return int(next(l for l in out.splitlines() if l.startswith("SEND_US")).split()[1])


def clients(state, hub):
    """[(name, runner(n, size) -> (stdout, cpu s, rss KB), rss is native?)]: the SDK, then aziot per binary."""
    from . import firmware

    registry = Registry(os.path.join(hub.state_dir, "registry.json"))
    ident = pki.make_device_identity("sdk-bench")
    registry.add_device("sdk-bench", "x509_thumbprint", ident.thumbprint_sha1)
    provision.write_identity(ident, state, "sdk-bench")
    roots = os.path.join(state, "roots.pem")
    with open(roots, "w") as out:
        for kind in ("ecc", "rsa"):
            with open(hub.identity.root_path(kind)) as f:
                out.write(f.read())
    sdk_app = os.path.join(state, "sdk_app.py")
    aziot_app = os.path.join(state, "aziot_app.py")
    with open(sdk_app, "w") as f:
        f.write(SDK_APP)
    with open(aziot_app, "w") as f:
        f.write(AZIOT_APP)
    found = [("azure-iot-device 2.14.0 (CPython %d.%d)" % sys.version_info[:2], lambda n, size: run_measured(
        [sys.executable, sdk_app, str(hub.port), "sdk-bench", os.path.join(state, "sdk-bench.pem"),
         os.path.join(state, "sdk-bench-key.pem"), roots, str(n), str(size)]), False)]
    dev = provision.provision(state, "aziot-bench", os.path.join(state, "aziot-bench.img"), hub_host=HOST,
                              address="127.0.0.1", port=hub.port, tls_profile="rsa")
    lib = device.prepare_unix_lib()
    binaries = [("aziot, PyPI Unix port (inside CPython)", None, None, False)]
    for variant in firmware.unix_variants():
        binary = firmware.unix_mfl_binary(variant["name"])
        if binary and variant["name"] in ("micropython", "micropython-pico"):
            binaries.append(("aziot, unix-mfl %s (native)" % variant["name"], binary, variant.get("heap"), True))
    for label, binary, heap, native in binaries:
        def runner(n, size, binary=binary, heap=heap):
            return run_measured(device.command(dev.image_path, aziot_app, (str(n), str(size)), heap=heap,
                                               lib_dir=lib, binary=binary))
        found.append((label, runner, native))
    return found


def measure(rounds: int = 3, messages: int = 300, size: int = 64) -> list:
    """Rows: client, msgs/s (median), CPU µs per message (median), peak RSS KB (max), RSS native?"""
    state = tempfile.mkdtemp(prefix="aziot-sdkbench-")
    with BackgroundHub(state, port=0, hub_host=HOST) as hub:
        found = clients(state, hub)
        results = {name: {"rate": [], "cpu": [], "rss": []} for name, _, _ in found}
        for _ in range(rounds):
            for name, runner, _ in found:
                out, cpu_n, rss = runner(messages, size)
                _, cpu_0, _ = runner(0, size)
                results[name]["rate"].append(messages / (_send_us(out) / 1e6))
                results[name]["cpu"].append(max(cpu_n - cpu_0, 0) / messages * 1e6)
                results[name]["rss"].append(rss)
        sent = len(hub.telemetry("sdk-bench")), len(hub.telemetry("aziot-bench"))
    expected = rounds * messages
    if sent != (expected, expected * (len(found) - 1)):
        raise RuntimeError("the hub stored %s messages, expected %s" % (sent, (expected, expected * (len(found) - 1))))
    return [{"client": name, "msgs_per_s": statistics.median(results[name]["rate"]),
             "cpu_us_per_msg": statistics.median(results[name]["cpu"]),
             "peak_rss_kb": max(results[name]["rss"]), "rss_native": native,
             "rounds": rounds, "messages": messages, "size": size}
            for name, _, native in found]

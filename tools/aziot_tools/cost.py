"""Instructions per connect, counted by valgrind's callgrind.

Wall-clock time on this host says little about a 133 MHz Cortex-M0+ or a
240 MHz Xtensa, and varies from run to run; an instruction count is
deterministic and its ratios (ECC vs RSA, one build vs another) carry over.
One connect is TCP + TLS handshake + CONNECT/CONNACK (+ DISCONNECT); the
same app run without connecting (interpreter start, imports, reading the
config and certificates from flash) is subtracted.
"""

import os
import re
import shutil
import subprocess
import tempfile

from . import device, provision

CONNECT_APP = """
import sys
from aziot.hub import HubClient
try:
    import aziot_tls
except ImportError:
    aziot_tls = None
hub = HubClient.from_flash()
for i in range({"import": 0, "connect": 1, "twice": 2}[sys.argv[1]]):
    if aziot_tls:
        aziot_tls.reset_peak()
    hub.connect()
    print("CONNECTED", hub.tls_profile, hub.tls_cipher, aziot_tls.heap()[1] if aziot_tls else -1,
          aziot_tls.verify_cache()[1] if aziot_tls and hasattr(aziot_tls, "verify_cache") else -1)
    hub.disconnect()
"""

# Under valgrind a board-faithful ECC handshake runs some 50x slower than natively.
_TIMEOUT_S = 300


def available() -> bool:
    return shutil.which("valgrind") is not None


def _instructions(cmd: list, out_file: str) -> int:
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out_file] + cmd,
                          capture_output=True, text=True, timeout=_TIMEOUT_S + 60)
    if proc.returncode:
        raise RuntimeError("callgrind run failed:\n" + proc.stdout + proc.stderr)
    with open(out_file) as f:
        for line in f:
            m = re.match(r"(?:summary|totals):\s+(\d+)", line)
            if m:
                return int(m.group(1)), proc.stdout
    raise RuntimeError("no instruction total in " + out_file)


def connect_instructions(hub, profile: str, binary: str = None, heap: str = None, state: str = None) -> dict:
    """Instructions of a first connect to `hub` (a running BackgroundHub) with `profile`, of a second
    one in the same boot (remembered chain signatures, where the firmware has them), and of a first
    connect after a reset with the signatures kept on flash (tls_verified_file), the import-only run
    subtracted. The library runs as .mpy, as on a board."""
    from . import install

    state = state or tempfile.mkdtemp(prefix="aziot-cost-")
    app = os.path.join(state, "connect_app.py")
    with open(app, "w") as f:
        f.write(CONNECT_APP)
    device_id = "cost-%s-%s" % (profile, os.path.basename(binary or "micropython"))
    images, identity = {}, None
    for kept, verified_file in (("", ""), ("kept", "/azure-iot/tls-verified.bin")):  # RAM only; on flash
        dev = provision.provision(
            state, device_id, os.path.join(state, "%s%s.img" % (device_id, kept)), address="127.0.0.1",
            port=hub.port, tls_profile=profile, timeout=_TIMEOUT_S, tls_probe_s=0,
            tls_verified_file=verified_file, identity=identity, register=identity is None)
        images[kept], identity = dev.image_path, dev.identity
    lib = install.mpy_lib_dir()
    counts = {}
    runs = [("import", ""), ("connect", ""), ("twice", ""), ("connect", "kept"), ("connect", "kept")]
    for i, (what, kept) in enumerate(runs):
        if kept and int(second[3]) < 0:
            break  # a firmware without aziot_tls keeps nothing: the same as a first connect
        cmd = device.command(images[kept], app, (what,), heap=heap, lib_dir=lib, binary=binary)
        counts[what + kept], out = _instructions(cmd, os.path.join(state, "callgrind.%d.out" % i))
        if out.count("CONNECTED") != {"import": 0, "connect": 1, "twice": 2}[what]:
            raise RuntimeError("the device did not connect:\n" + out)
        if what == "twice":
            first, second = (line.split()[1:] for line in out.splitlines() if line.startswith("CONNECTED"))
    return {"profile": profile, "cipher": first[1], "import": counts["import"],
            "connect": counts["connect"] - counts["import"], "reconnect": counts["twice"] - counts["connect"],
            # the second boot of the image that keeps the signatures on flash (the first wrote them)
            "after_reset": counts.get("connectkept", counts["connect"]) - counts["import"],
            "mbedtls_peak": int(first[2]) if int(first[2]) >= 0 else None,  # None: a firmware without aziot_tls
            "cache_hits": int(second[3]) if int(second[3]) >= 0 else None}


def compare(builds: list, state: str = None) -> list:
    """Instructions per connect for each (name, binary, heap) build: ECC on a preview hub, RSA on a
    standard one. Returns rows of dicts (build, hub, profile, cipher, connect, import, mbedtls_peak)."""
    from .hub.server import BackgroundHub

    state = state or tempfile.mkdtemp(prefix="aziot-cost-")
    rows = []
    for mode, profile in (("preview", "ecc"), ("standard", "rsa")):
        with BackgroundHub(state, port=0, tls_mode=mode) as hub:
            for name, binary, heap in builds:
                row = connect_instructions(hub, profile, binary=binary, heap=heap, state=state)
                rows.append(dict(row, build=name, hub=mode))
    return rows

"""Handshake bytes each way, counted on the wire by a loopback proxy.

The emulator counts what its TLS stack read and wrote; a proxy between
device and hub counts what actually crossed the link, record headers
included, without trusting either end. The handshake is every record
before the first application-data record in that direction (the device's
encrypted Finished is a handshake record; its CONNECT is application data).
With `auto` on a standard hub the refused ECDSA offer's records count too:
they are part of what that profile costs.
"""

import os

from . import device, provision
from .faults import FaultProxy

APPLICATION_DATA = 23
_RECORD_HEADER = 5

CONNECT_APP = """
from aziot.hub import HubClient
hub = HubClient.from_flash()
hub.connect()
print("CONNECTED", hub.tls_profile, hub.tls_max_fragment_length)
hub.disconnect()
"""


def handshake_bytes(records) -> tuple:
    """(device -> hub, hub -> device) bytes of the records before each direction's first application data."""
    totals = {False: 0, True: 0}
    done = {False: False, True: False}
    for from_hub, content_type, length in records:
        if done[from_hub]:
            continue
        if content_type == APPLICATION_DATA:
            done[from_hub] = True
            continue
        totals[from_hub] += _RECORD_HEADER + length
    if not (done[False] and done[True]):
        raise ValueError("the handshake did not finish: no application data both ways")
    return totals[False], totals[True]


def measure(hub, state: str, profile: str, mfl: int, binary: str = None) -> dict:
    """One connect through a proxy: {profile, mfl asked, mfl agreed, device_to_hub, hub_to_device}."""
    device_id = "wire-%s-%s-%d" % (hub.tls_mode, profile, mfl)
    app = os.path.join(state, "wire_app.py")
    with open(app, "w") as f:
        f.write(CONNECT_APP)
    with FaultProxy(hub.port) as proxy:
        dev = provision.provision(state, device_id, os.path.join(state, device_id + ".img"), address="127.0.0.1",
                                  port=proxy.port, tls_profile=profile, max_fragment_length=mfl)
        run = device.run(dev.image_path, app, timeout=300, binary=binary)
        records = list(proxy.records)
    line = next((l for l in run.stdout.splitlines() if l.startswith("CONNECTED")), None)
    if run.returncode or line is None:
        raise RuntimeError("the wire-bytes device failed:\n" + run.output)
    _, used, agreed = line.split()
    out, back = handshake_bytes(records)
    return {"hub": hub.tls_mode, "profile": profile, "used": used, "mfl": mfl, "mfl_agreed": int(agreed),
            "device_to_hub": out, "hub_to_device": back}

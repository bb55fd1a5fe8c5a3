"""`make demo`: the whole X.509 telemetry round trip on one machine.

Starts the emulator on a free loopback port, provisions one device
(self-signed ECC P-256 certificate, registered by thumbprint), runs
examples/telemetry.py from that device's flash image under the MicroPython
Unix port, prints what the hub saw, and stops the emulator.
"""

import logging
import os
import shutil

from . import device, paths, provision
from .hub.server import BackgroundHub

DEVICE_ID = "demo-sensor-01"


def main(args) -> int:
    state = os.path.join(paths.BUILD, "demo")
    shutil.rmtree(state, ignore_errors=True)
    logging.basicConfig(level=logging.WARNING)
    device.prepare_unix_lib()
    print("== starting the IoT Hub emulator (TLS 1.2, ECC + RSA server chains)")
    with BackgroundHub(state, port=0) as hub:
        print("   %s on 127.0.0.1:%d" % (hub.hub_host, hub.port))
        image = os.path.join(state, DEVICE_ID + ".img")
        dev = provision.provision(state, DEVICE_ID, image, address="127.0.0.1", port=hub.port,
                                  tls_profile=args.profile)
        print("== provisioned %s: X.509 thumbprint %s..., flash image %s"
              % (DEVICE_ID, dev.identity.thumbprint_sha256[:16], os.path.relpath(image, paths.ROOT)))
        print("== device (MicroPython Unix port) runs examples/telemetry.py")
        run = device.run(image, os.path.join(paths.EXAMPLES, "telemetry.py"), str(args.messages), timeout=120)
        for line in run.output.splitlines():
            print("   device> " + line)
        print("== what the hub saw")
        for c in hub.connections(DEVICE_ID):
            print("   connection: %s %s, %s server certificate, client thumbprint %s..., %s"
                  % (c.tls_version, c.cipher, "ECC" if c.server_key == "ECPublicKey" else "RSA",
                     (c.client_thumbprint or "none")[:16], c.result))
            print("   handshake: %d bytes from device, %d bytes from hub, %.1f ms"
                  % (c.handshake_bytes_in, c.handshake_bytes_out, c.handshake_ms or 0))
        messages = hub.telemetry(DEVICE_ID)
        for m in messages:
            print("   telemetry mid=%s ct=%s ce=%s props=%s body=%s"
                  % (m.system_properties.get("$.mid"), m.system_properties.get("$.ct"),
                     m.system_properties.get("$.ce"), m.properties, m.payload.decode()))
    print("== emulator stopped")
    ok = run.returncode == 0 and len(messages) == args.messages
    print("demo %s: %d of %d messages received" % ("OK" if ok else "FAILED", len(messages), args.messages))
    return 0 if ok else 1

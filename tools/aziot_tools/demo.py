"""`make demo`: the device's whole life with IoT Hub, on one machine.

Starts the emulator on a free loopback port, provisions one device
(self-signed ECC P-256 certificate, registered by thumbprint), runs
examples/telemetry.py from that device's flash image under the MicroPython
Unix port and prints what the hub saw; then runs examples/remote_control.py
and plays the cloud: a direct method call, a desired-property change that
comes back as a reported property, a cloud-to-device message, and a
"reboot" method that ends the app. Stops the emulator.
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
        print("== device (MicroPython Unix port) runs examples/remote_control.py; the cloud steers it")
        steered = _steer(hub, image)
    print("== emulator stopped")
    ok = run.returncode == 0 and len(messages) == args.messages and steered
    print("demo %s: %d of %d messages received, cloud-to-device steps %s"
          % ("OK" if ok else "FAILED", len(messages), args.messages, "all answered" if steered else "FAILED"))
    return 0 if ok else 1


def _steer(hub, image) -> bool:
    """Method, desired property, C2D and reboot against the running example; True if all came back."""
    shown = [0]

    def device_says(dev):
        for line in dev.lines[shown[0]:]:
            print("   device> " + line)
        shown[0] = len(dev.lines)

    with device.LiveDevice(image, os.path.join(paths.EXAMPLES, "remote_control.py")) as dev:
        try:
            dev.expect("connected")
            device_says(dev)
            result = hub.invoke_method(DEVICE_ID, "blink", {"times": 2}, timeout=15)
            print("   cloud: method blink {\"times\": 2} -> status %d %s" % (result.status, result.payload))
            device_says(dev)
            version = hub.update_desired(DEVICE_ID, {"led": "on"})
            print("   cloud: desired led=on (desired version %d)" % version)
            dev.expect("reported led=on")
            device_says(dev)
            reported = hub.get_twin(DEVICE_ID)["properties"]["reported"]
            print("   cloud: twin reported led=%s ($version %d)" % (reported.get("led"), reported["$version"]))
            mid = hub.send_c2d(DEVICE_ID, b"firmware 1.2 available", {"channel": "stable"},
                               message_id="c2d-1", content_type="text/plain")
            print("   cloud: C2D %s sent" % mid)
            dev.expect("C2D message")
            device_says(dev)
            result = hub.invoke_method(DEVICE_ID, "reboot", None, timeout=15)
            print("   cloud: method reboot -> status %d %s" % (result.status, result.payload))
            rc = dev.wait(30)
            device_says(dev)
        except AssertionError as e:
            device_says(dev)
            print("   %s" % str(e).splitlines()[0])
            return False
    return rc == 0 and reported.get("led") == "on" and not hub.c2d_pending(DEVICE_ID)

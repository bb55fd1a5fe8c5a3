"""`make demo`: the device's whole life with IoT Hub, on one machine.

Starts the emulator as a standard hub (what nearly every real hub is: RSA
chain only, no Maximum Fragment Length) on a free loopback port, provisions
one device (self-signed ECC P-256 certificate, registered by thumbprint,
profile auto), runs examples/telemetry.py from that device's flash image
under the MicroPython Unix port and prints what the hub saw; then runs
examples/remote_control.py and plays the cloud: a direct method call, a
desired-property change that comes back as a reported property, a
cloud-to-device message, and a "reboot" method that ends the app. Then the
same identity, provisioned afresh, meets a preview-mode hub of the same
name, where it gets the ECC chain (and MFL, on a firmware with the aziot_tls
hook). Last, a device that knows only the Device Provisioning Service
(emulated beside a hub) is assigned its hub there and sends a reading.
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
    image = os.path.join(state, DEVICE_ID + ".img")
    print("== starting the IoT Hub emulator as a standard hub (TLS 1.2, RSA chain only, MFL ignored)")
    with BackgroundHub(state, port=0) as hub:
        print("   %s on 127.0.0.1:%d" % (hub.hub_host, hub.port))
        dev = provision.provision(state, DEVICE_ID, image, address="127.0.0.1", port=hub.port,
                                  tls_profile=args.profile)
        print("== provisioned %s: X.509 thumbprint %s..., TLS profile %s, flash image %s"
              % (DEVICE_ID, dev.identity.thumbprint_sha256[:16], args.profile, os.path.relpath(image, paths.ROOT)))
        run, messages = _telemetry(hub, image, args.messages)
        print("== device (MicroPython Unix port) runs examples/remote_control.py; the cloud steers it")
        steered = _steer(hub, image)
    print("== the same identity, provisioned afresh for a preview-mode hub of the same name (ECC chain, MFL)")
    with BackgroundHub(state, port=0, tls_mode="preview") as hub:
        print("   %s on 127.0.0.1:%d" % (hub.hub_host, hub.port))
        # Same identity, a new image (the old one remembers RSA for this host name until tls_probe_s).
        provision.provision(state, DEVICE_ID, image, address="127.0.0.1", port=hub.port, register=False,
                            identity=dev.identity, tls_profile=args.profile)
        run_preview, preview_messages = _telemetry(hub, image, 1)
        if "max fragment length none" in run_preview.stdout:
            print("   (no MFL: this Unix port lacks the aziot_tls hook; with `make unix-mfl MPY_DIR=...` and "
                  "MICROPYTHON=build/unix-mfl/micropython the preview hub agrees to 2048)")
    dps_messages = _through_dps(state)
    print("== emulators stopped")
    ok = (run.returncode == 0 and len(messages) == args.messages and steered
          and run_preview.returncode == 0 and len(preview_messages) == 1 and len(dps_messages) == 1)
    print("demo %s: %d of %d messages received on the standard hub, %d of 1 on the preview hub, %d of 1 from "
          "the DPS-provisioned device, cloud-to-device steps %s"
          % ("OK" if ok else "FAILED", len(messages), args.messages, len(preview_messages), len(dps_messages),
             "all answered" if steered else "FAILED"))
    return 0 if ok else 1


def _through_dps(state):
    """A fleet device that knows only DPS: DPS assigns it to the hub, then it sends telemetry there."""
    from .hub.dps import BackgroundDps

    print("== a device that knows only DPS (symmetric key individual enrollment); DPS assigns its hub")
    device_id = "thermo-dps-0001"
    with BackgroundHub(state, port=0) as hub, BackgroundDps(state, [hub], assign_delay_s=1) as dps:
        print("   DPS %s (ID scope %s) on 127.0.0.1:%d, hub on 127.0.0.1:%d" % (
            "global.azure-devices-provisioning.net", dps.id_scope, dps.port, hub.port))
        image = os.path.join(state, device_id + ".img")
        dev = provision.provision(state, device_id, image, auth="sas", register=False, address="127.0.0.1",
                                  port=hub.port, dps_id_scope=dps.id_scope, dps_address="127.0.0.1",
                                  dps_port=dps.port, extra_files={"/azure-iot/roots/dps-rsa-root.der": dps.root_der()})
        dps.enrollments.add_individual(device_id, "symmetric_key", primary_key=dev.sas_key)
        run = device.run(image, os.path.join(paths.EXAMPLES, "telemetry.py"), "1", timeout=120)
        for line in run.output.splitlines():
            print("   device> " + line)
        for r in dps.enrollments.registrations():
            print("   DPS registration %s: %s to %s as %s" % (r["registrationId"], r["status"],
                                                             r.get("assignedHub"), r.get("deviceId")))
        messages = hub.telemetry(device_id)
        for m in messages:
            print("   hub telemetry from %s: %s" % (device_id, m.payload.decode()))
    return messages


def _telemetry(hub, image, count):
    """examples/telemetry.py against hub; prints what the device and the hub saw."""
    print("== device (MicroPython Unix port) runs examples/telemetry.py")
    run = device.run(image, os.path.join(paths.EXAMPLES, "telemetry.py"), str(count), timeout=120)
    for line in run.output.splitlines():
        print("   device> " + line)
    print("== what the hub saw")
    for c in hub.connections():
        if c.result == "tls-failed":
            print("   connection refused in the TLS handshake: %s (the ECDSA-only offer; auto then offers RSA "
                  "and remembers it)" % c.reason)
            continue
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
    return run, messages


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

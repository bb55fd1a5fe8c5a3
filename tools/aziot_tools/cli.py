"""`aziot`: the host-side command line (hub emulator, provisioning, demo)."""

import argparse
import asyncio
import base64
import json
import logging
import os
import subprocess
import sys

from . import paths, pki

DEFAULT_STATE = os.path.join(paths.BUILD, "hub")


def _add_state(p):
    p.add_argument("--state", default=DEFAULT_STATE,
                   help="hub state directory: server chains, registry, telemetry (default: %(default)s)")


def cmd_hub(args):
    from .hub.server import HubEmulator
    from .hub.service_http import ServiceHttp

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    hub = HubEmulator(args.state, listen_host=args.listen, port=args.port, hub_host=args.hub_host,
                      tls_mode=args.mode)

    async def serve():
        await hub.start()
        with ServiceHttp(hub, port=args.service_port) as service:
            print("roots for devices: %s, %s" % (os.path.relpath(hub.identity.root_path("ecc", "der")),
                                                 os.path.relpath(hub.identity.root_path("rsa", "der"))))
            print("service API: %s (used by aziot method / twin / c2d)" % service.url, flush=True)
            try:
                await asyncio.Event().wait()
            finally:
                await hub.stop()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    except OSError as e:  # the port is taken, or the address is not this machine's
        print("aziot hub: cannot listen on %s:%d: %s" % (args.listen, args.port, e.strerror or e), file=sys.stderr)
        return 1
    except RuntimeError as e:  # the standard mode's TLS front could not be built or started
        print("aziot hub: %s" % e, file=sys.stderr)
        return 1
    return 0


def _service(args, method, path, body=None):
    """Call the running emulator's service API (see hub/service_http.py); returns (ok, JSON)."""
    import urllib.error
    import urllib.request
    from .hub.service_http import SERVICE_FILE

    try:
        with open(os.path.join(args.state, SERVICE_FILE)) as f:
            url = json.load(f)["url"]
    except OSError:
        print("no emulator is running for %s: start one with `aziot hub --state %s`" % (args.state, args.state),
              file=sys.stderr)
        return False, None
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return True, json.load(response)
    except urllib.error.HTTPError as e:
        print("error: %s" % json.load(e).get("error"), file=sys.stderr)
    except urllib.error.URLError as e:
        print("cannot reach the emulator's service API at %s: %s" % (url, e.reason), file=sys.stderr)
    return False, None


def _json_arg(text, what):
    try:
        return json.loads(text)
    except ValueError:
        raise SystemExit("%s is not JSON: %r" % (what, text))


def _twin_path(args):
    return "/twins/%s" % args.device_id + ("/modules/%s" % args.module if args.module else "")


def cmd_method(args):
    payload = _json_arg(args.payload, "--payload") if args.payload is not None else None
    ok, result = _service(args, "POST", _twin_path(args) + "/methods",
                          {"methodName": args.name, "payload": payload, "responseTimeoutInSeconds": args.timeout})
    if not ok:
        return 1
    print("status %d: %s" % (result["status"], json.dumps(result["payload"])))
    return 0 if 200 <= result["status"] < 300 else 2


def cmd_twin(args):
    if args.desired is not None:
        patch = _json_arg(args.desired, "--desired")
        ok, twin = _service(args, "PATCH", _twin_path(args), {"properties": {"desired": patch}})
    else:
        ok, twin = _service(args, "GET", _twin_path(args))
    if not ok:
        return 1
    print(json.dumps(twin, indent=2, sort_keys=True))
    return 0


def cmd_c2d(args):
    properties = {}
    for item in args.property or ():
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise SystemExit("--property wants NAME=VALUE, not %r" % item)
        properties[name] = value
    ok, result = _service(args, "POST", "/devices/%s/messages/deviceBound" % args.device_id,
                          {"payload": args.payload, "properties": properties, "messageId": args.message_id,
                           "correlationId": args.correlation_id, "contentType": args.content_type,
                           "contentEncoding": args.content_encoding})
    if not ok:
        return 1
    print("queued C2D message %s for %s" % (result["messageId"], args.device_id))
    return 0


def cmd_telemetry(args):
    path = os.path.join(args.state, "telemetry.jsonl")
    if not os.path.exists(path):
        print("no telemetry stored in %s" % args.state, file=sys.stderr)
        return 1
    with open(path) as f:
        for line in f:
            m = json.loads(line)
            if args.device and m["device_id"] != args.device:
                continue
            payload = base64.b64decode(m["payload_b64"])
            print("%s %s mid=%s props=%s body=%s" % (m["received"], m["device_id"],
                  m["system_properties"].get("$.mid"), json.dumps(m["properties"], sort_keys=True),
                  payload.decode("utf-8", "replace")))
    return 0


def cmd_provision(args):
    from . import field
    from .provision import ProvisionError

    try:
        if args.csv:
            reports, refusals = field.provision_csv(args, args.csv, args.image_dir)
        elif args.device_id is None or not args.image:
            raise ProvisionError("give --device-id and --image, or --csv (with --image-dir)")
        else:
            reports, refusals = [field.provision_one(args, args.device_id, args.image)], []
    except ProvisionError as e:
        if args.json:
            print(json.dumps({"provisioned": [], "refused": [{"line": None, "device_id": args.device_id,
                                                              "reason": str(e)}]}, indent=2))
        print("aziot provision: %s" % e, file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"provisioned": reports, "refused": refusals}, indent=2))
    else:
        for report in reports:
            print(field.report_text(report))
        for r in refusals:
            print("refused, line %d (%s): %s" % (r["line"], r["device_id"] or "no id", r["reason"]))
        if args.csv:
            print("provisioned %d, refused %d" % (len(reports), len(refusals)))
    return 1 if refusals else 0


def cmd_run(args):
    from . import device

    device.prepare_unix_lib()
    # The device's output goes straight to this terminal, as a board's REPL shows it; Ctrl-C stops it.
    proc = subprocess.Popen(device.command(args.image, args.app, heap=args.heap))
    try:
        return proc.wait(args.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        print("aziot run: stopped after --timeout %g s" % args.timeout, file=sys.stderr)
        return 124
    except KeyboardInterrupt:
        proc.kill()
        proc.wait()
        return 130


def cmd_demo(args):
    from . import demo

    return demo.main(args)


def cmd_bench(args):
    from . import bench

    return bench.main(args)


def cmd_install(args):
    from . import install

    return install.install(args.image, args.port, library=not args.no_library, dry_run=args.dry_run)


def cmd_firmware(args):
    from . import firmware

    if args.action == "unix-mfl":
        firmware.build_unix_mfl(args.mpy_dir, args.jobs)
    elif args.action == "build":
        firmware.build_board(args.board, args.mpy_dir, args.jobs)
    elif args.action == "fs":
        if not args.image:
            print("aziot firmware fs: --image names the filesystem image (aziot provision --board %s)" % args.board,
                  file=sys.stderr)
            return 2
        firmware.write_filesystem(args.board, args.image, args.port or None, args.dry_run)
    else:
        firmware.flash(args.board, args.port or None)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="aziot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("hub", help="run the IoT Hub emulator in the foreground",
                       description="Run the local IoT Hub emulator (MQTT over TLS 1.2) until Ctrl-C.")
    _add_state(p)
    p.add_argument("--listen", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8883, help="TCP port (default: %(default)s)")
    p.add_argument("--hub-host", default=pki.DEFAULT_HUB_HOST, help="the hub's host name (default: %(default)s)")
    p.add_argument("--mode", default="standard", choices=("standard", "preview"),
                   help="standard: RSA chain only, Maximum Fragment Length ignored, 16 KB records (nearly "
                        "every real hub); preview: ECC chain for ECDSA-only offers, MFL honoured "
                        "(default: %(default)s)")
    p.add_argument("--service-port", type=int, default=0,
                   help="loopback port of the service API for method/twin/c2d (default: any free port)")
    p.set_defaults(func=cmd_hub)

    from . import dpscli

    dpscli.add_parser(sub, _add_state)

    p = sub.add_parser("method", help="invoke a direct method on a connected device",
                       description="Call a direct method through the running emulator and print the "
                                   "device's status and JSON answer (exit 2 for a non-2xx status).")
    _add_state(p)
    p.add_argument("device_id")
    p.add_argument("name", help="method name")
    p.add_argument("--payload", help="JSON payload, e.g. '{\"times\": 3}'")
    p.add_argument("--module", help="module id, for a module identity")
    p.add_argument("--timeout", type=float, default=30, help="seconds to wait for the answer (default: %(default)s)")
    p.set_defaults(func=cmd_method)

    p = sub.add_parser("twin", help="show a device twin, or patch its desired properties",
                       description="Print the twin (desired and reported, with $version and $metadata); "
                                   "with --desired, patch the desired properties first (null deletes a key).")
    _add_state(p)
    p.add_argument("device_id")
    p.add_argument("--desired", help="JSON patch of desired properties, e.g. '{\"led\": \"on\"}'")
    p.add_argument("--module", help="module id, for a module identity")
    p.set_defaults(func=cmd_twin)

    p = sub.add_parser("c2d", help="send a cloud-to-device message",
                       description="Queue a cloud-to-device message; the emulator delivers it at QoS 1 "
                                   "and keeps it until the device acknowledges it.")
    _add_state(p)
    p.add_argument("device_id")
    p.add_argument("payload")
    p.add_argument("--property", action="append", metavar="NAME=VALUE", help="application property (repeatable)")
    p.add_argument("--message-id")
    p.add_argument("--correlation-id")
    p.add_argument("--content-type")
    p.add_argument("--content-encoding")
    p.set_defaults(func=cmd_c2d)

    p = sub.add_parser("telemetry", help="print the telemetry a hub stored",
                       description="Print the device-to-cloud messages stored in a hub state directory.")
    _add_state(p)
    p.add_argument("--device", help="only this device id")
    p.set_defaults(func=cmd_telemetry)

    p = sub.add_parser("provision", help="make a device identity, register it, write its flash image",
                       description="Create an ECC P-256 device identity, register it with the hub "
                                   "emulator's registry and write the device's littlefs image.")
    _add_state(p)
    p.add_argument("--device-id", help="the device id (IoT Hub's rules: 1-128 letters, digits, - . %% _ * ? ! ( ) , : = @ $ ')")
    p.add_argument("--image", help="output littlefs image path")
    p.add_argument("--csv", help="provision every device_id (optional auth column) of this CSV file instead")
    p.add_argument("--image-dir", default="build/images", help="with --csv: where the images go (default: %(default)s)")
    p.add_argument("--days", type=int, default=365, help="device certificate validity (default: %(default)s)")
    p.add_argument("--ca-cert", help="x509_ca: your fleet CA certificate (PEM) instead of the state's own")
    p.add_argument("--ca-key", help="x509_ca: that CA's private key (PEM)")
    p.add_argument("--force", action="store_true",
                   help="replace a device's existing identity (its registration then no longer matches)")
    p.add_argument("--json", action="store_true", help="print a JSON report instead of text")
    p.add_argument("--wifi-ssid", help="put /azure-iot/wifi.json in the image for aziot.wifi.online()")
    p.add_argument("--wifi-password-file", help="a file holding the Wi-Fi password (never on the command line)")
    p.add_argument("--board", choices=("RPI_PICO_W", "ESP32_GENERIC"),
                   help="make the image exactly that board's filesystem (boards/<board>/flash.json), to write "
                        "with `aziot firmware fs`; default: a 256 KB image for the Unix port")
    p.add_argument("--auth", default="x509_thumbprint", choices=("x509_thumbprint", "x509_ca", "sas"),
                   help="x509_thumbprint (self-signed ECC P-256), x509_ca (signed by the fleet CA), "
                        "or sas (a random device key in /azure-iot/sas.key) (default: %(default)s)")
    p.add_argument("--profile", default="auto", choices=("auto", "ecc", "rsa", "ecc+rsa", "compat"),
                   help="TLS cipher profile: auto offers ECC, falls back to RSA on a standard hub and "
                        "remembers which worked (default: %(default)s)")
    p.add_argument("--hub-host", default=pki.DEFAULT_HUB_HOST,
                   help="the hub's host name (default: %(default)s, the emulator)")
    p.add_argument("--roots", default="emulator", choices=("emulator", "azure"),
                   help="trust the emulator's roots (and register with it), or the real hub's "
                        "DigiCert G2/G3 and Microsoft RSA/ECC 2017 roots (default: %(default)s)")
    p.add_argument("--address", help="address the device dials, when not the hub host name")
    p.add_argument("--port", type=int, help="port the device dials (default 8883)")
    p.add_argument("--main", help="device app to store as /main.py")
    p.add_argument("--dps-id-scope", help="provision through DPS with this ID scope: enroll the device there "
                                          "(the emulated DPS, or print the az command) instead of registering it")
    p.add_argument("--dps-address", help="address the device dials for DPS, when not its host name")
    p.add_argument("--dps-port", type=int, help="port the device dials for DPS (default 8883)")
    p.add_argument("--dps-group", help="the device belongs to this DPS enrollment group (sas: its key is derived "
                                       "here from the group key; x509_ca: the group holds the fleet CA)")
    p.add_argument("--dps-group-key-file", help="sas with --dps-group on a real DPS: the group's primary key, "
                                                "in a file (never on the command line)")
    p.set_defaults(func=cmd_provision)

    p = sub.add_parser("run", help="run a device image under the MicroPython Unix port",
                       description="Mount a flash image as a board's filesystem under the Unix port "
                                   "and run APP (or the image's /main.py).")
    p.add_argument("image")
    p.add_argument("app", nargs="?")
    p.add_argument("--timeout", type=float, default=None, help="stop the app after this many seconds "
                                                                   "(default: run until it ends, or Ctrl-C)")
    p.add_argument("--heap", help="MicroPython heap size, e.g. 160K, to mimic a board")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="emulator + one device: telemetry, method, twin, C2D, end to end",
                       description="Start the emulator, provision a device, run examples/telemetry.py "
                                   "under the Unix port and print what the hub saw; then run "
                                   "examples/remote_control.py and call a method, change a desired "
                                   "property, send a C2D message; stop everything.")
    p.add_argument("--messages", type=int, default=3)
    p.add_argument("--profile", default="auto", choices=("auto", "ecc", "rsa", "ecc+rsa"))
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("install", help="copy a device's files and the library (.mpy) to a board with mpremote",
                       description="Copy the library compiled to .mpy (checked against the board's .mpy "
                                   "version), umqtt.simple, and every file of a device image made by `aziot "
                                   "provision` (config, certificates, roots, main.py) to a board over its "
                                   "serial port with mpremote; each file is read back and its SHA-256 compared.")
    p.add_argument("image", help="the device's flash image (aziot provision --image)")
    p.add_argument("--port", required=True, help="the board's serial port, e.g. /dev/ttyACM0 (Pico W), /dev/ttyUSB0")
    p.add_argument("--no-library", action="store_true", help="only the device's files (the firmware has the "
                                                              "library frozen in)")
    p.add_argument("--dry-run", action="store_true", help="print the mpremote commands, change nothing")
    p.set_defaults(func=cmd_install)

    p = sub.add_parser("firmware", help="build firmware against a MicroPython checkout, or flash it",
                       description="unix-mfl: the Unix port with the aziot_tls hook, once per variant in "
                                   "boards/unix/aziot_tls.json, into build/unix-mfl/. build: the firmware of a "
                                   "board folder in boards/. flash: write it with esptool (ESP32), by copying "
                                   "the UF2 to the RPI-RP2 drive, or with picotool (Pico W). fs: write a "
                                   "filesystem image made with `aziot provision --board` to where the port "
                                   "keeps its filesystem (esptool, or picotool with the Pico in BOOTSEL).")
    p.add_argument("action", choices=("unix-mfl", "build", "flash", "fs"))
    p.add_argument("--image", help="fs: the filesystem image")
    p.add_argument("--dry-run", action="store_true", help="fs: print the command, write nothing")
    p.add_argument("--mpy-dir", default=os.environ.get("MPY_DIR", ""),
                   help="MicroPython checkout with the submodules its port needs (default: $MPY_DIR)")
    p.add_argument("--board", default="RPI_PICO_W", choices=("RPI_PICO_W", "ESP32_GENERIC"))
    p.add_argument("--port", help="flash, fs: the serial port (ESP32); flash: or the RPI-RP2 drive's folder (Pico W)")
    p.add_argument("--jobs", type=int, default=2, help="parallel compile jobs (default: %(default)s)")
    p.set_defaults(func=cmd_firmware)

    p = sub.add_parser("bench", help="what a connection costs (instructions, bytes, heap), QoS 1 beside the SDK, sizes",
                       description="Measure connect time, instructions per connect, TLS handshake bytes "
                                   "(loopback proxy), heap per connection, QoS 1 throughput and CPU beside "
                                   "the official SDK, library size, direct-method and twin-report round "
                                   "trips; writes build/bench/bench.json and bench.png.")
    p.add_argument("--runs", type=int, default=10, help="connections per profile (default: %(default)s)")
    p.add_argument("--messages", type=int, default=200, help="QoS 1 messages timed (default: %(default)s)")
    p.add_argument("--size", type=int, default=128, help="payload bytes (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3,
                   help="alternating rounds of the SDK comparison (default: %(default)s)")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

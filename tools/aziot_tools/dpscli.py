"""`aziot dps`: run the emulated Device Provisioning Service beside a hub, and manage its enrollments.

The enrollments live in <state>/dps/enrollments.json; the running emulator reads them at each login,
so `aziot dps enroll` takes effect at once. Generated symmetric keys go to <state>/dps/keys/ (owner
only) and are never printed.
"""

import asyncio
import base64
import logging
import os
import sys

from . import pki

KEY_DIR = "keys"


def add_parser(sub, add_state):
    p = sub.add_parser("dps", help="run the emulated DPS (with a hub), and manage its enrollments",
                       description="The Device Provisioning Service emulator: `serve` runs it with a hub "
                                   "until Ctrl-C; the other commands edit its enrollments.")
    verbs = p.add_subparsers(dest="verb", required=True)

    v = verbs.add_parser("serve", help="run a hub and a DPS that assigns devices to it, until Ctrl-C")
    add_state(v)
    v.add_argument("--listen", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    v.add_argument("--port", type=int, default=8884, help="DPS TCP port (default: %(default)s)")
    v.add_argument("--hub-port", type=int, default=8883, help="the hub's TCP port (default: %(default)s)")
    v.add_argument("--hub-host", default=pki.DEFAULT_HUB_HOST, help="the hub's host name (default: %(default)s)")
    v.add_argument("--id-scope", default=None, help="the ID scope (default: the emulator's, %s)" % _scope())
    v.add_argument("--delay", type=int, default=2,
                   help="seconds an assignment takes: each 202's retry-after (default: %(default)s)")

    for name, group in (("enroll", False), ("enroll-group", True)):
        v = verbs.add_parser(name, help="create %s enrollment" % ("a group" if group else "an individual"))
        add_state(v)
        v.add_argument("id", help="the %s" % ("group's enrollment id" if group else "registration id"))
        kind = v.add_mutually_exclusive_group(required=True)
        kind.add_argument("--symmetric-key", action="store_true",
                          help="a generated %skey, written to <state>/dps/keys/%s-<id>.key (owner only)"
                          % ("group " if group else "", "group" if group else "individual"))
        if group:
            kind.add_argument("--x509-ca", metavar="CA_PEM", help="devices whose chain leads to this CA or intermediate")
        else:
            kind.add_argument("--x509", metavar="CERT_PEM", help="the device's certificate (its CN is the id)")
            v.add_argument("--device-id", help="the device id in the hub (default: the registration id)")
        v.add_argument("--hub", action="append", default=[], help="allocate among these linked hubs (repeat)")
        v.add_argument("--static", action="store_true", help="static allocation to the one --hub")
        v.add_argument("--disabled", action="store_true", help="create it disabled")
        v.add_argument("--reprovision", default="reprovisionandmigratedata",
                       choices=("reprovisionandmigratedata", "reprovisionandresetdata", "never"),
                       help="when a registered device registers again: move it by the allocation policy and take "
                            "its desired properties along, move it with the enrollment's initial twin, or keep it "
                            "where it is (default: %(default)s)")
        v.add_argument("--force", action="store_true", help="replace an enrollment of that id (and its key)")
        v.add_argument("--desired", help="initial desired properties, JSON")

    for name in ("disable", "enable"):
        v = verbs.add_parser(name, help="%s an enrollment" % name)
        add_state(v)
        v.add_argument("id")
        v.add_argument("--group", action="store_true", help="a group enrollment")

    v = verbs.add_parser("list", help="list enrollments")
    add_state(v)
    v = verbs.add_parser("registrations", help="show what DPS assigned")
    add_state(v)
    p.set_defaults(func=main)


def _scope():
    from .hub.dps import DEFAULT_ID_SCOPE

    return DEFAULT_ID_SCOPE


def _enrollments(state):
    from .hub.dps import Enrollments

    folder = os.path.join(state, "dps")
    pki.private_dir(folder)
    return Enrollments(os.path.join(folder, "enrollments.json"))


def _check_id(enrollment_id, what="id"):
    """Registration and enrollment ids: up to 128 letters, digits and - . _ :, ending in a letter, a
    digit or - (DPS REST API, Runtime Registration); never a path."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9._:-]{0,127}[A-Za-z0-9-]", enrollment_id):
        raise ValueError("%s %r: use 1 to 128 letters, digits and - . _ :, ending in a letter, a digit or -"
                         % (what, enrollment_id))


def key_path(state, enrollment_id, group):
    """Where a generated symmetric key is kept: one file per enrollment, groups and individuals apart."""
    return os.path.join(state, "dps", KEY_DIR, "%s-%s.key" % ("group" if group else "individual", enrollment_id.lower()))


def _new_key(state, enrollment_id, group):
    path = key_path(state, enrollment_id, group)
    pki.private_dir(os.path.dirname(path))
    key = base64.b64encode(os.urandom(32)).decode()
    pki.write_private(path, (key + "\n").encode())
    return key, path


def main(args):
    import json

    from .provision import ProvisionError

    if args.verb == "serve":
        return _serve(args)
    enrollments = _enrollments(args.state)
    try:
        if args.verb in ("enroll", "enroll-group"):
            from .hub.dps import _check_allocation

            group = args.verb == "enroll-group"
            _check_id(args.id)
            if getattr(args, "device_id", None):
                from .provision import check_id

                check_id(args.device_id, x509=False)
            desired = json.loads(args.desired) if args.desired else None
            if desired is not None and not isinstance(desired, dict):
                raise ValueError("--desired must be a JSON object")
            twin = {"properties": {"desired": desired}} if desired else None
            options = dict(hubs=args.hub, allocation="static" if args.static else "hashed",
                           enabled=not args.disabled, initial_twin=twin, reprovision=args.reprovision)
            _check_allocation(options["allocation"], args.hub, args.reprovision)
            known = [g["groupId"] for g in enrollments.groups()] if group else [
                e["registrationId"] for e in enrollments.list_individual()]
            if args.id.lower() in (k.lower() for k in known) and not args.force:
                raise ValueError("%s enrollment %s exists: --force replaces it (and a symmetric key with it: devices "
                                 "that hold the old one are then refused)" % ("group" if group else "individual", args.id))
            kept = None
            if args.symmetric_key:
                key, kept = _new_key(args.state, args.id, group)
                options["primary_key"] = key
            if group:
                if args.x509_ca:
                    with open(args.x509_ca, "rb") as f:
                        options["ca_cert_pem"] = f.read()
                enrollments.add_group(args.id, "symmetric_key" if args.symmetric_key else "x509", **options)
            else:
                if args.x509:
                    from cryptography import x509
                    from cryptography.hazmat.primitives.serialization import Encoding

                    with open(args.x509, "rb") as f:
                        cert = x509.load_pem_x509_certificate(f.read())
                    options["thumbprint"] = pki.thumbprint(cert.public_bytes(Encoding.DER))
                enrollments.add_individual(args.id, "symmetric_key" if args.symmetric_key else "x509",
                                           device_id=args.device_id or "", **options)
            print("%s enrollment %s: %s%s" % ("group" if group else "individual", args.id,
                                              "symmetric key in %s (never printed)" % os.path.relpath(kept)
                                              if kept else "X.509", ", disabled" if args.disabled else ""))
        elif args.verb in ("disable", "enable"):
            enrollments.set_enabled(args.id, args.verb == "enable", group=args.group)
            print("%s enrollment %s %sd" % ("group" if args.group else "individual", args.id, args.verb))
        elif args.verb == "list":
            for e in enrollments.list_individual():
                print("individual %-28s %-13s %-8s hubs %s" % (e["registrationId"], e["attestation"],
                                                               "enabled" if e["enabled"] else "disabled",
                                                               ",".join(e.get("hubs") or ["(all)"])))
            for g in enrollments.groups():
                print("group      %-28s %-13s %-8s hubs %s" % (g["groupId"], g["attestation"],
                                                               "enabled" if g["enabled"] else "disabled",
                                                               ",".join(g.get("hubs") or ["(all)"])))
        else:
            for r in enrollments.registrations():
                print("%-28s %-9s %s %s" % (r["registrationId"], r["status"], r.get("assignedHub", "-"),
                                            r.get("deviceId", r.get("errorMessage", ""))))
    except (ValueError, KeyError, OSError, ProvisionError) as e:
        print("aziot dps: %s" % (e.args[0] if isinstance(e, KeyError) else e), file=sys.stderr)
        return 2
    return 0


def _serve(args):
    from .hub.dps import DpsEmulator
    from .hub.server import HubEmulator

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    hub = HubEmulator(args.state, listen_host=args.listen, port=args.hub_port, hub_host=args.hub_host)
    dps = DpsEmulator(args.state, [hub], id_scope=args.id_scope or _scope(), listen_host=args.listen,
                      port=args.port, assign_delay_s=args.delay)

    async def serve():
        from .hub.service_http import ServiceHttp

        await hub.start()
        try:
            await dps.start()
            with ServiceHttp(hub, port=0):  # for aziot method / twin / c2d / telemetry
                print("DPS root for devices: %s" % os.path.relpath(dps.identity.root_path("rsa", "der")))
                print("ID scope %s; DPS on %s:%d; hub %s on %s:%d" % (dps.id_scope, args.listen, dps.port,
                                                                      hub.hub_host, args.listen, hub.port), flush=True)
                await asyncio.Event().wait()
        finally:
            await dps.stop()
            await hub.stop()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    except OSError as e:
        print("aziot dps: cannot listen on %s: %s" % (args.listen, e.strerror or e), file=sys.stderr)
        return 1
    return 0

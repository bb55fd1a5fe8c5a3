"""`aziot provision`: one device, or a fleet from a CSV file, for the emulator or a real hub.

Each device gets its identity (or SAS key), its flash image, its files kept
beside the state directory (keys owner-only), and the registration steps:
done locally for the emulator, printed as `az` commands for a real hub.
A report (a dict) says what was done; the CLI prints it as text or JSON.
"""

import base64
import csv
import json
import os
import shlex

from . import provision
from .hub.dps import Enrollments, derived_key
from .hub.server import ServerIdentity


def provision_one(opts, device_id: str, image: str, auth: str = None) -> dict:
    """opts: the CLI's options (state, hub_host, roots, profile, address, port, main, days, force, ca_cert,
    ca_key). Raises provision.ProvisionError for what the user must change."""
    auth = auth or opts.auth
    if auth not in ("x509_thumbprint", "x509_ca", "sas"):
        raise provision.ProvisionError("auth %r is not x509_thumbprint, x509_ca or sas" % auth)
    provision.check_id(device_id, x509=auth != "sas")
    if getattr(opts, "wifi_password_file", None) and not getattr(opts, "wifi_ssid", None):
        raise provision.ProvisionError("--wifi-password-file needs --wifi-ssid")
    if not 1 <= opts.days <= 36500:
        raise provision.ProvisionError("--days must be 1 to 36500, not %d" % opts.days)
    folder = os.path.join(opts.state, "devices")
    kept = [os.path.join(folder, device_id + suffix) for suffix in (".pem", "-key.pem", ".sas-key")]
    if not opts.force and any(os.path.exists(p) for p in kept):
        # Its thumbprint or key is registered somewhere: a new one would lock the device out.
        raise provision.ProvisionError("device %s already has an identity in %s: a new one would no longer "
                                       "match its registration; use --force to replace it" % (device_id, folder))
    to_emulator = opts.roots == "emulator"
    if to_emulator:
        ServerIdentity(opts.state, opts.hub_host)  # the roots the device must trust
    ca, ca_name = None, provision.FLEET_CA_NAME
    if auth == "x509_ca":
        ca = provision.fleet_ca(opts.state, opts.ca_cert, opts.ca_key)
        if opts.ca_cert:  # one name per CA, so that it sits beside the state's own and any other
            ca_name = "fleet-ca-" + ca.thumbprint_sha256[:12].lower()
            if to_emulator:
                from .hub.registry import Registry

                Registry(os.path.join(opts.state, "registry.json")).add_ca(ca_name, ca.cert_pem)
    extra = {}
    if getattr(opts, "wifi_ssid", None):
        extra["/azure-iot/wifi.json"] = wifi_settings(opts.wifi_ssid, opts.wifi_password_file)
    main_py = None
    if opts.main:
        with open(opts.main, "rb") as f:
            main_py = f.read()
    overrides = {"tls_profile": opts.profile}
    if opts.address:
        overrides["address"] = opts.address
    if opts.port:
        overrides["port"] = opts.port
    dps_scope = getattr(opts, "dps_id_scope", None)
    dps_group = getattr(opts, "dps_group", None)
    group_key = None
    if dps_group and not dps_scope:
        raise provision.ProvisionError("--dps-group needs --dps-id-scope")
    if dps_scope:  # DPS tells the device its hub and creates it there: no hub registration here
        if auth == "x509_ca" and not dps_group:
            raise provision.ProvisionError("x509_ca devices provision through a DPS group: give --dps-group")
        if dps_group and to_emulator and not any(
                g["groupId"].lower() == dps_group.lower()
                for g in Enrollments(os.path.join(opts.state, "dps", "enrollments.json")).groups()):
            raise provision.ProvisionError("the emulated DPS has no group %r: aziot dps enroll-group %s ... first"
                                           % (dps_group, dps_group))
        if dps_group and auth == "sas":
            group_key = _group_key(opts, dps_group, to_emulator)
        overrides["dps_id_scope"] = dps_scope
        if getattr(opts, "dps_address", None):
            overrides["dps_address"] = opts.dps_address
        if getattr(opts, "dps_port", None):
            overrides["dps_port"] = opts.dps_port
        if to_emulator:
            from .hub.dps import DPS_HOST

            extra["/azure-iot/roots/dps-rsa-root.der"] = ServerIdentity(
                os.path.join(opts.state, "dps"), DPS_HOST).read("rsa-root.der")
    dev = provision.provision(opts.state, device_id, image, auth=auth, hub_host=opts.hub_host, roots=opts.roots,
                              register=to_emulator and not dps_scope, main_py=main_py, ca=ca, days=opts.days,
                              board=getattr(opts, "board", None), extra_files=extra,
                              sas_key=derived_key(group_key, device_id) if group_key else None, **overrides)
    report = {"device_id": device_id, "auth": auth, "image": image,
              "wifi": {"ssid": opts.wifi_ssid, "password": bool(opts.wifi_password_file)}
              if getattr(opts, "wifi_ssid", None) else None,
              "files": {path: len(data) for path, data in sorted(dev.files.items())},
              "registered_with_emulator": opts.state if to_emulator else None, "register": []}
    hub_name = opts.hub_host.split(".")[0]
    if dps_scope:
        return _dps_report(opts, report, dev, folder, device_id, to_emulator)
    if dev.sas_key:
        report["sas_key_file"] = provision.write_sas_key(dev.sas_key, folder, device_id)
        report["register"].append(
            "az iot hub device-identity create --hub-name %s --device-id %s --auth-method shared_private_key "
            "--primary-key \"$(cat %s)\"" % (q(hub_name), q(device_id), q(os.path.relpath(report["sas_key_file"]))))
        return report
    provision.write_identity(dev.identity, folder, device_id)
    report.update(thumbprint_sha256=dev.identity.thumbprint_sha256, thumbprint_sha1=dev.identity.thumbprint_sha1,
                  certificate=kept[0], key=kept[1],
                  not_after=dev.identity.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"))
    if auth == "x509_thumbprint":
        report["register"].append(
            "az iot hub device-identity create --hub-name %s --device-id %s --auth-method x509_thumbprint "
            "--primary-thumbprint %s" % (q(hub_name), q(device_id), dev.identity.thumbprint_sha256))
    else:
        ca_pem = opts.ca_cert or os.path.join(opts.state, "pki", "device-ca.pem")
        report["ca_certificate"] = ca_pem
        # Once per hub: upload the CA as verified (or verify it by proof of possession in the portal).
        report["register"].append(
            "az iot hub certificate create --hub-name %s --name %s --path %s --verified"
            % (q(hub_name), ca_name, q(os.path.relpath(ca_pem))))
        report["register"].append(
            "az iot hub device-identity create --hub-name %s --device-id %s --auth-method x509_ca"
            % (q(hub_name), q(device_id)))
    return report


def _group_key(opts, group, to_emulator):
    """The symmetric key group's key, read on the host: only the derived device key goes on flash."""
    from .dpscli import key_path

    path = getattr(opts, "dps_group_key_file", None) or (key_path(opts.state, group, True) if to_emulator else None)
    if not path:
        raise provision.ProvisionError("--dps-group with sas needs --dps-group-key-file (the group's primary key, "
                                       "from az iot dps enrollment-group show --show-keys)")
    try:
        with open(path) as f:
            key = f.read().strip()
        base64.b64decode(key, validate=True)
    except OSError as e:
        raise provision.ProvisionError("cannot read the group key %s: %s" % (path, e.strerror or e))
    except ValueError:
        raise provision.ProvisionError("the group key in %s is not base64" % path)
    return key


def _dps_report(opts, report, dev, folder, device_id, to_emulator):
    """Enroll the device individually with the emulated DPS (or, in a group, nothing to do), or print
    how to with a real one."""
    report["dps_id_scope"] = opts.dps_id_scope
    report["registered_with_emulator"] = None
    group = getattr(opts, "dps_group", None)
    enrollments = Enrollments(os.path.join(opts.state, "dps", "enrollments.json")) if to_emulator else None
    dps = "--dps-name \"$DPS\" --resource-group \"$RG\" --enrollment-id %s" % q(group or device_id)
    if group:
        report["dps_group"] = group
        if dev.sas_key:
            report["sas_key_file"] = provision.write_sas_key(dev.sas_key, folder, device_id)
            report["register"].append("az iot dps enrollment-group create %s" % dps)
            report["register"].append("az iot dps enrollment-group compute-device-key %s --registration-id %s"
                                      "   # the device key this image holds (derived here from the group key)"
                                      % (dps, q(device_id)))
        else:
            provision.write_identity(dev.identity, folder, device_id)
            ca_pem = opts.ca_cert or os.path.join(opts.state, "pki", "device-ca.pem")
            report.update(thumbprint_sha256=dev.identity.thumbprint_sha256, certificate=os.path.join(
                folder, device_id + ".pem"), key=os.path.join(folder, device_id + "-key.pem"), ca_certificate=ca_pem,
                not_after=dev.identity.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"))
            report["register"].append("az iot dps certificate create --dps-name \"$DPS\" --resource-group \"$RG\" "
                                      "--certificate-name fleet-ca --path %s --verified" % q(os.path.relpath(ca_pem)))
            report["register"].append("az iot dps enrollment-group create %s --ca-name fleet-ca" % dps)
        report["enrolled_with_emulator"] = os.path.join(opts.state, "dps") if to_emulator else None
        return report
    if dev.sas_key:
        report["sas_key_file"] = provision.write_sas_key(dev.sas_key, folder, device_id)
        if enrollments:
            enrollments.add_individual(device_id, "symmetric_key", primary_key=dev.sas_key)
        report["register"].append("az iot dps enrollment create %s --attestation-type symmetrickey "
                                  "--primary-key \"$(cat %s)\"" % (dps, q(os.path.relpath(report["sas_key_file"]))))
    else:
        provision.write_identity(dev.identity, folder, device_id)
        report.update(thumbprint_sha256=dev.identity.thumbprint_sha256, certificate=os.path.join(folder, device_id + ".pem"),
                      key=os.path.join(folder, device_id + "-key.pem"),
                      not_after=dev.identity.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"))
        if enrollments:
            enrollments.add_individual(device_id, "x509", thumbprint=dev.identity.thumbprint_sha256)
        report["register"].append("az iot dps enrollment create %s --attestation-type x509 --certificate-path %s"
                                  % (dps, q(os.path.relpath(report["certificate"]))))
    report["enrolled_with_emulator"] = os.path.join(opts.state, "dps") if to_emulator else None
    return report


def wifi_settings(ssid: str, password_file: str = None) -> bytes:
    """/azure-iot/wifi.json for aziot.wifi.online(); the password is read from a file, never typed or shown."""
    password = ""
    if password_file:
        try:
            with open(password_file, "rb") as f:
                password = f.read(256).decode("utf-8").rstrip("\r\n")
        except OSError as e:
            raise provision.ProvisionError("cannot read the Wi-Fi password file %s: %s"
                                           % (password_file, e.strerror or e))
        except UnicodeError:
            raise provision.ProvisionError("the Wi-Fi password file %s is not UTF-8 text" % password_file)
    return json.dumps({"ssid": ssid, "password": password}).encode()


def q(text: str) -> str:
    """Quoted for the shell the printed commands are pasted into (ids may hold $ ( ) ' …)."""
    return shlex.quote(text)


def report_text(report: dict) -> str:
    lines = []
    if "sas_key_file" in report:
        lines.append("device %s: sas, primary key in %s (never printed)"
                     % (report["device_id"], os.path.relpath(report["sas_key_file"])))
    else:
        lines.append("device %s: %s, thumbprint SHA-256 %s, valid until %s"
                     % (report["device_id"], report["auth"], report["thumbprint_sha256"], report["not_after"]))
        lines.append("identity: %s (certificate), %s (private key, owner only)"
                     % (os.path.relpath(report["certificate"]), os.path.relpath(report["key"])))
    lines.append("flash image: %s" % report["image"])
    if report.get("wifi"):
        lines.append("Wi-Fi: %r, %s" % (report["wifi"]["ssid"], "password from the file (not shown)"
                                        if report["wifi"]["password"] else "no password: an open network"))
    for path, size in report["files"].items():
        lines.append("  %-44s %6d bytes" % (path, size))
    if report.get("enrolled_with_emulator"):
        lines.append("enrolled with the emulated DPS in %s (ID scope %s): it assigns the hub at the first boot"
                     % (os.path.relpath(report["enrolled_with_emulator"]), report["dps_id_scope"]))
    elif report.get("dps_id_scope"):
        lines.append("enroll it with your DPS (ID scope %s; set DPS and RG first):" % report["dps_id_scope"])
        lines.extend("  " + command for command in report["register"])
    elif report["registered_with_emulator"]:
        lines.append("registered with the emulator in %s" % os.path.relpath(report["registered_with_emulator"]))
    else:
        lines.append("register it on the hub%s:" % (" (the key is read from the file, not typed)"
                                                    if "sas_key_file" in report else ""))
        lines.extend("  " + command for command in report["register"])
    return "\n".join(lines)


def provision_csv(opts, csv_path: str, image_dir: str):
    """One device per row (`device_id` and optional `auth` columns); returns (reports, refusals)."""
    reports, refusals, seen = [], [], {}
    try:  # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeError, csv.Error) as e:
        raise provision.ProvisionError("cannot read %s: %s" % (csv_path, getattr(e, "strerror", None) or e))
    if "device_id" not in (reader.fieldnames or []):
        raise provision.ProvisionError("%s needs a header row with a device_id column" % csv_path)
    for n, row in rows:
        device_id = (row.get("device_id") or "").strip()
        try:
            if device_id in seen:
                raise provision.ProvisionError("device %s is on line %d already" % (device_id, seen[device_id]))
            seen[device_id] = n
            provision.check_id(device_id)
            image = os.path.join(image_dir, device_id + ".img")
            reports.append(provision_one(opts, device_id, image, (row.get("auth") or "").strip() or None))
        except provision.ProvisionError as e:
            refusals.append({"line": n, "device_id": device_id, "reason": str(e)})
    return reports, refusals

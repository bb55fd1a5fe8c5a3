"""`aziot provision` for fleets: ids, overwrites, CA brought by the user, validity, JSON, CSV batches."""

import datetime
import json
import subprocess
import sys

from cryptography import x509

from aziot_tools import flashimage, pki
from devicecode import CONNECT_AND_SEND, outcome


def aziot(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "aziot_tools.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_an_id_iot_hub_would_refuse_is_refused_before_anything_is_written(tmp_path):
    for bad in ("bad id/../x", "x" * 129, "caf\u00e9", ""):
        proc = aziot("provision", "--state", str(tmp_path / "s"), "--device-id", bad, "--image", str(tmp_path / "d.img"))
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "is not one IoT Hub accepts" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "d.img").exists() and not (tmp_path / "s").exists()
    ok = aziot("provision", "--state", str(tmp_path / "s"), "--device-id", "line-7:unit(3)@plant.a",
               "--image", str(tmp_path / "ok.img"))
    assert ok.returncode == 0, ok.stderr


def test_an_existing_identity_is_kept_unless_forced(tmp_path):
    state, image = str(tmp_path / "s"), str(tmp_path / "d.img")
    first = json.loads(aziot("provision", "--state", state, "--device-id", "d1", "--image", image, "--json").stdout)
    again = aziot("provision", "--state", state, "--device-id", "d1", "--image", image)
    assert again.returncode == 2
    assert "device d1 already has an identity in" in again.stderr and "--force" in again.stderr
    forced = json.loads(aziot("provision", "--state", state, "--device-id", "d1", "--image", image, "--force",
                              "--json").stdout)
    before = first["provisioned"][0]["thumbprint_sha256"]
    after = forced["provisioned"][0]["thumbprint_sha256"]
    assert before != after
    # The image and the files beside the state hold the new identity.
    der = flashimage.read_image(open(image, "rb").read())["/azure-iot/device.der"]
    assert pki.Identity(x509.load_der_x509_certificate(der), None).thumbprint_sha256 == after


def test_json_report_and_validity_days(tmp_path):
    proc = aziot("provision", "--state", str(tmp_path / "s"), "--device-id", "d30", "--image",
                 str(tmp_path / "d.img"), "--days", "30", "--roots", "azure", "--hub-host",
                 "contoso-iot.azure-devices.net", "--json")
    assert proc.returncode == 0, proc.stderr
    (report,) = json.loads(proc.stdout)["provisioned"]
    assert report["auth"] == "x509_thumbprint" and report["registered_with_emulator"] is None
    not_after = datetime.datetime.strptime(report["not_after"], "%Y-%m-%dT%H:%M:%SZ")
    days = (not_after - datetime.datetime.utcnow()).days
    assert 28 <= days <= 30, days
    assert report["register"] == ["az iot hub device-identity create --hub-name contoso-iot --device-id d30 "
                                  "--auth-method x509_thumbprint --primary-thumbprint " + report["thumbprint_sha256"]]
    assert report["key"].endswith("devices/d30-key.pem") and report["certificate"].endswith("devices/d30.pem")


def test_a_fleet_ca_brought_by_the_user_signs_devices_that_connect(hub, hub_state, tmp_path, run_device):
    ca = pki.make_device_ca("Contoso fleet CA")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "ca-key.pem").write_bytes(ca.key_pem)
    image = tmp_path / "d.img"
    proc = aziot("provision", "--state", hub_state, "--device-id", "fleet-1", "--image", str(image),
                 "--auth", "x509_ca", "--ca-cert", str(tmp_path / "ca.pem"), "--ca-key", str(tmp_path / "ca-key.pem"),
                 "--address", "127.0.0.1", "--port", str(hub.port), "--json")
    assert proc.returncode == 0, proc.stderr
    der = flashimage.read_image(image.read_bytes())["/azure-iot/device.der"]
    assert x509.load_der_x509_certificate(der).issuer == ca.cert.subject
    assert outcome(run_device(str(image), CONNECT_AND_SEND)) == "DONE"
    # For a real hub: the CA is uploaded as verified once, then devices are created with x509_ca.
    proc = aziot("provision", "--state", str(tmp_path / "field"), "--device-id", "fleet-2", "--image",
                 str(tmp_path / "f.img"), "--auth", "x509_ca", "--ca-cert", str(tmp_path / "ca.pem"), "--ca-key",
                 str(tmp_path / "ca-key.pem"), "--roots", "azure", "--hub-host", "contoso-iot.azure-devices.net")
    assert proc.returncode == 0, proc.stderr
    # Named after the CA, so that it can sit beside other fleet CAs on the hub (and in the emulator).
    name = "fleet-ca-" + ca.thumbprint_sha256[:12].lower()
    assert "az iot hub certificate create --hub-name contoso-iot --name %s --path " % name in proc.stdout
    assert "ca.pem --verified" in proc.stdout
    assert ("az iot hub device-identity create --hub-name contoso-iot --device-id fleet-2 --auth-method x509_ca"
            in proc.stdout)


def test_a_fleet_ca_that_cannot_sign_is_refused(tmp_path):
    leaf = pki.make_device_identity("not-a-ca")
    other = pki.make_device_ca("other")
    (tmp_path / "leaf.pem").write_bytes(leaf.cert_pem)
    (tmp_path / "leaf-key.pem").write_bytes(leaf.key_pem)
    (tmp_path / "other-key.pem").write_bytes(other.key_pem)
    (tmp_path / "other.pem").write_bytes(other.cert_pem)
    base = ["provision", "--state", str(tmp_path / "s"), "--device-id", "d", "--image", str(tmp_path / "d.img"),
            "--auth", "x509_ca"]
    proc = aziot(*base, "--ca-cert", str(tmp_path / "leaf.pem"), "--ca-key", str(tmp_path / "leaf-key.pem"))
    assert proc.returncode == 2 and "is not a CA certificate" in proc.stderr
    proc = aziot(*base, "--ca-cert", str(tmp_path / "other.pem"), "--ca-key", str(tmp_path / "leaf-key.pem"))
    assert proc.returncode == 2 and "is not the private key of" in proc.stderr
    proc = aziot(*base, "--ca-cert", str(tmp_path / "other.pem"))
    assert proc.returncode == 2 and "needs both files" in proc.stderr
    assert "BEGIN" not in proc.stderr  # no key material in errors


def test_a_csv_batch_provisions_what_it_can_and_says_what_it_refused(tmp_path):
    state = str(tmp_path / "s")
    aziot("provision", "--state", state, "--device-id", "kept", "--image", str(tmp_path / "kept.img"))
    (tmp_path / "fleet.csv").write_text("device_id,auth\nunit-1,\nunit 2,\nkept,\nunit-3,sas\n")
    proc = aziot("provision", "--state", state, "--csv", str(tmp_path / "fleet.csv"),
                 "--image-dir", str(tmp_path / "images"))
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[-1] == "provisioned 2, refused 2"
    assert any(l.startswith("refused, line 3 (unit 2): device id 'unit 2' is not one IoT Hub accepts") for l in lines)
    assert any(l.startswith("refused, line 4 (kept): device kept already has an identity") for l in lines)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["unit-1.img", "unit-3.img"]
    report = json.loads(aziot("provision", "--state", state, "--csv", str(tmp_path / "fleet.csv"), "--image-dir",
                              str(tmp_path / "images2"), "--json").stdout)
    assert [r["device_id"] for r in report["refused"]] == ["unit-1", "unit 2", "kept", "unit-3"]  # all exist now


def test_printed_commands_are_quoted_and_files_are_owner_only(tmp_path):
    import os
    import stat

    state = str(tmp_path / "s")
    proc = aziot("provision", "--state", state, "--device-id", "$(id)", "--image", str(tmp_path / "d.img"),
                 "--roots", "azure", "--hub-host", "contoso-iot.azure-devices.net", "--auth", "sas")
    assert proc.returncode == 0, proc.stderr
    assert "--device-id '$(id)' " in proc.stdout  # pasted into a shell, it stays a string
    assert stat.S_IMODE(os.stat(tmp_path / "d.img").st_mode) == 0o600  # the image holds the key
    aziot("provision", "--state", state, "--device-id", "emu-1", "--image", str(tmp_path / "e.img"), "--auth", "sas")
    assert stat.S_IMODE(os.stat(os.path.join(state, "registry.json")).st_mode) == 0o600  # SAS keys


def test_x509_ids_over_64_characters_are_refused_but_sas_takes_128(tmp_path):
    long_id = "d" * 65
    proc = aziot("provision", "--state", str(tmp_path / "s"), "--device-id", long_id, "--image",
                 str(tmp_path / "x.img"))
    assert proc.returncode == 2 and "an X.509 certificate's CN holds at most 64" in proc.stderr
    proc = aziot("provision", "--state", str(tmp_path / "s"), "--device-id", "s" * 128, "--image",
                 str(tmp_path / "s.img"), "--auth", "sas")
    assert proc.returncode == 0, proc.stderr


def test_a_spreadsheet_csv_with_bom_blank_lines_and_duplicates(tmp_path):
    (tmp_path / "f.csv").write_bytes("\ufeffdevice_id,note\r\nu-1,a\r\n\r\nu-2,b\r\nu-1,again\r\n".encode())
    proc = aziot("provision", "--state", str(tmp_path / "s"), "--csv", str(tmp_path / "f.csv"), "--image-dir",
                 str(tmp_path / "img"), "--auth", "sas")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert "refused, line 5 (u-1): device u-1 is on line 2 already" in lines
    assert lines[-1] == "provisioned 2, refused 1"


def test_every_secret_in_a_state_directory_is_owner_only(tmp_path):
    """Keys (device, fleet CA, the emulator's server keys), SAS keys, images holding them, the registry."""
    import os
    import stat

    from aziot_tools.hub.server import ServerIdentity

    state = str(tmp_path / "s")
    ServerIdentity(state, pki.DEFAULT_HUB_HOST)
    for args in (["--device-id", "x1", "--image", str(tmp_path / "s" / "x1.img")],
                 ["--device-id", "c1", "--image", str(tmp_path / "s" / "c1.img"), "--auth", "x509_ca"],
                 ["--device-id", "s1", "--image", str(tmp_path / "s" / "s1.img"), "--auth", "sas"]):
        assert aziot("provision", "--state", state, *args).returncode == 0
    checked = 0
    for root, dirs, files in os.walk(state):
        for name in files:
            path = os.path.join(root, name)
            data = open(path, "rb").read()
            secret = (b"PRIVATE KEY" in data or name.endswith((".img", ".sas-key")) or name == "registry.json")
            if secret:
                checked += 1
                assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
                assert stat.S_IMODE(os.stat(root).st_mode) in (0o700, 0o755), root
        for name in dirs:
            if name in ("devices", "pki", "server"):
                assert stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode) == 0o700, name
    assert checked >= 10  # 3 images, 2 device keys, 1 SAS key, the CA key, 2 server keys, the registry

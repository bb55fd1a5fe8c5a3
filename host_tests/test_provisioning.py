"""Provisioning for the real hub: its roots, the image, the registration command."""

import base64
import hashlib
import json
import os
import subprocess
import sys

from cryptography import x509
from cryptography.x509.oid import NameOID

from aziot_tools import flashimage, roots
from aziot_tools.hub.registry import Registry

from devicecode import CONNECT_AND_SEND, outcome

EXPECTED_CN = {
    "digicert-global-root-g2": "DigiCert Global Root G2",
    "digicert-global-root-g3": "DigiCert Global Root G3",
    "microsoft-rsa-root-2017": "Microsoft RSA Root Certificate Authority 2017",
    "microsoft-ecc-root-2017": "Microsoft ECC Root Certificate Authority 2017",
}


def test_azure_roots_are_the_published_ones():
    files = roots.azure_root_files(("ecc", "rsa"))
    assert len(files) == 4
    for path, der in files.items():
        name = path.rsplit("/", 1)[1][:-4]
        assert hashlib.sha1(der).hexdigest().upper() == roots.AZURE_ROOTS[name]
        cert = x509.load_der_x509_certificate(der)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == EXPECTED_CN[name]
        assert cert.subject == cert.issuer  # roots, not intermediates


def test_device_with_azure_roots_loads_them_and_refuses_the_emulator(hub, provision_device, run_device):
    dev = provision_device("dev-azure", hub, roots="azure", tls_profile="ecc+rsa")
    assert sorted(p for p in dev.files if "/roots/" in p) == sorted(
        "/azure-iot/roots/%s.der" % n for n in roots.AZURE_ROOTS)
    parsed = run_device(dev.image_path, """
        from aziot import certs, config, tlsconf
        cfg = config.load()
        for profile in ("ecc", "rsa"):
            tlsconf.make_context(profile, certs.root_files(cfg.roots), None, None)
        print("ROOTS PARSED")
    """)
    assert parsed.stdout.strip() == "ROOTS PARSED", parsed.output  # mbedTLS takes all four
    out = outcome(run_device(dev.image_path, CONNECT_AND_SEND))
    assert out.startswith("ERROR TlsError server certificate of emulated-hub.azure-devices.net")
    assert "not correctly signed by the trusted CA" in out


def test_cli_provisions_for_a_real_hub(tmp_path):
    image = tmp_path / "field.img"
    proc = subprocess.run([sys.executable, "-m", "aziot_tools.cli", "provision", "--state", str(tmp_path / "state"),
                           "--device-id", "field-007", "--image", str(image), "--roots", "azure",
                           "--hub-host", "contoso-iot.azure-devices.net", "--profile", "ecc"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    files = flashimage.read_image(image.read_bytes())
    config = json.loads(files["/azure-iot/config.json"])
    assert config["hub_host"] == "contoso-iot.azure-devices.net" and config["tls_profile"] == "ecc"
    assert "address" not in config and "port" not in config  # dials the hub itself on 8883
    # All four roots whatever the profile: the device may meet either kind of hub, and the next migration.
    assert sorted(p for p in files if "/roots/" in p) == [
        "/azure-iot/roots/digicert-global-root-g2.der", "/azure-iot/roots/digicert-global-root-g3.der",
        "/azure-iot/roots/microsoft-ecc-root-2017.der", "/azure-iot/roots/microsoft-rsa-root-2017.der"]
    thumbprint = hashlib.sha256(files["/azure-iot/device.der"]).hexdigest().upper()
    assert ("az iot hub device-identity create --hub-name contoso-iot --device-id field-007 "
            "--auth-method x509_thumbprint --primary-thumbprint " + thumbprint) in proc.stdout
    assert not (tmp_path / "state" / "registry.json").exists()  # nothing registered with an emulator
    key_pem = (tmp_path / "state" / "devices" / "field-007-key.pem")
    assert key_pem.stat().st_mode & 0o077 == 0
    assert key_pem.read_text().splitlines()[1] not in proc.stdout + proc.stderr


def test_cli_provisions_a_sas_device_without_printing_its_key(tmp_path):
    image = tmp_path / "sas.img"
    proc = subprocess.run([sys.executable, "-m", "aziot_tools.cli", "provision", "--state", str(tmp_path / "state"),
                           "--device-id", "sas-007", "--image", str(image), "--roots", "azure", "--auth", "sas",
                           "--hub-host", "contoso-iot.azure-devices.net"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    files = flashimage.read_image(image.read_bytes())
    config = json.loads(files["/azure-iot/config.json"])
    assert config["auth"] == "sas" and "cert" not in config and "key" not in config
    assert "/azure-iot/device.der" not in files
    key = files["/azure-iot/sas.key"].decode()
    assert len(base64.b64decode(key)) == 32
    key_file = tmp_path / "state" / "devices" / "sas-007.sas-key"
    assert key_file.read_text().strip() == key and key_file.stat().st_mode & 0o077 == 0
    assert key not in proc.stdout + proc.stderr
    assert ("az iot hub device-identity create --hub-name contoso-iot --device-id sas-007 "
            "--auth-method shared_private_key --primary-key \"$(cat ") in proc.stdout


def test_the_real_hub_recipe_connects_to_either_kind_of_hub(any_hub, hub_state, tmp_path, run_device):
    """The README's real-hub command, as written (default profile, all four roots). Only what a loopback
    emulator must differ in is changed afterwards: the address to dial, and the emulator's own roots
    added beside Azure's; the device is registered by the thumbprint the command printed."""
    hub = any_hub
    image = tmp_path / "field.img"
    proc = subprocess.run([sys.executable, "-m", "aziot_tools.cli", "provision", "--state", str(tmp_path / "field"),
                           "--device-id", "field-008", "--image", str(image), "--roots", "azure",
                           "--hub-host", hub.hub_host], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    thumbprint = proc.stdout.split("--primary-thumbprint ")[1].split()[0]
    Registry(os.path.join(hub_state, "registry.json")).add_device("field-008", "x509_thumbprint", thumbprint)
    files = flashimage.read_image(image.read_bytes())
    config = json.loads(files["/azure-iot/config.json"])
    assert config["tls_profile"] == "auto"
    config.update(address="127.0.0.1", port=hub.port)
    files["/azure-iot/config.json"] = json.dumps(config).encode()
    for kind in ("ecc", "rsa"):
        with open(hub.identity.root_path(kind, "der"), "rb") as f:
            files["/azure-iot/roots/emulator-%s.der" % kind] = f.read()
    image.write_bytes(flashimage.build_image(files))
    run = run_device(str(image), CONNECT_AND_SEND)
    assert outcome(run) == "DONE", run.output
    assert "CONNECTED %s " % ("rsa" if hub.tls_mode == "standard" else "ecc") in run.stdout
    assert len(hub.telemetry("field-008")) == 1

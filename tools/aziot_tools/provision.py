"""Provisioning: device identity, hub registration, flash image.

One call per device: make an ECC P-256 key and certificate (self-signed for
thumbprint authentication, or signed by the fleet CA) or a random SAS key,
register it with the emulator's registry, and write the device's littlefs
image with its config, roots, and certificate and key (or SAS key file).
"""

import base64
import json
import os
import re
from dataclasses import dataclass, field

from cryptography import x509

from . import flashimage, pki
from .roots import azure_root_files
from .hub.registry import Registry

FLEET_CA_NAME = "aziot-fleet-ca"

# "Understand the identity registry in your IoT hub" (Microsoft Learn): device and module ids are
# case-sensitive, up to 128 ASCII characters: letters, digits and - . % _ * ? ! ( ) , : = @ $ '
ID_PATTERN = re.compile(r"[A-Za-z0-9\-.%_*?!(),:=@$']{1,128}\Z")


class ProvisionError(Exception):
    """Provisioning refused; the message says why and what to do."""


def check_id(value: str, what: str = "device id", x509: bool = False):
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise ProvisionError("%s %r is not one IoT Hub accepts: 1 to 128 ASCII letters, digits and "
                             "- . %% _ * ? ! ( ) , : = @ $ '" % (what, value))
    if x509 and len(value) > 64:
        # The certificate's CN carries the id, and X.509 caps a CN at 64 characters (RFC 5280, ub-common-name).
        raise ProvisionError("%s %r is %d characters: an X.509 certificate's CN holds at most 64; use SAS "
                             "(--auth sas) or a shorter id" % (what, value, len(value)))
ROOT_FILES = {"ecc": "/azure-iot/roots/hub-ecc-root.der", "rsa": "/azure-iot/roots/hub-rsa-root.der"}


@dataclass
class ProvisionedDevice:
    device_id: str
    identity: pki.Identity
    config: dict
    image_path: str
    files: dict = field(repr=False, default_factory=dict)
    sas_key: str = field(repr=False, default=None)  # auth "sas": the device's primary key


def fleet_ca(state_dir: str, cert_path: str = None, key_path: str = None) -> pki.Identity:
    """The CA that signs `x509_ca` devices: the one given (certificate and key PEM files), or one
    made once per state directory; registered with that state's emulator as verified."""
    if cert_path or key_path:
        return load_ca(cert_path, key_path)
    folder = os.path.join(state_dir, "pki")
    cert_path, key_path = os.path.join(folder, "device-ca.pem"), os.path.join(folder, "device-ca-key.pem")
    if os.path.exists(cert_path):
        with open(cert_path, "rb") as c, open(key_path, "rb") as k:
            return pki.load_identity(c.read(), k.read())
    pki.private_dir(folder)
    ca = pki.make_device_ca()
    with open(cert_path, "wb") as f:
        f.write(ca.cert_pem)
    pki.write_private(key_path, ca.key_pem)
    Registry(os.path.join(state_dir, "registry.json")).add_ca(FLEET_CA_NAME, ca.cert_pem)
    return ca


def load_ca(cert_path: str, key_path: str) -> pki.Identity:
    """A fleet CA brought by the user: both files, a CA certificate, the key that matches it."""
    if not cert_path or not key_path:
        raise ProvisionError("a fleet CA needs both files: --ca-cert and --ca-key")
    try:
        with open(cert_path, "rb") as c, open(key_path, "rb") as k:
            ca = pki.load_identity(c.read(), k.read())
    except OSError as e:
        raise ProvisionError("cannot read the fleet CA: %s" % e)
    except ValueError as e:
        raise ProvisionError("the fleet CA files are not a PEM certificate and its private key: %s" % e)
    except TypeError:  # cryptography: the key is encrypted and no password was given
        raise ProvisionError("%s is an encrypted private key: give the fleet CA's key unencrypted (e.g. "
                             "`openssl pkey -in KEY -out plain-key.pem`, kept owner-only)" % key_path)
    try:
        is_ca = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ProvisionError("%s is not a CA certificate (basicConstraints CA:TRUE): it cannot sign devices"
                             % cert_path)
    if ca.cert.public_key().public_numbers() != ca.key.public_key().public_numbers():
        raise ProvisionError("%s is not the private key of %s" % (key_path, cert_path))
    return ca


def device_config(device_id: str, hub_host: str, **overrides) -> dict:
    config = {"hub_host": hub_host, "device_id": device_id, "auth": "x509",
              "tls_profile": "auto", "roots": "/azure-iot/roots"}
    if overrides.get("auth", "x509") == "x509":
        config.update(cert="/azure-iot/device.der", key="/azure-iot/device-key.der")
    config.update(overrides)
    return config


def emulator_root_files(state_dir: str, kinds=("ecc", "rsa")) -> dict:
    """The emulator's roots as flash files (DER), read from its state directory."""
    out = {}
    for kind in kinds:
        with open(os.path.join(state_dir, "server", "%s-root.der" % kind), "rb") as f:
            out[ROOT_FILES[kind]] = f.read()
    return out


def provision(state_dir: str, device_id: str, image_path: str, *, auth: str = "x509_thumbprint",
              hub_host: str = pki.DEFAULT_HUB_HOST, roots: str = "emulator", root_kinds=None,
              identity: pki.Identity = None, register: bool = True, main_py: bytes = None,
              ca: pki.Identity = None, days: int = 365, board: str = None, extra_files: dict = None,
              sas_key: str = None, **config_overrides) -> ProvisionedDevice:
    """Make (or take) the identity, register it with the emulator, write the image.

    roots: "emulator" (the emulator's test roots) or "azure" (the real hub's,
    see roots.py). root_kinds defaults to both chains' roots whatever the
    profile: Microsoft asks devices to carry several roots so that the next
    CA migration, or a move to a hub of the other kind, does not strand them.
    config_overrides go into config.json. sas_key: the device key to use (auth "sas"; default: a new one).
    """
    if auth == "sas":
        sas_key = sas_key or base64.b64encode(os.urandom(32)).decode()  # as the hub generates device keys
        config_overrides = dict(config_overrides, auth="sas")
    elif identity is None:
        if auth == "x509_ca" and ca is None:
            ca = fleet_ca(state_dir)
        identity = pki.make_device_identity(device_id, ca if auth == "x509_ca" else None, days=days)
    if register:
        Registry(os.path.join(state_dir, "registry.json")).add_device(
            device_id, auth, identity.thumbprint_sha256 if auth == "x509_thumbprint" else "",
            module_id=config_overrides.get("module_id", ""), primary_key=sas_key or "")
    config = device_config(device_id, hub_host, **config_overrides)
    kinds = root_kinds or ("ecc", "rsa")
    if roots == "azure":
        files = azure_root_files(kinds)
    elif roots == "emulator":
        files = emulator_root_files(state_dir, kinds)
    else:
        raise ValueError("roots must be 'emulator' or 'azure', not %r" % roots)
    files["/azure-iot/config.json"] = json.dumps(config).encode()
    if sas_key is not None:
        files[config.get("sas_key_file", "/azure-iot/sas.key")] = sas_key.encode()
    else:
        files[config.get("cert", "/azure-iot/device.der")] = identity.cert_der
        files[config.get("key", "/azure-iot/device-key.der")] = identity.key_der
    if main_py is not None:
        files["/main.py"] = main_py
    files.update(extra_files or {})
    os.makedirs(os.path.dirname(os.path.abspath(image_path)), exist_ok=True)
    pki.write_private(image_path, flashimage.build_image(files, board=board))  # it holds the device's secrets
    return ProvisionedDevice(device_id, identity, config, image_path, files, sas_key)


def write_identity(identity: pki.Identity, folder: str, device_id: str):
    """Keep the device's PEM files beside the image (key readable by the owner only)."""
    pki.private_dir(folder)
    with open(os.path.join(folder, device_id + ".pem"), "wb") as f:
        f.write(identity.cert_pem)
    pki.write_private(os.path.join(folder, device_id + "-key.pem"), identity.key_pem)


def write_sas_key(key: str, folder: str, device_id: str) -> str:
    """Keep a SAS device's key beside its image, readable by the owner only; returns the path."""
    pki.private_dir(folder)
    path = os.path.join(folder, device_id + ".sas-key")
    pki.write_private(path, (key + "\n").encode())
    return path

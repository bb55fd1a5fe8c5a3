"""The emulator's device registry: a JSON file, re-read at each login.

    {"devices": {"dev1": {"auth": "x509_thumbprint", "status": "enabled",
                          "primary_thumbprint": "AB..", "secondary_thumbprint": ""}},
     "certificate_authorities": {"fleet-ca": "-----BEGIN CERTIFICATE-----..."}}

Module identities are entries keyed `{device}/{module}` (device ids cannot
contain '/'), registered under an existing device.

Authentication follows IoT Hub: `sas` checks the CONNECT password, a SAS
token signed with the primary or secondary key (see sas.py); `x509_thumbprint` matches the client
certificate's SHA-1 or SHA-256 thumbprint against the primary or secondary
one; `x509_ca` needs a chain to a registered (verified) CA and subject CN
equal to the device id. Either way the certificate must be within its dates.
"""

import datetime
import hashlib
import json
import os

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from . import sas

AUTH_TYPES = ("x509_thumbprint", "x509_ca", "sas")


class Registry:
    def __init__(self, path: str):
        self.path = path
        if not os.path.exists(path):
            self._save({"devices": {}, "certificate_authorities": {}})

    def _load(self) -> dict:
        with open(self.path) as f:
            return json.load(f)

    def _save(self, data: dict):
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds SAS keys
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    def add_device(self, device_id: str, auth: str, primary_thumbprint: str = "",
                   secondary_thumbprint: str = "", status: str = "enabled", module_id: str = "",
                   primary_key: str = "", secondary_key: str = ""):
        """Register a device, or with module_id a module of an already registered device."""
        if auth not in AUTH_TYPES:
            raise ValueError("auth must be one of %s, not %r" % (", ".join(AUTH_TYPES), auth))
        if auth == "x509_thumbprint" and not primary_thumbprint:
            raise ValueError("x509_thumbprint devices need a primary thumbprint")
        if auth == "sas" and not primary_key:
            raise ValueError("sas devices need a primary key")
        if "/" in device_id or "/" in module_id:
            raise ValueError("device and module ids cannot contain '/'")
        data = self._load()
        if module_id:
            if device_id not in data["devices"]:
                raise ValueError("module %r needs its device %r registered first" % (module_id, device_id))
            if auth == "x509_ca":
                raise ValueError("this emulator authenticates modules by thumbprint or SAS only")
        data["devices"][identity_key(device_id, module_id)] = {
            "auth": auth,
            "status": status,
            "primary_thumbprint": primary_thumbprint.upper(),
            "secondary_thumbprint": secondary_thumbprint.upper(),
            "primary_key": primary_key,
            "secondary_key": secondary_key,
        }
        self._save(data)

    def add_ca(self, name: str, cert_pem: bytes):
        x509.load_pem_x509_certificate(cert_pem)  # refuse garbage now, not at login
        data = self._load()
        data["certificate_authorities"][name] = cert_pem.decode()
        self._save(data)

    def device(self, device_id: str, module_id: str = ""):
        return self._load()["devices"].get(identity_key(device_id, module_id))

    def authenticate(self, device_id: str, chain: list, now: datetime.datetime = None, module_id: str = "",
                     password: bytes = None, hub_host: str = ""):
        """None when the client (its certificate chain or SAS password) may log in, else the reason."""
        data = self._load()
        key = identity_key(device_id, module_id)
        entry = data["devices"].get(key)
        if entry is None:
            return "%s %r is not registered" % ("module" if module_id else "device", key)
        if entry.get("status") != "enabled":
            return "device %r is disabled" % key
        if entry["auth"] == "sas":
            if password is None:
                return "device %r authenticates with SAS but sent no password" % key
            resource = "%s/devices/%s" % (hub_host, device_id) + ("/modules/%s" % module_id if module_id else "")
            token = password.decode("utf-8", "replace")
            return sas.check(token, resource, (entry.get("primary_key"), entry.get("secondary_key")),
                             now.timestamp() if now else None)
        if password is not None:
            return "device %r authenticates with X.509 but sent a password" % key
        if not chain:
            return "no client certificate was presented"
        leaf = chain[0]
        now = now or datetime.datetime.now(datetime.timezone.utc)
        for cert in chain:
            if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
                return "certificate %s is outside its validity period (%s .. %s)" % (
                    cert.subject.rfc4514_string(), cert.not_valid_before_utc, cert.not_valid_after_utc)
        if entry["auth"] == "x509_thumbprint":
            der = leaf.public_bytes(Encoding.DER)
            seen = {hashlib.sha1(der).hexdigest().upper(), hashlib.sha256(der).hexdigest().upper()}
            allowed = {entry.get("primary_thumbprint"), entry.get("secondary_thumbprint")} - {"", None}
            if not seen & allowed:
                return "client certificate thumbprint %s matches neither registered thumbprint" % (
                    hashlib.sha256(der).hexdigest().upper())
            return None
        cns = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not cns or cns[0].value != device_id:
            return "certificate CN %r is not the device id" % (cns[0].value if cns else None)
        cas = [x509.load_pem_x509_certificate(p.encode()) for p in data["certificate_authorities"].values()]
        return _chain_to_ca(chain, cas, now)


def identity_key(device_id: str, module_id: str = "") -> str:
    return device_id + "/" + module_id if module_id else device_id


def _chain_to_ca(chain: list, cas: list, now: datetime.datetime):
    """None if chain[0] leads, through chain[1:], to one of cas by signature, every issuer on the way
    allowed to issue (RFC 5280 6.1: basicConstraints CA, keyUsage keyCertSign, path length, validity);
    else the reason. The hub validates CA-signed devices this way ("Authenticate devices using X.509
    CA certificates", Microsoft Learn); a leaf signed by another device's leaf must not pass."""
    current = chain[0]
    intermediates = list(chain[1:])
    for below in range(len(chain) + 1):  # below: CA certificates between the issuer and the leaf
        for ca in cas:
            if current.issuer == ca.subject and _signed_by(current, ca):
                return _may_issue(ca, below, now)
        nxt = next((c for c in intermediates if current.issuer == c.subject and _signed_by(current, c)), None)
        if nxt is None:
            break
        reason = _may_issue(nxt, below, now)
        if reason:
            return reason
        intermediates.remove(nxt)
        current = nxt
    return "client certificate does not chain to a registered certificate authority"


def _may_issue(cert, below: int, now: datetime.datetime):
    name = cert.subject.rfc4514_string()
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        basic = None
    if basic is None or not basic.ca:
        return "issuer %s is not a CA certificate (basicConstraints CA:TRUE missing)" % name
    if basic.path_length is not None and below > basic.path_length:
        return "issuer %s allows %d CA certificates below it, the chain has %d" % (name, basic.path_length, below)
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.key_cert_sign:
        return "issuer %s may not sign certificates (keyUsage lacks keyCertSign)" % name
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        return "issuer %s is outside its validity period" % name
    return None


def _signed_by(cert, issuer) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False

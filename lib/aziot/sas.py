"""SAS tokens for IoT Hub and DPS, and the HMAC-SHA256 they need.

MicroPython has no `hmac` module, so HMAC (RFC 2104) is written here over
`hashlib.sha256` and checked against the RFC 4231 test vectors. Token
format from "Control access to IoT Hub with SAS" (Microsoft Learn):

    SharedAccessSignature sr={URL-encoded resource}&sig={URL-encoded base64 HMAC}&se={expiry}

where the HMAC key is the base64-decoded device key and the signed string
is the URL-encoded resource exactly as sent, a newline, and the expiry in
Unix seconds.
"""

import binascii
import hashlib

from .errors import ConfigError
from .protocol import url_encode

_BLOCK = 64  # SHA-256 block size in bytes


def hmac_sha256(key, message):
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = bytes(key) + bytes(_BLOCK - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(message)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def b64encode(data):
    return binascii.b2a_base64(data).rstrip(b"\n").decode()


def decode_key(key_b64, what="SAS key"):
    """The raw key; ConfigError (naming what, never the key) if it is not canonical base64."""
    text = key_b64.strip() if isinstance(key_b64, str) else key_b64.decode().strip()
    try:
        raw = binascii.a2b_base64(text)
    except ValueError:
        raw = b""
    if not raw or b64encode(raw) != text:
        raise ConfigError("%s is not base64" % what)
    return raw


def read_key(path):
    """The base64 device key stored alone in a file on flash (so config.json holds no secret)."""
    try:
        with open(path) as f:
            key = f.read().strip()
    except OSError:
        raise ConfigError("SAS key file not found: %s" % path)
    decode_key(key, "SAS key in %s" % path)
    return key


def resource(hub_host, device_id, module_id=""):
    """What a device's token is for: `{host}/devices/{device}[/modules/{module}]`."""
    base = hub_host + "/devices/" + device_id
    return base + "/modules/" + module_id if module_id else base


def token(resource_uri, key_b64, expiry, policy=None):
    """A SharedAccessSignature for resource_uri valid until expiry (Unix seconds)."""
    sr = url_encode(resource_uri)
    expiry = str(int(expiry))
    sig = b64encode(hmac_sha256(decode_key(key_b64), (sr + "\n" + expiry).encode()))
    text = "SharedAccessSignature sr=" + sr + "&sig=" + url_encode(sig) + "&se=" + expiry
    if policy:
        text += "&skn=" + url_encode(policy)
    return text


def derive_device_key(group_key_b64, registration_id):
    """A DPS group enrollment's device key: base64(HMAC-SHA256(group key, registration id))."""
    return b64encode(hmac_sha256(decode_key(group_key_b64, "group enrollment key"), registration_id.encode()))


def device_key(config):
    """The device's SAS key: the one in sas_key_file, or, with dps_group_key_file, its key under a DPS
    symmetric key group, derived here from the group key (which then lives on the device)."""
    if config.dps_group_key_file:
        return derive_device_key(read_key(config.dps_group_key_file), config.registration_id)
    return read_key(config.sas_key_file)

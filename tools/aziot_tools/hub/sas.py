"""Checking SAS tokens the way IoT Hub does ("Control access to IoT Hub with shared access signatures", Microsoft Learn).

`SharedAccessSignature sr={URL-encoded resource}&sig={URL-encoded base64 HMAC}&se={expiry}`
where the HMAC-SHA256 (key: the base64-decoded device key) covers the
URL-encoded resource exactly as sent, a newline, and the expiry.
"""

import base64
import binascii
import hashlib
import hmac
import time
from urllib.parse import unquote

PREFIX = "SharedAccessSignature "


def parse(token: str) -> dict:
    """The token's fields, sr still URL-encoded; ValueError names what is wrong."""
    if not token.startswith(PREFIX):
        raise ValueError("password is not a SharedAccessSignature token")
    fields = {}
    for item in token[len(PREFIX):].split("&"):
        name, eq, value = item.partition("=")
        if not eq:
            raise ValueError("SAS token field %r has no value" % name)
        fields[name] = value
    for name in ("sr", "sig", "se"):
        if name not in fields:
            raise ValueError("SAS token lacks %r" % name)
    se = fields["se"]
    if not (se.isascii() and se.isdigit()):  # str.isdigit() alone takes "²"
        raise ValueError("SAS token expiry is not a number")
    if len(se) > 11:  # seconds past 1970: 11 digits reach the year 5138
        raise ValueError("SAS token expiry is out of range")
    return fields


def signature(key_b64: str, resource_encoded: str, expiry: str) -> bytes:
    """The raw HMAC-SHA256 a token for this resource and expiry must carry (base64-encoded) as sig."""
    key = base64.b64decode(key_b64)
    return hmac.new(key, (resource_encoded + "\n" + expiry).encode(), hashlib.sha256).digest()


def check(token: str, resource: str, keys, now: float = None, policy: str = None):
    """None when token is valid for resource under one of keys, else the reason (no secrets in it).

    policy: the one skn the token may name. A device's own hub token names none; a DPS registration
    token names "registration" ("Symmetric key attestation", Microsoft Learn) or none (the Python
    SDK, azure/iot/device/provisioning/abstract_provisioning_device_client.py, signs without it)."""
    try:
        fields = parse(token)
    except ValueError as e:
        return str(e)
    if policy is None and "skn" in fields:
        # skn names a shared access policy; a device's own token is signed with its key and names none.
        return "SAS token names a shared access policy (skn): a device signs with its own key"
    if policy is not None and unquote(fields.get("skn", policy)) != policy:
        return "SAS token may name skn=%s only" % policy
    if unquote(fields["sr"]).lower() != resource.lower():
        return "SAS token is for %r, not %r" % (unquote(fields["sr"]), resource)
    if int(fields["se"]) <= (time.time() if now is None else now):
        return "SAS token expired at %s" % fields["se"]
    try:
        sig = base64.b64decode(unquote(fields["sig"]), validate=True)
    except (binascii.Error, ValueError):
        return "SAS token signature is not base64"
    for key in keys:
        if key and hmac.compare_digest(signature(key, fields["sr"], fields["se"]), sig):
            return None
    return "SAS token signature does not match the device's keys"



def expiry(password: bytes) -> int:
    """The `se` of an already accepted token."""
    return int(parse(password.decode("utf-8", "replace"))["se"])

"""Root CAs, device certificate and key from flash.

Everything is handed to mbedTLS as DER: it is smaller than PEM, needs no
NUL terminator, and a corrupt file is caught here with its path rather than
deep inside the handshake. PEM files are accepted and converted.
"""

import binascii
import hashlib
import os

from .clock import days_from_civil, format_utc
from .errors import CertificateError

_PEM_BEGIN = b"-----BEGIN "


def read_der(path, what):
    """The DER bytes of the first PEM block or the raw DER in `path`.

    `what` names the file's role in errors ("root CA", "device key").
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        raise CertificateError("%s file not found: %s" % (what, path))
    if not data:
        raise CertificateError("%s file is empty: %s" % (what, path))
    if data.lstrip()[: len(_PEM_BEGIN)] == _PEM_BEGIN:
        data = _pem_to_der(data, path, what)
    _check_der_sequence(data, path, what)
    return data


_PEM_CERT = b"-----BEGIN CERTIFICATE-----"


def read_cert_chain(path, what="device certificate"):
    """(what to give mbedTLS, the leaf's DER, the size of the TLS Certificate message it makes).

    A PEM file may hold the leaf and its intermediates, leaf first, as a device
    under an intermediate CA must present them (the hub then finds the path to
    the registered CA); they go to mbedTLS as PEM, which it parses as a chain.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        raise CertificateError("%s file not found: %s" % (what, path))
    ders = []
    if data.lstrip()[: len(_PEM_BEGIN)] == _PEM_BEGIN:
        for part in data.split(_PEM_CERT)[1:]:  # each certificate block (a key block after one is skipped)
            der = _pem_to_der(_PEM_CERT + part, path, what)
            _check_der_sequence(der, path, what)
            ders.append(der)
    if len(ders) < 2:
        leaf = read_der(path, what)
        return leaf, leaf, 7 + 3 + len(leaf)
    pem = b"".join(b"-----BEGIN CERTIFICATE-----\n" + binascii.b2a_base64(d) + b"-----END CERTIFICATE-----\n"
                   for d in ders)
    # Certificate message: handshake header 4, list length 3, then length 3 + DER per certificate.
    return pem, ders[0], 7 + sum(3 + len(d) for d in ders)


def _pem_to_der(data, path, what):
    lines = data.split(b"\n")
    body = []
    inside = False
    for line in lines:
        line = line.strip()
        if line.startswith(b"-----BEGIN "):
            inside = True
        elif line.startswith(b"-----END "):
            if inside:
                break
        elif inside and line:
            body.append(line)
    else:
        raise CertificateError("%s is corrupt PEM (no END line): %s" % (what, path))
    try:
        return binascii.a2b_base64(b"".join(body))
    except ValueError:
        raise CertificateError("%s is corrupt PEM (bad base64): %s" % (what, path))


def _read_header(der, pos):
    """(tag, content_start, content_end) of the DER element at pos."""
    if pos + 2 > len(der):
        raise ValueError("truncated")
    tag = der[pos]
    n = der[pos + 1]
    pos += 2
    if n & 0x80:
        count = n & 0x7F
        if count == 0 or count > 4 or pos + count > len(der):
            raise ValueError("bad length")
        n = 0
        for i in range(count):
            n = (n << 8) | der[pos + i]
        pos += count
    if pos + n > len(der):
        raise ValueError("truncated")
    return tag, pos, pos + n


def _check_der_sequence(der, path, what):
    try:
        tag, _, end = _read_header(der, 0)
    except ValueError:
        tag, end = None, -1
    if tag != 0x30 or end != len(der):
        raise CertificateError("%s is not valid DER or PEM (corrupt or truncated): %s" % (what, path))


def root_files(roots):
    """The root CA files of config key 'roots': a directory (every file, sorted) or a list.

    Several roots survive a hub root migration; there must be at least one.
    """
    if isinstance(roots, str):
        try:
            names = sorted(os.listdir(roots))
        except OSError:
            raise CertificateError("root CA directory not found: %s" % roots)
        paths = [roots.rstrip("/") + "/" + n for n in names]
        where = roots
    else:
        paths = list(roots)
        where = "config key 'roots'"
    if not paths:
        raise CertificateError("no root CA files in %s: the hub cannot be verified" % where)
    return paths


def thumbprint_sha256(cert_der):
    """Upper-case hex SHA-256 of the DER certificate: what IoT Hub registers."""
    return binascii.hexlify(hashlib.sha256(cert_der).digest()).decode().upper()


def validity(cert_der):
    """(not_before, not_after) in Unix seconds, read from the certificate's TBS."""
    try:
        _, pos, _ = _read_header(cert_der, 0)  # Certificate
        _, pos, _ = _read_header(cert_der, pos)  # tbsCertificate
        tag, start, end = _read_header(cert_der, pos)
        if tag == 0xA0:  # [0] version
            pos = end
        for _ in range(3):  # serialNumber, signature, issuer
            _, _, pos = _read_header(cert_der, pos)
        _, pos, _ = _read_header(cert_der, pos)  # validity
        tag, start, end = _read_header(cert_der, pos)
        not_before = _asn1_time(tag, cert_der[start:end])
        tag, start, end2 = _read_header(cert_der, end)
        not_after = _asn1_time(tag, cert_der[start:end2])
    except (ValueError, IndexError):
        raise CertificateError("certificate is not a valid X.509 structure")
    return not_before, not_after


def _asn1_time(tag, text):
    s = text.decode()
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ
        y = int(s[0:2])
        y += 2000 if y < 50 else 1900
        s = s[2:]
    elif tag == 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        y = int(s[0:4])
        s = s[4:]
    else:
        raise ValueError("bad time tag")
    mo, d, h, mi, sec = int(s[0:2]), int(s[2:4]), int(s[4:6]), int(s[6:8]), int(s[8:10])
    return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec


def check_current(cert_der, now, path):
    """Refuse a device certificate the hub would refuse for its dates."""
    try:
        not_before, not_after = validity(cert_der)
    except CertificateError:
        raise CertificateError("device certificate is not a valid X.509 structure: %s" % path)
    if now > not_after:
        raise CertificateError(
            "device certificate expired on %s: %s" % (format_utc(not_after), path))
    if now < not_before:
        raise CertificateError(
            "device certificate is not valid before %s: %s" % (format_utc(not_before), path))

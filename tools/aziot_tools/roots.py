"""The real hub's root CAs, for devices that connect to Azure rather than the emulator.

Taken from the Mozilla CA bundle (`certifi`) and accepted only when their
SHA-1 thumbprints equal the ones Microsoft publishes on "Azure Certificate
Authority details" (learn.microsoft.com/azure/security/fundamentals/azure-CA-details).
Pin roots, never intermediates: those roll without notice.
"""

import hashlib
import warnings

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

# name on flash -> SHA-1 thumbprint published by Microsoft
AZURE_ROOTS = {
    "digicert-global-root-g2": "DF3C24F9BFD666761B268073FE06D1CC8D4F82A4",
    "digicert-global-root-g3": "7E04DE896A3E666D00E687D33FFAD93BE83D349E",
    "microsoft-rsa-root-2017": "73A5E64A3BFF8316FF0EDCCC618A906E4EAE4D74",
    "microsoft-ecc-root-2017": "999A64C37FF47D9FAB95F14769891460EEC4C3C5",
}
# The hub's RSA chain ends at G2 (Microsoft also recommends its RSA 2017 root),
# the ECC chain at G3 (+ Microsoft ECC 2017).
PROFILE_ROOTS = {
    "ecc": ("digicert-global-root-g3", "microsoft-ecc-root-2017"),
    "rsa": ("digicert-global-root-g2", "microsoft-rsa-root-2017"),
}


def _bundle_by_sha1() -> dict:
    import certifi

    with open(certifi.where(), "rb") as f:
        pem = f.read()
    out = {}
    with warnings.catch_warnings():  # some unrelated roots in the bundle have odd serials
        warnings.simplefilter("ignore")
        certs = x509.load_pem_x509_certificates(pem)
    for cert in certs:
        der = cert.public_bytes(Encoding.DER)
        out[hashlib.sha1(der).hexdigest().upper()] = der
    return out


def azure_root_files(kinds=("ecc", "rsa"), folder: str = "/azure-iot/roots") -> dict:
    """flash path -> DER of the roots a device of these profile kinds needs."""
    bundle = _bundle_by_sha1()
    files = {}
    for kind in kinds:
        for name in PROFILE_ROOTS[kind]:
            der = bundle.get(AZURE_ROOTS[name])
            if der is None:
                raise SystemExit("root %s (SHA-1 %s) is not in the installed CA bundle" % (name, AZURE_ROOTS[name]))
            files["%s/%s.der" % (folder, name)] = der
    return files

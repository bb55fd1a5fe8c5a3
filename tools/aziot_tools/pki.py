"""Test PKI: server chains shaped like IoT Hub's, device identities, thumbprints.

The emulator's chains copy the real hub's shape (root -> issuing CA -> leaf,
same key types and sizes, a similar SAN list) so that handshake sizes
measured against the emulator transfer to the real hub:
  ECC: DigiCert Global Root G3 (P-384) -> Microsoft ECC TLS Issuing CA (P-384)
       -> *.azure-devices.net leaf (P-256 key, signed ECDSA-SHA384)
  RSA: DigiCert Global Root G2 (RSA 2048) -> Microsoft Azure RSA TLS Issuing
       CA (RSA 4096) -> leaf (RSA 2048)
"""

import datetime
import hashlib
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The real hub leaf carries these names; the emulator's host name is added.
HUB_SANS = (
    "*.azure-devices.net",
    "*.amqpws.azure-devices.net",
    "*.su.management-azure-devices.net",
    "*.azure-devices-provisioning.net",
    "*.servicebus.windows.net",
    "*.azure-devices.com",
)

DEFAULT_HUB_HOST = "emulated-hub.azure-devices.net"


@dataclass
class Identity:
    """A certificate with its private key and the chain that leads to a root."""

    cert: x509.Certificate
    key: object
    chain: tuple = ()  # issuing certificates, leaf's issuer first

    @property
    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def chain_pem(self) -> bytes:
        """Leaf then issuers, as a TLS server sends them (root excluded)."""
        return self.cert_pem + b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in self.chain
        )

    @property
    def key_der(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def thumbprint_sha256(self) -> str:
        return thumbprint(self.cert_der, "sha256")

    @property
    def thumbprint_sha1(self) -> str:
        return thumbprint(self.cert_der, "sha1")


def thumbprint(cert_der: bytes, algorithm: str = "sha256") -> str:
    """Upper-case hex digest of the DER certificate, as IoT Hub registers it."""
    return hashlib.new(algorithm, cert_der).hexdigest().upper()


def _name(cn: str, org: str = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def _new_key(kind: str):
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    raise ValueError("unknown key kind %r" % kind)


def _sign_hash(issuer_key):
    if isinstance(issuer_key, ec.EllipticCurvePrivateKey) and issuer_key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


# Public CAs' certificates carry these too; they are most of a leaf's size.
# Stand-in for the embedded SCT list: same size, a private OID, so that no
# parser (cryptography's included) tries to read random bytes as SCTs.
_SCT_SIZED_OID = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1.1")
_POLICY_OID = x509.ObjectIdentifier("2.23.140.1.2.2")  # CA/B Forum OV


def _public_ca_extensions(builder, issuer_cn: str, leaf: bool):
    """AIA, CRL distribution point, policies (and for a leaf, an SCT-list-sized blob), as public CAs issue."""
    slug = issuer_cn.lower().replace(" ", "")
    builder = builder.add_extension(x509.AuthorityInformationAccess([
        x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.OCSP,
                               x509.UniformResourceIdentifier("http://oneocsp.example.invalid/ocsp")),
        x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                               x509.UniformResourceIdentifier("http://www.example.invalid/pkiops/certs/%s.crt" % slug)),
    ]), critical=False)
    builder = builder.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
        [x509.UniformResourceIdentifier("http://www.example.invalid/pkiops/crl/%s.crl" % slug)],
        None, None, None)]), critical=False)
    builder = builder.add_extension(x509.CertificatePolicies([x509.PolicyInformation(_POLICY_OID, None)]),
                                    critical=False)
    if leaf:
        # Two embedded SCTs are about 240 bytes; mbedTLS skips this non-critical extension.
        blob = bytes([0x04, 0x81, 0xF0]) + os.urandom(0xF0)
        builder = builder.add_extension(x509.UnrecognizedExtension(_SCT_SIZED_OID, blob), critical=False)
    return builder


def _issue(subject, key, issuer: Identity = None, *, ca=False, path_len=None,
           sans=(), eku=None, not_before=None, not_after=None, days=365, public=False):
    not_before = not_before or _now() - datetime.timedelta(hours=1)
    not_after = not_after or not_before + datetime.timedelta(days=days)
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    if ca:
        usage = dict(key_cert_sign=True, crl_sign=True, digital_signature=True)
    else:
        usage = dict(key_cert_sign=False, crl_sign=False, digital_signature=True)
    builder = builder.add_extension(
        x509.KeyUsage(content_commitment=False, key_encipherment=not ca and isinstance(key, rsa.RSAPrivateKey),
                      data_encipherment=False, key_agreement=False, encipher_only=False,
                      decipher_only=False, **usage),
        critical=True,
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), critical=False
        )
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if public and issuer:
        issuer_cn = issuer.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        builder = _public_ca_extensions(builder, issuer_cn, leaf=not ca)
    cert = builder.sign(signer_key, _sign_hash(signer_key))
    chain = ((issuer.cert,) + issuer.chain) if issuer else ()
    # A root is not sent by a server; drop it from the chain a leaf carries.
    chain = tuple(c for c in chain if c.issuer != c.subject)
    return Identity(cert, key, chain)


@dataclass
class ServerPki:
    """One server chain (ECC or RSA) for the emulator, with its trusted root."""

    root: Identity
    issuing: Identity
    leaf: Identity


def make_server_pki(kind: str, hub_host: str = DEFAULT_HUB_HOST, root_cn: str = None) -> ServerPki:
    """Root -> issuing CA -> leaf for hub_host, shaped like the hub's chain of `kind` ("ecc"/"rsa")."""
    if kind == "ecc":
        root_key, issuing_key, leaf_key = "p384", "p384", "p256"
        root_cn = root_cn or "Emulated DigiCert Global Root G3"
        issuing_cn = "Emulated Microsoft ECC TLS Issuing CA 01"
    elif kind == "rsa":
        root_key, issuing_key, leaf_key = "rsa2048", "rsa4096", "rsa2048"
        root_cn = root_cn or "Emulated DigiCert Global Root G2"
        issuing_cn = "Emulated Microsoft Azure RSA TLS Issuing CA 01"
    else:
        raise ValueError("server chain kind must be 'ecc' or 'rsa', not %r" % kind)
    root = _issue(_name(root_cn, "aziot test PKI"), _new_key(root_key), ca=True, days=3650)
    issuing = _issue(_name(issuing_cn, "aziot test PKI"), _new_key(issuing_key), root,
                     ca=True, path_len=0, days=1825, public=True)
    sans = (hub_host,) + tuple(s for s in HUB_SANS if s != hub_host)
    leaf = _issue(_name("*.azure-devices.net"), _new_key(leaf_key), issuing, sans=sans,
                  eku=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], days=180,
                  public=True)
    return ServerPki(root, issuing, leaf)


def make_device_ca(name: str = "aziot test device CA") -> Identity:
    """A CA that signs device certificates (the hub's 'x509_ca' authentication)."""
    return _issue(_name(name, "aziot test PKI"), _new_key("p256"), ca=True, path_len=1, days=3650)


def make_intermediate_ca(name: str, issuer: Identity) -> Identity:
    """A CA under a fleet CA (a production line, a region) that signs devices only (path length 0)."""
    return _issue(_name(name, "aziot test PKI"), _new_key("p256"), issuer, ca=True, path_len=0, days=1825)


def make_device_identity(device_id: str, ca: Identity = None, *, key_kind: str = "p256",
                         not_before=None, not_after=None, days: int = 365) -> Identity:
    """ECC P-256 device key and certificate with CN = device id (self-signed when ca is None)."""
    return _issue(_name(device_id), _new_key(key_kind), ca,
                  eku=[ExtendedKeyUsageOID.CLIENT_AUTH],
                  not_before=not_before, not_after=not_after, days=days)


def load_identity(cert_pem: bytes, key_pem: bytes) -> Identity:
    return Identity(
        x509.load_pem_x509_certificate(cert_pem),
        serialization.load_pem_private_key(key_pem, None),
    )


def write_private(path: str, data: bytes):
    """Create the file owner-only from the start, not chmod'ed after the secret is in it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT


def private_dir(path: str):
    """A folder for keys: made owner-only (0700), or made so if it exists."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)

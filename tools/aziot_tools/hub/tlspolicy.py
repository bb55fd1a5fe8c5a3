"""The hub's TLS policy, enforced with OpenSSL through pyOpenSSL on memory BIOs.

pyOpenSSL rather than CPython's `ssl`: the hub accepts self-signed device
certificates (authenticated afterwards by thumbprint), which needs a verify
callback that `ssl` does not offer.

This is the preview-mode hub ("Transport Layer Security (TLS) support in
IoT Hub", Microsoft Learn: the ECC server certificate and Maximum Fragment
Length are preview features). It holds an ECC and an RSA chain and presents
the ECC one only when the ClientHello offers ECDSA suites and no RSA suites.
OpenSSL picks the certificate from the negotiated suite, so listing the RSA
suites first with server preference gives exactly that; OpenSSL honours MFL
(RFC 6066) by itself. The standard hub, which ignores MFL, is `tlsfront`.
"""

import asyncio
import os
import tempfile

from OpenSSL import SSL

# IoT Hub's TLS 1.2 suites (OpenSSL names), RSA first: see module docstring.
RSA_SUITES = (
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-SHA256",
    "ECDHE-RSA-AES256-SHA384",
)
ECC_SUITES = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-ECDSA-AES256-SHA384",
)

# standard: RSA chain only, MFL ignored, 16 KB records (tlsfront); preview: ECC + RSA chains, MFL honoured.
MODES = ("standard", "preview")


class TlsRefused(Exception):
    """The handshake failed; the message is OpenSSL's reason."""


def make_server_context(ecc_chain, rsa_chain, workdir: str = None) -> SSL.Context:
    """The preview hub's context; ecc_chain / rsa_chain: (chain_pem, key_pem) for the server identities
    (ecc_chain None: the RSA chain for every offer, as DPS has)."""
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_cipher_list(":".join(RSA_SUITES + ECC_SUITES).encode())
    # No renegotiation: the hub's TLS 1.2 endpoint does not offer it (and Go's crypto/tls, the standard
    # mode's server, never does): a client's attempt gets an alert instead of a second handshake.
    ctx.set_options(SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_COMPRESSION | SSL.OP_NO_TICKET
                    | SSL.OP_NO_RENEGOTIATION)
    # Ask for a client certificate but judge it ourselves after the handshake
    # (thumbprint or registered CA), as the hub does at CONNECT.
    ctx.set_verify(SSL.VERIFY_PEER, lambda conn, cert, errnum, depth, ok: True)
    workdir = workdir or tempfile.mkdtemp(prefix="aziot-hub-tls-")
    for kind, (chain_pem, key_pem) in (("ecc", ecc_chain), ("rsa", rsa_chain)) if ecc_chain else (("rsa", rsa_chain),):
        # OpenSSL keeps one chain per key type only when loaded from a file.
        path = os.path.join(workdir, "server-%s.pem" % kind)
        with open(path, "wb") as f:
            f.write(chain_pem)
        ctx.use_certificate_chain_file(path.encode())
        ctx.use_privatekey(_load_key(key_pem))
    return ctx


def _load_key(key_pem: bytes):
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return load_pem_private_key(key_pem, None)


class TlsStream:
    """A server-side TLS connection over an asyncio stream pair, counting bytes."""

    def __init__(self, ctx: SSL.Context, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._conn = SSL.Connection(ctx, None)
        self._conn.set_accept_state()
        self._reader = reader
        self._writer = writer
        self._buf = bytearray()
        self.bytes_in = 0
        self.bytes_out = 0
        self.handshake_bytes = (0, 0)

    async def _flush(self):
        out = bytearray()
        while True:
            try:
                out += self._conn.bio_read(65536)
            except SSL.WantReadError:
                break
        if out:
            self.bytes_out += len(out)
            self._writer.write(bytes(out))
            await self._writer.drain()

    async def _fill(self) -> bool:
        data = await self._reader.read(65536)
        if not data:
            return False
        self.bytes_in += len(data)
        self._conn.bio_write(data)
        return True

    async def handshake(self):
        while True:
            try:
                self._conn.do_handshake()
                break
            except SSL.WantReadError:
                await self._flush()
                if not await self._fill():
                    raise TlsRefused("client closed the connection during the handshake")
            except SSL.Error as e:
                try:
                    await self._flush()  # let the alert reach the client
                except (ConnectionError, OSError):
                    pass
                raise TlsRefused(_reason(e)) from None
        await self._flush()
        self.handshake_bytes = (self.bytes_in, self.bytes_out)

    async def read_exact(self, n: int) -> bytes:
        """n bytes of application data, or ConnectionError at end of stream."""
        while len(self._buf) < n:
            try:
                self._buf += self._conn.recv(65536)
                continue
            except SSL.WantReadError:
                pass
            except SSL.ZeroReturnError:
                raise ConnectionError("client closed TLS") from None
            except SSL.SysCallError as e:
                raise ConnectionError("TLS connection lost: %s" % (e,)) from None
            except SSL.Error as e:
                raise ConnectionError("TLS error: %s" % _reason(e)) from None
            try:
                spoken = self._conn.bio_read(65536)
            except SSL.WantReadError:
                spoken = b""
            if spoken:
                # Once connected, a TLS 1.2 server only speaks when asked to: output produced while
                # reading is the no_renegotiation alert for a client's new ClientHello. Send it, then
                # end the link (stricter than a warning: the hub never renegotiates).
                self.bytes_out += len(spoken)
                self._writer.write(spoken)
                await self._writer.drain()
                raise ConnectionError("client attempted TLS renegotiation (refused with an alert)")
            if not await self._fill():
                raise ConnectionError("client closed the connection")
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    async def write(self, data: bytes):
        view = memoryview(data)
        while view:
            try:
                sent = self._conn.send(view[:16384])
            except SSL.Error as e:
                raise ConnectionError("TLS error: %s" % _reason(e)) from None
            view = view[sent:]
            await self._flush()

    def info(self) -> dict:
        """What was negotiated: version, suite, server key type, client certificate chain."""
        # On a server, OpenSSL's peer chain leaves out the client's own certificate.
        leaf = self._conn.get_peer_certificate(as_cryptography=True)
        peer = ([leaf] if leaf else []) + list(self._conn.get_peer_cert_chain(as_cryptography=True) or [])
        server = self._conn.get_certificate(as_cryptography=True)
        return {
            "version": self._conn.get_protocol_version_name(),
            "cipher": self._conn.get_cipher_name(),
            "server_key": type(server.public_key()).__name__ if server else None,
            "peer_chain": peer,
            "max_fragment_length": None,
        }

    def close(self):
        try:
            self._conn.shutdown()
            out = b""
            try:
                out = self._conn.bio_read(65536)
            except SSL.WantReadError:
                pass
            if out:
                self._writer.write(out)
        except SSL.Error:
            pass
        self._writer.close()


def _reason(err: SSL.Error) -> str:
    """OpenSSL's reason strings, e.g. 'no shared cipher', 'unsupported protocol'."""
    parts = []
    for item in err.args[0] if err.args and isinstance(err.args[0], list) else []:
        if isinstance(item, tuple) and len(item) == 3:
            parts.append(item[2])
    return ", ".join(parts) or str(err) or type(err).__name__

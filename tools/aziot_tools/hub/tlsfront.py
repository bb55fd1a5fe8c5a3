"""The standard hub's TLS: Go's crypto/tls in a helper process, in front of the emulator.

A standard IoT Hub ignores the Maximum Fragment Length extension and sends
records of up to 16 KB (MFL and the ECC certificate are preview features:
"Transport Layer Security (TLS) support in IoT Hub", Microsoft Learn).
OpenSSL, behind pyOpenSSL and CPython's `ssl`, always honours MFL, with no
option to turn it off; Go's crypto/tls does not implement it, so a small Go
program (`tlsfront/main.go`, built with Debian's golang-go) terminates TLS
and hands the emulator one JSON line of handshake facts, then the plaintext.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess

from cryptography import x509

from .. import paths
from .tlspolicy import TlsRefused

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tlsfront", "main.go")

# Go's suite ids (crypto/tls constants) -> the OpenSSL names the preview mode records.
_SUITE_NAMES = {
    0xC02F: "ECDHE-RSA-AES128-GCM-SHA256",
    0xC030: "ECDHE-RSA-AES256-GCM-SHA384",
    0xC027: "ECDHE-RSA-AES128-SHA256",
}
# Go's handshake errors -> OpenSSL's words for the same refusal, so records read alike in both modes.
_REASONS = (
    ("no cipher suite supported by both", "no shared cipher"),
    ("unsupported versions", "unsupported protocol"),
    ("first record does not look like a TLS handshake", "wrong version number"),
)


def binary() -> str:
    """The built front, rebuilt when its source changes; needs `go` (Debian golang-go)."""
    with open(SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    out = os.path.join(paths.BUILD, "tlsfront", digest, "tlsfront")
    if os.path.exists(out):
        return out
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("the standard hub mode needs Go's crypto/tls: install Debian's golang-go "
                           "(`make setup` does), or run the emulator with --mode preview")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    env = dict(os.environ, GOCACHE=os.path.join(paths.BUILD, "go-cache"), GO111MODULE="off", CGO_ENABLED="0")
    tmp = out + ".tmp"
    proc = subprocess.run([go, "build", "-o", tmp, SOURCE], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError("building the TLS front failed: %s" % proc.stderr.strip())
    os.replace(tmp, out)
    return out


class TlsFront:
    """The Go process: listens for devices, dials the emulator's plaintext back end per connection."""

    def __init__(self, chain_path: str, key_path: str):
        self.chain_path = chain_path
        self.key_path = key_path
        self.proc = None
        self.port = None
        # Every report carries it: the back end is a loopback port any local process could reach.
        self.token = os.urandom(16).hex()

    async def start(self, listen_host: str, port: int, backend_port: int):
        self.proc = await asyncio.create_subprocess_exec(
            binary(), "-listen", "%s:%d" % (listen_host, port), "-backend", "127.0.0.1:%d" % backend_port,
            "-chain", self.chain_path, "-key", self.key_path,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        self.proc.stdin.write((self.token + "\n").encode())  # on stdin, not argv: `ps` shows argv
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if not line.startswith(b"listening "):
            await self.stop()
            raise RuntimeError("the TLS front did not start (port %d in use?)" % port)
        self.port = int(line.split()[1].rsplit(b":", 1)[1])

    async def stop(self):
        if self.proc is None:
            return
        self.proc.stdin.close()  # the front exits when its stdin closes
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        self.proc = None


class FrontStream:
    """One device connection as the emulator sees it behind the front: the same interface as TlsStream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str):
        self._token = token
        self._reader = reader
        self._writer = writer
        self._facts = {}
        self.bytes_in = None  # TLS bytes after the handshake are counted by the front only
        self.handshake_bytes = (0, 0)
        self.handshake_ms = None
        self.peer = None

    async def handshake(self):
        try:
            line = await self._reader.readline()
            facts = json.loads(line) if line else None
        except ValueError:  # over the line limit, or not JSON
            facts = None
        if not isinstance(facts, dict) or not hmac.compare_digest(str(facts.get("token")).encode(),
                                                                  self._token.encode()):
            raise TlsRefused("the back end was reached without the TLS front's report")
        self._facts = facts
        self.peer = facts["peer"]
        self.handshake_bytes = (facts["handshake_bytes_in"], facts["handshake_bytes_out"])
        self.handshake_ms = facts["handshake_ms"]
        if not facts["ok"]:
            raise TlsRefused(_reason(facts.get("reason", "")))

    async def read_exact(self, n: int) -> bytes:
        try:
            data = await self._reader.readexactly(n)
        except asyncio.IncompleteReadError:
            raise ConnectionError("client closed the connection") from None
        return data

    async def write(self, data: bytes):
        self._writer.write(data)
        await self._writer.drain()

    def info(self) -> dict:
        chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in self._facts.get("peer_chain") or []]
        return {
            "version": self._facts.get("version"),
            "cipher": _SUITE_NAMES.get(self._facts.get("cipher"), "0x%04X" % (self._facts.get("cipher") or 0)),
            "server_key": "RSAPublicKey",  # the front holds the RSA chain only
            "peer_chain": chain,
            "max_fragment_length": None,  # never negotiated: Go's crypto/tls has no MFL
        }

    def close(self):
        self._writer.close()


def _reason(text: str) -> str:
    for needle, reason in _REASONS:
        if needle in text:
            return reason
    return text.replace("tls: ", "") or "handshake failed"

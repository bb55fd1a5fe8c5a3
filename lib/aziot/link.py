"""TCP, then TLS with a profile's offers in turn, the MQTT CONNECT sent: what the hub and DPS
connections share."""

import gc
import time

from . import tlsconf

try:  # firmware that remembers verified signatures (aziot_tls): aziot.verified keeps them on flash
    from aziot_tls import verify_cache_import  # noqa: F401
except ImportError:
    verified = None  # other firmware: no code in the heap for it
else:
    from . import verified
from .errors import ConnectionLost, TlsError
from .transport import open_socket


class Link:
    """A connected TLS stream and what was agreed for it."""

    __slots__ = ("stream", "sock", "deadline", "profile", "fragment_length", "cipher", "version")

    def __init__(self, stream, sock, deadline, profile, fragment_length):
        self.stream = stream
        self.sock = sock
        self.deadline = deadline  # ticks_ms: the offer that was taken had until then (CONNACK too)
        self.profile = profile
        self.fragment_length = fragment_length  # agreed by the server (0: none)
        self.cipher = self.version = None
        if hasattr(stream, "cipher"):  # not on every firmware
            self.cipher, self.version = stream.cipher()


def open_tls(offers, host, address, port, timeout_s, roots, credentials, mfl_asked, login, deadline,
             verified_file=""):
    """The first offer in `offers` that gets a handshake with host (dialed at address:port).

    credentials: (certificate chain DER or PEM, key DER, certificate path, key path), or Nones.
    verified_file: where the chain signatures the firmware verified are kept across resets.
    An offer refused with a fatal alert (a standard hub and an ECDSA-only offer) is followed by
    the next one, which gets a timeout of its own: the alert showed the server alive.
    """
    cert, key, cert_path, key_path = credentials
    remember = verified and verified_file
    if remember:
        verified.recall(verified_file)
    where = "%s (%s:%d)" % (host, address, port)
    for i, profile in enumerate(offers):
        last = i + 1 == len(offers)
        try:
            ctx = tlsconf.make_context(profile, roots, cert, key, cert_path, key_path)
        except TlsError:
            if last:
                raise
            continue  # a firmware without these suites (e.g. an ECC-only build): make the next offer
        left = time.ticks_diff(deadline, time.ticks_ms())
        if left <= 0:
            raise ConnectionLost("no connection to %s within the %d s timeout" % (where, timeout_s))
        sock = open_socket(address, port, left / 1000)
        named = where + " with profile '%s'" % profile
        try:
            stream = tlsconf.handshake(sock, ctx, host, named, login, deadline)
        except TlsError as e:
            sock.close()
            if e.code == tlsconf.ERR_FATAL_ALERT and not last:
                ctx = None
                gc.collect()  # the refused context's memory, before a board's heap fragments around it
                deadline = time.ticks_add(time.ticks_ms(), timeout_s * 1000)
                continue
            raise
        try:
            agreed = tlsconf.agreed_fragment_length(mfl_asked, named)
        except TlsError:
            stream.close()  # the server could send records this firmware cannot hold
            raise
        if remember:
            verified.keep(verified_file)
        return Link(stream, sock, deadline, profile, agreed)

"""The TLS client context the hub's policy asks for, and the handshake.

TLS 1.2 only, CERT_REQUIRED with SNI and host name verification always on,
roots from flash, the device's X.509 identity, and a cipher profile:
  ecc    - the four ECDHE-ECDSA suites: the hub then presents its ECC chain,
           which is much smaller to receive and verify than the RSA one;
  rsa    - the four ECDHE-RSA suites IoT Hub enforces since 2025;
  compat - the hub's eight suites in one offer (a preview hub then shows
           its RSA chain, as every hub does to an offer with RSA suites).
A ClientHello offering both kinds gets the RSA certificate (hub rule), so
ECC with an RSA fallback is two handshakes, chosen one level up (profiles).
"""

import io
import select
import time

import tls

from .certs import read_der
from .errors import CertificateError, ConfigError, TlsError, oserror_text

try:
    import aziot_tls  # the aziot firmware's MFL hook (firmware/aziot_tls); stock MicroPython has none
except ImportError:
    aziot_tls = None

MFL_SIZES = (512, 1024, 2048, 4096)
_said = []  # the missing-hook notice is printed once per boot

ECC_SUITES = (
    "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
    "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384",
    "TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA256",
    "TLS-ECDHE-ECDSA-WITH-AES-256-CBC-SHA384",
)
RSA_SUITES = (
    "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256",
    "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384",
    "TLS-ECDHE-RSA-WITH-AES-128-CBC-SHA256",
    "TLS-ECDHE-RSA-WITH-AES-256-CBC-SHA384",
)
PROFILES = {"ecc": ECC_SUITES, "rsa": RSA_SUITES, "compat": ECC_SUITES + RSA_SUITES}

# mbedTLS error codes worth a sentence of advice.
ERR_FATAL_ALERT = -0x7780
ERR_BAD_INPUT_DATA = -0x7100
ERR_INVALID_RECORD = -0x7200
_HINTS = {
    ERR_FATAL_ALERT: "the hub sent a fatal alert: it shares no cipher suite with this profile "
                     "('ecc' needs a preview-mode hub, the only kind with an ECC certificate; "
                     "'auto' falls back to RSA) or it refused the TLS version or the client certificate",
    ERR_BAD_INPUT_DATA: "a TLS record larger than the receive buffer arrived: enable "
                        "Maximum Fragment Length or enlarge the mbedTLS IN buffer",
    -0x7880: "the hub closed the connection during the handshake",
    ERR_INVALID_RECORD: "invalid record from the peer (not a TLS server, or corrupted link)",
    -0x6C00: "mbedTLS internal error (out of memory?)",
}


def make_context(profile, root_paths, cert_der, key_der, cert_path="", key_path=""):
    """A client context trusting the roots in root_paths, read from flash one at a time.

    One root's DER is in RAM at a time: mbedTLS keeps its own parsed copy.
    """
    if profile not in PROFILES:
        raise TlsError("unknown cipher profile %r (use one of %s)"
                       % (profile, ", ".join(sorted(PROFILES))))
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_REQUIRED
    for path in root_paths:
        der = read_der(path, "root CA")
        try:
            ctx.load_verify_locations(der)  # each call appends to the trust list
        except (ValueError, OSError) as e:
            raise CertificateError("root CA rejected by mbedTLS (%s): %s" % (_text(e), path))
    if cert_der is not None:
        try:
            ctx.load_cert_chain(cert_der, key_der)
        except (ValueError, OSError) as e:
            if cert_der[:11] == b"-----BEGIN ":  # a chain (leaf + intermediates) goes to mbedTLS as PEM
                raise CertificateError("device certificate chain rejected by mbedTLS (%s): %s; presenting a "
                                       "chain needs PEM parsing (MBEDTLS_PEM_PARSE_C), which MicroPython's own "
                                       "builds have" % (_text(e), cert_path))
            raise CertificateError("device certificate or key rejected by mbedTLS (%s): %s, %s"
                                   % (_text(e), cert_path, key_path))
    try:
        ctx.set_ciphers(list(PROFILES[profile]))
    except (ValueError, OSError) as e:
        raise TlsError("this firmware lacks the %r cipher suites (%s)" % (profile, _text(e)))
    return ctx


def set_max_fragment_length(length, cert_message=0):
    """Ask for RFC 6066 Maximum Fragment Length in the next SSLContext; returns the length in effect.

    length: -1 keeps the firmware's board default, 0 turns it off, else
    512/1024/2048/4096. The device's own Certificate message is never
    fragmented (the hub aborts a handshake whose client chain exceeds the
    length), so a certificate that does not fit is refused here, before
    dialing.
    """
    if aziot_tls is None:
        if length > 0 and not _said:
            _said.append(True)
            print("aziot: max_fragment_length %d needs the aziot firmware (aziot_tls module); this firmware "
                  "lacks it, so TLS records from the hub can be up to 16 KB" % length)
        return 0
    if length >= 0:
        try:
            aziot_tls.set_max_fragment_length(length)
        except ValueError as e:
            raise ConfigError("key 'max_fragment_length': %s" % e)
    length = aziot_tls.max_fragment_length()
    if length and cert_message:
        needed = cert_message  # the device's whole Certificate message: its chain, with the headers
        if needed > length:
            bigger = [m for m in MFL_SIZES if m >= needed]
            raise ConfigError("device certificate needs a %d-byte Certificate message, larger than "
                              "max_fragment_length %d: the hub would abort the handshake; use %s"
                              % (needed, length, "max_fragment_length %d" % bigger[0] if bigger else
                                 "a smaller certificate chain"))
        out_len = aziot_tls.buffer_sizes()[1]
        if needed > out_len:
            raise ConfigError("device certificate needs a %d-byte Certificate message; this firmware's "
                              "TLS send buffer holds %d" % (needed, out_len))
    return length


STANDARD_RECORD = 16384  # what a hub that ignores MFL may send in one record (2^14, RFC 5246)


def agreed_fragment_length(asked, where):
    """The fragment length the hub agreed to in this handshake (0: none).

    A standard IoT Hub ignores the extension and may send 16 KB records: a
    firmware whose receive buffer is smaller is refused here, by name, before
    the first such record can end the link.
    """
    if aziot_tls is None or not hasattr(aziot_tls, "negotiated_max_fragment_length"):
        return 0
    agreed = aziot_tls.negotiated_max_fragment_length() or 0  # None: ServerHello unreadable, same as 0
    in_len = aziot_tls.buffer_sizes()[0]
    if not agreed and in_len < STANDARD_RECORD:
        raise TlsError("%s did not agree to Maximum Fragment Length %s, so it may send records of up to %d "
                       "bytes, and this firmware's receive buffer holds %d: small buffers work only with "
                       "preview-mode hubs; for standard hubs use a firmware with MBEDTLS_SSL_IN_CONTENT_LEN "
                       "%d (the aziot board default)"
                       % (where, asked or "(none asked for)", STANDARD_RECORD, in_len, STANDARD_RECORD))
    return agreed


class DeadlineSocket(io.IOBase):
    """The TCP socket as mbedTLS reads it, refusing to read once `until` (ticks_ms) has passed.

    mbedTLS skips a warning alert and reads the next record inside the same
    call, so a peer that floods alerts (or any records) without a pause never
    lets the caller look at the clock: only the stream mbedTLS reads from can
    stop it. Errors go back to mbedTLS as negative errnos (the stream
    protocol of io.IOBase), never as exceptions through its C frames.
    """

    def __init__(self, sock, until=None):
        self.sock = sock
        self.until = until
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN | select.POLLOUT)

    def readinto(self, buf):
        if self.until is not None and time.ticks_diff(self.until, time.ticks_ms()) <= 0:
            return -_ETIMEDOUT
        try:
            return self.sock.readinto(buf)  # None: would block (non-blocking handshake)
        except OSError as e:
            return -_errno(e)

    def write(self, buf):
        try:
            return self.sock.write(buf)
        except OSError as e:
            return -_errno(e)

    def setblocking(self, flag):
        self.sock.setblocking(flag)

    def ioctl(self, request, arg):
        if request == _MP_STREAM_POLL:
            for _, events in self._poller.ipoll(0):
                return events & (arg | select.POLLERR | select.POLLHUP)
            return 0
        if request == _MP_STREAM_CLOSE:
            self._poller = None
            self.sock.close()
            return 0
        return -_EINVAL


def handshake(sock, ctx, server_hostname, where, first, deadline):
    """Wrap a connected socket and send `first` (the MQTT CONNECT) by `deadline` (ticks_ms).

    mbedTLS's blocking handshake has only the socket's per-read timeout, so a
    peer trickling a byte at a time could hold it for ever. Here the socket
    is non-blocking and the handshake runs inside the first write, waiting
    on poll() no longer than the deadline, and mbedTLS reads through a
    DeadlineSocket, which fails its reads once the deadline has passed. On
    return the socket blocks again, with what is left of the deadline as its
    timeout (for the CONNACK). `where` names the peer (and profile) in errors.
    """
    sock.setblocking(False)
    guarded = DeadlineSocket(sock, deadline)
    try:
        stream = ctx.wrap_socket(guarded, server_hostname=server_hostname, do_handshake_on_connect=False)
        _write_by(stream, first, deadline, where)
    except ValueError as e:
        # MicroPython reports certificate verification failures as ValueError
        # carrying mbedTLS's verify text (unknown root, name mismatch, expiry).
        raise TlsError("server certificate of %s rejected: %s" % (where, _text(e)))
    except OSError as e:
        code = e.args[0] if e.args and isinstance(e.args[0], int) else 0
        if code == _ETIMEDOUT:
            raise _overdue(where)
        raise TlsError(describe_error(e, where), code)
    guarded.until = None  # from here the session's own deadlines apply
    sock.settimeout(max(time.ticks_diff(deadline, time.ticks_ms()), 1) / 1000)
    return stream


def _overdue(where):
    return TlsError("TLS handshake with %s did not finish within the timeout (the peer is too slow "
                    "or trickles its bytes)" % where, _ETIMEDOUT)


def _write_by(stream, data, deadline, where):
    poller = select.poll()
    poller.register(stream, select.POLLOUT)  # the TLS socket turns it into what the handshake waits for
    view = memoryview(data)
    while view:
        n = stream.write(view)  # None: the handshake (or the socket) would block
        if n:
            view = view[n:]
            continue
        left = time.ticks_diff(deadline, time.ticks_ms())
        if left <= 0:
            raise _overdue(where)
        poller.poll(left)


def describe_error(err, where):
    code = err.args[0] if err.args and isinstance(err.args[0], int) else 0
    if code == _ENOMEM:  # mbedTLS could not allocate (on rp2 it allocates from the MicroPython heap)
        return ("TLS handshake with %s failed: out of memory (the handshake needs its receive buffer, up to "
                "16 KB, in one block and 35-45 KB in all; free heap after a collection: %d bytes)"
                % (where, _free_heap()))
    if code >= 0:  # an errno from the socket under TLS, not an mbedTLS code
        return "TLS handshake with %s failed: %s" % (where, oserror_text(err))
    msg = "TLS handshake with %s failed: %s (-0x%04X)" % (where, _text(err), -code)
    hint = _HINTS.get(code)
    if code in (ERR_INVALID_RECORD, ERR_BAD_INPUT_DATA) and aziot_tls is not None:
        # On a firmware with small record buffers the likely cause is a record that does not fit.
        hint = ("a TLS record larger than this firmware's %d-byte receive buffer (max_fragment_length %s): "
                "enable it, or build with a larger MBEDTLS_SSL_IN_CONTENT_LEN"
                % (aziot_tls.buffer_sizes()[0], aziot_tls.max_fragment_length() or "off"))
    return msg + ("; " + hint if hint else "")


_ENOMEM = 12
_EINVAL = 22
_ETIMEDOUT = 110
_MP_STREAM_POLL = 3  # MicroPython's stream ioctl requests (py/stream.h)
_MP_STREAM_CLOSE = 4


def _errno(err):
    code = err.args[0] if err.args and isinstance(err.args[0], int) else 0
    return code if 0 < code < 256 else 5  # EIO: mbedTLS reads a code below -256 as its own


def _free_heap():
    import gc

    gc.collect()
    return gc.mem_free()


def _text(err):
    parts = [a for a in err.args if isinstance(a, str)]
    if parts:
        return " ".join(p.strip() for p in parts)
    return " ".join(str(a) for a in err.args) or type(err).__name__

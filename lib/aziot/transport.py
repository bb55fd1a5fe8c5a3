"""The TCP link under TLS: dialing, and one TLS record per MQTT packet.

Kept apart from the MQTT session so that each module stays small enough to
compile from source in a board's heap.
"""

import select
import socket
import time

from .errors import ConnectionLost, oserror_text


class PacketStream:
    """Gathers the small writes umqtt.simple makes for one packet into one TLS record.

    umqtt.simple writes a PUBLISH in four or five pieces; on a TLS socket each
    is a record of its own (29 bytes of AES-GCM overhead each) and, with
    Nagle's algorithm against a delayed ACK, a 40 ms stall per message. The
    gathered bytes go out before any read, or on flush().
    """

    LIMIT = 1024  # larger writes (payloads) pass straight through

    def __init__(self, sock, raw_sock=None, timeout=None):
        self._sock = sock
        self._raw = raw_sock  # the TCP socket under TLS, to restore its timeout
        self._timeout = timeout
        self.blocking = True
        self._poller = None
        self._buf = bytearray(self.LIMIT)
        self._len = 0
        # ticks_ms by which the awaited packet must be in, and its name: while set, each blocking
        # read waits no longer than what is left, so a peer trickling bytes cannot stretch the wait.
        self.deadline = None
        self.waiting_for = None

    def expect_by(self, deadline, what):
        """Bound the reads from now on by deadline (None: by the socket timeout alone)."""
        if deadline is None and self.deadline is not None and self._raw is not None and self._timeout:
            try:
                self._raw.settimeout(self._timeout)  # not what was left: later writes need the whole timeout
            except OSError:
                pass  # closed meanwhile (a refused login)
        self.deadline = deadline
        self.waiting_for = what

    def write(self, data, length=None):
        if isinstance(data, str):
            data = data.encode()
        if length is not None:
            data = memoryview(data)[:length]
        n = len(data)
        if self._len + n > self.LIMIT:
            self.flush()
            if n > self.LIMIT:
                return self._sock.write(data)
        self._buf[self._len:self._len + n] = data
        self._len += n
        return n

    def overdue(self):
        """The error for a deadline that passed while waiting."""
        return ConnectionLost("no %s within %d s: the hub sent other packets or trickled bytes meanwhile"
                              % (self.waiting_for, self._timeout or 15))

    def flush(self):
        if self._len:
            self._sock.write(memoryview(self._buf)[:self._len])
            self._len = 0

    def read(self, n):
        self.flush()
        if self.deadline is not None and self.blocking:
            left = time.ticks_diff(self.deadline, time.ticks_ms())
            if left <= 0:
                raise self.overdue()
            if self._raw is not None:
                self._raw.settimeout(min(self._timeout or 600, left / 1000))
        return self._sock.read(n)

    def setblocking(self, flag):
        """umqtt.simple switches to blocking after each check_msg(); here that keeps the timeout.

        On ESP32 and lwIP ports setblocking(True) means wait for ever, so a
        black-holed link would hang a read; the configured timeout ends it.
        """
        self._sock.setblocking(flag)
        self.blocking = flag
        if flag and self._raw is not None and self._timeout:
            self._raw.settimeout(self._timeout)

    def poll_readable(self, timeout_ms):
        """True when a read would find data: in the socket, or decrypted and buffered by TLS."""
        self.flush()
        if self._poller is None:  # made once: poll() runs in the application's main loop
            self._poller = select.poll()
            self._poller.register(self._sock, select.POLLIN)
        return bool(self._poller.poll(timeout_ms))

    def close(self):
        try:
            self.flush()  # umqtt.simple's disconnect() writes DISCONNECT then closes
        finally:
            self._len = 0
            self._sock.close()


def _no_delay(sock):
    """Disable Nagle where the port allows it (Linux, ESP-IDF); others ignore it."""
    try:
        sock.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY: MicroPython names neither
    except (OSError, AttributeError, TypeError):
        pass


def open_socket(address, port, timeout):
    """A TCP socket connected to address:port, with a blocking timeout."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(address, port, 0, socket.SOCK_STREAM)[0]
    except OSError as e:
        raise ConnectionLost("cannot resolve %s: %s" % (address, oserror_text(e)))
    sock = socket.socket(family, kind, proto)
    sock.settimeout(timeout)
    try:
        sock.connect(addr)
    except OSError as e:
        sock.close()
        raise ConnectionLost("cannot connect to %s:%d: %s" % (address, port, oserror_text(e)))
    _no_delay(sock)
    return sock


def _read_some(stream, n, what):
    try:
        chunk = stream.read(n)
    except OSError as e:
        raise ConnectionLost("connection lost while waiting for %s: %s" % (what, oserror_text(e)))
    if chunk is None:  # a blocking read whose timeout passed (TLS reports it as "would block")
        raise ConnectionLost("timed out waiting for %s" % what)
    if not chunk:
        raise ConnectionLost("the hub closed the connection instead of sending %s" % what)
    return chunk


def read_exact(stream, n, what):
    """n bytes; one read (and no copy) in the usual case of a blocking stream."""
    data = _read_some(stream, n, what)
    if len(data) == n:
        return data
    buf = bytearray(data)
    while len(buf) < n:
        buf.extend(_read_some(stream, n - len(buf), what))
    return bytes(buf)

"""MQTT over the TLS socket: our CONNECT, then umqtt.simple for the session.

umqtt.simple (micropython-lib) dials its own socket and cannot send a user
name without a password; IoT Hub's X.509 login needs exactly that, and the
TLS wrap must use our SSLContext on every umqtt.simple release (1.3.4 on
PyPI imports `ussl`, boards' 1.8 takes `ssl=`). So the transport dials,
wraps and logs in itself, then hands the socket to MQTTClient.
"""

import socket

from umqtt.simple import MQTTClient

from . import protocol
from .errors import ConnectionLost, ConnectionRefused, ProtocolError, oserror_text


class PacketStream:
    """Gathers the small writes umqtt.simple makes for one packet into one TLS record.

    umqtt.simple writes a PUBLISH in four or five pieces; on a TLS socket each
    is a record of its own (29 bytes of AES-GCM overhead each) and, with
    Nagle's algorithm against a delayed ACK, a 40 ms stall per message. The
    gathered bytes go out before any read, or on flush().
    """

    LIMIT = 1024  # larger writes (payloads) pass straight through

    def __init__(self, sock):
        self._sock = sock
        self._buf = bytearray(self.LIMIT)
        self._len = 0

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

    def flush(self):
        if self._len:
            self._sock.write(memoryview(self._buf)[:self._len])
            self._len = 0

    def read(self, n):
        self.flush()
        return self._sock.read(n)

    def setblocking(self, flag):
        self._sock.setblocking(flag)

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


def _read_exact(stream, n, what):
    buf = b""
    while len(buf) < n:
        try:
            chunk = stream.read(n - len(buf))
        except OSError as e:
            raise ConnectionLost("connection lost while waiting for %s: %s" % (what, oserror_text(e)))
        if not chunk:
            raise ConnectionLost("the hub closed the connection instead of sending %s" % what)
        buf += chunk
    return buf


def _login(stream, client_id, username, password, keepalive, clean_session):
    """CONNECT, then CONNACK; returns session-present or raises with the hub's reason."""
    try:
        stream.write(protocol.connect_packet(client_id, username, password, keepalive, clean_session))
        stream.flush()
    except OSError as e:
        raise ConnectionLost("connection lost while sending CONNECT: %s" % oserror_text(e))
    session_present, code = protocol.parse_connack(_read_exact(stream, 4, "CONNACK"))
    if code:
        raise ConnectionRefused(code, protocol.CONNACK_MEANINGS.get(code, "unknown code"))
    return session_present


def _close_quietly(stream):
    try:
        stream.close()
    except OSError:
        pass


class MqttSession:
    """One logged-in MQTT 3.1.1 session on a TLS stream."""

    def __init__(self, tls_sock, client_id, username, password=None, keepalive=60,
                 clean_session=False):
        stream = PacketStream(tls_sock)
        try:
            self.session_present = _login(stream, client_id, username, password, keepalive, clean_session)
        except Exception:
            _close_quietly(stream)  # a failed login must not leak the socket
            raise
        client = MQTTClient(client_id, "", keepalive=keepalive)
        client.sock = stream
        self._client = client

    def publish(self, topic, payload, qos=1):
        """Returns once sent (QoS 0) or acknowledged by the hub (QoS 1)."""
        if qos not in (0, 1):
            raise ValueError("IoT Hub accepts QoS 0 or 1 only, not %r" % (qos,))
        try:
            self._client.publish(topic, payload, qos=qos)
            self._client.sock.flush()  # QoS 0 reads nothing that would flush it
        except OSError as e:
            self.close()
            raise ConnectionLost("connection lost while publishing to %s: %s" % (topic, oserror_text(e)))
        except (AssertionError, IndexError):
            self.close()
            raise ProtocolError("malformed packet from the hub while publishing")

    def disconnect(self):
        try:
            self._client.disconnect()
        except OSError:
            self.close()

    def close(self):
        _close_quietly(self._client.sock)

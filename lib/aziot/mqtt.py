"""MQTT over the TLS stream: our CONNECT, then umqtt.simple for the session.

umqtt.simple (micropython-lib) dials its own socket and cannot send a user
name without a password; IoT Hub's X.509 login needs exactly that, and the
TLS wrap must use our SSLContext on every umqtt.simple release (1.3.4 on
PyPI imports `ussl`, boards' 1.8 takes `ssl=`). So the transport dials,
wraps and logs in itself, then hands the socket to MQTTClient.
"""

import time

from umqtt.simple import MQTTClient, MQTTException

from . import protocol
from .errors import ConnectionLost, ConnectionRefused, ProtocolError, oserror_text
from .transport import PacketStream, read_exact

_EAGAIN = 11  # MicroPython uses Linux errno numbers on every port
INBOX_MESSAGES = 16  # messages held while a PUBACK, SUBACK or twin answer is awaited
_TWIN_RESPONSE = "$iothub/twin/res/"


def _text(topic):
    return topic.decode() if isinstance(topic, (bytes, bytearray)) else topic


def _await_connack(stream):
    """CONNACK to the CONNECT sent with the handshake; returns session-present or raises with the hub's reason."""
    session_present, code = protocol.parse_connack(read_exact(stream, 4, "CONNACK"))
    if code:
        raise ConnectionRefused(code, protocol.CONNACK_MEANINGS.get(code, "unknown code"))
    return session_present


def _close_quietly(stream):
    try:
        stream.close()
    except OSError:
        pass



class Inbound:
    """A PUBLISH from the hub, read whole (or skipped whole when too large)."""

    __slots__ = ("topic", "payload", "size", "packet_id", "deferred")

    def __init__(self, topic, payload, size, packet_id):
        self.deferred = False  # skipped for want of room while waiting, not for its size
        self.topic = topic  # str; None when the hub sent one that is not UTF-8
        self.payload = payload  # bytes; None when size exceeded the limit and it was skipped
        self.size = size
        self.packet_id = packet_id  # QoS 1: acknowledge after handling; None for QoS 0


class _Client(MQTTClient):
    """umqtt.simple with a reader that bounds and checks what the hub sends.

    umqtt.simple's own reader trusts the peer: it allocates whatever length
    arrives, skips unknown packets by desynchronising, and acknowledges a
    QoS 1 message before the application has seen it. This one keeps its
    contract with publish()/subscribe() (return the type byte of PUBACK and
    SUBACK, leaving the rest to them) and queues each PUBLISH whole.
    """

    def setup(self, max_message, inbox, timeout_s=15):
        self.max_message = max_message
        self.inbox = inbox
        self.ping_sent = None
        self.cb = inbox.append  # subscribe() insists on a callback
        self.timeout_ms = (timeout_s or 15) * 1000
        # An overall deadline for what is being waited for (a PUBACK, a SUBACK, the rest of a packet),
        # kept by the stream: each read has the socket's timeout, but a peer that trickles bytes or
        # sends other packets (PINGRESP) meanwhile would otherwise hold the caller for ever.
        self.until = None  # ticks_ms no wait may pass (connect() sets it for its own duration)

    def _expect_by(self, what):
        if self.sock.deadline is None:
            deadline = time.ticks_add(time.ticks_ms(), self.timeout_ms)
            if self.until is not None and time.ticks_diff(self.until, deadline) < 0:
                deadline = self.until
            self.sock.expect_by(deadline, what)

    def _read(self, n, what):
        return read_exact(self.sock, n, what)

    def _remaining_length(self):
        n = 0
        for shift in (0, 7, 14, 21):
            b = self._read(1, "a packet length")[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
        raise ProtocolError("MQTT remaining length longer than 4 bytes")

    def wait_msg(self):
        own = self.sock.deadline is None  # not inside publish()/subscribe(): a deadline for this packet only
        try:
            return self._wait_msg()
        finally:
            if own:
                self.sock.expect_by(None, None)

    def _wait_msg(self):
        sock = self.sock
        waiting = sock.blocking  # False inside check_msg(): "nothing yet" is then a fine answer
        try:
            first = sock.read(1)
        except OSError as e:
            if e.args and e.args[0] in (_EAGAIN, 110):
                first = None
            else:
                raise
        sock.setblocking(True)
        if first is None:
            if waiting:  # blocked for a PUBACK/SUBACK and the timeout passed: the link is dead
                raise sock.overdue() if sock.deadline is not None else ConnectionLost(
                    "no answer from the hub within the timeout")
            return None
        if not first:
            raise ConnectionLost("the hub closed the connection")
        self._expect_by("whole packet")
        self.ping_sent = None  # anything from the hub shows the link is alive
        op = first[0]
        kind = op & 0xF0
        if kind == 0x30:
            self._read_publish(op)
            return 0x30
        if kind in (0x40, 0x90):  # PUBACK, SUBACK: publish()/subscribe() read the rest
            return op
        if op == 0xD0:  # PINGRESP
            if self._read(1, "PINGRESP")[0] != 0:
                raise ProtocolError("PINGRESP with a body")
            return op
        raise ProtocolError("unexpected MQTT packet type %d from the hub" % (op >> 4))

    def _read_publish(self, op):
        qos = (op >> 1) & 3
        if qos > 1:
            raise ProtocolError("PUBLISH with QoS %d from the hub (it sends 0 or 1)" % qos)
        size = self._remaining_length()
        header = 2 + (2 if qos else 0)
        if size < header:
            raise ProtocolError("PUBLISH of %d bytes is too short for its header" % size)
        n = self._read(2, "a topic length")
        topic_len = n[0] << 8 | n[1]
        if header + topic_len > size:
            raise ProtocolError("PUBLISH topic length %d exceeds the packet" % topic_len)
        if topic_len > self.max_message:  # a topic is not read into memory beyond the limit either
            self._skip(topic_len)
            topic = None
        else:
            topic = self._read(topic_len, "a topic")
            try:
                topic = topic.decode()
            except UnicodeError:
                # Read on to the packet's end: the stream stays in step, and a QoS 1 message is then
                # acknowledged as refused instead of coming back at every reconnect.
                topic = None
        packet_id = None
        if qos:
            n = self._read(2, "a packet id")
            packet_id = n[0] << 8 | n[1]
        size -= header + topic_len
        # The topic carries the properties: both count against max_message. And what waits in the
        # inbox (messages that came during a PUBACK, SUBACK or twin wait) stays within a budget of
        # INBOX_MESSAGES and twice max_message, so a flood cannot exhaust the heap: beyond it a
        # message is skipped and marked deferred (a C2D is then left for the hub to send again).
        deferred = (len(self.inbox) >= INBOX_MESSAGES or self.held_bytes() + size > 2 * self.max_message) and not (
            topic and topic.startswith(_TWIN_RESPONSE))  # what a request waits for is never deferred
        if topic_len + size > self.max_message or deferred:
            self._skip(size)  # whole, in small pieces, so the stream stays usable
            payload = None
        else:
            payload = self._read(size, "a message") if size else b""
        msg = Inbound(topic, payload, size, packet_id)
        msg.deferred = deferred and payload is None and topic_len + size <= self.max_message
        self.cb(msg)

    def held_bytes(self):
        return sum(m.size for m in self.inbox if m.payload is not None)

    def _skip(self, n):
        while n:
            n -= len(self._read(min(n, 256), "a message"))

    def _wrap_packet_id(self):
        # umqtt.simple counts packet ids up without end; MQTT 3.1.1 (2.3.1) allows 1..65535, and a
        # 65,536th packet would go out as 0. The next id after 65535 is 1.
        if self.pid >= 65535:
            self.pid = 0

    def publish(self, topic, msg, retain=False, qos=0):
        self._wrap_packet_id()
        if qos:
            self._expect_by("PUBACK")
        try:
            return super().publish(topic, msg, retain, qos)
        finally:
            self.sock.expect_by(None, None)

    def publish_nowait(self, topic, msg):
        """A QoS 1 PUBLISH whose PUBACK a later read takes; returns its packet id."""
        self._wrap_packet_id()
        self.pid += 1
        self.sock.write(protocol.publish_head(topic, len(msg), self.pid))
        self.sock.write(msg)
        self.sock.flush()
        return self.pid

    def subscribe(self, topic, qos=0):
        self._wrap_packet_id()
        self._expect_by("SUBACK")
        try:
            return super().subscribe(topic, qos)
        finally:
            self.sock.expect_by(None, None)

    def puback(self, packet_id):
        self.sock.write(bytes((0x40, 2, packet_id >> 8, packet_id & 255)))
        self.sock.flush()


class MqttSession:
    """One logged-in MQTT 3.1.1 session on a TLS stream.

    Messages the hub publishes are read whole into `inbox` (a list of
    Inbound) whenever the session reads: while waiting for a PUBACK, a
    SUBACK, or in pump(). The caller takes them from there, so no handler
    ever runs inside a publish.
    """

    def __init__(self, tls_sock, client_id, keepalive=60, max_message=16384, raw_sock=None, timeout=None,
                 deadline=None):
        """tls_sock has carried the CONNECT (tlsconf.handshake sends it); the CONNACK is due by deadline."""
        stream = PacketStream(tls_sock, raw_sock, timeout)
        self.inbox = []
        client = _Client(client_id, "", keepalive=keepalive)
        client.sock = stream
        client.setup(max_message, self.inbox, timeout)
        client.until = deadline
        client._expect_by("CONNACK")
        try:
            self.session_present = _await_connack(stream)
        except Exception:
            _close_quietly(stream)  # a failed login must not leak the socket
            raise
        finally:
            stream.expect_by(None, None)
        self._client = client
        self.last_sent = time.ticks_ms()
        self.closed = False
        # One QoS 1 PUBLISH may be in flight while the caller goes on (poll() sending the queue):
        # its packet id, when it went out, and whether its PUBACK has been read.
        self.in_flight = None
        self.in_flight_sent = 0
        self.in_flight_acked = False

    def end_of_connect(self):
        """connect() is over: from now on each wait has the timeout of its own."""
        self._client.until = None

    @property
    def ping_sent(self):
        """ticks_ms of a PINGREQ not yet answered (by PINGRESP or any other packet), else None."""
        return self._client.ping_sent

    def _check_open(self, doing):
        if self.closed:
            raise ConnectionLost("connection lost while %s: the connection is closed" % doing)

    def _failed(self, doing, err):
        self.close()
        if isinstance(err, OSError):
            return ConnectionLost("connection lost while %s: %s" % (doing, oserror_text(err)))
        if isinstance(err, ConnectionLost):
            return ConnectionLost("connection lost while %s: %s" % (doing, err))
        if isinstance(err, (AssertionError, IndexError)):
            return ProtocolError("malformed packet from the hub while %s" % doing)
        return err  # ProtocolError / ConnectionLost from the reader

    def publish(self, topic, payload, qos=1):
        """Returns once sent (QoS 0) or acknowledged by the hub (QoS 1)."""
        if qos not in (0, 1):
            raise ValueError("IoT Hub accepts QoS 0 or 1 only, not %r" % (qos,))
        doing = "publishing to %s" % _text(topic)
        self._check_open(doing)
        if qos:
            self.await_in_flight()  # umqtt.simple's PUBACK wait would read past another's PUBACK
        try:
            self._client.publish(topic, payload, qos=qos)
            self._client.sock.flush()  # QoS 0 reads nothing that would flush it
        except (OSError, AssertionError, IndexError, ProtocolError, ConnectionLost) as e:
            raise self._failed(doing, e)
        self.last_sent = time.ticks_ms()

    def publish_nowait(self, topic, payload):
        """Send a QoS 1 PUBLISH and return: pump() reads its PUBACK (in_flight_acked)."""
        doing = "publishing to %s" % _text(topic)
        self._check_open(doing)
        self.await_in_flight()
        try:
            self.in_flight = self._client.publish_nowait(topic, payload)
        except (OSError, ProtocolError, ConnectionLost) as e:
            raise self._failed(doing, e)
        self.in_flight_acked = False
        self.last_sent = self.in_flight_sent = time.ticks_ms()

    def in_flight_overdue(self):
        """True when the PUBACK of the message in flight is later than the timeout and nothing read is
        left unread (it could be in there), or later than twice the timeout whatever else arrives."""
        if self.in_flight is None or self.in_flight_acked:
            return False
        late = time.ticks_diff(time.ticks_ms(), self.in_flight_sent) - self._client.timeout_ms
        return late > self._client.timeout_ms or (late > 0 and not self._client.sock.poll_readable(0))

    def take_in_flight(self):
        """True (and nothing in flight any more) once the PUBACK of the message in flight was read."""
        if self.in_flight is None or not self.in_flight_acked:
            return False
        self.in_flight = None
        return True

    def await_in_flight(self):
        """Block until the message in flight is acknowledged, `timeout` after it was sent at the latest."""
        if self.in_flight is None or self.in_flight_acked:
            return
        self.pump(0)  # it may have come while nobody read: a deadline passed since is no verdict yet
        if self.in_flight_acked:
            return
        client = self._client
        client.sock.expect_by(time.ticks_add(self.in_flight_sent, client.timeout_ms), "PUBACK")
        try:
            while not self.in_flight_acked:
                op = client.wait_msg()
                if op is not None and op & 0xF0 in (0x40, 0x90):
                    self._read_ack(op)
        except (OSError, AssertionError, IndexError, ProtocolError, ConnectionLost) as e:
            raise self._failed("waiting for a PUBACK", e)
        finally:
            client.sock.expect_by(None, None)

    def subscribe(self, topic, qos=0):
        """Returns once the hub granted it; the hub answers 0x80 to a topic it does not serve."""
        doing = "subscribing to %s" % _text(topic)
        self._check_open(doing)
        self.await_in_flight()  # umqtt.simple's SUBACK wait would leave a PUBACK half read
        try:
            self._client.subscribe(topic, qos)
        except (OSError, AssertionError, IndexError, ProtocolError, ConnectionLost) as e:
            raise self._failed(doing, e)
        except MQTTException as e:  # umqtt.simple raises it with SUBACK's return code: the peer refused
            raise self._failed(doing, ProtocolError("the hub refused the subscription to %s (SUBACK return "
                                                    "code 0x%02X)" % (_text(topic), e.args[0])))
        self.last_sent = time.ticks_ms()

    def acknowledge(self, packet_id):
        self._check_open("acknowledging a message")
        try:
            self._client.puback(packet_id)
        except OSError as e:
            raise self._failed("acknowledging a message", e)

    def ping(self):
        self._check_open("sending PINGREQ")
        try:
            self._client.ping()
            self._client.sock.flush()
        except OSError as e:
            raise self._failed("sending PINGREQ", e)
        self.last_sent = self._client.ping_sent = time.ticks_ms()

    def pump(self, timeout_ms=0, limit=16, leave_when_full=False):
        """Read what has arrived into inbox, waiting up to timeout_ms for the first packet.

        Reads on while data is buffered (two packets in one TLS record), up
        to limit packets. leave_when_full: stop once the inbox holds
        max_message bytes, leaving the rest in the socket for the next call
        (poll() has nothing else to wait for, so it need not defer anything).
        Returns the number of packets read.
        """
        client = self._client
        count = 0
        start = time.ticks_ms()
        try:
            # Each packet that has begun gets the whole timeout to finish; no new one starts after timeout_ms.
            while count < limit and client.sock.poll_readable(timeout_ms if count == 0 else 0):
                if count and time.ticks_diff(time.ticks_ms(), start) >= timeout_ms:
                    break
                if leave_when_full and count and client.held_bytes() >= client.max_message:
                    break
                op = client.check_msg()
                if op is None:
                    break  # readable, but no whole TLS record yet
                count += 1
                if op & 0xF0 in (0x40, 0x90):  # the PUBACK of the message in flight, or a late one
                    self._read_ack(op)
        except (OSError, AssertionError, IndexError, ProtocolError, ConnectionLost) as e:
            raise self._failed("reading from the hub", e)
        return count

    def _read_ack(self, op):
        client = self._client
        n = client._remaining_length()
        if n > 4:
            raise ProtocolError("acknowledgement of %d bytes from the hub" % n)
        body = client._read(n, "an acknowledgement")
        if op & 0xF0 == 0x40 and n == 2 and (body[0] << 8 | body[1]) == self.in_flight:
            self.in_flight_acked = True

    def disconnect(self):
        self.closed = True
        try:
            self._client.disconnect()
        except OSError:
            self.close()

    def close(self):
        self.closed = True
        _close_quietly(self._client.sock)

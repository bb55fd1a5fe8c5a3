"""MQTT 3.1.1 packets for the emulator: read from a stream, parse, encode."""

import struct
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14

MAX_PACKET = 256 * 1024 + 4096  # hub limit: 256 KB messages, plus topic


class MalformedPacket(Exception):
    pass


@dataclass
class Packet:
    kind: int
    flags: int
    body: bytes


async def read_packet(read_exact) -> Packet:
    """read_exact(n) -> bytes; raises MalformedPacket on a bad length."""
    first = (await read_exact(1))[0]
    length = 0
    for shift in (0, 7, 14, 21):
        byte = (await read_exact(1))[0]
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
    else:
        raise MalformedPacket("remaining length longer than 4 bytes")
    if length > MAX_PACKET:
        raise MalformedPacket("packet of %d bytes exceeds the hub's limit" % length)
    body = await read_exact(length) if length else b""
    return Packet(first >> 4, first & 0x0F, body)


class _Reader:
    def __init__(self, body: bytes):
        self.body = body
        self.pos = 0

    def u8(self):
        if self.pos + 1 > len(self.body):
            raise MalformedPacket("truncated packet")
        self.pos += 1
        return self.body[self.pos - 1]

    def u16(self):
        if self.pos + 2 > len(self.body):
            raise MalformedPacket("truncated packet")
        (v,) = struct.unpack_from("!H", self.body, self.pos)
        self.pos += 2
        return v

    def binary(self):
        n = self.u16()
        if self.pos + n > len(self.body):
            raise MalformedPacket("truncated string field")
        self.pos += n
        return self.body[self.pos - n:self.pos]

    def text(self):
        try:
            return self.binary().decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedPacket("string field is not UTF-8") from None

    def rest(self):
        return self.body[self.pos:]


@dataclass
class Connect:
    protocol_level: int
    clean_session: bool
    keepalive: int
    client_id: str
    username: str = None
    password: bytes = None
    will_topic: str = None


def parse_connect(body: bytes) -> Connect:
    r = _Reader(body)
    name = r.text()
    level = r.u8()
    if name != "MQTT":
        raise MalformedPacket("protocol name %r is not MQTT" % name)
    flags = r.u8()
    keepalive = r.u16()
    c = Connect(level, bool(flags & 0x02), keepalive, r.text())
    if flags & 0x04:
        c.will_topic = r.text()
        r.binary()
    if flags & 0x80:
        c.username = r.text()
    if flags & 0x40:
        c.password = r.binary()
    return c


@dataclass
class Publish:
    topic: str
    payload: bytes
    qos: int
    packet_id: int = None
    retain: bool = False
    dup: bool = False


def parse_publish(flags: int, body: bytes) -> Publish:
    r = _Reader(body)
    qos = (flags >> 1) & 3
    topic = r.text()
    packet_id = r.u16() if qos else None
    return Publish(topic, r.rest(), qos, packet_id, bool(flags & 1), bool(flags & 8))


def parse_subscribe(body: bytes):
    """(packet_id, [(topic_filter, qos)])"""
    r = _Reader(body)
    packet_id = r.u16()
    topics = []
    while r.pos < len(body):
        topics.append((r.text(), r.u8()))
    if not topics:
        raise MalformedPacket("SUBSCRIBE without topics")
    return packet_id, topics


def parse_unsubscribe(body: bytes):
    """(packet_id, [topic_filter])"""
    r = _Reader(body)
    packet_id = r.u16()
    topics = []
    while r.pos < len(body):
        topics.append(r.text())
    if not topics:
        raise MalformedPacket("UNSUBSCRIBE without topics")
    return packet_id, topics


def parse_puback(body: bytes) -> int:
    if len(body) != 2:
        raise MalformedPacket("PUBACK of %d bytes" % len(body))
    return struct.unpack("!H", body)[0]


def string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("!H", len(data)) + data


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        digit, n = n & 0x7F, n >> 7
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def encode(kind: int, flags: int, body: bytes = b"") -> bytes:
    return bytes([(kind << 4) | flags]) + _remaining_length(len(body)) + body


def connack(code: int, session_present: bool = False) -> bytes:
    return encode(CONNACK, 0, bytes([1 if session_present and code == 0 else 0, code]))


def puback(packet_id: int) -> bytes:
    return encode(PUBACK, 0, struct.pack("!H", packet_id))


def suback(packet_id: int, codes) -> bytes:
    return encode(SUBACK, 0, struct.pack("!H", packet_id) + bytes(codes))

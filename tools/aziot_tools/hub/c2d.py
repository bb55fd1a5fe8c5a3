"""Cloud-to-device messages as the hub queues them ("Send cloud-to-device messages from an IoT hub", Microsoft Learn).

Each device has a queue of at most 50 messages of at most 64 KB. A message
stays queued until the device acknowledges its delivery (PUBACK), so one
sent while the device is offline, or lost with a dropped link, is
delivered at the next connection that subscribes.
"""

import itertools
import threading
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote

MAX_PENDING = 50
MAX_SIZE = 64 * 1024


class QueueFull(Exception):
    pass


@dataclass(eq=False)  # identity, not value: two sends of equal content are two messages
class C2DMessage:
    device_id: str
    payload: bytes
    message_id: str
    properties: dict = field(default_factory=dict)  # application properties
    system: dict = field(default_factory=dict)  # $.cid, $.ct, $.ce, $.exp, ...
    ack: str = "none"
    deliveries: int = 0  # how often it was sent; > 1 means redelivered

    def topic(self) -> str:
        """`devices/{d}/messages/devicebound/{bag}` with the hub's system properties first."""
        pairs = [("$.mid", self.message_id), ("$.to", "/devices/%s/messages/deviceBound" % self.device_id)]
        pairs += [(k, v) for k, v in self.system.items() if v is not None]
        pairs.append(("iothub-ack", self.ack))
        pairs += list(self.properties.items())
        bag = "&".join(quote(k, safe="") + ("" if v is None else "=" + quote(str(v), safe="")) for k, v in pairs)
        return "devices/%s/messages/devicebound/%s" % (self.device_id, bag)


class C2DQueues:
    """Per-device queues; safe to use from the service thread and the event loop."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending = {}  # device id -> [C2DMessage] in send order
        self._completed = []  # acknowledged by the device
        self._ids = itertools.count(1)

    def enqueue(self, device_id: str, payload: bytes, properties: dict = None, message_id: str = None,
                correlation_id: str = None, content_type: str = None, content_encoding: str = None,
                expiry: str = None, ack: str = "none") -> C2DMessage:
        if len(payload) > MAX_SIZE:
            raise ValueError("C2D message of %d bytes exceeds the hub's %d" % (len(payload), MAX_SIZE))
        for name in properties or {}:
            if name.startswith("$") or name == "iothub-ack":
                raise ValueError("application property %r uses a name reserved by the hub" % name)
        msg = C2DMessage(device_id, bytes(payload), message_id or str(uuid.uuid4()), dict(properties or {}),
                         {"$.cid": correlation_id, "$.ct": content_type, "$.ce": content_encoding,
                          "$.exp": expiry}, ack)
        with self._lock:
            queue = self._pending.setdefault(device_id, [])
            if len(queue) >= MAX_PENDING:
                raise QueueFull("device %r already has %d messages waiting" % (device_id, MAX_PENDING))
            queue.append(msg)
        return msg

    def pending(self, device_id: str) -> list:
        with self._lock:
            return list(self._pending.get(device_id, ()))

    def complete(self, msg: C2DMessage):
        with self._lock:
            queue = self._pending.get(msg.device_id, [])
            if msg in queue:
                queue.remove(msg)
                self._completed.append(msg)

    def completed(self, device_id: str = None) -> list:
        with self._lock:
            return [m for m in self._completed if device_id is None or m.device_id == device_id]

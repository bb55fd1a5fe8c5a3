"""QoS 1 telemetry waiting for the hub: a bounded FIFO in RAM, optionally mirrored on flash.

Bounded by message count and payload bytes. On overflow the policy drops
the oldest message (fresh readings matter more; the default) or refuses the
newest; either way the drop is counted and handed to the owner's
on_dropped callback, never silent. With a file path the queue is written
to flash while messages wait, so that a reset does not lose them; the
file is rewritten only when the queue changes while offline, and removed
once it is empty.
"""

import os

from .errors import QueueFull

DROP_OLDEST = "drop-oldest"
DROP_NEWEST = "drop-newest"
POLICIES = (DROP_OLDEST, DROP_NEWEST)


class Outbox:
    def __init__(self, limit=32, max_bytes=16384, policy=DROP_OLDEST, path=None, on_dropped=None):
        if policy not in POLICIES:
            raise ValueError("queue policy must be one of %s, not %r" % (", ".join(POLICIES), policy))
        self.limit = limit
        self.max_bytes = max_bytes
        self.policy = policy
        self.path = path
        self.on_dropped = on_dropped  # on_dropped(message_id)
        self.items = []  # [message_id, topic bytes, payload bytes], oldest first
        self.bytes = 0
        self.dropped = 0
        self._on_flash = False  # a copy exists on flash: remove it once the queue is empty
        if path:
            self._load()

    def __len__(self):
        return len(self.items)

    def put(self, message_id, topic, payload):
        """Queue a message; raises QueueFull when it cannot be kept (drop-newest, or larger than the queue)."""
        size = len(payload)
        if self.limit == 0 or size > self.max_bytes:
            self._drop(message_id)
            raise QueueFull("message %s (%d bytes) does not fit the offline queue (%d messages, %d bytes)"
                            % (message_id, size, self.limit, self.max_bytes))
        while len(self.items) >= self.limit or self.bytes + size > self.max_bytes:
            if self.policy == DROP_NEWEST:
                self._drop(message_id)
                raise QueueFull("offline queue full (%d messages, %d bytes): message %s dropped"
                                % (len(self.items), self.bytes, message_id))
            old = self.items.pop(0)
            self.bytes -= len(old[2])
            self._drop(old[0])
        self.items.append([message_id, topic, payload])
        self.bytes += size

    def first(self):
        return self.items[0] if self.items else None

    def remove_first(self):
        old = self.items.pop(0)
        self.bytes -= len(old[2])

    def _drop(self, message_id):
        self.dropped += 1
        if self.on_dropped is not None:
            self.on_dropped(message_id)

    # --- the flash copy: [len16 id][len16 topic][len32 payload] per message ----

    def save(self):
        """Mirror the queue on flash; a no-op without a path, or when empty and nothing is there."""
        if not self.path:
            return
        if not self.items:
            if self._on_flash:
                try:
                    os.remove(self.path)
                except OSError:
                    pass
                self._on_flash = False
            return
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            for mid, topic, payload in self.items:
                mid = mid.encode()
                f.write(len(mid).to_bytes(2, "big"))
                f.write(mid)
                f.write(len(topic).to_bytes(2, "big"))
                f.write(topic)
                f.write(len(payload).to_bytes(4, "big"))
                f.write(payload)
        os.rename(tmp, self.path)  # littlefs renames atomically: a reset leaves old or new
        self._on_flash = True

    def _load(self):
        try:
            f = open(self.path, "rb")
        except OSError:
            return  # nothing was waiting
        with f:
            data = f.read()
        self._on_flash = True
        pos = 0
        try:
            while pos < len(data):
                n = int.from_bytes(data[pos:pos + 2], "big")
                mid = data[pos + 2:pos + 2 + n].decode()
                pos += 2 + n
                n = int.from_bytes(data[pos:pos + 2], "big")
                topic = data[pos + 2:pos + 2 + n]
                pos += 2 + n
                n = int.from_bytes(data[pos:pos + 4], "big")
                payload = data[pos + 4:pos + 4 + n]
                if len(payload) != n:
                    raise ValueError
                pos += 4 + n
                self.put(mid, topic, payload)
        except (ValueError, UnicodeError, QueueFull):
            self._drop("(unreadable rest of %s)" % self.path)  # a torn file: keep what parsed, count the rest

"""QoS 1 telemetry waiting for the hub: a bounded FIFO in RAM, optionally mirrored on flash as an append-only log.

Bounded by message count and payload bytes. On overflow the policy drops
the oldest message (fresh readings matter more; the default) or refuses the
newest; either way the drop is counted and handed to the owner's
on_dropped callback, never silent. With a file path the queue is written
to flash while messages wait, so that a reset does not lose them; the
changes are appended while offline, the file is compacted rarely, and it is
removed once the queue is empty.
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
        self._seq = 0  # messages ever put
        self._written = 0  # ... of which the flash copy holds (or has dropped) this many
        self._removed = 0  # removals from the front not yet recorded on flash
        self._log_bytes = 0  # size of the flash log
        self.bytes_written = 0  # to flash, for measuring wear
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
            self._note_removed()
            self._drop(old[0])
        self.items.append([message_id, topic, payload])
        self.bytes += size
        self._seq += 1

    def first(self):
        return self.items[0] if self.items else None

    def remove_first(self):
        old = self.items.pop(0)
        self.bytes -= len(old[2])
        self._note_removed()

    def _note_removed(self):
        # A message that never reached the flash copy needs no "D" record there.
        if self._seq - self._written > len(self.items):
            self._written += 1
        else:
            self._removed += 1

    def _drop(self, message_id):
        self.dropped += 1
        if self.on_dropped is not None:
            self.on_dropped(message_id)

    # --- the flash copy: a log, appended to while the queue changes offline ----------
    # Records: b"A" [len16 id][id][len16 topic][topic][len32 payload][payload] adds a message at
    # the end; b"D" drops the oldest. Appending writes what changed, where rewriting the whole
    # queue per message wore the flash by the queue's size each time; the log is rewritten
    # (compacted) only once it holds more than twice what is live.

    def save(self):
        """Bring the flash copy up to date; a no-op without a path, or when empty and nothing is there."""
        if not self.path:
            return
        if not self.items:
            if self._on_flash:
                try:
                    os.remove(self.path)
                except OSError:
                    pass
                self._on_flash = False
                self._log_bytes = self._removed = 0
                self._written = self._seq
            return
        unwritten = self.items[len(self.items) - (self._seq - self._written):] if self._seq > self._written else []
        live = sum(7 + len(m[0]) + len(m[1]) + len(m[2]) for m in self.items)
        if not self._on_flash or self._log_bytes + self._removed + 1 > 2 * live + 4096:
            self._rewrite()
            return
        with open(self.path, "ab") as f:
            for _ in range(self._removed):
                f.write(b"D")
            self._log_bytes += self._removed
            for m in unwritten:
                self._log_bytes += self._write_add(f, m)
        self.bytes_written += self._removed
        self._removed = 0
        self._written = self._seq

    def _rewrite(self):
        tmp = self.path + ".tmp"
        size = 0
        with open(tmp, "wb") as f:
            for m in self.items:
                size += self._write_add(f, m)
        os.rename(tmp, self.path)  # littlefs renames atomically: a reset leaves old or new
        self._on_flash = True
        self._log_bytes, self._removed, self._written = size, 0, self._seq

    def _write_add(self, f, message):
        mid, topic, payload = message
        mid = mid.encode()
        f.write(b"A" + len(mid).to_bytes(2, "big") + mid + len(topic).to_bytes(2, "big"))
        f.write(topic)
        f.write(len(payload).to_bytes(4, "big"))
        f.write(payload)
        n = 9 + len(mid) + len(topic) + len(payload)
        self.bytes_written += n
        return n

    def _load(self):
        try:
            f = open(self.path, "rb")
        except OSError:
            return  # nothing was waiting
        with f:
            data = f.read()
        self._on_flash = True
        self._log_bytes = len(data)
        pos = 0
        try:
            while pos < len(data):
                kind = data[pos]
                pos += 1
                if kind == 0x44:  # "D": the oldest was sent or dropped
                    if self.items:
                        self.remove_first()
                    continue
                if kind != 0x41:
                    raise ValueError
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
        except (ValueError, UnicodeError, QueueFull, IndexError):
            self._drop("(unreadable rest of %s)" % self.path)  # a torn file: keep what parsed, count the rest
        self._removed, self._written = 0, self._seq

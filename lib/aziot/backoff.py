"""When to try connecting again: exponential backoff with full jitter.

Microsoft's guidance for IoT Hub ("Manage connectivity and reliable
messaging by using Azure IoT Hub device SDKs", Microsoft Learn): exponential backoff with jitter, about 1 s minimum and 100 s maximum, and
never a fleet reconnecting in lockstep. Full jitter (the wait is uniform in
[0, ceiling], the ceiling doubling per failure up to the cap) spreads a
fleet that lost the hub at the same moment. A hub that says it is busy
(CONNACK 3, or throttling) gets the throttled schedule: a floor of
throttle_ms plus the jittered wait. After stable_ms connected, the
failure count starts again from zero.
"""

import random


class Backoff:
    def __init__(self, base_ms=1000, cap_ms=100000, throttle_ms=30000, stable_ms=60000, rand=None):
        if not 0 < base_ms <= cap_ms:
            raise ValueError("backoff needs 0 < base_ms <= cap_ms")
        self.base_ms = base_ms
        self.cap_ms = cap_ms
        self.throttle_ms = throttle_ms
        self.stable_ms = stable_ms
        self.failures = 0
        self._rand = rand or random.getrandbits

    def ceiling(self, failures=None):
        """The largest wait after this many consecutive failures (the schedule tests check against)."""
        n = self.failures if failures is None else failures
        return min(self.cap_ms, self.base_ms << min(n, 20))

    def next_delay(self, throttled=False):
        """ms to wait before the next attempt; counts one more failure."""
        ceiling = self.ceiling()
        self.failures += 1
        delay = self._rand(30) % (ceiling + 1)
        return delay + self.throttle_ms if throttled else delay

    def connected_for(self, ms):
        """Called while connected: a link that stayed up stable_ms resets the schedule."""
        if ms >= self.stable_ms:
            self.failures = 0

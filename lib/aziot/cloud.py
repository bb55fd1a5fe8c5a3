"""What the cloud asks of a device: direct methods, the device twin, C2D messages.

HubClient inherits these; they are apart only so that each module stays
small enough to compile from source in a board's heap. They need from
HubClient: config, _session, _live(), _event(), _lost(), _reconnect_now() and
last_error;
_init_handlers() sets up the rest.
"""

import json
import time

from . import protocol
from .backoff import Backoff
from .errors import ConfigError, ConnectionLost, MessageTooLarge, ProtocolError, RequestFailed, RequestTimeout
from .messages import C2DMessage, error_body, load_json, method_response


_MAX_HELD_C2D = 8  # C2D kept in RAM until on_c2d() is called (and max_message bytes); more stay with the hub


def _parse_twin(status, version, payload):
    if status != 200:
        raise RequestFailed("twin GET", status)
    twin = load_json(payload, "the twin")
    if not isinstance(twin, dict):
        raise ProtocolError("the twin is not a JSON object")
    return twin


class CloudHandlers:
    def _init_handlers(self):
        self._next_request_id = 1
        self._c2d_handler = None
        self._method_handlers = {}  # name (None: any other name) -> handler(name, payload)
        self._desired_handler = None
        self._desired_version = None  # of the last desired state handed to the handler
        self._subscribed = []
        self._held_c2d = []  # C2D that arrived before on_c2d(): unacknowledged, so the hub keeps it
        self._c2d_unheld = 0  # ... and how many more did not fit here
        self._redeliver = False  # C2D left unacknowledged for want of room: renew the link for it
        self._twin_retry_at = None  # ticks_ms when poll() retries a failed connect-time twin fetch
        self._twin_pending = None  # (request id, deadline, window) of that retry, sent and not yet answered
        cfg = self.config
        self._twin_backoff = Backoff(cfg.reconnect_min_ms, cfg.reconnect_max_ms, cfg.throttle_ms)
        self.late_responses = 0  # twin responses that came after their request timed out

    def _connected(self):
        return self._session is not None and not self._session.closed

    # --- subscriptions: made for the handlers registered, again at each connect ----

    def _subscriptions(self):
        subs = []
        if self._c2d_handler is not None:
            subs.append((protocol.c2d_subscription(self.config.device_id), 1))  # the hub sends C2D at QoS 1
        if self._method_handlers:
            subs.append((protocol.METHODS_SUBSCRIPTION, 0))
        if self._desired_handler is not None:
            subs.append((protocol.TWIN_RESPONSE_SUBSCRIPTION, 0))
            subs.append((protocol.TWIN_DESIRED_SUBSCRIPTION, 0))
        return subs

    def _subscribe(self, topic, qos=0):
        if topic not in self._subscribed:
            self._live().subscribe(topic.encode(), qos)
            self._subscribed.append(topic)

    def on_c2d(self, handler):
        """handler(C2DMessage) for each cloud-to-device message; acknowledged once it returns."""
        if self.config.module_id:
            raise ConfigError("modules do not receive cloud-to-device messages; IoT Hub sends them to devices only")
        self._c2d_handler = handler
        if self._connected():
            self._subscribe(protocol.c2d_subscription(self.config.device_id), 1)
            self._session.inbox[:0] = self._held_c2d  # handled, then acknowledged, at the next poll()
            if self._c2d_unheld:  # the hub redelivers unacknowledged messages only on a new connection
                self._reconnect_now()
        self._held_c2d = []
        self._c2d_unheld = 0

    def on_method(self, name, handler):
        """handler(name, payload bytes) -> None | status | (status, body) for direct method name.

        name None registers the handler for every method without its own.
        A handler that raises answers 500 with the error; a method with no
        handler answers 404.
        """
        self._method_handlers[name] = handler
        if self._connected():
            self._subscribe(protocol.METHODS_SUBSCRIPTION)

    def on_desired(self, handler):
        """handler(patch dict, version) for desired-property changes.

        At each connect the client fetches the full twin and, if the desired
        version moved while it was offline, calls handler with the whole
        desired document (keys deleted meanwhile do not appear as null).
        """
        self._desired_handler = handler
        if self._connected():
            self._subscribe(protocol.TWIN_RESPONSE_SUBSCRIPTION)
            self._subscribe(protocol.TWIN_DESIRED_SUBSCRIPTION)
            self._catch_up_desired()

    # --- device twin -----------------------------------------------------------

    def get_twin(self, timeout=None):
        """The full twin as {"desired": {...}, "reported": {...}}, each with "$version"."""
        return self._twin_within(self._window_ms(timeout))

    def _twin_within(self, window_ms):
        deadline = time.ticks_add(time.ticks_ms(), window_ms)
        rid = self._send_twin_request(protocol.twin_get_topic, b"")
        return _parse_twin(*self._await_twin_response(rid, "twin GET", deadline, window_ms))

    def report(self, patch, timeout=None):
        """Patch the reported properties (None deletes a key); returns the twin's new reported $version."""
        if not isinstance(patch, dict):
            raise ValueError("reported properties must be a dict, not %s" % type(patch).__name__)
        status, version, _ = self._twin_request(protocol.twin_report_topic, json.dumps(patch).encode(),
                                                "reported-properties PATCH", timeout)
        if status != 204:
            raise RequestFailed("reported-properties PATCH", status)
        return version

    def _twin_request(self, topic_for, body, what, timeout):
        """Publish a twin request and wait for its response: (status, version, payload)."""
        window_ms = self._window_ms(timeout)
        deadline = time.ticks_add(time.ticks_ms(), window_ms)
        return self._await_twin_response(self._send_twin_request(topic_for, body), what, deadline, window_ms)

    def _window_ms(self, timeout):
        return int((self.config.timeout if timeout is None else timeout) * 1000)

    def _send_twin_request(self, topic_for, body):
        """Returns the request id; the response is the acknowledgement (QoS 0)."""
        session = self._live()
        self._subscribe(protocol.TWIN_RESPONSE_SUBSCRIPTION)
        rid = str(self._next_request_id)
        self._next_request_id += 1
        session.publish(topic_for(rid).encode(), body, 0)
        return rid

    def _await_twin_response(self, rid, what, deadline, window_ms):
        while True:
            response = self._take_twin_response(rid, what)
            if response is not None:
                return response
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                raise RequestTimeout("no answer to the %s within %d ms" % (what, window_ms))
            self._live().pump(left)

    def _take_twin_response(self, rid, what):
        inbox = self._session.inbox
        for i in range(len(inbox)):
            msg = inbox[i]
            if not msg.topic or not msg.topic.startswith("$iothub/twin/res/"):
                continue
            kind, status, got, version = protocol.parse_incoming(msg.topic, self.config.device_id)
            if got == rid:
                del inbox[i]
                if msg.payload is None:
                    raise MessageTooLarge("%s answer of %d bytes exceeds max_message %d"
                                          % (what, msg.size, self.config.max_message))
                return status, version, msg.payload
        return None

    def _sync_twin(self, fetch):
        """The twin catch-up after a connect: a failure is reported (last_error, on_link "twin") and
        retried from poll() with backoff, never raised, so a throttled (429) or slow twin GET,
        or a twin above max_message, does not cost the connection. Other exceptions from the
        desired handler are the application's, and go to the caller. fetch() returns the twin,
        or None while poll() still waits for it."""
        try:
            twin = fetch()
            if twin is None:
                return
            self._twin_pending = None
            self._catch_up_desired(twin)  # a handler's own hub errors (report(): 429) retry too
        except (ConnectionLost, RequestTimeout, RequestFailed, MessageTooLarge, ProtocolError) as e:
            self._twin_pending = None
            if not self._connected():  # the link broke under it: poll() reconnects
                self._lost(e)
                return
            self.last_error = e
            self._event("twin", e)
            throttled = isinstance(e, RequestFailed) and e.status == 429
            self._twin_retry_at = time.ticks_add(time.ticks_ms(), self._twin_backoff.next_delay(throttled))
            return
        self._twin_retry_at = None
        self._twin_backoff.failures = 0

    def _request_twin_sync(self):
        """Send the twin GET now and take the answer in a later poll(), which so keeps its budget."""
        self._twin_retry_at = None
        window_ms = self._window_ms(None)
        deadline = time.ticks_add(time.ticks_ms(), window_ms)
        self._twin_pending = (self._send_twin_request(protocol.twin_get_topic, b""), deadline, window_ms)
        return None  # for _sync_twin(): the answer comes later

    def _pending_twin(self):
        rid, deadline, window_ms = self._twin_pending
        response = self._take_twin_response(rid, "twin GET")
        if response is not None:
            return _parse_twin(*response)
        if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
            raise RequestTimeout("no answer to the twin GET within %d ms" % window_ms)
        return None

    def _twin_sync_due(self):
        return self._twin_retry_at is not None and time.ticks_diff(time.ticks_ms(), self._twin_retry_at) >= 0

    def _catch_up_desired(self, twin=None):
        """Hand the handler the desired state if it changed while we were not listening."""
        desired = (self.get_twin() if twin is None else twin).get("desired", {})
        if not isinstance(desired, dict):
            raise ProtocolError("the twin's desired properties are not a JSON object")
        version = desired.pop("$version", None)
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise ProtocolError("the twin's desired $version is not a number: %r" % (version,))
        if version is not None and (self._desired_version is None or version > self._desired_version):
            self._desired_handler(desired, version)
            self._desired_version = version  # handled: a handler that raised sees it again next time

    # --- handling what arrived ---------------------------------------------------

    def _dispatch(self, session):
        """Run the handlers for everything in the inbox; returns how many were handled."""
        handled = 0
        while session.inbox:
            msg = session.inbox.pop(0)
            held = False
            try:
                held = self._handle(session, msg)
            finally:
                if msg.packet_id is not None and not held and not session.closed:
                    session.acknowledge(msg.packet_id)  # QoS 1 (C2D): the hub keeps it until this
            handled += 1
        return handled

    def _handle(self, session, msg):
        if msg.topic is None:
            raise ProtocolError("message from the hub with a topic that is not UTF-8 (%d bytes of payload); "
                                "acknowledged and dropped" % msg.size)
        parsed = protocol.parse_incoming(msg.topic, self.config.device_id)
        kind = parsed[0]
        if msg.deferred:
            return self._deferred(session, msg, kind, parsed)
        if kind == protocol.METHOD:
            self._answer_method(session, msg, parsed[1], parsed[2])
        elif kind == protocol.C2D:
            if msg.payload is None:
                raise MessageTooLarge("cloud-to-device message of %d bytes exceeds max_message %d; "
                                      "acknowledged and dropped" % (msg.size, self.config.max_message))
            if self._c2d_handler is None:
                # Queued C2D reaches a clean-session-0 device right after CONNACK, maybe
                # before the application called on_c2d(): keep it unacknowledged.
                held = sum(m.size for m in self._held_c2d)
                if len(self._held_c2d) < _MAX_HELD_C2D and held + msg.size <= self.config.max_message:
                    self._held_c2d.append(msg)
                else:  # unacknowledged too; on_c2d() reconnects so that the hub sends it again
                    self._c2d_unheld += 1
                return True
            self._c2d_handler(C2DMessage(msg.payload, parsed[1]))
        elif kind == protocol.DESIRED:
            if msg.payload is None:
                raise MessageTooLarge("desired-properties patch of %d bytes exceeds max_message %d"
                                      % (msg.size, self.config.max_message))
            patch = load_json(msg.payload, "desired-properties patch")
            if not isinstance(patch, dict):
                raise ProtocolError("desired-properties patch is not a JSON object")
            version = patch.pop("$version", parsed[1])
            if not isinstance(version, int) or isinstance(version, bool):
                raise ProtocolError("desired-properties patch with a $version that is not a number: %r" % (version,))
            if self._desired_handler is not None and (
                    self._desired_version is None or version > self._desired_version):
                self._desired_version = version
                self._desired_handler(patch, version)
        else:  # a twin response nobody waits for any more
            self.late_responses += 1

    def _deferred(self, session, msg, kind, parsed):
        """A message skipped because the inbox was full while waiting: nothing is lost. A C2D stays
        unacknowledged (the link is renewed afterwards so the hub sends it again), a method is
        answered 503 (the caller may retry), a desired patch is caught up from the full twin."""
        if kind == protocol.C2D:
            if self._c2d_handler is None:
                self._c2d_unheld += 1  # on_c2d() renews the link for it
            else:
                self._redeliver = True
            return True
        if kind == protocol.METHOD:
            session.publish(protocol.method_response_topic(503, parsed[2]).encode(),
                            error_body("the device was busy: its inbox was full while it waited for the hub"), 0)
        elif kind == protocol.DESIRED and self._desired_handler is not None:
            self._twin_retry_at = time.ticks_ms()
        return False

    def _answer_method(self, session, msg, name, rid):
        if msg.payload is None:
            status, body = 413, error_body("payload of %d bytes exceeds the device's max_message %d"
                                            % (msg.size, self.config.max_message))
        else:
            handler = self._method_handlers.get(name) or self._method_handlers.get(None)
            if handler is None:
                status, body = 404, error_body("no handler for method %r" % name)
            else:
                try:  # a method invoked without a payload arrives with an empty body: None
                    status, body = method_response(handler(name, msg.payload or None))
                except Exception as e:  # the operator gets the error; the device stays up
                    status, body = 500, error_body("%s: %s" % (type(e).__name__, e))
        session.publish(protocol.method_response_topic(status, rid).encode(), body, 0)
        if msg.payload is None:
            raise MessageTooLarge("direct method %r payload of %d bytes exceeds max_message %d; answered 413"
                                  % (name, msg.size, self.config.max_message))

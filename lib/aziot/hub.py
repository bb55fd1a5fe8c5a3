"""HubClient: the device's connection to Azure IoT Hub.

    from aziot.hub import HubClient
    hub = HubClient.from_flash()        # /azure-iot/config.json
    hub.on_method("reboot", lambda name, payload: (200, {"ok": True}))
    hub.on_desired(lambda patch, version: hub.report({"led": patch.get("led")}))
    hub.connect()
    hub.send_telemetry(b'{"t": 21.5}', {"alert": "hot"})
    hub.loop()                          # or call hub.poll() from your own loop

Handlers run on the stack of poll()/loop() (and of connect() for the
desired-property catch-up), never inside send_telemetry(): messages that
arrive while the client waits for an acknowledgement are queued, whole,
and handled at the next poll().
"""

import json
import time

from . import certs, clock, protocol, tlsconf
from .config import DEFAULT_PATH, Config, load as load_config
from .errors import ConfigError, ConnectionLost, MessageTooLarge, ProtocolError, RequestFailed, \
    RequestTimeout, TlsError
from .messages import C2DMessage, error_body, load_json, method_response
from .mqtt import MqttSession
from .transport import open_socket

_PROFILE_ORDER = {"ecc": ("ecc",), "rsa": ("rsa",), "compat": ("compat",),
                  # The hub shows its ECC chain only to ECDSA-only offers;
                  # a hub without one answers that offer with an alert.
                  "ecc+rsa": ("ecc", "rsa")}


class HubClient:
    def __init__(self, config, clock_now=clock.unix_time):
        if isinstance(config, dict):
            config = Config(config)
        self.config = config
        self._now = clock_now
        self._session = None
        self._root_files = None
        self.tls_profile = None  # the profile of the live connection
        self.tls_cipher = None  # its negotiated suite and version, as mbedTLS names them
        self.tls_version = None
        self._next_message_id = 1
        self._next_request_id = 1
        self._c2d_handler = None
        self._method_handlers = {}  # name (None: any other name) -> handler(name, payload)
        self._desired_handler = None
        self._desired_version = None  # of the last desired state handed to the handler
        self._subscribed = ()
        self.late_responses = 0  # twin responses that came after their request timed out

    @classmethod
    def from_flash(cls, path=DEFAULT_PATH):
        return cls(load_config(path))

    def _load_identity(self):
        """(cert, key) DER from flash, read at each connect rather than held in RAM between."""
        cfg = self.config
        if self._root_files is None:
            self._root_files = certs.root_files(cfg.roots)
        cert_der = certs.read_der(cfg.cert, "device certificate")
        now = self._now()
        if clock.is_set(now):
            certs.check_current(cert_der, now, cfg.cert)
        return cert_der, certs.read_der(cfg.key, "device key")

    def connect(self):
        """Open TLS, log in with the X.509 identity; returns the CONNACK session-present flag."""
        cfg = self.config
        cert_der, key_der = self._load_identity()
        if self._session is not None:  # one connection per identity: the hub would drop one anyway
            self._session.close()
            self._session = None
        where = "%s (%s:%d)" % (cfg.hub_host, cfg.dial_address, cfg.port)
        profiles = _PROFILE_ORDER[cfg.tls_profile]
        for i, profile in enumerate(profiles):
            ctx = tlsconf.make_context(profile, self._root_files, cert_der, key_der, cfg.cert, cfg.key)
            sock = open_socket(cfg.dial_address, cfg.port, cfg.timeout)
            try:
                stream = tlsconf.handshake(sock, ctx, cfg.hub_host, where + " with profile '%s'" % profile)
            except TlsError as e:
                sock.close()
                if e.code == tlsconf.ERR_FATAL_ALERT and i + 1 < len(profiles):
                    continue  # no ECC certificate on this hub: try the next profile
                raise
            self.tls_profile = profile
            if hasattr(stream, "cipher"):  # not on every firmware
                self.tls_cipher, self.tls_version = stream.cipher()
            break
        self._session = MqttSession(
            stream,
            protocol.client_id(cfg.device_id, cfg.module_id),
            self._username(),
            None,  # X.509: no password
            cfg.keepalive,
            max_message=cfg.max_message,
        )
        self._subscribed = []
        for topic, qos in self._subscriptions():
            self._subscribe(topic, qos)
        if self._desired_handler is not None:
            self._catch_up_desired()
        return self._session.session_present

    def _username(self):
        cfg = self.config
        extra = (("model-id", cfg.model_id),) if cfg.model_id else None
        return protocol.username(cfg.hub_host, cfg.device_id, cfg.module_id, cfg.api_version, extra)

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

    def _live(self):
        if self._session is None or self._session.closed:
            raise ConnectionLost("not connected to the hub: call connect()")
        return self._session

    def on_c2d(self, handler):
        """handler(C2DMessage) for each cloud-to-device message; acknowledged once it returns."""
        if self.config.module_id:
            raise ConfigError("modules do not receive cloud-to-device messages; IoT Hub sends them to devices only")
        self._c2d_handler = handler
        if self._session is not None and not self._session.closed:
            self._subscribe(protocol.c2d_subscription(self.config.device_id), 1)

    def on_method(self, name, handler):
        """handler(name, payload bytes) -> None | status | (status, body) for direct method name.

        name None registers the handler for every method without its own.
        A handler that raises answers 500 with the error; a method with no
        handler answers 404.
        """
        self._method_handlers[name] = handler
        if self._session is not None and not self._session.closed:
            self._subscribe(protocol.METHODS_SUBSCRIPTION)

    def on_desired(self, handler):
        """handler(patch dict, version) for desired-property changes.

        At each connect the client fetches the full twin and, if the desired
        version moved while it was offline, calls handler with the whole
        desired document (keys deleted meanwhile do not appear as null).
        """
        self._desired_handler = handler
        if self._session is not None and not self._session.closed:
            self._subscribe(protocol.TWIN_RESPONSE_SUBSCRIPTION)
            self._subscribe(protocol.TWIN_DESIRED_SUBSCRIPTION)
            self._catch_up_desired()

    # --- device twin -----------------------------------------------------------

    def get_twin(self, timeout=None):
        """The full twin as {"desired": {...}, "reported": {...}}, each with "$version"."""
        status, _, payload = self._twin_request(protocol.twin_get_topic, b"", "twin GET", timeout)
        if status != 200:
            raise RequestFailed("twin GET", status)
        twin = load_json(payload, "the twin")
        if not isinstance(twin, dict):
            raise ProtocolError("the twin is not a JSON object")
        return twin

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
        session = self._live()
        self._subscribe(protocol.TWIN_RESPONSE_SUBSCRIPTION)
        rid = str(self._next_request_id)
        self._next_request_id += 1
        session.publish(topic_for(rid).encode(), body, 0)  # the response is the acknowledgement
        timeout_ms = int((self.config.timeout if timeout is None else timeout) * 1000)
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        while True:
            response = self._take_twin_response(rid, what)
            if response is not None:
                return response
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                raise RequestTimeout("no answer to the %s within %d ms" % (what, timeout_ms))
            session.pump(left)

    def _take_twin_response(self, rid, what):
        inbox = self._session.inbox
        for i in range(len(inbox)):
            msg = inbox[i]
            if not msg.topic.startswith("$iothub/twin/res/"):
                continue
            kind, status, got, version = protocol.parse_incoming(msg.topic, self.config.device_id)
            if got == rid:
                del inbox[i]
                if msg.payload is None:
                    raise MessageTooLarge("%s answer of %d bytes exceeds max_message %d"
                                          % (what, msg.size, self.config.max_message))
                return status, version, msg.payload
        return None

    def _catch_up_desired(self):
        """Hand the handler the desired state if it changed while we were not listening."""
        desired = self.get_twin().get("desired", {})
        version = desired.pop("$version", None)
        if version is not None and (self._desired_version is None or version > self._desired_version):
            self._desired_version = version
            self._desired_handler(desired, version)

    # --- receiving ---------------------------------------------------------------

    def poll(self, timeout_ms=0):
        """Read what the hub sent (waiting up to timeout_ms) and run the handlers.

        Returns the number of messages handled. Raises MessageTooLarge or
        ProtocolError for a message that could not be handled (the rest stay
        queued for the next call), ConnectionLost when the link broke.
        """
        session = self._live()
        keepalive_ms = self.config.keepalive * 500
        if keepalive_ms and time.ticks_diff(time.ticks_ms(), session.last_sent) >= keepalive_ms:
            session.ping()  # the hub drops a client after 1.5 x keepalive of silence
        if not session.inbox:
            session.pump(timeout_ms)
        handled = 0
        while session.inbox:
            msg = session.inbox.pop(0)
            try:
                self._handle(session, msg)
            finally:
                if msg.packet_id is not None:  # QoS 1 (C2D): the hub keeps it until this
                    session.acknowledge(msg.packet_id)
            handled += 1
        return handled

    def loop(self, duration_ms=None):
        """poll() until duration_ms has passed, or for ever; what poll() raises ends it."""
        start = time.ticks_ms()
        while True:
            left = 1000 if duration_ms is None else duration_ms - time.ticks_diff(time.ticks_ms(), start)
            if left <= 0:
                return
            self.poll(min(left, 1000))

    def _handle(self, session, msg):
        parsed = protocol.parse_incoming(msg.topic, self.config.device_id)
        kind = parsed[0]
        if kind == protocol.METHOD:
            self._answer_method(session, msg, parsed[1], parsed[2])
        elif kind == protocol.C2D:
            if msg.payload is None:
                raise MessageTooLarge("cloud-to-device message of %d bytes exceeds max_message %d; "
                                      "acknowledged and dropped" % (msg.size, self.config.max_message))
            if self._c2d_handler is None:
                raise ProtocolError("cloud-to-device message but no on_c2d handler")
            self._c2d_handler(C2DMessage(msg.payload, parsed[1]))
        elif kind == protocol.DESIRED:
            if msg.payload is None:
                raise MessageTooLarge("desired-properties patch of %d bytes exceeds max_message %d"
                                      % (msg.size, self.config.max_message))
            patch = load_json(msg.payload, "desired-properties patch")
            if not isinstance(patch, dict):
                raise ProtocolError("desired-properties patch is not a JSON object")
            version = patch.pop("$version", parsed[1])
            if self._desired_handler is not None and (
                    self._desired_version is None or version > self._desired_version):
                self._desired_version = version
                self._desired_handler(patch, version)
        else:  # a twin response nobody waits for any more
            self.late_responses += 1

    def _answer_method(self, session, msg, name, rid):
        if msg.payload is None:
            status, body = 413, error_body("payload of %d bytes exceeds the device's max_message %d"
                                            % (msg.size, self.config.max_message))
        else:
            handler = self._method_handlers.get(name) or self._method_handlers.get(None)
            if handler is None:
                status, body = 404, error_body("no handler for method %r" % name)
            else:
                try:
                    status, body = method_response(handler(name, msg.payload))
                except Exception as e:  # the operator gets the error; the device stays up
                    status, body = 500, error_body("%s: %s" % (type(e).__name__, e))
        session.publish(protocol.method_response_topic(status, rid).encode(), body, 0)
        if msg.payload is None:
            raise MessageTooLarge("direct method %r payload of %d bytes exceeds max_message %d; answered 413"
                                  % (name, msg.size, self.config.max_message))

    def send_telemetry(self, payload, properties=None, message_id=None, correlation_id=None,
                       content_type="application/json", content_encoding="utf-8", qos=1):
        """Publish one device-to-cloud message; with QoS 1, returns once the hub acknowledged it.

        message_id defaults to a per-client counter so the cloud side can
        spot duplicates. content_type/encoding default to what IoT Hub
        message routing needs to query a JSON body.
        """
        session = self._live()
        if message_id is None:
            message_id = str(self._next_message_id)
            self._next_message_id += 1
        system = (
            (protocol.PROP_MESSAGE_ID, message_id),
            (protocol.PROP_CORRELATION_ID, correlation_id),
            (protocol.PROP_CONTENT_TYPE, content_type),
            (protocol.PROP_CONTENT_ENCODING, content_encoding),
        )
        topic = protocol.telemetry_topic(self.config.device_id, self.config.module_id, properties, system)
        if isinstance(payload, str):
            payload = payload.encode()
        session.publish(topic.encode(), payload, qos)
        return message_id

    def disconnect(self):
        if self._session is not None:
            self._session.disconnect()
            self._session = None

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

Staying connected: after the first connect(), poll() keeps the link alive
(PINGREQ when idle, a missing PINGRESP ends the link), reconnects with
backoff after a loss (one attempt at a time, never inside a handler),
renews a SAS token before it expires by reconnecting, and sends the QoS 1
telemetry that waited in the offline queue, oldest first.
"""

import time

from . import certs, clock, protocol, sas, tlsconf
from .backoff import Backoff
from .cloud import CloudHandlers
from .config import DEFAULT_PATH, Config, load as load_config
from .errors import AziotError, ClockError, ConnectionLost, ConnectionRefused, ProtocolError
from .mqtt import MqttSession
from .outbox import Outbox
from .profiles import ProfileChooser
from .link import open_tls

_CONNACK_SERVER_UNAVAILABLE = 3  # the hub is busy or throttling: wait longer
# With DPS: the hub no longer takes this identity (CONNACK 4 bad credentials, 5 not authorized), or
# every 10th attempt in a row failed: provision again ("Manage connectivity...", Microsoft Learn; the
# Embedded C SDK's guidance: re-provision after repeated hub failures or 401/403/404).
_CONNACK_REFUSED_IDENTITY = (4, 5)
_REPROVISION_AFTER = 10


def _boot_prefix():
    try:
        import os

        raw = os.urandom(4)  # the hardware RNG on ESP32 and RP2040
    except (ImportError, AttributeError, OSError):
        import random

        raw = random.getrandbits(32).to_bytes(4, "big")
    return "".join("%02x" % b for b in raw)


class HubClient(CloudHandlers):
    def __init__(self, config, clock_now=clock.unix_time, on_dropped=None):
        if isinstance(config, dict):
            config = Config(config)
        self.config = config
        self._now = clock_now
        self._session = None
        self._root_files = None
        self.tls_profile = None  # the profile of the live connection
        self.tls_cipher = None  # its negotiated suite and version, as mbedTLS names them
        self.tls_version = None
        self.tls_max_fragment_length = 0  # agreed by the hub for the live connection (0: none)
        self._next_message_id = 1
        # Default message ids are "<boot prefix>-<n>": a counter alone starts again at 1 after every
        # reset, and whoever de-duplicates by $.mid downstream would drop new readings as repeats.
        self._message_id_prefix = _boot_prefix()
        self._init_handlers()
        self.outbox = Outbox(config.queue_size, config.queue_bytes, config.queue_policy,
                             config.queue_file or None, on_dropped)
        self.backoff = Backoff(config.reconnect_min_ms, config.reconnect_max_ms, config.throttle_ms)
        self.profiles = ProfileChooser(config.tls_profile, config.hub_host, config.tls_memory_file,
                                       config.tls_probe_s)
        self.stats = {"connects": 0, "connect_failures": 0, "links_lost": 0, "renewals": 0, "sent": 0,
                      "reprovisions": 0}
        self._reprovision = False  # DPS: register again before the next attempt
        self.last_error = None  # the last failure poll() rode through, for logs
        self._reconnect = False  # becomes True with the first connect()
        self._next_attempt = 0  # ticks_ms of the next reconnect attempt
        self._connecting = False
        self._queue_until = None  # ticks_ms: a reconnect inside poll() sends the queue only until then
        self._in_flight_item = None  # the queued message whose PUBACK poll() has yet to read
        self._connected_at = 0
        self._renew_at = None  # clock seconds at which a SAS token is renewed
        # on_link(event, detail), for logs: ("lost", error), ("retry", (delay_ms, ceiling_ms)),
        # ("attempt", failures so far), ("connected", session-present flag),
        # ("twin", error): the connect-time twin fetch failed; poll() retries it.
        self.on_link = None

    @classmethod
    def from_flash(cls, path=DEFAULT_PATH, **kwargs):
        """The client the config on flash describes; with dps_id_scope, for the hub DPS assigned
        (stored, or registered now: see aziot.dps)."""
        config = load_config(path)
        if config.dps_id_scope:
            from . import dps

            config = dps.hub_config(config, clock_now=kwargs.get("clock_now", clock.unix_time))
        return cls(config, **kwargs)

    @property
    def connected(self):
        return self._connected()

    # --- connecting --------------------------------------------------------------

    def _credentials(self):
        """(certificate chain, key DER, password, Certificate message bytes) for this connect; secrets
        are read from flash each time."""
        cfg = self.config
        if self._root_files is None:
            self._root_files = certs.root_files(cfg.roots)
        now = self._now()
        if cfg.auth == "sas":
            if not clock.is_set(now):
                raise ClockError("the clock reads %s: a SAS token needs the current time "
                                 "(call aziot.clock.sync() or set the RTC first)" % clock.format_utc(now))
            key = sas.device_key(cfg)
            expiry = int(now) + cfg.sas_ttl
            password = sas.token(sas.resource(cfg.hub_host, cfg.device_id, cfg.module_id), key, expiry)
            self._renew_at = int(now) + cfg.sas_ttl * 4 // 5  # well before the hub would drop us
            return None, None, password, 0
        if not clock.is_set(now):
            # mbedTLS checks the hub's certificate dates against the same clock: at boot
            # (2000 on ESP32, 2021 on a Pico W) every certificate "starts in the future".
            raise ClockError("the clock reads %s: checking the hub's certificate needs the current time "
                             "(call aziot.clock.sync() once Wi-Fi is up, or set the RTC first)"
                             % clock.format_utc(now))
        chain, leaf, message = certs.read_cert_chain(cfg.cert)
        certs.check_current(leaf, now, cfg.cert)
        return chain, certs.read_der(cfg.key, "device key"), None, message

    def connect(self):
        """Open TLS, log in, subscribe for the handlers; returns the CONNACK session-present flag.

        Raises on failure. After the first call, poll() reconnects by itself.
        """
        if self._connecting:
            raise RuntimeError("connect() while a connection attempt is in progress")
        self._connecting = True
        try:
            if self._reprovision:
                self._provision_again()
            return self._open()
        except ConnectionRefused as e:
            if self.config.dps_id_scope and e.code in _CONNACK_REFUSED_IDENTITY:
                # Ask DPS where this device belongs now: at the next attempt, or the next boot; then,
                # if DPS keeps naming this hub, after a doubling wait kept on flash.
                from . import dps

                dps.note_refusal(self.config, self._now())
                self._reprovision = True
            raise
        finally:
            self._connecting = False

    def _provision_again(self):
        from . import dps

        if not dps.may_ask_again(self.config, self._now()):
            return  # DPS answered this place before and the hub refused it: not yet again
        try:
            assignment = dps.register_again(self.config, self._now)
        except (AziotError, OSError) as e:
            self.last_error = e  # DPS unreachable or refusing: the hub we know may still take us
            return
        self._reprovision = False
        self.stats["reprovisions"] += 1
        if (assignment.hub_host, assignment.device_id) != (self.config.hub_host, self.config.device_id):
            self.config = self.config.assigned(assignment.hub_host, assignment.device_id)
            self.profiles = ProfileChooser(self.config.tls_profile, self.config.hub_host,
                                           self.config.tls_memory_file, self.config.tls_probe_s)
        self._event("reprovisioned", assignment.hub_host)

    def _open(self):
        cfg = self.config
        self._reconnect = True
        cert_der, key_der, password, cert_message = self._credentials()
        if self._session is not None:  # one connection per identity: the hub would drop one anyway
            self._session.close()
            self._session = None
        asked = tlsconf.set_max_fragment_length(cfg.max_fragment_length, cert_message)
        # One deadline for the whole attempt: TCP, every TLS offer, CONNACK, SUBACKs and the twin fetch.
        deadline = time.ticks_add(time.ticks_ms(), cfg.timeout * 1000)
        client_id = protocol.client_id(cfg.device_id, cfg.module_id)
        login = protocol.connect_packet(client_id, self._username(), password, cfg.keepalive, False)
        stream, sock, deadline = self._handshake(cert_der, key_der, asked, login, deadline)
        self._session = MqttSession(stream, client_id, cfg.keepalive, max_message=cfg.max_message,
                                    raw_sock=sock, timeout=cfg.timeout, deadline=deadline)
        self._subscribed = []
        self._held_c2d = []  # packet ids belong to the old session: the hub redelivers those
        self._c2d_unheld = 0
        self._redeliver = False
        self._twin_pending = None  # a request of the old session: the new one fetches the twin afresh
        self._in_flight_item = None  # a message in flight on the old session is sent again
        try:
            for topic, qos in self._subscriptions():
                self._subscribe(topic, qos)
            self._session.end_of_connect()  # the queue is work, not waiting: each PUBACK has its own timeout
            self._connected_at = time.ticks_ms()
            self._send_queued(self._queue_until)  # what waited offline goes first
            if self._desired_handler is not None and self._connected():
                left = time.ticks_diff(deadline, time.ticks_ms())
                # What is left of the deadline; none left (a long queue): poll() takes the answer.
                self._sync_twin((lambda: self._twin_within(left)) if left > 0 else self._request_twin_sync)
        except BaseException:  # a failed connect() (a desired handler that raised, too) leaves no session
            self._session.close()
            raise
        if cfg.dps_id_scope:
            from . import dps

            dps.note_accepted(cfg)
        if self._connected():  # (a link that broke meanwhile was reported "lost"; poll() reconnects)
            self.stats["connects"] += 1
            self._event("connected", self._session.session_present)
        return self._session.session_present

    def _handshake(self, cert_der, key_der, mfl_asked, login, deadline):
        """TLS to the hub with the profile's offers in order, login (CONNECT) sent.

        Returns (TLS stream, TCP socket, the deadline of the offer that was taken)."""
        cfg = self.config
        link = open_tls(self.profiles.order(self._now()), cfg.hub_host, cfg.dial_address, cfg.port, cfg.timeout,
                        self._root_files, (cert_der, key_der, cfg.cert, cfg.key), mfl_asked, login, deadline,
                        cfg.tls_verified_file)
        self.tls_max_fragment_length = link.fragment_length
        self.profiles.worked(link.profile, self._now())
        self.tls_profile = link.profile
        if link.cipher is not None:
            self.tls_cipher, self.tls_version = link.cipher, link.version
        return link.stream, link.sock, link.deadline

    def _username(self):
        cfg = self.config
        extra = (("model-id", cfg.model_id),) if cfg.model_id else None
        return protocol.username(cfg.hub_host, cfg.device_id, cfg.module_id, cfg.api_version, extra)

    def _live(self):
        if not self._connected():
            raise ConnectionLost("not connected to the hub: " + (
                "the link is down and poll() is reconnecting" if self._reconnect else "call connect()"))
        return self._session

    def _event(self, kind, detail):
        if self.on_link is not None:
            self.on_link(kind, detail)

    def _schedule_retry(self, throttled=False):
        ceiling = self.backoff.ceiling()
        delay = self.backoff.next_delay(throttled)
        self._next_attempt = time.ticks_add(time.ticks_ms(), delay)
        self._event("retry", (delay, ceiling + (self.backoff.throttle_ms if throttled else 0)))

    def _reconnect_now(self):
        """End the link on purpose (DISCONNECT); the next poll() reconnects at once."""
        self._session.disconnect()
        self._next_attempt = time.ticks_ms()

    def _lost(self, err):
        """The link broke: close it and schedule a reconnect by the backoff schedule."""
        if self._session is not None:
            self._session.close()
            self._settle_in_flight()
        self.stats["links_lost"] += 1
        self.last_error = err
        self._event("lost", err)
        self._schedule_retry()

    def _try_reconnect(self):
        """One attempt when the backoff schedule allows it; False if still offline."""
        if self._connecting or time.ticks_diff(time.ticks_ms(), self._next_attempt) < 0:
            return False
        self._event("attempt", self.backoff.failures)
        try:
            self.connect()
            return True
        except (AziotError, OSError) as e:
            self.stats["connect_failures"] += 1
            self.last_error = e
            if self._session is not None:
                self._session.close()
            if self.config.dps_id_scope and (self.backoff.failures + 1) % _REPROVISION_AFTER == 0:
                self._reprovision = True
            self._schedule_retry(isinstance(e, ConnectionRefused) and e.code == _CONNACK_SERVER_UNAVAILABLE)
            return False

    # --- device to cloud -----------------------------------------------------------

    def send_telemetry(self, payload, properties=None, message_id=None, correlation_id=None,
                       content_type="application/json", content_encoding="utf-8", qos=1, component=None):
        """Send one device-to-cloud message; returns its message id.

        QoS 1 returns once the hub acknowledged it, or, when the link is down
        (or breaks while sending), once it is in the offline queue: poll()
        sends it after reconnecting (at least once: a message whose
        acknowledgement was lost is sent again with the same id). QoS 0 is
        not queued: offline it raises ConnectionLost.

        message_id defaults to "<random boot prefix>-<counter>", unique across
        resets, so the cloud side can spot duplicates. content_type/encoding
        default to what IoT Hub message routing needs to query a JSON body.
        With the clock set, $.ctime carries the time of this call (a message
        that waits in the queue keeps it). component names an IoT Plug and
        Play component ($.sub).
        """
        if qos not in (0, 1):
            raise ValueError("IoT Hub accepts QoS 0 or 1 only, not %r" % (qos,))
        if message_id is None:
            message_id = "%s-%d" % (self._message_id_prefix, self._next_message_id)
            self._next_message_id += 1
        now = self._now()
        system = (
            (protocol.PROP_MESSAGE_ID, message_id),
            (protocol.PROP_CORRELATION_ID, correlation_id),
            (protocol.PROP_CONTENT_TYPE, content_type),
            (protocol.PROP_CONTENT_ENCODING, content_encoding),
            (protocol.PROP_CREATION_TIME, clock.format_utc(now) if clock.is_set(now) else None),
            (protocol.PROP_COMPONENT, component),
        )
        topic = protocol.telemetry_topic(self.config.device_id, self.config.module_id, properties, system).encode()
        if isinstance(payload, str):
            payload = payload.encode()
        if len(topic) + len(payload) > protocol.MAX_D2C_MESSAGE:
            raise ValueError("device-to-cloud message of %d bytes with its properties; IoT Hub accepts "
                             "at most %d and closes the connection of a device that sends more"
                             % (len(topic) + len(payload), protocol.MAX_D2C_MESSAGE))
        if qos == 0:
            self._live().publish(topic, payload, 0)
            self.stats["sent"] += 1
            return message_id
        if not self._reconnect and not self._connected():
            raise ConnectionLost("not connected to the hub: call connect()")
        self.outbox.put(message_id, topic, payload)  # kept until the hub acknowledges it
        if self._connected():
            self._send_queued()
        else:
            self.outbox.save()
        return message_id

    def _send_queued(self, until=None):
        """Publish the queue oldest first; on a broken link keep the rest and schedule a reconnect.

        With until (ticks_ms: poll() and a reconnect inside it) nothing waits for a PUBACK: one
        message is in flight while poll() reads on, and the next goes once its PUBACK has been read
        and the budget allows. A message leaves the queue only with its PUBACK."""
        session = self._session
        changed = sent = False
        while self.outbox.first() is not None and self._connected():
            try:
                if session.in_flight is not None:
                    if until is None:
                        session.await_in_flight()
                    elif not session.take_in_flight():
                        break  # poll() reads its PUBACK (and judges whether it is late)
                    session.in_flight = None
                    changed = self._in_flight_done() or changed
                    continue
                if sent and until is not None and time.ticks_diff(time.ticks_ms(), until) >= 0:
                    break
                item = self.outbox.first()
                if until is not None:
                    session.publish_nowait(item[1], item[2])
                    self._in_flight_item = item
                    sent = True
                    continue
                session.publish(item[1], item[2], 1)
            except (ConnectionLost, ProtocolError) as e:  # the session is closed either way
                self._lost(e)
                break
            self.outbox.remove_first()
            self.stats["sent"] += 1
            changed = True
        if changed or not self._connected():
            self.outbox.save()

    def _settle_in_flight(self):
        """The link ends: a message in flight whose PUBACK was read leaves the queue; one without stays."""
        if self._session.take_in_flight():
            self._in_flight_done()
            self.outbox.save()

    def _in_flight_done(self):
        """Its PUBACK was read: the message in flight leaves the queue, unless an overflow dropped it
        meanwhile (drop-oldest: then it is counted as dropped, though the hub has it)."""
        item, self._in_flight_item = self._in_flight_item, None
        if self.outbox.first() is item:
            self.outbox.remove_first()
            self.stats["sent"] += 1
            return True
        return False

    # --- keeping the link ------------------------------------------------------------

    def poll(self, timeout_ms=0):
        """Keep the link, read what the hub sent (waiting up to timeout_ms) and run the handlers.

        Returns the number of messages handled. Offline, it makes at most one
        reconnect attempt when the backoff schedule allows, else waits.
        Raises MessageTooLarge or ProtocolError for a message that could not
        be handled (the rest stay queued for the next call); a broken link
        is not raised but ridden through (see stats, last_error).
        Before the first connect() it raises ConnectionLost.
        """
        until = time.ticks_add(time.ticks_ms(), max(timeout_ms, 0))
        if not self._connected():
            if not self._reconnect:
                raise ConnectionLost("not connected to the hub: call connect()")
            self._queue_until = until
            try:
                reconnected = self._try_reconnect()
            finally:
                self._queue_until = None
            if not reconnected or not self._connected():  # (sending the queue may have broken it)
                wait = time.ticks_diff(self._next_attempt, time.ticks_ms())
                if 0 < timeout_ms and 0 < wait:
                    time.sleep_ms(min(wait, timeout_ms))
                return 0
        session = self._session
        try:
            if self._keep_alive(session):
                return 0  # renewed the SAS token: reconnects at the next poll(), right away
            if self.outbox.first() is not None:
                self._send_queued(until)
            if self._twin_sync_due() and self._connected():
                self._sync_twin(self._request_twin_sync)
            if self._connected() and not session.inbox:
                session.pump(timeout_ms, leave_when_full=True)
            if self._twin_pending is not None and self._connected():
                self._sync_twin(self._pending_twin)
            if session.in_flight is not None and self._connected():
                if session.in_flight_acked:
                    self._send_queued(until)  # its PUBACK came in: the next message goes now
                elif session.in_flight_overdue():
                    session.close()
                    raise ConnectionLost("no PUBACK within %d s" % self.config.timeout)
            handled = self._dispatch(session)
            if self._redeliver and self._connected() and not session.inbox:
                self._redeliver = False
                self._reconnect_now()  # the hub sends unacknowledged C2D again on a new connection
            return handled
        except (ConnectionLost, ProtocolError) as e:
            if isinstance(e, ProtocolError) and not session.closed:
                raise  # one bad message; the stream is still in step
            self._lost(e)
            return 0

    def _keep_alive(self, session):
        """Ping when idle, detect a dead link, renew a SAS token; True when it closed the link to renew."""
        now = time.ticks_ms()
        self.backoff.connected_for(time.ticks_diff(now, self._connected_at))
        if self._renew_at is not None and self._now() >= self._renew_at:
            # The hub drops a client whose token expired: reconnect with a new one first.
            self.stats["renewals"] += 1
            self._renew_at = None
            self._reconnect_now()
            return True
        keepalive_ms = self.config.keepalive * 1000
        if not keepalive_ms:
            return False
        if session.ping_sent is not None:
            if time.ticks_diff(now, session.ping_sent) > self.config.timeout * 1000:
                raise ConnectionLost("no PINGRESP within %d s: the link is dead" % self.config.timeout)
        elif time.ticks_diff(now, session.last_sent) >= keepalive_ms // 2:
            session.ping()  # the hub drops a client after 1.5 x keepalive of silence
        return False

    def loop(self, duration_ms=None):
        """poll() until duration_ms has passed, or for ever; what poll() raises ends it."""
        start = time.ticks_ms()
        while True:
            left = 1000 if duration_ms is None else duration_ms - time.ticks_diff(time.ticks_ms(), start)
            if left <= 0:
                return
            self.poll(min(left, 1000))

    def disconnect(self):
        """Close the link and stop reconnecting; queued telemetry stays queued (and on flash)."""
        self._reconnect = False
        if self._session is not None:
            self._settle_in_flight()
        self.outbox.save()
        if self._session is not None:
            self._session.disconnect()
            self._session = None

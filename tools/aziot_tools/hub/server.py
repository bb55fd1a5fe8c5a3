"""A local IoT Hub: MQTT 3.1.1 over the hub's TLS policy, on loopback.

It plays the cloud for tests and the demo: it authenticates devices from
its registry (X.509 or SAS), enforces the per-identity topic ACL, stores
telemetry with its decoded properties, keeps device twins, queues
cloud-to-device messages until they are acknowledged, invokes direct
methods, and records each connection's TLS facts.

The service API (`telemetry()`, `connections()`, `invoke_method()`,
`update_desired()`, `get_twin()`, `send_c2d()`, ...) is what tests and
the demo use; it is safe to call from any thread but the emulator's own.
`service_http` puts the same operations on a loopback HTTP port for the
`aziot` command line.
"""

import asyncio
import base64
import datetime
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field

from cryptography.hazmat.primitives.serialization import Encoding

from .. import pki
from . import dialect, mqttwire, sas, tlsfront, tlspolicy
from .c2d import C2DQueues
from .registry import Registry, identity_key
from .twins import TwinError, TwinStore

log = logging.getLogger("aziot.hub")

CONNACK_UNACCEPTABLE_VERSION = 1
CONNACK_IDENTIFIER_REJECTED = 2
CONNACK_SERVER_UNAVAILABLE = 3
CONNACK_BAD_USERNAME = 4
CONNACK_NOT_AUTHORIZED = 5

CONNECT_TIMEOUT = 10.0
MAX_SUBSCRIPTIONS = 5  # per connection, as the hub allows
# "IoT Hub quotas and throttling" (Microsoft Learn): a device-to-cloud message is at most 256 KB.
MAX_D2C_MESSAGE = 256 * 1024
TOO_MANY_REQUESTS = 429
BAD_REQUEST = 400

# What the hub answers a method call it cannot deliver (service API errors).
DEVICE_NOT_ONLINE = 404
GATEWAY_TIMEOUT = 504


@dataclass
class ConnectionRecord:
    peer: str
    device_id: str = None
    module_id: str = ""
    result: str = "tls-failed"  # tls-failed, tls-ok (no login), refused, connected, closed
    reason: str = ""
    connack: int = None
    tls_version: str = None
    cipher: str = None
    server_key: str = None
    client_thumbprint: str = None
    handshake_bytes_in: int = 0
    handshake_bytes_out: int = 0
    handshake_ms: float = None
    bytes_in: int = 0  # all TLS bytes from the client, handshake included (None: standard hub, not counted)
    username: str = None
    api_version: str = None
    clean_session: bool = None
    keepalive: int = None
    model_id: str = None
    auth: str = None  # x509 or sas
    pings: int = 0  # PINGREQs answered


@dataclass
class TelemetryMessage:
    device_id: str
    module_id: str
    topic: str
    system_properties: dict
    properties: dict
    payload: bytes
    qos: int
    received: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat())

    def to_json(self) -> dict:
        d = asdict(self)
        d["payload_b64"] = base64.b64encode(self.payload).decode()
        del d["payload"]
        return d


@dataclass
class MethodResult:
    status: int
    payload: object  # the device's JSON response, parsed; None when it sent no body


class Session:
    """One logged-in connection: its stream, its subscriptions, its C2D messages in flight."""

    def __init__(self, stream, record, subscriptions):
        self.stream = stream
        self.record = record
        self.subscriptions = subscriptions  # shared with the persistent session when clean=0
        self.inflight = {}  # packet id -> c2d.C2DMessage
        self._lock = asyncio.Lock()  # one packet at a time: the service side writes too
        self._packet_id = 0

    async def send(self, data: bytes):
        async with self._lock:
            await self.stream.write(data)

    async def publish(self, topic: str, payload: bytes, qos: int = 0, dup: bool = False) -> int:
        body = mqttwire.string(topic)
        packet_id = None
        if qos:
            self._packet_id = self._packet_id % 65535 + 1
            packet_id = self._packet_id
            body += packet_id.to_bytes(2, "big")
        await self.send(mqttwire.encode(mqttwire.PUBLISH, (qos << 1) | (8 if dup else 0), body + payload))
        return packet_id


class ServerIdentity:
    """The emulator's ECC and RSA chains, made once per state directory."""

    def __init__(self, state_dir: str, hub_host: str):
        self.dir = os.path.join(state_dir, "server")
        pki.private_dir(self.dir)
        stamp = os.path.join(self.dir, "hub_host")
        if not os.path.exists(stamp) or open(stamp).read() != hub_host:
            for kind in ("ecc", "rsa"):
                chain = pki.make_server_pki(kind, hub_host)
                self._write(kind + "-chain.pem", chain.leaf.chain_pem())
                self._write(kind + "-key.pem", chain.leaf.key_pem)
                self._write(kind + "-root.pem", chain.root.cert_pem)
                self._write(kind + "-root.der", chain.root.cert_der)
            self._write("hub_host", hub_host.encode())

    def _write(self, name: str, data: bytes):
        pki.write_private(os.path.join(self.dir, name), data)  # the server keys among them

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def read(self, name: str) -> bytes:
        with open(self.path(name), "rb") as f:
            return f.read()

    def pair(self, kind: str):
        return self.read(kind + "-chain.pem"), self.read(kind + "-key.pem")

    def root_path(self, kind: str, form: str = "pem") -> str:
        return os.path.join(self.dir, "%s-root.%s" % (kind, form))


class HubEmulator:
    def __init__(self, state_dir: str, *, listen_host: str = "127.0.0.1", port: int = 8883,
                 hub_host: str = pki.DEFAULT_HUB_HOST, tls_mode: str = "standard"):
        """tls_mode: "standard" (what nearly every hub is: RSA chain, no MFL, 16 KB records)
        or "preview" (ECC chain for ECDSA-only offers, MFL honoured)."""
        if tls_mode not in tlspolicy.MODES:
            raise ValueError("hub mode must be one of %s, not %r" % (", ".join(tlspolicy.MODES), tls_mode))
        os.makedirs(state_dir, exist_ok=True)
        self.state_dir = state_dir
        self.listen_host = listen_host
        self.port = port
        self.hub_host = hub_host
        self.tls_mode = tls_mode
        self.identity = ServerIdentity(state_dir, hub_host)
        self.registry = Registry(os.path.join(state_dir, "registry.json"))
        self._ctx = self._front = None
        if tls_mode == "preview":
            self._ctx = tlspolicy.make_server_context(
                self.identity.pair("ecc"), self.identity.pair("rsa"), self.identity.dir)
        else:
            self._front = tlsfront.TlsFront(self.identity.path("rsa-chain.pem"), self.identity.path("rsa-key.pem"))
        self._telemetry_path = os.path.join(state_dir, "telemetry.jsonl")
        self._lock = threading.Lock()
        self._telemetry = []
        self._connections = []
        self._sessions = {}  # client id -> Session of the live connection
        self._kept_subscriptions = {}  # client id -> set, for clean-session-0 clients
        self.twins = TwinStore(os.path.join(state_dir, "twins.json"))
        self.c2d = C2DQueues()
        self._method_calls = {}  # request id -> Future of MethodResult
        self._next_rid = 1
        self._server = None
        self._loop = None
        self._handlers = set()  # tasks serving a connection
        self._throttled_until = 0.0
        self._twin_throttled_until = 0.0

    # --- service API (safe to call from another thread) -------------------

    def telemetry(self, device_id: str = None) -> list:
        with self._lock:
            return [m for m in self._telemetry if device_id is None or m.device_id == device_id]

    def connections(self, device_id: str = None) -> list:
        with self._lock:
            return [c for c in self._connections if device_id is None or c.device_id == device_id]

    def _call(self, coro, timeout: float):
        if self._loop is None:
            raise RuntimeError("the emulator is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def invoke_method(self, device_id: str, name: str, payload=None, timeout: float = 30,
                      module_id: str = "") -> MethodResult:
        """Call a direct method and wait for the device's answer, as the service API does.

        404 when the device is offline or not subscribed to methods, 504
        when it does not answer within timeout.
        """
        return self._call(self._invoke(identity_key(device_id, module_id), name, payload, timeout), timeout + 10)

    def update_desired(self, device_id: str, patch: dict, module_id: str = "") -> int:
        """Patch desired properties, notify the connected device; returns the new desired $version."""
        return self._call(self._update_desired(identity_key(device_id, module_id), patch), 10)

    def get_twin(self, device_id: str, module_id: str = "") -> dict:
        return self.twins.service_view(identity_key(device_id, module_id))

    def send_c2d(self, device_id: str, payload: bytes, properties: dict = None, **system) -> str:
        """Queue a cloud-to-device message (delivered now if the device listens); returns its id.

        system: message_id, correlation_id, content_type, content_encoding, expiry, ack.
        """
        if self.registry.device(device_id) is None:
            raise ValueError("device %r is not registered" % device_id)
        if isinstance(payload, str):
            payload = payload.encode()
        msg = self.c2d.enqueue(device_id, payload, properties, **system)
        self._call(self._deliver_c2d(device_id), 10)
        return msg.message_id

    def c2d_pending(self, device_id: str) -> list:
        return self.c2d.pending(device_id)

    def c2d_completed(self, device_id: str = None) -> list:
        return self.c2d.completed(device_id)

    def throttle(self, seconds: float):
        """Answer every CONNECT with CONNACK 3 (server unavailable) for a while, as a busy hub does."""
        self._throttled_until = time.time() + seconds

    def throttle_twin(self, seconds: float):
        """Answer twin GET and reported PATCH with 429 for a while: the hub throttles twin
        operations per unit ("IoT Hub quotas and throttling", Microsoft Learn)."""
        self._twin_throttled_until = time.time() + seconds

    def connected(self, device_id: str, module_id: str = "") -> bool:
        return identity_key(device_id, module_id) in self._sessions

    def subscriptions(self, device_id: str, module_id: str = "") -> set:
        session = self._sessions.get(identity_key(device_id, module_id))
        return set(session.subscriptions) if session else set()

    # --- service operations, on the event loop -------------------------------

    async def _invoke(self, identity, name, payload, timeout):
        session = self._sessions.get(identity)
        if session is None or dialect.METHODS_FILTER not in session.subscriptions:
            return MethodResult(DEVICE_NOT_ONLINE, {"errorCode": 404103, "message": "device %s is not online "
                                                    "or not subscribed to direct methods" % identity})
        rid = "%x" % self._next_rid
        self._next_rid += 1
        future = asyncio.get_running_loop().create_future()
        self._method_calls[rid] = (identity, future)
        try:
            # A method invoked without a payload reaches the device with an empty body, not "null"
            # (the Python service SDK's invoke_method sends none; the device SDKs hand over b"").
            body = b"" if payload is None else json.dumps(payload).encode()
            await session.publish("$iothub/methods/POST/%s/?$rid=%s" % (name, rid), body)
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            return MethodResult(GATEWAY_TIMEOUT, {"errorCode": 504101, "message": "timed out waiting for "
                                                  "the response from device %s" % identity})
        except ConnectionError:
            self._fail_method_calls(identity)
            return future.result()
        finally:
            self._method_calls.pop(rid, None)

    async def _update_desired(self, identity, patch):
        version = self.twins.patch(identity, "desired", patch)
        session = self._sessions.get(identity)
        if session is not None and dialect.DESIRED_FILTER in session.subscriptions:
            body = json.dumps(dict(patch, **{"$version": version})).encode()
            try:
                await session.publish("$iothub/twin/PATCH/properties/desired/?$version=%d" % version, body)
            except ConnectionError:
                pass  # the device fetches the twin when it reconnects
        return version

    async def _deliver_c2d(self, device_id):
        session = self._sessions.get(device_id)
        if session is None or not dialect.wants_c2d(session.subscriptions, device_id):
            return
        for msg in self.c2d.pending(device_id):
            if msg in session.inflight.values():
                continue
            msg.deliveries += 1
            packet_id = await session.publish(msg.topic(), msg.payload, 1, dup=msg.deliveries > 1)
            session.inflight[packet_id] = msg
            log.info("%s C2D %s sent (delivery %d)", device_id, msg.message_id, msg.deliveries)

    # --- server -------------------------------------------------------------

    async def start(self):
        self._loop = asyncio.get_running_loop()
        if self._front is None:
            self._server = await asyncio.start_server(self._handle, self.listen_host, self.port)
            self.port = self._server.sockets[0].getsockname()[1]
        else:  # devices reach the TLS front; it hands each connection to this loopback back end
            # (a report line carries the client's certificates: a chain may exceed asyncio's 64 KB line limit)
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, limit=1 << 20)
            try:
                await self._front.start(self.listen_host, self.port, self._server.sockets[0].getsockname()[1])
            except BaseException:
                self._server.close()
                raise
            self.port = self._front.port
        log.info("IoT Hub emulator for %s listening on %s:%d (%s hub)",
                 self.hub_host, self.listen_host, self.port, self.tls_mode)

    async def stop(self):
        """Close the listener and every connection, and wait for their handlers to end."""
        if self._server:
            if self._front is not None:
                await self._front.stop()
            self._server.close()
            for session in list(self._sessions.values()):
                session.stream.close()
            await close_listener(self._server, self._handlers)
            self._server = None

    async def _handle(self, reader, writer):
        task = asyncio.current_task()
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _serve(self, reader, writer):
        peer = "%s:%d" % writer.get_extra_info("peername")[:2]
        record = ConnectionRecord(peer)
        with self._lock:
            self._connections.append(record)
        if self._front is None:
            stream = tlspolicy.TlsStream(self._ctx, reader, writer)
        else:
            stream = tlsfront.FrontStream(reader, writer, self._front.token)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await asyncio.wait_for(stream.handshake(), CONNECT_TIMEOUT)
        except (tlspolicy.TlsRefused, asyncio.TimeoutError, ConnectionError) as e:
            record.reason = str(e) or "handshake timed out"
            log.info("%s TLS refused: %s", peer, record.reason)
            writer.close()
            return
        finally:
            if self._front is not None:  # the device's address and timing, as the front saw them
                record.peer = stream.peer or peer
                record.handshake_ms = stream.handshake_ms
                peer = record.peer
        record.result = "tls-ok"  # until CONNECT says more
        if self._front is None:
            record.handshake_ms = round((loop.time() - started) * 1000, 2)
        info = stream.info()
        record.tls_version, record.cipher, record.server_key = info["version"], info["cipher"], info["server_key"]
        record.handshake_bytes_in, record.handshake_bytes_out = stream.handshake_bytes
        chain = info["peer_chain"]
        if chain:
            record.client_thumbprint = hashlib.sha256(chain[0].public_bytes(Encoding.DER)).hexdigest().upper()
        try:
            await self._session(stream, record, chain)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
            if not record.reason:
                record.reason = str(e) or type(e).__name__
        except (mqttwire.MalformedPacket, dialect.DialectError) as e:
            record.reason = str(e)
            log.warning("%s %s: closing: %s", peer, record.device_id or "?", e)
        finally:
            record.bytes_in = stream.bytes_in
            if record.result == "connected":
                record.result = "closed"
            if record.device_id:
                session = self._sessions.get(self._client_id(record))
                if session is not None and session.stream is stream:
                    del self._sessions[self._client_id(record)]
                    self._fail_method_calls(self._client_id(record))
            stream.close()

    @staticmethod
    def _client_id(record):
        return record.device_id + ("/" + record.module_id if record.module_id else "")

    async def _refuse(self, stream, record, code, reason):
        record.result, record.connack, record.reason = "refused", code, reason
        log.info("%s CONNECT refused (CONNACK %d): %s", record.peer, code, reason)
        await stream.write(mqttwire.connack(code))

    async def _session(self, stream, record, chain):
        first = await asyncio.wait_for(mqttwire.read_packet(stream.read_exact), CONNECT_TIMEOUT)
        if first.kind != mqttwire.CONNECT:
            raise mqttwire.MalformedPacket("first packet is not CONNECT")
        connect = mqttwire.parse_connect(first.body)
        record.clean_session, record.keepalive = connect.clean_session, connect.keepalive
        if connect.protocol_level != 4:
            return await self._refuse(stream, record, CONNACK_UNACCEPTABLE_VERSION,
                                      "MQTT protocol level %d is not 3.1.1" % connect.protocol_level)
        try:
            login = dialect.parse_username(connect.username)
        except dialect.DialectError as e:
            return await self._refuse(stream, record, CONNACK_BAD_USERNAME, str(e))
        record.device_id, record.module_id = login.device_id, login.module_id
        record.username, record.api_version = connect.username, login.api_version
        if login.hub_host != self.hub_host:
            return await self._refuse(stream, record, CONNACK_BAD_USERNAME,
                                      "user name names hub %r, this is %r" % (login.hub_host, self.hub_host))
        if connect.client_id != self._client_id(record):
            return await self._refuse(stream, record, CONNACK_IDENTIFIER_REJECTED,
                                      "client id %r does not match the user name" % connect.client_id)
        if time.time() < self._throttled_until:
            return await self._refuse(stream, record, CONNACK_SERVER_UNAVAILABLE, "throttled: the hub is busy")
        reason = self.registry.authenticate(login.device_id, chain, module_id=login.module_id,
                                            password=connect.password, hub_host=self.hub_host)
        if reason:
            return await self._refuse(stream, record, CONNACK_NOT_AUTHORIZED, reason)
        record.model_id = login.params.get("model-id")
        record.auth = "sas" if connect.password is not None else "x509"

        client_id = self._client_id(record)
        previous = self._sessions.get(client_id)
        if previous is not None:
            log.info("%s second connection for %s: dropping the first", record.peer, client_id)
            previous.record.reason = "a second connection for this identity dropped it"
            previous.stream.close()
        # Clean session 0 keeps the subscriptions (and so the C2D flow) across connections.
        if connect.clean_session:
            self._kept_subscriptions.pop(client_id, None)
            subscriptions = set()
        else:
            subscriptions = self._kept_subscriptions.setdefault(client_id, set())
        session = Session(stream, record, subscriptions)
        self._sessions[client_id] = session
        record.result = "connected"
        await session.send(mqttwire.connack(0, session_present=not connect.clean_session and bool(subscriptions)))
        log.info("%s %s connected (%s, %s, %s server certificate, %s)", record.peer, client_id,
                 record.tls_version, record.cipher, record.server_key,
                 "SAS" if record.auth == "sas" else "client thumbprint %s" % record.client_thumbprint)
        if not record.module_id:
            # Clean session 0 keeps the C2D subscription: messages queued while the device was away
            # go out right after CONNACK, before it subscribes again ("Communicate with an IoT hub
            # using the MQTT protocol", Microsoft Learn, on CleanSession 0).
            await self._deliver_c2d(record.device_id)
        # The hub drops a client after 1.5 x keepalive of silence.
        idle = connect.keepalive * 1.5 if connect.keepalive else None
        # The hub ends a SAS connection when its token expires; the device renews by reconnecting.
        expiry = sas.expiry(connect.password) if record.auth == "sas" else None
        while True:
            limit = idle
            if expiry is not None:
                left = max(expiry - time.time(), 0)
                limit = left if limit is None else min(limit, left)
            try:
                packet = await asyncio.wait_for(mqttwire.read_packet(stream.read_exact), limit)
            except asyncio.TimeoutError:
                if expiry is not None and time.time() >= expiry:
                    record.reason = "SAS token expired"
                    log.info("%s %s: SAS token expired, closing", record.peer, client_id)
                    return
                raise
            if packet.kind == mqttwire.PUBLISH:
                await self._on_publish(session, mqttwire.parse_publish(packet.flags, packet.body))
            elif packet.kind == mqttwire.PINGREQ:
                record.pings += 1
                await session.send(mqttwire.encode(mqttwire.PINGRESP, 0))
            elif packet.kind == mqttwire.PUBACK:
                self._on_puback(session, mqttwire.parse_puback(packet.body))
            elif packet.kind == mqttwire.DISCONNECT:
                record.reason = "client disconnected"
                log.info("%s %s disconnected", record.peer, client_id)
                return
            elif packet.kind == mqttwire.SUBSCRIBE:
                await self._on_subscribe(session, *mqttwire.parse_subscribe(packet.body))
            elif packet.kind == mqttwire.UNSUBSCRIBE:
                packet_id, topics = mqttwire.parse_unsubscribe(packet.body)
                session.subscriptions.difference_update(topics)
                await session.send(mqttwire.encode(mqttwire.UNSUBACK, 0, packet_id.to_bytes(2, "big")))
            else:
                raise mqttwire.MalformedPacket("unexpected MQTT packet type %d" % packet.kind)

    async def _on_subscribe(self, session, packet_id, topics):
        record = session.record
        allowed = dialect.allowed_filters(record.device_id, record.module_id)
        codes = []
        for topic, qos in topics:
            # The hub is not a general broker ("Communicate with an IoT hub using the MQTT protocol",
            # Microsoft Learn): a filter it does not serve ends the connection, with no SUBACK 0x80.
            if topic not in allowed:
                raise dialect.DialectError("SUBSCRIBE to %r, a topic the hub does not serve" % topic)
            if topic not in session.subscriptions and len(session.subscriptions) >= MAX_SUBSCRIPTIONS:
                raise dialect.DialectError("SUBSCRIBE beyond %d subscriptions" % MAX_SUBSCRIPTIONS)
            session.subscriptions.add(topic)
            codes.append(min(qos, 1))
        await session.send(mqttwire.suback(packet_id, codes))
        if dialect.wants_c2d(session.subscriptions, record.device_id) and not record.module_id:
            await self._deliver_c2d(record.device_id)

    def _on_puback(self, session, packet_id):
        msg = session.inflight.pop(packet_id, None)
        if msg is not None:
            self.c2d.complete(msg)
            log.info("%s C2D %s acknowledged", msg.device_id, msg.message_id)

    async def _on_publish(self, session, pub):
        record = session.record
        if pub.qos > 1:
            raise dialect.DialectError("QoS 2 publish to %r (the hub closes the connection)" % pub.topic)
        # Anything but the topics this identity may publish to ends the connection (hub ACL).
        request = dialect.parse_device_publish(pub.topic, record.device_id, record.module_id)
        if request[0] in (dialect.TWIN_GET, dialect.TWIN_REPORTED) and time.time() < self._twin_throttled_until:
            await self._twin_response(session, TOO_MANY_REQUESTS, request[1], b"")
        elif request[0] == dialect.TWIN_GET:
            await self._twin_response(session, 200, request[1], json.dumps(
                self.twins.device_view(self._client_id(record))).encode())
        elif request[0] == dialect.TWIN_REPORTED:
            try:
                patch = json.loads(pub.payload)
                version = self.twins.patch(self._client_id(record), "reported", patch)
            except (ValueError, TwinError) as e:  # TwinError is a ValueError, as is bad JSON
                log.info("%s reported PATCH refused: %s", record.device_id, e)
                await self._twin_response(session, 400, request[1], b"")
            else:
                await self._twin_response(session, 204, request[1], b"", version)
        elif request[0] == dialect.METHOD_RESPONSE:
            self._method_response(record, request[1], request[2], pub.payload)
        else:
            size = len(pub.payload) + len(pub.topic.encode())  # body and properties (in the topic)
            if size > MAX_D2C_MESSAGE:
                raise dialect.DialectError("device-to-cloud message of %d bytes, over the hub's 256 KB" % size)
            self._store_telemetry(record, pub, request[1])
        if pub.qos == 1:
            await session.send(mqttwire.puback(pub.packet_id))

    async def _twin_response(self, session, status, rid, body, version=None):
        if dialect.TWIN_RESPONSE_FILTER not in session.subscriptions:
            log.info("%s twin response %d dropped: not subscribed to %s", session.record.device_id,
                     status, dialect.TWIN_RESPONSE_FILTER)
            return
        topic = "$iothub/twin/res/%d/?$rid=%s" % (status, rid)
        if version is not None:
            topic += "&$version=%d" % version
        await session.publish(topic, body)

    def _method_response(self, record, status, rid, body):
        identity, future = self._method_calls.get(rid, (None, None))
        if future is None or future.done() or identity != self._client_id(record):
            log.info("%s method response for unknown or expired request %s", record.device_id, rid)
            return
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            # The device's response payload must be JSON ("Understand and invoke direct methods
            # from IoT Hub", Microsoft Learn); what the hub does otherwise is not documented, so
            # the caller gets a failure rather than text a real hub might never pass on.
            log.info("%s method response for %s is not JSON (%d bytes)", record.device_id, rid, len(body))
            future.set_result(MethodResult(BAD_REQUEST, {"errorCode": BAD_REQUEST, "message":
                                                         "the device's method response is not valid JSON"}))
            return
        future.set_result(MethodResult(status, payload))

    def _fail_method_calls(self, identity):
        """Calls waiting on a device that went away get the hub's 404, not a timeout."""
        for owner, future in list(self._method_calls.values()):
            if owner == identity and not future.done():
                future.set_result(MethodResult(DEVICE_NOT_ONLINE, {
                    "errorCode": 404103, "message": "device %s went offline during the call" % identity}))

    def _store_telemetry(self, record, pub, props):
        system, app = dialect.split_properties(props)
        msg = TelemetryMessage(record.device_id, record.module_id, pub.topic, system, app, pub.payload, pub.qos)
        with self._lock:
            self._telemetry.append(msg)
            with open(self._telemetry_path, "a") as f:
                f.write(json.dumps(msg.to_json()) + "\n")
        log.info("%s telemetry %s props=%s %d bytes", record.device_id,
                 system.get("$.mid"), app, len(pub.payload))


async def close_listener(server, handlers):
    """Close a listening server (already told to close) and wait for its connection handlers to end."""
    for task in list(handlers):
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)
    await server.wait_closed()


class OnItsOwnLoop:
    """Runs an emulator (anything with async start() and stop()) on an event loop thread of its own:
    for tests and the demo. The context manager gives the emulator."""

    def __init__(self, service, name: str):
        self.service = service
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)

    def __enter__(self):
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.service.start(), self._loop).result(10)
        return self.service

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.service.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class BackgroundHub(OnItsOwnLoop):
    """A HubEmulator on its own event loop thread."""

    def __init__(self, *args, **kwargs):
        super().__init__(HubEmulator(*args, **kwargs), "aziot-hub")
        self.hub = self.service

"""A local IoT Hub: MQTT 3.1.1 over the hub's TLS policy, on loopback.

It plays the cloud for tests and the demo: it authenticates devices from
its registry, enforces the per-device topic ACL, stores telemetry with its
decoded properties, and records each connection's TLS facts. Read the
results through `telemetry()` / `connections()` (Python) or the
`aziot hub messages` command (state directory).
"""

import asyncio
import base64
import datetime
import hashlib
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, field

from cryptography.hazmat.primitives.serialization import Encoding

from .. import pki
from . import dialect, mqttwire, tlspolicy
from .registry import Registry

log = logging.getLogger("aziot.hub")

CONNACK_UNACCEPTABLE_VERSION = 1
CONNACK_IDENTIFIER_REJECTED = 2
CONNACK_BAD_USERNAME = 4
CONNACK_NOT_AUTHORIZED = 5

CONNECT_TIMEOUT = 10.0


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
    bytes_in: int = 0  # all TLS bytes from the client, handshake included
    username: str = None
    api_version: str = None
    clean_session: bool = None
    keepalive: int = None


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


class ServerIdentity:
    """The emulator's ECC and RSA chains, made once per state directory."""

    def __init__(self, state_dir: str, hub_host: str):
        self.dir = os.path.join(state_dir, "server")
        os.makedirs(self.dir, exist_ok=True)
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
        with open(os.path.join(self.dir, name), "wb") as f:
            f.write(data)

    def read(self, name: str) -> bytes:
        with open(os.path.join(self.dir, name), "rb") as f:
            return f.read()

    def pair(self, kind: str):
        return self.read(kind + "-chain.pem"), self.read(kind + "-key.pem")

    def root_path(self, kind: str, form: str = "pem") -> str:
        return os.path.join(self.dir, "%s-root.%s" % (kind, form))


class HubEmulator:
    def __init__(self, state_dir: str, *, listen_host: str = "127.0.0.1", port: int = 8883,
                 hub_host: str = pki.DEFAULT_HUB_HOST, tls_mode: str = "ecc-preview"):
        os.makedirs(state_dir, exist_ok=True)
        self.state_dir = state_dir
        self.listen_host = listen_host
        self.port = port
        self.hub_host = hub_host
        self.tls_mode = tls_mode
        self.identity = ServerIdentity(state_dir, hub_host)
        self.registry = Registry(os.path.join(state_dir, "registry.json"))
        self._ctx = tlspolicy.make_server_context(
            tls_mode, self.identity.pair("ecc"), self.identity.pair("rsa"), self.identity.dir)
        self._telemetry_path = os.path.join(state_dir, "telemetry.jsonl")
        self._lock = threading.Lock()
        self._telemetry = []
        self._connections = []
        self._sessions = {}  # client id -> TlsStream of the live connection
        self._server = None

    # --- service API (safe to call from another thread) -------------------

    def telemetry(self, device_id: str = None) -> list:
        with self._lock:
            return [m for m in self._telemetry if device_id is None or m.device_id == device_id]

    def connections(self, device_id: str = None) -> list:
        with self._lock:
            return [c for c in self._connections if device_id is None or c.device_id == device_id]

    # --- server -------------------------------------------------------------

    async def start(self):
        self._server = await asyncio.start_server(self._handle, self.listen_host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("IoT Hub emulator for %s listening on %s:%d (TLS mode %s)",
                 self.hub_host, self.listen_host, self.port, self.tls_mode)

    async def stop(self):
        if self._server:
            self._server.close()
            for stream in list(self._sessions.values()):
                stream.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader, writer):
        peer = "%s:%d" % writer.get_extra_info("peername")[:2]
        record = ConnectionRecord(peer)
        with self._lock:
            self._connections.append(record)
        stream = tlspolicy.TlsStream(self._ctx, reader, writer)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await asyncio.wait_for(stream.handshake(), CONNECT_TIMEOUT)
        except (tlspolicy.TlsRefused, asyncio.TimeoutError, ConnectionError) as e:
            record.reason = str(e) or "handshake timed out"
            log.info("%s TLS refused: %s", peer, record.reason)
            writer.close()
            return
        record.result = "tls-ok"  # until CONNECT says more
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
            if record.device_id and self._sessions.get(self._client_id(record)) is stream:
                del self._sessions[self._client_id(record)]
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
        if connect.password is not None:
            reason = "SAS authentication is not implemented by this emulator yet"
        else:
            reason = self.registry.authenticate(login.device_id, chain)
        if reason:
            return await self._refuse(stream, record, CONNACK_NOT_AUTHORIZED, reason)

        client_id = self._client_id(record)
        previous = self._sessions.get(client_id)
        if previous is not None:
            log.info("%s second connection for %s: dropping the first", record.peer, client_id)
            previous.close()
        self._sessions[client_id] = stream
        record.result = "connected"
        await stream.write(mqttwire.connack(0))
        log.info("%s %s connected (%s, %s, %s server certificate, client thumbprint %s)",
                 record.peer, client_id, record.tls_version, record.cipher, record.server_key,
                 record.client_thumbprint)
        # The hub drops a client after 1.5 x keepalive of silence.
        idle = connect.keepalive * 1.5 if connect.keepalive else None
        while True:
            packet = await asyncio.wait_for(mqttwire.read_packet(stream.read_exact), idle)
            if packet.kind == mqttwire.PUBLISH:
                await self._on_publish(stream, record, mqttwire.parse_publish(packet.flags, packet.body))
            elif packet.kind == mqttwire.PINGREQ:
                await stream.write(mqttwire.encode(mqttwire.PINGRESP, 0))
            elif packet.kind == mqttwire.PUBACK:
                pass
            elif packet.kind == mqttwire.DISCONNECT:
                record.reason = "client disconnected"
                log.info("%s %s disconnected", record.peer, client_id)
                return
            elif packet.kind == mqttwire.SUBSCRIBE:
                packet_id, topics = mqttwire.parse_subscribe(packet.body)
                # Subscriptions arrive with the C2D/method/twin work; refuse each filter for now.
                await stream.write(mqttwire.suback(packet_id, [0x80] * len(topics)))
            else:
                raise mqttwire.MalformedPacket("unexpected MQTT packet type %d" % packet.kind)

    async def _on_publish(self, stream, record, pub):
        if pub.qos > 1:
            raise dialect.DialectError("QoS 2 publish to %r (the hub closes the connection)" % pub.topic)
        # Anything but this identity's telemetry topic ends the connection (hub ACL).
        props = dialect.parse_telemetry_topic(pub.topic, record.device_id, record.module_id)
        system, app = dialect.split_properties(props)
        msg = TelemetryMessage(record.device_id, record.module_id, pub.topic, system, app, pub.payload, pub.qos)
        with self._lock:
            self._telemetry.append(msg)
            with open(self._telemetry_path, "a") as f:
                f.write(json.dumps(msg.to_json()) + "\n")
        log.info("%s telemetry %s props=%s %d bytes", record.device_id,
                 system.get("$.mid"), app, len(pub.payload))
        if pub.qos == 1:
            await stream.write(mqttwire.puback(pub.packet_id))


class BackgroundHub:
    """Runs a HubEmulator on its own event loop thread: for tests and the demo."""

    def __init__(self, *args, **kwargs):
        self.hub = HubEmulator(*args, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="aziot-hub", daemon=True)

    def __enter__(self) -> HubEmulator:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.hub.start(), self._loop).result(10)
        return self.hub

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.hub.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

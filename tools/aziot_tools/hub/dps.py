"""A Device Provisioning Service endpoint beside the hub emulator: enrollments, the MQTT
registration flow, and the assignment into an emulated hub's registry.

What it follows, and where from:
- MQTT dialect ("Use MQTT to provision a device", Microsoft Learn; the Python SDK's
  azure/iot/device/provisioning/pipeline/mqtt_topic_provisioning.py and
  pipeline_stages_provisioning_mqtt.py): client id = registration id; user name
  `{idScope}/registrations/{registrationId}/api-version=...`; subscribe
  `$dps/registrations/res/#`; register on `$dps/registrations/PUT/iotdps-register/?$rid=`;
  poll on `$dps/registrations/GET/iotdps-get-operationstatus/?$rid=&operationId=`;
  answers on `$dps/registrations/res/{status}/?$rid=[&retry-after=]`.
- Registration ids: up to 128 characters, letters, digits and `- . _ :` (DPS REST API,
  Runtime Registration).
- Symmetric keys: a SAS token for `{idScope}/registrations/{registrationId}` with
  skn=registration ("Symmetric key attestation", Microsoft Learn), or with no skn, as the
  Python SDK signs it; any other skn is refused.
- X.509 individual enrollments: the registration id is the certificate's CN ("X.509
  certificate attestation", Microsoft Learn); the emulator matches the leaf's thumbprint.
- Errors: 400 bad request, 401 credentials, 404 unknown, 429 throttled ("Troubleshoot DPS",
  Microsoft Learn), as `{"errorCode", "trackingId", "message", "timestampUtc"}`.
Where the sources say nothing, it is stricter: a wrong ID scope, an unknown registration or
bad credentials get CONNACK 5 and no session; a topic other than the two requests ends the
connection.

DPS presents an RSA chain (DigiCert Global Root G2); so does this, for every offer.
"""

import asyncio
import base64
import datetime
import hashlib
import hmac
import json
import logging
import os
import threading
import time
import uuid
from urllib.parse import parse_qs, unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from .. import pki
from . import mqttwire, sas, tlspolicy
from .registry import Registry, _chain_to_ca
from .server import OnItsOwnLoop, ServerIdentity, close_listener

log = logging.getLogger("aziot.dps")

DPS_HOST = "global.azure-devices-provisioning.net"
DEFAULT_ID_SCOPE = "0ne00AZ10T1"
CONNECT_TIMEOUT = 10
_REGISTER = "$dps/registrations/PUT/iotdps-register/"
_QUERY = "$dps/registrations/GET/iotdps-get-operationstatus/"
_SUBSCRIPTION = "$dps/registrations/res/#"
ATTESTATIONS = ("x509", "symmetric_key")


class Enrollments:
    """Individual enrollments and the registrations made under them, in a JSON file."""

    def __init__(self, path: str):
        self.path = path

    def _load(self) -> dict:
        if not os.path.exists(self.path):
            return {"individual": {}, "groups": {}, "registrations": {}}
        with open(self.path) as f:
            data = json.load(f)
        data.setdefault("groups", {})
        return data

    def _save(self, data: dict):
        tmp = self.path + ".tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:  # symmetric keys
            json.dump(data, f, indent=1)
        os.replace(tmp, self.path)

    def add_individual(self, registration_id: str, attestation: str, *, thumbprint: str = "",
                       primary_key: str = "", device_id: str = "", hubs=(), allocation: str = "hashed",
                       enabled: bool = True, initial_twin: dict = None, reprovision: str = "reprovisionandmigratedata"):
        """hubs: the linked hubs' host names to allocate among (empty: all of this DPS's)."""
        if attestation not in ATTESTATIONS:
            raise ValueError("attestation must be one of %s, not %r" % (", ".join(ATTESTATIONS), attestation))
        if attestation == "x509" and not thumbprint:
            raise ValueError("an X.509 enrollment needs the device certificate's thumbprint")
        if attestation == "symmetric_key" and not primary_key:
            raise ValueError("a symmetric key enrollment needs a primary key")
        _check_allocation(allocation, hubs, reprovision)
        data = self._load()
        data["individual"][registration_id.lower()] = {
            "registrationId": registration_id, "attestation": attestation, "thumbprint": thumbprint.upper(),
            "primaryKey": primary_key, "deviceId": device_id or registration_id, "hubs": list(hubs),
            "allocation": allocation, "enabled": enabled, "initialTwin": initial_twin or {},
            "reprovision": reprovision}
        self._save(data)

    def add_group(self, group_id: str, attestation: str, *, primary_key: str = "", ca_cert_pem: bytes = b"",
                  hubs=(), allocation: str = "hashed", enabled: bool = True, initial_twin: dict = None,
                  reprovision: str = "reprovisionandmigratedata"):
        """A group enrollment: symmetric key (each device's key is HMAC-SHA256(group key, its
        registration id)) or X.509 (devices whose chain leads to ca_cert_pem, a root or an
        intermediate; each device's id is its certificate's CN)."""
        if attestation not in ATTESTATIONS:
            raise ValueError("attestation must be one of %s, not %r" % (", ".join(ATTESTATIONS), attestation))
        if attestation == "x509":
            x509.load_pem_x509_certificate(ca_cert_pem)  # refuse garbage now, not at login
        elif not primary_key:
            raise ValueError("a symmetric key group needs a primary key")
        _check_allocation(allocation, hubs, reprovision)
        data = self._load()
        data["groups"][group_id.lower()] = {
            "groupId": group_id, "attestation": attestation, "primaryKey": primary_key,
            "caCertPem": ca_cert_pem.decode() if ca_cert_pem else "", "hubs": list(hubs), "allocation": allocation,
            "enabled": enabled, "initialTwin": initial_twin or {}, "reprovision": reprovision}
        self._save(data)

    def set_enabled(self, enrollment_id: str, enabled: bool, group: bool = False):
        data = self._load()
        table = data["groups" if group else "individual"]
        if enrollment_id.lower() not in table:
            raise KeyError("no %s enrollment %r" % ("group" if group else "individual", enrollment_id))
        table[enrollment_id.lower()]["enabled"] = enabled
        self._save(data)

    def groups(self) -> list:
        return list(self._load()["groups"].values())

    def exists(self, key: str) -> bool:
        """key: "individual:<id>" or "group:<id>", as registrations record it."""
        kind, _, name = key.partition(":")
        return name in self._load()["groups" if kind == "group" else "individual"]

    def individual(self, registration_id: str):
        return self._load()["individual"].get(registration_id.lower())  # ids are case-insensitive

    def list_individual(self) -> list:
        return list(self._load()["individual"].values())

    def record(self, registration_id: str, state: dict):
        data = self._load()
        data["registrations"][registration_id.lower()] = state
        self._save(data)

    def registrations(self) -> list:
        return list(self._load()["registrations"].values())

    def registration(self, registration_id: str):
        return self._load()["registrations"].get(registration_id.lower())


ALLOCATIONS = ("hashed", "static")
# What DPS does when a registered device registers again ("How to reprovision devices", Microsoft
# Learn; az iot dps enrollment create --reprovision-policy): move it by the allocation policy and take
# its twin along, move it with a fresh twin (the enrollment's initial one), or keep it where it is.
REPROVISION_POLICIES = ("reprovisionandmigratedata", "reprovisionandresetdata", "never")


def _check_allocation(allocation, hubs, reprovision="reprovisionandmigratedata"):
    # "Evenly weighted distribution" (hashed) and "static configuration" ("How to use allocation
    # policies", Microsoft Learn); static names exactly one hub.
    if allocation not in ALLOCATIONS:
        raise ValueError("allocation must be one of %s, not %r" % (", ".join(ALLOCATIONS), allocation))
    if reprovision not in REPROVISION_POLICIES:
        raise ValueError("reprovision policy must be one of %s, not %r" % (", ".join(REPROVISION_POLICIES),
                                                                           reprovision))
    if allocation == "static" and len(hubs) != 1:
        raise ValueError("static allocation names exactly one hub")


def derived_key(group_key_b64: str, registration_id: str) -> str:
    """A symmetric key group's device key ("Symmetric key attestation", Microsoft Learn)."""
    digest = hmac.new(base64.b64decode(group_key_b64), registration_id.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class DpsEmulator:
    def __init__(self, state_dir: str, hubs, *, id_scope: str = DEFAULT_ID_SCOPE, listen_host: str = "127.0.0.1",
                 port: int = 0, assign_delay_s: int = 1):
        """hubs: the HubEmulator objects DPS may assign devices to (the first is the default);
        assign_delay_s: the retry-after of each 202, and how long an assignment takes."""
        self.state_dir = os.path.join(state_dir, "dps")
        pki.private_dir(self.state_dir)
        self.hubs = {hub.hub_host: hub for hub in hubs}
        self.default_hub = hubs[0].hub_host
        self.id_scope = id_scope
        self.listen_host = listen_host
        self.port = port
        self.assign_delay_s = assign_delay_s
        self.identity = ServerIdentity(self.state_dir, DPS_HOST)
        self.enrollments = Enrollments(os.path.join(self.state_dir, "enrollments.json"))
        self._ctx = tlspolicy.make_server_context(None, self.identity.pair("rsa"), self.identity.dir)
        self.attempts = []  # (registration id or None, result), one per connection
        self._operations = {}  # operation id -> (registration id, started, request payload)
        self._server = None
        self._handlers = set()
        self._lock = threading.Lock()

    def root_der(self) -> bytes:
        return self.identity.read("rsa-root.der")

    async def start(self):
        self._server = await asyncio.start_server(self._handle, self.listen_host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("DPS emulator (%s, ID scope %s) listening on %s:%d", DPS_HOST, self.id_scope,
                 self.listen_host, self.port)

    async def stop(self):
        if self._server:
            self._server.close()
            await close_listener(self._server, self._handlers)
            self._server = None

    async def _handle(self, reader, writer):
        task = asyncio.current_task()
        self._handlers.add(task)
        attempt = [None, "tls-failed"]
        with self._lock:
            self.attempts.append(attempt)
        stream = tlspolicy.TlsStream(self._ctx, reader, writer)
        try:
            await asyncio.wait_for(stream.handshake(), CONNECT_TIMEOUT)
            chain = stream.info()["peer_chain"]
            attempt[1] = "tls-ok"
            await self._session(stream, chain, attempt)
        except (tlspolicy.TlsRefused, asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError) as e:
            log.info("DPS connection ended: %s", str(e) or type(e).__name__)
        except mqttwire.MalformedPacket as e:
            attempt[1] = "closed: %s" % e
            log.warning("DPS closing a connection: %s", e)
        finally:
            self._handlers.discard(task)
            stream.close()

    async def _session(self, stream, chain, attempt):
        first = await asyncio.wait_for(mqttwire.read_packet(stream.read_exact), CONNECT_TIMEOUT)
        if first.kind != mqttwire.CONNECT:
            raise mqttwire.MalformedPacket("first packet is not CONNECT")
        connect = mqttwire.parse_connect(first.body)
        registration_id, login, reason = self._login(connect, chain)
        attempt[0] = registration_id
        if reason:
            attempt[1] = "refused: " + reason
            log.info("DPS CONNECT refused (CONNACK 5): %s", reason)
            await stream.write(mqttwire.connack(5))
            return
        attempt[1] = "connected"
        await stream.write(mqttwire.connack(0))
        subscribed = False
        packet_id = 0
        while True:
            packet = await asyncio.wait_for(mqttwire.read_packet(stream.read_exact), max(connect.keepalive * 1.5, 30))
            if packet.kind == mqttwire.SUBSCRIBE:
                pid, topics = mqttwire.parse_subscribe(packet.body)
                if [t for t, _ in topics] != [_SUBSCRIPTION]:
                    raise mqttwire.MalformedPacket("SUBSCRIBE to %r: DPS serves %s only" % (topics, _SUBSCRIPTION))
                subscribed = True
                await stream.write(mqttwire.suback(pid, [min(topics[0][1], 1)]))
            elif packet.kind == mqttwire.PUBLISH:
                pub = mqttwire.parse_publish(packet.flags, packet.body)
                if pub.qos:
                    await stream.write(mqttwire.puback(pub.packet_id))
                status, query, body = await self._on_request(registration_id, login, pub, attempt)
                if not subscribed:
                    continue  # nobody listens for the answer
                topic = "$dps/registrations/res/%d/?%s" % (status, "&".join("%s=%s" % kv for kv in query))
                packet_id = packet_id % 65535 + 1
                payload = json.dumps(body).encode()
                await stream.write(mqttwire.encode(mqttwire.PUBLISH, 2, mqttwire.string(topic)
                                                   + packet_id.to_bytes(2, "big") + payload))
            elif packet.kind == mqttwire.PINGREQ:
                await stream.write(mqttwire.encode(mqttwire.PINGRESP, 0))
            elif packet.kind == mqttwire.PUBACK:
                pass
            elif packet.kind == mqttwire.DISCONNECT:
                return
            else:
                raise mqttwire.MalformedPacket("unexpected MQTT packet type %d" % packet.kind)

    def _login(self, connect, chain):
        """(registration id, (enrollment, its key or thumbprint), None) when the client may register,
        else (id or None, None, the reason)."""
        username = connect.username or ""
        scope, sep, rest = username.partition("/registrations/")
        registration_id, _, params = rest.partition("/")
        if not sep or not registration_id or not params.startswith("api-version="):
            return None, None, "user name %r is not {idScope}/registrations/{registrationId}/api-version=..." % username
        if scope != self.id_scope:
            return registration_id, None, "ID scope %r is not this DPS's (%s)" % (scope, self.id_scope)
        if connect.client_id != registration_id:
            return registration_id, None, "client id %r is not the registration id" % connect.client_id
        login, reason = self._attest(registration_id, connect, chain)
        if login is not None:
            # A registration id belongs to the enrollment it registered under while that exists: another
            # group's credentials must not take the device (and its hub identity) over.
            before = self.enrollments.registration(registration_id)
            owner = before.get("enrollment") if before else None
            if owner and owner != _enrollment_key(login[0]) and self.enrollments.exists(owner):
                return registration_id, None, "registration id %r belongs to enrollment %s" % (registration_id, owner)
        return registration_id, login, reason

    def _attest(self, registration_id, connect, chain):
        """((enrollment, key or thumbprint), None), or (None, the reason). An individual enrollment for the
        id decides alone; groups are tried only when there is none ("Enrollments", Microsoft Learn)."""
        individual = self.enrollments.individual(registration_id)
        if connect.password is not None:
            if individual is not None and individual["attestation"] != "symmetric_key":
                return None, "the enrollment for %r takes an X.509 certificate, not a SAS token" % registration_id
            token = connect.password.decode("utf-8", "replace")
            resource = "%s/registrations/%s" % (self.id_scope, registration_id)
            reason = "no symmetric key enrollment for registration id %r" % registration_id
            for enrollment, key in self._symmetric_candidates(registration_id):
                reason = sas.check(token, resource, (key,), policy="registration")
                if reason is None:
                    return (enrollment, key), None
            return None, reason
        if individual is not None and individual["attestation"] != "x509":
            return None, "the enrollment for %r takes a SAS token, not a certificate" % registration_id
        if not chain:
            return None, "no client certificate was presented"
        leaf = chain[0]
        now = datetime.datetime.now(datetime.timezone.utc)
        if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
            return None, "client certificate is outside its validity period"
        cns = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not cns or cns[0].value != registration_id:
            return None, "certificate CN %r is not the registration id" % (cns[0].value if cns else None)
        der = leaf.public_bytes(Encoding.DER)
        thumbprints = (hashlib.sha1(der).hexdigest().upper(), hashlib.sha256(der).hexdigest().upper())
        if individual is not None:
            if individual["thumbprint"] not in thumbprints:
                return None, "client certificate is not the enrolled one"
            return (individual, thumbprints[1]), None
        reason = "no X.509 enrollment for registration id %r" % registration_id
        for group in self.enrollments.groups():
            if group["attestation"] == "x509":
                ca = x509.load_pem_x509_certificate(group["caCertPem"].encode())
                reason = _chain_to_ca(chain, [ca], now)
                if reason is None:
                    return (group, thumbprints[1]), None
        return None, reason

    def _symmetric_candidates(self, registration_id):
        """(enrollment, key) pairs a token for this registration id may be signed with: its
        individual enrollment's key, else each symmetric key group's derived key."""
        individual = self.enrollments.individual(registration_id)
        if individual is not None:
            if individual["attestation"] == "symmetric_key":
                yield individual, individual["primaryKey"]
            return  # an individual enrollment takes precedence over groups
        for group in self.enrollments.groups():
            if group["attestation"] == "symmetric_key":
                yield group, derived_key(group["primaryKey"], registration_id)

    async def _on_request(self, registration_id, login, pub, attempt):
        """(status, query pairs, body) answering a register or operation-status request."""
        topic, _, query = pub.topic.partition("?")
        fields = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        rid = fields.get("$rid")
        if topic not in (_REGISTER, _QUERY) or rid is None:
            raise mqttwire.MalformedPacket("PUBLISH to %r: not a DPS request" % pub.topic[:120])
        answer = [("$rid", rid)]
        if topic == _REGISTER:
            try:
                request = json.loads(pub.payload or b"{}")
            except ValueError:
                return 400, answer, _error(400, "the registration request is not JSON")
            if not isinstance(request, dict) or str(request.get("registrationId", "")).lower() != registration_id.lower():
                return 400, answer, _error(400, "registrationId in the body is not the one logged in")
            operation = "4.%s.%s" % (hashlib.sha1(registration_id.encode()).hexdigest()[:16], uuid.uuid4())
            self._operations[operation] = (registration_id, time.monotonic(), request.get("payload"))
            attempt[1] = "assigning"
            return 202, answer + [("retry-after", str(self.assign_delay_s))], {"operationId": operation,
                                                                               "status": "assigning"}
        operation = unquote(fields.get("operationId", ""))
        known = self._operations.get(operation)
        if known is None or known[0] != registration_id:
            return 404, answer, _error(404, "unknown operation id")
        if time.monotonic() - known[1] < self.assign_delay_s:
            return 202, answer + [("retry-after", str(self.assign_delay_s))], {"operationId": operation,
                                                                               "status": "assigning"}
        state = await self._assign(registration_id, login, known[2])
        attempt[1] = state["status"]
        return 200, answer, {"operationId": operation, "status": state["status"], "registrationState": state}

    async def _assign(self, registration_id, login, payload):
        enrollment, credential = login
        before = self.enrollments.registration(registration_id)
        owner = before.get("enrollment") if before else None
        if owner and owner != _enrollment_key(enrollment) and self.enrollments.exists(owner):
            # Registered through another enrollment since this connection logged in: it keeps the id.
            raise mqttwire.MalformedPacket("registration id %r now belongs to enrollment %s" % (registration_id, owner))
        now = datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        state = {"registrationId": registration_id, "createdDateTimeUtc": now, "lastUpdatedDateTimeUtc": now,
                 "etag": hashlib.sha1(now.encode()).hexdigest()}
        if not enrollment["enabled"]:
            # The status is DPS's ("Device Registration State", DPS REST API); its error code for a disabled
            # enrollment is not documented, so none is made up here.
            state.update(status="disabled", errorMessage="the enrollment is disabled")
        else:
            device_id = enrollment.get("deviceId") or registration_id
            before = self.enrollments.registration(registration_id)
            before = before if before and before.get("status") == "assigned" else None
            policy = enrollment.get("reprovision", "reprovisionandmigratedata")
            if before and before["assignedHub"] not in self.hubs:
                before = None  # its hub is no longer linked: allocated afresh, with a fresh twin
            if before and policy == "never":
                hub, substatus = self.hubs[before["assignedHub"]], "initialAssignment"
            else:
                hub = self.hubs[self._allocate(enrollment, registration_id)]
                substatus = "initialAssignment"
                if before and before["assignedHub"] != hub.hub_host:
                    substatus = "deviceDataMigrated" if policy == "reprovisionandmigratedata" else "deviceDataReset"
            registry = Registry(os.path.join(hub.state_dir, "registry.json"))
            # The device's credential in the hub is set anew; a device an operator disabled stays disabled.
            status = (registry.device(device_id) or {}).get("status", "enabled")
            if enrollment["attestation"] == "x509":
                registry.add_device(device_id, "x509_thumbprint", credential, status=status)
            else:
                registry.add_device(device_id, "sas", primary_key=credential, status=status)
            if substatus == "deviceDataMigrated":
                old = self.hubs[before["assignedHub"]]
                desired = old.get_twin(before["deviceId"])["properties"]["desired"]
                desired = {k: v for k, v in desired.items() if not k.startswith("$")}
            else:
                desired = (enrollment.get("initialTwin") or {}).get("properties", {}).get("desired")
            if desired and (before is None or substatus != "initialAssignment"):
                # A new twin gets the enrollment's initial state ({"properties": {"desired": {...}}}); a
                # migrated one, what the device had.
                await _on_loop_of(hub, hub._update_desired(device_id, desired))
            state.update(status="assigned", substatus=substatus, assignedHub=hub.hub_host, deviceId=device_id)
            log.info("DPS assigned %s to %s as %s (%s)", registration_id, hub.hub_host, device_id, substatus)
            if payload is not None:
                state["payload"] = payload
        state["enrollment"] = _enrollment_key(enrollment)
        self.enrollments.record(registration_id, state)
        return state

    def _allocate(self, enrollment, registration_id):
        """The hub for this registration: the one a static policy names, else an even hash of the
        registration id over the enrollment's hubs (all linked hubs when it names none)."""
        hubs = enrollment.get("hubs") or sorted(self.hubs)
        unknown = [h for h in hubs if h not in self.hubs]
        if unknown:
            raise ValueError("enrollment names hub %r, which is not linked to this DPS" % unknown[0])
        if enrollment.get("allocation") == "static":
            return hubs[0]
        digest = hashlib.sha256(registration_id.lower().encode()).digest()
        return hubs[int.from_bytes(digest[:4], "big") % len(hubs)]


def _enrollment_key(enrollment: dict) -> str:
    return ("group:" + enrollment["groupId"] if "groupId" in enrollment else "individual:" + enrollment["registrationId"]).lower()


async def _on_loop_of(hub, coro):
    """Run coro on the hub's event loop: this one (`aziot dps serve`) or another thread's (tests)."""
    if hub._loop is asyncio.get_running_loop():
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, hub._loop))


def _error(code: int, message: str) -> dict:
    # The codes of "Troubleshoot DPS" (Microsoft Learn: 400, 401, 404, ...), not the finer six-digit ones,
    # which it does not list.
    return {"errorCode": code, "trackingId": str(uuid.uuid4()), "message": message,
            "timestampUtc": datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")}


class BackgroundDps(OnItsOwnLoop):
    """A DpsEmulator on its own event loop thread, for tests and the demo."""

    def __init__(self, *args, **kwargs):
        super().__init__(DpsEmulator(*args, **kwargs), "aziot-dps")
        self.dps = self.service

"""Zero-touch provisioning: register with the Device Provisioning Service and keep where it sent us.

    from aziot import dps
    from aziot.hub import HubClient
    hub = HubClient(dps.hub_config())   # DPS only when nothing is stored yet

The flow ("Use MQTT to provision a device", Microsoft Learn; topics and
payloads in provisioning.py): log in to DPS as the registration id, send the
registration, get 202 with an operation id and `retry-after`, ask for the
operation's status after that many seconds until it is 200 with
`assigned` (or failed, disabled, unassigned: ProvisioningError), all within
`dps_timeout`. The assignment is written to flash atomically, so the next
boot goes straight to the hub.
"""

import json
import os
import random
import time

from . import certs, clock, provisioning, protocol, sas, tlsconf
from .config import load as load_config
from .errors import (ClockError, ConfigError, ConnectionRefused, ConnectionLost, ProtocolError,
                     ProvisioningError)
from .link import open_tls
from .mqtt import MqttSession
from .profiles import ProfileChooser
from .provisioning import Assignment

_SAS_TTL = 3600  # a DPS registration takes seconds; the token need not outlive it


_MAX_STORED = 2048  # bytes of the assignment file; a larger DPS payload is handed over but not kept


def load_assignment(path):
    """The stored Assignment, or None when there is none; ConfigError naming the file if it is corrupt."""
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_STORED + 1)
    except OSError:
        return None
    try:
        if len(data) > _MAX_STORED:
            raise ConfigError("larger than %d bytes" % _MAX_STORED)
        return Assignment.from_state(json.loads(data.decode()))
    except (ValueError, UnicodeError):  # MicroPython's UnicodeError is not a ValueError
        why = "not JSON"
    except (ConfigError, ProtocolError) as e:
        why = str(e)
    raise ConfigError("stored DPS assignment %s is unreadable (%s)" % (path, why))


def save_assignment(path, assignment):
    """Write to a temporary file, then rename: a reset mid-write leaves the old file or the new one. A
    custom payload too large to keep is left out (register() returned it whole)."""
    text = assignment.to_json().encode()
    if len(text) > _MAX_STORED:
        payload, assignment.payload = assignment.payload, None
        text = assignment.to_json().encode()
        assignment.payload = payload
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(text)
    os.rename(tmp, path)


# After the hub refused an assignment DPS gave again, the next registration waits this long, doubling
# per refusal up to a day, with full jitter: a device the hub keeps refusing (disabled, deleted) must
# not flood DPS, whose registration rate is limited per unit ("IoT Hub DPS limits", Microsoft Learn).
_REFUSED_WAIT_S = 60
_REFUSED_WAIT_CAP_S = 86400


def note_refusal(config, now):
    """The hub refused the stored identity (CONNACK 4/5): DPS may be asked at once the first time,
    then after a doubling wait. Kept on flash, so a reboot does not reset it."""
    try:
        assignment = load_assignment(config.dps_assignment_file)
    except ConfigError:
        return
    if assignment is None:
        return
    assignment.refusals += 1
    wait = 0
    if assignment.refusals > 1:
        ceiling = min(_REFUSED_WAIT_CAP_S, _REFUSED_WAIT_S << min(assignment.refusals - 2, 20))
        wait = ceiling // 2 + random.getrandbits(24) % (ceiling // 2 + 1)
    assignment.next_dps_at = int(now) + wait
    save_assignment(config.dps_assignment_file, assignment)


def note_accepted(config):
    """The hub took the stored identity: its refusals are forgotten (one small read per connect)."""
    try:
        assignment = load_assignment(config.dps_assignment_file)
    except ConfigError:
        return
    if assignment is not None and assignment.refusals:
        assignment.refusals = assignment.next_dps_at = 0
        save_assignment(config.dps_assignment_file, assignment)


def may_ask_again(config, now):
    """Whether a re-registration may run now (always when nothing, or nothing readable, is stored)."""
    try:
        stored = load_assignment(config.dps_assignment_file)
    except ConfigError:
        return True
    return stored is None or stored.refusals == 0 or now >= stored.next_dps_at


def register_again(config, clock_now=clock.unix_time, payload=None):
    """Register and store the answer; when DPS names the place the hub refused, the refusal count
    and its wait are kept, so the next refusal waits longer."""
    try:
        stored = load_assignment(config.dps_assignment_file)
    except ConfigError:
        stored = None
    assignment = DpsClient(config, clock_now).register(payload)
    if assignment.same_place(stored):
        assignment.refusals, assignment.next_dps_at = stored.refusals, stored.next_dps_at
    save_assignment(config.dps_assignment_file, assignment)
    return assignment


def hub_config(config=None, payload=None, clock_now=clock.unix_time):
    """The config for HubClient: the stored assignment, or a new registration when there is none (or
    when the stored one is unreadable: that is said, then DPS is asked again; zero touch)."""
    config = config or load_config()
    if not config.dps_id_scope:
        return config
    try:
        assignment = load_assignment(config.dps_assignment_file)
    except ConfigError as e:
        print("aziot: %s: registering with DPS again" % e)
        assignment = None
    if assignment is None or (assignment.refusals and clock_now() >= assignment.next_dps_at):
        assignment = register_again(config, clock_now, payload)  # nothing stored, or the hub refused it
    return config.assigned(assignment.hub_host, assignment.device_id)


class DpsClient:
    def __init__(self, config, clock_now=clock.unix_time):
        if not config.dps_id_scope:
            raise ConfigError("no 'dps_id_scope' in the config: this device is not set up for DPS")
        self.config = config
        self._now = clock_now
        self.registration_id = provisioning.check_registration_id(config.registration_id)
        self.operation_id = None
        self.tls_profile = None

    def register(self, payload=None):
        """Register (payload: the optional custom allocation data, any JSON value); returns the Assignment."""
        cfg = self.config
        deadline = time.ticks_add(time.ticks_ms(), cfg.dps_timeout * 1000)
        session = self._open(deadline)
        try:
            session.subscribe(provisioning.SUBSCRIBE_TOPIC.encode(), 1)
            session.end_of_connect()
            status, body = self._request(session, 1, provisioning.register_topic(1),
                                         provisioning.register_body(self.registration_id, payload), deadline)
            rid = 1
            while True:
                result = self._outcome(status, body)
                if result is not None:
                    return result
                rid += 1
                status, body = self._request(session, rid, provisioning.query_topic(rid, self.operation_id),
                                             b"", deadline)
        finally:
            session.disconnect()

    def _outcome(self, status, body):
        """The Assignment when DPS finished, None while it is still assigning; raises on a refusal."""
        operation = body.get("operationId")
        if isinstance(operation, str) and operation:
            self.operation_id = operation  # some responses omit it: keep the last one
        if status == 202 or (status == 200 and body.get("status") == "assigning"):
            if self.operation_id is None:
                raise ProtocolError("DPS answered %d without an operation id" % status)
            return None
        if status != 200:
            raise ProvisioningError("DPS refused the registration of %r: status %d, error %s: %s"
                                    % (self.registration_id, status, body.get("errorCode"),
                                       body.get("message", "no message")), status, body.get("errorCode"))
        state = body.get("registrationState") or {}
        result = body.get("status")
        if result == "assigned":
            return Assignment.from_state(state, self.registration_id)
        if not isinstance(state, dict) or not isinstance(result, (str, type(None))):
            raise ProtocolError("DPS answered 200 with a status or registration state of the wrong type")
        raise ProvisioningError("DPS did not assign %r: status %r, error %s: %s"
                                % (self.registration_id, result, state.get("errorCode"),
                                   state.get("errorMessage", "no message")), result, state.get("errorCode"))

    def _request(self, session, rid, topic, body, deadline):
        """Publish and wait for the response with this $rid; after a 202 or 429 wait its retry-after first."""
        session.publish(topic.encode(), body, 1)
        while True:
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                raise ProvisioningError("no assignment from DPS within %d s (dps_timeout)" % self.config.dps_timeout,
                                        "timeout")
            session.pump(min(left, 1000))
            for msg in session.inbox[:]:
                session.inbox.remove(msg)
                if msg.packet_id is not None:
                    session.acknowledge(msg.packet_id)
                parsed = provisioning.parse_response_topic(msg.topic or "")
                if parsed is None or parsed[1] != str(rid):
                    continue  # not ours (a stale answer): nothing waits for it
                status, _, retry = parsed
                if msg.payload is None and msg.size:
                    raise ProvisioningError("DPS answered with %d bytes, more than max_message %d: raise it (a "
                                            "large custom payload comes back in the answer)"
                                            % (msg.size, self.config.max_message), status)
                response = provisioning.parse_body(msg.payload)
                if status in (202, 429) or (status == 200 and response.get("status") == "assigning"):
                    self._wait(retry, deadline)
                    if status == 429:
                        session.publish(topic.encode(), body, 1)  # throttled: the same request again
                        continue
                return status, response

    def _wait(self, retry_after, deadline):
        # At least a second between requests, whatever DPS says: a retry-after of 0 must not become a flood.
        wait_ms = max(provisioning.DEFAULT_RETRY_AFTER_S if retry_after is None else retry_after, 1) * 1000
        left = time.ticks_diff(deadline, time.ticks_ms())
        if wait_ms >= left:
            raise ProvisioningError("DPS asked to wait %d s, past the %d s dps_timeout"
                                    % (wait_ms // 1000, self.config.dps_timeout), "timeout")
        time.sleep_ms(wait_ms)

    def _open(self, deadline):
        cfg = self.config
        now = self._now()
        roots = certs.root_files(cfg.roots)
        if cfg.auth == "sas":
            if not clock.is_set(now):
                raise ClockError("the clock reads %s: a SAS token needs the current time" % clock.format_utc(now))
            key = sas.device_key(cfg)
            password = sas.token(provisioning.sas_resource(cfg.dps_id_scope, self.registration_id), key,
                                 int(now) + _SAS_TTL, provisioning.SAS_POLICY)
            credentials, message = (None, None, "", ""), 0
        else:
            if not clock.is_set(now):
                raise ClockError("the clock reads %s: checking DPS's certificate needs the current time"
                                 % clock.format_utc(now))
            chain, leaf, message = certs.read_cert_chain(cfg.cert)
            certs.check_current(leaf, now, cfg.cert)
            credentials, password = (chain, certs.read_der(cfg.key, "device key"), cfg.cert, cfg.key), None
        asked = tlsconf.set_max_fragment_length(cfg.max_fragment_length, message)
        login = protocol.connect_packet(self.registration_id, provisioning.username(cfg.dps_id_scope,
                                        self.registration_id), password, cfg.keepalive, True)
        offers = ProfileChooser(cfg.tls_profile, cfg.dps_host).order(now)  # remembered for the hub only
        where = "DPS %s" % cfg.dps_host
        try:
            link = open_tls(offers, cfg.dps_host, cfg.dps_address or cfg.dps_host, cfg.dps_port, cfg.timeout,
                            roots, credentials, asked, login, deadline, cfg.tls_verified_file)
        except ConnectionLost as e:
            raise ConnectionLost("%s: %s" % (where, e))
        self.tls_profile = link.profile
        try:
            return MqttSession(link.stream, self.registration_id, cfg.keepalive, cfg.max_message, link.sock,
                               cfg.timeout, link.deadline)
        except ConnectionRefused as e:
            raise ProvisioningError("DPS refused the login of %r (CONNACK %d): a wrong ID scope, an unknown "
                                    "registration id, or a key or certificate DPS does not know"
                                    % (self.registration_id, e.code), "refused", e.code)

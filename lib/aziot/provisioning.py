"""Device Provisioning Service (DPS) over MQTT: names, topics and payloads; no I/O.

From "Use MQTT to provision a device" / "Device Provisioning Service MQTT
support" (Microsoft Learn) and the Azure IoT SDKs (Python:
azure/iot/device/provisioning/pipeline/mqtt_topic_provisioning.py; C:
az_iot_provisioning_client.c):
  client id   the registration id
  user name   {idScope}/registrations/{registrationId}/api-version=2019-03-31
  subscribe   $dps/registrations/res/#
  register    $dps/registrations/PUT/iotdps-register/?$rid={rid}
              body {"registrationId": ..., "payload": ...}
  poll        $dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={id}
  responses   $dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]
A symmetric-key device signs a SAS token for {idScope}/registrations/{registrationId}
with skn=registration.
"""

import json

from .errors import ConfigError, ProtocolError
from .protocol import url_decode, url_encode

GLOBAL_HOST = "global.azure-devices-provisioning.net"
API_VERSION = "2019-03-31"
SUBSCRIBE_TOPIC = "$dps/registrations/res/#"
_RESPONSE = "$dps/registrations/res/"
DEFAULT_RETRY_AFTER_S = 2  # what the Python SDK waits when a response carries no retry-after
SAS_POLICY = "registration"

# A registration id is "a case-insensitive string (up to 128 characters long) of alphanumeric
# characters plus the special characters: '-', '.', '_', ':'. The last character must be
# alphanumeric or dash ('-')" (DPS REST API, Runtime Registration; "Enrollments", Microsoft Learn).
_ID_SPECIALS = "-._:"
# IoT Hub device ids: letters, digits and - . % _ * ? ! ( ) , : = @ $ ' ("Understand the identity registry")
_DEVICE_ID_SPECIALS = "-.%_*?!(),:=@$'"


def _made_of(text, specials):
    """Only ASCII letters, digits and the given specials."""
    for c in text:
        if ord(c) > 127 or not (c.isalpha() or c.isdigit() or c in specials):
            return False
    return True


def check_registration_id(registration_id):
    if not 1 <= len(registration_id) <= 128:
        raise ConfigError("DPS registration id must be 1 to 128 characters, not %d" % len(registration_id))
    for c in registration_id:
        if not (c.isalpha() or c.isdigit() or c in _ID_SPECIALS) or ord(c) > 127:
            raise ConfigError("DPS registration id %r: %r is not allowed (letters, digits and - . _ :)"
                              % (registration_id, c))
    last = registration_id[-1]
    if not (last.isalpha() or last.isdigit() or last == "-"):
        raise ConfigError("DPS registration id %r must end with a letter, a digit or '-'" % registration_id)
    return registration_id


def username(id_scope, registration_id):
    return "%s/registrations/%s/api-version=%s" % (id_scope, registration_id, API_VERSION)


def sas_resource(id_scope, registration_id):
    return "%s/registrations/%s" % (id_scope, registration_id)


def register_topic(rid):
    return "$dps/registrations/PUT/iotdps-register/?$rid=" + url_encode(str(rid))


def query_topic(rid, operation_id):
    return ("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=%s&operationId=%s"
            % (url_encode(str(rid)), url_encode(operation_id)))


def register_body(registration_id, payload=None):
    body = {"registrationId": registration_id}
    if payload is not None:
        body["payload"] = payload
    return json.dumps(body).encode()


def parse_response_topic(topic):
    """(status, rid, retry-after seconds or None) of a DPS response topic; None for other topics."""
    if not topic.startswith(_RESPONSE):
        return None
    rest = topic[len(_RESPONSE):]
    status, _, query = rest.partition("/?")
    try:
        status = int(status)
    except ValueError:
        raise ProtocolError("DPS response topic with a status that is not a number: %r" % topic[:120])
    fields = {}
    for pair in query.split("&") if query else ():
        key, _, value = pair.partition("=")
        fields[url_decode(key)] = url_decode(value)
    retry = fields.get("retry-after")
    try:
        retry = int(retry) if retry is not None else None
    except ValueError:
        raise ProtocolError("DPS retry-after is not a number: %r" % retry[:20])
    return status, fields.get("$rid"), retry


class Assignment:
    """Where DPS put the device: the hub, the device id there, and the optional custom payload."""

    __slots__ = ("hub_host", "device_id", "payload", "substatus", "registration_id", "refusals", "next_dps_at")

    def __init__(self, hub_host, device_id, payload=None, substatus=None, registration_id=None):
        self.hub_host = hub_host
        self.device_id = device_id
        self.payload = payload
        self.substatus = substatus
        self.registration_id = registration_id
        # Kept on flash with it: how often the hub refused this assignment in a row, and the Unix time
        # before which DPS is not asked again (see dps.note_refusal).
        self.refusals = 0
        self.next_dps_at = 0

    def same_place(self, other):
        return other is not None and (self.hub_host, self.device_id) == (other.hub_host, other.device_id)

    def to_json(self):
        return json.dumps({"assignedHub": self.hub_host, "deviceId": self.device_id, "payload": self.payload,
                           "substatus": self.substatus, "registrationId": self.registration_id,
                           "refusals": self.refusals, "nextDpsAt": self.next_dps_at})

    @classmethod
    def from_state(cls, state, registration_id=None):
        """From a registrationState object (as DPS sends it, and as stored on flash)."""
        if not isinstance(state, dict):
            raise ProtocolError("DPS registration state is not a JSON object")
        hub, device = state.get("assignedHub"), state.get("deviceId")
        if not isinstance(hub, str) or not hub or not isinstance(device, str) or not device:
            raise ProtocolError("DPS registration state names no assigned hub and device id")
        # What comes back is used as a host name (SNI, the MQTT user name) and in topics: it must be one.
        if len(hub) > 253 or not _made_of(hub, "-.") or ".." in hub:
            raise ProtocolError("DPS assigned a hub whose name is not a host name: %r" % hub[:80])
        if len(device) > 128 or not _made_of(device, _DEVICE_ID_SPECIALS):
            raise ProtocolError("DPS assigned a device id IoT Hub would not take: %r" % device[:80])
        assignment = cls(hub, device, state.get("payload"), state.get("substatus"),
                         state.get("registrationId", registration_id))
        refusals, next_at = state.get("refusals", 0), state.get("nextDpsAt", 0)
        if isinstance(refusals, int) and isinstance(next_at, int):  # ours, on flash; DPS sends neither
            assignment.refusals, assignment.next_dps_at = refusals, next_at
        return assignment


def parse_body(payload):
    """The JSON object of a DPS response (an empty object for an empty body)."""
    if not payload:
        return {}
    try:
        body = json.loads(payload)
    except ValueError:
        raise ProtocolError("DPS response is not JSON")
    if not isinstance(body, dict):
        raise ProtocolError("DPS response is not a JSON object")
    return body

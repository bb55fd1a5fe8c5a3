"""IoT Hub's MQTT dialect as pure functions: no sockets, no state.

Rules from "Communicate with an IoT hub using the MQTT protocol"
(learn.microsoft.com/azure/iot/iot-mqtt-connect-to-iot-hub) and the
traffic of the official Python device SDK (azure-iot-device 2.14.0).
"""

from .errors import ProtocolError

# RFC 3986 unreserved characters pass; everything else is %XX (UTF-8), as the
# Python SDK encodes property names and values (space -> %20, $ -> %24).
_UNRESERVED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
_HEX = b"0123456789ABCDEF"
_HEXDIGITS = b"0123456789ABCDEFabcdef"

# System property names as they appear in a telemetry topic.
PROP_MESSAGE_ID = "$.mid"
PROP_CORRELATION_ID = "$.cid"
PROP_USER_ID = "$.uid"
PROP_CONTENT_TYPE = "$.ct"
PROP_CONTENT_ENCODING = "$.ce"
PROP_EXPIRY = "$.exp"
PROP_CREATION_TIME = "$.ctime"
PROP_COMPONENT = "$.sub"

# "IoT Hub quotas and throttling" (Microsoft Learn): a device-to-cloud message, body and
# properties, is at most 256 KB; the hub ends the connection of a device that sends more.
MAX_D2C_MESSAGE = 262144

CONNACK_MEANINGS = {
    1: "unacceptable protocol version",
    2: "client id rejected: it must equal the device id",
    3: "server unavailable, retry later",
    4: "bad user name or password",
    5: "not authorized: unknown or disabled device, or credentials that do not match the registry",
}


def url_encode(text):
    """Percent-encoding of a str (as UTF-8) or bytes; returns str."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    for b in data:
        if b not in _UNRESERVED:
            break
    else:
        return data.decode()  # the common case: nothing to escape
    out = bytearray()
    for b in data:
        if b in _UNRESERVED:
            out.append(b)
        else:
            out.append(0x25)  # '%'
            out.append(_HEX[b >> 4])
            out.append(_HEX[b & 15])
    return out.decode()


def url_decode(text):
    """Percent-decoding; a bad escape raises ProtocolError naming it."""
    data = text.encode()
    if b"%" not in data:
        return text
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        c = data[i]
        if c == 0x25:  # '%'
            pair = data[i + 1:i + 3]
            if len(pair) != 2 or pair[0] not in _HEXDIGITS or pair[1] not in _HEXDIGITS:
                raise ProtocolError("bad percent escape in %r" % text)
            out.append(int(pair.decode(), 16))
            i += 3
        else:
            out.append(c)
            i += 1
    try:
        return out.decode()
    except UnicodeError:
        raise ProtocolError("percent escapes are not UTF-8 in %r" % text)


def client_id(device_id, module_id=""):
    return device_id + "/" + module_id if module_id else device_id


def username(hub_host, device_id, module_id="", api_version="2021-04-12", extra=None):
    """`{host}/{device}[/{module}]/?api-version=...` plus URL-encoded extras.

    extra: (name, value) pairs such as ("model-id", dtmi) or
    ("DeviceClientType", agent).
    """
    parts = [hub_host, "/", client_id(device_id, module_id), "/?api-version=", api_version]
    for name, value in extra or ():
        parts.append("&" + name + "=" + url_encode(value))
    return "".join(parts)


def encode_properties(pairs):
    """`k=v&k=v` with names and values URL-encoded; pairs: iterable of (k, v)."""
    return "&".join(url_encode(k) + "=" + url_encode(v) for k, v in pairs)


def decode_properties(bag):
    """The inverse of encode_properties: a dict; `k` alone maps to None."""
    props = {}
    if not bag:
        return props
    for item in bag.split("&"):
        if not item:
            continue
        eq = item.find("=")
        if eq < 0:
            props[url_decode(item)] = None
        else:
            props[url_decode(item[:eq])] = url_decode(item[eq + 1:])
    return props


def telemetry_topic(device_id, module_id="", properties=None, system=None):
    """The device-to-cloud topic, with system properties first.

    system: (name, value) pairs of `$.` properties; properties: application
    properties as a dict or pairs. None values are left out.
    """
    base = "devices/" + device_id + ("/modules/" + module_id if module_id else "") + "/messages/events/"
    pairs = [(k, v) for k, v in (system or ()) if v is not None]
    if properties:
        items = properties.items() if isinstance(properties, dict) else properties
        for k, v in items:
            if not isinstance(k, str) or k.startswith("$"):
                raise ValueError("application property names must be strings not starting with '$': %r" % (k,))
            if v is None:
                continue
            pairs.append((k, v if isinstance(v, str) else str(v)))
    return base + encode_properties(pairs)


# --- MQTT 3.1.1 packets the transport builds itself -------------------------
# umqtt.simple's connect() cannot send a user name without a password, which
# X.509 authentication needs, and dials its own socket; so CONNECT and CONNACK
# live here and umqtt.simple takes over the socket afterwards.


def _utf8_field(value):
    data = value.encode() if isinstance(value, str) else value
    if len(data) > 65535:
        raise ValueError("MQTT string longer than 65535 bytes")
    return bytes((len(data) >> 8, len(data) & 255)) + data


def remaining_length(n):
    if n > 268435455:
        raise ValueError("MQTT packet too large")
    out = bytearray()
    while True:
        digit = n & 0x7F
        n >>= 7
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


def publish_head(topic, payload_len, packet_id):
    """The bytes of a QoS 1 PUBLISH before its payload (MQTT 3.1.1 section 3.3)."""
    return (b"\x32" + remaining_length(2 + len(topic) + 2 + payload_len) + bytes((len(topic) >> 8, len(topic) & 255))
            + topic + bytes((packet_id >> 8, packet_id & 255)))


def connect_packet(client_id, username, password=None, keepalive=60, clean_session=False):
    """MQTT 3.1.1 CONNECT; password None means no password (X.509)."""
    flags = 0x80 | (0x02 if clean_session else 0)
    body = b"\x00\x04MQTT\x04" + bytes((0, keepalive >> 8, keepalive & 255))
    payload = _utf8_field(client_id) + _utf8_field(username)
    if password is not None:
        flags |= 0x40
        payload += _utf8_field(password)
    body = body[:7] + bytes((flags,)) + body[8:] + payload
    return b"\x10" + remaining_length(len(body)) + body


def parse_connack(packet):
    """(session_present, return_code) from the 4 bytes of a CONNACK."""
    if len(packet) != 4 or packet[0] != 0x20 or packet[1] != 2:
        raise ProtocolError("expected CONNACK, got %r" % (bytes(packet),))
    return bool(packet[2] & 1), packet[3]


# --- What the hub sends the device: C2D, direct methods, twin ----------------
# Topics from "Communicate with an IoT hub using the MQTT protocol" (Microsoft
# Learn). Modules get methods and twin on the same `$iothub/` topics
# as devices, but no cloud-to-device messages.

METHODS_SUBSCRIPTION = "$iothub/methods/POST/#"
TWIN_RESPONSE_SUBSCRIPTION = "$iothub/twin/res/#"
TWIN_DESIRED_SUBSCRIPTION = "$iothub/twin/PATCH/properties/desired/#"

_METHOD_PREFIX = "$iothub/methods/POST/"
_TWIN_RESPONSE_PREFIX = "$iothub/twin/res/"
_TWIN_DESIRED_PREFIX = "$iothub/twin/PATCH/properties/desired/"

# parse_incoming() kinds
C2D = "c2d"
METHOD = "method"
TWIN_RESPONSE = "twin-response"
DESIRED = "desired"

# C2D bag names that are the hub's, not the sender's application properties.
_C2D_SYSTEM = ("iothub-ack",)


def c2d_subscription(device_id):
    return "devices/" + device_id + "/messages/devicebound/#"


def twin_get_topic(request_id):
    return "$iothub/twin/GET/?$rid=" + request_id


def twin_report_topic(request_id):
    return "$iothub/twin/PATCH/properties/reported/?$rid=" + request_id


def method_response_topic(status, request_id):
    return "$iothub/methods/res/%d/?$rid=%s" % (status, request_id)


def _query(topic, start):
    """The `?k=v&...` part of topic at or after start, decoded."""
    q = topic.find("?", start)
    return decode_properties(topic[q + 1:]) if q >= 0 else {}


def _number(value, name, topic):
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ProtocolError("%s in topic %r is not a number" % (name, topic))


def parse_incoming(topic, device_id):
    """Classify a topic the hub published to this device.

    Returns one of
      (C2D, properties)                      properties: the decoded bag
      (METHOD, name, request_id)
      (TWIN_RESPONSE, status, request_id, version or None)
      (DESIRED, version)
    and raises ProtocolError for anything else: the hub sends nothing else.
    """
    if topic.startswith(_METHOD_PREFIX):
        end = topic.find("/", len(_METHOD_PREFIX))
        fields = _query(topic, len(_METHOD_PREFIX))
        if end <= len(_METHOD_PREFIX) or "$rid" not in fields:
            raise ProtocolError("direct method topic without a name or $rid: %r" % topic)
        return METHOD, url_decode(topic[len(_METHOD_PREFIX):end]), fields["$rid"]
    if topic.startswith(_TWIN_RESPONSE_PREFIX):
        end = topic.find("/", len(_TWIN_RESPONSE_PREFIX))
        fields = _query(topic, len(_TWIN_RESPONSE_PREFIX))
        if end < 0 or "$rid" not in fields:
            raise ProtocolError("twin response topic without a status or $rid: %r" % topic)
        status = _number(topic[len(_TWIN_RESPONSE_PREFIX):end], "status", topic)
        version = _number(fields["$version"], "$version", topic) if "$version" in fields else None
        return TWIN_RESPONSE, status, fields["$rid"], version
    if topic.startswith(_TWIN_DESIRED_PREFIX):
        return DESIRED, _number(_query(topic, len(_TWIN_DESIRED_PREFIX)).get("$version"), "$version", topic)
    prefix = "devices/" + device_id + "/messages/devicebound/"
    if topic.startswith(prefix):
        return C2D, decode_properties(topic[len(prefix):])
    raise ProtocolError("message on a topic this device never subscribed to: %r" % topic)


def split_c2d_properties(bag):
    """(system, application) properties of a C2D message; `$.` names and iothub-ack are the hub's."""
    system = {}
    app = {}
    for k, v in bag.items():
        if k.startswith("$.") or k in _C2D_SYSTEM:
            system[k] = v
        else:
            app[k] = v
    return system, app

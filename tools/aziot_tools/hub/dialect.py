"""IoT Hub's MQTT dialect, server side: user names, topics, property bags.

Written from the hub's documentation (Microsoft Learn) and SDK traffic (azure-iot-device 2.14.0), never
from the device library, so the two cannot share a mistake.
"""

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

API_VERSIONS = ("2021-04-12", "2020-09-30", "2019-10-01", "2019-03-30", "2018-06-30")

_ESCAPE_OK = re.compile(r"%(?![0-9A-Fa-f]{2})")


class DialectError(Exception):
    """Not something IoT Hub would accept; the message says why."""


@dataclass
class Login:
    hub_host: str
    device_id: str
    module_id: str
    api_version: str
    params: dict = field(default_factory=dict)


def parse_username(username: str) -> Login:
    """`{host}/{device}[/{module}]/?api-version=V[&k=v...]`"""
    if username is None:
        raise DialectError("CONNECT without a user name")
    path, sep, query = username.partition("/?")
    if not sep:
        raise DialectError("user name lacks '/?api-version=': %r" % username)
    parts = path.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise DialectError("user name is not {host}/{device}[/{module}]/?...: %r" % username)
    params = dict(parse_qsl(query, keep_blank_values=True))
    version = params.get("api-version")
    if version not in API_VERSIONS:
        raise DialectError("unsupported api-version %r" % version)
    return Login(parts[0], parts[1], parts[2] if len(parts) == 3 else "", version, params)


def decode_component(text: str) -> str:
    if _ESCAPE_OK.search(text):
        raise DialectError("bad percent escape in %r" % text)
    return unquote(text, errors="strict")


def decode_property_bag(bag: str) -> dict:
    props = {}
    for item in bag.split("&"):
        if not item:
            continue
        name, eq, value = item.partition("=")
        props[decode_component(name)] = decode_component(value) if eq else None
    return props


def telemetry_prefix(device_id: str, module_id: str = "") -> str:
    base = "devices/%s" % device_id
    if module_id:
        base += "/modules/%s" % module_id
    return base + "/messages/events/"


def parse_telemetry_topic(topic: str, device_id: str, module_id: str = "") -> dict:
    """The property bag of a telemetry topic for this identity; DialectError otherwise (ACL)."""
    prefix = telemetry_prefix(device_id, module_id)
    if not topic.startswith(prefix):
        raise DialectError("topic %r is not this identity's telemetry topic" % topic)
    return decode_property_bag(topic[len(prefix):])


def split_properties(props: dict):
    """(system, application): `$.`-prefixed names are system properties."""
    system = {k: v for k, v in props.items() if k.startswith("$.")}
    app = {k: v for k, v in props.items() if not k.startswith("$.")}
    return system, app


# --- the other topics a device may publish to, and subscribe to -------------

TWIN_GET = "twin-get"
TWIN_REPORTED = "twin-reported"
METHOD_RESPONSE = "method-response"
TELEMETRY = "telemetry"

METHODS_FILTER = "$iothub/methods/POST/#"
TWIN_RESPONSE_FILTER = "$iothub/twin/res/#"
DESIRED_FILTER = "$iothub/twin/PATCH/properties/desired/#"


# The Azure SDK for Embedded C subscribes to C2D with a wildcard for the device id
# (AZ_IOT_HUB_CLIENT_C2D_SUBSCRIBE_TOPIC in sdk/inc/azure/iot/az_iot_hub_client.h); the hub accepts it.
C2D_WILDCARD_FILTER = "devices/+/messages/devicebound/#"


def c2d_filter(device_id: str) -> str:
    return "devices/%s/messages/devicebound/#" % device_id


def allowed_filters(device_id: str, module_id: str = "") -> set:
    """What the hub lets this identity subscribe to: modules get no C2D."""
    filters = {METHODS_FILTER, TWIN_RESPONSE_FILTER, DESIRED_FILTER}
    if not module_id:
        filters.update((c2d_filter(device_id), C2D_WILDCARD_FILTER))
    return filters


def wants_c2d(subscriptions, device_id: str) -> bool:
    return c2d_filter(device_id) in subscriptions or C2D_WILDCARD_FILTER in subscriptions


def _request_id(topic: str, query: str) -> str:
    params = dict(parse_qsl(query, keep_blank_values=True))
    rid = params.get("$rid")
    if not rid:
        raise DialectError("topic %r lacks $rid" % topic)
    return rid


def parse_device_publish(topic: str, device_id: str, module_id: str = ""):
    """What a device's PUBLISH asks for; DialectError (the hub closes) for any other topic.

    ("telemetry", property bag) | ("twin-get", rid) | ("twin-reported", rid)
    | ("method-response", status, rid)
    """
    if topic.startswith("$iothub/"):
        path, _, query = topic.partition("?")
        if path == "$iothub/twin/GET/":
            return TWIN_GET, _request_id(topic, query)
        if path == "$iothub/twin/PATCH/properties/reported/":
            return TWIN_REPORTED, _request_id(topic, query)
        parts = path.split("/")
        if len(parts) == 5 and parts[1:3] == ["methods", "res"] and parts[4] == "":
            if not parts[3].isdigit():
                raise DialectError("method response status %r is not a number" % parts[3])
            return METHOD_RESPONSE, int(parts[3]), _request_id(topic, query)
        raise DialectError("topic %r is not one the hub serves" % topic)
    return TELEMETRY, parse_telemetry_topic(topic, device_id, module_id)

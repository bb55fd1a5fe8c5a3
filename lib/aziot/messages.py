"""What the hub sends the device, in the shapes handlers see and answer with.

Pure: no sockets. HubClient reads the packets; this turns them into a
C2DMessage, a method answer's (status, body), or parsed JSON.
"""

import json

from . import protocol
from .errors import ProtocolError


class C2DMessage:
    """A cloud-to-device message: payload bytes plus the properties the sender set."""

    __slots__ = ("payload", "message_id", "correlation_id", "content_type", "content_encoding",
                 "properties", "system_properties")

    def __init__(self, payload, bag):
        system, self.properties = protocol.split_c2d_properties(bag)
        self.payload = payload
        self.system_properties = system  # $.mid, $.to, $.exp, iothub-ack, ...
        self.message_id = system.get(protocol.PROP_MESSAGE_ID)
        self.correlation_id = system.get(protocol.PROP_CORRELATION_ID)
        self.content_type = system.get(protocol.PROP_CONTENT_TYPE)
        self.content_encoding = system.get(protocol.PROP_CONTENT_ENCODING)


def method_response(result):
    """(status, body bytes) from what a method handler returned.

    None -> 200 without a body; an int -> that status without a body;
    (status, body): bytes-like body is sent as is (it must be JSON text),
    anything else is serialised with json.dumps.
    """
    if result is None:
        return 200, b""
    if isinstance(result, int):
        return result, b""
    status, body = result
    if body is None:
        return status, b""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return status, body
    return status, json.dumps(body).encode()


def error_body(text):
    return json.dumps({"error": text}).encode()


def load_json(payload, what):
    try:
        return json.loads(payload)
    except ValueError:
        raise ProtocolError("%s is not JSON (%d bytes)" % (what, len(payload)))

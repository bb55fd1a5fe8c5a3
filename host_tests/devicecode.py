"""Device apps the tests run under micropython, and small host helpers."""

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Prints one line per outcome so a test can assert on what the user sees.
CONNECT_AND_SEND = """
from aziot.hub import HubClient
try:
    hub = HubClient.from_flash()
    hub.connect()
    print("CONNECTED", hub.tls_profile, hub.tls_cipher, hub.tls_version)
    hub.send_telemetry(b'{"ok": 1}', {"test": "yes"})
    hub.disconnect()
    print("DONE")
except Exception as e:
    print("ERROR", type(e).__name__, str(e))
"""


def outcome(run) -> str:
    """The ERROR/DONE line a device app printed (its stdout must hold one)."""
    lines = [l for l in run.stdout.splitlines() if l.startswith(("ERROR", "DONE"))]
    assert lines, "device printed no outcome:\n" + run.output
    return lines[-1]


# A device that answers methods, follows desired properties and prints C2D
# messages until the cloud calls its "stop" method. argv[1]: "once" to stop
# after connecting and reporting the twin (for offline/reconnect tests).
SURFACE_APP = """
import json, sys
from aziot.hub import HubClient
from aziot.errors import AziotError, ConnectionLost

hub = HubClient.from_flash()
running = [True]

def echo(name, payload):
    return 200, {"method": name, "got": json.loads(payload)}

def boom(name, payload):
    raise ValueError("sensor offline")

def stop(name, payload):
    running[0] = False
    return 200, {"stopping": True}

def size(name, payload):
    return 200, {"bytes": len(payload)}

def on_desired(patch, version):
    print("DESIRED", version, json.dumps(patch))
    if "led" in patch:
        print("REPORTED", hub.report({"led": patch["led"]}))

def on_c2d(msg):
    print("C2D", msg.message_id, msg.correlation_id, msg.content_type, msg.content_encoding,
          json.dumps(sorted(msg.properties.items())), bytes(msg.payload))

hub.on_method("echo", echo)
hub.on_method("boom", boom)
hub.on_method("stop", stop)
hub.on_method("size", size)
if hub.config.module_id:
    try:
        hub.on_c2d(on_c2d)
    except AziotError as e:
        print("NO-C2D", type(e).__name__, e)
else:
    hub.on_c2d(on_c2d)
hub.on_desired(on_desired)
try:
    hub.connect()
    print("READY")
    while running[0]:
        try:
            hub.poll(200)
        except ConnectionLost:
            raise
        except AziotError as e:
            print("POLL-ERROR", type(e).__name__, e)
    hub.disconnect()
    print("DONE")
except Exception as e:
    print("ERROR", type(e).__name__, e)
"""


def eventually(probe, timeout: float = 5.0):
    """probe()'s first truthy value within timeout: the emulator records on its own thread."""
    import time

    end = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > end:
            return value
        time.sleep(0.02)


def first_connection(hub):
    """The hub's first connection record; a refused handshake is recorded a moment after the device saw it."""
    def settled():
        first = hub.connections()[:1]
        # A record starts as "tls-failed" without a reason until its handshake is judged.
        return first and (first[0].reason or first[0].result != "tls-failed") and first[0]

    return eventually(settled)

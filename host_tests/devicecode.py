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

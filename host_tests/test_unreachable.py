"""A hub that is not there, or says nothing: bounded waits and errors that say which."""

import os
import socket
import threading
import time

from devicecode import CONNECT_AND_SEND, free_port, outcome


def test_nothing_listening(hub_state, provision_device, run_device):
    port = free_port()
    dev = provision_device("dev-off", address="127.0.0.1", port=port)
    out = outcome(run_device(dev.image_path, CONNECT_AND_SEND))
    assert out == "ERROR ConnectionLost cannot connect to 127.0.0.1:%d: connection refused" % port


def test_silent_server_times_out_the_handshake(provision_device, run_device):
    """Accepts TCP, never speaks TLS: the device gives up after its configured timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        dev = provision_device("dev-silent", address="127.0.0.1", port=listener.getsockname()[1], timeout=2)
        started = time.monotonic()
        out = outcome(run_device(dev.image_path, CONNECT_AND_SEND, timeout=30))
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()
    assert out == ("ERROR TlsError TLS handshake with emulated-hub.azure-devices.net (127.0.0.1:%d) "
                   "with profile 'ecc' did not finish within the timeout (the peer is too slow or trickles its bytes)"
                   % dev.config["port"])
    assert elapsed < 20  # bounded by the 2 s timeout, not hung


def test_runs_in_a_board_sized_heap(any_hub, provision_device, run_device):
    """A Pico W-sized MicroPython heap with the library as `aziot install` puts it on a board (.mpy;
    conftest's board_heap_lib says why not .py here). The 64-bit PyPI Unix port keeps mbedTLS
    outside the heap and has pointers twice a board's. A board-faithful build given as
    $MICROPYTHON runs in $MICROPYTHON_HEAP (210K for the Pico W one, mbedTLS inside it); the
    README's "Heap" table has the smallest heaps measured by `make bench`."""
    hub = any_hub
    dev = provision_device("dev-small", hub)
    run = run_device(dev.image_path, """
        import gc
        from aziot.hub import HubClient
        hub = HubClient.from_flash()
        hub.connect()
        for i in range(50):
            hub.send_telemetry(b'{"t": 21.5}', {"seq": i})
        hub.disconnect()
        gc.collect()
        print("DONE", gc.mem_alloc())
    """, heap=None if os.environ.get("MICROPYTHON") else "208K")  # $MICROPYTHON: $MICROPYTHON_HEAP
    assert run.returncode == 0, run.output
    assert run.stdout.startswith("DONE")
    assert len(hub.telemetry("dev-small")) == 50

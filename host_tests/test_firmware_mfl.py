"""Maximum Fragment Length and small TLS buffers, on the Unix-port build of the firmware config.

These run the binaries `make unix-mfl MPY_DIR=...` builds (build/unix-mfl/,
or AZIOT_MFL_DIR); without them they skip, saying so. The notice on a
firmware without the hook runs on the stock Unix port, always.
"""

import os
import textwrap

import pytest

from aziot_tools import device, firmware, pki
from aziot_tools.faults import FaultProxy
from devicecode import CONNECT_AND_SEND, outcome

BOARD = firmware.unix_mfl_binary("micropython")
STOCK_BUFFERS = firmware.unix_mfl_binary("micropython-16k")
SMALLEST = firmware.unix_mfl_binary("micropython-2k")
needs_mfl_build = pytest.mark.skipif(BOARD is None, reason="no unix-mfl build: run `make unix-mfl MPY_DIR=...`")

HANDSHAKE, APPLICATION_DATA = 22, 23

# Connect, fetch a 4 KB twin, answer an 8 KB method, send 8 KB of telemetry.
FULL_APP = """
import json, sys
from aziot.hub import HubClient
from aziot.errors import AziotError
hub = HubClient.from_flash()
done = []
hub.on_method("size", lambda name, payload: (200, {"bytes": len(payload)}))
hub.on_method("stop", lambda name, payload: done.append(1))
hub.on_link = lambda event, detail: print("LINK", event, detail) if event == "lost" else None
try:
    hub.connect()
    twin = hub.get_twin()
    print("TWIN", len(twin["desired"]["blob"]), "MFL", hub.tls_max_fragment_length)
    print("SENT", hub.send_telemetry(b"t" * 8192))
    print("READY")
    while not done:
        hub.poll(100)
    hub.disconnect()
    print("DONE")
except AziotError as e:
    print("ERROR", type(e).__name__, e)
"""


def _app(image, code):
    app = os.path.join(os.path.dirname(image), "app_%d.py" % abs(hash(code)))
    with open(app, "w") as f:
        f.write(textwrap.dedent(code))
    return app


def run_with(binary, image, code, lib_dir, *args, timeout=60):
    return device.run(image, _app(image, code), *args, timeout=timeout, lib_dir=lib_dir, binary=binary)


def live_with(binary, image, code, lib_dir):
    return device.LiveDevice(image, _app(image, code), lib_dir=lib_dir, binary=binary)


def full_round_trip(hub, provision_device, unix_lib, binary, device_id, proxy, **config):
    dev = provision_device(device_id, address="127.0.0.1", port=proxy.port, **config)
    hub.update_desired(device_id, {"blob": "d" * 4096})
    with live_with(binary, dev.image_path, FULL_APP, unix_lib) as live:
        live.expect("READY", timeout=30)
        result = hub.invoke_method(device_id, "size", "m" * 8190, timeout=15)
        hub.invoke_method(device_id, "stop", None, timeout=10)
        live.expect("DONE", timeout=15)
    return live.lines, result


@needs_mfl_build
@pytest.mark.parametrize("mfl", [512, 1024, 2048, 4096])
def test_hub_records_never_exceed_the_negotiated_fragment_length(hub, provision_device, unix_lib, mfl):
    # mbedTLS advertises at most its smaller record buffer: 4096 needs the 16k build's 4 KB send buffer.
    binary = BOARD if mfl <= 2048 else STOCK_BUFFERS
    if binary is None:
        pytest.skip("no micropython-16k unix-mfl build")
    with FaultProxy(hub.port) as proxy:
        lines, result = full_round_trip(hub, provision_device, unix_lib, binary, "dev-mfl-%d" % mfl, proxy,
                                        tls_profile="ecc", max_fragment_length=mfl)
        records = list(proxy.records)
    assert "TWIN 4096 MFL %d" % mfl in lines and (result.status, result.payload) == (200, {"bytes": 8192})
    from_hub = [length for up, kind, length in records if up]
    # AES-GCM adds 24 bytes to a record (explicit nonce + tag); CBC-SHA384 at most 80.
    assert max(from_hub) <= mfl + 80, sorted(from_hub)[-5:]
    # The 4 KB twin and the 8 KB method request had to be cut into records of the MFL.
    assert sum(1 for up, kind, length in records if up and kind == APPLICATION_DATA and length > mfl // 2) >= 8192 // mfl
    (msg,) = hub.telemetry("dev-mfl-%d" % mfl)
    assert len(msg.payload) == 8192


@needs_mfl_build
def test_without_mfl_the_hub_sends_16_kb_records_and_a_small_buffer_fails_clearly(hub, provision_device,
                                                                                   unix_lib):
    """The same board build with the extension off: the first record larger than IN ends the link."""
    with FaultProxy(hub.port) as proxy:
        dev = provision_device("dev-nomfl", address="127.0.0.1", port=proxy.port, tls_profile="ecc",
                               max_fragment_length=0, reconnect_min_ms=5000)
        hub.update_desired("dev-nomfl", {"blob": "d" * 6000})  # the twin answer: one 6 KB record
        run = run_with(BOARD, dev.image_path, """
            from aziot.hub import HubClient
            from aziot.errors import AziotError
            hub = HubClient.from_flash()
            hub.connect()
            print("CONNECTED MFL", hub.tls_max_fragment_length)
            try:
                hub.get_twin()
                print("TWIN")
            except AziotError as e:
                print("ERROR", type(e).__name__, e)
        """, unix_lib)
        records = list(proxy.records)
    assert "CONNECTED MFL 0" in run.stdout, run.output
    assert ("ERROR ConnectionLost connection lost while reading from the hub: a TLS record larger than this "
            "firmware's receive buffer arrived (enable max_fragment_length, or build with a larger "
            "MBEDTLS_SSL_IN_CONTENT_LEN)") in run.stdout, run.output
    assert max(length for up, kind, length in records if up) > 4096  # what MFL would have cut


@needs_mfl_build
@pytest.mark.skipif(SMALLEST is None, reason="no micropython-2k unix-mfl build")
def test_the_smallest_build_works_with_the_ecc_chain_and_says_rsa_is_not_in_it(hub, provision_device,
                                                                               unix_lib):
    with FaultProxy(hub.port) as proxy:
        lines, result = full_round_trip(hub, provision_device, unix_lib, SMALLEST, "dev-2k", proxy,
                                        tls_profile="ecc")
    assert "TWIN 4096 MFL 1024" in lines and result.status == 200
    dev = provision_device("dev-2k-rsa", hub, tls_profile="rsa")
    run = run_with(SMALLEST, dev.image_path, CONNECT_AND_SEND, unix_lib)
    assert outcome(run).startswith("ERROR TlsError this firmware lacks the 'rsa' cipher suites"), run.output


@needs_mfl_build
def test_a_fragment_length_above_the_firmwares_buffers_is_refused_by_name(hub, provision_device, unix_lib):
    dev = provision_device("dev-mfl-big", hub, max_fragment_length=4096)
    run = run_with(BOARD, dev.image_path, CONNECT_AND_SEND, unix_lib)
    assert outcome(run) == ("ERROR ConfigError key 'max_fragment_length': max fragment length 4096 exceeds "
                            "this firmware's TLS buffers (in 4096, out 2048)")


@needs_mfl_build
def test_a_device_certificate_larger_than_the_fragment_length_is_refused_before_dialing(hub, provision_device,
                                                                                         unix_lib):
    big = pki.make_device_identity("dev-bigcert", key_kind="rsa2048")
    dev = provision_device("dev-bigcert", hub, identity=big, max_fragment_length=512)
    run = run_with(BOARD, dev.image_path, CONNECT_AND_SEND, unix_lib)
    needed = len(big.cert_der) + 10
    assert outcome(run) == ("ERROR ConfigError device certificate needs a %d-byte Certificate message, larger "
                            "than max_fragment_length 512: the hub would abort the handshake; use "
                            "max_fragment_length 1024" % needed)
    assert hub.connections() == []


def test_asking_for_mfl_on_a_firmware_without_the_hook_says_so_once(hub, provision_device, run_device):
    dev = provision_device("dev-stock-mfl", hub, max_fragment_length=1024)
    run = run_device(dev.image_path, """
        from aziot.hub import HubClient
        hub = HubClient.from_flash()
        for _ in range(2):
            hub.connect()
            hub.send_telemetry(b"x")
            hub.disconnect()
        print("DONE MFL", hub.tls_max_fragment_length)
    """)
    notice = ("aziot: max_fragment_length 1024 needs the aziot firmware (aziot_tls module); this firmware "
              "lacks it, so TLS records from the hub can be up to 16 KB")
    if run.stdout.splitlines() == ["DONE MFL 1024"]:
        pytest.skip("MICROPYTHON is a build with the aziot_tls hook: nothing to say")
    assert run.stdout.splitlines() == [notice, "DONE MFL 0"], run.output


@needs_mfl_build
@pytest.mark.skipif(SMALLEST is None, reason="no micropython-2k unix-mfl build")
def test_a_handshake_record_too_big_for_the_buffer_names_the_buffer(hub, provision_device, unix_lib):
    """The 2 KB build with MFL off: the hub's first flight (2.1 KB in one record) cannot fit."""
    dev = provision_device("dev-2k-nomfl", hub, tls_profile="ecc", max_fragment_length=0)
    out = outcome(run_with(SMALLEST, dev.image_path, CONNECT_AND_SEND, unix_lib))
    assert out.startswith("ERROR TlsError TLS handshake with emulated-hub.azure-devices.net"), out
    assert out.endswith("a TLS record larger than this firmware's 2048-byte receive buffer (max_fragment_length "
                        "off): enable it, or build with a larger MBEDTLS_SSL_IN_CONTENT_LEN"), out

"""Maximum Fragment Length and small TLS buffers, on the Unix-port build of the firmware config.

These run the binaries `make unix-mfl MPY_DIR=...` builds (build/unix-mfl/,
or AZIOT_MFL_DIR); without them they skip, saying so. The notice on a
firmware without the hook runs on the stock Unix port, always.
"""

import json
import os
import textwrap
import time

import pytest

from aziot_tools import device, firmware, flashimage, pki
from aziot_tools.faults import FaultProxy
from devicecode import CONNECT_AND_SEND, outcome

BOARD = firmware.unix_mfl_binary("micropython")  # the boards' profile: IN 16384, OUT 4096, MFL 2048
STOCK_BUFFERS = firmware.unix_mfl_binary("micropython-16k")
SMALL = firmware.unix_mfl_binary("micropython-4k")  # preview hubs only
SMALLEST = firmware.unix_mfl_binary("micropython-2k")
needs_mfl_build = pytest.mark.skipif(BOARD is None, reason="no unix-mfl build: run `make unix-mfl MPY_DIR=...`")
needs_small_build = pytest.mark.skipif(SMALL is None, reason="no micropython-4k unix-mfl build")

HANDSHAKE, APPLICATION_DATA = 22, 23


@pytest.fixture(scope="module")
def unix_lib():
    """These tests pick their own binaries, none with the library frozen in: the sources, always."""
    return device.prepare_unix_lib()

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


def run_with(binary, image, code, lib_dir, *args, timeout=60, heap=None):
    return device.run(image, _app(image, code), *args, timeout=timeout, lib_dir=lib_dir, binary=binary, heap=heap)


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
def test_preview_hub_records_never_exceed_the_agreed_fragment_length(preview_hub, provision_device, unix_lib,
                                                                     mfl):
    hub = preview_hub
    with FaultProxy(hub.port) as proxy:
        lines, result = full_round_trip(hub, provision_device, unix_lib, BOARD, "dev-mfl-%d" % mfl, proxy,
                                        max_fragment_length=mfl)
        records = list(proxy.records)
    assert "TWIN 4096 MFL %d" % mfl in lines and (result.status, result.payload) == (200, {"bytes": 8192})
    from_hub = [length for up, kind, length in records if up]
    # AES-GCM adds 24 bytes to a record (explicit nonce + tag); CBC-SHA384 at most 80.
    assert max(from_hub) <= mfl + 80, sorted(from_hub)[-5:]
    # The 4 KB twin and the 8 KB method request had to be cut into records of the MFL.
    assert sum(1 for up, kind, length in records if up and kind == APPLICATION_DATA and length > mfl // 2) >= 8192 // mfl
    (msg,) = hub.telemetry("dev-mfl-%d" % mfl)
    assert len(msg.payload) == 8192


HEAP_APP = """
import aziot_tls
from aziot.hub import HubClient
hub = HubClient.from_flash()
got = []
hub.on_c2d(lambda msg: got.append(len(msg.payload)))
aziot_tls.reset_peak()
hub.connect()
twin = hub.get_twin()
print("CONNECTED", hub.tls_profile, hub.tls_max_fragment_length, aziot_tls.heap()[0], len(twin["desired"]["blob"]))
while not got:
    hub.poll(200)
print("C2D", got[0], "PEAK", aziot_tls.heap()[1])
hub.disconnect()
"""


@needs_mfl_build
def test_the_board_build_carries_16_kb_records_from_a_standard_hub_and_shrinks_only_on_agreement(
        any_hub, provision_device, unix_lib):
    """The board profile asks for MFL 2048. A standard hub ignores it and sends 16 KB records: the receive
    buffer must stay whole (mbedTLS 3.6 alone would shrink it to 2048). A preview hub agrees: it shrinks."""
    hub = any_hub
    with FaultProxy(hub.port) as proxy:
        dev = provision_device("dev-board", address="127.0.0.1", port=proxy.port, max_message=65536)
        hub.update_desired("dev-board", {"blob": "d" * 30000})
        with live_with(BOARD, dev.image_path, HEAP_APP, unix_lib) as live:
            connected = live.expect("CONNECTED", timeout=30).split()
            hub.send_c2d("dev-board", b"c" * (60 * 1024), message_id="c2d-60k")
            done = live.expect("C2D", timeout=30).split()
        records = [length for up, kind, length in proxy.records if up and kind == APPLICATION_DATA]
    profile, agreed, heap_after, twin = connected[1], int(connected[2]), int(connected[3]), int(connected[4])
    assert twin == 30000 and done[1] == str(60 * 1024), live.output
    if hub.tls_mode == "standard":
        assert (profile, agreed) == ("rsa", 0)
        assert max(records) > 16384  # full-size records reached the device and fit
        assert heap_after > 16384  # the 16 KB receive buffer was kept
    else:
        assert (profile, agreed) == ("ecc", 2048)
        assert max(records) <= 2048 + 80
        assert heap_after < 12 * 1024  # both buffers down to the agreed 2 KB


@needs_small_build
@pytest.mark.parametrize("mfl", [2048, 0])
def test_a_small_buffer_build_is_refused_by_name_where_16_kb_records_may_come(any_hub, provision_device,
                                                                              unix_lib, mfl):
    """The 4 KB build works only where the hub agreed to MFL; anywhere else it stops at connect,
    before the first 16 KB record could end the link."""
    hub = any_hub
    dev = provision_device("dev-small", hub, max_fragment_length=mfl)
    run = run_with(SMALL, dev.image_path, CONNECT_AND_SEND, unix_lib)
    if hub.tls_mode == "preview" and mfl:
        assert outcome(run) == "DONE", run.output
        assert "CONNECTED ecc" in run.stdout
        return
    where = "emulated-hub.azure-devices.net (127.0.0.1:%d) with profile '%s'" % (
        hub.port, "rsa" if hub.tls_mode == "standard" else "ecc")
    assert outcome(run) == (
        "ERROR TlsError %s did not agree to Maximum Fragment Length %s, so it may send records of up to 16384 "
        "bytes, and this firmware's receive buffer holds 4096: small buffers work only with preview-mode hubs; "
        "for standard hubs use a firmware with MBEDTLS_SSL_IN_CONTENT_LEN 16384 (the aziot board default)"
        % (where, mfl or "(none asked for)")), run.output
    assert hub.telemetry() == []


@needs_mfl_build
@pytest.mark.skipif(SMALLEST is None, reason="no micropython-2k unix-mfl build")
def test_the_smallest_build_works_with_the_ecc_chain_and_says_rsa_is_not_in_it(preview_hub, provision_device,
                                                                               unix_lib):
    hub = preview_hub
    with FaultProxy(hub.port) as proxy:
        lines, result = full_round_trip(hub, provision_device, unix_lib, SMALLEST, "dev-2k", proxy,
                                        tls_profile="ecc")
    assert "TWIN 4096 MFL 1024" in lines and result.status == 200
    dev = provision_device("dev-2k-rsa", hub, tls_profile="rsa")
    run = run_with(SMALLEST, dev.image_path, CONNECT_AND_SEND, unix_lib)
    assert outcome(run).startswith("ERROR TlsError this firmware lacks the 'rsa' cipher suites"), run.output


@needs_small_build
def test_a_fragment_length_above_the_firmwares_buffers_is_refused_by_name(hub, provision_device, unix_lib):
    dev = provision_device("dev-mfl-big", hub, max_fragment_length=4096)
    run = run_with(SMALL, dev.image_path, CONNECT_AND_SEND, unix_lib)
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
        try:
            import aziot_tls
            print("HOOK")
        except ImportError:
            pass
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
    if run.stdout.startswith("HOOK"):
        pytest.skip("MICROPYTHON is a build with the aziot_tls hook: nothing to say")
    assert run.stdout.splitlines() == [notice, "DONE MFL 0"], run.output


@needs_mfl_build
@pytest.mark.skipif(SMALLEST is None, reason="no micropython-2k unix-mfl build")
def test_a_handshake_record_too_big_for_the_buffer_names_the_buffer(preview_hub, provision_device, unix_lib):
    """The 2 KB build with MFL off: the hub's first flight (2.1 KB in one record) cannot fit."""
    hub = preview_hub
    dev = provision_device("dev-2k-nomfl", hub, tls_profile="ecc", max_fragment_length=0)
    out = outcome(run_with(SMALLEST, dev.image_path, CONNECT_AND_SEND, unix_lib))
    assert out.startswith("ERROR TlsError TLS handshake with emulated-hub.azure-devices.net"), out
    assert out.endswith("a TLS record larger than this firmware's 2048-byte receive buffer (max_fragment_length "
                        "off): enable it, or build with a larger MBEDTLS_SSL_IN_CONTENT_LEN"), out


@needs_mfl_build
@pytest.mark.skipif(SMALLEST is None, reason="no micropython-2k unix-mfl build")
def test_a_remembered_offer_this_firmware_cannot_make_falls_through_to_the_next(preview_hub, provision_device,
                                                                               unix_lib):
    """A memory file that says "rsa" (from an earlier firmware) on the ECC-only build: ECC, at once."""
    hub = preview_hub
    dev = provision_device("dev-2k-mem", hub)
    files = dict(dev.files)
    files["/azure-iot/tls-profile.json"] = (
        b'{"hub_host": "emulated-hub.azure-devices.net", "profile": "rsa", "at": %d}' % int(time.time()))
    with open(dev.image_path, "wb") as f:
        f.write(flashimage.build_image(files))
    run = run_with(SMALLEST, dev.image_path, CONNECT_AND_SEND, unix_lib)
    assert outcome(run) == "DONE", run.output
    assert "CONNECTED ecc" in run.stdout


# Connects to the hub at each port given, in turn, printing what the verified-signature memory holds.
HOPPING_APP = """
import sys
import aziot_tls
from aziot.hub import HubClient
hub = HubClient.from_flash()
for port in sys.argv[1:]:
    hub.config.port = int(port)
    try:
        hub.connect()
        hub.disconnect()
        result = "CONNECTED"
    except Exception as e:
        result = "%s %s" % (type(e).__name__, str(e)[:120])
    print(port, aziot_tls.verify_cache(), result)
print("DONE")
"""


@needs_mfl_build
def test_reconnects_take_the_chains_signatures_from_memory_and_any_other_chain_is_checked_whole(
        start_hub, provision_device, unix_lib, tmp_path):
    """Hub A twice (second time: both chain signatures from memory), hub B with another chain under
    another trusted root (checked whole, remembered too), an impostor C whose root the device does
    not trust, with the same host name (refused, nothing remembered), then A again (from memory)."""
    from aziot_tools.hub.registry import Registry
    from aziot_tools.hub.server import BackgroundHub

    hub_a = start_hub("preview")
    others, running = {}, []
    for name in ("b", "c"):  # each state directory gets chains of its own
        running.append(BackgroundHub(str(tmp_path / name), port=0, tls_mode="preview"))
        others[name] = running[-1].__enter__()
    try:
        extra = {"/azure-iot/roots/other-%s.der" % kind: others["b"].identity.read("%s-root.der" % kind)
                 for kind in ("ecc", "rsa")}
        dev = provision_device("dev-remember", hub_a, tls_profile="ecc", extra_files=extra)
        for name in ("b", "c"):
            Registry(os.path.join(others[name].state_dir, "registry.json")).add_device(
                "dev-remember", "x509_thumbprint", dev.identity.thumbprint_sha1)
        ports = [hub_a.port, hub_a.port, others["b"].port, others["c"].port, hub_a.port]
        run = run_with(BOARD, dev.image_path, HOPPING_APP, unix_lib, *map(str, ports))
    finally:
        for bg in running:
            bg.__exit__(None, None, None)
    lines = run.stdout.splitlines()
    assert lines[-1] == "DONE", run.output
    stats = [tuple(int(n) for n in line.split("(")[1].split(")")[0].split(",")) for line in lines[:-1]]
    results = [line.split(") ", 1)[1] for line in lines[:-1]]
    assert stats[:2] == [(2, 0, 2), (2, 2, 2)] and results[:3] == ["CONNECTED"] * 3, run.output
    assert stats[2][:2] == (4, 2), run.output  # B: two signatures computed and kept (plus a failed try with A's root)
    # C: refused. A signature that verified is kept whatever became of its chain (C's intermediate did
    # sign C's leaf); the chain around it is checked on every connect, and C's root is not trusted.
    assert results[3].startswith("TlsError server certificate of") and "rejected" in results[3], run.output
    assert stats[3][1] == 2 and stats[3][2] > stats[2][2], run.output
    assert stats[4][1] == 4 and results[4] == "CONNECTED", run.output  # A again: from memory
    # On flash: A's and B's signatures, not the one C's failed handshake verified (it stayed pending).
    with open(dev.image_path, "rb") as f:
        assert len(flashimage.read_image(f.read())["/azure-iot/tls-verified.bin"]) == 8 + 4 * 32


@needs_mfl_build
def test_mbedtls_gives_back_every_block_after_each_connection_refused_handshakes_included(hub, provision_device,
                                                                                        unix_lib):
    """The small blocks recycled during a handshake go back when it ends: after each connection (auto
    on a standard hub: a refused ECDSA offer, then RSA) mbedTLS holds what it held before, the
    trust store and the device's key."""
    dev = provision_device("dev-giveback", hub, tls_profile="auto", tls_probe_s=0)
    run = run_with(BOARD, dev.image_path, """
        import gc, aziot_tls
        from aziot.hub import HubClient
        hub = HubClient.from_flash()
        held = []
        for i in range(3):
            hub.connect()
            hub.disconnect()
            gc.collect()  # the TLS socket's finaliser frees what the context held
            now, _, blocks, kept = aziot_tls.heap()
            held.append((now, blocks, kept))
        print("HELD", held)
        print("DONE")
    """, unix_lib)
    held = eval(run.stdout.split("HELD ", 1)[1].splitlines()[0])
    assert len(set(held)) == 1 and held[0][2] == 0, run.output  # the same after each; nothing kept for reuse


PICO = firmware.unix_mfl_binary("micropython-pico")  # 32-bit limbs, where BOARD's are 64-bit

# Connects as many times as asked, printing the variable-time inverses taken so far after each.
INVERSES_APP = """
import sys
import aziot_tls
from aziot.hub import HubClient
hub = HubClient.from_flash()
for i in range(int(sys.argv[1])):
    hub.connect()
    hub.disconnect()
    print("INVERSES", hub.tls_profile, aziot_tls.public_inverses())
print("DONE")
"""


@needs_mfl_build
@pytest.mark.parametrize("binary", [BOARD, PICO], ids=["64-bit", "32-bit"])
def test_only_verification_takes_variable_time_inverses(binary, start_hub, provision_device, unix_lib):
    """ECDSA verification (the chain's signatures, then the ServerKeyExchange's) takes its inverses
    from public_inverse.c; an RSA handshake with an ECDSA device key -- ECDHE and signing, secrets
    only -- takes none."""
    if binary is None:
        pytest.skip("no micropython-pico unix-mfl build")
    preview, standard = start_hub("preview"), start_hub("standard")
    counts = {}
    for hub, profile in ((standard, "rsa"), (preview, "ecc")):
        dev = provision_device("dev-inv-%s" % profile, hub, tls_profile=profile)
        run = run_with(binary, dev.image_path, INVERSES_APP, unix_lib, "2", heap="2M")
        assert run.stdout.splitlines()[-1] == "DONE", run.output
        counts[profile] = [int(line.split()[2]) for line in run.stdout.splitlines() if line.startswith("INVERSES")]
        assert all(("INVERSES %s" % profile) in line for line in run.stdout.splitlines()[:-1]), run.output
    assert counts["rsa"] == [0, 0], counts  # the device's P-256 key signed, ECDHE ran: constant time
    first, both = counts["ecc"]
    # First connect: three verifications (two chain signatures, the ServerKeyExchange); the second
    # takes the chain's from memory (verify_cache.c) and verifies the ServerKeyExchange again.
    assert first > 0 and both - first == first // 3, counts


@needs_mfl_build
@pytest.mark.parametrize("tampered", [None, 0, 1], ids=["intact", "leaf", "intermediate"])
def test_a_chain_signature_changed_by_one_byte_is_refused(tampered, provision_device, unix_lib, tmp_path):
    """The hub's ECC chain with the last byte of one certificate's signature changed (still valid
    DER: the last byte of s) fails verification; the intact chain, same setup, connects."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from aziot_tools.hub.registry import Registry
    from aziot_tools.hub.server import BackgroundHub, ServerIdentity

    state = str(tmp_path / "hub")
    identity = ServerIdentity(state, pki.DEFAULT_HUB_HOST)
    if tampered is not None:
        certs = [bytearray(c.public_bytes(Encoding.DER))
                 for c in x509.load_pem_x509_certificates(identity.read("ecc-chain.pem"))]
        certs[tampered][-1] ^= 0x01
        with open(identity.path("ecc-chain.pem"), "wb") as f:
            f.write(b"".join(x509.load_der_x509_certificate(bytes(c)).public_bytes(Encoding.PEM) for c in certs))
    with BackgroundHub(state, port=0, tls_mode="preview") as hub:
        dev = provision_device("dev-tampered", hub, tls_profile="ecc",
                               extra_files={"/azure-iot/roots/tampered-test.der": identity.read("ecc-root.der")})
        Registry(os.path.join(state, "registry.json")).add_device("dev-tampered", "x509_thumbprint",
                                                                 dev.identity.thumbprint_sha1)
        run = run_with(BOARD, dev.image_path, INVERSES_APP, unix_lib, "1")
    if tampered is None:
        assert run.stdout.splitlines()[-1] == "DONE", run.output
    else:
        assert "rejected: The certificate is not correctly signed by the trusted CA" in run.output, run.output


STATS_APP = """
import aziot_tls
from aziot.hub import HubClient
hub = HubClient.from_flash()
hub.connect()
hub.disconnect()
print("STATS", aziot_tls.verify_cache())
"""


def _boot(dev, unix_lib, files=None):
    if files is not None:
        with open(dev.image_path, "wb") as f:
            f.write(flashimage.build_image(files))
    run = run_with(BOARD, dev.image_path, STATS_APP, unix_lib)
    assert "STATS" in run.stdout, run.output
    stats = tuple(int(n) for n in run.stdout.split("STATS (")[1].split(")")[0].split(","))
    with open(dev.image_path, "rb") as f:
        return stats, flashimage.read_image(f.read())


@needs_mfl_build
def test_the_chains_verified_signatures_survive_a_reset_and_a_bad_file_is_verified_afresh(
        preview_hub, provision_device, unix_lib):
    """Boot 1 verifies the chain and writes tls-verified.bin (two entries); boot 2's first connect
    takes both from it; a torn file, another build's, or one without the tag is ignored (verified
    afresh, rewritten whole); "" keeps RAM only."""
    dev = provision_device("dev-kept", preview_hub, tls_profile="ecc")
    path = "/azure-iot/tls-verified.bin"
    stats, files = _boot(dev, unix_lib)
    assert stats == (2, 0, 2) and len(files[path]) == 8 + 64, stats  # this build's tag, two signatures
    tag, kept = files[path][:8], files[path][8:]
    stats, files = _boot(dev, unix_lib)
    assert stats == (2, 2, 0) and files[path] == tag + kept, stats  # nothing computed: both from flash
    for bad in (tag + kept[:33], b"AZVC\0\0\0\0" + kept, kept):  # torn; another build's; no tag
        files[path] = bad
        stats, files = _boot(dev, unix_lib, files)
        assert stats == (2, 0, 2) and files[path] == tag + kept, (bad, stats)
    files[path] = tag + bytes(range(64))  # this build's, but not of this chain: nothing answers from them
    stats, files = _boot(dev, unix_lib, files)
    assert stats == (4, 0, 2) and files[path] == tag + bytes(range(64)) + kept, stats
    del files[path]
    config = json.loads(files["/azure-iot/config.json"])
    config["tls_verified_file"] = ""
    files["/azure-iot/config.json"] = json.dumps(config).encode()
    stats, files = _boot(dev, unix_lib, files)
    assert stats == (2, 0, 2) and path not in files, stats


# Raw TLS to the hubs at the ports given: what the firmware keeps (exports) after each handshake.
RAW_TLS_APP = """
import socket, sys, tls, aziot_tls
trusted, impostor = int(sys.argv[1]), int(sys.argv[2])
def context(mode):  # all suites offered: the hub's RSA chain, under its RSA root
    c = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    c.verify_mode = mode
    for kind in ("ecc", "rsa"):
        c.load_verify_locations(open("/azure-iot/roots/hub-%s-root.der" % kind, "rb").read())
    return c
def dial(port):
    s = socket.socket()
    s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    return s
def kept():
    return (len(aziot_tls.verify_cache_export()) - 8) // 32
host = "emulated-hub.azure-devices.net"
s = context(tls.CERT_OPTIONAL).wrap_socket(dial(impostor), server_hostname=host)  # completes, unverified
print("OPTIONAL", kept())
s.close()
later = context(tls.CERT_REQUIRED).wrap_socket(dial(trusted), server_hostname=host, do_handshake_on_connect=False)
try:
    context(tls.CERT_REQUIRED).wrap_socket(dial(impostor), server_hostname=host)
except ValueError:  # mbedTLS's verification failure, as MicroPython's tls raises it
    print("REFUSED", kept())
later.write(b"\\xc0\\x00")  # the deferred handshake runs now (then a PINGREQ the hub may ignore)
print("DEFERRED", kept())
later.close()
"""


@needs_mfl_build
def test_only_a_handshake_that_accepted_its_chain_keeps_its_signatures(preview_hub, provision_device, unix_lib,
                                                                        tmp_path):
    """A CERT_OPTIONAL handshake that completes with an untrusted chain keeps nothing; a handshake that
    fails while another context waits to start keeps nothing, and the waiting one then keeps its own."""
    from aziot_tools.hub.server import BackgroundHub

    dev = provision_device("dev-raw", preview_hub, tls_profile="ecc")
    with BackgroundHub(str(tmp_path / "impostor"), port=0, tls_mode="preview") as impostor:
        run = run_with(BOARD, dev.image_path, RAW_TLS_APP, unix_lib, str(preview_hub.port), str(impostor.port))
    assert "DEFERRED" in run.stdout, run.output
    counts = dict(line.split() for line in run.stdout.splitlines())
    assert counts == {"OPTIONAL": "0", "REFUSED": "0", "DEFERRED": "2"}, run.output

"""X.509 mutual-TLS telemetry, end to end: device (micropython) -> hub emulator."""

import datetime
import re
import time

import pytest

from aziot_tools import flashimage
from devicecode import CONNECT_AND_SEND, outcome


def _connected(hub, device_id):
    return [c for c in hub.connections(device_id) if c.result in ("connected", "closed")]


# What the default profile ("auto") negotiates with each kind of hub.
NEGOTIATED = {"standard": ("rsa", "ECDHE-RSA-AES128-GCM-SHA256", "RSAPublicKey"),
              "preview": ("ecc", "ECDHE-ECDSA-AES128-GCM-SHA256", "ECPublicKey")}


@pytest.mark.parametrize("auth", ["x509_thumbprint", "x509_ca"])
def test_happy_path(any_hub, provision_device, run_device, auth):
    hub = any_hub
    profile, cipher, server_key = NEGOTIATED[hub.tls_mode]
    dev = provision_device("dev-%s" % auth.split("_")[1], hub, auth=auth)
    run = run_device(dev.image_path, CONNECT_AND_SEND)
    assert outcome(run) == "DONE", run.output
    # Both ends agree on the suite: mbedTLS's name on the device, OpenSSL's (or Go's, mapped) at the hub.
    mbedtls_name = "TLS-" + cipher.replace("-AES128-", "-WITH-AES-128-")
    assert "CONNECTED %s %s TLSv1.2" % (profile, mbedtls_name) in run.stdout
    (conn,) = _connected(hub, dev.device_id)
    assert conn.tls_version == "TLSv1.2"
    assert conn.cipher == cipher
    assert conn.server_key == server_key
    assert conn.client_thumbprint == dev.identity.thumbprint_sha256
    assert conn.username == "emulated-hub.azure-devices.net/%s/?api-version=2021-04-12" % dev.device_id
    (msg,) = hub.telemetry(dev.device_id)
    assert msg.payload == b'{"ok": 1}'
    assert msg.properties == {"test": "yes"}
    system = dict(msg.system_properties)
    mid, ctime = system.pop("$.mid"), system.pop("$.ctime")
    assert system == {"$.ct": "application/json", "$.ce": "utf-8"}
    assert re.fullmatch(r"[0-9a-f]{8}-1", mid), mid  # a random boot prefix, then the counter
    sent = datetime.datetime.strptime(ctime, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - sent).total_seconds()) < 60


@pytest.mark.parametrize("profile,server_key", [
    ("ecc", "ECPublicKey"),
    ("rsa", "RSAPublicKey"),
    ("ecc+rsa", "ECPublicKey"),  # the ECDSA-only offer gets the ECC chain
    ("compat", "RSAPublicKey"),  # hub rule: any RSA suite in the offer gets the RSA chain
])
def test_certificate_choice_on_a_preview_hub(preview_hub, provision_device, run_device, profile, server_key):
    hub = preview_hub
    dev = provision_device("dev-" + profile.replace("+", "-"), hub, tls_profile=profile)
    run = run_device(dev.image_path, CONNECT_AND_SEND)
    assert outcome(run) == "DONE", run.output
    assert [c.server_key for c in hub.connections(dev.device_id)] == [server_key]


def _attempts(hub, count):
    """Every connection the hub saw (a refused handshake names no device), once count have ended."""
    for _ in range(100):  # the emulator handles the DISCONNECT on its own thread
        attempts = hub.connections()
        if len(attempts) >= count and attempts[-1].result != "connected":
            return attempts
        time.sleep(0.05)
    return hub.connections()


@pytest.mark.parametrize("profile", ["auto", "ecc+rsa"])
def test_ecc_offer_falls_back_to_rsa_on_a_standard_hub(hub, provision_device, run_device, profile):
    dev = provision_device("dev-fallback", hub, tls_profile=profile)
    run = run_device(dev.image_path, CONNECT_AND_SEND)
    assert outcome(run) == "DONE", run.output
    assert "CONNECTED rsa" in run.stdout
    attempts = _attempts(hub, 2)
    # First handshake offers ECDSA suites only and is refused with an alert, the second is RSA.
    assert [a.result for a in attempts] == ["tls-failed", "closed"]
    assert attempts[0].reason == "no shared cipher"
    assert attempts[1].cipher.startswith("ECDHE-RSA-")
    assert len(hub.telemetry("dev-fallback")) == 1


REMEMBERING_APP = """
import sys
from aziot.hub import HubClient
hub = HubClient.from_flash()
for i in range(int(sys.argv[1])):
    hub.connect()
    print("CONNECTED", hub.tls_profile)
    hub.send_telemetry(b'{"ok": 1}')
    hub.disconnect()
print("DONE")
"""


def test_auto_remembers_the_offer_that_worked(hub, provision_device, run_device):
    """One refused ECDSA offer per hub, not per connect: in RAM, then on flash across a restart."""
    dev = provision_device("dev-remember", hub)
    run = run_device(dev.image_path, REMEMBERING_APP, "3")
    assert run.stdout.count("CONNECTED rsa") == 3, run.output
    assert [a.result for a in _attempts(hub, 4)] == ["tls-failed", "closed", "closed", "closed"]
    run = run_device(dev.image_path, REMEMBERING_APP, "1")  # a reboot: the image keeps the file
    assert "CONNECTED rsa" in run.stdout, run.output
    assert [a.result for a in _attempts(hub, 5)][4:] == ["closed"]
    # ecc+rsa is the explicit "always ask": a refused offer at every connect.
    dev = provision_device("dev-always", hub, tls_profile="ecc+rsa")
    run_device(dev.image_path, REMEMBERING_APP, "2")
    assert [a.result for a in _attempts(hub, 9)][5:] == ["tls-failed", "closed"] * 2


def test_auto_offers_ecc_again_when_the_memory_is_old(start_hub, provision_device, run_device):
    """A device moved from a standard hub to a preview hub of the same name finds ECC after tls_probe_s."""
    hub = start_hub()
    dev = provision_device("dev-moved", hub, tls_probe_s=1)
    assert "CONNECTED rsa" in run_device(dev.image_path, REMEMBERING_APP, "1").stdout
    hub = start_hub("preview")
    dev = provision_device("dev-moved", hub, tls_probe_s=1, register=False, identity=dev.identity)
    time.sleep(1.1)
    run = run_device(dev.image_path, REMEMBERING_APP, "1")
    assert "CONNECTED ecc" in run.stdout, run.output


def test_two_hundred_qos1_messages_arrive_once_and_in_order(any_hub, provision_device, run_device):
    hub = any_hub
    dev = provision_device("dev-bulk", hub)
    run = run_device(dev.image_path, """
        from aziot.hub import HubClient
        hub = HubClient.from_flash()
        hub.connect()
        acked = 0
        for i in range(200):
            hub.send_telemetry('{"n": %d}' % i, {"n": i}, message_id="m-%03d" % i)
            acked += 1
        hub.disconnect()
        print("ACKED", acked)
    """, timeout=120)
    assert run.returncode == 0, run.output
    assert "ACKED 200" in run.stdout
    got = [m.system_properties["$.mid"] for m in hub.telemetry("dev-bulk")]
    assert got == ["m-%03d" % i for i in range(200)]
    assert [m.properties["n"] for m in hub.telemetry("dev-bulk")] == [str(i) for i in range(200)]


def test_properties_are_url_encoded_on_the_wire(hub, provision_device, run_device):
    dev = provision_device("dev-props", hub)
    run = run_device(dev.image_path, """
        from aziot.hub import HubClient
        hub = HubClient.from_flash()
        hub.connect()
        hub.send_telemetry(b"x", {"alert": "hot", "k 2": "v/2&x", "unicode": "caf\u00e9"},
                           message_id="msg-1", correlation_id="corr-1")
        hub.disconnect()
        print("DONE")
    """)
    assert run.returncode == 0, run.output
    (msg,) = hub.telemetry("dev-props")
    assert msg.properties == {"alert": "hot", "k 2": "v/2&x", "unicode": "caf\u00e9"}
    assert msg.system_properties["$.cid"] == "corr-1"
    # Same encoding as a capture of the Python SDK (azure-iot-device 2.14.0).
    assert msg.topic.startswith("devices/dev-props/messages/events/%24.mid=msg-1&%24.cid=corr-1&")
    assert "k%202=v%2F2%26x" in msg.topic
    assert "unicode=caf%C3%A9" in msg.topic


def test_each_small_publish_is_one_tls_record(preview_hub, provision_device, run_device):
    """umqtt.simple writes a PUBLISH in pieces; they must leave as one TLS record (29 B of GCM overhead).

    On the preview hub: OpenSSL there counts every TLS byte (the standard hub's Go front does not)."""
    hub = preview_hub
    dev = provision_device("dev-rec", hub, tls_profile="ecc")
    run = run_device(dev.image_path, """
        from aziot.hub import HubClient
        hub = HubClient.from_flash()
        hub.connect()
        for i in range(50):
            hub.send_telemetry(b"0123456789", message_id="%02d" % i, content_type=None, content_encoding=None)
        hub.disconnect()
    """)
    assert run.returncode == 0, run.output
    (conn,) = hub.connections("dev-rec")
    assert len(hub.telemetry("dev-rec")) == 50
    topic = len(hub.telemetry("dev-rec")[0].topic)
    mqtt_bytes = 2 + 2 + topic + 2 + 10  # fixed header, topic length, topic, packet id, payload
    # After the handshake: CONNECT record, 50 PUBLISH records, DISCONNECT record, close_notify.
    per_message = (conn.bytes_in - conn.handshake_bytes_in) / 50
    assert per_message <= mqtt_bytes + 29 + 3, per_message


@pytest.mark.parametrize("memory", [
    '{"hub_host": "emulated-hub.azure-devices.net", "profile": "rsa", "at": 1e400}',  # overflows int()
    '{"hub_host": "emulated-hub.azure-devices.net", "profile": "rsa", "at": "soon"}',
    "[" * 20000,  # deep nesting
    '{"hub_host": "emulated-hub.azure-devices.net", "profile": "rsa", "at": 0, "pad": "%s"}' % ("x" * 60000),
    "{torn",
])
def test_a_bad_memory_file_is_ignored_not_fatal(hub, provision_device, run_device, memory):
    """The memory file is the device's own, but flash tears and files get copied: it may hold anything."""
    dev = provision_device("dev-badmem", hub)
    files = dict(dev.files)
    files["/azure-iot/tls-profile.json"] = memory.encode()
    with open(dev.image_path, "wb") as f:
        f.write(flashimage.build_image(files))
    run = run_device(dev.image_path, REMEMBERING_APP, "1", heap="160K")
    assert "CONNECTED rsa" in run.stdout, run.output
    assert [a.result for a in _attempts(hub, 2)] == ["tls-failed", "closed"]  # probed ECC, as with no memory


def test_tls_probe_s_0_offers_ecc_every_time_and_keeps_nothing(hub, provision_device, run_device):
    dev = provision_device("dev-probe0", hub, tls_probe_s=0)
    run = run_device(dev.image_path, REMEMBERING_APP + """
import os
print("FILES", sorted(os.listdir("/azure-iot")))
""", "2")
    assert run.stdout.count("CONNECTED rsa") == 2, run.output
    assert "tls-profile.json" not in run.stdout.split("FILES")[1]
    assert [a.result for a in _attempts(hub, 4)] == ["tls-failed", "closed"] * 2


def test_packet_ids_wrap_from_65535_to_1(hub, provision_device, run_device):
    """The 65,536th QoS 1 publish on one connection: id 1 again, never 0 (MQTT 3.1.1, 2.3.1)."""
    dev = provision_device("dev-wrap", hub)
    run = run_device(dev.image_path, """
        from aziot.hub import HubClient
        hub = HubClient.from_flash()
        hub.connect()
        hub._session._client.pid = 65533  # as after 65,533 packets on this connection
        for i in range(4):
            hub.send_telemetry(b"%d" % i, message_id="w%d" % i)
        print("ACKED", hub._session._client.pid, hub.connected)
        hub.disconnect()
    """, timeout=30)
    assert run.stdout.strip() == "ACKED 2 True", run.output  # 65534, 65535, 1, 2
    assert [m.system_properties["$.mid"] for m in hub.telemetry("dev-wrap")] == ["w0", "w1", "w2", "w3"]


def test_default_message_ids_do_not_repeat_after_a_reset_and_components_are_named(hub, provision_device,
                                                                                 run_device):
    dev = provision_device("dev-mids", hub)
    app = """
        from aziot.hub import HubClient
        hub = HubClient.from_flash()
        hub.connect()
        hub.send_telemetry(b'{"t": 1}')
        hub.send_telemetry(b'{"t": 2}', component="thermostat1")
        hub.disconnect()
    """
    run_device(dev.image_path, app)
    run_device(dev.image_path, app)  # a reset: the counter starts again, the prefix does not repeat
    mids = [m.system_properties["$.mid"] for m in hub.telemetry("dev-mids")]
    assert len(mids) == 4 and len(set(mids)) == 4, mids
    assert [m.system_properties.get("$.sub") for m in hub.telemetry("dev-mids")] == [None, "thermostat1"] * 2


def test_a_device_under_an_intermediate_ca_presents_its_chain(any_hub, hub_state, provision_device, run_device):
    """Leaf + intermediate in the device's PEM file: the hub finds the path to the registered fleet CA."""
    from aziot_tools import pki, provision

    hub = any_hub
    line = pki.make_intermediate_ca("production line 3", provision.fleet_ca(hub_state))
    leaf = pki.make_device_identity("dev-line3", line)
    dev = provision_device("dev-line3", hub, auth="x509_ca", identity=leaf)
    files = dict(dev.files)
    files["/azure-iot/device.der"] = leaf.cert_pem + line.cert_pem
    with open(dev.image_path, "wb") as f:
        f.write(flashimage.build_image(files))
    run = run_device(dev.image_path, CONNECT_AND_SEND)
    if "presenting a chain needs PEM parsing" in run.stdout:
        # The PyPI Unix port's mbedTLS has no PEM parser (MicroPython's own builds do: make unix-mfl).
        assert outcome(run) == ("ERROR CertificateError device certificate chain rejected by mbedTLS (invalid "
                                "cert): /azure-iot/device.der; presenting a chain needs PEM parsing "
                                "(MBEDTLS_PEM_PARSE_C), which MicroPython's own builds have")
        assert hub.connections() == []
        return
    assert outcome(run) == "DONE", run.output
    assert len(hub.telemetry("dev-line3")) == 1

"""X.509 mutual-TLS telemetry, end to end: device (micropython) -> hub emulator."""

import time

import pytest

from devicecode import CONNECT_AND_SEND, outcome


def _connected(hub, device_id):
    return [c for c in hub.connections(device_id) if c.result in ("connected", "closed")]


@pytest.mark.parametrize("auth", ["x509_thumbprint", "x509_ca"])
@pytest.mark.parametrize("profile,cipher,server_key", [
    ("ecc", "ECDHE-ECDSA-AES128-GCM-SHA256", "ECPublicKey"),
    ("rsa", "ECDHE-RSA-AES128-GCM-SHA256", "RSAPublicKey"),
])
def test_happy_path(hub, provision_device, run_device, auth, profile, cipher, server_key):
    dev = provision_device("dev-%s-%s" % (profile, auth.split("_")[1]), hub, auth=auth, tls_profile=profile)
    run = run_device(dev.image_path, CONNECT_AND_SEND)
    assert outcome(run) == "DONE", run.output
    # Both ends agree on the suite: mbedTLS's name on the device, OpenSSL's at the hub.
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
    assert msg.system_properties == {"$.mid": "1", "$.ct": "application/json", "$.ce": "utf-8"}


@pytest.mark.parametrize("profile,server_key", [
    ("ecc+rsa", "ECPublicKey"),  # a preview hub: the ECDSA-only offer gets the ECC chain
    ("compat", "RSAPublicKey"),  # hub rule: any RSA suite in the offer gets the RSA chain
])
def test_certificate_choice_on_a_preview_hub(hub, provision_device, run_device, profile, server_key):
    dev = provision_device("dev-" + profile.replace("+", "-"), hub, tls_profile=profile)
    run = run_device(dev.image_path, CONNECT_AND_SEND)
    assert outcome(run) == "DONE", run.output
    assert [c.server_key for c in hub.connections(dev.device_id)] == [server_key]


def test_ecc_with_fallback_reaches_an_rsa_only_hub(start_hub, provision_device, run_device):
    hub = start_hub("rsa-only")
    dev = provision_device("dev-fallback", hub, tls_profile="ecc+rsa")
    run = run_device(dev.image_path, CONNECT_AND_SEND)
    assert outcome(run) == "DONE", run.output
    assert "CONNECTED rsa" in run.stdout
    for _ in range(100):  # the emulator handles the DISCONNECT on its own thread
        attempts = hub.connections()
        if attempts[-1].result != "connected":
            break
        time.sleep(0.05)
    # First handshake offers ECDSA suites only and is refused, the second is RSA.
    assert [a.result for a in attempts] == ["tls-failed", "closed"]
    assert attempts[0].reason == "no shared cipher"
    assert attempts[1].cipher.startswith("ECDHE-RSA-")
    assert len(hub.telemetry("dev-fallback")) == 1


def test_two_hundred_qos1_messages_arrive_once_and_in_order(hub, provision_device, run_device):
    dev = provision_device("dev-bulk", hub, tls_profile="ecc")
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
    # Same encoding as the Python SDK capture in PROTOCOL.md.
    assert msg.topic.startswith("devices/dev-props/messages/events/%24.mid=msg-1&%24.cid=corr-1&")
    assert "k%202=v%2F2%26x" in msg.topic
    assert "unicode=caf%C3%A9" in msg.topic


def test_each_small_publish_is_one_tls_record(hub, provision_device, run_device):
    """umqtt.simple writes a PUBLISH in pieces; they must leave as one TLS record (29 B of GCM overhead)."""
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
    topic = len("devices/dev-rec/messages/events/%24.mid=00")
    mqtt_bytes = 2 + 2 + topic + 2 + 10  # fixed header, topic length, topic, packet id, payload
    # After the handshake: CONNECT record, 50 PUBLISH records, DISCONNECT record, close_notify.
    per_message = (conn.bytes_in - conn.handshake_bytes_in) / 50
    assert per_message <= mqtt_bytes + 29 + 3, per_message

"""Every refusal ends in an error that names the problem, on the side that refuses."""

import datetime
import json

import pytest

from aziot_tools import flashimage, pki
from aziot_tools.hub.registry import Registry

from devicecode import CONNECT_AND_SEND, eventually, outcome, first_connection


def rewrite_image(dev, changes: dict, config: dict = None):
    """Rewrite a provisioned image with some files replaced (None deletes)."""
    files = dict(dev.files)
    if config is not None:
        files["/azure-iot/config.json"] = json.dumps(config).encode()
    for path, data in changes.items():
        if data is None:
            files.pop(path, None)
        else:
            files[path] = data
    with open(dev.image_path, "wb") as f:
        f.write(flashimage.build_image(files))


def assert_no_secret(run, dev):
    key_hex = dev.identity.key_der.hex()
    assert key_hex[-64:] not in run.output.lower()


def test_unknown_device_gets_connack_5(hub, provision_device, run_device):
    dev = provision_device("ghost", hub, register=False)
    out = outcome(run_device(dev.image_path, CONNECT_AND_SEND))
    assert out.startswith("ERROR ConnectionRefused hub refused the connection: CONNACK 5 (not authorized")
    (conn,) = hub.connections("ghost")
    assert (conn.result, conn.connack) == ("refused", 5)
    assert conn.reason == "device 'ghost' is not registered"
    assert hub.telemetry() == []


def test_wrong_thumbprint_is_refused(hub, hub_state, provision_device, run_device):
    dev = provision_device("dev-thumb", hub)
    other = pki.make_device_identity("dev-thumb")
    Registry(hub_state + "/registry.json").add_device("dev-thumb", "x509_thumbprint", other.thumbprint_sha256)
    run = run_device(dev.image_path, CONNECT_AND_SEND)
    assert outcome(run).startswith("ERROR ConnectionRefused hub refused the connection: CONNACK 5")
    (conn,) = hub.connections("dev-thumb")
    assert "matches neither registered thumbprint" in conn.reason
    assert_no_secret(run, dev)


def test_secondary_sha1_thumbprint_is_accepted(hub, hub_state, provision_device, run_device):
    dev = provision_device("dev-sha1", hub)
    other = pki.make_device_identity("dev-sha1")
    Registry(hub_state + "/registry.json").add_device(
        "dev-sha1", "x509_thumbprint", other.thumbprint_sha256, dev.identity.thumbprint_sha1)
    assert outcome(run_device(dev.image_path, CONNECT_AND_SEND)) == "DONE"


def test_ca_auth_needs_cn_equal_to_device_id(hub, provision_device, run_device):
    from aziot_tools.provision import fleet_ca

    dev = provision_device("dev-cn", hub, auth="x509_ca")
    wrong = pki.make_device_identity("someone-else", fleet_ca(hub.state_dir))
    rewrite_image(dev, {"/azure-iot/device.der": wrong.cert_der, "/azure-iot/device-key.der": wrong.key_der})
    assert outcome(run_device(dev.image_path, CONNECT_AND_SEND)).startswith(
        "ERROR ConnectionRefused hub refused the connection: CONNACK 5")
    assert hub.connections("dev-cn")[0].reason == "certificate CN 'someone-else' is not the device id"


def test_ca_auth_refuses_an_unregistered_ca(hub, provision_device, run_device):
    rogue_ca = pki.make_device_ca("rogue CA")
    dev = provision_device("dev-rogue", hub, auth="x509_ca",
                           identity=pki.make_device_identity("dev-rogue", rogue_ca))
    assert outcome(run_device(dev.image_path, CONNECT_AND_SEND)).startswith("ERROR ConnectionRefused")
    assert "does not chain to a registered certificate authority" in hub.connections("dev-rogue")[0].reason


def test_no_client_certificate_is_refused(hub, provision_device, run_device):
    dev = provision_device("dev-nocert", hub)
    run = run_device(dev.image_path, """
        import time
        from aziot import certs, config, protocol, tlsconf
        from aziot.mqtt import MqttSession
        from aziot.transport import open_socket
        cfg = config.load()
        ctx = tlsconf.make_context("rsa", certs.root_files(cfg.roots), None, None)   # no client certificate
        sock = open_socket(cfg.dial_address, cfg.port, 10)
        login = protocol.connect_packet(cfg.device_id, protocol.username(cfg.hub_host, cfg.device_id), None, 60, False)
        stream = tlsconf.handshake(sock, ctx, cfg.hub_host, "hub", login, time.ticks_add(time.ticks_ms(), 10000))
        try:
            MqttSession(stream, cfg.device_id)
            print("DONE")
        except Exception as e:
            print("ERROR", type(e).__name__, str(e))
    """)
    assert outcome(run).startswith("ERROR ConnectionRefused hub refused the connection: CONNACK 5")
    assert hub.connections("dev-nocert")[0].reason == "no client certificate was presented"


def _expired_identity(device_id):
    now = datetime.datetime.now(datetime.timezone.utc)
    return pki.make_device_identity(device_id, not_before=now - datetime.timedelta(days=400),
                                    not_after=now - datetime.timedelta(days=2))


def test_expired_device_certificate_is_refused_by_the_device(hub, provision_device, run_device):
    dev = provision_device("dev-expired", hub, identity=_expired_identity("dev-expired"))
    out = outcome(run_device(dev.image_path, CONNECT_AND_SEND))
    expiry = dev.identity.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert out == "ERROR CertificateError device certificate expired on %s: /azure-iot/device.der" % expiry
    assert hub.connections() == []  # refused before dialing


def test_expired_device_certificate_is_refused_by_the_hub(hub, provision_device, run_device):
    """The hub's own check, with the device's check bypassed (the lower layers used directly)."""
    dev = provision_device("dev-expired2", hub, identity=_expired_identity("dev-expired2"))
    run = run_device(dev.image_path, """
        import time
        from aziot import certs, config, protocol, tlsconf
        from aziot.mqtt import MqttSession
        from aziot.transport import open_socket
        cfg = config.load()
        ctx = tlsconf.make_context("rsa", certs.root_files(cfg.roots), certs.read_der(cfg.cert, "c"),
                                   certs.read_der(cfg.key, "k"))
        login = protocol.connect_packet(cfg.device_id, protocol.username(cfg.hub_host, cfg.device_id), None, 60, False)
        stream = tlsconf.handshake(open_socket(cfg.dial_address, cfg.port, 10), ctx, cfg.hub_host, "hub", login,
                                   time.ticks_add(time.ticks_ms(), 10000))
        try:
            MqttSession(stream, cfg.device_id)
            print("DONE")
        except Exception as e:
            print("ERROR", type(e).__name__, str(e))
    """)
    assert outcome(run).startswith("ERROR ConnectionRefused hub refused the connection: CONNACK 5")
    assert "outside its validity period" in hub.connections("dev-expired2")[0].reason


def test_x509_with_an_unset_clock_is_refused_before_dialing(hub, provision_device, run_device):
    """At boot a board's RTC reads 2000 or 2021: the hub's certificate would "start in the future"."""
    dev = provision_device("dev-noclock", hub)
    run = run_device(dev.image_path, """
        from aziot.config import load
        from aziot.hub import HubClient
        hub = HubClient(load(), clock_now=lambda: 1609459200)  # a Pico W after reset: 2021-01-01
        try:
            hub.connect()
        except Exception as e:
            print("ERROR", type(e).__name__, e)
    """)
    assert run.stdout.strip() == ("ERROR ClockError the clock reads 2021-01-01T00:00:00Z: checking the hub's "
                                  "certificate needs the current time (call aziot.clock.sync() once Wi-Fi is up, "
                                  "or set the RTC first)")
    assert hub.connections() == []


def test_server_chain_from_an_unknown_root_is_refused_by_the_device(any_hub, provision_device, run_device):
    hub = any_hub
    kind = "ecc" if hub.tls_mode == "preview" else "rsa"  # the chain this hub shows the device
    dev = provision_device("dev-roots", hub, tls_profile=kind)
    foreign = pki.make_server_pki("ecc").root.cert_der
    rewrite_image(dev, {"/azure-iot/roots/hub-ecc-root.der": foreign, "/azure-iot/roots/hub-rsa-root.der": None})
    out = outcome(run_device(dev.image_path, CONNECT_AND_SEND))
    assert out.startswith("ERROR TlsError server certificate of emulated-hub.azure-devices.net (127.0.0.1:%d) "
                          "with profile '%s' rejected:" % (hub.port, kind))
    assert "not correctly signed by the trusted CA" in out
    assert hub.telemetry() == []


def test_host_name_mismatch_is_refused_by_the_device(any_hub, provision_device, run_device):
    hub = any_hub
    dev = provision_device("dev-host", hub, hub_host="contoso-hub.example.com")
    out = outcome(run_device(dev.image_path, CONNECT_AND_SEND))
    assert out.startswith("ERROR TlsError server certificate of contoso-hub.example.com")
    assert "Common Name (CN) does not match" in out
    # auto: on a standard hub the ECDSA-only offer is refused first, then the RSA chain fails the check.
    expected = ["tls-failed"] * (2 if hub.tls_mode == "standard" else 1)
    assert eventually(lambda: [c.result for c in hub.connections()] == expected), hub.connections()


def test_the_ecc_profile_is_refused_by_a_standard_hub(hub, provision_device, run_device):
    dev = provision_device("dev-ecc", hub, tls_profile="ecc")
    out = outcome(run_device(dev.image_path, CONNECT_AND_SEND))
    assert out.startswith("ERROR TlsError TLS handshake with emulated-hub.azure-devices.net")
    assert "MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE (-0x7780)" in out
    assert "shares no cipher suite" in out and "'auto' falls back to RSA" in out
    assert first_connection(hub).reason == "no shared cipher"


def test_missing_key_file(hub, provision_device, run_device):
    dev = provision_device("dev-nokey", hub)
    rewrite_image(dev, {"/azure-iot/device-key.der": None})
    out = outcome(run_device(dev.image_path, CONNECT_AND_SEND))
    assert out == "ERROR CertificateError device key file not found: /azure-iot/device-key.der"


def test_corrupt_pem_certificate(hub, provision_device, run_device):
    dev = provision_device("dev-pem", hub)
    pem = dev.identity.cert_pem.decode().splitlines()
    pem[3] = pem[3][:10] + "!!!!" + pem[3][14:]  # damage the base64 body
    rewrite_image(dev, {"/azure-iot/device.der": "\n".join(pem[:-3] + pem[-1:]).encode()})
    out = outcome(run_device(dev.image_path, CONNECT_AND_SEND))
    assert out.startswith("ERROR CertificateError device certificate is ")
    assert out.endswith(": /azure-iot/device.der")
    assert "corrupt" in out


def test_pem_files_are_accepted(hub, provision_device, run_device):
    dev = provision_device("dev-pemok", hub)
    rewrite_image(dev, {"/azure-iot/device.der": dev.identity.cert_pem,
                        "/azure-iot/device-key.der": dev.identity.key_pem})
    assert outcome(run_device(dev.image_path, CONNECT_AND_SEND)) == "DONE"


def test_unknown_cipher_profile(hub, provision_device, run_device):
    dev = provision_device("dev-prof", hub, tls_profile="chacha")
    out = outcome(run_device(dev.image_path, CONNECT_AND_SEND))
    assert out == ("ERROR ConfigError /azure-iot/config.json: unknown cipher profile 'chacha' in key "
                   "'tls_profile' (use one of auto, ecc, rsa, ecc+rsa, compat)")


def test_config_errors_name_the_key(hub, provision_device, run_device):
    dev = provision_device("dev-cfg", hub)
    config = dict(dev.config)
    del config["device_id"]
    rewrite_image(dev, {}, config)
    assert outcome(run_device(dev.image_path, CONNECT_AND_SEND)) == \
        ("ERROR ConfigError /azure-iot/config.json: missing required key 'device_id' "
         "(or set 'dps_id_scope' to get it from DPS)")
    config = dict(dev.config, port="8883")
    rewrite_image(dev, {}, config)
    assert outcome(run_device(dev.image_path, CONNECT_AND_SEND)) == \
        "ERROR ConfigError /azure-iot/config.json: key 'port' has the wrong type"
    rewrite_image(dev, {"/azure-iot/config.json": b'{"hub_host": "h",'})
    assert outcome(run_device(dev.image_path, CONNECT_AND_SEND)) == \
        "ERROR ConfigError config file is not valid JSON: /azure-iot/config.json"
    rewrite_image(dev, {"/azure-iot/config.json": None})
    assert outcome(run_device(dev.image_path, CONNECT_AND_SEND)) == \
        "ERROR ConfigError config file not found: /azure-iot/config.json"


@pytest.mark.parametrize("topic", ["devices/dev-victim/messages/events/", "devices/dev-acl/messages/devicebound/",
                                   "$iothub/unknown", "devices/dev-acl/modules/m1/messages/events/"])
def test_publishing_outside_the_identitys_topics_disconnects(hub, provision_device, run_device, topic):
    dev = provision_device("dev-acl", hub)
    provision_device("dev-victim", hub)
    run = run_device(dev.image_path, """
        from aziot.hub import HubClient
        hub = HubClient.from_flash()
        hub.connect()
        try:
            hub._session.publish(%r, b"spoofed", 1)
            print("DONE")
        except Exception as e:
            print("ERROR", type(e).__name__, str(e))
    """ % topic.encode())
    out = outcome(run)
    assert out.startswith("ERROR ConnectionLost connection lost while publishing to")
    (conn,) = hub.connections("dev-acl")
    assert conn.result == "closed"
    assert ("is not this identity's telemetry topic" in conn.reason
            or "is not one the hub serves" in conn.reason), conn.reason
    assert hub.telemetry() == []


def test_a_second_connection_for_the_same_device_drops_the_first(hub, provision_device, run_device):
    dev = provision_device("dev-twice", hub)
    run = run_device(dev.image_path, """
        from aziot.hub import HubClient
        first, second = HubClient.from_flash(), HubClient.from_flash()
        first.connect()
        second.connect()
        second.send_telemetry(b"from second")
        first.send_telemetry(b"from first")  # the hub dropped first: the message waits in its queue
        print("FIRST", first.connected, len(first.outbox), first.stats["links_lost"], type(first.last_error).__name__)
    """)
    assert run.stdout.strip() == "FIRST False 1 1 ConnectionLost", run.output
    assert [m.payload for m in hub.telemetry("dev-twice")] == [b"from second"]


def test_root_file_errors_name_the_path(hub, provision_device, run_device):
    dev = provision_device("dev-noroots", hub)
    rewrite_image(dev, {}, dict(dev.config, roots=["/azure-iot/roots/hub-ecc-root.der", "/azure-iot/roots/g3.der"]))
    assert outcome(run_device(dev.image_path, CONNECT_AND_SEND)) == \
        "ERROR CertificateError root CA file not found: /azure-iot/roots/g3.der"
    rewrite_image(dev, {}, dict(dev.config, roots="/azure-iot/trust"))
    assert outcome(run_device(dev.image_path, CONNECT_AND_SEND)) == \
        "ERROR CertificateError root CA directory not found: /azure-iot/trust"
    rewrite_image(dev, {}, dict(dev.config, roots=[]))
    assert outcome(run_device(dev.image_path, CONNECT_AND_SEND)) == \
        "ERROR CertificateError no root CA files in config key 'roots': the hub cannot be verified"


def test_a_memory_file_that_would_overwrite_another_file_is_refused(hub, provision_device, run_device):
    dev = provision_device("dev-memclash", hub, tls_memory_file="/azure-iot/config.json")
    out = outcome(run_device(dev.image_path, CONNECT_AND_SEND))
    assert out == ("ERROR ConfigError /azure-iot/config.json: key 'tls_memory_file' names a file the device "
                   "needs for something else: /azure-iot/config.json")
    # The two TLS memories must not share a file either (the first one checked names the clash).
    for clash, key, named in (
            ("/azure-iot/device-key.der", "tls_verified_file", None),
            ("/azure-iot/tls-profile.json", "tls_memory_file", None),
            ("/azure-iot//./queue.bin", "tls_verified_file", None),  # the same file, written otherwise
            ("/azure-iot/tls-profile.json.tmp", "tls_memory_file", "/azure-iot/tls-profile.json"),  # its .tmp
            ("/azure-iot/roots/extra.der", "tls_verified_file", None),  # among the trusted roots
            ("azure-iot/x/../device-key.der", "tls_verified_file", None)):  # relative to "/", through ..
        dev = provision_device("dev-verclash", hub, tls_verified_file=clash, queue_file="/azure-iot/queue.bin")
        out = outcome(run_device(dev.image_path, CONNECT_AND_SEND))
        assert out == ("ERROR ConfigError /azure-iot/config.json: key '%s' names a file the device needs for "
                       "something else: %s" % (key, named or clash))

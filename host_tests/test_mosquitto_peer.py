"""A real broker as the peer: the device library publishes through Mosquitto.

Mosquitto is configured with the hub's `ecc` TLS policy (ECDHE-ECDSA suites,
TLS 1.2 only through an OpenSSL config cap, client certificate required);
a CPython paho-mqtt subscriber receives what the device sent.
"""

import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

from aziot_tools import pki, provision

from devicecode import free_port, outcome

MOSQUITTO = shutil.which("mosquitto") or (os.path.exists("/usr/sbin/mosquitto") and "/usr/sbin/mosquitto")
pytestmark = pytest.mark.skipif(not MOSQUITTO, reason="mosquitto not installed (make setup installs it)")

ECC_SUITES = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:" \
             "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384"

OPENSSL_TLS12_ONLY = """openssl_conf = default_conf
[default_conf]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = TLSv1.2
MaxProtocol = TLSv1.2
"""


@pytest.fixture
def broker(tmp_path, hub_state):
    """Mosquitto on a loopback port with the ECC server chain; stopped after the test."""
    server = os.path.join(hub_state, "server")
    ca = provision.fleet_ca(hub_state)
    (tmp_path / "device-ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "openssl.cnf").write_text(OPENSSL_TLS12_ONLY)
    port = free_port()
    (tmp_path / "mosquitto.conf").write_text("\n".join([
        "user root" if os.geteuid() == 0 else "",
        "persistence false",
        "log_dest stdout",
        "log_type all",
        "allow_anonymous true",
        "listener %d 127.0.0.1" % port,
        "cafile %s" % (tmp_path / "device-ca.pem"),
        "certfile %s" % os.path.join(server, "ecc-chain.pem"),
        "keyfile %s" % os.path.join(server, "ecc-key.pem"),
        "require_certificate true",
        "tls_version tlsv1.2",
        "ciphers %s" % ECC_SUITES,
        "",
    ]))
    log = open(tmp_path / "mosquitto.log", "w")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(tmp_path / "mosquitto.conf")], stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, OPENSSL_CONF=str(tmp_path / "openssl.cnf")))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    else:
        proc.kill()
    assert proc.poll() is None, (tmp_path / "mosquitto.log").read_text()
    yield {"port": port, "ca": ca, "server_dir": server, "log": tmp_path / "mosquitto.log"}
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def subscriber(broker, tmp_path, topic_filter):
    """A paho-mqtt (CPython) client subscribed over mutual TLS; returns (client, received list, ready event)."""
    import paho.mqtt.client as mqtt

    ident = pki.make_device_identity("cloud-subscriber", broker["ca"])
    (tmp_path / "sub.pem").write_bytes(ident.cert_pem)
    (tmp_path / "sub-key.pem").write_bytes(ident.key_pem)
    ctx = ssl.create_default_context(cafile=os.path.join(broker["server_dir"], "ecc-root.pem"))
    ctx.check_hostname = False  # dials 127.0.0.1; the chain is still verified
    ctx.load_cert_chain(str(tmp_path / "sub.pem"), str(tmp_path / "sub-key.pem"))
    received, ready = [], threading.Event()
    client = mqtt.Client(client_id="cloud-subscriber")  # paho-mqtt 1.6 API (the Azure SDK pins < 2)
    client.tls_set_context(ctx)
    client.on_connect = lambda c, u, f, rc: c.subscribe(topic_filter, qos=1)
    client.on_subscribe = lambda c, u, mid, granted: ready.set()
    client.on_message = lambda c, u, msg: received.append((msg.topic, msg.payload))
    client.connect("127.0.0.1", broker["port"], keepalive=30)
    client.loop_start()
    assert ready.wait(10), broker["log"].read_text()
    return client, received


def test_device_publishes_through_mosquitto_with_the_hub_ecc_policy(broker, tmp_path, hub_state, run_device):
    image = str(tmp_path / "dev.img")
    dev = provision.provision(hub_state, "dev-mosq", image, auth="x509_ca", register=False,
                              address="127.0.0.1", port=broker["port"], tls_profile="ecc")
    client, received = subscriber(broker, tmp_path, "devices/+/messages/events/#")
    try:
        run = run_device(dev.image_path, """
            from aziot.hub import HubClient
            try:
                hub = HubClient.from_flash()
                hub.connect()
                for i in range(5):
                    hub.send_telemetry('{"i": %d}' % i, {"via": "mosquitto"})
                hub.disconnect()
                print("DONE")
            except Exception as e:
                print("ERROR", type(e).__name__, str(e))
        """)
        assert outcome(run) == "DONE", run.output + broker["log"].read_text()
        deadline = time.monotonic() + 10
        while len(received) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.loop_stop()
        client.disconnect()
    assert [p for _, p in received] == [b'{"i": %d}' % i for i in range(5)]
    topic = received[0][0]
    assert re.fullmatch(r"devices/dev-mosq/messages/events/%24\.mid=[0-9a-f]{8}-1&%24\.ct=application%2Fjson&"
                        r"%24\.ce=utf-8&%24\.ctime=20\d\d-\d\d-\d\dT\d\d%3A\d\d%3A\d\dZ&via=mosquitto", topic), topic


def test_mosquitto_refuses_an_rsa_offer_and_tls13(broker, tmp_path, hub_state, run_device):
    """Controls for the policy above: it is the broker that enforces it."""
    image = str(tmp_path / "dev.img")
    dev = provision.provision(hub_state, "dev-rsa", image, auth="x509_ca", register=False,
                              address="127.0.0.1", port=broker["port"], tls_profile="rsa")
    from devicecode import CONNECT_AND_SEND

    out = outcome(run_device(dev.image_path, CONNECT_AND_SEND))
    assert out.startswith("ERROR TlsError TLS handshake with emulated-hub.azure-devices.net")
    if shutil.which("openssl"):
        proc = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % broker["port"], "-tls1_3"],
                              input=b"", capture_output=True, timeout=20)
        assert proc.returncode != 0
        assert b"alert protocol version" in proc.stdout + proc.stderr

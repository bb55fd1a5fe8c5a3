"""The official Azure IoT Python SDK (azure-iot-device) against the emulator.

The SDK is a client nobody here wrote: whatever it sends the emulator must
accept, and what the emulator sends it must understand. That is the check
that the emulator speaks the hub's dialect and not only our device's.
The SDK dials port 8883 only; the test hands its MQTT transport the port
the emulator got, and nothing else.
"""

import os
import shutil
import threading

import pytest

from aziot_tools import pki, provision
from aziot_tools.hub.registry import Registry
from aziot_tools.hub.server import BackgroundHub, ServerIdentity

sdk = pytest.importorskip("azure.iot.device", reason="azure-iot-device is not installed (make setup)")
from azure.iot.device import IoTHubDeviceClient, Message, MethodResponse, X509  # noqa: E402

HOST = "localhost"  # the SDK checks the server certificate against the name it dials
DEVICE_KEY = "ZW11bGF0b3ItdGVzdC1rZXktbm90LWEtc2VjcmV0LTAxMjM0NQ=="


@pytest.fixture(scope="session")
def localhost_pki(tmp_path_factory):
    state = tmp_path_factory.mktemp("sdk-pki")
    ServerIdentity(str(state), HOST)
    return str(state / "server")


@pytest.fixture
def sdk_hub(tmp_path, localhost_pki, monkeypatch):
    import paho.mqtt.client as mqtt

    state = tmp_path / "sdk-hub"
    shutil.copytree(localhost_pki, state / "server")
    bg = BackgroundHub(str(state), port=0, hub_host=HOST)
    hub = bg.__enter__()
    connect = mqtt.Client.connect

    def to_emulator(self, host, port=1883, *args, **kwargs):
        return connect(self, host, hub.port if port == 8883 else port, *args, **kwargs)

    monkeypatch.setattr(mqtt.Client, "connect", to_emulator)
    yield hub
    bg.__exit__(None, None, None)


def roots_pem(hub) -> str:
    with open(hub.identity.root_path("ecc")) as a, open(hub.identity.root_path("rsa")) as b:
        return a.read() + b.read()


@pytest.fixture
def sdk_client(sdk_hub, tmp_path):
    """sdk_client(device_id, auth) -> a connected IoTHubDeviceClient registered with the emulator."""
    clients = []
    registry = Registry(os.path.join(sdk_hub.state_dir, "registry.json"))

    def make(device_id, auth="x509"):
        if auth == "x509":
            ident = pki.make_device_identity(device_id)
            registry.add_device(device_id, "x509_thumbprint", ident.thumbprint_sha1)
            provision.write_identity(ident, str(tmp_path), device_id)
            client = IoTHubDeviceClient.create_from_x509_certificate(
                x509=X509(str(tmp_path / (device_id + ".pem")), str(tmp_path / (device_id + "-key.pem"))),
                hostname=HOST, device_id=device_id, server_verification_cert=roots_pem(sdk_hub))
        else:
            registry.add_device(device_id, "sas", primary_key=DEVICE_KEY)
            client = IoTHubDeviceClient.create_from_symmetric_key(
                symmetric_key=DEVICE_KEY, hostname=HOST, device_id=device_id,
                server_verification_cert=roots_pem(sdk_hub))
        clients.append(client)
        client.connect()
        return client

    yield make
    for client in clients:
        client.shutdown()


@pytest.mark.parametrize("auth", ["x509", "sas"])
def test_sdk_connects_and_sends_telemetry_with_properties(sdk_hub, sdk_client, auth):
    client = sdk_client("sdk-" + auth, auth)
    msg = Message('{"t": 21.5}', message_id="msg-1", content_encoding="utf-8", content_type="application/json")
    msg.correlation_id = "corr-1"
    msg.custom_properties = {"alert": "hot", "k 2": "v/2&x"}
    client.send_message(msg)
    (got,) = sdk_hub.telemetry("sdk-" + auth)
    assert got.payload == b'{"t": 21.5}'
    assert got.properties == {"alert": "hot", "k 2": "v/2&x"}
    assert got.system_properties == {"$.mid": "msg-1", "$.cid": "corr-1", "$.ct": "application/json",
                                     "$.ce": "utf-8"}
    (conn,) = sdk_hub.connections("sdk-" + auth)
    assert conn.result == "connected" and conn.auth == auth
    assert conn.tls_version == "TLSv1.2"
    assert conn.username.startswith("localhost/sdk-%s/?api-version=2019-10-01&DeviceClientType=" % auth)


def test_sdk_with_a_wrong_sas_key_is_refused(sdk_hub, sdk_client):
    Registry(os.path.join(sdk_hub.state_dir, "registry.json")).add_device(
        "sdk-wrongkey", "sas", primary_key="b3RoZXIta2V5")
    client = IoTHubDeviceClient.create_from_symmetric_key(
        symmetric_key=DEVICE_KEY, hostname=HOST, device_id="sdk-wrongkey",
        server_verification_cert=roots_pem(sdk_hub), connection_retry=False)
    try:
        with pytest.raises(Exception):
            client.connect()
    finally:
        client.shutdown()
    (conn,) = sdk_hub.connections("sdk-wrongkey")
    assert (conn.result, conn.connack) == ("refused", 5)
    assert conn.reason == "SAS token signature does not match the device's keys"
    assert DEVICE_KEY not in conn.reason


def test_sdk_receives_c2d_with_properties(sdk_hub, sdk_client):
    client = sdk_client("sdk-c2d")
    received, arrived = [], threading.Event()
    client.on_message_received = lambda m: (received.append(m), arrived.set())
    sdk_hub.send_c2d("sdk-c2d", b'{"cmd": "blink"}', {"prio": "high", "note": "a b/c&d=e"},
                     message_id="m-1", correlation_id="c-1", content_type="application/json",
                     content_encoding="utf-8")
    assert arrived.wait(10)
    (m,) = received
    assert m.data == b'{"cmd": "blink"}'
    assert (m.message_id, m.correlation_id, m.content_type, m.content_encoding) == \
        ("m-1", "c-1", "application/json", "utf-8")
    assert m.custom_properties == {"prio": "high", "note": "a b/c&d=e"}
    # The SDK acknowledged it (PUBACK): the hub's queue is empty.
    for _ in range(50):
        if sdk_hub.c2d_completed("sdk-c2d"):
            break
        threading.Event().wait(0.1)
    assert [m.message_id for m in sdk_hub.c2d_completed("sdk-c2d")] == ["m-1"]


def test_sdk_answers_a_direct_method(sdk_hub, sdk_client):
    client = sdk_client("sdk-method")

    def handler(request):
        client.send_method_response(MethodResponse.create_from_method_request(
            request, 201, {"name": request.name, "payload": request.payload}))

    client.on_method_request_received = handler
    result = sdk_hub.invoke_method("sdk-method", "calibrate", {"level": 3}, timeout=10)
    assert (result.status, result.payload) == (201, {"name": "calibrate", "payload": {"level": 3}})


def test_sdk_twin_get_reported_patch_and_desired_patch(sdk_hub, sdk_client):
    client = sdk_client("sdk-twin")
    patches, arrived = [], threading.Event()
    client.on_twin_desired_properties_patch_received = lambda p: (patches.append(p), arrived.set())
    sdk_hub.update_desired("sdk-twin", {"fan": {"speed": 3}})
    assert arrived.wait(10)
    assert patches == [{"fan": {"speed": 3}, "$version": 2}]
    client.patch_twin_reported_properties({"fan": {"speed": 3}, "fw": "1.0"})
    twin = client.get_twin()
    assert twin["desired"] == {"fan": {"speed": 3}, "$version": 2}
    assert twin["reported"] == {"fan": {"speed": 3}, "fw": "1.0", "$version": 2}
    client.patch_twin_reported_properties({"fw": None})
    assert sdk_hub.get_twin("sdk-twin")["properties"]["reported"]["$version"] == 3
    assert "fw" not in client.get_twin()["reported"]


@pytest.fixture
def sdk_dps(sdk_hub, monkeypatch):
    """The emulated DPS, assigning to the SDK's hub. The SDK dials global.azure-devices-provisioning.net
    (and checks the certificate against that name): the name resolves to the emulator here."""
    import socket

    from aziot_tools.hub.dps import DPS_HOST, BackgroundDps

    bg = BackgroundDps(sdk_hub.state_dir, [sdk_hub], assign_delay_s=1)
    dps = bg.__enter__()
    resolve = socket.getaddrinfo

    def to_emulator(host, port, *args, **kwargs):
        if host == DPS_HOST:
            return resolve("127.0.0.1", dps.port, *args, **kwargs)
        return resolve(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", to_emulator)
    yield dps
    bg.__exit__(None, None, None)


@pytest.mark.parametrize("auth", ["x509", "symmetric_key"])
def test_sdk_provisioning_client_registers_and_its_device_client_connects_to_the_assigned_hub(
        sdk_hub, sdk_dps, tmp_path, auth):
    from azure.iot.device import ProvisioningDeviceClient

    from aziot_tools.hub.dps import DPS_HOST

    registration_id = "sdk-dps-" + auth.replace("_", "-")
    dps_root = sdk_dps.identity.read("rsa-root.pem").decode()
    if auth == "x509":
        ident = pki.make_device_identity(registration_id)
        provision.write_identity(ident, str(tmp_path), registration_id)
        sdk_dps.enrollments.add_individual(registration_id, "x509", thumbprint=ident.thumbprint_sha256)
        x509 = X509(str(tmp_path / (registration_id + ".pem")), str(tmp_path / (registration_id + "-key.pem")))
        client = ProvisioningDeviceClient.create_from_x509_certificate(
            provisioning_host=DPS_HOST, registration_id=registration_id, id_scope=sdk_dps.id_scope, x509=x509,
            server_verification_cert=dps_root)
    else:
        sdk_dps.enrollments.add_individual(registration_id, "symmetric_key", primary_key=DEVICE_KEY)
        client = ProvisioningDeviceClient.create_from_symmetric_key(
            provisioning_host=DPS_HOST, registration_id=registration_id, id_scope=sdk_dps.id_scope,
            symmetric_key=DEVICE_KEY, server_verification_cert=dps_root)
    client.provisioning_payload = {"site": "plant-7"}
    result = client.register()
    assert result.status == "assigned"
    state = result.registration_state
    assert (state.assigned_hub, state.device_id) == (HOST, registration_id)
    assert sdk_dps.enrollments.registrations()[0]["payload"] == {"site": "plant-7"}

    if auth == "x509":
        device = IoTHubDeviceClient.create_from_x509_certificate(
            x509=x509, hostname=state.assigned_hub, device_id=state.device_id,
            server_verification_cert=roots_pem(sdk_hub))
    else:
        device = IoTHubDeviceClient.create_from_symmetric_key(
            symmetric_key=DEVICE_KEY, hostname=state.assigned_hub, device_id=state.device_id,
            server_verification_cert=roots_pem(sdk_hub))
    try:
        device.connect()
        device.send_message(Message("provisioned"))
    finally:
        device.shutdown()
    assert [m.payload for m in sdk_hub.telemetry(registration_id)] == [b"provisioned"]

"""The emulator's own rules, checked directly: twin merge/versions, SAS token checks."""

import time

import pytest

from aziot_tools.hub import sas
from aziot_tools.hub.twins import SECTION_LIMIT, TwinError, TwinStore

KEY = "ZW11bGF0b3ItdGVzdC1rZXktbm90LWEtc2VjcmV0LTAxMjM0NQ=="


def test_twin_patches_merge_delete_and_count_versions(tmp_path):
    store = TwinStore(str(tmp_path / "twins.json"))
    assert store.device_view("d") == {"desired": {"$version": 1}, "reported": {"$version": 1}}
    assert store.patch("d", "reported", {"a": {"b": 1, "c": 2}, "x": "y"}) == 2
    assert store.patch("d", "reported", {"a": {"b": None, "d": [1]}, "x": None}) == 3
    assert store.device_view("d")["reported"] == {"a": {"c": 2, "d": [1]}, "$version": 3}
    meta = store.service_view("d")["properties"]["reported"]["$metadata"]
    assert set(meta) == {"$lastUpdated", "a"} and set(meta["a"]) == {"$lastUpdated", "c", "d"}
    # Saved: a new store on the same file sees the same twin.
    assert TwinStore(str(tmp_path / "twins.json")).device_view("d") == store.device_view("d")


@pytest.mark.parametrize("patch,reason", [
    ([1, 2], "a twin patch must be a JSON object"),
    ({"$version": 3}, "property names may not start with '$'"),
    ({"big": "x" * SECTION_LIMIT}, "reported properties would exceed 32768 bytes"),
])
def test_twin_patches_the_hub_refuses(tmp_path, patch, reason):
    store = TwinStore(str(tmp_path / "twins.json"))
    with pytest.raises(TwinError, match=reason.replace("$", r"\$")):
        store.patch("d", "reported", patch)
    assert store.device_view("d")["reported"] == {"$version": 1}  # nothing half-applied


def sdk_token(resource, key=KEY, ttl=3600):
    """A token made by the official SDK's own code, not ours."""
    from azure.iot.device.common.auth.sastoken import RenewableSasToken
    from azure.iot.device.common.auth.signing_mechanism import SymmetricKeySigningMechanism

    return str(RenewableSasToken(resource, SymmetricKeySigningMechanism(key), ttl=ttl))


def test_sas_check_accepts_sdk_tokens_and_names_what_is_wrong():
    resource = "hub.azure-devices.net/devices/dev1"
    assert sas.check(sdk_token(resource), resource, (KEY,)) is None
    assert sas.check(sdk_token(resource), resource, ("", KEY)) is None  # secondary key
    assert sas.check(sdk_token(resource + "/modules/m"), resource + "/modules/m", (KEY,)) is None
    assert sas.check(sdk_token(resource), "hub.azure-devices.net/devices/dev2", (KEY,)) == \
        "SAS token is for 'hub.azure-devices.net/devices/dev1', not 'hub.azure-devices.net/devices/dev2'"
    assert sas.check(sdk_token(resource, key="b3RoZXI="), resource, (KEY,)) == \
        "SAS token signature does not match the device's keys"
    expired = sdk_token(resource, ttl=60)
    assert sas.check(expired, resource, (KEY,), now=time.time() + 120).startswith("SAS token expired at ")
    assert sas.check("Bearer abc", resource, (KEY,)) == "password is not a SharedAccessSignature token"
    assert sas.check("SharedAccessSignature sr=x&se=1", resource, (KEY,)) == "SAS token lacks 'sig'"
    token = sdk_token(resource, key="b3RoZXI=")
    reason = sas.check(token, resource, (KEY,))
    assert KEY not in reason and token.split("sig=")[1].split("&")[0] not in reason


def test_emulator_ends_a_sas_connection_when_its_token_expires(hub, hub_state):
    """A paho-mqtt client (CPython) logs in with a token that expires in 2 s."""
    import os
    import ssl
    import threading

    import paho.mqtt.client as mqtt

    from aziot_tools.hub.registry import Registry

    Registry(os.path.join(hub_state, "registry.json")).add_device("paho-sas", "sas", primary_key=KEY)
    resource = "%s/devices/paho-sas" % hub.hub_host
    token = sdk_token(resource, ttl=2)
    ctx = ssl.create_default_context(cafile=hub.identity.root_path("rsa"))
    ctx.check_hostname = False  # dials 127.0.0.1; the chain is still verified
    connected, dropped = threading.Event(), threading.Event()
    client = mqtt.Client(client_id="paho-sas")
    client.username_pw_set("%s/paho-sas/?api-version=2021-04-12" % hub.hub_host, token)
    client.tls_set_context(ctx)
    client.on_connect = lambda c, u, f, rc: connected.set() if rc == 0 else None
    client.on_disconnect = lambda c, u, rc: dropped.set()
    client.connect("127.0.0.1", hub.port, keepalive=60)
    client.loop_start()
    try:
        assert connected.wait(10)
        assert dropped.wait(10)
    finally:
        client.loop_stop()
    (conn,) = hub.connections("paho-sas")
    assert (conn.auth, conn.reason) == ("sas", "SAS token expired")


def test_sas_tokens_the_hub_would_not_take_are_refused_with_a_reason():
    resource = "hub.azure-devices.net/devices/dev1"
    good = sdk_token(resource)
    assert sas.check(good + "&skn=iothubowner", resource, (KEY,)) == \
        "SAS token names a shared access policy (skn): a device signs with its own key"
    se = good.split("se=")[1].split("&")[0]
    assert sas.check(good.replace("se=" + se, "se=\u00b2"), resource, (KEY,)) == "SAS token expiry is not a number"
    assert sas.check(good.replace("se=" + se, "se=" + "9" * 400), resource, (KEY,)) == \
        "SAS token expiry is out of range"


def connack_code(hub, device_id, password=None, cert_chain=None) -> int:
    """The CONNACK code a paho-mqtt (CPython) client gets from the hub for this login."""
    import ssl
    import threading

    import paho.mqtt.client as mqtt

    ctx = ssl.create_default_context(cafile=hub.identity.root_path("rsa"))
    ctx.check_hostname = False  # dials 127.0.0.1; the chain is still verified
    if cert_chain:
        ctx.load_cert_chain(*cert_chain)
    codes, done = [], threading.Event()
    client = mqtt.Client(client_id=device_id)
    client.username_pw_set("%s/%s/?api-version=2021-04-12" % (hub.hub_host, device_id), password)
    client.tls_set_context(ctx)
    client.on_connect = lambda c, u, f, rc: (codes.append(rc), done.set())
    client.connect("127.0.0.1", hub.port, keepalive=60)
    client.loop_start()
    try:
        assert done.wait(10)
    finally:
        client.loop_stop()
        client.disconnect()
    return codes[0]


def test_a_client_with_a_malformed_token_gets_connack_5(hub, hub_state):
    """Through the whole path (TLS, CONNECT): a refusal with its reason, not an error inside the emulator."""
    import os

    from aziot_tools.hub.registry import Registry

    Registry(os.path.join(hub_state, "registry.json")).add_device("paho-bad", "sas", primary_key=KEY)
    resource = "%s/devices/paho-bad" % hub.hub_host
    good = sdk_token(resource)
    se = good.split("se=")[1].split("&")[0]
    for token, reason in ((good.replace("se=" + se, "se=\u00b2"), "SAS token expiry is not a number"),
                          (good.replace("se=" + se, "se=" + "9" * 400), "SAS token expiry is out of range"),
                          (good + "&skn=device", "SAS token names a shared access policy (skn)")):
        assert connack_code(hub, "paho-bad", password=token) == 5
        assert hub.connections("paho-bad")[-1].reason.startswith(reason)


def test_ca_authentication_checks_every_issuer_on_the_path(tmp_path):
    import datetime

    from aziot_tools import pki
    from aziot_tools.hub.registry import Registry

    registry = Registry(str(tmp_path / "registry.json"))
    ca = pki.make_device_ca("fleet")
    registry.add_ca("fleet", ca.cert_pem)
    registry.add_device("victim", "x509_ca")
    registry.add_device("dev-a", "x509_ca")
    now = datetime.datetime.now(datetime.timezone.utc)
    a = pki.make_device_identity("dev-a", ca)
    assert registry.authenticate("dev-a", [a.cert], now) is None
    # dev-a's own leaf (CA:FALSE) signs a certificate for another device id: refused.
    forged = pki.make_device_identity("victim", a)
    assert registry.authenticate("victim", [forged.cert, a.cert], now).startswith(
        "issuer CN=dev-a is not a CA certificate (basicConstraints CA:TRUE missing)")
    # A proper intermediate under the fleet CA works; one too many below a pathlen-limited CA does not.
    inter = pki.make_intermediate_ca("line-1", ca)
    dev = pki.make_device_identity("victim", inter)
    assert registry.authenticate("victim", [dev.cert, inter.cert], now) is None
    deeper = pki.make_intermediate_ca("cell-7", inter)
    dev2 = pki.make_device_identity("victim", deeper)
    assert "allows 0 CA certificates below it, the chain has 1" in registry.authenticate(
        "victim", [dev2.cert, deeper.cert, inter.cert], now)


def test_a_client_presenting_a_leaf_signed_by_another_devices_leaf_is_refused(hub, hub_state, tmp_path):
    import os

    from aziot_tools import provision
    from aziot_tools.hub.registry import Registry

    registry = Registry(os.path.join(hub_state, "registry.json"))
    ca = provision.fleet_ca(hub_state)
    registry.add_device("dev-a", "x509_ca")
    registry.add_device("victim", "x509_ca")
    from aziot_tools import pki

    a = pki.make_device_identity("dev-a", ca)
    forged = pki.make_device_identity("victim", a)
    (tmp_path / "chain.pem").write_bytes(forged.cert_pem + a.cert_pem)
    (tmp_path / "key.pem").write_bytes(forged.key_pem)
    chain = (str(tmp_path / "chain.pem"), str(tmp_path / "key.pem"))
    assert connack_code(hub, "victim", cert_chain=chain) == 5
    assert "is not a CA certificate" in hub.connections("victim")[-1].reason

"""SAS authentication on the device: HMAC, tokens, DPS key derivation, the clock, renewal."""

import json
import os
import time

import pytest

from rfc4231 import CASES
from devicecode import CONNECT_AND_SEND, outcome

KEY = "ZW11bGF0b3ItdGVzdC1rZXktbm90LWEtc2VjcmV0LTAxMjM0NQ=="


def run_json(mpy, code):
    return json.loads(mpy(code).strip().splitlines()[-1])


def test_hmac_sha256_matches_rfc_4231(mpy):
    got = run_json(mpy, """
        import json, binascii
        from aziot.sas import hmac_sha256
        cases = %s
        print(json.dumps([binascii.hexlify(hmac_sha256(binascii.unhexlify(k), binascii.unhexlify(m))).decode()
                          for k, m, _ in cases]))
    """ % json.dumps(CASES))
    assert got == [expected for _, _, expected in CASES]


def test_tokens_equal_the_official_sdks_for_the_same_key_and_expiry(mpy):
    from azure.iot.device.common.auth.sastoken import RenewableSasToken
    from azure.iot.device.common.auth.signing_mechanism import SymmetricKeySigningMechanism

    resources = ["myhub.azure-devices.net/devices/dev1", "myhub.azure-devices.net/devices/dev 2/modules/m~1",
                 "0ne00ABCDEF/registrations/sn-007"]
    sdk = [str(RenewableSasToken(r, SymmetricKeySigningMechanism(KEY), ttl=3600)) for r in resources]
    expiries = [int(t.rsplit("&se=", 1)[1]) for t in sdk]
    ours = run_json(mpy, """
        import json
        from aziot import sas
        print(json.dumps([sas.token(r, %r, e) for r, e in zip(%s, %s)]))
    """ % (KEY, json.dumps(resources), json.dumps(expiries)))
    assert ours == sdk


def test_group_enrollment_key_derivation_matches_the_documented_vector(mpy):
    out = mpy("""
        from aziot.sas import derive_device_key
        print(derive_device_key("8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==",
                                "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"))
    """)
    assert out.strip() == "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="


def test_a_key_that_is_not_base64_is_refused_without_echoing_it(mpy):
    out = mpy("""
        from aziot import sas
        for key in ("not*base64!", "c2VjcmV0", "YWJj=="):
            try:
                sas.token("h/devices/d", key, 1)
                print("OK")
            except Exception as e:
                print(type(e).__name__, e)
    """)
    assert out.splitlines() == ["ConfigError SAS key is not base64", "OK", "ConfigError SAS key is not base64"]
    assert "not*base64" not in out


def test_sas_device_connects_sends_and_the_key_never_leaves_the_image(any_hub, provision_device, run_device):
    hub = any_hub
    dev = provision_device("dev-sas", hub, auth="sas")
    run = run_device(dev.image_path, CONNECT_AND_SEND)
    assert outcome(run) == "DONE", run.output
    (conn,) = hub.connections("dev-sas")
    assert (conn.auth, conn.result, conn.client_thumbprint) == ("sas", "closed", None)
    assert [m.payload for m in hub.telemetry("dev-sas")] == [b'{"ok": 1}']
    assert dev.sas_key not in run.output and dev.sas_key not in json.dumps(dev.config)


def test_sas_device_with_a_wrong_key_is_refused_by_name(hub, provision_device, run_device, hub_state):
    from aziot_tools.hub.registry import Registry

    dev = provision_device("dev-sas-wrong", hub, auth="sas")
    Registry(os.path.join(hub_state, "registry.json")).add_device("dev-sas-wrong", "sas", primary_key=KEY)
    out = outcome(run_device(dev.image_path, CONNECT_AND_SEND))
    assert out == ("ERROR ConnectionRefused hub refused the connection: CONNACK 5 (not authorized: unknown or "
                   "disabled device, or credentials that do not match the registry)")
    assert hub.connections("dev-sas-wrong")[0].reason == "SAS token signature does not match the device's keys"


def test_sas_with_an_unset_clock_is_refused_before_dialing(hub, provision_device, run_device):
    dev = provision_device("dev-sas-clock", hub, auth="sas")
    run = run_device(dev.image_path, """
        from aziot.config import load
        from aziot.hub import HubClient
        hub = HubClient(load(), clock_now=lambda: 946684800)  # an ESP32 after reset: 2000-01-01
        try:
            hub.connect()
        except Exception as e:
            print("ERROR", type(e).__name__, e)
    """)
    assert run.stdout.strip() == ("ERROR ClockError the clock reads 2000-01-01T00:00:00Z: a SAS token needs the "
                                  "current time (call aziot.clock.sync() or set the RTC first)")
    assert hub.connections() == []


def test_clock_sync_says_when_the_port_has_no_ntp(mpy):
    out = mpy("""
        from aziot import clock
        try:
            clock.sync()
        except Exception as e:
            print(type(e).__name__, e)
    """)
    assert out.strip() == "ClockError this port has no ntptime: set the clock another way (RTC, GPS, the hub's time)"


def test_token_is_renewed_before_it_expires_by_reconnecting(hub, provision_device, run_device):
    dev = provision_device("dev-sas-renew", hub, auth="sas", sas_ttl=60)
    run = run_device(dev.image_path, """
        import time
        from aziot.config import load
        from aziot.hub import HubClient
        start = time.time()
        fast = lambda: start + (time.time() - start) * 200   # 60 s of token life in 0.3 s
        hub = HubClient(load(), clock_now=fast)
        hub.connect()
        for i in range(20):
            hub.send_telemetry(b"%d" % i)
            hub.poll(50)
        while len(hub.outbox) or not hub.connected:  # a renewal may have just closed the link
            hub.poll(50)
        hub.disconnect()
        print("RENEWALS", hub.stats["renewals"], "CONNECTS", hub.stats["connects"], "LOST", hub.stats["links_lost"])
    """)
    words = run.stdout.split()
    assert words[0] == "RENEWALS" and int(words[1]) >= 2, run.output
    assert int(words[3]) == int(words[1]) + 1 and words[5] == "0"
    conns = hub.connections("dev-sas-renew")
    assert len(conns) == int(words[3]) and all(c.auth == "sas" for c in conns)
    assert sorted(int(m.payload) for m in hub.telemetry("dev-sas-renew")) == list(range(20))

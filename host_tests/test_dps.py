"""Zero-touch provisioning: the device (in micropython) registers with the emulated DPS, which
assigns it to an emulated hub; the device then connects there."""

import base64
import time
from urllib.parse import quote

import pytest

from aziot_tools.hub.dps import BackgroundDps
from aziot_tools.provision import ProvisionedDevice

# Provision through DPS unless an assignment is stored, then connect to the hub and send one message.
DPS_APP = """
import sys
from aziot import dps
from aziot.errors import AziotError
from aziot.hub import HubClient
try:
    cfg = dps.hub_config(payload={"model": "thermo-1"} if len(sys.argv) > 1 else None)
    hub = HubClient(cfg)
    hub.connect()
    hub.send_telemetry(b'{"t": 21.5}')
    hub.disconnect()
    print("DONE", cfg.hub_host, cfg.device_id)
except AziotError as e:
    print("ERROR", type(e).__name__, e)
"""


@pytest.fixture
def dps(hub):
    """A DPS emulator assigning to the standard hub fixture; stopped after the test."""
    bg = BackgroundDps(hub.state_dir, [hub], assign_delay_s=1)
    service = bg.__enter__()
    yield service
    bg.__exit__(None, None, None)


def dps_device(provision_device, hub, dps, device_id, auth="x509_thumbprint", extra_files_more=None,
               **config) -> ProvisionedDevice:
    """An image that knows DPS (ID scope, where to dial it, its root) and nothing of the hub's registry."""
    config.setdefault("dps_id_scope", dps.id_scope)
    files = {"/azure-iot/roots/dps-rsa-root.der": dps.root_der()}
    files.update(extra_files_more or {})
    return provision_device(device_id, hub, auth=auth, register=False, dps_address="127.0.0.1",
                            dps_port=dps.port, extra_files=files, **config)


def outcome(run):
    lines = [l for l in run.stdout.splitlines() if l.startswith(("DONE", "ERROR"))]
    assert lines, run.output
    return lines[-1]


@pytest.mark.parametrize("attestation", ["symmetric_key", "x509"])
def test_an_individual_enrollment_registers_and_the_device_connects_to_the_assigned_hub(
        hub, dps, provision_device, run_device, attestation):
    dev = dps_device(provision_device, hub, dps, "dev-dps-" + attestation.replace("_", "-"),
                     auth="sas" if attestation == "symmetric_key" else "x509_thumbprint")
    if attestation == "symmetric_key":
        dps.enrollments.add_individual(dev.device_id, "symmetric_key", primary_key=dev.sas_key)
    else:
        dps.enrollments.add_individual(dev.device_id, "x509", thumbprint=dev.identity.thumbprint_sha256)
    assert not hub.registry.device(dev.device_id)  # DPS creates it
    run = run_device(dev.image_path, DPS_APP, "payload")
    assert outcome(run) == "DONE %s %s" % (hub.hub_host, dev.device_id), run.output
    assert len(hub.telemetry(dev.device_id)) == 1
    (state,) = dps.enrollments.registrations()
    assert state["status"] == "assigned" and state["payload"] == {"model": "thermo-1"}
    # auto offers ECDSA first; DPS has an RSA chain only and refuses it (as a standard hub does).
    assert [a[1] for a in dps.attempts] == ["tls-failed", "assigned"]

    again = run_device(dev.image_path, DPS_APP)  # a restart: the stored assignment, DPS not contacted
    assert outcome(again) == "DONE %s %s" % (hub.hub_host, dev.device_id), again.output
    assert len(dps.attempts) == 2 and len(hub.telemetry(dev.device_id)) == 2


def test_refusals_are_typed_errors_that_name_the_cause(hub, dps, provision_device, run_device):
    dev = dps_device(provision_device, hub, dps, "dev-dps-refused", auth="sas")
    run = run_device(dev.image_path, DPS_APP)  # not enrolled
    assert outcome(run).startswith("ERROR ProvisioningError DPS refused the login of 'dev-dps-refused' (CONNACK 5)")
    assert dps.attempts[-1][1] == "refused: no symmetric key enrollment for registration id 'dev-dps-refused'"

    dps.enrollments.add_individual(dev.device_id, "symmetric_key", primary_key=dev.sas_key, enabled=False)
    run = run_device(dev.image_path, DPS_APP)
    assert outcome(run) == ("ERROR ProvisioningError DPS did not assign 'dev-dps-refused': status 'disabled', "
                            "error None: the enrollment is disabled"), run.output
    assert not hub.registry.device(dev.device_id)

    wrong_scope = dps_device(provision_device, hub, dps, "dev-dps-scope", auth="sas", dps_id_scope="0ne00000000")
    dps.enrollments.add_individual("dev-dps-scope", "symmetric_key", primary_key=wrong_scope.sas_key)
    run = run_device(wrong_scope.image_path, DPS_APP)
    assert outcome(run).startswith("ERROR ProvisioningError DPS refused the login of 'dev-dps-scope' (CONNACK 5)")
    assert dps.attempts[-1][1].startswith("refused: ID scope '0ne00000000' is not this DPS's")


@pytest.mark.parametrize("stored", [b'{"assignedHub": "', b'{"assignedHub": "h\xff\xfe"}'])
def test_a_corrupt_stored_assignment_is_named_and_dps_is_asked_again(hub, dps, provision_device, run_device, stored):
    dev = dps_device(provision_device, hub, dps, "dev-dps-torn", auth="sas")
    dps.enrollments.add_individual(dev.device_id, "symmetric_key", primary_key=dev.sas_key)
    files = dict(dev.files)
    files["/azure-iot/dps-assignment.json"] = stored  # torn, or not UTF-8
    from aziot_tools import flashimage

    with open(dev.image_path, "wb") as f:
        f.write(flashimage.build_image(files))
    run = run_device(dev.image_path, DPS_APP)
    assert run.stdout.splitlines()[0] == ("aziot: stored DPS assignment /azure-iot/dps-assignment.json is unreadable "
                                          "(not JSON): registering with DPS again"), run.output
    assert outcome(run) == "DONE %s dev-dps-torn" % hub.hub_host, run.output


def test_a_payload_too_large_to_keep_is_handed_over_and_the_next_boot_still_reads_the_assignment(
        hub, dps, provision_device, run_device):
    dev = dps_device(provision_device, hub, dps, "dev-dps-bigpayload", auth="sas")
    dps.enrollments.add_individual(dev.device_id, "symmetric_key", primary_key=dev.sas_key)
    app = """
        from aziot import dps
        from aziot.config import load
        cfg = load()
        stored = dps.load_assignment(cfg.dps_assignment_file)
        if stored is None:
            got = dps.DpsClient(cfg).register({"site": "x" * 3000})
            dps.save_assignment(cfg.dps_assignment_file, got)
            print("REGISTERED", len(got.payload["site"]))
        else:
            print("STORED", stored.hub_host, stored.payload)
    """
    first = run_device(dev.image_path, app)
    assert first.stdout.strip() == "REGISTERED 3000", first.output
    second = run_device(dev.image_path, app)
    assert second.stdout.strip() == "STORED %s None" % hub.hub_host, second.output


def test_the_emulated_dps_takes_skn_registration_or_none_and_refuses_any_other_policy():
    """The device signs with skn=registration (Microsoft's symmetric key attestation page); the Python
    SDK signs without skn; a token naming another policy is not a registration token."""
    from aziot_tools.hub import sas

    key = "ZW11bGF0b3ItdGVzdC1rZXktbm90LWEtc2VjcmV0LTAxMjM0NQ=="
    resource = "0ne00AZ10T1/registrations/dev-1"
    expiry = str(int(time.time()) + 600)
    sig = base64.b64encode(sas.signature(key, quote(resource, safe=""), expiry)).decode()
    base = "SharedAccessSignature sr=%s&sig=%s&se=%s" % (quote(resource, safe=""), quote(sig, safe=""), expiry)
    assert sas.check(base + "&skn=registration", resource, [key], policy="registration") is None
    assert sas.check(base, resource, [key], policy="registration") is None
    assert sas.check(base + "&skn=iothubowner", resource, [key], policy="registration") == \
        "SAS token may name skn=registration only"
    assert sas.check(base + "&skn=registration", resource, [key]) is not None  # a hub token names none


GROUP_KEY = "Z3JvdXAta2V5LWZvci1hLWZsZWV0LW9mLXRoZXJtb3N0YXRzLTAx"


@pytest.mark.parametrize("where", ["on the device", "on the host"])
def test_a_symmetric_key_group_with_the_device_key_derived_on_the_device_or_on_the_host(
        hub, dps, provision_device, run_device, where):
    """On the device: the group key is on its flash (dps_group_key_file), and so every device's key.
    On the host: only the derived key reaches the device (as sas_key_file), the group key never."""
    from aziot_tools.hub.dps import derived_key

    dps.enrollments.add_group("thermostats", "symmetric_key", primary_key=GROUP_KEY,
                              initial_twin={"properties": {"desired": {"interval_s": 30}}})
    device_id = "dev-grp-" + where.split()[1]
    if where == "on the device":
        dev = dps_device(provision_device, hub, dps, device_id, auth="sas", dps_group_key_file="/azure-iot/group.key",
                         extra_files_more={"/azure-iot/group.key": GROUP_KEY.encode()})
    else:
        dev = dps_device(provision_device, hub, dps, device_id, auth="sas",
                         extra_files_more={"/azure-iot/sas.key": derived_key(GROUP_KEY, device_id).encode()})
        assert GROUP_KEY.encode() not in open(dev.image_path, "rb").read()
    run = run_device(dev.image_path, DPS_APP)
    assert outcome(run) == "DONE %s %s" % (hub.hub_host, device_id), run.output
    assert hub.get_twin(device_id)["properties"]["desired"]["interval_s"] == 30  # the group's initial twin
    assert [m.payload for m in hub.telemetry(device_id)] == [b'{"t": 21.5}']


def test_an_x509_group_under_an_intermediate_ca(hub, dps, provision_device, run_device):
    """The group holds the production line's intermediate; the device's certificate, issued by it,
    has the registration id as CN. (A group holding the root needs the device to present the
    intermediate too: that takes PEM parsing, which the PyPI Unix port's mbedTLS lacks.)"""
    from aziot_tools import pki

    line = pki.make_intermediate_ca("production line 4", pki.make_device_ca("fleet root"))
    dps.enrollments.add_group("line-4", "x509", ca_cert_pem=line.cert_pem)
    leaf = pki.make_device_identity("dev-line4-0001", line)
    dev = dps_device(provision_device, hub, dps, "dev-line4-0001", identity=leaf)
    run = run_device(dev.image_path, DPS_APP)
    assert outcome(run) == "DONE %s dev-line4-0001" % hub.hub_host, run.output
    stranger = dps_device(provision_device, hub, dps, "dev-elsewhere")  # self-signed: under no group
    run = run_device(stranger.image_path, DPS_APP)
    assert outcome(run).startswith("ERROR ProvisioningError DPS refused the login of 'dev-elsewhere' (CONNACK 5)")
    assert dps.attempts[-1][1] == "refused: client certificate does not chain to a registered certificate authority"


def test_hashed_allocation_spreads_a_group_over_two_hubs_and_static_pins_it(
        start_hub, hub_state, provision_device, run_device, tmp_path):
    from aziot_tools.hub.dps import BackgroundDps
    from aziot_tools.hub.server import BackgroundHub

    first = start_hub()
    second_bg = BackgroundHub(str(tmp_path / "second"), port=0, hub_host="second-hub.azure-devices.net")
    second = second_bg.__enter__()  # a registry and chains of its own
    bg = BackgroundDps(hub_state, [first, second], assign_delay_s=1)
    dps = bg.__enter__()
    roots = {"/azure-iot/roots/second-%s.der" % kind: second.identity.read("%s-root.der" % kind)
             for kind in ("ecc", "rsa")}
    try:
        dps.enrollments.add_group("spread", "symmetric_key", primary_key=GROUP_KEY)
        assigned = {}
        for n in range(6):
            device_id = "dev-spread-%d" % n
            dev = dps_device(provision_device, first, dps, device_id, auth="sas", address="127.0.0.1",
                             dps_group_key_file="/azure-iot/group.key",
                             extra_files_more=dict(roots, **{"/azure-iot/group.key": GROUP_KEY.encode()}))
            run = run_device(dev.image_path, """
                from aziot import dps
                cfg = dps.hub_config()
                print("ASSIGNED", cfg.hub_host)
            """)
            assigned[device_id] = run.stdout.split()[-1]
        assert set(assigned.values()) == {first.hub_host, second.hub_host}, assigned  # both get some
        for device_id, host in assigned.items():  # each device exists in its hub's registry only
            hub = first if host == first.hub_host else second
            other = second if hub is first else first
            assert hub.registry.device(device_id) and not other.registry.device(device_id)
        dps.enrollments.add_individual("dev-pinned", "symmetric_key", primary_key=GROUP_KEY,
                                       hubs=[second.hub_host], allocation="static")
        dev = dps_device(provision_device, first, dps, "dev-pinned", auth="sas",
                         extra_files_more={"/azure-iot/sas.key": GROUP_KEY.encode()})
        run = run_device(dev.image_path, "from aziot import dps\nprint('ASSIGNED', dps.hub_config().hub_host)\n")
        assert run.stdout.split()[-1] == second.hub_host, run.output
    finally:
        bg.__exit__(None, None, None)
        second_bg.__exit__(None, None, None)


def test_a_device_the_hub_refuses_asks_dps_again_in_the_same_boot_or_the_next(hub, dps, provision_device,
                                                                               run_device):
    """The stored assignment names a hub that now refuses the device (CONNACK 5: here its key there was
    replaced): connect() raises and notes the refusal on flash; the next attempt from poll() registers
    with DPS first, and so does the next boot if the app gave up (DPS sets the device's key in the hub
    again)."""
    dev = dps_device(provision_device, hub, dps, "dev-dps-again", auth="sas")
    dps.enrollments.add_individual(dev.device_id, "symmetric_key", primary_key=dev.sas_key)
    assert outcome(run_device(dev.image_path, DPS_APP)).startswith("DONE")
    other_key = "b3RoZXIta2V5LXJlcGxhY2VkLWluLXRoZS1odWI="

    hub.registry.add_device(dev.device_id, "sas", primary_key=other_key)
    gave_up = run_device(dev.image_path, DPS_APP)  # DPS_APP does not retry: a board that rebooted
    assert outcome(gave_up).startswith("ERROR ConnectionRefused hub refused the connection: CONNACK 5"), gave_up.output
    registrations = len(dps.attempts)
    next_boot = run_device(dev.image_path, DPS_APP)
    assert outcome(next_boot) == "DONE %s %s" % (hub.hub_host, dev.device_id), next_boot.output
    assert len(dps.attempts) > registrations  # it asked DPS: the refused assignment was not kept

    hub.registry.add_device(dev.device_id, "sas", primary_key=other_key)
    run = run_device(dev.image_path, """
        import time
        from aziot.hub import HubClient
        hub = HubClient.from_flash()
        events = []
        hub.on_link = lambda kind, detail: events.append(kind)
        try:
            hub.connect()
        except Exception as e:
            print("REFUSED", type(e).__name__, e)
        end = time.ticks_add(time.ticks_ms(), 15000)
        while not hub.connected and time.ticks_diff(end, time.ticks_ms()) > 0:
            hub.poll(100)
        hub.send_telemetry(b"back")
        print("RECONNECTED", hub.stats["reprovisions"], [e for e in events if e in ("reprovisioned", "connected")])
    """, timeout=60)
    lines = run.stdout.splitlines()
    assert lines[0].startswith("REFUSED ConnectionRefused hub refused the connection: CONNACK 5"), run.output
    assert lines[1] == "RECONNECTED 1 ['reprovisioned', 'connected']", run.output
    assert hub.registry.device(dev.device_id)["primary_key"] == dev.sas_key  # DPS put the enrolled key back


def test_the_emulated_dps_keeps_a_registration_with_its_enrollment_and_a_disabled_device_disabled(
        hub, dps, provision_device, run_device):
    """Stricter than the sources say: an individual enrollment decides alone (a group's certificate or
    key cannot stand in for it); a registration stays with the enrollment it came through; and DPS
    does not re-enable a device an operator disabled in the hub."""
    from aziot_tools import pki
    from aziot_tools.hub.dps import derived_key

    dps.enrollments.add_group("fleet", "symmetric_key", primary_key=GROUP_KEY)
    dps.enrollments.add_group("other-fleet", "symmetric_key", primary_key="b3RoZXItZ3JvdXAta2V5LWZvci10ZXN0cw==")
    dev = dps_device(provision_device, hub, dps, "dev-owned", auth="sas",
                     extra_files_more={"/azure-iot/sas.key": derived_key(GROUP_KEY, "dev-owned").encode()})
    assert outcome(run_device(dev.image_path, DPS_APP)).startswith("DONE")
    thief = dps_device(provision_device, hub, dps, "dev-owned", auth="sas", extra_files_more={
        "/azure-iot/sas.key": derived_key("b3RoZXItZ3JvdXAta2V5LWZvci10ZXN0cw==", "dev-owned").encode()})
    run = run_device(thief.image_path, "from aziot import dps\nfrom aziot.errors import AziotError\n"
                                       "try:\n    dps.DpsClient(__import__('aziot.config').config.load()).register()\n"
                                       "except AziotError as e:\n    print('ERROR', type(e).__name__, e)\n")
    assert "ProvisioningError DPS refused the login of 'dev-owned' (CONNACK 5)" in run.stdout, run.output
    assert dps.attempts[-1][1] == "refused: registration id 'dev-owned' belongs to enrollment group:fleet"

    line = pki.make_intermediate_ca("line 9", pki.make_device_ca("root 9"))
    dps.enrollments.add_group("line-9", "x509", ca_cert_pem=line.cert_pem)
    dps.enrollments.add_individual("dev-keyed", "symmetric_key", primary_key=GROUP_KEY)
    cert = dps_device(provision_device, hub, dps, "dev-keyed", identity=pki.make_device_identity("dev-keyed", line))
    run = run_device(cert.image_path, DPS_APP)
    assert outcome(run).startswith("ERROR ProvisioningError DPS refused the login of 'dev-keyed' (CONNACK 5)")
    assert dps.attempts[-1][1] == "refused: the enrollment for 'dev-keyed' takes a SAS token, not a certificate"

    hub.registry.add_device("dev-owned", "sas", primary_key=derived_key(GROUP_KEY, "dev-owned"), status="disabled")
    dev = dps_device(provision_device, hub, dps, "dev-owned", auth="sas",  # the owner's image again (same path)
                     extra_files_more={"/azure-iot/sas.key": derived_key(GROUP_KEY, "dev-owned").encode()})
    run = run_device(dev.image_path, "from aziot import dps\nprint(dps.DpsClient(__import__('aziot.config').config"
                                     ".load()).register().hub_host)\n")
    assert run.stdout.strip() == hub.hub_host, run.output
    assert hub.registry.device("dev-owned")["status"] == "disabled"


def test_dps_unreachable_or_too_slow_ends_within_the_deadline(hub, hub_state, provision_device, run_device):
    from devicecode import free_port

    dead = provision_device("dev-dps-dead", hub, auth="sas", register=False, dps_id_scope="0ne00AZ10T1",
                            dps_address="127.0.0.1", dps_port=free_port(), timeout=2)
    run = run_device(dead.image_path, DPS_APP)
    assert outcome(run).startswith("ERROR ConnectionLost DPS global.azure-devices-provisioning.net: "
                                   "cannot connect to 127.0.0.1:"), run.output

    bg = BackgroundDps(hub_state, [hub], assign_delay_s=5)  # DPS asks for 5 s per poll
    dps = bg.__enter__()
    try:
        dev = dps_device(provision_device, hub, dps, "dev-dps-slow", auth="sas", dps_timeout=3)
        dps.enrollments.add_individual(dev.device_id, "symmetric_key", primary_key=dev.sas_key)
        started = time.monotonic()
        run = run_device(dev.image_path, DPS_APP)
        took = time.monotonic() - started
    finally:
        bg.__exit__(None, None, None)
    assert outcome(run) == "ERROR ProvisioningError DPS asked to wait 5 s, past the 3 s dps_timeout", run.output
    assert took < 10, took


def test_the_command_line_walk_through(tmp_path, run_device):
    """README "Provision a fleet through DPS": aziot dps serve, enroll-group, provision --dps-group,
    the device's first boot, registrations; the group key stays on the host."""
    import os
    import re
    import signal
    import subprocess
    import sys

    aziot = [os.path.join(os.path.dirname(sys.executable), "aziot")]
    state = str(tmp_path / "fleet")
    serve = subprocess.Popen(aziot + ["dps", "serve", "--state", state, "--port", "0", "--hub-port", "0", "--delay", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ports = None
        for line in serve.stdout:
            m = re.match(r"ID scope (\S+); DPS on 127.0.0.1:(\d+); hub \S+ on 127.0.0.1:(\d+)", line)
            if m:
                ports = m.groups()
                break
        assert ports, "aziot dps serve printed no ports"
        scope, dps_port, hub_port = ports

        def cli(*args):
            return subprocess.run(aziot + list(args) + ["--state", state], capture_output=True, text=True, timeout=60)

        made = cli("dps", "enroll-group", "thermostats", "--symmetric-key", "--desired", '{"interval_s": 30}')
        assert made.returncode == 0 and "never printed" in made.stdout, made.stderr
        image = str(tmp_path / "thermo-0001.img")
        prov = cli("provision", "--device-id", "thermo-0001", "--image", image, "--auth", "sas",
                   "--dps-id-scope", scope, "--dps-group", "thermostats", "--dps-address", "127.0.0.1",
                   "--dps-port", dps_port, "--address", "127.0.0.1", "--port", hub_port)
        assert prov.returncode == 0, prov.stderr
        with open(os.path.join(state, "dps", "keys", "group-thermostats.key")) as f:
            group_key = f.read().strip()
        assert group_key.encode() not in open(image, "rb").read()
        run = run_device(image, DPS_APP)
        assert outcome(run).startswith("DONE emulated-hub.azure-devices.net thermo-0001"), run.output
        shown = cli("dps", "registrations")
        assert shown.stdout.split() == ["thermo-0001", "assigned", "emulated-hub.azure-devices.net", "thermo-0001"]
        twin = cli("twin", "thermo-0001")
        assert '"interval_s": 30' in twin.stdout, twin.stdout + twin.stderr
        missing = cli("provision", "--device-id", "thermo-0002", "--image", image, "--auth", "sas",
                      "--dps-id-scope", scope, "--dps-group", "no-such-group")
        assert missing.returncode == 2 and "the emulated DPS has no group 'no-such-group'" in missing.stderr
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(15)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()


def test_dps_topics_payloads_and_what_the_device_refuses_to_take_from_dps(mpy):
    """provisioning.py in micropython: the topics the Python SDK uses, and an assignment that would put
    something other than a host name into SNI or a device id into topics is refused."""
    out = mpy("""
        from aziot import provisioning as p
        from aziot.errors import ProtocolError, ConfigError
        print(p.username("0ne00AZ10T1", "dev-1"))
        print(p.register_topic(7))
        print(p.query_topic(8, "4.abc def"))
        print(p.parse_response_topic("$dps/registrations/res/202/?$rid=7&retry-after=3"))
        print(p.parse_response_topic("$iothub/twin/res/200/?$rid=1"))
        for bad in ("dev_1.", "d\\u00e9v", "x" * 129, "a/b"):
            try:
                p.check_registration_id(bad)
                print("TOOK", bad)
            except ConfigError as e:
                print("ConfigError")
        for state in ({"assignedHub": "../../etc", "deviceId": "d"}, {"assignedHub": "h.net", "deviceId": "a/b"},
                      {"assignedHub": "h.net", "deviceId": "d" * 129}, {"assignedHub": "h.net"}, [1]):
            try:
                p.Assignment.from_state(state)
                print("TOOK", state)
            except ProtocolError as e:
                print("ProtocolError", str(e)[:40])
        a = p.Assignment.from_state({"assignedHub": "hub-7.azure-devices.net", "deviceId": "dev-1", "payload": {"k": 1}})
        print(a.hub_host, a.device_id, a.payload)
    """)
    lines = out.splitlines()
    assert lines[:5] == [
        "0ne00AZ10T1/registrations/dev-1/api-version=2019-03-31",
        "$dps/registrations/PUT/iotdps-register/?$rid=7",
        "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=8&operationId=4.abc%20def",
        "(202, '7', 3)",
        "None"]
    assert lines[5:9] == ["ConfigError"] * 4
    assert [l.split()[0] for l in lines[9:14]] == ["ProtocolError"] * 5, lines
    assert lines[14] == "hub-7.azure-devices.net dev-1 {'k': 1}"


@pytest.mark.parametrize("policy", ["reprovisionandmigratedata", "reprovisionandresetdata", "never"])
def test_reprovisioning_policies_when_the_enrollment_moves_to_another_hub(
        start_hub, hub_state, provision_device, run_device, tmp_path, policy):
    from aziot_tools.hub.dps import BackgroundDps
    from aziot_tools.hub.server import BackgroundHub

    first = start_hub()
    second_bg = BackgroundHub(str(tmp_path / "second"), port=0, hub_host="second-hub.azure-devices.net")
    second = second_bg.__enter__()
    bg = BackgroundDps(hub_state, [first, second], assign_delay_s=1)
    dps = bg.__enter__()
    try:
        roots = {"/azure-iot/roots/second-%s.der" % k: second.identity.read("%s-root.der" % k) for k in ("ecc", "rsa")}
        dev = dps_device(provision_device, first, dps, "dev-moving", auth="sas", extra_files_more=roots)
        twin = {"properties": {"desired": {"interval_s": 30}}}
        dps.enrollments.add_individual("dev-moving", "symmetric_key", primary_key=dev.sas_key, hubs=[first.hub_host],
                                       allocation="static", initial_twin=twin, reprovision=policy)
        register = "from aziot import dps, config\nprint(dps.DpsClient(config.load()).register().hub_host)\n"
        assert run_device(dev.image_path, register).stdout.strip() == first.hub_host
        first.update_desired("dev-moving", {"mode": "eco"})  # set while it lived on the first hub
        dps.enrollments.add_individual("dev-moving", "symmetric_key", primary_key=dev.sas_key, hubs=[second.hub_host],
                                       allocation="static", initial_twin=twin, reprovision=policy)
        moved_to = run_device(dev.image_path, register).stdout.strip()
        state = dps.enrollments.registration("dev-moving")
    finally:
        bg.__exit__(None, None, None)
        second_bg.__exit__(None, None, None)
    if policy == "never":
        assert (moved_to, state["substatus"]) == (first.hub_host, "initialAssignment")
        return
    assert moved_to == second.hub_host
    desired = second.get_twin("dev-moving")["properties"]["desired"]
    if policy == "reprovisionandmigratedata":
        assert state["substatus"] == "deviceDataMigrated" and (desired["interval_s"], desired["mode"]) == (30, "eco")
    else:
        assert state["substatus"] == "deviceDataReset" and desired["interval_s"] == 30 and "mode" not in desired


def test_ten_failed_attempts_in_a_row_make_the_device_ask_dps_again(hub, dps, provision_device, run_device):
    """Microsoft's guidance: after repeated hub failures, provision again. The hub's port is dead here
    (the config dials a free port), so every attempt fails; the 10th schedules a registration, which
    runs at the next attempt on the backoff schedule."""
    from devicecode import free_port

    dev = dps_device(provision_device, hub, dps, "dev-dps-tenfail", auth="sas", port=free_port(),
                     reconnect_min_ms=10, reconnect_max_ms=40, timeout=1)
    dps.enrollments.add_individual(dev.device_id, "symmetric_key", primary_key=dev.sas_key)
    run = run_device(dev.image_path, """
        import time
        from aziot.hub import HubClient
        hub = HubClient.from_flash()   # registers: the assignment is stored
        try:
            hub.connect()
        except Exception as e:
            pass
        end = time.ticks_add(time.ticks_ms(), 8000)
        while hub.stats["reprovisions"] == 0 and time.ticks_diff(end, time.ticks_ms()) > 0:
            hub.poll(20)
        print("FAILURES", hub.stats["connect_failures"], "REPROVISIONS", hub.stats["reprovisions"])
    """, timeout=60)
    words = run.stdout.split()
    assert words[0] == "FAILURES" and int(words[1]) >= 9 and words[3] == "1", run.output
    assert [a[1] for a in dps.attempts].count("assigned") == 2  # at boot, and again after the failures


@pytest.mark.skipif(__import__("aziot_tools.firmware", fromlist=["x"]).unix_mfl_binary("micropython") is None,
                    reason="presenting a chain needs PEM parsing: no unix-mfl build (make unix-mfl MPY_DIR=...)")
def test_an_x509_group_holding_the_root_with_the_intermediate_presented_by_the_device(
        hub, dps, provision_device, tmp_path):
    from aziot_tools import device, firmware, flashimage, pki

    root = pki.make_device_ca("fleet root 5")
    line = pki.make_intermediate_ca("production line 5", root)
    dps.enrollments.add_group("fleet-5", "x509", ca_cert_pem=root.cert_pem)
    leaf = pki.make_device_identity("dev-line5-0001", line)
    dev = dps_device(provision_device, hub, dps, "dev-line5-0001", identity=leaf)
    files = dict(dev.files)
    files["/azure-iot/device.der"] = leaf.cert_pem + line.cert_pem  # leaf + intermediate, as PEM
    with open(dev.image_path, "wb") as f:
        f.write(flashimage.build_image(files))
    app = tmp_path / "dps_app.py"
    app.write_text(DPS_APP)
    run = device.run(dev.image_path, str(app), binary=firmware.unix_mfl_binary("micropython"), timeout=60,
                     lib_dir=device.prepare_unix_lib())
    assert outcome(run) == "DONE %s dev-line5-0001" % hub.hub_host, run.output


def test_a_device_the_hub_keeps_refusing_does_not_flood_dps_in_one_boot_or_across_boots(
        hub, dps, provision_device, run_device):
    """Disabled in the hub (CONNACK 5 for ever) while DPS keeps assigning it there: DPS is asked once
    at the first refusal; after the next, the wait doubles from 30-60 s and is kept on flash."""
    dev = dps_device(provision_device, hub, dps, "dev-dps-storm", auth="sas", reconnect_min_ms=50,
                     reconnect_max_ms=200)
    dps.enrollments.add_individual(dev.device_id, "symmetric_key", primary_key=dev.sas_key)
    assert outcome(run_device(dev.image_path, DPS_APP)).startswith("DONE")
    hub.registry.add_device(dev.device_id, "sas", primary_key=dev.sas_key, status="disabled")
    before = [a[1] for a in dps.attempts].count("assigned")
    run = run_device(dev.image_path, """
        import time
        from aziot.hub import HubClient
        hub = HubClient.from_flash()
        try:
            hub.connect()
        except Exception as e:
            pass
        end = time.ticks_add(time.ticks_ms(), 6000)
        while time.ticks_diff(end, time.ticks_ms()) > 0:
            hub.poll(50)
        print("FAILURES", hub.stats["connect_failures"], "REPROVISIONS", hub.stats["reprovisions"])
    """, timeout=60)
    failures, reprovisions = int(run.stdout.split()[1]), int(run.stdout.split()[3])
    assert failures >= 10 and reprovisions == 1, run.output
    assert [a[1] for a in dps.attempts].count("assigned") == before + 1
    again = run_device(dev.image_path, DPS_APP)  # a reboot: the wait is on flash, DPS is not asked
    assert outcome(again).startswith("ERROR ConnectionRefused"), again.output
    assert [a[1] for a in dps.attempts].count("assigned") == before + 1


def test_an_answer_larger_than_max_message_is_named(hub, dps, provision_device, run_device):
    dev = dps_device(provision_device, hub, dps, "dev-dps-bigans", auth="sas", max_message=1024)
    dps.enrollments.add_individual(dev.device_id, "symmetric_key", primary_key=dev.sas_key)
    run = run_device(dev.image_path, """
        from aziot import dps, config
        from aziot.errors import AziotError
        try:
            dps.DpsClient(config.load()).register({"site": "x" * 2000})
        except AziotError as e:
            print("ERROR", type(e).__name__, e)
    """)
    assert run.stdout.startswith("ERROR ProvisioningError DPS answered with "), run.output
    assert "more than max_message 1024" in run.stdout

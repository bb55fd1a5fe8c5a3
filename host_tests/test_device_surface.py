"""Direct methods, device twin and C2D, end to end: device (micropython) <-> hub emulator's service API."""

import json
import time

from devicecode import SURFACE_APP, eventually


def start_surface(live_device, dev, heap=None):
    device = live_device(dev.image_path, SURFACE_APP, heap=heap)
    device.expect("READY")
    return device


def stop_surface(hub, device, device_id, module_id=""):
    result = hub.invoke_method(device_id, "stop", None, timeout=10, module_id=module_id)
    assert result.status == 200, result
    device.expect("DONE")
    assert device.wait() == 0


def test_direct_methods_answer_with_status_and_json(any_hub, provision_device, live_device):
    hub = any_hub
    dev = provision_device("dev-methods", hub)
    device = start_surface(live_device, dev)
    result = hub.invoke_method("dev-methods", "echo", {"x": [1, 2, "three"]}, timeout=10)
    assert (result.status, result.payload) == (200, {"method": "echo", "got": {"x": [1, 2, "three"]}})
    # A handler that raises answers 500 with the error and the device stays connected.
    result = hub.invoke_method("dev-methods", "boom", {}, timeout=10)
    assert (result.status, result.payload) == (500, {"error": "ValueError: sensor offline"})
    # A method nobody handles answers 404.
    result = hub.invoke_method("dev-methods", "reboot", None, timeout=10)
    assert (result.status, result.payload) == (404, {"error": "no handler for method 'reboot'"})
    assert hub.invoke_method("dev-methods", "echo", 7, timeout=10).payload == {"method": "echo", "got": 7}
    stop_surface(hub, device, "dev-methods")
    # (the emulator handles the DISCONNECT on its own thread)
    assert eventually(lambda: [c.result for c in hub.connections("dev-methods")] == ["closed"])


def test_method_call_to_an_offline_device_is_404_as_the_hub_answers(hub, provision_device):
    provision_device("dev-offline", hub)
    result = hub.invoke_method("dev-offline", "echo", {}, timeout=2)
    assert result.status == 404 and result.payload["errorCode"] == 404103


def test_an_8_kb_method_payload_works_and_an_oversize_one_is_refused_whole(hub, provision_device, live_device):
    dev = provision_device("dev-big", hub, max_message=12000)
    device = start_surface(live_device, dev, heap="208K")  # Pico W-sized; README "Heap"
    big = "x" * 8192
    result = hub.invoke_method("dev-big", "size", big, timeout=10)
    assert (result.status, result.payload) == (200, {"bytes": 8194}), device.output  # JSON string: 8192 + quotes
    result = hub.invoke_method("dev-big", "size", "y" * 20000, timeout=10)
    assert result.status == 413
    assert result.payload == {"error": "payload of 20002 bytes exceeds the device's max_message 12000"}
    line = device.expect("POLL-ERROR")
    assert line == "POLL-ERROR MessageTooLarge direct method 'size' payload of 20002 bytes exceeds " \
                   "max_message 12000; answered 413"
    # The stream stayed in step: the next call works on the same connection.
    assert hub.invoke_method("dev-big", "size", "z", timeout=10).payload == {"bytes": 3}
    stop_surface(hub, device, "dev-big")
    assert len(hub.connections("dev-big")) == 1


def test_desired_change_is_handled_and_reflected_in_reported(any_hub, provision_device, live_device):
    hub = any_hub
    dev = provision_device("dev-twin", hub)
    device = start_surface(live_device, dev)
    # At connect the device fetched the twin: desired version 1, empty.
    version = hub.update_desired("dev-twin", {"led": "on", "rate": {"s": 5}})
    assert version == 2
    _, got_version, patch = device.expect("DESIRED").split(" ", 2)
    assert (got_version, json.loads(patch)) == ("2", {"led": "on", "rate": {"s": 5}})
    assert device.expect("REPORTED") == "REPORTED 2"
    twin = hub.get_twin("dev-twin")["properties"]
    assert twin["reported"]["led"] == "on" and twin["reported"]["$version"] == 2
    assert twin["desired"]["rate"] == {"s": 5}
    assert "$lastUpdated" in twin["reported"]["$metadata"]["led"]
    stop_surface(hub, device, "dev-twin")


def test_twin_get_and_report_with_a_4_kb_twin(any_hub, provision_device, run_device):
    hub = any_hub
    dev = provision_device("dev-twin4k", hub)
    hub.update_desired("dev-twin4k", {"blob": "d" * 2048})
    run = run_device(dev.image_path, """
        from aziot.hub import HubClient
        hub = HubClient.from_flash()
        hub.connect()
        print("V", hub.report({"blob": "r" * 2048, "gone": 1}))
        print("V", hub.report({"gone": None}))
        twin = hub.get_twin()
        print("TWIN", len(twin["desired"]["blob"]), len(twin["reported"]["blob"]),
              twin["desired"]["$version"], twin["reported"]["$version"], "gone" in twin["reported"])
        try:
            hub.report({"$bad": 1})
        except Exception as e:
            print("ERROR", type(e).__name__, e)
        hub.disconnect()
    """)
    assert run.stdout.splitlines() == ["V 2", "V 3", "TWIN 2048 2048 2 3 False",
                                       "ERROR RequestFailed hub answered 400 to the reported-properties PATCH"], \
        run.output


def test_desired_change_made_while_offline_is_caught_up_at_reconnect(hub, provision_device, live_device):
    dev = provision_device("dev-away", hub)
    device = start_surface(live_device, dev)
    hub.update_desired("dev-away", {"led": "on"})
    device.expect("REPORTED")
    stop_surface(hub, device, "dev-away")
    hub.update_desired("dev-away", {"led": "off"})  # while the device is offline
    device = start_surface(live_device, dev)
    # connect() fetched the full twin and handed the handler the whole desired document.
    assert any(l.startswith("DESIRED 3 ") and json.loads(l.split(" ", 2)[2]) == {"led": "off"}
               for l in device.lines), device.output
    assert "REPORTED 3" in device.lines
    assert hub.get_twin("dev-away")["properties"]["reported"]["led"] == "off"
    stop_surface(hub, device, "dev-away")


def test_c2d_with_properties_round_trip(any_hub, provision_device, live_device):
    hub = any_hub
    dev = provision_device("dev-c2d", hub)
    device = start_surface(live_device, dev)
    mid = hub.send_c2d("dev-c2d", b'{"cmd": "blink"}', {"prio": "high", "note": "a b/c&d=e"},
                       message_id="m-1", correlation_id="c-1", content_type="application/json",
                       content_encoding="utf-8")
    line = device.expect("C2D")
    assert line == ('C2D m-1 c-1 application/json utf-8 [["note", "a b/c&d=e"], ["prio", "high"]] '
                    "b'{\"cmd\": \"blink\"}'")
    assert mid == "m-1"
    stop_surface(hub, device, "dev-c2d")
    assert hub.c2d_pending("dev-c2d") == []
    (done,) = hub.c2d_completed("dev-c2d")
    assert done.deliveries == 1


def test_c2d_sent_while_offline_is_delivered_once_after_reconnect(hub, provision_device, live_device):
    dev = provision_device("dev-c2d-away", hub)
    device = start_surface(live_device, dev)  # subscribes once, clean session 0
    stop_surface(hub, device, "dev-c2d-away")
    for i in range(3):
        hub.send_c2d("dev-c2d-away", b"queued %d" % i, message_id="q-%d" % i)
    assert len(hub.c2d_pending("dev-c2d-away")) == 3
    device = start_surface(live_device, dev)
    for i in range(3):
        assert device.expect("C2D q-%d" % i).endswith("b'queued %d'" % i)
    stop_surface(hub, device, "dev-c2d-away")
    assert [l for l in device.lines if l.startswith("C2D")] == \
        ["C2D q-%d None None None [] b'queued %d'" % (i, i) for i in range(3)]
    assert hub.c2d_pending("dev-c2d-away") == []
    assert [m.deliveries for m in hub.c2d_completed("dev-c2d-away")] == [1, 1, 1], device.output


def test_two_packets_in_one_tls_record_are_both_handled(hub, provision_device, live_device):
    from aziot_tools.hub import mqttwire

    dev = provision_device("dev-coalesced", hub)
    device = start_surface(live_device, dev)

    def desired(version, led):
        body = mqttwire.string("$iothub/twin/PATCH/properties/desired/?$version=%d" % version)
        return mqttwire.encode(mqttwire.PUBLISH, 0, body + json.dumps({"led": led, "$version": version}).encode())

    # One write on the emulator's TLS connection is one TLS record (both packets are tiny).
    session = hub._sessions["dev-coalesced"]
    hub._call(session.send(desired(10, "red") + desired(11, "green")), 10)
    assert device.expect("DESIRED 10") == 'DESIRED 10 {"led": "red"}'
    assert device.expect("DESIRED 11") == 'DESIRED 11 {"led": "green"}'
    stop_surface(hub, device, "dev-coalesced")


def test_module_identity_gets_methods_and_twin_but_no_c2d(hub, hub_state, provision_device, live_device):
    from aziot_tools.hub.registry import Registry

    Registry(hub_state + "/registry.json").add_device("edge-box", "sas", primary_key="c2VjcmV0")
    dev = provision_device("edge-box", hub, module_id="sensor")
    device = start_surface(live_device, dev)
    assert "NO-C2D ConfigError modules do not receive cloud-to-device messages; " \
           "IoT Hub sends them to devices only" in device.lines
    result = hub.invoke_method("edge-box", "echo", {"m": 1}, timeout=10, module_id="sensor")
    assert (result.status, result.payload) == (200, {"method": "echo", "got": {"m": 1}})
    assert hub.invoke_method("edge-box", "echo", {}, timeout=2).status == 404  # the device itself is offline
    hub.update_desired("edge-box", {"led": "blue"}, module_id="sensor")
    device.expect("REPORTED 2")
    assert hub.get_twin("edge-box", module_id="sensor")["properties"]["reported"]["led"] == "blue"
    assert "led" not in hub.get_twin("edge-box")["properties"]["reported"]
    stop_surface(hub, device, "edge-box", module_id="sensor")
    (conn,) = hub.connections("edge-box")
    assert conn.module_id == "sensor"
    assert conn.username == "emulated-hub.azure-devices.net/edge-box/sensor/?api-version=2021-04-12"


def test_plug_and_play_model_id_is_sent_at_connect(hub, provision_device, run_device):
    dev = provision_device("dev-pnp", hub, model_id="dtmi:com:example:Thermostat;1")
    run = run_device(dev.image_path, """
        from aziot.hub import HubClient
        hub = HubClient.from_flash()
        hub.connect()
        print("POLLED", hub.poll(), hub.poll(50))  # nothing pending: returns 0 without blocking on the link
        hub.loop(100)
        hub.disconnect()
        print("DONE")
    """)
    assert run.stdout.splitlines() == ["POLLED 0 0", "DONE"], run.output
    (conn,) = hub.connections("dev-pnp")
    assert conn.model_id == "dtmi:com:example:Thermostat;1"
    assert conn.username.endswith("/?api-version=2021-04-12&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1")


def test_a_model_id_that_is_not_a_dtmi_is_refused_before_connecting(hub, provision_device, run_device):
    dev = provision_device("dev-badpnp", hub, model_id="Thermostat")
    run = run_device(dev.image_path, """
        from aziot.hub import HubClient
        try:
            HubClient.from_flash()
        except Exception as e:
            print("ERROR", type(e).__name__, e)
    """)
    assert run.stdout.strip() == "ERROR ConfigError /azure-iot/config.json: key 'model_id' must be a DTMI " \
                                 "such as 'dtmi:com:example:Thermostat;1'"
    assert hub.connections() == []


def test_an_oversize_c2d_message_is_refused_whole_and_the_next_one_arrives(hub, provision_device, live_device):
    dev = provision_device("dev-c2d-big", hub, max_message=1024)
    device = start_surface(live_device, dev)
    hub.send_c2d("dev-c2d-big", b"B" * 2000, message_id="big")
    assert device.expect("POLL-ERROR") == "POLL-ERROR MessageTooLarge cloud-to-device message of 2000 bytes " \
                                          "exceeds max_message 1024; acknowledged and dropped"
    hub.send_c2d("dev-c2d-big", b"small", message_id="small")
    assert device.expect("C2D") == "C2D small None None None [] b'small'"
    stop_surface(hub, device, "dev-c2d-big")
    assert [m.message_id for m in hub.c2d_completed("dev-c2d-big")] == ["big", "small"]
    assert not any(l.startswith("C2D big") for l in device.lines)


def test_method_call_to_a_device_not_subscribed_to_methods_is_404(hub, provision_device, live_device):
    dev = provision_device("dev-nomethods", hub)
    device = live_device(dev.image_path, """
        from aziot.hub import HubClient
        hub = HubClient.from_flash()
        done = []
        hub.on_c2d(lambda msg: done.append(msg))  # C2D only: no methods subscription
        hub.connect()
        print("READY")
        while not done:
            hub.poll(200)
        hub.disconnect()
        print("DONE")
    """)
    device.expect("READY")
    assert hub.connected("dev-nomethods")
    result = hub.invoke_method("dev-nomethods", "echo", {}, timeout=5)
    assert result.status == 404 and result.payload["errorCode"] == 404103
    hub.send_c2d("dev-nomethods", b"stop")
    device.expect("DONE")


def test_a_device_that_drops_during_a_method_call_gets_the_caller_a_404(hub, provision_device, live_device):
    dev = provision_device("dev-dropper", hub, reconnect_min_ms=50, reconnect_max_ms=200)
    device = live_device(dev.image_path, """
        from aziot.hub import HubClient
        hub = HubClient.from_flash()
        calls = []
        def crash(name, payload):
            calls.append(name)
            if len(calls) == 1:
                hub._session.close()  # the link dies before the answer goes out
            return 200, {"calls": len(calls)}
        hub.on_method("crash", crash)
        hub.connect()
        print("READY")
        while len(calls) < 2:
            hub.poll(100)
        hub.poll(100)
        print("STATS", hub.stats["links_lost"], hub.stats["connects"], type(hub.last_error).__name__, hub.last_error)
    """)
    device.expect("READY")
    result = hub.invoke_method("dev-dropper", "crash", {}, timeout=20)
    assert result.status == 404, result
    assert result.payload["message"] == "device dev-dropper went offline during the call"
    # poll() rode through the loss: it reconnected by itself, and the next call is answered.
    for _ in range(100):
        if hub.connected("dev-dropper"):
            break
        time.sleep(0.05)
    result = hub.invoke_method("dev-dropper", "crash", {}, timeout=20)
    assert (result.status, result.payload) == (200, {"calls": 2})
    assert device.expect("STATS") == "STATS 1 2 ConnectionLost connection lost while publishing to " \
                                     "$iothub/methods/res/200/?$rid=1: the connection is closed"


def test_default_method_handler_and_twin_request_timeout(hub, provision_device, live_device):
    dev = provision_device("dev-default", hub)
    device = live_device(dev.image_path, """
        from aziot import protocol
        from aziot.hub import HubClient
        hub = HubClient.from_flash()
        running = [True]
        def stop(name, payload):
            running[0] = False
        hub.on_method(None, lambda name, payload: (202, {"default": name, "len": len(payload)}))
        hub.on_method("stop", stop)
        hub.connect()
        # Pretend the twin-response subscription exists: the hub answers only subscribers.
        hub._subscribed.append(protocol.TWIN_RESPONSE_SUBSCRIPTION)
        try:
            hub.get_twin(timeout=1)
        except Exception as e:
            print("TWIN", type(e).__name__, e)
        print("READY")
        while running[0]:
            hub.poll(200)
        print("DONE")
    """)
    assert device.expect("TWIN") == "TWIN RequestTimeout no answer to the twin GET within 1000 ms"
    device.expect("READY")
    result = hub.invoke_method("dev-default", "anything", [1], timeout=10)
    assert (result.status, result.payload) == (202, {"default": "anything", "len": 3})
    result = hub.invoke_method("dev-default", "stop", None, timeout=10)
    assert (result.status, result.payload) == (200, None)  # None from the handler: 200, no body
    device.expect("DONE")

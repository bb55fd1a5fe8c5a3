"""Keepalive, throttling, and the offline queue across a reset, end to end."""

import time

from aziot_tools.faults import FaultProxy
from aziot_tools.hub.server import BackgroundHub
from devicecode import free_port

IDLE_APP = """
import sys, time
from aziot.hub import HubClient
hub = HubClient.from_flash()
hub.on_link = lambda event, detail: print("LINK", event, type(detail).__name__ if event == "lost" else "",
                                          detail if event in ("lost", "retry") else "")
hub.on_method("stop", lambda name, payload: stop.append(1))
stop = []
hub.connect()
print("READY")
while not stop:
    hub.poll(100)
hub.disconnect()
print("DONE", hub.stats["links_lost"])
"""


def test_keepalive_pings_when_idle_and_a_missing_pingresp_ends_the_link(hub, provision_device, live_device):
    with FaultProxy(hub.port) as proxy:
        dev = provision_device("dev-idle", address="127.0.0.1", port=proxy.port, keepalive=2, timeout=1,
                               reconnect_min_ms=100, reconnect_max_ms=200)
        device = live_device(dev.image_path, IDLE_APP)
        device.expect("READY")
        time.sleep(3.2)  # idle: a PINGREQ every second (half the keepalive), each answered
        (first,) = hub.connections("dev-idle")
        assert first.pings >= 2 and first.result == "connected"
        proxy.stall(4)  # a black hole: nothing closes, nothing arrives
        assert device.expect("LINK lost", timeout=10) == \
            "LINK lost ConnectionLost no PINGRESP within 1 s: the link is dead"
        device.expect("LINK connected", timeout=15)  # after the stall, back by itself
        hub.invoke_method("dev-idle", "stop", None, timeout=10)
        assert device.expect("DONE") == "DONE 1"


def test_a_busy_hub_gets_the_throttled_backoff(hub, provision_device, live_device):
    dev = provision_device("dev-throttled", hub, reconnect_min_ms=100, reconnect_max_ms=400, throttle_ms=800)
    device = live_device(dev.image_path, IDLE_APP)
    device.expect("READY")
    hub.throttle(1.5)
    hub._call(hub._sessions["dev-throttled"].send(b"\xf0\x00"), 10)  # break the link: it must reconnect
    device.expect("LINK lost")
    device.expect("LINK connected", timeout=20)
    retries = [l for l in device.lines if l.startswith("LINK retry")]
    # The first retry follows the lost link (normal schedule); each refused CONNECT (CONNACK 3) adds the floor.
    throttled = [tuple(map(int, l.split(" ", 3)[3].strip("()").split(","))) for l in retries[1:]]
    assert throttled and all(800 <= delay <= ceiling and ceiling > 800 for delay, ceiling in throttled), retries
    refused = [c for c in hub.connections("dev-throttled") if c.connack == 3]
    assert refused and all(c.reason == "throttled: the hub is busy" for c in refused)
    hub.invoke_method("dev-throttled", "stop", None, timeout=10)
    device.expect("DONE")


QUEUE_APP = """
import sys
from aziot.hub import HubClient
from aziot.errors import ConnectionLost
dropped = []
hub = HubClient.from_flash(on_dropped=dropped.append)
phase = sys.argv[1]
if phase == "offline":
    try:
        hub.connect()
    except Exception as e:
        print("OFFLINE", type(e).__name__)
    for i in range(5):
        hub.send_telemetry(b"%d" % i, message_id="q%d" % i)
    try:
        hub.send_telemetry(b"zero", qos=0)
    except ConnectionLost as e:
        print("QOS0", e)
    print("QUEUED", [m[0] for m in hub.outbox.items], "DROPPED", dropped)
else:  # after the reset: the queue comes back from flash
    print("LOADED", [m[0] for m in hub.outbox.items])
    hub.connect()
    hub.disconnect()
    print("LEFT", len(hub.outbox))
"""


def test_offline_queue_is_bounded_reports_drops_and_survives_a_reset(hub_state, provision_device, run_device):
    port = free_port()
    dev = provision_device("dev-queue", address="127.0.0.1", port=port, queue_size=3,
                           queue_file="/azure-iot/queue.bin", reconnect_min_ms=100)
    offline = run_device(dev.image_path, QUEUE_APP, "offline")  # nothing listens on the port yet
    assert offline.stdout.splitlines() == [
        "OFFLINE ConnectionLost",
        "QOS0 not connected to the hub: the link is down and poll() is reconnecting",
        "QUEUED ['q2', 'q3', 'q4'] DROPPED ['q0', 'q1']"], offline.output
    with BackgroundHub(hub_state, port=port) as hub:
        online = run_device(dev.image_path, QUEUE_APP, "online")
        assert online.stdout.splitlines() == ["LOADED ['q2', 'q3', 'q4']", "LEFT 0"], online.output
        assert [m.system_properties["$.mid"] for m in hub.telemetry("dev-queue")] == ["q2", "q3", "q4"]


def test_after_an_automatic_reconnect_the_device_catches_up_on_desired_changes(hub, provision_device,
                                                                               live_device):
    with FaultProxy(hub.port) as proxy:
        dev = provision_device("dev-catchup", address="127.0.0.1", port=proxy.port, reconnect_min_ms=200,
                               reconnect_max_ms=400)
        device = live_device(dev.image_path, """
            from aziot.hub import HubClient
            hub = HubClient.from_flash()
            stop = []
            hub.on_desired(lambda patch, version: print("DESIRED", version, sorted(patch.items())))
            hub.on_method("stop", lambda name, payload: stop.append(1))
            hub.on_link = lambda event, detail: print("LINK", event)
            hub.connect()
            print("READY")
            while not stop:
                hub.poll(100)
            hub.disconnect()
            print("DONE", hub.stats["connects"], hub.stats["links_lost"])
        """)
        device.expect("READY")
        proxy.refuse(1.5)
        proxy.drop()  # the hub cannot push the change below: the device is offline
        device.expect("LINK lost")
        hub.update_desired("dev-catchup", {"led": "on"})
        assert device.expect("DESIRED 2", timeout=20) == "DESIRED 2 [('led', 'on')]"
        device.expect("LINK connected")  # (printed after the catch-up, which runs inside connect)
        hub.invoke_method("dev-catchup", "stop", None, timeout=10)
        assert device.expect("DONE") == "DONE 2 1"


# The link goes away unnoticed (the session is closed under the client), so these messages are queued;
# poll() then reconnects and sends them one at a time, each PUBACK read by a later read.
QUEUED_BY_A_BROKEN_LINK = """
import time
from aziot.hub import HubClient
hub = HubClient.from_flash()
hub.connect()
hub._session.close()
for i in range(4):
    hub.send_telemetry(b"x", message_id="m%d" % i)
"""


def test_a_queue_sent_by_infrequent_polls_is_not_dropped_for_a_puback_left_unread(hub, provision_device,
                                                                                   run_device):
    """poll(0) every 1.3 s with timeout 1: each PUBACK waits in the socket longer than the timeout
    before a poll reads it. That is not a late PUBACK: all four arrive once, on one link. (Before the
    fix the second poll dropped the link each time and the first message went out again and again.)"""
    dev = provision_device("dev-slowpoll", hub, timeout=1, reconnect_min_ms=50, reconnect_max_ms=100)
    run = run_device(dev.image_path, QUEUED_BY_A_BROKEN_LINK + """
for k in range(7):
    hub.poll(0)
    time.sleep_ms(1300)
print("LEFT", len(hub.outbox), "LOST", hub.stats["links_lost"], "SENT", hub.stats["sent"])
""", timeout=60)
    assert run.stdout.split() == ["LEFT", "0", "LOST", "0", "SENT", "4"], run.output
    assert [m.system_properties["$.mid"] for m in hub.telemetry("dev-slowpoll")] == ["m0", "m1", "m2", "m3"]


def test_subscribing_while_a_message_is_in_flight_keeps_the_stream_in_step(hub, provision_device, run_device):
    """on_method() and get_twin() subscribe; umqtt.simple's SUBACK wait would leave the in-flight
    message's PUBACK half read (before: ProtocolError 'unexpected MQTT packet type 0')."""
    dev = provision_device("dev-subflight", hub, timeout=2, reconnect_min_ms=50, reconnect_max_ms=100)
    run = run_device(dev.image_path, QUEUED_BY_A_BROKEN_LINK + """
hub.poll(0)
print("IN FLIGHT", hub._session.in_flight is not None)
hub.on_method("hello", lambda name, payload: 200)
hub.poll(0)
twin = hub.get_twin()
end = time.ticks_add(time.ticks_ms(), 5000)
while len(hub.outbox) and time.ticks_diff(end, time.ticks_ms()) > 0:
    hub.poll(50)
print("LEFT", len(hub.outbox), "LOST", hub.stats["links_lost"], "TWIN", sorted(twin))
""", timeout=60)
    assert run.stdout.splitlines() == ["IN FLIGHT True", "LEFT 0 LOST 0 TWIN ['desired', 'reported']"], run.output
    assert [m.system_properties["$.mid"] for m in hub.telemetry("dev-subflight")] == ["m0", "m1", "m2", "m3"]

"""Hub behaviours beyond the happy path: the emulator's rules, and the device meeting them.

Each emulator rule is checked with an independent client (paho-mqtt in
CPython) as well as with the device library in micropython.
"""

import contextlib
import ssl
import threading

from aziot_tools.faults import FaultProxy
from aziot_tools.hub.server import BackgroundHub
from devicecode import eventually, free_port

METHOD_APP = """
import json
from aziot.hub import HubClient
hub = HubClient.from_flash()
stop = []

def blink(name, payload):  # the README's handler: payload is None when the call had none
    args = json.loads(payload) if payload else {}
    return 200, {"blinked": args.get("times", 1), "payload": "none" if payload is None else "bytes"}

hub.on_method("blink", blink)
hub.on_method("text", lambda name, payload: (200, b"plain text, not JSON"))
hub.on_method("stop", lambda name, payload: stop.append(1))
hub.connect()
print("READY")
while not stop:
    hub.poll(100)
hub.disconnect()
print("DONE")
"""


def test_a_method_without_payload_reaches_the_handler_as_none(any_hub, provision_device, live_device):
    hub = any_hub
    dev = provision_device("dev-nopayload", hub)
    device = live_device(dev.image_path, METHOD_APP)
    device.expect("READY")
    result = hub.invoke_method("dev-nopayload", "blink", None, timeout=10)
    assert (result.status, result.payload) == (200, {"blinked": 1, "payload": "none"}), device.output
    result = hub.invoke_method("dev-nopayload", "blink", {"times": 3}, timeout=10)
    assert (result.status, result.payload) == (200, {"blinked": 3, "payload": "bytes"})
    # A response that is not JSON does not reach the caller as if it were.
    result = hub.invoke_method("dev-nopayload", "text", {}, timeout=10)
    assert result.status == 400 and result.payload["message"] == "the device's method response is not valid JSON"
    hub.invoke_method("dev-nopayload", "stop", None, timeout=10)
    device.expect("DONE")


@contextlib.contextmanager
def paho_client(hub, dev, tmp_path):
    """A paho-mqtt (CPython) client logged in as dev over mutual TLS, with its network loop running."""
    import paho.mqtt.client as mqtt

    (tmp_path / "paho.pem").write_bytes(dev.identity.cert_pem)
    (tmp_path / "paho-key.pem").write_bytes(dev.identity.key_pem)
    ctx = ssl.create_default_context(cafile=hub.identity.root_path("rsa"))
    ctx.check_hostname = False  # dials 127.0.0.1; the chain is still verified
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(tmp_path / "paho.pem"), str(tmp_path / "paho-key.pem"))
    client = mqtt.Client(client_id=dev.device_id, clean_session=False)
    client.username_pw_set("%s/%s/?api-version=2021-04-12" % (hub.hub_host, dev.device_id))
    client.tls_set_context(ctx)
    events = {"connected": threading.Event(), "dropped": threading.Event(), "subacks": [], "messages": []}
    client.on_connect = lambda c, u, f, rc: events["connected"].set() if rc == 0 else None
    client.on_disconnect = lambda c, u, rc: events["dropped"].set()
    client.on_subscribe = lambda c, u, mid, granted: events["subacks"].append(granted)
    client.on_message = lambda c, u, msg: events["messages"].append(msg)
    client.connect("127.0.0.1", hub.port, keepalive=60)
    client.loop_start()
    try:
        assert events["connected"].wait(10)
        yield client, events
    finally:
        client.loop_stop()


def test_a_subscription_the_hub_does_not_serve_ends_the_connection(hub, provision_device, tmp_path):
    dev = provision_device("paho-sub", hub)
    with paho_client(hub, dev, tmp_path) as (client, events):
        # The Embedded C SDK's wildcard C2D filter is served: granted, and C2D flows through it.
        client.subscribe("devices/+/messages/devicebound/#", qos=1)
        assert eventually(lambda: events["subacks"]) == [(1,)]
        hub.send_c2d("paho-sub", b"hello", message_id="c2d-w")
        assert eventually(lambda: events["messages"])[0].payload == b"hello"
        # Another device's C2D, or any topic outside the hub's list: no SUBACK 0x80, the link ends.
        client.subscribe("devices/someone-else/messages/devicebound/#", qos=1)
        assert events["dropped"].wait(10)
        assert events["subacks"] == [(1,)]
    record = eventually(lambda: [c for c in hub.connections("paho-sub") if c.result == "closed"])[0]
    assert record.reason == "SUBSCRIBE to 'devices/someone-else/messages/devicebound/#', " \
                            "a topic the hub does not serve"


def test_a_device_to_cloud_message_over_256_kb(hub, provision_device, run_device, tmp_path):
    dev = provision_device("dev-d2c", hub, queue_bytes=300000)
    run = run_device(dev.image_path, """
        from aziot import clock, protocol
        from aziot.hub import HubClient
        hub = HubClient.from_flash()
        hub.connect()
        # (the creation time has a fixed length, so the size does not depend on the second it is sent)
        topic = protocol.telemetry_topic("dev-d2c", "", None, (("$.mid", "big"),
                                                               ("$.ctime", clock.format_utc(clock.unix_time()))))
        try:
            hub.send_telemetry(b"x" * (protocol.MAX_D2C_MESSAGE - len(topic) + 1), message_id="big",
                               content_type=None, content_encoding=None)
        except ValueError as e:
            print("REFUSED", e)
        hub.send_telemetry(b"x" * (protocol.MAX_D2C_MESSAGE - len(topic)), message_id="big",
                           content_type=None, content_encoding=None)
        print("SENT", hub.connected)
        hub.disconnect()
    """, heap="2M")  # the 256 KB payload itself is larger than a board's heap
    assert run.returncode == 0, run.output
    assert run.stdout.splitlines() == [
        "REFUSED device-to-cloud message of 262145 bytes with its properties; IoT Hub accepts at most 262144 "
        "and closes the connection of a device that sends more", "SENT True"], run.output
    assert [len(m.payload) + len(m.topic) for m in hub.telemetry("dev-d2c")] == [262144]
    # The hub's side of the rule, with a client that does not check: the connection ends, nothing is stored.
    other = provision_device("paho-big", hub)
    with paho_client(hub, other, tmp_path) as (client, events):
        client.publish("devices/paho-big/messages/events/", b"y" * (256 * 1024), qos=1)
        assert events["dropped"].wait(10)
    assert hub.telemetry("paho-big") == []


C2D_LATE_APP = """
import sys, time
from aziot.hub import HubClient
hub = HubClient.from_flash()
mode = sys.argv[1]

def show(msg):
    print("C2D", msg.message_id, bytes(msg.payload))

def poll_for(ms):
    end = time.ticks_add(time.ticks_ms(), ms)
    while time.ticks_diff(end, time.ticks_ms()) > 0:
        hub.poll(50)

if mode == "subscribe":
    hub.on_c2d(show)
hub.connect()
poll_for(1000)  # queued C2D arrives right after CONNACK, handler or not
if mode == "late":
    hub.on_c2d(show)
    poll_for(500)
hub.disconnect()
print("DONE")
"""


def test_c2d_that_arrives_before_a_handler_is_kept_for_it(hub, provision_device, run_device):
    dev = provision_device("dev-late", hub)
    assert run_device(dev.image_path, C2D_LATE_APP, "subscribe").stdout == "DONE\n"  # clean session 0
    hub.send_c2d("dev-late", b"while you were away", message_id="c2d-1")
    never = run_device(dev.image_path, C2D_LATE_APP, "never")
    assert never.stdout == "DONE\n", never.output
    assert [m.message_id for m in hub.c2d_pending("dev-late")] == ["c2d-1"]  # delivered, not acknowledged
    late = run_device(dev.image_path, C2D_LATE_APP, "late")
    assert late.stdout.splitlines() == ["C2D c2d-1 b'while you were away'", "DONE"], late.output
    assert hub.c2d_pending("dev-late") == []
    assert [m.message_id for m in hub.c2d_completed("dev-late")] == ["c2d-1"]


TWIN_APP = """
import sys
from aziot.hub import HubClient
hub = HubClient.from_flash()
desired = []

def on_desired(patch, version):
    print("DESIRED", version, sorted(patch.items()))
    desired.append(version)

hub.on_desired(on_desired)
hub.on_link = lambda event, detail: print("LINK", event, type(detail).__name__, detail) if event == "twin" else None
if sys.argv[1] == "offline":
    try:
        hub.connect()
    except Exception as e:
        print("OFFLINE", type(e).__name__)
    for i in range(3):
        hub.send_telemetry(b"%d" % i, message_id="q%d" % i)
    print("QUEUED", len(hub.outbox))
else:
    hub.connect()
    print("CONNECTED", hub.connected, "QUEUE", len(hub.outbox))
    try:
        hub.report({"a": 1})
    except Exception as e:
        print("REPORT", type(e).__name__, e)
    import time
    end = time.ticks_add(time.ticks_ms(), 6000)
    while time.ticks_diff(end, time.ticks_ms()) > 0 and not desired:
        hub.poll(100)
    hub.disconnect()
    print("DONE", hub.stats["connects"], hub.stats["links_lost"])
"""


def test_a_throttled_twin_at_connect_does_not_cost_the_connection(hub_state, provision_device, run_device):
    port = free_port()
    dev = provision_device("dev-429", address="127.0.0.1", port=port, queue_file="/azure-iot/queue.bin",
                           reconnect_min_ms=200, reconnect_max_ms=400, throttle_ms=500)
    offline = run_device(dev.image_path, TWIN_APP, "offline")  # nothing listens yet: three queued on flash
    assert offline.stdout.splitlines() == ["OFFLINE ConnectionLost", "QUEUED 3"], offline.output
    with BackgroundHub(hub_state, port=port) as hub:
        hub.update_desired("dev-429", {"led": "on"})
        hub.throttle_twin(1.0)
        run = run_device(dev.image_path, TWIN_APP, "online")
        lines = run.stdout.splitlines()
        # connect() returned with the queue sent; the twin's 429 went to on_link, then poll() fetched it.
        assert lines[:3] == ["LINK twin RequestFailed hub answered 429 to the twin GET",
                             "CONNECTED True QUEUE 0",
                             "REPORT RequestFailed hub answered 429 to the reported-properties PATCH"], run.output
        # Retried from poll() with backoff (a retry inside the throttled second gets 429 again).
        assert [l for l in lines[3:] if not l.startswith("LINK twin")] == ["DESIRED 2 [('led', 'on')]", "DONE 1 0"]
        assert [m.system_properties["$.mid"] for m in hub.telemetry("dev-429")] == ["q0", "q1", "q2"]


LARGE_APP = """
from aziot.hub import HubClient
hub = HubClient.from_flash()
got = []
hub.on_desired(lambda patch, version: print("DESIRED", version, len(patch["blob"])))
hub.on_c2d(lambda msg: got.append(msg))
hub.on_link = lambda event, detail: print("LINK", event, type(detail).__name__, detail) if event == "twin" else None
hub.connect()
print("READY", hub.tls_profile, hub.tls_max_fragment_length)
while not got:
    hub.poll(200)
print("C2D", got[0].message_id, len(got[0].payload), bytes(got[0].payload[:4]))
hub.disconnect()
"""


def test_large_messages_in_full_size_records(any_hub, provision_device, live_device):
    """A 30 KB desired twin and a 60 KB C2D message (hub limits: 32 KB, 64 KB). A standard hub sends
    them in records of up to 16 KB, and so does a preview hub that was not asked for MFL (the stock
    port); with the aziot firmware a preview hub agrees to MFL and cuts them to it."""
    hub = any_hub
    with FaultProxy(hub.port) as proxy:
        dev = provision_device("dev-large", address="127.0.0.1", port=proxy.port, max_message=65536)
        hub.update_desired("dev-large", {"blob": "d" * 30000})
        device = live_device(dev.image_path, LARGE_APP)
        assert device.expect("DESIRED") == "DESIRED 2 30000"
        mfl = int(device.expect("READY").split()[2])
        hub.send_c2d("dev-large", b"big!" + b"c" * (60 * 1024 - 4), message_id="c2d-60k")
        assert device.expect("C2D") == "C2D c2d-60k 61440 b'big!'"
        assert device.wait() == 0, device.output
    largest = max(length for from_hub, kind, length in proxy.records if from_hub and kind == 23)
    if mfl:
        assert hub.tls_mode == "preview" and largest <= mfl + 80, (mfl, largest)
    else:  # full 16 KB records (plus the cipher's overhead) reached the device
        assert largest > 16384, largest


def test_a_twin_larger_than_max_message_does_not_cost_the_connection(hub, provision_device, run_device):
    dev = provision_device("dev-bigtwin", hub, max_message=1024)
    hub.update_desired("dev-bigtwin", {"blob": "d" * 2000})
    run = run_device(dev.image_path, """
        from aziot.hub import HubClient
        hub = HubClient.from_flash()
        hub.on_desired(lambda patch, version: print("DESIRED", version))
        hub.on_link = lambda event, detail: print("LINK", event, type(detail).__name__, detail)
        hub.connect()
        hub.send_telemetry(b"still here")
        print("SENT", hub.connected, type(hub.last_error).__name__)
        hub.disconnect()
    """)
    assert run.stdout.splitlines() == [
        "LINK twin MessageTooLarge twin GET answer of 2069 bytes exceeds max_message 1024",
        "LINK connected bool False", "SENT True MessageTooLarge"], run.output
    assert len(hub.telemetry("dev-bigtwin")) == 1


def test_more_c2d_than_can_be_held_before_on_c2d_all_arrive(hub, provision_device, run_device):
    """8 are held in RAM; the rest stay unacknowledged with the hub, which sends them again only on a
    new connection: on_c2d() reconnects for them."""
    dev = provision_device("dev-many", hub)
    assert run_device(dev.image_path, C2D_LATE_APP, "subscribe").stdout == "DONE\n"
    for i in range(12):
        hub.send_c2d("dev-many", b"m%d" % i, message_id="c%02d" % i)
    late = run_device(dev.image_path, C2D_LATE_APP, "late")
    got = sorted(l.split()[1] for l in late.stdout.splitlines() if l.startswith("C2D"))
    assert got == ["c%02d" % i for i in range(12)], late.output
    assert hub.c2d_pending("dev-many") == []


def test_a_desired_handler_that_raises_at_connect_fails_it_and_sees_the_change_again(hub, provision_device,
                                                                                      run_device):
    dev = provision_device("dev-dh", hub)
    hub.update_desired("dev-dh", {"led": "on"})
    run = run_device(dev.image_path, """
        from aziot.hub import HubClient
        hub = HubClient.from_flash()
        mode = ["raise"]

        def on_desired(patch, version):
            if mode[0] == "raise":
                raise KeyError("led")
            print("REPORTED", hub.report({"led": patch["led"]}))

        hub.on_desired(on_desired)
        try:
            hub.connect()
        except KeyError as e:
            print("CONNECT", type(e).__name__, e, "CONNECTED?", hub.connected)
        mode[0] = "report"
        hub.connect()  # the change the handler failed on comes to it again
        print("DONE", hub.connected)
        hub.disconnect()
    """)
    assert run.stdout.splitlines() == ["CONNECT KeyError led CONNECTED? False", "REPORTED 2", "DONE True"], \
        run.output
    assert eventually(lambda: [c.result for c in hub.connections("dev-dh")] == ["closed", "closed"])


def test_a_flood_of_c2d_while_connecting_stays_within_the_inbox_budget_and_all_arrive(hub, provision_device,
                                                                                     run_device):
    """40 x 8 KB waiting at connect (320 KB, more than the 256 KB heap): the inbox holds what fits, the
    rest stay unacknowledged with the hub and come on renewed links; nothing raises MemoryError."""
    dev = provision_device("dev-flood", hub, reconnect_min_ms=50, reconnect_max_ms=200)
    assert run_device(dev.image_path, C2D_LATE_APP, "subscribe").stdout == "DONE\n"
    for i in range(40):
        hub.send_c2d("dev-flood", b"%02d" % i + b"f" * 8190, message_id="f%02d" % i)
    run = run_device(dev.image_path, """
        import time
        from aziot.hub import HubClient
        hub = HubClient.from_flash()
        got = set()
        hub.on_c2d(lambda msg: got.add(msg.message_id))
        hub.connect()
        end = time.ticks_add(time.ticks_ms(), 30000)
        while len(got) < 40 and time.ticks_diff(end, time.ticks_ms()) > 0:
            hub.poll(100)
        hub.disconnect()
        print("GOT", len(got), "CONNECTS", hub.stats["connects"])
    """, heap="256K", timeout=60)
    assert run.stdout.startswith("GOT 40 "), run.output
    assert hub.c2d_pending("dev-flood") == []


def test_a_burst_of_large_c2d_while_polling_needs_no_renewed_link(hub, provision_device, live_device):
    """poll() leaves what does not fit the inbox in the socket for its next call, so nothing is deferred."""
    dev = provision_device("dev-burst", hub)
    device = live_device(dev.image_path, """
        from aziot.hub import HubClient
        hub = HubClient.from_flash()
        got = []
        hub.on_c2d(lambda msg: got.append(msg.message_id))
        hub.connect()
        print("READY")
        while len(got) < 6:
            hub.poll(100)
        print("GOT", len(got), "CONNECTS", hub.stats["connects"])
        hub.disconnect()
    """)
    device.expect("READY")
    for i in range(6):
        hub.send_c2d("dev-burst", b"b" * 12000, message_id="b%d" % i)
    assert device.expect("GOT", timeout=30) == "GOT 6 CONNECTS 1"

"""Soak: QoS 1 telemetry through a proxy that breaks the link, and hub restarts.

Every message id must reach the hub at least once (duplicates are allowed
and counted: at-least-once), none may be dropped, and the device's
reconnect attempts must follow its backoff schedule: never earlier than
scheduled, never a wait above the schedule's ceiling.

Size: AZIOT_SOAK_MESSAGES (default 1000) and AZIOT_SOAK_FAULTS (default 20);
for a longer run, e.g. AZIOT_SOAK_MESSAGES=20000 AZIOT_SOAK_FAULTS=300
make test PYTEST_ARGS="-k soak -s".
"""

import json
import os
import random
import time

import pytest

from aziot_tools.faults import FaultProxy
from aziot_tools.hub.server import BackgroundHub
from devicecode import free_port

MESSAGES = int(os.environ.get("AZIOT_SOAK_MESSAGES", "1000"))
FAULTS = int(os.environ.get("AZIOT_SOAK_FAULTS", "20"))

SOAK_APP = """
import sys, time
from aziot.hub import HubClient
n, pace_ms = int(sys.argv[1]), int(sys.argv[2])
hub = HubClient.from_flash()

def on_link(event, detail):
    if event == "retry":
        detail = "%d %d" % detail
    elif event == "lost":
        detail = "%s: %s" % (type(detail).__name__, detail)
    print("LINK", time.ticks_ms(), event, detail)

hub.on_link = on_link
hub.connect()
for i in range(n):
    hub.send_telemetry(b'{"i": %d}' % i, message_id="m%d" % i)
    hub.poll(0)
    if i % 50 == 0:
        print("SENT", i)
    time.sleep_ms(pace_ms)  # paced, so that faults land all along the run
deadline = time.ticks_add(time.ticks_ms(), 60000)
while (len(hub.outbox) or not hub.connected) and time.ticks_diff(deadline, time.ticks_ms()) > 0:
    hub.poll(50)
hub.disconnect()
print("DONE queued", len(hub.outbox), "dropped", hub.outbox.dropped, "stats", hub.stats)
"""


def read_mids(state):
    path = os.path.join(state, "telemetry.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line)["system_properties"]["$.mid"] for line in f if line.endswith("\n")]


def test_soak_qos1_through_faults_and_hub_restarts(hub_state, provision_device, live_device, tmp_path):
    hub_port = free_port()
    rng = random.Random(int(os.environ.get("AZIOT_SOAK_SEED", "7")))
    kinds = ["drop", "reset", "stall", "truncate", "slow", "refuse", "restart"]
    plan = [kinds[i % len(kinds)] for i in range(FAULTS)]
    rng.shuffle(plan)
    thresholds = sorted(rng.sample(range(10, MESSAGES - 10), FAULTS))
    hub_ctx = BackgroundHub(hub_state, port=hub_port)
    hub = hub_ctx.__enter__()
    try:
        with FaultProxy(hub_port) as proxy:
            dev = provision_device("soak-dev", address="127.0.0.1", port=proxy.port,
                                   keepalive=4, timeout=2, reconnect_min_ms=100, reconnect_max_ms=1600,
                                   throttle_ms=500, queue_size=2000, queue_bytes=128 * 1024)
            # About 1.5 s of sending per fault: time for each fault to bite and the link to recover.
            pace_ms = max(3, FAULTS * 1500 // MESSAGES)
            device = live_device(dev.image_path, SOAK_APP, str(MESSAGES), str(pace_ms), heap="4M")
            injected = []
            deadline = time.monotonic() + 60 + MESSAGES * 0.05 + FAULTS * 8
            while thresholds and time.monotonic() < deadline and device.running:
                if len(read_mids(hub_state)) < thresholds[0]:
                    time.sleep(0.01)
                    continue
                kind = plan[len(injected)]
                if kind == "restart":
                    hub_ctx.__exit__(None, None, None)
                    time.sleep(0.5)
                    hub_ctx = BackgroundHub(hub_state, port=hub_port)
                    hub = hub_ctx.__enter__()
                elif kind in ("stall", "slow", "refuse"):
                    {"stall": lambda: proxy.stall(3), "slow": lambda: proxy.slow(1, 2000),
                     "refuse": lambda: (proxy.refuse(1.5), proxy.drop())}[kind]()
                else:
                    getattr(proxy, kind)()
                injected.append(kind)
                thresholds.pop(0)
                # One fault at a time: wait until the hub has caught up with what the device had sent,
                # so that faults land on a link carrying fresh messages, not only on the backlog.
                time.sleep(0.1)  # let the fault bite before looking for recovery
                seen = len(read_mids(hub_state))
                sent = max([int(l.split()[1]) for l in list(device.lines) if l.startswith("SENT ")] or [0])
                while ((len(read_mids(hub_state)) <= seen + 5 or len(set(read_mids(hub_state))) <= sent)
                       and time.monotonic() < deadline and device.running):
                    time.sleep(0.02)
            done = device.expect("DONE", timeout=max(deadline - time.monotonic(), 30))
            accepts = list(proxy.accepts)
            closes = list(proxy.closes)
    finally:
        hub_ctx.__exit__(None, None, None)

    mids = read_mids(hub_state)
    missing = set("m%d" % i for i in range(MESSAGES)) - set(mids)
    duplicates = len(mids) - len(set(mids))
    assert len(injected) >= FAULTS, "%d faults injected before the device finished: %s\nproxy closes: %s" % (
        len(injected), injected, closes[-10:])
    assert not missing, "missing %d ids, e.g. %s" % (len(missing), sorted(missing)[:5])
    assert done.startswith("DONE queued 0 dropped 0 "), done

    # The reconnect schedule: each attempt comes no earlier than its retry said, and no
    # retry waits longer than its ceiling (which never exceeds cap + throttle floor).
    events = [l.split(" ", 3) for l in device.lines if l.startswith("LINK ")]
    events = [e + [""] * (4 - len(e)) for e in events]
    pending, retries, outages, lost_at = None, [], [], None
    for _, ticks, event, detail in events:
        ticks = int(ticks)
        if event == "retry":
            delay, ceiling = map(int, detail.split())
            assert 0 <= delay <= ceiling <= 1600 + 500, detail
            pending = (ticks, delay)
            retries.append(delay)
        elif event == "attempt":
            assert pending is not None and ticks - pending[0] >= pending[1] - 1, (pending, ticks)
            pending = None
        elif event == "lost":
            lost_at = lost_at if lost_at is not None else ticks
        elif event == "connected" and lost_at is not None:
            outages.append(ticks - lost_at)
            lost_at = None
    attempts = sum(1 for e in events if e[2] == "attempt")
    # Every connection the proxy saw was a scheduled attempt; the first connect() alone made two
    # (the ECDSA-only offer the standard hub refuses, then RSA): "auto" remembers across reconnects.
    assert len(accepts) <= attempts + 2
    report = ("soak: %d messages, %d faults (%s), %d stored, %d duplicates, %d links lost, %d reconnect attempts, "
              "longest outage %d ms" % (MESSAGES, len(injected), ",".join(sorted(set(injected))), len(mids),
                                        duplicates, sum(1 for e in events if e[2] == "lost"), attempts,
                                        max(outages or [0])))
    print(report)
    with open(os.path.join(str(tmp_path), "soak-report.txt"), "w") as f:
        f.write(report + "\n")

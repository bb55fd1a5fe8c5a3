"""Many QoS 1 publishes on one connection: every one acknowledged, packet ids wrapping, a flat heap.

Size: AZIOT_LONG_PUBLISHES (default 3000). The long setting, past the
65,535 packet ids of one MQTT connection:
AZIOT_LONG_PUBLISHES=70000 make test PYTEST_ARGS="-k long_run -s --timeout 1800".
"""

import os

PUBLISHES = int(os.environ.get("AZIOT_LONG_PUBLISHES", "3000"))

LONG_APP = """
import gc, sys, time
from aziot.hub import HubClient
n = int(sys.argv[1])
hub = HubClient.from_flash()
hub.connect()
step = max(n // 10, 1)
t0 = time.ticks_ms()
for i in range(n):
    hub.send_telemetry(b"%d" % i, message_id="L%d" % i)
    if i % step == step - 1:
        gc.collect()
        print("HEAP", i + 1, gc.mem_free(), hub._session._client.pid)
ms = time.ticks_diff(time.ticks_ms(), t0)
print("DONE", n, hub.stats["sent"], hub.stats["connects"], hub.stats["links_lost"], len(hub.outbox), ms)
hub.disconnect()
"""


def test_long_run_on_one_connection(hub, provision_device, run_device):
    dev = provision_device("dev-long", hub)
    run = run_device(dev.image_path, LONG_APP, str(PUBLISHES), timeout=60 + PUBLISHES // 100)
    lines = run.stdout.splitlines()
    done = lines[-1].split()
    assert done[:6] == ["DONE", str(PUBLISHES), str(PUBLISHES), "1", "0", "0"], run.output
    print("%d publishes on one connection in %s ms" % (PUBLISHES, done[6]))
    heap = [tuple(map(int, l.split()[1:])) for l in lines if l.startswith("HEAP")]
    print("heap free after gc (publishes, bytes, next packet id):", heap)
    # Flat: after the first tenth (imports and the connection settled), free heap moves by less than 1 KB.
    frees = [free for _, free, _ in heap[1:]]
    assert max(frees) - min(frees) < 1024, heap
    # Packet ids stayed within 1..65535 (a QoS 1 publish takes one; the twin/subscribe ones too).
    assert all(1 <= pid <= 65535 for _, _, pid in heap), heap
    mids = [m.system_properties["$.mid"] for m in hub.telemetry("dev-long")]
    assert len(mids) == PUBLISHES and mids[0] == "L0" and mids[-1] == "L%d" % (PUBLISHES - 1)
    assert [c.result for c in hub.connections("dev-long")] == ["closed"]

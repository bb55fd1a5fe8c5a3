"""`make bench`: handshake cost and telemetry throughput, ECC vs RSA profile.

Device-side figures come from the device itself (time.ticks_us, gc), run
under the MicroPython Unix port; byte counts come from the emulator, which
sees every TLS byte. Numbers are for this host's CPU: relative ECC/RSA
cost and byte counts transfer to boards, absolute times do not.
"""

import os
import statistics
import tempfile

from . import device, provision
from .hub.server import BackgroundHub

DEVICE_APP = """
import gc, sys, time
from aziot.hub import HubClient
runs, messages, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
hub = HubClient.from_flash()
payload = b"x" * size
for i in range(runs):
    gc.collect()
    before = gc.mem_alloc()
    t0 = time.ticks_us()
    hub.connect()
    t1 = time.ticks_us()
    print("CONNECT_US", time.ticks_diff(t1, t0), "HEAP", gc.mem_alloc() - before)
    if i == runs - 1:
        t0 = time.ticks_us()
        for n in range(messages):
            hub.send_telemetry(payload)
        print("SEND_US", time.ticks_diff(time.ticks_us(), t0))
    hub.disconnect()
"""


def measure(profile: str, runs: int, messages: int, size: int) -> dict:
    state = tempfile.mkdtemp(prefix="aziot-bench-")
    app = os.path.join(state, "bench_app.py")
    with open(app, "w") as f:
        f.write(DEVICE_APP)
    with BackgroundHub(state, port=0) as hub:
        dev = provision.provision(state, "bench-" + profile, os.path.join(state, "dev.img"),
                                  address="127.0.0.1", port=hub.port, tls_profile=profile)
        result = device.run(dev.image_path, app, str(runs), str(messages), str(size), timeout=600)
        if result.returncode:
            raise SystemExit("bench device failed:\n" + result.output)
        conns = hub.connections(dev.device_id)
    connect_us = [int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("CONNECT_US")]
    heap = [int(line.split()[3]) for line in result.stdout.splitlines() if line.startswith("CONNECT_US")]
    send_us = [int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("SEND_US")][0]
    return {
        "profile": profile,
        "cipher": conns[0].cipher,
        "connect_ms_median": statistics.median(connect_us) / 1000,
        "hub_handshake_ms_median": statistics.median(c.handshake_ms for c in conns),
        "bytes_device_to_hub": conns[0].handshake_bytes_in,
        "bytes_hub_to_device": conns[0].handshake_bytes_out,
        "gc_heap_per_connection": max(heap),
        "msgs_per_s": messages / (send_us / 1e6),
    }


def main(args) -> int:
    device.prepare_unix_lib()
    rows = [measure(p, args.runs, args.messages, args.size) for p in ("ecc", "rsa")]
    print("aziot bench: %d connections per profile, %d QoS 1 messages of %d bytes, MicroPython Unix port"
          % (args.runs, args.messages, args.size))
    header = ("profile", "cipher", "connect ms", "hub hs ms", "TLS hs bytes dev->hub", "hub->dev",
              "gc heap B", "QoS1 msg/s")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| %s | %s | %.1f | %.1f | %d | %d | %d | %.0f |" % (
            r["profile"], r["cipher"], r["connect_ms_median"], r["hub_handshake_ms_median"],
            r["bytes_device_to_hub"], r["bytes_hub_to_device"], r["gc_heap_per_connection"], r["msgs_per_s"]))
    return 0

"""`make bench`: handshake cost and telemetry throughput, ECC profile on a
preview-mode hub vs RSA on a standard hub; round trips of direct methods and
twin reports; with the unix-mfl builds, mbedTLS heap per connection on both
kinds of hub.

Device-side figures come from the device itself (time.ticks_us, gc), run
under the MicroPython Unix port; byte counts come from the emulator, which
sees every TLS byte. Numbers are for this host's CPU: relative ECC/RSA
cost and byte counts transfer to boards, absolute times do not.
"""

import os
import statistics
import tempfile
import time

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


def measure(mode: str, profile: str, runs: int, messages: int, size: int) -> dict:
    state = tempfile.mkdtemp(prefix="aziot-bench-")
    app = os.path.join(state, "bench_app.py")
    with open(app, "w") as f:
        f.write(DEVICE_APP)
    with BackgroundHub(state, port=0, tls_mode=mode) as hub:
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
        "hub": mode,
        "profile": profile,
        "cipher": conns[0].cipher,
        "connect_ms_median": statistics.median(connect_us) / 1000,
        "hub_handshake_ms_median": statistics.median(c.handshake_ms for c in conns),
        "bytes_device_to_hub": conns[0].handshake_bytes_in,
        "bytes_hub_to_device": conns[0].handshake_bytes_out,
        "gc_heap_per_connection": max(heap),
        "msgs_per_s": messages / (send_us / 1e6),
    }


SURFACE_APP = """
import gc, json, time
from aziot.hub import HubClient
hub = HubClient.from_flash()
state = {"run": True}

def size(name, payload):
    return 200, {"bytes": len(payload)}

def held(name, payload):  # live heap while a handler holds the payload, garbage collected away
    gc.collect()
    return 200, {"held": gc.mem_alloc() - state["base"], "bytes": len(payload)}

def report_bench(name, payload):
    n = json.loads(payload)
    times = []
    for i in range(n):
        t0 = time.ticks_us()
        hub.report({"seq": i})
        times.append(time.ticks_diff(time.ticks_us(), t0))
    times.sort()
    return 200, {"median_us": times[n // 2]}

def stop(name, payload):
    state["run"] = False
    return 200, None

hub.on_method("size", size)
hub.on_method("held", held)
hub.on_method("report_bench", report_bench)
hub.on_method("stop", stop)
hub.connect()
gc.collect()
state["base"] = gc.mem_alloc()
print("READY")
while state["run"]:
    hub.poll(100)
hub.disconnect()
"""


def measure_surface(calls: int) -> dict:
    """Direct-method round trips (service -> device -> service) and twin reports, standard hub."""
    state = tempfile.mkdtemp(prefix="aziot-bench-")
    app = os.path.join(state, "surface_app.py")
    with open(app, "w") as f:
        f.write(SURFACE_APP)
    out = {}
    with BackgroundHub(state, port=0) as hub:
        dev = provision.provision(state, "bench-surface", os.path.join(state, "dev.img"), address="127.0.0.1",
                                  port=hub.port)
        with device.LiveDevice(dev.image_path, app) as live:
            live.expect("READY")
            for label, payload in (("method_64B_ms", "x" * 62), ("method_8KB_ms", "x" * 8190)):
                times = []
                for _ in range(calls):
                    t0 = time.perf_counter()
                    result = hub.invoke_method(dev.device_id, "size", payload, timeout=30)
                    times.append((time.perf_counter() - t0) * 1000)
                    if result.status != 200:
                        raise SystemExit("bench method failed: %s\n%s" % (result, live.output))
                out[label] = statistics.median(times)
            result = hub.invoke_method(dev.device_id, "report_bench", calls, timeout=60)
            out["report_ms"] = result.payload["median_us"] / 1000
            out["heap_held_8KB"] = hub.invoke_method(dev.device_id, "held", "x" * 8190, timeout=10).payload["held"]
            hub.invoke_method(dev.device_id, "stop", None, timeout=10)
            live.wait(30)
    return out


TLS_MEMORY_APP = """
import gc, sys, aziot_tls
from aziot.hub import HubClient
from aziot.errors import TlsError
hub = HubClient.from_flash()
done = []
hub.on_method("size", lambda name, payload: (200, {"bytes": len(payload)}))
hub.on_method("stop", lambda name, payload: done.append(1))
aziot_tls.reset_peak()
try:
    hub.connect()
except TlsError as e:
    print("REFUSED", e)
    raise SystemExit
gc.collect()  # what the connection holds, not a refused offer's context waiting for its finaliser
after_connect = aziot_tls.heap()[0]
hub.send_telemetry(b"t" * 8192)
print("READY")
while not done:
    hub.poll(100)
print("TLSHEAP", hub.tls_max_fragment_length, after_connect, aziot_tls.heap()[1])
hub.disconnect()
"""


def measure_tls_memory() -> list:
    """mbedTLS heap per connection on the unix-mfl builds, on both kinds of hub: after connecting, and at
    peak (an 8 KB method request in, 8 KB of telemetry out). The profile is auto's: RSA on a standard
    hub (after its refused ECDSA offer), ECC on a preview hub."""
    from . import firmware

    rows = []
    state = tempfile.mkdtemp(prefix="aziot-bench-")
    app = os.path.join(state, "tls_memory_app.py")
    with open(app, "w") as f:
        f.write(TLS_MEMORY_APP)
    for mode in ("standard", "preview"):
        with BackgroundHub(state, port=0, tls_mode=mode) as hub:
            for variant in firmware.unix_variants():
                binary = firmware.unix_mfl_binary(variant["name"])
                if binary is None:
                    continue
                for mfl in sorted({0, variant["mfl"]}):
                    device_id = "mem-%s-%s-%d" % (mode, variant["name"], mfl)
                    dev = provision.provision(state, device_id, os.path.join(state, device_id + ".img"),
                                              address="127.0.0.1", port=hub.port, max_fragment_length=mfl)
                    row = [mode, variant["name"], variant["in"], variant["out"], mfl, "-", "handshake fails", "-"]
                    with device.LiveDevice(dev.image_path, app, binary=binary) as live:
                        try:
                            line = live.expect(("READY", "REFUSED"), timeout=30)
                        except AssertionError:
                            rows.append(row)  # the hub's first flight is larger than IN
                            continue
                        if line.startswith("REFUSED"):
                            row[6] = "refused: no MFL agreed"
                            rows.append(row)
                            continue
                        if hub.invoke_method(device_id, "size", "m" * 8190, timeout=15).status != 200:
                            row[6] = "8 KB record fails"
                            rows.append(row)
                            continue
                        hub.invoke_method(device_id, "stop", None, timeout=15)
                        line = live.expect("TLSHEAP", timeout=15).split()
                    rows.append(row[:5] + [int(line[1]) or "none", int(line[2]), int(line[3])])
    return rows


HEAP_APP = """
import gc, sys
from aziot.hub import HubClient
hub = HubClient.from_flash()
done = []
hub.on_method("size", lambda name, payload: (200, {"bytes": len(payload)}))
hub.on_method("stop", lambda name, payload: done.append(1))
hub.on_desired(lambda patch, version: None)
hub.connect()
gc.collect()
print("READY", gc.mem_free())
for i in range(3):
    hub.send_telemetry(b'{"t": 21.5}', {"seq": i})
hub.report({"fw": "1.0"})
while not done:
    hub.poll(100)
hub.disconnect()
print("DONE")
"""


def _heap_ok(hub, state, binary, lib_dir, heap_k) -> tuple:
    device_id = "heap-%dk" % heap_k
    dev = provision.provision(state, device_id, os.path.join(state, device_id + ".img"),
                              address="127.0.0.1", port=hub.port)
    app = os.path.join(state, "heap_app.py")
    with open(app, "w") as f:
        f.write(HEAP_APP)
    with device.LiveDevice(dev.image_path, app, heap="%dK" % heap_k, lib_dir=lib_dir, binary=binary) as live:
        try:
            free = int(live.expect("READY", timeout=30).split()[1])
            if hub.invoke_method(device_id, "size", "m" * 4000, timeout=15).status != 200:
                return False, None
            hub.invoke_method(device_id, "stop", None, timeout=15)
            live.expect("DONE", timeout=15)
            return True, free
        except AssertionError:
            return False, None


def measure_heap_floor() -> list:
    """The smallest MicroPython heap (4 KB steps) in which a device connects (auto profile, standard
    hub), sends telemetry, reports, and answers a 4 KB method, on the board-faithful builds:
    library from .py, from .mpy, and frozen. Returns rows (build, form, smallest heap KB, the board's heap
    KB, gc.mem_free() after connecting in the board's heap)."""
    from . import firmware, install

    forms = [("py", device.prepare_unix_lib()), ("mpy", install.mpy_lib_dir())]
    empty = tempfile.mkdtemp(prefix="aziot-nolib-")
    rows = []
    state = tempfile.mkdtemp(prefix="aziot-bench-")
    with BackgroundHub(state, port=0) as hub:
        for variant in firmware.unix_variants():
            binary = firmware.unix_mfl_binary(variant["name"])
            if variant.get("bits") != 32 or binary is None:
                continue
            for form, lib_dir in ([("frozen", empty)] if variant.get("frozen") else forms):
                lo, hi = 16, 512  # KB: lo fails (or is untried), hi works
                ok, free = _heap_ok(hub, state, binary, lib_dir, hi)
                if not ok:
                    rows.append((variant["name"], form, None, None, None))
                    continue
                while hi - lo > 4:
                    mid = (lo + hi) // 2 // 4 * 4
                    ok, free = _heap_ok(hub, state, binary, lib_dir, mid)
                    if ok:
                        hi = mid
                    else:
                        lo = mid
                board_k = int(variant["heap"].rstrip("K"))
                rows.append((variant["name"], form, hi, board_k, _heap_ok(hub, state, binary, lib_dir, board_k)[1]))
    return rows


def print_connect_cost() -> list:
    """Instructions per connect (callgrind) for the stock port and each unix-mfl build present."""
    from . import cost, firmware

    if not cost.available():
        print("instructions per connect: skipped, no valgrind (make setup installs it)")
        return []
    builds = [("stock Unix port (PyPI, 64-bit)", None, None)]
    for name in ("micropython", "micropython-pico", "micropython-esp32"):
        binary = firmware.unix_mfl_binary(name)
        variant = next(v for v in firmware.unix_variants() if v["name"] == name)
        if binary:
            builds.append((name, binary, variant.get("heap")))
    rows = cost.compare(builds)
    print()
    print("instructions per connect (callgrind; TCP + TLS + CONNECT/CONNACK, .mpy library, the import-only "
          "run subtracted): the first connect ever; a reconnect (a second connect in the same boot); the first "
          "connect after a reset, with the chain's verified signatures kept on flash (tls_verified_file):")
    print("| build | ecc (preview hub) M | rsa (standard hub) M | ecc/rsa | ecc reconnect M | rsa reconnect M "
          "| reconnect ecc/rsa | ecc after reset M | rsa after reset M | after reset ecc/rsa "
          "| mbedTLS peak ecc / rsa B |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, _, _ in builds:
        ecc, rsa = (next(r for r in rows if r["build"] == name and r["profile"] == p) for p in ("ecc", "rsa"))
        print("| %s | %.1f | %.1f | %.2f | %.1f | %.1f | %.2f | %.1f | %.1f | %.2f | %s / %s |" % (
            name, ecc["connect"] / 1e6, rsa["connect"] / 1e6, ecc["connect"] / rsa["connect"],
            ecc["reconnect"] / 1e6, rsa["reconnect"] / 1e6, ecc["reconnect"] / rsa["reconnect"],
            ecc["after_reset"] / 1e6, rsa["after_reset"] / 1e6, ecc["after_reset"] / rsa["after_reset"],
            ecc["mbedtls_peak"] or "-", rsa["mbedtls_peak"] or "-"))
    print()
    return rows


def library_sizes() -> list:
    """Bytes of each library module as .py source and as .mpy (what `aziot install` copies)."""
    from . import install

    src = device.prepare_unix_lib()
    out = tempfile.mkdtemp(prefix="aziot-mpy-")
    install.compile_library(out)
    rows = []
    for package in ("aziot", "umqtt"):
        for name in sorted(os.listdir(os.path.join(src, package))):
            if name.endswith(".py"):
                rows.append({"module": "%s/%s" % (package, name[:-3]),
                             "py": os.path.getsize(os.path.join(src, package, name)),
                             "mpy": os.path.getsize(os.path.join(out, package, name[:-3] + ".mpy"))})
    return rows


def measure_handshake_bytes() -> list:
    """Handshake bytes each way through a loopback proxy (wire.py): each profile on the hub it is for,
    auto on a standard hub, and each MFL on the Pico W-like build when it is present."""
    from . import firmware, wire

    pico = firmware.unix_mfl_binary("micropython-pico")
    cases = [("standard", "rsa", 0, None), ("standard", "auto", 0, None), ("preview", "ecc", 0, None)]
    if pico:
        cases += [("preview", "ecc", mfl, pico) for mfl in (4096, 2048, 1024, 512)]
        cases += [("standard", "rsa", 2048, pico)]
    rows = []
    state = tempfile.mkdtemp(prefix="aziot-wire-")
    for mode in ("standard", "preview"):
        with BackgroundHub(state, port=0, tls_mode=mode) as hub:
            for case_mode, profile, mfl, binary in cases:
                if case_mode == mode:
                    row = wire.measure(hub, state, profile, mfl, binary)
                    row["build"] = "micropython-pico" if binary else "stock"
                    rows.append(row)
    return rows


def _table(title, header, rows):
    print(title)
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    print()


def main(args) -> int:
    """Every measurement, printed as Markdown tables; all of it in build/bench/bench.json, and the
    chart in build/bench/bench.png."""
    import json

    from . import chart, estimates, paths, sdkbench

    device.prepare_unix_lib()
    bench = {}
    rows = bench["connect"] = [measure(mode, profile, args.runs, args.messages, args.size)
                               for mode, profile in (("preview", "ecc"), ("standard", "rsa"))]
    _table("aziot bench: %d connections per profile, %d QoS 1 messages of %d bytes, MicroPython Unix port"
           % (args.runs, args.messages, args.size),
           ("hub", "profile", "cipher", "connect ms", "hub hs ms", "TLS hs bytes dev->hub", "hub->dev",
            "gc heap B", "QoS1 msg/s"),
           [(r["hub"], r["profile"], r["cipher"], "%.1f" % r["connect_ms_median"],
             "%.1f" % r["hub_handshake_ms_median"], r["bytes_device_to_hub"], r["bytes_hub_to_device"],
             r["gc_heap_per_connection"], "%.0f" % r["msgs_per_s"]) for r in rows])
    bench["connect_cost"] = print_connect_cost()
    rows = bench["board_estimates"] = estimates.esp32_connect_ms()
    _table("ESTIMATED compute per connect on a board (not measured: published per-operation times x the "
           "operations an X.509 connect makes; aziot: the verification times scaled by public_inverse.c's "
           "measured instruction ratio; ECC figures with the MPI accelerator off, RSA ones with it on; see "
           "aziot_tools/estimates.py):",
           ("chip", "profile", "connect", "published figures ms", "aziot ms"),
           [(r["chip"], r["profile"], r["connect"], r["stock_mbedtls_ms"], r["aziot_ms"]) for r in rows])
    _table("the published figures behind the estimates:", ("operation", "ms", "conditions", "source"),
           estimates.sources())
    rows = bench["handshake_bytes"] = measure_handshake_bytes()
    _table("TLS handshake bytes, counted by a loopback proxy (records before the first application data):",
           ("hub", "profile", "used", "build", "MFL asked", "MFL agreed", "device -> hub B", "hub -> device B"),
           [(r["hub"], r["profile"], r["used"], r["build"], r["mfl"] or "off", r["mfl_agreed"] or "none",
             r["device_to_hub"], r["hub_to_device"]) for r in rows])
    rows = bench["telemetry_vs_sdk"] = sdkbench.measure(args.rounds, args.messages, args.size)
    _table("QoS 1 telemetry beside the official SDK, same emulator (standard hub, X.509), %d alternating rounds "
           "of %d messages of %d B:" % (args.rounds, args.messages, args.size),
           ("client", "msgs/s (median)", "CPU µs per message (median)", "peak RSS KB"),
           [(r["client"], "%.0f" % r["msgs_per_s"], "%.0f" % r["cpu_us_per_msg"],
             "%d%s" % (r["peak_rss_kb"], "" if r["rss_native"] else " (CPython process)")) for r in rows])
    rows = bench["library_size"] = library_sizes()
    _table("library size (.mpy: mpy-cross, as `aziot install` copies it):", ("module", ".py B", ".mpy B"),
           [(r["module"], r["py"], r["mpy"]) for r in rows]
           + [("total", sum(r["py"] for r in rows), sum(r["mpy"] for r in rows))])
    s = bench["surface"] = measure_surface(args.runs * 2)
    _table("cloud to device, standard hub (rsa profile), median of %d calls each:" % (args.runs * 2),
           ("method 64 B round trip ms", "method 8 KB round trip ms", "twin report ms (device)",
            "GC heap live in an 8 KB method handler B"),
           [("%.2f" % s["method_64B_ms"], "%.2f" % s["method_8KB_ms"], "%.2f" % s["report_ms"], s["heap_held_8KB"])])
    rows = bench["tls_memory"] = measure_tls_memory()
    if not rows:
        print("mbedTLS heap per connection: skipped, no unix-mfl build (make unix-mfl MPY_DIR=...)")
    else:
        heap_rows = bench["heap_floor"] = measure_heap_floor()
        if heap_rows:
            _table("smallest MicroPython heap for connect + telemetry + report + a 4 KB method (standard hub, "
                   "4 KB steps), board-faithful 32-bit builds:",
                   ("build", "library", "smallest heap KB", "board heap KB", "gc.mem_free() after connect there B"),
                   [(name, form, heap_k or "> 512", board_k or "-", free if free is not None else "-")
                    for name, form, heap_k, board_k, free in heap_rows])
        _table("mbedTLS heap per connection (auto profile; connect, then 8 KB each way), unix-mfl builds:",
               ("hub", "build", "IN/OUT buffers", "MFL asked", "MFL agreed", "after connect B", "peak B"),
               [(mode, name, "%d/%d" % (in_len, out_len), mfl or "off", agreed, after, peak)
                for mode, name, in_len, out_len, mfl, agreed, after, peak in rows])
    out = os.path.join(paths.BUILD, "bench")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "bench.json"), "w") as f:
        json.dump(bench, f, indent=1)
    print("wrote %s and %s" % (os.path.join(out, "bench.json"), chart.draw(bench, os.path.join(out, "bench.png"))))
    return 0

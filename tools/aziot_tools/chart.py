"""The bench's one chart: what a connection costs, aziot's profiles side by side and beside the SDK."""

import matplotlib

matplotlib.use("Agg")  # no display: make bench runs in terminals and CI

import matplotlib.pyplot as plt  # noqa: E402

ECC, RSA, OTHER = "#2b8cbe", "#e34a33", "#999999"


def draw(bench: dict, path: str) -> str:
    """A PNG of the bench's JSON (see bench.main): instructions per connect, handshake bytes, telemetry."""
    panels = [p for p in (_instructions, _wire_bytes, _telemetry) if p(None, bench)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.4 * len(panels), 4.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        panel(ax, bench)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _instructions(ax, bench):
    rows = bench.get("connect_cost") or []
    if ax is None:
        return bool(rows)
    builds = list(dict.fromkeys(r["build"] for r in rows))
    bars = (("ecc", "connect", ECC, None), ("ecc", "after_reset", ECC, ".."), ("ecc", "reconnect", ECC, "//"),
            ("rsa", "connect", RSA, None), ("rsa", "after_reset", RSA, ".."), ("rsa", "reconnect", RSA, "//"))
    names = {"connect": "first connect", "after_reset": "after a reset", "reconnect": "reconnect"}
    for k, (profile, what, colour, hatch) in enumerate(bars):
        values = [next(r.get(what, 0) for r in rows if r["build"] == b and r["profile"] == profile) / 1e6
                  for b in builds]
        ax.bar([i + (k - 2.5) * 0.14 for i in range(len(builds))], values, 0.14, color=colour, hatch=hatch,
               edgecolor="white", label="%s %s" % (profile, names[what]))
    ax.set_xticks(range(len(builds)), [b.replace(" (", "\n(") for b in builds], fontsize=7)
    ax.set_ylabel("million instructions (callgrind)")
    ax.set_title("one connect: TCP + TLS + CONNECT/CONNACK\n(ecc: preview hub, rsa: standard hub)", fontsize=9)
    ax.legend(fontsize=7)


def _wire_bytes(ax, bench):
    rows = bench.get("handshake_bytes") or []
    if ax is None:
        return bool(rows)
    labels = ["%s on %s\n%s, MFL %s" % (r["profile"], r["hub"], r["build"].replace("micropython-", ""),
                                          r["mfl_agreed"] or "none") for r in rows]
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["hub_to_device"] for r in rows], 0.4,
           color=[ECC if r["used"] == "ecc" else RSA for r in rows], label="hub -> device")
    ax.bar([x + 0.2 for x in xs], [r["device_to_hub"] for r in rows], 0.4, color=OTHER, label="device -> hub")
    ax.set_xticks(list(xs), labels, fontsize=6, rotation=45, ha="right")
    ax.set_ylabel("TLS handshake bytes (loopback proxy)")
    ax.set_title("handshake bytes each way", fontsize=9)
    ax.legend(fontsize=7)


def _telemetry(ax, bench):
    rows = bench.get("telemetry_vs_sdk") or []
    if ax is None:
        return bool(rows)
    xs = range(len(rows))
    ax.bar(list(xs), [r["cpu_us_per_msg"] for r in rows], 0.6,
           color=[OTHER if r["client"].startswith("azure") else RSA for r in rows])
    for x, r in zip(xs, rows):
        ax.annotate("%.0f msg/s" % r["msgs_per_s"], (x, r["cpu_us_per_msg"]), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(list(xs), [r["client"].replace(", ", "\n").replace(" (", "\n(") for r in rows], fontsize=6)
    ax.set_ylabel("client CPU per QoS 1 message (µs)")
    ax.set_title("QoS 1 telemetry, standard hub, %d B" % rows[0]["size"], fontsize=9)

"""The benchmark's measurements, run once each at their smallest, so that `make bench` cannot rot."""

import pytest

from aziot_tools import cost


@pytest.mark.skipif(not cost.available(), reason="no valgrind: `make setup` installs it (Debian)")
def test_instructions_per_connect_are_counted_for_both_profiles(tmp_path):
    rows = cost.compare([("stock", None, None)], state=str(tmp_path))
    by_profile = {r["profile"]: r for r in rows}
    assert by_profile["ecc"]["cipher"].startswith("TLS-ECDHE-ECDSA-") and by_profile["ecc"]["hub"] == "preview"
    assert by_profile["rsa"]["cipher"].startswith("TLS-ECDHE-RSA-") and by_profile["rsa"]["hub"] == "standard"
    for r in rows:
        # The import-only run is subtracted: what is left is a handshake's worth, not the interpreter's start.
        assert r["import"] > 10 ** 6 and r["connect"] > 10 ** 6, r
        assert r["mbedtls_peak"] is None  # the stock port has no aziot_tls to count mbedTLS's heap
        assert r["after_reset"] == r["connect"]  # nor the verified signatures to keep across a reset


def test_handshake_bytes_on_the_wire_hold_the_hubs_certificate_chain(hub, tmp_path):
    """The proxy's count of hub -> device handshake bytes holds at least the chain the hub sends."""
    import ssl

    from aziot_tools import wire

    row = wire.measure(hub, hub.state_dir, "rsa", 0)
    pem = hub.identity.read("rsa-chain.pem").decode()
    chain = [ssl.PEM_cert_to_DER_cert("-----BEGIN CERTIFICATE-----" + block)
             for block in pem.split("-----BEGIN CERTIFICATE-----")[1:]]
    assert (row["used"], row["mfl_agreed"]) == ("rsa", 0)
    assert row["hub_to_device"] > sum(len(der) for der in chain) > 0, row
    assert 0 < row["device_to_hub"] < row["hub_to_device"], row  # X.509 client: its certificate, but one


def test_records_before_application_data_are_the_handshake():
    from aziot_tools import wire

    records = [(False, 22, 200), (True, 22, 3000), (True, 20, 1), (False, 22, 40), (False, 23, 60),
               (True, 22, 40), (True, 23, 4), (False, 22, 9999)]
    assert wire.handshake_bytes(records) == (205 + 45, 3005 + 6 + 45)
    with pytest.raises(ValueError):
        wire.handshake_bytes(records[:4])  # no application data: the handshake did not finish


def test_telemetry_beside_the_sdk_counts_every_client(tmp_path):
    from aziot_tools import sdkbench

    rows = sdkbench.measure(rounds=1, messages=3, size=16)  # raises unless the hub stored every message
    assert rows[0]["client"].startswith("azure-iot-device 2.14.0")
    assert any(r["client"].startswith("aziot") for r in rows)
    for r in rows:
        assert r["msgs_per_s"] > 0 and r["peak_rss_kb"] > 0 and r["cpu_us_per_msg"] >= 0, r


def test_library_sizes_and_the_chart(tmp_path):
    from aziot_tools import bench, chart

    sizes = bench.library_sizes()
    assert {"aziot/hub", "aziot/mqtt", "umqtt/simple"} <= {r["module"] for r in sizes}
    assert sum(r["mpy"] for r in sizes) < sum(r["py"] for r in sizes)
    data = {"connect_cost": [{"build": "b", "profile": p, "connect": n} for p, n in (("ecc", 2e8), ("rsa", 8e7))],
            "handshake_bytes": [{"hub": "preview", "profile": "ecc", "used": "ecc", "build": "stock", "mfl_agreed": 0,
                                 "hub_to_device": 2497, "device_to_hub": 766}],
            "telemetry_vs_sdk": [{"client": "azure-iot-device", "cpu_us_per_msg": 600, "msgs_per_s": 1100, "size": 64}]}
    path = chart.draw(data, str(tmp_path / "bench.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_board_estimates_add_up_each_operation_with_its_source():
    from aziot_tools import estimates

    rows = {(r["profile"], r["connect"]): r for r in estimates.esp32_connect_ms()}
    assert set(rows) == {(p, c) for p in ("ecc", "rsa") for c in ("connect", "reconnect")}
    for r in rows.values():
        whole = estimates.OPERATIONS[r["profile"], "connect"]  # stock mbedTLS verifies the chain every time
        assert r["stock_mbedtls_ms"] == round(sum(n * estimates.ESP32[op][0] for op, n in whole.items()), 1)
        assert 0 < r["aziot_ms"] <= r["stock_mbedtls_ms"], r
    # The chain's two verifications are what a reconnect skips; RSA's cost public_inverse.c nothing.
    assert rows["ecc", "reconnect"]["aziot_ms"] < rows["ecc", "connect"]["aziot_ms"]
    assert rows["rsa", "connect"]["aziot_ms"] == rows["rsa", "connect"]["stock_mbedtls_ms"]
    assert rows["rsa", "reconnect"]["aziot_ms"] < rows["rsa", "reconnect"]["stock_mbedtls_ms"]
    assert all(source and conditions for _, _, conditions, source in estimates.sources())

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

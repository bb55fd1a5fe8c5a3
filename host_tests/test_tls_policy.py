"""The emulator's TLS policy, probed by an independent client: `openssl s_client`."""

import shutil
import subprocess

import pytest

from aziot_tools import pki
from devicecode import eventually, first_connection

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl command not installed")


def s_client(hub, *args, ca=None):
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % hub.port, "-servername", hub.hub_host]
    if ca:
        cmd += ["-CAfile", hub.identity.root_path(ca), "-verify_return_error",
                "-verify_hostname", hub.hub_host]
    proc = subprocess.run(cmd + list(args), input=b"", capture_output=True, timeout=20)
    return proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace")


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1", "-tls1_3"])
def test_versions_other_than_tls12_are_refused(any_hub, version):
    hub = any_hub
    # SECLEVEL=0 so that it is the hub, not the local OpenSSL, that says no.
    extra = ["-cipher", "DEFAULT@SECLEVEL=0"] if version != "-tls1_3" else []
    code, out = s_client(hub, version, *extra)
    assert code != 0
    assert "alert protocol version" in out
    assert first_connection(hub).reason == "unsupported protocol" and len(hub.connections()) == 1


RSA_SUITES = ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA256",
              "ECDHE-RSA-AES256-SHA384"]


@pytest.mark.parametrize("suite", RSA_SUITES)
def test_the_hubs_rsa_suites_are_accepted_and_the_chain_verifies(any_hub, suite):
    hub = any_hub
    code, out = s_client(hub, "-tls1_2", "-cipher", suite, ca="rsa")
    if hub.tls_mode == "standard" and suite == "ECDHE-RSA-AES256-SHA384":
        # Go's crypto/tls has no AES-256-CBC-SHA384: the standard emulator is one suite stricter than the hub.
        assert code != 0 and "alert handshake failure" in out
        return
    assert code == 0, out
    assert "Cipher is %s" % suite in out
    assert "Verify return code: 0 (ok)" in out


def test_an_ecdsa_only_offer_gets_the_ecc_chain_only_from_a_preview_hub(any_hub):
    hub = any_hub
    code, out = s_client(hub, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256", ca="ecc")
    if hub.tls_mode == "preview":
        assert code == 0, out
        assert "Cipher is ECDHE-ECDSA-AES128-GCM-SHA256" in out
        assert "Verify return code: 0 (ok)" in out
    else:  # a standard hub has no ECC certificate: it refuses the offer with an alert
        assert code != 0
        assert "alert handshake failure" in out
        assert first_connection(hub).reason == "no shared cipher"


def test_offering_both_kinds_gets_rsa(any_hub):
    code, out = s_client(any_hub, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")
    assert code == 0, out
    assert "Cipher is ECDHE-RSA-AES128-GCM-SHA256" in out


def test_max_fragment_length_is_echoed_only_by_a_preview_hub(any_hub):
    hub = any_hub
    code, out = s_client(hub, "-tls1_2", "-maxfraglen", "512", "-tlsextdebug",
                         "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
    assert code == 0, out
    assert "TLS server extension \"renegotiation info\"" in out  # the ServerHello's extensions are listed
    echoed = "TLS server extension \"max fragment length\"" in out
    assert echoed == (hub.tls_mode == "preview"), out


@pytest.mark.parametrize("suite", ["AES128-GCM-SHA256", "ECDHE-RSA-AES128-SHA", "ECDHE-ECDSA-CHACHA20-POLY1305",
                                   "DHE-RSA-AES128-GCM-SHA256"])
def test_suites_outside_the_hub_list_are_refused(any_hub, suite):
    hub = any_hub
    code, out = s_client(hub, "-tls1_2", "-cipher", suite)
    assert code != 0
    assert "alert handshake failure" in out
    assert first_connection(hub).reason == "no shared cipher"


def test_the_ecc_chain_is_shaped_like_the_hubs():
    """Leaf + issuing CA, P-256 leaf under P-384 CAs, the hub's SAN list (handshake sizes transfer)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509 import DNSName, SubjectAlternativeName

    ecc, rsa_chain = pki.make_server_pki("ecc"), pki.make_server_pki("rsa")
    assert len(ecc.leaf.chain) == 1 and len(rsa_chain.leaf.chain) == 1
    assert ecc.leaf.key.curve.name == "secp256r1" and ecc.issuing.key.curve.name == "secp384r1"
    assert isinstance(ecc.root.key, ec.EllipticCurvePrivateKey)
    assert rsa_chain.issuing.key.key_size == 4096 and rsa_chain.leaf.key.key_size == 2048
    assert isinstance(rsa_chain.root.key, rsa.RSAPrivateKey)
    sans = ecc.leaf.cert.extensions.get_extension_for_class(SubjectAlternativeName).value
    assert set(pki.HUB_SANS) <= set(sans.get_values_for_type(DNSName))
    from cryptography.x509 import AuthorityInformationAccess, CRLDistributionPoints

    for cert in (ecc.leaf.cert, ecc.issuing.cert, rsa_chain.leaf.cert):
        cert.extensions.get_extension_for_class(AuthorityInformationAccess)
        cert.extensions.get_extension_for_class(CRLDistributionPoints)
    # Microsoft measured ~2.7 KB (ECC) vs ~4.5 KB (RSA) per handshake on the real hub.
    assert 1900 < len(ecc.leaf.cert_der) + len(ecc.issuing.cert_der) < 2400
    assert 3000 < len(rsa_chain.leaf.cert_der) + len(rsa_chain.issuing.cert_der) < 3700


def test_a_renegotiation_is_refused_with_an_alert_and_the_link_ends(any_hub):
    import time

    hub = any_hub
    proc = subprocess.Popen(["openssl", "s_client", "-connect", "127.0.0.1:%d" % hub.port, "-servername",
                             hub.hub_host, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not hub.connections() or hub.connections()[0].result == "tls-failed" and not \
                hub.connections()[0].reason:
            assert time.monotonic() < deadline, "no handshake"
            time.sleep(0.05)
        proc.stdin.write(b"R\n")  # s_client's command for a renegotiation
        proc.stdin.flush()
        code = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = proc.stdout.read().decode(errors="replace")
    assert "RENEGOTIATING" in out and code != 0, out
    if hub.tls_mode == "preview":
        assert eventually(lambda: hub.connections()[0].reason ==
                          "client attempted TLS renegotiation (refused with an alert)"), hub.connections()
    else:  # Go's crypto/tls answers with its own alert
        assert "alert unexpected message" in out

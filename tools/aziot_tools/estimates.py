"""Board-time estimates for one connect: published per-operation times times the operations a connect makes.

Estimates, not measurements: no board ran here. Each figure carries its source. The counts of
operations follow the emulator's chains, which are shaped like the hub's (pki.make_server_pki):
ECC: P-384 root -> P-384 issuing CA -> P-256 leaf; RSA: RSA-2048 root -> RSA-4096 issuing CA ->
RSA-2048 leaf. Every connect also does ECDHE on P-256 (a key pair and the shared secret) and, for an
X.509 device, signs the CertificateVerify with its P-256 key: three P-256 point multiplications,
counted at the published `ecp_mul` time. The ECC figures were measured with the ESP32's MPI
accelerator off, the RSA ones with it on. A reconnect takes the chain's signatures from memory (verify_cache.c)
and verifies only the ServerKeyExchange.
"""

# (operation, ms, what, source). The ESP32 is the classic ESP32 at 240 MHz.
ESP32 = {
    "ecdsa_verify_p256": (172.71, "mbedTLS 3.6.6, fixed-point ECP on, MPI accelerator off",
                          "Mbed-TLS/TF-PSA-Crypto pull request 873 (open; a contributor's ESP32 benchmark)"),
    "ecdsa_verify_p384": (365.26, "same run", "Mbed-TLS/TF-PSA-Crypto pull request 873"),
    "ecp_mul_p256": (41.30, "same run", "Mbed-TLS/TF-PSA-Crypto pull request 873"),
    "rsa2048_public": (46.627, "ESP-IDF mbedTLS, MPI accelerator on (example in the comment)",
                       "espressif/esp-idf components/mbedtls/test_apps/mbedtls_ut/include/crypto_performance.h "
                       "at commit 102122904ade"),
    "rsa4096_public": (170.0, "an upper bound: ESP-IDF's test limit IDF_PERFORMANCE_MAX_RSA_4096KEY_PUBLIC_OP",
                       "espressif/esp-idf components/mbedtls/test_apps/mbedtls_ut/include/crypto_performance.h "
                       "at commit 102122904ade"),
}

# Instructions of one ECDSA verification with public_inverse.c over without it (callgrind, the
# ESP32-like 32-bit build, AZIOT_TLS_PUBLIC_INVERSE=1 vs 0): P-256 21.35 / 31.34 M, P-384 43.08 / 64.36 M.
PUBLIC_INVERSE_RATIO = {"ecdsa_verify_p256": 21.35 / 31.34, "ecdsa_verify_p384": 43.08 / 64.36}

OPERATIONS = {
    ("ecc", "connect"): {"ecdsa_verify_p384": 2, "ecdsa_verify_p256": 1, "ecp_mul_p256": 3},
    ("ecc", "reconnect"): {"ecdsa_verify_p256": 1, "ecp_mul_p256": 3},
    ("rsa", "connect"): {"rsa2048_public": 2, "rsa4096_public": 1, "ecp_mul_p256": 3},
    ("rsa", "reconnect"): {"rsa2048_public": 1, "ecp_mul_p256": 3},
}


def esp32_connect_ms() -> list:
    """Per profile and connect: estimated ms with stock mbedTLS 3.6.6 (every connect verifies the whole
    chain), and with aziot's firmware (a reconnect verifies the ServerKeyExchange only, and the
    published verification times are scaled by public_inverse.c's instruction ratio measured here)."""
    rows = []
    for (profile, what), ops in OPERATIONS.items():
        stock = sum(n * ESP32[op][0] for op, n in OPERATIONS[profile, "connect"].items())
        ours = sum(n * ESP32[op][0] * PUBLIC_INVERSE_RATIO.get(op, 1.0) for op, n in ops.items())
        rows.append({"chip": "ESP32 @ 240 MHz", "profile": profile, "connect": what, "operations": ops,
                     "stock_mbedtls_ms": round(stock, 1), "aziot_ms": round(ours, 1)})
    return rows


def sources() -> list:
    return [(op, ms, what, source) for op, (ms, what, source) in ESP32.items()]

// mbedTLS configuration for aziot firmware: the port's own configuration,
// then TLS Maximum Fragment Length (RFC 6066) and record buffers sized for
// IoT Hub instead of for 16 KB records.
//
// Selected through the port's MBEDTLS_CONFIG_FILE hook (make variable for
// the unix port, CMake variable for rp2), so every compile unit -- mbedTLS
// itself, extmod/modtls_mbedtls.c and the aziot_tls module -- sees the same
// configuration: MBEDTLS_SSL_MAX_FRAGMENT_LENGTH changes the layout of
// mbedtls_ssl_config.
//
// Build-time knobs (-D or the board folder):
//   AZIOT_PORT_MBEDTLS_CONFIG  the port's own header (default "mbedtls/mbedtls_config_port.h")
//   AZIOT_TLS_IN_LEN           receive buffer: must hold the hub's whole Certificate
//                              handshake message (mbedTLS reassembles it there), so
//                              it depends on the server chain, not only on MFL
//   AZIOT_TLS_OUT_LEN          send buffer: must hold the device's Certificate message
//   AZIOT_TLS_ECC_ONLY         1: compile only what the ECDHE-ECDSA suites need
//                              (no RSA key exchange; RSA signatures stay for roots)
//   AZIOT_TLS_VARIABLE_BUFFERS 1: shrink the buffers to the MFL after the handshake
//   AZIOT_TLS_COUNT_ALLOC      1: count mbedTLS heap use (aziot_tls.heap())
//   AZIOT_TLS_GC_HEAP          1: mbedTLS allocates from MicroPython's GC heap, as on
//                              rp2 (bare-metal ports do so by themselves)
#ifndef AZIOT_MBEDTLS_CONFIG_H
#define AZIOT_MBEDTLS_CONFIG_H

#ifndef AZIOT_PORT_MBEDTLS_CONFIG
#define AZIOT_PORT_MBEDTLS_CONFIG "mbedtls/mbedtls_config_port.h"
#endif
#include AZIOT_PORT_MBEDTLS_CONFIG

// mbedTLS before 3.6.4 cannot reassemble a handshake message split across
// records, so a hub Certificate message larger than the fragment length
// (every real chain, at MFL 512..2048) ends the handshake.
#if defined(MBEDTLS_VERSION_NUMBER) && MBEDTLS_VERSION_NUMBER < 0x03060400
#error "aziot firmware needs mbedTLS >= 3.6.4 (MicroPython >= v1.29, or lib/mbedtls at 3.6.4+): older mbedTLS cannot reassemble a handshake message split by Maximum Fragment Length"
#endif

#define MBEDTLS_SSL_MAX_FRAGMENT_LENGTH

// After the handshake, shrink the record buffers to the negotiated fragment
// length: the handshake still needs IN for the hub's Certificate message,
// the rest of the connection only MFL-sized records. mbedTLS 3.6 alone would
// shrink IN to the MFL asked for even when the hub ignored it, or to
// min(IN, OUT) without MFL; aziot_tls keeps IN whole unless the hub agreed.
#ifndef AZIOT_TLS_VARIABLE_BUFFERS
#define AZIOT_TLS_VARIABLE_BUFFERS (1)
#endif
#if AZIOT_TLS_VARIABLE_BUFFERS
#define MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH
#endif

#ifndef AZIOT_TLS_IN_LEN
#define AZIOT_TLS_IN_LEN (16384)
#endif
#ifndef AZIOT_TLS_OUT_LEN
#define AZIOT_TLS_OUT_LEN (4096)
#endif
#undef MBEDTLS_SSL_MAX_CONTENT_LEN
#undef MBEDTLS_SSL_IN_CONTENT_LEN
#undef MBEDTLS_SSL_OUT_CONTENT_LEN
#define MBEDTLS_SSL_IN_CONTENT_LEN  (AZIOT_TLS_IN_LEN)
#define MBEDTLS_SSL_OUT_CONTENT_LEN (AZIOT_TLS_OUT_LEN)

#if AZIOT_TLS_ECC_ONLY
// The hub's ECC profile: ECDHE-ECDSA with AES-GCM/CBC. RSA stays for verifying
// RSA-signed roots and intermediates (DigiCert G2 and Microsoft RSA 2017 sign
// some ECC chains' cross-certificates), but the RSA key exchanges go.
#undef MBEDTLS_KEY_EXCHANGE_RSA_ENABLED
#undef MBEDTLS_KEY_EXCHANGE_DHE_RSA_ENABLED
#undef MBEDTLS_KEY_EXCHANGE_ECDHE_RSA_ENABLED
#undef MBEDTLS_KEY_EXCHANGE_ECDH_RSA_ENABLED
#undef MBEDTLS_KEY_EXCHANGE_ECDH_ECDSA_ENABLED
#define MBEDTLS_SSL_CIPHERSUITES \
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, \
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, \
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, \
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384
// The hub's ECC chain uses P-256 (leaf, ECDHE) and P-384 (CAs, DigiCert G3):
// the other curves go, and smaller point-multiplication tables trade some
// handshake time for heap.
#undef MBEDTLS_ECP_DP_SECP192R1_ENABLED
#undef MBEDTLS_ECP_DP_SECP224R1_ENABLED
#undef MBEDTLS_ECP_DP_SECP521R1_ENABLED
#undef MBEDTLS_ECP_DP_SECP192K1_ENABLED
#undef MBEDTLS_ECP_DP_SECP224K1_ENABLED
#undef MBEDTLS_ECP_DP_SECP256K1_ENABLED
#undef MBEDTLS_ECP_DP_BP256R1_ENABLED
#undef MBEDTLS_ECP_DP_BP384R1_ENABLED
#undef MBEDTLS_ECP_DP_BP512R1_ENABLED
#undef MBEDTLS_ECP_DP_CURVE25519_ENABLED
#undef MBEDTLS_ECP_DP_CURVE448_ENABLED
#undef MBEDTLS_ECP_WINDOW_SIZE
#define MBEDTLS_ECP_WINDOW_SIZE 2
#undef MBEDTLS_ECP_FIXED_POINT_OPTIM
#define MBEDTLS_ECP_FIXED_POINT_OPTIM 0
#endif

// Elliptic-curve speed. MBEDTLS_ECP_NIST_OPTIM gives P-256 and P-384 their
// fast reduction modulo the NIST primes; without it mbedTLS reduces with the
// generic mbedtls_mpi_mod_mpi, 86 % of an ECC connect on a 32-bit build
// (callgrind). The rp2 port's mbedTLS config and ESP-IDF (Kconfig
// MBEDTLS_ECP_NIST_OPTIM, default y) turn it on, the unix port's does not:
// on here for every build, so the board-faithful unix builds cost what a
// board does. AZIOT_TLS_ECP_WINDOW / AZIOT_TLS_ECP_FIXED_POINT override
// mbedTLS's MBEDTLS_ECP_WINDOW_SIZE (4) and MBEDTLS_ECP_FIXED_POINT_OPTIM (1),
// to measure what they trade (heap during a point multiplication vs time).
#ifndef AZIOT_TLS_NIST_OPTIM
#define AZIOT_TLS_NIST_OPTIM (1)
#endif
#if AZIOT_TLS_NIST_OPTIM && !defined(MBEDTLS_ECP_NIST_OPTIM)
#define MBEDTLS_ECP_NIST_OPTIM
#elif !AZIOT_TLS_NIST_OPTIM
#undef MBEDTLS_ECP_NIST_OPTIM
#endif
#ifdef AZIOT_TLS_ECP_WINDOW
#undef MBEDTLS_ECP_WINDOW_SIZE
#define MBEDTLS_ECP_WINDOW_SIZE AZIOT_TLS_ECP_WINDOW
#endif
#ifdef AZIOT_TLS_ECP_FIXED_POINT
#undef MBEDTLS_ECP_FIXED_POINT_OPTIM
#define MBEDTLS_ECP_FIXED_POINT_OPTIM AZIOT_TLS_ECP_FIXED_POINT
#endif

#ifndef AZIOT_TLS_COUNT_ALLOC
#define AZIOT_TLS_COUNT_ALLOC (1)
#endif
#ifndef AZIOT_TLS_GC_HEAP
#define AZIOT_TLS_GC_HEAP (0)
#endif
#if AZIOT_TLS_COUNT_ALLOC
// Every mbedTLS allocation goes through a counter that then calls what the
// port used before: libc on unix and ESP32, MicroPython's GC-tracked heap on
// bare-metal ports (extmod/mbedtls/mbedtls_config_common.h: m_tracked_calloc).
// The port's choice is named here as a function, not through the port's
// MBEDTLS_PLATFORM_STD_CALLOC macro: that macro is redefined below, and a
// macro expands where it is used, so aliasing it would make the counter call
// itself. AZIOT_TLS_GC_HEAP=1 puts a Unix build's mbedTLS in the GC heap the
// way rp2's is (the board-faithful test build).
#include <stddef.h>
void *aziot_tls_calloc(size_t nmemb, size_t size);
void aziot_tls_free(void *ptr);
#if AZIOT_TLS_GC_HEAP || (defined(MICROPY_MBEDTLS_CONFIG_BARE_METAL) && MICROPY_MBEDTLS_CONFIG_BARE_METAL)
#define AZIOT_TLS_UNDERLYING_CALLOC m_tracked_calloc
#define AZIOT_TLS_UNDERLYING_FREE m_tracked_free
#elif defined(MBEDTLS_PLATFORM_STD_CALLOC)
#error "this port's mbedTLS config sets its own MBEDTLS_PLATFORM_STD_CALLOC: define AZIOT_TLS_UNDERLYING_CALLOC/FREE to those functions, or build with AZIOT_TLS_COUNT_ALLOC=0"
#endif
#undef MBEDTLS_PLATFORM_STD_CALLOC
#undef MBEDTLS_PLATFORM_STD_FREE
#define MBEDTLS_PLATFORM_C
#define MBEDTLS_PLATFORM_MEMORY
#define MBEDTLS_PLATFORM_STD_CALLOC aziot_tls_calloc
#define MBEDTLS_PLATFORM_STD_FREE aziot_tls_free
#endif

#endif // AZIOT_MBEDTLS_CONFIG_H

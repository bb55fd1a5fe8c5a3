// Memoised signature checks for certificate-path validation.
//
// Reconnecting to IoT Hub, a device verifies the same hub chain again: on a
// preview hub two P-384 ECDSA signatures (root -> intermediate ->
// leaf), the bulk of an ECC handshake's compute. A signature check is a
// pure function of (public key, algorithm, hash of the signed data,
// signature bytes), so this keeps the SHA-256 of those inputs for the last
// few checks that succeeded, and answers a byte-identical check from there.
// Everything else in path validation still runs on every connect: the trust
// anchors from flash, names, validity dates against the clock,
// basicConstraints and keyUsage; and the ServerKeyExchange signature, the
// proof that the hub holds the leaf's key, covers this connect's client
// random and goes through another function (mbedtls_pk_verify_restartable),
// so it is never answered from here.
//
// A check made during a handshake stays pending until that handshake
// succeeds with its chain accepted (modaziot_tls.c's wrap-up hook, checking
// mbedtls_ssl_get_verify_result); only then is it kept for good and
// exported, for the library to store on flash (aziot/verified.py) and
// import after a reset. So a chain that failed -- an impostor's under its
// own root, or one a CERT_OPTIONAL context let through -- neither pushes the
// hub's entries out nor changes what is stored. Only the thread whose
// handshake modaziot_tls.c follows (owner.h) adds pending checks; the rings
// change under MicroPython's atomic section, since two threads (two cores
// on rp2) may verify at once. A hit makes its entry the newest, so the
// chains in use stay while others come and go. An export carries a tag of
// this build (the mbedTLS version, the MicroPython version and commit, the
// checksum of these sources): one from another build is refused, so a
// firmware update that changes any of them starts afresh. The README
// ("Verified signatures, remembered") has the argument in full.
//
// The hook: the firmware links with -Wl,--wrap=mbedtls_pk_verify_ext, which
// mbedTLS's x509_crt.c calls for each certificate's signature. TLS 1.3 would
// also call it for the server's CertificateVerify, a new signature on every
// connect: with TLS 1.3 compiled in, nothing is remembered.

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mbedtls/build_info.h"
#include "mbedtls/ecp.h"
#include "mbedtls/pk.h"
#include "mbedtls/rsa.h"
#include "mbedtls/sha256.h"

#include "genhdr/mpversion.h"
#include "owner.h"  // MicroPython's atomic section

#include "public_inverse.h"
#include "verify_cache.h"

#ifndef AZIOT_TLS_VERIFY_CACHE
#define AZIOT_TLS_VERIFY_CACHE 8  // entries of 32 bytes; a hub chain needs 2, a few hubs or chain rotations fit
#endif
#if defined(MBEDTLS_SSL_PROTO_TLS1_3)
#undef AZIOT_TLS_VERIFY_CACHE
#define AZIOT_TLS_VERIFY_CACHE 0
#endif

// The build's tag also carries the checksum of firmware/aziot_tls's sources, from micropython.mk /
// micropython.cmake; bump this when verification changes in a way they do not show.
#define VERIFICATION_CODE_VERSION "1"
#ifndef AZIOT_TLS_SOURCE_ID
#define AZIOT_TLS_SOURCE_ID unknown
#endif

#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)
#define DIGEST_LEN AZIOT_VERIFY_CACHE_ENTRY
#define SLOTS (AZIOT_TLS_VERIFY_CACHE > 0 ? AZIOT_TLS_VERIFY_CACHE : 1)

typedef struct {
    unsigned char digest[SLOTS][DIGEST_LEN];
    size_t used;
    size_t next;  // round robin: the oldest entry goes first
} ring_t;

static ring_t kept;  // from handshakes that succeeded, and imported
static ring_t pending;  // the handshake's, until its chain is accepted
static size_t hits;
static size_t misses;

int aziot_tls_handshake_is_mine(void);  // modaziot_tls.c

static void ring_add(ring_t *ring, const unsigned char *digest) {
    memcpy(ring->digest[ring->next], digest, DIGEST_LEN);
    ring->next = (ring->next + 1) % SLOTS;
    if (ring->used < SLOTS) {
        ring->used++;
    }
}

// The slot holding digest, or -1.
static int ring_find(const ring_t *ring, const unsigned char *digest) {
    for (size_t i = 0; i < ring->used; i++) {
        if (memcmp(ring->digest[i], digest, DIGEST_LEN) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static int ring_has(const ring_t *ring, const unsigned char *digest) {
    return ring_find(ring, digest) >= 0;
}

// The entry in slot i becomes the newest, the order of the others kept.
static void ring_refresh(ring_t *ring, size_t i) {
    unsigned char digest[DIGEST_LEN];
    size_t newest = (ring->next + SLOTS - 1) % SLOTS;
    memcpy(digest, ring->digest[i], DIGEST_LEN);
    while (i != newest) {  // when full, next is the oldest and newest is just before it
        size_t j = (i + 1) % SLOTS;
        memcpy(ring->digest[i], ring->digest[j], DIGEST_LEN);
        i = j;
    }
    memcpy(ring->digest[newest], digest, DIGEST_LEN);
}

// The export's first 8 bytes: "AZVC" and a 32-bit FNV-1a of what this build verifies with.
static void build_tag(unsigned char out[AZIOT_VERIFY_CACHE_HEADER]) {
    static const char what[] = MBEDTLS_VERSION_STRING "|" MICROPY_GIT_TAG "|" MICROPY_GIT_HASH "|"
        STRINGIFY(AZIOT_TLS_SOURCE_ID) "|" VERIFICATION_CODE_VERSION "|" STRINGIFY(AZIOT_TLS_PUBLIC_INVERSE);
    uint32_t h = 2166136261u;
    for (size_t i = 0; i + 1 < sizeof(what); i++) {
        h = (h ^ (unsigned char)what[i]) * 16777619u;
    }
    memcpy(out, "AZVC", 4);
    for (int i = 0; i < 4; i++) {
        out[4 + i] = (unsigned char)(h >> (24 - 8 * i));
    }
}

int __real_mbedtls_pk_verify_ext(mbedtls_pk_type_t type, const void *options, mbedtls_pk_context *ctx,
    mbedtls_md_type_t md_alg, const unsigned char *hash, size_t hash_len, const unsigned char *sig, size_t sig_len);

static void update_len(mbedtls_sha256_context *sha, size_t len) {
    unsigned char be[4] = { (unsigned char)(len >> 24), (unsigned char)(len >> 16), (unsigned char)(len >> 8),
                            (unsigned char)len };
    mbedtls_sha256_update(sha, be, sizeof(be));
}

// Each field goes in with its length first, so no two different inputs hash the same bytes.
static void update_field(mbedtls_sha256_context *sha, const unsigned char *data, size_t len) {
    update_len(sha, len);
    mbedtls_sha256_update(sha, data, len);
}

// The public key, as bytes; 0 when it cannot be written (then nothing is remembered).
static int update_key(mbedtls_sha256_context *sha, mbedtls_pk_context *pk) {
    mbedtls_pk_type_t kind = mbedtls_pk_get_type(pk);
    update_len(sha, (size_t)kind);
    #if defined(MBEDTLS_ECP_C) && !defined(MBEDTLS_PK_USE_PSA_EC_DATA)
    if (kind == MBEDTLS_PK_ECKEY || kind == MBEDTLS_PK_ECDSA) {
        const mbedtls_ecp_keypair *ec = mbedtls_pk_ec(*pk);
        unsigned char point[2 * MBEDTLS_ECP_MAX_BYTES + 1];
        size_t len = 0;
        if (mbedtls_ecp_write_public_key(ec, MBEDTLS_ECP_PF_UNCOMPRESSED, &len, point, sizeof(point)) != 0) {
            return 0;
        }
        update_len(sha, (size_t)mbedtls_ecp_keypair_get_group_id(ec));
        update_field(sha, point, len);
        return 1;
    }
    #endif
    #if defined(MBEDTLS_RSA_C)
    if (kind == MBEDTLS_PK_RSA) {
        const mbedtls_rsa_context *rsa = mbedtls_pk_rsa(*pk);
        unsigned char n[512], e[8];  // RSA-4096 at most; a larger key is checked every time
        size_t len = mbedtls_rsa_get_len(rsa);
        if (len > sizeof(n) || mbedtls_rsa_export_raw(rsa, n, len, NULL, 0, NULL, 0, NULL, 0, e, sizeof(e)) != 0) {
            return 0;
        }
        update_field(sha, n, len);
        update_field(sha, e, sizeof(e));
        return 1;
    }
    #endif
    return 0;
}

static int digest_of(unsigned char out[DIGEST_LEN], mbedtls_pk_type_t type, mbedtls_pk_context *pk,
    mbedtls_md_type_t md_alg, const unsigned char *hash, size_t hash_len, const unsigned char *sig, size_t sig_len) {
    mbedtls_sha256_context sha;
    mbedtls_sha256_init(&sha);
    int ok = mbedtls_sha256_starts(&sha, 0) == 0;
    if (ok) {
        update_len(&sha, (size_t)type);
        update_len(&sha, (size_t)md_alg);
        ok = update_key(&sha, pk);
    }
    if (ok) {
        update_field(&sha, hash, hash_len);
        update_field(&sha, sig, sig_len);
        ok = mbedtls_sha256_finish(&sha, out) == 0;
    }
    mbedtls_sha256_free(&sha);
    return ok;
}

int __wrap_mbedtls_pk_verify_ext(mbedtls_pk_type_t type, const void *options, mbedtls_pk_context *ctx,
    mbedtls_md_type_t md_alg, const unsigned char *hash, size_t hash_len, const unsigned char *sig, size_t sig_len) {
    unsigned char digest[DIGEST_LEN];
    // RSASSA-PSS options would be one more input: such checks are not remembered.
    int usable = AZIOT_TLS_VERIFY_CACHE > 0 && options == NULL
        && digest_of(digest, type, ctx, md_alg, hash, hash_len, sig, sig_len);
    if (usable) {
        mp_uint_t atomic = MICROPY_BEGIN_ATOMIC_SECTION();
        int at = ring_find(&kept, digest);
        if (at >= 0) {
            ring_refresh(&kept, at);
        }
        int hit = at >= 0 || ring_has(&pending, digest);
        hits += hit;
        MICROPY_END_ATOMIC_SECTION(atomic);
        if (hit) {
            return 0;
        }
    }
    int ret = __real_mbedtls_pk_verify_ext(type, options, ctx, md_alg, hash, hash_len, sig, sig_len);
    misses++;
    if (usable && ret == 0 && aziot_tls_handshake_is_mine()) {  // only a signature that verified
        mp_uint_t atomic = MICROPY_BEGIN_ATOMIC_SECTION();
        ring_add(&pending, digest);
        MICROPY_END_ATOMIC_SECTION(atomic);
    }
    return ret;
}

void aziot_verify_cache_drop_pending(void) {
    mp_uint_t atomic = MICROPY_BEGIN_ATOMIC_SECTION();
    pending.used = pending.next = 0;
    MICROPY_END_ATOMIC_SECTION(atomic);
}

void aziot_verify_cache_keep_pending(void) {
    mp_uint_t atomic = MICROPY_BEGIN_ATOMIC_SECTION();
    for (size_t i = 0; i < pending.used; i++) {
        if (!ring_has(&kept, pending.digest[i])) {
            ring_add(&kept, pending.digest[i]);
        }
    }
    pending.used = pending.next = 0;
    MICROPY_END_ATOMIC_SECTION(atomic);
}

void aziot_verify_cache_stats(size_t *entries, size_t *n_hits, size_t *n_misses) {
    *entries = kept.used + pending.used;
    *n_hits = hits;
    *n_misses = misses;
}

size_t aziot_verify_cache_export(unsigned char *out, size_t max_entries) {
    build_tag(out);
    out += AZIOT_VERIFY_CACHE_HEADER;
    mp_uint_t atomic = MICROPY_BEGIN_ATOMIC_SECTION();
    size_t n = kept.used < max_entries ? kept.used : max_entries;
    size_t oldest = kept.used < SLOTS ? 0 : kept.next;
    for (size_t i = 0; i < n; i++) {  // oldest first, so an import keeps the order of replacement
        memcpy(out + i * DIGEST_LEN, kept.digest[(oldest + kept.used - n + i) % SLOTS], DIGEST_LEN);
    }
    MICROPY_END_ATOMIC_SECTION(atomic);
    return AZIOT_VERIFY_CACHE_HEADER + n * DIGEST_LEN;
}

int aziot_verify_cache_import(const unsigned char *in, size_t len, size_t *added) {
    unsigned char tag[AZIOT_VERIFY_CACHE_HEADER];
    build_tag(tag);
    *added = 0;
    if (len < AZIOT_VERIFY_CACHE_HEADER || (len - AZIOT_VERIFY_CACHE_HEADER) % DIGEST_LEN) {
        return -1;
    }
    if (memcmp(in, tag, AZIOT_VERIFY_CACHE_HEADER) != 0) {
        return -2;
    }
    mp_uint_t atomic = MICROPY_BEGIN_ATOMIC_SECTION();
    for (size_t at = AZIOT_VERIFY_CACHE_HEADER; at < len && AZIOT_TLS_VERIFY_CACHE > 0; at += DIGEST_LEN) {
        if (!ring_has(&kept, in + at)) {
            ring_add(&kept, in + at);
            (*added)++;
        }
    }
    MICROPY_END_ATOMIC_SECTION(atomic);
    return 0;
}

void aziot_verify_cache_clear(void) {
    mp_uint_t atomic = MICROPY_BEGIN_ATOMIC_SECTION();
    memset(&kept, 0, sizeof(kept));
    memset(&pending, 0, sizeof(pending));
    hits = misses = 0;
    MICROPY_END_ATOMIC_SECTION(atomic);
}

// aziot_tls: TLS Maximum Fragment Length for MicroPython's `tls` module,
// without patching it.
//
// extmod/modtls_mbedtls.c builds every SSLContext with
// mbedtls_ssl_config_defaults(). The link wraps that call
// (-Wl,--wrap=mbedtls_ssl_config_defaults) so that client configurations
// also get mbedtls_ssl_conf_max_frag_len() with the length chosen here, and
// the ClientHello carries the RFC 6066 extension. Set it before creating
// the SSLContext:
//
//     import aziot_tls
//     aziot_tls.set_max_fragment_length(1024)    # 512, 1024, 2048, 4096; 0: off
//     ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
//
// A hub that ignores the extension (every standard IoT Hub) sends records of
// up to 16 KB; see "did the hub agree" below for what mbedTLS 3.6 does then
// and how this module keeps the receive buffer whole.
//
// It also reports the record buffers the firmware was built with and, when
// AZIOT_TLS_COUNT_ALLOC is on, how much heap mbedTLS holds (now, and at most
// since reset_peak()): the measurement behind the README's memory table.

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "py/objstr.h"
#include "py/runtime.h"

#if MICROPY_SSL_MBEDTLS

// The wrap-up hook reads and briefly sets private fields of the SSL context.
#define MBEDTLS_ALLOW_PRIVATE_ACCESS
#include "mbedtls/build_info.h"
#include "mbedtls/platform.h"
#include "mbedtls/ssl.h"
#include "mbedtls/version.h"

#include "owner.h"
#include "public_inverse.h"
#include "verify_cache.h"

// ESP-IDF builds mbedTLS from its sdkconfig instead (boards/ESP32_GENERIC/sdkconfig.aziot).
#if !defined(AZIOT_MBEDTLS_CONFIG_H) && !defined(NO_QSTR) && !defined(ESP_PLATFORM)
#error "aziot_tls needs the aziot mbedTLS config: build with MBEDTLS_CONFIG_FILE set to aziot_mbedtls_config.h"
#endif

#ifndef AZIOT_TLS_DEFAULT_MFL
#define AZIOT_TLS_DEFAULT_MFL (0)
#endif

// --- the fragment length applied to every client config ----------------------

static int aziot_mfl_bytes = AZIOT_TLS_DEFAULT_MFL;

static unsigned char mfl_code(int bytes) {
    switch (bytes) {
        case 512:
            return MBEDTLS_SSL_MAX_FRAG_LEN_512;
        case 1024:
            return MBEDTLS_SSL_MAX_FRAG_LEN_1024;
        case 2048:
            return MBEDTLS_SSL_MAX_FRAG_LEN_2048;
        case 4096:
            return MBEDTLS_SSL_MAX_FRAG_LEN_4096;
        default:
            return MBEDTLS_SSL_MAX_FRAG_LEN_NONE;
    }
}

int __real_mbedtls_ssl_config_defaults(mbedtls_ssl_config *conf, int endpoint, int transport, int preset);

int __wrap_mbedtls_ssl_config_defaults(mbedtls_ssl_config *conf, int endpoint, int transport, int preset) {
    int ret = __real_mbedtls_ssl_config_defaults(conf, endpoint, transport, preset);
    if (ret == 0 && endpoint == MBEDTLS_SSL_IS_CLIENT && aziot_mfl_bytes != 0) {
        ret = mbedtls_ssl_conf_max_frag_len(conf, mfl_code(aziot_mfl_bytes));
    }
    return ret;
}

// --- did the hub agree to the fragment length? -------------------------------------
//
// mbedTLS 3.6's TLS 1.2 client checks the server's echo of the extension
// (ssl_tls12_client.c, ssl_parse_max_fragment_length_ext) but records it
// nowhere, and after the handshake sizes its receive side from the length it
// asked for: mbedtls_ssl_get_input_max_frag_len() (ssl_tls.c) returns the
// configured MFL for a client past SERVER_HELLO_DONE, or, with none
// configured, MBEDTLS_TLS_EXT_ADV_CONTENT_LEN = min(IN, OUT) buffer. With
// MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH, mbedtls_ssl_handshake_free() then
// shrinks the receive buffer to that length. A server that ignored the
// extension (as a standard IoT Hub does) and sends 16 KB records then ends
// the connection with MBEDTLS_ERR_SSL_BAD_INPUT_DATA at the first record
// larger than what the client asked for, or larger than OUT without MFL.
//
// So this module reads the echo from the ServerHello as it arrives (the
// recv callback is wrapped through -Wl,--wrap=mbedtls_ssl_set_bio) and wraps
// mbedtls_ssl_handshake_wrapup: when the server did not echo the extension,
// the buffer resize at the end of the handshake is skipped for the receive
// buffer (the send buffer keeps its size, as it does without MFL), so the
// connection keeps the receive buffer the firmware was built with.

#define SNIFF_MAX ((size_t)200)  // a TLS 1.2 ServerHello with the extensions a hub sends fits

static struct {
    void *bio;  // MicroPython's socket behind the connection being watched
    mbedtls_ssl_context *ssl;
    uint8_t buf[SNIFF_MAX];
    uint16_t have;
    int8_t state;  // SNIFF_*
    uint16_t echoed;  // the fragment length the server agreed to, 0: none
} sniff;

enum { SNIFF_OFF, SNIFF_READING, SNIFF_DONE, SNIFF_UNKNOWN };

static mbedtls_ssl_recv_t *real_recv;

static const uint16_t mfl_bytes[] = { 0, 512, 1024, 2048, 4096 };

// The ServerHello at the start of the server's first record (RFC 5246 7.4.1.3).
static void sniff_parse(void) {
    const uint8_t *b = sniff.buf;
    if (sniff.have < 9) {
        return;
    }
    size_t record = (b[3] << 8) | b[4];
    size_t hello = ((size_t)b[6] << 16) | (b[7] << 8) | b[8];
    if (b[0] != MBEDTLS_SSL_MSG_HANDSHAKE || b[5] != MBEDTLS_SSL_HS_SERVER_HELLO || 4 + hello > record
        || 9 + hello > SNIFF_MAX) {
        sniff.state = SNIFF_UNKNOWN;  // not a ServerHello in one record: treated as "not echoed"
        return;
    }
    if (sniff.have < 9 + hello) {
        return;  // wait for the rest
    }
    size_t end = 9 + hello;
    size_t p = 9 + 2 + 32;  // version, random
    if (p >= end) {
        goto bad;
    }
    p += 1 + b[p];  // session id
    p += 2 + 1;  // cipher suite, compression
    sniff.state = SNIFF_DONE;
    sniff.echoed = 0;
    if (p == end) {
        return;  // no extensions
    }
    if (p + 2 > end) {
        goto bad;
    }
    size_t ext_end = p + 2 + ((b[p] << 8) | b[p + 1]);
    if (ext_end > end) {
        goto bad;
    }
    for (p += 2; p + 4 <= ext_end;) {
        unsigned type = (b[p] << 8) | b[p + 1];
        size_t len = (b[p + 2] << 8) | b[p + 3];
        p += 4;
        if (p + len > ext_end) {
            goto bad;
        }
        if (type == 1 && len == 1 && b[p] >= 1 && b[p] <= 4) {  // max_fragment_length (RFC 6066)
            sniff.echoed = mfl_bytes[b[p]];
        }
        p += len;
    }
    return;
bad:
    sniff.state = SNIFF_UNKNOWN;
    sniff.echoed = 0;
}

static int sniff_recv(void *ctx, unsigned char *buf, size_t len) {
    int n = real_recv(ctx, buf, len);
    if (n > 0 && ctx == sniff.bio && sniff.state == SNIFF_READING) {
        size_t room = SNIFF_MAX - sniff.have;
        size_t take = (size_t)n < room ? (size_t)n : room;
        memcpy(sniff.buf + sniff.have, buf, take);
        sniff.have += take;
        sniff_parse();
    }
    return n;
}

// --- whose handshake: the state kept for one (owner.h) ----------------------------
//
// The handshake this thread is running holds the small blocks kept for reuse and the signatures its
// chain verified, pending. mbedtls_ssl_handshake() is wrapped: each call (a non-blocking handshake makes
// many) names its context; a call for another context, or from another thread while none runs, starts
// over. The handshake ends at wrap-up (its signatures kept if the server's chain was accepted) or when
// its context is freed (a failed handshake; a finaliser at a soft reset).

static const void *volatile handshake_thread;
static mbedtls_ssl_context *handshake_ssl;

#if AZIOT_TLS_COUNT_ALLOC
static int recycling;  // only while this thread's handshake runs: what waits never outlives it
static void recycle_flush(void);
#endif

int aziot_tls_handshake_is_mine(void) {
    return aziot_holds(&handshake_thread);
}

static void handshake_begins(mbedtls_ssl_context *ssl) {
    if (aziot_holds(&handshake_thread) && handshake_ssl == ssl) {
        return;  // the same handshake, one more step
    }
    if (!aziot_claim(&handshake_thread)) {
        return;  // another thread's handshake holds it: this one runs without
    }
    #if AZIOT_TLS_COUNT_ALLOC
    recycle_flush();
    recycling = 1;
    #endif
    aziot_verify_cache_drop_pending();  // an earlier context of this thread (a refused offer) never finished
    handshake_ssl = ssl;
}

static void handshake_ends(mbedtls_ssl_context *ssl, int chain_accepted) {
    if (!aziot_holds(&handshake_thread) || handshake_ssl != ssl) {
        return;
    }
    #if AZIOT_TLS_COUNT_ALLOC
    recycling = 0;
    recycle_flush();  // the small blocks kept for the handshake go back
    #endif
    if (chain_accepted) {
        aziot_verify_cache_keep_pending();
    } else {
        aziot_verify_cache_drop_pending();
    }
    handshake_ssl = NULL;
    handshake_thread = NULL;
}

int __real_mbedtls_ssl_handshake(mbedtls_ssl_context *ssl);

int __wrap_mbedtls_ssl_handshake(mbedtls_ssl_context *ssl) {
    handshake_begins(ssl);
    return __real_mbedtls_ssl_handshake(ssl);
}

void __real_mbedtls_ssl_set_bio(mbedtls_ssl_context *ssl, void *p_bio, mbedtls_ssl_send_t *f_send,
    mbedtls_ssl_recv_t *f_recv, mbedtls_ssl_recv_timeout_t *f_recv_timeout);

void __wrap_mbedtls_ssl_set_bio(mbedtls_ssl_context *ssl, void *p_bio, mbedtls_ssl_send_t *f_send,
    mbedtls_ssl_recv_t *f_recv, mbedtls_ssl_recv_timeout_t *f_recv_timeout) {
    if (f_recv != NULL && f_recv != sniff_recv && ssl->conf != NULL
        && ssl->conf->endpoint == MBEDTLS_SSL_IS_CLIENT) {
        // One handshake is watched at a time, the newest; the others' reads pass through untouched.
        real_recv = f_recv;
        sniff.bio = p_bio;
        sniff.ssl = ssl;
        sniff.have = 0;
        sniff.echoed = 0;
        sniff.state = SNIFF_READING;
        f_recv = sniff_recv;
    }
    __real_mbedtls_ssl_set_bio(ssl, p_bio, f_send, f_recv, f_recv_timeout);
}

void __real_mbedtls_ssl_free(mbedtls_ssl_context *ssl);

// A context freed before its handshake finished (it failed; a finaliser at a soft reset) ends it.
void __wrap_mbedtls_ssl_free(mbedtls_ssl_context *ssl) {
    __real_mbedtls_ssl_free(ssl);
    handshake_ends(ssl, 0);
}

void __real_mbedtls_ssl_handshake_wrapup(mbedtls_ssl_context *ssl);


void __wrap_mbedtls_ssl_handshake_wrapup(mbedtls_ssl_context *ssl) {
    #if defined(MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH)
    mbedtls_ssl_config *conf = (mbedtls_ssl_config *)ssl->conf;  // ours: made by this SSLContext
    int agreed = sniff.ssl == ssl && sniff.state == SNIFF_DONE && sniff.echoed != 0;
    if (conf->endpoint == MBEDTLS_SSL_IS_CLIENT && !agreed) {
        // handle_buffer_resizing() leaves a NULL in_buf alone, and without a configured MFL
        // the send buffer's new length is min(IN, OUT) = its current one: nothing moves.
        unsigned char *in_buf = ssl->in_buf;
        unsigned char asked = conf->mfl_code;
        ssl->in_buf = NULL;
        conf->mfl_code = MBEDTLS_SSL_MAX_FRAG_LEN_NONE;
        __real_mbedtls_ssl_handshake_wrapup(ssl);
        ssl->in_buf = in_buf;
        conf->mfl_code = asked;
        handshake_ends(ssl, mbedtls_ssl_get_verify_result(ssl) == 0);
        return;
    }
    #endif
    __real_mbedtls_ssl_handshake_wrapup(ssl);
    // A chain accepted: verified against a trusted root (CERT_OPTIONAL completes handshakes it was not).
    handshake_ends(ssl, mbedtls_ssl_get_verify_result(ssl) == 0);
}

// --- counting mbedTLS's heap ------------------------------------------------------

#if AZIOT_TLS_COUNT_ALLOC

#ifndef AZIOT_TLS_UNDERLYING_CALLOC
#include <stdlib.h>
#define AZIOT_TLS_UNDERLYING_CALLOC calloc
#define AZIOT_TLS_UNDERLYING_FREE free
#else
#include "py/misc.h"  // m_tracked_calloc, m_tracked_free
#endif

// Each block carries its size in front, aligned for anything mbedTLS stores.
typedef union {
    size_t size;
    long long ll;
    long double ld;
    void *ptr;
} alloc_header_t;

static size_t heap_now;
static size_t heap_peak;
static size_t heap_blocks;

// Small blocks recycled during a handshake. ECC arithmetic allocates and frees tens of thousands of
// small bignum limb arrays per connect; where mbedTLS allocates from the GC heap (rp2) each of those
// is a gc_alloc and a gc_free, a fifth of an ECC reconnect's instructions. A freed small block waits
// in a list of its size class, within AZIOT_TLS_RECYCLE_MAX bytes in all, for the next request of
// that class. Only during a handshake: what waits goes back to the heap when it ends (wrapup, or the
// context freed: a failed handshake, a finaliser at a soft reset), and whenever live blocks and
// waiting ones together would pass the peak of live blocks so far: recycling never raises the peak.
// heap_now and heap_peak count what mbedTLS asked for and holds, as without recycling.
#ifndef AZIOT_TLS_RECYCLE_MAX
#define AZIOT_TLS_RECYCLE_MAX 2048
#endif
#define RECYCLE_STEP 8
#define RECYCLE_CLASSES 16  // blocks of 8, 16, ... 128 bytes
static void *recycled[RECYCLE_CLASSES];  // each block's first word links to the next
static size_t recycled_bytes;

static size_t recycle_class(size_t bytes) {  // RECYCLE_CLASSES or more: not recycled
    return bytes == 0 ? 0 : (bytes - 1) / RECYCLE_STEP;
}

static void recycle_flush(void) {
    for (size_t cls = 0; cls < RECYCLE_CLASSES; cls++) {
        while (recycled[cls] != NULL) {
            alloc_header_t *h = recycled[cls];
            recycled[cls] = *(void **)(h + 1);
            AZIOT_TLS_UNDERLYING_FREE(h);
        }
    }
    recycled_bytes = 0;
}

static void *counted(alloc_header_t *h, size_t bytes) {
    h->size = bytes;
    heap_now += bytes;
    heap_blocks += 1;
    if (heap_now > heap_peak) {
        heap_peak = heap_now;
    }
    return h + 1;
}

void *aziot_tls_calloc(size_t nmemb, size_t size) {
    if (size != 0 && nmemb > (SIZE_MAX - sizeof(alloc_header_t)) / size) {
        return NULL;
    }
    size_t bytes = nmemb * size;
    size_t cls = recycle_class(bytes);
    size_t capacity = cls < RECYCLE_CLASSES ? (cls + 1) * RECYCLE_STEP : bytes;  // any request of its class fits
    int mine = recycling && aziot_holds(&handshake_thread);  // the lists are the handshake thread's alone
    if (mine && cls < RECYCLE_CLASSES && recycled[cls] != NULL) {
        alloc_header_t *h = recycled[cls];
        recycled[cls] = *(void **)(h + 1);
        recycled_bytes -= capacity;
        memset(h + 1, 0, capacity);
        return counted(h, bytes);
    }
    if (mine && heap_now + recycled_bytes + bytes > heap_peak) {
        recycle_flush();
    }
    alloc_header_t *h = AZIOT_TLS_UNDERLYING_CALLOC(1, sizeof(alloc_header_t) + capacity);
    if (mine && h == NULL && recycled_bytes) {
        recycle_flush();  // what waits may be what the heap lacks
        h = AZIOT_TLS_UNDERLYING_CALLOC(1, sizeof(alloc_header_t) + capacity);
    }
    return h == NULL ? NULL : counted(h, bytes);
}

void aziot_tls_free(void *ptr) {
    if (ptr == NULL) {
        return;
    }
    alloc_header_t *h = (alloc_header_t *)ptr - 1;
    heap_now -= h->size;
    heap_blocks -= 1;
    size_t cls = recycle_class(h->size);
    size_t capacity = (cls + 1) * RECYCLE_STEP;
    if (recycling && aziot_holds(&handshake_thread) && cls < RECYCLE_CLASSES
        && recycled_bytes + capacity <= AZIOT_TLS_RECYCLE_MAX
        && heap_now + recycled_bytes + capacity <= heap_peak) {
        *(void **)ptr = recycled[cls];
        recycled[cls] = h;
        recycled_bytes += capacity;
        return;
    }
    AZIOT_TLS_UNDERLYING_FREE(h);
}

#endif

// --- Python API -----------------------------------------------------------------

static mp_obj_t aziot_tls_set_max_fragment_length(mp_obj_t bytes_in) {
    mp_int_t bytes = mp_obj_get_int(bytes_in);
    if (bytes != 0 && mfl_code(bytes) == MBEDTLS_SSL_MAX_FRAG_LEN_NONE) {
        mp_raise_ValueError(MP_ERROR_TEXT("max fragment length must be 512, 1024, 2048, 4096 or 0 (off)"));
    }
    // mbedTLS advertises at most the smaller of its two record buffers.
    if (bytes > MBEDTLS_SSL_IN_CONTENT_LEN || bytes > MBEDTLS_SSL_OUT_CONTENT_LEN) {
        mp_raise_msg_varg(&mp_type_ValueError,
            MP_ERROR_TEXT("max fragment length %d exceeds this firmware's TLS buffers (in %d, out %d)"),
            (int)bytes, MBEDTLS_SSL_IN_CONTENT_LEN, MBEDTLS_SSL_OUT_CONTENT_LEN);
    }
    aziot_mfl_bytes = bytes;
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(aziot_tls_set_max_fragment_length_obj, aziot_tls_set_max_fragment_length);

static mp_obj_t aziot_tls_max_fragment_length(void) {
    return MP_OBJ_NEW_SMALL_INT(aziot_mfl_bytes);
}
static MP_DEFINE_CONST_FUN_OBJ_0(aziot_tls_max_fragment_length_obj, aziot_tls_max_fragment_length);

static mp_obj_t aziot_tls_buffer_sizes(void) {
    mp_obj_t sizes[2] = {
        MP_OBJ_NEW_SMALL_INT(MBEDTLS_SSL_IN_CONTENT_LEN),
        MP_OBJ_NEW_SMALL_INT(MBEDTLS_SSL_OUT_CONTENT_LEN),
    };
    return mp_obj_new_tuple(2, sizes);
}
static MP_DEFINE_CONST_FUN_OBJ_0(aziot_tls_buffer_sizes_obj, aziot_tls_buffer_sizes);

// (bytes now, peak bytes, blocks now, bytes of freed small blocks kept for reuse), or None when
// built without the counter. Always present: the qstr scan does not see the mbedTLS config.
static mp_obj_t aziot_tls_heap(void) {
    #if AZIOT_TLS_COUNT_ALLOC
    mp_obj_t stats[4] = {
        mp_obj_new_int_from_uint(heap_now),
        mp_obj_new_int_from_uint(heap_peak),
        mp_obj_new_int_from_uint(heap_blocks),
        mp_obj_new_int_from_uint(recycled_bytes),
    };
    return mp_obj_new_tuple(4, stats);
    #else
    return mp_const_none;
    #endif
}
static MP_DEFINE_CONST_FUN_OBJ_0(aziot_tls_heap_obj, aziot_tls_heap);

static mp_obj_t aziot_tls_reset_peak(void) {
    #if AZIOT_TLS_COUNT_ALLOC
    heap_peak = heap_now;
    #endif
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_0(aziot_tls_reset_peak_obj, aziot_tls_reset_peak);

// The fragment length the server agreed to in the last client handshake: 0 when
// it ignored the extension (or none was asked for), None when the ServerHello
// could not be read (the receive buffer was then kept whole, as for 0).
static mp_obj_t aziot_tls_negotiated_max_fragment_length(void) {
    if (sniff.state != SNIFF_DONE) {
        return mp_const_none;
    }
    return MP_OBJ_NEW_SMALL_INT(sniff.echoed);
}
static MP_DEFINE_CONST_FUN_OBJ_0(aziot_tls_negotiated_max_fragment_length_obj, aziot_tls_negotiated_max_fragment_length);

// (entries, hits, misses) of the remembered certificate signatures (verify_cache.c).
static mp_obj_t aziot_tls_verify_cache(void) {
    size_t entries, hits, misses;
    aziot_verify_cache_stats(&entries, &hits, &misses);
    mp_obj_t stats[3] = {
        mp_obj_new_int_from_uint(entries),
        mp_obj_new_int_from_uint(hits),
        mp_obj_new_int_from_uint(misses),
    };
    return mp_obj_new_tuple(3, stats);
}
static MP_DEFINE_CONST_FUN_OBJ_0(aziot_tls_verify_cache_obj, aziot_tls_verify_cache);

// Forget every remembered signature: the next connect verifies the whole chain again.
static mp_obj_t aziot_tls_verify_cache_clear(void) {
    aziot_verify_cache_clear();
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_0(aziot_tls_verify_cache_clear_obj, aziot_tls_verify_cache_clear);

// The remembered signatures of handshakes that succeeded, as bytes to keep on flash across resets:
// a tag of this build (8 bytes), then 32 per signature, oldest first.
static mp_obj_t aziot_tls_verify_cache_export(void) {
    unsigned char data[AZIOT_VERIFY_CACHE_HEADER + 16 * AZIOT_VERIFY_CACHE_ENTRY];
    return mp_obj_new_bytes(data, aziot_verify_cache_export(data, 16));
}
static MP_DEFINE_CONST_FUN_OBJ_0(aziot_tls_verify_cache_export_obj, aziot_tls_verify_cache_export);

// What verify_cache_export() gave, in an earlier boot of this build; returns how many were new.
static mp_obj_t aziot_tls_verify_cache_import(mp_obj_t data_in) {
    mp_buffer_info_t data;
    mp_get_buffer_raise(data_in, &data, MP_BUFFER_READ);
    size_t added;
    switch (aziot_verify_cache_import(data.buf, data.len, &added)) {
        case 0:
            return mp_obj_new_int_from_uint(added);
        case -2:
            mp_raise_ValueError(MP_ERROR_TEXT("verify_cache_import: exported by another firmware build"));
        default:
            mp_raise_ValueError(MP_ERROR_TEXT("verify_cache_import: not an export (a tag, then 32-byte entries)"));
    }
}
static MP_DEFINE_CONST_FUN_OBJ_1(aziot_tls_verify_cache_import_obj, aziot_tls_verify_cache_import);

// Modular inverses computed in variable time inside ECDSA verification since boot (public_inverse.c).
static mp_obj_t aziot_tls_public_inverses(void) {
    return mp_obj_new_int_from_uint(aziot_public_inverse_count());
}
static MP_DEFINE_CONST_FUN_OBJ_0(aziot_tls_public_inverses_obj, aziot_tls_public_inverses);

static MP_DEFINE_STR_OBJ(aziot_tls_mbedtls_version_obj, MBEDTLS_VERSION_STRING);

static const mp_rom_map_elem_t aziot_tls_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_aziot_tls) },
    { MP_ROM_QSTR(MP_QSTR_set_max_fragment_length), MP_ROM_PTR(&aziot_tls_set_max_fragment_length_obj) },
    { MP_ROM_QSTR(MP_QSTR_max_fragment_length), MP_ROM_PTR(&aziot_tls_max_fragment_length_obj) },
    { MP_ROM_QSTR(MP_QSTR_negotiated_max_fragment_length), MP_ROM_PTR(&aziot_tls_negotiated_max_fragment_length_obj) },
    { MP_ROM_QSTR(MP_QSTR_buffer_sizes), MP_ROM_PTR(&aziot_tls_buffer_sizes_obj) },
    { MP_ROM_QSTR(MP_QSTR_MBEDTLS_VERSION), MP_ROM_PTR(&aziot_tls_mbedtls_version_obj) },
    { MP_ROM_QSTR(MP_QSTR_heap), MP_ROM_PTR(&aziot_tls_heap_obj) },
    { MP_ROM_QSTR(MP_QSTR_reset_peak), MP_ROM_PTR(&aziot_tls_reset_peak_obj) },
    { MP_ROM_QSTR(MP_QSTR_verify_cache), MP_ROM_PTR(&aziot_tls_verify_cache_obj) },
    { MP_ROM_QSTR(MP_QSTR_verify_cache_clear), MP_ROM_PTR(&aziot_tls_verify_cache_clear_obj) },
    { MP_ROM_QSTR(MP_QSTR_verify_cache_export), MP_ROM_PTR(&aziot_tls_verify_cache_export_obj) },
    { MP_ROM_QSTR(MP_QSTR_verify_cache_import), MP_ROM_PTR(&aziot_tls_verify_cache_import_obj) },
    { MP_ROM_QSTR(MP_QSTR_public_inverses), MP_ROM_PTR(&aziot_tls_public_inverses_obj) },
};
static MP_DEFINE_CONST_DICT(aziot_tls_globals, aziot_tls_globals_table);

const mp_obj_module_t aziot_tls_module = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&aziot_tls_globals,
};

MP_REGISTER_MODULE(MP_QSTR_aziot_tls, aziot_tls_module);

#endif // MICROPY_SSL_MBEDTLS

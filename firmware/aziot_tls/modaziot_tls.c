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
// It also reports the record buffers the firmware was built with and, when
// AZIOT_TLS_COUNT_ALLOC is on, how much heap mbedTLS holds (now, and at most
// since reset_peak()): the measurement behind the README's memory table.

#include <stddef.h>
#include <stdint.h>

#include "py/objstr.h"
#include "py/runtime.h"

#if MICROPY_SSL_MBEDTLS

#include "mbedtls/build_info.h"
#include "mbedtls/platform.h"
#include "mbedtls/ssl.h"
#include "mbedtls/version.h"

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

// --- counting mbedTLS's heap ------------------------------------------------------

#if AZIOT_TLS_COUNT_ALLOC

#ifndef AZIOT_TLS_UNDERLYING_CALLOC
#include <stdlib.h>
#define AZIOT_TLS_UNDERLYING_CALLOC calloc
#define AZIOT_TLS_UNDERLYING_FREE free
#else
void *AZIOT_TLS_UNDERLYING_CALLOC(size_t nmemb, size_t size);
void AZIOT_TLS_UNDERLYING_FREE(void *ptr);
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

void *aziot_tls_calloc(size_t nmemb, size_t size) {
    if (size != 0 && nmemb > (SIZE_MAX - sizeof(alloc_header_t)) / size) {
        return NULL;
    }
    size_t bytes = nmemb * size;
    alloc_header_t *h = AZIOT_TLS_UNDERLYING_CALLOC(1, sizeof(alloc_header_t) + bytes);
    if (h == NULL) {
        return NULL;
    }
    h->size = bytes;
    heap_now += bytes;
    heap_blocks += 1;
    if (heap_now > heap_peak) {
        heap_peak = heap_now;
    }
    return h + 1;
}

void aziot_tls_free(void *ptr) {
    if (ptr == NULL) {
        return;
    }
    alloc_header_t *h = (alloc_header_t *)ptr - 1;
    heap_now -= h->size;
    heap_blocks -= 1;
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

// (bytes now, peak bytes, blocks now), or None when built without the counter.
// Always present: the qstr scan does not see the mbedTLS config.
static mp_obj_t aziot_tls_heap(void) {
    #if AZIOT_TLS_COUNT_ALLOC
    mp_obj_t stats[3] = {
        mp_obj_new_int_from_uint(heap_now),
        mp_obj_new_int_from_uint(heap_peak),
        mp_obj_new_int_from_uint(heap_blocks),
    };
    return mp_obj_new_tuple(3, stats);
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

static MP_DEFINE_STR_OBJ(aziot_tls_mbedtls_version_obj, MBEDTLS_VERSION_STRING);

static const mp_rom_map_elem_t aziot_tls_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_aziot_tls) },
    { MP_ROM_QSTR(MP_QSTR_set_max_fragment_length), MP_ROM_PTR(&aziot_tls_set_max_fragment_length_obj) },
    { MP_ROM_QSTR(MP_QSTR_max_fragment_length), MP_ROM_PTR(&aziot_tls_max_fragment_length_obj) },
    { MP_ROM_QSTR(MP_QSTR_buffer_sizes), MP_ROM_PTR(&aziot_tls_buffer_sizes_obj) },
    { MP_ROM_QSTR(MP_QSTR_MBEDTLS_VERSION), MP_ROM_PTR(&aziot_tls_mbedtls_version_obj) },
    { MP_ROM_QSTR(MP_QSTR_heap), MP_ROM_PTR(&aziot_tls_heap_obj) },
    { MP_ROM_QSTR(MP_QSTR_reset_peak), MP_ROM_PTR(&aziot_tls_reset_peak_obj) },
};
static MP_DEFINE_CONST_DICT(aziot_tls_globals, aziot_tls_globals_table);

const mp_obj_module_t aziot_tls_module = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&aziot_tls_globals,
};

MP_REGISTER_MODULE(MP_QSTR_aziot_tls, aziot_tls_module);

#endif // MICROPY_SSL_MBEDTLS

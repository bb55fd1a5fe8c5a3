// Memoised signature checks for certificate-path validation (verify_cache.c).
#ifndef AZIOT_VERIFY_CACHE_H
#define AZIOT_VERIFY_CACHE_H

#include <stddef.h>

// Entries held, checks answered from them, checks computed (since boot or the last clear).
void aziot_verify_cache_stats(size_t *entries, size_t *hits, size_t *misses);
void aziot_verify_cache_clear(void);

#define AZIOT_VERIFY_CACHE_ENTRY 32
#define AZIOT_VERIFY_CACHE_HEADER 8  // "AZVC" and this build's tag

// The handshake's pending checks: kept (its chain was accepted; exported from now on), or dropped.
void aziot_verify_cache_keep_pending(void);
void aziot_verify_cache_drop_pending(void);
// The kept entries, oldest first (at most max_entries), after the header; the bytes written.
size_t aziot_verify_cache_export(unsigned char *out, size_t max_entries);
// An export of this build: 0, the new ones added to *added; -1 not header + whole entries; -2 another build's.
int aziot_verify_cache_import(const unsigned char *in, size_t len, size_t *added);

#endif

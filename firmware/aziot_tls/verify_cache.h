// Memoised signature checks for certificate-path validation (verify_cache.c).
#ifndef AZIOT_VERIFY_CACHE_H
#define AZIOT_VERIFY_CACHE_H

#include <stddef.h>

// Entries held, checks answered from them, checks computed (since boot or the last clear).
void aziot_verify_cache_stats(size_t *entries, size_t *hits, size_t *misses);
void aziot_verify_cache_clear(void);
// The entries, oldest first, 32 bytes each (at most max_entries); how many were written.
size_t aziot_verify_cache_export(unsigned char *out, size_t max_entries);
// Entries exported before (a file on flash): those not held yet are added, as if verified now.
size_t aziot_verify_cache_import(const unsigned char *in, size_t entries);
#define AZIOT_VERIFY_CACHE_ENTRY 32

#endif

// Memoised signature checks for certificate-path validation (verify_cache.c).
#ifndef AZIOT_VERIFY_CACHE_H
#define AZIOT_VERIFY_CACHE_H

#include <stddef.h>

// Entries held, checks answered from them, checks computed (since boot or the last clear).
void aziot_verify_cache_stats(size_t *entries, size_t *hits, size_t *misses);
void aziot_verify_cache_clear(void);

#endif

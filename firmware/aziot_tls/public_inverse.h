// Variable-time modular inverses inside ECDSA verification (public_inverse.c).
#ifndef AZIOT_PUBLIC_INVERSE_H
#define AZIOT_PUBLIC_INVERSE_H

#include <stddef.h>

// AZIOT_TLS_PUBLIC_INVERSE=0 turns the fast path off, to measure what it saves.
#ifndef AZIOT_TLS_PUBLIC_INVERSE
#define AZIOT_TLS_PUBLIC_INVERSE (1)
#endif

// Inverses computed in variable time since boot (0 where mbedTLS's are already variable-time).
size_t aziot_public_inverse_count(void);

#endif

// Variable-time modular inverses inside ECDSA verification (public_inverse.c).
#ifndef AZIOT_PUBLIC_INVERSE_H
#define AZIOT_PUBLIC_INVERSE_H

#include <stddef.h>

// Inverses computed in variable time since boot (0 where mbedTLS's are already variable-time).
size_t aziot_public_inverse_count(void);

#endif

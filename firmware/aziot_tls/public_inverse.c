// Variable-time modular inverses for ECDSA verification, where every value is public.
//
// mbedTLS 3.6.5 made every modular inversion constant-time
// (mbedtls_mpi_gcd_modinv_odd; ChangeLog 3.6.5, CVE-2025-54764, a timing
// attack on RSA's private inversions). ECDSA verification inverts only
// public values: the signature's s modulo n, and the Jacobian Z coordinates
// of points computed from the signature, the public key and the hash
// (mbedtls_ecp_muladd, which ecp.h says "does not guarantee a constant
// execution flow and timing"). Each constant-time inverse on P-256 costs
// about 1.9 M instructions on a 32-bit build and a verification makes six,
// a third of the verification; mbedTLS 3.6.4 and earlier
// inverted these same values in variable time.
//
// So, while mbedtls_ecdsa_read_signature runs (the verify path pk_wrap.c
// takes for certificate signatures and the ServerKeyExchange alike), the
// inverses this thread asks for come from a binary extended Euclid here. A
// result is used only after A * I mod N == 1 is checked, so a fault here
// costs time, never a wrong inverse; anything the fast path cannot do goes
// to mbedTLS's own function. Signing, ECDH and RSA -- secrets -- never take
// this path: it is entered only inside verification, and only by the thread
// (MicroPython thread or core) that entered it.
//
// The hooks: -Wl,--wrap=mbedtls_ecdsa_read_signature (called from pk_wrap.c)
// and -Wl,--wrap=mbedtls_mpi_gcd_modinv_odd (called from ecp.c and ecdsa.c).

#include <stddef.h>
#include <string.h>

// The limbs of an MPI are read and written here, as bignum.c does.
#define MBEDTLS_ALLOW_PRIVATE_ACCESS
#include "mbedtls/build_info.h"
#include "mbedtls/bignum.h"
#include "mbedtls/ecdsa.h"

#include "owner.h"
#include "public_inverse.h"

// mbedTLS before 3.6.5 has no mbedtls_mpi_gcd_modinv_odd, and inverts in variable time already. Without
// MicroPython threads there is no thread identity to tell a verification from another task's mbedTLS work.
#define HAVE_CT_INVERSE (MBEDTLS_VERSION_NUMBER >= 0x03060500)
#if HAVE_CT_INVERSE && defined(MBEDTLS_ECDSA_C) && MICROPY_PY_THREAD && AZIOT_TLS_PUBLIC_INVERSE
#define FAST_PATH 1
#else
#define FAST_PATH 0
#endif

static size_t fast_inverses;

// The thread inside a verification (owner.h): claimed from NULL and cleared by that thread only.
static const void *volatile verifying_thread;

size_t aziot_public_inverse_count(void) {
    return fast_inverses;
}

#if defined(MBEDTLS_ECDSA_C)
int __real_mbedtls_ecdsa_read_signature(mbedtls_ecdsa_context *ctx, const unsigned char *hash, size_t hlen,
    const unsigned char *sig, size_t slen);

int __wrap_mbedtls_ecdsa_read_signature(mbedtls_ecdsa_context *ctx, const unsigned char *hash, size_t hlen,
    const unsigned char *sig, size_t slen) {
    #if FAST_PATH
    // Another thread verifying at the same time: that one is served alone. Nested: the outer one clears.
    int mine = !aziot_holds(&verifying_thread) && aziot_claim(&verifying_thread);
    int ret = __real_mbedtls_ecdsa_read_signature(ctx, hash, hlen, sig, slen);
    if (mine) {
        verifying_thread = NULL;
    }
    return ret;
    #else
    return __real_mbedtls_ecdsa_read_signature(ctx, hash, hlen, sig, slen);
    #endif
}
#endif

#if FAST_PATH

// Limb arithmetic on the stack, so the fast path takes no heap: at most a 521-bit modulus.
#define LIMB_BITS (8 * sizeof(mbedtls_mpi_uint))
#define MAX_LIMBS ((521 + LIMB_BITS - 1) / LIMB_BITS)

static int is_zero(const mbedtls_mpi_uint *a, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (a[i]) {
            return 0;
        }
    }
    return 1;
}

static int is_one(const mbedtls_mpi_uint *a, size_t n) {
    return a[0] == 1 && is_zero(a + 1, n - 1);
}

static int compare(const mbedtls_mpi_uint *a, const mbedtls_mpi_uint *b, size_t n) {
    for (size_t i = n; i-- > 0;) {
        if (a[i] != b[i]) {
            return a[i] > b[i] ? 1 : -1;
        }
    }
    return 0;
}

// a += b; the carry out.
static mbedtls_mpi_uint add(mbedtls_mpi_uint *a, const mbedtls_mpi_uint *b, size_t n) {
    mbedtls_mpi_uint carry = 0;
    for (size_t i = 0; i < n; i++) {
        mbedtls_mpi_uint sum = a[i] + carry;
        carry = sum < carry;
        a[i] = sum + b[i];
        carry += a[i] < sum;
    }
    return carry;
}

// a -= b; the borrow out.
static mbedtls_mpi_uint sub(mbedtls_mpi_uint *a, const mbedtls_mpi_uint *b, size_t n) {
    mbedtls_mpi_uint borrow = 0;
    for (size_t i = 0; i < n; i++) {
        mbedtls_mpi_uint diff = a[i] - borrow;
        borrow = a[i] < borrow;
        borrow += diff < b[i];
        a[i] = diff - b[i];
    }
    return borrow;
}

// a = (top:a) >> 1.
static void halve(mbedtls_mpi_uint *a, size_t n, mbedtls_mpi_uint top) {
    for (size_t i = 0; i < n; i++) {
        mbedtls_mpi_uint next = i + 1 < n ? a[i + 1] : top;
        a[i] = (a[i] >> 1) | (next << (LIMB_BITS - 1));
    }
}

// x = x / 2 mod N, x in [0, N), N odd.
static void halve_mod(mbedtls_mpi_uint *x, const mbedtls_mpi_uint *N, size_t n) {
    mbedtls_mpi_uint carry = (x[0] & 1) ? add(x, N, n) : 0;
    halve(x, n, carry);
}

// x = x - y mod N, x and y in [0, N): a borrow wraps by 2^k, adding N wraps back.
static void sub_mod(mbedtls_mpi_uint *x, const mbedtls_mpi_uint *y, const mbedtls_mpi_uint *N, size_t n) {
    if (sub(x, y, n)) {
        add(x, N, n);
    }
}

// x = x + y mod N, x and y in [0, N).
static void add_mod(mbedtls_mpi_uint *x, const mbedtls_mpi_uint *y, const mbedtls_mpi_uint *N, size_t n) {
    if (add(x, y, n) || compare(x, N, n) >= 0) {
        sub(x, N, n);
    }
}

// I = A^-1 mod N by binary extended Euclid, in variable time; N odd, 0 < A < N. 0, or
// MBEDTLS_ERR_MPI_NOT_ACCEPTABLE when it cannot answer (then mbedTLS's own function does).
// Invariants: x1 * A == u and x2 * A == v (mod N), x1 and x2 in [0, N).
static int inverse_variable_time(mbedtls_mpi *I, const mbedtls_mpi *A, const mbedtls_mpi *N) {
    size_t n = (mbedtls_mpi_bitlen(N) + LIMB_BITS - 1) / LIMB_BITS;
    if (n == 0 || n > MAX_LIMBS || A->MBEDTLS_PRIVATE(s) < 0 || N->MBEDTLS_PRIVATE(s) < 0) {
        return MBEDTLS_ERR_MPI_NOT_ACCEPTABLE;
    }
    mbedtls_mpi_uint a[MAX_LIMBS] = {0}, m[MAX_LIMBS] = {0}, u[MAX_LIMBS], v[MAX_LIMBS];
    mbedtls_mpi_uint x1[MAX_LIMBS] = {1}, x2[MAX_LIMBS] = {0};
    for (size_t i = 0; i < n; i++) {  // A < N, so A has no limb above n that is not zero
        a[i] = i < A->MBEDTLS_PRIVATE(n) ? A->MBEDTLS_PRIVATE(p)[i] : 0;
        m[i] = N->MBEDTLS_PRIVATE(p)[i];
    }
    memcpy(u, a, sizeof(u));
    memcpy(v, m, sizeof(v));
    // Each round halves u * v at least once: a bound that holds, should the maths not.
    size_t rounds = 2 * n * LIMB_BITS + 2;
    while (!is_zero(u, n)) {
        if (rounds-- == 0) {
            return MBEDTLS_ERR_MPI_NOT_ACCEPTABLE;
        }
        while (!(u[0] & 1)) {  // u != 0, so this ends
            halve(u, n, 0);
            halve_mod(x1, m, n);
        }
        while (!(v[0] & 1)) {
            halve(v, n, 0);
            halve_mod(x2, m, n);
        }
        if (compare(u, v, n) >= 0) {
            sub(u, v, n);
            sub_mod(x1, x2, m, n);
        } else {
            sub(v, u, n);
            sub_mod(x2, x1, m, n);
        }
    }
    // v = gcd(A, N): 1 or no inverse. Then, the answer is used only if it is one: r = A * x2 mod N,
    // by doubling and adding over x2's bits, must be 1 (r starts as u, now zero).
    if (!is_one(v, n)) {
        return MBEDTLS_ERR_MPI_NOT_ACCEPTABLE;
    }
    mbedtls_mpi_uint *r = u;
    for (size_t bit = n * LIMB_BITS; bit-- > 0;) {
        add_mod(r, r, m, n);
        if ((x2[bit / LIMB_BITS] >> (bit % LIMB_BITS)) & 1) {
            add_mod(r, a, m, n);
        }
    }
    if (!is_one(r, n) || compare(x2, m, n) >= 0) {
        return MBEDTLS_ERR_MPI_NOT_ACCEPTABLE;
    }
    // As mbedTLS leaves it: N's limbs at least, positive.
    int ret = mbedtls_mpi_grow(I, n);
    if (ret == 0) {
        ret = mbedtls_mpi_lset(I, 0);  // zeroes every limb and sets the sign
    }
    if (ret == 0) {
        memcpy(I->MBEDTLS_PRIVATE(p), x2, n * sizeof(mbedtls_mpi_uint));
    }
    return ret;
}

#endif // FAST_PATH

#if HAVE_CT_INVERSE
int __real_mbedtls_mpi_gcd_modinv_odd(mbedtls_mpi *G, mbedtls_mpi *I, const mbedtls_mpi *A, const mbedtls_mpi *N);

int __wrap_mbedtls_mpi_gcd_modinv_odd(mbedtls_mpi *G, mbedtls_mpi *I, const mbedtls_mpi *A, const mbedtls_mpi *N) {
    // Only an inverse (no gcd asked for) of 0 < A < N, N odd, inside this thread's verification. I may be A:
    // inverse_variable_time reads A before it writes I.
    #if FAST_PATH
    if (aziot_holds(&verifying_thread) && G == NULL && I != NULL && I != N
        && mbedtls_mpi_get_bit(N, 0) == 1 && mbedtls_mpi_cmp_int(A, 0) > 0 && mbedtls_mpi_cmp_mpi(A, N) < 0
        && inverse_variable_time(I, A, N) == 0) {
        fast_inverses++;
        return 0;
    }
    #endif
    return __real_mbedtls_mpi_gcd_modinv_odd(G, I, A, N);
}

#endif // HAVE_CT_INVERSE

// Which thread a piece of aziot_tls's state belongs to.
//
// MicroPython's Unix port runs threads without a GIL and rp2 runs one on each
// core, so two TLS handshakes (or verifications) can run at once. The state
// that speeds one up -- small blocks kept for reuse, signatures pending until
// their handshake succeeds, the fast inverses -- belongs to one thread at a
// time: the one that claimed it. Any other runs as if these modules were not
// there. MicroPython's thread state identifies a thread: per thread on the
// Unix port, per core on rp2, and NULL in a task MicroPython did not start
// (ESP-IDF's own), which never claims anything.
#ifndef AZIOT_OWNER_H
#define AZIOT_OWNER_H

#include "py/mphal.h"
#include "py/mpstate.h"

static inline const void *aziot_this_thread(void) {
    #if MICROPY_PY_THREAD
    return mp_thread_get_state();
    #else
    return &mp_state_ctx.thread;
    #endif
}

// *owner becomes this thread if it was free (or already this thread's): 1; another thread holds it: 0.
static inline int aziot_claim(const void *volatile *owner) {
    const void *me = aziot_this_thread();
    if (me == NULL) {
        return 0;
    }
    mp_uint_t atomic = MICROPY_BEGIN_ATOMIC_SECTION();
    int mine = *owner == NULL || *owner == me;
    if (mine) {
        *owner = me;
    }
    MICROPY_END_ATOMIC_SECTION(atomic);
    return mine;
}

static inline int aziot_holds(const void *volatile *owner) {
    const void *held = *owner;
    return held != NULL && held == aziot_this_thread();
}

#endif

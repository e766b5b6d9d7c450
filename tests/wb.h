/* Helpers for white-box tests, which #include "../probe.c" before this
 * header (the Makefile links probe.c as an archive, so the archive's copy
 * is not pulled in).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef LAGPROBE_TEST_WB_H
#define LAGPROBE_TEST_WB_H

#include "harness.h"

/* A probe without a watchdog thread: the test drives it. */
static inline lagprobe_t *wb_probe(void) {
        char errstr[256];
        lagprobe_config_t pc;
        lagprobe_config_init(&pc);
        pc.watchdog_interval_ms = 0;
        lagprobe_t *p = lagprobe_new(&pc, errstr, sizeof errstr);
        if (!p)
                fail_msg("lagprobe_new: %s", errstr);
        return p;
}

/* Mark (topic, partition) assigned, as a rebalance would. */
static inline void wb_assign(lagprobe_t *p, const char *topic, int32_t partition) {
        pthread_mutex_lock(&p->wlock);
        int i = lp_slot_find(p, topic, partition, 1);
        if (i >= 0)
                ST(lp_slot_at(p, (uint32_t)i)->assigned, 1);
        pthread_mutex_unlock(&p->wlock);
        assert_true(i >= 0);
}

#endif

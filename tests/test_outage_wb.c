/* White-box: which brokers count as down (health reason brokers_down) and
 * which partitions the watermark refresher may ask, from crafted
 * statistics documents fed to lp_stats_parse() (this file
 * #includes probe.c; the Makefile links probe.c as an archive, so the
 * archive's copy is not pulled in).
 * Rules under test: a broker counts only when the consumer needs it (the
 * leader of an assigned partition, or the group coordinator from the
 * logical "GroupCoordinator" entry), only once it has been seen not UP for
 * LP_BDOWN_GRACE_US by the statistics' own clock, and it is forgotten at
 * the first document that shows it UP again.
 * SPDX-License-Identifier: BSD-2-Clause */
#define _POSIX_C_SOURCE 200809L

#include "../probe.c"

#include "wb.h"

/* A document at statistics time ts_s seconds: brokers 1 and 2 in the
 * given states, the coordinator (id coord, -1 unknown) in its state;
 * partitions 0 and 1 led by broker 1 and 2, partition 2 by broker 2. */
static void feed(lagprobe_t *p, double ts_s, const char *b1, const char *b2,
                 int coord, const char *cst) {
        char doc[2048];
        snprintf(doc, sizeof doc,
                 "{\"name\":\"c#consumer-1\",\"ts\":%lld,\"brokers\":{"
                 "\"h:9092/1\":{\"nodeid\":1,\"state\":\"%s\","
                 "\"source\":\"learned\",\"toppars\":{}},"
                 "\"h:9092/2\":{\"nodeid\":2,\"state\":\"%s\","
                 "\"source\":\"learned\",\"toppars\":{}},"
                 "\"GroupCoordinator\":{\"nodeid\":%d,\"state\":\"%s\","
                 "\"source\":\"logical\",\"toppars\":{}}},"
                 "\"topics\":{\"t\":{\"topic\":\"t\",\"partitions\":{"
                 "\"0\":{\"partition\":0,\"leader\":1,\"hi_offset\":5},"
                 "\"1\":{\"partition\":1,\"leader\":2,\"hi_offset\":5},"
                 "\"2\":{\"partition\":2,\"leader\":2,\"hi_offset\":5}}}},"
                 "\"cgrp\":{\"state\":\"up\"}}",
                 (long long)(ts_s * 1e6), b1, b2, coord, cst);
        assert_int_equal(lp_stats_parse(p, doc, strlen(doc)), 0);
}

/* The published ids, as a bit set (ids 0..31). */
static unsigned down_set(lagprobe_t *p) {
        h_snap_t hs;
        h_snap(p, &hs);
        unsigned m = 0;
        for (int i = 0; i < hs.s.brokers_down_cnt; i++)
                m |= 1u << hs.s.brokers_down[i];
        assert_true(hs.s.brokers_down_cnt <= 8);
        return m;
}

static void test_needed_brokers_only(void **state) {
        (void)state;
        lagprobe_t *p = wb_probe();
        wb_assign(p, "t", 0);
        /* Broker 2 leads only partition 2, which is not assigned. */
        feed(p, 10, "UP", "DOWN", 1, "UP");
        feed(p, 12, "UP", "DOWN", 1, "UP");
        assert_int_equal(down_set(p), 0);
        /* Once partition 1 is assigned, broker 2 is needed. */
        wb_assign(p, "t", 1);
        feed(p, 13, "UP", "DOWN", 1, "UP");
        assert_int_equal(down_set(p), 0); /* not yet a second */
        feed(p, 14, "UP", "TRY_CONNECT", 1, "UP");
        assert_int_equal(down_set(p), 1u << 2);
        /* Unbound (never attached): no health reason, the ids are shown. */
        h_snap_t hs;
        h_snap(p, &hs);
        assert_false(hs.s.health_reasons & LAGPROBE_REASON_BROKERS_DOWN);
        /* UP again: forgotten at once. */
        feed(p, 15, "UP", "UP", 1, "UP");
        assert_int_equal(down_set(p), 0);
        lagprobe_destroy(p);
}

static void test_coordinator(void **state) {
        (void)state;
        lagprobe_t *p = wb_probe();
        wb_assign(p, "t", 0);
        /* Coordinator unknown (-1): nothing to name. */
        feed(p, 1, "UP", "UP", -1, "INIT");
        feed(p, 3, "UP", "UP", -1, "INIT");
        assert_int_equal(down_set(p), 0);
        assert_int_equal(LD(p->g_coord_down), 0);
        /* Coordinator 2 unreachable while broker 2 leads nothing assigned
         * to us: still needed. */
        feed(p, 4, "UP", "UP", 2, "CONNECT");
        assert_int_equal(LD(p->g_coord_down), 1); /* no refresh meanwhile */
        feed(p, 5.5, "UP", "UP", 2, "TRY_CONNECT");
        assert_int_equal(down_set(p), 1u << 2);
        /* The whole cluster down: leader and coordinator, named once. */
        feed(p, 6, "DOWN", "DOWN", 1, "DOWN");
        assert_int_equal(down_set(p), 0); /* broker 2 no longer needed */
        feed(p, 7.2, "DOWN", "DOWN", 1, "DOWN");
        assert_int_equal(down_set(p), 1u << 1);
        lagprobe_destroy(p);
}

static void test_short_reconnect(void **state) {
        (void)state;
        lagprobe_t *p = wb_probe();
        wb_assign(p, "t", 0);
        feed(p, 1, "CONNECT", "UP", 2, "UP");
        feed(p, 1.5, "UP", "UP", 2, "UP");
        /* Down again: the second starts over. */
        feed(p, 2.2, "DOWN", "UP", 2, "UP");
        feed(p, 2.9, "DOWN", "UP", 2, "UP");
        assert_int_equal(down_set(p), 0);
        feed(p, 3.3, "DOWN", "UP", 2, "UP");
        assert_int_equal(down_set(p), 1u << 1);
        lagprobe_destroy(p);
}

/* The refresher asks only partitions whose leader is UP. */
static void test_leader_state_per_partition(void **state) {
        (void)state;
        lagprobe_t *p = wb_probe();
        wb_assign(p, "t", 0);
        wb_assign(p, "t", 1);
        feed(p, 1, "UP", "DOWN", 1, "UP");
        pthread_mutex_lock(&p->wlock);
        lp_slot_t *s0 = lp_slot_at(p, (uint32_t)lp_slot_find(p, "t", 0, 0));
        lp_slot_t *s1 = lp_slot_at(p, (uint32_t)lp_slot_find(p, "t", 1, 0));
        pthread_mutex_unlock(&p->wlock);
        assert_int_equal(LD(s0->s_leader), 1);
        assert_int_equal(LD(s0->s_leader_up), 1);
        assert_int_equal(LD(s1->s_leader), 2);
        assert_int_equal(LD(s1->s_leader_up), 0);
        assert_int_equal(LD(s1->s_stale), 1); /* leader down: figure old */
        feed(p, 2, "UP", "UP", 1, "UP");
        assert_int_equal(LD(s1->s_leader_up), 1);
        lagprobe_destroy(p);
}

int main(void) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_needed_brokers_only),
            cmocka_unit_test(test_coordinator),
            cmocka_unit_test(test_short_reconnect),
            cmocka_unit_test(test_leader_state_per_partition),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}

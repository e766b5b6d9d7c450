/* White-box test of the renderers' printf-free number formatting
 * (lp_fmt_i64, lp_fmt_f3, lp_fmt_g9, lp_fmt_prom) against snprintf(), and
 * of the JSON document's "consumed" figure, which is filled in after the
 * partitions (lp_json_fill): at every buffer size around it the output must
 * be a prefix of the full text. The probe's clock is frozen, so that two
 * renders of one state are identical. And the order of partitions in the
 * snapshot, the JSON and the Prometheus text: by topic, then partition,
 * whatever order they were learned in.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Built like every tests/test_*.c; probe.c is linked as an archive member,
 * which the linker leaves out because this file defines every lagprobe
 * symbol itself by including it. */
#define clock_gettime t_clock_gettime
#include "../probe.c"
#undef clock_gettime

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"

int t_clock_gettime(clockid_t id, struct timespec *ts) {
        ts->tv_sec = id == CLOCK_REALTIME ? 1700000000 : 100000;
        ts->tv_nsec = 0;
        return 0;
}


static uint64_t rs = 0x2545F4914F6CDD1Dull;

static uint64_t rnd(void) {
        rs ^= rs << 13;
        rs ^= rs >> 7;
        rs ^= rs << 17;
        return rs;
}

/* Doubles as the probe produces them (k / 1000, seconds from ms), ties of
 * the decimal rounding, and arbitrary bit patterns. */
static double some_double(int kind) {
        static const double p10[] = {1, 10, 100, 1e3, 1e4, 1e5, 1e6,
                                     1e7, 1e8, 1e9, 1e10, 1e11, 1e12};
        uint64_t u = rnd();
        double v;
        switch (kind % 5) {
        case 0:
                return (double)(int64_t)(u % 2000000000000ull) / 1000.0 -
                       1e9;
        case 1:
                memcpy(&v, &u, sizeof v);
                return isfinite(v) ? v : 0.5;
        case 2:
                return (double)(u % 100000000) / p10[rnd() % 13];
        case 3:
                return ((double)(u % 1000000000) + 0.5) / p10[rnd() % 13];
        default:
                return (double)(u >> 11) / (double)(1ull << (rnd() % 60));
        }
}

static void test_numbers_match_printf(void **state) {
        (void)state;
        char a[64], b[64];
        static const double edge[] = {
            0.0,    -0.0,   0.5,          -0.5,        0.0005, -0.0005,
            0.0015, 1e-4,   9.9999999995e-5, 999999999.5, 99999999.95,
            1e9,    1e15,   1e-300,       2.675,       1.0005, 1e300};
        for (size_t i = 0; i < sizeof edge / sizeof edge[0] + 300000; i++) {
                double v = i < sizeof edge / sizeof edge[0]
                               ? edge[i]
                               : some_double((int)i);
                size_t n = lp_fmt_g9(a, v);
                a[n] = 0;
                snprintf(b, sizeof b, "%.9g", v);
                if (strcmp(a, b))
                        H_FAIL("%%.9g of %.17g: %s, printf %s", v, a, b);
                n = lp_fmt_f3(a, v);
                a[n] = 0;
                if (snprintf(b, sizeof b, "%.3f", v) < 32 && strcmp(a, b))
                        H_FAIL("%%.3f of %.17g: %s, printf %s", v, a, b);
                n = lp_fmt_prom(a, v);
                a[n] = 0;
                if (v > -9e15 && v < 9e15 && v == (double)(int64_t)v)
                        snprintf(b, sizeof b, "%" PRId64, (int64_t)v);
                else
                        snprintf(b, sizeof b, "%.9g", v);
                if (strcmp(a, b))
                        H_FAIL("sample value %.17g: %s, expected %s", v, a, b);
                int64_t k = (int64_t)rnd() >> (rnd() % 64);
                if (i < 3)
                        k = i == 0 ? INT64_MIN : i == 1 ? INT64_MAX : 0;
                n = lp_fmt_i64(a, k);
                a[n] = 0;
                snprintf(b, sizeof b, "%" PRId64, k);
                if (strcmp(a, b))
                        H_FAIL("%" PRId64 ": %s", k, a);
        }
}

/* A probe without its watchdog thread: nothing changes it behind the test. */
static lagprobe_t *quiet_probe(void) {
        lagprobe_config_t pc;
        lagprobe_config_init(&pc);
        pc.watchdog_interval_ms = 0;
        char errstr[256];
        lagprobe_t *p = lagprobe_new(&pc, errstr, sizeof errstr);
        assert_non_null(p);
        return p;
}

/* Every size from 1 to the full length + 1 around "consumed" and the end:
 * the same length, NUL-terminated, a prefix of the full text. */
static void check_sizes(lagprobe_t *p) {
        size_t n = lagprobe_snapshot_json(p, NULL, 0);
        char *full = malloc(n + 1);
        assert_non_null(full);
        assert_int_equal(lagprobe_snapshot_json(p, full, n + 1), n);
        assert_int_equal(strlen(full), n);
        const char *c = strstr(full, "},\"consumed\":");
        assert_non_null(c);
        size_t at = (size_t)(c - full) + 13;
        assert_true(full[at] >= '0' && full[at] <= '9');
        for (size_t sz = 1; sz <= n + 1; sz++) {
                if (!(sz < at + 48 || sz + 48 > n))
                        sz = n - 48;
                char *b = malloc(sz);
                assert_non_null(b);
                size_t r = lagprobe_snapshot_json(p, b, sz);
                size_t cut = n < sz - 1 ? n : sz - 1;
                if (r != n || b[cut] != 0 || memcmp(b, full, cut))
                        H_FAIL("size %zu: length %zu of %zu, or not a prefix",
                             sz, r, n);
                free(b);
        }
        free(full);
}

static void test_json_consumed_fill(void **state) {
        (void)state;
        lagprobe_t *p = quiet_probe();
        /* consumed from 1 digit to 19: every shift of the text. */
        int64_t totals[] = {0, 7, 12345, 999999999999, INT64_MAX / 4};
        for (int i = 0; i < 3; i++) {
                pthread_mutex_lock(&p->wlock);
                int si = lp_slot_find(p, "t\"x", i, 1);
                pthread_mutex_unlock(&p->wlock);
                assert_true(si >= 0);
                ST(lp_slot_at(p, (uint32_t)si)->assigned, i != 1);
        }
        for (size_t k = 0; k < sizeof totals / sizeof totals[0]; k++) {
                for (uint32_t i = 0; i < 3; i++)
                        ST(lp_slot_at(p, i)->c_total,
                           i == 1 ? totals[k] - totals[k] / 3 : totals[k] / 6);
                lagprobe_snapshot_t s;
                lagprobe_snapshot_init(&s, NULL, 0);
                assert_int_equal(lagprobe_snapshot(p, &s), 0);
                int64_t want = totals[k] - totals[k] / 3 + 2 * (totals[k] / 6);
                assert_int_equal(s.consumed, want);
                char num[32], *full = malloc(1 << 16);
                assert_non_null(full);
                lagprobe_snapshot_json(p, full, 1 << 16);
                snprintf(num, sizeof num, "},\"consumed\":%" PRId64 ",", want);
                if (!strstr(full, num))
                        H_FAIL("no %s in the JSON", num);
                free(full);
                check_sizes(p);
        }
        lagprobe_destroy(p);
}

/* ======================================================================
 * Partitions in (topic, partition) order in every output, whatever order
 * they were learned in
 * ==================================================================== */

typedef struct tp_s {
        char topic[16];
        int32_t partition;
} tp_t;

static int tp_cmp(const void *a, const void *b) {
        const tp_t *x = a, *y = b;
        int c = strcmp(x->topic, y->topic);
        return c ? c : (x->partition > y->partition) - (x->partition < y->partition);
}

/* The (topic, partition) pairs of @p text in the order they appear after
 * each occurrence of @p key (a JSON object start or a metric name), with
 * the partition after @p pkey. */
static size_t tp_scan(const char *text, const char *key, const char *pkey,
                      tp_t *out, size_t max) {
        size_t n = 0;
        for (const char *c = strstr(text, key); c; c = strstr(c + 1, key)) {
                const char *t = strstr(c, "topic");
                const char *q = t ? strstr(t, pkey) : NULL;
                assert_non_null(q);
                assert_true(n < max);
                t += strlen("topic") + 2 + (t[6] == ':');
                size_t len = strcspn(t, "\"");
                assert_true(len < sizeof out[n].topic);
                memcpy(out[n].topic, t, len);
                out[n].topic[len] = 0;
                out[n].partition = (int32_t)strtol(q + strlen(pkey), NULL, 10);
                n++;
        }
        return n;
}

static void tp_check(const char *what, const tp_t *got, size_t n,
                     const tp_t *want, size_t want_n) {
        if (n != want_n)
                H_FAIL("%s: %zu partitions, want %zu", what, n, want_n);
        for (size_t i = 0; i < n; i++)
                if (tp_cmp(&got[i], &want[i]))
                        H_FAIL("%s: #%zu is %s/%d, want %s/%d", what, i,
                               got[i].topic, (int)got[i].partition,
                               want[i].topic, (int)want[i].partition);
}

#define SORT_MANY 300 /* more than one chunk of slots (LP_CHUNK) */

static void test_partitions_sorted(void **state) {
        (void)state;
        lagprobe_t *p = quiet_probe();
        /* Learned from consumed messages first, as an app that assigns
         * partitions itself makes them known: b/2, b/0, a/1, b/1, a/0.
         * lp_slot_for_msg() is on_consume's slow path. */
        char errstr[256];
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, rd_kafka_conf_new(),
                                      errstr, sizeof errstr);
        assert_non_null(rk);
        rd_kafka_topic_t *rkt_a = rd_kafka_topic_new(rk, "a", NULL);
        rd_kafka_topic_t *rkt_b = rd_kafka_topic_new(rk, "b", NULL);
        assert_true(rkt_a && rkt_b);
        static const struct {
                int b;
                int32_t partition;
        } msgs[] = {{1, 2}, {1, 0}, {0, 1}, {1, 1}, {0, 0}};
        tp_t want[5 + SORT_MANY];
        size_t want_n = 0;
        for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++) {
                rd_kafka_message_t m;
                memset(&m, 0, sizeof m);
                m.rkt = msgs[i].b ? rkt_b : rkt_a;
                m.partition = msgs[i].partition;
                assert_non_null(lp_slot_for_msg(p, &m));
                snprintf(want[want_n].topic, sizeof want[0].topic, "%s",
                         msgs[i].b ? "b" : "a");
                want[want_n++].partition = msgs[i].partition;
        }
        /* Then a topic between them ("a.x" sorts after "a"), its
         * partitions in a shuffled order across chunks, every third one
         * unassigned (absent from every output). */
        int32_t order[SORT_MANY];
        for (int i = 0; i < SORT_MANY; i++)
                order[i] = i;
        for (int i = SORT_MANY - 1; i > 0; i--) {
                int j = (int)(rnd() % (uint64_t)(i + 1));
                int32_t t = order[i];
                order[i] = order[j];
                order[j] = t;
        }
        for (int i = 0; i < SORT_MANY; i++) {
                pthread_mutex_lock(&p->wlock);
                int si = lp_slot_find(p, "a.x", order[i], 1);
                pthread_mutex_unlock(&p->wlock);
                assert_true(si >= 0);
                int assigned = order[i] % 3 != 1;
                ST(lp_slot_at(p, (uint32_t)si)->assigned, assigned);
                if (!assigned)
                        continue;
                snprintf(want[want_n].topic, sizeof want[0].topic, "a.x");
                want[want_n++].partition = order[i];
        }
        qsort(want, want_n, sizeof want[0], tp_cmp);

        /* The snapshot struct: all of them, then a short array, which
         * gets the first ones in order. */
        static lagprobe_partition_t parts[5 + SORT_MANY];
        tp_t got[5 + SORT_MANY];
        lagprobe_snapshot_t s;
        for (size_t cap = want_n; cap >= 3; cap = cap == 3 ? 0 : 3) {
                lagprobe_snapshot_init(&s, parts, cap);
                assert_int_equal(lagprobe_snapshot(p, &s), 0);
                assert_int_equal(s.partition_cnt, want_n);
                for (size_t i = 0; i < cap; i++) {
                        snprintf(got[i].topic, sizeof got[0].topic, "%s",
                                 parts[i].topic);
                        got[i].partition = parts[i].partition;
                }
                tp_check("lagprobe_snapshot()", got, cap, want, cap);
        }

        size_t size = 1 << 20;
        char *text = malloc(size);
        assert_non_null(text);
        assert_true(lagprobe_snapshot_json(p, text, size) < size);
        tp_check("lagprobe_snapshot_json()", got,
                 tp_scan(text, "{\"topic\":", "\"partition\":", got,
                         want_n + 1),
                 want, want_n);
        assert_true(lagprobe_metrics_prometheus(p, text, size) < size);
        tp_check("lagprobe_metrics_prometheus()", got,
                 tp_scan(text, "\nlagprobe_partition_status{",
                         "partition=\"", got, want_n + 1),
                 want, want_n);
        free(text);
        lagprobe_destroy(p);
        rd_kafka_topic_destroy(rkt_a);
        rd_kafka_topic_destroy(rkt_b);
        rd_kafka_destroy(rk);
}

int main(void) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_numbers_match_printf),
            cmocka_unit_test(test_json_consumed_fill),
            cmocka_unit_test(test_partitions_sorted),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}

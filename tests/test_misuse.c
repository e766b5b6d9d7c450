/* Misuse of the public API: each gets a clear error or the outcome that
 * probe.h / README.md document. Cases that tests/test_attach.c already
 * covers exactly are not repeated here: lagprobe_attach with a NULL probe,
 * conf or errstr; lagprobe_new(NULL) giving defaults; lagprobe_tick(NULL);
 * lagprobe_destroy(NULL); lagprobe_snapshot with a NULL probe, a NULL
 * snapshot or a zeroed (uninitialised) one; lagprobe_snapshot_json with a
 * NULL probe and with NULL/0, 1 and too-small buffers; attach to a conf
 * with dr_msg_cb or dr_cb; a probe attached to a conf that then makes a
 * producer; lagprobe_destroy after rd_kafka_destroy.
 * SPDX-License-Identifier: BSD-2-Clause */
#define _POSIX_C_SOURCE 200809L

#include "harness.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT_ERRSTR(errstr, ...)                                             \
        do {                                                                   \
                if (!h_contains_any((errstr), __VA_ARGS__, (const char *)NULL)) \
                        fail_msg("errstr \"%s\" lacks the expected words",     \
                                 (errstr));                                    \
        } while (0)

/* A consumer conf for the mock cluster that never subscribes. */
static rd_kafka_conf_t *idle_conf(void) {
        char group[64];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        h_conf_set(conf, "bootstrap.servers", h_cl->bootstraps);
        h_conf_set(conf, "group.id", h_unique("gm", group, sizeof group));
        return conf;
}

static rd_kafka_t *consumer_of(rd_kafka_conf_t *conf) {
        char errstr[512];
        rd_kafka_t *rk =
            rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
        if (!rk)
                fail_msg("rd_kafka_new: %s", errstr);
        return rk;
}

/* ---- lagprobe_new --------------------------------------------------- */

static void test_new_errstr_null_or_small(void **state) {
        (void)state;
        lagprobe_config_t pc;
        lagprobe_config_init(&pc);
        pc.watchdog_interval_ms = -5;
        /* No errstr at all: still refused, nothing written anywhere. */
        assert_null(lagprobe_new(&pc, NULL, 0));
        assert_null(lagprobe_new(&pc, NULL, 64));
        /* A buffer with size 0 is not touched. */
        char buf[64];
        memset(buf, 'x', sizeof buf);
        assert_null(lagprobe_new(&pc, buf, 0));
        assert_int_equal(buf[0], 'x');
        /* Size 1: only the NUL. */
        assert_null(lagprobe_new(&pc, buf, 1));
        assert_int_equal(buf[0], 0);
        assert_int_equal(buf[1], 'x');
        /* A short buffer gets a NUL-terminated prefix of the message. */
        char full[256];
        assert_null(lagprobe_new(&pc, full, sizeof full));
        memset(buf, 'x', sizeof buf);
        assert_null(lagprobe_new(&pc, buf, 10));
        assert_int_equal(strlen(buf), 9);
        assert_memory_equal(buf, full, 9);
        assert_int_equal(buf[10], 'x');
        /* A good config with no errstr works. */
        lagprobe_t *p = lagprobe_new(NULL, NULL, 0);
        assert_non_null(p);
        lagprobe_destroy(p);
}

typedef void(cfg_fn_t)(lagprobe_config_t *c);

typedef struct cfg_case_s {
        const char *what;  /* for the failure message */
        const char *field; /* the errstr must name it */
        cfg_fn_t *set;
} cfg_case_t;

#define CFG(name, field, stmt)                                                 \
        static void cfg_##name(lagprobe_config_t *c) { stmt; }
CFG(stats_0, stats_interval_ms, c->stats_interval_ms = 0)
CFG(stats_neg, stats_interval_ms, c->stats_interval_ms = -1)
CFG(stats_big, stats_interval_ms, c->stats_interval_ms = 86400001)
CFG(wd_neg, watchdog_interval_ms, c->watchdog_interval_ms = -1)
CFG(wd_big, watchdog_interval_ms, c->watchdog_interval_ms = 60001)
CFG(warn_0, warn_ratio, c->warn_ratio = 0)
CFG(warn_1, warn_ratio, c->warn_ratio = 1.0)
CFG(warn_nan, warn_ratio, c->warn_ratio = NAN)
CFG(warn_above_crit, warn_ratio, c->warn_ratio = 0.95)
CFG(crit_big, critical_ratio, c->critical_ratio = 1.01)
CFG(crit_eq_warn, critical_ratio, c->critical_ratio = 0.70)
CFG(crit_nan, critical_ratio, c->critical_ratio = NAN)
CFG(crit_inf, critical_ratio, c->critical_ratio = INFINITY)
CFG(evmin_neg, event_min_interval_ms, c->event_min_interval_ms = -1)
CFG(unas_neg, unassigned_unhealthy_ms, c->unassigned_unhealthy_ms = -1)
CFG(window_small, window_ms, c->window_ms = 59)
CFG(window_neg, window_ms, c->window_ms = -60000)
CFG(allow_neg, lag_allowance, c->lag_allowance = -1)
CFG(storm_0, storm_rebalances, c->storm_rebalances = 0)
CFG(stormwin_0, storm_window_ms, c->storm_window_ms = 0)
CFG(hot_0, hot_share, c->hot_share = 0)
CFG(hot_big, hot_share, c->hot_share = 1.5)
CFG(hot_nan, hot_share, c->hot_share = NAN)
CFG(slow_1, slow_ratio, c->slow_ratio = 1.0)
CFG(slow_nan, slow_ratio, c->slow_ratio = NAN)
CFG(burst_small, burst_ratio, c->burst_ratio = 0.9)
CFG(burst_nan, burst_ratio, c->burst_ratio = NAN)
CFG(refresh_neg, hwm_refresh_ms, c->hwm_refresh_ms = -1)
CFG(dwell_neg, dwell_ms, c->dwell_ms = -2)
CFG(dwell_big, dwell_ms, c->dwell_ms = 60001) /* > window_ms */

#define CASE(name, field) {#name, #field, cfg_##name}

static void test_new_invalid_config(void **state) {
        (void)state;
        static const cfg_case_t cases[] = {
            CASE(stats_0, stats_interval_ms),
            CASE(stats_neg, stats_interval_ms),
            CASE(stats_big, stats_interval_ms),
            CASE(wd_neg, watchdog_interval_ms),
            CASE(wd_big, watchdog_interval_ms),
            CASE(warn_0, warn_ratio),
            CASE(warn_1, warn_ratio),
            CASE(warn_nan, warn_ratio),
            CASE(warn_above_crit, warn_ratio),
            CASE(crit_big, critical_ratio),
            CASE(crit_eq_warn, critical_ratio),
            CASE(crit_nan, critical_ratio),
            CASE(crit_inf, critical_ratio),
            CASE(evmin_neg, event_min_interval_ms),
            CASE(unas_neg, unassigned_unhealthy_ms),
            CASE(window_small, window_ms),
            CASE(window_neg, window_ms),
            CASE(allow_neg, lag_allowance),
            CASE(storm_0, storm_rebalances),
            CASE(stormwin_0, storm_window_ms),
            CASE(hot_0, hot_share),
            CASE(hot_big, hot_share),
            CASE(hot_nan, hot_share),
            CASE(slow_1, slow_ratio),
            CASE(slow_nan, slow_ratio),
            CASE(burst_small, burst_ratio),
            CASE(burst_nan, burst_ratio),
            CASE(refresh_neg, hwm_refresh_ms),
            CASE(dwell_neg, dwell_ms),
            CASE(dwell_big, dwell_ms),
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                lagprobe_config_t pc;
                char errstr[512] = "";
                lagprobe_config_init(&pc);
                cases[i].set(&pc);
                lagprobe_t *p = lagprobe_new(&pc, errstr, sizeof errstr);
                if (p) {
                        lagprobe_destroy(p);
                        fail_msg("config case %s was accepted", cases[i].what);
                }
                if (!strstr(errstr, cases[i].field))
                        fail_msg("config case %s: errstr \"%s\" does not name "
                                 "%s",
                                 cases[i].what, errstr, cases[i].field);
        }
}

/* The edges of every range are accepted. */
CFG(ok_stats_1, -, c->stats_interval_ms = 1)
CFG(ok_stats_max, -, c->stats_interval_ms = 86400000)
CFG(ok_wd_0, -, c->watchdog_interval_ms = 0)
CFG(ok_wd_max, -, c->watchdog_interval_ms = 60000)
CFG(ok_ratios, -, (c->warn_ratio = 0.01, c->critical_ratio = 1.0))
CFG(ok_zeroes, -,
    (c->event_min_interval_ms = 0, c->unassigned_unhealthy_ms = 0,
     c->lag_allowance = 0, c->hwm_refresh_ms = 0, c->dwell_ms = 0))
CFG(ok_diag_min, -,
    (c->window_ms = 60, c->dwell_ms = 60, c->storm_window_ms = 1,
     c->storm_rebalances = 1,
     c->hot_share = 1.0, c->burst_ratio = 1.0, c->slow_ratio = 1.0001))

static void test_new_config_edges_accepted(void **state) {
        (void)state;
        static cfg_fn_t *const oks[] = {cfg_ok_stats_1, cfg_ok_stats_max,
                                        cfg_ok_wd_0,    cfg_ok_wd_max,
                                        cfg_ok_ratios,  cfg_ok_zeroes,
                                        cfg_ok_diag_min};
        for (size_t i = 0; i < sizeof oks / sizeof oks[0]; i++) {
                lagprobe_config_t pc;
                char errstr[512] = "";
                lagprobe_config_init(&pc);
                oks[i](&pc);
                lagprobe_t *p = lagprobe_new(&pc, errstr, sizeof errstr);
                if (!p)
                        fail_msg("edge case %zu refused: %s", i, errstr);
                h_snap_t hs;
                h_snap(p, &hs);
                assert_int_equal(hs.s.bound, 0);
                lagprobe_destroy(p);
        }
}

/* ---- output functions: NULL probe, NULL buffer, size 0 -------------- */

static void test_output_null_and_zero_size(void **state) {
        (void)state;
        lagprobe_t *p = h_probe_new();
        char buf[64];

        /* JSON: a real buffer of size 0 is not touched. */
        size_t need = lagprobe_snapshot_json(p, NULL, 0);
        assert_true(need > 0);
        memset(buf, 'x', sizeof buf);
        assert_int_equal(lagprobe_snapshot_json(p, buf, 0), need);
        assert_int_equal(buf[0], 'x');
        assert_int_equal(lagprobe_snapshot_json(NULL, buf, 0), 0);
        assert_int_equal(buf[0], 'x');
        /* NULL buffer with a size: measured only, as with size 0. */
        assert_int_equal(lagprobe_snapshot_json(p, NULL, 100), need);

        /* Prometheus: the same size contract. */
        size_t pneed = lagprobe_metrics_prometheus(p, NULL, 0);
        assert_true(pneed > 0);
        char *pfull = malloc(pneed + 1);
        assert_non_null(pfull);
        assert_int_equal(lagprobe_metrics_prometheus(p, pfull, pneed + 1),
                         pneed);
        assert_int_equal(strlen(pfull), pneed);
        memset(buf, 'x', sizeof buf);
        assert_int_equal(lagprobe_metrics_prometheus(p, buf, 0), pneed);
        assert_int_equal(buf[0], 'x');
        assert_int_equal(lagprobe_metrics_prometheus(p, buf, 1), pneed);
        assert_int_equal(buf[0], 0);
        assert_int_equal(buf[1], 'x');
        memset(buf, 'x', sizeof buf);
        assert_int_equal(lagprobe_metrics_prometheus(p, buf, 16), pneed);
        assert_int_equal(strlen(buf), 15);
        assert_memory_equal(buf, pfull, 15);
        assert_int_equal(buf[16], 'x');
        assert_int_equal(lagprobe_metrics_prometheus(p, NULL, 100), pneed);
        free(pfull);
        /* NULL probe: 0, and "" when there is room. */
        memset(buf, 'x', sizeof buf);
        assert_int_equal(lagprobe_metrics_prometheus(NULL, buf, sizeof buf), 0);
        assert_int_equal(buf[0], 0);
        memset(buf, 'x', sizeof buf);
        assert_int_equal(lagprobe_metrics_prometheus(NULL, buf, 0), 0);
        assert_int_equal(buf[0], 'x');
        assert_int_equal(lagprobe_metrics_prometheus(NULL, NULL, 0), 0);

        /* Health: NULL probe is LAGPROBE_HEALTH_INVALID (-1) and clears the
         * reasons. */
        memset(buf, 'x', sizeof buf);
        assert_int_equal(lagprobe_health(NULL, buf, sizeof buf), -1);
        assert_int_equal(buf[0], 0);
        assert_int_equal(lagprobe_health(NULL, NULL, 0), -1);
        assert_int_equal(lagprobe_health(NULL, NULL, 10), -1);
        memset(buf, 'x', sizeof buf);
        assert_int_equal(lagprobe_health(NULL, buf, 0), -1);
        assert_int_equal(buf[0], 'x');
        /* A probe without a consumer: unhealthy, "consumer_not_running". */
        char full[128];
        lagprobe_health_t h = lagprobe_health(p, full, sizeof full);
        assert_int_equal(h, LAGPROBE_HEALTH_UNHEALTHY);
        assert_string_equal(full, "consumer_not_running");
        assert_int_equal(lagprobe_health(p, NULL, 0), h);
        assert_int_equal(lagprobe_health(p, NULL, 10), h);
        memset(buf, 'x', sizeof buf);
        assert_int_equal(lagprobe_health(p, buf, 0), h);
        assert_int_equal(buf[0], 'x');
        assert_int_equal(lagprobe_health(p, buf, 1), h);
        assert_int_equal(buf[0], 0);
        memset(buf, 'x', sizeof buf);
        assert_int_equal(lagprobe_health(p, buf, 6), h);
        assert_string_equal(buf, "consu");
        assert_int_equal(buf[6], 'x');

        /* Verdict helpers with values outside their enums. */
        assert_int_equal(lagprobe_health_http_status(-1), 503);
        assert_int_equal(lagprobe_health_http_status(LAGPROBE_HEALTH_OK), 200);
        assert_int_equal(lagprobe_health_http_status(LAGPROBE_HEALTH_DEGRADED),
                         200);
        assert_int_equal(lagprobe_health_http_status(LAGPROBE_HEALTH_UNHEALTHY),
                         503);
        assert_int_equal(lagprobe_health_http_status(99), 503);
        assert_string_equal(lagprobe_health_name(-1), "unknown");
        assert_string_equal(lagprobe_health_name(3), "unknown");
        lagprobe_destroy(p);
}

static void test_names_out_of_range(void **state) {
        (void)state;
        assert_string_equal(lagprobe_event_name((lagprobe_event_type_t)-1),
                            "unknown");
        assert_string_equal(lagprobe_event_name(LAGPROBE_EVENT__CNT), "unknown");
        assert_string_equal(lagprobe_event_name(LAGPROBE_EVENT_COMMIT_FAILED),
                            "commit_failed");
        assert_string_equal(lagprobe_pstatus_name(-1), "unknown");
        assert_string_equal(lagprobe_pstatus_name(LAGPROBE_PSTATUS__CNT),
                            "unknown");
        assert_string_equal(lagprobe_diagnosis_name(-1), "unknown");
        assert_string_equal(lagprobe_diagnosis_name(LAGPROBE_DIAG__CNT),
                            "unknown");
        assert_string_equal(lagprobe_reason_name(0), "unknown");
        assert_string_equal(lagprobe_reason_name(1u << LAGPROBE_REASON__CNT),
                            "unknown");
        /* Two bits at once are not one reason. */
        assert_string_equal(lagprobe_reason_name(LAGPROBE_REASON_EVICTED |
                                                 LAGPROBE_REASON_HEADROOM_WARN),
                            "unknown");
        assert_string_equal(lagprobe_reason_name(LAGPROBE_REASON_EVICTED),
                            "evicted");
        assert_non_null(lagprobe_version_str());
        /* config_init and snapshot_init with NULL: no-ops. */
        lagprobe_config_init(NULL);
        lagprobe_snapshot_init(NULL, NULL, 0);
}

/* ---- lagprobe_snapshot with a struct of another size ---------------- */

static void test_snapshot_wrong_struct_size(void **state) {
        (void)state;
        lagprobe_t *p = h_probe_new();
        lagprobe_partition_t parts[2];
        lagprobe_snapshot_t s;
        const size_t sizes[] = {sizeof s - 8, sizeof s + 8, 1, (size_t)-1};
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
                lagprobe_snapshot_init(&s, parts, 2);
                s.struct_size = sizes[i];
                s.consumed = 12345;
                s.partition_cnt = 777;
                s.ts_ms = -42;
                assert_int_equal(lagprobe_snapshot(p, &s), -1);
                /* Refused before anything was written. */
                assert_int_equal(s.consumed, 12345);
                assert_int_equal(s.partition_cnt, 777);
                assert_int_equal(s.ts_ms, -42);
        }
        lagprobe_destroy(p);
}

/* ---- hooks with a NULL probe and out of order ------------------------ */

static void test_hooks_null_probe(void **state) {
        (void)state;
        /* Every hook is a no-op on NULL. */
        lagprobe_batch_begin(NULL, 5);
        lagprobe_batch_progress(NULL, 3);
        lagprobe_batch_end(NULL);
        lagprobe_poll_result(NULL, NULL);
        rd_kafka_message_t m;
        memset(&m, 0, sizeof m);
        m.err = RD_KAFKA_RESP_ERR__MAX_POLL_EXCEEDED;
        lagprobe_poll_result(NULL, &m);

        /* A probe given a NULL poll result (an empty poll) and non-error
         * results: nothing is counted. */
        lagprobe_t *p = h_probe_new();
        lagprobe_poll_result(p, NULL);
        m.err = RD_KAFKA_RESP_ERR_NO_ERROR;
        lagprobe_poll_result(p, &m);
        m.err = RD_KAFKA_RESP_ERR__PARTITION_EOF;
        lagprobe_poll_result(p, &m);
        h_snap_t hs;
        h_snap(p, &hs);
        assert_int_equal(hs.s.evictions, 0);
        assert_int_equal(hs.s.exact, 0);
        assert_int_equal(hs.s.in_batch, 0);
        assert_int_equal(hs.s.batch.count, 0);
        lagprobe_destroy(p);
}

static void test_batch_end_without_begin(void **state) {
        (void)state;
        lagprobe_t *p = h_probe_new();
        h_snap_t hs;

        /* Before any begin: ignored (a hook error), no sample, and the
         * probe does not switch to exact timing. */
        lagprobe_batch_end(p);
        lagprobe_batch_end(p);
        h_snap(p, &hs);
        assert_int_equal(hs.s.hook_errors, 2);
        assert_int_equal(hs.s.batch.count, 0);
        assert_int_equal(hs.s.message.count, 0);
        assert_int_equal(hs.s.batch_recent.count, 0);
        assert_int_equal(hs.s.poll_gap.count, 0);
        assert_int_equal(hs.s.in_batch, 0);
        assert_int_equal(hs.s.exact, 0);
        assert_int_equal(hs.s.since_last_poll_ms, -1);

        /* A proper batch records one sample ... */
        lagprobe_batch_begin(p, 2);
        h_sleep_ms(5);
        lagprobe_batch_end(p);
        h_snap(p, &hs);
        assert_int_equal(hs.s.hook_errors, 2); /* a proper pair is none */
        assert_int_equal(hs.s.batch.count, 1);
        assert_int_equal(hs.s.message.count, 2);
        assert_int_equal(hs.s.in_batch, 0);
        assert_int_equal(hs.s.exact, 1);
        double sum = hs.s.batch.sum_ms;
        assert_true(sum >= 4.0);

        /* ... and a second end for it adds nothing. */
        lagprobe_batch_end(p);
        h_snap(p, &hs);
        assert_int_equal(hs.s.batch.count, 1);
        assert_int_equal(hs.s.message.count, 2);
        assert_true(hs.s.batch.sum_ms == sum);
        assert_int_equal(hs.s.in_batch, 0);
        assert_int_equal(hs.s.batch_size, 2);
        assert_int_equal(hs.s.batch_done, 2);
        assert_int_equal(hs.s.hook_errors, 3);
        /* The JSON and Prometheus say the same. */
        char *js = h_snap_json(p);
        h_json_t *j = h_json_parse(js, strlen(js));
        assert_non_null(j);
        const h_json_t *proc = h_json_get(j, "processing");
        assert_non_null(proc);
        assert_int_equal(h_json_int(h_json_get(proc, "batch"), "count"), 1);
        const h_json_t *poll = h_json_get(j, "poll");
        assert_non_null(poll);
        const h_json_t *ib = h_json_get(poll, "in_batch");
        assert_non_null(ib);
        assert_int_equal(ib->type, H_JBOOL);
        assert_true(ib->num == 0);
        assert_int_equal(h_json_int(poll, "hook_errors"), 3);
        h_json_free(j);
        free(js);
        char *m = h_metrics(p);
        assert_non_null(strstr(m, "\nlagprobe_hook_errors_total{"));
        assert_true(h_prom(m, "lagprobe_hook_errors_total", NULL) == 3);
        free(m);
        /* One batch of two messages in every output. */
        h_assert_outputs_agree(p);
        lagprobe_destroy(p);
}

static void test_batch_progress_outside_batch(void **state) {
        (void)state;
        lagprobe_t *p = h_probe_new();
        h_snap_t hs;

        /* Before any batch: ignored, a hook error. */
        lagprobe_batch_progress(p, 3);
        h_snap(p, &hs);
        assert_int_equal(hs.s.hook_errors, 1);
        assert_int_equal(hs.s.message.count, 0);
        assert_int_equal(hs.s.batch_done, 0);
        assert_int_equal(hs.s.in_batch, 0);
        assert_int_equal(hs.s.exact, 0);

        /* Inside a batch: a running total; repeats and steps back are
         * ignored. */
        lagprobe_batch_begin(p, 4);
        lagprobe_batch_progress(p, 1);
        lagprobe_batch_progress(p, 1);
        lagprobe_batch_progress(p, 0);
        h_snap(p, &hs);
        assert_int_equal(hs.s.in_batch, 1);
        assert_int_equal(hs.s.batch_done, 1);
        assert_int_equal(hs.s.message.count, 1);
        /* Inside a batch a repeat or a step back is no error. */
        assert_int_equal(hs.s.hook_errors, 1);
        lagprobe_batch_end(p);
        h_snap(p, &hs);
        /* The three messages not reported were spread at the end. */
        assert_int_equal(hs.s.message.count, 4);
        assert_int_equal(hs.s.batch.count, 1);

        /* After the batch ended: ignored again. */
        lagprobe_batch_progress(p, 2);
        lagprobe_batch_progress(p, 100);
        h_snap(p, &hs);
        assert_int_equal(hs.s.hook_errors, 3);
        assert_int_equal(hs.s.message.count, 4);
        assert_int_equal(hs.s.batch.count, 1);
        assert_int_equal(hs.s.batch_done, 4);
        assert_int_equal(hs.s.in_batch, 0);
        lagprobe_destroy(p);
}

/* ---- attach misuse ---------------------------------------------------- */

static void test_attach_after_conf_consumed(void **state) {
        (void)state;
        char errstr[256] = "";
        rd_kafka_conf_t *conf = idle_conf();
        lagprobe_t *p = h_probe_new();
        assert_int_equal(lagprobe_attach(p, conf, errstr, sizeof errstr), 0);
        rd_kafka_t *rk = consumer_of(conf); /* conf now belongs to rk */
        /* Undefined in general (the conf is gone); with the same probe the
         * call is refused before the conf is looked at: ASan and valgrind
         * would report any read of it. */
        errstr[0] = 0;
        assert_int_equal(lagprobe_attach(p, conf, errstr, sizeof errstr), -1);
        ASSERT_ERRSTR(errstr, "already attached");
        /* The probe still watches its consumer. */
        h_snap_t hs;
        h_snap(p, &hs);
        assert_int_equal(hs.s.bound, 1);
        rd_kafka_destroy(rk);
        h_snap(p, &hs);
        assert_int_equal(hs.s.bound, 0);
        lagprobe_destroy(p);
}

static void test_two_probes_one_conf(void **state) {
        (void)state;
        char e1[256] = "", e2[256] = "";
        lagprobe_t *p1 = h_probe_new(), *p2 = h_probe_new();
        rd_kafka_conf_t *conf = idle_conf();
        assert_int_equal(lagprobe_attach(p1, conf, e1, sizeof e1), 0);
        assert_int_equal(lagprobe_attach(p2, conf, e2, sizeof e2), -1);
        ASSERT_ERRSTR(e2, "already carries");
        /* Not the same message as attaching one probe twice. */
        lagprobe_t *p3 = h_probe_new();
        rd_kafka_conf_t *other = idle_conf();
        assert_int_equal(lagprobe_attach(p3, other, e1, sizeof e1), 0);
        assert_int_equal(lagprobe_attach(p3, other, e1, sizeof e1), -1);
        assert_string_not_equal(e1, e2);
        rd_kafka_conf_destroy(other);
        lagprobe_destroy(p3);

        /* The refused attach left the conf to the first probe: the
         * consumer binds p1 only. */
        rd_kafka_t *rk = consumer_of(conf);
        h_snap_t hs;
        h_snap(p1, &hs);
        assert_int_equal(hs.s.bound, 1);
        assert_non_null(hs.s.group_id);
        assert_true(strlen(hs.s.group_id) > 0);
        h_snap(p2, &hs);
        assert_int_equal(hs.s.bound, 0);
        assert_string_equal(hs.s.group_id, "");
        rd_kafka_destroy(rk);
        lagprobe_destroy(p1);
        lagprobe_destroy(p2);
}

static void test_max_probes_slot_held_by_consumer(void **state) {
        (void)state;
        char errstr[256] = "";
        lagprobe_t *p[LAGPROBE_MAX_PROBES];
        rd_kafka_conf_t *c[LAGPROBE_MAX_PROBES];
        for (int i = 0; i < LAGPROBE_MAX_PROBES; i++) {
                p[i] = h_probe_new();
                c[i] = rd_kafka_conf_new();
                h_conf_set(c[i], "group.id", "g");
                if (lagprobe_attach(p[i], c[i], errstr, sizeof errstr))
                        fail_msg("attach %d of %d: %s", i + 1,
                                 LAGPROBE_MAX_PROBES, errstr);
        }
        /* Probe 0 watches a live consumer. */
        rd_kafka_conf_destroy(c[0]);
        lagprobe_destroy(p[0]);
        p[0] = h_probe_new();
        c[0] = idle_conf();
        assert_int_equal(lagprobe_attach(p[0], c[0], errstr, sizeof errstr), 0);
        rd_kafka_t *rk = consumer_of(c[0]);
        c[0] = NULL;

        lagprobe_t *extra = h_probe_new();
        rd_kafka_conf_t *xc = idle_conf();
        errstr[0] = 0;
        assert_int_equal(lagprobe_attach(extra, xc, errstr, sizeof errstr), -1);
        ASSERT_ERRSTR(errstr, "LAGPROBE_MAX_PROBES");
        /* Checked once every slot is released again (a failure here must
         * not leave 64 slots taken for the tests that follow). */
        char refused_stats[64];
        h_conf_get(xc, "statistics.interval.ms", refused_stats,
                   sizeof refused_stats);

        /* The probe handle is gone but its consumer lives: the slot is
         * still held (the consumer's callbacks still go through it). */
        lagprobe_destroy(p[0]);
        errstr[0] = 0;
        assert_int_equal(lagprobe_attach(extra, xc, errstr, sizeof errstr), -1);
        ASSERT_ERRSTR(errstr, "LAGPROBE_MAX_PROBES");
        /* The consumer goes too: the slot is free. */
        rd_kafka_destroy(rk);
        assert_int_equal(lagprobe_attach(extra, xc, errstr, sizeof errstr), 0);
        for (int i = 1; i < LAGPROBE_MAX_PROBES; i++) {
                rd_kafka_conf_destroy(c[i]);
                lagprobe_destroy(p[i]);
        }
        rd_kafka_conf_destroy(xc);
        lagprobe_destroy(extra);
        /* The refused attach left the conf as it was: the app's consumer
         * runs as if there were no probe. */
        assert_string_equal(refused_stats, "0");
}

/* ---- lagprobe_destroy while the consumer lives ---------------------- */

typedef struct quiet_s {
        atomic_int calls;       /* log_cb calls in total */
        atomic_int after;       /* log_cb calls that began after destroy */
        atomic_int destroyed;   /* set once lagprobe_destroy() returned */
        atomic_int stats_calls; /* the app's stats_cb */
        atomic_int rebalance_calls;
} quiet_t;

static void quiet_log_cb(const lagprobe_event_t *e, void *opaque) {
        quiet_t *q = opaque;
        (void)e;
        if (q->destroyed)
                q->after++;
        q->calls++;
        h_sleep_ms(2); /* a slow sink: widens the window destroy must wait */
}

static int quiet_stats_cb(rd_kafka_t *rk, char *json, size_t len,
                          void *opaque) {
        (void)rk;
        (void)json;
        (void)len;
        ((quiet_t *)opaque)->stats_calls++;
        return 0;
}

static void quiet_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                               rd_kafka_topic_partition_list_t *parts,
                               void *opaque) {
        ((quiet_t *)opaque)->rebalance_calls++;
        rd_kafka_assign(rk, err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS ? parts
                                                                        : NULL);
}

typedef struct destroyer_s {
        lagprobe_t *p;
        quiet_t *q;
} destroyer_t;

static void *destroyer(void *arg) {
        destroyer_t *d = arg;
        lagprobe_destroy(d->p);
        d->q->destroyed = 1;
        return NULL;
}

static int quiet_events_flowing(void *arg) {
        return ((quiet_t *)arg)->calls >= 20;
}

static int quiet_stats_grew(void *arg) {
        quiet_t *q = ((void **)arg)[0];
        int *want = ((void **)arg)[1];
        return q->stats_calls >= *want;
}

/* Before attach: the app's opaque, stats_cb and rebalance_cb. */
static void quiet_app_conf(h_fixture_t *f, rd_kafka_conf_t **conf) {
        rd_kafka_conf_set_opaque(*conf, f->opaque);
        rd_kafka_conf_set_stats_cb(*conf, quiet_stats_cb);
        rd_kafka_conf_set_rebalance_cb(*conf, quiet_rebalance_cb);
}

static void test_destroy_before_consumer_is_quiet(void **state) {
        (void)state;
        h_fixture_t f;
        const int counts[2] = {5, 0};
        quiet_t *q = calloc(1, sizeof *q);
        assert_non_null(q);
        lagprobe_config_t pc;
        lagprobe_config_init(&pc);
        pc.log_cb = quiet_log_cb;
        pc.log_opaque = q;
        pc.log_level = 7;
        pc.event_min_interval_ms = 0;
        pc.watchdog_interval_ms = 10;
        h_fixture_init_on(&f, h_cl, "quiet", "gquiet", 2, counts);
        f.opaque = q;
        f.before_attach = quiet_app_conf;
        f.pc = &pc;
        h_fixture_start(&f);
        const char *topic = f.topic;
        lagprobe_t *p = f.p;
        rd_kafka_t *rk = f.rk;
        h_track_t t;
        h_track_init(&t);

        /* Keep events coming: every commit fails (explicit offsets, so
         * that each commit is sent even when nothing new was consumed). */
        static rd_kafka_resp_err_t errs[2000];
        for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++)
                errs[i] = RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE;
        rd_kafka_mock_push_request_errors_array(
            h_cl->mcluster, 8 /* OffsetCommit */, sizeof errs / sizeof errs[0],
            errs);
        rd_kafka_topic_partition_list_t *fail_l =
            rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(fail_l, topic, 0)->offset = 1;
        int64_t end = h_now_ms() + H_JOIN_TIMEOUT_MS;
        while (q->calls < 20 && h_now_ms() < end) {
                h_poll_once(rk, 5, &t);
                if (t.total > 0)
                        rd_kafka_commit(rk, fail_l, 1 /* async */);
        }
        assert_true(quiet_events_flowing(q));

        /* Destroy from another thread while the consumer keeps polling
         * and failing commits. */
        destroyer_t d = {p, q};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, destroyer, &d), 0);
        end = h_now_ms() + 1500;
        while (h_now_ms() < end) {
                h_poll_once(rk, 5, &t);
                rd_kafka_commit(rk, fail_l, 1);
        }
        assert_int_equal(pthread_join(th, NULL), 0);
        assert_int_equal(q->destroyed, 1);
        f.p = NULL;
        rd_kafka_topic_partition_list_destroy(fail_l);
        rd_kafka_mock_clear_request_errors(h_cl->mcluster, 8);

        /* The consumer works on: new messages, the app's callbacks. */
        int rebalances = q->rebalance_calls;
        assert_int_equal(rebalances, 1);
        h_produce(h_cl, topic, 1, 7, NULL, 0);
        int want = q->stats_calls + 5;
        void *args[2] = {q, &want};
        assert_true(h_poll_until(rk, &t, quiet_stats_grew, args, 10000));
        end = h_now_ms() + 10000;
        while (t.total < 12 && h_now_ms() < end)
                h_poll_once(rk, 10, &t);
        assert_int_equal(t.consumed[0], 5);
        assert_int_equal(t.consumed[1], 7);
        int64_t offs[2] = {5, 7};
        h_commit(rk, topic, offs, 2);
        h_desc_t dd[2];
        h_describe(h_cl, f.group, topic, 2, dd);
        assert_int_equal(dd[0].committed, 5);
        assert_int_equal(dd[1].committed, 7);

        /* Close: the app's rebalance_cb still gets the revoke. */
        rd_kafka_consumer_close(rk);
        assert_int_equal(q->rebalance_calls, rebalances + 1);
        rd_kafka_destroy(rk);
        f.rk = NULL;
        h_fixture_stop(&f);
        print_message("  log_cb calls %d, after destroy %d\n", q->calls,
                      q->after);
        assert_int_equal(q->after, 0);
        free(q);
}

/* ---- hooks from another thread than the poll thread ------------------ */

typedef struct worker_s {
        lagprobe_t *p;
        int batches, per_batch;
        atomic_int done;
} worker_t;

/* The app processes on a worker thread and calls the hooks there. */
static void *hook_worker(void *arg) {
        worker_t *w = arg;
        for (int b = 0; b < w->batches; b++) {
                lagprobe_batch_begin(w->p, (size_t)w->per_batch);
                for (int i = 1; i <= w->per_batch; i++)
                        lagprobe_batch_progress(w->p, (size_t)i);
                lagprobe_batch_end(w->p);
                if (b % 20 == 0)
                        h_sleep_ms(1);
        }
        w->done = 1;
        return NULL;
}

typedef struct reader_s {
        lagprobe_t *p;
        atomic_int stop;
        atomic_int reads, bad;
} reader_t;

/* Documented-safe readers on a third thread: TSan checks these. */
static void *snap_reader(void *arg) {
        reader_t *r = arg;
        char *buf = malloc(1 << 16);
        if (!buf)
                return NULL;
        while (!r->stop) {
                h_snap_t hs;
                lagprobe_snapshot_init(&hs.s, hs.parts, H_SNAP_PARTS);
                if (lagprobe_snapshot(r->p, &hs.s) != 0)
                        r->bad++;
                size_t n = lagprobe_snapshot_json(r->p, buf, 1 << 16);
                if (n == 0 || buf[0] != '{')
                        r->bad++;
                lagprobe_metrics_prometheus(r->p, buf, 1 << 16);
                if (lagprobe_health(r->p, buf, 256) < 0)
                        r->bad++;
                r->reads++;
        }
        free(buf);
        return NULL;
}

typedef struct both_s {
        h_track_t *t;
        worker_t *w;
        int64_t want;
} both_t;

static int consumed_and_worked(void *arg) {
        both_t *b = arg;
        return b->t->total >= b->want && b->w->done;
}

static void test_hooks_from_worker_thread(void **state) {
        (void)state;
        h_fixture_t f;
        const int counts[2] = {40, 30};
        h_fixture_init_on(&f, h_cl, "wk", "gwk", 2, counts);
        h_fixture_start(&f);
        const char *topic = f.topic;
        lagprobe_t *p = f.p;
        rd_kafka_t *rk = f.rk;

        worker_t w = {p, 200, 5, 0};
        reader_t r = {p, 0, 0, 0};
        pthread_t wt, rt;
        assert_int_equal(pthread_create(&rt, NULL, snap_reader, &r), 0);
        assert_int_equal(pthread_create(&wt, NULL, hook_worker, &w), 0);
        h_track_t *t = &f.t;
        both_t b = {t, &w, 70};
        int ok = h_poll_until(rk, t, consumed_and_worked, &b,
                              H_JOIN_TIMEOUT_MS);
        pthread_join(wt, NULL);
        r.stop = 1;
        pthread_join(rt, NULL);
        assert_true(ok);
        int64_t offs[2] = {40, 30};
        h_commit(rk, topic, offs, 2);

        /* The hooks' figures are the worker's; the partitions' are the
         * poll thread's, untouched by the other thread. */
        h_snap_t hs;
        h_snap(p, &hs);
        assert_int_equal(hs.s.exact, 1);
        assert_int_equal(hs.s.in_batch, 0);
        assert_int_equal(hs.s.batch.count, 200);
        assert_int_equal(hs.s.message.count, 1000);
        assert_int_equal(hs.s.consumed, 70);
        assert_int_equal(r.bad, 0);
        assert_true(r.reads > 0);
        h_desc_t d[2];
        h_describe(h_cl, f.group, topic, 2, d);
        for (int i = 0; i < 2; i++) {
                const lagprobe_partition_t *x = h_snap_find(&hs, topic, i);
                assert_non_null(x);
                assert_int_equal(x->consumed, t->consumed[i]);
                assert_int_equal(x->position, offs[i]);
        }
        /* Committed offsets reach the probe with the commit. */
        h_snap(p, &hs);
        for (int i = 0; i < 2; i++) {
                const lagprobe_partition_t *x = h_snap_find(&hs, topic, i);
                assert_int_equal(x->committed_offset, d[i].committed);
        }
        h_fixture_stop(&f);
}

/* Two threads calling the hooks at once break the "thread that polls the
 * consumer" contract. The outcome may be wrong batch figures, but readers
 * must still return: a snapshot that never returns would hang every
 * health endpoint, and lagprobe_destroy() with it (it joins the watchdog,
 * which reads the same figures). */
typedef struct hammer_s {
        lagprobe_t *p;
        atomic_int *stop;
} hammer_t;

static void *hook_hammer(void *arg) {
        hammer_t *h = arg;
        while (!*h->stop) {
                lagprobe_batch_begin(h->p, 3);
                lagprobe_batch_progress(h->p, 1);
                lagprobe_batch_end(h->p);
        }
        return NULL;
}

typedef struct one_read_s {
        lagprobe_t *p;
        atomic_int done;
} one_read_t;

static void *one_read(void *arg) {
        one_read_t *o = arg;
        h_snap_t hs;
        lagprobe_snapshot_init(&hs.s, hs.parts, H_SNAP_PARTS);
        lagprobe_snapshot(o->p, &hs.s);
        o->done = 1;
        return NULL;
}

static int read_done(void *arg) { return ((one_read_t *)arg)->done; }

static void test_hooks_from_two_threads_at_once(void **state) {
        (void)state;
        lagprobe_config_t pc;
        lagprobe_config_init(&pc);
        pc.watchdog_interval_ms = 0; /* nothing else reads meanwhile */
        char errstr[256];
        lagprobe_t *p = lagprobe_new(&pc, errstr, sizeof errstr);
        assert_non_null(p);
        /* Rounds of racing hooks, each followed by one read that must
         * come back. */
        for (int round = 0; round < 5; round++) {
                atomic_int stop = 0;
                hammer_t h = {p, &stop};
                pthread_t t1, t2;
                assert_int_equal(pthread_create(&t1, NULL, hook_hammer, &h),
                                 0);
                assert_int_equal(pthread_create(&t2, NULL, hook_hammer, &h),
                                 0);
                h_sleep_ms(300);
                stop = 1;
                pthread_join(t1, NULL);
                pthread_join(t2, NULL);

                one_read_t *o = calloc(1, sizeof *o);
                assert_non_null(o);
                o->p = p;
                pthread_t rt;
                assert_int_equal(pthread_create(&rt, NULL, one_read, o), 0);
                if (!h_wait_until(read_done, o, 3000)) {
                        /* The reader spins forever: leave it, and the
                         * probe it reads, alone rather than free memory
                         * under it. */
                        pthread_detach(rt);
                        fail_msg("round %d: lagprobe_snapshot() never "
                                 "returned after two threads used the batch "
                                 "hooks at once",
                                 round);
                }
                pthread_join(rt, NULL);
                free(o);
        }
        /* Hooks from one thread work again afterwards. */
        lagprobe_batch_begin(p, 1);
        lagprobe_batch_end(p);
        h_snap_t hs;
        h_snap(p, &hs);
        assert_int_equal(hs.s.in_batch, 0);
        assert_true(hs.s.batch.count > 0);
        lagprobe_destroy(p);
}

int main(void) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_new_errstr_null_or_small),
            cmocka_unit_test(test_new_invalid_config),
            cmocka_unit_test(test_new_config_edges_accepted),
            cmocka_unit_test(test_output_null_and_zero_size),
            cmocka_unit_test(test_names_out_of_range),
            cmocka_unit_test(test_snapshot_wrong_struct_size),
            cmocka_unit_test(test_hooks_null_probe),
            cmocka_unit_test(test_batch_end_without_begin),
            cmocka_unit_test(test_batch_progress_outside_batch),
            cmocka_unit_test(test_attach_after_conf_consumed),
            cmocka_unit_test(test_two_probes_one_conf),
            cmocka_unit_test(test_max_probes_slot_held_by_consumer),
            cmocka_unit_test(test_destroy_before_consumer_is_quiet),
            cmocka_unit_test(test_hooks_from_worker_thread),
            cmocka_unit_test(test_hooks_from_two_threads_at_once),
        };
        return cmocka_run_group_tests(tests, h_group_setup, h_group_teardown);
}

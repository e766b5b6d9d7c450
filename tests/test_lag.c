/* Per-partition lag figures against an independent
 * "kafka-consumer-groups --describe" computed by a second client.
 * SPDX-License-Identifier: BSD-2-Clause */
#define _POSIX_C_SOURCE 200809L

#include "harness.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One consumer with a probe on a fresh topic and group, the harness's
 * fixture on the shared cluster; pc: the probe's config, NULL for the
 * defaults. Returns once the app and the probe saw every message. */
static void scen_start_cfg(h_fixture_t *s, const char *name, int nparts,
                           const int *counts, int auto_commit,
                           const lagprobe_config_t *pc) {
        h_fixture_init(s);
        s->c = h_cl;
        s->topic_prefix = name;
        s->nparts = nparts;
        s->counts = counts;
        s->copts.auto_commit = auto_commit;
        s->pc = pc;
        s->wait_all = 1;
        h_fixture_start(s);
}

static void scen_start(h_fixture_t *s, const char *name, int nparts,
                       const int *counts, int auto_commit) {
        scen_start_cfg(s, name, nparts, counts, auto_commit, NULL);
}

/* ---- convergence on what the second client says -------------------- */

typedef struct conv_s {
        h_desc_t d[H_MAX_PARTS];
} conv_t;

static void assert_agrees(h_fixture_t *s, conv_t *c) {
        h_assert_lag_exact(h_cl, s->rk, &s->t, s->p, s->group, s->topic,
                           s->nparts, c->d);
}

/* ---- tests ----------------------------------------------------------- */

static void test_lag_matches_describe(void **state) {
        (void)state;
        h_fixture_t s;
        const int counts[4] = {10, 25, 7, 0};
        scen_start(&s, "lag", 4, counts, 0);
        /* Everything consumed; commits stop at different points, one
         * partition never committed. */
        const int64_t commit[4] = {4, 25, 3, -1};
        h_commit(s.rk, s.topic, commit, 4);

        conv_t c;
        assert_agrees(&s, &c);
        /* The second client's view is what we committed. */
        assert_int_equal(c.d[0].lag, 6);
        assert_int_equal(c.d[1].lag, 0);
        assert_int_equal(c.d[2].lag, 4);
        assert_int_equal(c.d[3].lag, -1);
        assert_int_equal(c.d[3].log_end, 0);

        h_snap_t hs;
        h_snap(s.p, &hs);
        for (int i = 0; i < 3; i++) {
                const lagprobe_partition_t *x = h_snap_find(&hs, s.topic, i);
                assert_int_equal(x->position, counts[i]);
                assert_int_equal(x->position, s.t.next_offset[i]);
                assert_int_equal(x->position_lag, 0);
                assert_int_equal(x->consumed, counts[i]);
                assert_int_equal(x->consumed, s.t.consumed[i]);
                assert_true(x->seconds_behind == 0);
                assert_true(x->last_message_ts_ms > 0);
                assert_true(x->hwm_age_ms >= 0 && x->hwm_age_ms < 5000);
        }
        const lagprobe_partition_t *x3 = h_snap_find(&hs, s.topic, 3);
        assert_int_equal(x3->consumed, 0);
        assert_int_equal(x3->last_message_ts_ms, -1);
        assert_true(x3->position <= 0);
        assert_int_equal(hs.s.consumed, 42);
        /* One h_commit() (auto commit off): one commit, no more. */
        assert_int_equal(hs.s.commits, 1);
        assert_int_equal(hs.s.commit_errors, 0);
        assert_int_equal(hs.s.assigns, 1);
        assert_int_equal(hs.s.rebalances, 1);
        /* JSON and /metrics: the same pinned figures. */
        h_assert_outputs_agree(s.p);
        h_fixture_stop(&s);
}

static int hwm_known(void *arg) {
        h_fixture_t *s = arg;
        h_snap_t hs;
        h_snap(s->p, &hs);
        for (int i = 0; i < s->nparts; i++) {
                const lagprobe_partition_t *x = h_snap_find(&hs, s->topic, i);
                if (!x || x->high_watermark != s->produced[i])
                        return 0;
        }
        return 1;
}

static void test_lag_null_before_first_commit(void **state) {
        (void)state;
        h_fixture_t s;
        const int counts[2] = {5, 8};
        scen_start(&s, "nocommit", 2, counts, 0);
        assert_true(h_poll_until(s.rk, &s.t, hwm_known, &s, 5000));
        h_snap_t hs;
        h_snap(s.p, &hs);
        for (int i = 0; i < 2; i++) {
                const lagprobe_partition_t *x = h_snap_find(&hs, s.topic, i);
                assert_non_null(x);
                assert_int_equal(x->high_watermark, counts[i]);
                assert_int_equal(x->committed_offset, -1);
                assert_int_equal(x->lag, -1);
                assert_int_equal(x->position, counts[i]);
                assert_int_equal(x->position_lag, 0);
        }
        /* null in JSON too */
        char *js = h_snap_json(s.p);
        h_json_t *j = h_json_parse(js, strlen(js));
        assert_non_null(j);
        const h_json_t *jp = h_json_find_partition(j, s.topic, 1);
        assert_non_null(jp);
        assert_int_equal(h_json_get(jp, "lag")->type, H_JNULL);
        assert_int_equal(h_json_get(jp, "committed_offset")->type, H_JNULL);
        assert_int_equal(h_json_int(jp, "high_watermark"), 8);
        h_json_free(j);
        free(js);
        /* And the second client agrees that nothing is committed. */
        conv_t c;
        assert_agrees(&s, &c);
        assert_int_equal(c.d[0].committed, -1);
        assert_int_equal(c.d[1].committed, -1);
        h_fixture_stop(&s);
}

static void test_lag_follows_production_and_commits(void **state) {
        (void)state;
        h_fixture_t s;
        conv_t c;
        const int counts[2] = {10, 10};
        scen_start(&s, "follow", 2, counts, 0);
        const int64_t all[2] = {10, 10};
        h_commit(s.rk, s.topic, all, 2);
        assert_agrees(&s, &c);
        assert_int_equal(c.d[0].lag, 0);
        assert_int_equal(c.d[1].lag, 0);

        /* More messages: lag rises with the next statistics even though
         * the app consumes them (nothing is committed). */
        h_fixture_produce(&s, 0, 7);
        assert_true(h_poll_until(s.rk, &s.t, h_fixture_all_seen, &s, 5000));
        assert_agrees(&s, &c);
        assert_int_equal(c.d[0].lag, 7);
        assert_int_equal(c.d[0].log_end, 17);

        /* Commit: lag falls. */
        const int64_t p0[2] = {17, -1};
        h_commit(s.rk, s.topic, p0, 2);
        assert_agrees(&s, &c);
        assert_int_equal(c.d[0].lag, 0);

        /* A commit can also move back (a reset): lag rises again. */
        const int64_t p1[2] = {-1, 4};
        h_commit(s.rk, s.topic, p1, 2);
        assert_agrees(&s, &c);
        assert_int_equal(c.d[1].lag, 6);

        h_snap_t hs;
        h_snap(s.p, &hs);
        const lagprobe_partition_t *x = h_snap_find(&hs, s.topic, 0);
        assert_int_equal(x->consumed, 17);
        assert_int_equal(x->position, 17);
        assert_int_equal(x->position_lag, 0);
        assert_int_equal(hs.s.consumed, 27);
        h_fixture_stop(&s);
}

static int lag_zero_everywhere(void *arg) {
        h_fixture_t *s = arg;
        h_snap_t hs;
        h_snap(s->p, &hs);
        for (int i = 0; i < s->nparts; i++) {
                const lagprobe_partition_t *x = h_snap_find(&hs, s->topic, i);
                if (!x || x->lag != 0 || x->high_watermark != s->produced[i])
                        return 0;
        }
        return 1;
}

static void test_lag_auto_commit(void **state) {
        (void)state;
        h_fixture_t s;
        conv_t c;
        const int counts[3] = {30, 1, 12};
        scen_start(&s, "auto", 3, counts, 1);
        assert_true(h_poll_until(s.rk, &s.t, lag_zero_everywhere, &s, 5000));
        assert_agrees(&s, &c);
        for (int i = 0; i < 3; i++) {
                assert_int_equal(c.d[i].committed, counts[i]);
                assert_int_equal(c.d[i].lag, 0);
        }
        h_fixture_stop(&s);
}

/* ---- seconds_behind ------------------------------------------------ */

typedef struct behind_s {
        h_fixture_t *s;
        int64_t hwm;
} behind_t;

static int hwm_is(void *arg) {
        behind_t *b = arg;
        h_snap_t hs;
        h_snap(b->s->p, &hs);
        const lagprobe_partition_t *x = h_snap_find(&hs, b->s->topic, 0);
        return x && x->high_watermark == b->hwm;
}

static int caught_up(void *arg) {
        behind_t *b = arg;
        h_snap_t hs;
        h_snap(b->s->p, &hs);
        const lagprobe_partition_t *x = h_snap_find(&hs, b->s->topic, 0);
        return x && x->position == b->hwm && x->high_watermark == b->hwm;
}

static void test_seconds_behind(void **state) {
        (void)state;
        const int64_t age_ms = 60000;
        h_fixture_t s;
        h_fixture_init(&s);
        s.c = h_cl;
        s.topic_prefix = "behind";
        h_fixture_topic(&s);
        int64_t ts = h_wall_ms() - age_ms;
        h_produce(h_cl, s.topic, 0, 5, "k", ts);
        h_fixture_consumer(&s);

        /* Take exactly one message, then stop the partition: the app is
         * behind by four messages that are a minute old. */
        int64_t end = h_now_ms() + H_JOIN_TIMEOUT_MS;
        while (s.t.total < 1 && h_now_ms() < end)
                h_poll_once(s.rk, 50, &s.t);
        assert_int_equal(s.t.total, 1);
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, s.topic, 0);
        assert_int_equal(rd_kafka_pause_partitions(s.rk, l), 0);
        behind_t b = {&s, 5};
        assert_true(h_poll_until(s.rk, &s.t, hwm_is, &b, 5000));
        assert_int_equal(s.t.total, 1); /* paused: nothing more arrived */

        h_snap_t hs;
        h_snap(s.p, &hs);
        const lagprobe_partition_t *x = h_snap_find(&hs, s.topic, 0);
        assert_non_null(x);
        assert_int_equal(x->position, 1);
        assert_int_equal(x->position_lag, 4);
        assert_int_equal(x->consumed, 1);
        assert_int_equal(x->last_message_ts_ms, ts);
        print_message("  seconds_behind %.3f (message age %.3f s)\n",
                      x->seconds_behind, (h_wall_ms() - ts) / 1000.0);
        assert_true(x->seconds_behind >= age_ms / 1000.0);
        assert_true(x->seconds_behind <= (h_wall_ms() - ts) / 1000.0 + 1.0);

        /* Resume and catch up: 0. */
        assert_int_equal(rd_kafka_resume_partitions(s.rk, l), 0);
        rd_kafka_topic_partition_list_destroy(l);
        assert_true(h_poll_until(s.rk, &s.t, caught_up, &b, 5000));
        h_snap(s.p, &hs);
        x = h_snap_find(&hs, s.topic, 0);
        assert_int_equal(x->position_lag, 0);
        assert_true(x->seconds_behind == 0);
        assert_int_equal(x->consumed, 5);
        assert_int_equal(s.t.total, 5);
        h_fixture_stop(&s);
}

typedef struct docs_s {
        lagprobe_t *p;
        int64_t want;
} docs_t;

static int docs_at_least(void *arg) {
        docs_t *d = arg;
        h_snap_t hs;
        h_snap(d->p, &hs);
        return hs.s.stats_docs >= d->want;
}

/* Partition 0 of s (5 messages, all consumed) committed at 5 and
 * paused, then 5 more produced and at least 5 statistics documents
 * served: the statistics' hi_offset stays 5 (no Fetch). Returns the pause
 * list, for paused_end(). */
static rd_kafka_topic_partition_list_t *paused_start(h_fixture_t *s) {
        const int64_t all[1] = {5};
        h_commit(s->rk, s->topic, all, 1);
        behind_t b = {s, 5};
        assert_true(h_poll_until(s->rk, &s->t, hwm_is, &b, 5000));
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, s->topic, 0);
        assert_int_equal(rd_kafka_pause_partitions(s->rk, l), 0);
        h_fixture_produce(s, 0, 5);
        h_snap_t hs;
        h_snap(s->p, &hs);
        docs_t d = {s->p, hs.s.stats_docs + 5};
        assert_true(h_poll_until(s->rk, &s->t, docs_at_least, &d, 5000));
        return l;
}

/* A paused consumer must be resumed to close (harness.h). */
static void paused_end(h_fixture_t *s, rd_kafka_topic_partition_list_t *l) {
        assert_int_equal(rd_kafka_resume_partitions(s->rk, l), 0);
        rd_kafka_topic_partition_list_destroy(l);
        h_fixture_stop(s);
}

/* The refreshed end reached the snapshot's partition and the total (the
 * total is evaluated with the next statistics document, the partition's
 * figures at once). */
static int refreshed(void *arg) {
        h_fixture_t *s = arg;
        h_snap_t hs;
        h_snap(s->p, &hs);
        const lagprobe_partition_t *x = h_snap_find(&hs, s->topic, 0);
        return x && x->high_watermark == s->produced[0] && hs.s.total_lag == 5;
}

/* The refreshed figures of the paused partition 0 (hwm 10, committed 5):
 * the broker's end as the second client sees it, the lag it computes,
 * stale (the statistics' figure is behind), and at least one query. */
static void assert_refreshed(h_fixture_t *s) {
        conv_t c;
        h_describe(h_cl, s->group, s->topic, 1, c.d);
        assert_int_equal(c.d[0].log_end, 10);
        assert_int_equal(c.d[0].lag, 5);
        h_snap_t hs;
        h_snap(s->p, &hs);
        const lagprobe_partition_t *x = h_snap_find(&hs, s->topic, 0);
        assert_non_null(x);
        print_message("  paused: probe hwm %" PRId64 " lag %" PRId64
                      " stale %d, %" PRId64 " queries; broker end %" PRId64
                      " lag %" PRId64 "\n",
                      x->high_watermark, x->lag, x->stale, hs.s.hwm_queries,
                      c.d[0].log_end, c.d[0].lag);
        assert_int_equal(x->high_watermark, c.d[0].log_end);
        assert_int_equal(x->lag, c.d[0].lag);
        assert_int_equal(x->effective_lag, c.d[0].lag);
        assert_int_equal(x->committed_offset, 5);
        assert_int_equal(x->position, 5);
        assert_int_equal(x->position_lag, 5);
        assert_int_equal(x->stale, 1);
        assert_int_equal(hs.s.total_lag, 5);
        assert_true(hs.s.hwm_queries >= 1);
        assert_int_equal(hs.s.hwm_query_failures, 0);
}

/* While a partition is paused librdkafka sends no Fetch for it, so the
 * statistics keep reporting the old hi_offset (measured: fetch_state stays
 * "active" and hi_offset does not move). The probe asks the broker once
 * the statistics' figure has not moved for hwm_refresh_ms (default 5 s)
 * and then knows the real end, flagged stale. */
static void test_stale_while_paused(void **state) {
        (void)state;
        h_fixture_t s;
        const int counts[1] = {5};
        scen_start(&s, "paused", 1, counts, 0);
        rd_kafka_topic_partition_list_t *l = paused_start(&s);
        assert_true(h_poll_until(s.rk, &s.t, refreshed, &s,
                                 h_slow_ms(12000)));
        assert_refreshed(&s);
        paused_end(&s, l);
}

static int queries_at_least(void *arg) {
        docs_t *d = arg;
        h_snap_t hs;
        h_snap(d->p, &hs);
        return hs.s.hwm_queries >= d->want;
}

/* hwm_refresh_ms: 500 asks again every half second while the figure
 * stays frozen (three queries within 4 s, where the default 5 s allows
 * one); 0 never asks, and the frozen figure is what the probe reports. */
static void test_hwm_refresh_ms(void **state) {
        (void)state;
        lagprobe_config_t pc;
        lagprobe_config_init(&pc);
        pc.hwm_refresh_ms = 500;
        h_fixture_t s;
        const int counts[1] = {5};
        scen_start_cfg(&s, "refresh", 1, counts, 0, &pc);
        rd_kafka_topic_partition_list_t *l = paused_start(&s);
        docs_t q = {s.p, 3};
        assert_true(h_poll_until(s.rk, &s.t, queries_at_least, &q,
                                 h_slow_ms(4000)));
        assert_true(h_poll_until(s.rk, &s.t, refreshed, &s, h_slow_ms(2000)));
        assert_refreshed(&s);
        paused_end(&s, l);

        pc.hwm_refresh_ms = 0;
        scen_start_cfg(&s, "norefresh", 1, counts, 0, &pc);
        l = paused_start(&s);
        h_poll_for(s.rk, &s.t, 2500);
        h_snap_t hs;
        h_snap(s.p, &hs);
        const lagprobe_partition_t *x = h_snap_find(&hs, s.topic, 0);
        assert_non_null(x);
        print_message("  no refresh: hwm %" PRId64 " lag %" PRId64
                      " stale %d, %" PRId64 " queries\n",
                      x->high_watermark, x->lag, x->stale, hs.s.hwm_queries);
        assert_int_equal(hs.s.hwm_queries, 0);
        assert_int_equal(x->high_watermark, 5);
        assert_int_equal(x->lag, 0);
        assert_int_equal(hs.s.total_lag, 0);
        paused_end(&s, l);
}

/* ---- JSON ------------------------------------------------------------ */

static void assert_json_int(const h_json_t *obj, const char *key, int64_t v) {
        int64_t got = h_json_int(obj, key);
        if (got != v)
                fail_msg("JSON %s: %" PRId64 " (INT64_MIN: missing), snapshot "
                         "%" PRId64,
                         key, got, v);
}

static void test_json_same_figures(void **state) {
        (void)state;
        h_fixture_t s;
        const int counts[3] = {9, 4, 0};
        scen_start(&s, "json", 3, counts, 0);
        const int64_t commit[3] = {2, 4, -1};
        h_commit(s.rk, s.topic, commit, 3);
        conv_t c;
        assert_agrees(&s, &c);

        /* Quiescent: nothing is produced or committed any more, so the
         * snapshot and the JSON taken right after carry the same figures. */
        h_snap_t hs;
        h_snap(s.p, &hs);
        char *js = h_snap_json(s.p);
        h_json_t *j = h_json_parse(js, strlen(js));
        if (!j)
                fail_msg("invalid JSON: %s", js);
        const h_json_t *g = h_json_get(j, "group_id");
        assert_non_null(g);
        assert_string_equal(g->str, s.group);
        assert_json_int(j, "consumed", hs.s.consumed);
        /* Each partition's figures: h_assert_outputs_agree() below; the
         * lag is the second client's. */
        for (int i = 0; i < 3; i++) {
                const h_json_t *jp = h_json_find_partition(j, s.topic, i);
                assert_non_null(jp);
                assert_json_int(jp, "lag", c.d[i].lag);
        }
        /* The literal text, as a dashboard grepping it would see it. */
        char want[256];
        snprintf(want, sizeof want, "\"partition\":0,");
        assert_non_null(strstr(js, want));
        assert_non_null(strstr(js, "\"lag\":7"));
        assert_non_null(strstr(js, "\"lag\":null"));
        h_json_free(j);
        free(js);
        h_assert_outputs_agree(s.p);
        h_fixture_stop(&s);
}

int main(void) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_lag_matches_describe),
            cmocka_unit_test(test_lag_null_before_first_commit),
            cmocka_unit_test(test_lag_follows_production_and_commits),
            cmocka_unit_test(test_lag_auto_commit),
            cmocka_unit_test(test_seconds_behind),
            cmocka_unit_test(test_stale_while_paused),
            cmocka_unit_test(test_hwm_refresh_ms),
            cmocka_unit_test(test_json_same_figures),
        };
        return cmocka_run_group_tests(tests, h_group_setup, h_group_teardown);
}

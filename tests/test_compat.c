/* Every real consumer: callbacks the app (or a wrapper such as rdkafkacpp)
 * sets after lagprobe_attach(), on the conf or on a copy of it; statistics
 * that stop reaching the probe; and, where the library has it, the
 * next-generation group protocol (KIP-848, group.protocol=consumer).
 * SPDX-License-Identifier: BSD-2-Clause */
#define _POSIX_C_SOURCE 200809L

#include "harness.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPARTS 3

/* ---- event recorder (the probe's log_cb) ------------------------------ */

typedef struct rec_s {
        pthread_mutex_t lock;
        int count[LAGPROBE_EVENT__CNT];
        int first[LAGPROBE_EVENT__CNT]; /* order of the first of each, 1.. */
        int n;
        char last[LAGPROBE_EVENT__CNT][512];
} rec_t;

static void rec_cb(const lagprobe_event_t *e, void *opaque) {
        rec_t *r = opaque;
        pthread_mutex_lock(&r->lock);
        r->n++;
        if (!r->count[e->type]++)
                r->first[e->type] = r->n;
        snprintf(r->last[e->type], sizeof r->last[e->type], "%s", e->message);
        pthread_mutex_unlock(&r->lock);
}

static int rec_count(rec_t *r, lagprobe_event_type_t t) {
        pthread_mutex_lock(&r->lock);
        int n = r->count[t];
        pthread_mutex_unlock(&r->lock);
        return n;
}

/* The probe's config: every event to r. */
static void rec_config(lagprobe_config_t *pc, rec_t *r) {
        lagprobe_config_init(pc);
        pc->log_cb = rec_cb;
        pc->log_opaque = r;
}

static lagprobe_t *probe_attach(rd_kafka_conf_t *conf, rec_t *r) {
        lagprobe_config_t pc;
        rec_config(&pc, r);
        return h_probe_attach_cfg(conf, &pc);
}

/* ---- the app's callbacks, set after attach ---------------------------- */

#define APP_MAGIC 0x5eed

typedef struct app_s {
        int magic;
        atomic_int stats, rebalance, assigns, logs, bad_opaque;
} app_t;

static app_t *app_of(void *opaque) {
        app_t *a = opaque;
        return a && a->magic == APP_MAGIC ? a : NULL;
}

static int app_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
        (void)rk;
        app_t *a = app_of(opaque);
        if (!a)
                return 0;
        if (!json || len < 2 || json[0] != '{')
                a->bad_opaque++;
        a->stats++;
        return 0;
}

static void app_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *parts,
                             void *opaque) {
        app_t *a = app_of(opaque);
        if (a) {
                a->rebalance++;
                a->assigns += err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
        }
        if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
                rd_kafka_assign(rk, parts);
        else
                rd_kafka_assign(rk, NULL);
}

/* log_cb has no opaque of its own: the app finds its state through the
 * client's opaque, as rdkafkacpp does. */
static void app_log_cb(const rd_kafka_t *rk, int level, const char *fac,
                       const char *buf) {
        (void)level;
        (void)fac;
        (void)buf;
        app_t *a = app_of(rd_kafka_opaque(rk));
        if (a)
                a->logs++;
}

static void app_set_callbacks(rd_kafka_conf_t *conf, app_t *a) {
        rd_kafka_conf_set_stats_cb(conf, app_stats_cb);
        rd_kafka_conf_set_rebalance_cb(conf, app_rebalance_cb);
        rd_kafka_conf_set_log_cb(conf, app_log_cb);
        rd_kafka_conf_set_opaque(conf, a);
        /* A few log lines for log_cb to see. */
        h_conf_set(conf, "debug", "cgrp");
}

/* Lag exactly what a second client describes. */
static void assert_exact_lag(h_fixture_t *s) {
        h_desc_t d[NPARTS];
        h_assert_lag_exact(h_cl, s->rk, &s->t, s->p, s->group, s->topic,
                           NPARTS, d);
}

static const int counts[NPARTS] = {30, 20, 10};
static const int64_t commit_at[NPARTS] = {12, 20, 4};

/* The fixture's after_attach: the app sets its callbacks (f->opaque is
 * its app_t) on the conf itself, or on a copy made with
 * rd_kafka_conf_dup() and given to rd_kafka_new() as rdkafkacpp's
 * create() does. */
static void set_callbacks(h_fixture_t *f, rd_kafka_conf_t **conf) {
        app_set_callbacks(*conf, f->opaque);
}

static void set_callbacks_dup(h_fixture_t *f, rd_kafka_conf_t **conf) {
        set_callbacks(f, conf);
        rd_kafka_conf_t *copy = rd_kafka_conf_dup(*conf);
        rd_kafka_conf_destroy(*conf);
        *conf = copy;
}

/* Produce, attach, let the app set its callbacks after attach,
 * consume everything. */
static void scen_start(h_fixture_t *s, app_t *a, rec_t *r, int via_dup) {
        lagprobe_config_t pc;
        rec_config(&pc, r);
        h_fixture_init(s);
        s->c = h_cl;
        s->topic_prefix = "compat";
        s->group_prefix = "gcompat";
        s->nparts = NPARTS;
        s->counts = counts;
        s->pc = &pc;
        s->after_attach = via_dup ? set_callbacks_dup : set_callbacks;
        s->opaque = a;
        s->wait_all = 1;
        h_fixture_start(s);
        s->pc = NULL; /* pc is gone with this frame */
}

static void callbacks_after_attach(int via_dup) {
        h_fixture_t s;
        app_t a = {.magic = APP_MAGIC};
        rec_t r = {.lock = PTHREAD_MUTEX_INITIALIZER};
        scen_start(&s, &a, &r, via_dup);
        h_commit(s.rk, s.topic, commit_at, NPARTS);
        assert_exact_lag(&s);

        h_snap_t hs;
        h_snap(s.p, &hs);
        /* The probe saw the rebalance through the app's callback... */
        assert_string_equal(hs.s.protocol, "EAGER");
        assert_int_equal(hs.s.assigns, 1);
        assert_int_equal(hs.s.revokes, 0);
        assert_int_equal(hs.s.assignment_size, NPARTS);
        assert_true(hs.s.stats_docs > 0);
        assert_int_equal(hs.s.health, LAGPROBE_HEALTH_OK);
        /* ...and the app still got everything, with its own opaque. */
        assert_int_equal(a.assigns, 1);
        assert_int_equal(a.rebalance, 1);
        assert_true(a.stats > 0);
        assert_true(a.logs > 0);
        assert_int_equal(a.bad_opaque, 0);
        /* Every document reached both: the app's count follows the
         * probe's (both are counted in the same callback). */
        assert_int_equal(a.stats, hs.s.stats_docs + hs.s.stats_errors);
        assert_int_equal(rec_count(&r, LAGPROBE_EVENT_NO_STATISTICS), 0);
        assert_int_equal(rec_count(&r, LAGPROBE_EVENT_NO_REBALANCES), 0);

        h_consumer_close(s.rk);
        h_snap(s.p, &hs);
        assert_int_equal(hs.s.revokes, 1);
        assert_int_equal(a.rebalance, 2);
        lagprobe_destroy(s.p);
}

static void test_callbacks_set_after_attach(void **state) {
        (void)state;
        callbacks_after_attach(0);
}

static void test_callbacks_set_after_attach_on_copy(void **state) {
        (void)state;
        callbacks_after_attach(1);
}

/* ---- never blind in silence ------------------------------------------ */

static int has_reason(lagprobe_t *p, unsigned reason) {
        h_snap_t hs;
        h_snap(p, &hs);
        return (hs.s.health_reasons & reason) != 0;
}

static int blind(void *arg) {
        return has_reason(arg, LAGPROBE_REASON_NO_STATISTICS);
}

typedef struct evw_s {
        rec_t *r;
        lagprobe_event_type_t t;
} evw_t;

static int event_seen(void *arg) {
        evw_t *w = arg;
        return rec_count(w->r, w->t) > 0;
}

/* The probe's outputs all say no_statistics. */
static void assert_says_blind(lagprobe_t *p) {
        h_snap_t hs;
        h_snap(p, &hs);
        assert_true(hs.s.health_reasons & LAGPROBE_REASON_NO_STATISTICS);
        assert_int_equal(hs.s.health, LAGPROBE_HEALTH_DEGRADED);
        char reasons[256];
        assert_int_equal(lagprobe_health(p, reasons, sizeof reasons),
                         LAGPROBE_HEALTH_DEGRADED);
        assert_non_null(strstr(reasons, "no_statistics"));
        char *json = h_snap_json(p);
        assert_non_null(json);
        h_json_t *j = h_json_parse(json, strlen(json));
        assert_non_null(j);
        const h_json_t *st = h_json_get(j, "status");
        assert_non_null(st);
        assert_string_equal(st->str, "degraded");
        int found = 0;
        for (const h_json_t *e = h_json_get(j, "reasons")->child; e;
             e = e->next)
                found += !strcmp(e->str, "no_statistics");
        assert_int_equal(found, 1);
        h_json_free(j);
        free(json);
        static char prom[1 << 20];
        size_t n = lagprobe_metrics_prometheus(p, prom, sizeof prom);
        assert_true(n > 0 && n < sizeof prom);
        assert_non_null(strstr(prom, "reason=\"no_statistics\"} 1\n"));
        assert_non_null(strstr(prom, "reason=\"headroom_critical\"} 0\n"));
}

/* A fresh topic (NPARTS partitions, n messages in partition part) and
 * group, and a conf for a consumer of them with a probe attached. */
static rd_kafka_conf_t *fresh_conf(const char *name, char *topic,
                                   char *group, int part, int n, rec_t *r,
                                   lagprobe_t **pp) {
        char gname[32];
        snprintf(gname, sizeof gname, "g%s", name);
        h_unique(name, topic, 64);
        h_unique(gname, group, 64);
        h_topic_create(h_cl, topic, NPARTS);
        if (n > 0)
                h_produce(h_cl, topic, part, n, NULL, 0);
        rd_kafka_conf_t *conf = h_conf(h_cl, group, NULL, 0);
        *pp = probe_attach(conf, r);
        return conf;
}

/* The app turns statistics off after attach: the probe cannot see lag and
 * says so at once, with the cause. */
static void test_statistics_off_after_attach(void **state) {
        (void)state;
        char topic[64], group[64];
        rec_t r = {.lock = PTHREAD_MUTEX_INITIALIZER};
        lagprobe_t *p;
        rd_kafka_conf_t *conf =
            fresh_conf("nostats", topic, group, 0, 5, &r, &p);
        h_conf_set(conf, "statistics.interval.ms", "0");
        rd_kafka_t *rk = h_consumer_new(conf, topic);
        h_track_t t;
        h_track_init(&t);
        assert_true(h_poll_until(rk, &t, blind, p, H_JOIN_TIMEOUT_MS));
        evw_t w = {&r, LAGPROBE_EVENT_NO_STATISTICS};
        assert_true(h_poll_until(rk, &t, event_seen, &w, h_slow_ms(2000)));
        assert_says_blind(p);
        /* One event, with the cause, not one per watchdog pass. */
        h_poll_for(rk, &t, 1000);
        assert_int_equal(rec_count(&r, LAGPROBE_EVENT_NO_STATISTICS), 1);
        assert_non_null(strstr(r.last[LAGPROBE_EVENT_NO_STATISTICS],
                               "statistics.interval.ms is 0"));
        h_snap_t hs;
        h_snap(p, &hs);
        assert_int_equal(hs.s.stats_docs, 0);
        assert_int_equal(hs.s.stats_last_ms_ago, -1);
        assert_int_equal(t.total, 5);
        h_consumer_close(rk);
        lagprobe_destroy(p);
}

/* Statistics consumed as events (the event API some language bindings
 * use): the probe's stats_cb never runs although the app polls. */
static void test_statistics_as_events(void **state) {
        (void)state;
        char topic[64], group[64];
        rec_t r = {.lock = PTHREAD_MUTEX_INITIALIZER};
        lagprobe_t *p;
        rd_kafka_conf_t *conf =
            fresh_conf("evstats", topic, group, 0, 0, &r, &p);
        /* The probe says no_statistics only while the app polls within
         * three statistics intervals (one that stopped polling gets no
         * statistics either way). assert_says_blind() reads four outputs
         * in a row without polling: under valgrind on a loaded machine
         * that took longer than 3 x 100 ms, and the last output rightly
         * no longer said blind. A longer interval gives the reads room. */
        char iv[16];
        snprintf(iv, sizeof iv, "%d", h_slow_ms(500));
        h_conf_set(conf, "statistics.interval.ms", iv);
        rd_kafka_conf_set_events(conf, RD_KAFKA_EVENT_STATS);
        char err[256];
        rd_kafka_t *rk =
            rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
        assert_non_null(rk);
        /* No rd_kafka_poll_set_consumer(): the main queue, where the
         * statistics go, is the app's to serve as events. */
        h_subscribe(rk, topic);
        rd_kafka_queue_t *mainq = rd_kafka_queue_get_main(rk);
        h_track_t t;
        h_track_init(&t);
        int events = 0, ok = 0;
        int64_t deadline = h_now_ms() + H_JOIN_TIMEOUT_MS + 5000;
        int64_t next_produce = 0;
        while (h_now_ms() < deadline && !ok) {
                if (h_now_ms() >= next_produce) {
                        /* Messages keep flowing: the app visibly polls. */
                        h_produce(h_cl, topic, 0, 1, NULL, 0);
                        next_produce = h_now_ms() + 100;
                }
                h_poll_once(rk, 20, &t);
                rd_kafka_event_t *ev;
                while ((ev = rd_kafka_queue_poll(mainq, 0))) {
                        events += rd_kafka_event_type(ev) ==
                                  RD_KAFKA_EVENT_STATS;
                        rd_kafka_event_destroy(ev);
                }
                ok = t.total > 0 && blind(p) &&
                     rec_count(&r, LAGPROBE_EVENT_NO_STATISTICS) > 0;
        }
        print_message("  %d statistics events, %" PRId64 " messages\n",
                      events, t.total);
        assert_true(ok);
        assert_true(events > 0);
        assert_says_blind(p);
        assert_int_equal(rec_count(&r, LAGPROBE_EVENT_NO_STATISTICS), 1);
        assert_non_null(strstr(r.last[LAGPROBE_EVENT_NO_STATISTICS],
                               "although the consumer polls"));
        rd_kafka_queue_destroy(mainq);
        h_consumer_close(rk);
        lagprobe_destroy(p);
}

static int rb_blind(void *arg) {
        return has_reason(arg, LAGPROBE_REASON_NO_REBALANCES);
}

/* Rebalances consumed as events from the consumer queue (statistics
 * still served by rd_kafka_poll() on the main queue): librdkafka's own
 * rebalance count runs ahead of what the probe saw, and it says so. */
static void test_rebalances_as_events(void **state) {
        (void)state;
        char topic[64], group[64];
        rec_t r = {.lock = PTHREAD_MUTEX_INITIALIZER};
        lagprobe_t *p;
        rd_kafka_conf_t *conf =
            fresh_conf("evrb", topic, group, 1, 3, &r, &p);
        char err[256];
        rd_kafka_t *rk =
            rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
        assert_non_null(rk);
        h_subscribe(rk, topic);
        rd_kafka_queue_t *cq = rd_kafka_queue_get_consumer(rk);
        int rebalances = 0, ok = 0;
        int64_t deadline = h_now_ms() + H_JOIN_TIMEOUT_MS + 5000;
        while (h_now_ms() < deadline && !ok) {
                rd_kafka_poll(rk, 10);
                rd_kafka_event_t *ev = rd_kafka_queue_poll(cq, 10);
                if (ev && rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE) {
                        rebalances++;
                        if (rd_kafka_event_error(ev) ==
                            RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
                                rd_kafka_assign(
                                    rk, rd_kafka_event_topic_partition_list(ev));
                        else
                                rd_kafka_assign(rk, NULL);
                }
                if (ev)
                        rd_kafka_event_destroy(ev);
                ok = rebalances > 0 && rb_blind(p) &&
                     rec_count(&r, LAGPROBE_EVENT_NO_REBALANCES) > 0;
        }
        assert_true(ok);
        h_snap_t hs;
        h_snap(p, &hs);
        assert_int_equal(hs.s.assigns, 0);
        assert_true(hs.s.cgrp_rebalance_cnt >= 1);
        assert_true(hs.s.stats_docs > 0);
        /* Statistics do arrive: only the rebalances are not seen. */
        assert_false(hs.s.health_reasons & LAGPROBE_REASON_NO_STATISTICS);
        assert_int_equal(hs.s.health, LAGPROBE_HEALTH_DEGRADED);
        char *json = h_snap_json(p);
        assert_non_null(strstr(json, "\"no_rebalances\""));
        free(json);
        assert_int_equal(rec_count(&r, LAGPROBE_EVENT_NO_REBALANCES), 1);
        assert_non_null(strstr(r.last[LAGPROBE_EVENT_NO_REBALANCES],
                               "never reached lagprobe's rebalance_cb"));
        rd_kafka_queue_destroy(cq);
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
        lagprobe_destroy(p);
}

/* ---- KIP-848: group.protocol=consumer --------------------------------- */
#if RD_KAFKA_VERSION >= 0x020c00ff
/* Compiled in only where the library's headers have the next-generation
 * protocol GA (2.12); with older headers these tests do not exist. */

/* Session and heartbeat are the broker's under KIP-848: the client conf
 * must not set them (rd_kafka_new() fails), so it is built here. */
static rd_kafka_conf_t *kip848_conf(const char *group, int max_poll_ms) {
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        char v[32];
        h_conf_set(conf, "bootstrap.servers", h_cl->bootstraps);
        h_conf_set(conf, "group.id", group);
        h_conf_set(conf, "group.protocol", "consumer");
        h_conf_set(conf, "auto.offset.reset", "earliest");
        h_conf_set(conf, "enable.auto.commit", "false");
        h_conf_set(conf, "enable.partition.eof", "false");
        snprintf(v, sizeof v, "%d", H_STATS_MS);
        h_conf_set(conf, "statistics.interval.ms", v);
        snprintf(v, sizeof v, "%d", max_poll_ms);
        h_conf_set(conf, "max.poll.interval.ms", v);
        return conf;
}

static void kip848_start(h_fixture_t *s, rec_t *r, int max_poll_ms) {
        memset(s, 0, sizeof *s);
        h_unique("kip848", s->topic, sizeof s->topic);
        h_unique("gkip848", s->group, sizeof s->group);
        h_topic_create(h_cl, s->topic, NPARTS);
        for (int i = 0; i < NPARTS; i++) {
                h_produce(h_cl, s->topic, i, counts[i], NULL, 0);
                s->want += counts[i];
        }
        rd_kafka_conf_t *conf = kip848_conf(s->group, max_poll_ms);
        /* No rebalance_cb of the app's: the probe's default handling must
         * assign incrementally or the consumer gets nothing. */
        s->p = probe_attach(conf, r);
        s->rk = h_consumer_new(conf, s->topic);
        h_track_init(&s->t);
        assert_true(
            h_poll_until(s->rk, &s->t, h_fixture_all_seen, s, H_JOIN_TIMEOUT_MS));
}

static void test_kip848_consumes_with_exact_lag(void **state) {
        (void)state;
        h_fixture_t s;
        rec_t r = {.lock = PTHREAD_MUTEX_INITIALIZER};
        kip848_start(&s, &r, H_MAX_POLL_MS);
        for (int i = 0; i < NPARTS; i++)
                assert_int_equal(s.t.consumed[i], counts[i]);
        h_commit(s.rk, s.topic, commit_at, NPARTS);
        assert_exact_lag(&s);
        h_snap_t hs;
        h_snap(s.p, &hs);
        assert_string_equal(hs.s.protocol, "COOPERATIVE");
        assert_int_equal(hs.s.assigns, 1);
        assert_int_equal(hs.s.assignment_size, NPARTS);
        assert_int_equal(hs.s.last_rebalance_err, 0);
        /* The broker's settings: unknown to the client, not its defaults. */
        assert_int_equal(hs.s.session_timeout_ms, -1);
        assert_int_equal(hs.s.heartbeat_interval_ms, -1);
        assert_int_equal(hs.s.health, LAGPROBE_HEALTH_OK);
        assert_int_equal(rec_count(&r, LAGPROBE_EVENT_CONFIG_ADVICE), 0);
        char *json = h_snap_json(s.p);
        assert_non_null(strstr(json, "\"session_timeout_ms\":null"));
        free(json);
        h_consumer_close(s.rk);
        lagprobe_destroy(s.p);
}

/* A stall past max.poll.interval.ms: warned before librdkafka evicts. */
static void test_kip848_headroom_before_eviction(void **state) {
        (void)state;
        h_fixture_t s;
        rec_t r = {.lock = PTHREAD_MUTEX_INITIALIZER};
        kip848_start(&s, &r, 3000);
        int64_t t0 = h_now_ms();
        evw_t w = {&r, LAGPROBE_EVENT_EVICTED};
        /* Stall: no poll until the probe reports the eviction. */
        assert_true(h_wait_until(event_seen, &w, h_slow_ms(15000)));
        int64_t stalled = h_now_ms() - t0;
        print_message("  evicted after %" PRId64 " ms of stall\n", stalled);
        assert_true(stalled >= 3000);
        assert_int_equal(rec_count(&r, LAGPROBE_EVENT_HEADROOM_WARN), 1);
        assert_int_equal(rec_count(&r, LAGPROBE_EVENT_HEADROOM_CRITICAL), 1);
        /* In that order, and both before the eviction. */
        assert_true(r.first[LAGPROBE_EVENT_HEADROOM_WARN] <
                    r.first[LAGPROBE_EVENT_HEADROOM_CRITICAL]);
        assert_true(r.first[LAGPROBE_EVENT_HEADROOM_CRITICAL] <
                    r.first[LAGPROBE_EVENT_EVICTED]);
        h_snap_t hs;
        h_snap(s.p, &hs);
        assert_int_equal(hs.s.evictions, 1);
        h_consumer_close(s.rk);
        lagprobe_destroy(s.p);
}
#endif

int main(void) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_callbacks_set_after_attach),
            cmocka_unit_test(test_callbacks_set_after_attach_on_copy),
            cmocka_unit_test(test_statistics_off_after_attach),
            cmocka_unit_test(test_statistics_as_events),
            cmocka_unit_test(test_rebalances_as_events),
#if RD_KAFKA_VERSION >= 0x020c00ff
            cmocka_unit_test(test_kip848_consumes_with_exact_lag),
            cmocka_unit_test(test_kip848_headroom_before_eviction),
#endif
        };
        return cmocka_run_group_tests(tests, h_group_setup, h_group_teardown);
}

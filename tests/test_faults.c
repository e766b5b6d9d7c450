/* Fault injection against the mock cluster: broker down and up, group
 * coordinator moved, injected Fetch / OffsetCommit / Heartbeat / JoinGroup
 * / SyncGroup errors, high round-trip time. In each: the consumer with the
 * probe consumes exactly what it would without it (a control consumer, or
 * every message once and committed), the probe's figures agree with an
 * independent client once the fault clears, and the probe reports the
 * fault where it should.
 * SPDX-License-Identifier: BSD-2-Clause */
#define _POSIX_C_SOURCE 200809L

#include "harness.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Kafka protocol API keys (the request types of the Kafka wire protocol;
 * librdkafka's RD_KAFKAP_* names live in a header it does not install). */
#define T_KAFKAP_Fetch 1
#define T_KAFKAP_OffsetCommit 8
#define T_KAFKAP_JoinGroup 11
#define T_KAFKAP_Heartbeat 12
#define T_KAFKAP_SyncGroup 14

#define T_NPARTS 3

/* ---- the app's callbacks ------------------------------------------- */

/* What the app's own rebalance_cb saw: the probe's counts must match. */
typedef struct app_s {
        atomic_int assigns, revokes, lost, other;
        atomic_int assigned_cnt;
} app_t;

static void app_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *parts,
                             void *opaque) {
        app_t *a = opaque;
        if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
                a->assigns++;
                a->assigned_cnt = parts ? parts->cnt : 0;
                rd_kafka_assign(rk, parts);
        } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
                a->revokes++;
                if (rd_kafka_assignment_lost(rk))
                        a->lost++;
                a->assigned_cnt = 0;
                rd_kafka_assign(rk, NULL);
        } else {
                a->other++;
                rd_kafka_assign(rk, NULL);
        }
}

/* Events that reached the probe's log_cb, per type. */
typedef struct sink_s {
        atomic_int n[LAGPROBE_EVENT__CNT];
        atomic_int bad; /* malformed events */
} sink_t;

static void sink_cb(const lagprobe_event_t *e, void *opaque) {
        sink_t *s = opaque;
        if (!e || (int)e->type < 0 || e->type >= LAGPROBE_EVENT__CNT ||
            !e->name || !e->message || !e->message[0] ||
            strcmp(e->name, lagprobe_event_name(e->type))) {
                s->bad++;
                return;
        }
        s->n[e->type]++;
}

/* ---- one scenario: a consumer with the probe, optionally a control ---- */

typedef struct fx_s {
        h_fixture_t fx; /* the consumer with the probe */
        char cgroup[64];
        rd_kafka_t *ctrl; /* without the probe (may be NULL) */
        h_track_t tc;
        app_t app;
        sink_t sink;
} fx_t;

static void fx_produce(fx_t *f, int per_partition) {
        for (int i = 0; i < T_NPARTS; i++)
                h_fixture_produce(&f->fx, i, per_partition);
}

/* Reconnect within a heartbeat or two after an outage, so that the
 * member's session survives it (librdkafka backs off up to 10 s by
 * default). */
static void fx_reconnect(rd_kafka_conf_t *conf) {
        h_conf_set(conf, "reconnect.backoff.max.ms", "200");
}

/* The probe's consumer: the fixture's conf, reconnecting fast, with the
 * app's rebalance_cb (before attach). */
static void fx_app_conf(h_fixture_t *fx, rd_kafka_conf_t **conf) {
        fx_t *f = fx->opaque;
        fx_reconnect(*conf);
        rd_kafka_conf_set_opaque(*conf, &f->app);
        rd_kafka_conf_set_rebalance_cb(*conf, app_rebalance_cb);
}

/* Fresh cluster (broker_cnt brokers), topic, groups; 'initial' messages per
 * partition. Consumers are created by fx_start(). */
static void fx_init(fx_t *f, int broker_cnt, int initial) {
        memset(f, 0, sizeof *f);
        h_fixture_init(&f->fx);
        f->fx.broker_cnt = broker_cnt;
        f->fx.topic_prefix = "ft";
        f->fx.group_prefix = "fg";
        f->fx.nparts = T_NPARTS;
        f->fx.before_attach = fx_app_conf;
        f->fx.opaque = f;
        h_fixture_topic(&f->fx);
        h_unique("fc", f->cgroup, sizeof f->cgroup);
        h_track_init(&f->tc);
        if (initial > 0)
                fx_produce(f, initial);
}

static void fx_start(fx_t *f, int with_control) {
        lagprobe_config_t pc;
        lagprobe_config_init(&pc);
        pc.log_cb = sink_cb;
        pc.log_opaque = &f->sink;
        pc.event_min_interval_ms = 0; /* every event reaches the sink */
        pc.log_level = 7;
        f->fx.pc = &pc;
        h_fixture_consumer(&f->fx);
        f->fx.pc = NULL; /* pc is gone with this frame */
        if (with_control) {
                /* Same settings and callbacks shape, no probe. */
                h_copts_t o;
                h_copts_init(&o, f->cgroup);
                rd_kafka_conf_t *cc = h_consumer_conf(f->fx.c, &o);
                fx_reconnect(cc);
                f->ctrl = h_consumer_new(cc, f->fx.topic);
        }
}

/* Also the teardown of a failed test: everything is released. */
static void fx_stop(fx_t *f) {
        h_consumer_close(f->fx.rk);
        f->fx.rk = NULL;
        h_consumer_close(f->ctrl);
        f->ctrl = NULL;
        h_fixture_stop(&f->fx);
}

static int fx_setup(void **state) {
        fx_t *f = calloc(1, sizeof *f);
        if (!f)
                return -1;
        *state = f;
        return 0;
}

static int fx_teardown(void **state) {
        fx_t *f = *state;
        fx_stop(f);
        free(f);
        return 0;
}

static h_snap_t *snap_of(lagprobe_t *p) {
        static h_snap_t hs; /* tests run one at a time */
        h_snap(p, &hs);
        return &hs;
}

/* The app (and the control consumer) got every message, and the probe
 * counted them. */
static int fx_all_consumed(void *arg) {
        fx_t *f = arg;
        if (f->fx.t.total < f->fx.want || (f->ctrl && f->tc.total < f->fx.want))
                return 0;
        return snap_of(f->fx.p)->s.consumed >= f->fx.want;
}

static int fx_poll_until(fx_t *f, h_pred_t *pred, void *arg, int timeout_ms) {
        rd_kafka_t *rks[2] = {f->fx.rk, f->ctrl};
        h_track_t *ts[2] = {&f->fx.t, &f->tc};
        return h_poll_until_n(rks, ts, f->ctrl ? 2 : 1, pred, arg, timeout_ms);
}

static void fx_poll_for(fx_t *f, int ms) { fx_poll_until(f, NULL, NULL, ms); }

static void fx_consume_all(fx_t *f, int timeout_ms) {
        assert_true(fx_poll_until(f, fx_all_consumed, f, timeout_ms));
}

/* Exactly once, in order, as the control consumer (when there is one)
 * and as the probe counted per partition. */
static void fx_assert_consumed_exactly(fx_t *f) {
        h_snap_t *hs = snap_of(f->fx.p);
        /* Error events (a broker going away) are the app's business;
         * messages are counted only once each. */
        assert_int_equal(f->fx.t.total, f->fx.want);
        assert_int_equal(hs->s.consumed, f->fx.want);
        for (int i = 0; i < T_NPARTS; i++) {
                assert_int_equal(f->fx.t.consumed[i], f->fx.produced[i]);
                assert_int_equal(f->fx.t.next_offset[i], f->fx.produced[i]);
                if (f->ctrl) {
                        assert_int_equal(f->tc.consumed[i], f->fx.t.consumed[i]);
                        assert_int_equal(f->tc.next_offset[i],
                                         f->fx.t.next_offset[i]);
                }
                const lagprobe_partition_t *x = h_snap_find(hs, f->fx.topic, i);
                assert_non_null(x);
                assert_int_equal(x->position, f->fx.produced[i]);
                assert_int_equal(x->consumed_total, f->fx.produced[i]);
        }
        if (f->ctrl)
                assert_int_equal(f->tc.total, f->fx.t.total);
}

/* Synchronous commit of what the app consumed; returns the error (the
 * request's or the first partition's). */
static rd_kafka_resp_err_t fx_commit(fx_t *f, int64_t *committed) {
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(T_NPARTS);
        for (int i = 0; i < T_NPARTS; i++) {
                int64_t off = f->fx.t.next_offset[i];
                if (off >= 0)
                        rd_kafka_topic_partition_list_add(l, f->fx.topic, i)
                            ->offset = off;
                if (committed)
                        committed[i] = off;
        }
        rd_kafka_resp_err_t err = rd_kafka_commit(f->fx.rk, l, 0);
        for (int i = 0; !err && i < l->cnt; i++)
                err = l->elems[i].err;
        rd_kafka_topic_partition_list_destroy(l);
        return err;
}

/* Commits for the app, and the same for the control consumer (so that
 * both resume from the same place after a rebalance). */
static void fx_commit_ok(fx_t *f) {
        rd_kafka_resp_err_t err = fx_commit(f, NULL);
        if (err)
                fail_msg("commit: %s", rd_kafka_err2name(err));
        if (f->ctrl) {
                rd_kafka_topic_partition_list_t *l =
                    rd_kafka_topic_partition_list_new(T_NPARTS);
                for (int i = 0; i < T_NPARTS; i++)
                        if (f->tc.next_offset[i] >= 0)
                                rd_kafka_topic_partition_list_add(l, f->fx.topic,
                                                                  i)
                                    ->offset = f->tc.next_offset[i];
                err = l->cnt ? rd_kafka_commit(f->ctrl, l, 0) : 0;
                rd_kafka_topic_partition_list_destroy(l);
                if (err)
                        fail_msg("control commit: %s", rd_kafka_err2name(err));
        }
}

/* The probe agrees with an independent client ("describe"). */
typedef struct agree_s {
        fx_t *f;
        h_desc_t d[T_NPARTS];
} agree_t;

static int probe_agrees(void *arg) {
        agree_t *a = arg;
        h_snap_t *hs = snap_of(a->f->fx.p);
        if (hs->s.partition_cnt != T_NPARTS)
                return 0;
        for (int i = 0; i < T_NPARTS; i++) {
                const lagprobe_partition_t *x = h_snap_find(hs, a->f->fx.topic, i);
                if (!x || x->high_watermark != a->d[i].log_end ||
                    x->committed_offset != a->d[i].committed ||
                    x->lag != a->d[i].lag)
                        return 0;
        }
        return 1;
}

static void fx_assert_agrees(fx_t *f) {
        agree_t a = {f, {{0}}};
        h_describe(f->fx.c, f->fx.group, f->fx.topic, T_NPARTS, a.d);
        /* Statistics arrive inside polls: give them a few intervals. */
        fx_poll_until(f, probe_agrees, &a, 5000);
        h_snap_t *hs = snap_of(f->fx.p);
        assert_int_equal(hs->s.partition_cnt, T_NPARTS);
        for (int i = 0; i < T_NPARTS; i++) {
                const lagprobe_partition_t *x = h_snap_find(hs, f->fx.topic, i);
                assert_non_null(x);
                print_message("  [%d] probe hwm %" PRId64 " committed %" PRId64
                              " lag %" PRId64 " | describe end %" PRId64
                              " committed %" PRId64 " lag %" PRId64 "\n",
                              i, x->high_watermark, x->committed_offset,
                              x->lag, a.d[i].log_end, a.d[i].committed,
                              a.d[i].lag);
                assert_int_equal(x->high_watermark, a.d[i].log_end);
                assert_int_equal(x->committed_offset, a.d[i].committed);
                assert_int_equal(x->lag, a.d[i].lag);
                assert_int_equal(a.d[i].log_end, f->fx.produced[i]);
        }
}

/* Every partition's high watermark is fresh: not stale, and from a
 * recent statistics document (they come every H_STATS_MS). */
static int hwm_fresh(void *arg) {
        fx_t *f = arg;
        h_snap_t *hs = snap_of(f->fx.p);
        if (hs->s.partition_cnt != T_NPARTS)
                return 0;
        for (int i = 0; i < T_NPARTS; i++) {
                const lagprobe_partition_t *x = h_snap_find(hs, f->fx.topic, i);
                if (!x || x->stale || x->hwm_age_ms < 0 ||
                    x->hwm_age_ms >= 1000)
                        return 0;
        }
        return 1;
}

/* The probe's rebalance counts are the app's. */
static void fx_assert_rebalances_match(fx_t *f) {
        h_snap_t *hs = snap_of(f->fx.p);
        print_message("  app assigns %d revokes %d lost %d | probe assigns %" PRId64
                      " revokes %" PRId64 " lost %" PRId64 " rebalances %" PRId64
                      " events %" PRId64 " last_err %d\n",
                      f->app.assigns, f->app.revokes, f->app.lost,
                      hs->s.assigns, hs->s.revokes, hs->s.lost,
                      hs->s.rebalances, hs->s.events[LAGPROBE_EVENT_REBALANCE],
                      hs->s.last_rebalance_err);
        assert_int_equal(f->app.other, 0);
        assert_int_equal(hs->s.assigns, f->app.assigns);
        assert_int_equal(hs->s.revokes, f->app.revokes);
        assert_int_equal(hs->s.lost, f->app.lost);
        assert_int_equal(hs->s.rebalances, f->app.assigns + f->app.revokes);
        assert_int_equal(hs->s.assignment_size, f->app.assigned_cnt);
}

/* Events the watchdog delivered by the time the counters settle. */
typedef struct ev_wait_s {
        fx_t *f;
        lagprobe_event_type_t type;
        int min;
} ev_wait_t;

static int event_delivered(void *arg) {
        ev_wait_t *w = arg;
        return w->f->sink.n[w->type] >= w->min;
}

/* ---- broker down, then up ---------------------------------------------- */

static void test_broker_down_then_up(void **state) {
        fx_t *f = *state;
        fx_init(f, 1, 20);
        fx_start(f, 1);
        fx_consume_all(f, H_JOIN_TIMEOUT_MS);
        fx_commit_ok(f);
        fx_assert_agrees(f);

        /* Down for 2 s (under session.timeout.ms: the member survives). */
        int64_t assigns0 = snap_of(f->fx.p)->s.assigns;
        rd_kafka_mock_broker_set_down(f->fx.c->mcluster, 1);
        int64_t t0 = h_now_ms();
        int64_t max_age = -1;
        int stale_seen = 0;
        while (h_now_ms() - t0 < 2000) {
                fx_poll_for(f, 100);
                h_snap_t *hs = snap_of(f->fx.p);
                for (size_t i = 0; i < hs->s.partition_cnt; i++) {
                        if (hs->parts[i].hwm_age_ms > max_age)
                                max_age = hs->parts[i].hwm_age_ms;
                        stale_seen |= hs->parts[i].stale;
                }
        }
        print_message("  broker down 2 s: max hwm_age_ms %" PRId64
                      " stale seen %d\n",
                      max_age, stale_seen);
        rd_kafka_mock_broker_set_up(f->fx.c->mcluster, 1);

        /* After the outage: new messages flow, nothing is lost or
         * duplicated, and the figures agree again. */
        fx_produce(f, 15);
        fx_consume_all(f, 20000);
        fx_poll_for(f, 300);
        fx_assert_consumed_exactly(f);
        fx_commit_ok(f);
        fx_assert_agrees(f);
        /* Fetching again: the figures are fresh again. */
        assert_true(fx_poll_until(f, hwm_fresh, f, 5000));
        h_snap_t *hs = snap_of(f->fx.p);
        /* No rebalance: the member kept its assignment. */
        assert_int_equal(hs->s.assigns, assigns0);
        /* The app kept polling through the outage: no headroom alarm. */
        assert_int_equal(hs->s.events[LAGPROBE_EVENT_HEADROOM_WARN], 0);
        assert_int_equal(hs->s.evictions, 0);
        assert_int_equal(hs->s.commit_errors, 0);
        fx_assert_rebalances_match(f);
        assert_int_equal(f->sink.bad, 0);
        fx_stop(f);
        /* While the only broker was unreachable no Fetch was answered: the
         * high watermark was as old as the outage, and the probe must say
         * so (stale, or an hwm_age_ms that grows with the outage). */
        assert_true(stale_seen || max_age >= 1500);
}


/* ---- group coordinator moved ------------------------------------------- */

static void test_coordinator_moved(void **state) {
        fx_t *f = *state;
        fx_init(f, 3, 20);
        /* Start on broker 1 so that the move below is a real move. */
        rd_kafka_mock_coordinator_set(f->fx.c->mcluster, "group", f->fx.group, 1);
        fx_start(f, 1);
        fx_consume_all(f, H_JOIN_TIMEOUT_MS);
        fx_commit_ok(f);
        fx_assert_agrees(f);
        int64_t commits0 = snap_of(f->fx.p)->s.commits;

        rd_kafka_mock_coordinator_set(f->fx.c->mcluster, "group", f->fx.group, 2);
        fx_produce(f, 10);
        fx_consume_all(f, 15000);
        /* The first commit after the move meets NOT_COORDINATOR at the old
         * coordinator; librdkafka finds the new one and retries. */
        fx_commit_ok(f);
        fx_poll_for(f, 500);
        fx_assert_consumed_exactly(f);
        fx_assert_agrees(f);

        /* Once more on the new coordinator, then back. */
        rd_kafka_mock_coordinator_set(f->fx.c->mcluster, "group", f->fx.group, 3);
        fx_produce(f, 5);
        fx_consume_all(f, 15000);
        fx_commit_ok(f);
        fx_assert_consumed_exactly(f);
        fx_assert_agrees(f);

        h_snap_t *hs = snap_of(f->fx.p);
        assert_int_equal(hs->s.commits, commits0 + 2);
        /* The retried commits succeeded: nothing failed from the app's
         * point of view, nor from the probe's. */
        assert_int_equal(hs->s.commit_errors, 0);
        assert_int_equal(f->sink.n[LAGPROBE_EVENT_COMMIT_FAILED], 0);
        fx_assert_rebalances_match(f);
        assert_int_equal(hs->s.last_rebalance_err, 0);
        assert_int_equal(f->sink.bad, 0);
        fx_stop(f);
}

/* ---- injected Fetch errors --------------------------------------------- */

static void test_fetch_errors(void **state) {
        fx_t *f = *state;
        fx_init(f, 1, 20);
        fx_start(f, 0);
        fx_consume_all(f, H_JOIN_TIMEOUT_MS);
        fx_commit_ok(f);

        /* The next Fetch requests fail: partition leadership errors, a
         * timeout and a dropped connection. librdkafka refreshes metadata,
         * reconnects and fetches again from where it was. */
        rd_kafka_mock_push_request_errors(
            f->fx.c->mcluster, T_KAFKAP_Fetch, 6,
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR__TRANSPORT,
            RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION);
        fx_produce(f, 30);
        fx_consume_all(f, 20000);
        fx_poll_for(f, 500);
        /* Every message once, in order: no gap, no redelivery. */
        fx_assert_consumed_exactly(f);
        fx_commit_ok(f);
        fx_assert_agrees(f);

        /* Fetching resumed: the high watermarks are fresh. */
        assert_true(fx_poll_until(f, hwm_fresh, f, 5000));
        h_snap_t *hs = snap_of(f->fx.p);
        for (int i = 0; i < T_NPARTS; i++) {
                const lagprobe_partition_t *x = h_snap_find(hs, f->fx.topic, i);
                assert_int_equal(x->consumed, f->fx.produced[i]);
                assert_int_equal(x->position_lag, 0);
                assert_int_equal(x->lag, 0);
        }
        assert_int_equal(hs->s.commit_errors, 0);
        fx_assert_rebalances_match(f);
        assert_int_equal(hs->s.assigns, 1);
        assert_int_equal(f->sink.bad, 0);
        fx_stop(f);
}

/* ---- injected OffsetCommit errors -------------------------------------- */

static void test_offset_commit_errors(void **state) {
        fx_t *f = *state;
        fx_init(f, 1, 12);
        fx_start(f, 0);
        fx_consume_all(f, H_JOIN_TIMEOUT_MS);
        int64_t first[T_NPARTS];
        fx_commit_ok(f);
        for (int i = 0; i < T_NPARTS; i++)
                first[i] = f->fx.t.next_offset[i];
        fx_assert_agrees(f);

        /* A retriable error is retried inside librdkafka: the commit
         * succeeds and nothing failed. */
        fx_produce(f, 4);
        fx_consume_all(f, 10000);
        rd_kafka_mock_push_request_errors(
            f->fx.c->mcluster, T_KAFKAP_OffsetCommit, 1,
            RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS);
        fx_commit_ok(f);
        for (int i = 0; i < T_NPARTS; i++)
                first[i] = f->fx.t.next_offset[i];
        fx_poll_for(f, 300); /* a watchdog pass or three */
        h_snap_t *hs = snap_of(f->fx.p);
        assert_int_equal(hs->s.commit_errors, 0);
        assert_int_equal(hs->s.last_commit_err, 0);
        assert_int_equal(hs->s.events[LAGPROBE_EVENT_COMMIT_FAILED], 0);
        fx_assert_agrees(f);

        /* A permanent error fails the commit: the app sees it, and so does
         * the probe, per partition and in total, with an event. */
        fx_produce(f, 5);
        fx_consume_all(f, 10000);
        rd_kafka_mock_push_request_errors(
            f->fx.c->mcluster, T_KAFKAP_OffsetCommit, 1,
            RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE);
        rd_kafka_resp_err_t err = fx_commit(f, NULL);
        assert_int_equal(err, RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE);
        ev_wait_t w = {f, LAGPROBE_EVENT_COMMIT_FAILED, 1};
        assert_true(fx_poll_until(f, event_delivered, &w, 3000));
        hs = snap_of(f->fx.p);
        assert_int_equal(hs->s.commit_errors, 1);
        assert_int_equal(hs->s.last_commit_err,
                         RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE);
        assert_int_equal(hs->s.events[LAGPROBE_EVENT_COMMIT_FAILED], 1);
        assert_true(hs->s.health_reasons & LAGPROBE_REASON_COMMIT_FAILING);
        assert_int_equal(hs->s.health, LAGPROBE_HEALTH_DEGRADED);
        char reasons[256];
        assert_int_equal(lagprobe_health(f->fx.p, reasons, sizeof reasons),
                         LAGPROBE_HEALTH_DEGRADED);
        assert_non_null(strstr(reasons, "commit_failing"));
        for (int i = 0; i < T_NPARTS; i++) {
                const lagprobe_partition_t *x = h_snap_find(hs, f->fx.topic, i);
                assert_non_null(x);
                assert_int_equal(x->commit_errors, 1);
                assert_int_equal(x->last_commit_err,
                                 RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE);
                /* The failed offsets were not committed: lag keeps the
                 * last committed offset, as the broker does. */
                assert_int_equal(x->committed_offset, first[i]);
        }
        fx_assert_agrees(f);

        /* JSON says the same. */
        char *js = h_snap_json(f->fx.p);
        h_json_t *j = h_json_parse(js, strlen(js));
        assert_non_null(j);
        const h_json_t *cm = h_json_get(j, "commits");
        assert_non_null(cm);
        assert_int_equal(h_json_int(cm, "errors"), 1);
        const h_json_t *le = h_json_get(cm, "last_error");
        assert_non_null(le);
        assert_int_equal(le->type, H_JSTR);
        assert_true(strlen(le->str) > 0);
        h_json_free(j);
        free(js);

        /* The next commit succeeds: figures catch up, the error counts
         * stay as history, the per-partition last error clears. */
        fx_commit_ok(f);
        fx_assert_agrees(f);
        hs = snap_of(f->fx.p);
        assert_int_equal(hs->s.commit_errors, 1);
        for (int i = 0; i < T_NPARTS; i++) {
                const lagprobe_partition_t *x = h_snap_find(hs, f->fx.topic, i);
                assert_int_equal(x->committed_offset, f->fx.produced[i]);
                assert_int_equal(x->lag, 0);
                assert_int_equal(x->commit_errors, 1);
                assert_int_equal(x->last_commit_err, 0);
        }
        fx_assert_consumed_exactly(f);
        fx_assert_rebalances_match(f);
        assert_int_equal(f->sink.bad, 0);
        fx_stop(f);
}

/* ---- group errors that force a rejoin ---------------------------------- */

typedef struct rejoin_s {
        fx_t *f;
        int assigns; /* the app's count before the fault */
        int rejoins; /* new assignments the fault leads to */
} rejoin_t;

/* The app got every partition back after the expected number of new
 * assignments, and the probe has seen them. */
static int reassigned(void *arg) {
        rejoin_t *r = arg;
        return r->f->app.assigns >= r->assigns + r->rejoins &&
               r->f->app.assigned_cnt == T_NPARTS &&
               snap_of(r->f->fx.p)->s.assigns == r->f->app.assigns;
}

/* Pushes the errors for one API (after a Heartbeat that asks for a rejoin
 * when the API is only used while joining), waits for the rejoins, then
 * checks that the consumer carried on as before and the probe counted
 * what the app saw. */
static void rejoin_scenario(fx_t *f, int16_t api,
                            const rd_kafka_resp_err_t *errs, size_t cnt,
                            int rejoins, int lost, int with_heartbeat_kick) {
        fx_init(f, 1, 10);
        fx_start(f, 0);
        fx_consume_all(f, H_JOIN_TIMEOUT_MS);
        fx_commit_ok(f);
        fx_assert_agrees(f);
        rejoin_t r = {f, f->app.assigns, rejoins};
        int revokes0 = f->app.revokes;

        rd_kafka_mock_push_request_errors_array(f->fx.c->mcluster, api, cnt, errs);
        if (with_heartbeat_kick)
                /* The broker asks the member to rejoin; the errors above
                 * then hit the JoinGroup/SyncGroup of that rejoin. */
                rd_kafka_mock_push_request_errors(
                    f->fx.c->mcluster, T_KAFKAP_Heartbeat, 1,
                    RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS);
        int64_t t0 = h_now_ms();
        assert_true(fx_poll_until(f, reassigned, &r, 30000));
        print_message("  rejoined after %" PRId64 " ms\n", h_now_ms() - t0);
        fx_poll_for(f, 300);

        h_snap_t *hs = snap_of(f->fx.p);
        assert_int_equal(f->app.revokes, revokes0 + rejoins);
        assert_int_equal(f->app.assigns, r.assigns + rejoins);
        assert_int_equal(f->app.lost, lost);
        fx_assert_rebalances_match(f);
        assert_int_equal(hs->s.partition_cnt, T_NPARTS);
        /* The gap without an assignment was measured: the mock makes the
         * member wait session.timeout.ms - 1000 ms for the others. */
        print_message("  last_unassigned_ms %" PRId64 "\n",
                      hs->s.last_unassigned_ms);
        assert_true(hs->s.last_unassigned_ms >= 1000);
        assert_int_equal(hs->s.unassigned_ms, 0);
        /* Each rebalance was said (assign and revoke may share a pass). */
        assert_true(hs->s.events[LAGPROBE_EVENT_REBALANCE] >= 1 + rejoins);
        assert_int_equal(f->sink.n[LAGPROBE_EVENT_REBALANCE],
                         hs->s.events[LAGPROBE_EVENT_REBALANCE]);
        /* librdkafka hands rebalance_cb only ASSIGN/REVOKE: the probe
         * invents no rebalance error. */
        assert_int_equal(hs->s.last_rebalance_err, 0);

        /* Consumption resumes from the committed offsets: every message
         * once. */
        fx_produce(f, 7);
        fx_consume_all(f, 15000);
        fx_poll_for(f, 300);
        fx_assert_consumed_exactly(f);
        fx_commit_ok(f);
        fx_assert_agrees(f);
        assert_int_equal(snap_of(f->fx.p)->s.commit_errors, 0);
        assert_int_equal(f->sink.bad, 0);
        fx_stop(f);
}

static void test_heartbeat_errors(void **state) {
        /* The broker says the group is rebalancing, then that the
         * generation is stale (the assignment is lost): two rejoins. */
        const rd_kafka_resp_err_t errs[] = {
            RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
            RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION};
        rejoin_scenario(*state, T_KAFKAP_Heartbeat, errs, 2, 2, 1, 0);
}

static void test_joingroup_errors(void **state) {
        /* The rejoin's JoinGroup fails twice before it goes through. */
        const rd_kafka_resp_err_t errs[] = {
            RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
            RD_KAFKA_RESP_ERR_NOT_COORDINATOR};
        rejoin_scenario(*state, T_KAFKAP_JoinGroup, errs, 2, 1, 0, 1);
}

static void test_syncgroup_errors(void **state) {
        /* The rejoin's SyncGroup says the group is rebalancing again: one
         * more JoinGroup round before the assignment arrives. */
        const rd_kafka_resp_err_t errs[] = {
            RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS};
        rejoin_scenario(*state, T_KAFKAP_SyncGroup, errs, 1, 1, 0, 1);
}

/* ---- high round-trip time ---------------------------------------------- */

static void test_high_rtt(void **state) {
        fx_t *f = *state;
        fx_init(f, 1, 20);
        fx_start(f, 1);
        fx_consume_all(f, H_JOIN_TIMEOUT_MS);
        fx_commit_ok(f);
        fx_assert_agrees(f);

        /* Every response now takes 400 ms: a slow broker, not a slow app. */
        rd_kafka_mock_broker_set_rtt(f->fx.c->mcluster, 1, 400);
        fx_produce(f, 20);
        fx_consume_all(f, 20000);
        int64_t t0 = h_now_ms();
        fx_commit_ok(f);
        int64_t commit_ms = h_now_ms() - t0;
        print_message("  commit took %" PRId64 " ms with rtt 400\n", commit_ms);
        assert_true(commit_ms >= 300);
        fx_poll_for(f, 1000);
        fx_assert_consumed_exactly(f);

        h_snap_t *hs = snap_of(f->fx.p);
        /* The app kept polling: no headroom warning, no eviction. */
        assert_int_equal(hs->s.events[LAGPROBE_EVENT_HEADROOM_WARN], 0);
        assert_int_equal(hs->s.events[LAGPROBE_EVENT_HEADROOM_CRITICAL], 0);
        assert_int_equal(hs->s.evictions, 0);
        assert_int_equal(hs->s.headroom_level, 0);
        assert_true(hs->s.since_last_poll_ms >= 0 &&
                    hs->s.since_last_poll_ms < 2000);

        rd_kafka_mock_broker_set_rtt(f->fx.c->mcluster, 1, 0);
        fx_assert_agrees(f);
        hs = snap_of(f->fx.p);
        assert_int_equal(hs->s.commit_errors, 0);
        fx_assert_rebalances_match(f);
        assert_int_equal(hs->s.assigns, 1);
        assert_int_equal(f->sink.bad, 0);
        fx_stop(f);
}

int main(void) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(test_broker_down_then_up, fx_setup, fx_teardown),
            cmocka_unit_test_setup_teardown(test_coordinator_moved, fx_setup, fx_teardown),
            cmocka_unit_test_setup_teardown(test_fetch_errors, fx_setup, fx_teardown),
            cmocka_unit_test_setup_teardown(test_offset_commit_errors, fx_setup, fx_teardown),
            cmocka_unit_test_setup_teardown(test_heartbeat_errors, fx_setup, fx_teardown),
            cmocka_unit_test_setup_teardown(test_joingroup_errors, fx_setup, fx_teardown),
            cmocka_unit_test_setup_teardown(test_syncgroup_errors, fx_setup, fx_teardown),
            cmocka_unit_test_setup_teardown(test_high_rtt, fx_setup, fx_teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}

/* lagprobe_attach() and lifecycle: misuse errors, NULL arguments, conf
 * copies and destruction orders, statistics.interval.ms, chaining to the
 * app's own callbacks with the app's opaque.
 * SPDX-License-Identifier: BSD-2-Clause */
#define _POSIX_C_SOURCE 200809L

#include "harness.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A consumer conf that is not connected to anything. */
static rd_kafka_conf_t *plain_conf(const char *group) {
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        if (group)
                h_conf_set(conf, "group.id", group);
        return conf;
}

#define ASSERT_ERRSTR(errstr, ...)                                             \
        do {                                                                   \
                if (!h_contains_any((errstr), __VA_ARGS__, (const char *)NULL)) \
                        fail_msg("errstr \"%s\" lacks the expected words",     \
                                 (errstr));                                    \
        } while (0)

/* ---- misuse -------------------------------------------------------- */

static void test_attach_null_args(void **state) {
        (void)state;
        char errstr[256] = "";
        rd_kafka_conf_t *conf = plain_conf("g");
        lagprobe_t *p = h_probe_new();

        assert_int_equal(lagprobe_attach(NULL, conf, errstr, sizeof errstr), -1);
        ASSERT_ERRSTR(errstr, "probe");
        ASSERT_ERRSTR(errstr, "null");

        errstr[0] = 0;
        assert_int_equal(lagprobe_attach(p, NULL, errstr, sizeof errstr), -1);
        ASSERT_ERRSTR(errstr, "conf");
        ASSERT_ERRSTR(errstr, "null");

        /* No errstr buffer: still an error, no crash. */
        assert_int_equal(lagprobe_attach(NULL, NULL, NULL, 0), -1);

        /* The failed calls left both usable. */
        assert_int_equal(lagprobe_attach(p, conf, errstr, sizeof errstr), 0);
        rd_kafka_conf_destroy(conf);
        lagprobe_destroy(p);
}

static void test_attach_no_group_id(void **state) {
        (void)state;
        char errstr[256] = "";
        rd_kafka_conf_t *conf = plain_conf(NULL);
        lagprobe_t *p = h_probe_new();
        assert_int_equal(lagprobe_attach(p, conf, errstr, sizeof errstr), -1);
        ASSERT_ERRSTR(errstr, "group.id");
        /* A refused attach changes nothing on the conf. */
        char v[64];
        assert_string_equal(h_conf_get(conf, "statistics.interval.ms", v,
                                       sizeof v),
                            "0");
        rd_kafka_conf_destroy(conf);
        lagprobe_destroy(p);
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *o) {
        (void)rk;
        (void)m;
        (void)o;
}

static void dr_cb(rd_kafka_t *rk, void *payload, size_t len,
                  rd_kafka_resp_err_t err, void *o, void *mo) {
        (void)rk;
        (void)payload;
        (void)len;
        (void)err;
        (void)o;
        (void)mo;
}

static void test_attach_producer_conf(void **state) {
        (void)state;
        char errstr[256] = "";
        lagprobe_t *p = h_probe_new();

        rd_kafka_conf_t *conf = plain_conf("g");
        rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
        assert_int_equal(lagprobe_attach(p, conf, errstr, sizeof errstr), -1);
        ASSERT_ERRSTR(errstr, "delivery", "dr_msg_cb", "producer");
        rd_kafka_conf_destroy(conf);

        /* The legacy delivery callback too. */
        errstr[0] = 0;
        conf = plain_conf("g");
        rd_kafka_conf_set_dr_cb(conf, dr_cb);
        assert_int_equal(lagprobe_attach(p, conf, errstr, sizeof errstr), -1);
        ASSERT_ERRSTR(errstr, "delivery", "dr_cb", "producer");
        rd_kafka_conf_destroy(conf);
        lagprobe_destroy(p);
}

static void test_attach_twice(void **state) {
        (void)state;
        char errstr[256] = "";
        lagprobe_t *p = h_probe_new();
        rd_kafka_conf_t *c1 = plain_conf("g"), *c2 = plain_conf("g");
        assert_int_equal(lagprobe_attach(p, c1, errstr, sizeof errstr), 0);
        /* Same conf again. */
        assert_int_equal(lagprobe_attach(p, c1, errstr, sizeof errstr), -1);
        ASSERT_ERRSTR(errstr, "already");
        /* Another conf. */
        errstr[0] = 0;
        assert_int_equal(lagprobe_attach(p, c2, errstr, sizeof errstr), -1);
        ASSERT_ERRSTR(errstr, "already");
        /* c2 was not touched: a fresh probe still attaches to it. */
        lagprobe_t *p2 = h_probe_new();
        assert_int_equal(lagprobe_attach(p2, c2, errstr, sizeof errstr), 0);
        rd_kafka_conf_destroy(c1);
        rd_kafka_conf_destroy(c2);
        lagprobe_destroy(p);
        lagprobe_destroy(p2);
}

static void test_attach_conf_carries_probe(void **state) {
        (void)state;
        char errstr[256] = "";
        lagprobe_t *p1 = h_probe_new(), *p2 = h_probe_new();
        rd_kafka_conf_t *conf = plain_conf("g");
        assert_int_equal(lagprobe_attach(p1, conf, errstr, sizeof errstr), 0);
        assert_int_equal(lagprobe_attach(p2, conf, errstr, sizeof errstr), -1);
        ASSERT_ERRSTR(errstr, "already");
        /* A copy carries the probe as well. */
        rd_kafka_conf_t *dup = rd_kafka_conf_dup(conf);
        errstr[0] = 0;
        assert_int_equal(lagprobe_attach(p2, dup, errstr, sizeof errstr), -1);
        ASSERT_ERRSTR(errstr, "already");
        /* The refused probe is still free to attach elsewhere. */
        rd_kafka_conf_t *other = plain_conf("g");
        assert_int_equal(lagprobe_attach(p2, other, errstr, sizeof errstr), 0);
        rd_kafka_conf_destroy(conf);
        rd_kafka_conf_destroy(dup);
        rd_kafka_conf_destroy(other);
        lagprobe_destroy(p1);
        lagprobe_destroy(p2);
}

static void test_max_probes(void **state) {
        (void)state;
        char errstr[256] = "";
        lagprobe_t *p[LAGPROBE_MAX_PROBES + 1];
        rd_kafka_conf_t *c[LAGPROBE_MAX_PROBES + 1];
        for (int i = 0; i < LAGPROBE_MAX_PROBES; i++) {
                p[i] = h_probe_new();
                c[i] = plain_conf("g");
                assert_int_equal(
                    lagprobe_attach(p[i], c[i], errstr, sizeof errstr), 0);
        }
        int last = LAGPROBE_MAX_PROBES;
        p[last] = h_probe_new();
        c[last] = plain_conf("g");
        assert_int_equal(lagprobe_attach(p[last], c[last], errstr, sizeof errstr),
                         -1);
        ASSERT_ERRSTR(errstr, "LAGPROBE_MAX_PROBES", "slot");
        /* Releasing one probe (handle and conf) frees its slot. */
        rd_kafka_conf_destroy(c[0]);
        lagprobe_destroy(p[0]);
        assert_int_equal(lagprobe_attach(p[last], c[last], errstr, sizeof errstr),
                         0);
        for (int i = 1; i <= LAGPROBE_MAX_PROBES; i++) {
                rd_kafka_conf_destroy(c[i]);
                lagprobe_destroy(p[i]);
        }
}

/* ---- lagprobe_new / destroy / snapshot with odd arguments ---------- */

static void test_new_defaults_and_destroy_null(void **state) {
        (void)state;
        char errstr[256] = "";
        lagprobe_t *p = lagprobe_new(NULL, errstr, sizeof errstr);
        assert_non_null(p);
        h_snap_t hs;
        h_snap(p, &hs);
        assert_int_equal(hs.s.bound, 0);
        assert_int_equal(hs.s.partition_cnt, 0);
        assert_int_equal(hs.s.assigns, 0);
        assert_int_equal(hs.s.stats_docs, 0);
        assert_int_equal(hs.s.last_rebalance_ms_ago, -1);
        assert_string_equal(hs.s.protocol, "NONE");
        assert_string_equal(hs.s.group_id, "");
        lagprobe_destroy(p);
        lagprobe_destroy(NULL);

        lagprobe_config_t pc;
        lagprobe_config_init(&pc);
        assert_int_equal(pc.stats_interval_ms, 1000);
        assert_int_equal(pc.watchdog_interval_ms, 100);
        /* Without a watchdog thread too. */
        pc.watchdog_interval_ms = 0;
        p = lagprobe_new(&pc, errstr, sizeof errstr);
        assert_non_null(p);
        assert_int_equal(lagprobe_tick(p), 0);
        lagprobe_destroy(p);
        assert_int_equal(lagprobe_tick(NULL), -1);

        /* A bad config is refused and the errstr names the field. */
        lagprobe_config_init(&pc);
        pc.stats_interval_ms = -1;
        errstr[0] = 0;
        assert_null(lagprobe_new(&pc, errstr, sizeof errstr));
        ASSERT_ERRSTR(errstr, "stats_interval_ms");
}

static void test_snapshot_null_args(void **state) {
        (void)state;
        lagprobe_t *p = h_probe_new();
        lagprobe_snapshot_t s;
        lagprobe_partition_t parts[4];

        lagprobe_snapshot_init(&s, parts, 4);
        assert_int_equal(s.struct_size, sizeof s);
        assert_int_equal(lagprobe_snapshot(NULL, &s), -1);
        assert_int_equal(lagprobe_snapshot(p, NULL), -1);
        /* Not initialised. */
        memset(&s, 0, sizeof s);
        assert_int_equal(lagprobe_snapshot(p, &s), -1);
        lagprobe_snapshot_init(NULL, parts, 4); /* no crash */
        /* NULL partition array. */
        lagprobe_snapshot_init(&s, NULL, 5);
        assert_int_equal(s.partitions_size, 0);
        assert_int_equal(lagprobe_snapshot(p, &s), 0);

        char buf[64];
        memset(buf, 'x', sizeof buf);
        assert_int_equal(lagprobe_snapshot_json(NULL, buf, sizeof buf), 0);
        assert_int_equal(buf[0], 0);
        assert_int_equal(lagprobe_snapshot_json(NULL, NULL, 0), 0);

        size_t need = lagprobe_snapshot_json(p, NULL, 0);
        assert_true(need > 10);
        char *full = malloc(need + 1);
        assert_non_null(full);
        assert_int_equal(lagprobe_snapshot_json(p, full, need + 1), need);
        assert_int_equal(strlen(full), need);
        h_json_t *j = h_json_parse(full, need);
        assert_non_null(j);
        h_json_free(j);

        /* Too small: snprintf semantics, NUL-terminated prefix. */
        memset(buf, 'x', sizeof buf);
        assert_int_equal(lagprobe_snapshot_json(p, buf, 8), need);
        assert_int_equal(strlen(buf), 7);
        assert_memory_equal(buf, full, 7);
        assert_int_equal(buf[8], 'x');
        /* Size 1: just the NUL. */
        buf[0] = 'x';
        assert_int_equal(lagprobe_snapshot_json(p, buf, 1), need);
        assert_int_equal(buf[0], 0);
        free(full);
        lagprobe_destroy(p);
}

/* ---- conf lifecycle without a client ------------------------------- */

static void test_conf_destroyed_without_new(void **state) {
        (void)state;
        char errstr[256];
        /* Conf first, then the probe. */
        lagprobe_t *p = h_probe_new();
        rd_kafka_conf_t *conf = plain_conf("g");
        assert_int_equal(lagprobe_attach(p, conf, errstr, sizeof errstr), 0);
        rd_kafka_conf_destroy(conf);
        h_snap_t hs;
        h_snap(p, &hs);
        assert_int_equal(hs.s.bound, 0);
        lagprobe_destroy(p);

        /* Probe first, then the conf (and a copy of it). */
        p = h_probe_new();
        conf = plain_conf("g");
        assert_int_equal(lagprobe_attach(p, conf, errstr, sizeof errstr), 0);
        rd_kafka_conf_t *dup = rd_kafka_conf_dup(conf);
        lagprobe_destroy(p);
        rd_kafka_conf_destroy(conf);
        rd_kafka_conf_destroy(dup);
        /* Leaks or use-after-free show up under ASan. */
}

/* ---- statistics.interval.ms ---------------------------------------- */

static void test_stats_interval_default(void **state) {
        (void)state;
        char errstr[256], v[64];
        /* Default probe config: 1000 when the app left it at 0. */
        lagprobe_t *p = h_probe_new();
        rd_kafka_conf_t *conf = plain_conf("g");
        assert_string_equal(
            h_conf_get(conf, "statistics.interval.ms", v, sizeof v), "0");
        assert_int_equal(lagprobe_attach(p, conf, errstr, sizeof errstr), 0);
        assert_string_equal(
            h_conf_get(conf, "statistics.interval.ms", v, sizeof v), "1000");
        rd_kafka_conf_destroy(conf);
        lagprobe_destroy(p);

        /* The configured default. */
        lagprobe_config_t pc;
        lagprobe_config_init(&pc);
        pc.stats_interval_ms = 250;
        p = lagprobe_new(&pc, errstr, sizeof errstr);
        assert_non_null(p);
        conf = plain_conf("g");
        h_conf_set(conf, "statistics.interval.ms", "0");
        assert_int_equal(lagprobe_attach(p, conf, errstr, sizeof errstr), 0);
        assert_string_equal(
            h_conf_get(conf, "statistics.interval.ms", v, sizeof v), "250");
        rd_kafka_conf_destroy(conf);
        lagprobe_destroy(p);

        /* The app's own value is left alone. */
        p = lagprobe_new(&pc, errstr, sizeof errstr);
        assert_non_null(p);
        conf = plain_conf("g");
        h_conf_set(conf, "statistics.interval.ms", "100");
        assert_int_equal(lagprobe_attach(p, conf, errstr, sizeof errstr), 0);
        assert_string_equal(
            h_conf_get(conf, "statistics.interval.ms", v, sizeof v), "100");
        rd_kafka_conf_destroy(conf);
        lagprobe_destroy(p);
}

/* ---- with a consumer ----------------------------------------------- */

typedef struct consumed_ctx_s {
        lagprobe_t *p;
        h_track_t *t;
        int64_t want;
} consumed_ctx_t;

/* The app got want messages and the probe counted all of them. */
static int probe_consumed(void *arg) {
        consumed_ctx_t *c = arg;
        h_snap_t hs;
        h_snap(c->p, &hs);
        return c->t->total >= c->want && hs.s.consumed >= c->want;
}

static int app_consumed(void *arg) {
        consumed_ctx_t *c = arg;
        return c->t->total >= c->want;
}

/* Only a copy of the conf makes the consumer. */
static void use_dup(h_fixture_t *f, rd_kafka_conf_t **conf) {
        (void)f;
        rd_kafka_conf_t *dup = rd_kafka_conf_dup(*conf);
        rd_kafka_conf_destroy(*conf);
        *conf = dup;
}

static void test_conf_dup_carries_probe(void **state) {
        (void)state;
        h_fixture_t f;
        const int counts[2] = {5, 7};
        h_fixture_init_on(&f, h_cl, "dup", "gdup", 2, counts);
        f.after_attach = use_dup;
        f.wait_all = 1;
        h_fixture_start(&f);
        lagprobe_t *p = f.p;
        h_snap_t hs;
        h_snap(p, &hs);
        assert_int_equal(hs.s.bound, 1);
        assert_string_equal(hs.s.group_id, f.group);
        assert_int_equal(hs.s.consumed, 12);
        assert_int_equal(hs.s.partition_cnt, 2);
        assert_int_equal(hs.s.assigns, 1);
        const lagprobe_partition_t *x = h_snap_find(&hs, f.topic, 1);
        assert_non_null(x);
        assert_int_equal(x->consumed, 7);
        assert_int_equal(x->position, 7);
        h_fixture_stop(&f);
}

/* The app's callbacks record what they were called with. */
typedef struct app_ctx_s {
        int magic;
        rd_kafka_t *rk;         /* the consumer, once created */
        atomic_int stats_calls, stats_bad;
        atomic_int rebalance_calls, rebalance_bad, assigned_cnt;
        atomic_int error_calls, error_bad;
        atomic_int log_calls, log_bad, log_confwarn;
        int keep_stats;         /* stats_cb returns 1 and keeps buffers */
        char *kept[4096];
        size_t kept_len[4096];
        int kept_cnt;
} app_ctx_t;

static app_ctx_t *app_cast(void *opaque) {
        app_ctx_t *a = opaque;
        return a && a->magic == 0x5eed ? a : NULL;
}

static int app_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
        app_ctx_t *a = app_cast(opaque);
        if (!a)
                return 0; /* wrong opaque: counted by nobody, test fails */
        a->stats_calls++;
        if ((a->rk && rk != a->rk) || !json || len == 0 || json[0] != '{' ||
            strlen(json) != len || !strstr(json, "\"topics\""))
                a->stats_bad++;
        if (a->keep_stats && a->kept_cnt < 4096) {
                a->kept[a->kept_cnt] = json;
                a->kept_len[a->kept_cnt++] = len;
                return 1; /* the app owns the buffer now */
        }
        return 0;
}

static void app_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *parts,
                             void *opaque) {
        app_ctx_t *a = app_cast(opaque);
        if (!a) {
                /* Keep the consumer working even with a wrong opaque. */
                rd_kafka_assign(rk, err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS
                                        ? parts
                                        : NULL);
                return;
        }
        a->rebalance_calls++;
        if ((a->rk && rk != a->rk) || !parts)
                a->rebalance_bad++;
        if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
                a->assigned_cnt = parts ? parts->cnt : -1;
                rd_kafka_assign(rk, parts);
        } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
                a->assigned_cnt = 0;
                rd_kafka_assign(rk, NULL);
        } else {
                a->rebalance_bad++;
                rd_kafka_assign(rk, NULL);
        }
}

static void app_error_cb(rd_kafka_t *rk, int err, const char *reason,
                         void *opaque) {
        app_ctx_t *a = app_cast(opaque);
        if (!a)
                return;
        a->error_calls++;
        if ((a->rk && rk != a->rk) || !reason || !reason[0] || err == 0)
                a->error_bad++;
}

static void app_log_cb(const rd_kafka_t *rk, int level, const char *fac,
                       const char *buf) {
        /* log_cb has no opaque argument: the app reaches its own through
         * rd_kafka_opaque(). May run on any librdkafka thread. */
        app_ctx_t *a = app_cast(rd_kafka_opaque(rk));
        if (!a)
                return;
        a->log_calls++;
        if (level < 0 || level > 7 || !fac || !buf)
                a->log_bad++;
        else if (!strcmp(fac, "CONFWARN") &&
                 (strstr(buf, "linger.ms") ||
                  strstr(buf, "queue.buffering.max.ms")))
                a->log_confwarn++;
}

static app_ctx_t *app_new(void) {
        app_ctx_t *a = calloc(1, sizeof *a);
        assert_non_null(a);
        a->magic = 0x5eed;
        return a;
}

static void app_free(app_ctx_t *a) {
        for (int i = 0; i < a->kept_cnt; i++)
                free(a->kept[i]);
        free(a);
}

/* Before attach: the app's opaque and stats_cb (the fixture's opaque). */
static void set_app_stats(h_fixture_t *f, rd_kafka_conf_t **conf) {
        rd_kafka_conf_set_opaque(*conf, f->opaque);
        rd_kafka_conf_set_stats_cb(*conf, app_stats_cb);
}

/* The same and the app's rebalance_cb. */
static void set_app_stats_rebalance(h_fixture_t *f, rd_kafka_conf_t **conf) {
        set_app_stats(f, conf);
        rd_kafka_conf_set_rebalance_cb(*conf, app_rebalance_cb);
}

static int app_stats_at_least(void *arg) {
        app_ctx_t *a = ((void **)arg)[0];
        int *n = ((void **)arg)[1];
        return a->stats_calls >= *n;
}

static int error_seen(void *arg) { return ((app_ctx_t *)arg)->error_calls > 0; }

/* Consumer errors reach error_cb only through rd_kafka_poll() on the main
 * queue (rd_kafka_consumer_poll() returns them as messages instead), so
 * this test's consumer does not forward the main queue and polls both, as
 * many apps do. */
static int poll_both_until(rd_kafka_t *rk, h_track_t *t, h_pred_t *pred,
                           void *arg, int timeout_ms) {
        int64_t end = h_now_ms() + timeout_ms;
        while (!pred(arg)) {
                if (h_now_ms() >= end)
                        return 0;
                rd_kafka_poll(rk, 0);
                h_poll_once(rk, 10, t);
        }
        return 1;
}

static void test_app_callbacks_chained(void **state) {
        (void)state;
        char topic[64], group[64], errstr[512];
        /* A cluster of its own: its broker is taken down below. */
        h_cluster_t *c2 = h_cluster_new(1);
        h_unique("cb", topic, sizeof topic);
        h_unique("gcb", group, sizeof group);
        h_topic_create(c2, topic, 4);
        for (int i = 0; i < 4; i++)
                h_produce(c2, topic, i, 3, NULL, 0);

        app_ctx_t *a = app_new();
        rd_kafka_conf_t *conf = h_conf(c2, group, NULL, 0);
        /* A producer property on a consumer: CONFWARN through log_cb
         * (librdkafka names it by its canonical name
         * queue.buffering.max.ms). */
        h_conf_set(conf, "linger.ms", "7");
        rd_kafka_conf_set_opaque(conf, a);
        rd_kafka_conf_set_stats_cb(conf, app_stats_cb);
        rd_kafka_conf_set_rebalance_cb(conf, app_rebalance_cb);
        rd_kafka_conf_set_error_cb(conf, app_error_cb);
        rd_kafka_conf_set_log_cb(conf, app_log_cb);
        lagprobe_t *p = h_probe_attach(conf);
        rd_kafka_t *rk =
            rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
        assert_non_null(rk);
        a->rk = rk;
        h_subscribe(rk, topic);

        h_track_t t;
        h_track_init(&t);
        consumed_ctx_t cc = {p, &t, 12};
        assert_true(
            poll_both_until(rk, &t, probe_consumed, &cc, H_JOIN_TIMEOUT_MS));
        int want = a->stats_calls + 3;
        void *args[2] = {a, &want};
        assert_true(poll_both_until(rk, &t, app_stats_at_least, args, 5000));
        assert_int_equal(a->rebalance_calls, 1);
        assert_int_equal(a->assigned_cnt, 4);
        assert_int_equal(h_assignment_cnt(rk), 4);

        /* Broker down: the app's error_cb hears about it. */
        rd_kafka_mock_broker_set_down(c2->mcluster, 1);
        int ok = poll_both_until(rk, &t, error_seen, a, 10000);
        rd_kafka_mock_broker_set_up(c2->mcluster, 1);
        assert_true(ok);

        assert_int_equal(a->stats_bad, 0);
        assert_int_equal(a->rebalance_bad, 0);
        assert_true(a->error_calls >= 1);
        assert_int_equal(a->error_bad, 0);
        assert_true(a->log_calls >= 1);
        assert_int_equal(a->log_bad, 0);
        assert_int_equal(a->log_confwarn, 1);

        /* The probe saw the same events. */
        h_snap_t hs;
        h_snap(p, &hs);
        assert_int_equal(hs.s.assigns, 1);
        assert_int_equal(hs.s.partition_cnt, 4);
        assert_true(hs.s.stats_docs >= 3);
        assert_int_equal(hs.s.stats_errors, 0);

        /* Close: the app's rebalance_cb gets the revoke. */
        int calls = a->rebalance_calls;
        rd_kafka_consumer_close(rk);
        assert_int_equal(a->rebalance_calls, calls + 1);
        assert_int_equal(a->assigned_cnt, 0);
        rd_kafka_destroy(rk);
        h_snap(p, &hs);
        assert_int_equal(hs.s.revokes, 1);
        assert_int_equal(hs.s.bound, 0);
        lagprobe_destroy(p);
        app_free(a);
        h_cluster_destroy(c2);
}

static void test_stats_cb_keeps_buffer(void **state) {
        (void)state;
        h_fixture_t f;
        const int counts[2] = {4, 0};
        app_ctx_t *a = app_new();
        a->keep_stats = 1;
        h_fixture_init_on(&f, h_cl, "keep", "gkeep", 2, counts);
        f.opaque = a;
        f.before_attach = set_app_stats;
        h_fixture_start(&f);
        /* Before the first poll: the app's callbacks run from poll only. */
        a->rk = f.rk;
        lagprobe_t *p = f.p;
        assert_true(h_poll_until(f.rk, &f.t, h_fixture_all_seen, &f,
                                 H_JOIN_TIMEOUT_MS));
        int want = a->stats_calls + 5;
        void *args[2] = {a, &want};
        assert_true(h_poll_until(f.rk, &f.t, app_stats_at_least, args, 5000));
        h_consumer_close(f.rk);
        f.rk = NULL;

        /* Every kept buffer is intact after the consumer is gone (freed
         * memory would be caught by ASan here) and the probe parsed the
         * same documents. */
        assert_true(a->kept_cnt >= 5);
        assert_int_equal(a->stats_bad, 0);
        for (int i = 0; i < a->kept_cnt; i++) {
                assert_int_equal(strlen(a->kept[i]), a->kept_len[i]);
                assert_int_equal(a->kept[i][0], '{');
        }
        h_snap_t hs;
        h_snap(p, &hs);
        assert_true(hs.s.stats_docs >= a->kept_cnt - 1);
        assert_int_equal(hs.s.stats_errors, 0);
        h_fixture_stop(&f);
        app_free(a); /* frees the kept buffers: double frees abort ASan */
}

typedef struct counting_ctx_s {
        app_ctx_t *a;
        h_track_t *t;
        int stats_min;
        int64_t total_min;
} counting_ctx_t;

static int stats_and_msgs(void *arg) {
        counting_ctx_t *c = arg;
        return c->a->stats_calls >= c->stats_min && c->t->total >= c->total_min;
}

static void test_destroy_before_rd_kafka_destroy(void **state) {
        (void)state;
        h_fixture_t f;
        const int counts[2] = {5, 0};
        app_ctx_t *a = app_new();
        h_fixture_init_on(&f, h_cl, "early", "gearly", 2, counts);
        f.opaque = a;
        f.before_attach = set_app_stats_rebalance;
        h_fixture_start(&f);
        /* Before the first poll: the app's callbacks run from poll only. */
        rd_kafka_t *rk = f.rk;
        a->rk = rk;
        assert_true(h_poll_until(rk, &f.t, h_fixture_all_seen, &f,
                                 H_JOIN_TIMEOUT_MS));

        lagprobe_destroy(f.p); /* the consumer lives on */
        f.p = NULL;

        int stats0 = a->stats_calls;
        h_produce(h_cl, f.topic, 1, 6, NULL, 0);
        counting_ctx_t c = {a, &f.t, stats0 + 5, 11};
        assert_true(h_poll_until(rk, &f.t, stats_and_msgs, &c, 10000));
        assert_int_equal(f.t.consumed[1], 6);
        assert_int_equal(a->stats_bad, 0);
        assert_int_equal(a->rebalance_calls, 1);

        /* The default (no app rebalance_cb) path after destroy as well is
         * covered by the app's revoke on close. */
        rd_kafka_consumer_close(rk);
        assert_int_equal(a->rebalance_calls, 2);
        assert_int_equal(a->rebalance_bad, 0);
        rd_kafka_destroy(rk);
        f.rk = NULL;
        h_fixture_stop(&f);
        app_free(a);
}

static void test_destroy_early_default_rebalance(void **state) {
        (void)state;
        h_fixture_t f;
        const int counts[2] = {3, 0};
        h_fixture_init_on(&f, h_cl, "early2", "gearly2", 2, counts);
        /* The probe is gone before the consumer even joins: the default
         * rebalance handling must still assign. */
        f.copts.strategy = "cooperative-sticky";
        h_fixture_start(&f);
        lagprobe_destroy(f.p);
        f.p = NULL;
        consumed_ctx_t cc = {NULL, &f.t, 3};
        assert_true(
            h_poll_until(f.rk, &f.t, app_consumed, &cc, H_JOIN_TIMEOUT_MS));
        assert_int_equal(h_assignment_cnt(f.rk), 2);
        h_fixture_stop(&f);
}

static void test_destroy_after_rd_kafka_destroy(void **state) {
        (void)state;
        h_fixture_t f;
        const int counts[2] = {5, 0};
        h_fixture_init_on(&f, h_cl, "late", "glate", 2, counts);
        f.wait_all = 1;
        h_fixture_start(&f);
        lagprobe_t *p = f.p;
        h_snap_t hs;
        h_snap(p, &hs);
        assert_int_equal(hs.s.bound, 1);
        h_consumer_close(f.rk);
        f.rk = NULL;

        /* The probe outlives its consumer and still answers. */
        h_snap(p, &hs);
        assert_int_equal(hs.s.bound, 0);
        assert_int_equal(hs.s.consumed, 5);
        assert_int_equal(hs.s.assigns, 1);
        assert_int_equal(hs.s.revokes, 1);
        char *js = h_snap_json(p);
        h_json_t *j = h_json_parse(js, strlen(js));
        assert_non_null(j);
        const h_json_t *b = h_json_get(j, "bound");
        assert_non_null(b);
        assert_int_equal(b->type, H_JBOOL);
        assert_true(b->num == 0);
        h_json_free(j);
        free(js);
        h_fixture_stop(&f);
}

static void test_attach_then_producer(void **state) {
        (void)state;
        char errstr[512];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        h_conf_set(conf, "bootstrap.servers", h_cl->bootstraps);
        h_conf_set(conf, "group.id", "not-a-consumer");
        lagprobe_t *p = h_probe_attach(conf);
        rd_kafka_t *rk =
            rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
        assert_non_null(rk);
        /* The producer works. */
        char topic[64];
        h_unique("prod", topic, sizeof topic);
        h_topic_create(h_cl, topic, 1);
        assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                                           RD_KAFKA_V_VALUE("x", 1),
                                           RD_KAFKA_V_END),
                         0);
        assert_int_equal(rd_kafka_flush(rk, 10000), 0);
        h_snap_t hs;
        h_snap(p, &hs);
        assert_int_equal(hs.s.bound, 0);
        assert_int_equal(hs.s.partition_cnt, 0);
        assert_int_equal(hs.s.consumed, 0);
        rd_kafka_destroy(rk);
        h_snap(p, &hs);
        assert_int_equal(hs.s.bound, 0);
        lagprobe_destroy(p);
}

int main(void) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_attach_null_args),
            cmocka_unit_test(test_attach_no_group_id),
            cmocka_unit_test(test_attach_producer_conf),
            cmocka_unit_test(test_attach_twice),
            cmocka_unit_test(test_attach_conf_carries_probe),
            cmocka_unit_test(test_max_probes),
            cmocka_unit_test(test_new_defaults_and_destroy_null),
            cmocka_unit_test(test_snapshot_null_args),
            cmocka_unit_test(test_conf_destroyed_without_new),
            cmocka_unit_test(test_stats_interval_default),
            cmocka_unit_test(test_conf_dup_carries_probe),
            cmocka_unit_test(test_app_callbacks_chained),
            cmocka_unit_test(test_stats_cb_keeps_buffer),
            cmocka_unit_test(test_destroy_before_rd_kafka_destroy),
            cmocka_unit_test(test_destroy_early_default_rebalance),
            cmocka_unit_test(test_destroy_after_rd_kafka_destroy),
            cmocka_unit_test(test_attach_then_producer),
        };
        return cmocka_run_group_tests(tests, h_group_setup, h_group_teardown);
}

/* lagprobe test harness. See harness.h.
 * SPDX-License-Identifier: BSD-2-Clause */
#define _POSIX_C_SOURCE 200809L

#include "harness.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define H_HAVE_VALGRIND_H 1
#endif
#endif

/* ---- C11 threads shim for sanitizers ----------------------------------
 * Debian's librdkafka creates its threads with glibc's C11 thrd_create()
 * and locks with mtx_lock()/cnd_wait(). The sanitizer runtimes (gcc 12,
 * clang 14) intercept only the pthread calls, and glibc's C11 functions
 * call pthread internals directly: TSan then crashes in the first
 * librdkafka thread's malloc (the thread was never registered) and would
 * not see librdkafka's locking. These definitions in the test executable
 * interpose glibc's (a versioned reference binds to the executable's
 * unversioned definition) and route every call through the intercepted
 * pthread functions; glibc implements them the same way. */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define H_C11_SHIM 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define H_C11_SHIM 1
#endif
#endif

#ifdef H_C11_SHIM
#include <pthread.h>
#include <stdint.h>
#include <threads.h>

typedef struct h_thrd_start_s {
        thrd_start_t func;
        void *arg;
} h_thrd_start_t;

static void *h_thrd_tramp(void *a) {
        h_thrd_start_t s = *(h_thrd_start_t *)a;
        free(a);
        return (void *)(intptr_t)s.func(s.arg);
}

static int h_thrd_err(int e) {
        return e == 0 ? thrd_success
               : e == ETIMEDOUT ? thrd_timedout
               : e == ENOMEM    ? thrd_nomem
               : e == EBUSY     ? thrd_busy
                                : thrd_error;
}

int thrd_create(thrd_t *thr, thrd_start_t func, void *arg) {
        h_thrd_start_t *s = malloc(sizeof *s);
        if (!s)
                return thrd_nomem;
        s->func = func;
        s->arg = arg;
        pthread_t t;
        int e = pthread_create(&t, NULL, h_thrd_tramp, s);
        if (e) {
                free(s);
                return h_thrd_err(e);
        }
        *thr = (thrd_t)t;
        return thrd_success;
}

int thrd_join(thrd_t thr, int *res) {
        void *r = NULL;
        int e = pthread_join((pthread_t)thr, &r);
        if (!e && res)
                *res = (int)(intptr_t)r;
        return h_thrd_err(e);
}

int mtx_init(mtx_t *m, int type) {
        pthread_mutexattr_t a;
        pthread_mutexattr_init(&a);
        pthread_mutexattr_settype(&a, (type & mtx_recursive)
                                          ? PTHREAD_MUTEX_RECURSIVE
                                          : PTHREAD_MUTEX_NORMAL);
        int e = pthread_mutex_init((pthread_mutex_t *)m, &a);
        pthread_mutexattr_destroy(&a);
        return h_thrd_err(e);
}

int mtx_lock(mtx_t *m) {
        return h_thrd_err(pthread_mutex_lock((pthread_mutex_t *)m));
}

int mtx_unlock(mtx_t *m) {
        return h_thrd_err(pthread_mutex_unlock((pthread_mutex_t *)m));
}

void mtx_destroy(mtx_t *m) { pthread_mutex_destroy((pthread_mutex_t *)m); }

int cnd_init(cnd_t *c) {
        return h_thrd_err(pthread_cond_init((pthread_cond_t *)c, NULL));
}

int cnd_signal(cnd_t *c) {
        return h_thrd_err(pthread_cond_signal((pthread_cond_t *)c));
}

int cnd_broadcast(cnd_t *c) {
        return h_thrd_err(pthread_cond_broadcast((pthread_cond_t *)c));
}

int cnd_wait(cnd_t *c, mtx_t *m) {
        return h_thrd_err(
            pthread_cond_wait((pthread_cond_t *)c, (pthread_mutex_t *)m));
}

int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m,
                  const struct timespec *restrict ts) {
        return h_thrd_err(pthread_cond_timedwait(
            (pthread_cond_t *)c, (pthread_mutex_t *)m, ts));
}

void cnd_destroy(cnd_t *c) { pthread_cond_destroy((pthread_cond_t *)c); }

void call_once(once_flag *flag, void (*func)(void)) {
        pthread_once((pthread_once_t *)flag, func);
}
#endif

#if defined(__SANITIZE_THREAD__)
#define H_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define H_TSAN 1
#endif
#endif

#ifdef H_TSAN
/* librdkafka is not instrumented and synchronises partly with its own
 * atomics (reference counts), which TSan cannot see: its direct calls to
 * intercepted functions (pthread_rwlock_*, free, memcpy) would then be
 * reported as races inside librdkafka. Ignore the interceptors called from
 * librdkafka itself; its mtx/cnd calls still reach TSan through the shim
 * above, and every access made by our code (callbacks and interceptors
 * included) is still checked. */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void) {
        return "called_from_lib:librdkafka.so.1\n";
}
#endif

/* ---- time ------------------------------------------------------------ */

int64_t h_now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t h_wall_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void h_sleep_ms(int ms) {
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
                ;
}

int h_slow(void) {
        static atomic_int cached; /* 0: not known yet */
        int f = atomic_load(&cached);
        if (f > 0)
                return f;
        f = 1;
#ifdef H_HAVE_VALGRIND_H
        if (RUNNING_ON_VALGRIND)
                f = H_SLOW_VALGRIND;
#endif
        const char *e = getenv("LAGPROBE_TEST_SLOW");
        if (e && *e) {
                char *end = NULL;
                long v = strtol(e, &end, 10);
                if (end && !*end && v >= 1 && v <= 100)
                        f = (int)v;
        }
        atomic_store(&cached, f);
        return f;
}

int h_slow_ms(int ms) { return ms * h_slow(); }

int h_wait_until(h_pred_t *pred, void *arg, int timeout_ms) {
        int64_t end = h_now_ms() + timeout_ms;
        for (;;) {
                if (pred(arg))
                        return 1;
                if (h_now_ms() >= end)
                        return 0;
                h_sleep_ms(5);
        }
}

/* ---- names ----------------------------------------------------------- */

const char *h_unique(const char *prefix, char *buf, size_t size) {
        static atomic_int n;
        snprintf(buf, size, "%s-%d-%d", prefix, (int)getpid(),
                 atomic_fetch_add(&n, 1));
        return buf;
}

/* ---- mock cluster ---------------------------------------------------- */

typedef struct h_dr_s {
        int64_t ok, failed;
        int last_err;
} h_dr_t;

static h_dr_t h_dr; /* the producer's reports; served by the caller's flush */

static void h_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *op) {
        (void)rk;
        (void)op;
        if (m->err) {
                h_dr.failed++;
                h_dr.last_err = m->err;
        } else {
                h_dr.ok++;
        }
}

int64_t h_delivered(void) { return h_dr.ok; }

h_cluster_t *h_cluster_new(int broker_cnt) {
        char errstr[512];
        h_cluster_t *c = calloc(1, sizeof *c);
        assert_non_null(c);
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        /* The owner never connects anywhere: keep its CONFWARN quiet. */
        h_conf_set(conf, "log_level", "3");
        c->owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
        if (!c->owner)
                fail_msg("owner rd_kafka_new: %s", errstr);
        c->mcluster = rd_kafka_mock_cluster_new(c->owner, broker_cnt);
        if (!c->mcluster)
                fail_msg("rd_kafka_mock_cluster_new failed");
        snprintf(c->bootstraps, sizeof c->bootstraps, "%s",
                 rd_kafka_mock_cluster_bootstraps(c->mcluster));

        conf = rd_kafka_conf_new();
        h_conf_set(conf, "bootstrap.servers", c->bootstraps);
        h_conf_set(conf, "linger.ms", "5");
        h_conf_set(conf, "batch.num.messages", "10000");
        h_conf_set(conf, "queue.buffering.max.messages", "1000000");
        h_conf_set(conf, "message.timeout.ms", "30000");
        rd_kafka_conf_set_dr_msg_cb(conf, h_dr_cb);
        c->producer =
            rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
        if (!c->producer)
                fail_msg("producer rd_kafka_new: %s", errstr);
        return c;
}

void h_cluster_destroy(h_cluster_t *c) {
        if (!c)
                return;
        if (c->producer) {
                rd_kafka_flush(c->producer, 5000);
                rd_kafka_destroy(c->producer);
        }
        if (c->mcluster)
                rd_kafka_mock_cluster_destroy(c->mcluster);
        if (c->owner)
                rd_kafka_destroy(c->owner);
        free(c);
}

void h_topic_create(h_cluster_t *c, const char *topic, int partition_cnt) {
        rd_kafka_resp_err_t err =
            rd_kafka_mock_topic_create(c->mcluster, topic, partition_cnt, 1);
        if (err)
                fail_msg("mock topic %s: %s", topic, rd_kafka_err2str(err));
}

h_cluster_t *h_cl;

int h_group_setup(void **state) {
        (void)state;
        h_cl = h_cluster_new(1);
        return 0;
}

int h_group_teardown(void **state) {
        (void)state;
        h_cluster_destroy(h_cl);
        h_cl = NULL;
        return 0;
}

/* ---- producing ------------------------------------------------------- */

typedef struct h_fixed_ts_s {
        int64_t ts;
} h_fixed_ts_t;

static int64_t h_fixed_ts(int32_t partition, int64_t seq, void *opaque) {
        (void)partition;
        (void)seq;
        return ((h_fixed_ts_t *)opaque)->ts;
}

void h_produce(h_cluster_t *c, const char *topic, int32_t partition, int count,
               const char *key, int64_t ts_ms) {
        h_fixed_ts_t f = {ts_ms > 0 ? ts_ms : 0};
        h_produce_fn(c, topic, partition, count, key, h_fixed_ts, &f);
}

void h_produce_fn(h_cluster_t *c, const char *topic, int32_t partition,
                  int64_t count, const char *key, h_ts_fn_t *ts_fn,
                  void *opaque) {
        int64_t ok0 = h_dr.ok;
        h_dr.failed = 0;
        for (int64_t i = 0; i < count; i++) {
                char val[64];
                int vlen = snprintf(val, sizeof val, "p%" PRId32 "-m%" PRId64,
                                    partition, i);
                int64_t ts = ts_fn ? ts_fn(partition, i, opaque) : 0;
                for (;;) {
                        rd_kafka_resp_err_t err = rd_kafka_producev(
                            c->producer, RD_KAFKA_V_TOPIC(topic),
                            RD_KAFKA_V_PARTITION(partition),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                            RD_KAFKA_V_VALUE(val, (size_t)vlen),
                            RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
                            RD_KAFKA_V_TIMESTAMP(ts), RD_KAFKA_V_END);
                        if (!err)
                                break;
                        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
                                fail_msg("producev %s [%d]: %s", topic,
                                         (int)partition, rd_kafka_err2str(err));
                        rd_kafka_poll(c->producer, 10);
                }
        }
        rd_kafka_resp_err_t err = rd_kafka_flush(c->producer, 60000);
        if (err)
                fail_msg("flush: %s", rd_kafka_err2str(err));
        if (h_dr.failed)
                fail_msg("%" PRId64 " deliveries failed: %s", h_dr.failed,
                         rd_kafka_err2str(h_dr.last_err));
        if (h_dr.ok - ok0 != count)
                fail_msg("delivered %" PRId64 " of %" PRId64, h_dr.ok - ok0,
                         count);
}

int64_t h_end_offset(h_cluster_t *c, const char *topic, int32_t partition) {
        int64_t lo = -1, hi = -1;
        rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
            c->producer, topic, partition, &lo, &hi, 10000);
        if (err)
                fail_msg("watermarks %s [%d]: %s", topic, (int)partition,
                         rd_kafka_err2str(err));
        return hi;
}

/* ---- consumer configuration and wrapper --------------------------------- */

void h_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value) {
        char errstr[512];
        if (rd_kafka_conf_set(conf, name, value, errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK)
                fail_msg("conf %s=%s: %s", name, value, errstr);
}

const char *h_conf_get(const rd_kafka_conf_t *conf, const char *name,
                       char *buf, size_t size) {
        size_t n = size;
        if (rd_kafka_conf_get(conf, name, buf, &n) != RD_KAFKA_CONF_OK)
                buf[0] = 0;
        return buf;
}

void h_copts_init(h_copts_t *o, const char *group_id) {
        memset(o, 0, sizeof *o);
        o->group_id = group_id;
        o->stats_ms = H_STATS_MS;
}

rd_kafka_conf_t *h_consumer_conf(const h_cluster_t *c, const h_copts_t *o) {
        char v[32];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        int session = o->session_timeout_ms > 0 ? o->session_timeout_ms
                                                : H_SESSION_TIMEOUT_MS;
        int maxpoll = o->max_poll_ms > 0 ? o->max_poll_ms : H_MAX_POLL_MS;
        h_conf_set(conf, "bootstrap.servers", c->bootstraps);
        if (o->group_id)
                h_conf_set(conf, "group.id", o->group_id);
        snprintf(v, sizeof v, "%d", session);
        h_conf_set(conf, "session.timeout.ms", v);
        snprintf(v, sizeof v, "%d", H_HEARTBEAT_MS);
        h_conf_set(conf, "heartbeat.interval.ms", v);
        snprintf(v, sizeof v, "%d", maxpoll < session ? session : maxpoll);
        h_conf_set(conf, "max.poll.interval.ms", v);
        if (o->stats_ms >= 0) {
                snprintf(v, sizeof v, "%d", o->stats_ms);
                h_conf_set(conf, "statistics.interval.ms", v);
        }
        h_conf_set(conf, "auto.offset.reset", "earliest");
        h_conf_set(conf, "enable.auto.commit", o->auto_commit ? "true" : "false");
        h_conf_set(conf, "auto.commit.interval.ms", "200");
        h_conf_set(conf, "partition.assignment.strategy",
                   o->strategy ? o->strategy : "range");
        /* Short fetch waits: high watermarks refresh soon after a
         * produce. */
        h_conf_set(conf, "fetch.wait.max.ms", "50");
        h_conf_set(conf, "enable.partition.eof", "false");
        return conf;
}

rd_kafka_conf_t *h_conf(const h_cluster_t *c, const char *group_id,
                        const char *strategy, int auto_commit) {
        h_copts_t o;
        h_copts_init(&o, group_id);
        o.strategy = strategy;
        o.auto_commit = auto_commit;
        return h_consumer_conf(c, &o);
}

void h_subscribe(rd_kafka_t *rk, const char *topic) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, topic, RD_KAFKA_PARTITION_UA);
        rd_kafka_resp_err_t err = rd_kafka_subscribe(rk, l);
        rd_kafka_topic_partition_list_destroy(l);
        if (err)
                fail_msg("subscribe %s: %s", topic, rd_kafka_err2str(err));
}

rd_kafka_t *h_consumer_new(rd_kafka_conf_t *conf, const char *topic) {
        char errstr[512];
        rd_kafka_t *rk =
            rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
        if (!rk) {
                rd_kafka_conf_destroy(conf);
                fail_msg("consumer rd_kafka_new: %s", errstr);
        }
        rd_kafka_poll_set_consumer(rk);
        if (topic)
                h_subscribe(rk, topic);
        return rk;
}

void h_consumer_close(rd_kafka_t *rk) {
        if (!rk)
                return;
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
}

/* ---- consuming and polling ------------------------------------------- */

void h_track_init(h_track_t *t) {
        memset(t, 0, sizeof *t);
        for (int i = 0; i < H_MAX_PARTS; i++) {
                t->next_offset[i] = -1;
                t->last_ts[i] = -1;
        }
}

int h_poll_once(rd_kafka_t *rk, int timeout_ms, h_track_t *t) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, timeout_ms);
        int got = 0;
        if (!m)
                return 0;
        if (m->err) {
                if (t) {
                        t->errors++;
                        t->last_err = m->err;
                }
        } else {
                got = 1;
                if (t && m->partition >= 0 && m->partition < H_MAX_PARTS) {
                        t->consumed[m->partition]++;
                        t->next_offset[m->partition] = m->offset + 1;
                        t->last_ts[m->partition] =
                            rd_kafka_message_timestamp(m, NULL);
                        t->total++;
                }
        }
        rd_kafka_message_destroy(m);
        return got;
}

int h_poll_until_n(rd_kafka_t **rks, h_track_t **tracks, int n,
                   h_pred_t *pred, void *arg, int timeout_ms) {
        int64_t end = h_now_ms() + timeout_ms;
        for (;;) {
                if (pred && pred(arg))
                        return 1;
                if (h_now_ms() >= end)
                        return pred ? 0 : 1;
                for (int i = 0; i < n; i++) {
                        /* Drain what is ready, then move on. */
                        int k = 0;
                        while (h_poll_once(rks[i], k == 0 ? 10 : 0,
                                           tracks ? tracks[i] : NULL) &&
                               ++k < 10000)
                                ;
                }
        }
}

int h_poll_until(rd_kafka_t *rk, h_track_t *t, h_pred_t *pred, void *arg,
                 int timeout_ms) {
        return h_poll_until_n(&rk, &t, 1, pred, arg, timeout_ms);
}

void h_poll_for(rd_kafka_t *rk, h_track_t *t, int ms) {
        h_poll_until_n(&rk, &t, 1, NULL, NULL, ms);
}

int h_assignment_cnt(rd_kafka_t *rk) {
        rd_kafka_topic_partition_list_t *l = NULL;
        if (rd_kafka_assignment(rk, &l) || !l)
                return -1;
        int n = l->cnt;
        rd_kafka_topic_partition_list_destroy(l);
        return n;
}

void h_commit(rd_kafka_t *rk, const char *topic, const int64_t *offsets,
              int partition_cnt) {
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(partition_cnt);
        for (int i = 0; i < partition_cnt; i++)
                if (offsets[i] >= 0)
                        rd_kafka_topic_partition_list_add(l, topic, i)
                            ->offset = offsets[i];
        rd_kafka_resp_err_t err = rd_kafka_commit(rk, l, 0 /* sync */);
        for (int i = 0; !err && i < l->cnt; i++)
                err = l->elems[i].err;
        rd_kafka_topic_partition_list_destroy(l);
        if (err)
                fail_msg("commit: %s", rd_kafka_err2str(err));
}

/* ---- kafka-consumer-groups --describe ---------------------------------- */

void h_describe(const h_cluster_t *c, const char *group_id, const char *topic,
                int partition_cnt, h_desc_t *out) {
        char errstr[512];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        h_conf_set(conf, "bootstrap.servers", c->bootstraps);
        h_conf_set(conf, "group.id", group_id);
        h_conf_set(conf, "enable.auto.commit", "false");
        rd_kafka_t *rk =
            rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
        if (!rk)
                fail_msg("describe rd_kafka_new: %s", errstr);
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(partition_cnt);
        for (int i = 0; i < partition_cnt; i++)
                rd_kafka_topic_partition_list_add(l, topic, i);
        rd_kafka_resp_err_t err = rd_kafka_committed(rk, l, 10000);
        if (err)
                fail_msg("rd_kafka_committed: %s", rd_kafka_err2str(err));
        for (int i = 0; i < partition_cnt; i++) {
                const rd_kafka_topic_partition_t *e =
                    rd_kafka_topic_partition_list_find(l, topic, i);
                int64_t lo = -1, hi = -1;
                if (!e || e->err)
                        fail_msg("committed [%d]: %s", i,
                                 e ? rd_kafka_err2str(e->err) : "missing");
                err = rd_kafka_query_watermark_offsets(rk, topic, i, &lo, &hi,
                                                       10000);
                if (err)
                        fail_msg("watermarks [%d]: %s", i,
                                 rd_kafka_err2str(err));
                out[i].partition = i;
                out[i].committed = e->offset >= 0 ? e->offset : -1;
                out[i].log_end = hi;
                out[i].lag = e->offset >= 0 ? hi - e->offset : -1;
        }
        rd_kafka_topic_partition_list_destroy(l);
        rd_kafka_destroy(rk);
}

/* ---- probe helpers --------------------------------------------------- */

lagprobe_t *h_probe_new(void) {
        char errstr[256] = "";
        lagprobe_t *p = lagprobe_new(NULL, errstr, sizeof errstr);
        if (!p)
                fail_msg("lagprobe_new: %s", errstr);
        return p;
}

lagprobe_t *h_probe_attach_cfg(rd_kafka_conf_t *conf,
                               const lagprobe_config_t *pc) {
        char errstr[256] = "";
        lagprobe_t *p = lagprobe_new(pc, errstr, sizeof errstr);
        if (!p)
                fail_msg("lagprobe_new: %s", errstr);
        if (lagprobe_attach(p, conf, errstr, sizeof errstr) != 0)
                fail_msg("lagprobe_attach: %s", errstr);
        return p;
}

lagprobe_t *h_probe_attach(rd_kafka_conf_t *conf) {
        return h_probe_attach_cfg(conf, NULL);
}

void h_snap(lagprobe_t *p, h_snap_t *hs) {
        lagprobe_snapshot_init(&hs->s, hs->parts, H_SNAP_PARTS);
        assert_int_equal(lagprobe_snapshot(p, &hs->s), 0);
}

const lagprobe_partition_t *h_snap_find(const h_snap_t *hs, const char *topic,
                                        int32_t partition) {
        size_t n = hs->s.partition_cnt < H_SNAP_PARTS ? hs->s.partition_cnt
                                                      : H_SNAP_PARTS;
        for (size_t i = 0; i < n; i++)
                if (hs->parts[i].partition == partition && hs->parts[i].topic &&
                    !strcmp(hs->parts[i].topic, topic))
                        return &hs->parts[i];
        return NULL;
}

static char *h_render(lagprobe_t *p,
                      size_t (*f)(lagprobe_t *, char *, size_t),
                      const char *what) {
        /* The document may grow between the two calls: retry. */
        for (int tries = 0; tries < 10; tries++) {
                size_t need = f(p, NULL, 0);
                size_t size = need + 4096;
                char *buf = malloc(size);
                assert_non_null(buf);
                size_t got = f(p, buf, size);
                if (got < size) {
                        assert_int_equal(strlen(buf), got);
                        return buf;
                }
                free(buf);
        }
        fail_msg("%s never fit", what);
        return NULL;
}

char *h_snap_json(lagprobe_t *p) {
        return h_render(p, lagprobe_snapshot_json, "lagprobe_snapshot_json");
}

char *h_metrics(lagprobe_t *p) {
        return h_render(p, lagprobe_metrics_prometheus,
                        "lagprobe_metrics_prometheus");
}

/* Does the sample line l (name already matched, at its '{' or ' ') carry
 * every label of want ("k=\"v\",k2=\"v2\"")? */
static int h_prom_labels_match(const char *l, const char *eol,
                               const char *want) {
        if (!want || !*want)
                return 1;
        if (*l != '{')
                return 0;
        const char *close = l;
        while (close < eol && *close != '}')
                close++;
        if (close >= eol)
                return 0;
        for (const char *w = want; *w;) {
                size_t n = strcspn(w, ",");
                int found = 0;
                /* Each label starts after '{' or ','. */
                for (const char *q = l; q < close && !found; q++)
                        if ((*q == '{' || *q == ',') && q + 1 + n <= close &&
                            !strncmp(q + 1, w, n) &&
                            (q[1 + n] == ',' || q[1 + n] == '}'))
                                found = 1;
                if (!found)
                        return 0;
                w += n;
                if (*w == ',')
                        w++;
        }
        return 1;
}

/* Counts the samples of name matching labels; *last: the last one's text
 * after the name. */
static int h_prom_find(const char *doc, const char *name, const char *labels,
                       const char **last) {
        size_t nl = strlen(name);
        int n = 0;
        for (const char *l = doc; *l;) {
                const char *eol = strchr(l, '\n');
                if (!eol)
                        eol = l + strlen(l);
                if (!strncmp(l, name, nl) && (l[nl] == '{' || l[nl] == ' ') &&
                    h_prom_labels_match(l + nl, eol, labels)) {
                        n++;
                        *last = l + nl;
                }
                l = *eol ? eol + 1 : eol;
        }
        return n;
}

int h_prom_count(const char *doc, const char *name, const char *labels) {
        const char *hit = NULL;
        return h_prom_find(doc, name, labels, &hit);
}

double h_prom(const char *doc, const char *name, const char *labels) {
        const char *hit = NULL;
        int n = h_prom_find(doc, name, labels, &hit);
        if (n != 1)
                fail_msg("metrics: %d samples of %s{%s}, want 1", n, name,
                         labels ? labels : "");
        /* The value follows the last space of the line. */
        const char *eol = strchr(hit, '\n');
        if (!eol)
                eol = hit + strlen(hit);
        const char *v = eol;
        while (v > hit && v[-1] != ' ')
                v--;
        char *end;
        double d = strtod(v, &end);
        if (end == v)
                fail_msg("metrics: %s{%s}: no value", name,
                         labels ? labels : "");
        return d;
}

int h_in_list(const char *list, const char *word) {
        size_t n = strlen(word);
        for (const char *q = list; q && *q;) {
                size_t k = strcspn(q, ",");
                if (k == n && !strncmp(q, word, n))
                        return 1;
                q += k;
                if (*q == ',')
                        q++;
        }
        return 0;
}

void h_assert_health(lagprobe_t *p, int health, const char *reason,
                     int present) {
        char rs[512];
        lagprobe_health_t h = lagprobe_health(p, rs, sizeof rs);
        print_message("  health %s (%s)\n", lagprobe_health_name(h), rs);
        if (h != health || h_in_list(rs, reason) != !!present)
                fail_msg("lagprobe_health: %s (%s), want %s %s %s",
                         lagprobe_health_name(h), rs,
                         lagprobe_health_name(health),
                         present ? "with" : "without", reason);
        char *js = h_snap_json(p);
        h_json_t *j = h_json_parse(js, strlen(js));
        assert_non_null(j);
        const h_json_t *st = h_json_get(j, "status");
        assert_non_null(st);
        assert_int_equal(st->type, H_JSTR);
        assert_string_equal(st->str, lagprobe_health_name(health));
        const h_json_t *ra = h_json_get(j, "reasons");
        assert_non_null(ra);
        assert_int_equal(ra->type, H_JARR);
        int in_json = 0;
        for (const h_json_t *e = ra->child; e; e = e->next)
                in_json |= e->type == H_JSTR && !strcmp(e->str, reason);
        assert_int_equal(in_json, !!present);
        h_json_free(j);
        free(js);
        char *m = h_metrics(p);
        char label[96];
        snprintf(label, sizeof label, "reason=\"%s\"", reason);
        assert_true(h_prom(m, "lagprobe_health", NULL) == health);
        assert_true(h_prom(m, "lagprobe_health_reason", label) == !!present);
        free(m);
}

/* ---- the three outputs agree ------------------------------------------ */

/* Every figure that does not move with the clock, equal in two snapshots:
 * nothing happened between them. */
static int h_still(const h_snap_t *a, const h_snap_t *b) {
        const lagprobe_snapshot_t *x = &a->s, *y = &b->s;
        if (x->evictions != y->evictions || x->assigns != y->assigns ||
            x->revokes != y->revokes || x->lost != y->lost ||
            x->assignment_size != y->assignment_size ||
            x->consumed != y->consumed || x->commits != y->commits ||
            x->commit_errors != y->commit_errors ||
            x->stats_docs != y->stats_docs ||
            x->stats_errors != y->stats_errors ||
            x->stats_field_errors != y->stats_field_errors ||
            x->hook_errors != y->hook_errors ||
            x->brokers_down_cnt != y->brokers_down_cnt ||
            x->health != y->health || x->health_reasons != y->health_reasons ||
            x->diagnosis != y->diagnosis || x->total_lag != y->total_lag ||
            x->exact != y->exact || x->batch.count != y->batch.count ||
            x->batch.sum_ms != y->batch.sum_ms ||
            x->message.count != y->message.count ||
            x->message.sum_ms != y->message.sum_ms ||
            x->poll_gap.count != y->poll_gap.count ||
            x->poll_gap.sum_ms != y->poll_gap.sum_ms ||
            x->partition_cnt != y->partition_cnt ||
            memcmp(x->events, y->events, sizeof x->events))
                return 0;
        size_t n = x->partition_cnt < H_SNAP_PARTS ? x->partition_cnt
                                                   : H_SNAP_PARTS;
        for (size_t i = 0; i < n; i++) {
                const lagprobe_partition_t *p = &a->parts[i], *q = &b->parts[i];
                if (p->partition != q->partition || strcmp(p->topic, q->topic) ||
                    p->high_watermark != q->high_watermark ||
                    p->low_watermark != q->low_watermark ||
                    p->committed_offset != q->committed_offset ||
                    p->position != q->position || p->lag != q->lag ||
                    p->position_lag != q->position_lag ||
                    p->stale != q->stale ||
                    p->consumed_total != q->consumed_total ||
                    p->commit_errors != q->commit_errors ||
                    p->effective_lag != q->effective_lag ||
                    p->status != q->status ||
                    p->ingress_rate != q->ingress_rate ||
                    p->egress_rate != q->egress_rate)
                        return 0;
        }
        return 1;
}

static void h_eq_num(const char *what, double got, double want) {
        if (!(got == want ||
              (want != 0 && fabs(got - want) <= 1e-6 * fabs(want))))
                fail_msg("%s: %.17g, snapshot %.17g", what, got, want);
}

/* JSON integer or null (-1) member of obj, equal to want. */
static void h_eq_json(const h_json_t *obj, const char *key, int64_t want) {
        int64_t got = h_json_int(obj, key);
        if (got != (want < 0 ? -1 : want))
                fail_msg("JSON %s: %" PRId64 " (INT64_MIN: missing), "
                         "snapshot %" PRId64,
                         key, got, want);
}

/* A time-derived figure of the metrics in seconds, between the two
 * snapshots' (ms; -1 means none: the metric is -1 too). */
static void h_between(const char *what, double got, int64_t a_ms,
                      int64_t b_ms) {
        if (a_ms < 0 && b_ms < 0) {
                h_eq_num(what, got, -1);
                return;
        }
        double lo = (double)(a_ms < b_ms ? a_ms : b_ms) / 1e3 - 0.002;
        double hi = (double)(a_ms > b_ms ? a_ms : b_ms) / 1e3 + 0.002;
        if (!(got >= lo && got <= hi))
                fail_msg("%s: %g, snapshots %" PRId64 " and %" PRId64 " ms",
                         what, got, a_ms, b_ms);
}

static void h_prom_hist_agrees(const char *m, const char *name,
                               const lagprobe_hist_summary_t *h) {
        char n[96];
        snprintf(n, sizeof n, "%s_count", name);
        h_eq_num(n, h_prom(m, n, NULL), (double)h->count);
        snprintf(n, sizeof n, "%s_bucket", name);
        h_eq_num(n, h_prom(m, n, "le=\"+Inf\""), (double)h->count);
        snprintf(n, sizeof n, "%s_sum", name);
        double sum = h_prom(m, n, NULL);
        if (fabs(sum - h->sum_ms / 1e3) > 1e-6 + 1e-6 * sum)
                fail_msg("%s: %g s, snapshot %g ms", n, sum, h->sum_ms);
}

static void h_json_agrees(const h_json_t *j, const h_snap_t *hs) {
        const lagprobe_snapshot_t *s = &hs->s;
        const h_json_t *st = h_json_get(j, "status");
        assert_non_null(st);
        assert_string_equal(st->str, lagprobe_health_name(s->health));
        const struct {
                const char *obj, *key; /* obj NULL: the document */
                int64_t v;
        } f[] = {
            {NULL, "consumed", s->consumed},
            {"rebalances", "count", s->rebalances},
            {"rebalances", "assigns", s->assigns},
            {"rebalances", "revokes", s->revokes},
            {"rebalances", "lost", s->lost},
            {"rebalances", "assignment_size", s->assignment_size},
            {"poll", "evictions", s->evictions},
            {"poll", "hook_errors", s->hook_errors},
            {"stats", "docs", s->stats_docs},
            {"stats", "errors", s->stats_errors},
            {"stats", "field_errors", s->stats_field_errors},
            {"commits", "count", s->commits},
            {"commits", "errors", s->commit_errors},
            {"diagnosis", "partition", s->diagnosis_partition},
            {"diagnosis", "total_lag", s->total_lag},
        };
        for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
                const h_json_t *o = f[i].obj ? h_json_get(j, f[i].obj) : j;
                assert_non_null(o);
                h_eq_json(o, f[i].key, f[i].v);
        }
        const h_json_t *ev = h_json_get(j, "events");
        assert_non_null(ev);
        for (int i = 0; i < LAGPROBE_EVENT__CNT; i++)
                h_eq_json(ev, lagprobe_event_name((lagprobe_event_type_t)i),
                          s->events[i]);
        const h_json_t *dg = h_json_get(j, "diagnosis");
        const h_json_t *v = h_json_get(dg, "verdict");
        assert_non_null(v);
        assert_string_equal(v->str, s->diagnosis_name);
        const h_json_t *tp = h_json_get(dg, "topic");
        assert_non_null(tp);
        if (s->diagnosis_topic)
                assert_string_equal(tp->str, s->diagnosis_topic);
        else
                assert_int_equal(tp->type, H_JNULL);
        size_t n = s->partition_cnt < H_SNAP_PARTS ? s->partition_cnt
                                                   : H_SNAP_PARTS;
        for (size_t i = 0; i < n; i++) {
                const lagprobe_partition_t *x = &hs->parts[i];
                /* In "partitions": "diagnosis" names one too. */
                const h_json_t *r = h_json_find_partition(
                    h_json_get(j, "partitions"), x->topic, x->partition);
                assert_non_null(r);
                const struct {
                        const char *key;
                        int64_t v;
                } pf[] = {{"high_watermark", x->high_watermark},
                          {"low_watermark", x->low_watermark},
                          {"committed_offset", x->committed_offset},
                          {"position", x->position},
                          {"lag", x->lag},
                          {"position_lag", x->position_lag},
                          {"effective_lag", x->effective_lag},
                          {"consumed", x->consumed},
                          {"consumed_total", x->consumed_total}};
                for (size_t k = 0; k < sizeof pf / sizeof pf[0]; k++)
                        h_eq_json(r, pf[k].key, pf[k].v);
                const h_json_t *sn = h_json_get(r, "status");
                assert_non_null(sn);
                assert_string_equal(sn->str, x->status_name);
                const h_json_t *sl = h_json_get(r, "stale");
                assert_non_null(sl);
                assert_int_equal(sl->type, H_JBOOL);
                assert_int_equal((int)sl->num, x->stale);
        }
}

static void h_prom_agrees(const char *m, const h_snap_t *a, const h_snap_t *b) {
        const lagprobe_snapshot_t *s = &a->s;
        static const struct {
                const char *name;
                size_t off;
        } counts[] = {
            {"lagprobe_evictions_total", offsetof(lagprobe_snapshot_t, evictions)},
            {"lagprobe_assigned_partitions",
             offsetof(lagprobe_snapshot_t, assignment_size)},
            {"lagprobe_consumed_messages_total",
             offsetof(lagprobe_snapshot_t, consumed)},
            {"lagprobe_commits_total", offsetof(lagprobe_snapshot_t, commits)},
            {"lagprobe_commit_errors_total",
             offsetof(lagprobe_snapshot_t, commit_errors)},
            {"lagprobe_stats_documents_total",
             offsetof(lagprobe_snapshot_t, stats_docs)},
            {"lagprobe_stats_parse_errors_total",
             offsetof(lagprobe_snapshot_t, stats_errors)},
            {"lagprobe_stats_field_errors_total",
             offsetof(lagprobe_snapshot_t, stats_field_errors)},
            {"lagprobe_hook_errors_total",
             offsetof(lagprobe_snapshot_t, hook_errors)},
            {"lagprobe_max_poll_interval_seconds",
             offsetof(lagprobe_snapshot_t, max_poll_interval_ms)},
        };
        for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
                int64_t v;
                memcpy(&v, (const char *)s + counts[i].off, sizeof v);
                double want = (double)v;
                if (i == sizeof counts / sizeof counts[0] - 1)
                        want /= 1e3;
                h_eq_num(counts[i].name, h_prom(m, counts[i].name, NULL),
                         want);
        }
        h_eq_num("lagprobe_poll_exact", h_prom(m, "lagprobe_poll_exact", NULL),
                 s->exact);
        h_eq_num("lagprobe_health", h_prom(m, "lagprobe_health", NULL),
                 s->health);
        h_eq_num("lagprobe_brokers_down",
                 h_prom(m, "lagprobe_brokers_down", NULL), s->brokers_down_cnt);
        h_between("lagprobe_last_poll_seconds_ago",
                  h_prom(m, "lagprobe_last_poll_seconds_ago", NULL),
                  s->since_last_poll_ms, b->s.since_last_poll_ms);
        h_between("lagprobe_poll_headroom_seconds",
                  h_prom(m, "lagprobe_poll_headroom_seconds", NULL),
                  s->headroom_ms, b->s.headroom_ms);
        h_between("lagprobe_unassigned_seconds",
                  h_prom(m, "lagprobe_unassigned_seconds", NULL),
                  s->unassigned_ms, b->s.unassigned_ms);
        static const char *const rb[3] = {"assign", "revoke", "lost"};
        const int64_t rbv[3] = {s->assigns, s->revokes, s->lost};
        char l[160];
        for (int i = 0; i < 3; i++) {
                snprintf(l, sizeof l, "type=\"%s\"", rb[i]);
                h_eq_num(l, h_prom(m, "lagprobe_rebalance_events_total", l),
                         (double)rbv[i]);
        }
        for (int i = 0; i < LAGPROBE_REASON__CNT; i++) {
                snprintf(l, sizeof l, "reason=\"%s\"",
                         lagprobe_reason_name(1u << i));
                h_eq_num(l, h_prom(m, "lagprobe_health_reason", l),
                         (s->health_reasons >> i) & 1u);
        }
        for (int i = 0; i < LAGPROBE_EVENT__CNT; i++) {
                snprintf(l, sizeof l, "event=\"%s\"",
                         lagprobe_event_name((lagprobe_event_type_t)i));
                h_eq_num(l, h_prom(m, "lagprobe_events_total", l),
                         (double)s->events[i]);
        }
        assert_int_equal(h_prom_count(m, "lagprobe_diagnosis", NULL), 1);
        snprintf(l, sizeof l, "verdict=\"%s\"", s->diagnosis_name);
        h_eq_num(l, h_prom(m, "lagprobe_diagnosis", l), 1);
        h_prom_hist_agrees(m, "lagprobe_batch_duration_seconds", &s->batch);
        h_prom_hist_agrees(m, "lagprobe_message_processing_seconds",
                           &s->message);
        h_prom_hist_agrees(m, "lagprobe_poll_gap_seconds", &s->poll_gap);

        static const char *const fam[] = {
            "kafka_consumergroup_lag",
            "kafka_consumergroup_current_offset",
            "lagprobe_partition_high_watermark",
            "lagprobe_partition_low_watermark",
            "lagprobe_partition_position",
            "lagprobe_partition_position_lag",
            "lagprobe_partition_stale",
            "lagprobe_partition_consumed_messages_total",
            "lagprobe_partition_commit_errors_total",
            "lagprobe_partition_effective_lag",
            "lagprobe_partition_ingress_messages_per_second",
            "lagprobe_partition_egress_messages_per_second"};
        size_t n = s->partition_cnt < H_SNAP_PARTS ? s->partition_cnt
                                                   : H_SNAP_PARTS;
        for (size_t i = 0; i < n; i++) {
                const lagprobe_partition_t *x = &a->parts[i];
                /* Absent when unknown (negative), as README says for lag
                 * and the committed offset. */
                const double v[] = {
                    (double)x->lag,           (double)x->committed_offset,
                    (double)x->high_watermark, (double)x->low_watermark,
                    (double)x->position,      (double)x->position_lag,
                    x->stale,                 (double)x->consumed_total,
                    (double)x->commit_errors, (double)x->effective_lag,
                    x->ingress_rate,          x->egress_rate};
                char tl[160];
                snprintf(tl, sizeof tl, "topic=\"%s\",partition=\"%d\"",
                         x->topic, (int)x->partition);
                for (size_t f = 0; f < sizeof fam / sizeof fam[0]; f++) {
                        if (v[f] < 0) {
                                assert_int_equal(h_prom_count(m, fam[f], tl),
                                                 0);
                                continue;
                        }
                        char what[256];
                        snprintf(what, sizeof what, "%s{%s}", fam[f], tl);
                        h_eq_num(what, h_prom(m, fam[f], tl), v[f]);
                }
                /* One status sample per partition: the current one. */
                assert_int_equal(
                    h_prom_count(m, "lagprobe_partition_status", tl), 1);
                snprintf(tl, sizeof tl,
                         "topic=\"%s\",partition=\"%d\",status=\"%s\"",
                         x->topic, (int)x->partition, x->status_name);
                h_eq_num(tl, h_prom(m, "lagprobe_partition_status", tl), 1);
        }
}

void h_assert_outputs_agree(lagprobe_t *p) {
        h_snap_t *a = malloc(sizeof *a), *b = malloc(sizeof *b);
        assert_non_null(a);
        assert_non_null(b);
        for (int tries = 0; tries < 50; tries++) {
                h_snap(p, a);
                char *js = h_snap_json(p);
                char *m = h_metrics(p);
                h_snap(p, b);
                if (!h_still(a, b)) {
                        free(js);
                        free(m);
                        h_sleep_ms(10);
                        continue;
                }
                h_json_t *j = h_json_parse(js, strlen(js));
                if (!j)
                        fail_msg("invalid JSON: %s", js);
                h_json_agrees(j, a);
                h_prom_agrees(m, a, b);
                h_json_free(j);
                free(js);
                free(m);
                free(a);
                free(b);
                return;
        }
        fail_msg("the probe's figures never held still for two snapshots");
}

typedef struct h_agree_s {
        lagprobe_t *p;
        const char *topic;
        int n;
        const h_desc_t *d;
} h_agree_t;

static int h_agrees(void *arg) {
        h_agree_t *a = arg;
        h_snap_t hs;
        h_snap(a->p, &hs);
        if ((int)hs.s.partition_cnt != a->n)
                return 0;
        for (int i = 0; i < a->n; i++) {
                const lagprobe_partition_t *x = h_snap_find(&hs, a->topic, i);
                if (!x || x->high_watermark != a->d[i].log_end ||
                    x->committed_offset != a->d[i].committed ||
                    x->lag != a->d[i].lag)
                        return 0;
        }
        return 1;
}

void h_assert_lag_exact(const h_cluster_t *c, rd_kafka_t *rk, h_track_t *t,
                        lagprobe_t *p, const char *group_id,
                        const char *topic, int partition_cnt, h_desc_t *d) {
        h_describe(c, group_id, topic, partition_cnt, d);
        h_agree_t a = {p, topic, partition_cnt, d};
        h_poll_until(rk, t, h_agrees, &a, 5000);
        h_snap_t hs;
        h_snap(p, &hs);
        assert_int_equal(hs.s.partition_cnt, partition_cnt);
        for (int i = 0; i < partition_cnt; i++) {
                const lagprobe_partition_t *x = h_snap_find(&hs, topic, i);
                assert_non_null(x);
                print_message("  [%d] probe hwm %" PRId64 " committed %" PRId64
                              " lag %" PRId64 " | describe end %" PRId64
                              " committed %" PRId64 " lag %" PRId64 "\n",
                              i, x->high_watermark, x->committed_offset,
                              x->lag, d[i].log_end, d[i].committed, d[i].lag);
                assert_int_equal(x->high_watermark, d[i].log_end);
                assert_int_equal(x->committed_offset, d[i].committed);
                assert_int_equal(x->lag, d[i].lag);
        }
}

/* ---- the fixture ----------------------------------------------------- */

void h_fixture_init(h_fixture_t *f) {
        memset(f, 0, sizeof *f);
        f->broker_cnt = 1;
        f->topic_prefix = "t";
        f->group_prefix = "g";
        f->nparts = 1;
        h_copts_init(&f->copts, NULL);
}

void h_fixture_init_on(h_fixture_t *f, h_cluster_t *c,
                       const char *topic_prefix, const char *group_prefix,
                       int nparts, const int *counts) {
        h_fixture_init(f);
        f->c = c;
        f->topic_prefix = topic_prefix;
        f->group_prefix = group_prefix;
        f->nparts = nparts;
        f->counts = counts;
}

void h_fixture_topic(h_fixture_t *f) {
        if (!f->c) {
                f->c = h_cluster_new(f->broker_cnt);
                f->own_cluster = 1;
        }
        h_unique(f->topic_prefix, f->topic, sizeof f->topic);
        h_unique(f->group_prefix, f->group, sizeof f->group);
        h_topic_create(f->c, f->topic, f->nparts);
        h_track_init(&f->t);
        for (int i = 0; f->counts && i < f->nparts; i++)
                if (f->counts[i] > 0)
                        h_fixture_produce(f, i, f->counts[i]);
}

void h_fixture_consumer(h_fixture_t *f) {
        f->copts.group_id = f->group;
        rd_kafka_conf_t *conf = h_consumer_conf(f->c, &f->copts);
        if (f->before_attach)
                f->before_attach(f, &conf);
        f->p = h_probe_attach_cfg(conf, f->pc);
        if (f->after_attach)
                f->after_attach(f, &conf);
        f->rk = h_consumer_new(conf, f->topic);
}

void h_fixture_start(h_fixture_t *f) {
        h_fixture_topic(f);
        h_fixture_consumer(f);
        if (f->wait_all)
                assert_true(h_poll_until(f->rk, &f->t, h_fixture_all_seen, f,
                                         H_JOIN_TIMEOUT_MS));
}

void h_fixture_produce(h_fixture_t *f, int32_t partition, int count) {
        h_produce(f->c, f->topic, partition, count, NULL, 0);
        f->produced[partition] += count;
        f->want += count;
}

int h_fixture_all_seen(void *arg) {
        h_fixture_t *f = arg;
        lagprobe_snapshot_t s; /* the global figures only */
        lagprobe_snapshot_init(&s, NULL, 0);
        assert_int_equal(lagprobe_snapshot(f->p, &s), 0);
        return f->t.total >= f->want && s.consumed >= f->want;
}

void h_fixture_stop(h_fixture_t *f) {
        h_consumer_close(f->rk);
        lagprobe_destroy(f->p);
        f->rk = NULL;
        f->p = NULL;
        if (f->own_cluster) {
                h_cluster_destroy(f->c);
                f->c = NULL;
                f->own_cluster = 0;
        }
}

/* ---- tiny JSON reader ------------------------------------------------ */

typedef struct h_jp_s {
        const char *p, *end;
        int depth;
} h_jp_t;

static void hj_ws(h_jp_t *j) {
        while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' ||
                                 *j->p == '\n' || *j->p == '\r'))
                j->p++;
}

static int hj_hex4(const char *s, unsigned *out) {
        unsigned v = 0;
        for (int i = 0; i < 4; i++) {
                char c = s[i];
                v <<= 4;
                if (c >= '0' && c <= '9')
                        v |= (unsigned)(c - '0');
                else if (c >= 'a' && c <= 'f')
                        v |= (unsigned)(c - 'a' + 10);
                else if (c >= 'A' && c <= 'F')
                        v |= (unsigned)(c - 'A' + 10);
                else
                        return -1;
        }
        *out = v;
        return 0;
}

static char *hj_string(h_jp_t *j) {
        if (j->p >= j->end || *j->p != '"')
                return NULL;
        j->p++;
        size_t cap = 16, n = 0;
        char *out = malloc(cap);
        if (!out)
                return NULL;
        while (j->p < j->end && *j->p != '"') {
                unsigned char c = (unsigned char)*j->p;
                char enc[4];
                size_t el = 1;
                if (c < 0x20)
                        goto bad;
                if (c == '\\') {
                        if (j->p + 1 >= j->end)
                                goto bad;
                        char e = j->p[1];
                        j->p += 2;
                        switch (e) {
                        case '"': enc[0] = '"'; break;
                        case '\\': enc[0] = '\\'; break;
                        case '/': enc[0] = '/'; break;
                        case 'b': enc[0] = '\b'; break;
                        case 'f': enc[0] = '\f'; break;
                        case 'n': enc[0] = '\n'; break;
                        case 'r': enc[0] = '\r'; break;
                        case 't': enc[0] = '\t'; break;
                        case 'u': {
                                unsigned cp;
                                if (j->end - j->p < 4 || hj_hex4(j->p, &cp))
                                        goto bad;
                                j->p += 4;
                                if (cp < 0x80) {
                                        enc[0] = (char)cp;
                                } else if (cp < 0x800) {
                                        enc[0] = (char)(0xC0 | (cp >> 6));
                                        enc[1] = (char)(0x80 | (cp & 0x3F));
                                        el = 2;
                                } else {
                                        enc[0] = (char)(0xE0 | (cp >> 12));
                                        enc[1] =
                                            (char)(0x80 | ((cp >> 6) & 0x3F));
                                        enc[2] = (char)(0x80 | (cp & 0x3F));
                                        el = 3;
                                }
                                break;
                        }
                        default:
                                goto bad;
                        }
                } else {
                        enc[0] = (char)c;
                        j->p++;
                }
                if (n + el + 1 > cap) {
                        cap = cap * 2 + el;
                        char *o2 = realloc(out, cap);
                        if (!o2)
                                goto bad;
                        out = o2;
                }
                memcpy(out + n, enc, el);
                n += el;
        }
        if (j->p >= j->end)
                goto bad;
        j->p++;
        out[n] = 0;
        return out;
bad:
        free(out);
        return NULL;
}

static h_json_t *hj_value(h_jp_t *j);

static int hj_lit(h_jp_t *j, const char *lit) {
        size_t n = strlen(lit);
        if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n))
                return -1;
        j->p += n;
        return 0;
}

static h_json_t *hj_number(h_jp_t *j) {
        const char *b = j->p, *q = j->p;
        int is_int = 1;
        if (q < j->end && *q == '-')
                q++;
        if (q >= j->end || !isdigit((unsigned char)*q))
                return NULL;
        if (*q == '0')
                q++;
        else
                while (q < j->end && isdigit((unsigned char)*q))
                        q++;
        if (q < j->end && *q == '.') {
                is_int = 0;
                q++;
                if (q >= j->end || !isdigit((unsigned char)*q))
                        return NULL;
                while (q < j->end && isdigit((unsigned char)*q))
                        q++;
        }
        if (q < j->end && (*q == 'e' || *q == 'E')) {
                is_int = 0;
                q++;
                if (q < j->end && (*q == '+' || *q == '-'))
                        q++;
                if (q >= j->end || !isdigit((unsigned char)*q))
                        return NULL;
                while (q < j->end && isdigit((unsigned char)*q))
                        q++;
        }
        char tmp[64];
        size_t n = (size_t)(q - b);
        if (n >= sizeof tmp)
                return NULL;
        memcpy(tmp, b, n);
        tmp[n] = 0;
        h_json_t *v = calloc(1, sizeof *v);
        if (!v)
                return NULL;
        v->type = H_JNUM;
        v->num = strtod(tmp, NULL);
        if (is_int) {
                errno = 0;
                long long ll = strtoll(tmp, NULL, 10);
                v->is_int = errno == 0;
                v->inum = ll;
        }
        j->p = q;
        return v;
}

static h_json_t *hj_container(h_jp_t *j, char open) {
        char close = open == '{' ? '}' : ']';
        h_json_t *v = calloc(1, sizeof *v), **tail;
        if (!v)
                return NULL;
        v->type = open == '{' ? H_JOBJ : H_JARR;
        tail = &v->child;
        if (++j->depth > 200)
                goto bad;
        j->p++;
        hj_ws(j);
        if (j->p < j->end && *j->p == close) {
                j->p++;
                j->depth--;
                return v;
        }
        for (;;) {
                char *key = NULL;
                hj_ws(j);
                if (open == '{') {
                        if (!(key = hj_string(j)))
                                goto bad;
                        hj_ws(j);
                        if (j->p >= j->end || *j->p != ':') {
                                free(key);
                                goto bad;
                        }
                        j->p++;
                }
                h_json_t *e = hj_value(j);
                if (!e) {
                        free(key);
                        goto bad;
                }
                e->key = key;
                *tail = e;
                tail = &e->next;
                hj_ws(j);
                if (j->p < j->end && *j->p == ',') {
                        j->p++;
                        continue;
                }
                if (j->p < j->end && *j->p == close) {
                        j->p++;
                        break;
                }
                goto bad;
        }
        j->depth--;
        return v;
bad:
        h_json_free(v);
        return NULL;
}

static h_json_t *hj_value(h_jp_t *j) {
        hj_ws(j);
        if (j->p >= j->end)
                return NULL;
        h_json_t *v;
        switch (*j->p) {
        case '{':
        case '[':
                return hj_container(j, *j->p);
        case '"': {
                char *s = hj_string(j);
                if (!s)
                        return NULL;
                v = calloc(1, sizeof *v);
                if (!v) {
                        free(s);
                        return NULL;
                }
                v->type = H_JSTR;
                v->str = s;
                return v;
        }
        case 't':
        case 'f':
        case 'n': {
                int t = *j->p == 't', f = *j->p == 'f';
                if (hj_lit(j, t ? "true" : f ? "false" : "null"))
                        return NULL;
                v = calloc(1, sizeof *v);
                if (!v)
                        return NULL;
                v->type = t || f ? H_JBOOL : H_JNULL;
                v->num = t;
                return v;
        }
        default:
                return hj_number(j);
        }
}

h_json_t *h_json_parse(const char *s, size_t len) {
        h_jp_t j = {s, s + len, 0};
        h_json_t *v = hj_value(&j);
        if (!v)
                return NULL;
        hj_ws(&j);
        if (j.p != j.end) {
                h_json_free(v);
                return NULL;
        }
        return v;
}

void h_json_free(h_json_t *j) {
        while (j) {
                h_json_t *next = j->next;
                h_json_free(j->child);
                free(j->str);
                free(j->key);
                free(j);
                j = next;
        }
}

const h_json_t *h_json_get(const h_json_t *obj, const char *key) {
        if (!obj || obj->type != H_JOBJ)
                return NULL;
        for (const h_json_t *e = obj->child; e; e = e->next)
                if (e->key && !strcmp(e->key, key))
                        return e;
        return NULL;
}

size_t h_json_count(const h_json_t *v) {
        size_t n = 0;
        if (v && (v->type == H_JARR || v->type == H_JOBJ))
                for (const h_json_t *e = v->child; e; e = e->next)
                        n++;
        return n;
}

const h_json_t *h_json_find_partition(const h_json_t *root, const char *topic,
                                      int32_t partition) {
        if (!root)
                return NULL;
        if (root->type == H_JOBJ) {
                const h_json_t *t = h_json_get(root, "topic");
                const h_json_t *p = h_json_get(root, "partition");
                if (t && p && t->type == H_JSTR && p->type == H_JNUM &&
                    !strcmp(t->str, topic) && p->inum == partition)
                        return root;
        }
        if (root->type == H_JOBJ || root->type == H_JARR)
                for (const h_json_t *e = root->child; e; e = e->next) {
                        const h_json_t *r =
                            h_json_find_partition(e, topic, partition);
                        if (r)
                                return r;
                }
        return NULL;
}

int64_t h_json_int(const h_json_t *obj, const char *key) {
        const h_json_t *v = h_json_get(obj, key);
        if (!v)
                return INT64_MIN;
        if (v->type == H_JNULL)
                return -1;
        if (v->type != H_JNUM || !v->is_int)
                return INT64_MIN;
        return v->inum;
}

/* ---- misc ------------------------------------------------------------ */

static int h_icontains(const char *s, const char *needle) {
        size_t n = strlen(needle);
        for (; *s; s++) {
                size_t i = 0;
                while (i < n && s[i] &&
                       tolower((unsigned char)s[i]) ==
                           tolower((unsigned char)needle[i]))
                        i++;
                if (i == n)
                        return 1;
        }
        return n == 0;
}

int h_contains_any(const char *s, ...) {
        va_list ap;
        const char *needle;
        int found = 0;
        if (!s)
                return 0;
        va_start(ap, s);
        while ((needle = va_arg(ap, const char *)))
                if (h_icontains(s, needle))
                        found = 1;
        va_end(ap);
        return found;
}

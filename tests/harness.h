/* lagprobe test harness: mock cluster, producer, consumers, an independent
 * "kafka-consumer-groups --describe", snapshot helpers and a tiny JSON
 * reader. Shared by every tests/test_*.c.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Facts about librdkafka 2.0.2's mock cluster that the figures below rest
 * on (measured on this machine):
 *  - the first JoinGroup of an empty group waits a fixed 3000 ms (the mock's
 *    group.initial.rebalance.delay.ms), so every subscribe costs ~3 s;
 *  - a member whose session.timeout.ms is shorter than about 3100 ms times
 *    out during that wait and never joins: 3500 is the smallest safe value;
 *  - a later rebalance (member joins or leaves) waits session.timeout.ms
 *    - 1000 ms for the other members to rejoin (2.5 s with 3500);
 *    cooperative-sticky needs two such rounds when a member joins;
 *  - no Fetch is sent for a paused partition: its hi_offset in the
 *    statistics stops moving while fetch_state stays "active";
 *  - consumer errors reach error_cb only through rd_kafka_poll() on a main
 *    queue that is not forwarded; rd_kafka_consumer_poll() returns them as
 *    messages;
 *  - a consumer closed while a partition was paused hung once in
 *    rd_kafka_destroy(): resume before closing.
 * Harness failures (cluster, producer) fail the running cmocka test, so
 * call the harness from the cmocka thread, except h_produce*() from one
 * other thread at a time and the h_json_*() and h_now/h_sleep helpers. */
#ifndef LAGPROBE_TEST_HARNESS_H
#define LAGPROBE_TEST_HARNESS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "probe.h"

#define H_SESSION_TIMEOUT_MS 3500
#define H_HEARTBEAT_MS 250
#define H_MAX_POLL_MS 10000
#define H_STATS_MS 100
#define H_FIRST_JOIN_MS 3000
/* Upper bound for one group join/rebalance in tests (a few rounds);
 * scaled by h_slow() (a bound on a wait, not a figure under test). */
#define H_JOIN_TIMEOUT_MS h_slow_ms(15000)

#define H_MAX_PARTS 64 /* partitions one tracked topic may have */

/* cmocka keeps fail_msg()'s text to itself: print it, then fail. */
#define H_FAIL(...)                                                            \
        do {                                                                   \
                print_message("FAIL: " __VA_ARGS__);                           \
                print_message("\n");                                           \
                fail();                                                        \
        } while (0)

/* ---- time ------------------------------------------------------------ */

int64_t h_now_ms(void);  /* monotonic */
int64_t h_wall_ms(void); /* ms since the epoch */
void h_sleep_ms(int ms);

typedef int(h_pred_t)(void *arg);

/* How many times slower than a plain build this process runs: 1, or
 * H_SLOW_VALGRIND under valgrind (RUNNING_ON_VALGRIND, when valgrind's
 * headers were there at build time). LAGPROBE_TEST_SLOW=N in the
 * environment (an integer >= 1) overrides both. Only bounds on waits for
 * something that happens anyway scale with it (h_slow_ms), and allowances
 * for figures that follow the consumer's own speed (a lag made of the
 * messages produced during one commit round trip); a latency that a test
 * is about does not. */
#define H_SLOW_VALGRIND 3
int h_slow(void);
int h_slow_ms(int ms); /* ms * h_slow() */

/* Calls pred every ~5 ms until it returns non-zero (returns 1) or
 * timeout_ms elapses (returns 0). */
int h_wait_until(h_pred_t *pred, void *arg, int timeout_ms);

/* ---- names ----------------------------------------------------------- */

/* "prefix-<pid>-<n>": unique per call, for topics and groups. */
const char *h_unique(const char *prefix, char *buf, size_t size);

/* ---- mock cluster ---------------------------------------------------- */

typedef struct h_cluster_s {
        rd_kafka_t *owner;      /* handle the mock cluster lives in */
        rd_kafka_mock_cluster_t *mcluster;
        rd_kafka_t *producer;   /* connected to bootstraps, lazily made */
        char bootstraps[256];
} h_cluster_t;

h_cluster_t *h_cluster_new(int broker_cnt);
void h_cluster_destroy(h_cluster_t *c);
void h_topic_create(h_cluster_t *c, const char *topic, int partition_cnt);

/* One cluster of one broker for a whole cmocka group, for the files whose
 * tests each make their own topic and group on it: pass h_group_setup and
 * h_group_teardown to cmocka_run_group_tests(). h_cl is that cluster
 * between the two, NULL outside. */
extern h_cluster_t *h_cl;
int h_group_setup(void **state);
int h_group_teardown(void **state);

/* ---- producing ------------------------------------------------------- */

/* Timestamp of the seq'th message of one h_produce_fn() call. */
typedef int64_t(h_ts_fn_t)(int32_t partition, int64_t seq, void *opaque);

/* Produce count messages to topic/partition and flush. key may be NULL.
 * ts_ms > 0: explicit CreateTime for every message; 0: the producer's
 * clock. Fails the test on any delivery error. */
void h_produce(h_cluster_t *c, const char *topic, int32_t partition, int count,
               const char *key, int64_t ts_ms);
void h_produce_fn(h_cluster_t *c, const char *topic, int32_t partition,
                  int64_t count, const char *key, h_ts_fn_t *ts_fn,
                  void *opaque);

/* Messages the broker acknowledged so far (delivery reports of every
 * cluster's producer, served by rd_kafka_poll() or flush on the caller's
 * thread). */
int64_t h_delivered(void);

/* Log end offset (high watermark) as the broker reports it. */
int64_t h_end_offset(h_cluster_t *c, const char *topic, int32_t partition);

/* ---- consumer configuration and wrapper --------------------------------- */

typedef struct h_copts_s {
        const char *group_id;
        const char *strategy;   /* partition.assignment.strategy; NULL range */
        int auto_commit;        /* enable.auto.commit */
        int session_timeout_ms; /* 0: H_SESSION_TIMEOUT_MS */
        int max_poll_ms;        /* 0: H_MAX_POLL_MS */
        int stats_ms;           /* statistics.interval.ms; <0 leave unset */
} h_copts_t;

void h_copts_init(h_copts_t *o, const char *group_id);

/* A consumer conf for the mock: small timeouts, auto.offset.reset=earliest,
 * statistics every H_STATS_MS (unless opts say otherwise). */
rd_kafka_conf_t *h_consumer_conf(const h_cluster_t *c, const h_copts_t *o);
/* Shorthand: group, strategy (NULL range), auto commit. */
rd_kafka_conf_t *h_conf(const h_cluster_t *c, const char *group_id,
                        const char *strategy, int auto_commit);
void h_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value);
/* rd_kafka_conf_get() into buf; returns buf, "" when unknown. */
const char *h_conf_get(const rd_kafka_conf_t *conf, const char *name,
                       char *buf, size_t size);

/* rd_kafka_new (consumes conf) + rd_kafka_poll_set_consumer + subscribe to
 * topic (NULL: no subscription). Fails the test on error. */
rd_kafka_t *h_consumer_new(rd_kafka_conf_t *conf, const char *topic);
void h_subscribe(rd_kafka_t *rk, const char *topic);
/* rd_kafka_consumer_close + rd_kafka_destroy. NULL is a no-op. */
void h_consumer_close(rd_kafka_t *rk);

/* ---- consuming and polling ------------------------------------------- */

/* What one consumer got, per partition of the topics it reads (topics are
 * not told apart: tests give each consumer one topic). */
typedef struct h_track_s {
        int64_t consumed[H_MAX_PARTS];
        int64_t next_offset[H_MAX_PARTS]; /* last offset + 1, -1 none */
        int64_t last_ts[H_MAX_PARTS];
        int64_t total;
        int64_t errors;       /* error events returned by poll */
        int last_err;
} h_track_t;

void h_track_init(h_track_t *t);

/* One rd_kafka_consumer_poll(); records a message in t (may be NULL).
 * Returns 1 when a message (not an error event) was returned. */
int h_poll_once(rd_kafka_t *rk, int timeout_ms, h_track_t *t);

/* Poll n consumers round-robin (10 ms each) until pred(arg) is non-zero
 * (returns 1) or timeout_ms (returns 0). tracks may be NULL; pred may be
 * NULL (poll for the whole time, returns 1). */
int h_poll_until_n(rd_kafka_t **rks, h_track_t **tracks, int n,
                   h_pred_t *pred, void *arg, int timeout_ms);
int h_poll_until(rd_kafka_t *rk, h_track_t *t, h_pred_t *pred, void *arg,
                 int timeout_ms);
/* Poll for ms milliseconds regardless. */
void h_poll_for(rd_kafka_t *rk, h_track_t *t, int ms);

/* Number of partitions currently assigned (rd_kafka_assignment(); call it
 * from the polling thread only). */
int h_assignment_cnt(rd_kafka_t *rk);

/* Synchronous commit of one offset per listed partition (offsets[i] for
 * partition i; <0 skips that partition). Fails the test on error. */
void h_commit(rd_kafka_t *rk, const char *topic, const int64_t *offsets,
              int partition_cnt);

/* ---- kafka-consumer-groups --describe ---------------------------------- */

typedef struct h_desc_s {
        int32_t partition;
        int64_t committed; /* -1: nothing committed ("-") */
        int64_t log_end;
        int64_t lag;       /* log_end - committed, -1 when not committed */
} h_desc_t;

/* A second client of the group (same group.id, never subscribes) asks the
 * coordinator for the committed offsets (rd_kafka_committed) and the
 * leaders for the log end offsets (rd_kafka_query_watermark_offsets). */
void h_describe(const h_cluster_t *c, const char *group_id, const char *topic,
                int partition_cnt, h_desc_t *out);

/* ---- probe helpers --------------------------------------------------- */

/* The probe's lag against h_describe(): describes the group into d
 * (partition_cnt entries), polls rk (recording into t, may be NULL) until
 * the probe's high watermark, committed offset and lag agree for every
 * partition (statistics arrive in polls) or 5 s pass, then asserts them
 * partition by partition so that a mismatch names itself. */
void h_assert_lag_exact(const h_cluster_t *c, rd_kafka_t *rk, h_track_t *t,
                        lagprobe_t *p, const char *group_id,
                        const char *topic, int partition_cnt, h_desc_t *d);

#define H_SNAP_PARTS 256
typedef struct h_snap_s {
        lagprobe_snapshot_t s;
        lagprobe_partition_t parts[H_SNAP_PARTS];
} h_snap_t;

lagprobe_t *h_probe_new(void); /* defaults; fails the test on error */
/* lagprobe_new + lagprobe_attach; fails the test on error. */
lagprobe_t *h_probe_attach(rd_kafka_conf_t *conf);
/* The same with a config (NULL: defaults). */
lagprobe_t *h_probe_attach_cfg(rd_kafka_conf_t *conf,
                               const lagprobe_config_t *pc);
/* lagprobe_snapshot_init + lagprobe_snapshot into hs; asserts success. */
void h_snap(lagprobe_t *p, h_snap_t *hs);
const lagprobe_partition_t *h_snap_find(const h_snap_t *hs, const char *topic,
                                        int32_t partition);
/* lagprobe_snapshot_json into a malloc'd string (caller frees). */
char *h_snap_json(lagprobe_t *p);
/* lagprobe_metrics_prometheus likewise. */
char *h_metrics(lagprobe_t *p);
/* The value of the one sample of family name in a Prometheus document
 * whose labels include every one of labels ("k=\"v\",k2=\"v2\"", as
 * written in the text; NULL or "": any); fails the test when there is
 * not exactly one. h_prom_count: how many samples match. */
double h_prom(const char *doc, const char *name, const char *labels);
int h_prom_count(const char *doc, const char *name, const char *labels);

/* The health verdict as all three outputs give it: lagprobe_health()
 * returns health and its reasons name reason (present) or do not; the
 * JSON's status and reasons say the same; /metrics has lagprobe_health
 * health and lagprobe_health_reason{reason=...} present. Call while the
 * state holds still. */
void h_assert_health(lagprobe_t *p, int health, const char *reason,
                     int present);

/* The snapshot, the JSON document and /metrics carry the same figures:
 * every JSON figure and every Prometheus family (per consumer, per
 * partition, the histograms' count and sum) is compared with a snapshot
 * taken just before, rendered while nothing moved (retried until two
 * snapshots around the renderings agree); clock-derived ones lie between
 * two snapshots. Called where the snapshot's figures are pinned against
 * independent ones, so that each output's value is pinned too. */
void h_assert_outputs_agree(lagprobe_t *p);

/* ---- the fixture: one consumer with the probe on the mock ------------- */

typedef struct h_fixture_s h_fixture_t;
/* Called by h_fixture_consumer() with the consumer's conf; may replace
 * *conf (it then destroys the one it was given). */
typedef void(h_fixture_conf_fn_t)(h_fixture_t *f, rd_kafka_conf_t **conf);

/* The setup most tests share: cluster, topic, messages, a consumer conf,
 * the probe attached, rd_kafka_new and subscribe, the first messages seen;
 * and the teardown that matches it. Fields above "filled in" are options:
 * h_fixture_init() sets the defaults named here, the test changes any
 * before h_fixture_start(). */
struct h_fixture_s {
        h_cluster_t *c;            /* NULL: a cluster of broker_cnt brokers
                                    * that h_fixture_stop() destroys */
        int broker_cnt;            /* 1 */
        const char *topic_prefix;  /* h_unique() prefixes: "t" */
        const char *group_prefix;  /* "g" */
        int nparts;                /* 1 */
        const int *counts;         /* messages per partition produced before
                                    * the consumer starts; NULL none */
        h_copts_t copts;           /* h_copts_init(); group_id is set from
                                    * group by h_fixture_consumer() */
        const lagprobe_config_t *pc;       /* NULL: defaults */
        h_fixture_conf_fn_t *before_attach; /* NULL: none */
        h_fixture_conf_fn_t *after_attach;  /* NULL: none */
        void *opaque;              /* for the test's hooks */
        int wait_all;              /* 1: h_fixture_start() polls until the
                                    * app and the probe saw every message
                                    * (H_JOIN_TIMEOUT_MS); 0: no wait */
        /* filled in */
        int own_cluster;
        char topic[64], group[64];
        int64_t produced[H_MAX_PARTS];
        int64_t want;              /* messages produced in all */
        rd_kafka_t *rk;
        lagprobe_t *p;
        h_track_t t;
};

/* Zeroes f and sets the options' defaults. */
void h_fixture_init(h_fixture_t *f);
/* h_fixture_init, then the options most tests set: the cluster c (NULL:
 * one of its own), the name prefixes, nparts and counts. */
void h_fixture_init_on(h_fixture_t *f, h_cluster_t *c,
                       const char *topic_prefix, const char *group_prefix,
                       int nparts, const int *counts);
/* The cluster (unless given), unique topic and group names, the topic and
 * the counts' messages. */
void h_fixture_topic(h_fixture_t *f);
/* The conf (h_consumer_conf), before_attach, the probe attached
 * (h_probe_attach_cfg), after_attach, the consumer subscribed to topic. */
void h_fixture_consumer(h_fixture_t *f);
/* h_fixture_topic + h_fixture_consumer, then the wait_all wait. */
void h_fixture_start(h_fixture_t *f);
/* count more messages to partition, counted in produced and want. */
void h_fixture_produce(h_fixture_t *f, int32_t partition, int count);
/* Has the app consumed, and the probe seen, want messages? (an h_pred_t) */
int h_fixture_all_seen(void *f);
/* Closes the consumer, destroys the probe and an own cluster; safe on a
 * fixture never started or stopped already (the teardown of a failed
 * test). */
void h_fixture_stop(h_fixture_t *f);

/* ---- the tests' one JSON reader -------------------------------------- */

typedef enum {
        H_JNULL,
        H_JBOOL,
        H_JNUM,
        H_JSTR,
        H_JARR,
        H_JOBJ
} h_jtype_t;

typedef struct h_json_s h_json_t;
struct h_json_s {
        h_jtype_t type;
        double num;      /* H_JNUM, H_JBOOL (0/1) */
        int64_t inum;    /* H_JNUM when integral */
        int is_int;
        char *str;       /* H_JSTR (unescaped, NUL-terminated) */
        char *key;       /* member name when inside an object */
        h_json_t *child; /* H_JARR/H_JOBJ first element */
        h_json_t *next;
};

/* Strict RFC 8259 parse of exactly len bytes; NULL when invalid. */
h_json_t *h_json_parse(const char *s, size_t len);
void h_json_free(h_json_t *j);
const h_json_t *h_json_get(const h_json_t *obj, const char *key);
/* Elements of an array, members of an object; 0 for anything else. */
size_t h_json_count(const h_json_t *v);
/* Depth-first search for an object with "topic" == topic and
 * "partition" == partition. */
const h_json_t *h_json_find_partition(const h_json_t *root, const char *topic,
                                      int32_t partition);
/* Integer member of obj: value, -1 for null, INT64_MIN when missing or of
 * another type. */
int64_t h_json_int(const h_json_t *obj, const char *key);

/* ---- misc ------------------------------------------------------------ */

/* Is word one of the comma-separated list (NULL: empty)? */
int h_in_list(const char *list, const char *word);

/* Case-insensitive: does s contain any of the NULL-terminated needles? */
int h_contains_any(const char *s, ...);

#endif

/* lagprobe - in-process Kafka consumer lag probe for librdkafka consumers.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Vendor probe.h and probe.c into a C (or C++) service that consumes with
 * librdkafka. After the app has set its own configuration and callbacks and
 * before rd_kafka_new():
 *
 *     char errstr[256];
 *     lagprobe_config_t pc;
 *     lagprobe_config_init(&pc);
 *     lagprobe_t *probe = lagprobe_new(&pc, errstr, sizeof errstr);
 *     if (!probe || lagprobe_attach(probe, conf, errstr, sizeof errstr) != 0)
 *             fprintf(stderr, "lagprobe: %s\n", errstr);
 *     rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
 *     ... the app's own poll loop, unchanged ...
 *     size_t need = lagprobe_snapshot_json(probe, buf, sizeof buf);  (any thread)
 *     ...
 *     rd_kafka_consumer_close(rk); rd_kafka_destroy(rk); lagprobe_destroy(probe);
 *
 * Build: cc -std=c11 -c probe.c $(pkg-config --cflags rdkafka); link with
 * $(pkg-config --libs rdkafka) -lpthread. probe.c needs <stb/stb_ds.h>
 * (Debian: libstb-dev).
 *
 * Threads, in the words used on every declaration below:
 *   "any thread"                       - safe from any thread, concurrently.
 *   "the thread that polls the consumer" - the thread that calls
 *                                        rd_kafka_consumer_poll() (or another
 *                                        consume call) for this consumer.
 *   "only from a lagprobe callback"    - only while inside lagprobe's log_cb.
 * Readers (snapshot, JSON) never take a lock the consumer thread can wait on.
 */
#ifndef LAGPROBE_H
#define LAGPROBE_H

#include <stddef.h>
#include <stdint.h>
#include <librdkafka/rdkafka.h>

/* Compile-time options (define before compiling probe.c). */

/* Maximum number of probes attached at the same time in one process, at
 * most 64. A slot is held from lagprobe_attach() until the probe, every conf
 * carrying it and its consumer are all destroyed. */
#ifndef LAGPROBE_MAX_PROBES
#define LAGPROBE_MAX_PROBES 64
#endif

/* Maximum number of distinct topic-partitions one probe ever tracks. Slots
 * are allocated in chunks of 256 as partitions appear. */
#ifndef LAGPROBE_MAX_PARTITIONS
#define LAGPROBE_MAX_PARTITIONS 65536
#endif

/* probe.c carries its own copy of stb_ds under lagprobe__stbds_* names, so
 * it links next to a program's own STB_DS_IMPLEMENTATION. Define
 * LAGPROBE_NO_STB_DS_IMPLEMENTATION (when compiling probe.c) to drop that
 * copy and use the program's stbds_* functions instead. */

/* Export macro: empty by default so copying the two files just works. */
#ifndef LAGPROBE_API
#define LAGPROBE_API
#endif

#define LAGPROBE_VERSION_MAJOR 0
#define LAGPROBE_VERSION_MINOR 1
#define LAGPROBE_VERSION_PATCH 0
#define LAGPROBE_VERSION                                                       \
        ((LAGPROBE_VERSION_MAJOR << 16) | (LAGPROBE_VERSION_MINOR << 8) |     \
         LAGPROBE_VERSION_PATCH)

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Types
 * ---------------------------------------------------------------------- */

/** Opaque probe handle. One probe watches one consumer. */
typedef struct lagprobe_s lagprobe_t;

/** Event names, stable: they appear in logs, JSON and metrics. */
typedef enum lagprobe_event_type_e {
        LAGPROBE_EVENT_HEADROOM_WARN = 0, /* "headroom_warn" */
        LAGPROBE_EVENT_HEADROOM_CRITICAL, /* "headroom_critical" */
        LAGPROBE_EVENT_HEADROOM_RECOVERED, /* "headroom_recovered" */
        LAGPROBE_EVENT_PREDICTED_EXCEED,  /* "predicted_exceed" */
        LAGPROBE_EVENT_EVICTED,           /* "evicted" */
        LAGPROBE_EVENT_CONFIG_ADVICE,     /* "config_advice" */
        LAGPROBE_EVENT_REBALANCE,         /* "rebalance" */
        LAGPROBE_EVENT_COMMIT_FAILED,     /* "commit_failed" */
        LAGPROBE_EVENT_STATS_ERROR,       /* "stats_error" */
        LAGPROBE_EVENT_PARTITION_STATUS,  /* "partition_status" */
        LAGPROBE_EVENT_DIAGNOSIS,         /* "diagnosis" */
        LAGPROBE_EVENT_NO_STATISTICS,     /* "no_statistics": the probe has
                                           * an assignment and receives no
                                           * statistics (cause in message) */
        LAGPROBE_EVENT_NO_REBALANCES,     /* "no_rebalances": librdkafka
                                           * delivered rebalances the probe
                                           * never saw (event API) */
        LAGPROBE_EVENT__CNT
} lagprobe_event_type_t;

/** One event, handed to lagprobe_config_t.log_cb. Every pointer is owned by
 *  the probe and valid only during the callback: copy what you keep. */
typedef struct lagprobe_event_s {
        lagprobe_event_type_t type;
        const char *name;      /* stable name, e.g. "headroom_warn" */
        int severity;          /* syslog level: 2 crit, 3 err, 4 warning,
                                * 5 notice, 6 info */
        const char *message;   /* ready human message, NUL-terminated */
        int64_t ts_ms;         /* wall clock, ms since the epoch */
        const char *group_id;  /* "" when unknown */
        const char *client_id; /* "" when unknown */
        /* The numbers behind the event; -1 where not relevant. */
        int64_t since_poll_ms;        /* time since the last poll return */
        int64_t max_poll_interval_ms; /* the limit in force */
        int64_t headroom_ms;          /* limit minus since_poll_ms */
        int64_t batch_size;           /* messages in the current batch */
        int64_t batch_done;           /* messages of it finished */
        int64_t predicted_ms;         /* predicted batch total (predicted_exceed) */
        int64_t count;                /* e.g. evictions so far, partitions */
        const char *topic;            /* NULL when not about one partition
                                       * (a summary of partitions of one
                                       * topic names it, partition -1) */
        int32_t partition;            /* -1 when not about one partition */
        const char *state;            /* partition_status: the status
                                       * name; diagnosis: the verdict name;
                                       * NULL otherwise */
        int64_t lag;                  /* partition_status: the partition's
                                       * effective lag; diagnosis: the
                                       * total lag; -1 unknown or n/a */
} lagprobe_event_t;

/** Event sink. Called from the probe's watchdog thread, or from the thread
 *  calling lagprobe_tick() when the watchdog is off; never from a
 *  librdkafka thread and never concurrently with itself for one probe.
 *  Must not block (it delays the next headroom check) and must not call
 *  lagprobe_destroy(). */
typedef void(lagprobe_log_cb_t)(const lagprobe_event_t *event, void *opaque);

/** Configuration; fill with lagprobe_config_init(), then change fields.
 *  lagprobe_new() copies it: the caller's struct is not kept. */
typedef struct lagprobe_config_s {
        /** statistics.interval.ms to set when the app left it at 0.
         *  Default 1000. The app's own non-zero value is never changed. */
        int stats_interval_ms;
        /** Watchdog thread period. Default 100. 0: no thread; the app
         *  calls lagprobe_tick() from its own timer instead. */
        int watchdog_interval_ms;
        /** Share of max.poll.interval.ms elapsed since the last poll at
         *  which headroom_warn fires. Default 0.70. */
        double warn_ratio;
        /** Same for headroom_critical. Default 0.90. */
        double critical_ratio;
        /** Minimum time between two deliveries of headroom_warn,
         *  headroom_recovered, commit_failed or stats_error (each counted
         *  anyway). Other events are not rate-limited: headroom_critical
         *  and evicted always get through; config_advice and rebalance
         *  fire only on change; diagnosis only when the verdict shown (see
         *  dwell_ms) or the partition it names changes; partition_status
         *  at most once per partition per window_ms (the latest status
         *  once that has passed; stalled, stopped and rewound at once),
         *  as one summary event when more than 4 partitions turn to one
         *  status at once. Default 10000. */
        int event_min_interval_ms;
        /** Event sink; NULL (default) writes one logfmt line per event to
         *  stderr. */
        lagprobe_log_cb_t *log_cb;
        /** Passed to log_cb unchanged. Default NULL. */
        void *log_opaque;
        /** Lowest severity handed to log_cb (syslog level; events with a
         *  numerically higher level are only counted). Default 6 (info). */
        int log_level;
        /** lagprobe_health() says unhealthy when the consumer has had no
         *  assignment for longer than this. Default 60000. 0: never. */
        int unassigned_unhealthy_ms;

        /* Lag diagnosis (partition status and consumer verdict). */
        /** Sliding window for partition status and rates; also the span of
         *  the "recent" histograms (six sub-windows). Default 60000. */
        int window_ms;
        /** Lag (messages) a partition may have before it can be lagging or
         *  stalled. Default 100. */
        int64_t lag_allowance;
        /** rebalance_storm: more than this many assignments, or more than
         *  one eviction, within storm_window_ms. Default 3. */
        int storm_rebalances;
        /** Default 300000. */
        int storm_window_ms;
        /** hot_partition: one partition carries at least this share of the
         *  consumer's ingress or lag (and at least twice its fair share).
         *  Default 0.5. */
        double hot_share;
        /** consumer_slow: recent per-message (or batch) time at least this
         *  many times the earlier part of the window. Default 1.5. */
        double slow_ratio;
        /** producer_burst: ingress above egress by this factor while lag
         *  exceeds lag_allowance. Default 1.1. */
        double burst_ratio;
        /** The statistics' high watermark only moves with fetch responses,
         *  so it freezes while a partition is paused. When it has not moved
         *  for this long, the probe asks the partition's leader for the log
         *  end offset (each partition at most once per this interval) and
         *  marks the figure stale if the broker's is newer. The query runs
         *  on a refresher thread of its own, started when first needed,
         *  never on the watchdog; it is bounded on every librdkafka version
         *  and skipped while the leader is down (README, "Broker
         *  outages"). 0: never ask. Default 5000. Only with the watchdog
         *  thread (not in lagprobe_tick() mode). */
        int hwm_refresh_ms;
        /** Hysteresis: a new partition status or verdict replaces the one
         *  shown (snapshot, metrics, events) only once it has held this
         *  long, so a figure hovering at a threshold does not flap. Not
         *  for what must be immediate: statuses stalled, stopped and
         *  rewound, verdicts rebalance_storm, stuck_partition and
         *  consumer_slow for a consumer that stopped polling, and the
         *  first status or verdict. -1 (default): window_ms / 10.
         *  0: none. */
        int dwell_ms;
} lagprobe_config_t;

/** Partition status over the sliding window (see README.md for rules). */
typedef enum lagprobe_pstatus_e {
        LAGPROBE_PSTATUS_UNKNOWN = 0,  /* "unknown": window not covered yet */
        LAGPROBE_PSTATUS_OK,           /* "ok" */
        LAGPROBE_PSTATUS_IDLE,         /* "idle": caught up, nothing new */
        LAGPROBE_PSTATUS_LAGGING,      /* "lagging" */
        LAGPROBE_PSTATUS_STALLED,      /* "stalled" */
        LAGPROBE_PSTATUS_STOPPED,      /* "stopped" */
        LAGPROBE_PSTATUS_REWOUND,      /* "rewound" */
        LAGPROBE_PSTATUS_MARKERS,      /* "caught_up_with_markers" */
        LAGPROBE_PSTATUS_PAUSED,       /* "paused": not fetched (paused by
                                        * the app or its queue is full)
                                        * while the log grows */
        LAGPROBE_PSTATUS__CNT
} lagprobe_pstatus_t;

/** Consumer-level verdict. */
typedef enum lagprobe_diagnosis_e {
        LAGPROBE_DIAG_UNKNOWN = 0,      /* "unknown": not enough data yet */
        LAGPROBE_DIAG_HEALTHY,          /* "healthy" */
        LAGPROBE_DIAG_PRODUCER_BURST,   /* "producer_burst" */
        LAGPROBE_DIAG_CONSUMER_SLOW,    /* "consumer_slow" */
        LAGPROBE_DIAG_REBALANCE_STORM,  /* "rebalance_storm" */
        LAGPROBE_DIAG_STUCK_PARTITION,  /* "stuck_partition" */
        LAGPROBE_DIAG_HOT_PARTITION,    /* "hot_partition" */
        LAGPROBE_DIAG_PARTITION_PAUSED, /* "partition_paused": most of the
                                         * lag is on partitions not fetched */
        LAGPROBE_DIAG__CNT
} lagprobe_diagnosis_t;

/** Health verdict, see lagprobe_health(). */
typedef enum lagprobe_health_e {
        LAGPROBE_HEALTH_OK = 0,        /* HTTP 200 */
        LAGPROBE_HEALTH_DEGRADED = 1,  /* HTTP 200: a warning, still working */
        LAGPROBE_HEALTH_UNHEALTHY = 2  /* HTTP 503 */
} lagprobe_health_t;

/** Reasons behind a verdict, as bits of lagprobe_snapshot_t.health_reasons.
 *  Names (lagprobe_reason_name()) are stable and used in JSON. */
typedef enum lagprobe_reason_e {
        LAGPROBE_REASON_HEADROOM_CRITICAL = 1 << 0, /* "headroom_critical" */
        LAGPROBE_REASON_EVICTED = 1 << 1,           /* "evicted": not rejoined */
        LAGPROBE_REASON_NO_ASSIGNMENT = 1 << 2,     /* "no_assignment" */
        LAGPROBE_REASON_NOT_RUNNING = 1 << 3,       /* "consumer_not_running" */
        LAGPROBE_REASON_HEADROOM_WARN = 1 << 4,     /* "headroom_warn" */
        LAGPROBE_REASON_PREDICTED_EXCEED = 1 << 5,  /* "predicted_exceed" */
        LAGPROBE_REASON_COMMIT_FAILING = 1 << 6,    /* "commit_failing" */
        LAGPROBE_REASON_NO_STATISTICS = 1 << 7,     /* "no_statistics": no
                                                     * statistics document
                                                     * for 3 intervals */
        LAGPROBE_REASON_BROKERS_DOWN = 1 << 8,      /* "brokers_down": the
                                                     * brokers it needs are
                                                     * unreachable */
        LAGPROBE_REASON_NO_REBALANCES = 1 << 9,     /* "no_rebalances":
                                                     * librdkafka delivers
                                                     * rebalances that never
                                                     * reach the probe */
        LAGPROBE_REASON__CNT = 10
} lagprobe_reason_t;

/** Figures for one assigned partition. -1 means unknown (null in JSON). */
typedef struct lagprobe_partition_s {
        const char *topic;           /* owned by the probe; valid until
                                      * lagprobe_destroy() */
        int32_t partition;
        int64_t high_watermark;      /* log end offset (statistics) */
        int64_t low_watermark;       /* log start offset (statistics) */
        int64_t last_stable_offset;  /* (statistics) */
        int64_t position;            /* next offset the app will see */
        int64_t committed_offset;    /* last committed offset of the group */
        int64_t lag;                 /* high_watermark - committed_offset,
                                      * -1 before the first commit */
        int64_t position_lag;        /* high_watermark - position */
        int64_t consumed;            /* messages consumed since assigned */
        int64_t last_message_ts_ms;  /* timestamp of the last consumed
                                      * message, ms since the epoch */
        double seconds_behind;       /* now - last_message_ts when behind,
                                      * 0 when caught up, -1 unknown */
        int64_t fetchq_cnt;          /* messages in the prefetch queue */
        int64_t fetchq_size;         /* bytes in the prefetch queue */
        int64_t last_progress_ms_ago; /* since position or commit advanced */
        int64_t hwm_age_ms;          /* age of high_watermark figure */
        int stale;                   /* 1 when high_watermark may be old:
                                      * fetching stopped or queue full */
        int64_t commit_errors;       /* failed commits of this partition */
        int last_commit_err;         /* rd_kafka_resp_err_t of the last
                                      * commit of this partition */
        int64_t consumed_total;      /* messages consumed from it since the
                                      * probe started (never reset) */

        /* Diagnosis over config.window_ms. */
        lagprobe_pstatus_t status;
        const char *status_name;     /* static string */
        char status_reason[160];     /* the numbers behind the status */
        int64_t effective_lag;       /* lag, or 0 for caught_up_with_markers */
        double ingress_rate;         /* msg/s appended (high watermark) */
        double egress_rate;          /* msg/s consumed (incl. redeliveries) */
        double commit_rate;          /* msg/s committed */
        double eta_seconds;          /* to catch up; -1 not catching up */
} lagprobe_partition_t;

/** Summary of one latency histogram. Values in milliseconds. */
typedef struct lagprobe_hist_summary_s {
        uint64_t count;
        double sum_ms;
        double p50_ms, p90_ms, p99_ms, max_ms;
} lagprobe_hist_summary_t;

/** A point-in-time copy of everything the probe knows. Plain data owned by
 *  the caller. Initialise with lagprobe_snapshot_init(). */
typedef struct lagprobe_snapshot_s {
        size_t struct_size;          /* set by lagprobe_snapshot_init() */

        /* In: the caller's partition array. Out: partition_cnt is the number
         * of assigned partitions; at most partitions_size entries are
         * filled, sorted by topic then partition (strcmp order; with a
         * short array, the first ones in that order). The JSON and
         * Prometheus outputs list partitions in the same order. */
        lagprobe_partition_t *partitions;
        size_t partitions_size;
        size_t partition_cnt;

        int64_t ts_ms;               /* wall clock of the snapshot */
        int bound;                   /* 1 while attached to a live consumer */
        const char *group_id;        /* owned by the probe, "" unknown */
        const char *client_id;
        const char *name;            /* rd_kafka_name() of the consumer */

        /* Rebalances. */
        int64_t assigns;             /* ASSIGN_PARTITIONS callbacks; under
                                      * incremental protocols only those
                                      * that add partitions */
        int64_t revokes;             /* REVOKE_PARTITIONS callbacks; under
                                      * incremental protocols only those
                                      * that remove partitions */
        int64_t lost;                /* revokes that were lost assignments */
        int64_t rebalances;          /* assigns + revokes */
        int64_t last_rebalance_ms_ago; /* -1 never */
        int64_t unassigned_ms;       /* current stretch without assignment
                                      * (0 while assigned) */
        int64_t last_unassigned_ms;  /* last revoke-to-assign gap, -1 none */
        const char *protocol;        /* "EAGER", "COOPERATIVE" (also every
                                      * group.protocol=consumer group) or
                                      * "NONE" before the first rebalance */
        int64_t assignment_size;
        int last_rebalance_err;      /* rd_kafka_resp_err_t, 0 none */
        int64_t cgrp_rebalance_cnt;  /* librdkafka's own count (statistics) */
        char cgrp_state[32];         /* cgrp.state from statistics */

        /* Poll interval and headroom. */
        int64_t max_poll_interval_ms;
        int64_t session_timeout_ms;  /* -1 (null) under group.protocol=
                                      * consumer: the broker's setting */
        int64_t heartbeat_interval_ms; /* -1 likewise */
        int64_t since_last_poll_ms;  /* -1 before the first poll */
        int64_t headroom_ms;         /* max_poll_interval_ms - since_last_poll */
        int exact;                   /* 1 when figures come from batch hooks,
                                      * 0 when inferred from callbacks */
        int in_batch;
        int64_t batch_size, batch_done, batch_elapsed_ms;
        int64_t evictions;
        int headroom_level;          /* 0 ok, 1 warn, 2 critical */

        /* Processing time, cumulative and recent (last ~60 s). */
        lagprobe_hist_summary_t batch, batch_recent;
        lagprobe_hist_summary_t message, message_recent;
        lagprobe_hist_summary_t poll_gap, poll_gap_recent;

        /* Statistics parsing. */
        int64_t stats_docs;          /* documents parsed */
        int64_t stats_errors;        /* documents rejected as malformed */
        int64_t stats_field_errors;  /* fields of the wrong type or range */
        int64_t stats_last_ms_ago;   /* -1 none yet */

        /* Commits. */
        int64_t commits;             /* on_commit calls */
        int64_t commit_errors;       /* on_commit calls with an error */
        int last_commit_err;

        int64_t consumed;            /* messages seen by on_consume */
        int64_t events[LAGPROBE_EVENT__CNT]; /* events emitted per type */

        /* Health verdict, as lagprobe_health() gives it. */
        lagprobe_health_t health;
        unsigned health_reasons;     /* lagprobe_reason_t bits */

        /* Consumer-level lag diagnosis. */
        lagprobe_diagnosis_t diagnosis;
        const char *diagnosis_name;  /* static string */
        char diagnosis_detail[256];  /* the evidence, human-readable */
        const char *diagnosis_topic; /* named partition, NULL if none */
        int32_t diagnosis_partition; /* -1 if none */
        double diagnosis_share;      /* hot_partition: its share, else 0 */
        double ingress_rate;         /* msg/s over assigned partitions that
                                      * are fetched (not paused) */
        double egress_rate;
        int64_t total_lag;           /* sum of known effective lags */

        /* Batch hook calls out of order or from two threads at once. */
        int64_t hook_errors;

        /* Brokers the consumer needs (leaders of its assigned partitions,
         * its group coordinator) whose connection has been down for at
         * least a second in the latest statistics: health reason
         * brokers_down. Their broker ids, at most 8 named. */
        int brokers_down_cnt;
        int32_t brokers_down[8];

        /* Log end offset queries for frozen high watermarks (see
         * hwm_refresh_ms): sent, and failed or timed out. */
        int64_t hwm_queries, hwm_query_failures;

        /* Where the processing-time figures come from: "hooks" (batch
         * hooks), "inferred" (time between deliveries on the consuming
         * thread, zero-code mode) or "none" (nothing measured). Static
         * strings. */
        const char *batch_source, *message_source, *poll_gap_source;
        /* Evidence behind the verdict: the slow-moving baselines of the
         * rates above (msg/s, -1 not yet known), and the recent median of
         * per-message (or, with batch hooks only, batch) time with its
         * baseline in ms (-1 not measured); time_source names the
         * histogram ("message", "batch", "none") and time_inferred is 1
         * when that figure is inferred. */
        double ingress_baseline, egress_baseline;
        double time_recent_ms, time_baseline_ms;
        const char *time_source;
        int time_inferred;
} lagprobe_snapshot_t;

/* ------------------------------------------------------------------------
 * Lifecycle
 * ---------------------------------------------------------------------- */

/** Version of probe.c as a string, e.g. "0.1.0". Any thread. */
LAGPROBE_API const char *lagprobe_version_str(void);

/** Fill @p config with defaults (documented on each field). Any thread. */
LAGPROBE_API void lagprobe_config_init(lagprobe_config_t *config);

/** Create a probe. @p config is copied (NULL: defaults). Returns NULL and
 *  writes @p errstr on a bad config or out of memory. Any thread. The
 *  caller owns the probe and frees it with lagprobe_destroy(). */
LAGPROBE_API lagprobe_t *lagprobe_new(const lagprobe_config_t *config,
                                      char *errstr, size_t errstr_size);

/** Attach the probe to a consumer configuration before rd_kafka_new().
 *  Registers interceptors (on_new, on_consume, on_commit, on_destroy,
 *  on_conf_dup, on_conf_destroy) and wraps stats_cb, rebalance_cb and
 *  log_cb (and error_cb when the app set one), chaining to the app's
 *  callbacks with the app's own opaque. Callbacks and opaque the app (or a
 *  wrapper such as rdkafkacpp's KafkaConsumer::create()) sets after attach,
 *  on @p conf or on a copy of it, are taken over inside rd_kafka_new() (the
 *  on_new interceptor): attach first or last, the result is the same. Sets
 *  statistics.interval.ms when it is 0. The conf stays owned by the caller;
 *  copies made with rd_kafka_conf_dup() carry the probe too.
 *  Returns 0, or -1 with @p errstr on: NULL arguments, a conf without
 *  group.id or with a delivery report callback (a producer), a probe that
 *  is already attached, a conf that already carries a probe, or all
 *  LAGPROBE_MAX_PROBES slots in use. A conf consumed by rd_kafka_new() no
 *  longer belongs to the caller: passing it here is undefined, as for every
 *  librdkafka call. Any thread, but not concurrently with other use of
 *  @p conf. */
LAGPROBE_API int lagprobe_attach(lagprobe_t *probe, rd_kafka_conf_t *conf,
                                 char *errstr, size_t errstr_size);

/** Destroy the probe. NULL is a no-op. Stops the watchdog thread; after it
 *  returns no callback reaches config.log_cb. Safe before or after
 *  rd_kafka_destroy(): if the consumer (or a conf carrying the probe) is
 *  still alive, the probe goes quiet and its memory is released when the
 *  last of them is destroyed; the app's callbacks keep being chained.
 *  Any thread, once; not concurrently with other calls on @p probe. */
LAGPROBE_API void lagprobe_destroy(lagprobe_t *probe);

/* ------------------------------------------------------------------------
 * Explicit hooks (optional, for exact headroom and processing times).
 * Each costs a clock read and a few relaxed atomic stores; no lock, no
 * allocation. NULL probe is a no-op.
 * ---------------------------------------------------------------------- */

/** Call right after a poll returned, when the app starts processing the
 *  @p n_messages it returned (1 for rd_kafka_consumer_poll()). Marks the
 *  poll return time exactly. The thread that polls the consumer. */
LAGPROBE_API void lagprobe_batch_begin(lagprobe_t *probe, size_t n_messages);

/** Call when @p n_done messages of the current batch are finished (a
 *  running total, not an increment). Feeds per-message processing time and
 *  the predicted_exceed check. The thread that polls the consumer. */
LAGPROBE_API void lagprobe_batch_progress(lagprobe_t *probe, size_t n_done);

/** Call when the app has finished processing the batch and is about to
 *  poll again. Without a matching lagprobe_batch_begin() it is counted as
 *  a hook error (snapshot hook_errors) and ignored. The thread that polls
 *  the consumer; a hook called while another thread is inside one is
 *  likewise counted and ignored. */
LAGPROBE_API void lagprobe_batch_end(lagprobe_t *probe);

/** Optionally hand each poll's result to the probe so that a returned
 *  RD_KAFKA_RESP_ERR__MAX_POLL_EXCEEDED is counted as an eviction even
 *  when librdkafka's log is filtered. @p msg may be NULL (empty poll).
 *  The thread that polls the consumer. */
LAGPROBE_API void lagprobe_poll_result(lagprobe_t *probe,
                                       const rd_kafka_message_t *msg);

/** Run the watchdog check once: headroom events, predictions, advice.
 *  For config.watchdog_interval_ms == 0; harmless otherwise. Returns the
 *  number of events emitted, -1 on NULL. Any thread, not concurrently
 *  with itself. */
LAGPROBE_API int lagprobe_tick(lagprobe_t *probe);

/* ------------------------------------------------------------------------
 * Snapshot and output. Readers: lock-free, never block the consumer.
 * ---------------------------------------------------------------------- */

/** Prepare @p snap for lagprobe_snapshot(): zeroes it, sets struct_size
 *  and the caller's partition array (may be NULL with @p parts_size 0).
 *  Any thread. */
LAGPROBE_API void lagprobe_snapshot_init(lagprobe_snapshot_t *snap,
                                         lagprobe_partition_t *parts,
                                         size_t parts_size);

/** Fill @p snap (prepared with lagprobe_snapshot_init()) with the current
 *  figures. Each partition's figures are consistent with each other.
 *  Returns 0, or -1 when @p probe or @p snap is NULL or snap was not
 *  initialised. Any thread. */
LAGPROBE_API int lagprobe_snapshot(lagprobe_t *probe, lagprobe_snapshot_t *snap);

/** Render the snapshot as one JSON document into @p buf (schema in
 *  README.md). Returns the length the full document needs, excluding the
 *  NUL, like snprintf(); writes at most @p size bytes, NUL-terminated when
 *  @p size > 0. @p buf may be NULL when @p size is 0. Returns 0 and writes
 *  nothing useful for a NULL probe ("" when size > 0). Any thread. */
LAGPROBE_API size_t lagprobe_snapshot_json(lagprobe_t *probe, char *buf,
                                           size_t size);

/** Render Prometheus text exposition format 0.0.4 into @p buf: the
 *  kafka_exporter-compatible kafka_consumergroup_lag and
 *  kafka_consumergroup_current_offset{consumergroup,topic,partition}, and
 *  lagprobe_* families with a client_id label (table in README.md). Same
 *  size contract as lagprobe_snapshot_json(). Reads each partition once
 *  into a temporary array allocated on the calling thread (about 170
 *  bytes per assigned partition); 0 (and "" in @p buf) when that
 *  allocation fails. Any thread. */
LAGPROBE_API size_t lagprobe_metrics_prometheus(lagprobe_t *probe, char *buf,
                                                size_t size);

/** Health verdict. Unhealthy: headroom critical, evicted and not rejoined,
 *  no assignment for longer than config.unassigned_unhealthy_ms, or no
 *  live consumer. Degraded: headroom in the warning band, the current
 *  batch predicted to exceed the limit, a commit failed within the last
 *  minute, or a broker the consumer needs (leader of an assigned
 *  partition, group coordinator) unreachable for a second or more in the
 *  latest statistics (brokers_down). Writes the reasons' names, comma-separated, into @p reasons
 *  (may be NULL). Returns the verdict, or -1 for a NULL probe. Map to HTTP
 *  with lagprobe_health_http_status(). Any thread. */
LAGPROBE_API int lagprobe_health(lagprobe_t *probe, char *reasons,
                                 size_t reasons_size);

/** 200 for OK and DEGRADED, 503 for UNHEALTHY (and anything else). */
LAGPROBE_API int lagprobe_health_http_status(int health);

/** "ok", "degraded" or "unhealthy"; "unknown" otherwise. Any thread. */
LAGPROBE_API const char *lagprobe_health_name(int health);

/** Name of one reason bit ("headroom_critical", ...), or "unknown". */
LAGPROBE_API const char *lagprobe_reason_name(unsigned reason);

/** "ok", "idle", "lagging", ...; "unknown" otherwise. Any thread. */
LAGPROBE_API const char *lagprobe_pstatus_name(int status);

/** "healthy", "producer_burst", ...; "unknown" otherwise. Any thread. */
LAGPROBE_API const char *lagprobe_diagnosis_name(int diagnosis);

/** Name of an event type ("headroom_warn", ...), or "unknown". Any
 *  thread. */
LAGPROBE_API const char *lagprobe_event_name(lagprobe_event_type_t type);

#ifdef __cplusplus
}
#endif
#endif /* LAGPROBE_H */

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

/* Each member and enum value is documented by the doc block right above
 * it (one block may cover members that belong together, declared right
 * after it); a plain comment on a line of its own heads a group of
 * members. */

/** Event types. The names are stable: they appear in logs, JSON and
 *  metrics (lagprobe_event_name()). README.md "Events" gives each one's
 *  severity and rate limit. */
typedef enum lagprobe_event_type_e {
        /** "headroom_warn": the time since the last poll passed warn_ratio
         *  of max.poll.interval.ms. */
        LAGPROBE_EVENT_HEADROOM_WARN = 0,
        /** "headroom_critical": it passed critical_ratio. */
        LAGPROBE_EVENT_HEADROOM_CRITICAL,
        /** "headroom_recovered": the app polled again after a warning. */
        LAGPROBE_EVENT_HEADROOM_RECOVERED,
        /** "predicted_exceed": inside a batch (batch hooks), the elapsed
         *  time plus the remaining messages at the per-message time goes
         *  past the limit, which is still ahead. */
        LAGPROBE_EVENT_PREDICTED_EXCEED,
        /** "evicted": librdkafka evicted the consumer for exceeding
         *  max.poll.interval.ms (its MAXPOLL log, or
         *  lagprobe_poll_result()); once per eviction. */
        LAGPROBE_EVENT_EVICTED,
        /** "config_advice": the recent batch p99 is above warn_ratio of
         *  max.poll.interval.ms, or heartbeat.interval.ms is more than a
         *  third of session.timeout.ms; the message names the setting. */
        LAGPROBE_EVENT_CONFIG_ADVICE,
        /** "rebalance": the assignment changed. */
        LAGPROBE_EVENT_REBALANCE,
        /** "commit_failed": an offset commit failed. */
        LAGPROBE_EVENT_COMMIT_FAILED,
        /** "stats_error": a malformed statistics document was rejected. */
        LAGPROBE_EVENT_STATS_ERROR,
        /** "partition_status": a partition's status changed (state: the new
         *  status), or a summary when more than 4 partitions turn to one
         *  status at once. */
        LAGPROBE_EVENT_PARTITION_STATUS,
        /** "diagnosis": the consumer verdict, or the partition it names,
         *  changed (state: the verdict). */
        LAGPROBE_EVENT_DIAGNOSIS,
        /** "no_statistics": the probe has an assignment and receives no
         *  statistics (cause in message). */
        LAGPROBE_EVENT_NO_STATISTICS,
        /** "no_rebalances": librdkafka delivered rebalances the probe never
         *  saw (event API). */
        LAGPROBE_EVENT_NO_REBALANCES,
        LAGPROBE_EVENT__CNT
} lagprobe_event_type_t;

/** One event, handed to lagprobe_config_t.log_cb. Every pointer is owned by
 *  the probe and valid only during the callback: copy what you keep. */
typedef struct lagprobe_event_s {
        /** What happened. */
        lagprobe_event_type_t type;
        /** Stable name, e.g. "headroom_warn". */
        const char *name;
        /** Syslog level: 2 crit, 3 err, 4 warning, 5 notice, 6 info. */
        int severity;
        /** Ready human message, NUL-terminated. */
        const char *message;
        /** Wall clock, ms since the epoch. */
        int64_t ts_ms;
        /** "" when unknown. */
        const char *group_id;
        /** "" when unknown. */
        const char *client_id;

        /* The numbers behind the event; -1 where not relevant. */
        /** Time since the last poll return. */
        int64_t since_poll_ms;
        /** The max.poll.interval.ms in force. */
        int64_t max_poll_interval_ms;
        /** max_poll_interval_ms minus since_poll_ms. */
        int64_t headroom_ms;
        /** Messages in the current batch. */
        int64_t batch_size;
        /** Messages of it finished. */
        int64_t batch_done;
        /** predicted_exceed: the predicted batch total. */
        int64_t predicted_ms;
        /** E.g. evictions so far, partitions in a summary. */
        int64_t count;
        /** NULL when not about one partition (a summary of partitions of
         *  one topic names it, partition -1). */
        const char *topic;
        /** -1 when not about one partition. */
        int32_t partition;
        /** partition_status: the status name; diagnosis: the verdict name;
         *  NULL otherwise. */
        const char *state;
        /** partition_status: the partition's effective lag; diagnosis: the
         *  total lag; -1 unknown or n/a. */
        int64_t lag;
} lagprobe_event_t;

/** Event sink. Called from the probe's watchdog thread, or from the thread
 *  calling lagprobe_tick() when the watchdog is off, and once more from the
 *  thread calling lagprobe_destroy() for what happened since the
 *  watchdog's last pass; never from a librdkafka thread and never
 *  concurrently with itself for one probe.
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
        /** Span over which rebalance_storm counts assignments and
         *  evictions; older ones stop counting. Default 300000. */
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
         *  consumer_slow for a consumer that stopped polling or was
         *  evicted, and the
         *  first status or verdict. -1 (default): window_ms / 10.
         *  0: none. */
        int dwell_ms;
} lagprobe_config_t;

/** Partition status over the sliding window (config.window_ms), from the
 *  newest and oldest samples in it; "lag" is the partition's effective_lag.
 *  Name: lagprobe_pstatus_name(). README.md "Partition status" has the
 *  rules in the order they are tried. */
typedef enum lagprobe_pstatus_e {
        /** "unknown": the samples do not yet span half a window. */
        LAGPROBE_PSTATUS_UNKNOWN = 0,
        /** "ok": none of the other statuses applies. */
        LAGPROBE_PSTATUS_OK,
        /** "idle": caught up, nothing new: no new messages across the
         *  window and the position at the high watermark; never an
         *  alarm. */
        LAGPROBE_PSTATUS_IDLE,
        /** "lagging": moving but not catching up: the lowest lag of the
         *  newer half of the window is above lag_allowance and not below
         *  the lowest of the older half. */
        LAGPROBE_PSTATUS_LAGGING,
        /** "stalled": nothing moves: lag above lag_allowance while neither
         *  the committed offset nor the position moved across the window
         *  (status_reason counts messages re-consumed meanwhile, as a
         *  poison message retried forever is). */
        LAGPROBE_PSTATUS_STALLED,
        /** "stopped": consumed but not committed: lag above 0 and no
         *  commit across the window while the position advanced and
         *  messages were consumed. */
        LAGPROBE_PSTATUS_STOPPED,
        /** "rewound": the position or committed offset moved backwards;
         *  stays for one window. */
        LAGPROBE_PSTATUS_REWOUND,
        /** "caught_up_with_markers": the committed offset and the position
         *  1 or 2 behind an unchanged high watermark with nothing left to
         *  fetch: transaction markers or compaction, not lag
         *  (effective_lag 0, no alarm). */
        LAGPROBE_PSTATUS_MARKERS,
        /** "paused": not fetched (paused by the app or its queue is full)
         *  while the log grows: the broker's high watermark is ahead of
         *  the statistics' frozen one, nothing is queued and the position
         *  stands still. Needs hwm_refresh_ms > 0. */
        LAGPROBE_PSTATUS_PAUSED,
        LAGPROBE_PSTATUS__CNT
} lagprobe_pstatus_t;

/** Consumer-level verdict: what the lag, if any, comes from. Name:
 *  lagprobe_diagnosis_name(). README.md "Consumer verdict" has the rules
 *  in the order they are tried. */
typedef enum lagprobe_diagnosis_e {
        /** "unknown": nothing assigned, or no partition has a status
         *  yet. */
        LAGPROBE_DIAG_UNKNOWN = 0,
        /** "healthy": none of the verdicts below; the detail says whether
         *  a backlog is "catching up" or "not shrinking". */
        LAGPROBE_DIAG_HEALTHY,
        /** "producer_burst": the consumer is fine, producers sped up: lag
         *  above lag_allowance, ingress above burst_ratio times egress and
         *  above burst_ratio times its own baseline. */
        LAGPROBE_DIAG_PRODUCER_BURST,
        /** "consumer_slow": the consumer is the bottleneck: it polls late
         *  (headroom warning band), every partition is stalled with
         *  nothing re-consumed, it was evicted and has not yet held an
         *  assignment again for max(window_ms, max.poll.interval.ms),
         *  its per-message or batch time rose to
         *  slow_ratio times its baseline, or lag is above lag_allowance
         *  with ingress above burst_ratio times egress although ingress
         *  did not rise above its baseline. */
        LAGPROBE_DIAG_CONSUMER_SLOW,
        /** "rebalance_storm": more than storm_rebalances membership
         *  changes, or more than one eviction, within storm_window_ms. */
        LAGPROBE_DIAG_REBALANCE_STORM,
        /** "stuck_partition": a partition is stalled while it is
         *  re-consumed (a poison message retried) or other partitions
         *  still move; names the one with the largest lag. */
        LAGPROBE_DIAG_STUCK_PARTITION,
        /** "hot_partition": one of two or more partitions carries at least
         *  hot_share, and twice its fair share, of the ingress or of the
         *  lag; names it and its share. */
        LAGPROBE_DIAG_HOT_PARTITION,
        /** "partition_paused": most of the lag is on partitions not
         *  fetched: partitions with status paused carry more than
         *  lag_allowance and at least half of total_lag; names the one
         *  with the largest lag. */
        LAGPROBE_DIAG_PARTITION_PAUSED,
        LAGPROBE_DIAG__CNT
} lagprobe_diagnosis_t;

/** Health verdict, see lagprobe_health(); decided by the reasons
 *  (lagprobe_reason_t) that hold. Name: lagprobe_health_name(). */
typedef enum lagprobe_health_e {
        /** lagprobe_health() on a NULL probe: no verdict. Name "unknown",
         *  HTTP 503. */
        LAGPROBE_HEALTH_INVALID = -1,
        /** "ok": no reason holds. HTTP 200. */
        LAGPROBE_HEALTH_OK = 0,
        /** "degraded": only warning reasons hold: a warning, still
         *  working. HTTP 200. */
        LAGPROBE_HEALTH_DEGRADED = 1,
        /** "unhealthy": headroom_critical, evicted, no_assignment or
         *  consumer_not_running holds. HTTP 503. */
        LAGPROBE_HEALTH_UNHEALTHY = 2
} lagprobe_health_t;

/** Reasons behind a verdict, as bits of lagprobe_snapshot_t.health_reasons.
 *  Names (lagprobe_reason_name()) are stable and used in JSON. The first
 *  four make the verdict unhealthy, the others degraded. */
typedef enum lagprobe_reason_e {
        /** "headroom_critical": the time since the last poll passed
         *  critical_ratio of max.poll.interval.ms. */
        LAGPROBE_REASON_HEADROOM_CRITICAL = 1 << 0,
        /** "evicted": evicted and not rejoined since. */
        LAGPROBE_REASON_EVICTED = 1 << 1,
        /** "no_assignment": no assignment for longer than
         *  unassigned_unhealthy_ms. */
        LAGPROBE_REASON_NO_ASSIGNMENT = 1 << 2,
        /** "consumer_not_running": no live consumer (never attached, or
         *  destroyed). */
        LAGPROBE_REASON_NOT_RUNNING = 1 << 3,
        /** "headroom_warn": the time since the last poll passed
         *  warn_ratio of max.poll.interval.ms, not yet critical_ratio. */
        LAGPROBE_REASON_HEADROOM_WARN = 1 << 4,
        /** "predicted_exceed": the current batch is predicted to exceed
         *  the limit (batch hooks). */
        LAGPROBE_REASON_PREDICTED_EXCEED = 1 << 5,
        /** "commit_failing": a commit failed within the last minute. */
        LAGPROBE_REASON_COMMIT_FAILING = 1 << 6,
        /** "no_statistics": assigned, the app polls, and no statistics
         *  reach the probe (statistics.interval.ms 0, or none for 3
         *  intervals, and 10 s once some had arrived): lag cannot be
         *  seen. */
        LAGPROBE_REASON_NO_STATISTICS = 1 << 7,
        /** "brokers_down": a broker the consumer needs (leader of an
         *  assigned partition, group coordinator) unreachable for a second
         *  or more in the latest statistics. */
        LAGPROBE_REASON_BROKERS_DOWN = 1 << 8,
        /** "no_rebalances": librdkafka delivers rebalances that never
         *  reach the probe. */
        LAGPROBE_REASON_NO_REBALANCES = 1 << 9,
        LAGPROBE_REASON__CNT = 10
} lagprobe_reason_t;

/** Figures for one assigned partition. -1 means unknown (null in JSON). */
typedef struct lagprobe_partition_s {
        /** Owned by the probe; valid until lagprobe_destroy(). */
        const char *topic;
        int32_t partition;
        /** Log end offset (statistics, or the broker's when the statistics'
         *  figure is frozen: hwm_refresh_ms). */
        int64_t high_watermark;
        /** Log start offset (statistics). */
        int64_t low_watermark;
        /** End for read_committed readers (statistics). */
        int64_t last_stable_offset;
        /** Next offset the app will see. */
        int64_t position;
        /** Last committed offset of the group. */
        int64_t committed_offset;
        /** high_watermark - committed_offset, -1 before the first
         *  commit. */
        int64_t lag;
        /** high_watermark - position: messages not yet handed to the
         *  app. */
        int64_t position_lag;
        /** Messages consumed since assigned. */
        int64_t consumed;
        /** Timestamp of the last consumed message, ms since the epoch. */
        int64_t last_message_ts_ms;
        /** now - last_message_ts when behind, 0 when caught up, -1
         *  unknown. */
        double seconds_behind;
        /** Messages in the prefetch queue. */
        int64_t fetchq_cnt;
        /** Bytes in the prefetch queue. */
        int64_t fetchq_size;
        /** Since the position or the committed offset advanced. */
        int64_t last_progress_ms_ago;
        /** Age of the high_watermark figure. */
        int64_t hwm_age_ms;
        /** 1 when high_watermark may be old: fetching stopped or queue
         *  full. */
        int stale;
        /** Failed commits of this partition. */
        int64_t commit_errors;
        /** rd_kafka_resp_err_t of the last commit of this partition. */
        int last_commit_err;
        /** Messages consumed from it since the probe started (never
         *  reset). */
        int64_t consumed_total;

        /* Diagnosis over config.window_ms. */
        /** The status shown (after config.dwell_ms). */
        lagprobe_pstatus_t status;
        /** lagprobe_pstatus_name(status), a static string. */
        const char *status_name;
        /** The numbers behind the status. */
        char status_reason[160];
        /** The lag the status and alarms count: lag, position_lag before
         *  the first commit, 0 for caught_up_with_markers. */
        int64_t effective_lag;
        /** msg/s appended (high watermark growth). */
        double ingress_rate;
        /** msg/s consumed (re-deliveries included). */
        double egress_rate;
        /** msg/s committed. */
        double commit_rate;
        /** Seconds to catch up; -1 not catching up. */
        double eta_seconds;
} lagprobe_partition_t;

/** Summary of one latency histogram. Values in milliseconds. */
typedef struct lagprobe_hist_summary_s {
        /** Samples recorded. */
        uint64_t count;
        /** Their sum. */
        double sum_ms;
        /** Percentiles and the largest sample. */
        double p50_ms, p90_ms, p99_ms, max_ms;
} lagprobe_hist_summary_t;

/** A point-in-time copy of everything the probe knows. Plain data owned by
 *  the caller. Initialise with lagprobe_snapshot_init(). */
typedef struct lagprobe_snapshot_s {
        /** Set by lagprobe_snapshot_init(). */
        size_t struct_size;

        /** In: the caller's partition array. Out: partition_cnt is the
         *  number of assigned partitions; at most partitions_size entries
         *  are filled, sorted by topic then partition (strcmp order; with a
         *  short array, the first ones in that order). The JSON and
         *  Prometheus outputs list partitions in the same order. */
        lagprobe_partition_t *partitions;
        size_t partitions_size;
        size_t partition_cnt;

        /** Wall clock of the snapshot, ms since the epoch. */
        int64_t ts_ms;
        /** 1 while attached to a live consumer. */
        int bound;
        /** Owned by the probe, "" unknown. */
        const char *group_id;
        /** Owned by the probe, "" unknown. */
        const char *client_id;
        /** rd_kafka_name() of the consumer. */
        const char *name;

        /* Rebalances. */
        /** ASSIGN_PARTITIONS callbacks; under incremental protocols only
         *  those that add partitions. */
        int64_t assigns;
        /** REVOKE_PARTITIONS callbacks; under incremental protocols only
         *  those that remove partitions. */
        int64_t revokes;
        /** Revokes that were lost assignments. */
        int64_t lost;
        /** assigns + revokes. */
        int64_t rebalances;
        /** -1 never. */
        int64_t last_rebalance_ms_ago;
        /** Current stretch without assignment (0 while assigned). */
        int64_t unassigned_ms;
        /** Last revoke-to-assign gap, -1 none. */
        int64_t last_unassigned_ms;
        /** "EAGER", "COOPERATIVE" (also every group.protocol=consumer
         *  group) or "NONE" before the first rebalance. */
        const char *protocol;
        /** Partitions assigned now. */
        int64_t assignment_size;
        /** rd_kafka_resp_err_t of the last rebalance, 0 none. */
        int last_rebalance_err;
        /** librdkafka's own count (statistics). */
        int64_t cgrp_rebalance_cnt;
        /** cgrp.state from statistics. */
        char cgrp_state[32];

        /* Poll interval and headroom. */
        /** The max.poll.interval.ms in force. */
        int64_t max_poll_interval_ms;
        /** -1 (null) under group.protocol=consumer: the broker's
         *  setting. */
        int64_t session_timeout_ms;
        /** -1 likewise. */
        int64_t heartbeat_interval_ms;
        /** -1 before the first poll. */
        int64_t since_last_poll_ms;
        /** max_poll_interval_ms - since_last_poll_ms; negative once the
         *  limit is passed. */
        int64_t headroom_ms;
        /** 1 when figures come from batch hooks, 0 when inferred from
         *  callbacks. */
        int exact;
        /** 1 between lagprobe_batch_begin() and lagprobe_batch_end(). */
        int in_batch;
        /** The current batch (outside one, the last): its messages and
         *  those done; batch_elapsed_ms since it began, 0 outside one. */
        int64_t batch_size, batch_done, batch_elapsed_ms;
        /** Evictions seen (the evicted event). */
        int64_t evictions;
        /** 0 ok, 1 warn, 2 critical. */
        int headroom_level;

        /* Processing time, cumulative and recent (over config.window_ms):
         * batches, messages and the gap between poll returns. */
        lagprobe_hist_summary_t batch, batch_recent;
        lagprobe_hist_summary_t message, message_recent;
        lagprobe_hist_summary_t poll_gap, poll_gap_recent;

        /* Statistics parsing. */
        /** Documents parsed. */
        int64_t stats_docs;
        /** Documents rejected as malformed. */
        int64_t stats_errors;
        /** Fields of the wrong type or range. */
        int64_t stats_field_errors;
        /** -1 none yet. */
        int64_t stats_last_ms_ago;

        /* Commits. */
        /** on_commit calls. */
        int64_t commits;
        /** on_commit calls with an error. */
        int64_t commit_errors;
        /** rd_kafka_resp_err_t of the last commit, 0 none. */
        int last_commit_err;

        /** Messages seen by on_consume. */
        int64_t consumed;
        /** Events emitted per type, delivered or not. */
        int64_t events[LAGPROBE_EVENT__CNT];

        /** Health verdict, as lagprobe_health() gives it. */
        lagprobe_health_t health;
        /** lagprobe_reason_t bits. */
        unsigned health_reasons;

        /* Consumer-level lag diagnosis. */
        /** The verdict shown (after config.dwell_ms). */
        lagprobe_diagnosis_t diagnosis;
        /** lagprobe_diagnosis_name(diagnosis), a static string. */
        const char *diagnosis_name;
        /** The evidence, human-readable. */
        char diagnosis_detail[256];
        /** The partition the verdict names: its topic, NULL if none. */
        const char *diagnosis_topic;
        /** -1 if none. */
        int32_t diagnosis_partition;
        /** hot_partition: its share, else 0. */
        double diagnosis_share;
        /** msg/s over assigned partitions that are fetched (not
         *  paused). */
        double ingress_rate;
        /** msg/s consumed. */
        double egress_rate;
        /** Sum of known effective lags, as of the latest statistics
         *  document (what the verdict weighed): a partition's
         *  effective_lag in the same snapshot may be newer, by a high
         *  watermark refreshed since (hwm_refresh_ms). */
        int64_t total_lag;

        /** Batch hook calls out of order or from two threads at once. */
        int64_t hook_errors;

        /** Brokers the consumer needs (leaders of its assigned partitions,
         *  its group coordinator) whose connection has been down for at
         *  least a second in the latest statistics: health reason
         *  brokers_down. Their count, and their broker ids, at most 8
         *  named. */
        int brokers_down_cnt;
        int32_t brokers_down[8];

        /** Log end offset queries for frozen high watermarks (see
         *  hwm_refresh_ms): sent, and failed or timed out. */
        int64_t hwm_queries, hwm_query_failures;

        /** Where the processing-time figures come from: "hooks" (batch
         *  hooks), "inferred" (time between deliveries on the consuming
         *  thread, zero-code mode) or "none" (nothing measured). Static
         *  strings. */
        const char *batch_source, *message_source, *poll_gap_source;

        /* Evidence behind the verdict. */
        /** The slow-moving baselines of ingress_rate and egress_rate (msg/s,
         *  -1 not yet known). */
        double ingress_baseline, egress_baseline;
        /** The recent median of per-message (or, with batch hooks only,
         *  batch) time and its baseline, in ms (-1 not measured). */
        double time_recent_ms, time_baseline_ms;
        /** The histogram they come from: "message", "batch", "none". */
        const char *time_source;
        /** 1 when that figure is inferred. */
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

/** Health verdict, a lagprobe_health_t value, from the reasons that hold
 *  (lagprobe_reason_t, each documented there). Unhealthy: headroom
 *  critical, evicted and not rejoined, no assignment for longer than
 *  config.unassigned_unhealthy_ms, or no live consumer. Degraded: headroom
 *  in the warning band, the current batch predicted to exceed the limit,
 *  a commit failed within the last minute, no statistics reaching the
 *  probe, rebalances that never reach it, or a broker the consumer needs
 *  (leader of an assigned partition, group coordinator) unreachable for a
 *  second or more in the latest statistics (brokers_down). Writes the
 *  reasons' names, comma-separated, into @p reasons (may be NULL).
 *  Returns the verdict, or LAGPROBE_HEALTH_INVALID (-1) for a NULL
 *  probe. Map to HTTP with lagprobe_health_http_status(). Any thread. */
LAGPROBE_API lagprobe_health_t lagprobe_health(lagprobe_t *probe,
                                               char *reasons,
                                               size_t reasons_size);

/** 200 for LAGPROBE_HEALTH_OK and LAGPROBE_HEALTH_DEGRADED, 503 for
 *  LAGPROBE_HEALTH_UNHEALTHY and anything else (-1 included): takes
 *  lagprobe_health()'s result as it is. Any thread. */
LAGPROBE_API int lagprobe_health_http_status(int health);

/** Name of a lagprobe_health_t value, as lagprobe_health() returns it:
 *  "ok", "degraded" or "unhealthy"; "unknown" otherwise (-1 included).
 *  Any thread. */
LAGPROBE_API const char *lagprobe_health_name(int health);

/** Name of one lagprobe_reason_t bit ("headroom_critical", ...);
 *  "unknown" for 0, several bits or an unknown bit. Any thread. */
LAGPROBE_API const char *lagprobe_reason_name(unsigned reason);

/** Name of a lagprobe_pstatus_t value ("ok", "idle", "lagging", ...);
 *  "unknown" otherwise. Any thread. */
LAGPROBE_API const char *lagprobe_pstatus_name(lagprobe_pstatus_t status);

/** Name of a lagprobe_diagnosis_t value ("healthy", "producer_burst",
 *  ...); "unknown" otherwise. Any thread. */
LAGPROBE_API const char *
lagprobe_diagnosis_name(lagprobe_diagnosis_t diagnosis);

/** Name of a lagprobe_event_type_t value ("headroom_warn", ...);
 *  "unknown" otherwise. Any thread. */
LAGPROBE_API const char *lagprobe_event_name(lagprobe_event_type_t type);

#ifdef __cplusplus
}
#endif
#endif /* LAGPROBE_H */

/* lagprobe - in-process Kafka consumer lag probe for librdkafka consumers.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Map of this file, in the order data flows (grep "MARK: N." to jump):
 *   1. Utilities: clocks, errstr, atomics shorthands, names, saturating
 *      arithmetic, the bounded output buffer and integer formatting.
 *   2. State: the probe, partition slots and their evidence; the
 *      concurrency contract; seqlock helpers.
 *   3. Histograms: per-message, batch and poll-gap times.
 *   4. Partition index: slots by (topic, partition), the walk over the
 *      assigned ones (LP_FOR_ASSIGNED), slot reset, the assignment's
 *      size, the consuming thread's slot cache.
 *   5. Statistics scanner: one pass over librdkafka's statistics JSON.
 *   6. Applying statistics: a document's figures into the slots, brokers
 *      down; then the evaluation (7, 8).
 *   7. Partition status: where lag is computed (lp_lag, lp_eff_lag), the
 *      window, the status rules, the dwell, the status_reason texts.
 *   8. Consumer verdict and health: where the verdict is decided
 *      (lp_diagnose), its detail texts, the headroom level, the health
 *      reasons.
 *   9. Snapshot: consistent copies of a slot and of the probe
 *      (lagprobe_snapshot).
 *  10. librdkafka glue: statistics and rebalance callbacks, trampolines,
 *      interceptors (on_consume, on_commit, on_new), attach.
 *  11. Hooks and events: batch hooks, poll evidence, the event sink, the
 *      events of counters, statuses, verdicts, blindness, advice.
 *  12. Watermark refresher: the only probe thread that calls librdkafka,
 *      always with a bound.
 *  13. Watchdog: where the watchdog runs (lp_check, lagprobe_tick).
 *  14. Lifecycle: config, new, destroy.
 *  15. Number formatting and JSON: lagprobe_snapshot_json, health.
 *  16. Prometheus text exposition.
 */
#define _POSIX_C_SOURCE 200809L

#include "probe.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h> /* isfinite(), a macro: no libm needed */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* stb_ds has no static mode: its implementation defines global stbds_*
 * functions, which would clash with a host's own stb_ds. Renamed into our
 * namespace, every extern stb_ds declares (functions, and the counters of
 * STBDS_STATISTICS), so probe.o exports lagprobe_* symbols only. With
 * LAGPROBE_NO_STB_DS_IMPLEMENTATION the probe instead uses the host's
 * stbds_* implementation, under stb_ds's own names (one copy in the
 * program; it must be a compatible stb_ds version). */
#ifndef LAGPROBE_NO_STB_DS_IMPLEMENTATION
#define stbds_rand_seed lagprobe__stbds_rand_seed
#define stbds_hash_bytes lagprobe__stbds_hash_bytes
#define stbds_hash_string lagprobe__stbds_hash_string
#define stbds_stralloc lagprobe__stbds_stralloc
#define stbds_strreset lagprobe__stbds_strreset
#define stbds_unit_tests lagprobe__stbds_unit_tests
#define stbds_arrgrowf lagprobe__stbds_arrgrowf
#define stbds_arrfreef lagprobe__stbds_arrfreef
#define stbds_hmfree_func lagprobe__stbds_hmfree_func
#define stbds_hmget_key lagprobe__stbds_hmget_key
#define stbds_hmget_key_ts lagprobe__stbds_hmget_key_ts
#define stbds_hmput_default lagprobe__stbds_hmput_default
#define stbds_hmput_key lagprobe__stbds_hmput_key
#define stbds_hmdel_key lagprobe__stbds_hmdel_key
#define stbds_shmode_func lagprobe__stbds_shmode_func
#define stbds_array_grow lagprobe__stbds_array_grow
#define stbds_hash_grow lagprobe__stbds_hash_grow
#define stbds_hash_shrink lagprobe__stbds_hash_shrink
#define stbds_hash_rebuild lagprobe__stbds_hash_rebuild
#define stbds_hash_probes lagprobe__stbds_hash_probes
#define stbds_hash_alloc lagprobe__stbds_hash_alloc
#define stbds_rehash_probes lagprobe__stbds_rehash_probes
#define stbds_rehash_items lagprobe__stbds_rehash_items
#define STB_DS_IMPLEMENTATION
#endif
#include <stb/stb_ds.h>

#if LAGPROBE_MAX_PROBES > 64 || LAGPROBE_MAX_PROBES < 1
#error "LAGPROBE_MAX_PROBES must be between 1 and 64"
#endif

#define LP_CHUNK_SHIFT 8
#define LP_CHUNK (1u << LP_CHUNK_SHIFT)
#define LP_MAX_CHUNKS ((LAGPROBE_MAX_PARTITIONS + LP_CHUNK - 1) / LP_CHUNK)
#define LP_TOPIC_MAX 512 /* Kafka allows 249; room for odd documents */
#define LP_RF_BATCH 64   /* partitions asked in one watermark query */
/* Membership changes and evictions remembered for the rebalance_storm
 * window (storm_rebalances counts at most this many). */
#define LP_RB_TIMES 16
/* A commit failed within this long: health reason commit_failing. */
#define LP_COMMIT_FAILING_US 60000000
/* Batches in the window before config_advice judges their p99. */
#define LP_ADVICE_MIN_BATCHES 5
#define LP_RF_WAIT_MS 1500      /* offsets_for_times() deadline (< 2.3.0) */
#define LP_RF_POLL_MS 100       /* admin result queue poll step (>= 2.3.0) */
#define LP_DESTROY_WAIT_MS 3000 /* on_destroy's bound on the refresher */
/* librdkafka's defaults, for what the consumer's conf leaves unset. */
#define LP_RDK_MAX_POLL_MS 300000 /* max.poll.interval.ms */
#define LP_RDK_SESSION_MS 45000   /* session.timeout.ms */
#define LP_RDK_HEARTBEAT_MS 3000  /* heartbeat.interval.ms */

/* ========================================================================
 * MARK: 1. Utilities
 * ===================================================================== */

/* Every shared load is an acquire and every shared store a release: on x86
 * both are ordinary moves (same cost as relaxed), and they make the
 * seqlocks below correct without standalone fences, which ThreadSanitizer
 * cannot model. */
#define LD(x) atomic_load_explicit(&(x), memory_order_acquire)
#define ST(x, v) atomic_store_explicit(&(x), (v), memory_order_release)

typedef _Atomic int64_t a64_t;

/* Event severities: syslog(3) levels, as lagprobe_event_t.severity. */
enum {
        LP_LOG_CRIT = 2,
        LP_LOG_ERR = 3,
        LP_LOG_WARNING = 4,
        LP_LOG_NOTICE = 5,
        LP_LOG_INFO = 6
};

#if defined(__GNUC__) || defined(__clang__)
#define LP_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define LP_NOINLINE __attribute__((noinline))
#else
#define LP_UNLIKELY(x) (x)
#define LP_NOINLINE
#endif

static int64_t lp_mono_us(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t lp_wall_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void lp_err(char *errstr, size_t size, const char *fmt, ...) {
        va_list ap;
        if (!errstr || size == 0)
                return;
        va_start(ap, fmt);
        vsnprintf(errstr, size, fmt, ap);
        va_end(ap);
}

const char *lagprobe_version_str(void) {
#define LP_STR2(x) #x
#define LP_STR(x) LP_STR2(x)
        return LP_STR(LAGPROBE_VERSION_MAJOR) "." LP_STR(
            LAGPROBE_VERSION_MINOR) "." LP_STR(LAGPROBE_VERSION_PATCH);
}

static const char *const lp_event_names[LAGPROBE_EVENT__CNT] = {
    "headroom_warn",   "headroom_critical", "headroom_recovered",
    "predicted_exceed", "evicted",          "config_advice",
    "rebalance",       "commit_failed",     "stats_error",
    "partition_status", "diagnosis",       "no_statistics",
    "no_rebalances"};

static const char *const lp_pstatus_names[LAGPROBE_PSTATUS__CNT] = {
    "unknown", "ok",      "idle",   "lagging",
    "stalled", "stopped", "rewound", "caught_up_with_markers",
    "paused"};

static const char *const lp_diag_names[LAGPROBE_DIAG__CNT] = {
    "unknown",        "healthy",         "producer_burst", "consumer_slow",
    "rebalance_storm", "stuck_partition", "hot_partition",
    "partition_paused"};

const char *lagprobe_pstatus_name(lagprobe_pstatus_t status) {
        int st = (int)status;
        return st >= 0 && st < LAGPROBE_PSTATUS__CNT ? lp_pstatus_names[st]
                                                     : "unknown";
}

const char *lagprobe_diagnosis_name(lagprobe_diagnosis_t diagnosis) {
        int d = (int)diagnosis;
        return d >= 0 && d < LAGPROBE_DIAG__CNT ? lp_diag_names[d] : "unknown";
}

static const char *const lp_reason_names[LAGPROBE_REASON__CNT] = {
    "headroom_critical", "evicted",         "no_assignment",
    "consumer_not_running", "headroom_warn", "predicted_exceed",
    "commit_failing", "no_statistics", "brokers_down", "no_rebalances"};

const char *lagprobe_reason_name(unsigned reason) {
        for (int i = 0; i < LAGPROBE_REASON__CNT; i++)
                if (reason == (1u << i))
                        return lp_reason_names[i];
        return "unknown";
}

const char *lagprobe_health_name(int health) {
        switch (health) {
        case LAGPROBE_HEALTH_OK: return "ok";
        case LAGPROBE_HEALTH_DEGRADED: return "degraded";
        case LAGPROBE_HEALTH_UNHEALTHY: return "unhealthy";
        default: return "unknown";
        }
}

int lagprobe_health_http_status(int health) {
        return health == LAGPROBE_HEALTH_OK || health == LAGPROBE_HEALTH_DEGRADED
                   ? 200
                   : 503;
}

const char *lagprobe_event_name(lagprobe_event_type_t type) {
        if ((int)type < 0 || type >= LAGPROBE_EVENT__CNT)
                return "unknown";
        return lp_event_names[type];
}

/* Saturating arithmetic for figures that come from outside (statistics
 * documents): offsets near INT64_MAX must not overflow (undefined
 * behaviour) in rates, sums and times to catch up. */
static int64_t lp_sat_add(int64_t a, int64_t b) {
        if (b > 0 && a > INT64_MAX - b)
                return INT64_MAX;
        if (b < 0 && a < INT64_MIN - b)
                return INT64_MIN;
        return a + b;
}

static int64_t lp_sat_sub(int64_t a, int64_t b) {
        if (b < 0 && a > INT64_MAX + b)
                return INT64_MAX;
        if (b > 0 && a < INT64_MIN + b)
                return INT64_MIN;
        return a - b;
}

/* @p v as int64_t, saturated (a cast of a double out of range is
 * undefined behaviour; rates of documents with offsets near INT64_MAX get
 * there). */
static int64_t lp_dbl_i64(double v) {
        if (!(v < 9.2e18))
                return v != v ? 0 : INT64_MAX;
        return v <= -9.2e18 ? -INT64_MAX : (int64_t)v;
}

/* a * m / d for m > 0, d > 0; exact while a * m fits, else saturated. */
static int64_t lp_muldiv(int64_t a, int64_t m, int64_t d) {
        if (a <= INT64_MAX / m && a >= -(INT64_MAX / m))
                return a * m / d;
        return lp_dbl_i64((double)a * (double)m / (double)d);
}

static int64_t lp_mrate(int64_t delta, int64_t dt_us) {
        /* msg/s x 1000 */
        return dt_us > 0 ? lp_muldiv(delta, 1000000000, dt_us) : 0;
}

/* @p v clamped to int32_t, for figures kept in 32 bits. */
static int32_t lp_i32(int64_t v) {
        return v > INT32_MAX ? INT32_MAX : v < -INT32_MAX ? -INT32_MAX
                                                          : (int32_t)v;
}

/* a - b for counts kept as their low 32 bits (a sample's consumed total):
 * exact while fewer than 2^32 lie between them. */
static int64_t lp_delta32(uint32_t a, uint32_t b) { return (uint32_t)(a - b); }

/* Bounded writer: counts the full length, stores what fits. With @p spill
 * set it also keeps the LP_SPILL bytes that follow the end of the buffer,
 * so a later shift to the left can still fill the buffer (see
 * lagprobe_snapshot_json). */
#define LP_SPILL 20
typedef struct lp_out_s {
        char *buf;
        size_t size, len;
        char *spill; /* NULL, or LP_SPILL bytes */
} lp_out_t;

static void lp_put_slow(lp_out_t *o, const char *s, size_t n) {
        size_t len = o->len, end = len + n;
        if (len < o->size) {
                size_t k = o->size - len;
                memcpy(o->buf + len, s, k < n ? k : n);
        }
        if (o->spill && end > o->size && len < o->size + LP_SPILL) {
                size_t from = len > o->size ? len : o->size;
                size_t to = end < o->size + LP_SPILL ? end : o->size + LP_SPILL;
                memcpy(o->spill + (from - o->size), s + (from - len), to - from);
        }
        o->len = end;
}

static inline void lp_put(lp_out_t *o, const char *s, size_t n) {
        if (o->len + n <= o->size && o->len < o->size) {
                memcpy(o->buf + o->len, s, n);
                o->len += n;
        } else {
                lp_put_slow(o, s, n);
        }
}

static inline void lp_puts(lp_out_t *o, const char *s) {
        lp_put(o, s, strlen(s));
}

/* Room for @p n bytes at the end of the text: where to write them, or NULL
 * when the buffer lacks room (write through lp_put() then). */
static inline char *lp_room(lp_out_t *o, size_t n) {
        return o->len + n <= o->size ? o->buf + o->len : NULL;
}

/* For numbers and short fixed keys only: strings of unbounded length go
 * through lp_puts()/lp_json_str(). A longer result is still counted in
 * full, so the size contract holds; only its text would be cut. */
static void lp_printf(lp_out_t *o, const char *fmt, ...) {
        char tmp[256];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
        va_end(ap);
        if (n > 0)
                lp_put(o, tmp, (size_t)n < sizeof tmp ? (size_t)n
                                                      : sizeof tmp - 1);
}

/* Numbers without printf: renders write some 100,000 of them. */
static const char lp_dig2[201] = "0001020304050607080910111213141516171819"
                                 "2021222324252627282930313233343536373839"
                                 "4041424344454647484950515253545556575859"
                                 "6061626364656667686970717273747576777879"
                                 "8081828384858687888990919293949596979899";

/* Writes @p v in decimal so that it ends at @p end; returns its start. */
static char *lp_u64_at(char *end, uint64_t v) {
        while (v >= 100) {
                end -= 2;
                memcpy(end, lp_dig2 + 2 * (v % 100), 2);
                v /= 100;
        }
        if (v >= 10) {
                end -= 2;
                memcpy(end, lp_dig2 + 2 * v, 2);
        } else {
                *--end = (char)('0' + v);
        }
        return end;
}

static char *lp_i64_at(char *end, int64_t v) {
        char *s = lp_u64_at(end, v < 0 ? 0 - (uint64_t)v : (uint64_t)v);
        if (v < 0)
                *--s = '-';
        return s;
}

/* Decimal text of @p v into @p out (at least 21 bytes); returns its
 * length. */
static size_t lp_fmt_i64(char *out, int64_t v) {
        char tmp[24];
        char *s = lp_i64_at(tmp + sizeof tmp, v);
        size_t n = (size_t)(tmp + sizeof tmp - s);
        memcpy(out, s, n);
        return n;
}

static void lp_put_i64(lp_out_t *o, int64_t v) {
        char tmp[24];
        char *s = lp_i64_at(tmp + sizeof tmp, v);
        lp_put(o, s, (size_t)(tmp + sizeof tmp - s));
}

/* NUL-terminates what fits and returns the full length (snprintf-style). */
static size_t lp_render_end(lp_out_t *o) {
        if (o->size > 0)
                o->buf[o->len < o->size ? o->len : o->size - 1] = 0;
        return o->len;
}

/* ========================================================================
 * MARK: 2. State
 *
 * Concurrency contract. Three kinds of writers touch a probe:
 *  - the consuming thread, in on_consume (per message, the hot path) and in
 *    the batch hooks: lock-free, single writer per slot's "C" group;
 *  - callbacks that are rare (statistics once per interval, rebalances,
 *    commits on librdkafka's main thread): serialised by p->wlock, which is
 *    the only lock in the probe and is never taken by readers or by
 *    on_consume on its fast path;
 *  - librdkafka threads logging MAXPOLL: one atomic counter.
 * Readers (snapshot, JSON, the watchdog) only load atomics. Each group of
 * fields that must be seen together is guarded by a sequence counter
 * (seqlock) with a single writer at a time. The writer stores the counter
 * odd, then the fields, then the counter even; a reader loads the counter,
 * the fields, and the counter again, and keeps the copy only when both
 * counter values are equal and even. Ordering: field stores are releases
 * and come after the odd counter store in program order, so a reader whose
 * acquire load returns a field value of update k+1 also sees the odd
 * counter of k+1 (or later) on its second counter load, and retries; a
 * reader whose first counter load (acquire) returns the even value ending
 * update k sees all of k's fields. Every field is an atomic, so racing
 * reads are defined behaviour (and understood by TSan); the retry discards
 * torn copies. Single-writer counters use load + store, never an atomic
 * read-modify-write (a locked instruction costs ~20x a plain store).
 * ===================================================================== */

/* Zero-code processing time: delivery pairs timed per statistics document
 * (see lp_infer). */
#define LP_INFER_PAIRS 8


/* A partition sample for the sliding window (writer-private). */
#define LP_RING 12
typedef struct lp_sample_s {
        int64_t t_us, hi, pos, committed, total;
        int64_t hi_us; /* hi is known to hold from then (<= t_us): older
                        * when the statistics' figure was frozen */
} lp_sample_t;

/* A sample as the ring keeps it, 32 bytes (lp_ring_put, lp_ring_get):
 * times in ms and counts as their low 32 bits (only differences within a
 * window are used, lp_delta32), offsets as their distance below the end
 * (LP_GAP_NONE: unknown, or too far to keep). */
#define LP_GAP_NONE INT32_MIN
typedef struct lp_rsample_s {
        int64_t hi;
        uint32_t t_ms, total;
        int32_t pos_gap, com_gap; /* hi - pos, hi - committed */
        int32_t hi_age_ms;        /* t_us - hi_us, ms */
        int32_t lag_min;          /* the lowest effective lag of the
                                   * documents since the previous sample
                                   * (its own included), -1 unknown: a
                                   * commit saw-tooth shows as its
                                   * troughs, not as a trend */
} lp_rsample_t;

/* The evidence behind a partition's status, as readers copy it out of the
 * slot (the s_* fields of the same names; see lp_eval_slot(), which
 * writes every figure with every document, whatever the status). -1
 * unknown. */
typedef struct lp_sev_s {
        int64_t lag_min;   /* lowest effective lag over the window's newer
                            * half */
        int64_t lag_ago;   /* effective lag at the window's start */
        int64_t rw_from;   /* last backwards move: from, to, and 1 when */
        int64_t rw_to;     /* it was the committed offset (rw_commit), 0 */
        int64_t raw_us;    /* the position; since when (statistics clock) */
        int32_t raw;       /* the status the newest document gives; s_status
                            * shows it once it held for the dwell (raw_us) */
        int32_t span_ms;   /* time the window's samples really cover */
        int32_t paused_ms; /* not fetched for */
        int32_t growing;   /* 1: the end moved over the window */
        int32_t rw_commit;
        int32_t consumed;  /* messages handed to the app over the window */
} lp_sev_t;

typedef struct lp_slot_s {
        /* Identity: written once before the slot is published through
         * p->nslots (release); immutable afterwards. */
        const char *topic;
        int32_t partition;
        /* Next slot in (topic, partition) order, plus one; 0 ends the
         * list (see lp_sorted_first). Written under wlock, release. */
        _Atomic uint32_t sorted_next;

        /* Assignment, written under wlock. */
        _Atomic int assigned;

        /* C group: the consuming thread only (on_consume). Three stores
         * per message; what was consumed since the assignment is c_total
         * minus s_c_base. */
        _Atomic uint32_t cseq;
        a64_t c_position;         /* last consumed offset + 1 */
        a64_t c_last_ts;          /* message timestamp, ms */
        a64_t c_total;            /* monotonic, never reset: poll evidence */

        /* S group: under wlock (statistics, commits, rebalances). It
         * starts a cache line (slots are allocated 64-byte aligned), so the
         * line above holds identity, assignment and the C group alone:
         * readers load it once per slot per render, and the consuming
         * thread writes one line per message, which no other writer and
         * no reader of the S group touches. */
        _Alignas(64) _Atomic uint32_t sseq;
        _Atomic int s_status;     /* here to fill the hole after sseq */
        a64_t s_hi, s_lo, s_ls;
        a64_t s_app_offset;
        a64_t s_committed;        /* merged: on_commit or statistics */
        a64_t s_fetchq_cnt, s_fetchq_size;
        a64_t s_stats_us;         /* statistics ts of the figures */
        a64_t s_progress_us;      /* position or commit last advanced */
        a64_t s_commit_errs;
        a64_t s_c_base;           /* c_total when last assigned */
        _Atomic int s_last_commit_err;
        _Atomic int s_stale;

        /* S group, diagnosis results (see lp_eval_slot; s_status is at
         * the top of the group). */
        /* The evidence (lp_sev_t: the same names without s_). */
        a64_t s_lag_min, s_lag_ago, s_rw_from, s_rw_to, s_raw_us;
        _Atomic int32_t s_raw, s_span_ms, s_paused_ms, s_growing,
            s_rw_commit, s_consumed;
        a64_t s_eff_lag;
        a64_t s_in_mrate, s_out_mrate, s_commit_mrate; /* msg/s x 1000 */
        a64_t s_pos_mrate;              /* position growth */
        _Atomic int s_moving;           /* position moved since the
                                         * previous document */
        a64_t s_eta_ms;                 /* -1 not catching up */
        /* Watermark refresh fields readers load, here so that readers
         * load the S group's first 240 bytes (four lines) and no other. */
        a64_t s_hi_ok_us;         /* last document with the leader up */
        a64_t s_hi_query;         /* broker's hi from the refresh, -1 */

        /* Writer-private (under wlock). */
        int64_t w_committed_us;   /* when s_committed was last set */
        int64_t w_prev_position;
        lp_rsample_t w_ring[LP_RING]; /* samples, oldest overwritten */
        int w_ring_n, w_ring_head;
        int64_t w_rewound_until_us;
        uint32_t w_mark;          /* lp_sync_assignment() */
        int64_t w_doc_pos, w_doc_committed, w_doc_ts; /* previous document */
        int64_t w_hi_seen;        /* statistics hi, to see it change */
        int64_t w_paused_since_us; /* paused status: not fetched since */
        int64_t w_paused_until_us; /* a resumed partition's backlog is no
                                    * hot partition until then */
        int64_t w_paused_total;   /* c_total at the previous document */
        int64_t w_lag_acc;        /* lowest lag since the last sample */

        /* Watermark refresh (watchdog, under wlock; S group; see also
         * s_hi_ok_us and s_hi_query above). */
        a64_t s_hi_changed_us;    /* statistics ts when hi last moved */
        a64_t s_hi_query_us;      /* when it was queried, 0 never */
        /* Leader of the partition and whether its connection was UP in
         * the latest statistics (under wlock; the watchdog reads them to
         * pick what to refresh, one load each, not a consistent
         * copy). */
        _Atomic int32_t s_leader;  /* broker id, -1 unknown */
        _Atomic int s_leader_up;
} lp_slot_t;

typedef struct lp_topic_s {
        char *name;
        int32_t *parts; /* stb_ds array: partition -> slot index, -1 none */
} lp_topic_t;

typedef struct lp_topic_map_s {
        char *key;
        int value;
} lp_topic_map_t;

/* Statistics scratch: one record per partition of a document. Reused from
 * document to document: no allocation once warmed up. */
typedef struct lp_prec_s {
        uint32_t topic_ref;
        int32_t partition;
        int32_t leader;   /* broker id, -1 unknown */
        int64_t hi, lo, ls, committed, app_offset, fetchq_cnt, fetchq_size;
        int fetch_active; /* -1 unknown, 0 not fetching, 1 active */
} lp_prec_t;

/* A broker of the document: its id and whether its connection is up. */
typedef struct lp_bref_s {
        int32_t nodeid;
        int up;
} lp_bref_t;

/* Brokers the consumer needs (leaders of its partitions, its group
 * coordinator) that are down, at most this many named. */
#define LP_BDOWN_MAX 8
_Static_assert(sizeof(((lagprobe_snapshot_t *)0)->brokers_down) ==
                   LP_BDOWN_MAX * sizeof(int32_t),
               "lagprobe_snapshot_t.brokers_down holds LP_BDOWN_MAX ids");
/* A broker counts as down once it has been seen down this long (statistics
 * clock): a reconnect of a few hundred ms is not an outage. */
#define LP_BDOWN_GRACE_US 1000000

typedef struct lp_tref_s {
        const char *raw; /* escaped form, points into the document */
        uint32_t len;
        int escaped;
} lp_tref_t;

/* Log-linear histogram of microseconds: LP_HSUB sub-buckets per power of
 * two, so a bucket's width is at most 1/LP_HSUB of its lower bound and a
 * percentile read as the bucket's midpoint is within 1/(2*LP_HSUB) = 3.1 %
 * of the true value. Single writer (load + store, no RMW); readers
 * may see a count that is one update ahead of sum: fine for metrics. */
#define LP_HSUB_BITS 4
#define LP_HSUB (1 << LP_HSUB_BITS)
#define LP_HPOW 40 /* up to 2^40 us = 12.7 days */
#define LP_HBUCKETS (LP_HPOW * LP_HSUB)

typedef struct lp_hist_s {
        a64_t count, sum_us, max_us;
        a64_t b[LP_HBUCKETS];
} lp_hist_t;

/* Recent window: LP_WIN rotating sub-histograms, each config.window_ms /
 * LP_WIN long (10 s by default). */
#define LP_WIN 6

typedef struct lp_whist_s {
        lp_hist_t total;
        lp_hist_t win[LP_WIN];
        a64_t win_start_us[LP_WIN];
} lp_whist_t;

enum { LP_PROTO_NONE = 0, LP_PROTO_EAGER, LP_PROTO_COOPERATIVE };

/* Why consumer_slow: no poll (or nothing moves), evicted and not yet
 * lived down, per-message or batch time above its baseline, egress below
 * its baseline while lag grows, lag growing with neither side changed
 * (BEHIND for its first window, then UNDER: under-provisioned). */
enum {
        LP_SLOW_NONE = 0,
        LP_SLOW_NO_POLL,
        LP_SLOW_EVICTED,
        LP_SLOW_MESSAGE,
        LP_SLOW_BATCH,
        LP_SLOW_EGRESS,
        LP_SLOW_BEHIND,
        LP_SLOW_UNDER
};
/* The evidence behind the consumer's verdict, by name (lp_diagnose()
 * writes those of the verdict it reaches, -1 the others; the detail text is
 * rendered from them). */
enum {
        LP_DEV_RAW,         /* verdict of the newest document; g_diag shows
                             * it once it held for the dwell */
        LP_DEV_RAW_SLOT,    /* the partition it names, -1 none */
        LP_DEV_HELD_US,     /* for how long (the documents' clock) */
        LP_DEV_ASSIGNS,     /* rebalance_storm: membership changes, */
        LP_DEV_EVICTS,      /* evictions in storm_window_ms, and */
        LP_DEV_BATCH_US,    /* batch p99 (or the one under way), -1 none */
        LP_DEV_STUCK_LAG,   /* stuck_partition: its lag and */
        LP_DEV_REDELIVERED, /* messages re-consumed over the window */
        LP_DEV_NO_POLL_US,  /* consumer_slow (no poll): time since it */
        LP_DEV_EVICTED_US,  /* consumer_slow (evicted): since the eviction */
        LP_DEV_REJOINED_US, /* and since the assignment after it, -1 none */
        LP_DEV_PAUSED_LAG,  /* partition_paused: lag on paused partitions */
        LP_DEV_SHARE,       /* hot_partition: share x 1000 of */
        LP_DEV_HOT_BY_LAG,  /* the lag (1) or of the ingress (0) */
        LP_DEV_CATCHING,    /* healthy: 0 keeps up, 1 drains a backlog, 2
                             * behind and not gaining */
        LP_DEV_DRAIN_MS,    /* healthy, draining: time to catch up */
        LP_DEV__CNT
};
/* Which processing-time histogram the verdict compared. */
enum { LP_TSRC_NONE = 0, LP_TSRC_MESSAGE, LP_TSRC_BATCH };
static const char *const lp_proto_names[] = {"NONE", "EAGER", "COOPERATIVE"};

static const char *const lp_cgrp_states[] = {
    "unknown",     "init",        "term",
    "query-coord", "wait-coord",  "wait-broker",
    "wait-broker-transport",      "up"};
#define LP_CGRP_STATES (sizeof lp_cgrp_states / sizeof lp_cgrp_states[0])

struct lagprobe_s {
        lagprobe_config_t conf;
        _Atomic int refcnt;         /* handle + confs carrying the probe */
        _Atomic int user_destroyed; /* lagprobe_destroy() was called */
        int reg;                    /* lp_registry index, -1 none */
        _Atomic int attached;       /* lagprobe_attach() succeeded */

        /* The app's callbacks: set at attach, taken again from the final
         * conf in on_new (before librdkafka starts a thread), immutable
         * afterwards. */
        int (*app_stats_cb)(rd_kafka_t *, char *, size_t, void *);
        void (*app_rebalance_cb)(rd_kafka_t *, rd_kafka_resp_err_t,
                                 rd_kafka_topic_partition_list_t *, void *);
        void (*app_error_cb)(rd_kafka_t *, int, const char *, void *);
        void (*app_log_cb)(const rd_kafka_t *, int, const char *,
                           const char *);

        /* Binding to the consumer: set in on_new, published by 'bound'. */
        rd_kafka_t *_Atomic rk;
        _Atomic int bound;           /* 1 between on_new and on_destroy */
        _Atomic int rk_seen;         /* on_new ran once (bound or refused) */
        char group_id[256];
        char client_id[256];
        char name[128];
        _Atomic int name_set;
        int64_t max_poll_interval_ms, session_timeout_ms,
            heartbeat_interval_ms;
        int64_t queued_min_messages, queued_max_kbytes;
        int64_t stats_interval_ms;
        char bind_error[160];        /* why on_new refused, or "" */
        int proto;                   /* LP_PROTO_*, from the conf */
        int64_t bound_us;            /* when on_new bound the probe */

        /* Writers' lock: index, S groups, G group. See the contract. */
        pthread_mutex_t wlock;
        lp_topic_t *topics;          /* stb_ds array */
        lp_topic_map_t *topic_map;   /* stb_ds string map name -> index */
        lp_slot_t *_Atomic chunks[LP_MAX_CHUNKS];
        _Atomic uint32_t nslots;
        _Atomic uint32_t sorted_head; /* first slot in order, plus one */
        uint32_t *w_sorted;          /* stb_ds array: slots in that order */
        _Atomic uint32_t cache_epoch; /* lp_new_epoch() when slots change meaning */

        /* Statistics parser scratch, owned by whoever holds plock. */
        pthread_mutex_t plock;
        lp_prec_t *scr_parts;
        lp_tref_t *scr_topics;
        lp_bref_t *scr_brokers;

        /* G group: probe-wide figures written under wlock. */
        _Atomic uint32_t gseq;
        a64_t g_assigns, g_revokes, g_lost, g_last_rebalance_us;
        a64_t g_unassigned_since_us, g_last_unassigned_us;
        _Atomic int g_protocol, g_last_rebalance_err;
        a64_t g_assignment_size;
        a64_t g_cgrp_rebalance_cnt;
        _Atomic int g_cgrp_state;
        a64_t g_stats_docs, g_stats_errors, g_stats_field_errors,
            g_stats_last_us;
        a64_t g_commits, g_commit_errors;
        _Atomic int g_last_commit_err;
        a64_t g_last_commit_err_us, g_last_assign_us;
        /* Consumer diagnosis, written with the statistics (G group). */
        _Atomic int g_diag;
        _Atomic int g_diag_slot;      /* named partition, -1 none */
        a64_t g_dev[LP_DEV__CNT];     /* the evidence, LP_DEV_* */
        a64_t g_in_mrate, g_out_mrate, g_total_lag;
        /* Named evidence of the verdict (see lp_diagnose): rate baselines
         * (msg/s x 1000, -1 unknown), the processing time compared (us,
         * -1 none) and its baseline, which histogram (LP_TSRC_*), whether
         * inferred, and why consumer_slow (LP_SLOW_*). */
        a64_t g_in_base, g_out_base;
        a64_t g_time_us, g_time_base_us;
        _Atomic int g_time_src, g_time_inferred, g_slow_cause;
        _Atomic uint32_t g_diag_changes;
        _Atomic int g_rb_blind;       /* rebalances not reaching the probe */
        /* Needed brokers down (G group, with the statistics). */
        _Atomic int g_coord_down;     /* coordinator known, not UP */
        _Atomic int g_bdown_n;
        _Atomic int32_t g_bdown[LP_BDOWN_MAX];
        /* Writer-private (wlock): since when each broker is seen down. */
        int32_t w_bdown_id[LP_BDOWN_MAX];
        int64_t w_bdown_since[LP_BDOWN_MAX];
        int w_bdown_n;
        /* Writer-private (wlock): recent assignment and eviction times. */
        int64_t w_assign_t[LP_RB_TIMES]; /* membership changes, see
                                      * lp_count_change() */
        int w_assign_n;
        int64_t w_revoke_round_us;   /* last incremental revoke round */
        int64_t w_rb_callbacks;      /* rebalance callbacks seen */
        int w_rb_behind;             /* documents in a row whose
                                      * rebalance_cnt is ahead of them */
        int64_t w_evict_t[LP_RB_TIMES];
        int w_evict_n;
        int64_t w_seen_evictions;
        double w_msg_base_us, w_batch_base_us; /* slow-moving baselines */
        double w_in_base, w_out_base; /* rates' baselines, -1 unknown */
        int64_t w_lag_t[LP_RING], w_lag_v[LP_RING]; /* verdict's lag */
        int w_lag_head, w_lag_n;
        int64_t w_lag_ago;            /* lp_lag_window_ago() */
        int w_slow_cause;             /* LP_SLOW_* of the last verdict */
        int64_t w_infer_slow_us;      /* inferred slowdown seen since */
        int w_hot_docs;               /* documents in a row that found a
                                       * hot partition */
        int64_t w_grow_us;            /* lag growing since, 0 not */
        int w_base_exact;             /* w_msg_base_us is the hooks' */
        int64_t w_base_us;            /* when the baselines last moved */
        int64_t w_base_mono_us;       /* the monotonic clock then */
        int w_diag_raw, w_diag_raw_slot; /* the newest document's verdict */
        int64_t w_diag_raw_us;        /* since when */
        int64_t win_us;               /* sub-window of the recent view */
        int64_t dwell_us;             /* config.dwell_ms, resolved */
        int hwm_refreshes;            /* the watchdog asks leaders for the
                                       * end (hwm_refresh_ms, a watchdog
                                       * thread, a way to ask) */

        /* Poll evidence and batch state (section 6). */
        a64_t last_poll_us;          /* last known poll return, 0 never */
        _Atomic int exact;           /* batch hooks in use */
        _Atomic int inferred;        /* lp_infer() recorded a time */
        _Atomic int infer_arm;       /* pairs lp_infer() may still time:
                                      * set by the statistics callback
                                      * under wlock, counted down by the
                                      * consuming thread (load + store) */
        _Atomic uint32_t bseq;       /* B group: batch hooks' thread */
        _Atomic int b_in_batch;
        a64_t b_size, b_done, b_begin_us, b_last_progress_us;
        a64_t evictions;
        a64_t last_eviction_us;
        a64_t pr_last_us;            /* last lagprobe_poll_result() */
        a64_t hook_errors;
        _Atomic int in_hook;         /* a batch hook is running */
        lp_whist_t h_batch, h_msg, h_gap;
        a64_t events[LAGPROBE_EVENT__CNT];

        /* Watchdog. */
        pthread_t wd_thread;
        int wd_running;
        pthread_mutex_t wd_lock;     /* only with the watchdog's condvar */
        pthread_cond_t wd_cond;
        int wd_stop;
        _Atomic int emitting;        /* events in flight (destroy waits) */
        int64_t wd_prev_total;       /* watchdog/tick private */
        int wd_level;                /* 0 ok, 1 warn, 2 critical */
        _Atomic int headroom_level;
        int64_t wd_last_emit_us[LAGPROBE_EVENT__CNT];
        int64_t wd_seen_evictions;
        int64_t wd_seen_rebalances, wd_seen_commit_errors,
            wd_seen_stats_errors;
        uint32_t wd_seen_diag;
        int wd_said_diag;             /* verdict last reported, its */
        int32_t wd_said_diag_part;    /* partition and topic */
        const char *wd_said_diag_topic;
        /* What the watchdog last reported of each partition (stb_ds
         * arrays, per slot; 5 bytes a partition): the status, with
         * LP_WD_DUE set while it is to be reported in this pass, and
         * when (the statistics' clock in ms, low 32 bits, compared as a
         * difference). */
        uint8_t *wd_said;
        uint32_t *wd_said_ms;
        int wd_predicted;            /* predicted_exceed said for batch */
        a64_t predicted_batch_us;    /* b_begin_us of that batch */
        int64_t wd_predicted_batch;
        double wd_advice_ratio;      /* last advised p99/limit ratio */
        int wd_hb_advised;
        int wd_blind;                /* no_statistics said */
        int wd_rb_blind;             /* no_rebalances said */
        a64_t stall_seen_us;         /* watchdog: last pass that found no
                                      * poll for 3 statistics intervals */
        pthread_mutex_t tick_lock;   /* serialises tick with the thread */
        uint32_t wd_refresh_cursor;

        /* Watermark refresher (section 6): its own thread, started by the
         * watchdog the first time a refresh is due, so that no network
         * round trip ever delays a watchdog pass. rf_lock guards rf_jobs,
         * rf_njobs, rf_quit and rf_started; rf_busy (a job handed over and
         * not finished) is read by the watchdog without it. rf_in_rk is
         * set (sequentially consistent, paired with 'bound') while the
         * refresher is inside librdkafka: on_destroy waits for it. */
        pthread_mutex_t rf_lock;
        pthread_cond_t rf_cond;
        int rf_started, rf_quit, rf_njobs;
        uint32_t rf_jobs[LP_RF_BATCH];
        _Atomic int rf_busy, rf_in_rk, rf_exited;
        _Atomic int rf_leave;        /* lagprobe_destroy(): stop waiting */
        int64_t socket_timeout_ms;   /* from the consumer's conf */
        a64_t rf_queries, rf_failures; /* refresher thread only */
};

/* stb_ds writes a process-wide hash seed when a map's first index is
 * built; probes build theirs in lagprobe_new() under this lock, and maps
 * only grow afterwards (growth reuses the map's own seed). */
static pthread_mutex_t lp_stb_seed_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- Seqlock helpers ----------------------------------------------------
 * Writers: lp_wbegin/lp_wend around the field stores (releases). Readers:
 * lp_rbegin/lp_rretry around the field loads (acquires). Only the
 * counter's own first load and odd store are relaxed (see above). */

static inline uint32_t lp_wbegin(_Atomic uint32_t *seq) {
        uint32_t s = atomic_load_explicit(seq, memory_order_relaxed);
        /* The field stores that follow are releases: they publish this. */
        atomic_store_explicit(seq, s + 1, memory_order_relaxed);
        return s;
}

static inline void lp_wend(_Atomic uint32_t *seq, uint32_t s) {
        /* Release: data stores happen-before a reader's acquire of s+2. */
        atomic_store_explicit(seq, s + 2, memory_order_release);
}

static inline uint32_t lp_rbegin(_Atomic uint32_t *seq) {
        uint32_t s;
        unsigned spins = 0;
        while ((s = atomic_load_explicit(seq, memory_order_acquire)) & 1u) {
                if (++spins > 64) {
                        /* A writer is never inside for long. After ~20 ms
                         * the single-writer contract was broken (e.g. hooks
                         * from two threads at once) and the counter is
                         * stuck odd: read anyway rather than hang a health
                         * endpoint. Returning the odd value makes
                         * lp_rretry() accept it only while it stays stuck. */
                        if (spins > 64 + 20000)
                                return s;
                        struct timespec ts = {0, 1000};
                        nanosleep(&ts, NULL);
                }
        }
        return s;
}

static inline int lp_rretry(_Atomic uint32_t *seq, uint32_t s) {
        /* The field loads were acquires: this load cannot move above them. */
        return atomic_load_explicit(seq, memory_order_acquire) != s;
}

/* ========================================================================
 * MARK: 3. Histograms
 * ===================================================================== */

static int lp_hbucket(int64_t us) {
        uint64_t v = us < 1 ? 0 : (uint64_t)us;
        if (v < LP_HSUB)
                return (int)v;
        int msb = 63 - __builtin_clzll(v);
        int shift = msb - LP_HSUB_BITS;
        int sub = (int)((v >> shift) & (LP_HSUB - 1));
        int idx = (shift + 1) * LP_HSUB + sub;
        return idx >= LP_HBUCKETS ? LP_HBUCKETS - 1 : idx;
}

/* Lower bound and width of bucket i, in microseconds. */
static void lp_hbounds(int i, double *lo, double *width) {
        if (i < LP_HSUB) {
                *lo = i;
                *width = 1;
                return;
        }
        int shift = i / LP_HSUB - 1;
        int sub = i % LP_HSUB;
        *lo = (double)((uint64_t)(LP_HSUB + sub) << shift);
        *width = (double)(1ull << shift);
}

/* @p n samples of @p us each (n >= 1). */
static void lp_hist_add(lp_hist_t *h, int64_t us, int64_t n) {
        int b = lp_hbucket(us);
        ST(h->b[b], LD(h->b[b]) + (uint64_t)n);
        ST(h->sum_us, LD(h->sum_us) + (us > 0 ? us * n : 0));
        if (us > LD(h->max_us))
                ST(h->max_us, us);
        ST(h->count, LD(h->count) + (uint64_t)n);
}

static void lp_hist_clear(lp_hist_t *h) {
        for (int i = 0; i < LP_HBUCKETS; i++)
                ST(h->b[i], 0);
        ST(h->sum_us, 0);
        ST(h->max_us, 0);
        ST(h->count, 0);
}

/* Single writer: the thread recording values. */
static void lp_whist_add_n(lp_whist_t *w, int64_t win_us, int64_t now_us,
                           int64_t us, int64_t n) {
        int64_t epoch = now_us / win_us;
        int wi = (int)(epoch % LP_WIN);
        if (LD(w->win_start_us[wi]) != epoch * win_us) {
                /* Readers may briefly see this sub-window half cleared:
                 * recent figures are approximate by nature. */
                lp_hist_clear(&w->win[wi]);
                ST(w->win_start_us[wi], epoch * win_us);
        }
        lp_hist_add(&w->win[wi], us, n);
        lp_hist_add(&w->total, us, n);
}

static void lp_whist_add(lp_whist_t *w, int64_t win_us, int64_t now_us,
                         int64_t us) {
        lp_whist_add_n(w, win_us, now_us, us, 1);
}

/* Sum of histograms into a plain array (reader side). */
typedef struct lp_hsum_s {
        uint64_t count;
        int64_t sum_us, max_us;
        uint64_t b[LP_HBUCKETS];
} lp_hsum_t;

static void lp_hsum_add(lp_hsum_t *s, const lp_hist_t *h) {
        uint64_t c = 0;
        for (int i = 0; i < LP_HBUCKETS; i++) {
                uint64_t v = (uint64_t)LD(((lp_hist_t *)h)->b[i]);
                s->b[i] += v;
                c += v;
        }
        /* Buckets are the truth for percentiles; count follows them. */
        s->count += c;
        s->sum_us += LD(((lp_hist_t *)h)->sum_us);
        int64_t m = LD(((lp_hist_t *)h)->max_us);
        if (m > s->max_us)
                s->max_us = m;
}

static double lp_hsum_pct(const lp_hsum_t *s, double q) {
        if (s->count == 0)
                return 0;
        /* ceil() without libm: the documented link line has no -lm. */
        double want = q * (double)s->count;
        uint64_t rank = (uint64_t)want;
        if ((double)rank < want)
                rank++;
        if (rank < 1)
                rank = 1;
        uint64_t acc = 0;
        for (int i = 0; i < LP_HBUCKETS; i++) {
                acc += s->b[i];
                if (acc >= rank) {
                        double lo, w;
                        lp_hbounds(i, &lo, &w);
                        double mid = i < LP_HSUB ? lo : lo + w / 2;
                        if (mid > (double)s->max_us && s->max_us > 0)
                                mid = (double)s->max_us;
                        return mid;
                }
        }
        return (double)s->max_us;
}

static void lp_hsum_summary(const lp_hsum_t *s, lagprobe_hist_summary_t *o) {
        o->count = s->count;
        o->sum_ms = (double)s->sum_us / 1000.0;
        o->p50_ms = lp_hsum_pct(s, 0.50) / 1000.0;
        o->p90_ms = lp_hsum_pct(s, 0.90) / 1000.0;
        o->p99_ms = lp_hsum_pct(s, 0.99) / 1000.0;
        o->max_ms = (double)s->max_us / 1000.0;
}

/* Sums the sub-windows that started between @p from_age and @p to_age
 * ago (in sub-windows; the current one has age 0). */
static void lp_whist_range(lp_whist_t *w, int64_t win_us, int64_t now_us,
                           int from_age, int to_age, lp_hsum_t *out) {
        memset(out, 0, sizeof *out);
        int64_t cur = now_us / win_us;
        for (int i = 0; i < LP_WIN; i++) {
                int64_t st = LD(w->win_start_us[i]);
                if (st <= 0 && cur > 0)
                        continue;
                int64_t age = cur - st / win_us;
                if (age >= from_age && age <= to_age)
                        lp_hsum_add(out, &w->win[i]);
        }
}

static void lp_whist_read(lp_whist_t *w, int64_t win_us, int64_t now_us,
                          lp_hsum_t *total, lp_hsum_t *recent) {
        if (total) {
                memset(total, 0, sizeof *total);
                lp_hsum_add(total, &w->total);
        }
        if (recent)
                lp_whist_range(w, win_us, now_us, 0, LP_WIN - 1, recent);
}

/* ========================================================================
 * MARK: 4. Partition index
 *
 * Slots by (topic, partition), written only under wlock; the assignment's
 * size; the consuming thread's per-thread slot cache.
 * ===================================================================== */

static inline lp_slot_t *lp_slot_at(lagprobe_t *p, uint32_t i) {
        lp_slot_t *c = atomic_load_explicit(&p->chunks[i >> LP_CHUNK_SHIFT],
                                            memory_order_acquire);
        return &c[i & (LP_CHUNK - 1)];
}

/* The first assigned slot at index *i or later, below n; *i is its index.
 * NULL when there is none. */
static inline lp_slot_t *lp_assigned_at(lagprobe_t *p, uint32_t *i,
                                        uint32_t n) {
        for (; *i < n; ++*i) {
                lp_slot_t *s = lp_slot_at(p, *i);
                if (LD(s->assigned))
                        return s;
        }
        return NULL;
}

/* The walk over the assigned slots among the first n, in slot order: i is
 * declared here, s (lp_slot_t *) by the caller; n is read on every step,
 * so pass a variable; break and continue work as in any loop. Walks in
 * topic order use lp_sorted_first/lp_sorted_next instead. */
#define LP_FOR_ASSIGNED(p, n, i, s)                                            \
        for (uint32_t i = 0; ((s) = lp_assigned_at((p), &i, (n))) != NULL; i++)

/* A zeroed chunk of LP_CHUNK slots, aligned as lp_slot_t wants (64: see
 * the S group) with calloc(), which does not align beyond max_align_t; the
 * pointer calloc() returned is kept just before the chunk. */
static lp_slot_t *lp_chunk_new(void) {
        size_t al = _Alignof(lp_slot_t);
        char *raw = calloc(1, LP_CHUNK * sizeof(lp_slot_t) + al);
        if (!raw)
                return NULL;
        char *c = raw + (al - (uintptr_t)raw % al); /* >= 8 bytes in */
        memcpy(c - sizeof raw, &raw, sizeof raw);
        return (lp_slot_t *)(void *)c;
}

static void lp_chunk_free(lp_slot_t *c) {
        char *raw;
        if (!c)
                return;
        memcpy(&raw, (char *)c - sizeof raw, sizeof raw);
        free(raw);
}

/* Every output lists partitions sorted by topic, then partition, whatever
 * order they were learned in (statistics, rebalances, consumed messages).
 * Readers walk the slots in that order through a singly linked list threaded
 * through the slots (sorted_next), with no copy and no sort per render.
 * Slots are never removed, so the writer only inserts: it sets the new
 * slot's link, then publishes it by storing its predecessor's link
 * (release); a reader (acquire loads) sees the list before or after the
 * insert, both complete. Links hold index + 1 so that zeroed memory is the
 * empty list. The writer finds the place by binary search in w_sorted. */
/* From link @p l on, the first link to a slot below @p n (a reader's count
 * of slots), or 0. A slot is linked just before nslots counts it. The slot
 * is prefetched (the lines readers load: identity and C group, the S
 * group's first three): a reader asks for the next slot before it reads
 * the current one, so walking slots learned out of order does not wait on
 * one cache miss after another. */
static inline uint32_t lp_sorted_from(lagprobe_t *p, uint32_t l, uint32_t n) {
        while (l > n)
                l = LD(lp_slot_at(p, l - 1)->sorted_next);
#if defined(__GNUC__)
        if (l) {
                const char *c = (const char *)lp_slot_at(p, l - 1);
                for (int off = 0; off < 4 * 64; off += 64)
                        __builtin_prefetch(c + off, 0, 3);
        }
#endif
        return l;
}

/* Readers visit slots l - 1 below @p n in (topic, partition) order:
 *   for (uint32_t l = lp_sorted_first(p, n), nx; l; l = nx) {
 *           nx = lp_sorted_next(p, l, n);
 *           ... slot l - 1 ...                                          */
static inline uint32_t lp_sorted_first(lagprobe_t *p, uint32_t n) {
        return lp_sorted_from(p, LD(p->sorted_head), n);
}

static inline uint32_t lp_sorted_next(lagprobe_t *p, uint32_t l, uint32_t n) {
        return lp_sorted_from(p, LD(lp_slot_at(p, l - 1)->sorted_next), n);
}

static int lp_slot_before(lagprobe_t *p, uint32_t i, const char *topic,
                          int32_t partition) {
        const lp_slot_t *s = lp_slot_at(p, i);
        int c = strcmp(s->topic, topic);
        return c < 0 || (c == 0 && s->partition < partition);
}

/* Links the initialised slot @p n into the order. Caller holds wlock. */
static void lp_sorted_insert(lagprobe_t *p, uint32_t n) {
        lp_slot_t *s = lp_slot_at(p, n);
        size_t lo = 0, hi = (size_t)arrlen(p->w_sorted);
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (lp_slot_before(p, p->w_sorted[mid], s->topic,
                                   s->partition))
                        lo = mid + 1;
                else
                        hi = mid;
        }
        ST(s->sorted_next, lo < (size_t)arrlen(p->w_sorted)
                               ? p->w_sorted[lo] + 1
                               : 0);
        if (lo > 0)
                ST(lp_slot_at(p, p->w_sorted[lo - 1])->sorted_next, n + 1);
        else
                ST(p->sorted_head, n + 1);
        arrins(p->w_sorted, lo, n);
}

/* A slot's S group and writer-private state as before any figure: for a
 * new slot, and for one assigned again (what an earlier assignment left is
 * not trusted). Caller holds wlock; the slot is not assigned. */
static void lp_slot_reset(lp_slot_t *s) {
        uint32_t q = lp_wbegin(&s->sseq);
        ST(s->s_hi, -1);
        ST(s->s_lo, -1);
        ST(s->s_ls, -1);
        ST(s->s_app_offset, -1);
        ST(s->s_committed, -1);
        ST(s->s_fetchq_cnt, 0);
        ST(s->s_fetchq_size, 0);
        ST(s->s_stats_us, 0);
        ST(s->s_progress_us, 0);
        ST(s->s_stale, 0);
        s->w_committed_us = 0;
        s->w_prev_position = -1;
        s->w_ring_n = 0;
        s->w_lag_acc = -1;
        s->w_rewound_until_us = 0;
        s->w_paused_since_us = s->w_paused_until_us = 0;
        ST(s->s_status, LAGPROBE_PSTATUS_UNKNOWN);
        ST(s->s_raw, LAGPROBE_PSTATUS_UNKNOWN);
        ST(s->s_eff_lag, -1);
        ST(s->s_in_mrate, 0);
        ST(s->s_out_mrate, 0);
        ST(s->s_commit_mrate, 0);
        ST(s->s_pos_mrate, 0);
        ST(s->s_eta_ms, -1);
        ST(s->s_moving, 0);
        s->w_doc_pos = s->w_doc_committed = -1;
        s->w_doc_ts = 0;
        ST(s->s_hi_changed_us, 0);
        ST(s->s_hi_ok_us, 0);
        ST(s->s_hi_query, -1);
        ST(s->s_hi_query_us, 0);
        ST(s->s_leader, -1);
        ST(s->s_leader_up, 0);
        s->w_hi_seen = -1;
        /* What the consuming thread counted so far belongs to the
         * earlier assignment. (Rebalances are served on that
         * thread, between messages, so the figure is exact.) */
        ST(s->s_c_base, LD(s->c_total));
        lp_wend(&s->sseq, q);
}

/* Returns the slot index of (topic, partition), creating it when @p create;
 * -1 when absent or out of room. Caller holds wlock. */
static int lp_slot_find(lagprobe_t *p, const char *topic, int32_t partition,
                        int create) {
        if (partition < 0 || partition > 1000000)
                return -1;
        ptrdiff_t ti = shgeti(p->topic_map, topic);
        if (ti < 0) {
                if (!create)
                        return -1;
                lp_topic_t t = {strdup(topic), NULL};
                if (!t.name)
                        return -1;
                arrput(p->topics, t);
                shput(p->topic_map, t.name, (int)arrlen(p->topics) - 1);
                ti = shgeti(p->topic_map, topic);
        }
        lp_topic_t *t = &p->topics[p->topic_map[ti].value];
        if (partition < arrlen(t->parts) && t->parts[partition] >= 0)
                return t->parts[partition];
        if (!create)
                return -1;
        uint32_t n = LD(p->nslots);
        if (n >= LAGPROBE_MAX_PARTITIONS)
                return -1;
        if ((n & (LP_CHUNK - 1)) == 0 && !LD(p->chunks[n >> LP_CHUNK_SHIFT])) {
                lp_slot_t *c = lp_chunk_new();
                if (!c)
                        return -1;
                /* Release: the zeroed chunk is visible before its pointer. */
                atomic_store_explicit(&p->chunks[n >> LP_CHUNK_SHIFT], c,
                                      memory_order_release);
        }
        lp_slot_t *s = lp_slot_at(p, n);
        s->topic = t->name;
        s->partition = partition;
        ST(s->c_position, -1);
        ST(s->c_last_ts, -1);
        lp_slot_reset(s);
        while (arrlen(t->parts) <= partition)
                arrput(t->parts, -1);
        t->parts[partition] = (int32_t)n;
        lp_sorted_insert(p, n);
        /* Release: identity and initial figures before readers count it. */
        atomic_store_explicit(&p->nslots, n + 1, memory_order_release);
        return (int)n;
}

/* The assignment grew by @p added and shrank by @p removed partitions at
 * @p now: its size, and since when it has been empty (@p empty_since when
 * it became empty now). Caller holds wlock and is inside the G group
 * write. */
static void lp_assignment_moved(lagprobe_t *p, int64_t added, int64_t removed,
                                int64_t now, int64_t empty_since) {
        int64_t size = LD(p->g_assignment_size) - removed + added;
        if (size < 0)
                size = 0;
        ST(p->g_assignment_size, size);
        int64_t since = LD(p->g_unassigned_since_us);
        if (size == 0 && since == 0) {
                ST(p->g_unassigned_since_us, empty_since);
        } else if (size > 0 && since > 0) {
                ST(p->g_last_unassigned_us, now - since);
                ST(p->g_unassigned_since_us, 0);
        }
}

/* Per-thread cache for on_consume: the slot of the last (rkt, partition)
 * seen, valid while p->cache_epoch still holds the value it was filled
 * under. Epochs come from one process-wide counter, so no two probes ever
 * share one and the cache needs no probe identity: a probe freed and
 * another allocated at the same address cannot match. The epoch moves
 * whenever the assignment changes, so an rkt pointer is trusted only while
 * a partition of it is assigned. */
typedef struct lp_tcache_s {
        uint32_t epoch;
        int32_t partition;
        const rd_kafka_topic_t *rkt;
        lp_slot_t *slot;
        /* Inferred processing time (zero-code): the clock at a marked
         * delivery (see lp_infer). */
        int64_t mark_us;
        const lagprobe_t *mark_p;
} lp_tcache_t;

static _Thread_local lp_tcache_t lp_tcache;

static _Atomic uint32_t lp_epoch_src = 1;

/* A fresh cache epoch for @p p. Caller holds wlock (or owns p alone). */
static void lp_new_epoch(lagprobe_t *p) {
        uint32_t e;
        do /* 0 is the empty cache's */
                e = atomic_fetch_add(&lp_epoch_src, 1);
        while (e == 0);
        ST(p->cache_epoch, e);
}

static LP_NOINLINE rd_kafka_resp_err_t lp_infer(lagprobe_t *p,
                                                 lp_tcache_t *c);

/* The cache missed: find (or make) the slot and refill the cache. Kept out
 * of line so that on_consume's fast path stays a leaf with few registers.
 * Also where zero-code processing time is sampled (lp_infer): arming it
 * moves the epoch, and while it samples the cache is left empty, so the
 * fast path pays nothing for it. */
static LP_NOINLINE lp_slot_t *lp_slot_for_msg(lagprobe_t *p,
                                              const rd_kafka_message_t *m) {
        uint32_t epoch = LD(p->cache_epoch);
        const char *topic = rd_kafka_topic_name(m->rkt);
        pthread_mutex_lock(&p->wlock);
        int i = lp_slot_find(p, topic, m->partition, 1);
        if (i >= 0 && LD(p->g_assigns) == 0) {
                /* No rebalance ever seen: the app assigns partitions itself
                 * (rd_kafka_assign() without subscribe). What it consumes
                 * is what it was assigned. */
                lp_slot_t *s = lp_slot_at(p, (uint32_t)i);
                if (!LD(s->assigned)) {
                        ST(s->assigned, 1);
                        uint32_t g = lp_wbegin(&p->gseq);
                        lp_assignment_moved(p, 1, 0, lp_mono_us(), 0);
                        lp_wend(&p->gseq, g);
                }
        }
        pthread_mutex_unlock(&p->wlock);
        if (i < 0)
                return NULL;
        lp_tcache_t *c = &lp_tcache;
        c->epoch = epoch;
        c->rkt = m->rkt;
        c->partition = m->partition;
        c->slot = lp_slot_at(p, (uint32_t)i);
        if (LD(p->infer_arm) > 0) {
                lp_infer(p, c);
                if (LD(p->infer_arm) > 0)
                        c->epoch = 0; /* the next delivery comes here too */
        }
        return c->slot;
}

/* ========================================================================
 * MARK: 5. Statistics scanner
 *
 * One pass over the document with a depth limit; extracts the few fields
 * the probe uses into p->scr_* and rejects the whole document when it is
 * not well-formed, so a truncated document never half-applies. Strings are
 * not copied: topic names point into the document and are unescaped into a
 * stack buffer only for the index lookup. Everything is validated, also
 * what is skipped (broker windows, "toppars"): skipping walks containers
 * in a loop, strings 16 bytes at a time (SSE2; 8 with word tricks
 * elsewhere), and numbers without converting them.
 * ===================================================================== */

#define LP_JSON_MAX_DEPTH 64

/* The small helpers must be inlined for the cursor to stay in a register. */
#if defined(__GNUC__)
#define LP_JQ static inline __attribute__((always_inline))
#else
#define LP_JQ static inline
#endif

typedef struct lp_jp_s {
        const char *p, *end;
        int depth;
        int64_t field_errors;
} lp_jp_t;

/* The scanner works on a local cursor q (kept in a register: a store to
 * j->p could alias every byte loaded from the document). Helpers named
 * jq_* take the cursor and return the new one, NULL when the document is
 * malformed; jp_* functions also take the state (depth, field errors). */

LP_JQ int jp_isws(char c) {
        return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

LP_JQ int jp_isdigit(char c) { return (unsigned)(c - '0') <= 9; }

/* s[0..n) equals lit[0..n): overlapping word loads, which the compiler
 * folds for a literal (a memcmp() of a constant length may stay a call). */
LP_JQ uint64_t jp_w8(const char *s) {
        uint64_t v;
        memcpy(&v, s, 8);
        return v;
}

LP_JQ uint32_t jp_w4(const char *s) {
        uint32_t v;
        memcpy(&v, s, 4);
        return v;
}

LP_JQ int jp_eq(const char *s, const char *lit, size_t n) {
        if (n >= 8 && n <= 16)
                return jp_w8(s) == jp_w8(lit) &&
                       jp_w8(s + n - 8) == jp_w8(lit + n - 8);
        if (n >= 4 && n < 8)
                return jp_w4(s) == jp_w4(lit) &&
                       jp_w4(s + n - 4) == jp_w4(lit + n - 4);
        for (size_t i = 0; i < n; i++)
                if (s[i] != lit[i])
                        return 0;
        return 1;
}

/* librdkafka writes one space between tokens at most: the first byte is
 * tested before looping. */
LP_JQ const char *jq_ws(const char *q, const char *end) {
        while (q < end && (unsigned char)*q <= ' ' && jp_isws(*q))
                q++;
        return q;
}

/* Skips white space, then @p c; NULL if something else comes. */
LP_JQ const char *jq_eat(const char *q, const char *end, char c) {
        q = jq_ws(q, end);
        return q < end && *q == c ? q + 1 : NULL;
}

static int jp_hex(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* String bodies are scanned a block at a time for the bytes that end a
 * plain run: '"', '\\' and control characters. jp_first_stop(q) is the
 * index of the first such byte among q[0..LP_SPAN-1], LP_SPAN if none;
 * it reads LP_SPAN bytes. */
#if defined(__SSE2__)
#include <emmintrin.h>
#define LP_SPAN 16
LP_JQ unsigned jp_first_stop(const char *q) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)q);
        __m128i m = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('"')),
                         _mm_cmpeq_epi8(x, _mm_set1_epi8('\\'))),
            _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(0x1f)), x));
        unsigned bits = (unsigned)_mm_movemask_epi8(m);
        return bits ? (unsigned)__builtin_ctz(bits) : LP_SPAN;
}
#elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define LP_SPAN 8
#define LP_B8(c) (0x0101010101010101ull * (uint8_t)(c))
LP_JQ unsigned jp_first_stop(const char *q) {
        /* Zero-byte tests: the lowest flagged byte is exact (borrows only
         * flag bytes above a true one). */
        uint64_t x, a, b, m;
        memcpy(&x, q, 8);
        a = x ^ LP_B8('"');
        b = x ^ LP_B8('\\');
        m = (((a - LP_B8(1)) & ~a) | ((b - LP_B8(1)) & ~b) |
             ((x - LP_B8(0x20)) & ~x)) &
            LP_B8(0x80);
        return m ? (unsigned)__builtin_ctzll(m) >> 3 : LP_SPAN;
}
#else
#define LP_SPAN 8
LP_JQ unsigned jp_first_stop(const char *q) {
        unsigned i = 0;
        while (i < LP_SPAN && q[i] != '"' && q[i] != '\\' &&
               (unsigned char)q[i] >= 0x20)
                i++;
        return i;
}
#endif

/* A string body from b (after the opening quote), scanning on from q. */
static const char *jq_string_rest(const char *b, const char *q,
                                  const char *end, const char **s,
                                  uint32_t *len, int *escaped) {
        int esc = 0;
        for (;;) {
                unsigned i = 0;
                while (end - q >= LP_SPAN && (i = jp_first_stop(q)) == LP_SPAN)
                        q += LP_SPAN;
                if (end - q >= LP_SPAN)
                        q += i;
                else
                        while (q < end && *q != '"' && *q != '\\' &&
                               (unsigned char)*q >= 0x20)
                                q++;
                if (q >= end)
                        return NULL;
                if (*q == '"')
                        break;
                if (*q != '\\')
                        return NULL; /* control character */
                esc = 1;
                if (q + 1 >= end)
                        return NULL;
                char e = q[1];
                if (e == 'u') {
                        if (end - q < 6)
                                return NULL;
                        for (int k = 2; k < 6; k++)
                                if (jp_hex(q[k]) < 0)
                                        return NULL;
                        q += 6;
                } else if (e == '"' || e == '\\' || e == '/' || e == 'b' ||
                           e == 'f' || e == 'n' || e == 'r' || e == 't') {
                        q += 2;
                } else {
                        return NULL;
                }
        }
        if (s)
                *s = b;
        if (len)
                *len = (uint32_t)(q - b);
        if (escaped)
                *escaped = esc;
        return q + 1;
}

/* A string at q, which must be its opening quote (no white space first).
 * Returns the position after it and its raw body. Inline: keys and short
 * values end inside the first block. */
LP_JQ const char *jq_string(const char *q, const char *end,
                            const char **s, uint32_t *len,
                            int *escaped) {
        if (q >= end || *q != '"')
                return NULL;
        q++;
        if (end - q >= LP_SPAN) {
                unsigned i = jp_first_stop(q);
                if (i < LP_SPAN && q[i] == '"') {
                        if (s)
                                *s = q;
                        if (len)
                                *len = i;
                        if (escaped)
                                *escaped = 0;
                        return q + i + 1;
                }
        }
        return jq_string_rest(q, q, end, s, len, escaped);
}

/* The fraction and exponent of a number, from q ('.', 'e' or 'E'). */
static const char *jq_number_rest(const char *q, const char *end) {
        if (*q == '.') {
                q++;
                if (q >= end || !jp_isdigit(*q))
                        return NULL;
                while (++q < end && jp_isdigit(*q))
                        ;
        }
        if (q < end && (*q == 'e' || *q == 'E')) {
                q++;
                if (q < end && (*q == '+' || *q == '-'))
                        q++;
                if (q >= end || !jp_isdigit(*q))
                        return NULL;
                while (++q < end && jp_isdigit(*q))
                        ;
        }
        return q;
}

/* A number (JSON grammar, leading zeros tolerated) at q. */
LP_JQ const char *jq_number(const char *q, const char *end, int *is_int) {
        if (q < end && *q == '-')
                q++;
        if (q >= end || !jp_isdigit(*q))
                return NULL;
        while (++q < end && jp_isdigit(*q))
                ;
        *is_int = 1;
        if (q < end && (*q == '.' || (*q | 0x20) == 'e')) {
                *is_int = 0;
                return jq_number_rest(q, end);
        }
        return q;
}

LP_JQ const char *jq_lit(const char *q, const char *end,
                         const char *lit, size_t n) {
        if ((size_t)(end - q) < n || !jp_eq(q, lit, n))
                return NULL;
        return q + n;
}

/* Skips (and validates) one value of any kind at q (white space first),
 * inside containers nested @p depth deep. Containers are walked in a loop,
 * not by recursion: bit i of 'obj' says whether the container i levels
 * out from the innermost open one is an object; the depth limit (64) keeps
 * them all in the word. */
static const char *jq_skip(const char *q, const char *end, int depth) {
        uint64_t obj = 0;
        int n = 0, is_int;
        q = jq_ws(q, end);
        if (q >= end)
                return NULL;
        for (;;) {
                /* At a value: white space skipped, q < end. Numbers are
                 * the most common, then strings. */
                char c = *q;
                if (jp_isdigit(c) || c == '-') {
                        q = jq_number(q, end, &is_int);
                } else if (c == '"') {
                        q = jq_string(q, end, NULL, NULL, NULL);
                } else if (c == '{' || c == '[') {
                        if (depth + n + 1 > LP_JSON_MAX_DEPTH)
                                return NULL;
                        obj = obj << 1 | (c == '{');
                        n++;
                        q = jq_ws(q + 1, end);
                        if (q >= end)
                                return NULL;
                        if (*q != (c == '{' ? '}' : ']')) {
                                if (c == '[')
                                        continue;
                                goto key;
                        }
                        q++;
                        n--;
                        obj >>= 1;
                } else if (c == 't') {
                        q = jq_lit(q, end, "true", 4);
                } else if (c == 'f') {
                        q = jq_lit(q, end, "false", 5);
                } else {
                        q = jq_lit(q, end, "null", 4);
                }
                if (!q)
                        return NULL;
                /* After a value: ',' or the end of its container. */
                for (;;) {
                        if (n == 0)
                                return q;
                        if (q < end && *q == ',')
                                break;
                        q = jq_ws(q, end);
                        if (q >= end)
                                return NULL;
                        if (*q == ',')
                                break;
                        if (*q != (obj & 1 ? '}' : ']'))
                                return NULL;
                        q++;
                        n--;
                        obj >>= 1;
                }
                q = jq_ws(q + 1, end);
                if (!(obj & 1)) {
                        if (q >= end)
                                return NULL;
                        continue;
                }
        key:
                q = jq_string(q, end, NULL, NULL, NULL);
                if (!q)
                        return NULL;
                if (q < end && *q == ':')
                        q++;
                else if (!(q = jq_eat(q, end, ':')))
                        return NULL;
                q = jq_ws(q, end);
                if (q >= end)
                        return NULL;
        }
}

/* Skips a value at q (white space skipped); a number, the common case,
 * without a call. */
LP_JQ const char *jq_skip_value(const char *q, const char *end, int depth) {
        int is_int;
        if (q < end && (jp_isdigit(*q) || *q == '-'))
                return jq_number(q, end, &is_int);
        return jq_skip(q, end, depth);
}

/* Reads an integer field at q (white space skipped), inside containers
 * nested @p depth deep. Malformed JSON: NULL. A value of another type or
 * out of int64 range is well-formed but counted as a field error and
 * leaves *v unchanged. */
LP_JQ const char *jq_int(lp_jp_t *j, const char *q, int depth, int64_t *v) {
        const char *end = j->end;
        if (q >= end)
                return NULL;
        int neg = *q == '-';
        const char *b = q + neg;
        if (b >= end || !jp_isdigit(*b)) {
                if (neg)
                        return NULL;
                j->field_errors++;
                return jq_skip(q, end, depth);
        }
        /* Up to 19 digits cannot overflow 64 bits. */
        const char *safe = end - b > 19 ? b + 19 : end, *e = b;
        uint64_t acc = 0;
        do
                acc = acc * 10 + (uint64_t)(*e++ - '0');
        while (e < safe && jp_isdigit(*e));
        int over = 0;
        for (; e < end && jp_isdigit(*e); e++) {
                uint64_t d = (uint64_t)(*e - '0');
                if (acc > (UINT64_MAX - d) / 10)
                        over = 1;
                else if (!over)
                        acc = acc * 10 + d;
        }
        if (e < end && (*e == '.' || *e == 'e' || *e == 'E')) {
                int is_int;
                if (!(e = jq_number(q, end, &is_int)))
                        return NULL;
                j->field_errors++;
                return e;
        }
        if (over || (!neg && acc > (uint64_t)INT64_MAX) ||
            (neg && acc > (uint64_t)INT64_MAX + 1)) {
                j->field_errors++;
                return e;
        }
        *v = neg ? (int64_t)(0 - acc) : (int64_t)acc;
        return e;
}

/* Object members. jq_open: after white space, '{'; *empty when '}' follows
 * at once. jq_key: a member's key and ':', then the cursor is at its value
 * (white space skipped). jq_next: ',' (*more = 1) or '}' (*more = 0). */
LP_JQ const char *jq_open(const char *q, const char *end, int *empty) {
        if (!(q = jq_eat(q, end, '{')))
                return NULL;
        q = jq_ws(q, end);
        *empty = q < end && *q == '}';
        return q + *empty;
}

LP_JQ const char *jq_key(const char *q, const char *end,
                         const char **k, uint32_t *kn, int *esc) {
        q = jq_ws(q, end);
        if (!(q = jq_string(q, end, k, kn, esc)))
                return NULL;
        if (q < end && *q == ':')
                q++;
        else if (!(q = jq_eat(q, end, ':')))
                return NULL;
        return jq_ws(q, end);
}

LP_JQ const char *jq_next(const char *q, const char *end, int *more) {
        if (q < end && *q == ',') {
                *more = 1;
                return q + 1;
        }
        q = jq_ws(q, end);
        if (q >= end)
                return NULL;
        *more = *q == ',';
        return *more || *q == '}' ? q + 1 : NULL;
}

#define KEYIS(s, n, lit) ((n) == sizeof(lit) - 1 && jp_eq((s), lit, (n)))

/* Where a container expected to be an object is something else: a field
 * error, and the value is skipped. Returns 1 when it is an object. */
LP_JQ int jp_want_object(lp_jp_t *j, const char **q) {
        *q = jq_ws(*q, j->end);
        if (*q < j->end && **q == '{')
                return 1;
        j->field_errors++;
        *q = jq_skip(*q, j->end, j->depth);
        return 0;
}

/* Enters the object a reader expects at *q: returns 1 with *q past '{',
 * the depth counted and *more = 0 when the object is empty. Returns 0 when
 * it is something else (a field error, skipped; *q after it) or the
 * document is malformed (*q NULL). The reader loops while *more, then
 * leaves with j->depth--. */
LP_JQ int jp_enter(lp_jp_t *j, const char **q, int *more) {
        int empty;
        if (!jp_want_object(j, q))
                return 0;
        if (++j->depth > LP_JSON_MAX_DEPTH ||
            !(*q = jq_open(*q, j->end, &empty))) {
                *q = NULL;
                return 0;
        }
        *more = !empty;
        return 1;
}

/* One partition object at q ('{'). @p key: its key in "partitions". */
static const char *jp_partition(lp_jp_t *j, const char *q, lagprobe_t *p,
                                uint32_t topic_ref, const char *key,
                                uint32_t keylen) {
        lp_prec_t r = {topic_ref, -2, -1, -1, -1, -1, RD_KAFKA_OFFSET_INVALID,
                     -1, -1, -1, -1};
        const char *end = j->end;
        int depth = j->depth + 1, more = 1;
        if (depth > LP_JSON_MAX_DEPTH)
                return NULL;
        if (!(q = jq_open(q, end, &more)))
                return NULL;
        for (more = !more; more;) {
                const char *k;
                uint32_t kn;
                int64_t v = 0, *dst = NULL;
                enum { F_PARTITION = 1, F_LEADER } f = 0;
                if (!(q = jq_key(q, end, &k, &kn, NULL)))
                        return NULL;
                /* Some 35 keys, 9 of them wanted: by length first. */
                switch (kn) {
                case 6:
                        if (jp_eq(k, "leader", 6)) {
                                v = -1;
                                dst = &v;
                                f = F_LEADER;
                        }
                        break;
                case 9:
                        if (jp_eq(k, "partition", 9)) {
                                v = -2;
                                dst = &v;
                                f = F_PARTITION;
                        } else if (jp_eq(k + 2, "_offset", 7)) {
                                if (k[0] == 'h' && k[1] == 'i')
                                        dst = &r.hi;
                                else if (k[0] == 'l' && k[1] == 'o')
                                        dst = &r.lo;
                                else if (k[0] == 'l' && k[1] == 's')
                                        dst = &r.ls;
                        }
                        break;
                case 10:
                        if (jp_eq(k, "app_offset", 10))
                                dst = &r.app_offset;
                        else if (jp_eq(k, "fetchq_cnt", 10))
                                dst = &r.fetchq_cnt;
                        break;
                case 11:
                        if (jp_eq(k, "fetchq_size", 11)) {
                                dst = &r.fetchq_size;
                        } else if (jp_eq(k, "fetch_state", 11)) {
                                const char *s;
                                uint32_t sn;
                                if (q < end && *q == '"') {
                                        if (!(q = jq_string(q, end, &s, &sn,
                                                            NULL)))
                                                return NULL;
                                        r.fetch_active = KEYIS(s, sn, "active");
                                } else {
                                        j->field_errors++;
                                        if (!(q = jq_skip(q, end, depth)))
                                                return NULL;
                                }
                                goto next;
                        }
                        break;
                case 16:
                        if (jp_eq(k, "committed_offset", 16))
                                dst = &r.committed;
                        break;
                }
                if (!dst) {
                        if (!(q = jq_skip_value(q, end, depth)))
                                return NULL;
                        goto next;
                }
                if (!(q = jq_int(j, q, depth, dst)))
                        return NULL;
                if (f == F_PARTITION) {
                        if (v < INT32_MIN || v > INT32_MAX)
                                j->field_errors++;
                        else
                                r.partition = (int32_t)v;
                } else if (f == F_LEADER) {
                        r.leader = v >= 0 && v <= INT32_MAX ? (int32_t)v : -1;
                }
        next:
                if (!(q = jq_next(q, end, &more)))
                        return NULL;
        }
        if (r.partition == -2) {
                /* No "partition" field: fall back to the key. */
                char tmp[16];
                if (keylen > 0 && keylen < sizeof tmp) {
                        memcpy(tmp, key, keylen);
                        tmp[keylen] = 0;
                        char *endp;
                        long v = strtol(tmp, &endp, 10);
                        if (*endp == 0 && v >= -1 && v <= INT32_MAX)
                                r.partition = (int32_t)v;
                }
                if (r.partition == -2) {
                        j->field_errors++;
                        return q;
                }
        }
        if (r.partition < 0) /* "-1": librdkafka's internal UA partition */
                return q;
        arrput(p->scr_parts, r);
        return q;
}

/* "partitions": { "<id>": {...}, ... } */
static const char *jp_object_of(lp_jp_t *j, const char *q, lagprobe_t *p,
                                uint32_t topic_ref) {
        const char *end = j->end;
        int more;
        if (!jp_enter(j, &q, &more))
                return q;
        while (more) {
                const char *k;
                uint32_t kn;
                if (!(q = jq_key(q, end, &k, &kn, NULL)))
                        return NULL;
                if (q < end && *q == '{') {
                        if (!(q = jp_partition(j, q, p, topic_ref, k, kn)))
                                return NULL;
                } else {
                        j->field_errors++;
                        if (!(q = jq_skip(q, end, j->depth)))
                                return NULL;
                }
                if (!(q = jq_next(q, end, &more)))
                        return NULL;
        }
        j->depth--;
        return q;
}

static const char *jp_topic(lp_jp_t *j, const char *q, lagprobe_t *p,
                            const char *name, uint32_t nlen, int escaped) {
        const char *end = j->end;
        lp_tref_t t = {name, nlen, escaped};
        uint32_t ref = (uint32_t)arrlen(p->scr_topics);
        int more;
        arrput(p->scr_topics, t);
        if (!jp_enter(j, &q, &more))
                return q;
        while (more) {
                const char *k;
                uint32_t kn;
                if (!(q = jq_key(q, end, &k, &kn, NULL)))
                        return NULL;
                if (KEYIS(k, kn, "partitions"))
                        q = jp_object_of(j, q, p, ref);
                else
                        q = jq_skip(q, end, j->depth);
                if (!q || !(q = jq_next(q, end, &more)))
                        return NULL;
        }
        j->depth--;
        return q;
}

static const char *jp_topics(lp_jp_t *j, const char *q, lagprobe_t *p) {
        const char *end = j->end;
        int more;
        if (!jp_enter(j, &q, &more))
                return q;
        while (more) {
                const char *k;
                uint32_t kn;
                int esc;
                if (!(q = jq_key(q, end, &k, &kn, &esc)) ||
                    !(q = jp_topic(j, q, p, k, kn, esc)) ||
                    !(q = jq_next(q, end, &more)))
                        return NULL;
        }
        j->depth--;
        return q;
}

typedef struct lp_doc_s {
        int64_t ts_us;
        int64_t rebalance_cnt;
        int cgrp_state;
        const char *name;
        uint32_t name_len;
        int32_t coord_id;  /* group coordinator's broker id, -1 unknown */
        int coord_up;      /* its connection is UP */
} lp_doc_t;

/* "brokers": { "<name>": { "nodeid": N, "state": "UP", "source": ...,
 * "toppars": {...} } }: only real brokers (not the bootstrap or logical
 * entries) are kept; the logical "GroupCoordinator" entry gives the
 * coordinator's id and connection state. */
static const char *jp_brokers(lp_jp_t *j, const char *q, lagprobe_t *p,
                              lp_doc_t *d) {
        const char *end = j->end;
        int more;
        if (!jp_enter(j, &q, &more))
                return q;
        while (more) {
                const char *bk;
                uint32_t bkn;
                int bkesc;
                if (!(q = jq_key(q, end, &bk, &bkn, &bkesc)))
                        return NULL;
                lp_bref_t b = {-1, 0};
                int logical = 0, bmore;
                if (!jp_enter(j, &q, &bmore)) {
                        if (!q)
                                return NULL;
                } else {
                        while (bmore) {
                                const char *k, *v;
                                uint32_t kn, vn;
                                int64_t id = -1;
                                if (!(q = jq_key(q, end, &k, &kn, NULL)))
                                        return NULL;
                                if (KEYIS(k, kn, "nodeid")) {
                                        if (!(q = jq_int(j, q, j->depth, &id)))
                                                return NULL;
                                        if (id >= 0 && id <= INT32_MAX)
                                                b.nodeid = (int32_t)id;
                                } else if ((KEYIS(k, kn, "state") ||
                                            KEYIS(k, kn, "source")) &&
                                           q < end && *q == '"') {
                                        int st = k[1] == 't';
                                        if (!(q = jq_string(q, end, &v, &vn,
                                                            NULL)))
                                                return NULL;
                                        if (st)
                                                b.up = KEYIS(v, vn, "UP");
                                        else
                                                logical =
                                                    KEYIS(v, vn, "logical") ||
                                                    KEYIS(v, vn, "internal");
                                } else if (!(q = jq_skip(q, end, j->depth))) {
                                        return NULL;
                                }
                                if (!(q = jq_next(q, end, &bmore)))
                                        return NULL;
                        }
                        j->depth--;
                        if (b.nodeid >= 0 && !logical)
                                arrput(p->scr_brokers, b);
                        else if (logical && !bkesc &&
                                 KEYIS(bk, bkn, "GroupCoordinator")) {
                                d->coord_id = b.nodeid;
                                d->coord_up = b.up;
                        }
                }
                if (!(q = jq_next(q, end, &more)))
                        return NULL;
        }
        j->depth--;
        return q;
}

static const char *jp_cgrp(lp_jp_t *j, const char *q, lp_doc_t *d) {
        const char *end = j->end;
        int more;
        if (!jp_enter(j, &q, &more))
                return q;
        while (more) {
                const char *k, *s;
                uint32_t kn, sn;
                if (!(q = jq_key(q, end, &k, &kn, NULL)))
                        return NULL;
                if (KEYIS(k, kn, "rebalance_cnt")) {
                        q = jq_int(j, q, j->depth, &d->rebalance_cnt);
                } else if (KEYIS(k, kn, "state")) {
                        if (q < end && *q == '"') {
                                if (!(q = jq_string(q, end, &s, &sn, NULL)))
                                        return NULL;
                                d->cgrp_state = 0;
                                for (size_t i = 1; i < LP_CGRP_STATES; i++)
                                        if (strlen(lp_cgrp_states[i]) == sn &&
                                            !memcmp(lp_cgrp_states[i], s, sn))
                                                d->cgrp_state = (int)i;
                        } else {
                                j->field_errors++;
                                q = jq_skip(q, end, j->depth);
                        }
                } else {
                        q = jq_skip(q, end, j->depth);
                }
                if (!q || !(q = jq_next(q, end, &more)))
                        return NULL;
        }
        j->depth--;
        return q;
}

static int jp_document(lp_jp_t *j, lagprobe_t *p, lp_doc_t *d) {
        const char *q = j->p, *end = j->end;
        int empty, more;
        j->depth = 1;
        if (!(q = jq_open(q, end, &empty)))
                return -1;
        for (more = !empty; more;) {
                const char *k;
                uint32_t kn;
                if (!(q = jq_key(q, end, &k, &kn, NULL)))
                        return -1;
                if (KEYIS(k, kn, "ts")) {
                        q = jq_int(j, q, j->depth, &d->ts_us);
                } else if (KEYIS(k, kn, "name") && q < end && *q == '"') {
                        int esc;
                        if ((q = jq_string(q, end, &d->name, &d->name_len,
                                           &esc)) &&
                            esc)
                                d->name = NULL;
                } else if (KEYIS(k, kn, "topics")) {
                        q = jp_topics(j, q, p);
                } else if (KEYIS(k, kn, "brokers")) {
                        q = jp_brokers(j, q, p, d);
                } else if (KEYIS(k, kn, "cgrp")) {
                        q = jp_cgrp(j, q, d);
                } else {
                        q = jq_skip(q, end, j->depth);
                }
                if (!q || !(q = jq_next(q, end, &more)))
                        return -1;
        }
        /* librdkafka's buffer may include the terminating NUL. */
        q = jq_ws(q, end);
        while (q < end && *q == '\0')
                q++;
        q = jq_ws(q, end);
        j->p = q;
        return q == end ? 0 : -1;
}

/* Unescapes a JSON string body into out (NUL-terminated). -1 if too long
 * or it would contain a NUL (not a valid topic name). */
static int lp_unescape(const char *s, uint32_t n, int escaped, char *out,
                       size_t outsz) {
        size_t o = 0;
        if (!escaped) {
                if (n >= outsz)
                        return -1;
                memcpy(out, s, n);
                out[n] = 0;
                return 0;
        }
        for (uint32_t i = 0; i < n; i++) {
                unsigned cp;
                char c = s[i];
                if (c != '\\') {
                        if (o + 1 >= outsz)
                                return -1;
                        out[o++] = c;
                        continue;
                }
                c = s[++i];
                switch (c) {
                case 'b': cp = '\b'; break;
                case 'f': cp = '\f'; break;
                case 'n': cp = '\n'; break;
                case 'r': cp = '\r'; break;
                case 't': cp = '\t'; break;
                case 'u':
                        cp = (unsigned)(jp_hex(s[i + 1]) << 12 |
                                        jp_hex(s[i + 2]) << 8 |
                                        jp_hex(s[i + 3]) << 4 | jp_hex(s[i + 4]));
                        i += 4;
                        break;
                default: cp = (unsigned char)c; break;
                }
                if (cp == 0)
                        return -1;
                /* UTF-8 encode (surrogates kept as-is: not topic names). */
                char enc[4];
                size_t el;
                if (cp < 0x80) {
                        enc[0] = (char)cp;
                        el = 1;
                } else if (cp < 0x800) {
                        enc[0] = (char)(0xC0 | (cp >> 6));
                        enc[1] = (char)(0x80 | (cp & 0x3F));
                        el = 2;
                } else {
                        enc[0] = (char)(0xE0 | (cp >> 12));
                        enc[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
                        enc[2] = (char)(0x80 | (cp & 0x3F));
                        el = 3;
                }
                if (o + el >= outsz)
                        return -1;
                memcpy(out + o, enc, el);
                o += el;
        }
        out[o] = 0;
        return 0;
}

static void lp_apply_stats(lagprobe_t *p, const lp_doc_t *d, int64_t now_us,
                           int64_t field_errors);

/* Parses one statistics document and applies it. Returns 0 when accepted,
 * -1 when rejected as malformed (nothing applied). Any thread; documents
 * are serialised by plock. */
static int lp_stats_parse(lagprobe_t *p, const char *json,
                                 size_t len) {
        lp_doc_t d = {-1, -1, -1, NULL, 0, -1, 0};
        int rc;
        int64_t now = lp_mono_us();
        pthread_mutex_lock(&p->plock);
        arrsetlen(p->scr_parts, 0);
        arrsetlen(p->scr_topics, 0);
        arrsetlen(p->scr_brokers, 0);
        lp_jp_t j = {json, json ? json + len : NULL, 0, 0};
        rc = json ? jp_document(&j, p, &d) : -1;
        if (rc == 0) {
                lp_apply_stats(p, &d, now, j.field_errors);
        } else {
                pthread_mutex_lock(&p->wlock);
                uint32_t s = lp_wbegin(&p->gseq);
                ST(p->g_stats_errors, LD(p->g_stats_errors) + 1);
                lp_wend(&p->gseq, s);
                pthread_mutex_unlock(&p->wlock);
        }
        pthread_mutex_unlock(&p->plock);
        return rc;
}

/* ========================================================================
 * MARK: 6. Applying statistics
 *
 * A parsed document's figures into the slots (under wlock, each slot's S
 * group), the brokers the consumer needs that are down, then the
 * evaluation of every partition (section 7) and the verdict (section 8).
 * ===================================================================== */

static void lp_eval_slot(lagprobe_t *p, lp_slot_t *s, int64_t ts,
                         int64_t fetchq_cnt);
static void lp_diagnose(lagprobe_t *p, int64_t doc_ts);

#define LP_APPLY_AHEAD 4

static inline void lp_prefetch_slot(const lp_slot_t *s) {
#if defined(__GNUC__)
        for (size_t off = 0; off < sizeof *s; off += 64)
                __builtin_prefetch((const char *)s + off, 1, 3);
#else
        (void)s;
#endif
}

/* ---- Brokers down --------------------------------------------------------
 * Under wlock, once per statistics document: lp_bdown_begin, then
 * lp_bdown_note for each needed broker (a leader of an assigned partition,
 * the group coordinator) that is not UP, then lp_bdown_end inside the G
 * group publishes those down for LP_BDOWN_GRACE_US or longer. w_bdown_*
 * keep since when each was first seen down; a broker seen UP again (not
 * noted in a document) is forgotten. */
static void lp_bdown_begin(lagprobe_t *p) {
        /* Mark every remembered broker unseen (negative since). */
        for (int i = 0; i < p->w_bdown_n; i++)
                if (p->w_bdown_since[i] > 0)
                        p->w_bdown_since[i] = -p->w_bdown_since[i];
}

static void lp_bdown_note(lagprobe_t *p, int32_t id, int64_t ts) {
        for (int i = 0; i < p->w_bdown_n; i++)
                if (p->w_bdown_id[i] == id) {
                        if (p->w_bdown_since[i] < 0)
                                p->w_bdown_since[i] = -p->w_bdown_since[i];
                        return;
                }
        if (p->w_bdown_n < LP_BDOWN_MAX) {
                p->w_bdown_id[p->w_bdown_n] = id;
                p->w_bdown_since[p->w_bdown_n++] = ts > 0 ? ts : 1;
        }
}

static void lp_bdown_end(lagprobe_t *p, int64_t ts) {
        int n = 0, k = 0;
        for (int i = 0; i < p->w_bdown_n; i++) {
                if (p->w_bdown_since[i] < 0)
                        continue; /* up again */
                p->w_bdown_id[k] = p->w_bdown_id[i];
                p->w_bdown_since[k++] = p->w_bdown_since[i];
                if (ts - p->w_bdown_since[i] >= LP_BDOWN_GRACE_US)
                        ST(p->g_bdown[n++], p->w_bdown_id[i]);
        }
        p->w_bdown_n = k;
        ST(p->g_bdown_n, n);
}

/* One partition record of a document into its slot's S group, then the
 * slot's evaluation (section 7). Caller holds wlock. */
static void lp_apply_part(lagprobe_t *p, lp_slot_t *s, const lp_prec_t *r,
                          int64_t ts) {
        int64_t pos = LD(s->c_position);
        uint32_t q = lp_wbegin(&s->sseq);
        if (r->hi >= 0 || r->hi == RD_KAFKA_OFFSET_INVALID)
                ST(s->s_hi, r->hi >= 0 ? r->hi : -1);
        if (r->hi >= 0 && r->hi != s->w_hi_seen) {
                s->w_hi_seen = r->hi;
                ST(s->s_hi_changed_us, ts);
                if (r->hi >= LD(s->s_hi_query))
                        ST(s->s_hi_query, -1); /* fresh again */
        }
        if (r->lo >= 0 || r->lo == RD_KAFKA_OFFSET_INVALID)
                ST(s->s_lo, r->lo >= 0 ? r->lo : -1);
        if (r->ls >= 0 || r->ls == RD_KAFKA_OFFSET_INVALID)
                ST(s->s_ls, r->ls >= 0 ? r->ls : -1);
        ST(s->s_app_offset, r->app_offset >= 0 ? r->app_offset : -1);
        /* The statistics' committed offset is newer than the last
         * on_commit only if the document was made after it. */
        if (r->committed >= 0 && ts >= s->w_committed_us) {
                if (r->committed != LD(s->s_committed) &&
                    LD(s->s_committed) >= 0)
                        ST(s->s_progress_us, ts);
                ST(s->s_committed, r->committed);
                s->w_committed_us = ts;
        }
        if (r->fetchq_cnt >= 0)
                ST(s->s_fetchq_cnt, r->fetchq_cnt);
        if (r->fetchq_size >= 0)
                ST(s->s_fetchq_size, r->fetchq_size);
        int stale = r->fetch_active == 0;
        /* librdkafka keeps "active" while the leader is unreachable:
         * the figure is as old as the last document with the leader
         * up. */
        int leader_up = 0;
        for (ptrdiff_t b = 0; r->leader >= 0 &&
                              b < arrlen(p->scr_brokers);
             b++)
                if (p->scr_brokers[b].nodeid == r->leader)
                        leader_up = p->scr_brokers[b].up;
        if (r->leader >= 0 && !leader_up)
                stale = 1;
        ST(s->s_leader, r->leader);
        ST(s->s_leader_up, leader_up);
        if (LD(s->assigned) && r->leader >= 0 && !leader_up)
                lp_bdown_note(p, r->leader, ts);
        if (!stale || LD(s->s_hi_ok_us) == 0)
                ST(s->s_hi_ok_us, ts);
        if (p->queued_min_messages > 0 &&
            r->fetchq_cnt >= p->queued_min_messages)
                stale = 1;
        if (p->queued_max_kbytes > 0 &&
            r->fetchq_size >= p->queued_max_kbytes * 1024 * 9 / 10)
                stale = 1;
        ST(s->s_stale, stale);
        if (pos != s->w_prev_position) {
                if (s->w_prev_position >= 0)
                        ST(s->s_progress_us, ts);
                s->w_prev_position = pos;
        }
        ST(s->s_stats_us, ts);
        if (LD(s->assigned))
                lp_eval_slot(p, s, ts, r->fetchq_cnt);
        lp_wend(&s->sseq, q);
}

/* Caller holds plock (scratch). Takes wlock for the index and S groups. */
static void lp_apply_stats(lagprobe_t *p, const lp_doc_t *d, int64_t now_us,
                           int64_t field_errors) {
        int64_t ts = d->ts_us > 0 ? d->ts_us : now_us;
        char topic[LP_TOPIC_MAX];
        uint32_t cur_ref = UINT32_MAX;
        int32_t *parts = NULL;
        ptrdiff_t nparts = 0;

        if (d->name && d->name_len > 0 && !LD(p->name_set)) {
                size_t n = d->name_len < sizeof p->name - 1
                               ? d->name_len
                               : sizeof p->name - 1;
                memcpy(p->name, d->name, n);
                p->name[n] = 0;
                /* Release: the name is complete before readers use it. */
                ST(p->name_set, 1);
        }

        pthread_mutex_lock(&p->wlock);
        lp_bdown_begin(p);
        if (d->coord_id >= 0 && !d->coord_up)
                lp_bdown_note(p, d->coord_id, ts);
        for (ptrdiff_t i = 0; i < arrlen(p->scr_parts); i++) {
                const lp_prec_t *r = &p->scr_parts[i];
                if (r->topic_ref != cur_ref) {
                        const lp_tref_t *t = &p->scr_topics[r->topic_ref];
                        cur_ref = r->topic_ref;
                        parts = NULL;
                        nparts = 0;
                        if (lp_unescape(t->raw, t->len, t->escaped, topic,
                                        sizeof topic) == 0) {
                                ptrdiff_t ti = shgeti(p->topic_map, topic);
                                if (ti >= 0) {
                                        parts = p->topics[p->topic_map[ti].value]
                                                    .parts;
                                        nparts = arrlen(parts);
                                }
                        }
                }
                /* Slots are 960 B apart and a large assignment's do not
                 * stay in cache from one document to the next: fetch the
                 * slot of a record a few ahead (same topic, the common
                 * case) while this one is applied. */
                ptrdiff_t ah = i + LP_APPLY_AHEAD;
                if (parts && ah < arrlen(p->scr_parts) &&
                    p->scr_parts[ah].topic_ref == cur_ref &&
                    p->scr_parts[ah].partition < nparts &&
                    parts[p->scr_parts[ah].partition] >= 0)
                        lp_prefetch_slot(lp_slot_at(
                            p, (uint32_t)parts[p->scr_parts[ah].partition]));
                if (!parts || r->partition >= nparts || parts[r->partition] < 0)
                        continue; /* not a partition this consumer tracks */
                lp_apply_part(p, lp_slot_at(p, (uint32_t)parts[r->partition]),
                              r, ts);
        }
        uint32_t g = lp_wbegin(&p->gseq);
        lp_bdown_end(p, ts);
        ST(p->g_coord_down, d->coord_id >= 0 && !d->coord_up);
        lp_diagnose(p, ts);
        ST(p->g_stats_docs, LD(p->g_stats_docs) + 1);
        ST(p->g_stats_field_errors, LD(p->g_stats_field_errors) + field_errors);
        ST(p->g_stats_last_us, now_us);
        if (d->rebalance_cnt >= 0) {
                ST(p->g_cgrp_rebalance_cnt, d->rebalance_cnt);
                /* librdkafka counts a rebalance when it queues it for the
                 * app; documents are served by the same polls, after it. A
                 * count still ahead of the callbacks three documents later
                 * means rebalances go elsewhere (the event API), which
                 * then never reach the callback: once one did, a gap is
                 * librdkafka's own (an op outdated by a rejoin after an
                 * eviction is counted and dropped), not blindness. */
                p->w_rb_behind = d->rebalance_cnt > p->w_rb_callbacks &&
                                         p->w_rb_callbacks == 0
                                     ? p->w_rb_behind + 1
                                     : 0;
                ST(p->g_rb_blind, p->w_rb_behind >= 3);
        }
        if (d->cgrp_state >= 0)
                ST(p->g_cgrp_state, d->cgrp_state);
        lp_wend(&p->gseq, g);
        pthread_mutex_unlock(&p->wlock);
}

/* ========================================================================
 * MARK: 7. Partition status
 *
 * Writers only (under wlock, with the statistics). Each partition keeps a
 * ring of samples; its status compares the newest sample with the oldest
 * one inside config.window_ms, and is shown once it held for the dwell.
 * The evidence goes to the slot's S group by name (lp_sev_t); readers
 * turn it into the status_reason text (lp_put_reason, at the end).
 * ===================================================================== */

/* One definition of each lag figure, used by the evaluation, the verdict's
 * totals and every renderer. */

/* The log end: the statistics' high watermark, or the broker's when the
 * watchdog's refresh found the statistics' figure frozen behind it (no
 * fetch while a partition is paused or its queue is full). */
static int64_t lp_end(int64_t stats_hi, int64_t query_hi) {
        return query_hi > stats_hi ? query_hi : stats_hi;
}

/* Committed lag, as kafka-consumer-groups.sh LAG; -1 unknown. */
static int64_t lp_lag(int64_t hi, int64_t committed) {
        return hi >= 0 && committed >= 0 ? (hi > committed ? hi - committed : 0)
                                         : -1;
}

/* Messages not yet handed to the app; -1 unknown. */
static int64_t lp_pos_lag(int64_t hi, int64_t pos) {
        return hi >= 0 && pos >= 0 ? (hi > pos ? hi - pos : 0) : -1;
}

/* The lag that counts in alarms and totals: the committed lag, the
 * position lag before the first commit, 0 for transaction markers. */
static int64_t lp_eff_lag(int st, int64_t hi, int64_t committed,
                          int64_t pos) {
        if (st == LAGPROBE_PSTATUS_MARKERS)
                return 0;
        int64_t l = lp_lag(hi, committed);
        return l >= 0 ? l : lp_pos_lag(hi, pos);
}

/* Lowers *m to v (v >= 0; -1 in *m is unknown). */
static void lp_min_into(int64_t *m, int64_t v) {
        if (v >= 0 && (*m < 0 || v < *m))
                *m = v;
}

/* Statuses shown at once: their rules already span a window (stalled,
 * stopped) or report a single fact (rewound). */
static int lp_pstatus_immediate(int st) {
        return st == LAGPROBE_PSTATUS_STALLED ||
               st == LAGPROBE_PSTATUS_STOPPED ||
               st == LAGPROBE_PSTATUS_REWOUND;
}

/* An offset as its distance below the end @p hi, LP_GAP_NONE when
 * unknown or too far for 32 bits. */
static int32_t lp_gap(int64_t hi, int64_t off) {
        if (off < 0)
                return LP_GAP_NONE;
        int64_t g = hi - off;
        return g > INT32_MAX || g <= LP_GAP_NONE ? LP_GAP_NONE : (int32_t)g;
}

static void lp_ring_put(lp_rsample_t *r, const lp_sample_t *n,
                        int64_t lag_min) {
        r->hi = n->hi;
        r->t_ms = (uint32_t)(n->t_us / 1000);
        r->total = (uint32_t)n->total;
        r->pos_gap = lp_gap(n->hi, n->pos);
        r->com_gap = lp_gap(n->hi, n->committed);
        r->hi_age_ms = lp_i32((n->t_us - n->hi_us) / 1000);
        r->lag_min = lp_i32(lag_min);
}

/* The sample @p r keeps, in full, against the newest sample @p n. */
static void lp_ring_get(const lp_rsample_t *r, const lp_sample_t *n,
                        lp_sample_t *o) {
        o->t_us = n->t_us -
                  lp_delta32((uint32_t)(n->t_us / 1000), r->t_ms) * 1000;
        o->hi = r->hi;
        o->pos = r->pos_gap == LP_GAP_NONE ? -1 : r->hi - r->pos_gap;
        o->committed = r->com_gap == LP_GAP_NONE ? -1 : r->hi - r->com_gap;
        o->total = n->total - lp_delta32((uint32_t)n->total, r->total);
        o->hi_us = o->t_us - (int64_t)r->hi_age_ms * 1000;
}

/* A partition's window at one document (lp_eval_window). */
typedef struct lp_win_s {
        lp_sample_t n;        /* the newest sample */
        const lp_sample_t *o; /* the oldest inside window_ms (&o_at), NULL
                               * none */
        lp_sample_t o_at;
        int64_t dt;           /* n.t_us - o->t_us, 0 without o */
        int64_t min_new, min_old; /* lowest lag over the window's newer
                                   * and older half, -1 unknown */
        int64_t lag, plag;    /* effective and position lag now */
        int64_t fetchq_cnt;
        int unfetched;        /* the broker's end is ahead of a frozen
                               * statistics figure */
        int moving;           /* position moved since the last document */
} lp_win_t;

/* Takes the document's sample into the slot's ring and finds the window
 * it closes; notes a backwards move. 0 when there is nothing to judge (no
 * high watermark, or an older document than one seen). */
static int lp_eval_window(lagprobe_t *p, lp_slot_t *s, int64_t ts,
                          lp_win_t *w) {
        int64_t win = (int64_t)p->conf.window_ms * 1000;
        int64_t total = LD(s->c_total);
        int64_t pos = total > LD(s->s_c_base) ? LD(s->c_position) : -1;
        if (pos < 0)
                pos = LD(s->s_app_offset);
        int64_t shi = LD(s->s_hi), qhi = LD(s->s_hi_query);
        /* Not fetched: the broker's end is ahead of a frozen statistics
         * figure. The end is known as of the query, or of the last change
         * of a figure librdkafka says is stale; rates start from then. */
        w->unfetched = qhi > shi && shi >= 0;
        int64_t hi_us = w->unfetched ? LD(s->s_hi_query_us)
                        : LD(s->s_stale) && LD(s->s_hi_changed_us) > 0
                            ? LD(s->s_hi_changed_us)
                            : ts;
        lp_sample_t n = {ts,    lp_end(shi, qhi), pos, LD(s->s_committed),
                         total, hi_us < ts ? hi_us : ts};
        if (n.hi < 0)
                return 0; /* nothing to judge without the high watermark */
        if (n.t_us < s->w_doc_ts)
                return 0; /* an older document than one already seen */
        /* Store the sample: at most ~LP_RING-2 per window so the ring
         * always spans a full window. */
        const lp_rsample_t *prev =
            s->w_ring_n ? &s->w_ring[(s->w_ring_head + LP_RING - 1) % LP_RING]
                        : NULL;
        /* Backwards moves and recent movement: against the previous
         * document, not the (sparser) ring, so a small seek shows. */
        int pos_back = n.pos >= 0 && s->w_doc_pos >= 0 && n.pos < s->w_doc_pos;
        int com_back = n.committed >= 0 && s->w_doc_committed >= 0 &&
                       n.committed < s->w_doc_committed;
        if (pos_back || com_back) {
                s->w_rewound_until_us = ts + win;
                ST(s->s_rw_from, pos_back ? s->w_doc_pos : s->w_doc_committed);
                ST(s->s_rw_to, pos_back ? n.pos : n.committed);
                ST(s->s_rw_commit, !pos_back);
        }
        w->moving = n.pos >= 0 && s->w_doc_pos >= 0 && n.pos > s->w_doc_pos;
        ST(s->s_moving, w->moving);
        s->w_doc_pos = n.pos;
        s->w_doc_committed = n.committed;
        s->w_doc_ts = n.t_us;
        w->lag = lp_eff_lag(LAGPROBE_PSTATUS_OK, n.hi, n.committed, n.pos);
        w->plag = lp_pos_lag(n.hi, n.pos);
        ST(s->s_eff_lag, w->lag);
        /* Every document's lag counts in the window's minimum, also those
         * the ring does not keep. */
        lp_min_into(&s->w_lag_acc, w->lag);
        uint32_t now_ms = (uint32_t)(ts / 1000);
        if (!prev ||
            lp_delta32(now_ms, prev->t_ms) * 1000 >= win / (LP_RING - 2)) {
                lp_ring_put(&s->w_ring[s->w_ring_head], &n, s->w_lag_acc);
                s->w_lag_acc = -1;
                s->w_ring_head = (s->w_ring_head + 1) % LP_RING;
                if (s->w_ring_n < LP_RING)
                        s->w_ring_n++;
        }
        /* Oldest sample inside the window, and the lowest lag over the
         * window's older half and its newer half. */
        w->n = n;
        w->o = NULL;
        w->min_new = s->w_lag_acc;
        w->min_old = -1;
        for (int k = s->w_ring_n; k >= 1; k--) {
                const lp_rsample_t *c =
                    &s->w_ring[(s->w_ring_head + LP_RING - k) % LP_RING];
                int64_t age_us = lp_delta32(now_ms, c->t_ms) * 1000;
                if (age_us > win)
                        continue;
                if (!w->o) {
                        lp_ring_get(c, &n, &w->o_at);
                        w->o = &w->o_at;
                }
                lp_min_into(age_us > win / 2 ? &w->min_old : &w->min_new,
                            c->lag_min);
        }
        w->dt = w->o ? n.t_us - w->o->t_us : 0;
        return 1;
}

/* The partition's rates over the window (msg/s x 1000) and its time to
 * catch up. */
static void lp_eval_rates(lagprobe_t *p, lp_slot_t *s, const lp_win_t *w) {
        const lp_sample_t *o = w->o, *n = &w->n;
        int64_t dt = w->dt;
        if (!o || dt <= 0)
                return;
        /* Ingress over the time the end was really unknown: a jump of a
         * watermark frozen meanwhile is not a burst. */
        ST(s->s_in_mrate, lp_mrate(n->hi - o->hi, n->t_us - o->hi_us));
        ST(s->s_out_mrate, lp_mrate(n->total - o->total, dt));
        ST(s->s_commit_mrate, n->committed >= 0 && o->committed >= 0
                                  ? lp_mrate(n->committed - o->committed, dt)
                                  : 0);
        ST(s->s_pos_mrate,
           n->pos >= 0 && o->pos >= 0 ? lp_mrate(n->pos - o->pos, dt) : 0);
        int64_t drain = n->pos >= 0 && o->pos >= 0
                            ? lp_sat_sub(lp_mrate(n->pos - o->pos, dt),
                                         lp_mrate(n->hi - o->hi, dt))
                            : 0;
        ST(s->s_eta_ms, w->plag >= 0 && w->plag <= p->conf.lag_allowance ? 0
                        : drain > 0 ? lp_muldiv(w->plag, 1000000, drain)
                                    : -1);
}

/* The status rules, first that matches (README's table, same order). */
static int lp_status_rule(lagprobe_t *p, lp_slot_t *s, const lp_win_t *w) {
        const lp_sample_t *o = w->o, *n = &w->n;
        int64_t win = (int64_t)p->conf.window_ms * 1000;
        int64_t ts = n->t_us, lag = w->lag, plag = w->plag;
        int64_t allow = p->conf.lag_allowance;
        /* Within a window of a pause the window's start is the paused
         * stretch: no stall or stop of commits is judged from it. */
        int resumed = ts < s->w_paused_until_us;
        if (ts < s->w_rewound_until_us)
                return LAGPROBE_PSTATUS_REWOUND; /* evidence set before */
        if (plag > 0 && n->total == s->w_paused_total &&
            (s->w_paused_since_us ||
             (w->unfetched && (w->fetchq_cnt <= 0 || n->pos >= LD(s->s_hi)) &&
              !w->moving))) {
                /* Messages the broker has that nothing fetches: paused by
                 * the app, or a queue librdkafka deems full. Before the
                 * window rules: it is neither idle nor stalled. Nothing
                 * waits in its queue, or nothing the statistics know of
                 * (librdkafka may count a few ops there). Once seen it
                 * lasts until the partition is consumed again, whatever
                 * one document says of its queue or watermarks (the
                 * statistics' figure may catch up with a refresh between
                 * two). */
                if (!s->w_paused_since_us)
                        s->w_paused_since_us = LD(s->s_hi_changed_us) > 0
                                                   ? LD(s->s_hi_changed_us)
                                                   : ts;
                return LAGPROBE_PSTATUS_PAUSED;
        }
        if (!o || w->dt < win / 2)
                return LAGPROBE_PSTATUS_UNKNOWN;
        if (lag > 0 && lag <= 2 && n->hi == o->hi && w->fetchq_cnt == 0 &&
            plag >= 1 && plag <= 2 && n->committed == o->committed &&
            n->total == o->total) {
                /* Control records (transaction markers) or compaction
                 * leave the committed offset just short of the end; checked
                 * before the lag rules so a small allowance cannot turn it
                 * into an alarm. A message re-consumed meanwhile (a poison
                 * message at the very end) is not this, nor a position at
                 * the end: then the gap is a message consumed and not yet
                 * committed. */
                ST(s->s_eff_lag, lp_eff_lag(LAGPROBE_PSTATUS_MARKERS, n->hi,
                                            n->committed, n->pos));
                return LAGPROBE_PSTATUS_MARKERS;
        }
        if (lag > allow && n->committed == o->committed && n->pos <= o->pos &&
            !resumed) {
                /* Neither commits nor position move: a poison message
                 * consumed again and again, or a consumer that stopped. */
                return LAGPROBE_PSTATUS_STALLED;
        }
        if (lag > 0 && n->committed == o->committed && !resumed &&
            n->total > o->total && n->pos > o->pos &&
            2 * (n->pos - o->pos) > n->total - o->total) {
                /* Mostly new messages consumed (not one re-read over and
                 * over), yet no commit. */
                return LAGPROBE_PSTATUS_STOPPED;
        }
        if (w->min_new > allow && (w->min_old < 0 || w->min_new >= w->min_old)) {
                /* Above the allowance all through the window's newer half,
                 * and no lower there than in its older half: judged by the
                 * lowest values, so the saw-tooth of periodic commits
                 * shows as its troughs and is no trend. */
                return LAGPROBE_PSTATUS_LAGGING;
        }
        if (n->hi == o->hi && lag <= allow &&
            (plag == 0 || (plag < 0 && n->hi <= LD(s->s_lo))) &&
            (!p->hwm_refreshes ||
             LD(s->s_hi_query_us) >= LD(s->s_hi_changed_us))) {
                /* Caught up, or nothing ever written to consume. The
                 * statistics' end also stands still when nothing fetches
                 * the partition (paused): where the watchdog can ask the
                 * leader, idle waits for an answer given after the end
                 * last moved (the refresh, hwm_refresh_ms). */
                return LAGPROBE_PSTATUS_IDLE;
        }
        return LAGPROBE_PSTATUS_OK;
}

/* Caller holds wlock and is inside the slot's S group write. */
static void lp_eval_slot(lagprobe_t *p, lp_slot_t *s, int64_t ts,
                         int64_t fetchq_cnt) {
        lp_win_t w;
        w.fetchq_cnt = fetchq_cnt;
        if (!lp_eval_window(p, s, ts, &w))
                return;
        lp_eval_rates(p, s, &w);
        int st = lp_status_rule(p, s, &w);
        if (st == LAGPROBE_PSTATUS_PAUSED)
                s->w_paused_until_us = ts + (int64_t)p->conf.window_ms * 1000;
        else
                s->w_paused_since_us = 0;
        s->w_paused_total = w.n.total;
        /* The evidence, whatever the status. */
        ST(s->s_span_ms, lp_i32(w.dt / 1000));
        ST(s->s_lag_min, w.min_new);
        ST(s->s_lag_ago,
           w.o ? lp_eff_lag(LAGPROBE_PSTATUS_OK, w.o->hi, w.o->committed,
                            w.o->pos)
               : -1);
        ST(s->s_consumed, lp_i32(w.o ? w.n.total - w.o->total : 0));
        ST(s->s_paused_ms,
           lp_i32(s->w_paused_since_us ? (ts - s->w_paused_since_us) / 1000
                                       : -1));
        ST(s->s_growing, w.o && w.n.hi > w.o->hi);
        /* Hysteresis: the status shown changes once the new one held for
         * the dwell, except for the first one and the immediate ones. */
        if (st != LD(s->s_raw)) {
                ST(s->s_raw, st);
                ST(s->s_raw_us, ts);
        }
        int shown = LD(s->s_status);
        if (st != shown &&
            (shown == LAGPROBE_PSTATUS_UNKNOWN || lp_pstatus_immediate(st) ||
             ts - LD(s->s_raw_us) >= p->dwell_us)) {
                ST(s->s_status, st);
        }
}

/* printf("%.0f", ms / 1000.0) */
static void lp_put_secs(lp_out_t *o, int ms) {
        if (ms % 1000 == 0)
                lp_put_i64(o, ms / 1000);
        else
                lp_printf(o, "%.0f", (double)ms / 1000.0);
}

/* A duration in seconds: whole seconds from 10 s on, else one decimal
 * (truncated: never more time than there was). */
static void lp_put_span(lp_out_t *o, int64_t ms) {
        if (ms < 0)
                ms = 0;
        lp_put_i64(o, ms / 1000);
        if (ms < 10000 && ms % 1000) {
                char d[2] = {'.', (char)('0' + ms % 1000 / 100)};
                lp_put(o, d, 2);
        }
}

/* "lag N" with the figure the snapshot shows, or "lag unknown". */
static void lp_put_lag(lp_out_t *o, int64_t lag) {
        lp_puts(o, "lag ");
        if (lag >= 0)
                lp_put_i64(o, lag);
        else
                lp_puts(o, "unknown");
}

/* The reason of partition status @p st, from the slot's evidence @p ev
 * and the figures already in @p o, so the text and the snapshot
 * agree. */
static void lp_put_reason(const lagprobe_t *p, lp_out_t *r, int st,
                          const lp_sev_t *ev, const lagprobe_partition_t *o) {
        int64_t span = ev->span_ms;
        switch (st) {
        case LAGPROBE_PSTATUS_UNKNOWN:
                lp_puts(r, "not enough samples yet (window ");
                lp_put_secs(r, p->conf.window_ms);
                lp_puts(r, " s)");
                break;
        case LAGPROBE_PSTATUS_OK:
                lp_put_lag(r, o->effective_lag);
                if (o->effective_lag <= p->conf.lag_allowance) {
                        lp_puts(r, ", within the allowance of ");
                        lp_put_i64(r, p->conf.lag_allowance);
                        break;
                }
                lp_puts(r, ", above the allowance of ");
                lp_put_i64(r, p->conf.lag_allowance);
                lp_puts(r, ev->lag_min > p->conf.lag_allowance
                               ? " and shrinking (lowest "
                               : " but within it at times (lowest ");
                lp_put_i64(r, ev->lag_min);
                lp_puts(r, " in the last ");
                lp_put_span(r, p->conf.window_ms / 2);
                lp_puts(r, " s)");
                break;
        case LAGPROBE_PSTATUS_IDLE:
                lp_puts(r, "caught up at offset ");
                lp_put_i64(r, o->high_watermark);
                lp_puts(r, ", no new messages in the last ");
                lp_put_span(r, span);
                lp_puts(r, " s");
                break;
        case LAGPROBE_PSTATUS_LAGGING:
                lp_put_lag(r, o->effective_lag);
                if (o->effective_lag >= 0 &&
                    o->effective_lag <= p->conf.lag_allowance) {
                        /* A commit (or a refreshed watermark) since the
                         * document that judged it: say both, the text
                         * must not contradict the figure beside it. */
                        lp_puts(r, " now, within the allowance of ");
                        lp_put_i64(r, p->conf.lag_allowance);
                        lp_puts(r, "; up to the latest statistics above it");
                } else {
                        lp_puts(r, ", above the allowance of ");
                        lp_put_i64(r, p->conf.lag_allowance);
                }
                lp_puts(r, " all through the last ");
                lp_put_span(r, p->conf.window_ms / 2);
                lp_puts(r, " s (lowest ");
                lp_put_i64(r, ev->lag_min);
                if (ev->lag_ago >= 0) {
                        lp_puts(r, ", ");
                        lp_put_i64(r, ev->lag_ago);
                        lp_puts(r, " at the start");
                }
                lp_puts(r, ") and not shrinking");
                break;
        case LAGPROBE_PSTATUS_STALLED:
                lp_put_lag(r, o->effective_lag);
                lp_puts(r, "; committed offset ");
                lp_put_i64(r, o->committed_offset);
                lp_puts(r, " and position not moving for ");
                lp_put_span(r, span);
                lp_puts(r, " s; ");
                lp_put_i64(r, ev->consumed);
                lp_puts(r, " message(s) re-consumed");
                break;
        case LAGPROBE_PSTATUS_STOPPED:
                lp_puts(r, "no commit for ");
                lp_put_span(r, span);
                lp_puts(r, " s (committed ");
                lp_put_i64(r, o->committed_offset);
                lp_puts(r, ") while ");
                lp_put_i64(r, ev->consumed);
                lp_puts(r, " message(s) were consumed; ");
                lp_put_lag(r, o->effective_lag);
                break;
        case LAGPROBE_PSTATUS_REWOUND:
                lp_puts(r, ev->rw_commit ? "committed offset"
                                                : "position");
                lp_puts(r, " moved backwards from ");
                lp_put_i64(r, ev->rw_from);
                lp_puts(r, " to ");
                lp_put_i64(r, ev->rw_to);
                break;
        case LAGPROBE_PSTATUS_PAUSED:
                lp_puts(r, "not fetched for ");
                lp_put_span(r, ev->paused_ms);
                lp_puts(r, " s: paused by the app or its queue is full; ");
                lp_put_lag(r, o->effective_lag);
                if (ev->growing > 0)
                        lp_puts(r, " and growing");
                break;
        case LAGPROBE_PSTATUS_MARKERS:
                lp_puts(r, "committed ");
                lp_put_i64(r, o->committed_offset);
                lp_puts(r, " behind high watermark ");
                lp_put_i64(r, o->high_watermark);
                lp_puts(r, " with nothing left to consume: transaction "
                           "markers or compaction; effective lag 0");
                break;
        default:
                break;
        }
}

/* ========================================================================
 * MARK: 8. Consumer verdict and health
 *
 * The verdict from the partitions' figures (lp_diagnose, under wlock
 * with each document, rebalance and watchdog pass), its evidence by name
 * (LP_DEV_*) and detail text (lp_read_diag); the headroom level and the
 * health reasons (lp_health_fill), computed where they are read.
 * ===================================================================== */

static int64_t lp_since_poll_us(lagprobe_t *p, int64_t now_us);

/* How long an evicted member stays consumer_slow after it gets an
 * assignment again: it has to poll in time for max.poll.interval.ms (and
 * for a window) before it counts as healthy; its next overlong batch
 * reaches the headroom warning well within that. */
static int64_t lp_evict_hold_us(const lagprobe_t *p) {
        int64_t w = p->conf.window_ms, m = p->max_poll_interval_ms;
        return (w > m ? w : m) * 1000;
}

/* Into *@p evicted the time since the last eviction and into *@p rejoined
 * the time since the assignment after it (-1 none yet), while the eviction
 * is not lived down: until lp_evict_hold_us() after that assignment, or
 * after the eviction itself while none came (a member that never gets a
 * partition back is not slow, it has nothing to do). Both -1 otherwise. */
static void lp_evicted_since(lagprobe_t *p, int64_t now_us,
                             int64_t *evicted, int64_t *rejoined) {
        int64_t ev = LD(p->last_eviction_us), as = LD(p->g_last_assign_us);
        int64_t from = as > ev ? as : ev;
        *evicted = *rejoined = -1;
        if (ev <= 0 || now_us - from >= lp_evict_hold_us(p))
                return;
        *evicted = now_us - ev;
        *rejoined = as > ev ? now_us - as : -1;
}

/* Headroom level for @p since_us without a poll (-1 unknown): 0 fine, 1
 * past warn_ratio of max.poll.interval.ms, 2 past critical_ratio. The one
 * definition for the watchdog's events, the verdict and the health. */
static int lp_headroom_level(const lagprobe_t *p, int64_t since_us) {
        int64_t limit_us = p->max_poll_interval_ms * 1000;
        if (since_us <= 0 || limit_us <= 0)
                return 0;
        return since_us >= (int64_t)(p->conf.critical_ratio * (double)limit_us)
                   ? 2
               : since_us >= (int64_t)(p->conf.warn_ratio * (double)limit_us)
                   ? 1
                   : 0;
}

static int lp_count_since(const int64_t *t, int n, int64_t since) {
        int c = 0;
        for (int i = 0; i < (n < LP_RB_TIMES ? n : LP_RB_TIMES); i++)
                c += t[i] >= since;
        return c;
}

/* Quantile @p q of the newest two sub-windows of @p w (0 when they hold
 * fewer than @p min_count values), and a slow-moving baseline of it: it
 * follows fast while the figure is normal and slowly while it is high, so a
 * slowdown stays visible for several windows instead of becoming the new
 * normal at once. */
static double lp_recent_vs_base(lagprobe_t *p, lp_whist_t *w, double *base,
                                int64_t now, double dt_us, double q,
                                uint64_t min_count) {
        lp_hsum_t recent;
        lp_whist_range(w, p->win_us, now, 0, 1, &recent);
        if (recent.count < min_count)
                return 0;
        double rp = lp_hsum_pct(&recent, q);
        if (dt_us > 0) {
                /* Time constants: half a window while normal, six windows
                 * while slow (a doubling then shows for about two
                 * windows), whatever the statistics interval. */
                double win = (double)p->conf.window_ms * 1000.0;
                double k = rp < p->conf.slow_ratio * *base ? 0.5 : 6.0;
                double alpha = dt_us / (k * win);
                if (*base <= 0)
                        *base = rp;
                else
                        *base += (rp - *base) * (alpha < 1 ? alpha : 1);
        }
        return rp;
}

/* Moves a rate's baseline @p base (msg/s x 1000, < 0 unknown) towards
 * @p v with time constant @p k windows. */
static void lp_rate_base(lagprobe_t *p, double *base, int64_t v, double dt_us,
                         double k) {
        if (*base < 0) {
                *base = (double)v;
                return;
        }
        double alpha = dt_us / (k * (double)p->conf.window_ms * 1000.0);
        *base += ((double)v - *base) * (alpha < 1 ? alpha : 1);
}

/* The verdict's lag a tenth of a window ago or more (writer-private ring
 * of documents), to tell a draining backlog from a growing one: the
 * newest sample at least that old. -1 when there is none. */
static int64_t lp_lag_window_ago(lagprobe_t *p, int64_t doc_ts,
                                 int64_t total_lag) {
        int64_t win = (int64_t)p->conf.window_ms * 1000;
        int64_t step = win / (LP_RING - 2);
        if (doc_ts <= 0)
                return p->w_lag_ago;
        int last = (p->w_lag_head + LP_RING - 1) % LP_RING;
        if (!p->w_lag_n || doc_ts - p->w_lag_t[last] >= step) {
                p->w_lag_t[p->w_lag_head] = doc_ts;
                p->w_lag_v[p->w_lag_head] = total_lag;
                p->w_lag_head = (p->w_lag_head + 1) % LP_RING;
                if (p->w_lag_n < LP_RING)
                        p->w_lag_n++;
        }
        p->w_lag_ago = -1;
        for (int k = 1; k <= p->w_lag_n; k++) {
                int i = (p->w_lag_head + LP_RING - k) % LP_RING;
                if (doc_ts - p->w_lag_t[i] >= step) {
                        p->w_lag_ago = p->w_lag_v[i];
                        break;
                }
        }
        return p->w_lag_ago;
}

/* Consumer-level verdict from the partitions' figures, in four steps:
 * sum the partitions (lp_diag_sum), derive the facts and move the
 * baselines (lp_diag_derive), decide (lp_diag_decide), publish with the
 * dwell (lp_diag_publish). Caller holds wlock and is inside the G group
 * write. @p doc_ts: the statistics document's ts when called with one
 * (baselines move), 0 from elsewhere. */
#define LP_SLOW_MIN_US 500 /* see msg_slow in lp_diag_derive */
#define LP_HOT_DOCS 3       /* see lp_diag_hot */

/* The assigned partitions, summed (rates msg/s x 1000). */
typedef struct lp_dsum_s {
        int64_t in, out, pos_rate, total_lag;
        int64_t nassigned, covered, progressing, stalled;
        int64_t top_in, top_lag, stuck_lag, stuck_redeliv;
        int64_t paused_lag, top_paused_lag;
        int top_in_slot, top_lag_slot, stuck_slot, top_paused_slot;
} lp_dsum_t;

/* What the rules read besides the sums. */
typedef struct lp_dfacts_s {
        int64_t now, dnow;    /* monotonic; the documents' clock */
        int64_t clk;          /* the documents' clock, moved on by the
                               * monotonic one between documents (they
                               * stop while the app is stuck): the
                               * verdict's dwell */
        int assigns, evicts;  /* within storm_window_ms */
        int64_t since;        /* since the last poll, -1 unknown */
        int64_t lag_ago;      /* total lag a tenth of a window ago */
        int64_t evicted, rejoined; /* since an eviction not lived down and
                                    * the assignment after it, -1 none */
        int exact;            /* batch hooks */
        double rm, rb;        /* recent per-message and batch time, us */
        int stuck, frozen, sped_up, growing, msg_slow, batch_slow;
} lp_dfacts_t;

static void lp_diag_sum(lagprobe_t *p, lp_dsum_t *m) {
        memset(m, 0, sizeof *m);
        m->top_in = m->top_lag = m->stuck_lag = m->top_paused_lag = -1;
        m->top_in_slot = m->top_lag_slot = m->stuck_slot = -1;
        m->top_paused_slot = -1;
        uint32_t n = LD(p->nslots);
        lp_slot_t *s;
        LP_FOR_ASSIGNED(p, n, i, s) {
                m->nassigned++;
                /* The statuses of the newest document: the verdict has a
                 * dwell of its own. */
                int st = LD(s->s_raw);
                if (st != LAGPROBE_PSTATUS_UNKNOWN)
                        m->covered++;
                int64_t r = LD(s->s_in_mrate), l = LD(s->s_eff_lag);
                /* A paused partition's lag counts in every total, but not
                 * its rates: its egress is 0 by the app's choice, which is
                 * no slowdown of the consumer, and its ingress is no
                 * burst (the partition_paused verdict names it). */
                if (st == LAGPROBE_PSTATUS_PAUSED)
                        r = 0;
                else
                        m->out = lp_sat_add(m->out, LD(s->s_out_mrate));
                m->in = lp_sat_add(m->in, r);
                m->pos_rate = lp_sat_add(m->pos_rate, LD(s->s_pos_mrate));
                if (LD(s->s_pos_mrate) > 0)
                        m->progressing++;
                if (l > 0)
                        m->total_lag = lp_sat_add(m->total_lag, l);
                if (r > m->top_in) {
                        m->top_in = r;
                        m->top_in_slot = (int)i;
                }
                if (l > m->top_lag) {
                        m->top_lag = l;
                        m->top_lag_slot = (int)i;
                }
                if (st == LAGPROBE_PSTATUS_STALLED) {
                        m->stalled++;
                        if (l > m->stuck_lag) {
                                m->stuck_lag = l;
                                m->stuck_slot = (int)i;
                                m->stuck_redeliv = LD(s->s_consumed);
                        }
                }
                if (st == LAGPROBE_PSTATUS_PAUSED && l > 0) {
                        m->paused_lag = lp_sat_add(m->paused_lag, l);
                        if (l > m->top_paused_lag) {
                                m->top_paused_lag = l;
                                m->top_paused_slot = (int)i;
                        }
                }
        }
}

/* The facts the rules read; moves the baselines with the documents. */
static void lp_diag_derive(lagprobe_t *p, int64_t doc_ts, const lp_dsum_t *m,
                           lp_dfacts_t *f) {
        int64_t now = f->now = lp_mono_us();
        /* Evictions are counted by the log callback; note when. */
        int64_t evictions = LD(p->evictions);
        if (evictions != p->w_seen_evictions) {
                p->w_seen_evictions = evictions;
                p->w_evict_t[p->w_evict_n++ % LP_RB_TIMES] =
                    LD(p->last_eviction_us);
        }
        int64_t storm_since = now - (int64_t)p->conf.storm_window_ms * 1000;
        f->assigns = lp_count_since(p->w_assign_t, p->w_assign_n, storm_since);
        f->evicts = lp_count_since(p->w_evict_t, p->w_evict_n, storm_since);
        /* Baselines move with the documents' own clock. */
        double dt = doc_ts > p->w_base_us && p->w_base_us > 0
                        ? (double)(doc_ts - p->w_base_us)
                        : 0;
        if (doc_ts > p->w_base_us) {
                p->w_base_us = doc_ts;
                p->w_base_mono_us = now;
        }
        f->clk = doc_ts > 0 ? doc_ts
                 : p->w_base_us > 0 ? p->w_base_us + (now - p->w_base_mono_us)
                                    : now;
        /* Per-message time: with the hooks its median; inferred (time
         * between deliveries, processing plus any wait for data) its lower
         * quartile, which is the processing time whenever a quarter of the
         * messages were already waiting; at least 10 samples. */
        int exact = f->exact = LD(p->exact);
        if (exact != p->w_base_exact) {
                /* Inferred times and the hooks' are different figures. */
                p->w_base_exact = exact;
                p->w_msg_base_us = 0;
                p->w_infer_slow_us = 0;
        }
        f->rm = lp_recent_vs_base(p, &p->h_msg, &p->w_msg_base_us, now, dt,
                                  exact ? 0.5 : 0.25, exact ? 5 : 10);
        f->rb = lp_recent_vs_base(p, &p->h_batch, &p->w_batch_base_us, now,
                                  dt, 0.5, 5);
        int64_t in = m->in, out = m->out;
        /* Rates' baselines, over covered windows only. Ingress rises into
         * its baseline slowly (six windows) and falls in three, so
         * producers speeding up stay visible and production resuming at
         * its old rate after a short lull is no burst. Egress is what the
         * consumer drains while the lag does not grow, counted up to
         * ingress (a backlog drained faster is no norm), or its first
         * figure: a consumer that never kept pace keeps that one. */
        if (m->covered > 0 && (dt > 0 || p->w_in_base < 0)) {
                lp_rate_base(p, &p->w_in_base, in, dt,
                             (double)in > p->w_in_base ? 6.0 : 3.0);
                if (p->w_out_base < 0 ||
                    (double)in <= p->conf.burst_ratio * (double)out)
                        lp_rate_base(p, &p->w_out_base, out < in ? out : in,
                                     dt, 1.0);
        }
        f->lag_ago = lp_lag_window_ago(p, doc_ts, m->total_lag);
        f->since = lp_since_poll_us(p, now);
        lp_evicted_since(p, now, &f->evicted, &f->rejoined);
        /* A stalled partition is a stuck one when the app keeps re-reading
         * it, or when others move on; when every partition stands still
         * with nothing re-read, the whole consumer is stuck in processing. */
        f->stuck = m->stuck_slot >= 0 &&
                   (m->stuck_redeliv > 0 || m->progressing > 0);
        f->frozen = m->stuck_slot >= 0 && !f->stuck &&
                    m->stalled == m->nassigned;
        double burst = p->conf.burst_ratio;
        /* Producers sped up: ingress above its own baseline. Ingress flat:
         * not below it either (fewer arrivals also lengthen the time
         * between deliveries, which is then no slowdown). */
        f->sped_up = p->w_in_base >= 0 && (double)in > burst * p->w_in_base;
        int in_flat = !f->sped_up && p->w_in_base >= 0 &&
                      (double)in * burst >= p->w_in_base;
        int prev = p->w_diag_raw, prev_cause = p->w_slow_cause;
        f->growing = m->total_lag > p->conf.lag_allowance &&
                     ((double)in > burst * (double)out ||
                      ((prev == LAGPROBE_DIAG_PRODUCER_BURST ||
                        (prev == LAGPROBE_DIAG_CONSUMER_SLOW &&
                         prev_cause >= LP_SLOW_EGRESS)) &&
                       in > out));
        /* Durations below run on the documents' clock. */
        int64_t dnow = f->dnow = p->w_base_us;
        if (!f->growing)
                p->w_grow_us = 0;
        else if (!p->w_grow_us && doc_ts > 0)
                p->w_grow_us = dnow;
        /* Slower by slow_ratio and by LP_SLOW_MIN_US at least: gaps between
         * deliveries of one fetch are microseconds, and their ratios are
         * noise, not a slowdown. */
        double rm = f->rm, rb = f->rb;
        f->msg_slow = rm > 0 && p->w_msg_base_us > 0 &&
                      rm >= p->conf.slow_ratio * p->w_msg_base_us &&
                      rm - p->w_msg_base_us >= LP_SLOW_MIN_US &&
                      (exact || in_flat);
        /* Inferred times are weaker evidence: a poison message retried
         * (seek, refetch) lengthens the gaps as much as a slow handler. It
         * must hold for one and a half windows, longer than a stalled
         * partition takes to show (one window), so the stall is named
         * first. */
        if (!f->msg_slow || exact)
                p->w_infer_slow_us = 0;
        else if (!p->w_infer_slow_us && doc_ts > 0)
                p->w_infer_slow_us = dnow;
        if (f->msg_slow && !exact &&
            (!p->w_infer_slow_us ||
             dnow - p->w_infer_slow_us < (int64_t)p->conf.window_ms * 1500))
                f->msg_slow = 0;
        f->batch_slow = rb > 0 && p->w_batch_base_us > 0 &&
                        rb >= p->conf.slow_ratio * p->w_batch_base_us &&
                        rb - p->w_batch_base_us >= LP_SLOW_MIN_US;
}

/* hot_partition: with two or more partitions, one carries at least
 * hot_share and twice its fair share of the ingress, or of the lag while
 * its position still moves. Sets *slot and the evidence; 1 when hot.
 * Partitions' watermarks reach the documents at different moments: when
 * production stops, one partition can look like the only one still
 * growing for a document, so hot only after LP_HOT_DOCS documents in a
 * row (p->w_hot_docs; *seen says whether one looked hot in this one). */
static int lp_diag_hot(lagprobe_t *p, int64_t doc_ts, const lp_dsum_t *m,
                       int *slot, int64_t *ev, int *seen) {
        int64_t in = m->in, total_lag = m->total_lag, nassigned = m->nassigned;
        double fair = 1.0 / (double)nassigned;
        double in_share = in > 0 ? (double)m->top_in / (double)in : 0;
        double lag_share =
            total_lag > 0 ? (double)m->top_lag / (double)total_lag : 0;
        double need =
            p->conf.hot_share > 2 * fair ? p->conf.hot_share : 2 * fair;
        int hot_in = nassigned >= 2 && in >= 1000 && in_share >= need;
        /* Lag piling up on a partition that still moves: hot. One that
         * does not move is a stall, judged before; one that was not
         * fetched until lately drains its backlog. */
        lp_slot_t *tl = m->top_lag_slot >= 0
                            ? lp_slot_at(p, (uint32_t)m->top_lag_slot)
                            : NULL;
        int tls = tl ? LD(tl->s_raw) : 0;
        int hot_lag = nassigned >= 2 && tl &&
                      m->top_lag > p->conf.lag_allowance &&
                      lag_share >= need && LD(tl->s_moving) &&
                      tls != LAGPROBE_PSTATUS_STALLED &&
                      tls != LAGPROBE_PSTATUS_STOPPED &&
                      tls != LAGPROBE_PSTATUS_REWOUND &&
                      tls != LAGPROBE_PSTATUS_PAUSED &&
                      LD(tl->s_stats_us) >= tl->w_paused_until_us;
        *seen = hot_in || hot_lag;
        if (!*seen)
                return 0;
        if (doc_ts > 0 && p->w_hot_docs < LP_HOT_DOCS)
                p->w_hot_docs++;
        if (p->w_hot_docs < LP_HOT_DOCS)
                return 0;
        *slot = hot_in ? m->top_in_slot : m->top_lag_slot;
        /* Saturated: a document with watermarks going back makes other
         * partitions' rates negative and the share beyond 1. */
        ev[LP_DEV_SHARE] = lp_dbl_i64((hot_in ? in_share : lag_share) * 1000);
        ev[LP_DEV_HOT_BY_LAG] = !hot_in;
        return 1;
}

/* The verdict of the rules, first that applies (README's table, in the
 * same order); its partition in *slot, consumer_slow's cause in *cause,
 * its evidence in @p ev (LP_DEV_*). */
static int lp_diag_decide(lagprobe_t *p, int64_t doc_ts, const lp_dsum_t *m,
                          const lp_dfacts_t *f, int *slot, int *cause,
                          int64_t *ev, int *hot_seen) {
        int64_t allow = p->conf.lag_allowance;
        int prev = p->w_diag_raw, prev_cause = p->w_slow_cause;
        if (f->assigns > p->conf.storm_rebalances || f->evicts > 1) {
                lp_hsum_t recent;
                lp_whist_range(&p->h_batch, p->win_us, f->now, 0, LP_WIN - 1,
                               &recent);
                ev[LP_DEV_ASSIGNS] = f->assigns;
                ev[LP_DEV_EVICTS] = f->evicts;
                /* No batch finished in the window yet (they are that long):
                 * the all-time p99, or the batch under way if longer; -1
                 * when no batch was ever measured (no hooks). */
                if (!recent.count)
                        lp_whist_read(&p->h_batch, p->win_us, f->now, &recent,
                                      NULL);
                int64_t p99 =
                    recent.count ? lp_dbl_i64(lp_hsum_pct(&recent, 0.99)) : -1;
                int64_t cur =
                    LD(p->b_in_batch) ? f->now - LD(p->b_begin_us) : -1;
                ev[LP_DEV_BATCH_US] = cur > p99 ? cur : p99;
                return LAGPROBE_DIAG_REBALANCE_STORM;
        }
        if (f->stuck) {
                *slot = m->stuck_slot;
                ev[LP_DEV_STUCK_LAG] = m->stuck_lag;
                ev[LP_DEV_REDELIVERED] = m->stuck_redeliv;
                return LAGPROBE_DIAG_STUCK_PARTITION;
        }
        if (lp_headroom_level(p, f->since) >= 1 || f->frozen) {
                *cause = LP_SLOW_NO_POLL;
                ev[LP_DEV_NO_POLL_US] = f->since > 0 ? f->since : 0;
                return LAGPROBE_DIAG_CONSUMER_SLOW;
        }
        if (f->evicted >= 0) {
                *cause = LP_SLOW_EVICTED;
                ev[LP_DEV_EVICTED_US] = f->evicted;
                ev[LP_DEV_REJOINED_US] = f->rejoined;
                return LAGPROBE_DIAG_CONSUMER_SLOW;
        }
        if (m->nassigned == 0 || m->covered == 0)
                return LAGPROBE_DIAG_UNKNOWN;
        if (m->top_paused_slot >= 0 && m->total_lag > allow &&
            2 * m->paused_lag >= m->total_lag) {
                /* Before the rates: a paused partition also lowers
                 * egress, which is no slowdown. */
                *slot = m->top_paused_slot;
                ev[LP_DEV_PAUSED_LAG] = m->paused_lag;
                return LAGPROBE_DIAG_PARTITION_PAUSED;
        }
        if (f->msg_slow || f->batch_slow) {
                *cause = f->msg_slow ? LP_SLOW_MESSAGE : LP_SLOW_BATCH;
                return LAGPROBE_DIAG_CONSUMER_SLOW;
        }
        if (lp_diag_hot(p, doc_ts, m, slot, ev, hot_seen))
                return LAGPROBE_DIAG_HOT_PARTITION;
        if (f->growing &&
            (f->sped_up || (prev == LAGPROBE_DIAG_PRODUCER_BURST &&
                            (double)m->in > p->w_in_base))) {
                /* Producers above their own baseline: entered above
                 * burst_ratio, kept while ingress stays above its baseline
                 * and above egress. */
                return LAGPROBE_DIAG_PRODUCER_BURST;
        }
        if (f->growing) {
                /* Lag grows and producers did not speed up: the consumer
                 * drains less than before, or never drained enough
                 * (under-provisioned, only once the lag has grown for a
                 * window with egress where it always was). Named once: a
                 * slowdown stays one as the egress baseline follows it
                 * down. */
                *cause = (p->w_out_base > 0 &&
                          (double)m->out < 0.9 * p->w_out_base) ||
                                 (prev == LAGPROBE_DIAG_CONSUMER_SLOW &&
                                  prev_cause == LP_SLOW_EGRESS)
                             ? LP_SLOW_EGRESS
                         : p->w_grow_us && f->dnow - p->w_grow_us >=
                                               (int64_t)p->conf.window_ms * 1000
                             ? LP_SLOW_UNDER
                             : LP_SLOW_BEHIND;
                return LAGPROBE_DIAG_CONSUMER_SLOW;
        }
        /* Healthy. Draining: positions gain on ingress and the lag is not
         * above what it was a tenth of a window ago. */
        int64_t drain = lp_sat_sub(m->pos_rate, m->in);
        int c = m->total_lag <= allow ? 0
                : drain > 0 && m->out > m->in &&
                        (f->lag_ago < 0 || m->total_lag <= f->lag_ago)
                    ? 1
                    : 2;
        ev[LP_DEV_CATCHING] = c;
        if (c == 1)
                ev[LP_DEV_DRAIN_MS] = lp_muldiv(m->total_lag, 1000000, drain);
        return LAGPROBE_DIAG_HEALTHY;
}

/* Publishes the figures and evidence, and the verdict shown. Hysteresis:
 * the verdict shown (and its event) changes once the new verdict, naming
 * the same partition, held for the dwell; at once for the first one, for
 * no data, and for what cannot wait: evictions and storms, a stuck
 * partition, a consumer that stopped polling. */
static void lp_diag_publish(lagprobe_t *p, const lp_dsum_t *m,
                            const lp_dfacts_t *f, int d, int slot, int cause,
                            int64_t *ev) {
        ST(p->g_in_mrate, m->in);
        ST(p->g_out_mrate, m->out);
        ST(p->g_total_lag, m->total_lag);
        ST(p->g_in_base, p->w_in_base >= 0 ? lp_dbl_i64(p->w_in_base) : -1);
        ST(p->g_out_base, p->w_out_base >= 0 ? lp_dbl_i64(p->w_out_base) : -1);
        int tsrc = f->rm > 0 ? LP_TSRC_MESSAGE
                   : f->rb > 0 ? LP_TSRC_BATCH
                               : LP_TSRC_NONE;
        ST(p->g_time_src, tsrc);
        ST(p->g_time_us, lp_dbl_i64(tsrc == LP_TSRC_MESSAGE ? f->rm
                                   : tsrc == LP_TSRC_BATCH ? f->rb
                                                           : -1));
        ST(p->g_time_base_us,
           lp_dbl_i64(tsrc == LP_TSRC_MESSAGE ? p->w_msg_base_us
                     : tsrc == LP_TSRC_BATCH ? p->w_batch_base_us
                                             : -1));
        ST(p->g_time_inferred, tsrc == LP_TSRC_MESSAGE && !f->exact);
        ST(p->g_slow_cause, cause);
        p->w_slow_cause = cause;
        if (d != p->w_diag_raw || slot != p->w_diag_raw_slot) {
                p->w_diag_raw = d;
                p->w_diag_raw_slot = slot;
                p->w_diag_raw_us = f->clk;
        }
        ev[LP_DEV_RAW] = d;
        ev[LP_DEV_RAW_SLOT] = slot;
        ev[LP_DEV_HELD_US] = f->clk - p->w_diag_raw_us;
        for (int k = 0; k < LP_DEV__CNT; k++)
                ST(p->g_dev[k], ev[k]);
        int shown = LD(p->g_diag);
        if ((d != shown || slot != LD(p->g_diag_slot)) &&
            (shown == LAGPROBE_DIAG_UNKNOWN || d == LAGPROBE_DIAG_UNKNOWN ||
             d == LAGPROBE_DIAG_REBALANCE_STORM ||
             d == LAGPROBE_DIAG_STUCK_PARTITION || cause == LP_SLOW_NO_POLL ||
             cause == LP_SLOW_EVICTED ||
             ev[LP_DEV_HELD_US] >= p->dwell_us)) {
                ST(p->g_diag, d);
                ST(p->g_diag_slot, slot);
                ST(p->g_diag_changes, LD(p->g_diag_changes) + 1);
        }
}

static void lp_diagnose(lagprobe_t *p, int64_t doc_ts) {
        lp_dsum_t m;
        lp_dfacts_t f;
        lp_diag_sum(p, &m);
        lp_diag_derive(p, doc_ts, &m, &f);
        int slot = -1, cause = LP_SLOW_NONE, hot_seen = 0;
        int64_t ev[LP_DEV__CNT];
        for (int k = 0; k < LP_DEV__CNT; k++)
                ev[k] = -1;
        int d = lp_diag_decide(p, doc_ts, &m, &f, &slot, &cause, ev, &hot_seen);
        /* LP_HOT_DOCS counts documents in a row that found one hot. */
        if (!hot_seen)
                p->w_hot_docs = 0;
        lp_diag_publish(p, &m, &f, d, slot, cause, ev);
}

/* What the verdict knows of processing time, for texts that would
 * otherwise claim it is fine. */
static void lp_time_clause(const lagprobe_snapshot_t *o, char *r, size_t rn) {
        if (!strcmp(o->time_source, "none"))
                snprintf(r, rn,
                         "processing time not measured (%s)",
                         o->exact ? "no batch timed yet"
                                  : "no batch hooks, too few deliveries");
        else
                snprintf(r, rn, "%s time p%s %.1f ms as before (%.1f ms, %s)",
                         strcmp(o->time_source, "batch") ? "per-message"
                                                         : "batch",
                         o->time_inferred ? "25" : "50", o->time_recent_ms,
                         o->time_baseline_ms,
                         o->time_inferred ? "inferred" : "hooks");
}

static lagprobe_diagnosis_t lp_diag_of(int64_t dg) {
        return dg >= 0 && dg < LAGPROBE_DIAG__CNT ? (lagprobe_diagnosis_t)dg
                                                  : LAGPROBE_DIAG_UNKNOWN;
}

/* The partition a verdict names: its slot's topic (NULL none) and number. */
static const char *lp_diag_part(lagprobe_t *p, int64_t slot, int32_t *pt) {
        *pt = -1;
        if (slot < 0 || slot >= (int64_t)LD(p->nslots))
                return NULL;
        lp_slot_t *s = lp_slot_at(p, (uint32_t)slot);
        *pt = s->partition;
        return s->topic;
}

/* consumer_slow's detail, by its cause (LP_SLOW_*). */
static void lp_slow_detail(lagprobe_t *p, const lagprobe_snapshot_t *o,
                           int cause, const int64_t *ev, char *r, size_t rn) {
        if (cause == LP_SLOW_EGRESS)
                snprintf(r, rn,
                         "consumer drains %.1f msg/s, down from %.1f "
                         "msg/s, while producers append %.1f msg/s "
                         "as before; lag %" PRId64 " growing: "
                         "processing slowed down",
                         o->egress_rate, o->egress_baseline,
                         o->ingress_rate, o->total_lag);
        else if (cause == LP_SLOW_BEHIND)
                snprintf(r, rn,
                         "consumer drains %.1f msg/s (baseline %.1f) "
                         "while producers append %.1f msg/s as "
                         "before; lag %" PRId64 " growing",
                         o->egress_rate, o->egress_baseline,
                         o->ingress_rate, o->total_lag);
        else if (cause == LP_SLOW_UNDER)
                snprintf(r, rn,
                         "under-provisioned: producers append %.1f "
                         "msg/s as before, consumer drains only %.1f "
                         "msg/s as before; lag %" PRId64 " growing: "
                         "add consumers (and partitions) or speed up "
                         "processing",
                         o->ingress_rate, o->egress_rate,
                         o->total_lag);
        else if (cause == LP_SLOW_NO_POLL)
                snprintf(r, rn,
                         "no poll for %" PRId64 " ms of "
                         "max.poll.interval.ms=%" PRId64 " and no "
                         "partition progressing: processing is "
                         "blocked or far too slow",
                         ev[LP_DEV_NO_POLL_US] / 1000,
                         p->max_poll_interval_ms);
        else if (cause == LP_SLOW_EVICTED && ev[LP_DEV_REJOINED_US] < 0)
                snprintf(r, rn,
                         "evicted %.1f s ago (no poll within "
                         "max.poll.interval.ms=%" PRId64 "), no "
                         "assignment since",
                         (double)ev[LP_DEV_EVICTED_US] / 1e6,
                         p->max_poll_interval_ms);
        else if (cause == LP_SLOW_EVICTED)
                snprintf(r, rn,
                         "evicted %.1f s ago (no poll within "
                         "max.poll.interval.ms=%" PRId64 "), assigned "
                         "again %.1f s ago: not yet polling in time for "
                         "%.1f s",
                         (double)ev[LP_DEV_EVICTED_US] / 1e6,
                         p->max_poll_interval_ms,
                         (double)ev[LP_DEV_REJOINED_US] / 1e6,
                         (double)lp_evict_hold_us(p) / 1e6);
        else
                snprintf(r, rn,
                         "%s time p%s %.1f ms, was %.1f ms%s: "
                         "processing slowed down",
                         cause == LP_SLOW_BATCH ? "batch"
                                                : "per-message",
                         o->time_inferred ? "25" : "50",
                         o->time_recent_ms, o->time_baseline_ms,
                         o->time_inferred
                             ? " (inferred from deliveries)"
                             : "");
}

/* rebalance_storm's detail: evictions with the batch time behind them, or
 * members coming and going. */
static void lp_storm_detail(lagprobe_t *p, const int64_t *ev, char *r,
                            size_t rn) {
        if (ev[LP_DEV_EVICTS] > 0 && ev[LP_DEV_BATCH_US] >= 0)
                snprintf(r, rn,
                         "%" PRId64 " assignments and %" PRId64
                         " evictions in %d s: batch time (p99 %.0f "
                         "ms) near max.poll.interval.ms=%" PRId64
                         "; process fewer messages per poll or raise "
                         "max.poll.interval.ms",
                         ev[LP_DEV_ASSIGNS], ev[LP_DEV_EVICTS],
                         p->conf.storm_window_ms / 1000,
                         (double)ev[LP_DEV_BATCH_US] / 1000.0,
                         p->max_poll_interval_ms);
        else if (ev[LP_DEV_EVICTS] > 0)
                snprintf(r, rn,
                         "%" PRId64 " assignments and %" PRId64
                         " evictions in %d s: time between polls "
                         "exceeded max.poll.interval.ms=%" PRId64
                         " (batch time not measured: no batch "
                         "hooks); process fewer messages per poll or "
                         "raise max.poll.interval.ms",
                         ev[LP_DEV_ASSIGNS], ev[LP_DEV_EVICTS],
                         p->conf.storm_window_ms / 1000,
                         p->max_poll_interval_ms);
        else
                snprintf(r, rn,
                         "%" PRId64 " assignments in %d s without "
                         "evictions: group members joining and "
                         "leaving (deploys, crashes, session "
                         "timeouts)",
                         ev[LP_DEV_ASSIGNS],
                         p->conf.storm_window_ms / 1000);
}

/* The verdict shown (@p dg, naming @p slot) and the detail of the newest
 * document's verdict, from the evidence @p ev (LP_DEV_*): the same while
 * no change waits out the dwell, else the detail says what is coming. */
static void lp_read_diag(lagprobe_t *p, lagprobe_snapshot_t *o, int dg,
                         int slot, const int64_t *ev, int cause) {
        o->diagnosis = lp_diag_of(dg);
        o->diagnosis_name = lp_diag_names[o->diagnosis];
        o->diagnosis_topic = lp_diag_part(p, slot, &o->diagnosis_partition);
        lagprobe_diagnosis_t raw = lp_diag_of(ev[LP_DEV_RAW]);
        int32_t pt;
        const char *t = lp_diag_part(p, ev[LP_DEV_RAW_SLOT], &pt);
        int pending = raw != o->diagnosis || ev[LP_DEV_RAW_SLOT] != slot;
        o->diagnosis_share = !pending && raw == LAGPROBE_DIAG_HOT_PARTITION
                                 ? (double)ev[LP_DEV_SHARE] / 1000.0
                                 : 0;
        char *r = o->diagnosis_detail;
        size_t rn = sizeof o->diagnosis_detail;
        if (pending) {
                /* "now X for 0.2 s of 0.6 s: ..." */
                int64_t held = ev[LP_DEV_HELD_US];
                int w = snprintf(r, rn, "now %s for %.1f s of %.1f s: ",
                                 lp_diag_names[raw],
                                 (double)(held > 0 ? held : 0) / 1e6,
                                 (double)p->dwell_us / 1e6);
                if (w > 0 && (size_t)w < rn) {
                        r += w;
                        rn -= (size_t)w;
                }
        }
        if (!t)
                t = "";
        switch (raw) {
        case LAGPROBE_DIAG_UNKNOWN:
                snprintf(r, rn, "not enough data yet");
                break;
        case LAGPROBE_DIAG_PARTITION_PAUSED:
                snprintf(r, rn,
                         "%s [%" PRId32 "] not fetched (paused by the app or "
                         "its queue is full) while producers append; lag "
                         "%" PRId64 " on paused partitions",
                         t, pt, ev[LP_DEV_PAUSED_LAG]);
                break;
        case LAGPROBE_DIAG_HEALTHY:
                if (ev[LP_DEV_CATCHING] == 1)
                        snprintf(r, rn,
                                 "catching up: lag %" PRId64 ", about %.0f s "
                                 "to drain",
                                 o->total_lag,
                                 (double)ev[LP_DEV_DRAIN_MS] / 1000.0);
                else if (ev[LP_DEV_CATCHING] == 2)
                        snprintf(r, rn,
                                 "total lag %" PRId64 " above the "
                                 "allowance of %" PRId64 ", not shrinking; "
                                 "ingress about equal to egress",
                                 o->total_lag, p->conf.lag_allowance);
                else
                        snprintf(r, rn, "consumer keeps up");
                break;
        case LAGPROBE_DIAG_PRODUCER_BURST: {
                char tc[96];
                lp_time_clause(o, tc, sizeof tc);
                snprintf(r, rn,
                         "producers append %.1f msg/s, up from %.1f msg/s; "
                         "consumer drains %.1f msg/s; lag %" PRId64 "; %s",
                         o->ingress_rate, o->ingress_baseline, o->egress_rate,
                         o->total_lag, tc);
                break;
        }
        case LAGPROBE_DIAG_CONSUMER_SLOW:
                lp_slow_detail(p, o, cause, ev, r, rn);
                break;
        case LAGPROBE_DIAG_REBALANCE_STORM:
                lp_storm_detail(p, ev, r, rn);
                break;
        case LAGPROBE_DIAG_STUCK_PARTITION:
                snprintf(r, rn,
                         "%s [%" PRId32 "] stalled with lag %" PRId64
                         " (%" PRId64 " messages re-consumed): likely a "
                         "poison message",
                         t, pt, ev[LP_DEV_STUCK_LAG], ev[LP_DEV_REDELIVERED]);
                break;
        case LAGPROBE_DIAG_HOT_PARTITION:
                snprintf(r, rn, "%s [%" PRId32 "] carries %.0f %% of the %s",
                         t, pt, (double)ev[LP_DEV_SHARE] / 10.0,
                         ev[LP_DEV_HOT_BY_LAG] ? "lag" : "incoming messages");
                break;
        default:
                r[0] = 0;
        }
}

/* Whether the probe has lost its view: lag, watermarks and the verdict
 * come from statistics documents, so with an assignment and no document
 * for more than three statistics.interval.ms it cannot see. While the app
 * does not poll, no document can arrive (librdkafka serves them inside
 * poll calls, after the messages queued before them): a stall since the
 * last document is what the headroom reports, not blindness. Once
 * documents did arrive, a gap must also pass LP_STATS_GAP_US: a short
 * interval (tests use 100 ms) is easily missed by one slow poll. */
enum { LP_SEES = 0, LP_BLIND_OFF, LP_BLIND_MISSING };
#define LP_STATS_GAP_US 10000000

static int lp_blind(const lagprobe_t *p, int64_t now_us, int64_t last_doc_us,
                    int64_t since_poll_us, int64_t assignment_size) {
        if (!LD(p->bound) || assignment_size <= 0)
                return LP_SEES;
        if (p->stats_interval_ms <= 0)
                return LP_BLIND_OFF;
        int64_t limit = 3 * p->stats_interval_ms * 1000;
        int64_t from = last_doc_us > 0 ? last_doc_us : p->bound_us;
        int64_t gap = last_doc_us > 0 && limit < LP_STATS_GAP_US
                          ? LP_STATS_GAP_US
                          : limit;
        if (now_us - from <= gap || since_poll_us > limit ||
            LD(p->stall_seen_us) >= from)
                return LP_SEES;
        return LP_BLIND_MISSING;
}

/* The health verdict and its reasons (README "Health"), from the figures
 * lp_read_global_x() copied. */
static void lp_health_fill(lagprobe_t *p, lagprobe_snapshot_t *o,
                           int64_t now_us, int bound, int64_t last_assign,
                           int64_t batch_begin, int64_t last_cerr_us,
                           int64_t slast, int64_t since, int rb_blind,
                           int bdown_n) {
        int64_t asize = o->assignment_size;
        unsigned r = 0;
        if (!bound)
                r |= LAGPROBE_REASON_NOT_RUNNING;
        if (o->headroom_level == 2)
                r |= LAGPROBE_REASON_HEADROOM_CRITICAL;
        if (o->headroom_level == 1)
                r |= LAGPROBE_REASON_HEADROOM_WARN;
        int64_t last_ev = LD(p->last_eviction_us);
        if (last_ev > 0 && last_ev >= last_assign)
                r |= LAGPROBE_REASON_EVICTED;
        if (bound && asize == 0 && p->conf.unassigned_unhealthy_ms > 0 &&
            o->unassigned_ms > p->conf.unassigned_unhealthy_ms)
                r |= LAGPROBE_REASON_NO_ASSIGNMENT;
        if (o->in_batch && LD(p->predicted_batch_us) == batch_begin)
                r |= LAGPROBE_REASON_PREDICTED_EXCEED;
        if (last_cerr_us > 0 && now_us - last_cerr_us < LP_COMMIT_FAILING_US)
                r |= LAGPROBE_REASON_COMMIT_FAILING;
        if (lp_blind(p, now_us, slast, since, asize))
                r |= LAGPROBE_REASON_NO_STATISTICS;
        if (bound && rb_blind)
                r |= LAGPROBE_REASON_NO_REBALANCES;
        /* Degraded, not unhealthy: restarting the app does not bring a
         * broker back, and librdkafka reconnects by itself. */
        if (bound && bdown_n > 0)
                r |= LAGPROBE_REASON_BROKERS_DOWN;
        o->health_reasons = r;
        o->health = r & (LAGPROBE_REASON_NOT_RUNNING |
                         LAGPROBE_REASON_HEADROOM_CRITICAL |
                         LAGPROBE_REASON_EVICTED | LAGPROBE_REASON_NO_ASSIGNMENT)
                        ? LAGPROBE_HEALTH_UNHEALTHY
                    : r ? LAGPROBE_HEALTH_DEGRADED
                        : LAGPROBE_HEALTH_OK;
}

/* ========================================================================
 * MARK: 9. Snapshot
 *
 * Consistent copies for readers (any thread): one slot (C and S groups,
 * each under its own sequence counter), the probe-wide figures, and
 * lagprobe_snapshot().
 * ===================================================================== */

/* o->status_reason of a slot lp_read_slot() has copied into o, from its
 * status facts ev. The text without printf: JSON renders write one for
 * every partition. Truncated like snprintf() at the field's size. It tells
 * the newest document's status; while that waits out the dwell, it says
 * so first. */
static void lp_slot_reason(const lagprobe_t *p, lp_slot_t *s,
                           const lp_sev_t *ev, lagprobe_partition_t *o) {
        lp_out_t r = {o->status_reason, sizeof o->status_reason, 0, NULL};
        int raw = ev->raw >= 0 && ev->raw < LAGPROBE_PSTATUS__CNT
                      ? ev->raw
                      : LAGPROBE_PSTATUS_UNKNOWN;
        if (raw != (int)o->status) {
                int64_t held = lp_sat_sub(LD(s->s_stats_us), ev->raw_us);
                lp_puts(&r, "now ");
                lp_puts(&r, lp_pstatus_names[raw]);
                lp_puts(&r, " for ");
                lp_put_span(&r, held / 1000);
                lp_puts(&r, " s of ");
                lp_put_span(&r, p->dwell_us / 1000);
                lp_puts(&r, " s: ");
        }
        lp_put_reason(p, &r, raw, ev, o);
        lp_render_end(&r);
}

/* Consistent copy of one slot (C and S groups each read under their own
 * sequence counter), the figures derived from it, and with reason set the
 * status text (lp_slot_reason). */
static void lp_read_slot(const lagprobe_t *p, lp_slot_t *s, int64_t now_us,
                         int64_t now_wall_ms, int reason,
                         lagprobe_partition_t *o) {
        int64_t pos, consumed, last_ts, total, base;
        uint32_t q;
        do {
                q = lp_rbegin(&s->cseq);
                pos = LD(s->c_position);
                last_ts = LD(s->c_last_ts);
                total = LD(s->c_total);
        } while (lp_rretry(&s->cseq, q));
        int64_t hi, lo, ls, app, committed, fq, fqs, stats_us, prog, cerrs;
        int64_t inr, outr, cmr, eta, hiq;
        lp_sev_t ev;
        int lcerr, stale, st;
        do {
                q = lp_rbegin(&s->sseq);
                hi = LD(s->s_hi);
                lo = LD(s->s_lo);
                ls = LD(s->s_ls);
                app = LD(s->s_app_offset);
                committed = LD(s->s_committed);
                fq = LD(s->s_fetchq_cnt);
                fqs = LD(s->s_fetchq_size);
                stats_us = LD(s->s_hi_ok_us);
                prog = LD(s->s_progress_us);
                cerrs = LD(s->s_commit_errs);
                lcerr = LD(s->s_last_commit_err);
                stale = LD(s->s_stale);
                base = LD(s->s_c_base);
                st = LD(s->s_status);
                ev.lag_min = LD(s->s_lag_min);
                ev.lag_ago = LD(s->s_lag_ago);
                ev.rw_from = LD(s->s_rw_from);
                ev.rw_to = LD(s->s_rw_to);
                ev.raw_us = LD(s->s_raw_us);
                ev.raw = LD(s->s_raw);
                ev.span_ms = LD(s->s_span_ms);
                ev.paused_ms = LD(s->s_paused_ms);
                ev.growing = LD(s->s_growing);
                ev.rw_commit = LD(s->s_rw_commit);
                ev.consumed = LD(s->s_consumed);
                inr = LD(s->s_in_mrate);
                outr = LD(s->s_out_mrate);
                cmr = LD(s->s_commit_mrate);
                eta = LD(s->s_eta_ms);
                hiq = LD(s->s_hi_query);
        } while (lp_rretry(&s->sseq, q));
        if (hiq > hi) /* the statistics' figure is frozen behind */
                stale = 1;
        hi = lp_end(hi, hiq);

        memset(o, 0, sizeof *o);
        o->topic = s->topic;
        o->partition = s->partition;
        o->high_watermark = hi;
        o->low_watermark = lo;
        o->last_stable_offset = ls;
        /* The two groups are read apart: a message in between shows as
         * one more consumed, never as fewer than none. */
        consumed = total - base;
        if (consumed <= 0 || pos < 0) {
                /* Nothing consumed since this assignment. */
                consumed = 0;
                pos = app >= 0 ? app : committed;
                last_ts = -1;
        }
        o->position = pos >= 0 ? pos : -1;
        o->committed_offset = committed >= 0 ? committed : -1;
        o->lag = lp_lag(hi, committed);
        o->position_lag = lp_pos_lag(hi, o->position);
        o->consumed = consumed;
        o->last_message_ts_ms = last_ts > 0 ? last_ts : -1;
        if (o->position_lag == 0)
                o->seconds_behind = 0;
        else if (o->last_message_ts_ms > 0)
                o->seconds_behind =
                    now_wall_ms > last_ts
                        ? (double)(now_wall_ms - last_ts) / 1000.0
                        : 0;
        else
                o->seconds_behind = -1;
        o->fetchq_cnt = fq;
        o->fetchq_size = fqs;
        o->last_progress_ms_ago = prog > 0 ? (now_us - prog) / 1000 : -1;
        o->hwm_age_ms =
            stats_us > 0 && hi >= 0 ? (now_us - stats_us) / 1000 : -1;
        /* Statistics stop while the app is stuck in a batch (they are served
         * inside poll): an old figure is as stale as a stopped fetcher's. */
        o->stale = stale || (o->hwm_age_ms >= 0 && p->stats_interval_ms > 0 &&
                             o->hwm_age_ms > 3 * p->stats_interval_ms);
        o->commit_errors = cerrs;
        o->last_commit_err = lcerr;
        o->consumed_total = total;

        o->status = st >= 0 && st < LAGPROBE_PSTATUS__CNT
                        ? (lagprobe_pstatus_t)st
                        : LAGPROBE_PSTATUS_UNKNOWN;
        o->status_name = lp_pstatus_names[o->status];
        o->effective_lag = lp_eff_lag(o->status, hi, committed, o->position);
        o->ingress_rate = (double)inr / 1000.0;
        o->egress_rate = (double)outr / 1000.0;
        o->commit_rate = (double)cmr / 1000.0;
        o->eta_seconds = eta >= 0 ? (double)eta / 1000.0 : -1;
        if (reason)
                lp_slot_reason(p, s, &ev, o);
}

void lagprobe_snapshot_init(lagprobe_snapshot_t *snap,
                            lagprobe_partition_t *parts, size_t parts_size) {
        if (!snap)
                return;
        memset(snap, 0, sizeof *snap);
        snap->struct_size = sizeof *snap;
        snap->partitions = parts;
        snap->partitions_size = parts ? parts_size : 0;
}

/* The processing-time histograms (all time and recent) and their
 * sources. */
static void lp_read_hists(lagprobe_t *p, int64_t now_us,
                          lagprobe_snapshot_t *o) {
        lp_hsum_t t[2];
        lp_whist_read(&p->h_batch, p->win_us, now_us, &t[0], &t[1]);
        lp_hsum_summary(&t[0], &o->batch);
        lp_hsum_summary(&t[1], &o->batch_recent);
        lp_whist_read(&p->h_msg, p->win_us, now_us, &t[0], &t[1]);
        lp_hsum_summary(&t[0], &o->message);
        lp_hsum_summary(&t[1], &o->message_recent);
        lp_whist_read(&p->h_gap, p->win_us, now_us, &t[0], &t[1]);
        lp_hsum_summary(&t[0], &o->poll_gap);
        lp_hsum_summary(&t[1], &o->poll_gap_recent);
        /* Hooks once used are the only source; before that, on_consume's
         * inference (lp_infer) when it has recorded anything. */
        const char *src = o->exact           ? "hooks"
                          : LD(p->inferred) ? "inferred"
                                            : "none";
        o->batch_source = o->exact && o->batch.count ? "hooks" : "none";
        o->message_source = o->message.count ? src : "none";
        o->poll_gap_source = o->poll_gap.count ? src : "none";
}

/* The poll figures: time since the last poll, headroom and its level,
 * the batch under way (its start in *batch_begin). Returns the time since
 * the last poll (us, -1 unknown). */
static int64_t lp_read_poll(lagprobe_t *p, int64_t now_us,
                            lagprobe_snapshot_t *o, int64_t *batch_begin) {
        uint32_t q;
        o->max_poll_interval_ms = p->max_poll_interval_ms;
        o->session_timeout_ms = p->session_timeout_ms;
        o->heartbeat_interval_ms = p->heartbeat_interval_ms;
        int64_t since = lp_since_poll_us(p, now_us);
        o->since_last_poll_ms = since >= 0 ? since / 1000 : -1;
        o->headroom_ms = p->max_poll_interval_ms -
                         (since > 0 ? since / 1000 : 0);
        o->exact = LD(p->exact);
        do {
                q = lp_rbegin(&p->bseq);
                o->in_batch = LD(p->b_in_batch);
                o->batch_size = LD(p->b_size);
                o->batch_done = LD(p->b_done);
                *batch_begin = LD(p->b_begin_us);
        } while (lp_rretry(&p->bseq, q));
        o->batch_elapsed_ms = o->in_batch ? (now_us - *batch_begin) / 1000 : 0;
        o->evictions = LD(p->evictions);
        o->hook_errors = LD(p->hook_errors);
        /* Computed here, not taken from the watchdog, so the verdict holds
         * in tick mode too and matches the figures beside it. */
        o->headroom_level = lp_headroom_level(p, since);
        return since;
}

/* Everything but the partition array; o->consumed only when @p consumed
 * (a sum over every slot's C group, which renders take from their own pass
 * over the slots instead). One read of the G group under its sequence
 * counter into locals, then their translation: kept in one function so
 * every figure of a snapshot comes from the same update. */
static void lp_read_global_x(lagprobe_t *p, int64_t now_us,
                             lagprobe_snapshot_t *o, int consumed) {
        uint32_t q;
        int64_t assigns, revokes, lost, last_rb, unassigned_since, last_unas,
            asize, cgrp_rb, docs, serr, sferr, slast, commits, cerrs,
            last_assign, last_cerr_us, in_mr, out_mr, tlag,
            in_base, out_base, t_us, t_base_us;
        int proto, rberr, cstate, lcerr, dg, dg_slot, tsrc, tinf, cause,
            rb_blind, bdown_n;
        int32_t bdown[LP_BDOWN_MAX];
        int64_t dev[LP_DEV__CNT];
        do {
                q = lp_rbegin(&p->gseq);
                assigns = LD(p->g_assigns);
                revokes = LD(p->g_revokes);
                lost = LD(p->g_lost);
                last_rb = LD(p->g_last_rebalance_us);
                unassigned_since = LD(p->g_unassigned_since_us);
                last_unas = LD(p->g_last_unassigned_us);
                proto = LD(p->g_protocol);
                rberr = LD(p->g_last_rebalance_err);
                asize = LD(p->g_assignment_size);
                cgrp_rb = LD(p->g_cgrp_rebalance_cnt);
                cstate = LD(p->g_cgrp_state);
                docs = LD(p->g_stats_docs);
                serr = LD(p->g_stats_errors);
                sferr = LD(p->g_stats_field_errors);
                slast = LD(p->g_stats_last_us);
                commits = LD(p->g_commits);
                cerrs = LD(p->g_commit_errors);
                lcerr = LD(p->g_last_commit_err);
                last_assign = LD(p->g_last_assign_us);
                last_cerr_us = LD(p->g_last_commit_err_us);
                dg = LD(p->g_diag);
                dg_slot = LD(p->g_diag_slot);
                for (int k = 0; k < LP_DEV__CNT; k++)
                        dev[k] = LD(p->g_dev[k]);
                in_mr = LD(p->g_in_mrate);
                out_mr = LD(p->g_out_mrate);
                tlag = LD(p->g_total_lag);
                rb_blind = LD(p->g_rb_blind);
                bdown_n = LD(p->g_bdown_n);
                if (bdown_n < 0 || bdown_n > LP_BDOWN_MAX)
                        bdown_n = 0;
                for (int i = 0; i < bdown_n; i++)
                        bdown[i] = LD(p->g_bdown[i]);
                in_base = LD(p->g_in_base);
                out_base = LD(p->g_out_base);
                t_us = LD(p->g_time_us);
                t_base_us = LD(p->g_time_base_us);
                tsrc = LD(p->g_time_src);
                tinf = LD(p->g_time_inferred);
                cause = LD(p->g_slow_cause);
        } while (lp_rretry(&p->gseq, q));
        o->brokers_down_cnt = bdown_n;
        o->hwm_queries = LD(p->rf_queries);
        o->hwm_query_failures = LD(p->rf_failures);
        for (int i = 0; i < bdown_n; i++)
                o->brokers_down[i] = bdown[i];
        o->ingress_rate = (double)in_mr / 1000.0;
        o->egress_rate = (double)out_mr / 1000.0;
        o->total_lag = tlag;
        o->ingress_baseline = in_base >= 0 ? (double)in_base / 1000.0 : -1;
        o->egress_baseline = out_base >= 0 ? (double)out_base / 1000.0 : -1;
        o->time_source = tsrc == LP_TSRC_MESSAGE ? "message"
                         : tsrc == LP_TSRC_BATCH ? "batch"
                                                 : "none";
        o->time_recent_ms = tsrc ? (double)t_us / 1000.0 : -1;
        o->time_baseline_ms = tsrc ? (double)t_base_us / 1000.0 : -1;
        o->time_inferred = tsrc == LP_TSRC_MESSAGE && tinf;

        int bound = LD(p->bound);
        int seen = LD(p->rk_seen);
        o->bound = bound;
        o->group_id = seen ? p->group_id : "";
        o->client_id = seen ? p->client_id : "";
        o->name = LD(p->name_set) ? p->name : "";
        o->assigns = assigns;
        o->revokes = revokes;
        o->lost = lost;
        o->rebalances = assigns + revokes;
        o->last_rebalance_ms_ago = last_rb > 0 ? (now_us - last_rb) / 1000 : -1;
        o->unassigned_ms =
            unassigned_since > 0 ? (now_us - unassigned_since) / 1000 : 0;
        o->last_unassigned_ms = last_unas > 0 ? last_unas / 1000 : -1;
        o->protocol = lp_proto_names[proto >= 0 && proto <= 2 ? proto : 0];
        o->assignment_size = asize;
        o->last_rebalance_err = rberr;
        o->cgrp_rebalance_cnt = cgrp_rb;
        snprintf(o->cgrp_state, sizeof o->cgrp_state, "%s",
                 lp_cgrp_states[cstate >= 0 && (size_t)cstate < LP_CGRP_STATES
                                    ? cstate
                                    : 0]);
        o->stats_docs = docs;
        o->stats_errors = serr;
        o->stats_field_errors = sferr;
        o->stats_last_ms_ago = slast > 0 ? (now_us - slast) / 1000 : -1;
        o->commits = commits;
        o->commit_errors = cerrs;
        o->last_commit_err = lcerr;

        int64_t batch_begin, since = lp_read_poll(p, now_us, o, &batch_begin);
        lp_health_fill(p, o, now_us, bound, last_assign, batch_begin,
                       last_cerr_us, slast, since, rb_blind, bdown_n);
        lp_read_hists(p, now_us, o);
        /* Last: the detail text reads the figures above. */
        lp_read_diag(p, o, dg, dg_slot, dev, cause);
        o->consumed = 0;
        uint32_t n = consumed ? LD(p->nslots) : 0;
        for (uint32_t i = 0; i < n; i++)
                o->consumed += LD(lp_slot_at(p, i)->c_total);
        for (int i = 0; i < LAGPROBE_EVENT__CNT; i++)
                o->events[i] = LD(p->events[i]);
}

static void lp_read_global(lagprobe_t *p, int64_t now_us,
                           lagprobe_snapshot_t *o) {
        lp_read_global_x(p, now_us, o, 1);
}

int lagprobe_snapshot(lagprobe_t *p, lagprobe_snapshot_t *snap) {
        if (!p || !snap || snap->struct_size != sizeof *snap)
                return -1;
        int64_t now_us = lp_mono_us(), now_ms = lp_wall_ms();
        /* consumed is summed below, in the one pass over the slots. */
        lp_read_global_x(p, now_us, snap, 0);
        snap->ts_ms = now_ms;
        size_t cnt = 0, filled = 0;
        int64_t consumed = 0;
        uint32_t n = LD(p->nslots);
        for (uint32_t l = lp_sorted_first(p, n), nx; l; l = nx) {
                nx = lp_sorted_next(p, l, n);
                lp_slot_t *s = lp_slot_at(p, l - 1);
                if (LD(s->assigned) && filled < snap->partitions_size) {
                        lagprobe_partition_t *x = &snap->partitions[filled++];
                        lp_read_slot(p, s, now_us, now_ms, 1, x);
                        consumed += x->consumed_total;
                        cnt++;
                        continue;
                }
                if (LD(s->assigned))
                        cnt++;
                consumed += LD(s->c_total);
        }
        snap->consumed = consumed;
        snap->partition_cnt = cnt;
        return 0;
}

/* ========================================================================
 * MARK: 10. librdkafka glue
 *
 * The callbacks librdkafka calls (through per-probe trampolines that find
 * the probe), the interceptors (on_consume, on_commit, on_new, conf dup
 * and destroy) and lagprobe_attach().
 * ===================================================================== */

/* The probes attached to a conf, by registry index: what a trampoline
 * (section 10) uses to find its probe. Not to be confused with the
 * partition slots of a probe (lp_slot_t). */
static _Atomic(lagprobe_t *) lp_registry[LAGPROBE_MAX_PROBES];

static void lp_unref(lagprobe_t *p);
static void lp_note_poll(lagprobe_t *p, int64_t now_us);
static void lp_note_eviction(lagprobe_t *p, int64_t now_us);

static inline lagprobe_t *lp_registered(int i) {
        return atomic_load_explicit(&lp_registry[i], memory_order_acquire);
}

/* The probe's own consumer, not a second client made from a copy of the
 * conf, a producer, nor a consumer whose probe the app destroyed. */
static inline int lp_mine(lagprobe_t *p, const rd_kafka_t *rk) {
        return p && LD(p->bound) && LD(p->rk) == rk &&
               !LD(p->user_destroyed);
}

static int lp_stats_cb(int reg, rd_kafka_t *rk, char *json, size_t len,
                       void *opaque) {
        lagprobe_t *p = lp_registered(reg);
        if (!p)
                return 0;
        if (lp_mine(p, rk)) {
                /* Statistics are served inside the app's poll call. */
                lp_note_poll(p, lp_mono_us());
                if (!LD(p->exact)) {
                        pthread_mutex_lock(&p->wlock);
                        ST(p->infer_arm, LP_INFER_PAIRS);
                        lp_new_epoch(p); /* deliveries to lp_infer */
                        pthread_mutex_unlock(&p->wlock);
                }
                lp_stats_parse(p, json, len);
        }
        if (p->app_stats_cb)
                return p->app_stats_cb(rk, json, len, opaque);
        return 0;
}

/* The rebalance protocol, from group.protocol and
 * partition.assignment.strategy read at on_new: librdkafka refuses to mix
 * cooperative and eager assignors, and the next-generation protocol
 * (KIP-848, group.protocol=consumer, librdkafka >= 2.4, GA in 2.12) is
 * always cooperative whatever the strategy says.
 * rd_kafka_rebalance_protocol() would ask librdkafka's group thread and
 * wait without a timeout, which can hang inside rd_kafka_consumer_close()
 * where the last revoke is served: the wrapper must never block there. */
static int lp_protocol(lagprobe_t *p) {
        return p->proto;
}

static int lp_protocol_of(const char *strategy, int kip848) {
        /* Decided from the strings, not RD_KAFKA_VERSION: probe.c built
         * against old headers may run with a newer library. */
        if (kip848 || strstr(strategy, "cooperative-sticky"))
                return LP_PROTO_COOPERATIVE;
        return LP_PROTO_EAGER;
}

/* What librdkafka does when the app has no rebalance_cb. */
static rd_kafka_resp_err_t
lp_default_rebalance(lagprobe_t *p, rd_kafka_t *rk, rd_kafka_resp_err_t err,
                     rd_kafka_topic_partition_list_t *parts) {
        rd_kafka_resp_err_t r = RD_KAFKA_RESP_ERR_NO_ERROR;
#if RD_KAFKA_VERSION >= 0x010600ff
        if (p && lp_protocol(p) == LP_PROTO_COOPERATIVE) {
                rd_kafka_error_t *e = NULL;
                if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
                        e = rd_kafka_incremental_assign(rk, parts);
                else if (parts && parts->cnt > 0)
                        e = rd_kafka_incremental_unassign(rk, parts);
                if (e) {
                        r = rd_kafka_error_code(e);
                        rd_kafka_error_destroy(e);
                }
                return r;
        }
#endif
        if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
                r = rd_kafka_assign(rk, parts);
        else
                r = rd_kafka_assign(rk, NULL);
        return r;
}

/* Marks @p parts assigned; returns how many were not assigned before.
 * Caller holds wlock. */
static int64_t lp_mark_assigned(lagprobe_t *p,
                                const rd_kafka_topic_partition_list_t *parts) {
        int64_t added = 0;
        for (int i = 0; parts && i < parts->cnt; i++) {
                int si = lp_slot_find(p, parts->elems[i].topic,
                                      parts->elems[i].partition, 1);
                if (si < 0)
                        continue;
                lp_slot_t *s = lp_slot_at(p, (uint32_t)si);
                if (LD(s->assigned))
                        continue; /* kept across an incremental rebalance */
                /* Figures from an earlier assignment are not trusted: the
                 * group may have moved on while another member owned it. */
                lp_slot_reset(s);
                ST(s->assigned, 1);
                added++;
        }
        return added;
}

/* Whether a rebalance callback counts, and one membership change counts
 * once (assigns, revokes and the rebalance_storm window). EAGER: every
 * callback is a rebalance, and the revoke before an assignment belongs to
 * it, so the storm window counts assignments. Incremental protocols
 * (cooperative-sticky, KIP-848) deliver one change as a revoke round and
 * an assign round, either of which may be empty: only callbacks that move
 * partitions count, and an assign round within LP_ROUND_US of a revoke
 * round is the same change. Caller holds wlock. */
#define LP_ROUND_US 5000000
static int lp_count_change(lagprobe_t *p, int assign, int cnt, int64_t now) {
        p->w_rb_callbacks++; /* every callback: see no_rebalances */
        if (lp_protocol(p) != LP_PROTO_COOPERATIVE) {
                if (assign)
                        p->w_assign_t[p->w_assign_n++ % LP_RB_TIMES] = now;
                return 1;
        }
        if (cnt <= 0)
                return 0;
        if (!assign || now - p->w_revoke_round_us >= LP_ROUND_US)
                p->w_assign_t[p->w_assign_n++ % LP_RB_TIMES] = now;
        if (!assign)
                p->w_revoke_round_us = now;
        return 1;
}

static void lp_record_assign(lagprobe_t *p,
                             const rd_kafka_topic_partition_list_t *parts) {
        int64_t now = lp_mono_us();
        int proto = lp_protocol(p);
        pthread_mutex_lock(&p->wlock);
        int64_t added = lp_mark_assigned(p, parts);
        int counts = lp_count_change(p, 1, parts ? parts->cnt : 0, now);
        uint32_t g = lp_wbegin(&p->gseq);
        ST(p->g_assigns, LD(p->g_assigns) + counts);
        ST(p->g_last_rebalance_us, now);
        ST(p->g_last_assign_us, now);
        ST(p->g_protocol, proto);
        lp_assignment_moved(p, added, 0, now, now);
        lp_diagnose(p, 0);
        lp_wend(&p->gseq, g);
        lp_new_epoch(p);
        pthread_mutex_unlock(&p->wlock);
}

static void lp_record_revoke(lagprobe_t *p, int lost,
                             const rd_kafka_topic_partition_list_t *parts) {
        int64_t now = lp_mono_us();
        int proto = lp_protocol(p);
        pthread_mutex_lock(&p->wlock);
        int64_t removed = 0;
        for (int i = 0; parts && i < parts->cnt; i++) {
                int si = lp_slot_find(p, parts->elems[i].topic,
                                      parts->elems[i].partition, 0);
                if (si < 0)
                        continue;
                lp_slot_t *s = lp_slot_at(p, (uint32_t)si);
                if (LD(s->assigned)) {
                        ST(s->assigned, 0);
                        removed++;
                }
        }
        int counts = lp_count_change(p, 0, parts ? parts->cnt : 0, now);
        uint32_t g = lp_wbegin(&p->gseq);
        ST(p->g_revokes, LD(p->g_revokes) + counts);
        if (lost)
                ST(p->g_lost, LD(p->g_lost) + 1);
        ST(p->g_last_rebalance_us, now);
        ST(p->g_protocol, proto);
        /* A lost assignment after an eviction was gone from the moment
         * librdkafka left the group, not from this callback. */
        int64_t ev = LD(p->last_eviction_us);
        lp_assignment_moved(
            p, 0, removed, now,
            lost && ev > 0 && now - ev < p->max_poll_interval_ms * 1000 ? ev
                                                                        : now);
        lp_diagnose(p, 0);
        lp_wend(&p->gseq, g);
        lp_new_epoch(p);
        pthread_mutex_unlock(&p->wlock);
}

static void lp_record_rebalance_err(lagprobe_t *p, rd_kafka_resp_err_t err) {
        pthread_mutex_lock(&p->wlock);
        uint32_t g = lp_wbegin(&p->gseq);
        ST(p->g_last_rebalance_err, (int)err);
        lp_wend(&p->gseq, g);
        pthread_mutex_unlock(&p->wlock);
}

/* After the app's own rebalance_cb: make the assigned set exactly what the
 * app assigned (it may take a subset of what was offered, or keep
 * partitions on a revoke). */
static void lp_sync_assignment(lagprobe_t *p,
                               const rd_kafka_topic_partition_list_t *cur) {
        static _Atomic uint32_t marks = 1;
        uint32_t mark = atomic_fetch_add(&marks, 1);
        rd_kafka_topic_partition_list_t *add =
            rd_kafka_topic_partition_list_new(cur ? cur->cnt : 0);
        pthread_mutex_lock(&p->wlock);
        for (int i = 0; cur && i < cur->cnt; i++) {
                int si = lp_slot_find(p, cur->elems[i].topic,
                                      cur->elems[i].partition, 1);
                if (si < 0)
                        continue;
                lp_slot_t *s = lp_slot_at(p, (uint32_t)si);
                s->w_mark = mark;
                if (!LD(s->assigned))
                        rd_kafka_topic_partition_list_add(
                            add, cur->elems[i].topic, cur->elems[i].partition);
        }
        int64_t removed = 0;
        uint32_t n = LD(p->nslots);
        lp_slot_t *s;
        LP_FOR_ASSIGNED(p, n, i, s) {
                if (s->w_mark != mark) {
                        ST(s->assigned, 0);
                        removed++;
                }
        }
        int64_t added = lp_mark_assigned(p, add);
        if (removed || added) {
                int64_t now = lp_mono_us();
                uint32_t g = lp_wbegin(&p->gseq);
                lp_assignment_moved(p, added, removed, now, now);
                lp_diagnose(p, 0);
                lp_wend(&p->gseq, g);
                lp_new_epoch(p);
        }
        pthread_mutex_unlock(&p->wlock);
        rd_kafka_topic_partition_list_destroy(add);
}

static void lp_rebalance_cb(int reg, rd_kafka_t *rk, rd_kafka_resp_err_t err,
                            rd_kafka_topic_partition_list_t *parts,
                            void *opaque) {
        lagprobe_t *p = lp_registered(reg);
        int mine = lp_mine(p, rk);
        int lost = 0;
        if (mine) {
                lp_note_poll(p, lp_mono_us());
#if RD_KAFKA_VERSION >= 0x010600ff
                lost = err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS &&
                       rd_kafka_assignment_lost(rk);
#endif
                if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
                        lp_record_assign(p, parts);
        }
        if (p && p->app_rebalance_cb) {
                p->app_rebalance_cb(rk, err, parts, opaque);
        } else {
                rd_kafka_resp_err_t r =
                    lp_default_rebalance(p, rk, err, parts);
                if (mine && r)
                        lp_record_rebalance_err(p, r);
        }
        if (!mine)
                return;
        if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
                lp_record_revoke(p, lost, parts);
        else if (err != RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
                lp_record_rebalance_err(p, err);
        /* After an assignment only: rd_kafka_assignment() waits for
         * librdkafka's group thread without a timeout, and during
         * rd_kafka_consumer_close() (which serves the final revoke) that
         * thread may already be gone. On a revoke the partitions given are
         * what goes. */
        if (p->app_rebalance_cb && err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS
#if RD_KAFKA_VERSION >= 0x010900ff
            && !rd_kafka_consumer_closed(rk)
#endif
        ) {
                /* On the polling thread, inside the rebalance callback. */
                rd_kafka_topic_partition_list_t *cur = NULL;
                if (rd_kafka_assignment(rk, &cur) == RD_KAFKA_RESP_ERR_NO_ERROR) {
                        lp_sync_assignment(p, cur);
                        rd_kafka_topic_partition_list_destroy(cur);
                }
        }
}

static void lp_error_cb(int reg, rd_kafka_t *rk, int err, const char *reason,
                        void *opaque) {
        lagprobe_t *p = lp_registered(reg);
        if (!p)
                return;
        /* error_cb is wrapped only when the app had one. */
        if (p->app_error_cb)
                p->app_error_cb(rk, err, reason, opaque);
}

static void lp_log_cb(int reg, const rd_kafka_t *rk, int level,
                      const char *fac, const char *buf) {
        lagprobe_t *p = lp_registered(reg);
        if (p && lp_mine(p, rk) && fac && !strcmp(fac, "MAXPOLL"))
                lp_note_eviction(p, lp_mono_us());
        if (p && p->app_log_cb)
                p->app_log_cb(rk, level, fac, buf);
        else
                rd_kafka_log_print(rk, level, fac, buf);
}

/* Fixed trampolines, one set per registry entry: librdkafka's stats,
 * rebalance, error and log callbacks carry the app's opaque (or none), so
 * the registry index baked into the function is how they find their
 * probe. */
#define LP_TRAMP(a, b)                                                         \
        static int lp_st_##a##b(rd_kafka_t *rk, char *j, size_t n, void *o) { \
                return lp_stats_cb(a * 8 + b, rk, j, n, o);                    \
        }                                                                      \
        static void lp_rb_##a##b(rd_kafka_t *rk, rd_kafka_resp_err_t e,        \
                                 rd_kafka_topic_partition_list_t *l,           \
                                 void *o) {                                    \
                lp_rebalance_cb(a * 8 + b, rk, e, l, o);                       \
        }                                                                      \
        static void lp_er_##a##b(rd_kafka_t *rk, int e, const char *r,         \
                                 void *o) {                                    \
                lp_error_cb(a * 8 + b, rk, e, r, o);                           \
        }                                                                      \
        static void lp_lg_##a##b(const rd_kafka_t *rk, int l, const char *f,   \
                                 const char *s) {                              \
                lp_log_cb(a * 8 + b, rk, l, f, s);                             \
        }
#define LP_TRAMP_ENTRY(a, b) {lp_st_##a##b, lp_rb_##a##b, lp_er_##a##b, lp_lg_##a##b},
#define LP_X8(X, a) X(a, 0) X(a, 1) X(a, 2) X(a, 3) X(a, 4) X(a, 5) X(a, 6) X(a, 7)
#define LP_X64(X)                                                              \
        LP_X8(X, 0) LP_X8(X, 1) LP_X8(X, 2) LP_X8(X, 3) LP_X8(X, 4)            \
        LP_X8(X, 5) LP_X8(X, 6) LP_X8(X, 7)

LP_X64(LP_TRAMP)

static const struct lp_tramps_s {
        int (*stats)(rd_kafka_t *, char *, size_t, void *);
        void (*rebalance)(rd_kafka_t *, rd_kafka_resp_err_t,
                          rd_kafka_topic_partition_list_t *, void *);
        void (*error)(rd_kafka_t *, int, const char *, void *);
        void (*log)(const rd_kafka_t *, int, const char *, const char *);
} lp_tramps[64] = {LP_X64(LP_TRAMP_ENTRY)};
/* One set of trampolines per registry entry. */
_Static_assert(sizeof lp_tramps / sizeof lp_tramps[0] >= LAGPROBE_MAX_PROBES,
               "a set of trampolines for every registry entry");

/* Interceptors: their ic_opaque is the probe. */

/* Zero-code processing time. Each statistics document arms
 * LP_INFER_PAIRS samples (p->infer_arm, and a new cache epoch so that
 * deliveries take lp_slot_for_msg); while armed, a delivery on the
 * consuming thread is marked with a clock read and the next delivery's
 * clock gives the time between them: the app's processing of the marked
 * message plus the poll that handed out the next one (about 300 ns when
 * messages are prefetched, the wait for data otherwise). Each pair is one
 * sample of the message and poll-gap histograms (their counts are samples,
 * not messages). Unarmed, a delivery costs nothing more; armed, a lock
 * and a lookup. Samples per second follow the statistics interval, not the
 * message rate.
 * Assumes one message per poll call (rd_kafka_consumer_poll): messages
 * handed out together by a batch call give near-zero gaps; use the batch
 * hooks there. One writer while one thread consumes; apps consuming one
 * consumer from several threads get approximate figures (no torn values:
 * every field is an atomic). Off once the batch hooks are used. */
static LP_NOINLINE rd_kafka_resp_err_t lp_infer(lagprobe_t *p,
                                                 lp_tcache_t *c) {
        if (LD(p->exact)) {
                ST(p->infer_arm, 0);
                return RD_KAFKA_RESP_ERR_NO_ERROR;
        }
        int64_t now = lp_mono_us();
        if (c->mark_p != p || c->mark_us <= 0 || now < c->mark_us) {
                c->mark_us = now;
                c->mark_p = p;
                return RD_KAFKA_RESP_ERR_NO_ERROR;
        }
        int64_t gap = now - c->mark_us;
        c->mark_us = 0;
        /* Load + store: a re-arm racing this is lost, which is harmless. */
        ST(p->infer_arm, LD(p->infer_arm) - 1);
        lp_whist_add(&p->h_msg, p->win_us, now, gap);
        lp_whist_add(&p->h_gap, p->win_us, now, gap);
        if (!LD(p->inferred))
                ST(p->inferred, 1);
        return RD_KAFKA_RESP_ERR_NO_ERROR;
}

static rd_kafka_resp_err_t lp_on_consume(rd_kafka_t *rk,
                                         rd_kafka_message_t *m, void *ic) {
        lagprobe_t *p = ic;
        (void)rk;
        if (m->err)
                return RD_KAFKA_RESP_ERR_NO_ERROR;
        /* Hot path: one cache check, then plain atomic loads and stores
         * (ordinary moves on x86), no read-modify-write: this thread is
         * the only writer of the slot's C group. */
        lp_tcache_t *c = &lp_tcache;
        lp_slot_t *s = c->slot;
        if (LP_UNLIKELY(c->epoch != LD(p->cache_epoch) || c->rkt != m->rkt ||
                        c->partition != m->partition)) {
                if (!m->rkt || !(s = lp_slot_for_msg(p, m)))
                        return RD_KAFKA_RESP_ERR_NO_ERROR;
        }
        int64_t ts = rd_kafka_message_timestamp(m, NULL);
        uint32_t q = lp_wbegin(&s->cseq);
        ST(s->c_position, m->offset + 1);
        ST(s->c_last_ts, ts);
        ST(s->c_total, LD(s->c_total) + 1);
        lp_wend(&s->cseq, q);
        return RD_KAFKA_RESP_ERR_NO_ERROR;
}

static rd_kafka_resp_err_t
lp_on_commit(rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *offsets,
             rd_kafka_resp_err_t err, void *ic) {
        lagprobe_t *p = ic;
        if (!lp_mine(p, rk))
                return RD_KAFKA_RESP_ERR_NO_ERROR;
        /* "Nothing to commit" is not a failure. */
        int failed = err && err != RD_KAFKA_RESP_ERR__NO_OFFSET;
        int64_t now = lp_mono_us();
        pthread_mutex_lock(&p->wlock);
        for (int i = 0; offsets && i < offsets->cnt; i++) {
                const rd_kafka_topic_partition_t *e = &offsets->elems[i];
                int si = lp_slot_find(p, e->topic, e->partition, 0);
                if (si < 0)
                        continue;
                lp_slot_t *s = lp_slot_at(p, (uint32_t)si);
                uint32_t q = lp_wbegin(&s->sseq);
                if (e->err && e->err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
                        ST(s->s_commit_errs, LD(s->s_commit_errs) + 1);
                        ST(s->s_last_commit_err, (int)e->err);
                        failed = 1;
                } else if (!err && e->offset >= 0) {
                        ST(s->s_last_commit_err, 0);
                        if (e->offset > LD(s->s_committed))
                                ST(s->s_progress_us, now);
                        ST(s->s_committed, e->offset);
                        s->w_committed_us = now;
                }
                lp_wend(&s->sseq, q);
        }
        uint32_t g = lp_wbegin(&p->gseq);
        ST(p->g_commits, LD(p->g_commits) + 1);
        if (failed) {
                ST(p->g_commit_errors, LD(p->g_commit_errors) + 1);
                ST(p->g_last_commit_err, (int)(err ? err : RD_KAFKA_RESP_ERR_UNKNOWN));
                ST(p->g_last_commit_err_us, now);
        }
        lp_wend(&p->gseq, g);
        pthread_mutex_unlock(&p->wlock);
        return RD_KAFKA_RESP_ERR_NO_ERROR;
}

static rd_kafka_resp_err_t lp_on_destroy(rd_kafka_t *rk, void *ic) {
        lagprobe_t *p = ic;
        if (LD(p->rk) == rk) {
                /* Readers and the watchdog stop using rk from here on. A
                 * watermark query already under way leaves librdkafka
                 * within LP_RF_WAIT_MS (offsets_for_times' own deadline) or
                 * LP_RF_POLL_MS (admin result queue, it watches 'bound'):
                 * wait for that, bounded, since rk is freed after we return
                 * (sequentially consistent pair with lp_rf_run). */
                atomic_store(&p->bound, 0);
                int64_t end = lp_mono_us() + LP_DESTROY_WAIT_MS * 1000;
                while (atomic_load(&p->rf_in_rk) && lp_mono_us() < end) {
                        struct timespec ts = {0, 1000000};
                        nanosleep(&ts, NULL);
                }
        }
        return RD_KAFKA_RESP_ERR_NO_ERROR;
}

static int64_t lp_conf_int(const rd_kafka_conf_t *conf, const char *name,
                           int64_t dflt) {
        char buf[64];
        size_t n = sizeof buf;
        if (rd_kafka_conf_get(conf, name, buf, &n) != RD_KAFKA_CONF_OK)
                return dflt;
        char *end;
        long long v = strtoll(buf, &end, 10);
        return end == buf ? dflt : (int64_t)v;
}

static void lp_conf_str(const rd_kafka_conf_t *conf, const char *name,
                        char *out, size_t size) {
        size_t n = size;
        out[0] = 0;
        if (rd_kafka_conf_get(conf, name, out, &n) != RD_KAFKA_CONF_OK)
                out[0] = 0;
}

static void lp_take_callbacks(lagprobe_t *p, rd_kafka_conf_t *conf,
                              int at_new);

static rd_kafka_resp_err_t lp_on_new(rd_kafka_t *rk,
                                     const rd_kafka_conf_t *conf, void *ic,
                                     char *errstr, size_t errstr_size) {
        lagprobe_t *p = ic;
        if (LD(p->user_destroyed))
                return RD_KAFKA_RESP_ERR_NO_ERROR;
        if (atomic_exchange(&p->rk_seen, 1)) {
                /* A second client from a copy of the conf: the probe stays
                 * with its first consumer; this one only gets chaining. */
                lp_err(errstr, errstr_size,
                       "lagprobe: probe already watches another client; "
                       "use one probe per consumer");
                return RD_KAFKA_RESP_ERR__CONFLICT;
        }
        if (rd_kafka_type(rk) != RD_KAFKA_CONSUMER) {
                snprintf(p->bind_error, sizeof p->bind_error,
                         "attached to a producer: lagprobe watches consumers");
                lp_err(errstr, errstr_size, "lagprobe: %s", p->bind_error);
                return RD_KAFKA_RESP_ERR__INVALID_ARG;
        }
        lp_conf_str(conf, "group.id", p->group_id, sizeof p->group_id);
        lp_conf_str(conf, "client.id", p->client_id, sizeof p->client_id);
        char strat[256], gproto[32];
        lp_conf_str(conf, "partition.assignment.strategy", strat, sizeof strat);
        /* Unknown to librdkafka < 2.4: "" and so classic. */
        lp_conf_str(conf, "group.protocol", gproto, sizeof gproto);
        int kip848 = !strcmp(gproto, "consumer");
        p->proto = lp_protocol_of(strat, kip848);
        p->max_poll_interval_ms =
            lp_conf_int(conf, "max.poll.interval.ms", LP_RDK_MAX_POLL_MS);
        /* Under KIP-848 the session and heartbeat are the broker's (the
         * client refuses both properties): unknown here, not defaults. */
        p->session_timeout_ms =
            kip848 ? -1
                   : lp_conf_int(conf, "session.timeout.ms", LP_RDK_SESSION_MS);
        p->heartbeat_interval_ms =
            kip848 ? -1
                   : lp_conf_int(conf, "heartbeat.interval.ms",
                                 LP_RDK_HEARTBEAT_MS);
        p->stats_interval_ms =
            lp_conf_int(conf, "statistics.interval.ms", 0);
        /* rk->rk_conf, the client's own copy of the final conf: librdkafka
         * reads its callbacks only after on_new, and no client thread runs
         * yet. Whatever the app (or a wrapper such as rdkafkacpp, which
         * sets its callbacks at create()) set after lagprobe_attach() is
         * taken over here, so the probe keeps seeing statistics,
         * rebalances and log lines and the app keeps receiving them. */
        lp_take_callbacks(p, (rd_kafka_conf_t *)conf, 1);
        p->queued_min_messages =
            lp_conf_int(conf, "queued.min.messages", 100000);
        p->queued_max_kbytes =
            lp_conf_int(conf, "queued.max.messages.kbytes", 65536);
        p->socket_timeout_ms = lp_conf_int(conf, "socket.timeout.ms", 60000);
        rd_kafka_interceptor_add_on_consume(rk, "lagprobe", lp_on_consume, p);
        rd_kafka_interceptor_add_on_commit(rk, "lagprobe", lp_on_commit, p);
        rd_kafka_interceptor_add_on_destroy(rk, "lagprobe", lp_on_destroy, p);
        pthread_mutex_lock(&p->wlock);
        uint32_t g = lp_wbegin(&p->gseq);
        ST(p->g_unassigned_since_us, lp_mono_us());
        lp_wend(&p->gseq, g);
        pthread_mutex_unlock(&p->wlock);
        p->bound_us = lp_mono_us();
        ST(p->rk, rk);
        /* Release: group_id, limits and rk are visible once bound is. */
        ST(p->bound, 1);
        return RD_KAFKA_RESP_ERR_NO_ERROR;
}

static rd_kafka_resp_err_t lp_on_conf_destroy(void *ic) {
        lp_unref(ic);
        return RD_KAFKA_RESP_ERR_NO_ERROR;
}

static rd_kafka_resp_err_t lp_add_conf_interceptors(rd_kafka_conf_t *conf,
                                                    lagprobe_t *p);

static rd_kafka_resp_err_t lp_on_conf_dup(rd_kafka_conf_t *new_conf,
                                          const rd_kafka_conf_t *old_conf,
                                          size_t filter_cnt,
                                          const char **filter, void *ic) {
        (void)old_conf;
        (void)filter_cnt;
        (void)filter;
        /* Interceptors are not copied by rd_kafka_conf_dup(): re-install
         * them so that the copy (e.g. the C++ wrapper's) keeps the probe.
         * The callbacks are ordinary properties and were copied. */
        return lp_add_conf_interceptors(new_conf, ic);
}

static rd_kafka_resp_err_t lp_add_conf_interceptors(rd_kafka_conf_t *conf,
                                                    lagprobe_t *p) {
        rd_kafka_resp_err_t e;
        e = rd_kafka_conf_interceptor_add_on_new(conf, "lagprobe", lp_on_new, p);
        if (e)
                return e;
        e = rd_kafka_conf_interceptor_add_on_conf_dup(conf, "lagprobe",
                                                      lp_on_conf_dup, p);
        if (e)
                return e;
        e = rd_kafka_conf_interceptor_add_on_conf_destroy(
            conf, "lagprobe", lp_on_conf_destroy, p);
        if (e)
                return e;
        atomic_fetch_add(&p->refcnt, 1);
        return RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* Reads a pointer-valued property ("%p" from rd_kafka_conf_get()). */
static void *lp_conf_ptr(rd_kafka_conf_t *conf, const char *name) {
        char buf[64];
        size_t n = sizeof buf;
        void *v = NULL;
        if (rd_kafka_conf_get(conf, name, buf, &n) != RD_KAFKA_CONF_OK)
                return NULL;
        if (sscanf(buf, "%p", &v) != 1)
                return NULL;
        return v;
}

/* Callbacks travel through rd_kafka_conf_get() as data pointers and are
 * copied as bytes (ISO C has no cast between the two kinds). */
_Static_assert(sizeof(void (*)(void)) == sizeof(void *),
               "function pointers the size of data pointers");

static int lp_is_tramp(void *fn) {
        for (int i = 0; i < 64; i++) {
                void *a, *b, *c, *d;
                memcpy(&a, &lp_tramps[i].stats, sizeof a);
                memcpy(&b, &lp_tramps[i].rebalance, sizeof b);
                memcpy(&c, &lp_tramps[i].error, sizeof c);
                memcpy(&d, &lp_tramps[i].log, sizeof d);
                if (fn && (fn == a || fn == b || fn == c || fn == d))
                        return 1;
        }
        return 0;
}

/* Reads the app's callbacks from @p conf into the probe and puts the
 * probe's trampolines in their place. At attach every callback is the
 * app's; at on_new (@p at_new) a callback that is still the probe's own
 * trampoline keeps the app's callback recorded at attach, and any other
 * value (including NULL) was set after attach and is the app's now. */
static void lp_take_callbacks(lagprobe_t *p, rd_kafka_conf_t *conf,
                              int at_new) {
        const struct lp_tramps_s *t = &lp_tramps[p->reg];
        /* Function pointers, copied as bytes (see the assertion above). */
        const struct {
                const char *name;
                void *app;         /* &p->app_*_cb */
                const void *mine;  /* &t->... */
        } cb[] = {{"stats_cb", &p->app_stats_cb, &t->stats},
                  {"rebalance_cb", &p->app_rebalance_cb, &t->rebalance},
                  {"log_cb", &p->app_log_cb, &t->log},
                  {"error_cb", &p->app_error_cb, &t->error}};
        for (size_t i = 0; i < sizeof cb / sizeof cb[0]; i++) {
                void *v = lp_conf_ptr(conf, cb[i].name), *mine;
                memcpy(&mine, cb[i].mine, sizeof mine);
                if (!at_new || v != mine)
                        memcpy(cb[i].app, &v, sizeof v);
        }
        /* error_cb changes how librdkafka reports errors (callback instead
         * of log line): wrapped only when the app has one. */
        rd_kafka_conf_set_stats_cb(conf, t->stats);
        rd_kafka_conf_set_rebalance_cb(conf, t->rebalance);
        if (p->app_error_cb)
                rd_kafka_conf_set_error_cb(conf, t->error);
        rd_kafka_conf_set_log_cb(conf, t->log);
}

int lagprobe_attach(lagprobe_t *probe, rd_kafka_conf_t *conf, char *errstr,
                    size_t errstr_size) {
        char buf[256];
        size_t n;
        if (!probe || !conf) {
                lp_err(errstr, errstr_size, "lagprobe_attach: %s is NULL",
                       !probe ? "probe" : "conf");
                return -1;
        }
        if (LD(probe->attached) || probe->reg >= 0) {
                lp_err(errstr, errstr_size,
                       "lagprobe_attach: this probe is already attached to a "
                       "conf (one probe per consumer; create another probe)");
                return -1;
        }
        if (lp_is_tramp(lp_conf_ptr(conf, "stats_cb")) ||
            lp_is_tramp(lp_conf_ptr(conf, "rebalance_cb")) ||
            lp_is_tramp(lp_conf_ptr(conf, "log_cb"))) {
                lp_err(errstr, errstr_size,
                       "lagprobe_attach: this conf already carries a lagprobe "
                       "probe (attach once per conf)");
                return -1;
        }
        if (lp_conf_ptr(conf, "dr_msg_cb") || lp_conf_ptr(conf, "dr_cb")) {
                lp_err(errstr, errstr_size,
                       "lagprobe_attach: conf has a delivery report callback: "
                       "it is a producer conf; lagprobe watches consumers");
                return -1;
        }
        n = sizeof buf;
        if (rd_kafka_conf_get(conf, "group.id", buf, &n) != RD_KAFKA_CONF_OK ||
            !buf[0]) {
                lp_err(errstr, errstr_size,
                       "lagprobe_attach: conf has no group.id: lagprobe "
                       "watches a consumer group member; set group.id");
                return -1;
        }
        int reg = -1;
        for (int i = 0; i < LAGPROBE_MAX_PROBES && reg < 0; i++) {
                lagprobe_t *expect = NULL;
                if (atomic_compare_exchange_strong(&lp_registry[i], &expect,
                                                   probe))
                        reg = i;
        }
        if (reg < 0) {
                lp_err(errstr, errstr_size,
                       "lagprobe_attach: all %d probe slots are in use "
                       "(raise LAGPROBE_MAX_PROBES, at most 64)",
                       LAGPROBE_MAX_PROBES);
                return -1;
        }
        /* The conf is changed only once nothing can fail for want of a
         * registry entry: a refused attach leaves it as it was. */
        n = sizeof buf;
        if (rd_kafka_conf_get(conf, "statistics.interval.ms", buf, &n) ==
                RD_KAFKA_CONF_OK &&
            atoi(buf) == 0) {
                char v[32];
                snprintf(v, sizeof v, "%d", probe->conf.stats_interval_ms);
                if (rd_kafka_conf_set(conf, "statistics.interval.ms", v, buf,
                                      sizeof buf) != RD_KAFKA_CONF_OK) {
                        lp_err(errstr, errstr_size,
                               "lagprobe_attach: statistics.interval.ms=%s: %s",
                               v, buf);
                        atomic_store(&lp_registry[reg], NULL);
                        return -1;
                }
        }
        probe->reg = reg;
        if (lp_add_conf_interceptors(conf, probe)) {
                lp_err(errstr, errstr_size,
                       "lagprobe_attach: could not add interceptors to conf");
                /* Nothing references the entry yet. */
                probe->reg = -1;
                atomic_store(&lp_registry[reg], NULL);
                return -1;
        }
        lp_take_callbacks(probe, conf, 0);
        ST(probe->attached, 1);
        return 0;
}

/* ========================================================================
 * MARK: 11. Hooks and events
 *
 * The batch hooks and poll evidence, the event sink, and the events the
 * watchdog raises from what it finds: counters, partition statuses,
 * verdicts, lost views, configuration advice, predicted overruns.
 * ===================================================================== */

static void lp_note_poll(lagprobe_t *p, int64_t now_us) {
        /* Inferred evidence never overrides exact hooks' figures. */
        if (!LD(p->exact) && now_us > LD(p->last_poll_us))
                ST(p->last_poll_us, now_us);
}

static void lp_note_eviction(lagprobe_t *p, int64_t now_us) {
        /* librdkafka threads: the one read-modify-write, on a rare path. */
        atomic_fetch_add(&p->evictions, 1);
        ST(p->last_eviction_us, now_us);
}

/* The batch hooks have one writer by contract (the polling thread). Calls
 * from two threads at once would interleave their sequence-counter writes;
 * this flag turns the second into a counted hook error instead. One atomic
 * exchange per hook call: per batch, not per message. */
static int lp_hook_enter(lagprobe_t *p) {
        if (atomic_exchange_explicit(&p->in_hook, 1, memory_order_acquire)) {
                atomic_fetch_add(&p->hook_errors, 1);
                return 0;
        }
        return 1;
}

static void lp_hook_leave(lagprobe_t *p) {
        atomic_store_explicit(&p->in_hook, 0, memory_order_release);
}

static void lp_batch_begin(lagprobe_t *p, size_t n);
static void lp_batch_progress(lagprobe_t *p, size_t n_done);
static void lp_batch_end(lagprobe_t *p);

void lagprobe_batch_begin(lagprobe_t *p, size_t n) {
        if (p && lp_hook_enter(p)) {
                lp_batch_begin(p, n);
                lp_hook_leave(p);
        }
}

void lagprobe_batch_progress(lagprobe_t *p, size_t n_done) {
        if (p && lp_hook_enter(p)) {
                lp_batch_progress(p, n_done);
                lp_hook_leave(p);
        }
}

void lagprobe_batch_end(lagprobe_t *p) {
        if (p && lp_hook_enter(p)) {
                lp_batch_end(p);
                lp_hook_leave(p);
        }
}

static void lp_batch_begin(lagprobe_t *p, size_t n) {
        int64_t now = lp_mono_us();
        if (!LD(p->exact)) {
                ST(p->exact, 1);
                /* Hooks are the only source from now on: drop what
                 * lp_infer() recorded before the first batch (this thread
                 * was its writer; it records no more). */
                if (LD(p->inferred)) {
                        lp_whist_t *w[2] = {&p->h_msg, &p->h_gap};
                        for (int k = 0; k < 2; k++) {
                                lp_hist_clear(&w[k]->total);
                                for (int i = 0; i < LP_WIN; i++)
                                        lp_hist_clear(&w[k]->win[i]);
                        }
                        ST(p->inferred, 0);
                }
        }
        int64_t prev = LD(p->last_poll_us);
        /* The gap from the previous poll's return to this one's. */
        if (prev > 0)
                lp_whist_add(&p->h_gap, p->win_us, now, now - prev);
        ST(p->last_poll_us, now);
        uint32_t q = lp_wbegin(&p->bseq);
        ST(p->b_in_batch, 1);
        ST(p->b_size, (int64_t)n);
        ST(p->b_done, 0);
        ST(p->b_begin_us, now);
        ST(p->b_last_progress_us, now);
        lp_wend(&p->bseq, q);
}

static void lp_batch_progress(lagprobe_t *p, size_t n_done) {
        if (!LD(p->b_in_batch)) {
                atomic_fetch_add(&p->hook_errors, 1);
                return;
        }
        int64_t now = lp_mono_us();
        int64_t done = LD(p->b_done);
        int64_t inc = (int64_t)n_done - done;
        if (inc <= 0)
                return;
        int64_t per = (now - LD(p->b_last_progress_us)) / inc;
        uint32_t q = lp_wbegin(&p->bseq);
        ST(p->b_done, (int64_t)n_done);
        ST(p->b_last_progress_us, now);
        lp_wend(&p->bseq, q);
        /* One histogram update for the lot, whatever the batch size; after
         * b_done, so that lp_check_predict() never reads these messages'
         * time with b_done still 0 (it checks b_done again). */
        lp_whist_add_n(&p->h_msg, p->win_us, now, per, inc);
}

static void lp_batch_end(lagprobe_t *p) {
        if (!LD(p->b_in_batch)) {
                atomic_fetch_add(&p->hook_errors, 1);
                return;
        }
        int64_t now = lp_mono_us();
        int64_t size = LD(p->b_size), done = LD(p->b_done);
        if (done < size && size > 0) {
                /* Messages not reported one by one: spread the rest. */
                int64_t per = (now - LD(p->b_last_progress_us)) / (size - done);
                lp_whist_add_n(&p->h_msg, p->win_us, now, per, size - done);
        }
        lp_whist_add(&p->h_batch, p->win_us, now, now - LD(p->b_begin_us));
        uint32_t q = lp_wbegin(&p->bseq);
        ST(p->b_in_batch, 0);
        ST(p->b_done, size);
        lp_wend(&p->bseq, q);
}

void lagprobe_poll_result(lagprobe_t *p, const rd_kafka_message_t *msg) {
        if (!p)
                return;
        int64_t now = lp_mono_us();
        int64_t prev = LD(p->pr_last_us);
        ST(p->pr_last_us, now);
        /* Counted once per eviction: librdkafka's MAXPOLL log line, seen
         * during the gap since the previous poll, is the same eviction. */
        if (msg && msg->err == RD_KAFKA_RESP_ERR__MAX_POLL_EXCEEDED &&
            LD(p->last_eviction_us) <= prev)
                lp_note_eviction(p, now);
}

static void lp_logfmt_str(FILE *f, const char *k, const char *v) {
        fprintf(f, " %s=\"", k);
        for (; v && *v; v++) {
                if (*v == '"' || *v == '\\')
                        fputc('\\', f);
                fputc(*v == '\n' ? ' ' : *v, f);
        }
        fputc('"', f);
}

static void lp_default_sink(const lagprobe_event_t *e) {
        static const char *const sev[] = {"emerg", "alert", "crit", "err",
                                          "warning", "notice", "info",
                                          "debug"};
        char line[1024];
        FILE *f = fmemopen(line, sizeof line, "w");
        if (!f)
                return;
        fprintf(f, "lagprobe event=%s level=%s", e->name,
                sev[e->severity & 7]);
        lp_logfmt_str(f, "group", e->group_id);
        lp_logfmt_str(f, "client", e->client_id);
        if (e->since_poll_ms >= 0)
                fprintf(f, " since_poll_ms=%" PRId64, e->since_poll_ms);
        if (e->max_poll_interval_ms >= 0)
                fprintf(f, " max_poll_interval_ms=%" PRId64,
                        e->max_poll_interval_ms);
        if (e->headroom_ms != -1)
                fprintf(f, " headroom_ms=%" PRId64, e->headroom_ms);
        if (e->batch_size >= 0)
                fprintf(f, " batch_size=%" PRId64 " batch_done=%" PRId64,
                        e->batch_size, e->batch_done);
        if (e->predicted_ms >= 0)
                fprintf(f, " predicted_ms=%" PRId64, e->predicted_ms);
        if (e->count >= 0)
                fprintf(f, " count=%" PRId64, e->count);
        if (e->topic)
                lp_logfmt_str(f, "topic", e->topic);
        if (e->partition >= 0)
                fprintf(f, " partition=%" PRId32, e->partition);
        if (e->state)
                fprintf(f, " state=%s", e->state);
        if (e->lag >= 0)
                fprintf(f, " lag=%" PRId64, e->lag);
        lp_logfmt_str(f, "msg", e->message);
        fputc('\n', f);
        fclose(f);
        line[sizeof line - 2] = '\n';
        line[sizeof line - 1] = 0;
        fputs(line, stderr);
}

static void lp_event_init(lagprobe_t *p, lagprobe_event_t *e,
                          lagprobe_event_type_t type, int severity) {
        memset(e, 0, sizeof *e);
        e->type = type;
        e->name = lp_event_names[type];
        e->severity = severity;
        e->ts_ms = lp_wall_ms();
        int bound = LD(p->bound) || LD(p->rk_seen);
        e->group_id = bound ? p->group_id : "";
        e->client_id = bound ? p->client_id : "";
        e->since_poll_ms = e->max_poll_interval_ms = e->headroom_ms = -1;
        e->batch_size = e->batch_done = e->predicted_ms = e->count = -1;
        e->lag = -1;
        e->partition = -1;
}

/* Counts the event and hands it to the sink unless rate-limited. Callers:
 * the watchdog/tick (serialised by tick_lock) and librdkafka threads for
 * evictions. lagprobe_destroy() waits for 'emitting' to drain. */
static int lp_emit(lagprobe_t *p, lagprobe_event_t *e, int rate_limit) {
        int64_t now = lp_mono_us();
        atomic_fetch_add(&p->events[e->type], 1);
        if (rate_limit && p->wd_last_emit_us[e->type] &&
            now - p->wd_last_emit_us[e->type] <
                (int64_t)p->conf.event_min_interval_ms * 1000)
                return 0;
        p->wd_last_emit_us[e->type] = now;
        if (e->severity > p->conf.log_level)
                return 0;
        atomic_fetch_add(&p->emitting, 1);
        if (!LD(p->user_destroyed)) {
                if (p->conf.log_cb)
                        p->conf.log_cb(e, p->conf.log_opaque);
                else
                        lp_default_sink(e);
        }
        atomic_fetch_sub(&p->emitting, 1);
        return 1;
}

/* Time since the last poll return as librdkafka counts it, in us; -1 when
 * unknown. With batch hooks the app is inside a poll call (where
 * librdkafka's clock stands still) from lagprobe_batch_end() to the next
 * lagprobe_batch_begin(), so only time inside a batch counts. */
static int64_t lp_since_poll_us(lagprobe_t *p, int64_t now_us) {
        if (LD(p->exact)) {
                uint32_t q;
                int in;
                int64_t begin;
                do {
                        q = lp_rbegin(&p->bseq);
                        in = LD(p->b_in_batch);
                        begin = LD(p->b_begin_us);
                } while (lp_rretry(&p->bseq, q));
                return in ? now_us - begin : 0;
        }
        int64_t last = LD(p->last_poll_us);
        return last > 0 ? now_us - last : -1;
}

static void lp_event_poll_figures(lagprobe_t *p, lagprobe_event_t *e,
                                  int64_t since_us) {
        e->since_poll_ms = since_us >= 0 ? since_us / 1000 : -1;
        e->max_poll_interval_ms = p->max_poll_interval_ms;
        e->headroom_ms = since_us >= 0
                             ? p->max_poll_interval_ms - since_us / 1000
                             : p->max_poll_interval_ms;
        if (LD(p->b_in_batch)) {
                e->batch_size = LD(p->b_size);
                e->batch_done = LD(p->b_done);
        }
}

/* Events for what callbacks counted since the last pass: rebalances,
 * failed commits, rejected statistics. The sink is only ever called from
 * here (watchdog or tick), never from a librdkafka thread. */
static int lp_check_counters(lagprobe_t *p, int64_t since) {
        int emitted = 0;
        char msg[320];
        lagprobe_event_t e;
        uint32_t q;
        int64_t rb, asize, cerr, serr;
        int lcerr, rberr;
        do {
                q = lp_rbegin(&p->gseq);
                rb = LD(p->g_assigns) + LD(p->g_revokes);
                asize = LD(p->g_assignment_size);
                cerr = LD(p->g_commit_errors);
                lcerr = LD(p->g_last_commit_err);
                serr = LD(p->g_stats_errors);
                rberr = LD(p->g_last_rebalance_err);
        } while (lp_rretry(&p->gseq, q));
        if (rb != p->wd_seen_rebalances) {
                p->wd_seen_rebalances = rb;
                lp_event_init(p, &e, LAGPROBE_EVENT_REBALANCE, LP_LOG_INFO);
                lp_event_poll_figures(p, &e, since);
                e.count = asize;
                snprintf(msg, sizeof msg,
                         "rebalance: %" PRId64 " partition(s) now assigned "
                         "(assign and revoke callbacks so far: %" PRId64
                         ")%s%s",
                         asize, rb, rberr ? "; last error " : "",
                         rberr ? rd_kafka_err2name((rd_kafka_resp_err_t)rberr)
                               : "");
                e.message = msg;
                emitted += lp_emit(p, &e, 0);
        }
        if (cerr != p->wd_seen_commit_errors) {
                p->wd_seen_commit_errors = cerr;
                lp_event_init(p, &e, LAGPROBE_EVENT_COMMIT_FAILED, LP_LOG_WARNING);
                e.count = cerr;
                snprintf(msg, sizeof msg,
                         "offset commit failed (%" PRId64 " so far), last "
                         "error %s: lag figures keep the last committed "
                         "offset",
                         cerr,
                         rd_kafka_err2name((rd_kafka_resp_err_t)lcerr));
                e.message = msg;
                emitted += lp_emit(p, &e, 1);
        }
        if (serr != p->wd_seen_stats_errors) {
                p->wd_seen_stats_errors = serr;
                lp_event_init(p, &e, LAGPROBE_EVENT_STATS_ERROR, LP_LOG_WARNING);
                e.count = serr;
                snprintf(msg, sizeof msg,
                         "malformed statistics document rejected (%" PRId64
                         " so far): figures keep their previous values",
                         serr);
                e.message = msg;
                emitted += lp_emit(p, &e, 1);
        }
        return emitted;
}

/* More partitions than this changing to one status in one pass: one
 * summary event instead of one each. */
#define LP_EV_SUMMARY 4
#define LP_WD_DUE 0x80 /* in wd_said: to be reported in this pass */

static int lp_pstatus_bad(int st) {
        return st == LAGPROBE_PSTATUS_STALLED ||
               st == LAGPROBE_PSTATUS_STOPPED ||
               st == LAGPROBE_PSTATUS_PAUSED ||
               st == LAGPROBE_PSTATUS_LAGGING ||
               st == LAGPROBE_PSTATUS_REWOUND;
}

/* One partition_status event about slot @p i. */
static int lp_emit_status(lagprobe_t *p, lp_slot_t *s, int64_t now_us,
                          int64_t now_ms) {
        char msg[320];
        lagprobe_event_t e;
        lagprobe_partition_t x;
        lp_read_slot(p, s, now_us, now_ms, 1, &x);
        lp_event_init(p, &e, LAGPROBE_EVENT_PARTITION_STATUS,
                      lp_pstatus_bad(x.status) ? LP_LOG_WARNING
                                                : LP_LOG_INFO);
        e.topic = x.topic;
        e.partition = x.partition;
        e.state = x.status_name;
        e.lag = x.effective_lag;
        e.count = x.effective_lag;
        snprintf(msg, sizeof msg, "%s [%" PRId32 "] is %s: %s", x.topic,
                 x.partition, x.status_name, x.status_reason);
        e.message = msg;
        return lp_emit(p, &e, 0);
}

/* One partition_status event for the @p cnt partitions due to report
 * status @p st: "12 of 40 assigned partitions now lagging: t [0, 3, 5]". */
static int lp_emit_status_summary(lagprobe_t *p, int st, int cnt) {
        char msg[320];
        size_t len = 0;
        lagprobe_event_t e;
        uint32_t n = (uint32_t)arrlen(p->wd_said);
        int64_t assigned = 0, lag = 0;
        const char *topic = NULL, *prev = NULL;
        int one_topic = 1;
        lp_slot_t *as;
        LP_FOR_ASSIGNED(p, n, i, as)
                assigned++;
#define LP_CAT(...)                                                            \
        do {                                                                   \
                int w_ = snprintf(msg + len, sizeof msg - len, __VA_ARGS__);   \
                len = w_ < 0 ? len                                             \
                      : (size_t)w_ < sizeof msg - len ? len + (size_t)w_       \
                                                      : sizeof msg - 1;        \
        } while (0)
        LP_CAT("%d of %" PRId64 " assigned partitions now %s:", cnt, assigned,
               lp_pstatus_names[st]);
        for (uint32_t i = 0; i < n; i++) {
                if (p->wd_said[i] != (LP_WD_DUE | st))
                        continue;
                lp_slot_t *s = lp_slot_at(p, i);
                int64_t l = LD(s->s_eff_lag);
                if (l > 0)
                        lag = lp_sat_add(lag, l);
                if (!topic)
                        topic = s->topic;
                else if (strcmp(topic, s->topic))
                        one_topic = 0;
                if (!prev || strcmp(prev, s->topic))
                        LP_CAT("%s%s [%" PRId32, prev ? "], " : " ", s->topic,
                               s->partition);
                else
                        LP_CAT(", %" PRId32, s->partition);
                prev = s->topic;
        }
        LP_CAT("]");
#undef LP_CAT
        if (len >= sizeof msg - 1)
                memcpy(msg + sizeof msg - 4, "...", 4);
        lp_event_init(p, &e, LAGPROBE_EVENT_PARTITION_STATUS,
                      lp_pstatus_bad(st) ? LP_LOG_WARNING : LP_LOG_INFO);
        e.topic = one_topic ? topic : NULL;
        e.state = lp_pstatus_names[st];
        e.count = cnt;
        e.lag = lag;
        e.message = msg;
        return lp_emit(p, &e, 0);
}

/* partition_status events: a partition's shown status (already held for
 * the dwell) when it differs from the one last reported, at most one per
 * partition per window_ms (the latest status once that has passed), except
 * for the immediate statuses; many partitions turning to one status at
 * once are one summary event. */
static int lp_check_statuses(lagprobe_t *p, int64_t now_us, int64_t now_ms) {
        int emitted = 0;
        uint32_t n = LD(p->nslots);
        int cnt[LAGPROBE_PSTATUS__CNT] = {0};
        int64_t win_ms = p->conf.window_ms;
        while ((uint32_t)arrlen(p->wd_said) < n) {
                arrput(p->wd_said, LAGPROBE_PSTATUS_UNKNOWN);
                arrput(p->wd_said_ms, 0);
        }
        for (uint32_t i = 0; i < n; i++) {
                lp_slot_t *s = lp_slot_at(p, i);
                int said = p->wd_said[i] & ~LP_WD_DUE;
                p->wd_said[i] = (uint8_t)said;
                if (!LD(s->assigned)) {
                        p->wd_said[i] = LAGPROBE_PSTATUS_UNKNOWN;
                        continue;
                }
                /* On the documents' clock, as the statuses. */
                int st = LD(s->s_status);
                uint32_t doc_ms = (uint32_t)(LD(s->s_stats_us) / 1000);
                if (st == LAGPROBE_PSTATUS_UNKNOWN || st == said ||
                    (said != LAGPROBE_PSTATUS_UNKNOWN &&
                     !lp_pstatus_immediate(st) &&
                     lp_delta32(doc_ms, p->wd_said_ms[i]) < win_ms))
                        continue;
                p->wd_said[i] = (uint8_t)(LP_WD_DUE | st);
                p->wd_said_ms[i] = doc_ms;
                cnt[st]++;
        }
        for (int st = 0; st < LAGPROBE_PSTATUS__CNT; st++) {
                if (cnt[st] > LP_EV_SUMMARY) {
                        emitted += lp_emit_status_summary(p, st, cnt[st]);
                        continue;
                }
                for (uint32_t i = 0; cnt[st] && i < n; i++)
                        if (p->wd_said[i] == (LP_WD_DUE | st))
                                emitted += lp_emit_status(
                                    p, lp_slot_at(p, i), now_us, now_ms);
        }
        return emitted;
}

/* partition_status and diagnosis events. A diagnosis event when the verdict
 * shown (held for the dwell) or the partition it names differs from the
 * one last reported; its detail text changing is none. */
static int lp_check_diagnosis(lagprobe_t *p) {
        char msg[320];
        lagprobe_event_t e;
        int64_t now_us = lp_mono_us(), now_ms = lp_wall_ms();
        int emitted = lp_check_statuses(p, now_us, now_ms);
        uint32_t dc = LD(p->g_diag_changes);
        if (dc == p->wd_seen_diag)
                return emitted;
        p->wd_seen_diag = dc;
        lagprobe_snapshot_t g;
        lagprobe_snapshot_init(&g, NULL, 0);
        lp_read_global(p, now_us, &g);
        if (g.diagnosis == LAGPROBE_DIAG_UNKNOWN ||
            ((int)g.diagnosis == p->wd_said_diag &&
             g.diagnosis_partition == p->wd_said_diag_part &&
             g.diagnosis_topic == p->wd_said_diag_topic))
                return emitted;
        p->wd_said_diag = (int)g.diagnosis;
        p->wd_said_diag_part = g.diagnosis_partition;
        p->wd_said_diag_topic = g.diagnosis_topic;
        lp_event_init(p, &e, LAGPROBE_EVENT_DIAGNOSIS,
                      g.diagnosis != LAGPROBE_DIAG_HEALTHY ? LP_LOG_WARNING
                                                         : LP_LOG_NOTICE);
        e.topic = g.diagnosis_topic;
        e.partition = g.diagnosis_partition;
        e.state = g.diagnosis_name;
        e.lag = g.total_lag;
        e.count = g.total_lag;
        snprintf(msg, sizeof msg, "diagnosis %s: %s", g.diagnosis_name,
                 g.diagnosis_detail);
        e.message = msg;
        return emitted + lp_emit(p, &e, 0);
}

/* no_rebalances: once when rebalances are found going past the probe. */
static int lp_check_rb_blind(lagprobe_t *p) {
        int blind = LD(p->g_rb_blind);
        int said = p->wd_rb_blind;
        p->wd_rb_blind = blind;
        if (!blind || said)
                return 0;
        char msg[320];
        lagprobe_event_t e;
        lp_event_init(p, &e, LAGPROBE_EVENT_NO_REBALANCES, LP_LOG_WARNING);
        e.count = LD(p->g_cgrp_rebalance_cnt);
        snprintf(msg, sizeof msg,
                 "librdkafka delivered %" PRId64 " rebalance(s) that never "
                 "reached lagprobe's rebalance_cb (rebalances consumed as "
                 "events with rd_kafka_queue_poll()?): assignment, "
                 "rebalance counts and the storm verdict are not seen",
                 e.count);
        e.message = msg;
        return lp_emit(p, &e, 0);
}

/* no_statistics: once when the view is lost, again after it came back. */
static int lp_check_blind(lagprobe_t *p, int64_t now_us, int64_t since) {
        int why = lp_blind(p, now_us, LD(p->g_stats_last_us), since,
                           LD(p->g_assignment_size));
        if (!why || p->wd_blind) {
                p->wd_blind = why != LP_SEES;
                return 0;
        }
        p->wd_blind = 1;
        char msg[400];
        lagprobe_event_t e;
        lp_event_init(p, &e, LAGPROBE_EVENT_NO_STATISTICS, LP_LOG_WARNING);
        int64_t last = LD(p->g_stats_last_us);
        e.count = last > 0 ? (now_us - last) / 1000 : -1;
        if (why == LP_BLIND_OFF)
                snprintf(msg, sizeof msg,
                         "statistics.interval.ms is 0 in the consumer's "
                         "configuration (set after lagprobe_attach()): lag, "
                         "watermarks and the verdict cannot be measured; "
                         "leave statistics.interval.ms to lagprobe or set "
                         "it to 1000 or more");
        else
                snprintf(msg, sizeof msg,
                         "no statistics document for %" PRId64 " ms "
                         "(statistics.interval.ms=%" PRId64 ") although "
                         "the consumer polls: they do not reach lagprobe "
                         "(statistics consumed as events with "
                         "rd_kafka_queue_poll(), or statistics.interval.ms "
                         "too large); lag figures are stale",
                         (now_us - (last > 0 ? last : p->bound_us)) / 1000,
                         p->stats_interval_ms);
        e.message = msg;
        return lp_emit(p, &e, 0);
}

/* config_advice: once per cause, again only when it gets worse. */
static int lp_check_advice(lagprobe_t *p, int64_t now_us) {
        int emitted = 0;
        char msg[320];
        lagprobe_event_t e;
        if (!p->wd_hb_advised && p->session_timeout_ms > 0 &&
            p->heartbeat_interval_ms * 3 > p->session_timeout_ms) {
                p->wd_hb_advised = 1;
                lp_event_init(p, &e, LAGPROBE_EVENT_CONFIG_ADVICE, LP_LOG_WARNING);
                snprintf(msg, sizeof msg,
                         "heartbeat.interval.ms=%" PRId64 " is more than a "
                         "third of session.timeout.ms=%" PRId64 ": two lost "
                         "heartbeats end the session; set "
                         "heartbeat.interval.ms to at most %" PRId64,
                         p->heartbeat_interval_ms, p->session_timeout_ms,
                         p->session_timeout_ms / 3);
                e.message = msg;
                emitted += lp_emit(p, &e, 0);
        }
        if (!LD(p->exact) || p->max_poll_interval_ms <= 0)
                return emitted;
        lp_hsum_t recent;
        lp_whist_read(&p->h_batch, p->win_us, now_us, NULL, &recent);
        if (recent.count < LP_ADVICE_MIN_BATCHES)
                return emitted;
        double p99_ms = lp_hsum_pct(&recent, 0.99) / 1000.0;
        double ratio = p99_ms / (double)p->max_poll_interval_ms;
        /* Safe margin: the batch p99 should stay under the warning share. */
        if (ratio < p->conf.warn_ratio ||
            ratio < p->wd_advice_ratio * 1.10)
                return emitted;
        p->wd_advice_ratio = ratio;
        lp_event_init(p, &e, LAGPROBE_EVENT_CONFIG_ADVICE, LP_LOG_WARNING);
        lp_event_poll_figures(p, &e, lp_since_poll_us(p, now_us));
        e.predicted_ms = (int64_t)p99_ms;
        snprintf(msg, sizeof msg,
                 "batch p99 %.0f ms is %.0f %% of max.poll.interval.ms=%" PRId64
                 ": raise max.poll.interval.ms to at least %.0f or process "
                 "fewer messages per poll",
                 p99_ms, ratio * 100.0, p->max_poll_interval_ms,
                 p99_ms * 2.0);
        e.message = msg;
        emitted += lp_emit(p, &e, 0);
        return emitted;
}

/* predicted_exceed: inside a batch, elapsed time plus the remaining
 * messages at the current per-message rate goes past the limit. */
static int lp_check_predict(lagprobe_t *p, int64_t now_us) {
        uint32_t q;
        int in;
        int64_t size, done, begin, lastp, batch_id;
        do {
                q = lp_rbegin(&p->bseq);
                in = LD(p->b_in_batch);
                size = LD(p->b_size);
                done = LD(p->b_done);
                begin = LD(p->b_begin_us);
                lastp = LD(p->b_last_progress_us);
        } while (lp_rretry(&p->bseq, q));
        batch_id = begin;
        if (!in || size <= 0 || done >= size)
                return 0;
        if (p->wd_predicted && p->wd_predicted_batch == batch_id)
                return 0;
        int64_t elapsed = now_us - begin;
        /* Per-message time: this batch's own rate over the messages
         * finished (up to the last progress report, not counting the one
         * in hand), else the recent per-message median. */
        double per_us;
        if (done > 0) {
                per_us = (double)(lastp - begin) / (double)done;
        } else {
                lp_hsum_t recent;
                lp_whist_read(&p->h_msg, p->win_us, now_us, NULL, &recent);
                /* lp_batch_progress() publishes b_done before it adds the
                 * finished messages to the histogram: if this read saw
                 * them, b_done is no longer 0 and this pass skips. */
                if (recent.count == 0 || LD(p->b_done) != 0)
                        return 0;
                per_us = lp_hsum_pct(&recent, 0.50);
        }
        /* The message in hand takes at least what it has taken so far. */
        double in_hand = (double)(now_us - lastp);
        double predicted = (double)(lastp - begin) +
                           (in_hand > per_us ? in_hand : per_us) +
                           per_us * (double)(size - done - 1);
        double limit = (double)p->max_poll_interval_ms * 1000.0;
        /* A prediction only helps while the limit is still ahead. */
        if (predicted <= limit || (double)elapsed >= limit)
                return 0;
        p->wd_predicted = 1;
        p->wd_predicted_batch = batch_id;
        ST(p->predicted_batch_us, batch_id);
        lagprobe_event_t e;
        char msg[320];
        lp_event_init(p, &e, LAGPROBE_EVENT_PREDICTED_EXCEED, LP_LOG_WARNING);
        lp_event_poll_figures(p, &e, elapsed);
        e.batch_size = size;
        e.batch_done = done;
        e.predicted_ms = predicted / 1000.0 < 9e15 ? (int64_t)(predicted / 1000.0)
                                                    : INT64_MAX;
        snprintf(msg, sizeof msg,
                 "batch of %" PRId64 " messages: %" PRId64 " done in %" PRId64
                 " ms at %.1f ms each, predicted %" PRId64 " ms exceeds "
                 "max.poll.interval.ms=%" PRId64 "; process fewer messages "
                 "per poll or raise max.poll.interval.ms",
                 size, done, elapsed / 1000, per_us / 1000.0, e.predicted_ms,
                 p->max_poll_interval_ms);
        e.message = msg;
        return lp_emit(p, &e, 0);
}

/* ========================================================================
 * MARK: 12. Watermark refresher
 * ===================================================================== */

/* Set on probes' own watchdog threads: refreshes are handed over only
 * from there (never from lagprobe_tick() on an app thread). */
static _Thread_local int lp_on_watchdog_thread;

/* ---- Watermark refresher ----------------------------------------------
 * The statistics' high watermark only moves with Fetch responses, so it
 * freezes while a partition is paused or its prefetch queue is full. When
 * it has not moved for hwm_refresh_ms the probe asks the partition leader
 * for the log end offset. That is a network round trip, and librdkafka's
 * calls for it do not all honour their timeout (README "Broker outages"):
 *  - rd_kafka_query_watermark_offsets() before 2.3.0 waits for the reply
 *    without a bound (a dead leader hangs it, and rd_kafka_destroy() with
 *    it); never used.
 *  - rd_kafka_offsets_for_times() honours its timeout on every version;
 *    before 2.3.0 the ListOffsets request keeps librdkafka's own timeout
 *    (socket.timeout.ms), so a short wait here never makes librdkafka
 *    time the request out (REQTMOUT) or drop the connection.
 *  - From 2.3.0 both calls also give their timeout to the ListOffsets
 *    request itself: with socket.max.fails=1 a request that times out
 *    tears the connection down. There the asynchronous admin
 *    rd_kafka_ListOffsets() is used, with a request timeout above
 *    socket.timeout.ms (librdkafka's own requests on a dead connection
 *    time out first), and the refresher waits on its own queue in steps
 *    of LP_RF_POLL_MS, leaving as soon as the consumer is destroyed.
 * So the refresher never spends more than LP_RF_WAIT_MS in one librdkafka
 * call, and it runs on its own thread: the watchdog's warnings never wait
 * for the network. At most one query is in flight; partitions whose leader
 * was not UP in the latest statistics are not asked, nor any while the
 * coordinator was not UP or the statistics are old (the app is not
 * polling, broker states are unknown). */
enum { LP_RF_NONE = 0, LP_RF_OFFSETS_FOR_TIMES, LP_RF_ADMIN };

#if RD_KAFKA_VERSION >= 0x02030000
#define LP_HAVE_ADMIN_LISTOFFSETS 1
#endif

/* How to query on the librdkafka this process runs (not the headers it was
 * built with): built without the admin ListOffsets (< 2.3.0 headers) but
 * running on >= 2.3.0, there is no call that is both bounded and harmless
 * to the connection, so the probe does not query (stale says so). */
static int lp_rf_mode(void) {
        if (rd_kafka_version() < 0x02030000)
                return LP_RF_OFFSETS_FOR_TIMES;
#ifdef LP_HAVE_ADMIN_LISTOFFSETS
        return LP_RF_ADMIN;
#else
        return LP_RF_NONE;
#endif
}

#ifdef LP_HAVE_ADMIN_LISTOFFSETS
/* Fills l's offsets (and err) with the leaders' log end offsets. Returns
 * __TIMED_OUT when no answer came in time or the consumer went away. */
static rd_kafka_resp_err_t lp_rf_admin(lagprobe_t *p, rd_kafka_t *rk,
                                       rd_kafka_topic_partition_list_t *l) {
        char errstr[256];
        int64_t tmo = p->socket_timeout_ms + 5000;
        if (tmo > 3600000)
                tmo = 3600000;
        rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
        rd_kafka_AdminOptions_t *o =
            rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_LISTOFFSETS);
        rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__TIMED_OUT;
        if (!q || !o ||
            rd_kafka_AdminOptions_set_request_timeout(o, (int)tmo, errstr,
                                                      sizeof errstr)) {
                err = RD_KAFKA_RESP_ERR__FAIL;
                goto done;
        }
        for (int i = 0; i < l->cnt; i++)
                l->elems[i].offset = RD_KAFKA_OFFSET_SPEC_LATEST;
        rd_kafka_ListOffsets(rk, l, o, q);
        for (int i = 0; i < l->cnt; i++) {
                l->elems[i].offset = -1;
                l->elems[i].err = RD_KAFKA_RESP_ERR__TIMED_OUT;
        }
        int64_t end = lp_mono_us() + (tmo + 1000) * 1000;
        rd_kafka_event_t *ev = NULL;
        /* 'bound' drops in on_destroy: leave then, whatever is pending
         * (librdkafka drops a result for a destroyed queue); the same
         * when lagprobe_destroy() asks the refresher to leave. */
        while (!ev && atomic_load(&p->bound) && !LD(p->rf_leave) &&
               lp_mono_us() < end)
                ev = rd_kafka_queue_poll(q, LP_RF_POLL_MS);
        if (!ev)
                goto done;
        err = rd_kafka_event_error(ev);
        const rd_kafka_ListOffsets_result_t *res =
            rd_kafka_event_ListOffsets_result(ev);
        if (!err && res) {
                size_t n = 0;
                const rd_kafka_ListOffsetsResultInfo_t **infos =
                    rd_kafka_ListOffsets_result_infos(res, &n);
                for (size_t i = 0; i < n; i++) {
                        const rd_kafka_topic_partition_t *tp =
                            rd_kafka_ListOffsetsResultInfo_topic_partition(
                                infos[i]);
                        rd_kafka_topic_partition_t *e =
                            rd_kafka_topic_partition_list_find(
                                l, tp->topic, tp->partition);
                        if (e) {
                                e->err = tp->err;
                                e->offset = tp->offset;
                        }
                }
        }
        rd_kafka_event_destroy(ev);
done:
        if (o)
                rd_kafka_AdminOptions_destroy(o);
        if (q)
                rd_kafka_queue_destroy(q);
        return err;
}
#endif

static rd_kafka_resp_err_t lp_rf_query(lagprobe_t *p, rd_kafka_t *rk,
                                       rd_kafka_topic_partition_list_t *l) {
        (void)p; /* only the admin path needs it */
        switch (lp_rf_mode()) {
        case LP_RF_OFFSETS_FOR_TIMES:
                /* Timestamp -1: the log end offset (the last stable offset
                 * under isolation.level=read_committed). */
                for (int i = 0; i < l->cnt; i++)
                        l->elems[i].offset = RD_KAFKA_OFFSET_END;
                return rd_kafka_offsets_for_times(rk, l, LP_RF_WAIT_MS);
#ifdef LP_HAVE_ADMIN_LISTOFFSETS
        case LP_RF_ADMIN: return lp_rf_admin(p, rk, l);
#endif
        default: return RD_KAFKA_RESP_ERR__NOT_IMPLEMENTED;
        }
}

/* One job: the slots in p->rf_jobs. Refresher thread, outside wlock. */
static void lp_rf_run(lagprobe_t *p, const uint32_t *jobs, int n) {
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(n);
        for (int i = 0; i < n; i++) {
                lp_slot_t *s = lp_slot_at(p, jobs[i]);
                rd_kafka_topic_partition_list_add(l, s->topic, s->partition);
        }
        rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__DESTROY;
        /* Sequentially consistent pair with lp_on_destroy: either it sees
         * rf_in_rk and waits, or we see bound == 0 and stay out. */
        atomic_store(&p->rf_in_rk, 1);
        if (atomic_load(&p->bound))
                err = lp_rf_query(p, LD(p->rk), l);
        atomic_store(&p->rf_in_rk, 0);
        ST(p->rf_queries, LD(p->rf_queries) + 1);
        if (err)
                ST(p->rf_failures, LD(p->rf_failures) + 1);
        int64_t now = lp_mono_us();
        pthread_mutex_lock(&p->wlock);
        for (int i = 0; i < n; i++) {
                lp_slot_t *s = lp_slot_at(p, jobs[i]);
                rd_kafka_topic_partition_t *e =
                    rd_kafka_topic_partition_list_find(l, s->topic,
                                                       s->partition);
                uint32_t q = lp_wbegin(&s->sseq);
                ST(s->s_hi_query_us, now);
                if (!err && e && !e->err && e->offset > LD(s->s_hi))
                        ST(s->s_hi_query, e->offset);
                lp_wend(&s->sseq, q);
        }
        pthread_mutex_unlock(&p->wlock);
        rd_kafka_topic_partition_list_destroy(l);
}

static void *lp_refresher(void *arg) {
        lagprobe_t *p = arg;
        uint32_t jobs[LP_RF_BATCH];
        pthread_mutex_lock(&p->rf_lock);
        for (;;) {
                while (!p->rf_quit && p->rf_njobs == 0)
                        pthread_cond_wait(&p->rf_cond, &p->rf_lock);
                if (p->rf_quit)
                        break;
                int n = p->rf_njobs;
                memcpy(jobs, p->rf_jobs, (size_t)n * sizeof jobs[0]);
                p->rf_njobs = 0;
                pthread_mutex_unlock(&p->rf_lock);
                lp_rf_run(p, jobs, n);
                ST(p->rf_busy, 0);
                pthread_mutex_lock(&p->rf_lock);
        }
        pthread_mutex_unlock(&p->rf_lock);
        ST(p->rf_exited, 1);
        /* The thread holds a reference: the probe outlives it even when
         * lagprobe_destroy() stopped waiting for it. Nothing after this. */
        lp_unref(p);
        return NULL;
}

/* Picks the partitions due for a refresh and hands them to the refresher
 * (started here the first time). Watchdog thread only; never waits on the
 * network. */
static void lp_refresh_hwm(lagprobe_t *p, int64_t now) {
        int64_t ivl = (int64_t)p->conf.hwm_refresh_ms * 1000;
        uint32_t n = LD(p->nslots);
        if (ivl <= 0 || n == 0 || LD(p->rf_busy) || !LD(p->bound))
                return;
        /* Broker states come from the statistics: without a recent
         * document (the app is not polling) they are unknown. */
        int64_t fresh_us = (p->stats_interval_ms > 0 ? p->stats_interval_ms
                                                     : 1000) * 3000 +
                           1000000;
        int64_t last = LD(p->g_stats_last_us);
        if (last <= 0 || now - last > fresh_us)
                return;
        /* Nor while the group coordinator is unreachable: the cluster is in
         * trouble, and the group will move the partitions anyway. */
        if (LD(p->g_coord_down))
                return;
        if (lp_rf_mode() == LP_RF_NONE)
                return;
        uint32_t jobs[LP_RF_BATCH];
        int nj = 0;
        uint32_t k;
        for (k = 0; k < n && nj < LP_RF_BATCH; k++) {
                uint32_t i = (p->wd_refresh_cursor + k) % n;
                lp_slot_t *c = lp_slot_at(p, i);
                int64_t changed = LD(c->s_hi_changed_us);
                if (!LD(c->assigned) || LD(c->s_hi) < 0 || changed <= 0 ||
                    now - changed < ivl || now - LD(c->s_hi_query_us) < ivl)
                        continue;
                if (LD(c->s_leader) < 0 || !LD(c->s_leader_up))
                        continue; /* the leader is down: it cannot answer */
                jobs[nj++] = i;
        }
        p->wd_refresh_cursor = (p->wd_refresh_cursor + k) % n;
        if (nj == 0)
                return;
        pthread_mutex_lock(&p->rf_lock);
        if (!p->rf_started && !p->rf_quit) {
                atomic_fetch_add(&p->refcnt, 1);
                pthread_attr_t a;
                pthread_attr_init(&a);
                pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
                pthread_t t;
                if (pthread_create(&t, &a, lp_refresher, p) == 0) {
                        p->rf_started = 1;
                } else {
                        atomic_fetch_sub(&p->refcnt, 1); /* handle holds one */
                        p->rf_quit = 1; /* no refresher: no refreshes */
                }
                pthread_attr_destroy(&a);
        }
        if (p->rf_started && !p->rf_quit) {
                memcpy(p->rf_jobs, jobs, (size_t)nj * sizeof jobs[0]);
                p->rf_njobs = nj;
                ST(p->rf_busy, 1);
                pthread_cond_signal(&p->rf_cond);
        }
        pthread_mutex_unlock(&p->rf_lock);
}

/* ========================================================================
 * MARK: 13. Watchdog
 *
 * One pass (lp_check) every watchdog_interval_ms on the probe's thread,
 * or from lagprobe_tick(): poll evidence, evictions, headroom levels and
 * their events, the verdict between documents, the refresh.
 * ===================================================================== */

/* One watchdog pass; serialised by tick_lock. Returns events emitted. */
static int lp_check(lagprobe_t *p) {
        int emitted = 0;
        int64_t now = lp_mono_us();
        if (!LD(p->bound)) {
                /* The consumer is gone (or not there yet): still report what
                 * its last callbacks counted, e.g. the revoke inside
                 * rd_kafka_consumer_close(), then nothing time-based. */
                if (LD(p->rk_seen))
                        emitted += lp_check_counters(p, -1);
                return emitted;
        }
        int64_t limit_us = p->max_poll_interval_ms * 1000;
        char msg[320];
        lagprobe_event_t e;

        /* Zero-code poll evidence: messages consumed since the last pass
         * were handed out by a poll call that has returned since. */
        if (!LD(p->exact)) {
                int64_t total = 0;
                uint32_t n = LD(p->nslots);
                for (uint32_t i = 0; i < n; i++)
                        total += LD(lp_slot_at(p, i)->c_total);
                if (total != p->wd_prev_total) {
                        p->wd_prev_total = total;
                        lp_note_poll(p, now);
                }
        }
        int64_t since = lp_since_poll_us(p, now);
        if (since > 3 * p->stats_interval_ms * 1000)
                ST(p->stall_seen_us, now);

        /* Evictions seen by the log callback or lagprobe_poll_result(). */
        int64_t ev = LD(p->evictions);
        if (ev != p->wd_seen_evictions) {
                p->wd_seen_evictions = ev;
                lp_event_init(p, &e, LAGPROBE_EVENT_EVICTED, LP_LOG_ERR);
                lp_event_poll_figures(p, &e, since);
                e.count = ev;
                snprintf(msg, sizeof msg,
                         "consumer left the group: max.poll.interval.ms=%" PRId64
                         " exceeded (eviction %" PRId64 "); process fewer "
                         "messages per poll or raise max.poll.interval.ms",
                         p->max_poll_interval_ms, ev);
                e.message = msg;
                emitted += lp_emit(p, &e, 0);
        }

        emitted += lp_check_counters(p, since);
        emitted += lp_check_blind(p, now, since);
        emitted += lp_check_rb_blind(p);
        /* The verdict also follows time (headroom, storm window) between
         * statistics documents, which stop while the app is stuck. */
        pthread_mutex_lock(&p->wlock);
        uint32_t g = lp_wbegin(&p->gseq);
        lp_diagnose(p, 0);
        lp_wend(&p->gseq, g);
        pthread_mutex_unlock(&p->wlock);
        emitted += lp_check_diagnosis(p);
        emitted += lp_check_advice(p, now);
        if (since < 0 || limit_us <= 0) {
                ST(p->headroom_level, 0);
                return emitted;
        }
        emitted += lp_check_predict(p, now);

        int level = lp_headroom_level(p, since);
        /* Hysteresis: a level is left only when the app polls (since falls
         * under the warning share), never by drifting between levels. */
        if (level > p->wd_level) {
                int crit = level == 2;
                lp_event_init(p, &e,
                              crit ? LAGPROBE_EVENT_HEADROOM_CRITICAL
                                   : LAGPROBE_EVENT_HEADROOM_WARN,
                              crit ? LP_LOG_CRIT : LP_LOG_WARNING);
                lp_event_poll_figures(p, &e, since);
                snprintf(msg, sizeof msg,
                         "no poll for %" PRId64 " ms, %.0f %% of "
                         "max.poll.interval.ms=%" PRId64 ": eviction in %" PRId64
                         " ms unless the app polls; process fewer messages "
                         "per poll or raise max.poll.interval.ms",
                         e.since_poll_ms,
                         100.0 * (double)since / (double)limit_us,
                         p->max_poll_interval_ms, e.headroom_ms);
                e.message = msg;
                /* Warnings of a flapping consumer are rate-limited; the
                 * critical one always gets through. */
                emitted += lp_emit(p, &e, !crit);
                p->wd_level = level;
        } else if (level == 0 && p->wd_level > 0) {
                lp_event_init(p, &e, LAGPROBE_EVENT_HEADROOM_RECOVERED, LP_LOG_NOTICE);
                lp_event_poll_figures(p, &e, since);
                snprintf(msg, sizeof msg,
                         "consumer polled again after the headroom %s; "
                         "headroom now %" PRId64 " ms",
                         p->wd_level == 2 ? "critical" : "warning",
                         e.headroom_ms);
                e.message = msg;
                emitted += lp_emit(p, &e, 1);
                p->wd_level = 0;
        }
        ST(p->headroom_level, p->wd_level);
        /* Last: the query may take up to one watchdog interval. */
        if (lp_on_watchdog_thread)
                lp_refresh_hwm(p, now);
        return emitted;
}

int lagprobe_tick(lagprobe_t *p) {
        if (!p)
                return -1;
        pthread_mutex_lock(&p->tick_lock);
        int n = lp_check(p);
        pthread_mutex_unlock(&p->tick_lock);
        return n;
}

static void *lp_watchdog(void *arg) {
        lagprobe_t *p = arg;
        lp_on_watchdog_thread = 1;
        pthread_mutex_lock(&p->wd_lock);
        while (!p->wd_stop) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                int64_t ns = ts.tv_nsec +
                             (int64_t)p->conf.watchdog_interval_ms * 1000000;
                ts.tv_sec += ns / 1000000000;
                ts.tv_nsec = ns % 1000000000;
                pthread_cond_timedwait(&p->wd_cond, &p->wd_lock, &ts);
                if (p->wd_stop)
                        break;
                pthread_mutex_unlock(&p->wd_lock);
                lagprobe_tick(p);
                pthread_mutex_lock(&p->wd_lock);
        }
        pthread_mutex_unlock(&p->wd_lock);
        return NULL;
}

/* ========================================================================
 * MARK: 14. Lifecycle
 * ===================================================================== */

void lagprobe_config_init(lagprobe_config_t *c) {
        if (!c)
                return;
        memset(c, 0, sizeof *c);
        c->stats_interval_ms = 1000;
        c->watchdog_interval_ms = 100;
        c->warn_ratio = 0.70;
        c->critical_ratio = 0.90;
        c->event_min_interval_ms = 10000;
        c->log_cb = NULL;
        c->log_opaque = NULL;
        c->log_level = 6;
        c->unassigned_unhealthy_ms = 60000;
        c->window_ms = 60000;
        c->lag_allowance = 100;
        c->storm_rebalances = 3;
        c->storm_window_ms = 300000;
        c->hot_share = 0.5;
        c->slow_ratio = 1.5;
        c->burst_ratio = 1.1;
        c->hwm_refresh_ms = 5000;
        c->dwell_ms = -1;
}

static void lp_free(lagprobe_t *p) {
        for (ptrdiff_t i = 0; i < arrlen(p->topics); i++) {
                free(p->topics[i].name);
                arrfree(p->topics[i].parts);
        }
        arrfree(p->topics);
        shfree(p->topic_map);
        arrfree(p->w_sorted);
        for (size_t i = 0; i < LP_MAX_CHUNKS; i++)
                lp_chunk_free(LD(p->chunks[i]));
        arrfree(p->scr_parts);
        arrfree(p->scr_topics);
        arrfree(p->scr_brokers);
        arrfree(p->wd_said);
        arrfree(p->wd_said_ms);
        pthread_mutex_destroy(&p->wlock);
        pthread_mutex_destroy(&p->plock);
        pthread_mutex_destroy(&p->wd_lock);
        pthread_mutex_destroy(&p->tick_lock);
        pthread_cond_destroy(&p->wd_cond);
        pthread_mutex_destroy(&p->rf_lock);
        pthread_cond_destroy(&p->rf_cond);
        if (p->reg >= 0)
                atomic_store(&lp_registry[p->reg], NULL);
        free(p);
}

static void lp_unref(lagprobe_t *p) {
        if (atomic_fetch_sub(&p->refcnt, 1) == 1)
                lp_free(p);
}

lagprobe_t *lagprobe_new(const lagprobe_config_t *config, char *errstr,
                         size_t errstr_size) {
        lagprobe_config_t c;
        if (config)
                c = *config;
        else
                lagprobe_config_init(&c);
        if (c.stats_interval_ms < 1 || c.stats_interval_ms > 86400000) {
                lp_err(errstr, errstr_size,
                       "lagprobe_new: stats_interval_ms=%d out of range "
                       "1..86400000",
                       c.stats_interval_ms);
                return NULL;
        }
        if (c.watchdog_interval_ms < 0 || c.watchdog_interval_ms > 60000) {
                lp_err(errstr, errstr_size,
                       "lagprobe_new: watchdog_interval_ms=%d out of range "
                       "0..60000",
                       c.watchdog_interval_ms);
                return NULL;
        }
        if (!(c.warn_ratio > 0 && c.warn_ratio < 1) ||
            !(c.critical_ratio > c.warn_ratio && c.critical_ratio <= 1)) {
                lp_err(errstr, errstr_size,
                       "lagprobe_new: need 0 < warn_ratio (%g) < "
                       "critical_ratio (%g) <= 1",
                       c.warn_ratio, c.critical_ratio);
                return NULL;
        }
        if (c.window_ms < 60 || c.storm_window_ms < 1 ||
            c.storm_rebalances < 1 || c.lag_allowance < 0 ||
            !(c.hot_share > 0 && c.hot_share <= 1) || !(c.slow_ratio > 1) ||
            !(c.burst_ratio >= 1)) {
                lp_err(errstr, errstr_size,
                       "lagprobe_new: diagnosis settings out of range: need "
                       "window_ms >= 60, storm_window_ms >= 1, "
                       "storm_rebalances >= 1, lag_allowance >= 0, "
                       "0 < hot_share <= 1, slow_ratio > 1, burst_ratio >= 1");
                return NULL;
        }
        if (c.hwm_refresh_ms < 0) {
                lp_err(errstr, errstr_size,
                       "lagprobe_new: hwm_refresh_ms must be >= 0");
                return NULL;
        }
        if (c.dwell_ms < -1 || c.dwell_ms > c.window_ms) {
                lp_err(errstr, errstr_size,
                       "lagprobe_new: dwell_ms=%d out of range -1..window_ms "
                       "(%d)",
                       c.dwell_ms, c.window_ms);
                return NULL;
        }
        if (c.unassigned_unhealthy_ms < 0) {
                lp_err(errstr, errstr_size,
                       "lagprobe_new: unassigned_unhealthy_ms must be >= 0");
                return NULL;
        }
        if (c.event_min_interval_ms < 0) {
                lp_err(errstr, errstr_size,
                       "lagprobe_new: event_min_interval_ms must be >= 0");
                return NULL;
        }
        lagprobe_t *p = calloc(1, sizeof *p);
        if (!p) {
                lp_err(errstr, errstr_size, "lagprobe_new: out of memory");
                return NULL;
        }
        p->conf = c;
        p->win_us = (int64_t)c.window_ms * 1000 / LP_WIN;
        p->dwell_us = (int64_t)(c.dwell_ms < 0 ? c.window_ms / 10 : c.dwell_ms) *
                      1000;
        p->w_diag_raw_slot = -1;
        ST(p->g_dev[LP_DEV_RAW_SLOT], -1);
        p->hwm_refreshes = c.hwm_refresh_ms > 0 && c.watchdog_interval_ms > 0 &&
                           lp_rf_mode() != LP_RF_NONE;
        p->w_in_base = p->w_out_base = -1;
        p->w_lag_ago = -1;
        ST(p->g_in_base, -1);
        ST(p->g_out_base, -1);
        ST(p->g_time_us, -1);
        ST(p->g_time_base_us, -1);
        pthread_mutex_lock(&lp_stb_seed_lock);
        shput(p->topic_map, "", -1);
        shdel(p->topic_map, "");
        pthread_mutex_unlock(&lp_stb_seed_lock);
        lp_new_epoch(p);
        p->reg = -1;
        atomic_init(&p->refcnt, 1);
        p->max_poll_interval_ms = LP_RDK_MAX_POLL_MS;
        p->session_timeout_ms = LP_RDK_SESSION_MS;
        p->heartbeat_interval_ms = LP_RDK_HEARTBEAT_MS;
        pthread_mutex_init(&p->wlock, NULL);
        pthread_mutex_init(&p->plock, NULL);
        pthread_mutex_init(&p->wd_lock, NULL);
        pthread_mutex_init(&p->tick_lock, NULL);
        pthread_mutex_init(&p->rf_lock, NULL);
        pthread_cond_init(&p->rf_cond, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&p->wd_cond, &ca);
        pthread_condattr_destroy(&ca);
        if (c.watchdog_interval_ms > 0) {
                int e = pthread_create(&p->wd_thread, NULL, lp_watchdog, p);
                if (e) {
                        lp_err(errstr, errstr_size,
                               "lagprobe_new: cannot start watchdog thread: %s",
                               strerror(e));
                        lp_free(p);
                        return NULL;
                }
                p->wd_running = 1;
        }
        return p;
}

void lagprobe_destroy(lagprobe_t *p) {
        if (!p)
                return;
        if (p->wd_running) {
                pthread_mutex_lock(&p->wd_lock);
                p->wd_stop = 1;
                pthread_cond_signal(&p->wd_cond);
                pthread_mutex_unlock(&p->wd_lock);
                pthread_join(p->wd_thread, NULL);
                p->wd_running = 0;
                /* Deliver what happened since the last pass (e.g. the revoke
                 * inside rd_kafka_consumer_close()) before going quiet. */
                lagprobe_tick(p);
        }
        /* The refresher (if the watchdog started one) finishes its query,
         * bounded as in lp_on_destroy, and exits; it holds its own
         * reference, so not waiting longer is safe. */
        pthread_mutex_lock(&p->rf_lock);
        int rf = p->rf_started;
        p->rf_quit = 1;
        ST(p->rf_leave, 1);
        pthread_cond_signal(&p->rf_cond);
        pthread_mutex_unlock(&p->rf_lock);
        int64_t rf_end = lp_mono_us() + LP_DESTROY_WAIT_MS * 1000;
        while (rf && !LD(p->rf_exited) && lp_mono_us() < rf_end) {
                struct timespec ts = {0, 1000000};
                nanosleep(&ts, NULL);
        }
        ST(p->user_destroyed, 1);
        /* An event already inside the app's sink finishes before we return;
         * later ones see user_destroyed and stay silent. */
        while (LD(p->emitting) > 0) {
                struct timespec ts = {0, 100000};
                nanosleep(&ts, NULL);
        }
        lp_unref(p);
}

/* ========================================================================
 * MARK: 15. Number formatting and JSON
 * ===================================================================== */

/* |v| * 10^k rounded to an integer as printf rounds the exact value, for
 * 0 <= |v| * 10^k < 2^40; -1 when the product is too close to a tie for
 * the double product to decide (the caller then asks printf). */
static int64_t lp_round_scaled(double a, double scale) {
        double m = a * scale; /* error <= half an ulp, < 2^-13 here */
        if (!(m >= 0 && m < 1099511627776.0))
                return -1;
        uint64_t i = (uint64_t)m;
        double f = m - (double)i; /* exact */
        if (f > 0.4995 && f < 0.5005)
                return -1;
        return (int64_t)(i + (f > 0.5));
}

/* printf("%.3f", v) for finite v; returns the length (< 32). */
static size_t lp_fmt_f3(char *out, double v) {
        double a = v < 0 ? -v : v;
        int64_t r = a < 1e9 ? lp_round_scaled(a, 1000.0) : -1;
        if (r < 0) {
                int n = snprintf(out, 32, "%.3f", v);
                return n > 0 && n < 32 ? (size_t)n : 0;
        }
        char tmp[32], *e = tmp + sizeof tmp;
        e -= 4;
        e[0] = '.';
        e[1] = (char)('0' + r / 100 % 10);
        e[2] = (char)('0' + r / 10 % 10);
        e[3] = (char)('0' + r % 10);
        char *s = lp_u64_at(e, (uint64_t)(r / 1000));
        if (signbit(v))
                *--s = '-';
        size_t n = (size_t)(tmp + sizeof tmp - s);
        memcpy(out, s, n);
        return n;
}

/* printf("%.9g", v) for finite v; returns the length (< 32). */
static size_t lp_fmt_g9(char *out, double v) {
        static const double p10[] = {1e-4, 1e-3, 1e-2, 1e-1, 1,   1e1, 1e2,
                                     1e3,  1e4,  1e5,  1e6,  1e7, 1e8};
        static const double scale[] = {1e12, 1e11, 1e10, 1e9, 1e8, 1e7, 1e6,
                                       1e5,  1e4,  1e3,  1e2, 1e1, 1};
        double a = v < 0 ? -v : v;
        int64_t r = -1;
        int e = 0; /* a = d.dddddddd x 10^e, -4 <= e <= 8 */
        if (a >= 1e-4 && a < 1e9) {
                int i = 0;
                while (i < 12 && a >= p10[i + 1])
                        i++;
                e = i - 4;
                r = lp_round_scaled(a, scale[i]);
        }
        /* Nine digits exactly, or the estimate of e was off by one. */
        if (r < 100000000 || r > 999999999) {
                int n = snprintf(out, 32, "%.9g", v);
                return n > 0 && n < 32 ? (size_t)n : 0;
        }
        char d[9];
        lp_u64_at(d + 9, (uint64_t)r);
        int nd = 9;
        while (nd > 1 && d[nd - 1] == '0')
                nd--;
        size_t n = 0;
        if (signbit(v))
                out[n++] = '-';
        if (e >= 0) {
                int ip = e + 1; /* digits before the point */
                memcpy(out + n, d, (size_t)ip);
                n += (size_t)ip;
                if (nd > ip) {
                        out[n++] = '.';
                        memcpy(out + n, d + ip, (size_t)(nd - ip));
                        n += (size_t)(nd - ip);
                }
        } else {
                out[n++] = '0';
                out[n++] = '.';
                for (int k = 0; k < -e - 1; k++)
                        out[n++] = '0';
                memcpy(out + n, d, (size_t)nd);
                n += (size_t)nd;
        }
        return n;
}

/* Length of the valid UTF-8 sequence starting at @p u (a non-ASCII lead
 * byte), or 0 when it is invalid: overlong, surrogate, above U+10FFFF or
 * truncated. */
static int lp_utf8_len(const unsigned char *u) {
        unsigned char c = u[0];
        int n = c >= 0xF0 && c <= 0xF4   ? 4
                : c >= 0xE0 && c <= 0xEF ? 3
                : c >= 0xC2 && c <= 0xDF ? 2
                                         : 0;
        for (int k = 1; k < n; k++)
                if ((u[k] & 0xC0) != 0x80)
                        return 0;
        if ((n == 3 && c == 0xE0 && u[1] < 0xA0) ||  /* overlong */
            (n == 3 && c == 0xED && u[1] >= 0xA0) || /* surrogate */
            (n == 4 && c == 0xF0 && u[1] < 0x90) ||  /* overlong */
            (n == 4 && c == 0xF4 && u[1] >= 0x90))   /* > U+10FFFF */
                return 0;
        return n;
}

/* JSON string with escapes; invalid UTF-8 becomes U+FFFD. Runs of plain
 * bytes are copied whole. */
static void lp_json_str(lp_out_t *o, const char *s) {
        const unsigned char *u = (const unsigned char *)(s ? s : "");
        lp_put(o, "\"", 1);
        for (;;) {
                const unsigned char *run = u;
                while (*u >= 0x20 && *u < 0x7f && *u != '"' && *u != '\\')
                        u++;
                if (u > run)
                        lp_put(o, (const char *)run, (size_t)(u - run));
                unsigned char c = *u;
                if (!c)
                        break;
                if (c == '"' || c == '\\') {
                        char e[2] = {'\\', (char)c};
                        lp_put(o, e, 2);
                        u++;
                } else if (c < 0x80) { /* control character or DEL */
                        char e[6] = {'\\', 'u', '0', '0',
                                     "0123456789abcdef"[c >> 4],
                                     "0123456789abcdef"[c & 15]};
                        lp_put(o, e, 6);
                        u++;
                } else {
                        int n = lp_utf8_len(u);
                        if (n) {
                                lp_put(o, (const char *)u, (size_t)n);
                                u += n;
                        } else {
                                lp_puts(o, "\\ufffd");
                                u++;
                        }
                }
        }
        lp_put(o, "\"", 1);
}

static void lp_json_i64(lp_out_t *o, int64_t v) { lp_put_i64(o, v); }

static void lp_json_opt(lp_out_t *o, int64_t v) {
        if (v < 0)
                lp_puts(o, "null");
        else
                lp_json_i64(o, v);
}

static void lp_json_num(lp_out_t *o, double v) {
        if (!isfinite(v))
                lp_puts(o, "null");
        else if (v == 0)
                lp_puts(o, "0");
        else {
                char t[32];
                lp_put(o, t, lp_fmt_f3(t, v));
        }
}

/* A figure that is -1 when unknown: null. */
static void lp_json_num_opt(lp_out_t *o, double v) {
        if (v >= 0)
                lp_json_num(o, v);
        else
                lp_puts(o, "null");
}

static void lp_json_hist(lp_out_t *o, const char *key,
                         const lagprobe_hist_summary_t *h) {
        lp_printf(o, "\"%s\":{\"count\":%" PRIu64 ",\"sum_ms\":", key,
                  h->count);
        lp_json_num(o, h->sum_ms);
        lp_puts(o, ",\"p50_ms\":");
        lp_json_num(o, h->p50_ms);
        lp_puts(o, ",\"p90_ms\":");
        lp_json_num(o, h->p90_ms);
        lp_puts(o, ",\"p99_ms\":");
        lp_json_num(o, h->p99_ms);
        lp_puts(o, ",\"max_ms\":");
        lp_json_num(o, h->max_ms);
        lp_puts(o, "}");
}

static void lp_json_partition(lp_out_t *o, const lagprobe_partition_t *x) {
        lp_puts(o, "{\"topic\":");
        lp_json_str(o, x->topic);
        lp_puts(o, ",\"partition\":");
        lp_put_i64(o, x->partition);
        lp_puts(o, ",\"high_watermark\":");
        lp_json_opt(o, x->high_watermark);
        lp_puts(o, ",\"low_watermark\":");
        lp_json_opt(o, x->low_watermark);
        lp_puts(o, ",\"last_stable_offset\":");
        lp_json_opt(o, x->last_stable_offset);
        lp_puts(o, ",\"committed_offset\":");
        lp_json_opt(o, x->committed_offset);
        lp_puts(o, ",\"position\":");
        lp_json_opt(o, x->position);
        lp_puts(o, ",\"lag\":");
        lp_json_opt(o, x->lag);
        lp_puts(o, ",\"position_lag\":");
        lp_json_opt(o, x->position_lag);
        lp_puts(o, ",\"seconds_behind\":");
        if (x->seconds_behind < 0)
                lp_puts(o, "null");
        else
                lp_json_num(o, x->seconds_behind);
        lp_puts(o, ",\"consumed\":");
        lp_put_i64(o, x->consumed);
        lp_puts(o, ",\"last_message_ts_ms\":");
        lp_json_opt(o, x->last_message_ts_ms);
        lp_puts(o, ",\"fetchq_cnt\":");
        lp_put_i64(o, x->fetchq_cnt);
        lp_puts(o, ",\"fetchq_size\":");
        lp_put_i64(o, x->fetchq_size);
        lp_puts(o, ",\"last_progress_ms_ago\":");
        lp_json_opt(o, x->last_progress_ms_ago);
        lp_puts(o, ",\"hwm_age_ms\":");
        lp_json_opt(o, x->hwm_age_ms);
        lp_puts(o, x->stale ? ",\"stale\":true" : ",\"stale\":false");
        lp_puts(o, ",\"consumed_total\":");
        lp_put_i64(o, x->consumed_total);
        lp_puts(o, ",\"status\":");
        lp_json_str(o, x->status_name);
        lp_puts(o, ",\"status_reason\":");
        lp_json_str(o, x->status_reason);
        lp_puts(o, ",\"effective_lag\":");
        lp_json_opt(o, x->effective_lag);
        lp_puts(o, ",\"ingress_per_s\":");
        lp_json_num(o, x->ingress_rate);
        lp_puts(o, ",\"egress_per_s\":");
        lp_json_num(o, x->egress_rate);
        lp_puts(o, ",\"commit_per_s\":");
        lp_json_num(o, x->commit_rate);
        lp_puts(o, ",\"eta_s\":");
        if (x->eta_seconds < 0)
                lp_puts(o, "null");
        else
                lp_json_num(o, x->eta_seconds);
        lp_puts(o, ",\"commit_errors\":");
        lp_put_i64(o, x->commit_errors);
        lp_puts(o, ",\"last_commit_error\":");
        lp_json_str(o, x->last_commit_err
                           ? rd_kafka_err2name((rd_kafka_resp_err_t)
                                                   x->last_commit_err)
                           : "");
        lp_puts(o, "}");
}

/* Common start of the renderers: the bounded writer and the probe-wide
 * figures. Returns 0 (with "" written) for a NULL probe. */
static int lp_render_begin(lagprobe_t *p, char *buf, size_t size,
                           lp_out_t *o, lagprobe_snapshot_t *g,
                           int64_t *now_us, int64_t *now_ms, int consumed) {
        o->buf = buf;
        o->size = buf ? size : 0;
        o->len = 0;
        o->spill = NULL;
        if (!p) {
                if (o->size > 0)
                        buf[0] = 0;
                return 0;
        }
        *now_us = lp_mono_us();
        *now_ms = lp_wall_ms();
        lagprobe_snapshot_init(g, NULL, 0);
        lp_read_global_x(p, *now_us, g, consumed);
        g->ts_ms = *now_ms;
        return 1;
}

/* Puts the @p k bytes of @p d in place of the LP_SPILL placeholder bytes
 * at @p at, shifting what follows to the left. Bytes the buffer lacked room
 * for come from o->spill: the buffer still ends with the right text. */
static void lp_json_fill(lp_out_t *o, size_t at, const char *d, size_t k) {
        size_t sh = LP_SPILL - k, end = o->len - sh;
        if (at < o->size) {
                size_t lim = end < o->size ? end : o->size;
                memcpy(o->buf + at, d, at + k < lim ? k : lim - at);
                if (at + k < lim) {
                        /* Old positions [at + LP_SPILL, lim + sh) move to
                         * [at + k, lim); those past the buffer are in the
                         * spill (lim + sh <= size + LP_SPILL). */
                        size_t in = lim + sh < o->size ? lim + sh : o->size;
                        size_t s0 = at + LP_SPILL > o->size ? at + LP_SPILL
                                                            : o->size;
                        if (in > at + LP_SPILL)
                                memmove(o->buf + at + k, o->buf + at + LP_SPILL,
                                        in - (at + LP_SPILL));
                        if (lim + sh > s0)
                                memcpy(o->buf + s0 - sh, o->spill + (s0 - o->size),
                                       lim + sh - s0);
                }
        }
        o->len = end;
}

/* The names of the reasons in @p r, comma-separated; as JSON strings
 * when @p json. */
static void lp_put_reasons(lp_out_t *o, unsigned r, int json) {
        for (int i = 0, k = 0; i < LAGPROBE_REASON__CNT; i++) {
                if (!(r & (1u << i)))
                        continue;
                if (k++)
                        lp_puts(o, ",");
                if (json)
                        lp_json_str(o, lp_reason_names[i]);
                else
                        lp_puts(o, lp_reason_names[i]);
        }
}

/* The poll and rebalances objects. */
static void lp_json_poll_rebalances(lp_out_t *o, const lagprobe_snapshot_t *g) {
        lp_puts(o, ",\"poll\":{\"since_last_poll_ms\":");
        lp_json_opt(o, g->since_last_poll_ms);
        lp_puts(o, ",\"headroom_ms\":");
        lp_json_i64(o, g->headroom_ms);
        lp_printf(o, ",\"evictions\":%" PRId64 ",\"exact\":%s",
                  g->evictions, g->exact ? "true" : "false");
        lp_printf(o, ",\"hook_errors\":%" PRId64, g->hook_errors);
        lp_printf(o, ",\"in_batch\":%s,\"batch_size\":%" PRId64
                      ",\"batch_done\":%" PRId64 ",\"batch_elapsed_ms\":%" PRId64
                      "}",
                  g->in_batch ? "true" : "false", g->batch_size, g->batch_done,
                  g->batch_elapsed_ms);
        lp_printf(o, ",\"rebalances\":{\"count\":%" PRId64
                      ",\"assigns\":%" PRId64 ",\"revokes\":%" PRId64
                      ",\"lost\":%" PRId64 ",\"last_ms_ago\":",
                  g->rebalances, g->assigns, g->revokes, g->lost);
        lp_json_opt(o, g->last_rebalance_ms_ago);
        lp_printf(o, ",\"unassigned_ms\":%" PRId64 ",\"last_unassigned_ms\":",
                  g->unassigned_ms);
        lp_json_opt(o, g->last_unassigned_ms);
        lp_printf(o, ",\"assignment_size\":%" PRId64 ",\"protocol\":",
                  g->assignment_size);
        lp_json_str(o, g->protocol);
        lp_puts(o, ",\"last_error\":");
        lp_json_str(o, g->last_rebalance_err
                            ? rd_kafka_err2name(
                                  (rd_kafka_resp_err_t)g->last_rebalance_err)
                            : "");
        lp_puts(o, ",\"cgrp_state\":");
        lp_json_str(o, g->cgrp_state);
        lp_printf(o, ",\"cgrp_rebalance_cnt\":%" PRId64 "}",
                  g->cgrp_rebalance_cnt);
}

/* The processing object: histograms and their sources. */
static void lp_json_processing(lp_out_t *o, const lagprobe_snapshot_t *g) {
        lp_puts(o, ",\"processing\":{");
        lp_json_hist(o, "batch", &g->batch);
        lp_puts(o, ",");
        lp_json_hist(o, "batch_recent", &g->batch_recent);
        lp_puts(o, ",");
        lp_json_hist(o, "message", &g->message);
        lp_puts(o, ",");
        lp_json_hist(o, "message_recent", &g->message_recent);
        lp_puts(o, ",");
        lp_json_hist(o, "poll_gap", &g->poll_gap);
        lp_puts(o, ",");
        lp_json_hist(o, "poll_gap_recent", &g->poll_gap_recent);
        lp_puts(o, ",\"source\":{\"batch\":");
        lp_json_str(o, g->batch_source);
        lp_puts(o, ",\"message\":");
        lp_json_str(o, g->message_source);
        lp_puts(o, ",\"poll_gap\":");
        lp_json_str(o, g->poll_gap_source);
        lp_puts(o, "}}");
}

/* The diagnosis object: the verdict and the evidence behind it. */
static void lp_json_diagnosis(lp_out_t *o, const lagprobe_snapshot_t *g) {
        lp_puts(o, ",\"diagnosis\":{\"verdict\":");
        lp_json_str(o, g->diagnosis_name);
        lp_puts(o, ",\"detail\":");
        lp_json_str(o, g->diagnosis_detail);
        lp_puts(o, ",\"topic\":");
        if (g->diagnosis_topic)
                lp_json_str(o, g->diagnosis_topic);
        else
                lp_puts(o, "null");
        lp_puts(o, ",\"partition\":");
        if (g->diagnosis_partition >= 0)
                lp_printf(o, "%" PRId32, g->diagnosis_partition);
        else
                lp_puts(o, "null");
        lp_puts(o, ",\"share\":");
        lp_json_num(o, g->diagnosis_share);
        lp_puts(o, ",\"ingress_per_s\":");
        lp_json_num(o, g->ingress_rate);
        lp_puts(o, ",\"egress_per_s\":");
        lp_json_num(o, g->egress_rate);
        lp_printf(o, ",\"total_lag\":%" PRId64, g->total_lag);
        /* The evidence behind the verdict, as the detail text uses it. */
        lp_puts(o, ",\"ingress_baseline_per_s\":");
        lp_json_num_opt(o, g->ingress_baseline);
        lp_puts(o, ",\"egress_baseline_per_s\":");
        lp_json_num_opt(o, g->egress_baseline);
        lp_puts(o, ",\"time\":");
        lp_json_str(o, g->time_source);
        lp_puts(o, ",\"time_source\":");
        lp_json_str(o, !strcmp(g->time_source, "none") ? "none"
                        : g->time_inferred             ? "inferred"
                                                      : "hooks");
        lp_puts(o, ",\"time_recent_ms\":");
        lp_json_num_opt(o, g->time_recent_ms);
        lp_puts(o, ",\"time_baseline_ms\":");
        lp_json_num_opt(o, g->time_baseline_ms);
        lp_puts(o, "}");
}

size_t lagprobe_snapshot_json(lagprobe_t *p, char *buf, size_t size) {
        lp_out_t o;
        lagprobe_snapshot_t g;
        int64_t now_us, now_ms;
        char spill[LP_SPILL];
        if (!lp_render_begin(p, buf, size, &o, &g, &now_us, &now_ms, 0))
                return 0;
        o.spill = spill;

        lp_puts(&o, "{\"status\":");
        lp_json_str(&o, lagprobe_health_name(g.health));
        lp_puts(&o, ",\"reasons\":[");
        lp_put_reasons(&o, g.health_reasons, 1);
        lp_puts(&o, "],\"brokers_down\":[");
        for (int i = 0; i < g.brokers_down_cnt; i++)
                lp_printf(&o, "%s%" PRId32, i ? "," : "", g.brokers_down[i]);
        lp_puts(&o, "],\"ts_ms\":");
        lp_json_i64(&o, now_ms);
        lp_puts(&o, ",\"group_id\":");
        lp_json_str(&o, g.group_id);
        lp_puts(&o, ",\"client_id\":");
        lp_json_str(&o, g.client_id);
        lp_puts(&o, ",\"name\":");
        lp_json_str(&o, g.name);
        lp_printf(&o, ",\"bound\":%s", g.bound ? "true" : "false");
        lp_printf(&o, ",\"max_poll_interval_ms\":%" PRId64,
                  g.max_poll_interval_ms);
        /* null under KIP-848: the broker's, unknown to the client. */
        lp_puts(&o, ",\"session_timeout_ms\":");
        lp_json_opt(&o, g.session_timeout_ms);
        lp_puts(&o, ",\"heartbeat_interval_ms\":");
        lp_json_opt(&o, g.heartbeat_interval_ms);
        lp_json_poll_rebalances(&o, &g);
        lp_json_processing(&o, &g);
        lp_printf(&o, ",\"stats\":{\"docs\":%" PRId64 ",\"errors\":%" PRId64
                      ",\"field_errors\":%" PRId64 ",\"last_ms_ago\":",
                  g.stats_docs, g.stats_errors, g.stats_field_errors);
        lp_json_opt(&o, g.stats_last_ms_ago);
        lp_printf(&o, "},\"hwm_refresh\":{\"queries\":%" PRId64
                      ",\"failures\":%" PRId64,
                  g.hwm_queries, g.hwm_query_failures);
        lp_printf(&o, "},\"commits\":{\"count\":%" PRId64 ",\"errors\":%" PRId64
                      ",\"last_error\":",
                  g.commits, g.commit_errors);
        lp_json_str(&o, g.last_commit_err
                            ? rd_kafka_err2name(
                                  (rd_kafka_resp_err_t)g.last_commit_err)
                            : "");
        /* consumed, a sum over the slots, is only known after the
         * partitions: room for the longest number now, the number and a
         * shift of the text after it at the end (lp_json_fill). */
        lp_puts(&o, "},\"consumed\":");
        size_t at = o.len;
        lp_put(&o, "                    ", LP_SPILL);
        lp_json_diagnosis(&o, &g);
        lp_puts(&o, ",\"events\":{");
        for (int i = 0; i < LAGPROBE_EVENT__CNT; i++)
                lp_printf(&o, "%s\"%s\":%" PRId64, i ? "," : "",
                          lp_event_names[i], g.events[i]);
        lp_puts(&o, "},\"partitions\":[");
        uint32_t n = LD(p->nslots);
        int first = 1;
        int64_t consumed = 0;
        for (uint32_t l = lp_sorted_first(p, n), nx; l; l = nx) {
                nx = lp_sorted_next(p, l, n);
                lp_slot_t *s = lp_slot_at(p, l - 1);
                if (!LD(s->assigned)) {
                        consumed += LD(s->c_total);
                        continue;
                }
                lagprobe_partition_t x;
                lp_read_slot(p, s, now_us, now_ms, 1, &x);
                consumed += x.consumed_total;
                if (!first)
                        lp_puts(&o, ",");
                first = 0;
                lp_json_partition(&o, &x);
        }
        lp_puts(&o, "]}");
        char d[24];
        lp_json_fill(&o, at, d, lp_fmt_i64(d, consumed));
        return lp_render_end(&o);
}

lagprobe_health_t lagprobe_health(lagprobe_t *p, char *reasons,
                                  size_t reasons_size) {
        if (reasons && reasons_size)
                reasons[0] = 0;
        if (!p)
                return LAGPROBE_HEALTH_INVALID;
        lagprobe_snapshot_t g;
        lagprobe_snapshot_init(&g, NULL, 0);
        lp_read_global_x(p, lp_mono_us(), &g, 0);
        if (reasons && reasons_size) {
                lp_out_t o = {reasons, reasons_size, 0, NULL};
                lp_put_reasons(&o, g.health_reasons, 0);
                lp_render_end(&o);
        }
        return g.health;
}

/* ========================================================================
 * MARK: 16. Prometheus text exposition 0.0.4
 * ===================================================================== */

/* Prometheus label value, without the quotes: backslash, double quote and
 * newline escaped; invalid UTF-8 becomes U+FFFD, since one bad byte makes
 * Prometheus drop the scrape. At most 3 bytes out per byte in. */
static void lp_prom_esc(lp_out_t *o, const char *v) {
        const unsigned char *c = (const unsigned char *)(v ? v : "");
        for (;;) {
                const unsigned char *run = c;
                while (*c && *c < 0x80 && *c != '\\' && *c != '"' &&
                       *c != '\n')
                        c++;
                if (c > run)
                        lp_put(o, (const char *)run, (size_t)(c - run));
                if (!*c)
                        break;
                if (*c == '\\') {
                        lp_put(o, "\\\\", 2);
                        c++;
                } else if (*c == '"') {
                        lp_put(o, "\\\"", 2);
                        c++;
                } else if (*c == '\n') {
                        lp_put(o, "\\n", 2);
                        c++;
                } else {
                        int n = lp_utf8_len(c);
                        if (n) {
                                lp_put(o, (const char *)c, (size_t)n);
                                c += n;
                        } else {
                                lp_put(o, "\xef\xbf\xbd", 3); /* U+FFFD */
                                c++;
                        }
                }
        }
}

/* key="value", the value escaped (lp_prom_esc). */
static void lp_prom_label(lp_out_t *o, const char *k, const char *v) {
        lp_puts(o, k);
        lp_put(o, "=\"", 2);
        lp_prom_esc(o, v);
        lp_put(o, "\"", 1);
}

static void lp_prom_head(lp_out_t *o, const char *name, const char *type,
                         const char *help) {
        lp_puts(o, "# HELP ");
        lp_puts(o, name);
        lp_puts(o, " ");
        lp_puts(o, help);
        lp_puts(o, "\n# TYPE ");
        lp_puts(o, name);
        lp_puts(o, " ");
        lp_puts(o, type);
        lp_puts(o, "\n");
}

/* Sample value: integers in full, others as printf("%.9g"); returns the
 * length (< 32). */
static size_t lp_fmt_prom(char *out, double v) {
        if (!isfinite(v)) {
                memcpy(out, "NaN", 3);
                return 3;
        }
        /* Range first: casting a huge double to int64 is undefined. */
        if (v > -9e15 && v < 9e15 && v == (double)(int64_t)v)
                return lp_fmt_i64(out, (int64_t)v);
        return lp_fmt_g9(out, v);
}

static void lp_prom_num(lp_out_t *o, double v) {
        char t[32];
        lp_put(o, t, lp_fmt_prom(t, v));
}

/* Sample line: name{client_id,consumergroup[,extra]} value */
static void lp_prom_sample(lp_out_t *o, const char *name,
                           const lagprobe_snapshot_t *g, const char *xk,
                           const char *xv, double v) {
        lp_puts(o, name);
        lp_puts(o, "{");
        lp_prom_label(o, "client_id", g->client_id);
        lp_puts(o, ",");
        lp_prom_label(o, "consumergroup", g->group_id);
        if (xk) {
                lp_puts(o, ",");
                lp_prom_label(o, xk, xv);
        }
        lp_puts(o, "} ");
        lp_prom_num(o, v);
        lp_puts(o, "\n");
}

enum {
        LP_PF_LAG, LP_PF_CURRENT, LP_PF_HWM, LP_PF_LWM, LP_PF_POSITION,
        LP_PF_POSLAG, LP_PF_BEHIND, LP_PF_STALE, LP_PF_CONSUMED,
        LP_PF_COMMIT_ERRS, LP_PF_EFFLAG, LP_PF_INGRESS, LP_PF_EGRESS,
        LP_PF_STATUS, LP_PF__CNT
};

static const struct {
        const char *name, *type, *help;
        int exporter; /* kafka_exporter's labels: no client_id */
} lp_pfam[LP_PF__CNT] = {
    {"kafka_consumergroup_lag", "gauge",
     "Log end offset minus committed offset, per partition (as "
     "kafka_exporter and kafka-consumer-groups.sh).",
     1},
    {"kafka_consumergroup_current_offset", "gauge",
     "Committed offset of the group, per partition.", 1},
    {"lagprobe_partition_high_watermark", "gauge",
     "Log end offset from the consumer's statistics.", 0},
    {"lagprobe_partition_low_watermark", "gauge",
     "Log start offset from the consumer's statistics.", 0},
    {"lagprobe_partition_position", "gauge",
     "Next offset the application will see.", 0},
    {"lagprobe_partition_position_lag", "gauge",
     "High watermark minus position: messages not yet handed to the app.", 0},
    {"lagprobe_partition_seconds_behind", "gauge",
     "Age of the last consumed message while behind, 0 when caught up.", 0},
    {"lagprobe_partition_stale", "gauge",
     "1 when the high watermark may be old (not fetching, queue full, or "
     "statistics not served).",
     0},
    {"lagprobe_partition_consumed_messages_total", "counter",
     "Messages consumed from the partition since the probe started.", 0},
    {"lagprobe_partition_commit_errors_total", "counter",
     "Failed offset commits of the partition.", 0},
    {"lagprobe_partition_effective_lag", "gauge",
     "Lag, or 0 when only transaction markers or compaction gaps remain.",
     0},
    {"lagprobe_partition_ingress_messages_per_second", "gauge",
     "Messages appended per second over the diagnosis window.", 0},
    {"lagprobe_partition_egress_messages_per_second", "gauge",
     "Messages consumed per second over the diagnosis window.", 0},
    {"lagprobe_partition_status", "gauge",
     "1 for the partition's current status (label status).", 0},
};

static int lp_pfam_value(int f, const lagprobe_partition_t *x, double *v) {
        switch (f) {
        case LP_PF_LAG: *v = (double)x->lag; return x->lag >= 0;
        case LP_PF_CURRENT:
                *v = (double)x->committed_offset;
                return x->committed_offset >= 0;
        case LP_PF_HWM:
                *v = (double)x->high_watermark;
                return x->high_watermark >= 0;
        case LP_PF_LWM:
                *v = (double)x->low_watermark;
                return x->low_watermark >= 0;
        case LP_PF_POSITION: *v = (double)x->position; return x->position >= 0;
        case LP_PF_POSLAG:
                *v = (double)x->position_lag;
                return x->position_lag >= 0;
        case LP_PF_BEHIND:
                *v = x->seconds_behind;
                return x->seconds_behind >= 0;
        case LP_PF_STALE: *v = x->stale; return 1;
        case LP_PF_CONSUMED: *v = (double)x->consumed_total; return 1;
        case LP_PF_COMMIT_ERRS: *v = (double)x->commit_errors; return 1;
        case LP_PF_EFFLAG:
                *v = (double)x->effective_lag;
                return x->effective_lag >= 0;
        case LP_PF_INGRESS: *v = x->ingress_rate; return 1;
        case LP_PF_EGRESS: *v = x->egress_rate; return 1;
        case LP_PF_STATUS: *v = 1; return 1;
        }
        return 0;
}

/* Histogram bucket bounds, seconds. A fine bucket is counted under the
 * first bound its upper edge does not pass (within 1/16 of its value). */
static const double lp_prom_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                    0.025,  0.05,  0.1,    0.25,  0.5,
                                    1,      2.5,   5,      10,    30,
                                    60,     120,   300,    600,   1800};

static void lp_prom_hist(lp_out_t *o, const char *name, const char *help,
                         const lagprobe_snapshot_t *g, lp_whist_t *w,
                         int64_t now_us) {
        lp_hsum_t h;
        lp_whist_read(w, 1000000, now_us, &h, NULL);
        lp_prom_head(o, name, "histogram", help);
        size_t nle = sizeof lp_prom_le / sizeof lp_prom_le[0];
        uint64_t acc = 0;
        int fb = 0;
        for (size_t i = 0; i <= nle; i++) {
                double bound_us = i < nle ? lp_prom_le[i] * 1e6 : INFINITY;
                for (; fb < LP_HBUCKETS; fb++) {
                        double lo, wd;
                        lp_hbounds(fb, &lo, &wd);
                        if (lo + wd > bound_us && i < nle)
                                break;
                        acc += h.b[fb];
                }
                lp_puts(o, name);
                lp_puts(o, "_bucket{");
                lp_prom_label(o, "client_id", g->client_id);
                lp_puts(o, ",");
                lp_prom_label(o, "consumergroup", g->group_id);
                if (i < nle)
                        lp_printf(o, ",le=\"%g\"} ", lp_prom_le[i]);
                else
                        lp_puts(o, ",le=\"+Inf\"} ");
                lp_printf(o, "%" PRIu64 "\n", acc);
        }
        char n2[96];
        snprintf(n2, sizeof n2, "%s_sum", name);
        lp_prom_sample(o, n2, g, NULL, NULL, (double)h.sum_us / 1e6);
        snprintf(n2, sizeof n2, "%s_count", name);
        lp_prom_sample(o, n2, g, NULL, NULL, (double)acc);
}

/* One partition's samples, read once per render (lp_prom_rows). */
typedef struct lp_prow_s {
        double v[LP_PF__CNT];
        uint32_t has;        /* bit f: family f has a sample */
        int status;
        size_t lbl, lbl_len; /* 'TOPIC",partition="N"' in the label text */
} lp_prow_t;

typedef struct lp_prows_s {
        lp_prow_t *rows;
        uint32_t n;
        lp_out_t lbl; /* label text of the rows; lbl.buf is malloc'd */
        int64_t consumed; /* c_total summed over all slots */
} lp_prows_t;

/* Reads every assigned slot once into @p pr (each slot's C group is read
 * once per render: the consuming thread writes that cache line). Returns
 * 0 when out of memory. */
static int lp_prom_rows(lagprobe_t *p, int64_t now_us, int64_t now_ms,
                        lp_prows_t *pr) {
        uint32_t n = LD(p->nslots);
        memset(pr, 0, sizeof *pr);
        if (!n)
                return 1;
        size_t cap = (size_t)n * 32 + 1024;
        pr->rows = malloc((size_t)n * sizeof *pr->rows);
        pr->lbl.buf = malloc(cap);
        pr->lbl.size = cap;
        if (!pr->rows || !pr->lbl.buf)
                return 0;
        const char *topic = NULL;
        size_t esc = 0, esc_len = 0, bound = 0;
        for (uint32_t l = lp_sorted_first(p, n), nx; l; l = nx) {
                nx = lp_sorted_next(p, l, n);
                lp_slot_t *s = lp_slot_at(p, l - 1);
                if (!LD(s->assigned)) {
                        pr->consumed += LD(s->c_total);
                        continue;
                }
                lagprobe_partition_t x;
                lp_read_slot(p, s, now_us, now_ms, 0, &x);
                pr->consumed += x.consumed_total;
                lp_prow_t *r = &pr->rows[pr->n++];
                r->has = 0;
                for (int f = 0; f < LP_PF__CNT; f++)
                        if (lp_pfam_value(f, &x, &r->v[f]))
                                r->has |= 1u << f;
                r->status = x.status;
                /* Slots of one topic share its name: escape it once. */
                if (x.topic != topic) {
                        topic = x.topic;
                        esc_len = 0;
                        bound = 3 * strlen(topic) + 32;
                }
                lp_out_t *l = &pr->lbl;
                if (l->len + bound > l->size) {
                        size_t nc = 2 * (l->size + bound);
                        char *nb = realloc(l->buf, nc);
                        if (!nb)
                                return 0;
                        l->buf = nb;
                        l->size = nc;
                }
                r->lbl = l->len;
                if (esc_len) {
                        memcpy(l->buf + l->len, l->buf + esc, esc_len);
                        l->len += esc_len;
                } else {
                        esc = l->len;
                        lp_prom_esc(l, topic);
                        esc_len = l->len - esc;
                }
                lp_put(l, "\",partition=\"", 13);
                lp_put_i64(l, x.partition);
                lp_put(l, "\"", 1);
                r->lbl_len = l->len - r->lbl;
        }
        return 1;
}

/* Sample line of a partition: @p pre is 'name{...,topic="'. */
static void lp_prom_pline(lp_out_t *o, const char *pre, size_t pn,
                          const char *lbl, size_t ln, const char *status,
                          double v) {
        char num[32];
        size_t k = lp_fmt_prom(num, v);
        char *d;
        if (!status && (d = lp_room(o, pn + ln + k + 3)) != NULL) {
                memcpy(d, pre, pn);
                memcpy(d + pn, lbl, ln);
                d += pn + ln;
                d[0] = '}';
                d[1] = ' ';
                memcpy(d + 2, num, k);
                d[2 + k] = '\n';
                o->len += pn + ln + k + 3;
                return;
        }
        lp_put(o, pre, pn);
        lp_put(o, lbl, ln);
        if (status) {
                lp_put(o, ",", 1);
                lp_prom_label(o, "status", status);
        }
        lp_put(o, "} ", 2);
        lp_put(o, num, k);
        lp_put(o, "\n", 1);
}

/* The families of partitions, from the rows; 0 when out of memory. */
static int lp_prom_partitions(lp_out_t *o, const lagprobe_snapshot_t *g,
                              const lp_prows_t *pr) {
        /* 'name{client_id="..",consumergroup="..",topic="', at most 3
         * bytes per byte of the escaped values. */
        size_t cap = 3 * (strlen(g->client_id) + strlen(g->group_id)) + 256;
        lp_out_t pre = {malloc(cap), cap, 0, NULL};
        if (!pre.buf)
                return 0;
        for (int f = 0; f < LP_PF__CNT; f++) {
                lp_prom_head(o, lp_pfam[f].name, lp_pfam[f].type,
                             lp_pfam[f].help);
                pre.len = 0;
                lp_puts(&pre, lp_pfam[f].name);
                lp_put(&pre, "{", 1);
                if (!lp_pfam[f].exporter) {
                        lp_prom_label(&pre, "client_id", g->client_id);
                        lp_put(&pre, ",", 1);
                }
                lp_prom_label(&pre, "consumergroup", g->group_id);
                lp_puts(&pre, ",topic=\"");
                for (uint32_t i = 0; i < pr->n; i++) {
                        const lp_prow_t *r = &pr->rows[i];
                        if (!(r->has >> f & 1))
                                continue;
                        lp_prom_pline(o, pre.buf, pre.len,
                                      pr->lbl.buf + r->lbl, r->lbl_len,
                                      f == LP_PF_STATUS
                                          ? lp_pstatus_names[r->status]
                                          : NULL,
                                      r->v[f]);
                }
        }
        free(pre.buf);
        return 1;
}

/* The probe-wide families of one sample each, in the order of the values
 * lagprobe_metrics_prometheus() gives them. */
static const struct {
        const char *name, *type, *help;
} lp_gfam[] = {
    {"lagprobe_poll_headroom_seconds", "gauge",
     "max.poll.interval.ms minus the time since the last poll "
     "returned; the consumer is evicted below 0."},
    {"lagprobe_last_poll_seconds_ago", "gauge",
     "Time since the last poll returned (-1 before the first)."},
    {"lagprobe_max_poll_interval_seconds", "gauge",
     "Effective max.poll.interval.ms of the consumer."},
    {"lagprobe_poll_exact", "gauge",
     "1 when poll timing comes from batch hooks, 0 when inferred."},
    {"lagprobe_evictions_total", "counter",
     "Times the consumer left the group for exceeding "
     "max.poll.interval.ms."},
    {"lagprobe_assigned_partitions", "gauge",
     "Partitions currently assigned to this consumer."},
    {"lagprobe_unassigned_seconds", "gauge",
     "Time the consumer has been without any assignment (0 while "
     "assigned)."},
    {"lagprobe_health", "gauge",
     "Health verdict: 0 ok, 1 degraded, 2 unhealthy."},
    {"lagprobe_consumed_messages_total", "counter",
     "Messages handed to the application."},
    {"lagprobe_commits_total", "counter", "Offset commits completed."},
    {"lagprobe_commit_errors_total", "counter",
     "Offset commits that failed."},
    {"lagprobe_stats_documents_total", "counter",
     "Statistics documents parsed."},
    {"lagprobe_stats_parse_errors_total", "counter",
     "Statistics documents rejected as malformed."},
    {"lagprobe_stats_field_errors_total", "counter",
     "Statistics fields of the wrong type or out of range."},
    {"lagprobe_hook_errors_total", "counter",
     "Batch hook calls out of order (end without begin) or from two "
     "threads at once."},
    {"lagprobe_brokers_down", "gauge",
     "Brokers the consumer needs (partition leaders, group "
     "coordinator) that have been unreachable for a second or more."},
};

size_t lagprobe_metrics_prometheus(lagprobe_t *p, char *buf, size_t size) {
        lp_out_t o;
        lagprobe_snapshot_t g;
        int64_t now_us, now_ms;
        if (!lp_render_begin(p, buf, size, &o, &g, &now_us, &now_ms, 0))
                return 0;
        /* One reading per partition serves every family, so a partition's
         * lag and offsets in one scrape come from the same update (and the
         * render is one pass of reads, not one per family). The copy lives
         * on the calling thread. */
        lp_prows_t pr;
        if (!lp_prom_rows(p, now_us, now_ms, &pr) ||
            !lp_prom_partitions(&o, &g, &pr)) {
                /* Out of memory: no text rather than one without its
                 * partitions, which would read as a consumer with none. */
                free(pr.rows);
                free(pr.lbl.buf);
                if (o.size > 0)
                        buf[0] = 0;
                return 0;
        }
        g.consumed = pr.consumed;
        free(pr.rows);
        free(pr.lbl.buf);

        double since_s =
            g.since_last_poll_ms >= 0 ? (double)g.since_last_poll_ms / 1e3 : -1;
        const double vals[] = {(double)g.headroom_ms / 1e3,
                               since_s,
                               (double)g.max_poll_interval_ms / 1e3,
                               g.exact,
                               (double)g.evictions,
                               (double)g.assignment_size,
                               (double)g.unassigned_ms / 1e3,
                               g.health,
                               (double)g.consumed,
                               (double)g.commits,
                               (double)g.commit_errors,
                               (double)g.stats_docs,
                               (double)g.stats_errors,
                               (double)g.stats_field_errors,
                               (double)g.hook_errors,
                               g.brokers_down_cnt};
        _Static_assert(sizeof vals / sizeof vals[0] ==
                           sizeof lp_gfam / sizeof lp_gfam[0],
                       "one value per family");
        for (size_t i = 0; i < sizeof lp_gfam / sizeof lp_gfam[0]; i++) {
                lp_prom_head(&o, lp_gfam[i].name, lp_gfam[i].type,
                             lp_gfam[i].help);
                lp_prom_sample(&o, lp_gfam[i].name, &g, NULL, NULL, vals[i]);
        }

        lp_prom_head(&o, "lagprobe_rebalance_events_total", "counter",
                     "Rebalance callbacks by type (lost is a subset of "
                     "revoke).");
        lp_prom_sample(&o, "lagprobe_rebalance_events_total", &g, "type",
                       "assign", (double)g.assigns);
        lp_prom_sample(&o, "lagprobe_rebalance_events_total", &g, "type",
                       "revoke", (double)g.revokes);
        lp_prom_sample(&o, "lagprobe_rebalance_events_total", &g, "type",
                       "lost", (double)g.lost);
        lp_prom_head(&o, "lagprobe_diagnosis", "gauge",
                     "1 for the consumer's current lag diagnosis (label "
                     "verdict).");
        lp_prom_sample(&o, "lagprobe_diagnosis", &g, "verdict",
                       g.diagnosis_name, 1);
        lp_prom_head(&o, "lagprobe_health_reason", "gauge",
                     "1 for each reason behind the health verdict (label "
                     "reason), 0 for the others.");
        for (int i = 0; i < LAGPROBE_REASON__CNT; i++)
                lp_prom_sample(&o, "lagprobe_health_reason", &g, "reason",
                               lp_reason_names[i],
                               (g.health_reasons >> i) & 1u);
        lp_prom_head(&o, "lagprobe_events_total", "counter",
                     "Probe events by name, delivered or rate-limited.");
        for (int i = 0; i < LAGPROBE_EVENT__CNT; i++)
                lp_prom_sample(&o, "lagprobe_events_total", &g, "event",
                               lp_event_names[i], (double)g.events[i]);

        lp_prom_hist(&o, "lagprobe_batch_duration_seconds",
                     "Time from lagprobe_batch_begin to lagprobe_batch_end.",
                     &g, &p->h_batch, now_us);
        lp_prom_hist(&o, "lagprobe_message_processing_seconds",
                     "Per-message processing time within batches.", &g,
                     &p->h_msg, now_us);
        lp_prom_hist(&o, "lagprobe_poll_gap_seconds",
                     "Time between the returns of consecutive polls.", &g,
                     &p->h_gap, now_us);
        return lp_render_end(&o);
}

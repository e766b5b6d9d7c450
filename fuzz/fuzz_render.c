/* fuzz_render - lagprobe_snapshot_json(), lagprobe_metrics_prometheus(),
 * lagprobe_snapshot() and lagprobe_health() over probe states built from the
 * input, at arbitrary buffer sizes.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * White-box: probe.c is compiled into this file with clock_gettime()
 * replaced by a frozen clock whose readings come from the input, so two
 * renders of one state are identical. The input chooses the clock, the
 * configuration, identity strings (any bytes but NUL), up to 6 partition
 * slots (48 when the count byte is 255) with arbitrary topic names, and every figure the probe's writers can
 * store, each within the range its writer can produce (so that what fails
 * here is reachable). Invariants:
 *  - the returned length is the same at every buffer size: each input
 *    renders one format (its choice) in full and, if it says so, again at
 *    a size it chooses in 0 .. len + 1 (0 with NULL or a real buffer);
 *  - with size > 0 the output is NUL-terminated at min(len, size - 1), is a
 *    prefix of the full text, and nothing is written past size (ASan);
 *    with size 0 nothing is written at all;
 *  - the full JSON is one valid JSON document (strict: UTF-8 in strings, no
 *    raw control characters) without embedded NULs;
 *  - every Prometheus line is a comment or a well-formed sample;
 *  - lagprobe_snapshot() counts the assigned slots and fills at most
 *    partitions_size entries, sorted;
 *  - when the input says: every partition's lag in a full snapshot is its
 *    high watermark minus its committed offset (0 when the commit is
 *    ahead) or -1 (null) when either is unknown, and the format rendered
 *    carries the snapshot's figures, partition by partition in the same
 *    order (JSON: offsets, lags, position; Prometheus: the samples of those
 *    families, absent when unknown, with the partition label);
 *  - lagprobe_health() NUL-terminates reasons within its size. */
#define clock_gettime fz_clock_gettime
#include "../probe.c"
#undef clock_gettime

#include "fuzz_util.h"

static int64_t fz_mono_us = 1000000000, fz_wall_ms = 1700000000000;

int fz_clock_gettime(clockid_t id, struct timespec *ts) {
        int64_t us = id == CLOCK_REALTIME ? fz_wall_ms * 1000 : fz_mono_us;
        ts->tv_sec = (time_t)(us / 1000000);
        ts->tv_nsec = (long)(us % 1000000) * 1000;
        return 0;
}

static void quiet(const lagprobe_event_t *e, void *o) {
        (void)e;
        (void)o;
}

#define I64MAX INT64_MAX

static void fill_slot(fz_in_t *in, lp_slot_t *s) {
        /* C group: on_consume. */
        /* (Once the C group's generation: the value is still read so that
         * the inputs in regressions/render keep their meaning.) */
        (void)fz_range(in, 0, 3);
        ST(s->c_position, fz_u8(in) & 1 ? -1 : fz_range(in, 1, I64MAX));
        /* Message counters: summed over slots by readers; 2^48 messages
         * per partition is beyond any real consumer. */
        ST(s->s_c_base, fz_range(in, 0, (int64_t)1 << 48));
        ST(s->c_last_ts, fz_range(in, -1, I64MAX));
        ST(s->c_total, fz_range(in, 0, (int64_t)1 << 48));
        /* S group: statistics, commits, rebalances, diagnosis. */
        (void)fz_range(in, 0, 3); /* once assign_gen: kept, see above */
        ST(s->s_hi, fz_range(in, -1, I64MAX));
        ST(s->s_lo, fz_range(in, -1, I64MAX));
        ST(s->s_ls, fz_range(in, -1, I64MAX));
        ST(s->s_app_offset, fz_range(in, -1, I64MAX));
        ST(s->s_committed, fz_range(in, -1, I64MAX));
        ST(s->s_fetchq_cnt, fz_range(in, 0, I64MAX));
        ST(s->s_fetchq_size, fz_range(in, 0, I64MAX));
        ST(s->s_stats_us, fz_range(in, 0, I64MAX));
        ST(s->s_progress_us, fz_range(in, 0, I64MAX));
        ST(s->s_commit_errs, fz_range(in, 0, (int64_t)1 << 62));
        ST(s->s_last_commit_err, (int)fz_range(in, INT32_MIN, INT32_MAX));
        ST(s->s_stale, (int)(fz_u8(in) & 1));
        ST(s->s_status, (int)fz_range(in, 0, LAGPROBE_PSTATUS__CNT - 1));
        /* The evidence behind the status, any value a writer could store
         * (the reason text must render all of them). */
        ST(s->s_raw, (int32_t)fz_range(in, -1, LAGPROBE_PSTATUS__CNT));
        ST(s->s_raw_us, fz_range(in, INT64_MIN, I64MAX));
        ST(s->s_lag_min, fz_range(in, INT64_MIN, I64MAX));
        ST(s->s_lag_ago, fz_range(in, INT64_MIN, I64MAX));
        ST(s->s_rw_from, fz_range(in, INT64_MIN, I64MAX));
        ST(s->s_rw_to, fz_range(in, INT64_MIN, I64MAX));
        ST(s->s_span_ms, (int32_t)fz_range(in, INT32_MIN, INT32_MAX));
        ST(s->s_paused_ms, (int32_t)fz_range(in, INT32_MIN, INT32_MAX));
        ST(s->s_growing, (int32_t)fz_range(in, 0, 1));
        ST(s->s_rw_commit, (int32_t)fz_range(in, 0, 1));
        ST(s->s_consumed, (int32_t)fz_range(in, INT32_MIN, INT32_MAX));
        ST(s->s_eff_lag, fz_range(in, -1, I64MAX));
        ST(s->s_in_mrate, fz_range(in, INT64_MIN, I64MAX));
        ST(s->s_out_mrate, fz_range(in, INT64_MIN, I64MAX));
        ST(s->s_commit_mrate, fz_range(in, INT64_MIN, I64MAX));
        ST(s->s_eta_ms, fz_range(in, -1, I64MAX));
        ST(s->assigned, (int)(fz_u8(in) % 4 != 0));
}

static void fill_global(fz_in_t *in, lagprobe_t *p, uint32_t nslots) {
        p->max_poll_interval_ms = fz_range(in, 1, 86400000);
        p->session_timeout_ms = fz_range(in, 1, 3600000);
        p->heartbeat_interval_ms = fz_range(in, 1, 3600000);
        p->stats_interval_ms = fz_range(in, 0, 86400000);
        fz_str(in, p->group_id, 255);
        fz_str(in, p->client_id, 255);
        fz_str(in, p->name, 127);
        ST(p->rk_seen, (int)(fz_u8(in) & 1));
        ST(p->name_set, (int)(fz_u8(in) & 1));
        ST(p->bound, (int)(fz_u8(in) & 1));

        ST(p->g_assigns, fz_range(in, 0, (int64_t)1 << 40));
        ST(p->g_revokes, fz_range(in, 0, (int64_t)1 << 40));
        ST(p->g_lost, fz_range(in, 0, (int64_t)1 << 40));
        ST(p->g_last_rebalance_us, fz_range(in, 0, I64MAX));
        ST(p->g_unassigned_since_us, fz_range(in, 0, I64MAX));
        ST(p->g_last_unassigned_us, fz_range(in, 0, I64MAX));
        ST(p->g_protocol, (int)fz_range(in, 0, 2));
        ST(p->g_last_rebalance_err, (int)fz_range(in, INT32_MIN, INT32_MAX));
        ST(p->g_assignment_size, fz_range(in, 0, LAGPROBE_MAX_PARTITIONS));
        ST(p->g_cgrp_rebalance_cnt, fz_range(in, -1, I64MAX));
        ST(p->g_cgrp_state, (int)fz_range(in, 0, (int64_t)LP_CGRP_STATES - 1));
        ST(p->g_stats_docs, fz_range(in, 0, (int64_t)1 << 62));
        ST(p->g_stats_errors, fz_range(in, 0, (int64_t)1 << 62));
        ST(p->g_stats_field_errors, fz_range(in, 0, (int64_t)1 << 62));
        ST(p->g_stats_last_us, fz_range(in, 0, I64MAX));
        ST(p->g_commits, fz_range(in, 0, (int64_t)1 << 62));
        ST(p->g_commit_errors, fz_range(in, 0, (int64_t)1 << 62));
        ST(p->g_last_commit_err, (int)fz_range(in, INT32_MIN, INT32_MAX));
        ST(p->g_last_commit_err_us, fz_range(in, 0, I64MAX));
        ST(p->g_last_assign_us, fz_range(in, 0, I64MAX));
        ST(p->g_diag, (int)fz_range(in, 0, LAGPROBE_DIAG__CNT - 1));
        ST(p->g_diag_slot, (int)fz_range(in, -1, (int64_t)nslots));
        /* The verdict's evidence, any value (the detail text renders the
         * newest verdict's, which may differ from the one shown). */
        for (int k = 0; k < LP_DEV__CNT; k++)
                ST(p->g_dev[k], fz_range(in, INT64_MIN, I64MAX));
        ST(p->g_dev[LP_DEV_RAW], fz_range(in, -1, LAGPROBE_DIAG__CNT));
        ST(p->g_dev[LP_DEV_RAW_SLOT], fz_range(in, -1, (int64_t)nslots));
        ST(p->g_in_mrate, fz_range(in, INT64_MIN, I64MAX));
        ST(p->g_out_mrate, fz_range(in, INT64_MIN, I64MAX));
        ST(p->g_total_lag, fz_range(in, 0, I64MAX));

        ST(p->last_poll_us, fz_range(in, 0, fz_mono_us));
        ST(p->exact, (int)(fz_u8(in) & 1));
        ST(p->b_in_batch, (int)(fz_u8(in) & 1));
        ST(p->b_size, fz_range(in, 0, (int64_t)1 << 40));
        ST(p->b_done, fz_range(in, 0, (int64_t)1 << 40));
        ST(p->b_begin_us, fz_range(in, 0, fz_mono_us));
        ST(p->b_last_progress_us, fz_range(in, 0, fz_mono_us));
        ST(p->evictions, fz_range(in, 0, (int64_t)1 << 40));
        ST(p->last_eviction_us, fz_range(in, 0, fz_mono_us));
        ST(p->predicted_batch_us,
           fz_u8(in) & 1 ? LD(p->b_begin_us) : fz_range(in, 0, fz_mono_us));
        for (int i = 0; i < LAGPROBE_EVENT__CNT; i++)
                ST(p->events[i], fz_range(in, 0, (int64_t)1 << 40));
        /* Histograms: durations up to 2^40 us, recorded at times up to
         * now (the recent windows' ages follow). */
        lp_whist_t *hs[3] = {&p->h_batch, &p->h_msg, &p->h_gap};
        int nh = (int)(fz_u8(in) % 24);
        for (int i = 0; i < nh; i++) {
                lp_whist_t *w = hs[fz_u8(in) % 3];
                int64_t at = fz_range(in, 1, fz_mono_us);
                lp_whist_add(w, p->win_us, at, fz_range(in, 0, (int64_t)1 << 40));
        }
}

typedef size_t (*render_fn)(lagprobe_t *, char *, size_t);

/* Every render is costly (the probe sums its histograms each time), so an
 * execution renders each format once in full, into a big buffer, and once
 * more at one size from the input. NULL is passed when that size is 0. */
#define FULL_MAX (4u << 20)
static char g_full[FULL_MAX];

static size_t render_full(lagprobe_t *p, render_fn fn, const char *what) {
        memset(g_full, 'X', 64);
        size_t n = fn(p, g_full, FULL_MAX);
        FZ_CHECK(n < FULL_MAX, "%s: %zu bytes", what, n);
        FZ_CHECK(g_full[n] == 0, "%s: not NUL-terminated", what);
        FZ_CHECK(strlen(g_full) == n, "%s: embedded NUL at %zu of %zu", what,
                 strlen(g_full), n);
        return n;
}

/* The size contract at size sz (0: NULL buffer, or a one-byte canary). */
static void render_at(lagprobe_t *p, render_fn fn, const char *what,
                      size_t n, size_t sz, int canary_buf) {
        if (sz == 0) {
                char canary = 'C';
                FZ_CHECK(fn(p, canary_buf ? &canary : NULL, 0) == n &&
                             canary == 'C',
                         "%s: size 0: wrong length or a write", what);
                return;
        }
        char *b = malloc(sz); /* exact: ASan sees any overrun */
        FZ_CHECK(b, "malloc");
        memset(b, 'Y', sz);
        size_t r = fn(p, b, sz);
        FZ_CHECK(r == n, "%s: length %zu at size %zu, %zu at full", what, r, sz,
                 n);
        size_t cut = n < sz - 1 ? n : sz - 1;
        FZ_CHECK(b[cut] == 0, "%s: no NUL at %zu (size %zu)", what, cut, sz);
        FZ_CHECK(memcmp(b, g_full, cut) == 0,
                 "%s: size %zu is not a prefix of the full text", what, sz);
        free(b);
}

/* Snapshot order: topic (strcmp), then partition; distinct partitions. */
static int fz_part_cmp(const lagprobe_partition_t *x,
                       const lagprobe_partition_t *y) {
        int c = strcmp(x->topic, y->topic);
        return c ? c : (x->partition > y->partition) - (x->partition < y->partition);
}

static int64_t want_lag(int64_t hi, int64_t com) {
        return hi >= 0 && com >= 0 ? (hi > com ? hi - com : 0) : -1;
}

#define NFIG 6

/* A partition's figures as both formats name them. */
static void figures(const lagprobe_partition_t *x, int64_t v[NFIG]) {
        v[0] = x->high_watermark;
        v[1] = x->committed_offset;
        v[2] = x->lag;
        v[3] = x->position;
        v[4] = x->position_lag;
        v[5] = x->effective_lag;
}

static const char *const fig_json[NFIG] = {
    "high_watermark", "committed_offset", "lag",
    "position",       "position_lag",     "effective_lag"};
static const char *const fig_prom[NFIG] = {
    "lagprobe_partition_high_watermark", "kafka_consumergroup_current_offset",
    "kafka_consumergroup_lag",           "lagprobe_partition_position",
    "lagprobe_partition_position_lag",   "lagprobe_partition_effective_lag"};

/* Exact below 9e15; above, lp_fmt_prom() writes 9 significant digits. */
static int prom_same(double got, int64_t want) {
        double w = (double)want;
        return got == w || (w >= 9e15 && fabs(got - w) <= 1e-8 * w);
}

/* The full text in g_full (JSON, or Prometheus when prom) against a full
 * snapshot of n partitions. */
static void outputs_agree(const lagprobe_partition_t *parts, size_t n,
                          int prom) {
        for (size_t i = 0; i < n; i++)
                FZ_CHECK(parts[i].lag == want_lag(parts[i].high_watermark,
                                                  parts[i].committed_offset),
                         "snapshot [%zu]: lag %lld, hwm %lld, committed %lld",
                         i, (long long)parts[i].lag,
                         (long long)parts[i].high_watermark,
                         (long long)parts[i].committed_offset);
        if (!prom) {
                const char *q = fz_json_partitions(g_full);
                FZ_CHECK(q, "JSON: no partitions array");
                for (size_t i = 0; i < n; i++) {
                        FZ_CHECK(*q == '{', "JSON: partition %zu of %zu "
                                            "missing",
                                 i, n);
                        const char *e = fz_json_object_end(q);
                        FZ_CHECK(e, "JSON: partition %zu unterminated", i);
                        int64_t v[NFIG];
                        figures(&parts[i], v);
                        FZ_CHECK(fz_json_int(q, e, "partition") ==
                                     parts[i].partition,
                                 "JSON: partition %zu out of order", i);
                        for (int k = 0; k < NFIG; k++)
                                FZ_CHECK(fz_json_int(q, e, fig_json[k]) ==
                                             (v[k] < 0 ? -1 : v[k]),
                                         "JSON partition %zu %s: %lld, "
                                         "snapshot %lld",
                                         i, fig_json[k],
                                         (long long)fz_json_int(q, e,
                                                                fig_json[k]),
                                         (long long)v[k]);
                        q = e + (*e == ',');
                }
                FZ_CHECK(*q == ']', "JSON: more partitions than %zu", n);
                return;
        }
        for (int k = 0; k < NFIG; k++) {
                size_t fl = strlen(fig_prom[k]), i = 0;
                for (const char *l = g_full; *l;) {
                        const char *eol = strchr(l, '\n');
                        FZ_CHECK(eol, "metrics: no newline");
                        if (!strncmp(l, fig_prom[k], fl) && l[fl] == '{') {
                                /* The partition with this figure next. */
                                while (i < n) {
                                        int64_t v[NFIG];
                                        figures(&parts[i], v);
                                        if (v[k] >= 0)
                                                break;
                                        i++;
                                }
                                FZ_CHECK(i < n, "%s: more samples than "
                                                "partitions with the figure",
                                         fig_prom[k]);
                                /* Labels end at the line's last '"} ':
                                 * ...,partition="N"} value. */
                                const char *end = NULL;
                                for (const char *c = l; c + 2 < eol; c++)
                                        if (c[0] == '"' && c[1] == '}' &&
                                            c[2] == ' ')
                                                end = c;
                                FZ_CHECK(end, "%s: no labels", fig_prom[k]);
                                const char *ps = end;
                                while (ps > l && ps[-1] >= '0' && ps[-1] <= '9')
                                        ps--;
                                FZ_CHECK(ps - l >= 12 &&
                                             !memcmp(ps - 12, ",partition=\"",
                                                     12) &&
                                             strtol(ps, NULL, 10) ==
                                                 parts[i].partition,
                                         "%s: sample %zu not partition %d",
                                         fig_prom[k], i,
                                         (int)parts[i].partition);
                                int64_t v[NFIG];
                                figures(&parts[i], v);
                                double got = strtod(end + 3, NULL);
                                FZ_CHECK(prom_same(got, v[k]),
                                         "%s partition %zu: %.17g, snapshot "
                                         "%lld",
                                         fig_prom[k], i, got, (long long)v[k]);
                                i++;
                        }
                        l = eol + 1;
                }
                while (i < n) {
                        int64_t v[NFIG];
                        figures(&parts[i], v);
                        FZ_CHECK(v[k] < 0, "%s: no sample for partition %zu",
                                 fig_prom[k], i);
                        i++;
                }
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        fz_in_t in = {data, size};
        fz_mono_us = fz_range(&in, 1, (int64_t)1 << 50);
        fz_wall_ms = fz_range(&in, 1, (int64_t)1 << 45);

        lagprobe_config_t pc;
        lagprobe_config_init(&pc);
        pc.watchdog_interval_ms = 0;
        pc.log_cb = quiet;
        pc.window_ms = (int)fz_range(&in, 60, 86400000);
        pc.unassigned_unhealthy_ms = (int)fz_range(&in, 0, 86400000);
        pc.storm_window_ms = (int)fz_range(&in, 1, 86400000);
        char errstr[256];
        lagprobe_t *p = lagprobe_new(&pc, errstr, sizeof errstr);
        FZ_CHECK(p, "lagprobe_new: %s", errstr);

        /* Slots. */
        unsigned nsel = fz_u8(&in);
        int want = (int)(nsel == 255 ? 48 : nsel % 7);
        uint32_t assigned = 0;
        char topic[320];
        for (int i = 0; i < want && in.n; i++) {
                fz_str(&in, topic, 300);
                /* Partition ids index a per-topic array (lp_slot_find grows
                 * it one entry at a time): keep them realistic. */
                int32_t part = (int32_t)fz_range(&in, 0, 511);
                pthread_mutex_lock(&p->wlock);
                int si = lp_slot_find(p, topic, part, 1);
                pthread_mutex_unlock(&p->wlock);
                FZ_CHECK(si >= 0, "lp_slot_find failed");
                fill_slot(&in, lp_slot_at(p, (uint32_t)si));
        }
        uint32_t nslots = LD(p->nslots);
        for (uint32_t i = 0; i < nslots; i++)
                assigned += LD(lp_slot_at(p, i)->assigned) != 0;
        fill_global(&in, p, nslots);

        size_t at = 0, n;
        const char *why;
        /* One format per execution (each render costs ~0.5 ms under ASan,
         * mostly summing histograms); a second render at a size from the
         * input, the snapshot and the health check when the input says. */
        unsigned which = fz_u8(&in);
        render_fn fn = which & 1 ? lagprobe_metrics_prometheus
                                 : lagprobe_snapshot_json;
        const char *what = which & 1 ? "prometheus" : "json";
        n = render_full(p, fn, what);
        why = which & 1 ? fz_prom_check(g_full, n, &at)
                        : fz_json_check(g_full, n, &at);
        FZ_CHECK(!why, "%s invalid: %s at byte %zu: ...%.80s", what, why, at,
                 g_full + (at > 20 ? at - 20 : 0));
        if (which & 32) {
                /* The figures, against a full snapshot (the clock is
                 * frozen: the same state). Before render_at(), which
                 * leaves g_full as it is. */
                lagprobe_partition_t *parts =
                    calloc(nslots ? nslots : 1, sizeof *parts);
                FZ_CHECK(parts, "calloc");
                lagprobe_snapshot_t snap;
                lagprobe_snapshot_init(&snap, parts, nslots);
                FZ_CHECK(lagprobe_snapshot(p, &snap) == 0, "snapshot failed");
                outputs_agree(parts, snap.partition_cnt, which & 1);
                free(parts);
        }
        if (which & 2)
                render_at(p, fn, what, n,
                          (size_t)fz_range(&in, 0, (int64_t)n + 1), which & 4);

        if (which & 8) {
                /* Snapshot into an array of any size. */
                size_t cap = (size_t)fz_range(&in, 0, (int64_t)nslots + 1);
                lagprobe_partition_t *parts =
                    cap ? calloc(cap, sizeof *parts) : NULL;
                lagprobe_snapshot_t snap;
                lagprobe_snapshot_init(&snap, parts, cap);
                FZ_CHECK(lagprobe_snapshot(p, &snap) == 0, "snapshot failed");
                FZ_CHECK(snap.partition_cnt == assigned,
                         "partition_cnt %zu, %u assigned", snap.partition_cnt,
                         assigned);
                size_t filled = cap < assigned ? cap : assigned;
                for (size_t i = 1; i < filled; i++)
                        FZ_CHECK(fz_part_cmp(&parts[i - 1], &parts[i]) < 0,
                                 "snapshot not sorted at %zu", i);
                free(parts);
        }
        if (which & 16) {
                /* Health reasons at any size. */
                size_t rs = (size_t)fz_range(&in, 0, 200);
                char *reasons = rs ? malloc(rs) : NULL;
                int h = lagprobe_health(p, reasons, rs);
                FZ_CHECK(h >= 0 && h <= 2, "health %d", h);
                if (rs)
                        FZ_CHECK(memchr(reasons, 0, rs) != NULL,
                                 "reasons not terminated");
                free(reasons);
        }

        lagprobe_destroy(p);
        return 0;
}

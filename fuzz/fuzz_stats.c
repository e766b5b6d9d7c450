/* fuzz_stats - lp_stats_parse() on arbitrary statistics documents.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * White-box: probe.c is compiled into this file, with clock_gettime()
 * replaced by a frozen clock (advanced by one second per document) so
 * every run of an input is the same. A fresh probe per input is assigned
 * partitions 0..7 of "stats-t0", 0..3 of "stats-t1" and 0..1 of "bench"
 * (the topics bench/gen_stats.c writes seeds for). The input is one
 * document, or several separated by the line "#~#" ("\n#~#\n"), applied
 * in order, so that sliding-window evaluation sees a sequence. Invariants:
 *  - lp_stats_parse() returns 0 or -1, and stats_docs (accepted) or
 *    stats_errors (rejected) grows by exactly one per document;
 *  - a rejected document changes no partition figure (snapshot compared
 *    field by field, byte for byte);
 *  - after every document each partition's lag is its high watermark
 *    minus its committed offset (0 when the commit is ahead), or -1 (null)
 *    when either is unknown;
 *  - after the last document the snapshot agrees with the counters, and
 *    the JSON snapshot (even input lengths) is valid JSON (strict) or the
 *    Prometheus text (odd lengths) is well-formed, its label values UTF-8;
 *    rendering both after every document would triple the cost of an
 *    execution for little: fuzz_render covers the renderers.
 * An input whose first byte is 0x01 is not a document but the recipe of up
 * to four (gen_docs()): partitions of the assigned topics and of others,
 * each with hi_offset, committed_offset and app_offset from a set of edge
 * values or arbitrary, in any field order or left out. Those documents
 * are valid, so each must be accepted, and the figures are known outside
 * the probe: after each one every partition's high watermark, committed
 * offset, lag, position and position lag must be what the documents said
 * (a negative offset other than -1001 is no figure and keeps the last
 * one); at the end the JSON, the Prometheus text and the snapshot must
 * carry the same figures for every partition. */
#define clock_gettime fz_clock_gettime
#include "../probe.c"
#undef clock_gettime

#include "fuzz_util.h"

static int64_t fz_mono_us = 5000000000, fz_wall_ms = 1700000000000;

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

static void assign(lagprobe_t *p, const char *topic, int n) {
        pthread_mutex_lock(&p->wlock);
        for (int i = 0; i < n; i++) {
                int si = lp_slot_find(p, topic, i, 1);
                FZ_CHECK(si >= 0, "lp_slot_find");
                lp_slot_t *s = lp_slot_at(p, (uint32_t)si);
                ST(s->assigned, 1);
        }
        uint32_t g = lp_wbegin(&p->gseq);
        ST(p->g_assignment_size, LD(p->g_assignment_size) + n);
        lp_wend(&p->gseq, g);
        ST(p->cache_epoch, LD(p->cache_epoch) + 1);
        pthread_mutex_unlock(&p->wlock);
}

#define NPARTS 14

/* Every slot's figures, as readers see them (cheaper than a snapshot: no
 * histograms). */
static void read_slots(lagprobe_t *p, lagprobe_partition_t *out) {
        uint32_t n = LD(p->nslots);
        FZ_CHECK(n == NPARTS, "nslots %u", n);
        int64_t now_us = lp_mono_us(), now_ms = lp_wall_ms();
        for (uint32_t i = 0; i < n; i++)
                lp_read_slot(p, lp_slot_at(p, i), now_us, now_ms, 1, &out[i]);
}

#define FULL_MAX (4u << 20)
static char g_full[FULL_MAX];

/* One format per input (each render sums the probe's histograms: costly
 * under ASan), chosen by the input's length. */
static void render_check(lagprobe_t *p, int prom) {
        size_t at = 0, n;
        const char *why;
        if (!prom) {
                n = lagprobe_snapshot_json(p, g_full, FULL_MAX);
                FZ_CHECK(n < FULL_MAX && g_full[n] == 0 && strlen(g_full) == n,
                         "json termination");
                why = fz_json_check(g_full, n, &at);
                FZ_CHECK(!why, "json invalid: %s at byte %zu: ...%.60s", why,
                         at, g_full + (at > 20 ? at - 20 : 0));
                return;
        }
        n = lagprobe_metrics_prometheus(p, g_full, FULL_MAX);
        FZ_CHECK(n < FULL_MAX && g_full[n] == 0 && strlen(g_full) == n,
                 "prom termination");
        why = fz_prom_check(g_full, n, &at);
        FZ_CHECK(!why, "prometheus invalid: %s at byte %zu: %.80s", why, at,
                 g_full + at);
}

static const char SEP[] = "\n#~#\n";

/* lagprobe's committed lag of a high watermark and a committed offset. */
static int64_t want_lag(int64_t hi, int64_t com) {
        return hi >= 0 && com >= 0 ? (hi > com ? hi - com : 0) : -1;
}

static void check_lags(const lagprobe_partition_t *x) {
        for (int i = 0; i < NPARTS; i++)
                FZ_CHECK(x[i].lag == want_lag(x[i].high_watermark,
                                              x[i].committed_offset),
                         "%s [%d]: lag %lld, high watermark %lld, committed "
                         "%lld",
                         x[i].topic, (int)x[i].partition,
                         (long long)x[i].lag, (long long)x[i].high_watermark,
                         (long long)x[i].committed_offset);
}

/* ---- generated documents (first byte 0x01) ----------------------------- */

static const char *const gen_topics[4] = {"stats-t0", "stats-t1", "bench",
                                          "other"};
static const int gen_assigned[4] = {8, 4, 2, 0};

/* What the documents said, per assigned partition, in the slots' order
 * (lp_slot_find() of assign(): stats-t0, stats-t1, bench). */
typedef struct gen_want_s {
        int64_t hi, com, app;
} gen_want_t;

static int gen_slot(int t, int part) {
        int base = 0;
        for (int k = 0; k < t; k++)
                base += gen_assigned[k];
        return part < gen_assigned[t] ? base + part : -1;
}

static int64_t gen_value(fz_in_t *in) {
        static const int64_t edge[] = {-1001, -1, 0, 1, 42, 1000000,
                                       INT64_MAX, INT64_MIN, INT64_MAX - 1};
        unsigned sel = fz_u8(in);
        if (sel < 9 * 16)
                return edge[sel % 9];
        return fz_range(in, INT64_MIN, INT64_MAX);
}

static size_t gen_doc(fz_in_t *in, int64_t ts, gen_want_t *w, char *buf,
                      size_t size) {
        size_t o = 0;
#define OUT(...)                                                               \
        do {                                                                   \
                int k_ = snprintf(buf + o, size - o, __VA_ARGS__);             \
                FZ_CHECK(k_ >= 0 && (size_t)k_ < size - o, "gen_doc: room");   \
                o += (size_t)k_;                                               \
        } while (0)
        OUT("{\"name\":\"fz#consumer-1\",\"type\":\"consumer\",\"ts\":%lld,"
            "\"topics\":{",
            (long long)ts);
        for (int t = 0; t < 4; t++) {
                unsigned mask = fz_u8(in) | (unsigned)fz_u8(in) << 8;
                OUT("%s\"%s\":{\"topic\":\"%s\",\"partitions\":{", t ? "," : "",
                    gen_topics[t], gen_topics[t]);
                int first = 1;
                if (mask & 0x8000) { /* librdkafka's internal partition */
                        OUT("\"-1\":{\"partition\":-1,\"hi_offset\":-1001,"
                            "\"committed_offset\":-1001}");
                        first = 0;
                }
                for (int part = 0; part < 9; part++) {
                        if (!(mask & (1u << part)))
                                continue;
                        int64_t v[3];
                        const char *const key[3] = {"hi_offset",
                                                    "committed_offset",
                                                    "app_offset"};
                        unsigned how = fz_u8(in); /* order and omissions */
                        for (int f = 0; f < 3; f++)
                                v[f] = gen_value(in);
                        OUT("%s\"%d\":{\"partition\":%d", first ? "" : ",",
                            part, part);
                        first = 0;
                        int present[3] = {0, 0, 0};
                        for (int f = 0; f < 3; f++) {
                                int which = (f + (int)(how % 3)) % 3;
                                if ((how >> (2 + which)) & 1)
                                        continue; /* left out */
                                present[which] = 1;
                                OUT(",\"%s\":%lld", key[which],
                                    (long long)v[which]);
                        }
                        OUT("}");
                        int si = gen_slot(t, part);
                        if (si < 0)
                                continue;
                        /* The probe's rules: -1001 is unknown, another
                         * negative offset no figure; a missing app_offset
                         * is -1001. */
                        if (present[0] && (v[0] >= 0 || v[0] == -1001))
                                w[si].hi = v[0] >= 0 ? v[0] : -1;
                        if (present[1] && v[1] >= 0)
                                w[si].com = v[1];
                        w[si].app = present[2] && v[2] >= 0 ? v[2] : -1;
                }
                OUT("}}");
        }
        OUT("},\"cgrp\":{\"state\":\"up\",\"rebalance_cnt\":1}}");
#undef OUT
        return o;
}

/* The partition figures the documents set, as the slots read them. */
static void gen_check(const lagprobe_partition_t *x, const gen_want_t *w) {
        for (int i = 0; i < NPARTS; i++) {
                /* Nothing consumed: the position is app_offset, else the
                 * committed offset. */
                int64_t pos = w[i].app >= 0 ? w[i].app : w[i].com;
                FZ_CHECK(x[i].high_watermark == w[i].hi &&
                             x[i].committed_offset == w[i].com &&
                             x[i].lag == want_lag(w[i].hi, w[i].com) &&
                             x[i].position == pos &&
                             x[i].position_lag ==
                                 (w[i].hi >= 0 && pos >= 0
                                      ? (w[i].hi > pos ? w[i].hi - pos : 0)
                                      : -1),
                         "%s [%d]: hwm %lld committed %lld lag %lld position "
                         "%lld position lag %lld; the documents say hwm %lld "
                         "committed %lld app_offset %lld",
                         x[i].topic, (int)x[i].partition,
                         (long long)x[i].high_watermark,
                         (long long)x[i].committed_offset, (long long)x[i].lag,
                         (long long)x[i].position,
                         (long long)x[i].position_lag, (long long)w[i].hi,
                         (long long)w[i].com, (long long)w[i].app);
        }
}

/* The partition's object in the JSON's "partitions" array: [*o, *end). */
static int json_partition(const char *js, const char *topic, int part,
                          const char **o, const char **end) {
        char head[96];
        snprintf(head, sizeof head, "{\"topic\":\"%s\",\"partition\":%d,",
                 topic, part);
        const char *arr = fz_json_partitions(js);
        const char *b = arr ? strstr(arr, head) : NULL;
        if (!b)
                return 0;
        *o = b;
        *end = fz_json_object_end(b);
        return *end != NULL;
}

/* The per-partition families outputs_agree() reads, in the order of its
 * table. */
#define NFAM 5
static const char *const fams[NFAM] = {
    "lagprobe_partition_high_watermark", "kafka_consumergroup_current_offset",
    "kafka_consumergroup_lag", "lagprobe_partition_position",
    "lagprobe_partition_position_lag"};

/* One pass over the Prometheus text: the samples of fams for each
 * assigned partition (count and value). */
static void prom_values(const char *m, int cnt[NPARTS][NFAM],
                        double val[NPARTS][NFAM]) {
        memset(cnt, 0, sizeof(int) * NPARTS * NFAM);
        for (const char *l = m; *l;) {
                const char *eol = strchr(l, '\n');
                FZ_CHECK(eol, "metrics: last line without newline");
                int f = -1;
                for (int k = 0; k < NFAM && f < 0; k++) {
                        size_t fl = strlen(fams[k]);
                        if (!strncmp(l, fams[k], fl) && l[fl] == '{')
                                f = k;
                }
                const char *tp = f >= 0 ? strstr(l, "topic=\"") : NULL;
                if (tp && tp < eol) {
                        tp += 7;
                        int t = -1, part;
                        for (int k = 0; k < 4 && t < 0; k++) {
                                size_t n = strlen(gen_topics[k]);
                                if (!strncmp(tp, gen_topics[k], n) &&
                                    tp[n] == '"')
                                        t = k;
                        }
                        const char *pp = strstr(tp, ",partition=\"");
                        int si = t >= 0 && pp && pp < eol &&
                                         sscanf(pp, ",partition=\"%d\"", &part) == 1
                                     ? gen_slot(t, part)
                                     : -1;
                        const char *sp = memchr(l, '}', (size_t)(eol - l));
                        FZ_CHECK(si >= 0 && sp, "%s: a sample of an "
                                                "unassigned partition: %.80s",
                                 fams[f], l);
                        cnt[si][f]++;
                        val[si][f] = strtod(sp + 2, NULL);
                }
                l = eol + 1;
        }
}

static char g_json[FULL_MAX];

/* JSON, Prometheus and the snapshot carry the same partition figures. */
static void outputs_agree(lagprobe_t *p) {
        lagprobe_partition_t parts[NPARTS];
        lagprobe_snapshot_t snap;
        lagprobe_snapshot_init(&snap, parts, NPARTS);
        FZ_CHECK(lagprobe_snapshot(p, &snap) == 0 &&
                     snap.partition_cnt == NPARTS,
                 "snapshot");
        size_t n = lagprobe_snapshot_json(p, g_json, FULL_MAX);
        FZ_CHECK(n < FULL_MAX, "json size");
        n = lagprobe_metrics_prometheus(p, g_full, FULL_MAX);
        FZ_CHECK(n < FULL_MAX, "prometheus size");
        static int cnt[NPARTS][NFAM];
        static double val[NPARTS][NFAM];
        prom_values(g_full, cnt, val);
        for (int i = 0; i < NPARTS; i++) {
                const lagprobe_partition_t *x = &parts[i];
                const char *o, *e;
                FZ_CHECK(json_partition(g_json, x->topic, x->partition, &o, &e),
                         "JSON: %s [%d] missing", x->topic, (int)x->partition);
                int t = 0;
                while (t < 3 && strcmp(gen_topics[t], x->topic))
                        t++;
                int si = gen_slot(t, x->partition);
                FZ_CHECK(si >= 0, "snapshot: %s [%d] not assigned", x->topic,
                         (int)x->partition);
                static const char *const jkey[NFAM] = {
                    "high_watermark", "committed_offset", "lag", "position",
                    "position_lag"};
                const int64_t v[NFAM] = {x->high_watermark,
                                         x->committed_offset, x->lag,
                                         x->position, x->position_lag};
                for (int k = 0; k < NFAM; k++) {
                        int64_t j = fz_json_int(o, e, jkey[k]);
                        FZ_CHECK(j == v[k], "JSON %s [%d] %s: %lld, snapshot "
                                            "%lld",
                                 x->topic, (int)x->partition, jkey[k],
                                 (long long)j, (long long)v[k]);
                        /* Absent when unknown. Exact below 9e15; above,
                         * lp_fmt_prom() writes 9 significant digits. */
                        double dv = (double)v[k], pv = val[si][k];
                        int has = cnt[si][k];
                        FZ_CHECK(has == (v[k] >= 0) &&
                                     (!has || pv == dv ||
                                      (dv >= 9e15 &&
                                       fabs(pv - dv) <= 1e-8 * dv)),
                                 "%s %s [%d]: %d sample(s), %.17g, snapshot "
                                 "%lld",
                                 fams[k], x->topic, (int)x->partition, has, pv,
                                 (long long)v[k]);
                }
        }
}

/* The recipe input: documents generated from it, fed and checked. */
static void run_generated(lagprobe_t *p, fz_in_t in) {
        static char doc[65536];
        gen_want_t w[NPARTS];
        for (int i = 0; i < NPARTS; i++)
                w[i] = (gen_want_t){-1, -1, -1};
        lagprobe_partition_t x[NPARTS + 1];
        int ndocs = 1 + (int)(fz_u8(&in) % 4);
        for (int d = 0; d < ndocs; d++) {
                size_t len = gen_doc(&in, 1000000 * (int64_t)(d + 1), w, doc,
                                     sizeof doc);
                FZ_CHECK(lp_stats_parse(p, doc, len) == 0,
                         "a generated document was rejected: %.*s", (int)len,
                         doc);
                read_slots(p, x);
                gen_check(x, w);
                fz_mono_us += 1000000;
                fz_wall_ms += 1000;
        }
        outputs_agree(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        fz_mono_us = 5000000000;
        lagprobe_config_t pc;
        lagprobe_config_init(&pc);
        pc.watchdog_interval_ms = 0;
        pc.log_cb = quiet;
        char errstr[256];
        lagprobe_t *p = lagprobe_new(&pc, errstr, sizeof errstr);
        FZ_CHECK(p, "lagprobe_new: %s", errstr);
        assign(p, "stats-t0", 8);
        assign(p, "stats-t1", 4);
        assign(p, "bench", 2);

        if (size > 0 && data[0] == 0x01) {
                run_generated(p, (fz_in_t){data + 1, size - 1});
                lagprobe_destroy(p);
                return 0;
        }
        static lagprobe_partition_t before[NPARTS + 1], after[NPARTS + 1];
        const char *doc = (const char *)data, *end = doc + size;
        int64_t docs = 0, errors = 0;
        while (doc <= end) {
                const char *next = NULL;
                for (const char *q = doc; q + sizeof SEP - 1 <= end; q++)
                        if (*q == '\n' && !memcmp(q, SEP, sizeof SEP - 1)) {
                                next = q;
                                break;
                        }
                size_t len = (size_t)((next ? next : end) - doc);
                /* An exact-size copy: ASan sees any read past the end. */
                char *copy = malloc(len ? len : 1);
                FZ_CHECK(copy, "malloc");
                memcpy(copy, doc, len);

                read_slots(p, before);
                int rc = lp_stats_parse(p, copy, len);
                read_slots(p, after);
                FZ_CHECK(rc == 0 || rc == -1, "rc %d", rc);
                if (rc == 0)
                        docs++;
                else
                        errors++;
                FZ_CHECK(LD(p->g_stats_docs) == docs &&
                             LD(p->g_stats_errors) == errors,
                         "counters docs %lld/%lld errors %lld/%lld",
                         (long long)LD(p->g_stats_docs), (long long)docs,
                         (long long)LD(p->g_stats_errors), (long long)errors);
                if (rc != 0)
                        FZ_CHECK(!memcmp(before, after, sizeof before),
                                 "a rejected document changed partition "
                                 "figures");
                check_lags(after);
                free(copy);
                fz_mono_us += 1000000;
                fz_wall_ms += 1000;
                if (!next)
                        break;
                doc = next + sizeof SEP - 1;
        }
        lagprobe_snapshot_t snap;
        lagprobe_snapshot_init(&snap, NULL, 0);
        FZ_CHECK(lagprobe_snapshot(p, &snap) == 0, "snapshot");
        FZ_CHECK(snap.partition_cnt == NPARTS && snap.stats_docs == docs &&
                     snap.stats_errors == errors,
                 "snapshot: %zu partitions, %lld docs, %lld errors",
                 snap.partition_cnt, (long long)snap.stats_docs,
                 (long long)snap.stats_errors);
        render_check(p, (int)(size & 1));
        lagprobe_destroy(p);
        return 0;
}

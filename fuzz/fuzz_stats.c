/* fuzz_stats - lagprobe__stats_parse() on arbitrary statistics documents.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * White-box: probe.c is compiled into this file, with clock_gettime()
 * replaced by a frozen clock (advanced by one second per document) so
 * every run of an input is the same. A fresh probe per input is assigned
 * partitions 0..7 of "stats-t0", 0..3 of "stats-t1" and 0..1 of "bench"
 * (the topics bench/gen_stats.c writes seeds for). The input is one
 * document, or several separated by the line "#~#" ("\n#~#\n"), applied
 * in order, so that sliding-window evaluation sees a sequence. Invariants:
 *  - lagprobe__stats_parse() returns 0 or -1, and stats_docs (accepted) or
 *    stats_errors (rejected) grows by exactly one per document;
 *  - a rejected document changes no partition figure (snapshot compared
 *    field by field, byte for byte);
 *  - after the last document the snapshot agrees with the counters, and
 *    the JSON snapshot (even input lengths) is valid JSON (strict) or the
 *    Prometheus text (odd lengths) is well-formed; rendering both after
 *    every document would triple the cost of an execution for little:
 *    fuzz_render covers the renderers. */
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
                lp_read_slot(lp_slot_at(p, i), now_us, now_ms,
                             p->stats_interval_ms, p->conf.window_ms, &out[i]);
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
                int rc = lagprobe__stats_parse(p, copy, len);
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

/* bench_stats - statistics parsing: lagprobe's scanner against cJSON and
 * jansson on real librdkafka statistics documents (bench/gen_stats.c).
 * SPDX-License-Identifier: BSD-2-Clause
 *
 *   bench_stats [-r RUNS] DOC.json...
 *
 * White-box: probe.c is compiled into this file. For each document a probe
 * (watchdog off) is assigned every partition the document lists, so that
 * lp_stats_parse() does its full work (scan, then apply to every
 * slot). Timed, per document, in RUNS interleaved runs:
 *   probe    lp_stats_parse(): scan + apply, as in the stats callback
 *   scan     the scan alone (jp_document into the reusable scratch)
 *   cjson    cJSON_ParseWithLength + walk extracting the same fields + free
 *   jansson  json_loadb + the same walk + decref
 * Allocation: malloc/calloc/realloc are wrapped at link time
 * (-Wl,--wrap=...), so every allocation made by probe.c is counted; after
 * two warm-up documents the timed probe loop must allocate nothing, and the
 * scratch arrays' capacity must not change.
 * Times are CPU time of the benchmark thread (CLOCK_THREAD_CPUTIME_ID), so
 * other processes on the machine do not count; wall time is printed too.
 * Output: "DOC name bytes partitions", "RESULT doc parser run cpu_ns=..
 * wall_ns=..", and "SUMMARY" lines with medians and ratios (CPU time). */
#include "../probe.c"

#include "bench_util.h"

#include <cjson/cJSON.h>
#include <jansson.h>

/* ---- counting allocator (link with --wrap) ---------------------------- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
static _Atomic long g_allocs;

void *__wrap_malloc(size_t n) {
        atomic_fetch_add(&g_allocs, 1);
        return __real_malloc(n);
}
void *__wrap_calloc(size_t n, size_t m) {
        atomic_fetch_add(&g_allocs, 1);
        return __real_calloc(n, m);
}
void *__wrap_realloc(void *p, size_t n) {
        atomic_fetch_add(&g_allocs, 1);
        return __real_realloc(p, n);
}
void __wrap_free(void *p) { __real_free(p); }

/* ---- extraction target shared by the cJSON and jansson walks ---------- */

typedef struct rec_s {
        const char *topic;
        int32_t partition;
        int64_t hi, lo, ls, committed, app, fetchq_cnt, fetchq_size;
        int active;
} rec_t;

typedef struct ext_s {
        rec_t *recs;
        size_t n, cap;
        int64_t ts, rebalance_cnt;
        char state[32];
        char name[128];
} ext_t;

static void ext_push(ext_t *e, const rec_t *r) {
        if (e->n < e->cap)
                e->recs[e->n++] = *r;
}

static const rec_t rec_init = {NULL, -2, -1, -1, -1, -1001, -1, -1, -1, -1};

/* The figures lagprobe reads, summed: all parsers must agree. */
static int64_t ext_check(const ext_t *e) {
        int64_t s = 0;
        for (size_t i = 0; i < e->n; i++)
                s += e->recs[i].partition + e->recs[i].hi + e->recs[i].lo +
                     e->recs[i].ls + e->recs[i].committed + e->recs[i].app +
                     e->recs[i].fetchq_cnt + e->recs[i].fetchq_size +
                     e->recs[i].active;
        return s;
}

static int64_t cj_int(const cJSON *v) {
        return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : -1;
}

static int walk_cjson(const char *doc, size_t len, ext_t *e) {
        cJSON *root = cJSON_ParseWithLength(doc, len);
        if (!root)
                return -1;
        e->n = 0;
        for (cJSON *k = root->child; k; k = k->next) {
                if (!strcmp(k->string, "ts")) {
                        e->ts = cj_int(k);
                } else if (!strcmp(k->string, "name") && cJSON_IsString(k)) {
                        snprintf(e->name, sizeof e->name, "%s", k->valuestring);
                } else if (!strcmp(k->string, "cgrp")) {
                        for (cJSON *c = k->child; c; c = c->next) {
                                if (!strcmp(c->string, "state") &&
                                    cJSON_IsString(c))
                                        snprintf(e->state, sizeof e->state,
                                                 "%s", c->valuestring);
                                else if (!strcmp(c->string, "rebalance_cnt"))
                                        e->rebalance_cnt = cj_int(c);
                        }
                } else if (!strcmp(k->string, "topics")) {
                        for (cJSON *t = k->child; t; t = t->next) {
                                cJSON *ps = NULL;
                                for (cJSON *f = t->child; f; f = f->next)
                                        if (!strcmp(f->string, "partitions"))
                                                ps = f;
                                for (cJSON *pp = ps ? ps->child : NULL; pp;
                                     pp = pp->next) {
                                        rec_t r = rec_init;
                                        r.topic = t->string;
                                        for (cJSON *f = pp->child; f;
                                             f = f->next) {
                                                const char *n = f->string;
                                                if (!strcmp(n, "partition"))
                                                        r.partition =
                                                            (int32_t)cj_int(f);
                                                else if (!strcmp(n, "hi_offset"))
                                                        r.hi = cj_int(f);
                                                else if (!strcmp(n, "lo_offset"))
                                                        r.lo = cj_int(f);
                                                else if (!strcmp(n, "ls_offset"))
                                                        r.ls = cj_int(f);
                                                else if (!strcmp(n, "committed_offset"))
                                                        r.committed = cj_int(f);
                                                else if (!strcmp(n, "app_offset"))
                                                        r.app = cj_int(f);
                                                else if (!strcmp(n, "fetchq_cnt"))
                                                        r.fetchq_cnt = cj_int(f);
                                                else if (!strcmp(n, "fetchq_size"))
                                                        r.fetchq_size = cj_int(f);
                                                else if (!strcmp(n, "fetch_state") &&
                                                         cJSON_IsString(f))
                                                        r.active = !strcmp(
                                                            f->valuestring,
                                                            "active");
                                        }
                                        if (r.partition >= 0)
                                                ext_push(e, &r);
                                }
                        }
                }
        }
        cJSON_Delete(root);
        return 0;
}

static int64_t js_int(json_t *v) {
        return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

static int walk_jansson(const char *doc, size_t len, ext_t *e) {
        json_error_t err;
        json_t *root = json_loadb(doc, len, 0, &err);
        if (!root)
                return -1;
        e->n = 0;
        const char *key;
        json_t *v;
        json_object_foreach(root, key, v) {
                if (!strcmp(key, "ts")) {
                        e->ts = js_int(v);
                } else if (!strcmp(key, "name") && json_is_string(v)) {
                        snprintf(e->name, sizeof e->name, "%s",
                                 json_string_value(v));
                } else if (!strcmp(key, "cgrp")) {
                        const char *ck;
                        json_t *c;
                        json_object_foreach(v, ck, c) {
                                if (!strcmp(ck, "state") && json_is_string(c))
                                        snprintf(e->state, sizeof e->state,
                                                 "%s", json_string_value(c));
                                else if (!strcmp(ck, "rebalance_cnt"))
                                        e->rebalance_cnt = js_int(c);
                        }
                } else if (!strcmp(key, "topics")) {
                        const char *tk;
                        json_t *t;
                        json_object_foreach(v, tk, t) {
                                const char *fk;
                                json_t *f, *ps = NULL;
                                json_object_foreach(t, fk, f) {
                                        if (!strcmp(fk, "partitions"))
                                                ps = f;
                                }
                                if (!ps)
                                        continue;
                                const char *pk;
                                json_t *pp;
                                json_object_foreach(ps, pk, pp) {
                                        rec_t r = rec_init;
                                        r.topic = tk;
                                        const char *n;
                                        json_object_foreach(pp, n, f) {
                                                if (!strcmp(n, "partition"))
                                                        r.partition =
                                                            (int32_t)js_int(f);
                                                else if (!strcmp(n, "hi_offset"))
                                                        r.hi = js_int(f);
                                                else if (!strcmp(n, "lo_offset"))
                                                        r.lo = js_int(f);
                                                else if (!strcmp(n, "ls_offset"))
                                                        r.ls = js_int(f);
                                                else if (!strcmp(n, "committed_offset"))
                                                        r.committed = js_int(f);
                                                else if (!strcmp(n, "app_offset"))
                                                        r.app = js_int(f);
                                                else if (!strcmp(n, "fetchq_cnt"))
                                                        r.fetchq_cnt = js_int(f);
                                                else if (!strcmp(n, "fetchq_size"))
                                                        r.fetchq_size = js_int(f);
                                                else if (!strcmp(n, "fetch_state") &&
                                                         json_is_string(f))
                                                        r.active = !strcmp(
                                                            json_string_value(f),
                                                            "active");
                                        }
                                        if (r.partition >= 0)
                                                ext_push(e, &r);
                                }
                        }
                }
        }
        json_decref(root);
        return 0;
}

/* The probe's scan alone, exactly as lp_stats_parse() runs it. */
static int probe_scan(lagprobe_t *p, const char *json, size_t len) {
        lp_doc_t d = {-1, -1, -1, NULL, 0, -1, 0};
        pthread_mutex_lock(&p->plock);
        arrsetlen(p->scr_parts, 0);
        arrsetlen(p->scr_topics, 0);
        arrsetlen(p->scr_brokers, 0);
        lp_jp_t j = {json, json + len, 0, 0};
        int rc = jp_document(&j, p, &d);
        pthread_mutex_unlock(&p->plock);
        return rc;
}

static int64_t probe_check(lagprobe_t *p) {
        int64_t s = 0;
        for (ptrdiff_t i = 0; i < arrlen(p->scr_parts); i++) {
                const lp_prec_t *r = &p->scr_parts[i];
                s += r->partition + r->hi + r->lo + r->ls + r->committed +
                     r->app_offset + r->fetchq_cnt + r->fetchq_size +
                     r->fetch_active;
        }
        return s;
}

/* Assigns every partition the document lists (taken from cJSON, untimed),
 * as lp_record_assign() does for a rebalance. */
static long assign_all(lagprobe_t *p, const char *doc, size_t len) {
        cJSON *root = cJSON_ParseWithLength(doc, len);
        long n = 0;
        cJSON *topics = root ? cJSON_GetObjectItemCaseSensitive(root, "topics")
                             : NULL;
        pthread_mutex_lock(&p->wlock);
        for (cJSON *t = topics ? topics->child : NULL; t; t = t->next) {
                cJSON *ps = cJSON_GetObjectItemCaseSensitive(t, "partitions");
                for (cJSON *pp = ps ? ps->child : NULL; pp; pp = pp->next) {
                        int32_t part = (int32_t)atoi(pp->string);
                        if (part < 0)
                                continue;
                        int si = lp_slot_find(p, t->string, part, 1);
                        if (si < 0)
                                continue;
                        lp_slot_t *s = lp_slot_at(p, (uint32_t)si);
                        ST(s->assigned, 1);
                        n++;
                }
        }
        uint32_t g = lp_wbegin(&p->gseq);
        ST(p->g_assignment_size, n);
        lp_wend(&p->gseq, g);
        ST(p->cache_epoch, LD(p->cache_epoch) + 1);
        pthread_mutex_unlock(&p->wlock);
        cJSON_Delete(root);
        return n;
}

static char *read_file(const char *path, size_t *len) {
        FILE *f = fopen(path, "rb");
        if (!f)
                return NULL;
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        char *b = malloc((size_t)n + 1);
        if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) {
                fclose(f);
                free(b);
                return NULL;
        }
        fclose(f);
        b[n] = 0;
        *len = (size_t)n;
        return b;
}

enum { P_PROBE, P_SCAN, P_CJSON, P_JANSSON, P__CNT };
static const char *const pnames[P__CNT] = {"probe", "scan", "cjson",
                                           "jansson"};

static void fail(const char *what, const char *doc) {
        fprintf(stderr, "bench_stats: %s (%s)\n", what, doc);
        exit(1);
}

int main(int argc, char **argv) {
        int runs = 5, opt;
        while ((opt = getopt(argc, argv, "r:")) != -1) {
                if (opt == 'r')
                        runs = atoi(optarg);
                else
                        return 1;
        }
        if (runs < 1 || runs > 100 || optind >= argc) {
                fprintf(stderr, "usage: %s [-r runs] doc.json...\n", argv[0]);
                return 1;
        }
        for (int a = optind; a < argc; a++) {
                const char *path = argv[a];
                const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1
                                                      : path;
                size_t len;
                char *doc = read_file(path, &len);
                if (!doc)
                        fail("cannot read", path);
                char errstr[256];
                lagprobe_config_t pc;
                lagprobe_config_init(&pc);
                pc.watchdog_interval_ms = 0;
                lagprobe_t *p = lagprobe_new(&pc, errstr, sizeof errstr);
                if (!p)
                        fail(errstr, path);
                long nparts = assign_all(p, doc, len);

                ext_t e = {0};
                e.cap = (size_t)nparts + 16;
                e.recs = calloc(e.cap, sizeof *e.recs);

                /* Correctness first: every parser extracts the same. */
                if (probe_scan(p, doc, len))
                        fail("probe rejected the document", base);
                int64_t want = probe_check(p);
                long nrec = (long)arrlen(p->scr_parts);
                if (walk_cjson(doc, len, &e) || (long)e.n != nrec ||
                    ext_check(&e) != want)
                        fail("cJSON extracted different figures", base);
                if (walk_jansson(doc, len, &e) || (long)e.n != nrec ||
                    ext_check(&e) != want)
                        fail("jansson extracted different figures", base);
                if (lp_stats_parse(p, doc, len) ||
                    lp_stats_parse(p, doc, len))
                        fail("probe rejected the document", base);
                printf("DOC %s bytes=%zu partitions=%ld assigned=%ld\n", base,
                       len, nrec, nparts);

                /* Iterations per timing: ~40 MB for the probe's loops,
                 * ~8 MB for the general parsers (at least 3). */
                long kf = (long)(40e6 / (double)len), ks = (long)(8e6 / (double)len);
                if (kf < 5)
                        kf = 5;
                if (ks < 3)
                        ks = 3;
                double t[P__CNT][100], w[P__CNT][100];
                long allocs = 0, allocs_docs = 0;
                size_t cap0 = arrcap(p->scr_parts), cap1 = arrcap(p->scr_topics);
                for (int r = 0; r < runs; r++) {
                        for (int k = 0; k < P__CNT; k++) {
                                int pi = (k + r) % P__CNT;
                                long iters = pi <= P_SCAN ? kf : ks;
                                long a0 = atomic_load(&g_allocs);
                                int64_t t0 = bu_thread_ns(), w0 = bu_mono_ns();
                                for (long i = 0; i < iters; i++) {
                                        int rc = 0;
                                        switch (pi) {
                                        case P_PROBE:
                                                rc = lp_stats_parse(p, doc, len);
                                                break;
                                        case P_SCAN:
                                                rc = probe_scan(p, doc, len);
                                                break;
                                        case P_CJSON:
                                                rc = walk_cjson(doc, len, &e);
                                                break;
                                        case P_JANSSON:
                                                rc = walk_jansson(doc, len, &e);
                                                break;
                                        }
                                        if (rc)
                                                fail("parse failed", base);
                                }
                                int64_t t1 = bu_thread_ns(), w1 = bu_mono_ns();
                                if (pi <= P_SCAN) {
                                        allocs += atomic_load(&g_allocs) - a0;
                                        allocs_docs += iters;
                                }
                                t[pi][r] = (double)(t1 - t0) / (double)iters;
                                w[pi][r] = (double)(w1 - w0) / (double)iters;
                                printf("RESULT %s %s %d cpu_ns=%.0f wall_ns=%.0f\n",
                                       base, pnames[pi], r, t[pi][r], w[pi][r]);
                        }
                }
                int cap_same = arrcap(p->scr_parts) == cap0 &&
                               arrcap(p->scr_topics) == cap1;
                lagprobe_snapshot_t s;
                lagprobe_snapshot_init(&s, NULL, 0);
                lagprobe_snapshot(p, &s);
                if (s.stats_errors != 0 || s.partition_cnt != (size_t)nparts)
                        fail("probe state after parsing is wrong", base);
                double med[P__CNT], wmed[P__CNT], rc[100], rj[100];
                for (int k = 0; k < P__CNT; k++) {
                        med[k] = bu_median(t[k], runs);
                        wmed[k] = bu_median(w[k], runs);
                }
                for (int r = 0; r < runs; r++) {
                        rc[r] = t[P_CJSON][r] / t[P_PROBE][r];
                        rj[r] = t[P_JANSSON][r] / t[P_PROBE][r];
                }
                printf("SUMMARY %s bytes=%zu partitions=%ld probe_ms=%.3f "
                       "probe_MBps=%.0f scan_ms=%.3f scan_MBps=%.0f "
                       "cjson_ms=%.3f cjson_MBps=%.0f jansson_ms=%.3f "
                       "jansson_MBps=%.0f cjson_over_probe=%.1f "
                       "jansson_over_probe=%.1f allocs_per_doc=%.3f "
                       "scratch_capacity_constant=%d probe_wall_ms=%.3f "
                       "cjson_wall_ms=%.3f\n",
                       base, len, nrec, med[P_PROBE] / 1e6,
                       (double)len / med[P_PROBE] * 1e3, med[P_SCAN] / 1e6,
                       (double)len / med[P_SCAN] * 1e3, med[P_CJSON] / 1e6,
                       (double)len / med[P_CJSON] * 1e3, med[P_JANSSON] / 1e6,
                       (double)len / med[P_JANSSON] * 1e3,
                       bu_median(rc, runs), bu_median(rj, runs),
                       (double)allocs / (double)allocs_docs, cap_same,
                       wmed[P_PROBE] / 1e6, wmed[P_CJSON] / 1e6);
                fflush(stdout);
                free(e.recs);
                lagprobe_destroy(p);
                free(doc);
        }
        return 0;
}

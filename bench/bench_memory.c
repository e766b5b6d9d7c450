/* bench_memory - bytes per tracked partition, from the allocator's view.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 *   bench_memory STATS.json
 *
 * White-box: probe.c is compiled into this file, and malloc, calloc,
 * realloc, free and strdup are wrapped at link time (-Wl,--wrap=...), so
 * every byte probe.c (and stb_ds inside it) holds is counted as the
 * allocator gives it (malloc_usable_size). librdkafka's own memory is not
 * counted: it is not the probe's. The probe is taken through the paths a
 * consumer takes it through: lagprobe_new, a rebalance assigning every
 * partition of the given real statistics document (lp_record_assign), that
 * document applied (lp_stats_parse), one message per partition
 * through on_consume, a watchdog diagnosis pass (per-slot bookkeeping),
 * and one JSON and one Prometheus render. Output: live bytes after each
 * step and "SUMMARY partitions=N bytes_per_partition=..." where bytes per
 * partition = (live bytes at the end - live bytes after lagprobe_new) / N. */
#define _GNU_SOURCE
#include "../probe.c"

#include "bench_util.h"

#include <malloc.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
char *__real_strdup(const char *s);

static _Atomic long g_live, g_peak, g_count;

static void track_add(void *p) {
        if (!p)
                return;
        long n = (long)malloc_usable_size(p);
        long v = atomic_fetch_add(&g_live, n) + n;
        long pk = atomic_load(&g_peak);
        while (v > pk && !atomic_compare_exchange_weak(&g_peak, &pk, v))
                ;
        atomic_fetch_add(&g_count, 1);
}

static void track_del(void *p) {
        if (p)
                atomic_fetch_sub(&g_live, (long)malloc_usable_size(p));
}

void *__wrap_malloc(size_t n) {
        void *p = __real_malloc(n);
        track_add(p);
        return p;
}
void *__wrap_calloc(size_t n, size_t m) {
        void *p = __real_calloc(n, m);
        track_add(p);
        return p;
}
void *__wrap_realloc(void *old, size_t n) {
        track_del(old);
        void *p = __real_realloc(old, n);
        if (p)
                track_add(p);
        else if (old && n)
                track_add(old); /* failed: old block stays */
        return p;
}
void __wrap_free(void *p) {
        track_del(p);
        __real_free(p);
}
char *__wrap_strdup(const char *s) {
        char *p = __real_strdup(s);
        track_add(p);
        return p;
}

static void quiet(const lagprobe_event_t *e, void *o) {
        (void)e;
        (void)o;
}

typedef struct fake_msg_s {
        rd_kafka_message_t m;
        char pad[4096 - sizeof(rd_kafka_message_t)];
} fake_msg_t;

int main(int argc, char **argv) {
        if (argc != 2) {
                fprintf(stderr, "usage: %s stats.json\n", argv[0]);
                return 1;
        }
        FILE *f = fopen(argv[1], "rb");
        if (!f)
                return 1;
        fseek(f, 0, SEEK_END);
        long dlen = ftell(f);
        fseek(f, 0, SEEK_SET);
        char *doc = __real_malloc((size_t)dlen + 1);
        if (fread(doc, 1, (size_t)dlen, f) != (size_t)dlen)
                return 1;
        fclose(f);
        doc[dlen] = 0;
        const char *tk = strstr(doc, "\"topics\":");
        const char *q1 = tk ? strchr(tk + 9, '"') : NULL;
        const char *q2 = q1 ? strchr(q1 + 1, '"') : NULL;
        if (!q2)
                return 1;
        char topic[256];
        snprintf(topic, sizeof topic, "%.*s", (int)(q2 - q1 - 1), q1 + 1);
        int32_t nparts = 0;
        for (const char *s = q2; (s = strstr(s, "\"partition\":")) != NULL; s++) {
                int v = atoi(s + 12);
                if (v + 1 > nparts)
                        nparts = v + 1;
        }

        char errstr[512];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        rd_kafka_conf_set(conf, "group.id", "bench-memory", errstr, sizeof errstr);
        rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof errstr);
        rd_kafka_t *rk =
            rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
        if (!rk)
                return 1;
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);

        long l0 = atomic_load(&g_live);
        lagprobe_config_t pc;
        lagprobe_config_init(&pc);
        pc.watchdog_interval_ms = 0;
        pc.log_cb = quiet;
        lagprobe_t *p = lagprobe_new(&pc, errstr, sizeof errstr);
        long l_new = atomic_load(&g_live);
        printf("STEP lagprobe_new live=%ld (sizeof lagprobe_t=%zu, "
               "sizeof lp_slot_t=%zu)\n",
               l_new - l0, sizeof(lagprobe_t), sizeof(lp_slot_t));

        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(nparts);
        for (int32_t i = 0; i < nparts; i++)
                rd_kafka_topic_partition_list_add(l, topic, i);
        lp_record_assign(p, l);
        rd_kafka_topic_partition_list_destroy(l);
        long l_assign = atomic_load(&g_live);
        printf("STEP assign %d partitions live=%ld (+%ld)\n", nparts,
               l_assign - l0, l_assign - l_new);

        if (lp_stats_parse(p, doc, (size_t)dlen) ||
            lp_stats_parse(p, doc, (size_t)dlen))
                return 1;
        long l_stats = atomic_load(&g_live);
        printf("STEP statistics applied live=%ld (+%ld)\n", l_stats - l0,
               l_stats - l_assign);

        fake_msg_t *fm = __real_calloc(1, sizeof *fm);
        fm->m.rkt = rkt;
        for (int32_t i = 0; i < nparts; i++) {
                fm->m.partition = i;
                lp_on_consume(NULL, &fm->m, p);
        }
        __real_free(fm);
        long l_cons = atomic_load(&g_live);
        printf("STEP on_consume on every partition live=%ld (+%ld)\n",
               l_cons - l0, l_cons - l_stats);

        pthread_mutex_lock(&p->tick_lock);
        lp_check_diagnosis(p);
        pthread_mutex_unlock(&p->tick_lock);
        long l_tick = atomic_load(&g_live);
        printf("STEP watchdog diagnosis pass live=%ld (+%ld)\n", l_tick - l0,
               l_tick - l_cons);

        size_t need = lagprobe_snapshot_json(p, NULL, 0);
        char *buf = __real_malloc(need + 1);
        lagprobe_snapshot_json(p, buf, need + 1);
        need = lagprobe_metrics_prometheus(p, NULL, 0);
        buf = __real_realloc(buf, need + 1);
        lagprobe_metrics_prometheus(p, buf, need + 1);
        __real_free(buf);
        long l_end = atomic_load(&g_live);
        printf("STEP renders live=%ld (+%ld)\n", l_end - l0, l_end - l_tick);

        lagprobe_snapshot_t s;
        lagprobe_snapshot_init(&s, NULL, 0);
        lagprobe_snapshot(p, &s);
        if (s.partition_cnt != (size_t)nparts || s.consumed != nparts) {
                fprintf(stderr, "bench_memory: probe state wrong\n");
                return 1;
        }
        double per = (double)(l_end - l_new) / nparts;
        printf("SUMMARY partitions=%d base_bytes=%ld total_bytes=%ld "
               "bytes_per_partition=%.0f peak_bytes=%ld allocations=%ld\n",
               nparts, l_new - l0, l_end - l0, per, atomic_load(&g_peak),
               atomic_load(&g_count));
        lagprobe_destroy(p);
        long l_fin = atomic_load(&g_live);
        printf("STEP destroy live=%ld\n", l_fin - l0);
        rd_kafka_topic_destroy(rkt);
        rd_kafka_destroy(rk);
        __real_free(doc);
        return l_fin == l0 ? 0 : 1;
}

/* bench_snapshot - rendering under load: JSON and Prometheus for 10,000
 * partitions while a writer thread updates them.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 *   bench_snapshot [-r ROUNDS] [-s SECONDS] [-R READERS] STATS_10000.json
 *
 * White-box: probe.c is compiled into this file. A probe (watchdog off)
 * gets the partitions of the given real statistics document assigned
 * through lp_record_assign() (the rebalance path) on a real, unconnected
 * consumer handle, and the document applied once. Then:
 *  1. render: lagprobe_snapshot_json() and lagprobe_metrics_prometheus()
 *     of all partitions, idle, median of 15.
 *  2. load: a writer thread (pinned to CPU 0) feeds messages through the
 *     real on_consume interceptor (lp_on_consume) in runs of 64 per
 *     partition, round-robin over all partitions, and applies the statistics
 *     document after every 1,000,000 messages (lp_stats_parse). Each
 *     round has three phases of SECONDS each, in an order that rotates from
 *     round to round: no readers; READERS reader threads (pinned to CPU 1)
 *     rendering JSON and Prometheus of the writer's probe back to back; and
 *     the control, the same readers rendering an identical second probe the
 *     writer never touches. A phase starts once the previous phase's
 *     readers have finished their render. Measured per phase: writer
 *     messages per second of the writer thread's CPU time (the figure the
 *     readers' interference shows in, whatever else runs on the machine),
 *     with and without the statistics applies, and of wall time, the
 *     writer's statistics apply time, and the readers' render times (wall
 *     and thread CPU). The control separates what sharing the probe costs
 *     (the readers load the cache lines the writer stores to) from what any
 *     busy neighbour costs (caches, memory bandwidth, the other CPU).
 * The messages handed to lp_on_consume are rd_kafka_message_t structs at
 * the start of a zeroed 4 KiB buffer: librdkafka's
 * rd_kafka_message_timestamp() reads its private fields behind the public
 * struct, which are then zero (timestamp 0). */
#define _GNU_SOURCE
#include "../probe.c"

#include "bench_util.h"

#include <sched.h>

#define BURST 64
#define STATS_EVERY 1000000

typedef struct fake_msg_s {
        rd_kafka_message_t m;
        char pad[4096 - sizeof(rd_kafka_message_t)];
} fake_msg_t;

static lagprobe_t *g_p, *g_ctl;
static lagprobe_t *_Atomic g_target; /* the probe the readers render */
static rd_kafka_topic_t *g_rkt;
static int32_t g_nparts;
static char *g_doc;
static size_t g_doclen;

static _Atomic int g_stop, g_readers_on, g_readers_busy;
static _Atomic long g_renders;
static _Atomic int64_t g_render_json_ns, g_render_prom_ns;
static _Atomic int64_t g_render_json_cpu, g_render_prom_cpu;

static void pin(int cpu) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu % (int)sysconf(_SC_NPROCESSORS_ONLN), &set);
        pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

typedef struct wstats_s {
        long msgs;
        int64_t cpu_ns, wall_ns;
        long stats_docs;
        int64_t stats_ns;
} wstats_t;

/* Loaded by the writer every 64 messages: a line of its own, away from the
 * counters the readers update. */
static struct {
        _Alignas(64) _Atomic int v; /* 0 idle, 1 run, 2 exit */
        char pad[60];
} g_writer_phase;
static wstats_t g_w;
static _Atomic int g_w_started, g_w_done;

static void *writer(void *arg) {
        (void)arg;
        pin(0);
        fake_msg_t *fm = calloc(1, sizeof *fm);
        fm->m.rkt = g_rkt;
        int64_t *offs = calloc((size_t)g_nparts, sizeof *offs);
        int32_t part = 0;
        for (;;) {
                while (atomic_load(&g_writer_phase.v) == 0)
                        bu_sleep_ms(1);
                if (atomic_load(&g_writer_phase.v) == 2)
                        break;
                atomic_store(&g_w_started, 1);
                wstats_t w = {0};
                long since_stats = 0;
                int64_t w0 = bu_mono_ns(), c0 = bu_thread_ns();
                while (atomic_load(&g_writer_phase.v) == 1) {
                        fm->m.partition = part;
                        for (int i = 0; i < BURST; i++) {
                                fm->m.offset = offs[part]++;
                                lp_on_consume(NULL, &fm->m, g_p);
                        }
                        w.msgs += BURST;
                        since_stats += BURST;
                        if (++part == g_nparts)
                                part = 0;
                        if (since_stats >= STATS_EVERY) {
                                since_stats = 0;
                                int64_t s0 = bu_thread_ns();
                                if (lp_stats_parse(g_p, g_doc, g_doclen)) {
                                        fprintf(stderr, "stats rejected\n");
                                        exit(1);
                                }
                                w.stats_ns += bu_thread_ns() - s0;
                                w.stats_docs++;
                        }
                }
                w.cpu_ns = bu_thread_ns() - c0;
                w.wall_ns = bu_mono_ns() - w0;
                g_w = w;
                atomic_store(&g_w_done, 1);
        }
        free(offs);
        free(fm);
        return NULL;
}

static size_t g_bufsz = 64 << 20;

static void *reader(void *arg) {
        (void)arg;
        pin(1);
        char *buf = malloc(g_bufsz);
        while (!atomic_load(&g_stop)) {
                if (!atomic_load(&g_readers_on)) {
                        bu_sleep_ms(1);
                        continue;
                }
                atomic_fetch_add(&g_readers_busy, 1);
                if (!atomic_load(&g_readers_on)) {
                        atomic_fetch_sub(&g_readers_busy, 1);
                        continue;
                }
                int64_t t0 = bu_mono_ns(), c0 = bu_thread_ns();
                lagprobe_t *p = atomic_load(&g_target);
                size_t n = lagprobe_snapshot_json(p, buf, g_bufsz);
                int64_t t1 = bu_mono_ns(), c1 = bu_thread_ns();
                size_t m = lagprobe_metrics_prometheus(p, buf, g_bufsz);
                int64_t t2 = bu_mono_ns(), c2 = bu_thread_ns();
                atomic_fetch_add(&g_render_json_cpu, c1 - c0);
                atomic_fetch_add(&g_render_prom_cpu, c2 - c1);
                if (n >= g_bufsz || m >= g_bufsz || n < 1000 || m < 1000) {
                        fprintf(stderr, "render too large or empty\n");
                        exit(1);
                }
                atomic_fetch_add(&g_render_json_ns, t1 - t0);
                atomic_fetch_add(&g_render_prom_ns, t2 - t1);
                atomic_fetch_add(&g_renders, 1);
                atomic_fetch_sub(&g_readers_busy, 1);
        }
        free(buf);
        return NULL;
}

/* Runs the writer for ms milliseconds from when it has started (on a
 * loaded machine it may not run for a while: a phase that ended before it
 * looked would never be done); returns its figures. */
static wstats_t writer_phase(int ms) {
        atomic_store(&g_w_done, 0);
        atomic_store(&g_w_started, 0);
        atomic_store(&g_writer_phase.v, 1);
        while (!atomic_load(&g_w_started))
                bu_sleep_ms(1);
        bu_sleep_ms(ms);
        atomic_store(&g_writer_phase.v, 0);
        while (!atomic_load(&g_w_done))
                bu_sleep_ms(1);
        return g_w;
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

/* A probe (watchdog off) with every partition of @p topic assigned, the
 * document applied and a first message on every partition, so every figure
 * is set. */
static lagprobe_t *make_probe(const char *topic) {
        char errstr[512];
        lagprobe_config_t pc;
        lagprobe_config_init(&pc);
        pc.watchdog_interval_ms = 0;
        lagprobe_t *p = lagprobe_new(&pc, errstr, sizeof errstr);
        if (!p) {
                fprintf(stderr, "lagprobe_new: %s\n", errstr);
                return NULL;
        }
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(g_nparts);
        for (int32_t i = 0; i < g_nparts; i++)
                rd_kafka_topic_partition_list_add(l, topic, i);
        lp_record_assign(p, l);
        rd_kafka_topic_partition_list_destroy(l);
        if (lp_stats_parse(p, g_doc, g_doclen)) {
                fprintf(stderr, "stats document rejected\n");
                lagprobe_destroy(p);
                return NULL;
        }
        fake_msg_t *fm = calloc(1, sizeof *fm);
        fm->m.rkt = g_rkt;
        for (int32_t i = 0; i < g_nparts; i++) {
                fm->m.partition = i;
                lp_on_consume(NULL, &fm->m, p);
        }
        free(fm);
        return p;
}

int main(int argc, char **argv) {
        int rounds = 5, nreaders = 4, opt;
        double secs = 1.0;
        while ((opt = getopt(argc, argv, "r:s:R:")) != -1) {
                switch (opt) {
                case 'r': rounds = atoi(optarg); break;
                case 's': secs = atof(optarg); break;
                case 'R': nreaders = atoi(optarg); break;
                default: return 1;
                }
        }
        if (optind >= argc || rounds < 1 || rounds > 100 || nreaders < 1 ||
            nreaders > 64 || secs <= 0) {
                fprintf(stderr, "usage: %s [-r rounds] [-s secs] [-R readers] "
                                "stats.json\n", argv[0]);
                return 1;
        }
        g_doc = read_file(argv[optind], &g_doclen);
        if (!g_doc) {
                fprintf(stderr, "cannot read %s\n", argv[optind]);
                return 1;
        }
        /* The document's topic and partition count. */
        const char *tk = strstr(g_doc, "\"topics\":");
        const char *q1 = tk ? strchr(tk + 9, '"') : NULL;
        const char *q2 = q1 ? strchr(q1 + 1, '"') : NULL;
        if (!q2) {
                fprintf(stderr, "no topic in %s\n", argv[optind]);
                return 1;
        }
        char topic[256];
        snprintf(topic, sizeof topic, "%.*s", (int)(q2 - q1 - 1), q1 + 1);
        for (const char *s = q2; (s = strstr(s, "\"partition\":")) != NULL;
             s++) {
                int v = atoi(s + 12);
                if (v + 1 > g_nparts)
                        g_nparts = v + 1;
        }

        char errstr[512];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        rd_kafka_conf_set(conf, "group.id", "bench-snapshot", errstr,
                          sizeof errstr);
        rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof errstr);
        rd_kafka_t *rk =
            rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
        if (!rk) {
                fprintf(stderr, "rd_kafka_new: %s\n", errstr);
                return 1;
        }
        g_rkt = rd_kafka_topic_new(rk, topic, NULL);

        g_p = make_probe(topic);
        /* The control: an identical probe the writer never touches. */
        g_ctl = make_probe(topic);
        if (!g_p || !g_ctl)
                return 1;
        atomic_store(&g_target, g_p);
        lagprobe_snapshot_t snap;
        lagprobe_snapshot_init(&snap, NULL, 0);
        lagprobe_snapshot(g_p, &snap);
        printf("# topic %s, %d partitions assigned (snapshot: %zu)\n", topic,
               g_nparts, snap.partition_cnt);
        if (snap.partition_cnt != (size_t)g_nparts)
                return 1;

        /* 1. Idle render. */
        char *buf = malloc(g_bufsz);
        double tj[15], tp[15], cj[15], cp[15];
        size_t nj = 0, np = 0;
        for (int i = 0; i < 15; i++) {
                int64_t t0 = bu_mono_ns(), c0 = bu_thread_ns();
                nj = lagprobe_snapshot_json(g_p, buf, g_bufsz);
                int64_t t1 = bu_mono_ns(), c1 = bu_thread_ns();
                np = lagprobe_metrics_prometheus(g_p, buf, g_bufsz);
                int64_t t2 = bu_mono_ns(), c2 = bu_thread_ns();
                tj[i] = (double)(t1 - t0) / 1e6;
                tp[i] = (double)(t2 - t1) / 1e6;
                cj[i] = (double)(c1 - c0) / 1e6;
                cp[i] = (double)(c2 - c1) / 1e6;
        }
        printf("RENDER idle json_ms=%.2f json_cpu_ms=%.2f json_bytes=%zu "
               "prom_ms=%.2f prom_cpu_ms=%.2f prom_bytes=%zu\n",
               bu_median(tj, 15), bu_median(cj, 15), nj, bu_median(tp, 15),
               bu_median(cp, 15), np);
        free(buf);

        /* 2. Under load. */
        pthread_t wt, rt[64];
        pthread_create(&wt, NULL, writer, NULL);
        for (int i = 0; i < nreaders; i++)
                pthread_create(&rt[i], NULL, reader, NULL);
        writer_phase(300); /* warm-up */
        int ms = (int)(secs * 1000);
        double cpu0[100], cpu4[100], wall0[100], wall4[100], rc[100], rw[100];
        double st0[100], st4[100], rs[100], rj[100], rp[100], rjc[100],
            rpc[100], cpuc[100], rcc[100], rsc[100], rbc[100], rm4[100],
            rmc[100];
        /* Phase order per round: 0 no readers, 1 readers rendering the
         * writer's probe, 2 readers rendering the control probe. */
        static const int order[6][3] = {{0, 1, 2}, {1, 2, 0}, {2, 0, 1},
                                        {0, 2, 1}, {1, 0, 2}, {2, 1, 0}};
        for (int r = 0; r < rounds; r++) {
                wstats_t ph[3];
                long nr = 0;
                int64_t jn = 0, pn = 0, jc = 0, pc = 0;
                for (int k = 0; k < 3; k++) {
                        int w = order[r % 6][k];
                        if (w == 0) {
                                ph[0] = writer_phase(ms);
                                continue;
                        }
                        atomic_store(&g_target, w == 1 ? g_p : g_ctl);
                        atomic_store(&g_renders, 0);
                        atomic_store(&g_render_json_ns, 0);
                        atomic_store(&g_render_prom_ns, 0);
                        atomic_store(&g_render_json_cpu, 0);
                        atomic_store(&g_render_prom_cpu, 0);
                        atomic_store(&g_readers_on, 1);
                        bu_sleep_ms(50); /* readers running before the writer */
                        ph[w] = writer_phase(ms);
                        atomic_store(&g_readers_on, 0);
                        /* Readers finish their render: no reader runs in
                         * the next phase. */
                        while (atomic_load(&g_readers_busy))
                                bu_sleep_ms(1);
                        if (w == 1) {
                                nr = atomic_load(&g_renders);
                                jn = atomic_load(&g_render_json_ns);
                                pn = atomic_load(&g_render_prom_ns);
                                jc = atomic_load(&g_render_json_cpu);
                                pc = atomic_load(&g_render_prom_cpu);
                        }
                }
                wstats_t a = ph[0], b = ph[1], c = ph[2];
                cpu0[r] = (double)a.msgs / ((double)a.cpu_ns / 1e9);
                cpu4[r] = (double)b.msgs / ((double)b.cpu_ns / 1e9);
                cpuc[r] = (double)c.msgs / ((double)c.cpu_ns / 1e9);
                wall0[r] = (double)a.msgs / ((double)a.wall_ns / 1e9);
                wall4[r] = (double)b.msgs / ((double)b.wall_ns / 1e9);
                st0[r] = a.stats_docs ? (double)a.stats_ns / a.stats_docs / 1e6 : 0;
                st4[r] = b.stats_docs ? (double)b.stats_ns / b.stats_docs / 1e6 : 0;
                double stc = c.stats_docs ? (double)c.stats_ns / c.stats_docs / 1e6 : 0;
                rc[r] = cpu4[r] / cpu0[r];
                rcc[r] = cpuc[r] / cpu0[r];
                rbc[r] = cpu4[r] / cpuc[r];
                /* The same without the statistics applies: on_consume alone. */
                double m0 = (double)a.msgs / (double)(a.cpu_ns - a.stats_ns);
                rm4[r] = (double)b.msgs / (double)(b.cpu_ns - b.stats_ns) / m0;
                rmc[r] = (double)c.msgs / (double)(c.cpu_ns - c.stats_ns) / m0;
                rw[r] = wall4[r] / wall0[r];
                rs[r] = st0[r] > 0 ? st4[r] / st0[r] : 0;
                rsc[r] = st0[r] > 0 ? stc / st0[r] : 0;
                rj[r] = nr ? (double)jn / nr / 1e6 : 0;
                rp[r] = nr ? (double)pn / nr / 1e6 : 0;
                rjc[r] = nr ? (double)jc / nr / 1e6 : 0;
                rpc[r] = nr ? (double)pc / nr / 1e6 : 0;
                printf("RESULT round=%d readers0_cpu_mps=%.0f readers%d_cpu_mps=%.0f "
                       "control%d_cpu_mps=%.0f "
                       "readers0_wall_mps=%.0f readers%d_wall_mps=%.0f "
                       "stats0_ms=%.2f stats%d_ms=%.2f control_stats%d_ms=%.2f "
                       "renders=%ld "
                       "render_json_ms=%.2f render_prom_ms=%.2f "
                       "render_json_cpu_ms=%.2f render_prom_cpu_ms=%.2f\n",
                       r, cpu0[r], nreaders, cpu4[r], nreaders, cpuc[r],
                       wall0[r], nreaders, wall4[r], st0[r], nreaders, st4[r],
                       nreaders, stc, nr, rj[r], rp[r], rjc[r], rpc[r]);
                fflush(stdout);
        }
        atomic_store(&g_stop, 1);
        atomic_store(&g_writer_phase.v, 2);
        pthread_join(wt, NULL);
        for (int i = 0; i < nreaders; i++)
                pthread_join(rt[i], NULL);
        printf("SUMMARY partitions=%d readers=%d writer_cpu_mps_0=%.0f "
               "writer_cpu_mps_%d=%.0f cpu_ratio=%.4f writer_wall_mps_0=%.0f "
               "writer_wall_mps_%d=%.0f wall_ratio=%.4f stats_apply_ms_0=%.2f "
               "stats_apply_ms_%d=%.2f stats_ratio=%.4f "
               "load_render_json_ms=%.2f load_render_prom_ms=%.2f "
               "load_render_json_cpu_ms=%.2f load_render_prom_cpu_ms=%.2f "
               "writer_cpu_mps_control_%d=%.0f control_cpu_ratio=%.4f "
               "control_stats_ratio=%.4f shared_vs_control_ratio=%.4f "
               "consume_only_ratio=%.4f control_consume_only_ratio=%.4f\n",
               g_nparts, nreaders, bu_median(cpu0, rounds), nreaders,
               bu_median(cpu4, rounds), bu_median(rc, rounds),
               bu_median(wall0, rounds), nreaders, bu_median(wall4, rounds),
               bu_median(rw, rounds), bu_median(st0, rounds), nreaders,
               bu_median(st4, rounds), bu_median(rs, rounds),
               bu_median(rj, rounds), bu_median(rp, rounds),
               bu_median(rjc, rounds), bu_median(rpc, rounds), nreaders,
               bu_median(cpuc, rounds), bu_median(rcc, rounds),
               bu_median(rsc, rounds), bu_median(rbc, rounds),
               bu_median(rm4, rounds), bu_median(rmc, rounds));
        lagprobe_destroy(g_p);
        lagprobe_destroy(g_ctl);
        rd_kafka_topic_destroy(g_rkt);
        rd_kafka_destroy(rk);
        free(g_doc);
        return 0;
}

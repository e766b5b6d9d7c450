/* bench_consume - hot-path cost per consumed message, with and without the
 * probe, against a mock broker in a separate process.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 *   bench_consume -B MOCK_BROKER_PATH [-m MESSAGES] [-p PARTITIONS]
 *                 [-r RUNS] [-n BATCH] [-c CHUNK] [-x MODE] [-L PLUGIN]
 *
 * The broker child (bench/mock_broker.c) holds one topic with MESSAGES
 * messages of 100 B spread over PARTITIONS partitions (its log keeps only
 * about 5 MB per partition, hence several partitions). Modes:
 *   poll_none    rd_kafka_consumer_poll + rd_kafka_message_destroy
 *   poll_noop    the same with an on_consume interceptor that does nothing:
 *                the floor any interceptor-based probe pays to librdkafka
 *   poll_zero    the same, probe attached (zero-code mode)
 *   poll_hooks   the same, plus lagprobe_batch_begin(1)/batch_end per message
 *   batch_none   rd_kafka_consume_batch_queue of BATCH + destroy
 *   batch_noop   the same with the do-nothing on_consume interceptor
 *   batch_zero   the same, probe attached
 *   batch_hooks  the same, plus lagprobe_batch_begin(n)/batch_end per batch
 *   poll_plugin  poll_none with the probe loaded as a librdkafka plugin
 *                (-L PATH: plugin.library.paths=PATH, nothing else): the
 *                zero-code mode of README "Zero-code mode", to hold
 *                against poll_zero, the vendored probe. Only with -L.
 *
 * Each run creates one consumer per mode of a family (poll_*, batch_*),
 * assigns each the whole topic from the beginning, waits until all of them
 * have prefetched everything, and then consumes in chunks of CHUNK messages,
 * taking the modes in turn (order rotated every round): the machine's noise
 * (other processes, frequency changes) falls on every mode alike. Measured:
 * CPU time of the consuming thread (CLOCK_THREAD_CPUTIME_ID) inside the
 * consume calls of each chunk, summed per mode, divided by MESSAGES.
 * Output per run: "RESULT mode run ns_per_msg"; then the median per mode
 * and the median of the per-run ratios against the family's *_none mode.
 *
 * -x MODE consumes with that mode only, once, in one loop (for callgrind:
 * --toggle-collect=consume_loop, lp_on_consume, lagprobe_batch_*). */
#include "bench_util.h"

#include <librdkafka/rdkafka.h>

#include "../probe.h"

enum {
        M_POLL_NONE,
        M_POLL_NOOP,
        M_POLL_ZERO,
        M_POLL_HOOKS,
        M_BATCH_NONE,
        M_BATCH_NOOP,
        M_BATCH_ZERO,
        M_BATCH_HOOKS,
        M_POLL_PLUGIN,
        M__CNT
};
static const char *const mode_names[M__CNT] = {
    "poll_none", "poll_noop", "poll_zero", "poll_hooks",
    "batch_none", "batch_noop", "batch_zero", "batch_hooks", "poll_plugin"};
static const char *g_plugin; /* -L */

static const char *g_boot;
static const char *g_topic = "bench";
static long g_msgs = 200000;
static int g_batch = 100;
static int g_parts = 8;
static int g_group_n;

static void set(rd_kafka_conf_t *conf, const char *k, const char *v) {
        char errstr[256];
        if (rd_kafka_conf_set(conf, k, v, errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK) {
                fprintf(stderr, "bench_consume: %s: %s\n", k, errstr);
                exit(1);
        }
}

static rd_kafka_resp_err_t noop_on_consume(rd_kafka_t *rk,
                                           rd_kafka_message_t *m, void *ic) {
        (void)rk;
        (void)m;
        (void)ic;
        return RD_KAFKA_RESP_ERR_NO_ERROR;
}

static rd_kafka_resp_err_t noop_on_new(rd_kafka_t *rk,
                                       const rd_kafka_conf_t *conf, void *ic,
                                       char *errstr, size_t errstr_size) {
        (void)conf;
        (void)errstr;
        (void)errstr_size;
        return rd_kafka_interceptor_add_on_consume(rk, "noop", noop_on_consume,
                                                   ic);
}

typedef struct cons_s {
        int mode;
        rd_kafka_t *rk;
        rd_kafka_queue_t *q;
        lagprobe_t *probe;
        lagprobe_t *hooks; /* probe when the mode calls the hooks */
        long got;
        int64_t cpu_ns;
} cons_t;

static void cons_new(cons_t *c, int mode) {
        char errstr[512], group[64];
        memset(c, 0, sizeof *c);
        c->mode = mode;
        int noop = mode == M_POLL_NOOP || mode == M_BATCH_NOOP;
        int with_probe = !noop && mode != M_POLL_NONE &&
                         mode != M_BATCH_NONE && mode != M_POLL_PLUGIN;
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        snprintf(group, sizeof group, "bench-%d-%d", (int)getpid(), g_group_n++);
        set(conf, "bootstrap.servers", g_boot);
        set(conf, "group.id", group);
        set(conf, "enable.auto.commit", "false");
        set(conf, "enable.partition.eof", "false");
        set(conf, "queued.min.messages", "10000000");
        set(conf, "queued.max.messages.kbytes", "2000000");
        set(conf, "fetch.wait.max.ms", "10");
        set(conf, "log_level", "3");
        if (noop)
                rd_kafka_conf_interceptor_add_on_new(conf, "noop", noop_on_new,
                                                     NULL);
        if (mode == M_POLL_PLUGIN)
                set(conf, "plugin.library.paths", g_plugin);
        if (with_probe) {
                lagprobe_config_t pc;
                lagprobe_config_init(&pc); /* defaults: stats 1 s, wd 100 ms */
                c->probe = lagprobe_new(&pc, errstr, sizeof errstr);
                if (!c->probe ||
                    lagprobe_attach(c->probe, conf, errstr, sizeof errstr)) {
                        fprintf(stderr, "bench_consume: probe: %s\n", errstr);
                        exit(1);
                }
                if (mode == M_POLL_HOOKS || mode == M_BATCH_HOOKS)
                        c->hooks = c->probe;
        }
        c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
        if (!c->rk) {
                fprintf(stderr, "bench_consume: rd_kafka_new: %s\n", errstr);
                exit(1);
        }
        rd_kafka_poll_set_consumer(c->rk);
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(g_parts);
        for (int i = 0; i < g_parts; i++)
                rd_kafka_topic_partition_list_add(l, g_topic, i)->offset =
                    RD_KAFKA_OFFSET_BEGINNING;
        if (rd_kafka_assign(c->rk, l)) {
                fprintf(stderr, "bench_consume: assign failed\n");
                exit(1);
        }
        rd_kafka_topic_partition_list_destroy(l);
        c->q = rd_kafka_queue_get_consumer(c->rk);
}

/* Prefetch: wait until every local queue has stopped growing for 600 ms,
 * 5 minutes at most (beside make test, load 8 on 2 cores, 2 minutes were
 * not always enough for the 200,000 messages of each of five consumers).
 * (rd_kafka_queue_length() counts queue ops, not messages; that all
 * messages were local is checked afterwards: a chunk that had to wait for
 * the network would have shown up as consumed < wanted or idle polls.) */
static void prefetch_wait(cons_t *cs, int n) {
        size_t prev[M__CNT] = {0};
        int stable = 0;
        int64_t deadline = bu_mono_ns() + 300 * (int64_t)1000000000;
        while (stable < 12) {
                int same = 1;
                for (int i = 0; i < n; i++) {
                        size_t len = rd_kafka_queue_length(cs[i].q);
                        if (len == 0 || len != prev[i])
                                same = 0;
                        prev[i] = len;
                }
                stable = same ? stable + 1 : 0;
                if (bu_mono_ns() > deadline) {
                        fprintf(stderr, "bench_consume: prefetch timed out;"
                                        " local queue lengths:");
                        for (int i = 0; i < n; i++)
                                fprintf(stderr, " %s %zu",
                                        mode_names[cs[i].mode], prev[i]);
                        fprintf(stderr, "\n");
                        exit(1);
                }
                bu_sleep_ms(50);
        }
}

static long g_idle;

/* The measured loops: consume want messages. noinline: callgrind counts
 * them by name. */
__attribute__((noinline)) static long consume_poll(rd_kafka_t *rk,
                                                   lagprobe_t *hooks,
                                                   long want) {
        long got = 0;
        while (got < want) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 1000);
                if (!m) {
                        if (++g_idle > 10)
                                break;
                        continue;
                }
                if (hooks)
                        lagprobe_batch_begin(hooks, 1);
                if (!m->err)
                        got++;
                if (hooks)
                        lagprobe_batch_end(hooks);
                rd_kafka_message_destroy(m);
        }
        return got;
}

__attribute__((noinline)) static long consume_batch(rd_kafka_queue_t *q,
                                                    lagprobe_t *hooks,
                                                    long want) {
        long got = 0;
        rd_kafka_message_t *ms[4096];
        while (got < want) {
                long n = want - got < g_batch ? want - got : g_batch;
                if (n > 4096)
                        n = 4096;
                ssize_t k = rd_kafka_consume_batch_queue(q, 1000, ms, (size_t)n);
                if (k <= 0) {
                        if (++g_idle > 10)
                                break;
                        continue;
                }
                if (hooks)
                        lagprobe_batch_begin(hooks, (size_t)k);
                for (ssize_t i = 0; i < k; i++)
                        if (!ms[i]->err)
                                got++;
                if (hooks)
                        lagprobe_batch_end(hooks);
                for (ssize_t i = 0; i < k; i++)
                        rd_kafka_message_destroy(ms[i]);
        }
        return got;
}

__attribute__((noinline)) static long consume_loop(cons_t *c, long want) {
        return c->mode < M_BATCH_NONE || c->mode == M_POLL_PLUGIN
                   ? consume_poll(c->rk, c->hooks, want)
                   : consume_batch(c->q, c->hooks, want);
}

static void cons_destroy(cons_t *c) {
        if (c->probe) {
                lagprobe_snapshot_t s;
                lagprobe_snapshot_init(&s, NULL, 0);
                lagprobe_snapshot(c->probe, &s);
                if (s.consumed != c->got) {
                        fprintf(stderr,
                                "bench_consume: %s: probe counted %lld of %ld "
                                "messages\n",
                                mode_names[c->mode], (long long)s.consumed,
                                c->got);
                        exit(1);
                }
        }
        rd_kafka_queue_destroy(c->q);
        rd_kafka_consumer_close(c->rk);
        rd_kafka_destroy(c->rk);
        lagprobe_destroy(c->probe);
        if (c->got != g_msgs) {
                fprintf(stderr, "bench_consume: %s consumed %ld of %ld\n",
                        mode_names[c->mode], c->got, g_msgs);
                exit(1);
        }
}

/* One run of a family of modes: ns per message per mode into out[]. */
static void run_family(const int *modes, int n, long chunk, double *out) {
        cons_t cs[M__CNT];
        for (int i = 0; i < n; i++)
                cons_new(&cs[i], modes[i]);
        prefetch_wait(cs, n);
        g_idle = 0;
        for (long round = 0; cs[0].got < g_msgs; round++) {
                for (int k = 0; k < n; k++) {
                        cons_t *c = &cs[(k + round) % n];
                        long want = g_msgs - c->got < chunk ? g_msgs - c->got
                                                            : chunk;
                        int64_t t0 = bu_thread_ns();
                        long got = consume_loop(c, want);
                        c->cpu_ns += bu_thread_ns() - t0;
                        c->got += got;
                        if (got != want) {
                                fprintf(stderr,
                                        "bench_consume: %s: local queue ran "
                                        "dry after %ld messages\n",
                                        mode_names[c->mode], c->got);
                                exit(1);
                        }
                }
        }
        for (int i = 0; i < n; i++) {
                out[i] = (double)cs[i].cpu_ns / (double)g_msgs;
                cons_destroy(&cs[i]);
        }
}

int main(int argc, char **argv) {
        const char *broker = NULL;
        int runs = 5, only = -1, opt;
        long chunk = 5000;
        while ((opt = getopt(argc, argv, "B:m:p:r:n:c:x:L:")) != -1) {
                switch (opt) {
                case 'B': broker = optarg; break;
                case 'L': g_plugin = optarg; break;
                case 'm': g_msgs = atol(optarg); break;
                case 'p': g_parts = atoi(optarg); break;
                case 'r': runs = atoi(optarg); break;
                case 'n': g_batch = atoi(optarg); break;
                case 'c': chunk = atol(optarg); break;
                case 'x':
                        for (int i = 0; i < M__CNT; i++)
                                if (!strcmp(optarg, mode_names[i]))
                                        only = i;
                        if (only < 0) {
                                fprintf(stderr, "unknown mode %s\n", optarg);
                                return 1;
                        }
                        break;
                default:
                        fprintf(stderr,
                                "usage: %s -B mock_broker [-m msgs] [-p parts] "
                                "[-r runs] [-n batch] [-c chunk] [-x mode] "
                                "[-L plugin]\n",
                                argv[0]);
                        return 1;
                }
        }
        if (only == M_POLL_PLUGIN && !g_plugin) {
                fprintf(stderr, "bench_consume: poll_plugin needs -L\n");
                return 1;
        }
        if (!broker || runs < 1 || runs > 100 || g_msgs < 1 || g_batch < 1 ||
            g_parts < 1 || g_parts > 1000 || chunk < 1) {
                fprintf(stderr, "bench_consume: need -B, sane -m/-p/-r/-n/-c\n");
                return 1;
        }
        char mbuf[32], pbuf[16];
        snprintf(mbuf, sizeof mbuf, "%ld", g_msgs);
        snprintf(pbuf, sizeof pbuf, "%d", g_parts);
        char *bargv[] = {(char *)broker, "-t", (char *)g_topic, "-p", pbuf,
                         "-m", mbuf, "-s", "100", NULL};
        bu_broker_t b;
        if (bu_broker_start(&b, bargv))
                return 1;
        g_boot = b.boot;
        printf("# broker %s (pid %d): %ld messages of 100 B in %d partitions;"
               " batch %d, chunk %ld, %d runs\n",
               b.boot, (int)b.pid, g_msgs, g_parts, g_batch, chunk, runs);

        if (only >= 0) {
                double ns;
                run_family(&only, 1, g_msgs, &ns);
                printf("RESULT %s 0 %.2f\n", mode_names[only], ns);
                bu_broker_stop(&b);
                return 0;
        }

        static const int fam[2][5] = {
            {M_POLL_NONE, M_POLL_NOOP, M_POLL_ZERO, M_POLL_HOOKS, M_POLL_PLUGIN},
            {M_BATCH_NONE, M_BATCH_NOOP, M_BATCH_ZERO, M_BATCH_HOOKS}};
        const int fam_n[2] = {g_plugin ? 5 : 4, 4};
        static double ns[M__CNT][100], ratio[M__CNT][100];
        for (int r = 0; r < runs; r++) {
                for (int f = 0; f < 2; f++) {
                        double out[5];
                        run_family(fam[f], fam_n[f], chunk, out);
                        for (int i = 0; i < fam_n[f]; i++) {
                                int m = fam[f][i];
                                ns[m][r] = out[i];
                                ratio[m][r] = out[i] / out[0];
                                printf("RESULT %s %d %.2f %.4f\n",
                                       mode_names[m], r, out[i], ratio[m][r]);
                        }
                        fflush(stdout);
                }
        }
        bu_broker_stop(&b);
        for (int m = 0; m < M__CNT - (g_plugin ? 0 : 1); m++)
                printf("MEDIAN %s ns_per_msg=%.2f ratio=%.4f "
                       "ratio_min=%.4f ratio_max=%.4f\n",
                       mode_names[m], bu_median(ns[m], runs),
                       bu_median(ratio[m], runs), bu_min(ratio[m], runs),
                       bu_max(ratio[m], runs));
        return 0;
}

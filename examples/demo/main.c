/* lagprobe demo: watch a consumer's lag, rebalances, poll headroom and lag
 * diagnosis live, and switch it into each failure mode.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Everything runs in this one process, on 127.0.0.1 only:
 *   - an embedded librdkafka mock cluster (3 brokers) with one topic of four
 *     partitions (this file);
 *   - a producer thread: a steady 40 messages/s spread over the partitions,
 *     plus bursts of 600 messages/s (producer.c);
 *   - the main consumer ("demo-main") with a probe attached, on its own
 *     thread, processing messages in batches wrapped in the probe's
 *     batch_begin/batch_end hooks (4 ms of work per message, so it drains
 *     at most about 240 messages/s) and storing each offset only after the
 *     message was processed (at-least-once) (main_consumer.c);
 *   - in the default run, a second consumer ("demo-guest", with its own
 *     probe) that joins the same group midway and leaves again, forcing two
 *     rebalances (consumer.c, which also attaches the probes: the
 *     integration an app needs);
 *   - the main thread, which never touches a consumer: it only reads the
 *     probes' snapshots, prints a table every second (lag, the probe's
 *     status per partition and its verdict for the consumer), prints
 *     rebalances and verdict changes as soon as they happen (report.c), and
 *     reads keys (keys.c). That is the point of the probe: any thread can
 *     read, nothing blocks the consumer.
 * demo.h holds the demo's tuning (limits, rates, times) and what the files
 * share; shared.c the failure modes, clock and output.
 *
 * Failure modes (-m MODE, or a key while it runs on a terminal):
 *   poison  p  the handler fails on one record of one partition; the app
 *              never stores (so never commits) past it and seeks back to
 *              it, re-consuming it forever       -> stuck_partition
 *   storm   s  batches of 10 take 6.8 s, just over max.poll.interval.ms
 *              (6000): every batch ends in an eviction and a rejoin
 *                                                -> rebalance_storm
 *   hot     h  90 % of the produced messages go to partition 0
 *                                                -> hot_partition
 *   burst   b  producers send 600 msg/s for 5 s, above the consumer's
 *              ~240 msg/s; then back to the steady flow
 *                                                -> producer_burst, healthy
 *   slow    w  per-message processing time doubles (4 -> 8 ms), batches
 *              stay far below the limit          -> consumer_slow
 *   healthy n  steady flow, no incident          -> healthy
 * Key q quits, ? lists the keys. Leaving poison "deploys the fix": the
 * record is processed and the partition catches up.
 *
 * Usage: demo [-m MODE] [-d SECONDS] [-s] [-j FILE]
 *   -m MODE     no guest, no scripted bursts: healthy flow, then MODE from
 *               t=8 s (the first join takes ~3 s and the verdict needs
 *               ~2 s of samples). Default run time 30 s (storm: 40 s).
 *   -d SECONDS  total run time (default 24, 30 with -s); ends on its own.
 *   -s          slow mode: from t=6 s the main consumer processes batches
 *               slower and slower, so poll headroom shrinks toward
 *               max.poll.interval.ms (6000 ms here), the probe warns and
 *               librdkafka finally evicts the consumer; the demo then goes
 *               back to normal speed and the consumer rejoins. No guest
 *               consumer in this mode, to keep the story readable.
 *   -j FILE     write demo-main's lagprobe_snapshot_json() to FILE as JSON
 *               lines {"t":SECONDS,"why":...,"snapshot":{...}}: every
 *               second, at every verdict change the reporter sees and at
 *               every diagnosis or partition_status event.
 * Keys work when stdin is a terminal (the terminal is put in a raw-ish mode
 * without echo and restored on exit); Ctrl-C stops cleanly at any time.
 *
 * Build: make demo (runs it), or by hand from the top directory:
 *   cc -std=c11 -I. examples/demo/[a-z]*.c probe.c \
 *      $(pkg-config --cflags --libs rdkafka) -lpthread -lm
 */
#include "demo.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka_mock.h>

#define SNAP_PARTS 64 /* partition rows the reporter reads per snapshot */

static void usage(const char *prog) {
        fprintf(stderr,
                "usage: %s [-m MODE] [-d SECONDS] [-s] [-j FILE]\n"
                "  -m MODE     healthy flow, then MODE from t=%d s (no guest "
                "consumer,\n"
                "              no scripted bursts); default run time 30 s, "
                "40 s for storm\n"
                "  -d SECONDS  run time (default 24; 30 with -s)\n"
                "  -s          slow mode: processing slows down until "
                "max.poll.interval.ms\n"
                "              (%d ms) is exceeded and the consumer is "
                "evicted\n"
                "  -j FILE     write demo-main's snapshot JSON to FILE, one "
                "line per second\n"
                "              and per verdict or status change\n"
                "modes (and keys, when stdin is a terminal):\n",
                prog, MODE_START_S, MAX_POLL_MS);
        for (int i = 0; i < MODE__CNT; i++)
                fprintf(stderr, "  %-8s key %c  %s\n  %-8s        -> %s\n",
                        g_modes[i].name, g_modes[i].key, g_modes[i].what, "",
                        g_modes[i].expect);
        fprintf(stderr,
                "  key q quits, ? lists the keys; Ctrl-C stops cleanly.\n"
                "  To play with the keys: %s -m healthy -d 600\n",
                prog);
}

/* Reads the options into the g_ settings, *@p start_mode (-m, -1 none) and
 * *@p json_path (-j). Returns -1 to go on, else the exit status. */
static int parse_args(int argc, char **argv, int *start_mode,
                      const char **json_path) {
        int opt, duration_set = 0;
        while ((opt = getopt(argc, argv, "d:j:m:sh")) != -1) {
                switch (opt) {
                case 'j':
                        *json_path = optarg;
                        break;
                case 'd':
                        g_duration_s = atof(optarg);
                        duration_set = 1;
                        if (g_duration_s <= 0) {
                                usage(argv[0]);
                                return 2;
                        }
                        break;
                case 'm':
                        *start_mode = mode_by_name(optarg);
                        if (*start_mode < 0) {
                                fprintf(stderr, "%s: unknown mode \"%s\"\n",
                                        argv[0], optarg);
                                usage(argv[0]);
                                return 2;
                        }
                        break;
                case 's':
                        g_slow_mode = 1;
                        break;
                default:
                        usage(argv[0]);
                        return opt == 'h' ? 0 : 2;
                }
        }
        if (optind < argc || (g_slow_mode && *start_mode >= 0)) {
                if (optind >= argc)
                        fprintf(stderr, "%s: -s and -m exclude each other\n",
                                argv[0]);
                usage(argv[0]);
                return 2;
        }
        g_tour = !g_slow_mode && *start_mode < 0;
        if (!duration_set) {
                if (g_slow_mode)
                        g_duration_s = 30.0; /* time for eviction and rejoin */
                else if (*start_mode >= 0)
                        g_duration_s = *start_mode == MODE_STORM ? 40.0 : 30.0;
        }
        return -1;
}

/* Line-buffered even into a pipe or a log file, so lines from all threads
 * appear in the order they happened. Returns 0, or -1 when FILE cannot be
 * written. */
static int open_output(const char *json_path) {
        setvbuf(stdout, NULL, _IOLBF, 0);
        if (!json_path)
                return 0;
        g_json = fopen(json_path, "w");
        if (!g_json) {
                perror(json_path);
                return -1;
        }
        setvbuf(g_json, NULL, _IOLBF, 0);
        return 0;
}

static void on_signal(int sig) {
        (void)sig;
        atomic_store(&g_stop, 1);
}

static void catch_signals(void) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
}

/* The mock cluster, owned by a client whose only job that is. */
struct cluster {
        rd_kafka_t *host;
        rd_kafka_mock_cluster_t *mock;
};

/* Starts the cluster with the demo's topic and sets g_bootstraps. Returns
 * 0, or -1 with the error printed. */
static int start_cluster(struct cluster *c) {
        char errstr[256];
        /* log_level 3 hides the host's "no bootstrap.servers" notice: it
         * never connects. */
        rd_kafka_conf_t *hconf = rd_kafka_conf_new();
        rd_kafka_conf_set(hconf, "log_level", "3", errstr, sizeof errstr);
        c->host = rd_kafka_new(RD_KAFKA_PRODUCER, hconf, errstr, sizeof errstr);
        if (!c->host) {
                fprintf(stderr, "mock host: %s\n", errstr);
                rd_kafka_conf_destroy(hconf);
                return -1;
        }
        c->mock = rd_kafka_mock_cluster_new(c->host, 3);
        if (!c->mock) {
                fprintf(stderr, "could not start the mock cluster\n");
                rd_kafka_destroy(c->host);
                return -1;
        }
        rd_kafka_mock_topic_create(c->mock, TOPIC, PARTITIONS, 1);
        g_bootstraps = rd_kafka_mock_cluster_bootstraps(c->mock);
        return 0;
}

static void stop_cluster(struct cluster *c) {
        rd_kafka_mock_cluster_destroy(c->mock);
        rd_kafka_destroy(c->host);
}

/* What runs, and how to read the tables. */
static void say_intro(int start_mode) {
        say("lagprobe %s demo: mock cluster %s, topic %s (%d partitions), "
            "group %s, %.0f s%s%s%s\n",
            lagprobe_version_str(), g_bootstraps, TOPIC, PARTITIONS, GROUP,
            g_duration_s, g_slow_mode ? ", slow mode" : "",
            start_mode >= 0 ? ", mode " : "",
            start_mode >= 0 ? g_modes[start_mode].name : "");
        if (start_mode > MODE_HEALTHY)
                say("mode %s from t=%d s: %s; expect %s\n",
                    g_modes[start_mode].name, MODE_START_S,
                    g_modes[start_mode].what, g_modes[start_mode].expect);
        say("columns: hwm = high watermark, lag = hwm - committed, pos_lag = "
            "hwm - position, behind_s = age of the last message consumed "
            "while behind, status = the probe's verdict on the partition over "
            "the last %d ms\n",
            WINDOW_MS);
}

/* The main thread's view of both consumers, from snapshots only. */
struct reporter {
        lagprobe_t *main_probe;
        struct watch wmain, wguest;
        lagprobe_t *last_guest;
        lagprobe_partition_t parts[SNAP_PARTS];
        lagprobe_snapshot_t snap;
};

static int take_snapshot(struct reporter *r, lagprobe_t *probe) {
        lagprobe_snapshot_init(&r->snap, r->parts, SNAP_PARTS);
        return lagprobe_snapshot(probe, &r->snap);
}

/* One sample: change lines for both consumers, and with @p table their
 * tables (and demo-main's -j line). */
static void report_sample(struct reporter *r, int table) {
        if (r->main_probe && take_snapshot(r, r->main_probe) == 0) {
                if (report_changes(&r->wmain, &r->snap))
                        json_line(r->main_probe, "verdict");
                if (table) {
                        print_table("demo-main", &r->snap, 1);
                        json_line(r->main_probe, "table");
                }
        }

        pthread_mutex_lock(&g_guest_lock);
        if (g_guest_probe != r->last_guest) {
                r->wguest.seen = 0; /* a new guest: counters restart */
                r->last_guest = g_guest_probe;
        }
        if (g_guest_probe && take_snapshot(r, g_guest_probe) == 0) {
                report_changes(&r->wguest, &r->snap);
                if (table)
                        print_table("demo-guest", &r->snap, 0);
        }
        pthread_mutex_unlock(&g_guest_lock);
}

/* The main thread until the run ends: sample every 100 ms for rebalance
 * and verdict lines and keys, print tables once a second, switch to -m's
 * mode at MODE_START_S. Returns 1 when key q ended it. */
static int run_reporter(lagprobe_t *main_probe, int start_mode, int keys) {
        struct reporter r = {.main_probe = main_probe,
                             .wmain = {.who = "demo-main"},
                             .wguest = {.who = "demo-guest"}};
        int64_t next_table_ms = g_t0_ms + 1000;
        int mode_started = start_mode <= MODE_HEALTHY;
        int quit = 0;

        while (!g_stop && t_now() < g_duration_s) {
                sleep_ms(100);
                if (keys && read_keys())
                        quit = 1;
                if (!mode_started && t_now() >= MODE_START_S) {
                        mode_started = 1;
                        /* A key pressed before takes precedence. */
                        if (atomic_load(&g_mode) == MODE_HEALTHY)
                                set_mode(start_mode, "-m");
                }
                int table = mono_ms() >= next_table_ms;
                if (table)
                        next_table_ms += 1000;
                report_sample(&r, table);
        }
        return quit;
}

int main(int argc, char **argv) {
        int start_mode = -1;
        const char *json_path = NULL;
        int rc = parse_args(argc, argv, &start_mode, &json_path);
        if (rc >= 0)
                return rc;
        if (open_output(json_path) != 0)
                return 1;
        catch_signals();
        g_t0_ms = mono_ms();
        atomic_store(&g_mode, MODE_HEALTHY);

        struct cluster cluster;
        if (start_cluster(&cluster) != 0)
                return 1;
        say_intro(start_mode);
        struct main_consumer mc = {0};
        mc.rk = new_consumer("demo-main", 1, &mc.probe);
        atomic_store(&g_main_probe, mc.probe);
        if (!mc.rk) {
                stop_cluster(&cluster);
                return 1;
        }
        int keys = keys_on();
        if (keys)
                print_keys();

        pthread_t producer_tid, consumer_tid, guest_tid;
        int have_guest = g_tour;
        pthread_create(&producer_tid, NULL, producer_thread, NULL);
        pthread_create(&consumer_tid, NULL, main_consumer_thread, &mc);
        if (have_guest)
                pthread_create(&guest_tid, NULL, guest_thread, NULL);

        int quit = run_reporter(mc.probe, start_mode, keys);
        say("%6.1fs %s, shutting down\n", t_now(),
            quit ? "quit" : g_stop ? "interrupted" : "time is up");
        atomic_store(&g_stop, 1);
        keys_off();

        /* Order matters: consumers close and are destroyed on their own
         * threads, then their probes go, then the cluster they talk to. */
        pthread_join(consumer_tid, NULL);
        if (have_guest)
                pthread_join(guest_tid, NULL);
        pthread_join(producer_tid, NULL);
        atomic_store(&g_main_probe, NULL);
        lagprobe_destroy(mc.probe);
        if (g_json)
                fclose(g_json);
        stop_cluster(&cluster);
        say("done\n");
        return 0;
}

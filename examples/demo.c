/* lagprobe demo: watch a consumer's lag, rebalances and poll headroom live.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Everything runs in this one process, on 127.0.0.1 only:
 *   - an embedded librdkafka mock cluster (3 brokers) with one topic of four
 *     partitions;
 *   - a producer thread: a steady trickle of messages plus two bursts, so lag
 *     builds up and then falls back to 0 as the consumer catches up;
 *   - the main consumer ("demo-main") with a probe attached, on its own
 *     thread, processing messages in batches wrapped in the probe's
 *     batch_begin/batch_end hooks;
 *   - a second consumer ("demo-guest", with its own probe) that joins the
 *     same group midway and leaves again, forcing two rebalances;
 *   - the main thread, which never touches a consumer: it only reads the
 *     probes' snapshots, prints a table every second and prints rebalances
 *     as soon as the counters change. That is the point of the probe: any
 *     thread can read, nothing blocks the consumer.
 *
 * Usage: demo [-d SECONDS] [-s]
 *   -d SECONDS  total run time (default 24, or 30 with -s); ends on its own.
 *   -s          slow mode: from t=6 s the main consumer processes batches
 *               slower and slower, so poll headroom shrinks toward
 *               max.poll.interval.ms (6000 ms here), the probe warns and
 *               librdkafka finally evicts the consumer; the demo then goes
 *               back to normal speed and the consumer rejoins. No guest
 *               consumer in this mode, to keep the story readable.
 * Ctrl-C stops cleanly at any time.
 *
 * Build: make demo (runs it), or by hand:
 *   cc -std=c11 -I.. demo.c ../probe.c $(pkg-config --cflags --libs rdkafka)
 *      -lpthread -lm
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, nanosleep, sigaction */

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "probe.h"

#define TOPIC          "lagprobe-demo"
#define PARTITIONS     4
#define GROUP          "lagprobe-demo-group"
#define MAX_POLL_MS    6000 /* small, so slow mode reaches it in seconds */
#define SESSION_MS     3000 /* the mock's rebalance wait is session - 1 s */
#define STATS_MS       500  /* statistics.interval.ms */
#define BATCH_MAX      100  /* messages per batch in normal mode */
#define SLOW_BATCH     10   /* messages per batch in slow mode */
#define WORK_US        300  /* simulated work per message, normal mode */
#define TRICKLE_MS     50   /* one message every 50 ms: 20 msg/s */
#define BURST_MSGS     6000 /* per burst, spread over all partitions */
#define QUIET_TAIL_S   4    /* producer stops this long before the end so
                             * the last tables show lag 0 */
#define SLOW_START_S   6    /* slow mode begins here (first join takes ~3 s) */

#define STR_(x) #x
#define STR(x)  STR_(x) /* numeric macro as a config string */

/* Set by SIGINT/SIGTERM and at the end of the run; read by every thread.
 * A lock-free atomic_int is safe to store from a signal handler. */
static atomic_int g_stop;

static int64_t g_t0_ms; /* monotonic start of the demo */
static double g_duration_s = 24.0;
static int g_slow_mode;
static const char *g_bootstraps; /* mock cluster's 127.0.0.1 list */

/* The guest's probe, published for the reporter. The mutex only keeps the
 * reporter from reading a probe that the guest thread is destroying; it is
 * never held across a consumer call. */
static pthread_mutex_t g_guest_lock = PTHREAD_MUTEX_INITIALIZER;
static lagprobe_t *g_guest_probe;

static int64_t mono_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Seconds since the demo started, for every line we print. */
static double t_now(void) {
        return (double)(mono_ms() - g_t0_ms) / 1000.0;
}

static void sleep_ms(int64_t ms) {
        struct timespec ts = {(time_t)(ms / 1000),
                              (long)(ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR && !g_stop)
                ;
}

static void on_signal(int sig) {
        (void)sig;
        atomic_store(&g_stop, 1);
}

/* Print one line atomically: stdio locks the stream per call, so building
 * the line first keeps lines from different threads from interleaving. */
static void say(const char *fmt, ...) {
        char line[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line, sizeof line, fmt, ap);
        va_end(ap);
        fputs(line, stdout);
}

/* ------------------------------------------------------------------------
 * lagprobe events
 * ---------------------------------------------------------------------- */

static const char *severity_name(int sev) {
        switch (sev) {
        case 2: return "CRIT";
        case 3: return "ERROR";
        case 4: return "WARN";
        case 5: return "NOTICE";
        default: return "INFO";
        }
}

/* config.log_cb: the probe calls this from its watchdog thread (or from a
 * librdkafka thread for an eviction), never from ours. It must not block
 * for long, so it prints one line and returns. */
static void on_probe_event(const lagprobe_event_t *ev, void *opaque) {
        (void)opaque;
        say("%6.1fs [lagprobe] %-6s %-18s %s: %s\n", t_now(),
            severity_name(ev->severity), ev->name,
            ev->client_id[0] ? ev->client_id : "?", ev->message);
}

/* ------------------------------------------------------------------------
 * Producer: steady trickle plus bursts
 * ---------------------------------------------------------------------- */

static void produce_one(rd_kafka_t *rk, int64_t seq) {
        char value[64];
        int len = snprintf(value, sizeof value, "order-%" PRId64, seq);
        for (;;) {
                /* Explicit partition: spread evenly so every row moves. */
                rd_kafka_resp_err_t err = rd_kafka_producev(
                    rk, RD_KAFKA_V_TOPIC(TOPIC),
                    RD_KAFKA_V_PARTITION((int32_t)(seq % PARTITIONS)),
                    RD_KAFKA_V_VALUE(value, (size_t)len),
                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
                if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                        if (err)
                                say("%6.1fs [producer] %s\n", t_now(),
                                    rd_kafka_err2str(err));
                        return;
                }
                rd_kafka_poll(rk, 10); /* local queue full: let it drain */
        }
}

static void *producer_main(void *arg) {
        (void)arg;
        char errstr[256];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        if (rd_kafka_conf_set(conf, "bootstrap.servers", g_bootstraps, errstr,
                              sizeof errstr) != RD_KAFKA_CONF_OK ||
            rd_kafka_conf_set(conf, "linger.ms", "5", errstr, sizeof errstr) !=
                RD_KAFKA_CONF_OK) {
                say("producer conf: %s\n", errstr);
                rd_kafka_conf_destroy(conf);
                return NULL;
        }
        rd_kafka_t *rk =
            rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
        if (!rk) {
                say("producer: %s\n", errstr);
                rd_kafka_conf_destroy(conf);
                return NULL;
        }

        /* Bursts at fixed shares of the run: the first one lands while the
         * main consumer owns everything, the second (normal mode) while the
         * guest shares the partitions. */
        const double burst_at[2] = {0.20 * g_duration_s, 0.55 * g_duration_s};
        int bursts_done = 0;
        int64_t seq = 0;
        while (!g_stop) {
                double t = t_now();
                if (t >= g_duration_s - QUIET_TAIL_S)
                        break;
                if (bursts_done < 2 && t >= burst_at[bursts_done]) {
                        say("%6.1fs [producer] burst of %d messages\n", t,
                            BURST_MSGS);
                        for (int i = 0; i < BURST_MSGS && !g_stop; i++)
                                produce_one(rk, seq++);
                        bursts_done++;
                }
                produce_one(rk, seq++);
                rd_kafka_poll(rk, 0); /* serve delivery reports */
                sleep_ms(TRICKLE_MS);
        }
        say("%6.1fs [producer] stopped after %" PRId64
            " messages; from now on the consumers only catch up\n",
            t_now(), seq);
        rd_kafka_flush(rk, 5000);
        rd_kafka_destroy(rk);
        return NULL;
}

/* ------------------------------------------------------------------------
 * Consumers
 * ---------------------------------------------------------------------- */

/* A consumer with a probe attached. The probe lines are the whole
 * integration: config, new, attach, all before rd_kafka_new(). */
static rd_kafka_t *new_consumer(const char *client_id, lagprobe_t **probep) {
        char errstr[512];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        const char *props[][2] = {
            {"bootstrap.servers", g_bootstraps},
            {"group.id", GROUP},
            {"client.id", client_id},
            {"auto.offset.reset", "earliest"},
            /* Small limits so every effect shows within seconds.
             * max.poll.interval.ms must be >= session.timeout.ms. */
            {"max.poll.interval.ms", STR(MAX_POLL_MS)},
            {"session.timeout.ms", STR(SESSION_MS)},
            {"heartbeat.interval.ms", "500"},
            /* Commit often so committed offsets (and so "lag") follow the
             * position closely instead of jumping every 5 s. */
            {"auto.commit.interval.ms", "500"},
            /* Our own non-zero value: the probe leaves it alone. Fresher
             * high watermarks for the table. */
            {"statistics.interval.ms", STR(STATS_MS)},
        };
        for (size_t i = 0; i < sizeof props / sizeof props[0]; i++) {
                if (rd_kafka_conf_set(conf, props[i][0], props[i][1], errstr,
                                      sizeof errstr) != RD_KAFKA_CONF_OK) {
                        say("%s: %s\n", client_id, errstr);
                        rd_kafka_conf_destroy(conf);
                        return NULL;
                }
        }

        lagprobe_config_t pc;
        lagprobe_config_init(&pc);
        pc.log_cb = on_probe_event;       /* events into our output */
        pc.event_min_interval_ms = 3000;  /* default 10 s hides repeats in
                                           * a demo this short */
        lagprobe_t *probe = lagprobe_new(&pc, errstr, sizeof errstr);
        if (!probe || lagprobe_attach(probe, conf, errstr, sizeof errstr)) {
                /* A probe failure must never stop the consumer: run
                 * without it. */
                say("%s: lagprobe disabled: %s\n", client_id, errstr);
                lagprobe_destroy(probe);
                probe = NULL;
        }

        rd_kafka_t *rk =
            rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
        if (!rk) {
                say("%s: %s\n", client_id, errstr);
                rd_kafka_conf_destroy(conf);
                lagprobe_destroy(probe);
                return NULL;
        }
        /* Callbacks (stats, rebalance) are then served by consumer_poll,
         * on the consumer's own thread. */
        rd_kafka_poll_set_consumer(rk);

        rd_kafka_topic_partition_list_t *topics =
            rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(topics, TOPIC, RD_KAFKA_PARTITION_UA);
        rd_kafka_resp_err_t err = rd_kafka_subscribe(rk, topics);
        rd_kafka_topic_partition_list_destroy(topics);
        if (err)
                say("%s: subscribe: %s\n", client_id, rd_kafka_err2str(err));

        *probep = probe;
        return rk;
}

/* Simulated work for one message. */
static void process(const rd_kafka_message_t *m, int64_t work_us) {
        (void)m;
        struct timespec ts = {(time_t)(work_us / 1000000),
                              (long)(work_us % 1000000) * 1000L};
        nanosleep(&ts, NULL);
}

struct main_consumer {
        rd_kafka_t *rk;
        lagprobe_t *probe;
};

/* Slow mode: milliseconds of work per message, one entry per batch. The
 * batch is SLOW_BATCH messages, so 200 ms/msg is a 2 s batch (headroom
 * fine), 450 ms/msg is 4.5 s (past the 70 % warning at 4.2 s), 700 ms/msg
 * is 7 s (past max.poll.interval.ms=6000: eviction). The last entry repeats
 * until librdkafka evicts us. */
static const int slow_ms_per_msg[] = {200, 450, 700};

static void *main_consumer_thread(void *arg) {
        struct main_consumer *mc = arg;
        rd_kafka_message_t *batch[BATCH_MAX];
        int slow_step = -1; /* -1 normal speed, else index in the table */
        int evicted = 0;

        while (!g_stop) {
                if (g_slow_mode && !evicted && slow_step < 0 &&
                    t_now() >= SLOW_START_S) {
                        slow_step = 0;
                        say("%6.1fs [app] demo-main: slow mode on: batches of "
                            "%d, processing gets slower every batch\n",
                            t_now(), SLOW_BATCH);
                }
                size_t want = slow_step >= 0 ? SLOW_BATCH : BATCH_MAX;

                /* Gather a batch: wait up to 100 ms for the first message,
                 * then take what is already prefetched. Slow mode waits up
                 * to a second more so its batches are full and comparable. */
                size_t n = 0;
                int64_t fill_until = 0;
                while (n < want && !g_stop) {
                        int timeout = 100;
                        if (n > 0) {
                                int64_t left = fill_until - mono_ms();
                                timeout = left > 0 ? (int)left : 0;
                        }
                        rd_kafka_message_t *m =
                            rd_kafka_consumer_poll(mc->rk, timeout);
                        /* Lets the probe count an eviction even if
                         * librdkafka's log is filtered. */
                        lagprobe_poll_result(mc->probe, m);
                        if (!m)
                                break;
                        if (m->err) {
                                if (m->err ==
                                    RD_KAFKA_RESP_ERR__MAX_POLL_EXCEEDED) {
                                        say("%6.1fs [app] demo-main: poll "
                                            "returned %s: we were evicted; "
                                            "back to normal speed, "
                                            "rejoining\n",
                                            t_now(), rd_kafka_err2name(m->err));
                                        evicted = 1;
                                        slow_step = -1;
                                } else {
                                        say("%6.1fs [app] demo-main: %s\n",
                                            t_now(),
                                            rd_kafka_message_errstr(m));
                                }
                                rd_kafka_message_destroy(m);
                                break;
                        }
                        if (n == 0)
                                fill_until =
                                    mono_ms() + (slow_step >= 0 ? 1000 : 0);
                        batch[n++] = m;
                }
                if (n == 0)
                        continue;

                /* The hooks make the probe's headroom exact: the clock runs
                 * from the poll return, and per-message progress lets it
                 * predict a batch that will overrun. */
                int64_t work_us =
                    slow_step >= 0
                        ? (int64_t)slow_ms_per_msg[slow_step] * 1000
                        : WORK_US;
                if (slow_step >= 0)
                        say("%6.1fs [app] demo-main: batch of %zu, %d ms "
                            "per message (%.1f s; max.poll.interval.ms=%d)\n",
                            t_now(), n, (int)(work_us / 1000),
                            (double)work_us * (double)n / 1e6, MAX_POLL_MS);
                lagprobe_batch_begin(mc->probe, n);
                for (size_t i = 0; i < n; i++) {
                        if (!g_stop)
                                process(batch[i], work_us);
                        rd_kafka_message_destroy(batch[i]);
                        lagprobe_batch_progress(mc->probe, i + 1);
                }
                lagprobe_batch_end(mc->probe);

                if (slow_step >= 0 &&
                    slow_step + 1 < (int)(sizeof slow_ms_per_msg /
                                          sizeof slow_ms_per_msg[0]))
                        slow_step++;
        }

        /* Leave the group cleanly (commits, revokes), then free the client.
         * The probe outlives the client: the reporter thread may still be
         * reading it, and main destroys it after joining us. */
        rd_kafka_consumer_close(mc->rk);
        rd_kafka_destroy(mc->rk);
        return NULL;
}

/* The guest: joins midway, consumes at full speed with a plain poll loop
 * (no batch hooks: its probe infers headroom from callbacks), then leaves. */
static void *guest_thread(void *arg) {
        (void)arg;
        const double join_at = 0.35 * g_duration_s;
        const double leave_at = 0.62 * g_duration_s;

        while (!g_stop && t_now() < join_at)
                sleep_ms(50);
        if (g_stop)
                return NULL;

        lagprobe_t *probe = NULL;
        say("%6.1fs [app] demo-guest: joining group %s\n", t_now(), GROUP);
        rd_kafka_t *rk = new_consumer("demo-guest", &probe);
        if (!rk)
                return NULL;
        pthread_mutex_lock(&g_guest_lock);
        g_guest_probe = probe;
        pthread_mutex_unlock(&g_guest_lock);

        while (!g_stop && t_now() < leave_at) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
                if (!m)
                        continue;
                if (!m->err)
                        process(m, WORK_US);
                rd_kafka_message_destroy(m);
        }

        say("%6.1fs [app] demo-guest: leaving the group\n", t_now());
        rd_kafka_consumer_close(rk);

        /* The close revoked our partitions within a few milliseconds,
         * likely between two of the reporter's samples: read our own
         * probe once more (any thread may) so the revoke shows. */
        lagprobe_snapshot_t snap;
        lagprobe_snapshot_init(&snap, NULL, 0);
        if (probe && lagprobe_snapshot(probe, &snap) == 0)
                say("%6.1fs [app] demo-guest: closed: assigned %" PRId64
                    ", assigns %" PRId64 ", revokes %" PRId64
                    ", consumed %" PRId64 "\n",
                    t_now(), snap.assignment_size, snap.assigns,
                    snap.revokes, snap.consumed);
        rd_kafka_destroy(rk);

        /* Unpublish before destroying, so the reporter never reads a freed
         * probe. */
        pthread_mutex_lock(&g_guest_lock);
        g_guest_probe = NULL;
        pthread_mutex_unlock(&g_guest_lock);
        lagprobe_destroy(probe);
        return NULL;
}

/* ------------------------------------------------------------------------
 * Reporter (main thread): reads snapshots only
 * ---------------------------------------------------------------------- */

/* -1 means unknown in every snapshot figure: show it as "-". */
static const char *num(char *buf, size_t size, int64_t v) {
        if (v < 0)
                snprintf(buf, size, "-");
        else
                snprintf(buf, size, "%" PRId64, v);
        return buf;
}

static void print_table(const char *who, const lagprobe_snapshot_t *s) {
        char out[8192];
        size_t off = 0;
        char a[24], b[24], c[24], d[24], e[24];

#define APPEND(...)                                                            \
        do {                                                                   \
                if (off < sizeof out)                                          \
                        off += (size_t)snprintf(out + off, sizeof out - off,   \
                                                __VA_ARGS__);                  \
        } while (0)

        /* Headroom goes negative once the limit is passed: print it
         * signed, unlike the figures where negative means unknown. */
        snprintf(b, sizeof b, "%" PRId64, s->headroom_ms);
        APPEND("%6.1fs %-10s assigned %" PRId64 " (%s)  rebalances %" PRId64
               " [assign %" PRId64 ", revoke %" PRId64 ", lost %" PRId64
               "]  poll: since %s ms, headroom %s of %" PRId64
               " ms%s%s  evictions %" PRId64 "  consumed %" PRId64 "\n",
               t_now(), who, s->assignment_size, s->protocol, s->rebalances,
               s->assigns, s->revokes, s->lost,
               num(a, sizeof a, s->since_last_poll_ms),
               s->since_last_poll_ms < 0 ? "-" : b,
               s->max_poll_interval_ms,
               s->headroom_level == 2   ? " CRITICAL"
               : s->headroom_level == 1 ? " WARN"
                                        : "",
               s->exact ? "" : " (inferred)", s->evictions, s->consumed);
        if (s->in_batch)
                APPEND("        %-10s in batch: %" PRId64 "/%" PRId64
                       " done, %" PRId64 " ms so far\n",
                       "", s->batch_done, s->batch_size, s->batch_elapsed_ms);

        size_t rows = s->partition_cnt < s->partitions_size
                          ? s->partition_cnt
                          : s->partitions_size;
        if (rows > 0)
                APPEND("        %-16s %4s %8s %9s %8s %6s %7s %8s %8s\n",
                       "topic", "part", "hwm", "committed", "position", "lag",
                       "pos_lag", "behind_s", "consumed");
        for (size_t i = 0; i < rows; i++) {
                const lagprobe_partition_t *p = &s->partitions[i];
                char behind[24], note[48] = "";
                if (p->seconds_behind < 0)
                        snprintf(behind, sizeof behind, "-");
                else
                        snprintf(behind, sizeof behind, "%.2f",
                                 p->seconds_behind);
                /* The high watermark comes from statistics, which
                 * librdkafka only delivers inside a poll: while the app is
                 * stuck in a batch the figure freezes. Say so. */
                if (p->stale)
                        snprintf(note, sizeof note, "  (hwm stale)");
                else if (p->hwm_age_ms > 3 * STATS_MS)
                        snprintf(note, sizeof note, "  (hwm %.1f s old)",
                                 (double)p->hwm_age_ms / 1000.0);
                APPEND("        %-16s %4" PRId32 " %8s %9s %8s %6s %7s %8s "
                       "%8" PRId64 "%s\n",
                       p->topic, p->partition,
                       num(a, sizeof a, p->high_watermark),
                       num(b, sizeof b, p->committed_offset),
                       num(c, sizeof c, p->position), num(d, sizeof d, p->lag),
                       num(e, sizeof e, p->position_lag), behind, p->consumed,
                       note);
        }
#undef APPEND
        fputs(out, stdout);
}

/* What the reporter remembers per consumer to spot rebalances. */
struct watch {
        const char *who;
        int seen;
        int64_t assigns, revokes, lost, evictions;
};

/* Print a line for every change in the rebalance counters since the last
 * sample (every 100 ms): the probe counts rebalances, we just diff them. */
static void report_changes(struct watch *w, const lagprobe_snapshot_t *s) {
        if (!w->seen) {
                w->seen = 1;
                w->assigns = w->revokes = w->lost = w->evictions = 0;
        }
        if (s->revokes > w->revokes) {
                say("%6.1fs [rebalance] %s: partitions revoked%s "
                    "(revokes %" PRId64 ", rebalances %" PRId64 ")\n",
                    t_now(), w->who,
                    s->lost > w->lost ? " as LOST" : "", s->revokes,
                    s->rebalances);
        }
        if (s->assigns > w->assigns) {
                char list[256];
                size_t off = 0;
                size_t rows = s->partition_cnt < s->partitions_size
                                  ? s->partition_cnt
                                  : s->partitions_size;
                list[0] = '\0';
                for (size_t i = 0; i < rows && off < sizeof list; i++)
                        off += (size_t)snprintf(
                            list + off, sizeof list - off, "%s%" PRId32,
                            i ? "," : "", s->partitions[i].partition);
                char gap[24];
                say("%6.1fs [rebalance] %s: assigned %" PRId64
                    " partition(s) [%s] (%s, assigns %" PRId64
                    ", rebalances %" PRId64 ", unassigned for %s ms)\n",
                    t_now(), w->who, s->assignment_size, list, s->protocol,
                    s->assigns, s->rebalances,
                    num(gap, sizeof gap, s->last_unassigned_ms));
        }
        if (s->evictions > w->evictions)
                say("%6.1fs [rebalance] %s: evicted (evictions %" PRId64 ")\n",
                    t_now(), w->who, s->evictions);
        w->assigns = s->assigns;
        w->revokes = s->revokes;
        w->lost = s->lost;
        w->evictions = s->evictions;
}

static int take_snapshot(lagprobe_t *probe, lagprobe_snapshot_t *snap,
                         lagprobe_partition_t *parts, size_t n) {
        lagprobe_snapshot_init(snap, parts, n);
        return lagprobe_snapshot(probe, snap);
}

static void usage(const char *prog) {
        fprintf(stderr,
                "usage: %s [-d SECONDS] [-s]\n"
                "  -d SECONDS  run time (default 24; 30 with -s)\n"
                "  -s          slow mode: processing slows down until "
                "max.poll.interval.ms\n"
                "              (%d ms) is exceeded and the consumer is "
                "evicted\n",
                prog, MAX_POLL_MS);
}

int main(int argc, char **argv) {
        int opt, duration_set = 0;
        while ((opt = getopt(argc, argv, "d:sh")) != -1) {
                switch (opt) {
                case 'd':
                        g_duration_s = atof(optarg);
                        duration_set = 1;
                        if (g_duration_s <= 0) {
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
        if (g_slow_mode && !duration_set)
                g_duration_s = 30.0; /* time for eviction and rejoin */

        /* Line-buffered even into a pipe or a log file, so lines from all
         * threads appear in the order they happened. */
        setvbuf(stdout, NULL, _IOLBF, 0);

        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);

        g_t0_ms = mono_ms();
        char errstr[256];

        /* A client whose only job is to own the mock cluster. log_level 3
         * hides its "no bootstrap.servers" notice: it never connects. */
        rd_kafka_conf_t *hconf = rd_kafka_conf_new();
        rd_kafka_conf_set(hconf, "log_level", "3", errstr, sizeof errstr);
        rd_kafka_t *host =
            rd_kafka_new(RD_KAFKA_PRODUCER, hconf, errstr, sizeof errstr);
        if (!host) {
                fprintf(stderr, "mock host: %s\n", errstr);
                rd_kafka_conf_destroy(hconf);
                return 1;
        }
        rd_kafka_mock_cluster_t *mcluster = rd_kafka_mock_cluster_new(host, 3);
        if (!mcluster) {
                fprintf(stderr, "could not start the mock cluster\n");
                rd_kafka_destroy(host);
                return 1;
        }
        rd_kafka_mock_topic_create(mcluster, TOPIC, PARTITIONS, 1);
        g_bootstraps = rd_kafka_mock_cluster_bootstraps(mcluster);

        say("lagprobe %s demo: mock cluster %s, topic %s (%d partitions), "
            "group %s, %.0f s%s\n",
            lagprobe_version_str(), g_bootstraps, TOPIC, PARTITIONS, GROUP,
            g_duration_s, g_slow_mode ? ", slow mode" : "");
        say("columns: hwm = high watermark, lag = hwm - committed, pos_lag = "
            "hwm - position, behind_s = age of the last message consumed "
            "while behind\n");

        struct main_consumer mc = {0};
        mc.rk = new_consumer("demo-main", &mc.probe);
        if (!mc.rk) {
                rd_kafka_mock_cluster_destroy(mcluster);
                rd_kafka_destroy(host);
                return 1;
        }

        pthread_t producer_tid, consumer_tid, guest_tid;
        int have_guest = !g_slow_mode;
        pthread_create(&producer_tid, NULL, producer_main, NULL);
        pthread_create(&consumer_tid, NULL, main_consumer_thread, &mc);
        if (have_guest)
                pthread_create(&guest_tid, NULL, guest_thread, NULL);

        lagprobe_partition_t parts[64];
        lagprobe_snapshot_t snap;
        struct watch wmain = {.who = "demo-main"};
        struct watch wguest = {.who = "demo-guest"};
        lagprobe_t *last_guest = NULL;
        int64_t next_table_ms = g_t0_ms + 1000;

        /* Sample every 100 ms for rebalance lines, print tables once a
         * second. */
        while (!g_stop && t_now() < g_duration_s) {
                sleep_ms(100);
                int table = mono_ms() >= next_table_ms;
                if (table)
                        next_table_ms += 1000;

                if (mc.probe &&
                    take_snapshot(mc.probe, &snap, parts, 64) == 0) {
                        report_changes(&wmain, &snap);
                        if (table)
                                print_table("demo-main", &snap);
                }

                pthread_mutex_lock(&g_guest_lock);
                if (g_guest_probe != last_guest) {
                        wguest.seen = 0; /* a new guest: counters restart */
                        last_guest = g_guest_probe;
                }
                if (g_guest_probe &&
                    take_snapshot(g_guest_probe, &snap, parts, 64) == 0) {
                        report_changes(&wguest, &snap);
                        if (table)
                                print_table("demo-guest", &snap);
                }
                pthread_mutex_unlock(&g_guest_lock);
        }

        say("%6.1fs %s, shutting down\n", t_now(),
            g_stop ? "interrupted" : "time is up");
        atomic_store(&g_stop, 1);

        /* Order matters: consumers close and are destroyed on their own
         * threads, then their probes go, then the cluster they talk to. */
        pthread_join(consumer_tid, NULL);
        if (have_guest)
                pthread_join(guest_tid, NULL);
        pthread_join(producer_tid, NULL);
        lagprobe_destroy(mc.probe);
        rd_kafka_mock_cluster_destroy(mcluster);
        rd_kafka_destroy(host);
        say("done\n");
        return 0;
}

/* lagprobe demo: watch a consumer's lag, rebalances, poll headroom and lag
 * diagnosis live, and switch it into each failure mode.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Everything runs in this one process, on 127.0.0.1 only:
 *   - an embedded librdkafka mock cluster (3 brokers) with one topic of four
 *     partitions;
 *   - a producer thread: a steady 40 messages/s spread over the partitions,
 *     plus bursts of 600 messages/s;
 *   - the main consumer ("demo-main") with a probe attached, on its own
 *     thread, processing messages in batches wrapped in the probe's
 *     batch_begin/batch_end hooks (4 ms of work per message, so it drains
 *     at most about 240 messages/s) and storing each offset only after the
 *     message was processed (at-least-once);
 *   - in the default run, a second consumer ("demo-guest", with its own
 *     probe) that joins the same group midway and leaves again, forcing two
 *     rebalances;
 *   - the main thread, which never touches a consumer: it only reads the
 *     probes' snapshots, prints a table every second (lag, the probe's
 *     status per partition and its verdict for the consumer), prints
 *     rebalances and verdict changes as soon as they happen, and reads keys.
 *     That is the point of the probe: any thread can read, nothing blocks
 *     the consumer.
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
 *   cc -std=c11 -I. examples/demo.c probe.c \
 *      $(pkg-config --cflags --libs rdkafka) -lpthread -lm
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, nanosleep, sigaction,
                                 * termios, tcgetpgrp, poll */

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "probe.h"

#define TOPIC          "lagprobe-demo"
#define PARTITIONS     4
#define GROUP          "lagprobe-demo-group"
#define MAX_POLL_MS    6000 /* small, so evictions happen in seconds */
#define SESSION_MS     3000 /* the mock's rebalance wait is session - 1 s */
#define STATS_MS       200  /* statistics.interval.ms: the probe judges
                             * with every statistics document */
#define WINDOW_MS      3000 /* the probe's diagnosis window */
#define LAG_ALLOWANCE  50   /* lag a partition may have before it can be
                             * lagging or stalled */
#define STORM_WINDOW_MS 30000 /* evictions older than this stop counting */
#define BATCH_MAX      100  /* messages per batch in normal operation */
#define SLOW_BATCH     10   /* messages per batch in -s and storm */
#define WORK_US        4000 /* simulated work per message: ~240 msg/s */
#define BASE_RATE      40   /* steady flow, messages/s over all partitions */
#define BURST_RATE     600  /* messages/s during a burst */
#define BURST_S        5    /* length of a burst (-m burst, key b) */
#define TOUR_BURST_S   2    /* length of the default run's two bursts */
#define HOT_PARTITION  0    /* hot mode sends 90 % of messages here */
#define STORM_BATCH_MS 6800 /* storm batch: past MAX_POLL_MS by more than
                             * librdkafka's 500 ms check interval */
#define QUIET_TAIL_S   4    /* default run and -s: the producer stops this
                             * long before the end so the last tables show
                             * lag 0 */
#define SLOW_START_S   6    /* -s begins here (first join takes ~3 s) */
#define MODE_START_S   8    /* -m MODE begins here */
#define HWM_OLD_MS     1500 /* flag high watermarks older than this */

#define STR_(x) #x
#define STR(x)  STR_(x) /* numeric macro as a config string */

_Static_assert(STORM_BATCH_MS > MAX_POLL_MS + 500,
               "a storm batch must outlast the limit plus one check");

/* ------------------------------------------------------------------------
 * Failure modes
 * ---------------------------------------------------------------------- */

enum demo_mode {
        MODE_HEALTHY = 0,
        MODE_POISON,
        MODE_STORM,
        MODE_HOT,
        MODE_BURST,
        MODE_SLOW,
        MODE__CNT
};

static const struct {
        const char *name;
        char key;
        const char *what;   /* what the demo does */
        const char *expect; /* the verdict it should lead to */
} g_modes[MODE__CNT] = {
    [MODE_HEALTHY] = {"healthy", 'n', "steady flow, 4 ms of work per message",
                      "healthy"},
    [MODE_POISON] = {"poison", 'p',
                     "the handler fails on one record and seeks back to it; "
                     "nothing past it is committed",
                     "stuck_partition"},
    [MODE_STORM] = {"storm", 's',
                    "batches of " STR(SLOW_BATCH) " take " STR(STORM_BATCH_MS)
                    " ms, over max.poll.interval.ms=" STR(MAX_POLL_MS),
                    "rebalance_storm"},
    [MODE_HOT] = {"hot", 'h',
                  "90 % of produced messages go to partition " STR(
                      HOT_PARTITION),
                  "hot_partition"},
    [MODE_BURST] = {"burst", 'b',
                    "producers send " STR(BURST_RATE) " msg/s for " STR(
                        BURST_S) " s, above the consumer's ~240 msg/s",
                    "producer_burst, then healthy"},
    [MODE_SLOW] = {"slow", 'w',
                   "per-message time doubles (4 -> 8 ms), no eviction",
                   "consumer_slow"},
};

static int mode_by_name(const char *name) {
        for (int i = 0; i < MODE__CNT; i++)
                if (strcmp(name, g_modes[i].name) == 0)
                        return i;
        return -1;
}

static int mode_by_key(int key) {
        for (int i = 0; i < MODE__CNT; i++)
                if (key == g_modes[i].key)
                        return i;
        return -1;
}

/* Set by SIGINT/SIGTERM, key q and at the end of the run; read by every
 * thread. A lock-free atomic_int is safe to store from a signal handler. */
static atomic_int g_stop;
static int g_quit_key; /* main thread only: q was pressed */

static atomic_int g_mode;               /* enum demo_mode, current */
static _Atomic int64_t g_burst_until_ms; /* producer bursts until then */

static int64_t g_t0_ms; /* monotonic start of the demo */
static double g_duration_s = 24.0;
static int g_slow_mode;  /* -s */
static int g_tour;       /* default run: guest and scripted bursts */
static FILE *g_json;     /* -j FILE: snapshot JSON lines, or NULL */
static _Atomic(lagprobe_t *) g_main_probe; /* demo-main's, for -j */
static const char g_main_tag[] = "demo-main"; /* its log_opaque */
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

/* Switch the failure mode (keys, -m, the default run's bursts). */
static void set_mode(int mode, const char *why) {
        char what[160];
        snprintf(what, sizeof what, "%s", g_modes[mode].what);
        if (mode == MODE_BURST) {
                int secs = g_tour ? TOUR_BURST_S : BURST_S;
                atomic_store(&g_burst_until_ms, mono_ms() + secs * 1000);
                snprintf(what, sizeof what,
                         "producers send %d msg/s for %d s, above the "
                         "consumer's ~240 msg/s",
                         BURST_RATE, secs);
        }
        int old = atomic_exchange(&g_mode, mode);
        say("%6.1fs [mode] %s -> %s (%s): %s; expect %s\n", t_now(),
            g_modes[old].name, g_modes[mode].name, why, what,
            g_modes[mode].expect);
}

/* -j FILE: one JSON object per line, {"t":SECONDS,"why":"...","snapshot":
 * lagprobe_snapshot_json()}. Any thread (the snapshot is lock-free, and
 * stdio writes each line under the stream's lock). */
static void json_line(lagprobe_t *probe, const char *why) {
        if (!g_json || !probe)
                return;
        size_t size = 16384;
        char *buf = malloc(size);
        size_t need = buf ? lagprobe_snapshot_json(probe, buf, size) : 0;
        if (buf && need >= size) {
                char *bigger = realloc(buf, need + 1);
                if (bigger) {
                        buf = bigger;
                        lagprobe_snapshot_json(probe, buf, need + 1);
                }
        }
        if (buf && need > 0)
                fprintf(g_json, "{\"t\":%.1f,\"why\":\"%s\",\"snapshot\":%s}\n",
                        t_now(), why, buf);
        free(buf);
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

/* config.log_cb: the probe calls this from its watchdog thread, never from
 * ours. It must not block for long, so it prints one line and returns.
 * The diagnosis events ("diagnosis": the verdict changed,
 * "partition_status": a partition's status changed) get their own tags so
 * they are easy to follow (grep '\[diagnosis\]'); everything else is a
 * [lagprobe] line. */
static void on_probe_event(const lagprobe_event_t *ev, void *opaque) {
        const char *who = ev->client_id[0] ? ev->client_id : "?";
        if (ev->type == LAGPROBE_EVENT_DIAGNOSIS)
                say("%6.1fs [diagnosis] %-6s %s: %s\n", t_now(),
                    severity_name(ev->severity), who, ev->message);
        else if (ev->type == LAGPROBE_EVENT_PARTITION_STATUS)
                say("%6.1fs [status] %-6s %s: %s\n", t_now(),
                    severity_name(ev->severity), who, ev->message);
        else
                say("%6.1fs [lagprobe] %-6s %-18s %s: %s\n", t_now(),
                    severity_name(ev->severity), ev->name, who, ev->message);
        /* -j: the evidence at the moment of every diagnosis event. */
        int diag = ev->type == LAGPROBE_EVENT_DIAGNOSIS ||
                   ev->type == LAGPROBE_EVENT_PARTITION_STATUS;
        if (opaque == g_main_tag && diag)
                json_line(atomic_load(&g_main_probe), ev->name);
}

/* ------------------------------------------------------------------------
 * Producer: steady flow, bursts, hot partition
 * ---------------------------------------------------------------------- */

/* Round robin over every partition; in hot mode 9 of every 10 messages go
 * to HOT_PARTITION and the tenth takes turns over the others. */
static int32_t pick_partition(int64_t seq, int hot) {
        if (!hot)
                return (int32_t)(seq % PARTITIONS);
        if (seq % 10 != 9)
                return HOT_PARTITION;
        int32_t k = (int32_t)((seq / 10) % (PARTITIONS - 1));
        return k >= HOT_PARTITION ? k + 1 : k;
}

static void produce_one(rd_kafka_t *rk, int64_t seq, int32_t partition) {
        char value[64];
        int len = snprintf(value, sizeof value, "order-%" PRId64, seq);
        for (;;) {
                rd_kafka_resp_err_t err = rd_kafka_producev(
                    rk, RD_KAFKA_V_TOPIC(TOPIC),
                    RD_KAFKA_V_PARTITION(partition),
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

        /* Default run: bursts at fixed shares of the run; the first lands
         * while the main consumer owns everything, the second while the
         * guest shares the partitions. */
        const double burst_at[2] = {0.20 * g_duration_s, 0.55 * g_duration_s};
        int bursts_done = 0, was_bursting = 0, was_hot = 0;
        int64_t seq = 0, last = mono_ms();
        double credit = 0; /* messages owed at the current rate */
        while (!g_stop) {
                double t = t_now();
                if ((g_tour || g_slow_mode) && t >= g_duration_s - QUIET_TAIL_S)
                        break;
                if (g_tour && bursts_done < 2 && t >= burst_at[bursts_done]) {
                        bursts_done++;
                        set_mode(MODE_BURST, "scripted");
                }
                int64_t now = mono_ms();
                int bursting = now < atomic_load(&g_burst_until_ms);
                if (bursting != was_bursting) {
                        say("%6.1fs [producer] %s\n", t,
                            bursting ? "burst starts: " STR(BURST_RATE)
                                       " msg/s over all partitions"
                                     : "burst over: back to " STR(BASE_RATE)
                                       " msg/s");
                        was_bursting = bursting;
                        int m = MODE_BURST;
                        if (!bursting &&
                            atomic_compare_exchange_strong(&g_mode, &m,
                                                           MODE_HEALTHY))
                                say("%6.1fs [mode] burst -> healthy (burst "
                                    "over); the consumer drains the "
                                    "backlog\n",
                                    t);
                }
                int hot = atomic_load(&g_mode) == MODE_HOT;
                if (hot != was_hot) {
                        say("%6.1fs [producer] %s\n", t,
                            hot ? "90 % of messages to partition " STR(
                                      HOT_PARTITION)
                                : "messages spread evenly again");
                        was_hot = hot;
                }
                credit += (bursting ? BURST_RATE : BASE_RATE) *
                          (double)(now - last) / 1000.0;
                last = now;
                if (credit > BURST_RATE)
                        credit = BURST_RATE; /* after a stall: no flood */
                while (credit >= 1 && !g_stop) {
                        produce_one(rk, seq, pick_partition(seq, hot));
                        seq++;
                        credit -= 1;
                }
                rd_kafka_poll(rk, 0); /* serve delivery reports */
                sleep_ms(10);
        }
        say("%6.1fs [producer] stopped after %" PRId64 " messages%s\n",
            t_now(), seq,
            g_stop ? ""
                   : "; from now on the consumers only catch up");
        rd_kafka_flush(rk, 5000);
        rd_kafka_destroy(rk);
        return NULL;
}

/* ------------------------------------------------------------------------
 * Consumers
 * ---------------------------------------------------------------------- */

/* A consumer with a probe attached. The probe lines are the whole
 * integration: config, new, attach, all before rd_kafka_new().
 * @p store_manually: the app stores offsets itself after processing
 * (enable.auto.offset.store=false), so a failed message is never
 * committed. */
static rd_kafka_t *new_consumer(const char *client_id, int store_manually,
                                lagprobe_t **probep) {
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
            {"enable.auto.offset.store", store_manually ? "false" : "true"},
            /* Our own non-zero value: the probe leaves it alone. The probe
             * re-judges with every document, so this is how fast the
             * verdicts follow. */
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
        pc.log_opaque = store_manually ? (void *)g_main_tag : NULL;
        pc.event_min_interval_ms = 3000;  /* default 10 s hides repeats in
                                           * a demo this short */
        /* Diagnosis tuned for a demo measured in seconds (defaults: 60 s
         * window, 100 messages, 5 min storm window). */
        pc.window_ms = WINDOW_MS;
        pc.lag_allowance = LAG_ALLOWANCE;
        pc.storm_window_ms = STORM_WINDOW_MS;
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

/* Slow mode (-s): milliseconds of work per message, one entry per batch.
 * The batch is SLOW_BATCH messages, so 200 ms/msg is a 2 s batch (headroom
 * fine), 450 ms/msg is 4.5 s (past the 70 % warning at 4.2 s), 700 ms/msg
 * is 7 s (past max.poll.interval.ms=6000: eviction). The last entry repeats
 * until librdkafka evicts us. */
static const int slow_ms_per_msg[] = {200, 450, 700};

/* Work per message. Read per message, so a key press takes effect inside a
 * long batch too; but a storm batch is one gathered in storm mode (@p
 * batch_mode), spread so that its @p n messages take STORM_BATCH_MS in
 * all: storm applied to the rest of a 100-message batch would make one
 * batch of a minute, not a storm. */
static int64_t work_us_for(int mode, int batch_mode, size_t n,
                           int slow_step) {
        if (slow_step >= 0)
                return (int64_t)slow_ms_per_msg[slow_step] * 1000;
        if (mode == MODE_STORM && batch_mode != MODE_STORM)
                mode = batch_mode;
        switch (mode) {
        case MODE_SLOW: return 2 * WORK_US;
        case MODE_STORM:
                return (int64_t)STORM_BATCH_MS * 1000 / (int64_t)(n ? n : 1);
        default: return WORK_US;
        }
}

/* The poison record: the first message consumed after poison mode starts.
 * The handler fails on it every time. */
struct poison {
        int active;
        char topic[128];
        int32_t partition;
        int64_t offset;
        int64_t failures;
        int64_t next_say_ms;
};

static int is_poison(const struct poison *ps, const rd_kafka_message_t *m) {
        return ps->active && m->partition == ps->partition &&
               m->offset >= ps->offset &&
               strcmp(rd_kafka_topic_name(m->rkt), ps->topic) == 0;
}

/* Retry the failed record: rewind the partition to it. With a timeout the
 * seek waits until the fetcher has moved, so no message fetched before the
 * seek reaches the app afterwards. */
static void seek_back(rd_kafka_t *rk, const struct poison *ps) {
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, ps->topic, ps->partition)->offset =
            ps->offset;
        rd_kafka_error_t *e = rd_kafka_seek_partitions(rk, l, 2000);
        if (e) {
                say("%6.1fs [app] demo-main: seek: %s\n", t_now(),
                    rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
        } else if (l->elems[0].err &&
                   l->elems[0].err != RD_KAFKA_RESP_ERR__STATE) {
                say("%6.1fs [app] demo-main: seek: %s\n", t_now(),
                    rd_kafka_err2str(l->elems[0].err));
        }
        rd_kafka_topic_partition_list_destroy(l);
}

static void *main_consumer_thread(void *arg) {
        struct main_consumer *mc = arg;
        rd_kafka_message_t *batch[BATCH_MAX];
        int slow_step = -1; /* -s: -1 normal speed, else index in table */
        int slow_done = 0;  /* -s story over (eviction or a mode switch) */
        struct poison ps = {0};

        while (!g_stop) {
                int mode = atomic_load(&g_mode);
                if (g_slow_mode && !slow_done && slow_step < 0 &&
                    mode == MODE_HEALTHY && t_now() >= SLOW_START_S) {
                        slow_step = 0;
                        say("%6.1fs [app] demo-main: slow mode on: batches of "
                            "%d, processing gets slower every batch\n",
                            t_now(), SLOW_BATCH);
                }
                if (slow_step >= 0 && mode != MODE_HEALTHY) {
                        say("%6.1fs [app] demo-main: slow mode (-s) "
                            "cancelled by the mode switch\n",
                            t_now());
                        slow_step = -1;
                        slow_done = 1;
                }
                if (ps.active && mode != MODE_POISON) {
                        say("%6.1fs [app] demo-main: fix deployed: %s [%" PRId32
                            "] offset %" PRId64 " now processes (after %" PRId64
                            " failures)\n",
                            t_now(), ps.topic, ps.partition, ps.offset,
                            ps.failures);
                        ps.active = 0;
                }
                int small = slow_step >= 0 || mode == MODE_STORM;
                size_t want = small ? SLOW_BATCH : BATCH_MAX;

                /* Gather a batch: wait up to 100 ms for the first message,
                 * then take what is already prefetched. Slow batches wait
                 * up to a second more so they are full and comparable. */
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
                                        int story = slow_step >= 0;
                                        say("%6.1fs [app] demo-main: poll "
                                            "returned %s: we were evicted; "
                                            "%s\n",
                                            t_now(), rd_kafka_err2name(m->err),
                                            story ? "back to normal speed, "
                                                    "rejoining"
                                                  : "rejoining");
                                        if (story) {
                                                slow_step = -1;
                                                slow_done = 1;
                                        }
                                } else {
                                        say("%6.1fs [app] demo-main: %s\n",
                                            t_now(),
                                            rd_kafka_message_errstr(m));
                                }
                                rd_kafka_message_destroy(m);
                                break;
                        }
                        if (mode == MODE_POISON && !ps.active) {
                                ps.active = 1;
                                snprintf(ps.topic, sizeof ps.topic, "%s",
                                         rd_kafka_topic_name(m->rkt));
                                ps.partition = m->partition;
                                ps.offset = m->offset;
                                ps.failures = 0;
                                ps.next_say_ms = 0;
                                say("%6.1fs [app] demo-main: poison record "
                                    "at %s [%" PRId32 "] offset %" PRId64
                                    ": the handler fails on it, the app "
                                    "seeks back and retries\n",
                                    t_now(), ps.topic, ps.partition,
                                    ps.offset);
                        }
                        if (n == 0)
                                fill_until = mono_ms() + (small ? 1000 : 0);
                        batch[n++] = m;
                        /* Nothing of that partition may follow the failing
                         * record in this batch: its position would run
                         * ahead and then jump back at the seek. */
                        if (is_poison(&ps, m))
                                break;
                }
                if (n == 0)
                        continue;

                if (slow_step >= 0 || mode == MODE_STORM) {
                        int64_t wu = work_us_for(mode, mode, n, slow_step);
                        say("%6.1fs [app] demo-main: batch of %zu, %d ms "
                            "per message (%.1f s; max.poll.interval.ms=%d)\n",
                            t_now(), n, (int)(wu / 1000),
                            (double)wu * (double)n / 1e6, MAX_POLL_MS);
                }

                /* The hooks make the probe's headroom exact: the clock runs
                 * from the poll return, and per-message progress gives it
                 * the per-message time (consumer_slow) and lets it predict
                 * a batch that will overrun. */
                rd_kafka_topic_partition_list_t *done =
                    rd_kafka_topic_partition_list_new(PARTITIONS);
                int failed = 0;
                lagprobe_batch_begin(mc->probe, n);
                for (size_t i = 0; i < n; i++) {
                        rd_kafka_message_t *m = batch[i];
                        if (!g_stop)
                                process(m, work_us_for(atomic_load(&g_mode),
                                                       mode, n, slow_step));
                        if (is_poison(&ps, m)) {
                                failed = 1; /* not stored: never committed */
                                ps.failures++;
                        } else {
                                /* At-least-once: store the next offset only
                                 * once the message is processed. */
                                const char *tn = rd_kafka_topic_name(m->rkt);
                                rd_kafka_topic_partition_t *tp =
                                    rd_kafka_topic_partition_list_find(
                                        done, tn, m->partition);
                                if (!tp)
                                        tp = rd_kafka_topic_partition_list_add(
                                            done, tn, m->partition);
                                tp->offset = m->offset + 1;
                        }
                        rd_kafka_message_destroy(m);
                        lagprobe_batch_progress(mc->probe, i + 1);
                }
                lagprobe_batch_end(mc->probe);
                /* Fails (harmlessly) for partitions lost meanwhile. */
                if (done->cnt > 0)
                        rd_kafka_offsets_store(mc->rk, done);
                rd_kafka_topic_partition_list_destroy(done);
                if (failed) {
                        if (mono_ms() >= ps.next_say_ms) {
                                say("%6.1fs [app] demo-main: handler failed "
                                    "on %s [%" PRId32 "] offset %" PRId64
                                    " (%" PRId64 " failures so far); seeking "
                                    "back to retry\n",
                                    t_now(), ps.topic, ps.partition, ps.offset,
                                    ps.failures);
                                ps.next_say_ms = mono_ms() + 3000;
                        }
                        seek_back(mc->rk, &ps);
                        sleep_ms(20); /* the app's retry backoff */
                }

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
        rd_kafka_t *rk = new_consumer("demo-guest", 0, &probe);
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

static void print_table(const char *who, const lagprobe_snapshot_t *s,
                        int show_mode) {
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
        /* The probe's verdict with its evidence, and the flow behind it. */
        APPEND("        %-10s %s%s%sverdict %s: %s  [in %.1f msg/s, out %.1f "
               "msg/s, lag %" PRId64 "]\n",
               "", show_mode ? "mode " : "",
               show_mode ? g_modes[atomic_load(&g_mode)].name : "",
               show_mode ? "  " : "", s->diagnosis_name, s->diagnosis_detail,
               s->ingress_rate, s->egress_rate, s->total_lag);

        size_t rows = s->partition_cnt < s->partitions_size
                          ? s->partition_cnt
                          : s->partitions_size;
        if (rows > 0)
                APPEND("        %-16s %4s %8s %9s %8s %6s %7s %8s %8s  %s\n",
                       "topic", "part", "hwm", "committed", "position", "lag",
                       "pos_lag", "behind_s", "consumed", "status");
        for (size_t i = 0; i < rows; i++) {
                const lagprobe_partition_t *p = &s->partitions[i];
                char behind[24], note[48] = "", status[200];
                if (p->seconds_behind < 0)
                        snprintf(behind, sizeof behind, "-");
                else
                        snprintf(behind, sizeof behind, "%.2f",
                                 p->seconds_behind);
                /* The high watermark comes from statistics, which
                 * librdkafka only delivers inside a poll: while the app is
                 * stuck in a batch the figure freezes. Say so. */
                if (p->hwm_age_ms > HWM_OLD_MS)
                        snprintf(note, sizeof note, "  (hwm %.1f s old)",
                                 (double)p->hwm_age_ms / 1000.0);
                /* The status, and for anything but ok the numbers behind
                 * it. */
                if (p->status == LAGPROBE_PSTATUS_OK || !p->status_reason[0])
                        snprintf(status, sizeof status, "%s", p->status_name);
                else
                        snprintf(status, sizeof status, "%s (%s)",
                                 p->status_name, p->status_reason);
                APPEND("        %-16s %4" PRId32 " %8s %9s %8s %6s %7s %8s "
                       "%8" PRId64 "  %s%s\n",
                       p->topic, p->partition,
                       num(a, sizeof a, p->high_watermark),
                       num(b, sizeof b, p->committed_offset),
                       num(c, sizeof c, p->position), num(d, sizeof d, p->lag),
                       num(e, sizeof e, p->position_lag), behind, p->consumed,
                       status, note);
        }
#undef APPEND
        fputs(out, stdout);
}

/* What the reporter remembers per consumer to spot changes. */
struct watch {
        const char *who;
        int seen;
        int64_t assigns, revokes, lost, evictions;
        int diagnosis;        /* last verdict printed, -1 none */
        int32_t diag_partition;
};

/* Print a line for every change in the rebalance counters and the verdict
 * since the last sample (every 100 ms): the probe counts and judges, we
 * just diff. */
static int report_changes(struct watch *w, const lagprobe_snapshot_t *s) {
        int verdict_changed = 0;
        if (!w->seen) {
                w->seen = 1;
                w->assigns = w->revokes = w->lost = w->evictions = 0;
                w->diagnosis = -1;
                w->diag_partition = -1;
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
        if ((int)s->diagnosis != w->diagnosis ||
            s->diagnosis_partition != w->diag_partition) {
                say("%6.1fs [verdict] %s: %s -> %s: %s\n", t_now(), w->who,
                    w->diagnosis < 0 ? "(start)"
                                     : lagprobe_diagnosis_name(w->diagnosis),
                    s->diagnosis_name, s->diagnosis_detail);
                w->diagnosis = (int)s->diagnosis;
                w->diag_partition = s->diagnosis_partition;
                verdict_changed = 1;
        }
        w->assigns = s->assigns;
        w->revokes = s->revokes;
        w->lost = s->lost;
        w->evictions = s->evictions;
        return verdict_changed;
}

static int take_snapshot(lagprobe_t *probe, lagprobe_snapshot_t *snap,
                         lagprobe_partition_t *parts, size_t n) {
        lagprobe_snapshot_init(snap, parts, n);
        return lagprobe_snapshot(probe, snap);
}

/* ------------------------------------------------------------------------
 * Keys: the terminal in a raw-ish mode (no line buffering, no echo;
 * Ctrl-C still sends SIGINT), restored on every way out of main.
 * ---------------------------------------------------------------------- */

static struct termios g_tio_saved;
static int g_tio_set;

static void keys_off(void) {
        if (g_tio_set) {
                tcsetattr(STDIN_FILENO, TCSANOW, &g_tio_saved);
                g_tio_set = 0;
        }
}

/* Only for a terminal we own: a background job touching the terminal
 * would be stopped by SIGTTOU. */
static int keys_on(void) {
        if (!isatty(STDIN_FILENO) || tcgetpgrp(STDIN_FILENO) != getpgrp() ||
            tcgetattr(STDIN_FILENO, &g_tio_saved) != 0)
                return 0;
        struct termios raw = g_tio_saved;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        raw.c_cc[VMIN] = 0;
        raw.c_cc[VTIME] = 0;
        if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) != 0)
                return 0;
        g_tio_set = 1;
        atexit(keys_off);
        return 1;
}

static void print_keys(void) {
        char line[512];
        size_t off = 0;
        for (int i = 0; i < MODE__CNT; i++)
                off += (size_t)snprintf(line + off, sizeof line - off,
                                        "%s%c %s", i ? ", " : "",
                                        g_modes[i].key, g_modes[i].name);
        say("%6.1fs [keys] %s; q quit, ? this list\n", t_now(), line);
}

/* Reads what was typed since the last call, without waiting. */
static void read_keys(void) {
        struct pollfd pfd = {STDIN_FILENO, POLLIN, 0};
        char buf[16];
        while (poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN)) {
                ssize_t r = read(STDIN_FILENO, buf, sizeof buf);
                if (r <= 0)
                        return;
                for (ssize_t i = 0; i < r; i++) {
                        int mode = mode_by_key(buf[i]);
                        if (mode >= 0)
                                set_mode(mode, "key");
                        else if (buf[i] == 'q') {
                                g_quit_key = 1;
                                atomic_store(&g_stop, 1);
                        }
                        else if (buf[i] == '?')
                                print_keys();
                }
        }
}

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

int main(int argc, char **argv) {
        int opt, duration_set = 0, start_mode = -1;
        const char *json_path = NULL;
        while ((opt = getopt(argc, argv, "d:j:m:sh")) != -1) {
                switch (opt) {
                case 'j':
                        json_path = optarg;
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
                        start_mode = mode_by_name(optarg);
                        if (start_mode < 0) {
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
        if (optind < argc || (g_slow_mode && start_mode >= 0)) {
                if (optind >= argc)
                        fprintf(stderr, "%s: -s and -m exclude each other\n",
                                argv[0]);
                usage(argv[0]);
                return 2;
        }
        g_tour = !g_slow_mode && start_mode < 0;
        if (!duration_set) {
                if (g_slow_mode)
                        g_duration_s = 30.0; /* time for eviction and rejoin */
                else if (start_mode >= 0)
                        g_duration_s = start_mode == MODE_STORM ? 40.0 : 30.0;
        }

        /* Line-buffered even into a pipe or a log file, so lines from all
         * threads appear in the order they happened. */
        setvbuf(stdout, NULL, _IOLBF, 0);
        if (json_path) {
                g_json = fopen(json_path, "w");
                if (!g_json) {
                        perror(json_path);
                        return 1;
                }
                setvbuf(g_json, NULL, _IOLBF, 0);
        }

        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);

        g_t0_ms = mono_ms();
        atomic_store(&g_mode, MODE_HEALTHY);
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
            "group %s, %.0f s%s%s\n",
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

        struct main_consumer mc = {0};
        mc.rk = new_consumer("demo-main", 1, &mc.probe);
        atomic_store(&g_main_probe, mc.probe);
        if (!mc.rk) {
                rd_kafka_mock_cluster_destroy(mcluster);
                rd_kafka_destroy(host);
                return 1;
        }

        int keys = keys_on();
        if (keys)
                print_keys();

        pthread_t producer_tid, consumer_tid, guest_tid;
        int have_guest = g_tour;
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
        int mode_started = start_mode <= MODE_HEALTHY;

        /* Sample every 100 ms for rebalance and verdict lines and keys,
         * print tables once a second. */
        while (!g_stop && t_now() < g_duration_s) {
                sleep_ms(100);
                if (keys)
                        read_keys();
                if (!mode_started && t_now() >= MODE_START_S) {
                        mode_started = 1;
                        /* A key pressed before takes precedence. */
                        if (atomic_load(&g_mode) == MODE_HEALTHY)
                                set_mode(start_mode, "-m");
                }
                int table = mono_ms() >= next_table_ms;
                if (table)
                        next_table_ms += 1000;

                if (mc.probe &&
                    take_snapshot(mc.probe, &snap, parts, 64) == 0) {
                        if (report_changes(&wmain, &snap))
                                json_line(mc.probe, "verdict");
                        if (table) {
                                print_table("demo-main", &snap, 1);
                                json_line(mc.probe, "table");
                        }
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
                                print_table("demo-guest", &snap, 0);
                }
                pthread_mutex_unlock(&g_guest_lock);
        }

        say("%6.1fs %s, shutting down\n", t_now(),
            g_quit_key ? "quit" : g_stop ? "interrupted" : "time is up");
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
        rd_kafka_mock_cluster_destroy(mcluster);
        rd_kafka_destroy(host);
        say("done\n");
        return 0;
}

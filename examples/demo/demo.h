/* lagprobe demo: what its files share. main.c tells the story of the demo
 * and says which file holds which part.
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef DEMO_H
#define DEMO_H

#define _POSIX_C_SOURCE 200809L /* clock_gettime, nanosleep, sigaction,
                                 * termios, tcgetpgrp, poll */

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include <librdkafka/rdkafka.h>

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

/* ---- failure modes (shared.c) ------------------------------------------ */

enum demo_mode {
        MODE_HEALTHY = 0,
        MODE_POISON,
        MODE_STORM,
        MODE_HOT,
        MODE_BURST,
        MODE_SLOW,
        MODE__CNT
};

struct demo_mode_info {
        const char *name;
        char key;
        const char *what;   /* what the demo does */
        const char *expect; /* the verdict it should lead to */
};

extern const struct demo_mode_info g_modes[MODE__CNT];

/* The mode's index, or -1 when no mode has that name or key. */
int mode_by_name(const char *name);
int mode_by_key(int key);

/* Switch the failure mode (keys, -m, the default run's bursts) and print
 * why. Any thread. */
void set_mode(int mode, const char *why);

/* ---- state every thread reads (shared.c) ------------------------------- */

/* Set by SIGINT/SIGTERM, key q and at the end of the run; read by every
 * thread. A lock-free atomic_int is safe to store from a signal handler. */
extern atomic_int g_stop;
extern atomic_int g_mode;                /* enum demo_mode, current */
extern _Atomic int64_t g_burst_until_ms; /* producer bursts until then */

/* Written by main before any thread starts, read-only afterwards. */
extern int64_t g_t0_ms;          /* monotonic start of the demo */
extern double g_duration_s;
extern int g_slow_mode;          /* -s */
extern int g_tour;               /* default run: guest and scripted bursts */
extern FILE *g_json;             /* -j FILE: snapshot JSON lines, or NULL */
extern const char *g_bootstraps; /* mock cluster's 127.0.0.1 list */

extern _Atomic(lagprobe_t *) g_main_probe; /* demo-main's, for -j */
extern const char g_main_tag[];            /* its log_opaque */

/* ---- time and output (shared.c) ---------------------------------------- */

int64_t mono_ms(void);
/* Seconds since the demo started, for every line we print. */
double t_now(void);
/* Sleeps @p ms, cut short once g_stop is set. */
void sleep_ms(int64_t ms);
/* Prints one line at once, so lines of different threads never mix. */
void say(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2))) /* checks every call's arguments */
#endif
    ;
/* -j FILE: one JSON line with @p probe's snapshot, tagged @p why. */
void json_line(lagprobe_t *probe, const char *why);

/* ---- threads and their parts ------------------------------------------ */

/* producer.c: the steady flow, bursts and the hot partition. */
void *producer_thread(void *arg);

/* consumer.c: a subscribed consumer with a probe attached (the whole
 * integration), and the guest consumer's thread. */
rd_kafka_t *new_consumer(const char *client_id, int store_manually,
                         lagprobe_t **probep);
/* Simulated work for one message: @p work_us of sleep. */
void process(const rd_kafka_message_t *m, int64_t work_us);
void *guest_thread(void *arg);
/* The guest's probe while it lives, for the reporter: read or change it
 * only under g_guest_lock, which is never held across a consumer call. */
extern pthread_mutex_t g_guest_lock;
extern lagprobe_t *g_guest_probe;

/* main_consumer.c: demo-main's batch loop with the failure modes. The
 * thread closes and destroys rk when the run ends; the probe stays main's
 * to destroy. */
struct main_consumer {
        rd_kafka_t *rk;
        lagprobe_t *probe;
};
void *main_consumer_thread(void *arg); /* arg: a struct main_consumer */

/* report.c: what the main thread prints from snapshots. A watch is what
 * it remembers per consumer to spot changes. */
struct watch {
        const char *who;
        int seen;
        int64_t assigns, revokes, lost, evictions;
        int diagnosis;        /* last verdict printed, -1 none */
        int32_t diag_partition;
};
int report_changes(struct watch *w, const lagprobe_snapshot_t *s);
void print_table(const char *who, const lagprobe_snapshot_t *s,
                 int show_mode);

/* keys.c: the terminal's keys switch modes. */
int keys_on(void);
void keys_off(void);
void print_keys(void);
/* Returns 1 when q was pressed (g_stop is then set). */
int read_keys(void);

#endif /* DEMO_H */

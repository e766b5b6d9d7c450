/* bench_warn - warning latency: time from crossing the warning threshold
 * (warn_ratio x max.poll.interval.ms after the last poll) to the
 * headroom_warn event reaching log_cb.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 *   bench_warn [-n TRIALS] [-i WATCHDOG_MS] [-l MAX_POLL_MS]
 *
 * A consumer handle (no broker needed: the probe binds in on_new) with
 * max.poll.interval.ms = MAX_POLL_MS (default 300) and the probe's watchdog
 * thread at WATCHDOG_MS (default 100, the default of the probe);
 * warn_ratio 0.5, event rate limit off. Each trial waits a random 0..WATCHDOG_MS
 * (so the stall starts at a random phase of the watchdog), then stalls
 * through the hooks: lagprobe_batch_begin(1) and no batch_end until the
 * event arrives. The threshold is crossed at begin + 0.5 x MAX_POLL_MS;
 * latency = time log_cb was entered - that instant. Then batch_end, and
 * the next trial starts after the headroom_recovered event. Output:
 * "RESULT trial latency_ms", then "SUMMARY" with min/median/p90/p99/max. */
#include "bench_util.h"

#include <pthread.h>
#include <stdatomic.h>

#include <librdkafka/rdkafka.h>

#include "../probe.h"

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;
static int64_t g_warn_ns, g_recovered_ns;
static int g_warns, g_recovers, g_criticals;

static void on_event(const lagprobe_event_t *e, void *opaque) {
        int64_t now = bu_mono_ns();
        (void)opaque;
        pthread_mutex_lock(&g_lock);
        if (e->type == LAGPROBE_EVENT_HEADROOM_WARN) {
                g_warn_ns = now;
                g_warns++;
        } else if (e->type == LAGPROBE_EVENT_HEADROOM_RECOVERED) {
                g_recovered_ns = now;
                g_recovers++;
        } else if (e->type == LAGPROBE_EVENT_HEADROOM_CRITICAL) {
                g_criticals++;
        }
        pthread_cond_broadcast(&g_cond);
        pthread_mutex_unlock(&g_lock);
}

/* Waits until *counter exceeds seen; 0 on time-out. */
static int wait_count(int *counter, int seen, int timeout_ms) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += timeout_ms / 1000;
        ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
        }
        pthread_mutex_lock(&g_lock);
        while (*counter <= seen)
                if (pthread_cond_timedwait(&g_cond, &g_lock, &ts))
                        break;
        int ok = *counter > seen;
        pthread_mutex_unlock(&g_lock);
        return ok;
}

static void set(rd_kafka_conf_t *conf, const char *k, const char *v) {
        char errstr[256];
        if (rd_kafka_conf_set(conf, k, v, errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK) {
                fprintf(stderr, "bench_warn: %s: %s\n", k, errstr);
                exit(1);
        }
}

int main(int argc, char **argv) {
        int trials = 60, wd_ms = 100, limit_ms = 300, opt;
        while ((opt = getopt(argc, argv, "n:i:l:")) != -1) {
                switch (opt) {
                case 'n': trials = atoi(optarg); break;
                case 'i': wd_ms = atoi(optarg); break;
                case 'l': limit_ms = atoi(optarg); break;
                default: return 1;
                }
        }
        if (trials < 1 || trials > 10000 || wd_ms < 1 || limit_ms < 10) {
                fprintf(stderr, "bench_warn: bad arguments\n");
                return 1;
        }
        const double warn_ratio = 0.5;
        char errstr[512], buf[32];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        set(conf, "group.id", "bench-warn");
        snprintf(buf, sizeof buf, "%d", limit_ms);
        set(conf, "max.poll.interval.ms", buf);
        set(conf, "session.timeout.ms", buf);
        snprintf(buf, sizeof buf, "%d", limit_ms / 4 > 1 ? limit_ms / 4 : 1);
        set(conf, "heartbeat.interval.ms", buf);
        set(conf, "log_level", "0");

        lagprobe_config_t pc;
        lagprobe_config_init(&pc);
        pc.watchdog_interval_ms = wd_ms;
        pc.warn_ratio = warn_ratio;
        pc.critical_ratio = 0.99;
        pc.event_min_interval_ms = 0;
        pc.log_cb = on_event;
        lagprobe_t *p = lagprobe_new(&pc, errstr, sizeof errstr);
        if (!p || lagprobe_attach(p, conf, errstr, sizeof errstr)) {
                fprintf(stderr, "bench_warn: probe: %s\n", errstr);
                return 1;
        }
        rd_kafka_t *rk =
            rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
        if (!rk) {
                fprintf(stderr, "bench_warn: rd_kafka_new: %s\n", errstr);
                return 1;
        }
        printf("# watchdog %d ms, max.poll.interval.ms %d, warn at %.0f ms, "
               "%d trials\n",
               wd_ms, limit_ms, warn_ratio * limit_ms, trials);

        /* A first poll return so that the probe is in exact mode. */
        lagprobe_batch_begin(p, 1);
        lagprobe_batch_end(p);
        bu_sleep_ms(2 * wd_ms);

        double lat[10000];
        srand(12345);
        int bad = 0;
        for (int t = 0; t < trials; t++) {
                bu_sleep_ms(rand() % wd_ms);
                pthread_mutex_lock(&g_lock);
                int seen_w = g_warns, seen_r = g_recovers;
                pthread_mutex_unlock(&g_lock);
                int64_t a = bu_mono_ns();
                lagprobe_batch_begin(p, 1);
                int64_t b = bu_mono_ns();
                int64_t cross = (a + b) / 2 + (int64_t)(warn_ratio * limit_ms * 1e6);
                if (!wait_count(&g_warns, seen_w, limit_ms + 10 * wd_ms)) {
                        fprintf(stderr, "bench_warn: no warning in trial %d\n", t);
                        bad = 1;
                        break;
                }
                lagprobe_batch_end(p);
                pthread_mutex_lock(&g_lock);
                lat[t] = (double)(g_warn_ns - cross) / 1e6;
                pthread_mutex_unlock(&g_lock);
                printf("RESULT %d %.3f\n", t, lat[t]);
                if (!wait_count(&g_recovers, seen_r, 10 * wd_ms)) {
                        fprintf(stderr, "bench_warn: no recovery in trial %d\n", t);
                        bad = 1;
                        break;
                }
        }
        rd_kafka_destroy(rk);
        lagprobe_destroy(p);
        if (bad)
                return 1;
        double mn = bu_min(lat, trials), mx = bu_max(lat, trials);
        double med = bu_median(lat, trials);
        double p90 = bu_quantile(lat, trials, 0.90);
        double p99 = bu_quantile(lat, trials, 0.99);
        int early = mn < 0;
        printf("SUMMARY trials=%d watchdog_ms=%d min_ms=%.2f median_ms=%.2f "
               "p90_ms=%.2f p99_ms=%.2f max_ms=%.2f max_over_interval=%.3f "
               "early=%d criticals=%d\n",
               trials, wd_ms, mn, med, p90, p99, mx, mx / wd_ms, early,
               g_criticals);
        return 0;
}

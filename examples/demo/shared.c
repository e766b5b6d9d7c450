/* lagprobe demo: the failure modes, the state every thread reads, time and
 * output.
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include "demo.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

_Static_assert(STORM_BATCH_MS > MAX_POLL_MS + 500,
               "a storm batch must outlast the limit plus one check");

const struct demo_mode_info g_modes[MODE__CNT] = {
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

atomic_int g_stop;
atomic_int g_mode;
_Atomic int64_t g_burst_until_ms;

int64_t g_t0_ms;
double g_duration_s = 24.0;
int g_slow_mode;
int g_tour;
FILE *g_json;
const char *g_bootstraps;

_Atomic(lagprobe_t *) g_main_probe;
const char g_main_tag[] = "demo-main";

int mode_by_name(const char *name) {
        for (int i = 0; i < MODE__CNT; i++)
                if (strcmp(name, g_modes[i].name) == 0)
                        return i;
        return -1;
}

int mode_by_key(int key) {
        for (int i = 0; i < MODE__CNT; i++)
                if (key == g_modes[i].key)
                        return i;
        return -1;
}

int64_t mono_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double t_now(void) {
        return (double)(mono_ms() - g_t0_ms) / 1000.0;
}

void sleep_ms(int64_t ms) {
        struct timespec ts = {(time_t)(ms / 1000),
                              (long)(ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR && !g_stop)
                ;
}

/* stdio locks the stream per call, so building the line first keeps lines
 * from different threads from interleaving. */
void say(const char *fmt, ...) {
        char line[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line, sizeof line, fmt, ap);
        va_end(ap);
        fputs(line, stdout);
}

void set_mode(int mode, const char *why) {
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

/* One JSON object per line, {"t":SECONDS,"why":"...","snapshot":
 * lagprobe_snapshot_json()}. Any thread (the snapshot is lock-free, and
 * stdio writes each line under the stream's lock). */
void json_line(lagprobe_t *probe, const char *why) {
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

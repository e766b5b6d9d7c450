/* lagprobe demo: what the main thread prints from the probes' snapshots.
 * A table per consumer every second, and a line as soon as a rebalance
 * counter or the verdict changes. It only reads snapshots: any thread may,
 * and nothing here blocks a consumer.
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include "demo.h"

#include <inttypes.h>

/* -1 means unknown in every snapshot figure: show it as "-". */
static const char *num(char *buf, size_t size, int64_t v) {
        if (v < 0)
                snprintf(buf, size, "-");
        else
                snprintf(buf, size, "%" PRId64, v);
        return buf;
}

/* Partition rows the snapshot holds: the assigned ones, up to the array's
 * size. */
static size_t rows_of(const lagprobe_snapshot_t *s) {
        return s->partition_cnt < s->partitions_size ? s->partition_cnt
                                                     : s->partitions_size;
}

/* Text appended to a fixed buffer, cut short when it is full. */
struct text {
        char buf[8192];
        size_t off;
};

#define APPEND(t, ...)                                                         \
        do {                                                                   \
                if ((t)->off < sizeof (t)->buf)                                \
                        (t)->off += (size_t)snprintf(                          \
                            (t)->buf + (t)->off, sizeof (t)->buf - (t)->off,   \
                            __VA_ARGS__);                                      \
        } while (0)

/* The consumer's line (assignment, rebalances, poll headroom), the batch in
 * progress, and the probe's verdict with its evidence and the flow behind
 * it. */
static void append_consumer(struct text *t, const char *who,
                            const lagprobe_snapshot_t *s, int show_mode) {
        char since[24], headroom[24];
        /* Headroom goes negative once the limit is passed: print it
         * signed, unlike the figures where negative means unknown. */
        snprintf(headroom, sizeof headroom, "%" PRId64, s->headroom_ms);
        APPEND(t,
               "%6.1fs %-10s assigned %" PRId64 " (%s)  rebalances %" PRId64
               " [assign %" PRId64 ", revoke %" PRId64 ", lost %" PRId64
               "]  poll: since %s ms, headroom %s of %" PRId64
               " ms%s%s  evictions %" PRId64 "  consumed %" PRId64 "\n",
               t_now(), who, s->assignment_size, s->protocol, s->rebalances,
               s->assigns, s->revokes, s->lost,
               num(since, sizeof since, s->since_last_poll_ms),
               s->since_last_poll_ms < 0 ? "-" : headroom,
               s->max_poll_interval_ms,
               s->headroom_level == 2   ? " CRITICAL"
               : s->headroom_level == 1 ? " WARN"
                                        : "",
               s->exact ? "" : " (inferred)", s->evictions, s->consumed);
        if (s->in_batch)
                APPEND(t,
                       "        %-10s in batch: %" PRId64 "/%" PRId64
                       " done, %" PRId64 " ms so far\n",
                       "", s->batch_done, s->batch_size, s->batch_elapsed_ms);
        APPEND(t,
               "        %-10s %s%s%sverdict %s: %s  [in %.1f msg/s, out %.1f "
               "msg/s, lag %" PRId64 "]\n",
               "", show_mode ? "mode " : "",
               show_mode ? g_modes[atomic_load(&g_mode)].name : "",
               show_mode ? "  " : "", s->diagnosis_name, s->diagnosis_detail,
               s->ingress_rate, s->egress_rate, s->total_lag);
}

/* One row of the partition table. */
static void append_partition(struct text *t, const lagprobe_partition_t *p) {
        char a[24], b[24], c[24], d[24], e[24];
        char behind[24], note[48] = "", status[200];
        if (p->seconds_behind < 0)
                snprintf(behind, sizeof behind, "-");
        else
                snprintf(behind, sizeof behind, "%.2f", p->seconds_behind);
        /* The high watermark comes from statistics, which librdkafka only
         * delivers inside a poll: while the app is stuck in a batch the
         * figure freezes. Say so. */
        if (p->hwm_age_ms > HWM_OLD_MS)
                snprintf(note, sizeof note, "  (hwm %.1f s old)",
                         (double)p->hwm_age_ms / 1000.0);
        /* The status, and for anything but ok the numbers behind it. */
        if (p->status == LAGPROBE_PSTATUS_OK || !p->status_reason[0])
                snprintf(status, sizeof status, "%s", p->status_name);
        else
                snprintf(status, sizeof status, "%s (%s)", p->status_name,
                         p->status_reason);
        APPEND(t,
               "        %-16s %4" PRId32 " %8s %9s %8s %6s %7s %8s "
               "%8" PRId64 "  %s%s\n",
               p->topic, p->partition, num(a, sizeof a, p->high_watermark),
               num(b, sizeof b, p->committed_offset),
               num(c, sizeof c, p->position), num(d, sizeof d, p->lag),
               num(e, sizeof e, p->position_lag), behind, p->consumed, status,
               note);
}

/* The once-a-second table of one consumer, printed at once. */
void print_table(const char *who, const lagprobe_snapshot_t *s,
                 int show_mode) {
        struct text t;
        t.off = 0;
        append_consumer(&t, who, s, show_mode);
        size_t rows = rows_of(s);
        if (rows > 0)
                APPEND(&t,
                       "        %-16s %4s %8s %9s %8s %6s %7s %8s %8s  %s\n",
                       "topic", "part", "hwm", "committed", "position", "lag",
                       "pos_lag", "behind_s", "consumed", "status");
        for (size_t i = 0; i < rows; i++)
                append_partition(&t, &s->partitions[i]);
        fputs(t.buf, stdout);
}

static void say_assigned(const struct watch *w, const lagprobe_snapshot_t *s) {
        char list[256];
        size_t off = 0;
        size_t rows = rows_of(s);
        list[0] = '\0';
        for (size_t i = 0; i < rows && off < sizeof list; i++)
                off += (size_t)snprintf(list + off, sizeof list - off,
                                        "%s%" PRId32, i ? "," : "",
                                        s->partitions[i].partition);
        char gap[24];
        say("%6.1fs [rebalance] %s: assigned %" PRId64
            " partition(s) [%s] (%s, assigns %" PRId64 ", rebalances %" PRId64
            ", unassigned for %s ms)\n",
            t_now(), w->who, s->assignment_size, list, s->protocol,
            s->assigns, s->rebalances,
            num(gap, sizeof gap, s->last_unassigned_ms));
}

/* Print a line for every change in the rebalance counters and the verdict
 * since the last sample (every 100 ms): the probe counts and judges, we
 * just diff. Returns 1 when the verdict changed. */
int report_changes(struct watch *w, const lagprobe_snapshot_t *s) {
        int verdict_changed = 0;
        if (!w->seen) {
                w->seen = 1;
                w->assigns = w->revokes = w->lost = w->evictions = 0;
                w->diagnosis = -1;
                w->diag_partition = -1;
        }
        if (s->revokes > w->revokes)
                say("%6.1fs [rebalance] %s: partitions revoked%s "
                    "(revokes %" PRId64 ", rebalances %" PRId64 ")\n",
                    t_now(), w->who, s->lost > w->lost ? " as LOST" : "",
                    s->revokes, s->rebalances);
        if (s->assigns > w->assigns)
                say_assigned(w, s);
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

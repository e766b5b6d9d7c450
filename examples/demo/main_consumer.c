/* lagprobe demo: demo-main's thread. It processes messages in batches
 * wrapped in the probe's batch hooks (4 ms of work per message), stores
 * each offset only once the message is processed (at-least-once), and
 * plays the failure modes that live in the consumer: poison, storm, slow,
 * and the -s story.
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include "demo.h"

#include <inttypes.h>
#include <string.h>

/* Slow mode (-s): milliseconds of work per message, one entry per batch.
 * The batch is SLOW_BATCH messages, so 200 ms/msg is a 2 s batch (headroom
 * fine), 450 ms/msg is 4.5 s (past the 70 % warning at 4.2 s), 700 ms/msg
 * is 7 s (past max.poll.interval.ms=6000: eviction). The last entry repeats
 * until librdkafka evicts us. */
static const int slow_ms_per_msg[] = {200, 450, 700};
#define SLOW_STEPS ((int)(sizeof slow_ms_per_msg / sizeof slow_ms_per_msg[0]))

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

/* What the thread remembers from one batch to the next. */
struct main_state {
        rd_kafka_t *rk;
        lagprobe_t *probe;
        int slow_step; /* -s: -1 normal speed, else index in slow_ms_per_msg */
        int slow_done; /* -s story over (eviction or a mode switch) */
        struct poison ps;
};

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

/* Before each batch: start the -s story when its time has come, end it on
 * a mode switch, and "deploy the fix" when poison mode is left. */
static void follow_mode(struct main_state *st, int mode) {
        if (g_slow_mode && !st->slow_done && st->slow_step < 0 &&
            mode == MODE_HEALTHY && t_now() >= SLOW_START_S) {
                st->slow_step = 0;
                say("%6.1fs [app] demo-main: slow mode on: batches of "
                    "%d, processing gets slower every batch\n",
                    t_now(), SLOW_BATCH);
        }
        if (st->slow_step >= 0 && mode != MODE_HEALTHY) {
                say("%6.1fs [app] demo-main: slow mode (-s) "
                    "cancelled by the mode switch\n",
                    t_now());
                st->slow_step = -1;
                st->slow_done = 1;
        }
        struct poison *ps = &st->ps;
        if (ps->active && mode != MODE_POISON) {
                say("%6.1fs [app] demo-main: fix deployed: %s [%" PRId32
                    "] offset %" PRId64 " now processes (after %" PRId64
                    " failures)\n",
                    t_now(), ps->topic, ps->partition, ps->offset,
                    ps->failures);
                ps->active = 0;
        }
}

/* A poll returned an error instead of a message. An eviction also ends the
 * -s story: back to normal speed. */
static void on_poll_error(struct main_state *st, const rd_kafka_message_t *m) {
        if (m->err != RD_KAFKA_RESP_ERR__MAX_POLL_EXCEEDED) {
                say("%6.1fs [app] demo-main: %s\n", t_now(),
                    rd_kafka_message_errstr(m));
                return;
        }
        int story = st->slow_step >= 0;
        say("%6.1fs [app] demo-main: poll returned %s: we were evicted; %s\n",
            t_now(), rd_kafka_err2name(m->err),
            story ? "back to normal speed, rejoining" : "rejoining");
        if (story) {
                st->slow_step = -1;
                st->slow_done = 1;
        }
}

/* Poison mode: the first message consumed becomes the poison record. */
static void pick_poison(struct poison *ps, const rd_kafka_message_t *m) {
        ps->active = 1;
        snprintf(ps->topic, sizeof ps->topic, "%s",
                 rd_kafka_topic_name(m->rkt));
        ps->partition = m->partition;
        ps->offset = m->offset;
        ps->failures = 0;
        ps->next_say_ms = 0;
        say("%6.1fs [app] demo-main: poison record at %s [%" PRId32
            "] offset %" PRId64 ": the handler fails on it, the app seeks "
            "back and retries\n",
            t_now(), ps->topic, ps->partition, ps->offset);
}

/* Gather up to @p want messages into @p batch: wait up to 100 ms for the
 * first, then take what is already prefetched. Small batches (@p small)
 * wait up to a second more so they are full and comparable. Returns how
 * many were gathered. */
static size_t gather_batch(struct main_state *st, int mode,
                           rd_kafka_message_t **batch, size_t want,
                           int small) {
        size_t n = 0;
        int64_t fill_until = 0;
        while (n < want && !g_stop) {
                int timeout = 100;
                if (n > 0) {
                        int64_t left = fill_until - mono_ms();
                        timeout = left > 0 ? (int)left : 0;
                }
                rd_kafka_message_t *m = rd_kafka_consumer_poll(st->rk, timeout);
                /* Lets the probe count an eviction even if librdkafka's log
                 * is filtered. */
                lagprobe_poll_result(st->probe, m);
                if (!m)
                        break;
                if (m->err) {
                        on_poll_error(st, m);
                        rd_kafka_message_destroy(m);
                        break;
                }
                if (mode == MODE_POISON && !st->ps.active)
                        pick_poison(&st->ps, m);
                if (n == 0)
                        fill_until = mono_ms() + (small ? 1000 : 0);
                batch[n++] = m;
                /* Nothing of that partition may follow the failing record
                 * in this batch: its position would run ahead and then jump
                 * back at the seek. */
                if (is_poison(&st->ps, m))
                        break;
        }
        return n;
}

/* At-least-once: the next offset of @p m goes into @p done, stored once
 * the whole batch is processed. */
static void mark_done(rd_kafka_topic_partition_list_t *done,
                      const rd_kafka_message_t *m) {
        const char *tn = rd_kafka_topic_name(m->rkt);
        rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_find(done, tn, m->partition);
        if (!tp)
                tp = rd_kafka_topic_partition_list_add(done, tn, m->partition);
        tp->offset = m->offset + 1;
}

/* Process and free the @p n messages of @p batch, gathered in @p mode, and
 * store the offsets of those that succeeded. The hooks make the probe's
 * headroom exact: the clock runs from the poll return, and per-message
 * progress gives it the per-message time (consumer_slow) and lets it
 * predict a batch that will overrun. Returns 1 when the poison record
 * failed. */
static int process_batch(struct main_state *st, int mode,
                         rd_kafka_message_t **batch, size_t n) {
        rd_kafka_topic_partition_list_t *done =
            rd_kafka_topic_partition_list_new(PARTITIONS);
        int failed = 0;
        lagprobe_batch_begin(st->probe, n);
        for (size_t i = 0; i < n; i++) {
                rd_kafka_message_t *m = batch[i];
                if (!g_stop)
                        process(m, work_us_for(atomic_load(&g_mode), mode, n,
                                               st->slow_step));
                if (is_poison(&st->ps, m)) {
                        failed = 1; /* not stored: never committed */
                        st->ps.failures++;
                } else {
                        mark_done(done, m);
                }
                rd_kafka_message_destroy(m);
                lagprobe_batch_progress(st->probe, i + 1);
        }
        lagprobe_batch_end(st->probe);
        /* Fails (harmlessly) for partitions lost meanwhile. */
        if (done->cnt > 0)
                rd_kafka_offsets_store(st->rk, done);
        rd_kafka_topic_partition_list_destroy(done);
        return failed;
}

/* The handler failed on the poison record: say so (every 3 s at most) and
 * seek back to retry it. */
static void retry_poison(struct main_state *st) {
        struct poison *ps = &st->ps;
        if (mono_ms() >= ps->next_say_ms) {
                say("%6.1fs [app] demo-main: handler failed on %s [%" PRId32
                    "] offset %" PRId64 " (%" PRId64 " failures so far); "
                    "seeking back to retry\n",
                    t_now(), ps->topic, ps->partition, ps->offset,
                    ps->failures);
                ps->next_say_ms = mono_ms() + 3000;
        }
        seek_back(st->rk, ps);
        sleep_ms(20); /* the app's retry backoff */
}

void *main_consumer_thread(void *arg) {
        struct main_consumer *mc = arg;
        struct main_state st = {.rk = mc->rk, .probe = mc->probe,
                                .slow_step = -1};
        rd_kafka_message_t *batch[BATCH_MAX];

        while (!g_stop) {
                int mode = atomic_load(&g_mode);
                follow_mode(&st, mode);
                int small = st.slow_step >= 0 || mode == MODE_STORM;
                size_t n = gather_batch(&st, mode, batch,
                                        small ? SLOW_BATCH : BATCH_MAX, small);
                if (n == 0)
                        continue;
                /* An eviction while gathering may have ended -s. */
                if (st.slow_step >= 0 || mode == MODE_STORM) {
                        int64_t wu = work_us_for(mode, mode, n, st.slow_step);
                        say("%6.1fs [app] demo-main: batch of %zu, %d ms "
                            "per message (%.1f s; max.poll.interval.ms=%d)\n",
                            t_now(), n, (int)(wu / 1000),
                            (double)wu * (double)n / 1e6, MAX_POLL_MS);
                }
                if (process_batch(&st, mode, batch, n))
                        retry_poison(&st);
                if (st.slow_step >= 0 && st.slow_step + 1 < SLOW_STEPS)
                        st.slow_step++;
        }

        /* Leave the group cleanly (commits, revokes), then free the client.
         * The probe outlives the client: the reporter thread may still be
         * reading it, and main destroys it after joining us. */
        rd_kafka_consumer_close(mc->rk);
        rd_kafka_destroy(mc->rk);
        return NULL;
}

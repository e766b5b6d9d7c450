/* Readers on other threads while the consumer consumes 200k messages with
 * a rebalance in the middle (a second member joins, then leaves). Every
 * message's timestamp encodes its partition and offset, so a reader can
 * tell a torn (position, last_message_ts) pair from a consistent one.
 * Meant to be run under TSan as well.
 * SPDX-License-Identifier: BSD-2-Clause */
#define _POSIX_C_SOURCE 200809L

#include "harness.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPARTS 4
/* Messages per partition: 50,000 (200k in all), and a fifth of that
 * under valgrind, where memcheck runs every thread on one core at a
 * fraction of native speed (the test there looks for memory errors; the
 * races are TSan's and the plain build's). Produced in rounds of a
 * twentieth per partition. Set by the test before any thread starts. */
static int64_t per_part, chunk;
#define NREADERS 3     /* two snapshot readers, one JSON reader */

static int64_t ts_base;
static char topic[64];

/* Timestamp of the message at (partition, offset). */
static int64_t ts_of(int32_t partition, int64_t offset) {
        return ts_base + (int64_t)partition * 100000000 + offset;
}

/* ---- producer thread ----------------------------------------------- */

typedef struct prod_s {
        int64_t next[NPARTS]; /* next offset per partition */
        atomic_int go_on;     /* the rest may be produced */
} prod_t;

/* Produced before the second member joins; the rest once the partitions
 * are split, so that both members have something to consume. */
#define PHASE1 (per_part * 3 / 5)

static int64_t prod_ts(int32_t partition, int64_t seq, void *opaque) {
        prod_t *p = opaque;
        return ts_of(partition, p->next[partition] + seq);
}

static void *producer_main(void *arg) {
        prod_t *p = arg;
        /* Spread over a few seconds so consumption, the rebalance and the
         * readers overlap with new data arriving. */
        while (p->next[0] < per_part) {
                if (p->next[0] == PHASE1) {
                        while (!atomic_load(&p->go_on))
                                h_sleep_ms(5);
                }
                for (int32_t i = 0; i < NPARTS; i++) {
                        h_produce_fn(h_cl, topic, i, chunk, NULL, prod_ts, p);
                        p->next[i] += chunk;
                }
                h_sleep_ms(100);
        }
        return NULL;
}

/* ---- readers ---------------------------------------------------------- */

typedef struct reader_s {
        lagprobe_t *probe;
        int json;               /* 1: lagprobe_snapshot_json + parse */
        atomic_int *stop;
        int64_t iterations, partitions_seen, pairs_checked;
        atomic_int saw_pair; /* pairs_checked > 0, for other threads */
        int64_t violations;
        char first[512];        /* first violation, for the report */
        /* Per partition: last position seen and the rebalance count it
         * was seen under. */
        int64_t last_pos[NPARTS];
        int64_t last_reb[NPARTS];
        int64_t last_consumed;
} reader_t;

static void violation(reader_t *r, const char *fmt, ...) {
        if (r->violations++ == 0) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(r->first, sizeof r->first, fmt, ap);
                va_end(ap);
        }
}

/* Invariants of one partition's figures as one reader saw them. */
static void check_part(reader_t *r, const char *t, int32_t part, int64_t pos,
                       int64_t last_ts, int64_t hwm, int64_t committed,
                       int64_t lag, int64_t plag, int64_t consumed,
                       double behind, int64_t rebalances) {
        r->partitions_seen++;
        if (strcmp(t, topic) || part < 0 || part >= NPARTS) {
                violation(r, "unknown partition %s [%d]", t, (int)part);
                return;
        }
        if (pos > 0 && last_ts > 0) {
                if (r->pairs_checked++ == 0)
                        atomic_store(&r->saw_pair, 1);
                if (last_ts != ts_of(part, pos - 1))
                        violation(r,
                                  "[%d] torn pair: position %" PRId64
                                  " but last_message_ts is offset %" PRId64,
                                  (int)part, pos,
                                  last_ts - ts_of(part, 0));
        }
        if (pos < -1 || pos > per_part)
                violation(r, "[%d] position %" PRId64, (int)part, pos);
        if (hwm < -1 || hwm > per_part || committed < -1 ||
            committed > per_part)
                violation(r, "[%d] hwm %" PRId64 " committed %" PRId64,
                          (int)part, hwm, committed);
        if (lag < -1 || plag < -1)
                violation(r, "[%d] negative lag %" PRId64 "/%" PRId64,
                          (int)part, lag, plag);
        if (hwm >= 0 && committed >= 0 &&
            lag != (hwm > committed ? hwm - committed : 0))
                violation(r, "[%d] lag %" PRId64 " != %" PRId64 " - %" PRId64,
                          (int)part, lag, hwm, committed);
        if ((hwm < 0 || committed < 0) && lag != -1)
                violation(r, "[%d] lag %" PRId64 " without both figures",
                          (int)part, lag);
        if (consumed < 0 || consumed > per_part)
                violation(r, "[%d] consumed %" PRId64, (int)part, consumed);
        if (!(behind == -1 || behind >= 0))
                violation(r, "[%d] seconds_behind %f", (int)part, behind);
        /* Position never goes back while no rebalance happened.
         * rebalances is -1 when one may have happened during the read. */
        if (rebalances >= 0 && rebalances == r->last_reb[part] && pos >= 0 &&
            r->last_pos[part] >= 0 && pos < r->last_pos[part])
                violation(r, "[%d] position went back %" PRId64 " -> %" PRId64,
                          (int)part, r->last_pos[part], pos);
        if (rebalances != r->last_reb[part] || pos >= 0) {
                r->last_reb[part] = rebalances;
                r->last_pos[part] = pos;
        }
}

/* The rebalance count after a read: a read is attributed to one
 * rebalance epoch only if the count did not move while it was taken
 * (the probe reads its global figures before the partitions). */
static int64_t epoch_of(reader_t *r, int64_t before) {
        lagprobe_snapshot_t s;
        lagprobe_snapshot_init(&s, NULL, 0);
        if (lagprobe_snapshot(r->probe, &s) != 0)
                return -1;
        return s.rebalances == before ? before : -1;
}

static void read_snapshot(reader_t *r) {
        lagprobe_partition_t parts[NPARTS + 4];
        lagprobe_snapshot_t s;
        lagprobe_snapshot_init(&s, parts, NPARTS + 4);
        if (lagprobe_snapshot(r->probe, &s) != 0) {
                violation(r, "lagprobe_snapshot failed");
                return;
        }
        if (s.partition_cnt > NPARTS)
                violation(r, "%zu partitions", s.partition_cnt);
        /* Duplicates after rebalances are normal; going back is not. */
        if (s.consumed < r->last_consumed)
                violation(r, "consumed went back %" PRId64 " -> %" PRId64,
                          r->last_consumed, s.consumed);
        r->last_consumed = s.consumed;
        int64_t epoch = epoch_of(r, s.rebalances);
        if (s.rebalances != s.assigns + s.revokes)
                violation(r, "rebalances %" PRId64 " != %" PRId64 " + %" PRId64,
                          s.rebalances, s.assigns, s.revokes);
        size_t n = s.partition_cnt < NPARTS + 4 ? s.partition_cnt : NPARTS + 4;
        for (size_t i = 0; i < n; i++) {
                const lagprobe_partition_t *x = &parts[i];
                if (i > 0 && x->partition <= parts[i - 1].partition)
                        violation(r, "not sorted");
                check_part(r, x->topic, x->partition, x->position,
                           x->last_message_ts_ms, x->high_watermark,
                           x->committed_offset, x->lag, x->position_lag,
                           x->consumed, x->seconds_behind, epoch);
        }
}

static void read_json(reader_t *r) {
        char buf[16384];
        size_t n = lagprobe_snapshot_json(r->probe, buf, sizeof buf);
        if (n == 0 || n >= sizeof buf) {
                violation(r, "JSON length %zu", n);
                return;
        }
        h_json_t *j = h_json_parse(buf, n);
        if (!j) {
                violation(r, "invalid JSON: %.200s", buf);
                return;
        }
        const h_json_t *reb = h_json_get(j, "rebalances");
        int64_t rebalances = h_json_int(reb, "count");
        const h_json_t *parts = h_json_get(j, "partitions");
        int64_t epoch = epoch_of(r, rebalances);
        if (!parts || parts->type != H_JARR || rebalances < 0) {
                violation(r, "JSON without partitions or rebalances");
        } else {
                for (const h_json_t *p = parts->child; p; p = p->next) {
                        const h_json_t *t = h_json_get(p, "topic");
                        const h_json_t *sb = h_json_get(p, "seconds_behind");
                        double behind = !sb || sb->type == H_JNULL ? -1
                                        : sb->type == H_JNUM      ? sb->num
                                                                  : -2;
                        check_part(r, t && t->type == H_JSTR ? t->str : "?",
                                   (int32_t)h_json_int(p, "partition"),
                                   h_json_int(p, "position"),
                                   h_json_int(p, "last_message_ts_ms"),
                                   h_json_int(p, "high_watermark"),
                                   h_json_int(p, "committed_offset"),
                                   h_json_int(p, "lag"),
                                   h_json_int(p, "position_lag"),
                                   h_json_int(p, "consumed"), behind,
                                   epoch);
                }
        }
        h_json_free(j);
}

static void *reader_main(void *arg) {
        reader_t *r = arg;
        for (int i = 0; i < NPARTS; i++) {
                r->last_pos[i] = -1;
                r->last_reb[i] = -1;
        }
        while (!atomic_load(r->stop)) {
                if (r->json)
                        read_json(r);
                else
                        read_snapshot(r);
                /* Leave some CPU to the consumer, librdkafka and the mock
                 * broker on a 2-core machine: starved heartbeats make the
                 * mock rebalance again and again. Under valgrind every
                 * thread shares one core: a pause every few reads there
                 * (sessions timed out over and over beside make bench). */
                if (++r->iterations % (h_slow() > 1 ? 4 : 32) == 0)
                        h_sleep_ms(1);
        }
        return NULL;
}

/* ---- second member on its own thread --------------------------------- */

typedef struct member_s {
        rd_kafka_t *rk;
        h_track_t t;
        atomic_int leave;
        atomic_int_fast64_t total; /* t.total, readable by the main thread */
        atomic_int assigned;       /* partitions it holds */
} member_t;

static void *member_main(void *arg) {
        member_t *m = arg;
        h_subscribe(m->rk, topic);
        int64_t next_check = 0;
        while (!atomic_load(&m->leave)) {
                h_poll_once(m->rk, 20, &m->t);
                atomic_store(&m->total, m->t.total);
                if (h_now_ms() >= next_check) {
                        atomic_store(&m->assigned, h_assignment_cnt(m->rk));
                        next_check = h_now_ms() + 20;
                }
        }
        h_consumer_close(m->rk);
        return NULL;
}

/* ---- main thread predicates ---------------------------------------- */

typedef struct mainctx_s {
        rd_kafka_t *rk;
        lagprobe_t *p;
        h_track_t *t;
        member_t *m;
        int64_t total_min;
        int want_parts;
} mainctx_t;

static int c1_total_at_least(void *arg) {
        mainctx_t *c = arg;
        return c->t->total >= c->total_min;
}

static int c1_holds(void *arg) {
        mainctx_t *c = arg;
        return h_assignment_cnt(c->rk) == c->want_parts;
}

static int split(void *arg) {
        mainctx_t *c = arg;
        return h_assignment_cnt(c->rk) == NPARTS / 2 &&
               atomic_load(&c->m->assigned) == NPARTS / 2;
}

static int member_busy(void *arg) {
        mainctx_t *c = arg;
        return atomic_load(&c->m->total) >= c->total_min;
}

static int saw_pair(void *arg) {
        reader_t *r = arg;
        return atomic_load(&r->saw_pair);
}

static int all_done(void *arg) {
        mainctx_t *c = arg;
        h_snap_t hs;
        h_snap(c->p, &hs);
        if (hs.s.partition_cnt != NPARTS)
                return 0;
        for (int i = 0; i < NPARTS; i++) {
                const lagprobe_partition_t *x = h_snap_find(&hs, topic, i);
                if (!x || x->position != per_part ||
                    x->high_watermark != per_part ||
                    x->committed_offset != per_part)
                        return 0;
        }
        return 1;
}

static void test_readers_during_consume_and_rebalance(void **state) {
        (void)state;
        char group[64];
        h_unique("conc", topic, sizeof topic);
        h_unique("gconc", group, sizeof group);
        h_topic_create(h_cl, topic, NPARTS);
        ts_base = h_wall_ms() - 2 * 86400000LL;
        per_part = h_slow() > 1 ? 10000 : 50000;
        chunk = per_part / 20;
        int64_t t_start = h_now_ms();

        rd_kafka_conf_t *conf = h_conf(h_cl, group, "range", 1);
        lagprobe_t *p1 = h_probe_attach(conf);
        rd_kafka_t *c1 = h_consumer_new(conf, topic);
        h_track_t t1;
        h_track_init(&t1);

        member_t *m = calloc(1, sizeof *m);
        assert_non_null(m);
        conf = h_conf(h_cl, group, "range", 1);
        lagprobe_t *p2 = h_probe_attach(conf);
        m->rk = h_consumer_new(conf, NULL);
        h_track_init(&m->t);

        /* Readers first: they also see the empty and joining states. */
        atomic_int stop = 0;
        reader_t readers[NREADERS];
        pthread_t rth[NREADERS];
        memset(readers, 0, sizeof readers);
        for (int i = 0; i < NREADERS; i++) {
                readers[i].probe = p1;
                readers[i].json = i == NREADERS - 1;
                readers[i].stop = &stop;
                assert_int_equal(
                    pthread_create(&rth[i], NULL, reader_main, &readers[i]), 0);
        }
        /* One more snapshot reader on the second member's probe. */
        reader_t r2 = {.probe = p2, .stop = &stop};
        pthread_t r2th;
        assert_int_equal(pthread_create(&r2th, NULL, reader_main, &r2), 0);

        /* From here to the readers' join nothing asserts: a failed
         * assertion would leave the threads reading this frame's state
         * after cmocka has unwound it. Each stage runs only when the one
         * before it got where it should; the verdicts come after. */
        mainctx_t c = {c1, p1, &t1, m, 0, NPARTS};
        int joined = h_poll_until(c1, &t1, c1_holds, &c, H_JOIN_TIMEOUT_MS);

        prod_t prod;
        memset(&prod, 0, sizeof prod);
        pthread_t pth, mth;
        int prod_started = 0, member_started = 0;
        int quarter = 0, was_split = 0, busy = 0, r2_saw = 0, back = 0;
        int done = 0;
        int64_t c1_at_split = 0;
        if (joined)
                prod_started =
                    !pthread_create(&pth, NULL, producer_main, &prod);

        /* A quarter consumed: the second member joins. */
        c.total_min = NPARTS * per_part / 4;
        if (prod_started)
                quarter = h_poll_until(c1, &t1, c1_total_at_least, &c,
                                       h_slow_ms(20000));
        if (quarter)
                member_started = !pthread_create(&mth, NULL, member_main, m);
        if (member_started) {
                was_split = h_poll_until(c1, &t1, split, &c, H_JOIN_TIMEOUT_MS);
                c1_at_split = t1.total;
        }
        /* The rest of the data arrives while the partitions are split. */
        atomic_store(&prod.go_on, 1);
        c.total_min = 1000;
        if (was_split)
                busy = h_poll_until(c1, &t1, member_busy, &c, h_slow_ms(20000));
        /* The second member leaves only once its reader has seen it at
         * work (on a loaded machine its share can be gone in a moment). */
        if (busy)
                r2_saw = h_poll_until(c1, &t1, saw_pair, &r2, h_slow_ms(20000));

        /* It leaves again: the first member gets everything back. */
        atomic_store(&m->leave, 1);
        if (member_started)
                pthread_join(mth, NULL);
        else
                h_consumer_close(m->rk);
        c.want_parts = NPARTS;
        if (member_started)
                back = h_poll_until(c1, &t1, c1_holds, &c, H_JOIN_TIMEOUT_MS);
        if (prod_started)
                pthread_join(pth, NULL);
        if (back)
                done = h_poll_until(c1, &t1, all_done, &c, h_slow_ms(20000));

        atomic_store(&stop, 1);
        for (int i = 0; i < NREADERS; i++)
                pthread_join(rth[i], NULL);
        pthread_join(r2th, NULL);

        h_snap_t hs;
        h_snap(p1, &hs);
        print_message("  %" PRId64 " ms; c1 consumed %" PRId64
                      " (%" PRId64 " at the split), c2 %" PRId64
                      "; c1 assigns %" PRId64 " revokes %" PRId64 "\n",
                      h_now_ms() - t_start, t1.total, c1_at_split, m->t.total,
                      hs.s.assigns, hs.s.revokes);
        for (int i = 0; i < NREADERS; i++)
                print_message("  reader %d (%s): %" PRId64 " reads, %" PRId64
                              " partition figures, %" PRId64
                              " pairs checked, %" PRId64 " violations %s\n",
                              i, readers[i].json ? "json" : "snapshot",
                              readers[i].iterations,
                              readers[i].partitions_seen,
                              readers[i].pairs_checked, readers[i].violations,
                              readers[i].first);
        print_message("  reader on member 2: %" PRId64 " reads, %" PRId64
                      " violations %s\n",
                      r2.iterations, r2.violations, r2.first);

        print_message("  stages: joined %d, producer %d, a quarter consumed %d, "
                      "member %d, split %d, member busy %d, its reader saw "
                      "it %d, back %d, done %d\n",
                      joined, prod_started, quarter, member_started, was_split,
                      busy, r2_saw, back, done);
        assert_true(joined);
        assert_true(prod_started);
        assert_true(quarter);
        assert_true(member_started);
        assert_true(was_split);
        assert_true(busy);
        assert_true(r2_saw);
        assert_true(back);
        assert_true(done);
        for (int i = 0; i < NREADERS; i++) {
                assert_true(readers[i].iterations > 100);
                assert_true(readers[i].pairs_checked > 0);
                assert_int_equal(readers[i].violations, 0);
        }
        assert_true(r2.pairs_checked > 0);
        assert_int_equal(r2.violations, 0);

        /* Final figures are exact. */
        assert_true(t1.total + m->t.total >= NPARTS * per_part);
        assert_true(m->t.total > 0);
        h_snap(p1, &hs);
        assert_int_equal(hs.s.consumed, t1.total);
        assert_int_equal(hs.s.partition_cnt, NPARTS);
        assert_string_equal(hs.s.protocol, "EAGER");
        /* At least join, split and take-back; a slow member can cost the
         * mock another round. Eager: every revoke is followed by an
         * assign and the member ends assigned. */
        assert_true(hs.s.assigns >= 3);
        assert_true(hs.s.revokes >= 2);
        assert_int_equal(hs.s.assigns, hs.s.revokes + 1);
        h_desc_t d[NPARTS];
        h_describe(h_cl, group, topic, NPARTS, d);
        for (int i = 0; i < NPARTS; i++) {
                const lagprobe_partition_t *x = h_snap_find(&hs, topic, i);
                assert_non_null(x);
                assert_int_equal(d[i].log_end, per_part);
                assert_int_equal(d[i].committed, per_part);
                assert_int_equal(x->high_watermark, d[i].log_end);
                assert_int_equal(x->committed_offset, d[i].committed);
                assert_int_equal(x->lag, d[i].lag);
                assert_int_equal(x->lag, 0);
                assert_int_equal(x->position, per_part);
                assert_int_equal(x->position_lag, 0);
                assert_int_equal(x->last_message_ts_ms, ts_of(i, per_part - 1));
        }
        h_snap_t hs2;
        h_snap(p2, &hs2);
        assert_int_equal(hs2.s.consumed, m->t.total);
        assert_int_equal(hs2.s.bound, 0);
        assert_int_equal(hs2.s.partition_cnt, 0);

        h_consumer_close(c1);
        lagprobe_destroy(p1);
        lagprobe_destroy(p2);
        free(m);
}

int main(void) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_readers_during_consume_and_rebalance),
        };
        return cmocka_run_group_tests(tests, h_group_setup, h_group_teardown);
}

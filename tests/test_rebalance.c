/* Rebalances: the probe's default handling when the app has no
 * rebalance_cb (eager and cooperative), counts, protocol, which partitions
 * each member reports, and the app's own rebalance_cb.
 * SPDX-License-Identifier: BSD-2-Clause */
#define _POSIX_C_SOURCE 200809L

#include "harness.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPARTS 4
#define PER_PART 3

static void make_topic(char *topic, size_t size, const char *name) {
        h_unique(name, topic, size);
        h_topic_create(h_cl, topic, NPARTS);
        for (int i = 0; i < NPARTS; i++)
                h_produce(h_cl, topic, i, PER_PART, NULL, 0);
}

/* Bit i set: partition i assigned, as rd_kafka_assignment() says. Call
 * from the polling thread. */
static unsigned app_mask(rd_kafka_t *rk) {
        rd_kafka_topic_partition_list_t *l = NULL;
        unsigned m = 0;
        if (rd_kafka_assignment(rk, &l) || !l)
                return 0xffffffffu;
        for (int i = 0; i < l->cnt; i++)
                m |= 1u << l->elems[i].partition;
        rd_kafka_topic_partition_list_destroy(l);
        return m;
}

/* The same from the probe's snapshot; also checks the topic. */
static unsigned probe_mask(const h_snap_t *hs, const char *topic) {
        unsigned m = 0;
        for (size_t i = 0; i < hs->s.partition_cnt; i++) {
                if (strcmp(hs->parts[i].topic, topic))
                        return 0xffffffffu;
                m |= 1u << hs->parts[i].partition;
        }
        return m;
}

static const int per_part[NPARTS] = {PER_PART, PER_PART, PER_PART, PER_PART};

/* The harness's fixture on the shared cluster, on a topic like
 * make_topic()'s (NPARTS partitions of PER_PART messages); no auto
 * commit. */
static void fx_init(h_fixture_t *f, const char *topic_prefix,
                    const char *group_prefix, const char *strategy) {
        h_fixture_init_on(f, h_cl, topic_prefix, group_prefix, NPARTS,
                          per_part);
        f->copts.strategy = strategy;
}

/* After attach, before rd_kafka_new(): the probe counts the wait for the
 * first assignment from its on_new, inside it. */
static void note_t0(h_fixture_t *f, rd_kafka_conf_t **conf) {
        (void)conf;
        *(int64_t *)f->opaque = h_now_ms();
}

/* One consumer, no app rebalance_cb: the probe's default handling must
 * assign so that consumption works. */
static void one_consumer_default(const char *strategy, const char *protocol) {
        h_fixture_t f;
        int64_t t0 = 0;
        fx_init(&f, "solo", "gsolo", strategy);
        f.opaque = &t0;
        f.after_attach = note_t0;
        f.wait_all = 1;
        h_fixture_start(&f);
        int64_t elapsed = h_now_ms() - t0;
        lagprobe_t *p = f.p;
        rd_kafka_t *rk = f.rk;
        const char *topic = f.topic;

        h_snap_t hs;
        h_snap(p, &hs);
        assert_string_equal(hs.s.protocol, protocol);
        assert_int_equal(hs.s.assigns, 1);
        assert_int_equal(hs.s.revokes, 0);
        assert_int_equal(hs.s.lost, 0);
        assert_int_equal(hs.s.rebalances, 1);
        assert_int_equal(hs.s.partition_cnt, NPARTS);
        assert_int_equal(hs.s.assignment_size, NPARTS);
        assert_int_equal(hs.s.unassigned_ms, 0);
        assert_int_equal(hs.s.last_rebalance_err, 0);
        assert_true(hs.s.last_rebalance_ms_ago >= 0 &&
                    hs.s.last_rebalance_ms_ago <= elapsed);
        /* Before the first assignment there was no revoke: none, or the
         * wait since the consumer started. */
        assert_true(hs.s.last_unassigned_ms == -1 ||
                    (hs.s.last_unassigned_ms >= 0 &&
                     hs.s.last_unassigned_ms <= elapsed));
        assert_int_equal(probe_mask(&hs, topic), (1u << NPARTS) - 1);
        assert_int_equal(app_mask(rk), (1u << NPARTS) - 1);
        for (int i = 0; i < NPARTS; i++)
                assert_int_equal(f.t.consumed[i], PER_PART);

        h_consumer_close(rk);
        f.rk = NULL;
        h_snap(p, &hs);
        assert_int_equal(hs.s.revokes, 1);
        assert_int_equal(hs.s.rebalances, 2);
        assert_int_equal(hs.s.partition_cnt, 0);
        assert_int_equal(hs.s.assignment_size, 0);
        h_fixture_stop(&f);
}

static void test_default_eager_range(void **state) {
        (void)state;
        one_consumer_default("range", "EAGER");
}

static void test_default_eager_roundrobin(void **state) {
        (void)state;
        one_consumer_default("roundrobin", "EAGER");
}

static void test_default_cooperative(void **state) {
        (void)state;
        one_consumer_default("cooperative-sticky", "COOPERATIVE");
}

/* ---- two members ---------------------------------------------------- */

typedef struct two_s {
        const char *topic;
        rd_kafka_t *rk[2];
        lagprobe_t *p[2];
        int n;          /* members polled */
        int want[2];    /* partitions each should hold */
        unsigned pm[2]; /* last masks seen */
        unsigned am[2];
} two_t;

static int split_is(void *arg) {
        two_t *w = arg;
        for (int i = 0; i < w->n; i++) {
                h_snap_t hs;
                h_snap(w->p[i], &hs);
                w->pm[i] = probe_mask(&hs, w->topic);
                w->am[i] = app_mask(w->rk[i]);
                if (__builtin_popcount(w->am[i]) != w->want[i] ||
                    w->pm[i] != w->am[i])
                        return 0;
        }
        return 1;
}

/* An app rebalance_cb that does what the probe does without one (eager:
 * assign what is offered, unassign on revoke) and counts the calls: the
 * number of rounds the mock takes is then known outside the probe. */
typedef struct rb_count_s {
        atomic_int assigns, revokes, other;
} rb_count_t;

static void counting_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                  rd_kafka_topic_partition_list_t *parts,
                                  void *opaque) {
        rb_count_t *c = opaque;
        if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
                c->assigns++;
                rd_kafka_assign(rk, parts);
        } else {
                if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
                        c->revokes++;
                else
                        c->other++;
                rd_kafka_assign(rk, NULL);
        }
}

/* The probe's counts of member i equal what its rebalance_cb saw. */
static void assert_counts(const h_snap_t *hs, const rb_count_t *c, int i) {
        print_message("  member %d: app saw %d assign(s), %d revoke(s); "
                      "probe %" PRId64 ", %" PRId64 "\n",
                      i, (int)c->assigns, (int)c->revokes, hs->s.assigns,
                      hs->s.revokes);
        assert_int_equal(c->other, 0);
        assert_int_equal(hs->s.assigns, c->assigns);
        assert_int_equal(hs->s.revokes, c->revokes);
        assert_int_equal(hs->s.rebalances, c->assigns + c->revokes);
}

/* Every partition's PER_PART messages consumed by one member or the
 * other (arg: the two members' trackers, h_track_t[2]). */
static int all_consumed(void *arg) {
        const h_track_t *t = arg;
        for (int i = 0; i < NPARTS; i++)
                if (t[0].consumed[i] + t[1].consumed[i] < PER_PART)
                        return 0;
        return 1;
}

/* cnt: NULL, the probe's own handling; else an app rebalance_cb per
 * member (eager only) that counts what the probe must count. */
static void two_consumers(const char *strategy, const char *protocol,
                          rb_count_t *cnt) {
        char topic[64], group[64];
        make_topic(topic, sizeof topic, "duo");
        h_unique("gduo", group, sizeof group);
        two_t w = {.topic = topic};
        h_track_t t[2];
        h_track_t *tp[2] = {&t[0], &t[1]};
        for (int i = 0; i < 2; i++) {
                rd_kafka_conf_t *conf = h_conf(h_cl, group, strategy, 1);
                if (cnt) {
                        rd_kafka_conf_set_opaque(conf, &cnt[i]);
                        rd_kafka_conf_set_rebalance_cb(conf,
                                                       counting_rebalance_cb);
                }
                w.p[i] = h_probe_attach(conf);
                w.rk[i] = h_consumer_new(conf, NULL);
                h_track_init(&t[i]);
        }

        /* First member alone: everything. */
        h_subscribe(w.rk[0], topic);
        w.n = 1;
        w.want[0] = NPARTS;
        assert_true(h_poll_until_n(w.rk, tp, 1, split_is, &w, H_JOIN_TIMEOUT_MS));

        /* Second member joins: two each, disjoint, together all. */
        h_subscribe(w.rk[1], topic);
        w.n = 2;
        w.want[0] = w.want[1] = NPARTS / 2;
        int64_t t0 = h_now_ms();
        int ok = h_poll_until_n(w.rk, tp, 2, split_is, &w, H_JOIN_TIMEOUT_MS);
        int64_t split_ms = h_now_ms() - t0;
        print_message("  split after %" PRId64 " ms: probe %x/%x app %x/%x\n",
                      split_ms, w.pm[0], w.pm[1], w.am[0], w.am[1]);
        assert_true(ok);
        assert_int_equal(w.pm[0] & w.pm[1], 0);
        assert_int_equal(w.pm[0] | w.pm[1], (1u << NPARTS) - 1);

        h_snap_t hs[2];
        for (int i = 0; i < 2; i++) {
                h_snap(w.p[i], &hs[i]);
                assert_string_equal(hs[i].s.protocol, protocol);
                assert_int_equal(hs[i].s.partition_cnt, NPARTS / 2);
                assert_int_equal(hs[i].s.assignment_size, NPARTS / 2);
                assert_int_equal(hs[i].s.unassigned_ms, 0);
                assert_true(hs[i].s.last_rebalance_ms_ago >= 0 &&
                            hs[i].s.last_rebalance_ms_ago <= split_ms);
        }
        /* The first member gave two partitions back. */
        assert_int_equal(hs[0].s.rebalances, hs[0].s.assigns + hs[0].s.revokes);
        for (int i = 0; i < 2; i++)
                h_assert_outputs_agree(w.p[i]);
        assert_int_equal(hs[0].s.lost, 0);
        int coop = !strcmp(protocol, "COOPERATIVE");
        if (coop) {
                /* Incremental: the join took two partitions away (one
                 * revoke round) and added none; the empty assign round
                 * that follows is not a change and is not counted. */
                assert_int_equal(hs[0].s.assigns, 1);
                assert_int_equal(hs[0].s.revokes, 1);
                /* The newcomer: one assignment, nothing revoked. */
                assert_int_equal(hs[1].s.assigns, 1);
                assert_int_equal(hs[1].s.revokes, 0);
        } else if (cnt) {
                /* However many rounds the mock took. */
                for (int i = 0; i < 2; i++)
                        assert_counts(&hs[i], &cnt[i], i);
                assert_true(hs[0].s.revokes >= 1);
        } else {
                /* One round or two (a loaded mock): the exact count is
                 * test_two_members_eager_counted's. */
                assert_true(hs[0].s.revokes >= 1);
                assert_true(hs[0].s.assigns >= 2);
        }
        if (!coop) {
                /* Eager: everything revoked, then two assigned back (a
                 * slow run can take the mock two rounds): every revoke is
                 * followed by an assign, and the gap is the rebalance
                 * (the mock takes ~2.5 s a round). */
                assert_int_equal(hs[0].s.assigns, hs[0].s.revokes + 1);
                assert_true(hs[0].s.last_unassigned_ms > 0 &&
                            hs[0].s.last_unassigned_ms <= split_ms);
        }

        /* Second member leaves: the first gets everything back. */
        h_consumer_close(w.rk[1]);
        h_snap(w.p[1], &hs[1]);
        assert_int_equal(hs[1].s.partition_cnt, 0);
        assert_int_equal(hs[1].s.bound, 0);
        /* Its close gave its two partitions back: one revoke. */
        if (coop) {
                assert_int_equal(hs[1].s.assigns, 1);
                assert_int_equal(hs[1].s.revokes, 1);
                assert_int_equal(hs[1].s.rebalances, 2);
        } else if (cnt) {
                assert_counts(&hs[1], &cnt[1], 1);
                assert_int_equal(hs[1].s.revokes, 1);
        }
        w.n = 1;
        w.want[0] = NPARTS;
        t0 = h_now_ms();
        ok = h_poll_until_n(w.rk, tp, 1, split_is, &w, H_JOIN_TIMEOUT_MS);
        print_message("  back after %" PRId64 " ms: probe %x app %x\n",
                      h_now_ms() - t0, w.pm[0], w.am[0]);
        assert_true(ok);
        h_snap(w.p[0], &hs[0]);
        assert_int_equal(hs[0].s.partition_cnt, NPARTS);
        assert_int_equal(hs[0].s.assignment_size, NPARTS);
        if (coop) {
                /* The leave added two partitions: one assign round. */
                assert_int_equal(hs[0].s.assigns, 2);
                assert_int_equal(hs[0].s.revokes, 1);
        } else if (cnt) {
                assert_counts(&hs[0], &cnt[0], 0);
        }
        h_assert_outputs_agree(w.p[0]);
        /* Start, join and leave are three membership changes, not a
         * rebalance storm (more than storm_rebalances = 3). Under EAGER a
         * loaded mock may take a second round for the join: then the
         * member really went through four assignments, which is the
         * storm rule's business; pin the verdict when it took one. */
        if (coop || hs[0].s.assigns == 3)
                assert_int_not_equal(hs[0].s.diagnosis,
                                     LAGPROBE_DIAG_REBALANCE_STORM);
        /* Everything was consumed between the two, at least once: the
         * rebalances moved partitions, not messages. The first member may
         * still be fetching what it got back (a loaded machine). */
        assert_true(
            h_poll_until_n(w.rk, tp, 1, all_consumed, t, H_JOIN_TIMEOUT_MS));
        h_consumer_close(w.rk[0]);
        lagprobe_destroy(w.p[0]);
        lagprobe_destroy(w.p[1]);
}

static void test_two_members_eager(void **state) {
        (void)state;
        two_consumers("range", "EAGER", NULL);
}

/* The same with an app rebalance_cb on each member that counts the
 * rounds: the probe's assigns, revokes and rebalances equal the app's at
 * the join and after the leave. */
static void test_two_members_eager_counted(void **state) {
        (void)state;
        rb_count_t cnt[2];
        memset(cnt, 0, sizeof cnt);
        two_consumers("range", "EAGER", cnt);
}

static void test_two_members_cooperative(void **state) {
        (void)state;
        two_consumers("cooperative-sticky", "COOPERATIVE", NULL);
}

/* ---- the app's own rebalance_cb ------------------------------------ */

typedef struct app_rb_s {
        int magic;
        atomic_int calls, assigns, revokes, bad;
        int cooperative;
} app_rb_t;

/* Takes only the even partitions it is offered. */
static void app_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *parts,
                             void *opaque) {
        app_rb_t *a = opaque;
        if (!a || a->magic != 0xab) {
                /* Wrong opaque: keep going, the test checks a->calls. */
                rd_kafka_assign(rk, NULL);
                return;
        }
        a->calls++;
        rd_kafka_topic_partition_list_t *even =
            rd_kafka_topic_partition_list_new(parts->cnt);
        for (int i = 0; i < parts->cnt; i++)
                if (parts->elems[i].partition % 2 == 0)
                        rd_kafka_topic_partition_list_add(
                            even, parts->elems[i].topic,
                            parts->elems[i].partition);
        if (a->cooperative !=
            !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE"))
                a->bad++;
        if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
                a->assigns++;
                if (a->cooperative) {
                        rd_kafka_error_t *e =
                            rd_kafka_incremental_assign(rk, even);
                        if (e) {
                                a->bad++;
                                rd_kafka_error_destroy(e);
                        }
                } else if (rd_kafka_assign(rk, even)) {
                        a->bad++;
                }
        } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
                a->revokes++;
                if (a->cooperative) {
                        rd_kafka_error_t *e =
                            rd_kafka_incremental_unassign(rk, even);
                        if (e) {
                                a->bad++;
                                rd_kafka_error_destroy(e);
                        }
                } else {
                        rd_kafka_assign(rk, NULL);
                }
        } else {
                a->bad++;
                rd_kafka_assign(rk, NULL);
        }
        rd_kafka_topic_partition_list_destroy(even);
}

static int even_consumed(void *arg) {
        h_track_t *t = arg;
        return t->consumed[0] == PER_PART && t->consumed[2] == PER_PART;
}

/* Before attach: the app's rebalance_cb, with the fixture's opaque. */
static void set_app_rebalance(h_fixture_t *f, rd_kafka_conf_t **conf) {
        rd_kafka_conf_set_opaque(*conf, f->opaque);
        rd_kafka_conf_set_rebalance_cb(*conf, app_rebalance_cb);
}

/* Starts a consumer whose rebalance_cb takes only even partitions and
 * waits until it consumed them. */
static void start_even(h_fixture_t *f, const char *strategy, app_rb_t *a) {
        fx_init(f, "app", "gapp", strategy);
        f->opaque = a;
        f->before_attach = set_app_rebalance;
        h_fixture_start(f);
        assert_true(h_poll_until(f->rk, &f->t, even_consumed, &f->t,
                                 H_JOIN_TIMEOUT_MS));
        /* Odd partitions have messages too: give them time to (wrongly)
         * arrive. */
        h_poll_for(f->rk, &f->t, 500);
}

static void app_cb_respected(const char *strategy, int cooperative,
                             const char *protocol) {
        app_rb_t a = {.magic = 0xab, .cooperative = cooperative};
        h_fixture_t f;
        start_even(&f, strategy, &a);
        rd_kafka_t *rk = f.rk;
        lagprobe_t *p = f.p;

        assert_int_equal(a.calls, 1);
        assert_int_equal(a.assigns, 1);
        assert_int_equal(a.bad, 0);
        /* The app's decision stands: only even partitions. */
        assert_int_equal(app_mask(rk), 0x5);
        assert_int_equal(f.t.consumed[1], 0);
        assert_int_equal(f.t.consumed[3], 0);
        assert_int_equal(f.t.total, 2 * PER_PART);
        h_snap_t hs;
        h_snap(p, &hs);
        assert_string_equal(hs.s.protocol, protocol);
        assert_int_equal(hs.s.assigns, 1);
        assert_int_equal(hs.s.consumed, 2 * PER_PART);
        /* Close: the revoke goes to the app's callback as well. */
        h_consumer_close(rk);
        f.rk = NULL;
        assert_int_equal(a.revokes, 1);
        assert_int_equal(a.bad, 0);
        h_snap(p, &hs);
        assert_int_equal(hs.s.revokes, 1);
        h_fixture_stop(&f);
}

static void test_app_rebalance_cb_eager(void **state) {
        (void)state;
        app_cb_respected("range", 0, "EAGER");
}

static void test_app_rebalance_cb_cooperative(void **state) {
        (void)state;
        app_cb_respected("cooperative-sticky", 1, "COOPERATIVE");
}

/* The probe reports the partitions the consumer has (what the app
 * assigned), not the ones the group offered. */
static void test_app_rebalance_cb_snapshot_is_assignment(void **state) {
        (void)state;
        app_rb_t a = {.magic = 0xab, .cooperative = 0};
        h_fixture_t f;
        start_even(&f, "range", &a);
        unsigned am = app_mask(f.rk);
        h_snap_t hs;
        h_snap(f.p, &hs);
        unsigned pm = probe_mask(&hs, f.topic);
        int64_t asize = hs.s.assignment_size;
        h_fixture_stop(&f);
        print_message("  assignment %x, probe reports %x (assignment_size %"
                      PRId64 ")\n",
                      am, pm, asize);
        assert_int_equal(am, 0x5);
        assert_int_equal(pm, am);
        assert_int_equal(asize, 2);
}

int main(void) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_default_eager_range),
            cmocka_unit_test(test_default_eager_roundrobin),
            cmocka_unit_test(test_default_cooperative),
            cmocka_unit_test(test_two_members_eager),
            cmocka_unit_test(test_two_members_eager_counted),
            cmocka_unit_test(test_two_members_cooperative),
            cmocka_unit_test(test_app_rebalance_cb_eager),
            cmocka_unit_test(test_app_rebalance_cb_cooperative),
            cmocka_unit_test(test_app_rebalance_cb_snapshot_is_assignment),
        };
        return cmocka_run_group_tests(tests, h_group_setup, h_group_teardown);
}

/* White-box test of the lag diagnosis rules (lp_eval_slot, lp_diagnose,
 * lp_check_diagnosis): synthesized statistics documents with increasing
 * "ts" and consume-side figures set directly, so every partition status and
 * consumer verdict is reached deterministically, including
 * caught_up_with_markers, which the mock cluster cannot produce (it writes
 * no transaction markers).
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Built like every tests/test_*.c; probe.c is linked as an archive member,
 * which the linker leaves out because this file defines every lagprobe
 * symbol itself by including it. */
#include "../probe.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"

#define TOPIC "wbt"
#define MAXP 16
#define TICK_MS 100 /* synthetic statistics.interval.ms */
#define WINDOW_MS 2000
#define ALLOW 10


/* ---- events ---------------------------------------------------------- */

typedef struct wev_s {
        lagprobe_event_type_t type;
        int severity;
        int32_t partition;
        int64_t count, lag;
        char state[32], topic[32];
        char message[320];
} wev_t;

#define WREC_MAX 512

/* Every event the probe logged; one past WREC_MAX is counted in dropped,
 * and wrec_check() fails the test: an assertion on "the last event" must
 * never read a stale one. */
typedef struct wrec_s {
        wev_t ev[WREC_MAX];
        int n;
        int dropped;
} wrec_t;

static void wrec_cb(const lagprobe_event_t *e, void *opaque) {
        wrec_t *r = opaque;
        if (r->n >= WREC_MAX) {
                r->dropped++; /* the callback may hold the probe's locks:
                               * fail in wrec_check(), not here */
                return;
        }
        wev_t *x = &r->ev[r->n++];
        x->type = e->type;
        x->severity = e->severity;
        x->partition = e->partition;
        x->count = e->count;
        x->lag = e->lag;
        snprintf(x->state, sizeof x->state, "%s", e->state ? e->state : "");
        snprintf(x->topic, sizeof x->topic, "%s", e->topic ? e->topic : "");
        snprintf(x->message, sizeof x->message, "%s", e->message);
}

static void wrec_check(const wrec_t *r) {
        if (r->dropped)
                H_FAIL("%d event(s) past the recorder's %d", r->dropped,
                       WREC_MAX);
}

/* ---- the probe under test ------------------------------------------------ */

typedef struct wpart_s {
        int64_t hi;        /* hi_offset (and ls_offset) */
        int64_t committed; /* committed_offset, -1001 none */
        int64_t app;       /* app_offset, -1001 none */
        int64_t fetchq;
} wpart_t;

typedef struct wb_s {
        lagprobe_t *p;
        int n;
        lp_slot_t *slot[MAXP];
        wpart_t q[MAXP];
        int64_t ts_us; /* the documents' clock */
        wrec_t rec;
        lagprobe_snapshot_t snap;
        lagprobe_partition_t parts[MAXP];
} wb_t;

/* Probes alive in the running test: teardown() frees what a failed
 * assertion left behind. */
static wb_t *live[8];

static void live_add(wb_t *w) {
        for (int i = 0; i < 8; i++)
                if (!live[i]) {
                        live[i] = w;
                        return;
                }
        H_FAIL("more than 8 probes alive");
}

static void live_del(wb_t *w) {
        for (int i = 0; i < 8; i++)
                if (live[i] == w)
                        live[i] = NULL;
}

static void wb_config(lagprobe_config_t *c) {
        lagprobe_config_init(c);
        c->watchdog_interval_ms = 0;
        c->window_ms = WINDOW_MS;
        c->lag_allowance = ALLOW;
        /* The rules themselves, shown with the document that meets them;
         * the hysteresis has tests of its own. */
        c->dwell_ms = 0;
}

/* A probe with n partitions of TOPIC assigned, nothing consumed yet. */
static wb_t *wb_new(int n, const lagprobe_config_t *cfg) {
        char errstr[256] = "";
        wb_t *w = calloc(1, sizeof *w);
        assert_non_null(w);
        lagprobe_config_t c = *cfg;
        c.log_cb = wrec_cb;
        c.log_opaque = &w->rec;
        w->p = lagprobe_new(&c, errstr, sizeof errstr);
        if (!w->p)
                H_FAIL("lagprobe_new: %s", errstr);
        w->n = n;
        pthread_mutex_lock(&w->p->wlock);
        for (int i = 0; i < n; i++) {
                int si = lp_slot_find(w->p, TOPIC, i, 1);
                assert_true(si >= 0);
                w->slot[i] = lp_slot_at(w->p, (uint32_t)si);
                ST(w->slot[i]->assigned, 1);
                w->q[i].committed = -1001;
                w->q[i].app = -1001;
        }
        pthread_mutex_unlock(&w->p->wlock);
        w->ts_us = lp_mono_us();
        live_add(w);
        return w;
}

static wb_t *wb_default(int n) {
        lagprobe_config_t c;
        wb_config(&c);
        return wb_new(n, &c);
}

static void wb_destroy(wb_t *w) {
        live_del(w);
        lagprobe_destroy(w->p);
        free(w);
}

/* The end of a probe's test: no event may have been lost. */
static void wb_free(wb_t *w) {
        wrec_check(&w->rec);
        wb_destroy(w);
}

static int slow_tick_ms_reset(void);

static int teardown(void **state) {
        (void)state;
        slow_tick_ms_reset();
        for (int i = 0; i < 8; i++)
                if (live[i])
                        wb_destroy(live[i]);
        return 0;
}

/* The consuming thread's figures: the app was handed messages up to
 * position - 1; delivered counts every message handed out (redeliveries
 * included). */
static void wb_consume(wb_t *w, int i, int64_t position, int64_t delivered) {
        lp_slot_t *s = w->slot[i];
        uint32_t q = lp_wbegin(&s->cseq);
        ST(s->c_position, position);
        ST(s->c_total, LD(s->c_total) + delivered);
        lp_wend(&s->cseq, q);
}

/* A commit of partition i at offset, as lp_on_commit() stores it between
 * documents (the documents' own figure, q[i].committed, is unchanged). */
static void wb_commit_seen(wb_t *w, int i, int64_t offset) {
        lp_slot_t *s = w->slot[i];
        uint32_t q = lp_wbegin(&s->sseq);
        ST(s->s_committed, offset);
        lp_wend(&s->sseq, q);
}

/* Renders and parses one statistics document at the current figures. */
static void wb_doc(wb_t *w) {
        char buf[16384];
        size_t o = 0;
        o += (size_t)snprintf(buf + o, sizeof buf - o,
                              "{\"name\":\"wb#consumer-1\","
                              "\"client_id\":\"wb\","
                              "\"type\":\"consumer\",\"ts\":%" PRId64
                              ",\"time\":1700000000,\"topics\":{\"" TOPIC
                              "\":{\"topic\":\"" TOPIC "\",\"partitions\":{",
                              w->ts_us);
        for (int i = 0; i < w->n; i++) {
                const wpart_t *x = &w->q[i];
                o += (size_t)snprintf(
                    buf + o, sizeof buf - o,
                    "\"%d\":{\"partition\":%d,\"broker\":1,\"leader\":1,"
                    "\"fetch_state\":\"active\",\"fetchq_cnt\":%" PRId64
                    ",\"fetchq_size\":%" PRId64 ",\"query_offset\":-1001,"
                    "\"next_offset\":%" PRId64 ",\"app_offset\":%" PRId64
                    ",\"stored_offset\":-1001,\"committed_offset\":%" PRId64
                    ",\"commited_offset\":%" PRId64 ",\"eof_offset\":-1001,"
                    "\"lo_offset\":0,\"hi_offset\":%" PRId64
                    ",\"ls_offset\":%" PRId64 ",\"consumer_lag\":%" PRId64
                    "},",
                    i, i, x->fetchq, x->fetchq * 100, x->hi, x->app,
                    x->committed, x->committed, x->hi, x->hi,
                    x->committed >= 0 ? x->hi - x->committed : -1);
        }
        o += (size_t)snprintf(buf + o, sizeof buf - o,
                              "\"-1\":{\"partition\":-1,"
                              "\"fetch_state\":\"none\","
                              "\"fetchq_cnt\":0,\"hi_offset\":-1001,"
                              "\"committed_offset\":-1001}}}},\"cgrp\":{"
                              "\"state\":\"up\",\"rebalance_cnt\":1}}");
        assert_true(o < sizeof buf);
        assert_int_equal(lp_stats_parse(w->p, buf, o), 0);
}

/* Advances the documents' clock by ms and delivers a document. */
static void wb_tick(wb_t *w, int ms) {
        w->ts_us += (int64_t)ms * 1000;
        wb_doc(w);
}

static void wb_snap(wb_t *w) {
        lagprobe_snapshot_init(&w->snap, w->parts, MAXP);
        assert_int_equal(lagprobe_snapshot(w->p, &w->snap), 0);
        assert_int_equal(w->snap.partition_cnt, (size_t)w->n);
}

static const lagprobe_partition_t *wb_part(wb_t *w, int i) {
        wb_snap(w);
        for (int k = 0; k < w->n; k++)
                if (w->parts[k].partition == i)
                        return &w->parts[k];
        H_FAIL("partition %d missing from the snapshot", i);
        return NULL;
}

/* One document tick_ms after the last: each partition's hi and position
 * moved by its rate (consumed right away and committed); rate NULL:
 * nothing moved. */
static void wb_step(wb_t *w, const int64_t *rate, int tick_ms) {
        for (int i = 0; rate && i < w->n; i++) {
                if (!rate[i])
                        continue;
                w->q[i].hi += rate[i];
                wb_consume(w, i, w->q[i].hi, rate[i]);
                w->q[i].committed = w->q[i].hi;
        }
        wb_tick(w, tick_ms);
}

/* wb_step() every TICK_MS for ms. */
static void wb_flow(wb_t *w, const int64_t *rate, int ms) {
        for (int t = 0; t < ms; t += TICK_MS)
                wb_step(w, rate, TICK_MS);
}

/* Runs lp_check_diagnosis() (the watchdog's part) and returns the number
 * of events it handed to log_cb. */
static int wb_events(wb_t *w) {
        pthread_mutex_lock(&w->p->tick_lock);
        int n = lp_check_diagnosis(w->p);
        pthread_mutex_unlock(&w->p->tick_lock);
        wrec_check(&w->rec);
        return n;
}

static const wev_t *wb_last_event(wb_t *w, lagprobe_event_type_t t,
                                  int32_t partition) {
        wrec_check(&w->rec);
        for (int k = w->rec.n - 1; k >= 0; k--)
                if (w->rec.ev[k].type == t &&
                    (partition == -2 || w->rec.ev[k].partition == partition))
                        return &w->rec.ev[k];
        return NULL;
}

static void assert_status(wb_t *w, int i, lagprobe_pstatus_t want,
                          const char *reason_part) {
        const lagprobe_partition_t *x = wb_part(w, i);
        if (x->status != want ||
            (reason_part && !strstr(x->status_reason, reason_part)))
                H_FAIL("[%d] is %s (\"%s\"), want %s%s%s", i, x->status_name,
                     x->status_reason, lagprobe_pstatus_name((int)want),
                     reason_part ? " with reason containing " : "",
                     reason_part ? reason_part : "");
        assert_string_equal(x->status_name, lagprobe_pstatus_name((int)want));
        /* JSON's "status" and lagprobe_partition_status say it too. */
        h_assert_outputs_agree(w->p);
}

static void assert_verdict(wb_t *w, lagprobe_diagnosis_t want, int32_t part) {
        wb_snap(w);
        if (w->snap.diagnosis != want || w->snap.diagnosis_partition != part)
                H_FAIL("verdict %s [%d] (\"%s\"), want %s [%d]",
                     w->snap.diagnosis_name, (int)w->snap.diagnosis_partition,
                     w->snap.diagnosis_detail,
                     lagprobe_diagnosis_name((int)want), (int)part);
        if (part >= 0)
                assert_string_equal(w->snap.diagnosis_topic, TOPIC);
        else
                assert_null(w->snap.diagnosis_topic);
        /* JSON's diagnosis (verdict, topic, partition) and
         * lagprobe_diagnosis{verdict} say it too. */
        h_assert_outputs_agree(w->p);
}

/* ======================================================================
 * Partition statuses
 * ==================================================================== */

/* Before half a window of samples: unknown, and so is the verdict. */
static void test_unknown_until_half_window(void **state) {
        (void)state;
        wb_t *w = wb_default(2);
        const int64_t r[2] = {1, 1};
        wb_flow(w, r, WINDOW_MS / 2 - 2 * TICK_MS);
        assert_status(w, 0, LAGPROBE_PSTATUS_UNKNOWN, "not enough samples");
        assert_verdict(w, LAGPROBE_DIAG_UNKNOWN, -1);
        /* Unknown is never announced. */
        assert_int_equal(wb_events(w), 0);
        wb_flow(w, r, 3 * TICK_MS);
        assert_status(w, 0, LAGPROBE_PSTATUS_OK, NULL);
        assert_verdict(w, LAGPROBE_DIAG_HEALTHY, -1);
        /* Two partition_status events (ok) and one diagnosis (healthy). */
        assert_int_equal(wb_events(w), 3);
        const wev_t *e = wb_last_event(w, LAGPROBE_EVENT_DIAGNOSIS, -2);
        assert_non_null(e);
        assert_int_equal(e->severity, 5);
        assert_non_null(strstr(e->message, "diagnosis healthy"));
        /* No change, no event. */
        wb_flow(w, r, 3 * TICK_MS);
        assert_int_equal(wb_events(w), 0);
        wb_free(w);
}

static void test_idle(void **state) {
        (void)state;
        wb_t *w = wb_default(1);
        w->q[0].hi = 50;
        w->q[0].committed = 50;
        wb_consume(w, 0, 50, 50);
        wb_flow(w, NULL, WINDOW_MS + TICK_MS);
        assert_status(w, 0, LAGPROBE_PSTATUS_IDLE, "caught up at offset 50");
        const lagprobe_partition_t *x = wb_part(w, 0);
        assert_int_equal(x->effective_lag, 0);
        assert_int_equal(x->lag, 0);
        assert_true(x->ingress_rate == 0 && x->egress_rate == 0);
        assert_true(x->eta_seconds == 0);
        assert_verdict(w, LAGPROBE_DIAG_HEALTHY, -1);
        wb_events(w);
        const wev_t *e = wb_last_event(w, LAGPROBE_EVENT_PARTITION_STATUS, 0);
        assert_non_null(e);
        assert_int_equal(e->severity, 6);
        assert_non_null(strstr(e->message, TOPIC " [0] is idle: "));
        /* One new message: no longer idle. */
        w->q[0].hi = 51;
        wb_flow(w, NULL, TICK_MS);
        assert_status(w, 0, LAGPROBE_PSTATUS_OK, NULL);
        wb_free(w);
}

static void test_ok_rates(void **state) {
        (void)state;
        wb_t *w = wb_default(1);
        const int64_t r[1] = {3}; /* 30 msg/s */
        wb_flow(w, r, 2 * WINDOW_MS);
        assert_status(w, 0, LAGPROBE_PSTATUS_OK, "within the allowance");
        const lagprobe_partition_t *x = wb_part(w, 0);
        assert_int_equal(x->lag, 0);
        assert_true(x->ingress_rate > 29.9 && x->ingress_rate < 30.1);
        assert_true(x->egress_rate > 29.9 && x->egress_rate < 30.1);
        assert_true(x->commit_rate > 29.9 && x->commit_rate < 30.1);
        assert_true(x->eta_seconds == 0);
        wb_free(w);
}

/* A consumer that keeps up, one message in flight at every sample (as
 * test_diagnosis.c's steady flow often is): not "not catching up". */
static void test_eta_keeping_up(void **state) {
        (void)state;
        wb_t *w = wb_default(1);
        for (int t = 0; t < 2 * WINDOW_MS; t += TICK_MS) {
                w->q[0].hi += 3;
                wb_consume(w, 0, w->q[0].hi - 1, 3);
                w->q[0].committed = w->q[0].hi - 1;
                wb_tick(w, TICK_MS);
        }
        assert_status(w, 0, LAGPROBE_PSTATUS_OK, NULL);
        const lagprobe_partition_t *x = wb_part(w, 0);
        print_message("  lag %" PRId64 ", position lag %" PRId64
                      ", in %.1f/s, out %.1f/s: eta %.2f s\n",
                      x->lag, x->position_lag, x->ingress_rate, x->egress_rate,
                      x->eta_seconds);
        assert_int_equal(x->position_lag, 1);
        if (!(x->eta_seconds >= 0 && x->eta_seconds < 1))
                H_FAIL("eta_seconds %.2f (-1: not catching up) for a consumer "
                     "one message behind that consumes as fast as messages "
                     "arrive",
                     x->eta_seconds);
        wb_free(w);
}

/* Lag above the allowance, not shrinking: lagging; the same lag while
 * shrinking is ok, with a finite ETA. */
static void test_lagging_vs_catching_up(void **state) {
        (void)state;
        wb_t *w = wb_default(1);
        int64_t pos = 0;
        for (int t = 0; t < WINDOW_MS + 2 * TICK_MS; t += TICK_MS) {
                w->q[0].hi += 10; /* 100 msg/s in */
                pos += 5;         /* 50 msg/s out */
                wb_consume(w, 0, pos, 5);
                w->q[0].committed = pos;
                wb_tick(w, TICK_MS);
        }
        assert_status(w, 0, LAGPROBE_PSTATUS_LAGGING, "above the allowance");
        const lagprobe_partition_t *x = wb_part(w, 0);
        assert_int_equal(x->lag, w->q[0].hi - pos);
        assert_int_equal(x->effective_lag, w->q[0].hi - pos);
        assert_true(x->lag > ALLOW);
        assert_true(x->eta_seconds < 0); /* not catching up */
        assert_true(x->ingress_rate > 99 && x->ingress_rate < 101);
        assert_true(x->egress_rate > 49 && x->egress_rate < 51);
        wb_events(w);
        const wev_t *e = wb_last_event(w, LAGPROBE_EVENT_PARTITION_STATUS, 0);
        assert_non_null(e);
        assert_int_equal(e->severity, 4);
        assert_int_equal(e->count, w->q[0].hi - pos);
        /* The app commits everything before the next document (what
         * lp_on_commit stores): the status is the document's,
         * and its text says the figure beside it is newer, not "lag 0,
         * above the allowance". */
        {
                int64_t lag_doc = w->q[0].hi - pos;
                wb_commit_seen(w, 0, w->q[0].hi);
                char want_r[160];
                snprintf(want_r, sizeof want_r,
                         "lag 0 now, within the allowance of %d; up to the "
                         "latest statistics above it all through the last ",
                         ALLOW);
                assert_status(w, 0, LAGPROBE_PSTATUS_LAGGING, want_r);
                assert_int_equal(wb_part(w, 0)->effective_lag, 0);
                /* Back to the app's pace for the rest (the document's
                 * figures were never changed). */
                wb_commit_seen(w, 0, pos);
                assert_status(w, 0, LAGPROBE_PSTATUS_LAGGING,
                              "above the allowance of");
                assert_int_equal(wb_part(w, 0)->effective_lag, lag_doc);
        }
        /* The producer slows to 20 msg/s, the consumer keeps 50. */
        for (int t = 0; t < WINDOW_MS + 2 * TICK_MS; t += TICK_MS) {
                w->q[0].hi += 2;
                pos += 5;
                wb_consume(w, 0, pos, 5);
                w->q[0].committed = pos;
                wb_tick(w, TICK_MS);
        }
        x = wb_part(w, 0);
        assert_true(x->lag > ALLOW);
        assert_int_equal(x->status, LAGPROBE_PSTATUS_OK);
        /* Drains 30 msg/s net: ETA = what is left to read / 30. */
        assert_int_equal(x->position_lag, w->q[0].hi - pos);
        double want = (double)(w->q[0].hi - pos) / 30.0;
        assert_true(x->eta_seconds > want * 0.95 &&
                    x->eta_seconds < want * 1.05);
        wb_free(w);
}

/* Position and commits frozen, lag above the allowance, the same message
 * handed out again and again: stalled; the verdict names the partition. */
static void test_stalled_poison(void **state) {
        (void)state;
        wb_t *w = wb_default(4);
        const int64_t r[4] = {2, 2, 0, 2};
        wb_flow(w, r, WINDOW_MS);
        /* Partition 2 stops at offset 20 (committed 20, handed 20 again). */
        w->q[2].hi = 20;
        w->q[2].committed = 20;
        wb_consume(w, 2, 21, 21);
        for (int t = 0; t < WINDOW_MS + 2 * TICK_MS; t += TICK_MS) {
                for (int i = 0; i < 4; i++)
                        if (i != 2) {
                                w->q[i].hi += 2;
                                wb_consume(w, i, w->q[i].hi, 2);
                                w->q[i].committed = w->q[i].hi;
                        }
                w->q[2].hi += 2;
                wb_consume(w, 2, 21, 3); /* redelivered 3 times a tick */
                wb_tick(w, TICK_MS);
        }
        assert_status(w, 2, LAGPROBE_PSTATUS_STALLED, "re-consumed");
        const lagprobe_partition_t *x = wb_part(w, 2);
        assert_true(x->lag > ALLOW);
        assert_int_equal(x->committed_offset, 20);
        assert_int_equal(x->position, 21);
        assert_true(x->eta_seconds < 0);
        for (int i = 0; i < 4; i++)
                if (i != 2)
                        assert_status(w, i, LAGPROBE_PSTATUS_OK, NULL);
        assert_verdict(w, LAGPROBE_DIAG_STUCK_PARTITION, 2);
        assert_non_null(strstr(w->snap.diagnosis_detail, "poison"));
        wb_events(w);
        const wev_t *e = wb_last_event(w, LAGPROBE_EVENT_DIAGNOSIS, -2);
        assert_non_null(e);
        assert_int_equal(e->partition, 2);
        assert_int_equal(e->severity, 4);
        assert_non_null(strstr(e->message, "diagnosis stuck_partition"));
        wb_free(w);
}

/* Frozen but within the allowance: ok (not stalled, not lagging, and not
 * idle either: it is behind). */
static void test_frozen_within_allowance(void **state) {
        (void)state;
        wb_t *w = wb_default(1);
        w->q[0].hi = 30;
        w->q[0].committed = 30 - ALLOW;
        wb_consume(w, 0, 30 - ALLOW, 30 - ALLOW);
        wb_flow(w, NULL, 2 * WINDOW_MS);
        const lagprobe_partition_t *x = wb_part(w, 0);
        assert_int_equal(x->lag, ALLOW);
        assert_int_equal(x->effective_lag, ALLOW);
        assert_int_equal(x->position_lag, ALLOW);
        assert_status(w, 0, LAGPROBE_PSTATUS_OK, NULL);
        assert_verdict(w, LAGPROBE_DIAG_HEALTHY, -1);
        wb_free(w);
}

/* Consumption goes on, the committed offset does not move: stopped. */
static void test_stopped(void **state) {
        (void)state;
        wb_t *w = wb_default(1);
        w->q[0].committed = 0;
        for (int t = 0; t < WINDOW_MS + 2 * TICK_MS; t += TICK_MS) {
                w->q[0].hi += 2;
                wb_consume(w, 0, w->q[0].hi, 2);
                wb_tick(w, TICK_MS);
        }
        assert_status(w, 0, LAGPROBE_PSTATUS_STOPPED, "no commit for ");
        const lagprobe_partition_t *x = wb_part(w, 0);
        assert_non_null(strstr(x->status_reason, "(committed 0)"));
        assert_int_equal(x->position_lag, 0);
        assert_true(x->commit_rate == 0);
        wb_events(w);
        const wev_t *e = wb_last_event(w, LAGPROBE_EVENT_PARTITION_STATUS, 0);
        assert_non_null(e);
        assert_int_equal(e->severity, 4);
        assert_non_null(strstr(e->message, "is stopped"));
        /* Commits resume: ok again. */
        wb_flow(w, (const int64_t[]){2}, WINDOW_MS + TICK_MS);
        assert_status(w, 0, LAGPROBE_PSTATUS_OK, NULL);
        wb_free(w);
}

/* Position or committed offset moving backwards: rewound for a window. */
static void test_rewound(void **state) {
        (void)state;
        wb_t *w = wb_default(2);
        const int64_t r[2] = {5, 5};
        wb_flow(w, r, WINDOW_MS);
        int64_t from = w->q[0].hi;
        /* The app seeks partition 0 back by 30 and re-reads. */
        wb_consume(w, 0, from - 30, 1);
        wb_tick(w, TICK_MS);
        char want[96];
        snprintf(want, sizeof want, " to %" PRId64, from - 30);
        assert_status(w, 0, LAGPROBE_PSTATUS_REWOUND, want);
        assert_status(w, 0, LAGPROBE_PSTATUS_REWOUND,
                      "position moved backwards from ");
        assert_status(w, 1, LAGPROBE_PSTATUS_OK, NULL);
        wb_events(w);
        const wev_t *e = wb_last_event(w, LAGPROBE_EVENT_PARTITION_STATUS, 0);
        assert_non_null(e);
        assert_int_equal(e->severity, 4);
        assert_non_null(strstr(e->message, "is rewound"));
        /* It stays rewound for a window while it re-reads, then ok. */
        int64_t pos = from - 30;
        for (int t = 0; t < WINDOW_MS - 2 * TICK_MS; t += TICK_MS) {
                pos += 10;
                if (pos > w->q[0].hi)
                        pos = w->q[0].hi;
                wb_consume(w, 0, pos, 10);
                w->q[0].committed = pos;
                wb_tick(w, TICK_MS);
        }
        assert_status(w, 0, LAGPROBE_PSTATUS_REWOUND, NULL);
        for (int t = 0; t < 4 * TICK_MS; t += TICK_MS) {
                wb_consume(w, 0, w->q[0].hi, 0);
                w->q[0].committed = w->q[0].hi;
                wb_tick(w, TICK_MS);
        }
        const lagprobe_partition_t *x = wb_part(w, 0);
        assert_true(x->status == LAGPROBE_PSTATUS_OK ||
                    x->status == LAGPROBE_PSTATUS_IDLE);
        /* A committed offset moving back (a reset) is rewound too. */
        int64_t c = w->q[1].committed;
        w->q[1].committed = c - 7;
        wb_tick(w, TICK_MS);
        snprintf(want, sizeof want, " to %" PRId64, c - 7);
        assert_status(w, 1, LAGPROBE_PSTATUS_REWOUND, want);
        assert_status(w, 1, LAGPROBE_PSTATUS_REWOUND,
                      "committed offset moved backwards from ");
        wb_free(w);
}

/* Was the newest document kept as a ring sample (samples are kept at most
 * every window_ms / (LP_RING - 2))? */
static int last_doc_sampled(wb_t *w, int i) {
        const lp_slot_t *s = w->slot[i];
        return s->w_ring_n > 0 &&
               s->w_ring[(s->w_ring_head + LP_RING - 1) % LP_RING].t_ms ==
                   (uint32_t)(w->ts_us / 1000);
}

/* A rewind is a move back from where the partition was a moment ago, not
 * from the last ring sample: a seek back by less than the progress made
 * since that sample is still a rewind, and its evidence names the
 * position it moved back from. */
static void test_rewound_small_step(void **state) {
        (void)state;
        wb_t *w = wb_default(1);
        const int64_t r[1] = {5};
        wb_flow(w, r, WINDOW_MS);
        /* Make the newest document one that was not kept as a sample. */
        while (last_doc_sampled(w, 0))
                wb_flow(w, r, TICK_MS);
        int64_t from = w->q[0].hi;
        assert_status(w, 0, LAGPROBE_PSTATUS_OK, NULL);
        /* Seek back by 3 (the last sample is 5 behind). */
        wb_consume(w, 0, from - 3, 1);
        wb_tick(w, TICK_MS);
        const lagprobe_partition_t *x = wb_part(w, 0);
        print_message("  position %" PRId64 " -> %" PRId64 ": %s (%s)\n", from,
                      from - 3, x->status_name, x->status_reason);
        char want[96];
        snprintf(want, sizeof want, "position moved backwards from %" PRId64
                 " to %" PRId64, from, from - 3);
        assert_status(w, 0, LAGPROBE_PSTATUS_REWOUND, want);
        wb_free(w);
}

/* ---- caught_up_with_markers --------------------------------------------- */

/* A transactional producer's commit marker is the last offset: the app
 * consumed everything (position = the marker's offset), committed one
 * behind the high watermark, nothing fetched is waiting. */
static void markers_case(const lagprobe_config_t *c, int64_t markers) {
        wb_t *w = wb_new(2, c);
        /* Partition 0: 10 messages + markers; partition 1 plain, idle. */
        w->q[0].hi = 10 + markers;
        w->q[0].committed = 10;
        wb_consume(w, 0, 10, 10);
        w->q[1].hi = 5;
        w->q[1].committed = 5;
        wb_consume(w, 1, 5, 5);
        wb_flow(w, NULL, WINDOW_MS + TICK_MS);
        const lagprobe_partition_t *x = wb_part(w, 0);
        print_message("  lag_allowance %" PRId64 ", %" PRId64
                      " marker(s): [0] %s: %s\n",
                      c->lag_allowance, markers, x->status_name,
                      x->status_reason);
        assert_status(w, 0, LAGPROBE_PSTATUS_MARKERS, "transaction markers");
        x = wb_part(w, 0);
        assert_int_equal(x->effective_lag, 0);
        assert_int_equal(x->lag, markers);
        assert_int_equal(x->position_lag, markers);
        assert_int_equal(x->high_watermark, 10 + markers);
        assert_string_equal(x->status_name, "caught_up_with_markers");
        assert_status(w, 1, LAGPROBE_PSTATUS_IDLE, NULL);
        assert_verdict(w, LAGPROBE_DIAG_HEALTHY, -1);
        assert_int_equal(w->snap.total_lag, 0);
        wb_events(w);
        const wev_t *e = wb_last_event(w, LAGPROBE_EVENT_PARTITION_STATUS, 0);
        assert_non_null(e);
        assert_int_equal(e->severity, 6);
        assert_int_equal(e->count, 0);
        assert_non_null(strstr(e->message, "caught_up_with_markers"));
        for (int k = 0; k < w->rec.n; k++)
                if (w->rec.ev[k].type == LAGPROBE_EVENT_PARTITION_STATUS)
                        assert_int_equal(w->rec.ev[k].severity, 6);
        /* JSON: effective_lag 0, lag as the broker counts it. */
        char js[8192];
        size_t need = lagprobe_snapshot_json(w->p, js, sizeof js);
        assert_true(need < sizeof js);
        assert_non_null(strstr(js, "\"status\":\"caught_up_with_markers\""));
        assert_non_null(strstr(js, "\"effective_lag\":0"));
        wb_free(w);
}

static void test_markers(void **state) {
        (void)state;
        lagprobe_config_t c;
        wb_config(&c);
        markers_case(&c, 1);
        markers_case(&c, 2);
}

/* The allowance is about real lag; a marker is none. With a small
 * allowance (0 or 1: "alert on any lag") the marker must still read as
 * caught up, not as lagging or stalled. */
static void test_markers_small_allowance(void **state) {
        (void)state;
        lagprobe_config_t c;
        wb_config(&c);
        c.lag_allowance = 1;
        markers_case(&c, 2);
        c.lag_allowance = 0;
        markers_case(&c, 1);
}

/* A message waiting in the fetch queue is real lag, not a marker. */
static void test_markers_not_with_queued_messages(void **state) {
        (void)state;
        wb_t *w = wb_default(1);
        w->q[0].hi = 11;
        w->q[0].committed = 10;
        w->q[0].fetchq = 1;
        wb_consume(w, 0, 10, 10);
        wb_flow(w, NULL, 2 * WINDOW_MS);
        const lagprobe_partition_t *x = wb_part(w, 0);
        assert_int_equal(x->effective_lag, 1);
        assert_int_equal(x->lag, 1);
        /* One message behind, within the allowance: ok. */
        assert_status(w, 0, LAGPROBE_PSTATUS_OK, NULL);
        wb_free(w);
}

/* Issue 12: position = high watermark = committed + 1 is one message
 * consumed and not committed (kafka-consumer-groups.sh says LAG 1), not a
 * marker: a marker is never handed to the app. */
static void test_markers_not_at_the_end(void **state) {
        (void)state;
        wb_t *w = wb_default(1);
        w->q[0].hi = 301;
        w->q[0].committed = 300;
        wb_consume(w, 0, 301, 301);
        wb_flow(w, NULL, 2 * WINDOW_MS);
        const lagprobe_partition_t *x = wb_part(w, 0);
        print_message("  [0] %s: %s\n", x->status_name, x->status_reason);
        /* README: the position at the high watermark, nothing new across
         * the window: idle, whatever is left to commit. */
        assert_status(w, 0, LAGPROBE_PSTATUS_IDLE, NULL);
        x = wb_part(w, 0);
        assert_int_equal(x->lag, 1);
        assert_int_equal(x->effective_lag, 1);
        assert_int_equal(w->snap.total_lag, 1);
        wb_free(w);
}

/* One definition of lag: before the first commit the partition's
 * effective lag (its position lag) is what total_lag sums, never null
 * beside a positive total. */
static void test_one_lag_before_commit(void **state) {
        (void)state;
        wb_t *w = wb_default(2);
        for (int i = 0; i < 2; i++) {
                w->q[i].hi = 50;
                wb_consume(w, i, 30, 30);
        }
        wb_flow(w, NULL, WINDOW_MS + TICK_MS);
        wb_snap(w);
        int64_t sum = 0;
        for (int i = 0; i < 2; i++) {
                const lagprobe_partition_t *x = &w->snap.partitions[i];
                assert_int_equal(x->lag, -1);
                assert_int_equal(x->effective_lag, 20);
                sum += x->effective_lag;
        }
        assert_int_equal(w->snap.total_lag, sum);
        wb_free(w);
}

/* ======================================================================
 * Consumer verdicts
 * ==================================================================== */

/* n partitions; partition 0 gets hot messages per tick, every other one
 * other per tick; everything consumed and committed at once. Returns the
 * verdict and the reported share. */
static lagprobe_diagnosis_t hot_case(int n, double hot_share_cfg, int64_t hot,
                                     int64_t other, double *share) {
        lagprobe_config_t c;
        wb_config(&c);
        c.hot_share = hot_share_cfg;
        wb_t *w = wb_new(n, &c);
        int64_t r[MAXP] = {0};
        r[0] = hot;
        for (int i = 1; i < n; i++)
                r[i] = other;
        wb_flow(w, r, 2 * WINDOW_MS);
        wb_snap(w);
        lagprobe_diagnosis_t d = w->snap.diagnosis;
        *share = w->snap.diagnosis_share;
        if (d == LAGPROBE_DIAG_HOT_PARTITION) {
                assert_int_equal(w->snap.diagnosis_partition, 0);
                assert_non_null(
                    strstr(w->snap.diagnosis_detail, "incoming messages"));
        } else {
                assert_true(*share == 0);
        }
        for (int i = 0; i < n; i++)
                if (r[i])
                        assert_status(w, i, LAGPROBE_PSTATUS_OK, NULL);
        wb_free(w);
        return d;
}

static void test_hot_partition_threshold(void **state) {
        (void)state;
        double sh;
        /* 4 partitions: need max(hot_share 0.5, 2 x fair 0.5) = 0.5. */
        assert_int_equal(hot_case(4, 0.5, 30, 5, &sh),
                         LAGPROBE_DIAG_HOT_PARTITION); /* 2/3 */
        assert_true(sh > 0.66 && sh < 0.67);
        assert_int_equal(hot_case(4, 0.5, 36, 2, &sh),
                         LAGPROBE_DIAG_HOT_PARTITION); /* 6/7 */
        assert_true(sh > 0.85 && sh < 0.86);
        assert_int_equal(hot_case(4, 0.5, 15, 5, &sh),
                         LAGPROBE_DIAG_HOT_PARTITION); /* exactly 1/2 */
        assert_true(sh > 0.499 && sh < 0.501);
        assert_int_equal(hot_case(4, 0.5, 16, 8, &sh),
                         LAGPROBE_DIAG_HEALTHY); /* 40 % */
        /* hot_share 0.3 on 4 partitions: 2 x fair (0.5) still rules. */
        assert_int_equal(hot_case(4, 0.3, 16, 8, &sh), LAGPROBE_DIAG_HEALTHY);
        /* 10 partitions: 2 x fair is 0.2, hot_share rules. */
        assert_int_equal(hot_case(10, 0.5, 36, 6, &sh),
                         LAGPROBE_DIAG_HEALTHY); /* 40 % */
        assert_int_equal(hot_case(10, 0.3, 36, 6, &sh),
                         LAGPROBE_DIAG_HOT_PARTITION);
        assert_true(sh > 0.399 && sh < 0.401);
        /* 2 partitions: 2 x fair is 1.0; 90 % is not hot. */
        assert_int_equal(hot_case(2, 0.5, 18, 2, &sh), LAGPROBE_DIAG_HEALTHY);
        /* Nothing arriving: nothing is hot. */
        assert_int_equal(hot_case(4, 0.5, 0, 0, &sh), LAGPROBE_DIAG_HEALTHY);
}

/* Lag share: one partition carries the lag while it is being drained
 * (position moving, lag not growing faster than the others'). */
static void test_hot_partition_by_lag(void **state) {
        (void)state;
        wb_t *w = wb_default(4);
        const int64_t r[4] = {2, 2, 2, 2};
        wb_flow(w, r, WINDOW_MS);
        /* 200 more arrive on partition 3 at once; from then on it is
         * consumed at the pace of the others, 200 behind: hot by lag. */
        w->q[3].hi += 200;
        for (int t = 0; t < 2 * WINDOW_MS; t += TICK_MS) {
                for (int i = 0; i < 4; i++) {
                        w->q[i].hi += 2;
                        int64_t pos = i == 3 ? w->q[i].hi - 200 : w->q[i].hi;
                        wb_consume(w, i, pos, 2);
                        w->q[i].committed = pos;
                }
                wb_tick(w, TICK_MS);
        }
        const lagprobe_partition_t *x = wb_part(w, 3);
        assert_int_equal(x->lag, 200);
        assert_verdict(w, LAGPROBE_DIAG_HOT_PARTITION, 3);
        assert_true(w->snap.diagnosis_share > 0.99);
        assert_non_null(strstr(w->snap.diagnosis_detail, "of the lag"));
        wb_free(w);
}

/* What the documents say is left to read on w's partitions, each
 * consumed up to pos[i]. */
static int64_t wb_behind(const wb_t *w, const int64_t *pos) {
        int64_t sum = 0;
        for (int i = 0; i < w->n; i++)
                sum += w->q[i].hi - pos[i];
        return sum;
}

/* Ingress over egress with lag above the allowance: producer_burst; the
 * same lag while the consumer out-drains the producers is not. */
static void test_producer_burst_vs_healthy(void **state) {
        (void)state;
        wb_t *w = wb_default(4);
        const int64_t r[4] = {2, 2, 2, 2};
        wb_flow(w, r, WINDOW_MS);
        assert_verdict(w, LAGPROBE_DIAG_HEALTHY, -1);
        /* Burst: 20 per tick in, 10 per tick out, on every partition. */
        int64_t pos[4];
        for (int i = 0; i < 4; i++)
                pos[i] = w->q[i].hi;
        for (int t = 0; t < WINDOW_MS / 2; t += TICK_MS) {
                for (int i = 0; i < 4; i++) {
                        w->q[i].hi += 20;
                        pos[i] += 10;
                        wb_consume(w, i, pos[i], 10);
                        w->q[i].committed = pos[i];
                }
                wb_tick(w, TICK_MS);
        }
        assert_verdict(w, LAGPROBE_DIAG_PRODUCER_BURST, -1);
        int64_t burst_lag = wb_behind(w, pos);
        assert_int_equal(w->snap.total_lag, burst_lag);
        assert_true(burst_lag > ALLOW);
        assert_true(w->snap.ingress_rate > 1.1 * w->snap.egress_rate);
        assert_non_null(strstr(w->snap.diagnosis_detail, "msg/s"));
        wb_events(w);
        const wev_t *e = wb_last_event(w, LAGPROBE_EVENT_DIAGNOSIS, -2);
        assert_non_null(e);
        assert_int_equal(e->partition, -1);
        assert_non_null(strstr(e->message, "diagnosis producer_burst"));
        assert_int_equal(e->count, burst_lag);
        /* With the time since the last poll in the warning band the cause
         * is the consumer, not the producers. */
        w->p->max_poll_interval_ms = 10000;
        ST(w->p->last_poll_us, lp_mono_us() - 8000000);
        wb_tick(w, TICK_MS);
        assert_verdict(w, LAGPROBE_DIAG_CONSUMER_SLOW, -1);
        assert_non_null(strstr(w->snap.diagnosis_detail, "no poll for"));
        ST(w->p->last_poll_us, 0);
        /* Lag above the allowance but ingress = egress: no burst. */
        for (int t = 0; t < WINDOW_MS + TICK_MS; t += TICK_MS) {
                for (int i = 0; i < 4; i++) {
                        w->q[i].hi += 10;
                        pos[i] += 10;
                        wb_consume(w, i, pos[i], 10);
                        w->q[i].committed = pos[i];
                }
                wb_tick(w, TICK_MS);
        }
        /* README: neither a burst nor a slow consumer is healthy, "not
         * shrinking"; the lag is what the burst left. */
        assert_verdict(w, LAGPROBE_DIAG_HEALTHY, -1);
        int64_t behind = wb_behind(w, pos);
        assert_int_equal(w->snap.total_lag, behind);
        assert_true(behind > ALLOW);
        /* Ingress far above egress but lag within the allowance: no burst. */
        wb_t *v = wb_default(2);
        for (int t = 0; t < 2 * WINDOW_MS; t += TICK_MS) {
                for (int i = 0; i < 2; i++) {
                        v->q[i].hi += 4;
                        wb_consume(v, i, v->q[i].hi - 2, 2);
                        v->q[i].committed = v->q[i].hi - 2;
                }
                wb_tick(v, TICK_MS);
        }
        assert_verdict(v, LAGPROBE_DIAG_HEALTHY, -1);
        wb_free(v);
        wb_free(w);
}

/* in/out messages per tick on each of 4 partitions for ms, consumed and
 * committed as they go. */
static void wb_rates(wb_t *w, int64_t *pos, int64_t in, int64_t out, int ms) {
        for (int t = 0; t < ms; t += TICK_MS) {
                for (int i = 0; i < 4; i++) {
                        w->q[i].hi += in;
                        pos[i] += out;
                        wb_consume(w, i, pos[i], out);
                        w->q[i].committed = pos[i];
                }
                wb_tick(w, TICK_MS);
        }
}

/* Issue 12: a burst needs producers above their own baseline; lag that
 * grows while they append as before is the consumer's: slower than it
 * was, or never fast enough. None of them measures processing time, and
 * no detail says it is fine. */
static void test_burst_vs_slow_by_baselines(void **state) {
        (void)state;
        for (int k = 0; k < 3; k++) {
                wb_t *w = wb_default(4);
                int64_t pos[4] = {0, 0, 0, 0};
                lagprobe_diagnosis_t want = k ? LAGPROBE_DIAG_CONSUMER_SLOW
                                              : LAGPROBE_DIAG_PRODUCER_BURST;
                const char *words = k == 0   ? "up from"
                                    : k == 1 ? "down from"
                                             : "under-provisioned";
                if (k < 2) /* keeping up first */
                        wb_rates(w, pos, 10, 10, 2 * WINDOW_MS);
                if (k == 0) /* producers x4 */
                        wb_rates(w, pos, 40, 10, WINDOW_MS / 2);
                else if (k == 1) /* the consumer slows down */
                        wb_rates(w, pos, 10, 6, WINDOW_MS / 2);
                else /* 10 in, 6 out from the start */
                        wb_rates(w, pos, 10, 6, 2 * WINDOW_MS);
                wb_snap(w);
                print_message("  %s: in %.0f/s (base %.0f) out %.0f/s (base "
                              "%.0f): %s: %s\n",
                              words, w->snap.ingress_rate,
                              w->snap.ingress_baseline, w->snap.egress_rate,
                              w->snap.egress_baseline, w->snap.diagnosis_name,
                              w->snap.diagnosis_detail);
                assert_int_equal(w->snap.diagnosis, want);
                assert_non_null(strstr(w->snap.diagnosis_detail, words));
                assert_null(strstr(w->snap.diagnosis_detail, "fine"));
                assert_string_equal(w->snap.time_source, "none");
                assert_string_equal(w->snap.message_source, "none");
                if (k == 0)
                        assert_non_null(strstr(w->snap.diagnosis_detail,
                                               "not measured"));
                wb_free(w);
        }
}

/* Issue 12: a partition the app paused. The statistics' high watermark
 * freezes (no fetch) while the watchdog's refresh sees the broker's grow;
 * nothing is consumed. Then it resumes and drains. */
static void test_paused_partition_wb(void **state) {
        (void)state;
        wb_t *w = wb_default(2);
        const int64_t r[2] = {2, 2};
        wb_flow(w, r, WINDOW_MS);
        assert_verdict(w, LAGPROBE_DIAG_HEALTHY, -1);
        int64_t broker = w->q[1].hi;
        for (int t = 0; t < 2 * WINDOW_MS; t += TICK_MS) {
                w->q[0].hi += 2;
                wb_consume(w, 0, w->q[0].hi, 2);
                w->q[0].committed = w->q[0].hi;
                broker += 2;
                lp_slot_t *s = w->slot[1];
                pthread_mutex_lock(&w->p->wlock);
                uint32_t q = lp_wbegin(&s->sseq);
                ST(s->s_hi_query, broker);
                ST(s->s_hi_query_us, w->ts_us);
                lp_wend(&s->sseq, q);
                pthread_mutex_unlock(&w->p->wlock);
                wb_tick(w, TICK_MS);
                const lagprobe_partition_t *x = wb_part(w, 1);
                assert_int_not_equal(x->status, LAGPROBE_PSTATUS_IDLE);
                assert_int_not_equal(x->status, LAGPROBE_PSTATUS_STALLED);
                assert_int_not_equal(w->snap.diagnosis,
                                     LAGPROBE_DIAG_STUCK_PARTITION);
        }
        const lagprobe_partition_t *x = wb_part(w, 1);
        print_message("  [1] %s: %s; %s: %s\n", x->status_name,
                      x->status_reason, w->snap.diagnosis_name,
                      w->snap.diagnosis_detail);
        assert_int_equal(x->status, LAGPROBE_PSTATUS_PAUSED);
        assert_non_null(strstr(x->status_reason, "and growing"));
        assert_int_equal(x->effective_lag, broker - w->q[1].committed);
        /* Partition 0 is consumed and committed up to its end. */
        assert_int_equal(w->snap.total_lag, broker - w->q[1].committed);
        assert_true(x->ingress_rate > 10 && x->ingress_rate < 30);
        assert_verdict(w, LAGPROBE_DIAG_PARTITION_PAUSED, 1);
        /* Resume: the statistics' figure catches up with the broker's and
         * the backlog drains. No hot partition, no burst. */
        w->q[1].hi = broker;
        for (int t = 0; t < 2 * WINDOW_MS; t += TICK_MS) {
                for (int i = 0; i < 2; i++)
                        w->q[i].hi += 2;
                wb_consume(w, 0, w->q[0].hi, 2);
                w->q[0].committed = w->q[0].hi;
                int64_t step = w->q[1].hi - w->q[1].committed;
                step = step > 40 ? 40 : step;
                wb_consume(w, 1, w->q[1].committed + step, step);
                w->q[1].committed += step;
                wb_tick(w, TICK_MS);
                wb_snap(w);
                assert_int_not_equal(w->snap.diagnosis,
                                     LAGPROBE_DIAG_HOT_PARTITION);
                assert_int_not_equal(w->snap.diagnosis,
                                     LAGPROBE_DIAG_PRODUCER_BURST);
        }
        assert_verdict(w, LAGPROBE_DIAG_HEALTHY, -1);
        wb_free(w);
}

/* Lag far above the allowance and not shrinking on every partition
 * (each "lagging"), ingress equal to egress or a little above it (under
 * burst_ratio): the consumer does not keep up with its backlog, so the
 * verdict must not say "consumer keeps up" (test_diagnosis.c's burst
 * scenario sees this for ~100 ms when ingress falls through the band). */
static void test_lagging_is_not_keeping_up(void **state) {
        (void)state;
        for (int extra = 0; extra <= 1; extra++) {
                wb_t *w = wb_default(4);
                int64_t pos[4];
                for (int i = 0; i < 4; i++) {
                        w->q[i].hi = 500;
                        pos[i] = 400;
                        w->q[i].committed = 400;
                        wb_consume(w, i, 400, 400);
                }
                /* 20 in, 20 (or 19) out per tick, a window and a half. */
                for (int t = 0; t < 3 * WINDOW_MS / 2; t += TICK_MS) {
                        for (int i = 0; i < 4; i++) {
                                w->q[i].hi += 20;
                                pos[i] += 20 - extra;
                                wb_consume(w, i, pos[i], 20 - extra);
                                w->q[i].committed = pos[i];
                        }
                        wb_tick(w, TICK_MS);
                }
                for (int i = 0; i < 4; i++)
                        assert_status(w, i, LAGPROBE_PSTATUS_LAGGING, NULL);
                /* 100 behind each at the start, one more per tick when the
                 * consumer takes 19 of 20. */
                int64_t behind = 0;
                for (int i = 0; i < 4; i++) {
                        assert_int_equal(w->q[i].hi - pos[i],
                                         100 + extra * 3 * WINDOW_MS / 2 /
                                                   TICK_MS);
                        behind += w->q[i].hi - pos[i];
                }
                wb_snap(w);
                print_message("  in %.0f/s out %.0f/s, total lag %" PRId64
                              ": %s: %s\n",
                              w->snap.ingress_rate, w->snap.egress_rate,
                              w->snap.total_lag, w->snap.diagnosis_name,
                              w->snap.diagnosis_detail);
                assert_int_equal(w->snap.total_lag, behind);
                /* ingress / egress is 1 or 20/19, under burst_ratio (1.1):
                 * README's "anything else", healthy, "not shrinking". */
                assert_verdict(w, LAGPROBE_DIAG_HEALTHY, -1);
                if (w->snap.diagnosis == LAGPROBE_DIAG_HEALTHY &&
                    strstr(w->snap.diagnosis_detail, "consumer keeps up"))
                        H_FAIL("every partition lagging (total lag %" PRId64
                             ", not shrinking) and the verdict says healthy: "
                             "\"%s\"",
                             w->snap.total_lag, w->snap.diagnosis_detail);
                wb_free(w);
        }
}

/* Per-message time from the hooks: the median of the newest third of the
 * window against a slow-moving baseline of it. Values go into the
 * real-time sub-windows lp_diagnose() reads; documents are fed quickly, so
 * each one moves the baseline while the recent values stand still. */

/* Documents every tick_ms of the documents' clock. */
static int slow_tick_ms = TICK_MS;

static int slow_tick_ms_reset(void) {
        slow_tick_ms = TICK_MS;
        return 0;
}

/* A probe (config c) whose baseline has settled on base_us. */
static wb_t *slow_probe_cfg(const lagprobe_config_t *c, int64_t base_us) {
        wb_t *w = wb_new(2, c);
        /* The values below stand for the batch hooks' (medians); without
         * hooks they would be inferred ones (lower quartile). */
        ST(w->p->exact, 1);
        const int64_t r[2] = {1, 1};
        for (int t = 0; t <= c->window_ms / 2; t += slow_tick_ms)
                wb_step(w, r, slow_tick_ms); /* statuses known */
        int64_t now = lp_mono_us();
        for (int k = 0; k < 20; k++)
                lp_whist_add(&w->p->h_msg, w->p->win_us, now, base_us);
        for (int k = 0; k < 40; k++)
                wb_step(w, r, slow_tick_ms);
        assert_verdict(w, LAGPROBE_DIAG_HEALTHY, -1);
        return w;
}

static wb_t *slow_probe(int64_t base_us) {
        lagprobe_config_t c;
        wb_config(&c);
        return slow_probe_cfg(&c, base_us);
}

/* Three times as many recent_us values as base ones join the recent
 * sub-windows (so the recent median is recent_us); one document. */
static lagprobe_diagnosis_t slow_step(wb_t *w, int64_t recent_us, int n) {
        const int64_t r[2] = {1, 1};
        int64_t now = lp_mono_us();
        for (int k = 0; k < n; k++)
                lp_whist_add(&w->p->h_msg, w->p->win_us, now, recent_us);
        wb_step(w, r, slow_tick_ms);
        wb_snap(w);
        return w->snap.diagnosis;
}

static void assert_slow_detail(wb_t *w, int64_t recent_us, int64_t base_us) {
        double a = 0, b = 0;
        assert_int_equal(w->snap.diagnosis, LAGPROBE_DIAG_CONSUMER_SLOW);
        assert_int_equal(w->snap.diagnosis_partition, -1);
        assert_int_equal(
            sscanf(w->snap.diagnosis_detail,
                   "per-message time p50 %lf ms, was %lf ms", &a, &b),
            2);
        /* Within the histogram's bucket error; the baseline may have
         * crept up by a few per cent. */
        double ra = recent_us / 1000.0, rb = base_us / 1000.0;
        assert_true(fabs(a - ra) <= ra * 0.04);
        assert_true(b >= rb * 0.96 && b <= rb * 1.10);
}

static void test_consumer_slow_ratio(void **state) {
        (void)state;
        const lagprobe_diagnosis_t SLOW = LAGPROBE_DIAG_CONSUMER_SLOW;
        wb_t *w = slow_probe(4000);
        assert_int_equal(slow_step(w, 8000, 60), SLOW);
        assert_slow_detail(w, 8000, 4000);
        wb_events(w);
        const wev_t *e = wb_last_event(w, LAGPROBE_EVENT_DIAGNOSIS, -2);
        assert_non_null(e);
        assert_non_null(strstr(e->message, "diagnosis consumer_slow"));
        assert_int_equal(e->severity, 4);
        wb_free(w);

        w = slow_probe(4000);
        assert_int_equal(slow_step(w, 6200, 60), SLOW); /* 1.55x */
        wb_free(w);
        /* 1.25x: under slow_ratio 1.5. */
        w = slow_probe(4000);
        assert_int_equal(slow_step(w, 5000, 60), LAGPROBE_DIAG_HEALTHY);
        wb_free(w);
        /* Faster is never slow. */
        w = slow_probe(8000);
        assert_int_equal(slow_step(w, 4000, 60), LAGPROBE_DIAG_HEALTHY);
        wb_free(w);
        /* Fewer than 5 recent values: nothing to compare. */
        w = wb_default(2);
        wb_flow(w, (const int64_t[]){1, 1}, WINDOW_MS);
        assert_verdict(w, LAGPROBE_DIAG_HEALTHY, -1);
        assert_int_equal(slow_step(w, 8000, 4), LAGPROBE_DIAG_HEALTHY);
        wb_free(w);
}

/* The baseline follows a slowdown slowly. README: "a slowdown stays
 * visible for several windows instead of becoming the new normal at once".
 * With the default window_ms (60 s) and statistics every second (the
 * probe's default statistics.interval.ms), a doubling of the per-message
 * time must stay consumer_slow for at least two windows, and end once the
 * new speed has become the normal. */
static void test_consumer_slow_baseline(void **state) {
        (void)state;
        lagprobe_config_t c;
        lagprobe_config_init(&c);
        c.watchdog_interval_ms = 0;
        c.dwell_ms = 0; /* how long the rule holds, not the hysteresis */
        slow_tick_ms = c.stats_interval_ms;
        wb_t *w = slow_probe_cfg(&c, 4000);
        assert_int_equal(slow_step(w, 8000, 60), LAGPROBE_DIAG_CONSUMER_SLOW);
        int docs = 1, max = 20 * c.window_ms / slow_tick_ms;
        while (docs < max &&
               slow_step(w, 8000, 0) == LAGPROBE_DIAG_CONSUMER_SLOW)
                docs++;
        slow_tick_ms = TICK_MS;
        double windows = (double)docs * c.stats_interval_ms / c.window_ms;
        print_message("  consumer_slow for %d documents, %.2f windows\n", docs,
                      windows);
        assert_true(docs < max); /* it does become the normal */
        assert_verdict(w, LAGPROBE_DIAG_HEALTHY, -1);
        if (windows < 2)
                H_FAIL("a doubled per-message time is consumer_slow for %d "
                     "statistics documents = %.2f windows (window_ms %d, "
                     "statistics every %d ms): the baseline moves per "
                     "document, not per window",
                     docs, windows, c.window_ms, c.stats_interval_ms);
        wb_free(w);
}

/* rebalance_storm: more than storm_rebalances assignments, or more than one
 * eviction, within storm_window_ms; it outranks every other verdict. */
static void test_rebalance_storm(void **state) {
        (void)state;
        wb_t *w = wb_default(2);
        const int64_t r[2] = {1, 1};
        wb_flow(w, r, WINDOW_MS);
        int64_t now = lp_mono_us();
        pthread_mutex_lock(&w->p->wlock);
        for (int k = 0; k < 3; k++) /* storm_rebalances (3): not yet */
                w->p->w_assign_t[w->p->w_assign_n++ % 16] = now - k * 1000;
        pthread_mutex_unlock(&w->p->wlock);
        wb_flow(w, r, TICK_MS);
        assert_verdict(w, LAGPROBE_DIAG_HEALTHY, -1);
        pthread_mutex_lock(&w->p->wlock);
        w->p->w_assign_t[w->p->w_assign_n++ % 16] = now;
        pthread_mutex_unlock(&w->p->wlock);
        wb_flow(w, r, TICK_MS);
        assert_verdict(w, LAGPROBE_DIAG_REBALANCE_STORM, -1);
        assert_non_null(strstr(w->snap.diagnosis_detail,
                               "4 assignments in 300 s without evictions"));
        wb_free(w);

        /* One eviction is not a storm (it is consumer_slow, see
         * test_evicted_lived_down), two are. */
        w = wb_default(2);
        wb_flow(w, r, WINDOW_MS);
        lp_note_eviction(w->p, lp_mono_us());
        wb_flow(w, r, TICK_MS);
        assert_verdict(w, LAGPROBE_DIAG_CONSUMER_SLOW, -1);
        lp_note_eviction(w->p, lp_mono_us());
        wb_flow(w, r, TICK_MS);
        assert_verdict(w, LAGPROBE_DIAG_REBALANCE_STORM, -1);
        assert_non_null(strstr(w->snap.diagnosis_detail, "0 assignments and 2 "
                                                         "evictions in 300 s"));
        assert_non_null(
            strstr(w->snap.diagnosis_detail, "max.poll.interval.ms"));
        wb_free(w);

        /* Older than storm_window_ms: forgotten. */
        lagprobe_config_t c;
        wb_config(&c);
        c.storm_window_ms = 1000;
        w = wb_new(2, &c);
        wb_flow(w, r, WINDOW_MS);
        now = lp_mono_us();
        pthread_mutex_lock(&w->p->wlock);
        for (int k = 0; k < 8; k++)
                w->p->w_assign_t[w->p->w_assign_n++ % 16] = now - 2000000;
        pthread_mutex_unlock(&w->p->wlock);
        wb_flow(w, r, TICK_MS);
        assert_verdict(w, LAGPROBE_DIAG_HEALTHY, -1);
        wb_free(w);
}

/* An evicted member is consumer_slow, at once and without waiting for its
 * partitions' statuses, until it has held an assignment again for
 * max(window_ms, max.poll.interval.ms): in between it may look healthy for
 * the moment before its next overlong batch, and the verdict must not say
 * so (test_diagnosis.c's rebalance loop). Without an assignment again it
 * is lived down after the same time from the eviction. */
static void test_evicted_lived_down(void **state) {
        (void)state;
        wb_t *w = wb_default(2);
        w->p->max_poll_interval_ms = 3500; /* longer than the window */
        const int64_t hold_us = 3500 * 1000;
        const int64_t r[2] = {1, 1};
        wb_flow(w, r, WINDOW_MS);
        assert_verdict(w, LAGPROBE_DIAG_HEALTHY, -1);
        int64_t now = lp_mono_us();
        lp_note_eviction(w->p, now - 1500000);
        /* Revoked: nothing assigned, which alone would be unknown (w->n 0:
         * the snapshot lists none). */
        for (int i = 0; i < 2; i++)
                ST(w->slot[i]->assigned, 0);
        w->n = 0;
        wb_tick(w, TICK_MS);
        assert_verdict(w, LAGPROBE_DIAG_CONSUMER_SLOW, -1);
        const char *d = w->snap.diagnosis_detail;
        print_message("  evicted, not assigned: %s\n", d);
        double ago = 0;
        assert_int_equal(sscanf(d, "evicted %lf s ago", &ago), 1);
        assert_true(ago >= 1.5 && ago < 3.0);
        assert_non_null(strstr(d, "max.poll.interval.ms=3500"));
        assert_non_null(strstr(d, "no assignment since"));
        /* Assigned again 1 s ago: still not lived down. */
        for (int i = 0; i < 2; i++)
                ST(w->slot[i]->assigned, 1);
        w->n = 2;
        ST(w->p->g_last_assign_us, lp_mono_us() - 1000000);
        wb_flow(w, r, TICK_MS);
        assert_verdict(w, LAGPROBE_DIAG_CONSUMER_SLOW, -1);
        d = w->snap.diagnosis_detail;
        print_message("  assigned again: %s\n", d);
        double again = 0, hold = 0;
        const char *a = strstr(d, "assigned again ");
        assert_non_null(a);
        assert_int_equal(sscanf(a, "assigned again %lf s ago: not yet polling "
                                   "in time for %lf s",
                                &again, &hold),
                         2);
        assert_true(again >= 1.0 && again < 2.5);
        assert_true(hold == 3.5);
        /* The assignment after the eviction held for the whole time:
         * healthy again. */
        now = lp_mono_us();
        ST(w->p->last_eviction_us, now - hold_us - 2000000);
        ST(w->p->g_last_assign_us, now - hold_us - 1000);
        wb_flow(w, r, TICK_MS);
        assert_verdict(w, LAGPROBE_DIAG_HEALTHY, -1);
        wb_free(w);

        /* No assignment after the eviction: lived down hold_us after it
         * (unknown then: nothing assigned). */
        w = wb_default(2);
        w->p->max_poll_interval_ms = 3500;
        wb_flow(w, r, WINDOW_MS);
        for (int i = 0; i < 2; i++)
                ST(w->slot[i]->assigned, 0);
        w->n = 0;
        lp_note_eviction(w->p, lp_mono_us() - hold_us + 300000);
        wb_tick(w, TICK_MS);
        assert_verdict(w, LAGPROBE_DIAG_CONSUMER_SLOW, -1);
        ST(w->p->last_eviction_us, lp_mono_us() - hold_us - 1000);
        wb_tick(w, TICK_MS);
        assert_verdict(w, LAGPROBE_DIAG_UNKNOWN, -1);
        wb_free(w);
}

/* ======================================================================
 * Transitions: what is said on the way into an incident, tick by tick.
 * ==================================================================== */

/* The poison message of test_diagnosis.c, tick by tick: four partitions
 * flowing at 20 msg/s, committed as consumed; then partition 2's handler
 * fails on offset X forever: committed stays X, position X + 1, the
 * message is handed out again and again, new messages keep arriving. On
 * the way to stalled / stuck_partition the partition is legitimately
 * lagging, but it never consumes new messages, so it is neither "stopped"
 * (consumption without commits) nor a "hot_partition" (it receives no more
 * than its fair share; it carries the lag because it is stuck). */
static void test_poison_transition(void **state) {
        (void)state;
        wb_t *w = wb_default(4);
        const int64_t r[4] = {2, 2, 2, 2};
        wb_flow(w, r, WINDOW_MS + TICK_MS);
        assert_verdict(w, LAGPROBE_DIAG_HEALTHY, -1);
        const int64_t X = w->q[2].hi;
        wb_consume(w, 2, X + 1, 1); /* the poison, first delivery */
        char seq[4096];
        size_t o = 0;
        int stopped = 0, hot = 0, stuck_at = -1;
        for (int t = 1; t <= 3 * WINDOW_MS / (2 * TICK_MS); t++) {
                for (int i = 0; i < 4; i++) {
                        w->q[i].hi += 2;
                        if (i == 2)
                                continue;
                        wb_consume(w, i, w->q[i].hi, 2);
                        w->q[i].committed = w->q[i].hi;
                }
                w->q[2].committed = X;
                wb_consume(w, 2, X + 1, 3); /* redelivered */
                wb_tick(w, TICK_MS);
                wb_events(w);
                const lagprobe_partition_t *x = wb_part(w, 2);
                wb_snap(w);
                x = &w->parts[2];
                if (o < sizeof seq - 64)
                        o += (size_t)snprintf(seq + o, sizeof seq - o,
                                              " +%d:%s/%s", t * TICK_MS,
                                              x->status_name,
                                              w->snap.diagnosis_name);
                stopped += x->status == LAGPROBE_PSTATUS_STOPPED;
                hot += w->snap.diagnosis == LAGPROBE_DIAG_HOT_PARTITION;
                if (stuck_at < 0 &&
                    w->snap.diagnosis == LAGPROBE_DIAG_STUCK_PARTITION)
                        stuck_at = t * TICK_MS;
        }
        print_message("  [2] status/verdict after the poison:%s\n", seq);
        assert_status(w, 2, LAGPROBE_PSTATUS_STALLED, "re-consumed");
        assert_verdict(w, LAGPROBE_DIAG_STUCK_PARTITION, 2);
        /* Stalled once a window holds nothing but the stall. */
        assert_true(stuck_at > 0 && stuck_at <= WINDOW_MS + TICK_MS);
        if (stopped || hot)
                H_FAIL("on the way to stuck_partition: %d tick(s) with [2] "
                     "\"stopped\", %d tick(s) with verdict hot_partition",
                     stopped, hot);
        wb_free(w);
}

/* The app spends 4 s inside one batch (well within its
 * max.poll.interval.ms) with a 50-message backlog; the statistics queued
 * meanwhile are all served when it polls again. Position and commits
 * froze because nothing was polled, not because a message keeps failing:
 * nothing was re-consumed, so "likely a poison message" is the wrong
 * cause (this is what test_diagnosis.c's rebalance loop sees after its
 * first eviction). */
static void test_long_batch_is_not_poison(void **state) {
        (void)state;
        wb_t *w = wb_default(1);
        w->q[0].hi = 50;
        wb_consume(w, 0, 1, 1); /* handed offset 0, then a long batch */
        for (int t = 0; t < 40; t++)
                wb_tick(w, TICK_MS);
        wb_snap(w);
        const lagprobe_partition_t *x = &w->parts[0];
        print_message("  [0] %s: %s; verdict %s: %s\n", x->status_name,
                      x->status_reason, w->snap.diagnosis_name,
                      w->snap.diagnosis_detail);
        if (w->snap.diagnosis == LAGPROBE_DIAG_STUCK_PARTITION &&
            strstr(w->snap.diagnosis_detail, "(0 messages re-consumed)") &&
            strstr(w->snap.diagnosis_detail, "poison"))
                H_FAIL("a frozen partition with nothing re-consumed is "
                     "diagnosed as a poison message: %s",
                     w->snap.diagnosis_detail);
        /* README: every partition stalled with nothing re-consumed is the
         * whole consumer stuck in processing. */
        assert_verdict(w, LAGPROBE_DIAG_CONSUMER_SLOW, -1);
        assert_non_null(
            strstr(w->snap.diagnosis_detail, "no partition progressing"));
        wb_free(w);
}

/* Burst then silence: 40/tick in and 10/tick out on four partitions for
 * one second, then nothing more arrives and the consumer drains 10/tick.
 * producer_burst while the producers outrun the consumer; afterwards, while
 * the backlog is above the allowance, healthy says "catching up" with the
 * time to drain (README), never "consumer keeps up". */
static void test_burst_until_drained(void **state) {
        (void)state;
        wb_t *w = wb_default(4);
        const int64_t r[4] = {2, 2, 2, 2};
        wb_flow(w, r, WINDOW_MS + TICK_MS);
        assert_verdict(w, LAGPROBE_DIAG_HEALTHY, -1);
        int64_t pos[4];
        for (int i = 0; i < 4; i++)
                pos[i] = w->q[i].hi;
        int burst_seen = 0, healthy_behind = 0, catching_up = 0, t;
        int64_t healthy_lag = 0, healthy_t = 0;
        char healthy_detail[256] = "";
        for (t = 1; t < 200; t++) {
                int drained = 1;
                for (int i = 0; i < 4; i++) {
                        if (t <= 10)
                                w->q[i].hi += 40;
                        pos[i] += 10;
                        if (pos[i] > w->q[i].hi)
                                pos[i] = w->q[i].hi;
                        drained &= pos[i] == w->q[i].hi;
                        wb_consume(w, i, pos[i], 10);
                        w->q[i].committed = pos[i];
                }
                wb_tick(w, TICK_MS);
                wb_snap(w);
                burst_seen |= w->snap.diagnosis == LAGPROBE_DIAG_PRODUCER_BURST;
                if (w->snap.diagnosis == LAGPROBE_DIAG_HEALTHY &&
                    w->snap.total_lag > ALLOW &&
                    strstr(w->snap.diagnosis_detail, "catching up"))
                        catching_up++;
                if (burst_seen && !healthy_behind &&
                    w->snap.diagnosis == LAGPROBE_DIAG_HEALTHY &&
                    w->snap.total_lag > ALLOW &&
                    !strstr(w->snap.diagnosis_detail, "catching up")) {
                        healthy_behind = 1;
                        healthy_lag = w->snap.total_lag;
                        healthy_t = t * TICK_MS;
                        snprintf(healthy_detail, sizeof healthy_detail, "%s",
                                 w->snap.diagnosis_detail);
                }
                if (drained)
                        break;
        }
        print_message("  drained after %d ms; producer_burst seen: %d; "
                      "catching up for %d ticks\n",
                      t * TICK_MS, burst_seen, catching_up);
        assert_true(burst_seen);
        assert_true(t < 200);
        assert_true(catching_up > 0);
        if (healthy_behind)
                H_FAIL("verdict healthy (\"%s\") %" PRId64 " ms after the burst "
                     "began with total lag %" PRId64 " > allowance %d, %" PRId64
                     " ms before drained",
                     healthy_detail, healthy_t, healthy_lag, ALLOW,
                     (int64_t)t * TICK_MS - healthy_t);
        wb_flow(w, NULL, TICK_MS);
        assert_verdict(w, LAGPROBE_DIAG_HEALTHY, -1);
        wb_free(w);
}

#define T(f, td) cmocka_unit_test_teardown(f, td)

/* ======================================================================
 * Hysteresis and quiet events (issue 13)
 * ==================================================================== */

static wb_t *wb_dwell(int n, int dwell_ms) {
        lagprobe_config_t c;
        wb_config(&c);
        c.dwell_ms = dwell_ms;
        return wb_new(n, &c);
}

/* Partition i: in messages arrive, out are consumed (up to the end) and
 * committed; no document. */
static void wb_lag_step(wb_t *w, int i, int64_t in, int64_t out) {
        int64_t pos = w->q[i].committed > 0 ? w->q[i].committed : 0;
        w->q[i].hi += in;
        if (pos + out > w->q[i].hi)
                out = w->q[i].hi - pos;
        wb_consume(w, i, pos + out, out);
        w->q[i].committed = pos + out;
}

static int wb_raw(wb_t *w, int i) {
        return (int)LD(w->slot[i]->s_raw);
}

static int wb_shown(wb_t *w, int i) { return LD(w->slot[i]->s_status); }

static int wb_count(wb_t *w, lagprobe_event_type_t t) {
        int c = 0;
        for (int k = 0; k < w->rec.n; k++)
                c += w->rec.ev[k].type == t;
        return c;
}

/* A new status shows once it held for dwell_ms (5 documents of 100 ms);
 * meanwhile the reason says what is coming. Stalled shows at once. */
static void test_status_dwell(void **state) {
        (void)state;
        wb_t *w = wb_dwell(1, 500);
        for (int k = 0; k < WINDOW_MS / TICK_MS; k++) {
                wb_lag_step(w, 0, 1, 1);
                wb_tick(w, TICK_MS);
        }
        assert_status(w, 0, LAGPROBE_PSTATUS_OK, "lag 0, within the allowance");
        assert_int_equal(wb_events(w), 2); /* the status and the verdict */
        /* 10 in and 5 out per document: lagging. */
        int first_raw = -1, shown_at = -1;
        for (int k = 0; k < 40 && shown_at < 0; k++) {
                wb_lag_step(w, 0, 10, 5);
                wb_tick(w, TICK_MS);
                if (first_raw < 0 && wb_raw(w, 0) == LAGPROBE_PSTATUS_LAGGING)
                        first_raw = k;
                if (wb_shown(w, 0) == LAGPROBE_PSTATUS_LAGGING)
                        shown_at = k;
                if (first_raw >= 0 && k == first_raw + 2) {
                        assert_status(w, 0, LAGPROBE_PSTATUS_OK,
                                      "now lagging for 0.2 s of 0.5 s: lag ");
                        wb_events(w);
                        assert_int_equal(
                            wb_count(w, LAGPROBE_EVENT_PARTITION_STATUS), 1);
                }
        }
        assert_true(first_raw >= 0);
        assert_int_equal(shown_at - first_raw, 5);
        const lagprobe_partition_t *x = wb_part(w, 0);
        char want[64];
        snprintf(want, sizeof want, "lag %" PRId64 ", above the allowance of 10",
                 x->effective_lag);
        assert_status(w, 0, LAGPROBE_PSTATUS_LAGGING, want);
        /* Its event comes a window after the first (one per partition per
         * window). */
        for (int k = 0; k < WINDOW_MS / TICK_MS; k++) {
                wb_lag_step(w, 0, 10, 5);
                wb_tick(w, TICK_MS);
                wb_events(w);
        }
        assert_int_equal(wb_count(w, LAGPROBE_EVENT_PARTITION_STATUS), 2);
        const wev_t *e = wb_last_event(w, LAGPROBE_EVENT_PARTITION_STATUS, 0);
        assert_non_null(strstr(e->message, "[0] is lagging: lag "));
        assert_string_equal(e->state, "lagging");
        /* Frozen (nothing consumed or committed) with the lag above the
         * allowance: stalled with the document that shows it. */
        int stalled_at = -1;
        for (int k = 0; k < 40 && stalled_at < 0; k++) {
                wb_lag_step(w, 0, 1, 0);
                wb_tick(w, TICK_MS);
                assert_int_equal(wb_shown(w, 0) == LAGPROBE_PSTATUS_STALLED,
                                 wb_raw(w, 0) == LAGPROBE_PSTATUS_STALLED);
                if (wb_raw(w, 0) == LAGPROBE_PSTATUS_STALLED)
                        stalled_at = k;
        }
        assert_true(stalled_at >= 0);
        wb_events(w);
        assert_int_equal(wb_count(w, LAGPROBE_EVENT_PARTITION_STATUS), 3);
        assert_string_equal(
            wb_last_event(w, LAGPROBE_EVENT_PARTITION_STATUS, 0)->state,
            "stalled");
        wb_free(w);
}

/* The verdict too: hot_partition shows once it held for the dwell, the
 * detail saying so meanwhile; one event per verdict. */
static void test_verdict_dwell(void **state) {
        (void)state;
        wb_t *w = wb_dwell(4, 500);
        const int64_t even[4] = {5, 5, 5, 5}, skew[4] = {1, 40, 1, 1};
        wb_flow(w, even, WINDOW_MS);
        assert_verdict(w, LAGPROBE_DIAG_HEALTHY, -1);
        wb_events(w);
        int first_raw = -1, shown_at = -1;
        for (int k = 0; k < 3 * WINDOW_MS / TICK_MS && shown_at < 0; k++) {
                wb_step(w, skew, TICK_MS);
                int raw = (int)LD(w->p->g_dev[LP_DEV_RAW]);
                if (first_raw < 0 && raw == LAGPROBE_DIAG_HOT_PARTITION)
                        first_raw = k;
                if (LD(w->p->g_diag) == LAGPROBE_DIAG_HOT_PARTITION)
                        shown_at = k;
                if (first_raw >= 0 && k == first_raw + 1) {
                        assert_verdict(w, LAGPROBE_DIAG_HEALTHY, -1);
                        assert_non_null(strstr(w->snap.diagnosis_detail,
                                               "now hot_partition for 0.1 s "
                                               "of 0.5 s: wbt [1] carries "));
                        assert_true(w->snap.diagnosis_share == 0);
                }
        }
        assert_true(first_raw >= 0);
        assert_int_equal(shown_at - first_raw, 5);
        assert_verdict(w, LAGPROBE_DIAG_HOT_PARTITION, 1);
        assert_true(strncmp(w->snap.diagnosis_detail, "wbt [1] carries ", 16) ==
                    0);
        wb_events(w);
        assert_int_equal(wb_count(w, LAGPROBE_EVENT_DIAGNOSIS), 2);
        assert_string_equal(w->rec.ev[w->rec.n - 1].state, "hot_partition");
        wb_free(w);
}

/* Many partitions turning to one status in one pass: one summary event
 * with the machine-readable fields; a few: one event each. */
static void test_status_summary(void **state) {
        (void)state;
        wb_t *w = wb_dwell(8, 0);
        const int64_t r[8] = {1, 1, 1, 1, 1, 1, 1, 1};
        wb_flow(w, r, WINDOW_MS);
        assert_int_equal(wb_events(w), 1 + 1); /* the summary, the verdict */
        const wev_t *e = wb_last_event(w, LAGPROBE_EVENT_PARTITION_STATUS, -2);
        assert_non_null(e);
        assert_string_equal(e->message, "8 of 8 assigned partitions now ok: "
                                        "wbt [0, 1, 2, 3, 4, 5, 6, 7]");
        assert_string_equal(e->state, "ok");
        assert_string_equal(e->topic, TOPIC);
        assert_int_equal(e->partition, -1);
        assert_int_equal(e->count, 8);
        assert_int_equal(e->lag, 0);
        assert_int_equal(e->severity, 6);
        /* Three of them lag: three events. */
        for (int k = 0; k < 2 * WINDOW_MS / TICK_MS; k++) {
                for (int i = 0; i < 8; i++)
                        wb_lag_step(w, i, i < 3 ? 10 : 1, i < 3 ? 5 : 1);
                wb_tick(w, TICK_MS);
        }
        int before = w->rec.n;
        wb_events(w);
        int lagging = 0;
        for (int k = before; k < w->rec.n; k++)
                if (w->rec.ev[k].type == LAGPROBE_EVENT_PARTITION_STATUS) {
                        assert_string_equal(w->rec.ev[k].state, "lagging");
                        assert_true(w->rec.ev[k].partition < 3);
                        assert_int_equal(w->rec.ev[k].severity, 4);
                        lagging++;
                }
        assert_int_equal(lagging, 3);
        wb_free(w);
}

/* At most one partition_status event per partition per window (documents'
 * clock): a change within it is told once the window has passed, if it
 * still holds; a status that went and came back within it is not told. */
static void test_status_rate_limit(void **state) {
        (void)state;
        wb_t *w = wb_dwell(1, 0);
        int k = 0, ok_ev = -1, lag_shown = -1, lag_ev = -1;
        for (; k < 100 && lag_ev < 0; k++) {
                if (ok_ev < 0)
                        wb_lag_step(w, 0, 1, 1);
                else
                        wb_lag_step(w, 0, 10, 5);
                wb_tick(w, TICK_MS);
                if (lag_shown < 0 && wb_shown(w, 0) == LAGPROBE_PSTATUS_LAGGING)
                        lag_shown = k;
                int before = w->rec.n;
                wb_events(w);
                for (int j = before; j < w->rec.n; j++) {
                        const wev_t *e = &w->rec.ev[j];
                        if (e->type != LAGPROBE_EVENT_PARTITION_STATUS)
                                continue;
                        if (!strcmp(e->state, "ok"))
                                ok_ev = k;
                        else if (!strcmp(e->state, "lagging"))
                                lag_ev = k;
                }
        }
        print_message("  ok event at %d, lagging from %d, its event at %d\n",
                      ok_ev, lag_shown, lag_ev);
        assert_true(ok_ev >= 0 && lag_shown > ok_ev && lag_shown < ok_ev + 20);
        /* Told one window (20 documents) after the ok event. */
        assert_int_equal(lag_ev, ok_ev + 20);
        /* Caught up at once (ok), then lagging again within the window:
         * no event either way. */
        wb_lag_step(w, 0, 0, 1000);
        wb_tick(w, TICK_MS);
        assert_int_equal(wb_shown(w, 0), LAGPROBE_PSTATUS_OK);
        int back = -1;
        for (int j = 1; j < 19 && back < 0; j++) {
                wb_lag_step(w, 0, 10, 5);
                wb_tick(w, TICK_MS);
                if (wb_shown(w, 0) == LAGPROBE_PSTATUS_LAGGING)
                        back = j;
        }
        assert_true(back > 0);
        for (int j = 0; j < 2 * WINDOW_MS / TICK_MS; j++) {
                wb_lag_step(w, 0, 10, 5);
                wb_tick(w, TICK_MS);
                wb_events(w);
        }
        assert_int_equal(wb_count(w, LAGPROBE_EVENT_PARTITION_STATUS), 2);
        wb_free(w);
}

int main(void) {
        const struct CMUnitTest tests[] = {
            T(test_unknown_until_half_window, teardown),
            T(test_idle, teardown),
            T(test_ok_rates, teardown),
            T(test_eta_keeping_up, teardown),
            T(test_lagging_vs_catching_up, teardown),
            T(test_stalled_poison, teardown),
            T(test_frozen_within_allowance, teardown),
            T(test_stopped, teardown),
            T(test_rewound, teardown),
            T(test_rewound_small_step, teardown),
            T(test_markers, teardown),
            T(test_markers_small_allowance, teardown),
            T(test_markers_not_with_queued_messages, teardown),
            T(test_hot_partition_threshold, teardown),
            T(test_hot_partition_by_lag, teardown),
            T(test_producer_burst_vs_healthy, teardown),
            T(test_lagging_is_not_keeping_up, teardown),
            T(test_consumer_slow_ratio, teardown),
            T(test_consumer_slow_baseline, teardown),
            T(test_rebalance_storm, teardown),
            T(test_evicted_lived_down, teardown),
            T(test_poison_transition, teardown),
            T(test_long_batch_is_not_poison, teardown),
            T(test_burst_until_drained, teardown),
            T(test_markers_not_at_the_end, teardown),
            T(test_one_lag_before_commit, teardown),
            T(test_burst_vs_slow_by_baselines, teardown),
            T(test_paused_partition_wb, teardown),
            T(test_status_dwell, teardown),
            T(test_verdict_dwell, teardown),
            T(test_status_summary, teardown),
            T(test_status_rate_limit, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}

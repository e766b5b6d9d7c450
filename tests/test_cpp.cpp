/* C++ apps as first-class users: an RdKafka::KafkaConsumer with an EventCb,
 * a RebalanceCb and an OffsetCommitCb, the probe attached to
 * conf->c_ptr_global() before KafkaConsumer::create(), as README.md's "C++"
 * section says. create() installs the wrapper's own C callbacks (stats,
 * log, error, throttle, rebalance, offset commit) and its opaque on the
 * conf after the probe was attached; the probe must still see statistics,
 * rebalances, commits and the MAXPOLL line, and the app's callbacks must
 * still get everything, with the wrapper's own objects.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 *  1. lag, committed offset and high watermark per partition equal what
 *     KafkaConsumer::committed() and query_watermark_offsets() say;
 *  2. rebalances counted on join and leave (eager and cooperative), the
 *     same counts as the app's own RebalanceCb saw (under COOPERATIVE the
 *     callbacks that moved partitions, as probe.h says);
 *  3. every app callback still called (EVENT_STATS, EVENT_LOG, the
 *     assignment with the app's own KafkaConsumer*, the commit), with the
 *     probe attached before or after conf->set("event_cb"/"rebalance_cb");
 *  4. headroom_warn before an induced max.poll.interval.ms eviction, then
 *     evicted, while the app's EventCb gets librdkafka's MAXPOLL line;
 *  5. a C++ app without any callback of its own, its probe destroyed
 *     before the consumer is closed.
 *
 * cmocka fails a test with longjmp(), which skips C++ destructors: the test
 * bodies hold only plain data, C++ objects live in the fixture (freed by
 * the teardown), and helpers that use std::string or std::vector return a
 * status that the caller asserts on after they are gone. */
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include <librdkafka/rdkafkacpp.h>

/* harness.h and harness.c are C: their functions have C linkage. The
 * standard headers it includes are already included above or below. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
extern "C" {
#include "harness.h"
}

#define NPARTS 3
#define L_MS 4000       /* max.poll.interval.ms for test 4 */
#define SESSION_MS 3500 /* smallest the mock accepts (harness.h) */

/* ======================================================================
 * The app: one object implementing the three C++ callback interfaces.
 * event_cb runs on librdkafka threads (logs) as well as the polling
 * thread; everything it touches is atomic.
 * ==================================================================== */

class App : public RdKafka::EventCb,
            public RdKafka::RebalanceCb,
            public RdKafka::OffsetCommitCb {
      public:
        /* Set right after create(), before the first consume(): the
         * KafkaConsumer* the RebalanceCb must be handed. */
        RdKafka::KafkaConsumer *self = nullptr;

        std::atomic<long> stats{0}, stats_bad{0}, logs{0}, errors{0},
            others{0}, maxpoll_logs{0};
        std::atomic<int64_t> maxpoll_at_ms{-1};
        std::atomic<long> assigns{0}, revokes{0}, lost{0}, wrong_consumer{0},
            rebalance_errors{0}, cooperative{0};
        /* Callbacks that moved partitions (a non-empty list): what the
         * probe counts under incremental protocols (probe.h). */
        std::atomic<long> moving_assigns{0}, moving_revokes{0};
        std::atomic<long> assigned_now{0}; /* partitions held */
        std::atomic<long> commits{0}, commit_errors{0};
        std::atomic<int64_t> commit_offset[NPARTS];

        App() {
                for (int i = 0; i < NPARTS; i++)
                        commit_offset[i] = -1;
        }

        void event_cb(RdKafka::Event &e) override {
                switch (e.type()) {
                case RdKafka::Event::EVENT_STATS:
                        /* The whole statistics document. */
                        if (e.str().compare(0, 1, "{") == 0 &&
                            e.str().find("\"cgrp\"") != std::string::npos)
                                stats++;
                        else
                                stats_bad++;
                        break;
                case RdKafka::Event::EVENT_LOG:
                        logs++;
                        if (e.fac() == "MAXPOLL" && maxpoll_logs++ == 0)
                                maxpoll_at_ms = h_now_ms();
                        break;
                case RdKafka::Event::EVENT_ERROR:
                        errors++;
                        break;
                default:
                        others++;
                        break;
                }
        }

        void rebalance_cb(RdKafka::KafkaConsumer *c, RdKafka::ErrorCode err,
                          std::vector<RdKafka::TopicPartition *> &parts)
            override {
                if (c != self)
                        wrong_consumer++;
                const bool coop = c->rebalance_protocol() == "COOPERATIVE";
                cooperative += coop;
                RdKafka::Error *e = nullptr;
                RdKafka::ErrorCode ec = RdKafka::ERR_NO_ERROR;
                if (err == RdKafka::ERR__ASSIGN_PARTITIONS) {
                        assigns++;
                        moving_assigns += !parts.empty();
                        if (coop) {
                                e = c->incremental_assign(parts);
                                assigned_now += (long)parts.size();
                        } else {
                                ec = c->assign(parts);
                                assigned_now = (long)parts.size();
                        }
                } else if (err == RdKafka::ERR__REVOKE_PARTITIONS) {
                        revokes++;
                        moving_revokes += !parts.empty();
                        lost += c->assignment_lost();
                        if (coop) {
                                e = c->incremental_unassign(parts);
                                assigned_now -= (long)parts.size();
                        } else {
                                ec = c->unassign();
                                assigned_now = 0;
                        }
                } else {
                        rebalance_errors++;
                        ec = c->unassign();
                        assigned_now = 0;
                }
                if (e) {
                        rebalance_errors++;
                        delete e;
                }
                if (ec)
                        rebalance_errors++;
        }

        void offset_commit_cb(RdKafka::ErrorCode err,
                              std::vector<RdKafka::TopicPartition *> &offs)
            override {
                commits++;
                if (err)
                        commit_errors++;
                for (RdKafka::TopicPartition *tp : offs)
                        if (tp->partition() >= 0 && tp->partition() < NPARTS)
                                commit_offset[tp->partition()] = tp->offset();
        }
};

/* ======================================================================
 * The probe's own event sink (its watchdog thread).
 * ==================================================================== */

#define EV_MAX 256

struct Rec {
        std::mutex mu;
        int n = 0;
        lagprobe_event_type_t type[EV_MAX];
        int64_t at_ms[EV_MAX];
        int64_t since_poll_ms[EV_MAX];

        int count(lagprobe_event_type_t t) {
                std::lock_guard<std::mutex> g(mu);
                int c = 0;
                for (int i = 0; i < n; i++)
                        c += type[i] == t;
                return c;
        }
        /* Index of the first event of type t, -1 none. */
        int first(lagprobe_event_type_t t) {
                std::lock_guard<std::mutex> g(mu);
                for (int i = 0; i < n; i++)
                        if (type[i] == t)
                                return i;
                return -1;
        }
};

extern "C" void rec_cb(const lagprobe_event_t *e, void *opaque) {
        Rec *r = static_cast<Rec *>(opaque);
        std::lock_guard<std::mutex> g(r->mu);
        if (r->n < EV_MAX) {
                r->type[r->n] = e->type;
                r->at_ms[r->n] = h_now_ms();
                r->since_poll_ms[r->n] = e->since_poll_ms;
                r->n++;
        }
}

/* ======================================================================
 * Fixture: the cluster and up to two members, released by the teardown
 * whatever happened (consumers closed before their probes, all before the
 * cluster).
 * ==================================================================== */

struct Member {
        App app;
        Rec rec;
        lagprobe_t *probe = nullptr;
        RdKafka::KafkaConsumer *kc = nullptr; /* NULL once closed */
        int64_t consumed[NPARTS] = {0};
        int64_t total = 0;
        long max_poll_errors = 0; /* ERR__MAX_POLL_EXCEEDED from consume() */
};

static h_cluster_t *cl;
static Member *members[2];
static int64_t g_start;

static int setup(void **state) {
        (void)state;
        g_start = h_now_ms();
        cl = h_cluster_new(1);
        return 0;
}

/* KafkaConsumer::close() (the app's RebalanceCb gets the revoke), then
 * delete, which destroys the librdkafka handle. */
static void member_close(Member *m) {
        if (m && m->kc) {
                m->kc->close();
                delete m->kc;
                m->kc = nullptr;
        }
}

static int teardown(void **state) {
        (void)state;
        for (Member *&m : members) {
                if (!m)
                        continue;
                member_close(m);
                lagprobe_destroy(m->probe);
                delete m;
                m = nullptr;
        }
        h_cluster_destroy(cl);
        cl = nullptr;
        print_message("(%.1f s)\n", (double)(h_now_ms() - g_start) / 1000);
        return 0;
}

/* ======================================================================
 * Making a member: the C++ integration as README.md shows it.
 * ==================================================================== */

enum Order {
        ATTACH_FIRST, /* lagprobe_attach, then conf->set("event_cb", ...) */
        ATTACH_LAST   /* conf->set("event_cb", ...), then lagprobe_attach */
};

struct MemberOpts {
        const char *group;
        const char *strategy = "range";
        Order order = ATTACH_FIRST;
        bool callbacks = true; /* EventCb, RebalanceCb, OffsetCommitCb */
        int max_poll_ms = 10000;
        const char *extra_name = nullptr, *extra_value = nullptr;
};

static bool cset(RdKafka::Conf *conf, const char *name, const char *value,
                 char *err, size_t errsz) {
        std::string es;
        if (conf->set(name, value, es) == RdKafka::Conf::CONF_OK)
                return true;
        snprintf(err, errsz, "%s=%s: %s", name, value, es.c_str());
        return false;
}

static bool set_callbacks(RdKafka::Conf *conf, App *app, char *err,
                          size_t errsz) {
        std::string es;
        if (conf->set("event_cb", static_cast<RdKafka::EventCb *>(app), es) ||
            conf->set("rebalance_cb", static_cast<RdKafka::RebalanceCb *>(app),
                      es) ||
            conf->set("offset_commit_cb",
                      static_cast<RdKafka::OffsetCommitCb *>(app), es)) {
                snprintf(err, errsz, "callbacks: %s", es.c_str());
                return false;
        }
        return true;
}

static bool attach(Member *m, RdKafka::Conf *conf, char *err, size_t errsz) {
        lagprobe_config_t pc;
        lagprobe_config_init(&pc);
        pc.log_cb = rec_cb;
        pc.log_opaque = &m->rec;
        m->probe = lagprobe_new(&pc, err, errsz);
        return m->probe &&
               lagprobe_attach(m->probe, conf->c_ptr_global(), err, errsz) == 0;
}

/* Conf, probe, KafkaConsumer::create(), subscribe. Returns 0, or -1 with
 * the reason in err. */
static int member_start(Member *m, const MemberOpts &o, const char *topic,
                        char *err, size_t errsz) {
        char v[32];
        int session = SESSION_MS;
        int maxpoll = o.max_poll_ms < session ? session : o.max_poll_ms;
        RdKafka::Conf *conf = RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL);
        bool ok = cset(conf, "bootstrap.servers", cl->bootstraps, err, errsz) &&
                  cset(conf, "group.id", o.group, err, errsz);
        snprintf(v, sizeof v, "%d", session);
        ok = ok && cset(conf, "session.timeout.ms", v, err, errsz);
        snprintf(v, sizeof v, "%d", H_HEARTBEAT_MS);
        ok = ok && cset(conf, "heartbeat.interval.ms", v, err, errsz);
        snprintf(v, sizeof v, "%d", maxpoll);
        ok = ok && cset(conf, "max.poll.interval.ms", v, err, errsz);
        snprintf(v, sizeof v, "%d", H_STATS_MS);
        ok = ok && cset(conf, "statistics.interval.ms", v, err, errsz) &&
             cset(conf, "auto.offset.reset", "earliest", err, errsz) &&
             cset(conf, "enable.auto.commit", "false", err, errsz) &&
             cset(conf, "partition.assignment.strategy", o.strategy, err,
                  errsz) &&
             cset(conf, "fetch.wait.max.ms", "50", err, errsz) &&
             cset(conf, "enable.partition.eof", "false", err, errsz);
        if (ok && o.extra_name)
                ok = cset(conf, o.extra_name, o.extra_value, err, errsz);
        /* The order of these two steps does not matter (test 3). */
        if (ok && o.order == ATTACH_FIRST)
                ok = attach(m, conf, err, errsz) &&
                     (!o.callbacks || set_callbacks(conf, &m->app, err, errsz));
        else if (ok)
                ok = (!o.callbacks || set_callbacks(conf, &m->app, err, errsz)) &&
                     attach(m, conf, err, errsz);
        if (ok) {
                std::string es;
                m->kc = RdKafka::KafkaConsumer::create(conf, es);
                if (!m->kc) {
                        snprintf(err, errsz, "create: %s", es.c_str());
                        ok = false;
                }
        }
        /* create() copied the conf (and the probe with it). */
        delete conf;
        if (!ok)
                return -1;
        m->app.self = m->kc;
        std::vector<std::string> topics(1, topic);
        RdKafka::ErrorCode ec = m->kc->subscribe(topics);
        if (ec) {
                snprintf(err, errsz, "subscribe: %s",
                         RdKafka::err2str(ec).c_str());
                return -1;
        }
        return 0;
}

static Member *member_new(const MemberOpts &o, const char *topic) {
        char err[512] = "";
        int slot = members[0] ? 1 : 0;
        assert_null(members[slot]);
        Member *m = members[slot] = new Member();
        if (member_start(m, o, topic, err, sizeof err))
                H_FAIL("member: %s", err);
        return m;
}

/* ======================================================================
 * Polling
 * ==================================================================== */

/* One consume(); returns 1 for a message. */
static int consume_one(Member *m, int timeout_ms) {
        RdKafka::Message *msg = m->kc->consume(timeout_ms);
        int got = 0;
        if (msg->err() == RdKafka::ERR_NO_ERROR) {
                got = 1;
                if (msg->partition() >= 0 && msg->partition() < NPARTS)
                        m->consumed[msg->partition()]++;
                m->total++;
        } else if (msg->err() == RdKafka::ERR__MAX_POLL_EXCEEDED) {
                m->max_poll_errors++;
        }
        delete msg;
        return got;
}

typedef bool(pred_t)(void *arg);

/* Poll the open members round-robin until pred(arg) (returns true) or
 * timeout_ms (returns false; pred NULL: poll the whole time, true). */
static bool poll_until(pred_t *pred, void *arg, int timeout_ms) {
        int64_t end = h_now_ms() + timeout_ms;
        for (;;) {
                if (pred && pred(arg))
                        return true;
                if (h_now_ms() >= end)
                        return !pred;
                for (Member *m : members)
                        if (m && m->kc) {
                                int k = 0;
                                while (consume_one(m, k == 0 ? 10 : 0) &&
                                       ++k < 10000)
                                        ;
                        }
        }
}

/* ======================================================================
 * Independent figures: what the app's own consumer says.
 * ==================================================================== */

/* committed[i] (-1: nothing committed) and hwm[i] for partitions 0..n-1,
 * from KafkaConsumer::committed() and query_watermark_offsets(). */
static int describe(RdKafka::KafkaConsumer *kc, const char *topic, int n,
                    int64_t *committed, int64_t *hwm, char *err,
                    size_t errsz) {
        std::vector<RdKafka::TopicPartition *> parts;
        for (int i = 0; i < n; i++)
                parts.push_back(RdKafka::TopicPartition::create(topic, i));
        RdKafka::ErrorCode ec = kc->committed(parts, h_slow_ms(10000));
        for (int i = 0; !ec && i < n; i++) {
                int64_t off = parts[(size_t)i]->offset();
                ec = parts[(size_t)i]->err();
                committed[parts[(size_t)i]->partition()] = off >= 0 ? off : -1;
        }
        RdKafka::TopicPartition::destroy(parts);
        if (ec) {
                snprintf(err, errsz, "committed: %s",
                         RdKafka::err2str(ec).c_str());
                return -1;
        }
        for (int i = 0; i < n; i++) {
                int64_t lo = -1, hi = -1;
                ec = kc->query_watermark_offsets(topic, i, &lo, &hi,
                                                 h_slow_ms(10000));
                if (ec) {
                        snprintf(err, errsz, "watermarks [%d]: %s", i,
                                 RdKafka::err2str(ec).c_str());
                        return -1;
                }
                hwm[i] = hi;
        }
        return 0;
}

/* Synchronous commit of offsets[i] on partition i (<0: skip). */
static RdKafka::ErrorCode commit(RdKafka::KafkaConsumer *kc, const char *topic,
                                 const int64_t *offsets, int n) {
        std::vector<RdKafka::TopicPartition *> parts;
        for (int i = 0; i < n; i++)
                if (offsets[i] >= 0)
                        parts.push_back(RdKafka::TopicPartition::create(
                            topic, i, offsets[i]));
        RdKafka::ErrorCode ec = kc->commitSync(parts);
        for (size_t i = 0; !ec && i < parts.size(); i++)
                ec = parts[i]->err();
        RdKafka::TopicPartition::destroy(parts);
        return ec;
}

/* A fresh topic (name-<pid>-<n>) of n partitions, count messages in each
 * (count[i] for partition i), and a fresh group name. */
static void make_topic(const char *name, int n, const int64_t *count,
                       char *topic, char *group, size_t size) {
        char gname[48];
        snprintf(gname, sizeof gname, "%s-g", name);
        h_unique(name, topic, size);
        h_unique(gname, group, size);
        h_topic_create(cl, topic, n);
        for (int i = 0; count && i < n; i++)
                h_produce(cl, topic, i, (int)count[i], NULL, 0);
}

/* ======================================================================
 * Wait predicates
 * ==================================================================== */

struct Want {
        Member *m;
        int64_t total;
};

static bool consumed_all(void *a) {
        Want *w = static_cast<Want *>(a);
        return w->m->total >= w->total;
}

/* The probe's partition figures equal the independent ones. */
struct LagWant {
        Member *m;
        const char *topic;
        const int64_t *committed, *hwm;
};

static bool probe_matches(void *a) {
        LagWant *w = static_cast<LagWant *>(a);
        h_snap_t hs;
        h_snap(w->m->probe, &hs);
        for (int i = 0; i < NPARTS; i++) {
                const lagprobe_partition_t *p = h_snap_find(&hs, w->topic, i);
                if (!p || p->committed_offset != w->committed[i] ||
                    p->high_watermark != w->hwm[i])
                        return false;
        }
        return true;
}

/* Each listed member holds want[i] partitions, by its own RebalanceCb and
 * by its probe. */
struct SplitWant {
        Member *m[2];
        long want[2];
        int n;
};

static bool split_is(void *a) {
        SplitWant *w = static_cast<SplitWant *>(a);
        for (int i = 0; i < w->n; i++) {
                h_snap_t hs;
                h_snap(w->m[i]->probe, &hs);
                if (w->m[i]->app.assigned_now != w->want[i] ||
                    hs.s.assignment_size != w->want[i])
                        return false;
        }
        return true;
}

static bool app_committed(void *a) {
        return static_cast<Member *>(a)->app.commits >= 1;
}

/* The probe counted exactly the rebalance callbacks the app got: all of
 * them under EAGER, those that moved partitions under COOPERATIVE (where
 * one membership change comes as a revoke round and an assign round,
 * either possibly empty). */
static void assert_counts_match(Member *m, const char *protocol) {
        h_snap_t hs;
        h_snap(m->probe, &hs);
        const bool coop = !strcmp(protocol, "COOPERATIVE");
        long want_a = coop ? m->app.moving_assigns : m->app.assigns;
        long want_r = coop ? m->app.moving_revokes : m->app.revokes;
        print_message("  %s: app assign %ld (%ld moving) revoke %ld (%ld "
                      "moving) lost %ld; probe %" PRId64 "/%" PRId64
                      "/%" PRId64 " %s\n",
                      hs.s.name, m->app.assigns.load(),
                      m->app.moving_assigns.load(), m->app.revokes.load(),
                      m->app.moving_revokes.load(), m->app.lost.load(),
                      hs.s.assigns, hs.s.revokes, hs.s.lost, hs.s.protocol);
        assert_int_equal(hs.s.assigns, want_a);
        assert_int_equal(hs.s.revokes, want_r);
        assert_int_equal(hs.s.lost, m->app.lost.load());
        assert_int_equal(hs.s.rebalances, hs.s.assigns + hs.s.revokes);
        assert_string_equal(hs.s.protocol, protocol);
        assert_int_equal(m->app.wrong_consumer.load(), 0);
        assert_int_equal(m->app.rebalance_errors.load(), 0);
}

/* ======================================================================
 * 1. Lag equals an independent committed/watermark computation.
 * ==================================================================== */

static void test_lag_matches_committed_and_watermarks(void **state) {
        (void)state;
        char topic[64], group[64], err[512] = "";
        const int64_t produced[NPARTS] = {350, 300, 250}; /* 900 */
        const int64_t commit_at[NPARTS] = {300, 200, 100}; /* 600 */
        make_topic("cpp-lag", NPARTS, produced, topic, group, sizeof topic);

        MemberOpts o;
        o.group = group;
        Member *m = member_new(o, topic);
        Want w = {m, 900};
        assert_true(poll_until(consumed_all, &w, H_JOIN_TIMEOUT_MS));
        assert_int_equal(m->total, 900);

        assert_int_equal(commit(m->kc, topic, commit_at, NPARTS), 0);
        assert_true(poll_until(app_committed, m, h_slow_ms(5000)));

        /* The figures kafka-consumer-groups.sh would print, asked by the
         * test through the app's own consumer. */
        int64_t committed[NPARTS], hwm[NPARTS];
        assert_int_equal(describe(m->kc, topic, NPARTS, committed, hwm, err,
                                  sizeof err),
                         0);
        for (int i = 0; i < NPARTS; i++) {
                assert_int_equal(committed[i], commit_at[i]);
                assert_int_equal(hwm[i], produced[i]);
        }

        /* Statistics come every 100 ms: wait for the probe to have them. */
        LagWant lw = {m, topic, committed, hwm};
        bool ok = poll_until(probe_matches, &lw, h_slow_ms(5000));
        h_snap_t hs;
        h_snap(m->probe, &hs);
        for (int i = 0; i < NPARTS; i++) {
                const lagprobe_partition_t *p = h_snap_find(&hs, topic, i);
                print_message("  [%d] independent committed %" PRId64
                              " hwm %" PRId64 " lag %" PRId64
                              "; probe %" PRId64 " %" PRId64 " %" PRId64 "\n",
                              i, committed[i], hwm[i], hwm[i] - committed[i],
                              p ? p->committed_offset : -2,
                              p ? p->high_watermark : -2, p ? p->lag : -2);
        }
        assert_true(ok);
        assert_int_equal(hs.s.partition_cnt, NPARTS);
        for (int i = 0; i < NPARTS; i++) {
                const lagprobe_partition_t *p = h_snap_find(&hs, topic, i);
                assert_non_null(p);
                assert_int_equal(p->committed_offset, committed[i]);
                assert_int_equal(p->high_watermark, hwm[i]);
                assert_int_equal(p->lag, hwm[i] - committed[i]);
                assert_int_equal(p->position, hwm[i]); /* all consumed */
                assert_int_equal(p->position_lag, 0);
                assert_int_equal(p->consumed, produced[i]);
        }
        assert_int_equal(hs.s.consumed, 900);
        assert_true(hs.s.commits >= 1);
        assert_int_equal(hs.s.commit_errors, 0);
        assert_int_equal(hs.s.bound, 1);

        /* The JSON document says the same. */
        char *json = h_snap_json(m->probe);
        h_json_t *root = h_json_parse(json, strlen(json));
        free(json);
        assert_non_null(root);
        for (int i = 0; i < NPARTS; i++) {
                const h_json_t *p = h_json_find_partition(root, topic, i);
                assert_non_null(p);
                assert_int_equal(h_json_int(p, "lag"), hwm[i] - committed[i]);
                assert_int_equal(h_json_int(p, "high_watermark"), hwm[i]);
                assert_int_equal(h_json_int(p, "committed_offset"),
                                 committed[i]);
        }
        const h_json_t *rb = h_json_get(root, "rebalances");
        int64_t count = h_json_int(rb, "count");
        const h_json_t *proto = h_json_get(rb, "protocol");
        bool eager = proto && proto->type == H_JSTR &&
                     !strcmp(proto->str, "EAGER");
        h_json_free(root);
        assert_int_equal(count, 1);
        assert_true(eager);
        assert_counts_match(m, "EAGER");
}

/* ======================================================================
 * 2. Rebalances on join and leave.
 * ==================================================================== */

/* The probe's assign and revoke counts, both at once. */
static void probe_ar(Member *m, int64_t *assigns, int64_t *revokes) {
        h_snap_t hs;
        h_snap(m->probe, &hs);
        *assigns = hs.s.assigns;
        *revokes = hs.s.revokes;
}

static void two_members(const char *strategy, const char *protocol) {
        char topic[64], group[64];
        const bool eager = !strcmp(protocol, "EAGER");
        int64_t as, rv, a_as, a_rv;
        make_topic("cpp-rb", 4, nullptr, topic, group, sizeof topic);

        MemberOpts o;
        o.group = group;
        o.strategy = strategy;
        Member *a = member_new(o, topic);

        /* a alone: everything, one assign. */
        SplitWant w = {{a, nullptr}, {4, 0}, 1};
        assert_true(poll_until(split_is, &w, H_JOIN_TIMEOUT_MS));
        assert_counts_match(a, protocol);
        probe_ar(a, &as, &rv);
        assert_int_equal(as, 1);
        assert_int_equal(rv, 0);

        /* b joins: two each. */
        Member *b = member_new(o, topic);
        w = {{a, b}, {2, 2}, 2};
        assert_true(poll_until(split_is, &w, H_JOIN_TIMEOUT_MS));
        assert_counts_match(a, protocol);
        assert_counts_match(b, protocol);
        assert_int_equal(a->app.lost.load(), 0);
        probe_ar(a, &a_as, &a_rv);
        probe_ar(b, &as, &rv);
        if (eager) {
                /* a gave everything back and got two; b got two. Every
                 * revoke is followed by an assign (a slow run can take the
                 * mock two rounds, so not pinned to 2/1 and 1/0). */
                assert_true(a_rv >= 1);
                assert_int_equal(a_as, a_rv + 1);
                assert_int_equal(as, rv + 1);
        } else {
                /* Cooperative: a gave two back (its assign round moved
                 * nothing and does not count); b got two. */
                assert_int_equal(a_as, 1);
                assert_int_equal(a_rv, 1);
                assert_int_equal(as, 1);
                assert_int_equal(rv, 0);
        }

        /* b leaves: its close() revokes its partitions, a gets all four. */
        member_close(b);
        assert_counts_match(b, protocol);
        h_snap_t hs;
        h_snap(b->probe, &hs);
        assert_int_equal(hs.s.revokes, hs.s.assigns);
        assert_int_equal(hs.s.assignment_size, 0);
        assert_int_equal(hs.s.partition_cnt, 0);
        assert_int_equal(hs.s.bound, 0);

        w = {{a, nullptr}, {4, 0}, 1};
        assert_true(poll_until(split_is, &w, H_JOIN_TIMEOUT_MS));
        assert_counts_match(a, protocol);
        probe_ar(a, &as, &rv);
        if (eager) {
                /* Everything revoked once more, all four assigned. */
                assert_true(rv > a_rv);
                assert_int_equal(as, rv + 1);
        } else {
                /* Cooperative: nothing of a's is taken away on a leave;
                 * one assign round adds b's two. */
                assert_int_equal(as, a_as + 1);
                assert_int_equal(rv, a_rv);
                assert_true(a->app.cooperative > 0);
        }
}

static void test_rebalances_eager(void **state) {
        (void)state;
        two_members("range", "EAGER");
}

static void test_rebalances_cooperative(void **state) {
        (void)state;
        two_members("cooperative-sticky", "COOPERATIVE");
}

/* ======================================================================
 * 3. The app's callbacks all still called.
 * ==================================================================== */

static bool stats_seen(void *a) {
        Member *m = static_cast<Member *>(a);
        h_snap_t hs;
        h_snap(m->probe, &hs);
        return m->app.stats >= 2 && hs.s.stats_docs >= 2 && m->total >= 20;
}

static void app_callbacks(Order order) {
        char topic[64], group[64];
        const int64_t count[2] = {10, 10};
        make_topic("cpp-cb", 2, count, topic, group, sizeof topic);

        MemberOpts o;
        o.group = group;
        o.order = order;
        /* A producer property on a consumer: librdkafka logs a CONFWARN
         * line, so the EventCb has an EVENT_LOG to get. */
        o.extra_name = "linger.ms";
        o.extra_value = "7";
        Member *m = member_new(o, topic);
        assert_true(poll_until(stats_seen, m, H_JOIN_TIMEOUT_MS));

        const int64_t offs[NPARTS] = {10, 4, -1};
        assert_int_equal(commit(m->kc, topic, offs, 2), 0);
        assert_true(poll_until(app_committed, m, h_slow_ms(5000)));
        /* Let anything duplicated show up. */
        poll_until(nullptr, nullptr, 300);

        print_message("  app: stats %ld (bad %ld) logs %ld errors %ld other "
                      "%ld assign %ld commit %ld\n",
                      m->app.stats.load(), m->app.stats_bad.load(),
                      m->app.logs.load(), m->app.errors.load(),
                      m->app.others.load(), m->app.assigns.load(),
                      m->app.commits.load());
        /* EventCb: statistics (whole documents) and log lines. */
        assert_true(m->app.stats >= 2);
        assert_int_equal(m->app.stats_bad.load(), 0);
        assert_true(m->app.logs >= 1);
        /* RebalanceCb: the assignment, handed the app's KafkaConsumer*. */
        assert_int_equal(m->app.assigns.load(), 1);
        assert_int_equal(m->app.assigned_now.load(), 2);
        assert_int_equal(m->app.wrong_consumer.load(), 0);
        assert_int_equal(m->app.rebalance_errors.load(), 0);
        /* OffsetCommitCb: the one commit, with its offsets. */
        assert_int_equal(m->app.commits.load(), 1);
        assert_int_equal(m->app.commit_errors.load(), 0);
        assert_int_equal(m->app.commit_offset[0].load(), 10);
        assert_int_equal(m->app.commit_offset[1].load(), 4);
        /* Consumption unaffected. */
        assert_int_equal(m->total, 20);

        /* And the probe saw what the callbacks saw. */
        h_snap_t hs;
        h_snap(m->probe, &hs);
        assert_int_equal(hs.s.bound, 1);
        assert_true(hs.s.stats_docs >= 2);
        assert_int_equal(hs.s.stats_errors, 0);
        assert_int_equal(hs.s.commits, 1);
        assert_int_equal(hs.s.consumed, 20);
        const lagprobe_partition_t *p1 = h_snap_find(&hs, topic, 1);
        assert_non_null(p1);
        assert_int_equal(p1->committed_offset, 4);
        assert_counts_match(m, "EAGER");
}

static void test_callbacks_attach_first(void **state) {
        (void)state;
        app_callbacks(ATTACH_FIRST);
}

static void test_callbacks_attach_last(void **state) {
        (void)state;
        app_callbacks(ATTACH_LAST);
}

/* ======================================================================
 * 4. headroom_warn before an induced eviction.
 * ==================================================================== */

struct EvictWant {
        Member *m;
};

static bool evicted_and_back(void *a) {
        Member *m = static_cast<EvictWant *>(a)->m;
        return m->rec.count(LAGPROBE_EVENT_EVICTED) >= 1 &&
               m->rec.count(LAGPROBE_EVENT_HEADROOM_RECOVERED) >= 1 &&
               m->max_poll_errors >= 1 && m->app.maxpoll_logs >= 1 &&
               m->app.lost >= 1; /* served by a consume() after the -147 */
}

static bool got_message(void *a) { return static_cast<Member *>(a)->total > 0; }

static void test_headroom_warn_before_eviction(void **state) {
        (void)state;
        char topic[64], group[64];
        const int64_t count[1] = {5};
        make_topic("cpp-hr", 1, count, topic, group, sizeof topic);

        MemberOpts o;
        o.group = group;
        o.max_poll_ms = L_MS;
        Member *m = member_new(o, topic);
        /* One message at a time, so the stall starts right after a
         * consume() returned one. */
        while (!got_message(m)) {
                int64_t end = g_start + H_JOIN_TIMEOUT_MS + 5000;
                assert_true(h_now_ms() < end);
                consume_one(m, 100);
        }
        int64_t t0 = h_now_ms();
        /* The app is stuck, not polling, for 1.5 x max.poll.interval.ms. */
        h_sleep_ms(L_MS * 3 / 2);
        int64_t t_resume = h_now_ms();
        EvictWant ew = {m};
        bool ok = poll_until(evicted_and_back, &ew, h_slow_ms(10000));

        int iw, ie, nw, ne;
        int64_t w_at, e_at, w_since;
        {
                std::lock_guard<std::mutex> g(m->rec.mu);
                for (int i = 0; i < m->rec.n; i++)
                        print_message("  +%6" PRId64 " ms %s since_poll %" PRId64
                                      "\n",
                                      m->rec.at_ms[i] - t0,
                                      lagprobe_event_name(m->rec.type[i]),
                                      m->rec.since_poll_ms[i]);
        }
        iw = m->rec.first(LAGPROBE_EVENT_HEADROOM_WARN);
        ie = m->rec.first(LAGPROBE_EVENT_EVICTED);
        nw = m->rec.count(LAGPROBE_EVENT_HEADROOM_WARN);
        ne = m->rec.count(LAGPROBE_EVENT_EVICTED);
        {
                std::lock_guard<std::mutex> g(m->rec.mu);
                w_at = iw >= 0 ? m->rec.at_ms[iw] : -1;
                w_since = iw >= 0 ? m->rec.since_poll_ms[iw] : -1;
                e_at = ie >= 0 ? m->rec.at_ms[ie] : -1;
        }
        int64_t maxpoll_at = m->app.maxpoll_at_ms;
        print_message("  resume +%" PRId64 " ms, app's MAXPOLL log +%" PRId64
                      " ms, consume() -147 x%ld\n",
                      t_resume - t0, maxpoll_at >= 0 ? maxpoll_at - t0 : -1,
                      m->max_poll_errors);
        assert_true(ok);
        /* headroom_warn, then evicted, once each. */
        assert_int_equal(nw, 1);
        assert_int_equal(ne, 1);
        assert_true(iw < ie);
        assert_true(w_at <= e_at);
        /* Warned at 70 % of the limit, during the stall, before librdkafka
         * logged MAXPOLL (the app's EventCb got that line). */
        assert_true(w_since >= L_MS * 7 / 10);
        assert_true(w_since < L_MS);
        assert_true(w_at < t_resume);
        assert_true(w_at <= maxpoll_at);
        assert_int_equal(m->app.maxpoll_logs.load(), 1);
        /* The eviction revoked the assignment as lost, through the app's
         * RebalanceCb. */
        assert_true(m->app.lost >= 1);
        h_snap_t hs;
        h_snap(m->probe, &hs);
        assert_int_equal(hs.s.evictions, 1);
        assert_int_equal(hs.s.max_poll_interval_ms, L_MS);
        assert_int_equal(hs.s.events[LAGPROBE_EVENT_HEADROOM_WARN], 1);
        assert_int_equal(hs.s.events[LAGPROBE_EVENT_EVICTED], 1);
        assert_counts_match(m, "EAGER");
}

/* ======================================================================
 * 5. A C++ app with no callback of its own: the probe's defaults (it
 *    assigns on rebalance) survive create(), which still sets the opaque;
 *    and with the probe destroyed first, close() still completes.
 * ==================================================================== */

static bool assigned_and_stats(void *a) {
        Member *m = static_cast<Member *>(a);
        h_snap_t hs;
        h_snap(m->probe, &hs);
        const lagprobe_partition_t *p =
            hs.s.partition_cnt == 2 ? &hs.parts[0] : nullptr;
        return m->total >= 8 && p && p->high_watermark >= 0;
}

static void test_no_app_callbacks(void **state) {
        (void)state;
        char topic[64], group[64];
        const int64_t count[2] = {4, 4};
        make_topic("cpp-plain", 2, count, topic, group, sizeof topic);
        MemberOpts o;
        o.group = group;
        o.callbacks = false;
        Member *m = member_new(o, topic);
        assert_true(poll_until(assigned_and_stats, m, H_JOIN_TIMEOUT_MS));
        h_snap_t hs;
        h_snap(m->probe, &hs);
        assert_int_equal(hs.s.assigns, 1);
        assert_int_equal(hs.s.revokes, 0);
        assert_string_equal(hs.s.protocol, "EAGER");
        assert_int_equal(hs.s.assignment_size, 2);
        assert_int_equal(hs.s.consumed, 8);
        assert_true(hs.s.stats_docs >= 1);
        /* The app's callback objects were never called (it has none). */
        assert_int_equal(m->app.assigns.load() + m->app.stats.load(), 0);

        /* The probe may go first: it goes quiet but still does the
         * librdkafka default on the revoke that close() serves. */
        lagprobe_destroy(m->probe);
        m->probe = nullptr;
        poll_until(nullptr, nullptr, 2 * H_STATS_MS);
        RdKafka::ErrorCode ec = m->kc->close();
        delete m->kc;
        m->kc = nullptr;
        assert_int_equal(ec, 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(
                test_lag_matches_committed_and_watermarks, setup, teardown),
            cmocka_unit_test_setup_teardown(test_rebalances_eager, setup,
                                            teardown),
            cmocka_unit_test_setup_teardown(test_rebalances_cooperative, setup,
                                            teardown),
            cmocka_unit_test_setup_teardown(test_callbacks_attach_first, setup,
                                            teardown),
            cmocka_unit_test_setup_teardown(test_callbacks_attach_last, setup,
                                            teardown),
            cmocka_unit_test_setup_teardown(test_headroom_warn_before_eviction,
                                            setup, teardown),
            cmocka_unit_test_setup_teardown(test_no_app_callbacks, setup,
                                            teardown),
        };
        int rc = cmocka_run_group_tests(tests, NULL, NULL);
        /* Let librdkafka's C++ handles finish going away (valgrind). */
        RdKafka::wait_destroyed(5000);
        return rc;
}

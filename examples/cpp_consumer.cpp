/* lagprobe from C++: an RdKafka::KafkaConsumer with its own EventCb,
 * RebalanceCb and OffsetCommitCb, and the probe attached to the C conf
 * under the C++ one (conf->c_ptr_global()) before KafkaConsumer::create().
 * Every line that exists only for lagprobe ends with a lagprobe comment.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Usage: cpp_consumer [-b BROKERS] [-t TOPIC] [-g GROUP] [-n MESSAGES]
 *                     [-d SECONDS] [-s STALL_MS] [-m MAX_POLL_MS]
 *                     [-S STRATEGY] [-a]
 *   -b  bootstrap.servers; without it an embedded librdkafka mock cluster
 *       starts on 127.0.0.1 (a 3-partition TOPIC), so the example runs on
 *       its own
 *   -t  topic (default lagprobe-cpp); -g group.id (default lagprobe-cpp)
 *   -n  messages to produce first (default 300; 0: none)
 *   -d  how long to consume (default 8 s; the first group join on the mock
 *       cluster alone takes about 3 s)
 *   -s  once, after the first messages, stall STALL_MS without polling, as
 *       a slow handler would: the probe warns at 70 % of max.poll.interval.ms
 *       (headroom_warn), 90 % (headroom_critical), and past 100 % librdkafka
 *       evicts the consumer (evicted); e.g. -s 7500 or -s 11000
 *   -m  max.poll.interval.ms (default 10000; session.timeout.ms is 6000,
 *       heartbeat.interval.ms 2000)
 *   -S  partition.assignment.strategy (default range; cooperative-sticky
 *       makes the RebalanceCb use incremental_assign/unassign)
 *   -a  attach the probe after conf->set("event_cb"/"rebalance_cb"/...)
 *       instead of before: the result is the same
 * At the end it prints the probe's snapshot as one JSON document on stdout
 * and its health verdict on stderr; everything else goes to stderr, so
 * `build/examples/cpp_consumer | jq .` works.
 *
 * Build: make (then build/examples/cpp_consumer), or by hand: probe.c is C,
 * compiled by a C compiler, and linked into the C++ program:
 *   cc -std=c11 -c ../probe.c $(pkg-config --cflags rdkafka)
 *   c++ -I.. cpp_consumer.cpp probe.o $(pkg-config --cflags --libs rdkafka++) \
 *       $(pkg-config --libs rdkafka) -lpthread -lm
 */
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h> /* getopt */

#include <librdkafka/rdkafkacpp.h>

#include "probe.h" /* lagprobe: a C header, already wrapped in extern "C" */

/* Only for the standalone mode; needs rdkafka.h, which probe.h includes. */
#include <librdkafka/rdkafka_mock.h>

/* ------------------------------------------------------------------------
 * The app's own callbacks: what an existing C++ consumer already has. The
 * probe changes none of what they receive.
 * ---------------------------------------------------------------------- */

class AppCallbacks : public RdKafka::EventCb,
                     public RdKafka::RebalanceCb,
                     public RdKafka::OffsetCommitCb {
      public:
        std::atomic<long> stats{0}, logs{0}, assigns{0}, revokes{0},
            commits{0};

        /* Statistics, logs, errors, throttling. Log lines may come from
         * librdkafka's own threads: only atomics and stderr here. */
        void event_cb(RdKafka::Event &event) override {
                switch (event.type()) {
                case RdKafka::Event::EVENT_STATS:
                        stats++; /* event.str() is the statistics JSON */
                        break;
                case RdKafka::Event::EVENT_LOG:
                        logs++;
                        if (event.severity() <= RdKafka::Event::EVENT_SEVERITY_WARNING)
                                fprintf(stderr, "librdkafka %s: %s\n",
                                        event.fac().c_str(),
                                        event.str().c_str());
                        break;
                case RdKafka::Event::EVENT_ERROR:
                        fprintf(stderr, "error: %s: %s\n",
                                RdKafka::err2str(event.err()).c_str(),
                                event.str().c_str());
                        break;
                default:
                        break;
                }
        }

        /* The app takes what it is offered. The rebalance protocol decides
         * the calls: COOPERATIVE (cooperative-sticky) hands out and takes
         * back only the partitions that move; EAGER everything. */
        void rebalance_cb(RdKafka::KafkaConsumer *consumer,
                          RdKafka::ErrorCode err,
                          std::vector<RdKafka::TopicPartition *> &parts)
            override {
                const bool coop = consumer->rebalance_protocol() == "COOPERATIVE";
                RdKafka::Error *error = nullptr;
                if (err == RdKafka::ERR__ASSIGN_PARTITIONS) {
                        assigns++;
                        fprintf(stderr, "rebalance: assign %zu partition(s) (%s)\n",
                                parts.size(), coop ? "COOPERATIVE" : "EAGER");
                        if (coop)
                                error = consumer->incremental_assign(parts);
                        else
                                consumer->assign(parts);
                } else {
                        revokes++;
                        fprintf(stderr, "rebalance: revoke %zu partition(s)%s\n",
                                parts.size(),
                                consumer->assignment_lost() ? " (lost)" : "");
                        if (coop)
                                error = consumer->incremental_unassign(parts);
                        else
                                consumer->unassign();
                }
                if (error) {
                        fprintf(stderr, "rebalance: %s\n", error->str().c_str());
                        delete error;
                }
        }

        /* Result of every commit, served inside consume(). */
        void offset_commit_cb(RdKafka::ErrorCode err,
                              std::vector<RdKafka::TopicPartition *> &) override {
                commits++;
                if (err && err != RdKafka::ERR__NO_OFFSET)
                        fprintf(stderr, "commit failed: %s\n",
                                RdKafka::err2str(err).c_str());
        }
};

/* lagprobe's own events (headroom_warn, evicted, rebalance, ...), from its
 * watchdog thread. Route them into the app's log; must not block. */
extern "C" void on_lagprobe_event(const lagprobe_event_t *e, void *) { /* lagprobe */
        fprintf(stderr, "[lagprobe] %s: %s\n", e->name, e->message);   /* lagprobe */
}                                                                      /* lagprobe */

/* ------------------------------------------------------------------------
 * Standalone mode only: an in-process mock cluster (its host is a C++
 * Producer; the mock API is C, reached through c_ptr()). Not part of the
 * integration.
 * ---------------------------------------------------------------------- */

static RdKafka::Producer *mock_host;
static rd_kafka_mock_cluster_t *mock_cluster;

static std::string start_mock(const std::string &topic) {
        std::string errstr;
        RdKafka::Conf *conf = RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL);
        /* This client never connects anywhere: hide its notice about it. */
        conf->set("log_level", "3", errstr);
        mock_host = RdKafka::Producer::create(conf, errstr);
        delete conf;
        if (!mock_host) {
                fprintf(stderr, "mock: %s\n", errstr.c_str());
                return "";
        }
        mock_cluster = rd_kafka_mock_cluster_new(mock_host->c_ptr(), 1);
        if (!mock_cluster)
                return "";
        rd_kafka_mock_topic_create(mock_cluster, topic.c_str(), 3, 1);
        return rd_kafka_mock_cluster_bootstraps(mock_cluster);
}

static void stop_mock() {
        if (mock_cluster)
                rd_kafka_mock_cluster_destroy(mock_cluster);
        delete mock_host;
}

/* Produce count messages, wait for them. Each has its own key, so the
 * partitioner spreads them over the partitions (keyless messages would go
 * to one partition per batch). */
static bool produce(const std::string &brokers, const std::string &topic,
                    int count) {
        std::string errstr;
        RdKafka::Conf *conf = RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL);
        conf->set("bootstrap.servers", brokers, errstr);
        RdKafka::Producer *p = RdKafka::Producer::create(conf, errstr);
        delete conf;
        if (!p) {
                fprintf(stderr, "producer: %s\n", errstr.c_str());
                return false;
        }
        for (int i = 0; i < count; i++) {
                std::string key = "key-" + std::to_string(i);
                std::string value = "message " + std::to_string(i);
                RdKafka::ErrorCode err = p->produce(
                    topic, RdKafka::Topic::PARTITION_UA,
                    RdKafka::Producer::RK_MSG_COPY,
                    const_cast<char *>(value.data()), value.size(), key.data(),
                    key.size(), 0, nullptr);
                if (err == RdKafka::ERR__QUEUE_FULL) {
                        p->poll(100);
                        i--;
                } else if (err) {
                        fprintf(stderr, "produce: %s\n",
                                RdKafka::err2str(err).c_str());
                        break;
                }
        }
        bool ok = p->flush(10000) == RdKafka::ERR_NO_ERROR;
        delete p;
        fprintf(stderr, "produced %d messages to %s\n", count, topic.c_str());
        return ok;
}

/* ------------------------------------------------------------------------
 * The consumer
 * ---------------------------------------------------------------------- */

static volatile std::sig_atomic_t stop_requested;
static void on_signal(int) { stop_requested = 1; }

struct Options {
        std::string brokers, topic = "lagprobe-cpp", group = "lagprobe-cpp";
        std::string strategy = "range";
        int messages = 300, seconds = 8, stall_ms = 0, max_poll_ms = 10000;
        bool attach_last = false;
};

static bool parse(int argc, char **argv, Options &o) {
        int c;
        while ((c = getopt(argc, argv, "b:t:g:n:d:s:m:S:a")) != -1) {
                switch (c) {
                case 'b': o.brokers = optarg; break;
                case 't': o.topic = optarg; break;
                case 'g': o.group = optarg; break;
                case 'n': o.messages = atoi(optarg); break;
                case 'd': o.seconds = atoi(optarg); break;
                case 's': o.stall_ms = atoi(optarg); break;
                case 'm': o.max_poll_ms = atoi(optarg); break;
                case 'S': o.strategy = optarg; break;
                case 'a': o.attach_last = true; break;
                default: return false;
                }
        }
        return optind == argc && o.max_poll_ms >= 6000;
}

/* The probe, attached to the C conf under the C++ one. */
static lagprobe_t *attach_probe(RdKafka::Conf *conf) {          /* lagprobe */
        char errstr[512];                                       /* lagprobe */
        lagprobe_config_t pc;                                   /* lagprobe */
        lagprobe_config_init(&pc);                              /* lagprobe */
        pc.log_cb = on_lagprobe_event;                          /* lagprobe */
        lagprobe_t *probe = lagprobe_new(&pc, errstr, sizeof errstr); /* lagprobe */
        if (!probe ||                                           /* lagprobe */
            lagprobe_attach(probe, conf->c_ptr_global(), errstr, /* lagprobe */
                            sizeof errstr) != 0) {              /* lagprobe */
                /* The consumer works without it. */
                fprintf(stderr, "lagprobe off: %s\n", errstr);  /* lagprobe */
                lagprobe_destroy(probe);                        /* lagprobe */
                return nullptr;                                 /* lagprobe */
        }                                                       /* lagprobe */
        return probe;                                           /* lagprobe */
}                                                               /* lagprobe */

/* The app's conf, with the probe attached before or after the callbacks
 * are set: both work. KafkaConsumer::create() installs the C++ wrapper's
 * own C callbacks (and its opaque) on this conf, then copies it; the probe
 * travels with the copy and wraps whatever callbacks it carries. */
static RdKafka::Conf *make_conf(const Options &o, AppCallbacks &app,
                                lagprobe_t **probe) {
        std::string errstr;
        RdKafka::Conf *conf = RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL);
        const std::string max_poll = std::to_string(o.max_poll_ms);
        const char *const props[][2] = {
            {"bootstrap.servers", o.brokers.c_str()},
            {"group.id", o.group.c_str()},
            {"auto.offset.reset", "earliest"},
            {"enable.auto.commit", "false"}, /* commits below */
            {"partition.assignment.strategy", o.strategy.c_str()},
            {"session.timeout.ms", "6000"},
            {"heartbeat.interval.ms", "2000"},
            {"max.poll.interval.ms", max_poll.c_str()},
            /* The probe reads watermarks from statistics (it would set
             * 1000 ms itself if this stayed 0). */
            {"statistics.interval.ms", "500"},
        };
        for (const auto &kv : props)
                if (conf->set(kv[0], kv[1], errstr) != RdKafka::Conf::CONF_OK) {
                        fprintf(stderr, "%s: %s\n", kv[0], errstr.c_str());
                        delete conf;
                        return nullptr;
                }

        if (!o.attach_last)
                *probe = attach_probe(conf);                    /* lagprobe */
        if (conf->set("event_cb", static_cast<RdKafka::EventCb *>(&app), errstr) ||
            conf->set("rebalance_cb", static_cast<RdKafka::RebalanceCb *>(&app),
                      errstr) ||
            conf->set("offset_commit_cb",
                      static_cast<RdKafka::OffsetCommitCb *>(&app), errstr)) {
                fprintf(stderr, "callbacks: %s\n", errstr.c_str());
                delete conf;
                return nullptr;
        }
        if (o.attach_last)
                *probe = attach_probe(conf);                    /* lagprobe */
        return conf;
}

/* Consume for o.seconds; commit every 100 messages and once a second. */
static void consume_loop(RdKafka::KafkaConsumer *consumer, const Options &o) {
        using clock = std::chrono::steady_clock;
        const auto end = clock::now() + std::chrono::seconds(o.seconds);
        auto next_commit = clock::now() + std::chrono::seconds(1);
        long consumed = 0, uncommitted = 0;
        bool stalled = o.stall_ms <= 0;
        while (!stop_requested && clock::now() < end) {
                RdKafka::Message *msg = consumer->consume(100);
                if (msg->err() == RdKafka::ERR_NO_ERROR) {
                        consumed++;
                        uncommitted++;
                        /* ... the app's processing of msg->payload() ... */
                        if (!stalled && consumed >= 10) {
                                /* A handler that hangs: no poll for a while. */
                                fprintf(stderr, "stalling %d ms without polling "
                                        "(max.poll.interval.ms=%d)\n",
                                        o.stall_ms, o.max_poll_ms);
                                std::this_thread::sleep_for(
                                    std::chrono::milliseconds(o.stall_ms));
                                stalled = true;
                        }
                } else if (msg->err() != RdKafka::ERR__TIMED_OUT) {
                        /* E.g. ERR__MAX_POLL_EXCEEDED after a long stall. */
                        fprintf(stderr, "consume: %s\n", msg->errstr().c_str());
                }
                delete msg;
                if (uncommitted >= 100 ||
                    (uncommitted > 0 && clock::now() >= next_commit)) {
                        consumer->commitAsync(); /* what was consumed */
                        uncommitted = 0;
                        next_commit = clock::now() + std::chrono::seconds(1);
                }
        }
        if (uncommitted > 0)
                consumer->commitSync();
        /* One more statistics interval inside consume(), so the commit's
         * result and fresh watermarks reach the app and the probe. */
        const auto settle = clock::now() + std::chrono::milliseconds(600);
        while (clock::now() < settle)
                delete consumer->consume(100);
        fprintf(stderr, "consumed %ld messages\n", consumed);
}

int main(int argc, char **argv) {
        Options o;
        if (!parse(argc, argv, o)) {
                fprintf(stderr,
                        "usage: %s [-b BROKERS] [-t TOPIC] [-g GROUP] "
                        "[-n MESSAGES] [-d SECONDS] [-s STALL_MS] "
                        "[-m MAX_POLL_MS >= 6000] [-S STRATEGY] [-a]\n",
                        argv[0]);
                return 2;
        }
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);

        if (o.brokers.empty()) {
                o.brokers = start_mock(o.topic);
                if (o.brokers.empty()) {
                        stop_mock();
                        return 1;
                }
                fprintf(stderr, "standalone: mock cluster %s\n",
                        o.brokers.c_str());
        }
        if (o.messages > 0 && !produce(o.brokers, o.topic, o.messages)) {
                stop_mock();
                return 1;
        }

        AppCallbacks app;
        lagprobe_t *probe = nullptr;                            /* lagprobe */
        RdKafka::Conf *conf = make_conf(o, app, &probe);
        if (!conf) {
                lagprobe_destroy(probe);                        /* lagprobe */
                stop_mock();
                return 1;
        }
        std::string errstr;
        RdKafka::KafkaConsumer *consumer =
            RdKafka::KafkaConsumer::create(conf, errstr);
        delete conf; /* create() made its own copy, probe included */
        if (!consumer) {
                fprintf(stderr, "consumer: %s\n", errstr.c_str());
                lagprobe_destroy(probe);                        /* lagprobe */
                stop_mock();
                return 1;
        }
        RdKafka::ErrorCode err =
            consumer->subscribe(std::vector<std::string>(1, o.topic));
        if (err)
                fprintf(stderr, "subscribe: %s\n", RdKafka::err2str(err).c_str());
        else
                consume_loop(consumer, o);

        /* Any thread may do this, e.g. a health endpoint. */
        std::vector<char> buf(65536);                           /* lagprobe */
        size_t need = lagprobe_snapshot_json(probe, buf.data(), buf.size()); /* lagprobe */
        if (need >= buf.size()) {                               /* lagprobe */
                buf.resize(need + 4096);                        /* lagprobe */
                lagprobe_snapshot_json(probe, buf.data(), buf.size()); /* lagprobe */
        }                                                       /* lagprobe */
        printf("%s\n", buf.data());                             /* lagprobe */
        char reasons[256] = "";                                 /* lagprobe */
        lagprobe_health_t health =                              /* lagprobe */
            lagprobe_health(probe, reasons, sizeof reasons);    /* lagprobe */
        fprintf(stderr, "lagprobe health: %s%s%s\n",            /* lagprobe */
                lagprobe_health_name(health), *reasons ? ": " : "", /* lagprobe */
                reasons);                                       /* lagprobe */
        fprintf(stderr,
                "app callbacks: EventCb %ld statistics, %ld log lines; "
                "RebalanceCb %ld assign, %ld revoke; OffsetCommitCb %ld\n",
                app.stats.load(), app.logs.load(), app.assigns.load(),
                app.revokes.load(), app.commits.load());

        consumer->close();
        delete consumer;
        lagprobe_destroy(probe); /* after the consumer, or before */ /* lagprobe */
        stop_mock();
        RdKafka::wait_destroyed(5000);
        return err ? 1 : 0;
}

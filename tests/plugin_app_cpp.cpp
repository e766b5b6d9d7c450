// plugin_app_cpp - an RdKafka::KafkaConsumer for the zero-code end-to-end
// test (tests/e2e_plugin_c.sh). KafkaConsumer::create() installs its own
// C callbacks and then consumes a copy of the conf (rd_kafka_conf_dup()):
// the plugin must come through both. No lagprobe code here.
// SPDX-License-Identifier: BSD-2-Clause
//
//   plugin_app_cpp BOOTSTRAP GROUP TOPIC [NAME=VALUE]...
//
// Sets the properties in order, subscribes, prints "ready", consumes until
// stdin reaches EOF, closes, and prints "stats=N assigns=N" (its EventCb's
// statistics events, its RebalanceCb's assignments).

#include <librdkafka/rdkafkacpp.h>

#include <poll.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

namespace {

class Events : public RdKafka::EventCb {
    public:
        int stats = 0;
        void event_cb(RdKafka::Event &event) override {
                if (event.type() == RdKafka::Event::EVENT_STATS)
                        stats++;
        }
};

class Rebalance : public RdKafka::RebalanceCb {
    public:
        int assigns = 0;
        void rebalance_cb(RdKafka::KafkaConsumer *consumer,
                          RdKafka::ErrorCode err,
                          std::vector<RdKafka::TopicPartition *> &parts) override {
                if (err == RdKafka::ERR__ASSIGN_PARTITIONS) {
                        assigns++;
                        consumer->assign(parts);
                } else {
                        consumer->unassign();
                }
        }
};

bool stdin_closed() {
        struct pollfd pf = {0, POLLIN, 0};
        char buf[64];
        return poll(&pf, 1, 0) > 0 && read(0, buf, sizeof buf) <= 0;
}

} // namespace

int main(int argc, char **argv) {
        if (argc < 4) {
                std::cerr << "usage: plugin_app_cpp BOOTSTRAP GROUP TOPIC "
                             "[NAME=VALUE]...\n";
                return 2;
        }
        std::string err;
        Events events;
        Rebalance rebalance;
        std::unique_ptr<RdKafka::Conf> conf(
            RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
        auto set = [&](const std::string &k, const std::string &v) {
                if (conf->set(k, v, err) != RdKafka::Conf::CONF_OK) {
                        std::cerr << "plugin_app_cpp: " << k << ": " << err << "\n";
                        std::exit(1);
                }
        };
        set("bootstrap.servers", argv[1]);
        set("group.id", argv[2]);
        set("auto.offset.reset", "earliest");
        for (int i = 4; i < argc; i++) {
                std::string a = argv[i];
                size_t eq = a.find('=');
                set(a.substr(0, eq), eq == std::string::npos ? "" : a.substr(eq + 1));
        }
        if (conf->set("event_cb", &events, err) != RdKafka::Conf::CONF_OK ||
            conf->set("rebalance_cb", &rebalance, err) != RdKafka::Conf::CONF_OK) {
                std::cerr << "plugin_app_cpp: callbacks: " << err << "\n";
                return 1;
        }
        std::unique_ptr<RdKafka::KafkaConsumer> consumer(
            RdKafka::KafkaConsumer::create(conf.get(), err));
        if (!consumer) {
                std::cerr << "plugin_app_cpp: " << err << "\n";
                return 1;
        }
        conf.reset();
        consumer->subscribe({argv[3]});
        std::printf("ready\n");
        std::fflush(stdout);
        while (!stdin_closed())
                delete consumer->consume(100);
        consumer->close();
        std::printf("stats=%d assigns=%d\n", events.stats, rebalance.assigns);
        return 0;
}

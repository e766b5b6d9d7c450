/* plugin_app - a plain librdkafka consumer for the zero-code end-to-end
 * tests (tests/e2e_plugin_c.sh). It knows nothing of the plugin: loading
 * it is two -X properties. With -v it vendors the probe instead, the
 * classic integration, so that both can be compared on the same data.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 *   plugin_app -b BOOTSTRAP -g GROUP -t TOPIC [-X NAME=VALUE]... [-v]
 *              [-c OFFSET] [-P TOPIC2]
 *
 *   -X NAME=VALUE  set a property, in order (like kcat's -X)
 *   -v             vendored probe (lagprobe_attach() before rd_kafka_new())
 *   -c OFFSET      commit OFFSET on each partition once consumed past it,
 *                  and nothing else (enable.auto.commit=false)
 *   -P TOPIC2      also a producer in the same process, made from the
 *                  same conf (the consumer gets an rd_kafka_conf_dup()
 *                  copy), producing one message to TOPIC2 per second
 * Polls with rd_kafka_consumer_poll(). Reads commands from stdin, one per
 * line: "snap" prints the vendored probe's JSON snapshot as one line on
 * stdout (with -v; otherwise "{}"). EOF or SIGTERM: close and exit 0.
 * stdout's first line is "ready" once the conf is set up and the client
 * created; errors go to stderr with exit status 1.
 */
#define _POSIX_C_SOURCE 200809L

#include <librdkafka/rdkafka.h>

#include "probe.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* SIGTERM/SIGINT: leave the loop, close, exit 0. */
static volatile sig_atomic_t quit;
static void request_quit(int sig) { quit = sig; }

/* Every failure ends the program: message, status 1. */
static void fail(const char *what, const char *why) {
        fprintf(stderr, "plugin_app: %s: %s\n", what, why);
        exit(1);
}

static void set(rd_kafka_conf_t *conf, const char *name, const char *val) {
        char e[512];
        if (rd_kafka_conf_set(conf, name, val, e, sizeof e) != RD_KAFKA_CONF_OK)
                fail(name, e);
}

#define MAX_PARTS 64
static int64_t committed_at[MAX_PARTS];

int main(int argc, char **argv) {
        const char *boot = NULL, *group = NULL, *topic = NULL, *topic2 = NULL;
        long commit_at = -1;
        int vendored = 0, opt;
        char errstr[512];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        while ((opt = getopt(argc, argv, "b:g:t:X:vc:P:")) != -1) {
                switch (opt) {
                case 'b': boot = optarg; break;
                case 'g': group = optarg; break;
                case 't': topic = optarg; break;
                case 'v': vendored = 1; break;
                case 'c': commit_at = atol(optarg); break;
                case 'P': topic2 = optarg; break;
                case 'X': {
                        char *eq = strchr(optarg, '=');
                        if (!eq)
                                fail("-X", "expected NAME=VALUE");
                        *eq = 0;
                        set(conf, optarg, eq + 1);
                        break;
                }
                default: return 2;
                }
        }
        if (!boot || !group || !topic)
                fail("usage", "-b BOOTSTRAP -g GROUP -t TOPIC are required");
        set(conf, "bootstrap.servers", boot);
        set(conf, "group.id", group);
        set(conf, "auto.offset.reset", "earliest");
        if (commit_at >= 0)
                set(conf, "enable.auto.commit", "false");

        struct sigaction sa = {.sa_handler = request_quit};
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);

        lagprobe_t *probe = NULL;
        if (vendored) {
                probe = lagprobe_new(NULL, errstr, sizeof errstr);
                if (!probe || lagprobe_attach(probe, conf, errstr, sizeof errstr))
                        fail("lagprobe", errstr);
        }
        rd_kafka_t *prod = NULL;
        rd_kafka_conf_t *cconf = conf;
        if (topic2) {
                cconf = rd_kafka_conf_dup(conf);
                prod = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr,
                                    sizeof errstr);
                if (!prod)
                        fail("producer", errstr);
        }
        rd_kafka_topic_partition_list_t *topics =
            rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
        rd_kafka_t *rk =
            rd_kafka_new(RD_KAFKA_CONSUMER, cconf, errstr, sizeof errstr);
        if (!rk)
                fail("consumer", errstr);
        rd_kafka_poll_set_consumer(rk);
        rd_kafka_resp_err_t serr = rd_kafka_subscribe(rk, topics);
        rd_kafka_topic_partition_list_destroy(topics);
        if (serr != RD_KAFKA_RESP_ERR_NO_ERROR)
                fail("subscribe", rd_kafka_err2str(serr));
        for (int i = 0; i < MAX_PARTS; i++)
                committed_at[i] = -1;
        printf("ready\n");
        fflush(stdout);

        char line[256];
        size_t line_len = 0;
        int stdin_open = 1, ticks = 0;
        while (!quit && stdin_open) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
                if (m && !m->err && commit_at >= 0 && m->partition >= 0 &&
                    m->partition < MAX_PARTS && m->offset + 1 >= commit_at &&
                    committed_at[m->partition] < 0) {
                        rd_kafka_topic_partition_list_t *o =
                            rd_kafka_topic_partition_list_new(1);
                        rd_kafka_topic_partition_list_add(
                            o, rd_kafka_topic_name(m->rkt), m->partition)
                            ->offset = commit_at;
                        if (!rd_kafka_commit(rk, o, 0))
                                committed_at[m->partition] = commit_at;
                        rd_kafka_topic_partition_list_destroy(o);
                }
                if (m)
                        rd_kafka_message_destroy(m);
                if (prod && ++ticks % 10 == 0) {
                        rd_kafka_producev(prod, RD_KAFKA_V_TOPIC(topic2),
                                          RD_KAFKA_V_VALUE("x", 1),
                                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                          RD_KAFKA_V_END);
                        rd_kafka_poll(prod, 0);
                }
                struct pollfd pf = {0, POLLIN, 0};
                if (poll(&pf, 1, 0) <= 0)
                        continue;
                ssize_t n = read(0, line + line_len, sizeof line - 1 - line_len);
                if (n <= 0) {
                        if (n == 0 || errno != EINTR)
                                stdin_open = 0;
                        continue;
                }
                line_len += (size_t)n;
                line[line_len] = 0;
                char *nl;
                while ((nl = strchr(line, '\n'))) {
                        *nl = 0;
                        if (!strcmp(line, "snap")) {
                                static char doc[1 << 20];
                                if (probe)
                                        lagprobe_snapshot_json(probe, doc,
                                                               sizeof doc);
                                printf("%s\n", probe ? doc : "{}");
                                fflush(stdout);
                        }
                        line_len -= (size_t)(nl + 1 - line);
                        memmove(line, nl + 1, line_len + 1);
                }
                if (line_len == sizeof line - 1)
                        line_len = 0;
        }
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
        if (prod) {
                rd_kafka_flush(prod, 2000);
                rd_kafka_destroy(prod);
        }
        lagprobe_destroy(probe);
        return 0;
}

/* lagprobe minimal integration: a plain librdkafka consumer loop with the
 * probe added. Every line that exists only for lagprobe ends with a
 * lagprobe comment; everything else is the consumer you already have.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Usage: minimal_consumer [BOOTSTRAP [GROUP [TOPIC [SECONDS]]]]
 *   BOOTSTRAP  bootstrap.servers; omitted or "mock": start an embedded
 *              librdkafka mock cluster on 127.0.0.1 and put a few messages
 *              in TOPIC, so the example runs on its own.
 *   GROUP      group.id (default lagprobe-minimal)
 *   TOPIC      topic (default lagprobe-minimal)
 *   SECONDS    how long to consume (default 8; the first group join on
 *              the mock cluster alone takes about 3 s)
 * At the end it prints the probe's snapshot as JSON on stdout.
 *
 * Build: make (then build/examples/minimal_consumer), or by hand:
 *   cc -std=c11 -I.. minimal_consumer.c ../probe.c \
 *      $(pkg-config --cflags --libs rdkafka) -lpthread -lm
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h> /* only for the standalone mode */

#include "probe.h" /* lagprobe */

/* ------------------------------------------------------------------------
 * Standalone mode only: an in-process mock cluster with a few messages.
 * Not part of the integration.
 * ---------------------------------------------------------------------- */

static rd_kafka_t *mock_host;
static rd_kafka_mock_cluster_t *mock_cluster;

static const char *start_mock(const char *topic) {
        char errstr[256];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        /* This client never connects anywhere: hide its notice about it. */
        rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof errstr);
        mock_host =
            rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
        if (!mock_host) {
                fprintf(stderr, "mock: %s\n", errstr);
                rd_kafka_conf_destroy(conf);
                return NULL;
        }
        mock_cluster = rd_kafka_mock_cluster_new(mock_host, 1);
        if (!mock_cluster)
                return NULL;
        rd_kafka_mock_topic_create(mock_cluster, topic, 2, 1);
        const char *bootstraps = rd_kafka_mock_cluster_bootstraps(mock_cluster);

        /* Produce 100 messages and wait for them to be acknowledged. */
        conf = rd_kafka_conf_new();
        rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, errstr,
                          sizeof errstr);
        rd_kafka_t *producer =
            rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
        if (!producer) {
                fprintf(stderr, "mock producer: %s\n", errstr);
                rd_kafka_conf_destroy(conf);
                return NULL;
        }
        for (int i = 0; i < 100; i++) {
                char value[32];
                int len = snprintf(value, sizeof value, "message %d", i);
                rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic),
                                  RD_KAFKA_V_VALUE(value, (size_t)len),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                  RD_KAFKA_V_END);
        }
        rd_kafka_flush(producer, 10000);
        rd_kafka_destroy(producer);
        fprintf(stderr, "standalone: mock cluster %s, 100 messages in %s\n",
                bootstraps, topic);
        return bootstraps;
}

static void stop_mock(void) {
        if (mock_cluster)
                rd_kafka_mock_cluster_destroy(mock_cluster);
        if (mock_host)
                rd_kafka_destroy(mock_host);
}

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------------
 * The consumer
 * ---------------------------------------------------------------------- */

int main(int argc, char **argv) {
        const char *brokers = argc > 1 ? argv[1] : "mock";
        const char *group = argc > 2 ? argv[2] : "lagprobe-minimal";
        const char *topic = argc > 3 ? argv[3] : "lagprobe-minimal";
        double seconds = argc > 4 ? atof(argv[4]) : 8.0;
        char errstr[512];
        int rc = 1;

        if (!strcmp(brokers, "mock") || !*brokers) {
                brokers = start_mock(topic);
                if (!brokers) {
                        stop_mock();
                        return 1;
                }
        }

        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr,
                              sizeof errstr) != RD_KAFKA_CONF_OK ||
            rd_kafka_conf_set(conf, "group.id", group, errstr,
                              sizeof errstr) != RD_KAFKA_CONF_OK ||
            rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr,
                              sizeof errstr) != RD_KAFKA_CONF_OK) {
                fprintf(stderr, "%s\n", errstr);
                rd_kafka_conf_destroy(conf);
                stop_mock();
                return 1;
        }

        /* After the app's own settings, before rd_kafka_new(). A probe
         * that cannot attach is reported and the consumer runs without it
         * (every lagprobe_ call accepts a NULL probe). */
        lagprobe_t *probe = lagprobe_new(NULL, errstr, sizeof errstr);  /* lagprobe */
        if (!probe ||                                                   /* lagprobe */
            lagprobe_attach(probe, conf, errstr, sizeof errstr) != 0) { /* lagprobe */
                fprintf(stderr, "lagprobe off: %s\n", errstr);          /* lagprobe */
                lagprobe_destroy(probe);                                /* lagprobe */
                probe = NULL;                                           /* lagprobe */
        }                                                               /* lagprobe */

        rd_kafka_t *rk =
            rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
        if (!rk) {
                fprintf(stderr, "%s\n", errstr);
                rd_kafka_conf_destroy(conf);
                lagprobe_destroy(probe);                                /* lagprobe */
                stop_mock();
                return 1;
        }
        rd_kafka_poll_set_consumer(rk);

        rd_kafka_topic_partition_list_t *topics =
            rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
        rd_kafka_resp_err_t err = rd_kafka_subscribe(rk, topics);
        rd_kafka_topic_partition_list_destroy(topics);
        if (err) {
                fprintf(stderr, "subscribe: %s\n", rd_kafka_err2str(err));
                seconds = 0; /* skip the loop, still shut down cleanly */
        }

        /* The app's loop, unchanged. */
        long consumed = 0;
        double end = now_s() + seconds;
        while (now_s() < end) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
                if (!m)
                        continue;
                if (m->err)
                        fprintf(stderr, "consumer: %s\n",
                                rd_kafka_message_errstr(m));
                else
                        consumed++; /* the app's processing goes here */
                rd_kafka_message_destroy(m);
        }
        fprintf(stderr, "consumed %ld messages\n", consumed);

        /* Commit what we consumed so the final lag is exact rather than
         * up to auto.commit.interval.ms old. */
        rd_kafka_commit(rk, NULL, 0);

        /* Any thread can do this at any time, e.g. from a health endpoint.
         * Ask for the size first, like snprintf(). */
        size_t need = lagprobe_snapshot_json(probe, NULL, 0);           /* lagprobe */
        char *json = malloc(need + 1);                                  /* lagprobe */
        if (json) {                                                     /* lagprobe */
                lagprobe_snapshot_json(probe, json, need + 1);          /* lagprobe */
                printf("%s\n", json);                                   /* lagprobe */
                free(json);                                             /* lagprobe */
        }                                                               /* lagprobe */
        rc = err ? 1 : 0;

        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
        /* The probe goes after the consumer it watches. */
        lagprobe_destroy(probe);                                        /* lagprobe */
        stop_mock();
        return rc;
}

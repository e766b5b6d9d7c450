/* mock_broker - librdkafka's mock cluster in a process of its own, so that
 * a benchmark's consumer process does not pay for the broker's work.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 *   mock_broker [-t TOPIC] [-p PARTITIONS] [-m MESSAGES] [-s BYTES]
 *
 * Starts a one-broker mock cluster (127.0.0.1, ephemeral port), creates
 * TOPIC with PARTITIONS partitions, produces MESSAGES messages of BYTES
 * bytes spread round-robin over the partitions, then prints the bootstrap
 * address as one line on stdout and serves until stdin reaches EOF or the
 * process gets SIGTERM/SIGINT. Exit 0 on a clean stop, 1 on any error. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
        (void)sig;
        stop = 1;
}

static void die(const char *what, const char *detail) {
        fprintf(stderr, "mock_broker: %s: %s\n", what, detail ? detail : "");
        exit(1);
}

static int delivery_errors;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m,
                        void *opaque) {
        (void)rk;
        (void)opaque;
        if (m->err)
                delivery_errors++;
}

static void set(rd_kafka_conf_t *conf, const char *k, const char *v) {
        char errstr[256];
        if (rd_kafka_conf_set(conf, k, v, errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK)
                die(k, errstr);
}

int main(int argc, char **argv) {
        const char *topic = "bench";
        int partitions = 1;
        long messages = 100000;
        int size = 100;
        int opt;
        while ((opt = getopt(argc, argv, "t:p:m:s:")) != -1) {
                switch (opt) {
                case 't': topic = optarg; break;
                case 'p': partitions = atoi(optarg); break;
                case 'm': messages = atol(optarg); break;
                case 's': size = atoi(optarg); break;
                default:
                        fprintf(stderr, "usage: %s [-t topic] [-p partitions] "
                                        "[-m messages] [-s bytes]\n",
                                argv[0]);
                        return 1;
                }
        }
        if (partitions < 1 || messages < 0 || size < 0)
                die("arguments", "out of range");

        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal; /* no SA_RESTART: read() returns EINTR */
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);

        char errstr[512];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        set(conf, "log_level", "3");
        rd_kafka_t *owner =
            rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
        if (!owner)
                die("rd_kafka_new", errstr);
        rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(owner, 1);
        if (!mc)
                die("rd_kafka_mock_cluster_new", "failed");
        const char *boot = rd_kafka_mock_cluster_bootstraps(mc);
        if (!strstr(boot, "127.0.0.1:"))
                die("bootstraps not on 127.0.0.1", boot);
        if (rd_kafka_mock_topic_create(mc, topic, partitions, 1))
                die("rd_kafka_mock_topic_create", topic);

        if (messages > 0) {
                conf = rd_kafka_conf_new();
                set(conf, "bootstrap.servers", boot);
                set(conf, "linger.ms", "20");
                set(conf, "batch.num.messages", "10000");
                set(conf, "batch.size", "1000000");
                set(conf, "queue.buffering.max.messages", "1000000");
                set(conf, "compression.codec", "none");
                rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
                rd_kafka_t *prod = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr,
                                                sizeof errstr);
                if (!prod)
                        die("rd_kafka_new(producer)", errstr);
                char *payload = malloc((size_t)size + 1);
                if (!payload)
                        die("malloc", "payload");
                memset(payload, 'x', (size_t)size);
                for (long i = 0; i < messages && !stop; i++) {
                        rd_kafka_resp_err_t e;
                        while ((e = rd_kafka_producev(
                                    prod, RD_KAFKA_V_TOPIC(topic),
                                    RD_KAFKA_V_PARTITION((int32_t)(i % partitions)),
                                    RD_KAFKA_V_VALUE(payload, (size_t)size),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                    RD_KAFKA_V_END)) ==
                               RD_KAFKA_RESP_ERR__QUEUE_FULL)
                                rd_kafka_poll(prod, 10);
                        if (e)
                                die("produce", rd_kafka_err2str(e));
                        if ((i & 1023) == 0)
                                rd_kafka_poll(prod, 0);
                }
                if (rd_kafka_flush(prod, 60000))
                        die("flush", "timed out");
                rd_kafka_poll(prod, 0);
                free(payload);
                rd_kafka_destroy(prod);
                if (delivery_errors)
                        die("produce", "delivery errors");
        }

        printf("%s\n", boot);
        fflush(stdout);

        char buf[256];
        while (!stop) {
                ssize_t n = read(0, buf, sizeof buf);
                if (n == 0)
                        break;
                if (n < 0 && errno != EINTR)
                        break;
        }
        rd_kafka_mock_cluster_destroy(mc);
        rd_kafka_destroy(owner);
        return 0;
}

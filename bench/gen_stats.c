/* gen_stats - write a real librdkafka statistics document to a file.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 *   gen_stats -p PARTITIONS [-T TOPICS] -o FILE
 *
 * Starts a mock cluster (127.0.0.1), creates TOPICS topics ("stats-t0",
 * ...) of PARTITIONS partitions each, produces one message to every
 * partition, and runs a consumer that is assigned every partition and has a
 * stats_cb. Once the consumer has received every message (so every
 * partition has real offsets and is being fetched) and has committed
 * its offsets, the next statistics
 * document is written to FILE, as librdkafka handed it over. Used by the
 * statistics benchmark and as fuzzing seeds. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

static char *g_doc;
static size_t g_len;
static int g_armed;

static void die(const char *what, const char *detail) {
        fprintf(stderr, "gen_stats: %s: %s\n", what, detail ? detail : "");
        exit(1);
}

static void set(rd_kafka_conf_t *conf, const char *k, const char *v) {
        char errstr[256];
        if (rd_kafka_conf_set(conf, k, v, errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK)
                die(k, errstr);
}

static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
        (void)rk;
        (void)opaque;
        if (!g_armed || g_doc)
                return 0;
        g_doc = json; /* ours now (return 1) */
        g_len = len;
        return 1;
}

static int64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv) {
        int parts = 10, topics = 1, opt;
        const char *out = NULL;
        while ((opt = getopt(argc, argv, "p:T:o:")) != -1) {
                switch (opt) {
                case 'p': parts = atoi(optarg); break;
                case 'T': topics = atoi(optarg); break;
                case 'o': out = optarg; break;
                default:
                        fprintf(stderr, "usage: %s -p parts [-T topics] -o file\n",
                                argv[0]);
                        return 1;
                }
        }
        if (!out || parts < 1 || topics < 1 || topics > 100)
                die("arguments", "need -o, -p >= 1, 1 <= -T <= 100");

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

        char name[64];
        for (int t = 0; t < topics; t++) {
                snprintf(name, sizeof name, "stats-t%d", t);
                if (rd_kafka_mock_topic_create(mc, name, parts, 1))
                        die("topic", name);
        }

        conf = rd_kafka_conf_new();
        set(conf, "bootstrap.servers", boot);
        set(conf, "linger.ms", "50");
        rd_kafka_t *prod =
            rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
        if (!prod)
                die("rd_kafka_new(producer)", errstr);
        for (int t = 0; t < topics; t++) {
                snprintf(name, sizeof name, "stats-t%d", t);
                for (int i = 0; i < parts; i++) {
                        rd_kafka_resp_err_t e;
                        while ((e = rd_kafka_producev(
                                    prod, RD_KAFKA_V_TOPIC(name),
                                    RD_KAFKA_V_PARTITION(i),
                                    RD_KAFKA_V_VALUE("v", 1),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                    RD_KAFKA_V_END)) ==
                               RD_KAFKA_RESP_ERR__QUEUE_FULL)
                                rd_kafka_poll(prod, 10);
                        if (e)
                                die("produce", rd_kafka_err2str(e));
                }
        }
        if (rd_kafka_flush(prod, 120000))
                die("flush", "timed out");
        rd_kafka_destroy(prod);

        conf = rd_kafka_conf_new();
        set(conf, "bootstrap.servers", boot);
        set(conf, "group.id", "gen-stats");
        set(conf, "client.id", "gen-stats");
        set(conf, "enable.auto.commit", "false");
        set(conf, "statistics.interval.ms", "200");
        set(conf, "log_level", "3");
        rd_kafka_conf_set_stats_cb(conf, stats_cb);
        rd_kafka_t *rk =
            rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
        if (!rk)
                die("rd_kafka_new(consumer)", errstr);
        rd_kafka_poll_set_consumer(rk);
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(parts * topics);
        for (int t = 0; t < topics; t++) {
                snprintf(name, sizeof name, "stats-t%d", t);
                for (int i = 0; i < parts; i++)
                        rd_kafka_topic_partition_list_add(l, name, i)->offset =
                            RD_KAFKA_OFFSET_BEGINNING;
        }
        if (rd_kafka_assign(rk, l))
                die("assign", "failed");
        rd_kafka_topic_partition_list_destroy(l);

        long want = (long)parts * topics, got = 0;
        int64_t deadline = now_ms() + 120000;
        while (!g_doc) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
                if (m) {
                        if (!m->err)
                                got++;
                        rd_kafka_message_destroy(m);
                }
                if (got >= want && !g_armed) {
                        /* Commit what was consumed, so that the document
                         * carries committed offsets too; the next document
                         * shows every partition fetched and committed. */
                        rd_kafka_resp_err_t e = rd_kafka_commit(rk, NULL, 0);
                        if (e)
                                die("commit", rd_kafka_err2str(e));
                        g_armed = 1;
                }
                if (now_ms() > deadline)
                        die("timeout", got < want ? "consuming" : "statistics");
        }
        FILE *f = fopen(out, "wb");
        if (!f)
                die("open", out);
        /* Drop a trailing NUL if librdkafka counted it. */
        size_t n = g_len;
        while (n > 0 && g_doc[n - 1] == '\0')
                n--;
        if (fwrite(g_doc, 1, n, f) != n || fclose(f))
                die("write", out);
        rd_kafka_mem_free(rk, g_doc);
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
        rd_kafka_mock_cluster_destroy(mc);
        rd_kafka_destroy(owner);
        printf("gen_stats: %s: %zu bytes, %d topic(s) x %d partitions\n", out,
               n, topics, parts);
        return 0;
}

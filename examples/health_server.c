/* lagprobe health_server: a consumer that serves its own /healthz, /metrics
 * and /lag over HTTP, for Kubernetes probes and a Prometheus scrape.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * One process, three kinds of threads:
 *   - the consumer thread: a plain batch poll loop with the probe's batch
 *     hooks around each batch, committing offsets itself;
 *   - libmicrohttpd's thread, answering HTTP on 127.0.0.1 only. It never
 *     touches the consumer: every answer comes from the probe, which any
 *     thread may read without blocking the consumer;
 *       GET /healthz  lagprobe_health(): 200 "ok" / "degraded: REASONS",
 *                     503 "unhealthy: REASONS"
 *                     (lagprobe_health_http_status() does the mapping)
 *       GET /metrics  lagprobe_metrics_prometheus(), Prometheus text 0.0.4
 *       GET /lag      lagprobe_snapshot_json(), application/json
 *   - the main thread, which only waits for signals.
 * Without -b it also starts librdkafka's embedded mock cluster (on
 * 127.0.0.1) with the topics and a producer thread, so it runs standalone.
 *
 * Usage: health_server [options]
 *   -b BOOTSTRAP  consume from a real cluster (the topics must exist; -n,
 *                 -N and -r are then ignored). Default: embedded mock.
 *   -p PORT       HTTP port on 127.0.0.1 (default 8080). 0 picks a free
 *                 port. Either way the first line on stdout is
 *                 "listening on 127.0.0.1:PORT"; everything else goes to
 *                 stderr.
 *   -t TOPIC      topic to consume; repeat for several (up to 16). Any
 *                 Kafka-legal name: [a-zA-Z0-9._-], up to 249 characters.
 *                 Default "lagprobe-health".
 *   -n COUNT      partitions per topic (mock; default 3)
 *   -N COUNT[,COUNT...]
 *                 messages produced to each partition at start (mock;
 *                 default 1000). A list is used in turn over the
 *                 partitions, topic after topic, so lags can differ.
 *   -r RATE       then RATE messages per second per topic, spread over its
 *                 partitions (mock; default 10). 0: production stops after
 *                 the initial messages, so the figures settle.
 *   -c OFFSET     commit offset OFFSET on each partition once consumed past
 *                 it, and nothing after: lag = log end - OFFSET stays put
 *                 (a partition with fewer messages is never committed, its
 *                 lag is null). Default: commit whatever was consumed after
 *                 every batch, like a normal consumer.
 *   -g GROUP      group.id (default "lagprobe-health-group")
 *   -i CLIENT_ID  client.id (default "health-server")
 *   -m MS         max.poll.interval.ms (default 10000 on the mock,
 *                 librdkafka's 300000 with -b). session.timeout.ms is
 *                 lowered to fit when needed; the mock needs >= 3500.
 *   -w MS         simulated processing time per message (default 0)
 *   -d SECONDS    stop after SECONDS (default: run until SIGINT/SIGTERM)
 *
 * Stalling on demand, to watch /healthz go 200 -> 503 -> 200:
 *   kill -USR1 PID   the consumer stops inside its current batch (an empty
 *                    one if nothing is flowing) and does not poll: headroom
 *                    shrinks, /healthz says "degraded" past warn_ratio (70 %
 *                    of max.poll.interval.ms) and answers 503 "unhealthy:
 *                    headroom_critical" past critical_ratio (90 %). Past
 *                    100 % librdkafka evicts the consumer from the group.
 *   kill -USR2 PID   the batch finishes and polling resumes: 200 again (after
 *                    an eviction, once the consumer has rejoined).
 * A signal is the control here, not an HTTP endpoint: nothing that can
 * reach /healthz can stall the consumer.
 *
 * Kubernetes: point both readinessProbe and livenessProbe at /healthz (the
 * pod must then listen on its own address, not 127.0.0.1 as here). Degraded
 * stays 200 on purpose: a consumer near the limit is still working, and
 * restarting it would only add a rebalance.
 *
 * Build: make (build/examples/health_server), or by hand:
 *   cc -std=c11 -I.. health_server.c ../probe.c $(pkg-config --cflags
 *      --libs rdkafka libmicrohttpd) -lpthread -lm
 */
#define _POSIX_C_SOURCE 200809L /* sigtimedwait, clock_gettime, nanosleep */

#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <microhttpd.h>

#include "probe.h"

#define MAX_TOPICS 16
#define BATCH_MAX 500 /* messages per batch */

/* ------------------------------------------------------------------------
 * Options and shared state
 * ---------------------------------------------------------------------- */

static struct {
        const char *bootstrap; /* NULL: mock cluster */
        int port;
        const char *topics[MAX_TOPICS];
        int topic_cnt;
        int partitions;
        long initial[64]; /* messages per partition at start, in turn */
        int initial_cnt;
        double rate;      /* per topic per second afterwards */
        int64_t commit_at; /* -1: commit everything consumed */
        const char *group;
        const char *client_id;
        int max_poll_ms;  /* 0: the mode's default */
        int work_ms;
        double duration_s; /* 0: until a signal */
} opt = {
    .port = 8080,
    .partitions = 3,
    .initial = {1000},
    .initial_cnt = 1,
    .rate = 10,
    .commit_at = -1,
    .group = "lagprobe-health-group",
    .client_id = "health-server",
};

static atomic_int g_stop;  /* set by the main thread on SIGINT/SIGTERM */
static atomic_int g_stall; /* SIGUSR1 sets it, SIGUSR2 clears it */
static const char *g_bootstraps;
static lagprobe_t *g_probe; /* read by the HTTP thread, never NULL there */

static void logf_(const char *fmt, ...) {
        char line[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line, sizeof line, fmt, ap);
        va_end(ap);
        fprintf(stderr, "health_server: %s\n", line);
}

static int64_t mono_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms) {
        struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
                ;
}

/* ------------------------------------------------------------------------
 * HTTP: everything here runs on libmicrohttpd's thread and reads only the
 * probe.
 * ---------------------------------------------------------------------- */

typedef size_t(render_fn)(lagprobe_t *probe, char *buf, size_t size);

/* Render a probe document into a malloc'd buffer, following the size
 * contract: the call returns the length the full document needs (without
 * the NUL), like snprintf(), whatever the buffer size. Start from the size
 * that was enough last time; when the document did not fit, grow to what it
 * said it needs, plus slack since it can grow before the next call (a
 * partition assigned meanwhile), and render again. */
static char *render(render_fn *fn, atomic_size_t *size_hint, size_t *lenp) {
        size_t size = atomic_load(size_hint);
        if (size < 4096)
                size = 4096;
        for (int tries = 0; tries < 8; tries++) {
                char *buf = malloc(size);
                if (!buf)
                        return NULL;
                size_t need = fn(g_probe, buf, size);
                if (need < size) { /* it fit, NUL included */
                        atomic_store(size_hint, need + 1 + need / 8);
                        *lenp = need;
                        return buf;
                }
                free(buf);
                size = need + 1 + need / 8;
        }
        return NULL;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status,
                             const char *content_type, char *body,
                             size_t len) {
        /* MUST_FREE: libmicrohttpd free()s the body once it is sent. */
        struct MHD_Response *r = MHD_create_response_from_buffer(
            len, body, MHD_RESPMEM_MUST_FREE);
        if (!r) {
                free(body);
                return MHD_NO;
        }
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
        /* Every answer is a live reading: nobody may cache it. */
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
        if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
                MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
        enum MHD_Result ret = MHD_queue_response(conn, status, r);
        MHD_destroy_response(r);
        return ret;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned status,
                                  const char *text) {
        char *body = strdup(text);
        if (!body)
                return MHD_NO;
        return reply(conn, status, "text/plain; charset=utf-8", body,
                     strlen(body));
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn,
                              const char *url, const char *method,
                              const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls) {
        (void)cls;
        (void)version;
        (void)upload_data;
        (void)upload_data_size;
        (void)con_cls;
        static atomic_size_t json_hint, metrics_hint;

        if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
            strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
                return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                                  "only GET and HEAD\n");

        if (!strcmp(url, "/healthz")) {
                /* Reason names are short and fixed: all seven fit. */
                char reasons[256], body[320];
                lagprobe_health_t verdict = lagprobe_health(g_probe, reasons, sizeof reasons);
                snprintf(body, sizeof body, "%s%s%s\n",
                         lagprobe_health_name(verdict), reasons[0] ? ": " : "",
                         reasons);
                return reply_text(conn,
                                  (unsigned)lagprobe_health_http_status(verdict),
                                  body);
        }
        if (!strcmp(url, "/metrics") || !strcmp(url, "/lag")) {
                int metrics = url[1] == 'm';
                size_t len;
                char *doc = metrics ? render(lagprobe_metrics_prometheus,
                                             &metrics_hint, &len)
                                    : render(lagprobe_snapshot_json,
                                             &json_hint, &len);
                if (!doc)
                        return reply_text(conn,
                                          MHD_HTTP_INTERNAL_SERVER_ERROR,
                                          "out of memory\n");
                return reply(conn, MHD_HTTP_OK,
                             metrics ? "text/plain; version=0.0.4; "
                                       "charset=utf-8"
                                     : "application/json",
                             doc, len);
        }
        if (!strcmp(url, "/"))
                return reply_text(conn, MHD_HTTP_OK,
                                  "lagprobe health_server: /healthz "
                                  "/metrics /lag\n");
        return reply_text(conn, MHD_HTTP_NOT_FOUND, "not found\n");
}

/* ------------------------------------------------------------------------
 * Probe events: one line each on stderr. Called on the probe's watchdog
 * thread; it must not block, and a line to stderr is quick enough here.
 * ---------------------------------------------------------------------- */

static void on_event(const lagprobe_event_t *ev, void *opaque) {
        (void)opaque;
        logf_("[lagprobe] %s: %s", ev->name, ev->message);
}

/* ------------------------------------------------------------------------
 * Producer (mock cluster only)
 * ---------------------------------------------------------------------- */

static int produce_one(rd_kafka_t *rk, const char *topic, int32_t partition,
                       int64_t seq) {
        char value[48];
        int len = snprintf(value, sizeof value, "msg-%" PRId64, seq);
        for (;;) {
                rd_kafka_resp_err_t err = rd_kafka_producev(
                    rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                    RD_KAFKA_V_VALUE(value, (size_t)len),
                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
                if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                        if (err)
                                logf_("produce to %s: %s", topic,
                                      rd_kafka_err2str(err));
                        return err ? -1 : 0;
                }
                rd_kafka_poll(rk, 10); /* local queue full: let it drain */
        }
}

static void *producer_main(void *arg) {
        (void)arg;
        char errstr[256];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        if (rd_kafka_conf_set(conf, "bootstrap.servers", g_bootstraps, errstr,
                              sizeof errstr) ||
            rd_kafka_conf_set(conf, "linger.ms", "5", errstr, sizeof errstr)) {
                logf_("producer: %s", errstr);
                rd_kafka_conf_destroy(conf);
                return NULL;
        }
        rd_kafka_t *rk =
            rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
        if (!rk) {
                logf_("producer: %s", errstr);
                rd_kafka_conf_destroy(conf);
                return NULL;
        }

        /* The initial load, then flush so it is all on the brokers before
         * anything else happens. */
        int64_t seq = 0;
        int k = 0;
        for (int t = 0; t < opt.topic_cnt && !g_stop; t++)
                for (int32_t p = 0; p < opt.partitions && !g_stop; p++) {
                        long cnt = opt.initial[k++ % opt.initial_cnt];
                        for (long i = 0; i < cnt && !g_stop; i++)
                                produce_one(rk, opt.topics[t], p, seq++);
                }
        if (rd_kafka_flush(rk, 30000))
                logf_("producer: initial messages not all delivered");
        else
                logf_("produced %" PRId64 " messages", seq);

        /* Then a steady trickle, round robin over the partitions. */
        if (opt.rate > 0) {
                int64_t gap_ms = (int64_t)(1000.0 / opt.rate);
                int64_t next = mono_ms();
                int32_t p = 0;
                while (!g_stop) {
                        for (int t = 0; t < opt.topic_cnt; t++)
                                produce_one(rk, opt.topics[t], p, seq++);
                        p = (p + 1) % opt.partitions;
                        rd_kafka_poll(rk, 0); /* delivery reports */
                        next += gap_ms > 0 ? gap_ms : 1;
                        int64_t wait = next - mono_ms();
                        if (wait > 0)
                                sleep_ms(wait);
                }
        }
        rd_kafka_flush(rk, 5000);
        rd_kafka_destroy(rk);
        return NULL;
}

/* ------------------------------------------------------------------------
 * Consumer
 * ---------------------------------------------------------------------- */

/* What the consumer knows about each partition, for its own commits. */
typedef struct part_s {
        char *topic;
        int32_t partition;
        int64_t next;      /* offset after the last processed message */
        int64_t committed; /* what we last asked to commit, -1 none */
} part_t;

static part_t *g_parts;
static size_t g_part_cnt;

static part_t *part_of(const rd_kafka_message_t *m) {
        const char *topic = rd_kafka_topic_name(m->rkt);
        for (size_t i = 0; i < g_part_cnt; i++)
                if (g_parts[i].partition == m->partition &&
                    !strcmp(g_parts[i].topic, topic))
                        return &g_parts[i];
        part_t *grown = realloc(g_parts, (g_part_cnt + 1) * sizeof *grown);
        if (!grown)
                return NULL;
        g_parts = grown;
        part_t *p = &g_parts[g_part_cnt];
        p->topic = strdup(topic);
        if (!p->topic)
                return NULL;
        g_part_cnt++;
        p->partition = m->partition;
        p->next = -1;
        p->committed = -1;
        return p;
}

/* Commit after a batch, asynchronously: failures reach the probe (events
 * commit_failed, reason commit_failing) through its on_commit hook. */
static void commit_progress(rd_kafka_t *rk) {
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new((int)g_part_cnt + 1);
        for (size_t i = 0; i < g_part_cnt; i++) {
                part_t *p = &g_parts[i];
                int64_t to = -1;
                if (opt.commit_at < 0 && p->next > p->committed)
                        to = p->next; /* everything processed */
                else if (opt.commit_at >= 0 && p->committed < 0 &&
                         p->next >= opt.commit_at)
                        to = opt.commit_at; /* once, and never again */
                if (to < 0)
                        continue;
                rd_kafka_topic_partition_list_add(l, p->topic, p->partition)
                    ->offset = to;
                p->committed = to;
        }
        if (l->cnt > 0) {
                rd_kafka_resp_err_t err = rd_kafka_commit(rk, l, 1 /*async*/);
                if (err)
                        logf_("commit: %s", rd_kafka_err2str(err));
        }
        rd_kafka_topic_partition_list_destroy(l);
}

static void *consumer_main(void *arg) {
        rd_kafka_t *rk = arg;
        rd_kafka_message_t *batch[BATCH_MAX];
        int stalled_logged = 0;

        while (!g_stop) {
                /* Gather a batch: wait up to 100 ms for the first message,
                 * then take what is already prefetched. */
                size_t n = 0;
                while (n < BATCH_MAX) {
                        rd_kafka_message_t *m =
                            rd_kafka_consumer_poll(rk, n == 0 ? 100 : 0);
                        /* Counts an eviction even when librdkafka's log
                         * is filtered. */
                        lagprobe_poll_result(g_probe, m);
                        if (!m)
                                break;
                        if (m->err) {
                                logf_("consumer: %s", rd_kafka_message_errstr(m));
                                rd_kafka_message_destroy(m);
                                continue;
                        }
                        batch[n++] = m;
                }
                /* An empty poll is not a batch: between batch_end and the
                 * next batch_begin the probe takes us to be polling, as
                 * we are. A stall starts an (empty) batch, so that the
                 * probe sees an app that stopped polling. */
                if (n == 0 && !atomic_load(&g_stall))
                        continue;

                lagprobe_batch_begin(g_probe, n);
                for (size_t i = 0; i < n; i++) {
                        if (opt.work_ms > 0)
                                sleep_ms(opt.work_ms);
                        part_t *p = part_of(batch[i]);
                        if (p)
                                p->next = batch[i]->offset + 1;
                        lagprobe_batch_progress(g_probe, i + 1);
                }
                while (atomic_load(&g_stall) && !g_stop) {
                        if (!stalled_logged++)
                                logf_("stalled inside a batch of %zu "
                                      "(SIGUSR2 resumes)",
                                      n);
                        sleep_ms(20);
                }
                if (stalled_logged) {
                        logf_("resumed");
                        stalled_logged = 0;
                }
                commit_progress(rk);
                lagprobe_batch_end(g_probe);
                for (size_t i = 0; i < n; i++)
                        rd_kafka_message_destroy(batch[i]);
        }

        /* Leave the group cleanly, then free the client. The probe outlives
         * it: the HTTP thread may still be reading. */
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
        return NULL;
}

static rd_kafka_t *consumer_new(void) {
        char errstr[512], v[32];
        int mock = !opt.bootstrap;
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
#define SET(k, val)                                                            \
        do {                                                                   \
                if (rd_kafka_conf_set(conf, k, val, errstr, sizeof errstr) !=  \
                    RD_KAFKA_CONF_OK) {                                        \
                        logf_("%s=%s: %s", k, val, errstr);                    \
                        rd_kafka_conf_destroy(conf);                           \
                        return NULL;                                           \
                }                                                              \
        } while (0)
        SET("bootstrap.servers", g_bootstraps);
        SET("group.id", opt.group);
        SET("client.id", opt.client_id);
        SET("auto.offset.reset", "earliest");
        SET("enable.auto.commit", "false"); /* commit_progress() does it */
        int max_poll = opt.max_poll_ms > 0 ? opt.max_poll_ms
                       : mock              ? 10000
                                           : 300000;
        snprintf(v, sizeof v, "%d", max_poll);
        SET("max.poll.interval.ms", v);
        /* session.timeout.ms may not exceed max.poll.interval.ms. Keep the
         * heartbeat well under a third of it (the probe advises so). */
        int session = max_poll < (mock ? 6000 : 45000) ? max_poll
                      : mock                           ? 6000
                                                       : 45000;
        snprintf(v, sizeof v, "%d", session);
        SET("session.timeout.ms", v);
        snprintf(v, sizeof v, "%d", session / 4);
        SET("heartbeat.interval.ms", v);
        if (mock) {
                /* Fresher watermarks: the mock holds an empty fetch for
                 * fetch.wait.max.ms, statistics carry the watermarks. */
                SET("fetch.wait.max.ms", "100");
                SET("statistics.interval.ms", "500");
        }
#undef SET

        /* The integration: config, new, attach, before rd_kafka_new(). */
        lagprobe_config_t pc;
        lagprobe_config_init(&pc);
        pc.log_cb = on_event;
        g_probe = lagprobe_new(&pc, errstr, sizeof errstr);
        if (!g_probe || lagprobe_attach(g_probe, conf, errstr, sizeof errstr)) {
                /* This program is about the probe's output: without it
                 * there is nothing to serve. A real service would run on. */
                logf_("lagprobe: %s", errstr);
                lagprobe_destroy(g_probe);
                g_probe = NULL;
                rd_kafka_conf_destroy(conf);
                return NULL;
        }

        rd_kafka_t *rk =
            rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
        if (!rk) {
                logf_("consumer: %s", errstr);
                rd_kafka_conf_destroy(conf);
                return NULL;
        }
        /* Callbacks (statistics, rebalances) are served by consumer_poll on
         * the consumer thread: the probe needs them. */
        rd_kafka_poll_set_consumer(rk);

        rd_kafka_topic_partition_list_t *topics =
            rd_kafka_topic_partition_list_new(opt.topic_cnt);
        for (int t = 0; t < opt.topic_cnt; t++)
                rd_kafka_topic_partition_list_add(topics, opt.topics[t],
                                                  RD_KAFKA_PARTITION_UA);
        rd_kafka_resp_err_t err = rd_kafka_subscribe(rk, topics);
        rd_kafka_topic_partition_list_destroy(topics);
        if (err) {
                logf_("subscribe: %s", rd_kafka_err2str(err));
                rd_kafka_destroy(rk);
                return NULL;
        }
        return rk;
}

/* ------------------------------------------------------------------------
 * main
 * ---------------------------------------------------------------------- */

static void usage(const char *prog) {
        fprintf(stderr,
                "usage: %s [-b BOOTSTRAP] [-p PORT] [-t TOPIC]... [-n "
                "PARTITIONS] [-N MESSAGES[,...]]\n"
                "       [-r RATE] [-c OFFSET] [-g GROUP] [-i CLIENT_ID] [-m "
                "MAX_POLL_MS] [-w MS]\n"
                "       [-d SECONDS]\n"
                "HTTP on 127.0.0.1: /healthz /metrics /lag. kill -USR1 stalls "
                "the consumer,\nkill -USR2 resumes it. Details at the top of "
                "health_server.c.\n",
                prog);
}

static int parse_int(const char *s, long lo, long hi, long *out) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || *end || v < lo || v > hi)
                return -1;
        *out = v;
        return 0;
}

int main(int argc, char **argv) {
        int c;
        long v;
        while ((c = getopt(argc, argv, "b:p:t:n:N:r:c:g:i:m:w:d:h")) != -1) {
                int bad = 0;
                switch (c) {
                case 'b': opt.bootstrap = optarg; break;
                case 'p':
                        bad = parse_int(optarg, 0, 65535, &v);
                        opt.port = (int)v;
                        break;
                case 't':
                        if (opt.topic_cnt == MAX_TOPICS || !optarg[0] ||
                            strlen(optarg) > 249)
                                bad = 1;
                        else
                                opt.topics[opt.topic_cnt++] = optarg;
                        break;
                case 'n':
                        bad = parse_int(optarg, 1, 10000, &v);
                        opt.partitions = (int)v;
                        break;
                case 'N': {
                        /* COUNT[,COUNT...] */
                        char *list = strdup(optarg), *save = NULL;
                        opt.initial_cnt = 0;
                        for (char *tok = strtok_r(list, ",", &save); tok;
                             tok = strtok_r(NULL, ",", &save)) {
                                if (opt.initial_cnt == 64 ||
                                    parse_int(tok, 0, 100000000, &v)) {
                                        bad = 1;
                                        break;
                                }
                                opt.initial[opt.initial_cnt++] = v;
                        }
                        bad |= opt.initial_cnt == 0;
                        free(list);
                        break;
                }
                case 'r':
                        opt.rate = atof(optarg);
                        bad = opt.rate < 0;
                        break;
                case 'c':
                        bad = parse_int(optarg, 0, INT32_MAX, &v);
                        opt.commit_at = v;
                        break;
                case 'g': opt.group = optarg; break;
                case 'i': opt.client_id = optarg; break;
                case 'm':
                        bad = parse_int(optarg, 1, 86400000, &v);
                        opt.max_poll_ms = (int)v;
                        break;
                case 'w':
                        bad = parse_int(optarg, 0, 600000, &v);
                        opt.work_ms = (int)v;
                        break;
                case 'd':
                        opt.duration_s = atof(optarg);
                        bad = opt.duration_s <= 0;
                        break;
                default: usage(argv[0]); return c == 'h' ? 0 : 2;
                }
                if (bad) {
                        fprintf(stderr, "%s: bad value for -%c: %s\n", argv[0],
                                c, optarg);
                        return 2;
                }
        }
        if (opt.topic_cnt == 0)
                opt.topics[opt.topic_cnt++] = "lagprobe-health";

        /* Signals are taken synchronously by the main thread (sigtimedwait
         * below), so block them before any thread exists: librdkafka's,
         * libmicrohttpd's and ours inherit the mask and never see them. */
        sigset_t sigs;
        sigemptyset(&sigs);
        sigaddset(&sigs, SIGINT);
        sigaddset(&sigs, SIGTERM);
        sigaddset(&sigs, SIGUSR1);
        sigaddset(&sigs, SIGUSR2);
        pthread_sigmask(SIG_BLOCK, &sigs, NULL);

        char errstr[256];
        rd_kafka_t *host = NULL;
        rd_kafka_mock_cluster_t *mcluster = NULL;
        if (opt.bootstrap) {
                g_bootstraps = opt.bootstrap;
        } else {
                /* A client whose only job is to own the mock cluster;
                 * log_level 3 hides its "no bootstrap.servers" notice. */
                rd_kafka_conf_t *hconf = rd_kafka_conf_new();
                rd_kafka_conf_set(hconf, "log_level", "3", errstr,
                                  sizeof errstr);
                host = rd_kafka_new(RD_KAFKA_PRODUCER, hconf, errstr,
                                    sizeof errstr);
                if (!host) {
                        logf_("mock host: %s", errstr);
                        rd_kafka_conf_destroy(hconf);
                        return 1;
                }
                mcluster = rd_kafka_mock_cluster_new(host, 1);
                if (!mcluster) {
                        logf_("could not start the mock cluster");
                        rd_kafka_destroy(host);
                        return 1;
                }
                for (int t = 0; t < opt.topic_cnt; t++) {
                        rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(
                            mcluster, opt.topics[t], opt.partitions, 1);
                        if (err)
                                logf_("mock topic %s: %s", opt.topics[t],
                                      rd_kafka_err2str(err));
                }
                g_bootstraps = rd_kafka_mock_cluster_bootstraps(mcluster);
                logf_("mock cluster %s: %d topic(s) of %d partition(s)",
                      g_bootstraps, opt.topic_cnt, opt.partitions);
        }

        int rc = 1;
        struct MHD_Daemon *httpd = NULL;
        pthread_t consumer_tid, producer_tid;
        int have_consumer = 0, have_producer = 0;

        rd_kafka_t *rk = consumer_new();
        if (!rk)
                goto out;

        /* HTTP on the loopback address only. */
        struct sockaddr_in addr;
        memset(&addr, 0, sizeof addr);
        addr.sin_family = AF_INET;
        addr.sin_port = htons((uint16_t)opt.port);
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        httpd = MHD_start_daemon(
            MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG,
            (uint16_t)opt.port, NULL, NULL, handle, NULL, MHD_OPTION_SOCK_ADDR,
            (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_TIMEOUT,
            (unsigned)10, MHD_OPTION_END);
        if (!httpd) {
                logf_("cannot listen on 127.0.0.1:%d", opt.port);
                rd_kafka_consumer_close(rk);
                rd_kafka_destroy(rk);
                goto out;
        }
        const union MHD_DaemonInfo *info =
            MHD_get_daemon_info(httpd, MHD_DAEMON_INFO_BIND_PORT);
        int port = info ? info->port : opt.port;
        /* The one line on stdout, for scripts (-p 0). */
        printf("listening on 127.0.0.1:%d\n", port);
        fflush(stdout);
        logf_("pid %d, group %s, %s; kill -USR1 %d stalls, -USR2 resumes",
              (int)getpid(), opt.group,
              opt.commit_at < 0 ? "committing everything consumed"
                                : "committing a fixed offset once",
              (int)getpid());

        if (pthread_create(&consumer_tid, NULL, consumer_main, rk) != 0) {
                logf_("cannot start the consumer thread");
                rd_kafka_consumer_close(rk);
                rd_kafka_destroy(rk);
                goto out;
        }
        have_consumer = 1;
        if (mcluster && pthread_create(&producer_tid, NULL, producer_main,
                                       NULL) == 0)
                have_producer = 1;

        /* The main thread only waits for signals and the deadline. */
        int64_t end = opt.duration_s > 0
                          ? mono_ms() + (int64_t)(opt.duration_s * 1000)
                          : INT64_MAX;
        while (mono_ms() < end) {
                struct timespec tick = {0, 200 * 1000000L};
                int sig = sigtimedwait(&sigs, NULL, &tick);
                if (sig == SIGINT || sig == SIGTERM)
                        break;
                if (sig == SIGUSR1) {
                        logf_("SIGUSR1: stalling the consumer");
                        atomic_store(&g_stall, 1);
                } else if (sig == SIGUSR2) {
                        logf_("SIGUSR2: resuming the consumer");
                        atomic_store(&g_stall, 0);
                }
        }
        logf_("shutting down");
        rc = 0;

out:
        /* Order: stop serving, stop the consumer (close, destroy) and the
         * producer, then the probe, then the cluster they talk to. */
        atomic_store(&g_stop, 1);
        atomic_store(&g_stall, 0);
        if (httpd)
                MHD_stop_daemon(httpd);
        if (have_consumer)
                pthread_join(consumer_tid, NULL);
        if (have_producer)
                pthread_join(producer_tid, NULL);
        lagprobe_destroy(g_probe);
        for (size_t i = 0; i < g_part_cnt; i++)
                free(g_parts[i].topic);
        free(g_parts);
        if (mcluster)
                rd_kafka_mock_cluster_destroy(mcluster);
        if (host)
                rd_kafka_destroy(host);
        return rc;
}

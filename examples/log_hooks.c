/* lagprobe log_hooks: route the probe's events into syslog and into JSON
 * lines on stdout for a log shipper (Fluent Bit, Vector, Filebeat, ...).
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * The probe hands every event to config.log_cb on its watchdog thread. The
 * callback must not block (it delays the next headroom check), and neither
 * syslog() nor a write to a pipe is guaranteed not to. So the callback only
 * formats the event and puts it on a bounded in-memory queue; a writer
 * thread takes it from there to syslog(3), with the event's own severity,
 * and to stdout as one JSON object per line. When the queue is full the
 * event is dropped and counted, never waited for.
 *
 * The JSON object carries every field of lagprobe_event_t:
 *   {"ts_ms":1795453723229,"event":"headroom_warn","severity":4,
 *    "level":"warning","group_id":"...","client_id":"...",
 *    "since_poll_ms":2803,"max_poll_interval_ms":4000,"headroom_ms":1197,
 *    "batch_size":1,"batch_done":0,"predicted_ms":-1,"count":-1,
 *    "topic":null,"partition":-1,"state":null,"lag":-1,
 *    "message":"no poll for 2803 ms, ..."}
 * Numbers keep the probe's -1 for "not relevant to this event" so that
 * every field has one type in the log index; topic is null when the event
 * is not about one partition; state is the status of a partition_status
 * event and the verdict of a diagnosis event (null otherwise), so a
 * pipeline can filter on them without parsing the message. Strings are escaped (quotes, backslashes,
 * control characters; invalid UTF-8 becomes U+FFFD).
 *
 * The run, standalone on librdkafka's embedded mock cluster (127.0.0.1):
 * a consumer with a small max.poll.interval.ms joins (a "rebalance" event,
 * info), consumes, then stalls once inside a batch past warn_ratio of the
 * limit but short of it ("headroom_warn", warning), polls again
 * ("headroom_recovered", notice), and leaves the group. About 10 seconds;
 * it ends on its own.
 *
 * Usage: log_hooks [-m MAX_POLL_MS] [-s STALL_MS] [-q]
 *   -m MS   max.poll.interval.ms (default 4000; the mock needs >= 3500)
 *   -s MS   length of the stall (default 80 % of -m: past the 70 % warning,
 *           short of the 90 % critical level and of the eviction; try 95 %
 *           for headroom_critical, or more than 100 % for an eviction)
 *   -q      syslog only, no copy of the syslog lines on stderr
 *
 * Watch the syslog side with `journalctl -t lagprobe-log-hooks -f` (or
 * /var/log/syslog); without a syslog daemon the lines are only on stderr.
 *
 * Build: make (build/examples/log_hooks), or by hand:
 *   cc -std=c11 -I.. log_hooks.c ../probe.c $(pkg-config --cflags --libs
 *      rdkafka) -lpthread -lm
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep, clock_gettime, strdup */

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "probe.h"

#define TOPIC "lagprobe-log-hooks"
#define GROUP "lagprobe-log-hooks-group"
#define MESSAGES 200
#define QUEUE_LEN 256 /* events waiting for the writer, at most */

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
 * A growable string, for building one JSON line
 * ---------------------------------------------------------------------- */

typedef struct sbuf_s {
        char *p;
        size_t len, cap;
        int oom;
} sbuf_t;

static void sb_put(sbuf_t *b, const char *s, size_t n) {
        if (b->oom)
                return;
        if (b->len + n + 1 > b->cap) {
                size_t cap = b->cap ? b->cap : 512;
                while (cap < b->len + n + 1)
                        cap *= 2;
                char *p = realloc(b->p, cap);
                if (!p) {
                        b->oom = 1;
                        return;
                }
                b->p = p;
                b->cap = cap;
        }
        memcpy(b->p + b->len, s, n);
        b->len += n;
        b->p[b->len] = 0;
}

static void sb_puts(sbuf_t *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_printf(sbuf_t *b, const char *fmt, ...) {
        char tmp[128];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
        va_end(ap);
        if (n > 0)
                sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n
                                                      : sizeof tmp - 1);
}

/* Length of the valid UTF-8 sequence at s (1..4), 0 when invalid. */
static int utf8_len(const unsigned char *s) {
        unsigned char c = s[0];
        int n = c < 0x80 ? 1
                : c >= 0xC2 && c <= 0xDF ? 2
                : c >= 0xE0 && c <= 0xEF ? 3
                : c >= 0xF0 && c <= 0xF4 ? 4
                                         : 0;
        for (int k = 1; k < n; k++)
                if ((s[k] & 0xC0) != 0x80)
                        return 0;
        /* No overlong forms, no surrogates, nothing above U+10FFFF. */
        if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] >= 0xA0) ||
            (c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] >= 0x90))
                return 0;
        return n;
}

/* A JSON string value; NULL becomes null. */
static void sb_json_str(sbuf_t *b, const char *s) {
        if (!s) {
                sb_puts(b, "null");
                return;
        }
        sb_put(b, "\"", 1);
        const unsigned char *u = (const unsigned char *)s;
        while (*u) {
                int n;
                if (*u == '"' || *u == '\\') {
                        char e[2] = {'\\', (char)*u};
                        sb_put(b, e, 2);
                        u++;
                } else if (*u == '\n') {
                        sb_puts(b, "\\n"), u++;
                } else if (*u == '\t') {
                        sb_puts(b, "\\t"), u++;
                } else if (*u == '\r') {
                        sb_puts(b, "\\r"), u++;
                } else if (*u < 0x20) {
                        sb_printf(b, "\\u%04x", *u), u++;
                } else if ((n = utf8_len(u)) > 0) {
                        sb_put(b, (const char *)u, (size_t)n);
                        u += n;
                } else {
                        sb_puts(b, "\\ufffd"), u++;
                }
        }
        sb_put(b, "\"", 1);
}

static const char *level_name(int sev) {
        static const char *names[] = {"emerg",   "alert",  "crit",
                                      "err",     "warning", "notice",
                                      "info",    "debug"};
        return sev >= 0 && sev <= 7 ? names[sev] : "unknown";
}

/* ------------------------------------------------------------------------
 * The queue between the probe's callback and the writer thread
 * ---------------------------------------------------------------------- */

typedef struct item_s {
        int severity;
        char *json;   /* one line, with its '\n' */
        char *text;   /* the syslog message */
} item_t;

static struct {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        item_t items[QUEUE_LEN];
        size_t head, cnt;
        int done;
        long dropped, written;
} q = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

/* config.log_cb, on the probe's watchdog thread. Formats, enqueues,
 * returns: the lock is only ever held for a few instructions. Every
 * pointer in *ev is valid during this call only, hence the copies. */
static void on_event(const lagprobe_event_t *ev, void *opaque) {
        (void)opaque;
        sbuf_t j = {0};
        sb_printf(&j, "{\"ts_ms\":%" PRId64 ",\"event\":", ev->ts_ms);
        sb_json_str(&j, ev->name);
        sb_printf(&j, ",\"severity\":%d,\"level\":", ev->severity);
        sb_json_str(&j, level_name(ev->severity));
        sb_puts(&j, ",\"group_id\":");
        sb_json_str(&j, ev->group_id);
        sb_puts(&j, ",\"client_id\":");
        sb_json_str(&j, ev->client_id);
        sb_printf(&j,
                  ",\"since_poll_ms\":%" PRId64 ",\"max_poll_interval_ms\":%" PRId64
                  ",\"headroom_ms\":%" PRId64,
                  ev->since_poll_ms, ev->max_poll_interval_ms, ev->headroom_ms);
        sb_printf(&j,
                  ",\"batch_size\":%" PRId64 ",\"batch_done\":%" PRId64
                  ",\"predicted_ms\":%" PRId64 ",\"count\":%" PRId64,
                  ev->batch_size, ev->batch_done, ev->predicted_ms, ev->count);
        sb_puts(&j, ",\"topic\":");
        sb_json_str(&j, ev->topic);
        sb_printf(&j, ",\"partition\":%" PRId32 ",\"state\":", ev->partition);
        sb_json_str(&j, ev->state);
        sb_printf(&j, ",\"lag\":%" PRId64 ",\"message\":", ev->lag);
        sb_json_str(&j, ev->message);
        sb_puts(&j, "}\n");

        sbuf_t t = {0};
        sb_printf(&t, "lagprobe %s: ", ev->name);
        sb_puts(&t, ev->message);

        pthread_mutex_lock(&q.lock);
        if (j.oom || t.oom || q.cnt == QUEUE_LEN) {
                q.dropped++;
                pthread_mutex_unlock(&q.lock);
                free(j.p);
                free(t.p);
                return;
        }
        item_t *it = &q.items[(q.head + q.cnt) % QUEUE_LEN];
        it->severity = ev->severity;
        it->json = j.p;
        it->text = t.p;
        q.cnt++;
        pthread_cond_signal(&q.cond);
        pthread_mutex_unlock(&q.lock);
}

/* The writer: the only thread that may block on syslog or stdout. */
static void *writer_main(void *arg) {
        (void)arg;
        pthread_mutex_lock(&q.lock);
        for (;;) {
                while (q.cnt == 0 && !q.done)
                        pthread_cond_wait(&q.cond, &q.lock);
                if (q.cnt == 0)
                        break; /* done and drained */
                item_t it = q.items[q.head];
                q.head = (q.head + 1) % QUEUE_LEN;
                q.cnt--;
                pthread_mutex_unlock(&q.lock);

                int sev = it.severity >= 0 && it.severity <= 7 ? it.severity
                                                                : LOG_INFO;
                /* "%s": the message is data, never a format. */
                syslog(sev, "%s", it.text);
                fputs(it.json, stdout);
                fflush(stdout); /* one complete line at a time */
                free(it.json);
                free(it.text);

                pthread_mutex_lock(&q.lock);
                q.written++;
        }
        pthread_mutex_unlock(&q.lock);
        return NULL;
}

/* ------------------------------------------------------------------------
 * The consumer's story
 * ---------------------------------------------------------------------- */

static int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v) {
        char errstr[256];
        if (rd_kafka_conf_set(conf, k, v, errstr, sizeof errstr) ==
            RD_KAFKA_CONF_OK)
                return 0;
        fprintf(stderr, "log_hooks: %s=%s: %s\n", k, v, errstr);
        return -1;
}

static int produce(const char *bootstraps) {
        char errstr[256];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        if (conf_set(conf, "bootstrap.servers", bootstraps)) {
                rd_kafka_conf_destroy(conf);
                return -1;
        }
        rd_kafka_t *rk =
            rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
        if (!rk) {
                fprintf(stderr, "log_hooks: producer: %s\n", errstr);
                rd_kafka_conf_destroy(conf);
                return -1;
        }
        for (int i = 0; i < MESSAGES; i++) {
                char v[32];
                int n = snprintf(v, sizeof v, "event-%d", i);
                rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(TOPIC),
                                  RD_KAFKA_V_VALUE(v, (size_t)n),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                  RD_KAFKA_V_END);
        }
        rd_kafka_resp_err_t err = rd_kafka_flush(rk, 10000);
        rd_kafka_destroy(rk);
        return err ? -1 : 0;
}

/* Poll for ms milliseconds with the batch hooks around every message; when
 * stall_ms > 0, the first message (once everything is consumed) is
 * processed for stall_ms without polling. Returns messages consumed. */
static long consume(rd_kafka_t *rk, lagprobe_t *probe, int64_t ms,
                    long *consumed, int64_t stall_ms) {
        int64_t end = mono_ms() + ms;
        while (mono_ms() < end) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
                lagprobe_poll_result(probe, m);
                if (!m)
                        continue;
                lagprobe_batch_begin(probe, 1);
                if (!m->err)
                        (*consumed)++;
                if (stall_ms > 0 && !m->err && *consumed >= MESSAGES) {
                        fprintf(stderr,
                                "log_hooks: stalling %" PRId64
                                " ms without polling\n",
                                stall_ms);
                        sleep_ms(stall_ms);
                        stall_ms = 0;
                        end = mono_ms() + 1500; /* then poll a while */
                }
                lagprobe_batch_progress(probe, 1);
                lagprobe_batch_end(probe);
                rd_kafka_message_destroy(m);
        }
        return *consumed;
}

int main(int argc, char **argv) {
        int max_poll = 4000, stall = -1, echo = 1, c;
        while ((c = getopt(argc, argv, "m:s:qh")) != -1) {
                switch (c) {
                case 'm': max_poll = atoi(optarg); break;
                case 's': stall = atoi(optarg); break;
                case 'q': echo = 0; break;
                default:
                        fprintf(stderr,
                                "usage: %s [-m MAX_POLL_MS] [-s STALL_MS] [-q]\n",
                                argv[0]);
                        return c == 'h' ? 0 : 2;
                }
        }
        if (max_poll < 3500) {
                fprintf(stderr, "log_hooks: -m must be >= 3500 (the mock "
                                "cluster's session timeout floor)\n");
                return 2;
        }
        if (stall < 0)
                stall = max_poll * 8 / 10;

        /* LOG_PERROR copies each syslog line to stderr. */
        openlog("lagprobe-log-hooks", LOG_PID | (echo ? LOG_PERROR : 0),
                LOG_USER);
        pthread_t writer;
        if (pthread_create(&writer, NULL, writer_main, NULL) != 0)
                return 1;

        /* The mock cluster, in a client of its own. */
        char errstr[256];
        rd_kafka_conf_t *hconf = rd_kafka_conf_new();
        conf_set(hconf, "log_level", "3");
        rd_kafka_t *host =
            rd_kafka_new(RD_KAFKA_PRODUCER, hconf, errstr, sizeof errstr);
        rd_kafka_mock_cluster_t *mcluster =
            host ? rd_kafka_mock_cluster_new(host, 1) : NULL;
        if (!mcluster) {
                fprintf(stderr, "log_hooks: no mock cluster: %s\n",
                        host ? "" : errstr);
                return 1;
        }
        rd_kafka_mock_topic_create(mcluster, TOPIC, 2, 1);
        const char *bootstraps = rd_kafka_mock_cluster_bootstraps(mcluster);
        if (produce(bootstraps) != 0) {
                fprintf(stderr, "log_hooks: producing failed\n");
                return 1;
        }

        /* The consumer: small limits so the story takes seconds. */
        char v[32];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        snprintf(v, sizeof v, "%d", max_poll);
        if (conf_set(conf, "bootstrap.servers", bootstraps) ||
            conf_set(conf, "group.id", GROUP) ||
            conf_set(conf, "client.id", "log-hooks") ||
            conf_set(conf, "auto.offset.reset", "earliest") ||
            conf_set(conf, "max.poll.interval.ms", v) ||
            conf_set(conf, "session.timeout.ms", "3500") ||
            conf_set(conf, "heartbeat.interval.ms", "500") ||
            conf_set(conf, "statistics.interval.ms", "200"))
                return 1;

        lagprobe_config_t pc;
        lagprobe_config_init(&pc);
        pc.log_cb = on_event; /* every event into the queue above */
        pc.log_opaque = NULL;
        pc.log_level = LOG_INFO; /* rebalances too, not only warnings */
        lagprobe_t *probe = lagprobe_new(&pc, errstr, sizeof errstr);
        if (!probe || lagprobe_attach(probe, conf, errstr, sizeof errstr)) {
                fprintf(stderr, "log_hooks: lagprobe: %s\n", errstr);
                return 1;
        }
        rd_kafka_t *rk =
            rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
        if (!rk) {
                fprintf(stderr, "log_hooks: consumer: %s\n", errstr);
                return 1;
        }
        rd_kafka_poll_set_consumer(rk);
        rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(t, TOPIC, RD_KAFKA_PARTITION_UA);
        rd_kafka_subscribe(rk, t);
        rd_kafka_topic_partition_list_destroy(t);

        /* Join and consume (the mock's first join takes ~3 s), then one
         * stall, then poll on so that the probe sees the recovery. */
        long consumed = 0;
        consume(rk, probe, 15000, &consumed, stall);
        fprintf(stderr, "log_hooks: consumed %ld messages, closing\n",
                consumed);

        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
        /* After this returns no callback reaches on_event: the queue can
         * be closed. */
        lagprobe_destroy(probe);

        pthread_mutex_lock(&q.lock);
        q.done = 1;
        pthread_cond_signal(&q.cond);
        pthread_mutex_unlock(&q.lock);
        pthread_join(writer, NULL);
        fprintf(stderr, "log_hooks: %ld event(s) written, %ld dropped\n",
                q.written, q.dropped);
        closelog();

        rd_kafka_mock_cluster_destroy(mcluster);
        rd_kafka_destroy(host);
        return q.written > 0 ? 0 : 1;
}

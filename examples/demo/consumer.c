/* lagprobe demo: a consumer with a probe attached (the integration every
 * app needs), the probe's events into the demo's output, and the guest
 * consumer that joins midway in the default run.
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include "demo.h"

#include <inttypes.h>
#include <time.h>

pthread_mutex_t g_guest_lock = PTHREAD_MUTEX_INITIALIZER;
lagprobe_t *g_guest_probe;

/* ------------------------------------------------------------------------
 * lagprobe events
 * ---------------------------------------------------------------------- */

static const char *severity_name(int sev) {
        switch (sev) {
        case 2: return "CRIT";
        case 3: return "ERROR";
        case 4: return "WARN";
        case 5: return "NOTICE";
        default: return "INFO";
        }
}

/* config.log_cb: the probe calls this from its watchdog thread, never from
 * ours. It must not block for long, so it prints one line and returns.
 * The diagnosis events ("diagnosis": the verdict changed,
 * "partition_status": a partition's status changed) get their own tags so
 * they are easy to follow (grep '\[diagnosis\]'); everything else is a
 * [lagprobe] line. */
static void on_probe_event(const lagprobe_event_t *ev, void *opaque) {
        const char *who = ev->client_id[0] ? ev->client_id : "?";
        if (ev->type == LAGPROBE_EVENT_DIAGNOSIS)
                say("%6.1fs [diagnosis] %-6s %s: %s\n", t_now(),
                    severity_name(ev->severity), who, ev->message);
        else if (ev->type == LAGPROBE_EVENT_PARTITION_STATUS)
                say("%6.1fs [status] %-6s %s: %s\n", t_now(),
                    severity_name(ev->severity), who, ev->message);
        else
                say("%6.1fs [lagprobe] %-6s %-18s %s: %s\n", t_now(),
                    severity_name(ev->severity), ev->name, who, ev->message);
        /* -j: the evidence at the moment of every diagnosis event. */
        int diag = ev->type == LAGPROBE_EVENT_DIAGNOSIS ||
                   ev->type == LAGPROBE_EVENT_PARTITION_STATUS;
        if (opaque == g_main_tag && diag)
                json_line(atomic_load(&g_main_probe), ev->name);
}

/* ------------------------------------------------------------------------
 * A consumer with a probe
 * ---------------------------------------------------------------------- */

/* Small limits so every effect shows within seconds. Returns 0, or -1
 * with the error said. */
static int set_consumer_conf(rd_kafka_conf_t *conf, const char *client_id,
                             int store_manually) {
        char errstr[512];
        const char *props[][2] = {
            {"bootstrap.servers", g_bootstraps},
            {"group.id", GROUP},
            {"client.id", client_id},
            {"auto.offset.reset", "earliest"},
            /* max.poll.interval.ms must be >= session.timeout.ms. */
            {"max.poll.interval.ms", STR(MAX_POLL_MS)},
            {"session.timeout.ms", STR(SESSION_MS)},
            {"heartbeat.interval.ms", "500"},
            /* Commit often so committed offsets (and so "lag") follow the
             * position closely instead of jumping every 5 s. */
            {"auto.commit.interval.ms", "500"},
            {"enable.auto.offset.store", store_manually ? "false" : "true"},
            /* Our own non-zero value: the probe leaves it alone. The probe
             * re-judges with every document, so this is how fast the
             * verdicts follow. */
            {"statistics.interval.ms", STR(STATS_MS)},
        };
        for (size_t i = 0; i < sizeof props / sizeof props[0]; i++) {
                if (rd_kafka_conf_set(conf, props[i][0], props[i][1], errstr,
                                      sizeof errstr) != RD_KAFKA_CONF_OK) {
                        say("%s: %s\n", client_id, errstr);
                        return -1;
                }
        }
        return 0;
}

/* The probe lines are the whole integration: config, new, attach, all
 * before rd_kafka_new(). Returns the probe, or NULL when it could not be
 * attached: a probe failure must never stop the consumer, which then runs
 * without it. */
static lagprobe_t *attach_probe(rd_kafka_conf_t *conf, const char *client_id,
                                int is_main) {
        char errstr[512];
        lagprobe_config_t pc;
        lagprobe_config_init(&pc);
        pc.log_cb = on_probe_event;       /* events into our output */
        pc.log_opaque = is_main ? (void *)g_main_tag : NULL;
        pc.event_min_interval_ms = 3000;  /* default 10 s hides repeats in
                                           * a demo this short */
        /* Diagnosis tuned for a demo measured in seconds (defaults: 60 s
         * window, 100 messages, 5 min storm window). */
        pc.window_ms = WINDOW_MS;
        pc.lag_allowance = LAG_ALLOWANCE;
        pc.storm_window_ms = STORM_WINDOW_MS;
        lagprobe_t *probe = lagprobe_new(&pc, errstr, sizeof errstr);
        if (!probe || lagprobe_attach(probe, conf, errstr, sizeof errstr)) {
                say("%s: lagprobe disabled: %s\n", client_id, errstr);
                lagprobe_destroy(probe);
                probe = NULL;
        }
        return probe;
}

/* A subscribed consumer with a probe attached (*@p probep, NULL when the
 * probe could not be attached). @p store_manually: the app stores offsets
 * itself after processing (enable.auto.offset.store=false), so a failed
 * message is never committed; only demo-main does, and only its events
 * feed -j. */
rd_kafka_t *new_consumer(const char *client_id, int store_manually,
                         lagprobe_t **probep) {
        char errstr[512];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        if (set_consumer_conf(conf, client_id, store_manually) != 0) {
                rd_kafka_conf_destroy(conf);
                return NULL;
        }
        lagprobe_t *probe = attach_probe(conf, client_id, store_manually);

        rd_kafka_t *rk =
            rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
        if (!rk) {
                say("%s: %s\n", client_id, errstr);
                rd_kafka_conf_destroy(conf);
                lagprobe_destroy(probe);
                return NULL;
        }
        /* Callbacks (stats, rebalance) are then served by consumer_poll,
         * on the consumer's own thread. */
        rd_kafka_poll_set_consumer(rk);

        rd_kafka_topic_partition_list_t *topics =
            rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(topics, TOPIC, RD_KAFKA_PARTITION_UA);
        rd_kafka_resp_err_t err = rd_kafka_subscribe(rk, topics);
        rd_kafka_topic_partition_list_destroy(topics);
        if (err)
                say("%s: subscribe: %s\n", client_id, rd_kafka_err2str(err));

        *probep = probe;
        return rk;
}

/* Simulated work for one message. */
void process(const rd_kafka_message_t *m, int64_t work_us) {
        (void)m;
        struct timespec ts = {(time_t)(work_us / 1000000),
                              (long)(work_us % 1000000) * 1000L};
        nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------------------
 * The guest: joins midway, consumes at full speed with a plain poll loop
 * (no batch hooks: its probe infers headroom from callbacks), then leaves.
 * ---------------------------------------------------------------------- */

static void publish_guest_probe(lagprobe_t *probe) {
        pthread_mutex_lock(&g_guest_lock);
        g_guest_probe = probe;
        pthread_mutex_unlock(&g_guest_lock);
}

/* The close revoked our partitions within a few milliseconds, likely
 * between two of the reporter's samples: read our own probe once more (any
 * thread may) so the revoke shows. */
static void say_guest_closed(lagprobe_t *probe) {
        lagprobe_snapshot_t snap;
        lagprobe_snapshot_init(&snap, NULL, 0);
        if (probe && lagprobe_snapshot(probe, &snap) == 0)
                say("%6.1fs [app] demo-guest: closed: assigned %" PRId64
                    ", assigns %" PRId64 ", revokes %" PRId64
                    ", consumed %" PRId64 "\n",
                    t_now(), snap.assignment_size, snap.assigns,
                    snap.revokes, snap.consumed);
}

void *guest_thread(void *arg) {
        (void)arg;
        const double join_at = 0.35 * g_duration_s;
        const double leave_at = 0.62 * g_duration_s;

        while (!g_stop && t_now() < join_at)
                sleep_ms(50);
        if (g_stop)
                return NULL;

        lagprobe_t *probe = NULL;
        say("%6.1fs [app] demo-guest: joining group %s\n", t_now(), GROUP);
        rd_kafka_t *rk = new_consumer("demo-guest", 0, &probe);
        if (!rk)
                return NULL;
        publish_guest_probe(probe);

        while (!g_stop && t_now() < leave_at) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
                if (!m)
                        continue;
                if (!m->err)
                        process(m, WORK_US);
                rd_kafka_message_destroy(m);
        }

        say("%6.1fs [app] demo-guest: leaving the group\n", t_now());
        rd_kafka_consumer_close(rk);
        say_guest_closed(probe);
        rd_kafka_destroy(rk);

        /* Unpublish before destroying, so the reporter never reads a freed
         * probe. */
        publish_guest_probe(NULL);
        lagprobe_destroy(probe);
        return NULL;
}

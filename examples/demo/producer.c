/* lagprobe demo: the producer thread. A steady BASE_RATE messages/s spread
 * over the partitions, bursts of BURST_RATE (key b, -m burst, and two
 * scripted ones in the default run), and the hot partition (key h).
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include "demo.h"

#include <inttypes.h>

/* Round robin over every partition; in hot mode 9 of every 10 messages go
 * to HOT_PARTITION and the tenth takes turns over the others. */
static int32_t pick_partition(int64_t seq, int hot) {
        if (!hot)
                return (int32_t)(seq % PARTITIONS);
        if (seq % 10 != 9)
                return HOT_PARTITION;
        int32_t k = (int32_t)((seq / 10) % (PARTITIONS - 1));
        return k >= HOT_PARTITION ? k + 1 : k;
}

static void produce_one(rd_kafka_t *rk, int64_t seq, int32_t partition) {
        char value[64];
        int len = snprintf(value, sizeof value, "order-%" PRId64, seq);
        for (;;) {
                rd_kafka_resp_err_t err = rd_kafka_producev(
                    rk, RD_KAFKA_V_TOPIC(TOPIC),
                    RD_KAFKA_V_PARTITION(partition),
                    RD_KAFKA_V_VALUE(value, (size_t)len),
                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
                if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                        if (err)
                                say("%6.1fs [producer] %s\n", t_now(),
                                    rd_kafka_err2str(err));
                        return;
                }
                rd_kafka_poll(rk, 10); /* local queue full: let it drain */
        }
}

static rd_kafka_t *new_producer(void) {
        char errstr[256];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        if (rd_kafka_conf_set(conf, "bootstrap.servers", g_bootstraps, errstr,
                              sizeof errstr) != RD_KAFKA_CONF_OK ||
            rd_kafka_conf_set(conf, "linger.ms", "5", errstr, sizeof errstr) !=
                RD_KAFKA_CONF_OK) {
                say("producer conf: %s\n", errstr);
                rd_kafka_conf_destroy(conf);
                return NULL;
        }
        rd_kafka_t *rk =
            rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
        if (!rk) {
                say("producer: %s\n", errstr);
                rd_kafka_conf_destroy(conf);
        }
        return rk;
}

/* Default run: bursts at fixed shares of the run; the first lands while
 * the main consumer owns everything, the second while the guest shares the
 * partitions. */
static void start_scripted_burst(double t, int *bursts_done) {
        const double burst_at[2] = {0.20 * g_duration_s, 0.55 * g_duration_s};
        if (*bursts_done < 2 && t >= burst_at[*bursts_done]) {
                (*bursts_done)++;
                set_mode(MODE_BURST, "scripted");
        }
}

/* When a burst ends, burst mode hands back to healthy (unless a key chose
 * another mode meanwhile). */
static void announce_burst(double t, int bursting) {
        say("%6.1fs [producer] %s\n", t,
            bursting ? "burst starts: " STR(BURST_RATE)
                       " msg/s over all partitions"
                     : "burst over: back to " STR(BASE_RATE) " msg/s");
        int m = MODE_BURST;
        if (!bursting &&
            atomic_compare_exchange_strong(&g_mode, &m, MODE_HEALTHY))
                say("%6.1fs [mode] burst -> healthy (burst over); the "
                    "consumer drains the backlog\n",
                    t);
}

static void announce_hot(double t, int hot) {
        say("%6.1fs [producer] %s\n", t,
            hot ? "90 % of messages to partition " STR(HOT_PARTITION)
                : "messages spread evenly again");
}

void *producer_thread(void *arg) {
        (void)arg;
        rd_kafka_t *rk = new_producer();
        if (!rk)
                return NULL;

        int bursts_done = 0, was_bursting = 0, was_hot = 0;
        int64_t seq = 0, last = mono_ms();
        double credit = 0; /* messages owed at the current rate */
        while (!g_stop) {
                double t = t_now();
                if ((g_tour || g_slow_mode) && t >= g_duration_s - QUIET_TAIL_S)
                        break;
                if (g_tour)
                        start_scripted_burst(t, &bursts_done);
                int64_t now = mono_ms();
                int bursting = now < atomic_load(&g_burst_until_ms);
                if (bursting != was_bursting) {
                        announce_burst(t, bursting);
                        was_bursting = bursting;
                }
                int hot = atomic_load(&g_mode) == MODE_HOT;
                if (hot != was_hot) {
                        announce_hot(t, hot);
                        was_hot = hot;
                }
                credit += (bursting ? BURST_RATE : BASE_RATE) *
                          (double)(now - last) / 1000.0;
                last = now;
                if (credit > BURST_RATE)
                        credit = BURST_RATE; /* after a stall: no flood */
                while (credit >= 1 && !g_stop) {
                        produce_one(rk, seq, pick_partition(seq, hot));
                        seq++;
                        credit -= 1;
                }
                rd_kafka_poll(rk, 0); /* serve delivery reports */
                sleep_ms(10);
        }
        say("%6.1fs [producer] stopped after %" PRId64 " messages%s\n",
            t_now(), seq,
            g_stop ? "" : "; from now on the consumers only catch up");
        rd_kafka_flush(rk, 5000);
        rd_kafka_destroy(rk);
        return NULL;
}

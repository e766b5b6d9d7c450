/* White-box test of probe.c's latency histograms: bucket geometry,
 * percentiles against exact ones from the same samples, count/sum/max
 * exactness, and the recent window forgetting old samples.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Built like every tests/test_*.c; probe.c is linked as an archive member,
 * which the linker leaves out because this file defines every lagprobe
 * symbol itself by including it. */
#include "../probe.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "wb.h"

/* The recent window: LP_WIN sub-windows of win_us each; the probe uses
 * config.window_ms / LP_WIN (10 s by default). The window tests run with
 * the default and with a short one. Every histogram call goes through
 * these two macros. */
static int64_t win_us = 60000LL * 1000 / LP_WIN;
#define WADD(w, now, us) lp_whist_add((w), win_us, (now), (us))
#define WREAD(w, now, t, r) lp_whist_read((w), win_us, (now), (t), (r))

/* probe.c's comment on lp_hist_t: a bucket's width is at most 1/LP_HSUB of
 * its lower bound, so a percentile read as the bucket's midpoint is within
 * 1/(2*LP_HSUB) of the true value. */
#define REL_ERR (1.0 / (2.0 * LP_HSUB))

/* ---- deterministic random numbers ----------------------------------- */

static uint64_t rng_state;

static void rng_seed(uint64_t s) { rng_state = s ? s : 0x9E3779B97F4A7C15ull; }

static uint64_t rng_u64(void) { /* xorshift64* */
        rng_state ^= rng_state >> 12;
        rng_state ^= rng_state << 25;
        rng_state ^= rng_state >> 27;
        return rng_state * 0x2545F4914F6CDD1Dull;
}

static double rng_unit(void) { /* (0, 1) */
        return ((double)(rng_u64() >> 11) + 0.5) / 9007199254740992.0;
}

static int64_t rng_range(int64_t lo, int64_t hi) { /* [lo, hi] */
        return lo + (int64_t)(rng_u64() % (uint64_t)(hi - lo + 1));
}

static double rng_normal(void) { /* Box-Muller */
        return sqrt(-2.0 * log(rng_unit())) * cos(6.283185307179586 * rng_unit());
}

/* ---- exact reference ------------------------------------------------- */

static int cmp_i64(const void *a, const void *b) {
        int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
        return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[0..n) for q = num / 1e6, the rank
 * computed in integers: ceil(q * n), at least 1. */
static int64_t exact_pct(const int64_t *sorted, size_t n, uint64_t num) {
        uint64_t rank = (num * (uint64_t)n + 999999) / 1000000;
        if (rank < 1)
                rank = 1;
        return sorted[rank - 1];
}

static const uint64_t qs_num[] = {0,      1,      10000,  250000, 500000,
                                  750000, 900000, 950000, 990000, 999000,
                                  999900, 1000000};

/* The estimate agrees with the exact value within the stated bound; values
 * under LP_HSUB us have buckets of width 1 and are exact. */
static void assert_close(double est, int64_t exact, const char *what,
                         double q) {
        double tol = (double)exact * REL_ERR + 1e-9;
        if (exact < LP_HSUB)
                tol = 1e-9;
        if (fabs(est - (double)exact) > tol)
                fail_msg("%s q=%g: estimate %.3f, exact %" PRId64
                         " (tolerance %.3f)",
                         what, q, est, exact, tol);
}

static void check_sum(const lp_hsum_t *s, const int64_t *samples, size_t n,
                      const char *what) {
        int64_t *v = malloc(sizeof *v * (n ? n : 1));
        assert_non_null(v);
        if (n)
                memcpy(v, samples, sizeof *v * n);
        qsort(v, n, sizeof *v, cmp_i64);
        int64_t sum = 0;
        for (size_t i = 0; i < n; i++)
                sum += v[i];
        /* Exact figures. */
        assert_int_equal(s->count, n);
        assert_int_equal(s->sum_us, sum);
        assert_int_equal(s->max_us, n ? v[n - 1] : 0);
        if (n == 0) {
                assert_true(lp_hsum_pct(s, 0.5) == 0);
                free(v);
                return;
        }
        for (size_t k = 0; k < sizeof qs_num / sizeof qs_num[0]; k++) {
                double q = (double)qs_num[k] / 1e6;
                assert_close(lp_hsum_pct(s, q), exact_pct(v, n, qs_num[k]),
                             what, q);
        }
        /* The public summary is the same figures in ms. */
        lagprobe_hist_summary_t o;
        lp_hsum_summary(s, &o);
        assert_int_equal(o.count, n);
        assert_true(fabs(o.sum_ms - (double)sum / 1000.0) < 1e-6 * (1 + o.sum_ms));
        assert_true(o.max_ms == (double)v[n - 1] / 1000.0);
        assert_close(o.p50_ms * 1000.0, exact_pct(v, n, 500000), what, 0.5);
        assert_close(o.p90_ms * 1000.0, exact_pct(v, n, 900000), what, 0.9);
        assert_close(o.p99_ms * 1000.0, exact_pct(v, n, 990000), what, 0.99);
        assert_true(o.p50_ms <= o.p90_ms && o.p90_ms <= o.p99_ms &&
                    o.p99_ms <= o.max_ms);
        free(v);
}

/* ---- bucket geometry ----------------------------------------------- */

static void check_bucket(int64_t v) {
        int i = lp_hbucket(v);
        double lo, w;
        assert_true(i >= 0 && i < LP_HBUCKETS);
        lp_hbounds(i, &lo, &w);
        if (!((double)v >= lo && (double)v < lo + w))
                fail_msg("value %" PRId64 " not in bucket %d [%.0f, %.0f)", v,
                         i, lo, lo + w);
        if (i < LP_HSUB) {
                assert_true(w == 1);
        } else {
                /* The width bound the percentile error rests on. */
                assert_true(w * LP_HSUB <= lo);
                assert_true(w / 2 <= lo * REL_ERR);
        }
}

static void test_bucket_geometry(void **state) {
        (void)state;
        assert_true(REL_ERR == 1.0 / 32.0);
        for (int64_t v = 0; v < 70000; v++)
                check_bucket(v);
        /* Every power of two and its neighbours up to the top of range. */
        for (int b = 1; b < LP_HPOW; b++) {
                int64_t p2 = (int64_t)1 << b;
                check_bucket(p2 - 1);
                check_bucket(p2);
                check_bucket(p2 + 1);
        }
        rng_seed(1);
        for (int k = 0; k < 200000; k++)
                check_bucket((int64_t)(rng_u64() >> (64 - LP_HPOW)));
        /* Monotonic: a larger value never lands in an earlier bucket. */
        int prev = 0;
        for (int64_t v = 0; v < ((int64_t)1 << 22); v += 7) {
                int i = lp_hbucket(v);
                assert_true(i >= prev);
                prev = i;
        }
        /* Negative and zero share bucket 0; beyond the range: last. */
        assert_int_equal(lp_hbucket(-5), 0);
        assert_int_equal(lp_hbucket(0), 0);
        assert_int_equal(lp_hbucket(INT64_MAX), LP_HBUCKETS - 1);
}

/* ---- percentiles per distribution ------------------------------------ */

#define NS 20000
#define T_BASE 1000000000LL /* a monotonic "now" in us, 1000 s */

typedef int64_t(gen_fn)(size_t i);

static int64_t gen_uniform(size_t i) {
        (void)i;
        return rng_range(1, 5000000); /* up to 5 s */
}
static int64_t gen_lognormal(size_t i) {
        (void)i;
        double v = exp(log(20000.0) + 1.2 * rng_normal());
        return v < 1 ? 1 : (int64_t)v;
}
static int64_t gen_constant(size_t i) {
        (void)i;
        return 123457;
}
static int64_t gen_outliers(size_t i) {
        /* 99 % near 1 ms, 1 % from 30 s to 1000 s. */
        if (i % 100 == 37)
                return rng_range(30000000, 1000000000);
        return rng_range(900, 1100);
}
static int64_t gen_small(size_t i) {
        (void)i;
        return rng_range(0, 40); /* exact and width-1 buckets */
}
static int64_t gen_bimodal(size_t i) {
        return i % 2 ? rng_range(2000, 2100) : rng_range(3000000, 3100000);
}
static int64_t gen_wide(size_t i) {
        (void)i; /* log-uniform over 1 us .. 2^39 us */
        return (int64_t)exp(rng_unit() * 39.0 * log(2.0));
}

static void run_dist(const char *name, gen_fn *gen, size_t n, uint64_t seed) {
        static lp_whist_t w;
        static lp_hsum_t total, recent;
        int64_t *v = malloc(sizeof *v * n);
        assert_non_null(v);
        memset(&w, 0, sizeof w);
        rng_seed(seed);
        /* All within one window of the recent ring. */
        int64_t now = T_BASE + 1234567;
        for (size_t i = 0; i < n; i++) {
                v[i] = gen(i);
                WADD(&w, now + (int64_t)i, v[i]);
        }
        WREAD(&w, now + (int64_t)n, &total, &recent);
        char what[64];
        snprintf(what, sizeof what, "%s total", name);
        check_sum(&total, v, n, what);
        snprintf(what, sizeof what, "%s recent", name);
        check_sum(&recent, v, n, what);
        free(v);
}

static void test_pct_uniform(void **state) {
        (void)state;
        run_dist("uniform", gen_uniform, NS, 11);
}
static void test_pct_lognormal(void **state) {
        (void)state;
        run_dist("lognormal", gen_lognormal, NS, 12);
}
static void test_pct_constant(void **state) {
        (void)state;
        run_dist("constant", gen_constant, NS, 13);
        run_dist("constant-1", gen_constant, 1, 13);
}
static void test_pct_outliers(void **state) {
        (void)state;
        run_dist("outliers", gen_outliers, NS, 14);
        /* Few samples, where one outlier is the p99. */
        run_dist("outliers-100", gen_outliers, 100, 15);
        run_dist("outliers-7", gen_outliers, 7, 16);
}
static void test_pct_small_bimodal_wide(void **state) {
        (void)state;
        run_dist("small", gen_small, NS, 17);
        run_dist("bimodal", gen_bimodal, NS, 18);
        run_dist("wide", gen_wide, NS, 19);
        for (size_t n = 1; n <= 64; n++)
                run_dist("wide-n", gen_wide, n, 100 + n);
}

static void test_pct_empty(void **state) {
        (void)state;
        static lp_whist_t w;
        static lp_hsum_t total, recent;
        memset(&w, 0, sizeof w);
        WREAD(&w, T_BASE, &total, &recent);
        check_sum(&total, NULL, 0, "empty total");
        check_sum(&recent, NULL, 0, "empty recent");
        lagprobe_hist_summary_t o;
        lp_hsum_summary(&total, &o);
        assert_true(o.count == 0 && o.sum_ms == 0 && o.p50_ms == 0 &&
                    o.p99_ms == 0 && o.max_ms == 0);
}

/* ---- the recent window ----------------------------------------------- */

/* Which samples the recent window must hold at now: the ring keeps LP_WIN
 * sub-histograms of win_us; a sample added at t lives in the one that
 * starts at floor(t / win_us) * win_us, and a read at now sums those
 * starting in (now - LP_WIN * win_us, now]. So a sample is surely in it
 * for now < t + (LP_WIN - 1) * win_us and surely gone at now >=
 * t + LP_WIN * win_us. */
static int in_recent(int64_t t, int64_t now) {
        int64_t start = t / win_us * win_us;
        return start > now - (int64_t)LP_WIN * win_us && start <= now;
}

static void window_boundaries(void) {
        static lp_whist_t w;
        static lp_hsum_t total, recent;
        memset(&w, 0, sizeof w);
        const int64_t t = T_BASE + 3700000; /* 3.7 s into a window */
        const int64_t start = t / win_us * win_us;
        const int64_t span = (int64_t)LP_WIN * win_us;
        WADD(&w, t, 100);
        int64_t sure_in = t + (LP_WIN - 1) * (int64_t)win_us - 1;
        const int64_t probes[] = {t,           t + 1000000,  sure_in,
                                  start + span - 1, start + span,
                                  t + span,    t + 10 * span};
        for (size_t k = 0; k < sizeof probes / sizeof probes[0]; k++) {
                WREAD(&w, probes[k], &total, &recent);
                assert_int_equal(total.count, 1);
                assert_int_equal(recent.count, in_recent(t, probes[k]));
                assert_int_equal(recent.sum_us,
                                 in_recent(t, probes[k]) ? 100 : 0);
        }
        /* The promises: kept ~(LP_WIN - 1) windows, gone after LP_WIN. */
        assert_true(in_recent(t, sure_in));
        assert_true(in_recent(t, start + span - 1));
        assert_false(in_recent(t, start + span));
        assert_false(in_recent(t, t + span));

        /* A sample landing in the same ring slot a lap later clears it:
         * the old sample is gone from recent, kept in total. */
        int64_t t2 = t + span; /* same slot index, next lap */
        WADD(&w, t2, 7000);
        WREAD(&w, t2, &total, &recent);
        assert_int_equal(total.count, 2);
        assert_int_equal(total.sum_us, 7100);
        assert_int_equal(total.max_us, 7000);
        assert_int_equal(recent.count, 1);
        assert_int_equal(recent.sum_us, 7000);
        assert_int_equal(recent.max_us, 7000);
}

/* Old slow samples, then fast ones a minute later: the recent percentiles
 * follow the fast ones only; the cumulative ones keep both. */
static void window_forgets_percentiles(void) {
        static lp_whist_t w;
        static lp_hsum_t total, recent;
        memset(&w, 0, sizeof w);
        int64_t now = T_BASE;
        for (int i = 0; i < 1000; i++)
                WADD(&w, now + i * 1000, 3000000); /* 3 s batches */
        now += (int64_t)LP_WIN * win_us + 5000000;
        for (int i = 0; i < 1000; i++)
                WADD(&w, now + i * 1000, 20000); /* 20 ms */
        WREAD(&w, now + 1000000, &total, &recent);
        assert_int_equal(recent.count, 1000);
        assert_int_equal(recent.max_us, 20000);
        assert_int_equal(recent.sum_us, 1000 * 20000);
        assert_close(lp_hsum_pct(&recent, 0.99), 20000, "recent", 0.99);
        assert_int_equal(total.count, 2000);
        assert_int_equal(total.max_us, 3000000);
        assert_close(lp_hsum_pct(&total, 0.50), 20000, "total", 0.5);
        assert_close(lp_hsum_pct(&total, 0.99), 3000000, "total", 0.99);
}

/* Random walk through time against the model above: count, sum and max of
 * the recent window exact, its percentiles within the bound. */
static void window_model(void) {
        static lp_whist_t w;
        static lp_hsum_t total, recent;
        enum { N = 6000 };
        static int64_t ts[N], vs[N], sel[N];
        memset(&w, 0, sizeof w);
        rng_seed(77);
        int64_t now = T_BASE + 4321;
        int64_t tsum = 0;
        for (int i = 0; i < N; i++) {
                /* mostly small steps, sometimes a long quiet stretch */
                now += rng_u64() % 20 == 0 ? rng_range(5000000, 90000000)
                                           : rng_range(0, 400000);
                ts[i] = now;
                vs[i] = gen_lognormal(0);
                tsum += vs[i];
                WADD(&w, now, vs[i]);
                if (i % 50 != 49)
                        continue;
                /* Read at now or a little later (no add in between). */
                int64_t rnow = now + (rng_u64() % 3 ? 0 : rng_range(0, 70000000));
                WREAD(&w, rnow, &total, &recent);
                assert_int_equal(total.count, i + 1);
                assert_int_equal(total.sum_us, tsum);
                size_t k = 0;
                for (int j = 0; j <= i; j++)
                        if (in_recent(ts[j], rnow))
                                sel[k++] = vs[j];
                check_sum(&recent, sel, k, "window model");
        }
}

/* Each window test with the default sub-window and a short one. */
#define WINDOW_TEST(name)                                                      \
        static void test_##name(void **state) {                                \
                (void)state;                                                   \
                const int64_t subs[] = {60000LL * 1000 / LP_WIN, 1000000};     \
                for (size_t k = 0; k < 2; k++) {                               \
                        win_us = subs[k];                                      \
                        name();                                                \
                }                                                              \
                win_us = subs[0];                                              \
        }
WINDOW_TEST(window_boundaries)
WINDOW_TEST(window_forgets_percentiles)
WINDOW_TEST(window_model)

/* A batch's messages are all counted in the per-message histogram, however
 * many: those reported through batch_progress, and the rest spread evenly
 * at batch_end, each group in one histogram update. */
static void test_batch_counts_every_message(void **state) {
        (void)state;
        lagprobe_config_t c;
        lagprobe_config_init(&c);
        c.watchdog_interval_ms = 0;
        char err[256];
        lagprobe_t *p = lagprobe_new(&c, err, sizeof err);
        assert_non_null(p);
        lagprobe_snapshot_t s;
        for (int round = 1; round <= 3; round++) {
                lagprobe_batch_begin(p, 1000);
                lagprobe_batch_progress(p, 300);
                lagprobe_batch_progress(p, 300); /* no new messages */
                lagprobe_batch_progress(p, 301);
                lagprobe_batch_end(p);
                lagprobe_snapshot_init(&s, NULL, 0);
                assert_int_equal(lagprobe_snapshot(p, &s), 0);
                assert_int_equal(s.batch.count, round);
                assert_int_equal(s.message.count, 1000 * round);
                assert_int_equal(s.message_recent.count, 1000 * round);
                assert_true(s.message.sum_ms <= s.batch.sum_ms + 0.001);
        }
        assert_int_equal(s.hook_errors, 0);
        lagprobe_destroy(p);
}

/* A hook entered while another is running (two threads at once, as
 * lp_hook_enter() sees it) is a hook error and changes nothing. */
static void test_hook_while_hook_runs(void **state) {
        (void)state;
        lagprobe_t *p = wb_probe();
        lagprobe_snapshot_t s;
        atomic_store(&p->in_hook, 1); /* the other thread's hook */
        lagprobe_batch_begin(p, 5);
        lagprobe_batch_progress(p, 1);
        lagprobe_batch_end(p);
        lagprobe_snapshot_init(&s, NULL, 0);
        assert_int_equal(lagprobe_snapshot(p, &s), 0);
        assert_int_equal(s.hook_errors, 3);
        assert_int_equal(s.in_batch, 0);
        assert_int_equal(s.batch.count, 0);
        assert_int_equal(s.message.count, 0);
        atomic_store(&p->in_hook, 0); /* it returned */
        lagprobe_batch_begin(p, 5);
        lagprobe_batch_end(p);
        assert_int_equal(lagprobe_snapshot(p, &s), 0);
        assert_int_equal(s.hook_errors, 3);
        assert_int_equal(s.batch.count, 1);
        assert_int_equal(s.message.count, 5);
        lagprobe_destroy(p);
}

/* lagprobe_batch_duration_seconds' buckets for samples well inside
 * README's le bounds: each cumulative count, the +Inf bucket, _count and
 * _sum are the samples'. */
static void test_prometheus_buckets(void **state) {
        (void)state;
        lagprobe_t *p = wb_probe();
        static const int64_t us[] = {300, 700, 2000, 40000, 7000000,
                                     2000000000};
        int64_t sum = 0, now = lp_mono_us();
        for (size_t i = 0; i < sizeof us / sizeof us[0]; i++) {
                lp_whist_add(&p->h_batch, p->win_us, now, us[i]);
                sum += us[i];
        }
        static const struct {
                const char *le;
                double n;
        } want[] = {{"0.0005", 1}, {"0.001", 2}, {"0.0025", 3},
                    {"0.005", 3},  {"0.01", 3},  {"0.025", 3},
                    {"0.05", 4},   {"0.1", 4},   {"0.25", 4},
                    {"0.5", 4},    {"1", 4},     {"2.5", 4},
                    {"5", 4},      {"10", 5},    {"30", 5},
                    {"60", 5},     {"120", 5},   {"300", 5},
                    {"600", 5},    {"1800", 5},  {"+Inf", 6}};
        char *m = h_metrics(p);
        assert_int_equal(h_prom_count(m, "lagprobe_batch_duration_seconds_bucket",
                                      NULL),
                         sizeof want / sizeof want[0]);
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
                char l[32];
                snprintf(l, sizeof l, "le=\"%s\"", want[i].le);
                double got =
                    h_prom(m, "lagprobe_batch_duration_seconds_bucket", l);
                if (got != want[i].n)
                        H_FAIL("bucket le=%s: %g, want %g", want[i].le, got,
                               want[i].n);
        }
        assert_true(h_prom(m, "lagprobe_batch_duration_seconds_count", NULL) ==
                    6);
        double s = h_prom(m, "lagprobe_batch_duration_seconds_sum", NULL);
        assert_true(fabs(s - (double)sum / 1e6) < 1e-6);
        /* The other two histograms are empty. */
        assert_true(h_prom(m, "lagprobe_message_processing_seconds_count",
                           NULL) == 0);
        assert_true(h_prom(m, "lagprobe_poll_gap_seconds_bucket",
                           "le=\"+Inf\"") == 0);
        free(m);
        h_assert_outputs_agree(p);
        lagprobe_destroy(p);
}

int main(void) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_prometheus_buckets),
            cmocka_unit_test(test_batch_counts_every_message),
            cmocka_unit_test(test_hook_while_hook_runs),
            cmocka_unit_test(test_bucket_geometry),
            cmocka_unit_test(test_pct_uniform),
            cmocka_unit_test(test_pct_lognormal),
            cmocka_unit_test(test_pct_constant),
            cmocka_unit_test(test_pct_outliers),
            cmocka_unit_test(test_pct_small_bimodal_wide),
            cmocka_unit_test(test_pct_empty),
            cmocka_unit_test(test_window_boundaries),
            cmocka_unit_test(test_window_forgets_percentiles),
            cmocka_unit_test(test_window_model),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}

/* White-box: the statistics parser fed malformed and odd documents.
 *
 * This file #includes probe.c to reach the static parser entry point
 * lp_stats_parse() and the slot index; the Makefile links probe.c
 * as an archive, so the archive's copy is not pulled in. A probe made with
 * lagprobe_new() and never attached is fed documents directly; partitions
 * are marked assigned through the index so that applied figures show in
 * lagprobe_snapshot().
 * SPDX-License-Identifier: BSD-2-Clause */
#define _POSIX_C_SOURCE 200809L

#include "../probe.c"

#include "wb.h"

static char *real_doc;     /* a statistics document from the mock cluster */
static size_t real_len;
static char real_topic[64];
static int64_t real_hi[2]; /* its hi_offset for partitions 0 and 1 */

/* ---- capturing a real document ------------------------------------- */

typedef struct capture_s {
        char *doc;
        size_t len;
        int after; /* documents seen since everything was consumed */
        int consumed_all;
} capture_t;

/* Does a statistics document show both partitions of the topic consumed
 * to the end (librdkafka's app_offset equal to what was produced)? */
static int doc_consumed_all(const char *json, size_t len) {
        h_json_t *root = h_json_parse(json, len);
        const h_json_t *topics = root ? h_json_get(root, "topics") : NULL;
        const h_json_t *t = topics ? h_json_get(topics, real_topic) : NULL;
        const h_json_t *parts = t ? h_json_get(t, "partitions") : NULL;
        int all = parts != NULL;
        for (int i = 0; i < 2 && all; i++) {
                char key[16];
                snprintf(key, sizeof key, "%d", i);
                const h_json_t *x = h_json_get(parts, key);
                all = x && h_json_int(x, "app_offset") == real_hi[i];
        }
        h_json_free(root);
        return all;
}

/* Keeps the newest document that shows everything consumed: after a
 * rejoin (a session timeout on a starved machine) librdkafka reports
 * app_offset -1001 until the partition is consumed again, and such a
 * document is not the one test_real_document describes. */
static int capture_stats_cb(rd_kafka_t *rk, char *json, size_t len,
                            void *opaque) {
        (void)rk;
        capture_t *c = opaque;
        if (!c->consumed_all || !doc_consumed_all(json, len))
                return 0;
        free(c->doc);
        c->doc = malloc(len + 1);
        if (c->doc) {
                memcpy(c->doc, json, len);
                c->doc[len] = 0;
                c->len = len;
        }
        c->after++;
        return 0;
}

typedef struct capwait_s {
        capture_t *c;
        h_track_t *t;
        int64_t want;
} capwait_t;

static int capture_ready(void *arg) {
        capwait_t *w = arg;
        if (w->t->total >= w->want)
                w->c->consumed_all = 1;
        return w->c->after >= 3;
}

static int setup(void **state) {
        (void)state;
        h_cluster_t *cl = h_cluster_new(1);
        char group[64];
        h_unique("wbstats", real_topic, sizeof real_topic);
        h_unique("gwb", group, sizeof group);
        h_topic_create(cl, real_topic, 2);
        real_hi[0] = 3;
        real_hi[1] = 9;
        h_produce(cl, real_topic, 0, (int)real_hi[0], NULL, 0);
        h_produce(cl, real_topic, 1, (int)real_hi[1], NULL, 0);
        capture_t c = {0};
        rd_kafka_conf_t *conf = h_conf(cl, group, NULL, 0);
        rd_kafka_conf_set_opaque(conf, &c);
        rd_kafka_conf_set_stats_cb(conf, capture_stats_cb);
        rd_kafka_t *rk = h_consumer_new(conf, real_topic);
        h_track_t t;
        h_track_init(&t);
        capwait_t w = {&c, &t, real_hi[0] + real_hi[1]};
        int ok = h_poll_until(rk, &t, capture_ready, &w, H_JOIN_TIMEOUT_MS);
        h_consumer_close(rk);
        h_cluster_destroy(cl);
        if (!ok || !c.doc)
                return -1;
        real_doc = c.doc;
        real_len = c.len;
        return 0;
}

static int teardown(void **state) {
        (void)state;
        free(real_doc);
        real_doc = NULL;
        return 0;
}

/* ---- helpers ---------------------------------------------------------- */

typedef struct counts_s {
        int64_t docs, errors, field_errors;
} counts_t;

static counts_t counts(lagprobe_t *p) {
        h_snap_t hs;
        h_snap(p, &hs);
        counts_t c = {hs.s.stats_docs, hs.s.stats_errors,
                      hs.s.stats_field_errors};
        return c;
}

static int feed(lagprobe_t *p, const char *doc) {
        return lp_stats_parse(p, doc, strlen(doc));
}

/* Feeds doc and checks the counters moved as the return code says: an
 * accepted document counts in docs (and its field errors), a rejected one
 * in errors only. Returns the return code. */
static int feed_counted(lagprobe_t *p, const char *doc, size_t len) {
        counts_t a = counts(p);
        int rc = lp_stats_parse(p, doc, len);
        counts_t b = counts(p);
        assert_true(rc == 0 || rc == -1);
        if (rc == 0) {
                assert_int_equal(b.docs, a.docs + 1);
                assert_int_equal(b.errors, a.errors);
        } else {
                assert_int_equal(b.docs, a.docs);
                assert_int_equal(b.errors, a.errors + 1);
                assert_int_equal(b.field_errors, a.field_errors);
        }
        return rc;
}

static const lagprobe_partition_t *find(h_snap_t *hs, lagprobe_t *p,
                                        const char *topic, int32_t part) {
        h_snap(p, hs);
        return h_snap_find(hs, topic, part);
}

/* Replaces every occurrence of from by to; caller frees. */
static char *subst(const char *doc, const char *from, const char *to) {
        size_t fl = strlen(from), tl = strlen(to), n = 0;
        for (const char *q = doc; (q = strstr(q, from)); q += fl)
                n++;
        char *out = malloc(strlen(doc) + n * (tl + 1) + 1);
        assert_non_null(out);
        char *o = out;
        const char *q = doc, *hit;
        while ((hit = strstr(q, from))) {
                memcpy(o, q, (size_t)(hit - q));
                o += hit - q;
                memcpy(o, to, tl);
                o += tl;
                q = hit + fl;
        }
        strcpy(o, q);
        return out;
}

/* Adds delta to the integer after every "key": in doc; caller frees. */
static char *bump(const char *doc, const char *key, int64_t delta) {
        char pat[64];
        snprintf(pat, sizeof pat, "\"%s\":", key);
        size_t cap = strlen(doc) * 2 + 64, o = 0;
        char *out = malloc(cap);
        assert_non_null(out);
        const char *q = doc, *hit;
        while ((hit = strstr(q, pat))) {
                hit += strlen(pat);
                memcpy(out + o, q, (size_t)(hit - q));
                o += (size_t)(hit - q);
                char *end;
                long long v = strtoll(hit, &end, 10);
                if (end == hit) {
                        q = hit;
                        continue;
                }
                o += (size_t)sprintf(out + o, "%lld", v + delta);
                q = end;
        }
        strcpy(out + o, q);
        return out;
}

/* A small document: one topic (name already JSON-escaped), partition 0
 * with the given figures, the internal "-1" partition, a cgrp. */
static char *small_doc(const char *topic_json, const char *part0_fields) {
        char *buf = malloc(4096 + strlen(topic_json) * 2);
        assert_non_null(buf);
        sprintf(buf,
                "{\"name\":\"wb#consumer-1\",\"type\":\"consumer\","
                "\"topics\":{\"%s\":{\"topic\":\"%s\",\"partitions\":{"
                "\"0\":{%s},"
                "\"-1\":{\"partition\":-1,\"hi_offset\":-1001,"
                "\"committed_offset\":-1001}}}},"
                "\"cgrp\":{\"state\":\"up\",\"rebalance_cnt\":3}}",
                topic_json, topic_json, part0_fields);
        return buf;
}

#define P0_GOOD                                                                \
        "\"partition\":0,\"fetch_state\":\"active\",\"hi_offset\":42,"         \
        "\"lo_offset\":1,\"ls_offset\":42,\"committed_offset\":40,"            \
        "\"app_offset\":41,\"fetchq_cnt\":0,\"fetchq_size\":0"

/* ---- tests ------------------------------------------------------------ */

static void test_real_document(void **state) {
        (void)state;
        lagprobe_t *p = wb_probe();
        wb_assign(p, real_topic, 0);
        wb_assign(p, real_topic, 1);
        assert_int_equal(feed_counted(p, real_doc, real_len), 0);
        counts_t c = counts(p);
        assert_int_equal(c.docs, 1);
        assert_int_equal(c.field_errors, 0);
        h_snap_t hs;
        for (int i = 0; i < 2; i++) {
                const lagprobe_partition_t *x = find(&hs, p, real_topic, i);
                assert_non_null(x);
                assert_int_equal(x->high_watermark, real_hi[i]);
                assert_int_equal(x->committed_offset, -1);
                assert_int_equal(x->lag, -1);
                assert_int_equal(x->position, real_hi[i]); /* app_offset */
        }
        assert_string_equal(hs.s.cgrp_state, "up");
        assert_true(hs.s.cgrp_rebalance_cnt >= 1);
        assert_true(strstr(hs.s.name, "consumer") != NULL);
        /* librdkafka's buffer may carry its NUL in the length. */
        assert_int_equal(feed_counted(p, real_doc, real_len + 1), 0);
        lagprobe_destroy(p);
}

static void test_null_and_empty(void **state) {
        (void)state;
        lagprobe_t *p = wb_probe();
        assert_int_equal(feed_counted(p, NULL, 0), -1);
        assert_int_equal(feed_counted(p, NULL, 100), -1);
        assert_int_equal(feed_counted(p, "", 0), -1);
        assert_int_equal(feed_counted(p, "   ", 3), -1);
        assert_int_equal(feed_counted(p, "{}", 2), 0);
        assert_int_equal(feed_counted(p, "{} x", 4), -1);
        assert_int_equal(feed_counted(p, "{}{}", 4), -1);
        assert_int_equal(feed_counted(p, "[]", 2), -1);
        assert_int_equal(feed_counted(p, "\"{}\"", 4), -1);
        assert_int_equal(feed_counted(p, "null", 4), -1);
        lagprobe_destroy(p);
}

/* Every proper prefix of a real document is rejected, whether the bytes
 * after it are readable (inside the full buffer) or not (an exact-size
 * copy: reading past the end is an ASan error), and a rejected document
 * changes no figure. */
static void test_truncated_every_length(void **state) {
        (void)state;
        lagprobe_t *p = wb_probe();
        wb_assign(p, real_topic, 0);
        wb_assign(p, real_topic, 1);
        assert_int_equal(feed(p, real_doc), 0);
        /* A newer document with other figures: none of its prefixes may
         * leak them. */
        char *newer = bump(real_doc, "hi_offset", 1000);
        size_t nlen = strlen(newer);
        size_t last = nlen;
        while (last > 0 && newer[last - 1] != '}')
                last--;
        assert_true(last > 100);
        counts_t a = counts(p);
        int64_t accepted = 0;
        for (size_t len = 0; len < last; len++) {
                if (lp_stats_parse(p, newer, len) == 0)
                        accepted++;
                char *exact = malloc(len ? len : 1);
                assert_non_null(exact);
                memcpy(exact, newer, len);
                if (lp_stats_parse(p, exact, len) == 0)
                        accepted++;
                free(exact);
        }
        assert_int_equal(accepted, 0);
        counts_t b = counts(p);
        assert_int_equal(b.docs, a.docs);
        assert_int_equal(b.errors, a.errors + 2 * (int64_t)last);
        assert_int_equal(b.field_errors, a.field_errors);
        h_snap_t hs;
        for (int i = 0; i < 2; i++) {
                const lagprobe_partition_t *x = find(&hs, p, real_topic, i);
                assert_int_equal(x->high_watermark, real_hi[i]);
        }
        /* The whole newer document is fine and applies. */
        assert_int_equal(feed_counted(p, newer, nlen), 0);
        const lagprobe_partition_t *x = find(&hs, p, real_topic, 1);
        assert_int_equal(x->high_watermark, real_hi[1] + 1000);
        free(newer);
        lagprobe_destroy(p);
}

static void test_wrong_types(void **state) {
        (void)state;
        lagprobe_t *p = wb_probe();
        wb_assign(p, "t", 0);
        char *good = small_doc("t", P0_GOOD);
        assert_int_equal(feed_counted(p, good, strlen(good)), 0);
        h_snap_t hs;
        const lagprobe_partition_t *x = find(&hs, p, "t", 0);
        assert_int_equal(x->high_watermark, 42);
        assert_int_equal(x->committed_offset, 40);
        assert_int_equal(x->lag, 2);

        /* Well-formed documents with fields of the wrong type: accepted,
         * the field counted as an error and its old value kept. */
        static const char *const bad_fields[] = {
            "\"partition\":0,\"hi_offset\":\"77\"",
            "\"partition\":0,\"hi_offset\":[77]",
            "\"partition\":0,\"hi_offset\":{\"v\":77}",
            "\"partition\":0,\"hi_offset\":true",
            "\"partition\":0,\"hi_offset\":null",
            "\"partition\":0,\"hi_offset\":77.5",
            "\"partition\":0,\"hi_offset\":7.7e1",
            "\"partition\":0,\"hi_offset\":99999999999999999999999",
            "\"partition\":0,\"hi_offset\":-99999999999999999999999",
            "\"partition\":0,\"hi_offset\":9223372036854775808",
            "\"partition\":0,\"fetch_state\":5,\"hi_offset\":\"x\"",
            "\"partition\":\"0\",\"hi_offset\":\"77\"",
        };
        for (size_t i = 0; i < sizeof bad_fields / sizeof *bad_fields; i++) {
                char *d = small_doc("t", bad_fields[i]);
                counts_t a = counts(p);
                int rc = feed_counted(p, d, strlen(d));
                counts_t b = counts(p);
                x = find(&hs, p, "t", 0);
                if (rc != 0 || b.field_errors <= a.field_errors ||
                    x->high_watermark != 42)
                        fail_msg("{%s}: rc %d, field errors %" PRId64
                                 " -> %" PRId64 ", hwm %" PRId64,
                                 bad_fields[i], rc, a.field_errors,
                                 b.field_errors, x->high_watermark);
                free(d);
        }

        /* Containers of the wrong type where the probe expects objects. */
        static const char *const bad_docs[] = {
            "{\"topics\":[]}",
            "{\"topics\":[{\"t\":{}}]}",
            "{\"topics\":\"t\"}",
            "{\"topics\":{\"t\":[]}}",
            "{\"topics\":{\"t\":{\"partitions\":[{\"partition\":0}]}}}",
            "{\"topics\":{\"t\":{\"partitions\":{\"0\":[1,2]}}}}",
            "{\"topics\":{\"t\":{\"partitions\":{\"0\":7}}}}",
            "{\"cgrp\":[\"up\"]}",
            "{\"cgrp\":{\"state\":1,\"rebalance_cnt\":\"2\"}}",
            "{\"ts\":\"now\",\"name\":7}",
        };
        for (size_t i = 0; i < sizeof bad_docs / sizeof *bad_docs; i++) {
                counts_t a = counts(p);
                int rc = feed_counted(p, bad_docs[i], strlen(bad_docs[i]));
                counts_t b = counts(p);
                if (b.field_errors + b.errors <= a.field_errors + a.errors)
                        fail_msg("%s: rc %d but no error counted",
                                 bad_docs[i], rc);
        }
        x = find(&hs, p, "t", 0);
        assert_int_equal(x->high_watermark, 42);
        assert_string_equal(hs.s.cgrp_state, "up");

        /* The real document with every hi_offset turned into a float
         * (1e<digits>, still valid JSON): one field error each. */
        lagprobe_t *q = wb_probe();
        wb_assign(q, real_topic, 0);
        wb_assign(q, real_topic, 1);
        assert_int_equal(feed(q, real_doc), 0);
        char *floats = subst(real_doc, "\"hi_offset\":", "\"hi_offset\":1e");
        int64_t n = 0;
        for (const char *k = real_doc; (k = strstr(k, "\"hi_offset\":")); k++)
                n++;
        assert_true(n >= 3);
        counts_t qa = counts(q);
        assert_int_equal(feed_counted(q, floats, strlen(floats)), 0);
        assert_int_equal(counts(q).field_errors, qa.field_errors + n);
        for (int i = 0; i < 2; i++) {
                x = find(&hs, q, real_topic, i);
                assert_int_equal(x->high_watermark, real_hi[i]);
        }
        free(floats);
        lagprobe_destroy(q);

        /* Valid documents are still accepted afterwards. */
        char *newer = small_doc("t", "\"partition\":0,\"hi_offset\":50,"
                                     "\"committed_offset\":45");
        counts_t a = counts(p);
        assert_int_equal(feed_counted(p, newer, strlen(newer)), 0);
        assert_int_equal(counts(p).field_errors, a.field_errors);
        x = find(&hs, p, "t", 0);
        assert_int_equal(x->high_watermark, 50);
        assert_int_equal(x->committed_offset, 45);
        assert_int_equal(x->lag, 5);
        free(newer);
        free(good);
        lagprobe_destroy(p);
}

static void test_big_numbers_in_range(void **state) {
        (void)state;
        lagprobe_t *p = wb_probe();
        wb_assign(p, "t", 0);
        /* INT64_MAX is a valid offset as far as JSON goes; the lag
         * arithmetic must not overflow (UBSan). */
        char *d = small_doc("t", "\"partition\":0,"
                                 "\"hi_offset\":9223372036854775807,"
                                 "\"committed_offset\":0,\"app_offset\":1");
        assert_int_equal(feed_counted(p, d, strlen(d)), 0);
        h_snap_t hs;
        const lagprobe_partition_t *x = find(&hs, p, "t", 0);
        assert_true(x->high_watermark == INT64_MAX);
        assert_int_equal(x->committed_offset, 0);
        assert_true(x->lag == INT64_MAX);
        assert_int_equal(x->position, 1); /* app_offset, nothing consumed */
        assert_true(x->position_lag == INT64_MAX - 1);
        assert_int_equal(hs.s.stats_field_errors, 0);
        free(d);
        /* A negative offset other than librdkafka's -1001 (unknown) is no
         * figure: the last known ones stay. */
        d = small_doc("t", "\"partition\":0,"
                           "\"hi_offset\":-9223372036854775808,"
                           "\"committed_offset\":-9223372036854775808");
        assert_int_equal(feed_counted(p, d, strlen(d)), 0);
        x = find(&hs, p, "t", 0);
        assert_true(x->high_watermark == INT64_MAX);
        assert_int_equal(x->committed_offset, 0);
        assert_true(x->lag == INT64_MAX);
        free(d);
        /* JSON carries the same 19-digit figures. */
        char *js = h_snap_json(p);
        h_json_t *j = h_json_parse(js, strlen(js));
        assert_non_null(j);
        const h_json_t *jp = h_json_find_partition(j, "t", 0);
        assert_non_null(jp);
        assert_true(h_json_int(jp, "high_watermark") == INT64_MAX);
        assert_true(h_json_int(jp, "lag") == INT64_MAX);
        assert_int_equal(h_json_int(jp, "committed_offset"), 0);
        assert_non_null(strstr(js, "\"lag\":9223372036854775807"));
        h_json_free(j);
        free(js);
        lagprobe_destroy(p);
}

static char *repeat(const char *s, int n, const char *pre, const char *post) {
        size_t sl = strlen(s);
        char *out = malloc(strlen(pre) + sl * (size_t)n + strlen(post) + 1);
        assert_non_null(out);
        strcpy(out, pre);
        char *o = out + strlen(pre);
        for (int i = 0; i < n; i++, o += sl)
                memcpy(o, s, sl);
        strcpy(o, post);
        return out;
}

static void test_deep_nesting(void **state) {
        (void)state;
        lagprobe_t *p = wb_probe();
        wb_assign(p, "t", 0);
        char *good = small_doc("t", P0_GOOD);
        assert_int_equal(feed(p, good), 0);

        /* Unbalanced: rejected. */
        char *d = repeat("[", 10000, "", "");
        assert_int_equal(feed_counted(p, d, strlen(d)), -1);
        free(d);
        d = repeat("[", 10000, "{\"x\":", "");
        assert_int_equal(feed_counted(p, d, strlen(d)), -1);
        free(d);
        d = repeat("{\"a\":", 10000, "", "");
        assert_int_equal(feed_counted(p, d, strlen(d)), -1);
        free(d);

        /* Balanced but 10000 deep, at the top level and inside the
         * fields the probe reads: no stack overflow; accepted or
         * rejected, counted either way. */
        char *open = repeat("[", 10000, "{\"x\":", "");
        d = repeat("]", 10000, open, "}");
        feed_counted(p, d, strlen(d));
        free(open);
        free(d);
        open = repeat("{\"a\":", 10000, "", "1");
        d = repeat("}", 10000, open, "");
        feed_counted(p, d, strlen(d));
        free(open);
        free(d);
        open = repeat("[", 10000,
                      "{\"topics\":{\"t\":{\"partitions\":{\"0\":{"
                      "\"partition\":0,\"hi_offset\":",
                      "");
        d = repeat("]", 10000, open, "}}}}}");
        feed_counted(p, d, strlen(d));
        free(open);
        free(d);

        h_snap_t hs;
        const lagprobe_partition_t *x = find(&hs, p, "t", 0);
        assert_int_equal(x->high_watermark, 42);
        assert_int_equal(feed_counted(p, good, strlen(good)), 0);
        free(good);
        lagprobe_destroy(p);
}

static void test_odd_topic_names(void **state) {
        (void)state;
        lagprobe_t *p = wb_probe();
        char long_name[250];
        memset(long_name, 'x', 249);
        long_name[249] = 0;
        /* JSON form in the document -> name the probe tracks. */
        static const struct {
                const char *json, *name;
        } names[] = {
            {"a.b-c_d", "a.b-c_d"},
            {"..", ".."},
            {"q\\\"uote", "q\"uote"},
            {"back\\\\slash", "back\\slash"},
            {"sl\\/ash", "sl/ash"},
            {"uni\\u00e9", "uni\xc3\xa9"},
            {"tab\\there", "tab\there"},
        };
        h_snap_t hs;
        for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
                wb_assign(p, names[i].name, 0);
                char *d = small_doc(names[i].json, P0_GOOD);
                assert_int_equal(feed_counted(p, d, strlen(d)), 0);
                const lagprobe_partition_t *x = find(&hs, p, names[i].name, 0);
                if (!x || x->high_watermark != 42)
                        fail_msg("topic %s: figures not applied", names[i].json);
                free(d);
        }
        wb_assign(p, long_name, 0);
        char *d = small_doc(long_name, P0_GOOD);
        assert_int_equal(feed_counted(p, d, strlen(d)), 0);
        free(d);
        const lagprobe_partition_t *x = find(&hs, p, long_name, 0);
        assert_non_null(x);
        assert_int_equal(x->high_watermark, 42);

        /* A NUL inside a name is no topic the probe tracks ("nul" is). */
        wb_assign(p, "nul", 0);
        d = small_doc("nul\\u0000byte", P0_GOOD);
        assert_int_equal(feed_counted(p, d, strlen(d)), 0);
        free(d);
        x = find(&hs, p, "nul", 0);
        assert_int_equal(x->high_watermark, -1);
        /* Longer than any buffer: ignored, no overflow. */
        char *huge = malloc(5001);
        assert_non_null(huge);
        memset(huge, 'h', 5000);
        huge[5000] = 0;
        d = small_doc(huge, P0_GOOD);
        assert_int_equal(feed_counted(p, d, strlen(d)), 0);
        free(d);
        free(huge);
        /* Broken escapes: malformed. */
        static const char *const broken[] = {"bad\\x", "bad\\u12", "bad\\",
                                             "ctl\x01"};
        for (size_t i = 0; i < sizeof broken / sizeof *broken; i++) {
                d = small_doc(broken[i], P0_GOOD);
                assert_int_equal(feed_counted(p, d, strlen(d)), -1);
                free(d);
        }
        /* The JSON output escapes what the names contain. */
        char *js = h_snap_json(p);
        h_json_t *j = h_json_parse(js, strlen(js));
        if (!j)
                fail_msg("snapshot JSON invalid: %s", js);
        for (size_t i = 0; i < sizeof names / sizeof *names; i++)
                assert_non_null(h_json_find_partition(j, names[i].name, 0));
        h_json_free(j);
        free(js);
        lagprobe_destroy(p);
}

static void test_unknown_fields(void **state) {
        (void)state;
        lagprobe_t *p = wb_probe();
        wb_assign(p, "t", 0);
        const char *d =
            "{\"zzz\":{\"a\":[1,2.5,-3e7,{\"b\":null}],\"c\":\"\\u1234\"},"
            "\"name\":\"n\",\"brokers\":{\"b1\":{\"toppars\":{\"t-0\":{"
            "\"topic\":\"t\",\"partition\":0}}}},"
            "\"topics\":{\"t\":{\"extra\":[true,false,null],\"partitions\":{"
            "\"0\":{\"new_field\":{\"x\":[[]]},\"partition\":0,"
            "\"hi_offset\":12,\"committed_offset\":10,\"later\":\"s\"}},"
            "\"more\":1}},\"cgrp\":{\"state\":\"up\",\"future\":{}},"
            "\"tail\":[]}";
        counts_t a = counts(p);
        assert_int_equal(feed_counted(p, d, strlen(d)), 0);
        assert_int_equal(counts(p).field_errors, a.field_errors);
        h_snap_t hs;
        const lagprobe_partition_t *x = find(&hs, p, "t", 0);
        assert_int_equal(x->high_watermark, 12);
        assert_int_equal(x->committed_offset, 10);
        assert_int_equal(x->lag, 2);
        lagprobe_destroy(p);
}

static void test_internal_partition_and_sentinels(void **state) {
        (void)state;
        lagprobe_t *p = wb_probe();
        wb_assign(p, "t", 0);
        char *good = small_doc("t", P0_GOOD);
        assert_int_equal(feed(p, good), 0);

        /* -1001 ("unknown") everywhere: figures become unknown, no field
         * errors, lag null. */
        char *d = small_doc("t", "\"partition\":0,\"hi_offset\":-1001,"
                                 "\"lo_offset\":-1001,\"ls_offset\":-1001,"
                                 "\"committed_offset\":-1001,"
                                 "\"app_offset\":-1001");
        counts_t a = counts(p);
        assert_int_equal(feed_counted(p, d, strlen(d)), 0);
        assert_int_equal(counts(p).field_errors, a.field_errors);
        free(d);
        h_snap_t hs;
        const lagprobe_partition_t *x = find(&hs, p, "t", 0);
        assert_int_equal(x->high_watermark, -1);
        assert_int_equal(x->low_watermark, -1);
        assert_int_equal(x->lag, -1);
        assert_int_equal(x->position_lag, -1);

        /* The internal "-1" partition only: no partition -1 appears, none
         * is created. */
        d = strdup("{\"topics\":{\"t\":{\"partitions\":{\"-1\":{"
                   "\"partition\":-1,\"hi_offset\":5,\"fetchq_cnt\":3}}}}}");
        assert_non_null(d);
        assert_int_equal(feed_counted(p, d, strlen(d)), 0);
        free(d);
        h_snap(p, &hs);
        assert_int_equal(hs.s.partition_cnt, 1);
        assert_null(h_snap_find(&hs, "t", -1));
        assert_int_equal(LD(p->nslots), 1);

        /* Partitions of topics and numbers nobody assigned: ignored. */
        d = small_doc("other", P0_GOOD);
        assert_int_equal(feed_counted(p, d, strlen(d)), 0);
        free(d);
        d = strdup("{\"topics\":{\"t\":{\"partitions\":{"
                   "\"7\":{\"partition\":7,\"hi_offset\":5},"
                   "\"99999999999\":{\"partition\":99999999999},"
                   "\"abc\":{\"hi_offset\":5},"
                   "\"-5\":{\"partition\":-5,\"hi_offset\":5}}}}}");
        assert_non_null(d);
        feed_counted(p, d, strlen(d));
        free(d);
        h_snap(p, &hs);
        assert_int_equal(hs.s.partition_cnt, 1);
        assert_int_equal(LD(p->nslots), 1);

        /* And the real figures come back with a good document. */
        assert_int_equal(feed_counted(p, good, strlen(good)), 0);
        x = find(&hs, p, "t", 0);
        assert_int_equal(x->high_watermark, 42);
        assert_int_equal(x->committed_offset, 40);
        assert_int_equal(x->lag, 2);
        free(good);
        lagprobe_destroy(p);
}

/* Documents parsed on one thread while another takes snapshots (the
 * statistics callback runs on the polling thread, readers anywhere). */
typedef struct race_s {
        lagprobe_t *p;
        atomic_int stop;
        atomic_llong reads, checked, bad;
} race_t;

static void *race_reader(void *arg) {
        race_t *r = arg;
        while (!atomic_load(&r->stop)) {
                lagprobe_partition_t parts[4];
                lagprobe_snapshot_t s;
                lagprobe_snapshot_init(&s, parts, 4);
                if (lagprobe_snapshot(r->p, &s) == 0 && s.partition_cnt == 1) {
                        const lagprobe_partition_t *x = &parts[0];
                        /* Each document has hi = committed + 2. */
                        if (x->high_watermark >= 0 &&
                            x->committed_offset >= 0) {
                                if (x->lag != 2 ||
                                    x->high_watermark !=
                                        x->committed_offset + 2)
                                        r->bad++;
                                r->checked++;
                        }
                }
                r->reads++;
        }
        return NULL;
}

static void test_parse_while_reading(void **state) {
        (void)state;
        race_t r = {.p = wb_probe()};
        wb_assign(r.p, "t", 0);
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, race_reader, &r), 0);
        char fields[256];
        /* 20,000 documents, and on until the reader has checked 1,000
         * snapshots taken while documents were arriving (a slow thread
         * start under valgrind), within 2,000,000. */
        for (int i = 0; i < 2000000 && (i < 20000 || r.checked < 1000);
             i++) {
                snprintf(fields, sizeof fields,
                         "\"partition\":0,\"hi_offset\":%d,"
                         "\"committed_offset\":%d",
                         i + 2, i);
                char *d = small_doc("t", fields);
                assert_int_equal(feed(r.p, d), 0);
                free(d);
        }
        atomic_store(&r.stop, 1);
        pthread_join(th, NULL);
        print_message("  %lld snapshots, %lld checked\n", (long long)r.reads,
                      (long long)r.checked);
        assert_true(r.checked >= 1000);
        assert_int_equal(r.bad, 0);
        lagprobe_destroy(r.p);
}

int main(void) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_real_document),
            cmocka_unit_test(test_null_and_empty),
            cmocka_unit_test(test_truncated_every_length),
            cmocka_unit_test(test_wrong_types),
            cmocka_unit_test(test_big_numbers_in_range),
            cmocka_unit_test(test_deep_nesting),
            cmocka_unit_test(test_odd_topic_names),
            cmocka_unit_test(test_unknown_fields),
            cmocka_unit_test(test_internal_partition_and_sentinels),
            cmocka_unit_test(test_parse_while_reading),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}

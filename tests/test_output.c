/* Output surface: the snprintf-style size contract of
 * lagprobe_snapshot_json() and lagprobe_metrics_prometheus(), the JSON
 * schema read back with the harness's strict JSON reader, Prometheus sample lines,
 * label escaping and UTF-8 validity, and the health verdict moving ok ->
 * degraded -> unhealthy -> ok with a real consumer.
 * SPDX-License-Identifier: BSD-2-Clause */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */

#include "harness.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h> /* RUNNING_ON_VALGRIND */
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

typedef size_t(render_fn_t)(lagprobe_t *p, char *buf, size_t size);

/* ======================================================================
 * A consumer with odd names, consumed to the end, committed in part
 * ==================================================================== */

/* Kafka allows [a-zA-Z0-9._-] and up to 249 characters in a topic name. */
#define T_LONG_LEN 249
#define ODD_TOPICS 3
#define ODD_MAXP 3

/* group.id is a free string: quotes, backslashes, control characters and
 * UTF-8 must come out escaped in JSON and in Prometheus label values.
 * client.id gets no quote or backslash: librdkafka 2.0.2 writes it into
 * its statistics JSON unescaped, which makes every statistics document
 * malformed (the probe rejects them and never learns a watermark). */
static const char odd_group_base[] = "grp \"quoted\" back\\slash\ttab\nnl "
                                     "caf\xc3\xa9 \xe2\x9c\x93";
static const char odd_client[] = "cli x.y_z-\xc3\xbc \xe2\x9c\x93";

typedef struct odd_s {
        char topic[ODD_TOPICS][T_LONG_LEN + 1];
        int nparts[ODD_TOPICS];
        int produced[ODD_TOPICS][ODD_MAXP];
        int64_t committed[ODD_TOPICS][ODD_MAXP]; /* -1: never committed */
        int total_parts;
        int64_t want;
        char group[160];
        rd_kafka_t *rk;
        lagprobe_t *p;
        h_track_t t;
} odd_t;

static odd_t *odd; /* built by the first test that needs it */

static int odd_consumed_all(void *arg) {
        odd_t *o = arg;
        h_snap_t hs;
        h_snap(o->p, &hs);
        return o->t.total >= o->want && hs.s.consumed >= o->want;
}

/* The probe's view matches what we produced and committed. */
static int odd_settled(void *arg) {
        odd_t *o = arg;
        h_snap_t hs;
        h_snap(o->p, &hs);
        if ((int)hs.s.partition_cnt != o->total_parts)
                return 0;
        for (int t = 0; t < ODD_TOPICS; t++)
                for (int i = 0; i < o->nparts[t]; i++) {
                        const lagprobe_partition_t *x =
                            h_snap_find(&hs, o->topic[t], i);
                        if (!x || x->high_watermark != o->produced[t][i] ||
                            x->committed_offset != o->committed[t][i])
                                return 0;
                }
        return 1;
}

static odd_t *odd_get(void) {
        static int built;
        if (built && odd && odd->p && odd->rk)
                return odd;
        if (built)
                fail_msg("the odd-names consumer failed to build earlier");
        built = 1;
        static int gen;
        odd_t *o = calloc(1, sizeof *o);
        assert_non_null(o);
        odd = o; /* teardown frees it even when a step below fails */
        gen++;
        snprintf(o->topic[0], sizeof o->topic[0], "orders.v2_eu-west.%d", gen);
        snprintf(o->topic[1], sizeof o->topic[1], "_leading.under_score-%d",
                 gen);
        /* Exactly 249 characters, every legal character class. */
        static const char legal[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLM"
                                    "NOPQRSTUVWXYZ0123456789._-";
        int n = snprintf(o->topic[2], sizeof o->topic[2], "long-%d-", gen);
        for (int i = n; i < T_LONG_LEN; i++)
                o->topic[2][i] = legal[(size_t)(i - n) % (sizeof legal - 1)];
        o->topic[2][T_LONG_LEN] = 0;
        assert_int_equal(strlen(o->topic[2]), T_LONG_LEN);

        const int nparts[ODD_TOPICS] = {2, 1, 2};
        const int counts[ODD_TOPICS][ODD_MAXP] = {
            {10, 25, 0}, {12, 0, 0}, {9, 0, 0}};
        /* Partial commits: lag 6, lag 0, never committed (lag null), lag
         * 7, and a partition without any message nor commit. */
        const int64_t commit[ODD_TOPICS][ODD_MAXP] = {
            {4, 25, -1}, {-1, -1, -1}, {2, -1, -1}};
        snprintf(o->group, sizeof o->group, "%s %d", odd_group_base, gen);

        for (int t = 0; t < ODD_TOPICS; t++) {
                o->nparts[t] = nparts[t];
                o->total_parts += nparts[t];
                h_topic_create(h_cl, o->topic[t], nparts[t]);
                for (int i = 0; i < nparts[t]; i++) {
                        o->produced[t][i] = counts[t][i];
                        o->committed[t][i] = commit[t][i];
                        o->want += counts[t][i];
                        if (counts[t][i])
                                h_produce(h_cl, o->topic[t], i, counts[t][i],
                                          NULL, 0);
                }
        }

        /* Nobody polls once the figures settle, and the contract tests
         * take a while: a limit far away keeps the assignment. */
        h_copts_t co;
        h_copts_init(&co, o->group);
        co.max_poll_ms = 300000;
        rd_kafka_conf_t *conf = h_consumer_conf(h_cl, &co);
        h_conf_set(conf, "client.id", odd_client);
        o->p = h_probe_attach(conf);
        o->rk = h_consumer_new(conf, NULL);
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(ODD_TOPICS);
        for (int t = 0; t < ODD_TOPICS; t++)
                rd_kafka_topic_partition_list_add(l, o->topic[t],
                                                  RD_KAFKA_PARTITION_UA);
        assert_int_equal(rd_kafka_subscribe(o->rk, l), 0);
        rd_kafka_topic_partition_list_destroy(l);

        h_track_init(&o->t);
        assert_true(h_poll_until(o->rk, &o->t, odd_consumed_all, o,
                                 H_JOIN_TIMEOUT_MS));
        for (int t = 0; t < ODD_TOPICS; t++) {
                int any = 0;
                for (int i = 0; i < o->nparts[t]; i++)
                        any |= o->committed[t][i] >= 0;
                if (any)
                        h_commit(o->rk, o->topic[t], o->committed[t],
                                 o->nparts[t]);
        }
        assert_true(h_poll_until(o->rk, &o->t, odd_settled, o, 10000));
        /* From here on nobody polls: statistics stop arriving and only
         * time-derived figures (ts_ms, ages) still move. */
        return o;
}

static void odd_free(void) {
        if (!odd)
                return;
        h_consumer_close(odd->rk);
        lagprobe_destroy(odd->p);
        free(odd);
        odd = NULL;
}

static int teardown(void **state) {
        odd_free();
        return h_group_teardown(state);
}

/* ======================================================================
 * Size contract
 * ==================================================================== */

/* One full rendering, retried until a document fits in one call (the
 * document may grow between the sizing call and the render). */
static char *render_full(render_fn_t *f, lagprobe_t *p, size_t *len) {
        for (int tries = 0; tries < 100; tries++) {
                size_t need = f(p, NULL, 0);
                char *buf = malloc(need + 1);
                assert_non_null(buf);
                size_t got = f(p, buf, need + 1);
                if (got == need) {
                        assert_int_equal(strlen(buf), got);
                        *len = got;
                        return buf;
                }
                free(buf);
        }
        fail_msg("document never rendered with a stable length");
        return NULL;
}

#define GUARD_BYTE 0xA5

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define OUT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define OUT_SANITIZED 1
#endif
#endif

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* The figures that moved with the clock between two full renderings,
 * before and after (both len bytes), and the n bytes of mid rendered in
 * between. mid must equal before except inside a number that differs
 * between before and after, and there it must lie between the two (the
 * clock-derived figures move one way between two renderings; digits of
 * one length compare as text). A digit that moved where before and after
 * agree, or a number outside their range, is a wrong byte. */
static int between_renders(const char *mid, size_t n, const char *before,
                           const char *after, size_t len) {
        if (n > len)
                return 0;
        for (size_t i = 0; i < n; i++) {
                if (mid[i] == before[i])
                        continue;
                if (!is_digit(mid[i]) || !is_digit(before[i]))
                        return 0;
                /* The number around i, the same span in all three: only
                 * digits and one fixed decimal point. */
                size_t a = i, e = i;
                while (a > 0 && (is_digit(before[a - 1]) || before[a - 1] == '.'))
                        a--;
                while (e < len && (is_digit(before[e]) || before[e] == '.'))
                        e++;
                for (size_t k = a; k < e; k++)
                        if ((before[k] == '.') != (after[k] == '.') ||
                            (k < n && (before[k] == '.') != (mid[k] == '.')))
                                return 0;
                if ((e < len && (is_digit(after[e]) || after[e] == '.')) ||
                    (e < n && (is_digit(mid[e]) || mid[e] == '.')) ||
                    (a > 0 && (is_digit(after[a - 1]) || after[a - 1] == '.')))
                        return 0;
                size_t m = (e < n ? e : n) - a;
                const char *lo = before + a, *hi = after + a;
                if (memcmp(lo, hi, e - a) > 0) {
                        lo = after + a;
                        hi = before + a;
                }
                if (memcmp(lo, hi, e - a) == 0 || memcmp(lo, mid + a, m) > 0 ||
                    memcmp(mid + a, hi, m) > 0)
                        return 0;
                i = e - 1;
        }
        return 1;
}

/* For every size 0..len+1: the return value is the full length, nothing
 * is written past size, the output is NUL-terminated and is a prefix of the
 * full document.
 *
 * Guard region: the buffer of each size ends exactly where an inaccessible
 * page (PROT_NONE) begins, so any byte written past size faults at once, in
 * every build; the 64 bytes before the buffer hold a pattern that must stay
 * intact. Size 0 is tried with NULL and with a pointer to the guard page.
 * The ASan variant of this test also watches the probe's own buffers.
 *
 * Time: figures derived from the clock (ts_ms, ages, seconds since the last
 * poll) move between two calls even on a quiet consumer, and a rendering
 * costs up to half a millisecond under TSan. So each truncated rendering
 * sits between two full ones, and may differ from the one before only in
 * a number that moved between the two and lies between them
 * (between_renders()); every other byte must match. A return value that
 * differs from theirs (a figure gained a digit), or a number outside
 * them, retries that size; 50 tries in a row failing is a failure. The
 * values themselves are checked against the consumer elsewhere.
 *
 * The normal build checks every size. A sanitized rendering of the
 * 33 KB Prometheus document costs 1 ms (ASan) to 4 ms (TSan: every atomic
 * load of the histograms is instrumented), more under valgrind, so a full
 * sweep would take minutes there. The guard page already catches any write
 * past the buffer in every build, and each rendering still runs all of the
 * probe's own code under the tool; so for documents over 8 KB the ASan,
 * TSan and valgrind runs check the first and last 256 sizes and about
 * 1,500 spread between them. */
static void check_contract(render_fn_t *f, lagprobe_t *p, const char *what) {
        size_t reflen;
        char *ref = render_full(f, p, &reflen);
        size_t doclen = reflen, retried = 0;
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        size_t room = (doclen + 4096 + page - 1) / page * page;
        unsigned char *region = mmap(NULL, room + page, PROT_READ | PROT_WRITE,
                                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        assert_true(region != MAP_FAILED);
        assert_int_equal(mprotect(region + room, page, PROT_NONE), 0);
        unsigned char *guard_page = region + room;

        size_t step = 1, checked = 0;
        int slow = RUNNING_ON_VALGRIND;
#ifdef OUT_SANITIZED
        slow = 1;
#endif
        if (slow && doclen > 8192)
                step = doclen / 1500 | 1;
        for (size_t n = 0; n <= doclen + 1;
             n += n < 256 || n + 256 > doclen ? 1 : step) {
                checked++;
                assert_true(n + 64 <= room);
                unsigned char *buf = guard_page - n;
                int ok = 0;
                for (int attempt = 0; attempt < 50 && !ok; attempt++) {
                        retried += attempt > 0;
                        memset(buf - 64, GUARD_BYTE, 64 + n);
                        size_t ret = f(p, (char *)buf, n);
                        for (size_t k = 0; k < 64; k++)
                                if (buf[(ptrdiff_t)k - 64] != GUARD_BYTE)
                                        fail_msg("%s: size %zu: a byte before "
                                                 "the buffer was written",
                                                 what, n);
                        size_t out = 0;
                        if (n == 0) {
                                /* NULL is allowed with size 0. */
                                if (f(p, NULL, 0) != ret)
                                        continue;
                        } else {
                                if (!memchr(buf, 0, n))
                                        fail_msg("%s: size %zu: not "
                                                 "NUL-terminated",
                                                 what, n);
                                out = strlen((char *)buf);
                                if (out != (ret < n - 1 ? ret : n - 1))
                                        fail_msg("%s: size %zu: wrote %zu "
                                                 "bytes for a return of %zu",
                                                 what, n, out, ret);
                        }
                        size_t afterlen;
                        char *after = render_full(f, p, &afterlen);
                        ok = ret == reflen && afterlen == reflen &&
                             between_renders((char *)buf, out, ref, after,
                                             reflen);
                        /* The newest full rendering is the next "before". */
                        free(ref);
                        ref = after;
                        reflen = afterlen;
                }
                if (!ok)
                        fail_msg("%s: size %zu: return value or content "
                                 "differs from the full document (%zu bytes)",
                                 what, n, reflen);
        }
        print_message("  %s: %zu sizes in 0..%zu checked, %zu re-renders\n",
                      what, checked, doclen + 1, retried);
        munmap(region, room + page);
        free(ref);
}

static void test_contract_json(void **state) {
        (void)state;
        odd_t *o = odd_get();
        check_contract(lagprobe_snapshot_json, o->p, "snapshot_json");
}

static void test_contract_prometheus(void **state) {
        (void)state;
        odd_t *o = odd_get();
        check_contract(lagprobe_metrics_prometheus, o->p,
                       "metrics_prometheus");
}

/* NULL probe: 0, and "" when there is room; nothing past size. */
static void test_contract_null_probe(void **state) {
        (void)state;
        render_fn_t *fns[2] = {lagprobe_snapshot_json,
                               lagprobe_metrics_prometheus};
        for (int i = 0; i < 2; i++) {
                char b[8];
                memset(b, 'x', sizeof b);
                assert_int_equal(fns[i](NULL, NULL, 0), 0);
                assert_int_equal(fns[i](NULL, b, 0), 0);
                assert_int_equal(b[0], 'x');
                assert_int_equal(fns[i](NULL, b, 4), 0);
                assert_int_equal(b[0], 0);
                assert_int_equal(b[4], 'x');
        }
}

/* ======================================================================
 * JSON schema, read with the harness's reader (h_json_*)
 * ==================================================================== */

static int jis(const h_json_t *v, h_jtype_t type) {
        return v && v->type == type;
}

static const h_json_t *jget(const h_json_t *obj, const char *key) {
        const h_json_t *v = h_json_get(obj, key);
        if (!v)
                fail_msg("JSON: key \"%s\" missing", key);
        return v;
}

static double jnum(const h_json_t *obj, const char *key) {
        const h_json_t *v = jget(obj, key);
        if (!jis(v, H_JNUM))
                fail_msg("JSON: \"%s\" is not a number", key);
        return v->num;
}

/* Integer or null (-1); fails on any other type. */
static int64_t jint_or_null(const h_json_t *obj, const char *key) {
        const h_json_t *v = jget(obj, key);
        if (jis(v, H_JNULL))
                return -1;
        if (!jis(v, H_JNUM))
                fail_msg("JSON: \"%s\" is neither a number nor null", key);
        if (!v->is_int)
                fail_msg("JSON: \"%s\" is not an integer", key);
        return v->inum;
}

static int64_t jint(const h_json_t *obj, const char *key) {
        const h_json_t *v = jget(obj, key);
        if (!jis(v, H_JNUM) || !v->is_int)
                fail_msg("JSON: \"%s\" is not an integer", key);
        return v->inum;
}

static const char *jstr(const h_json_t *obj, const char *key) {
        const h_json_t *v = jget(obj, key);
        if (!jis(v, H_JSTR))
                fail_msg("JSON: \"%s\" is not a string", key);
        return v->str;
}

static int jbool(const h_json_t *obj, const char *key) {
        const h_json_t *v = jget(obj, key);
        if (!jis(v, H_JBOOL))
                fail_msg("JSON: \"%s\" is not true or false", key);
        return v->num != 0;
}

static const h_json_t *jobj(const h_json_t *obj, const char *key) {
        const h_json_t *v = jget(obj, key);
        if (!jis(v, H_JOBJ))
                fail_msg("JSON: \"%s\" is not an object", key);
        return v;
}

static const h_json_t *jarr(const h_json_t *obj, const char *key) {
        const h_json_t *v = jget(obj, key);
        if (!jis(v, H_JARR))
                fail_msg("JSON: \"%s\" is not an array", key);
        return v;
}

/* Parse the probe's current document; the whole buffer must be one value
 * (h_json_parse() is strict RFC 8259 over exactly len bytes). */
static h_json_t *json_doc(lagprobe_t *p, char **textp) {
        size_t len;
        char *text = render_full(lagprobe_snapshot_json, p, &len);
        h_json_t *j = h_json_parse(text, len);
        if (!j)
                fail_msg("h_json_parse rejects the document: %.60s", text);
        if (textp)
                *textp = text;
        else
                free(text);
        return j;
}

/* The keys and types every document has, whatever the state. */
static void check_schema(const h_json_t *j, lagprobe_t *p) {
        assert_true(jis(j, H_JOBJ));
        const char *status = jstr(j, "status");
        assert_true(!strcmp(status, "ok") || !strcmp(status, "degraded") ||
                    !strcmp(status, "unhealthy"));
        const h_json_t *reasons = jarr(j, "reasons");
        const h_json_t *r;
        for (r = (reasons)->child; r; r = r->next) assert_true(jis(r, H_JSTR));
        /* Status and reasons agree with lagprobe_health(), read just
         * before or after (the state is not moving here). */
        char rs[256];
        lagprobe_health_t h = lagprobe_health(p, rs, sizeof rs);
        assert_string_equal(status, lagprobe_health_name(h));
        char joined[256] = "";
        for (r = (reasons)->child; r; r = r->next) {
                if (joined[0])
                        strcat(joined, ",");
                strcat(joined, r->str);
        }
        assert_string_equal(joined, rs);

        jstr(j, "group_id");
        jstr(j, "client_id");
        assert_true(jnum(j, "max_poll_interval_ms") > 0);

        const h_json_t *poll = jobj(j, "poll");
        jint_or_null(poll, "since_last_poll_ms");
        jint(poll, "headroom_ms");
        assert_true(jint(poll, "evictions") >= 0);

        const h_json_t *rb = jobj(j, "rebalances");
        assert_true(jint(rb, "count") >= 0);
        jint_or_null(rb, "last_ms_ago");
        assert_true(jint(rb, "assignment_size") >= 0);
        const char *proto = jstr(rb, "protocol");
        assert_true(!strcmp(proto, "EAGER") || !strcmp(proto, "COOPERATIVE") ||
                    !strcmp(proto, "NONE"));

        const h_json_t *ev = jobj(j, "events");
        for (int i = 0; i < LAGPROBE_EVENT__CNT; i++)
                assert_true(
                    jint(ev, lagprobe_event_name((lagprobe_event_type_t)i)) >=
                    0);
        assert_int_equal(h_json_count(ev), LAGPROBE_EVENT__CNT);

        const h_json_t *proc = jobj(j, "processing");
        static const char *hists[] = {"batch",   "batch_recent",
                                      "message", "message_recent",
                                      "poll_gap", "poll_gap_recent"};
        for (size_t i = 0; i < sizeof hists / sizeof hists[0]; i++) {
                const h_json_t *hh = jobj(proc, hists[i]);
                assert_true(jint(hh, "count") >= 0);
                static const char *f[] = {"sum_ms", "p50_ms", "p90_ms",
                                          "p99_ms", "max_ms"};
                for (size_t k = 0; k < 5; k++)
                        assert_true(jnum(hh, f[k]) >= 0);
        }

        const h_json_t *parts = jarr(j, "partitions");
        for (r = (parts)->child; r; r = r->next) {
                assert_true(jis(r, H_JOBJ));
                jstr(r, "topic");
                assert_true(jint(r, "partition") >= 0);
                jint_or_null(r, "high_watermark");
                jint_or_null(r, "low_watermark");
                jint_or_null(r, "committed_offset");
                jint_or_null(r, "position");
                jint_or_null(r, "lag");
                jint_or_null(r, "position_lag");
                const h_json_t *sb = jget(r, "seconds_behind");
                assert_true(jis(sb, H_JNULL) ||
                            (jis(sb, H_JNUM) && sb->num >= 0));
                assert_true(jint(r, "consumed") >= 0);
                jbool(r, "stale");
                /* The figures' values: test_json_odd_names, against what
                 * it produced and committed (not against each other). */
        }
}

static void test_json_odd_names(void **state) {
        (void)state;
        odd_t *o = odd_get();
        char *text;
        h_json_t *j = json_doc(o->p, &text);
        check_schema(j, o->p);

        /* Escaped strings come back byte for byte. */
        assert_string_equal(jstr(j, "group_id"), o->group);
        assert_string_equal(jstr(j, "client_id"), odd_client);
        /* Raw control characters never appear inside the document. */
        for (const char *c = text; *c; c++)
                assert_true((unsigned char)*c >= 0x20);

        const h_json_t *parts = jarr(j, "partitions");
        assert_int_equal(h_json_count(parts), o->total_parts);
        assert_int_equal(jint(jobj(j, "rebalances"), "assignment_size"),
                         o->total_parts);

        /* Every partition, by topic and number, with the figures we set
         * up: high watermark = produced, committed as committed, lag null
         * where nothing was committed, everything consumed. */
        for (int t = 0; t < ODD_TOPICS; t++)
                for (int i = 0; i < o->nparts[t]; i++) {
                        const h_json_t *x = NULL, *r;
                        for (r = (parts)->child; r; r = r->next) {
                                if (!strcmp(jstr(r, "topic"), o->topic[t]) &&
                                    jint(r, "partition") == i)
                                        x = r;
                        }
                        if (!x)
                                fail_msg("partition %s [%d] missing",
                                         o->topic[t], i);
                        int64_t p = o->produced[t][i], c = o->committed[t][i];
                        assert_int_equal(jint_or_null(x, "high_watermark"), p);
                        assert_int_equal(jint_or_null(x, "committed_offset"),
                                         c);
                        assert_int_equal(jint_or_null(x, "lag"),
                                         c < 0 ? -1 : p - c);
                        assert_int_equal(jint(x, "consumed"), p);
                        if (p > 0) {
                                assert_int_equal(jint_or_null(x, "position"),
                                                 p);
                                assert_int_equal(
                                    jint_or_null(x, "position_lag"), 0);
                        }
                }
        h_json_free(j);
        free(text);
}

/* A probe attached to a consumer that never gets a partition: partitions
 * is an empty array, the rest of the schema holds, and the Prometheus
 * output has every family's header but no per-partition sample. */
static void test_json_empty_assignment(void **state) {
        (void)state;
        char group[64];
        rd_kafka_conf_t *conf = h_conf(h_cl, h_unique("g-empty", group,
                                                    sizeof group),
                                       NULL, 0);
        lagprobe_t *p = h_probe_attach(conf);
        rd_kafka_t *rk = h_consumer_new(conf, NULL); /* no subscription */
        h_poll_for(rk, NULL, 3 * H_STATS_MS);

        h_json_t *j = json_doc(p, NULL);
        check_schema(j, p);
        assert_int_equal(h_json_count(jarr(j, "partitions")), 0);
        assert_int_equal(jint(jobj(j, "rebalances"), "assignment_size"), 0);
        assert_string_equal(jstr(j, "group_id"), group);
        assert_true(jbool(j, "bound"));
        h_json_free(j);

        size_t len;
        char *m = render_full(lagprobe_metrics_prometheus, p, &len);
        assert_non_null(strstr(m, "# TYPE kafka_consumergroup_lag gauge\n"));
        assert_null(strstr(m, "\nkafka_consumergroup_lag{"));
        assert_non_null(strstr(m, "\nlagprobe_assigned_partitions{"));
        free(m);

        check_contract(lagprobe_snapshot_json, p, "snapshot_json (empty)");
        h_consumer_close(rk);
        lagprobe_destroy(p);
}

/* A probe never attached: still a valid document, unhealthy because no
 * consumer runs; the reasons buffer of lagprobe_health() keeps the same
 * size contract. */
static void test_json_unbound(void **state) {
        (void)state;
        lagprobe_t *p = h_probe_new();
        h_json_t *j = json_doc(p, NULL);
        check_schema(j, p);
        assert_string_equal(jstr(j, "status"), "unhealthy");
        const h_json_t *reasons = jarr(j, "reasons");
        assert_int_equal(h_json_count(reasons), 1);
        assert_string_equal(reasons->child->str,
                            "consumer_not_running");
        assert_false(jbool(j, "bound"));
        assert_int_equal(h_json_count(jarr(j, "partitions")), 0);
        assert_true(jis(jget(jobj(j, "poll"), "since_last_poll_ms"), H_JNULL));
        h_json_free(j);

        const char *full = "consumer_not_running";
        size_t flen = strlen(full);
        for (size_t n = 0; n <= flen + 1; n++) {
                char b[64];
                memset(b, GUARD_BYTE, sizeof b);
                assert_int_equal(lagprobe_health(p, n ? b : NULL, n),
                                 LAGPROBE_HEALTH_UNHEALTHY);
                assert_int_equal(lagprobe_health(p, b, n),
                                 LAGPROBE_HEALTH_UNHEALTHY);
                for (size_t k = n; k < sizeof b; k++)
                        assert_int_equal((unsigned char)b[k], GUARD_BYTE);
                if (n > 0) {
                        size_t want = flen < n - 1 ? flen : n - 1;
                        assert_int_equal(strlen(b), want);
                        assert_memory_equal(b, full, want);
                }
        }
        check_contract(lagprobe_snapshot_json, p, "snapshot_json (unbound)");
        lagprobe_destroy(p);
}

/* ======================================================================
 * Prometheus lines
 * ==================================================================== */

/* Label value escaping of the text format: \ " and newline. */
static void prom_escape(const char *s, char *out, size_t size) {
        size_t o = 0;
        for (; *s && o + 3 < size; s++) {
                if (*s == '\\' || *s == '"') {
                        out[o++] = '\\';
                        out[o++] = *s;
                } else if (*s == '\n') {
                        out[o++] = '\\';
                        out[o++] = 'n';
                } else {
                        out[o++] = *s;
                }
        }
        out[o] = 0;
}

/* Value of the one sample line that starts with prefix; fails when absent
 * or repeated. */
static double prom_value(const char *doc, const char *prefix, int *found) {
        size_t pl = strlen(prefix);
        const char *hit = NULL;
        int n = 0;
        for (const char *l = doc; *l;) {
                const char *nl = strchr(l, '\n');
                if (!nl)
                        fail_msg("metrics: last line not newline-terminated");
                if (!strncmp(l, prefix, pl)) {
                        hit = l + pl;
                        n++;
                }
                l = nl + 1;
        }
        *found = n;
        if (n != 1)
                return -1;
        return strtod(hit, NULL);
}

static void test_prometheus_odd_names(void **state) {
        (void)state;
        odd_t *o = odd_get();
        size_t len;
        char *m = render_full(lagprobe_metrics_prometheus, o->p, &len);

        /* Every line is a comment or "name{labels} value"; the document is
         * valid UTF-8 (Prometheus rejects anything else). */
        int samples = 0;
        for (const char *l = m; *l;) {
                const char *nl = strchr(l, '\n');
                assert_non_null(nl);
                if (*l != '#') {
                        const char *brace = memchr(l, '{', (size_t)(nl - l));
                        assert_non_null(brace);
                        for (const char *c = l; c < brace; c++)
                                assert_true(
                                    (*c >= 'a' && *c <= 'z') || *c == '_' ||
                                    (*c >= '0' && *c <= '9' && c > l) ||
                                    (*c >= 'A' && *c <= 'Z') || *c == ':');
                        samples++;
                }
                l = nl + 1;
        }
        assert_true(samples > 0);

        char g[256], c[256], prefix[1024];
        prom_escape(o->group, g, sizeof g);
        prom_escape(odd_client, c, sizeof c);
        for (int t = 0; t < ODD_TOPICS; t++)
                for (int i = 0; i < o->nparts[t]; i++) {
                        int found;
                        int64_t p = o->produced[t][i], cm = o->committed[t][i];
                        snprintf(prefix, sizeof prefix,
                                 "kafka_consumergroup_lag{consumergroup=\"%s\","
                                 "topic=\"%s\",partition=\"%d\"} ",
                                 g, o->topic[t], i);
                        double v = prom_value(m, prefix, &found);
                        /* No lag sample before the first commit. */
                        assert_int_equal(found, cm < 0 ? 0 : 1);
                        if (cm >= 0)
                                assert_true(v == (double)(p - cm));
                        snprintf(prefix, sizeof prefix,
                                 "kafka_consumergroup_current_offset{"
                                 "consumergroup=\"%s\",topic=\"%s\","
                                 "partition=\"%d\"} ",
                                 g, o->topic[t], i);
                        v = prom_value(m, prefix, &found);
                        assert_int_equal(found, cm < 0 ? 0 : 1);
                        if (cm >= 0)
                                assert_true(v == (double)cm);
                        snprintf(prefix, sizeof prefix,
                                 "lagprobe_partition_high_watermark{"
                                 "client_id=\"%s\",consumergroup=\"%s\","
                                 "topic=\"%s\",partition=\"%d\"} ",
                                 c, g, o->topic[t], i);
                        v = prom_value(m, prefix, &found);
                        assert_int_equal(found, 1);
                        assert_true(v == (double)p);
                }
        int found;
        snprintf(prefix, sizeof prefix,
                 "lagprobe_assigned_partitions{client_id=\"%s\","
                 "consumergroup=\"%s\"} ",
                 c, g);
        assert_true(prom_value(m, prefix, &found) == o->total_parts);
        assert_int_equal(found, 1);
        snprintf(prefix, sizeof prefix,
                 "lagprobe_health{client_id=\"%s\",consumergroup=\"%s\"} ", c,
                 g);
        assert_true(prom_value(m, prefix, &found) ==
                    lagprobe_health(o->p, NULL, 0));
        assert_int_equal(found, 1);
        free(m);
}

/* Length of the valid UTF-8 sequence at s, 0 when invalid (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF). */
static int utf8_seq(const unsigned char *s) {
        unsigned char c = s[0];
        int n = c < 0x80 ? 1
                : c >= 0xC2 && c <= 0xDF ? 2
                : c >= 0xE0 && c <= 0xEF ? 3
                : c >= 0xF0 && c <= 0xF4 ? 4
                                         : 0;
        for (int k = 1; k < n; k++)
                if ((s[k] & 0xC0) != 0x80)
                        return 0;
        if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] >= 0xA0) ||
            (c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] >= 0x90))
                return 0;
        return n;
}

/* The text format is UTF-8 and Prometheus rejects a whole scrape on one
 * invalid label value ("invalid label value"), so a group.id that is not
 * valid UTF-8 (Kafka does not check) must not reach /metrics raw; the JSON
 * output already turns such bytes into U+FFFD. */
static void test_prometheus_invalid_utf8_group(void **state) {
        (void)state;
        char group[64];
        snprintf(group, sizeof group, "bad\xff\xc3(group-%d", (int)getpid());
        rd_kafka_conf_t *conf = h_conf(h_cl, group, NULL, 0);
        lagprobe_t *p = h_probe_attach(conf);
        rd_kafka_t *rk = h_consumer_new(conf, NULL);
        h_poll_for(rk, NULL, 2 * H_STATS_MS);

        size_t len, bad = SIZE_MAX;
        char *m = render_full(lagprobe_metrics_prometheus, p, &len);
        const unsigned char *u = (const unsigned char *)m;
        for (size_t i = 0; i < len && bad == SIZE_MAX;) {
                int n = utf8_seq(u + i);
                if (n == 0)
                        bad = i;
                i += n ? (size_t)n : 1;
        }
        char excerpt[48] = "";
        if (bad != SIZE_MAX)
                snprintf(excerpt, sizeof excerpt, "%.40s",
                         m + (bad > 20 ? bad - 20 : 0));
        /* The rest of the label survives. */
        int label_kept = strstr(m, "consumergroup=\"bad") != NULL &&
                         strstr(m, "(group-") != NULL;
        free(m);
        h_json_t *j = json_doc(p, NULL);
        int json_fffd = strstr(jstr(j, "group_id"), "\xef\xbf\xbd") != NULL;
        h_json_free(j);
        h_consumer_close(rk);
        lagprobe_destroy(p);

        if (bad != SIZE_MAX)
                fail_msg("metrics: invalid UTF-8 at byte %zu, in: %s", bad,
                         excerpt);
        assert_true(label_kept);
        assert_true(json_fffd);
}

/* ======================================================================
 * Health verdict with a real consumer
 * ==================================================================== */

#define HV_MAX_POLL_MS 4000 /* >= the harness's session.timeout.ms 3500 */
#define HV_WARN 0.5          /* warn band from 2000 ms */
#define HV_CRIT 0.75         /* critical from 3000 ms, eviction at 4000 */

static void quiet_cb(const lagprobe_event_t *e, void *opaque) {
        (void)e;
        (void)opaque;
}

typedef struct hv_s {
        lagprobe_t *p;
        int want;
} hv_t;

static int hv_is(void *arg) {
        hv_t *h = arg;
        return lagprobe_health(h->p, NULL, 0) == h->want;
}

static int hv_crit_event(void *arg) {
        h_snap_t hs;
        h_snap(arg, &hs);
        return hs.s.events[LAGPROBE_EVENT_HEADROOM_CRITICAL] >= 1;
}

/* The verdict as the three outputs give it must agree. */
static void hv_check(lagprobe_t *p, int want, const char *reason) {
        char rs[256];
        lagprobe_health_t h = lagprobe_health(p, rs, sizeof rs);
        print_message("  health %s (%s)\n", lagprobe_health_name(h), rs);
        assert_int_equal(h, want);
        if (reason)
                assert_non_null(strstr(rs, reason));
        else
                assert_string_equal(rs, "");
        assert_null(strstr(rs, "evicted"));
        assert_int_equal(lagprobe_health_http_status(h),
                         want == LAGPROBE_HEALTH_UNHEALTHY ? 503 : 200);
}

static void test_health_transitions(void **state) {
        (void)state;
        h_fixture_t f;
        const int counts[1] = {20};
        lagprobe_config_t pc;
        lagprobe_config_init(&pc);
        pc.warn_ratio = HV_WARN;
        pc.critical_ratio = HV_CRIT;
        pc.log_cb = quiet_cb;
        h_fixture_init_on(&f, h_cl, "health", "g-health", 1, counts);
        f.copts.max_poll_ms = HV_MAX_POLL_MS;
        f.pc = &pc;
        h_fixture_start(&f);
        const char *topic = f.topic, *group = f.group;
        lagprobe_t *p = f.p;
        rd_kafka_t *rk = f.rk;

        /* Polling with the batch hooks around every message, until the
         * 20 messages are in and for half a second more: ok, no reasons. */
        h_track_t t;
        h_track_init(&t);
        hv_t hv = {p, LAGPROBE_HEALTH_OK};
        int64_t end = h_now_ms() + H_JOIN_TIMEOUT_MS, got = 0;
        while (got < 20 && h_now_ms() < end) {
                rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 20);
                lagprobe_poll_result(p, msg);
                if (msg) {
                        lagprobe_batch_begin(p, 1);
                        got += !msg->err;
                        lagprobe_batch_end(p);
                        rd_kafka_message_destroy(msg);
                }
        }
        assert_int_equal(got, 20);
        end = h_now_ms() + 500;
        while (h_now_ms() < end) {
                rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 20);
                lagprobe_poll_result(p, msg);
                if (msg) {
                        lagprobe_batch_begin(p, 1);
                        lagprobe_batch_end(p);
                        rd_kafka_message_destroy(msg);
                }
                assert_int_not_equal(lagprobe_health(p, NULL, 0),
                                     LAGPROBE_HEALTH_UNHEALTHY);
        }
        hv_check(p, LAGPROBE_HEALTH_OK, NULL);
        h_snap_t hs;
        h_snap(p, &hs);
        assert_true(hs.s.exact);

        /* A poll returns; the app then stalls without polling. */
        h_produce(h_cl, topic, 0, 1, NULL, 0);
        rd_kafka_message_t *msg = NULL;
        for (int i = 0; i < 200 && !msg; i++) {
                msg = rd_kafka_consumer_poll(rk, 20);
                lagprobe_poll_result(p, msg);
                if (msg && msg->err) {
                        rd_kafka_message_destroy(msg);
                        msg = NULL;
                }
        }
        assert_non_null(msg);
        int64_t t0 = h_now_ms();
        lagprobe_batch_begin(p, 1);

        /* Warning band (2000..3000 ms): degraded, still HTTP 200. */
        hv.want = LAGPROBE_HEALTH_DEGRADED;
        assert_true(h_wait_until(hv_is, &hv, HV_MAX_POLL_MS));
        int64_t at = h_now_ms() - t0;
        print_message("  degraded after %" PRId64 " ms\n", at);
        assert_true(at >= (int64_t)(HV_WARN * HV_MAX_POLL_MS) - 5);
        hv_check(p, LAGPROBE_HEALTH_DEGRADED, "headroom_warn");
        h_json_t *j = json_doc(p, NULL);
        assert_string_equal(jstr(j, "status"), "degraded");
        h_json_free(j);

        /* Past critical_ratio: unhealthy, HTTP 503. */
        hv.want = LAGPROBE_HEALTH_UNHEALTHY;
        assert_true(h_wait_until(hv_is, &hv, HV_MAX_POLL_MS));
        at = h_now_ms() - t0;
        print_message("  unhealthy after %" PRId64 " ms\n", at);
        assert_true(at >= (int64_t)(HV_CRIT * HV_MAX_POLL_MS) - 5);
        hv_check(p, LAGPROBE_HEALTH_UNHEALTHY, "headroom_critical");
        j = json_doc(p, NULL);
        assert_string_equal(jstr(j, "status"), "unhealthy");
        const h_json_t *r0 = jarr(j, "reasons")->child;
        assert_non_null(r0);
        assert_string_equal(r0->str, "headroom_critical");
        h_json_free(j);
        size_t len;
        char *m = render_full(lagprobe_metrics_prometheus, p, &len);
        char prefix[256];
        snprintf(prefix, sizeof prefix,
                 "lagprobe_health{client_id=\"rdkafka\",consumergroup=\"%s\"} 2\n",
                 group);
        assert_non_null(strstr(m, prefix));
        free(m);

        /* The watchdog (every 100 ms) reports it too. */
        assert_true(h_wait_until(hv_crit_event, p, 500));

        /* Resume before max.poll.interval.ms: ok again, no eviction. */
        lagprobe_batch_progress(p, 1);
        lagprobe_batch_end(p);
        rd_kafka_message_destroy(msg);
        assert_true(h_now_ms() - t0 < HV_MAX_POLL_MS);
        hv.want = LAGPROBE_HEALTH_OK;
        assert_true(h_poll_until(rk, &t, hv_is, &hv, 2000));
        h_poll_for(rk, &t, 300);
        hv_check(p, LAGPROBE_HEALTH_OK, NULL);
        h_snap(p, &hs);
        assert_int_equal(hs.s.evictions, 0);
        assert_int_equal(hs.s.headroom_level, 0);
        assert_true(hs.s.events[LAGPROBE_EVENT_HEADROOM_CRITICAL] >= 1);
        j = json_doc(p, NULL);
        assert_string_equal(jstr(j, "status"), "ok");
        assert_int_equal(h_json_count(jarr(j, "reasons")), 0);
        h_json_free(j);

        h_fixture_stop(&f);
}

typedef struct hw_s {
        lagprobe_t *p;
        int health;
        unsigned reason; /* must be among the reasons; 0: none at all */
} hw_t;

static int health_is(void *arg) {
        hw_t *w = arg;
        h_snap_t hs;
        h_snap(w->p, &hs);
        return (int)hs.s.health == w->health &&
               (w->reason ? (hs.s.health_reasons & w->reason) != 0
                          : hs.s.health_reasons == 0);
}

/* README: a consumer without partitions for longer than
 * unassigned_unhealthy_ms is unhealthy, "no_assignment"; an assignment
 * ends it. */
static void test_health_no_assignment(void **state) {
        (void)state;
        char topic[64], group[64];
        h_unique("noassign", topic, sizeof topic);
        h_unique("g-noassign", group, sizeof group);
        h_topic_create(h_cl, topic, 1);
        rd_kafka_conf_t *conf = h_conf(h_cl, group, NULL, 0);
        lagprobe_config_t pc;
        lagprobe_config_init(&pc);
        pc.unassigned_unhealthy_ms = 500;
        pc.log_cb = quiet_cb;
        lagprobe_t *p = h_probe_attach_cfg(conf, &pc);
        /* The stretch without assignment starts inside rd_kafka_new(). */
        int64_t t0 = h_now_ms();
        rd_kafka_t *rk = h_consumer_new(conf, NULL); /* no subscription */
        hw_t w = {p, LAGPROBE_HEALTH_UNHEALTHY,
                  LAGPROBE_REASON_NO_ASSIGNMENT};
        assert_true(h_poll_until(rk, NULL, health_is, &w, h_slow_ms(5000)));
        print_message("  no_assignment after %" PRId64 " ms\n",
                      h_now_ms() - t0);
        assert_true(h_now_ms() - t0 >= 500);
        h_assert_health(p, LAGPROBE_HEALTH_UNHEALTHY, "no_assignment", 1);
        h_snap_t hs;
        h_snap(p, &hs);
        assert_true(hs.s.unassigned_ms > 500);
        assert_int_equal(hs.s.assignment_size, 0);

        h_subscribe(rk, topic);
        w.health = LAGPROBE_HEALTH_OK;
        w.reason = 0;
        assert_true(h_poll_until(rk, NULL, health_is, &w, H_JOIN_TIMEOUT_MS));
        h_assert_health(p, LAGPROBE_HEALTH_OK, "no_assignment", 0);
        h_snap(p, &hs);
        assert_int_equal(hs.s.assignment_size, 1);
        h_consumer_close(rk);
        lagprobe_destroy(p);
}

static void test_http_status_mapping(void **state) {
        (void)state;
        assert_int_equal(lagprobe_health_http_status(LAGPROBE_HEALTH_OK), 200);
        assert_int_equal(
            lagprobe_health_http_status(LAGPROBE_HEALTH_DEGRADED), 200);
        assert_int_equal(
            lagprobe_health_http_status(LAGPROBE_HEALTH_UNHEALTHY), 503);
        assert_int_equal(lagprobe_health_http_status(-1), 503);
        assert_int_equal(lagprobe_health_http_status(3), 503);
        assert_int_equal(lagprobe_health(NULL, NULL, 0), -1);
}

int main(void) {
        if (getenv("OUT_FILTER"))
                cmocka_set_test_filter(getenv("OUT_FILTER"));
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_contract_json),
            cmocka_unit_test(test_contract_prometheus),
            cmocka_unit_test(test_contract_null_probe),
            cmocka_unit_test(test_json_odd_names),
            cmocka_unit_test(test_prometheus_odd_names),
            cmocka_unit_test(test_prometheus_invalid_utf8_group),
            cmocka_unit_test(test_json_empty_assignment),
            cmocka_unit_test(test_json_unbound),
            cmocka_unit_test(test_health_transitions),
            cmocka_unit_test(test_health_no_assignment),
            cmocka_unit_test(test_http_status_mapping),
        };
        return cmocka_run_group_tests(tests, h_group_setup, teardown);
}

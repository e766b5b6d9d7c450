/* lagprobe plugin front end: lagprobe as a librdkafka plugin.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Loaded by `plugin.library.paths=/path/lagprobe.so`; librdkafka calls
 * conf_init() at that moment. From there:
 *   - on_conf_set claims the lagprobe.* properties set afterwards on the
 *     same conf (librdkafka re-applies them to copies made with
 *     rd_kafka_conf_dup(), on which it calls conf_init() again);
 *   - on_new, inside rd_kafka_new(), creates a probe for a consumer (never
 *     for a producer) and attaches it to the client's own copy of the conf
 *     with the public lagprobe_attach(); the probe's interceptors added
 *     there run later in the same on_new pass, and its callback wrapping
 *     takes over whatever the app or its language binding installed;
 *   - the consumer's on_destroy takes the probe out of the registry and
 *     destroys it.
 * The registry is what the HTTP endpoints and snapshot files show: every
 * consumer of the process that loaded the plugin. The service thread
 * (http.c) serves both; it never touches a client, only the probes'
 * lock-free readers, so it cannot block librdkafka's threads.
 * The probe itself is reached only through probe.h.
 */
#define _GNU_SOURCE /* dladdr, RTLD_NODELETE */

#include "plugin.h"

#include "../probe.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#define LPP_EXPORT __attribute__((visibility("default")))
#define LPP_PATH_MAX 1024
#define LPP_SNAPSHOT_DEFAULT_MS 5000

/* ------------------------------------------------------------------------
 * Settings: the lagprobe.* properties of one conf
 * ---------------------------------------------------------------------- */

enum { LPP_LOG_STDERR, LPP_LOG_SYSLOG, LPP_LOG_JSONL, LPP_LOG_NONE };

typedef struct lpp_settings_s {
        lagprobe_config_t pc; /* log_cb and log_opaque set at on_new */
        char http_listen[128]; /* "" no listener */
        int log_mode;
        char log_path[LPP_PATH_MAX]; /* jsonl */
        char snapshot_path[LPP_PATH_MAX]; /* "" none */
        int snapshot_interval_ms;
} lpp_settings_t;

enum { LPP_INT, LPP_I64, LPP_DBL };

/* Every field of lagprobe_config_t but log_cb/log_opaque (lagprobe.log).
 * Ranges are checked per property; the probe's cross-field rules (warn <
 * critical ratio, dwell <= window) are checked when the consumer is
 * created. */
static const struct lpp_num_s {
        const char *name;
        int type;
        size_t off;
        double min, max;
        int min_excl, max_excl;
} lpp_nums[] = {
#define LPP_OFF(f) offsetof(lagprobe_config_t, f)
    {"lagprobe.stats.interval.ms", LPP_INT, LPP_OFF(stats_interval_ms), 1,
     86400000, 0, 0},
    {"lagprobe.watchdog.interval.ms", LPP_INT, LPP_OFF(watchdog_interval_ms),
     1, 60000, 0, 0},
    {"lagprobe.warn.ratio", LPP_DBL, LPP_OFF(warn_ratio), 0, 1, 1, 1},
    {"lagprobe.critical.ratio", LPP_DBL, LPP_OFF(critical_ratio), 0, 1, 1, 0},
    {"lagprobe.event.min.interval.ms", LPP_INT,
     LPP_OFF(event_min_interval_ms), 0, INT_MAX, 0, 0},
    {"lagprobe.log.level", LPP_INT, LPP_OFF(log_level), 0, 7, 0, 0},
    {"lagprobe.unassigned.unhealthy.ms", LPP_INT,
     LPP_OFF(unassigned_unhealthy_ms), 0, INT_MAX, 0, 0},
    {"lagprobe.window.ms", LPP_INT, LPP_OFF(window_ms), 60, INT_MAX, 0, 0},
    {"lagprobe.lag.allowance", LPP_I64, LPP_OFF(lag_allowance), 0, 1e15, 0,
     0},
    {"lagprobe.storm.rebalances", LPP_INT, LPP_OFF(storm_rebalances), 1,
     INT_MAX, 0, 0},
    {"lagprobe.storm.window.ms", LPP_INT, LPP_OFF(storm_window_ms), 1,
     INT_MAX, 0, 0},
    {"lagprobe.hot.share", LPP_DBL, LPP_OFF(hot_share), 0, 1, 1, 0},
    {"lagprobe.slow.ratio", LPP_DBL, LPP_OFF(slow_ratio), 1, 1e9, 1, 0},
    {"lagprobe.burst.ratio", LPP_DBL, LPP_OFF(burst_ratio), 1, 1e9, 0, 0},
    {"lagprobe.hwm.refresh.ms", LPP_INT, LPP_OFF(hwm_refresh_ms), 0, INT_MAX,
     0, 0},
    /* -1: window.ms / 10; at most window.ms, checked with it. */
    {"lagprobe.dwell.ms", LPP_INT, LPP_OFF(dwell_ms), -1, INT_MAX, 0, 0},
#undef LPP_OFF
};

static void lpp_settings_init(lpp_settings_t *s) {
        memset(s, 0, sizeof *s);
        lagprobe_config_init(&s->pc);
        s->log_mode = LPP_LOG_STDERR;
        s->snapshot_interval_ms = LPP_SNAPSHOT_DEFAULT_MS;
}

static int lpp_err(char *errstr, size_t size, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static int lpp_err(char *errstr, size_t size, const char *fmt, ...) {
        va_list ap;
        if (errstr && size) {
                va_start(ap, fmt);
                vsnprintf(errstr, size, fmt, ap);
                va_end(ap);
        }
        return RD_KAFKA_CONF_INVALID;
}

/* A number: the whole string, in range. val NULL (librdkafka passes "" as
 * NULL) restores the default. */
static rd_kafka_conf_res_t lpp_set_num(lpp_settings_t *s,
                                       const struct lpp_num_s *n,
                                       const char *val, char *errstr,
                                       size_t errstr_size) {
        lagprobe_config_t dflt;
        lagprobe_config_init(&dflt);
        char *dst = (char *)&s->pc + n->off;
        const char *src = (const char *)&dflt + n->off;
        if (!val) {
                memcpy(dst, src, n->type == LPP_INT   ? sizeof(int)
                                 : n->type == LPP_I64 ? sizeof(int64_t)
                                                      : sizeof(double));
                return RD_KAFKA_CONF_OK;
        }
        char *end = NULL;
        double d;
        errno = 0;
        if (n->type == LPP_DBL) {
                d = strtod(val, &end);
        } else {
                long long v = strtoll(val, &end, 10);
                d = (double)v;
        }
        if (end == val || *end || errno || !isfinite(d))
                return lpp_err(errstr, errstr_size,
                               "lagprobe: invalid value \"%s\" for %s: "
                               "expected %s",
                               val, n->name,
                               n->type == LPP_DBL ? "a number" : "an integer");
        if (d < n->min || d > n->max || (n->min_excl && d == n->min) ||
            (n->max_excl && d == n->max))
                return lpp_err(errstr, errstr_size,
                               "lagprobe: %s=%s out of range %s%g..%g%s", n->name,
                               val, n->min_excl ? "(" : "[", n->min, n->max,
                               n->max_excl ? ")" : "]");
        if (n->type == LPP_INT) {
                int v = (int)d;
                memcpy(dst, &v, sizeof v);
        } else if (n->type == LPP_I64) {
                int64_t v = (int64_t)d;
                memcpy(dst, &v, sizeof v);
        } else {
                memcpy(dst, &d, sizeof d);
        }
        return RD_KAFKA_CONF_OK;
}

static rd_kafka_conf_res_t lpp_set_log(lpp_settings_t *s, const char *val,
                                       char *errstr, size_t errstr_size) {
        if (!val || !strcmp(val, "stderr")) {
                s->log_mode = LPP_LOG_STDERR;
        } else if (!strcmp(val, "syslog")) {
                s->log_mode = LPP_LOG_SYSLOG;
        } else if (!strcmp(val, "none")) {
                s->log_mode = LPP_LOG_NONE;
        } else if (!strncmp(val, "jsonl:", 6) && val[6] &&
                   strlen(val + 6) < sizeof s->log_path) {
                s->log_mode = LPP_LOG_JSONL;
                strcpy(s->log_path, val + 6);
        } else {
                return lpp_err(errstr, errstr_size,
                               "lagprobe: invalid value \"%s\" for lagprobe.log: "
                               "expected stderr, syslog, none or jsonl:PATH",
                               val);
        }
        return RD_KAFKA_CONF_OK;
}

static rd_kafka_conf_res_t lpp_set(lpp_settings_t *s, const char *name,
                                   const char *val, char *errstr,
                                   size_t errstr_size) {
        for (size_t i = 0; i < sizeof lpp_nums / sizeof lpp_nums[0]; i++)
                if (!strcmp(name, lpp_nums[i].name))
                        return lpp_set_num(s, &lpp_nums[i], val, errstr,
                                           errstr_size);
        if (!strcmp(name, "lagprobe.log"))
                return lpp_set_log(s, val, errstr, errstr_size);
        if (!strcmp(name, "lagprobe.http.listen")) {
                if (!val) {
                        s->http_listen[0] = 0;
                        return RD_KAFKA_CONF_OK;
                }
                if (strlen(val) >= sizeof s->http_listen ||
                    lpp_listen_check(val, errstr, errstr_size))
                        return strlen(val) >= sizeof s->http_listen
                                   ? lpp_err(errstr, errstr_size,
                                             "lagprobe: lagprobe.http.listen "
                                             "value too long")
                                   : RD_KAFKA_CONF_INVALID;
                strcpy(s->http_listen, val);
                return RD_KAFKA_CONF_OK;
        }
        if (!strcmp(name, "lagprobe.snapshot.path")) {
                if (val && strlen(val) >= sizeof s->snapshot_path - 32)
                        return lpp_err(errstr, errstr_size,
                                       "lagprobe: lagprobe.snapshot.path is "
                                       "too long");
                snprintf(s->snapshot_path, sizeof s->snapshot_path, "%s",
                         val ? val : "");
                return RD_KAFKA_CONF_OK;
        }
        if (!strcmp(name, "lagprobe.snapshot.interval.ms")) {
                char *end = NULL;
                long v = val ? strtol(val, &end, 10) : LPP_SNAPSHOT_DEFAULT_MS;
                if (val && (end == val || *end || v < 100 || v > 86400000))
                        return lpp_err(errstr, errstr_size,
                                       "lagprobe: invalid value \"%s\" for "
                                       "lagprobe.snapshot.interval.ms: "
                                       "expected an integer in "
                                       "[100..86400000]",
                                       val);
                s->snapshot_interval_ms = (int)v;
                return RD_KAFKA_CONF_OK;
        }
        return lpp_err(errstr, errstr_size,
                       "lagprobe: no such configuration property \"%s\" "
                       "(the lagprobe.* properties are listed in README.md, "
                       "\"Zero-code mode\")",
                       name);
}

/* ------------------------------------------------------------------------
 * Registry: one entry per watched consumer
 * ---------------------------------------------------------------------- */

typedef struct lpp_entry_s {
        struct lpp_entry_s *next;
        rd_kafka_t *rk;
        lagprobe_t *probe;
        int listener; /* -1 none */
        int log_fd;   /* jsonl sink, -1 none */
        char snapshot_path[LPP_PATH_MAX];
        int snapshot_interval_ms;
        int64_t snapshot_next_ms;
        int snapshot_warned;
} lpp_entry_t;

/* reg_lock guards the list; the service thread takes it to render.
 * ctl_lock serialises registration with listener and service start/stop;
 * the service thread never takes it, so stop may join under it. Order:
 * ctl_lock, then reg_lock. */
static pthread_mutex_t lpp_reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t lpp_ctl_lock = PTHREAD_MUTEX_INITIALIZER;
static lpp_entry_t *lpp_entries;

int64_t lpp_mono_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void lpp_warn(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        flockfile(stderr); /* one whole line among the host's output */
        fputs("lagprobe: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        funlockfile(stderr);
        va_end(ap);
}

/* ---- growable text buffer ---- */

typedef struct lpp_buf_s {
        char *p;
        size_t len, cap;
        int oom;
} lpp_buf_t;

/* Room for @p n more bytes and the NUL; -1 once out of memory. */
static int lpp_reserve(lpp_buf_t *b, size_t n) {
        size_t need = b->len + n + 1;
        if (b->oom || need <= b->cap)
                return b->oom ? -1 : 0;
        size_t cap = need < 4096 ? 4096 : need + need / 2;
        char *p = realloc(b->p, cap);
        if (!p) {
                b->oom = 1;
                return -1;
        }
        b->p = p;
        b->cap = cap;
        return 0;
}

static void lpp_put(lpp_buf_t *b, const char *s, size_t n) {
        if (lpp_reserve(b, n))
                return;
        memcpy(b->p + b->len, s, n);
        b->p[b->len += n] = 0;
}

static void lpp_puts(lpp_buf_t *b, const char *s) { lpp_put(b, s, strlen(s)); }

/* Formats straight into the buffer: measure, reserve, write. */
static void lpp_printf(lpp_buf_t *b, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void lpp_printf(lpp_buf_t *b, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(NULL, 0, fmt, ap);
        va_end(ap);
        if (n < 0 || lpp_reserve(b, (size_t)n))
                return;
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
        b->len += (size_t)n;
}

static void lpp_json_str(lpp_buf_t *b, const char *s) {
        lpp_puts(b, "\"");
        for (const unsigned char *c = (const unsigned char *)(s ? s : ""); *c;
             c++) {
                if (*c == '"' || *c == '\\') {
                        char e[2] = {'\\', (char)*c};
                        lpp_put(b, e, 2);
                } else if (*c < 0x20) {
                        lpp_printf(b, "\\u%04x", *c);
                } else {
                        lpp_put(b, (const char *)c, 1);
                }
        }
        lpp_puts(b, "\"");
}

/* One render of a probe's output (sized first, like snprintf). */
static char *lpp_render_probe(lagprobe_t *p, int metrics, size_t *lenp) {
        size_t size = 16384;
        for (int tries = 0; tries < 4; tries++) {
                char *buf = malloc(size);
                if (!buf)
                        return NULL;
                size_t need = metrics ? lagprobe_metrics_prometheus(p, buf, size)
                                      : lagprobe_snapshot_json(p, buf, size);
                if (need < size) {
                        *lenp = need;
                        return buf;
                }
                free(buf);
                size = need + need / 4 + 1024; /* it may grow meanwhile */
        }
        return NULL;
}

/* ---- renderers (under reg_lock) ---- */

/* The JSON of every consumer in @p path's group (NULL: all of them). */
static void lpp_render_lag(lpp_buf_t *b, const char *path) {
        int first = 1;
        lpp_puts(b, "{\"lagprobe\":");
        lpp_json_str(b, lagprobe_version_str());
        lpp_puts(b, ",\"consumers\":[");
        for (lpp_entry_t *e = lpp_entries; e; e = e->next) {
                if (path && strcmp(path, e->snapshot_path))
                        continue;
                size_t n = 0;
                char *doc = lpp_render_probe(e->probe, 0, &n);
                if (!doc) {
                        b->oom = 1;
                        return;
                }
                if (!first)
                        lpp_puts(b, ",");
                lpp_put(b, doc, n);
                free(doc);
                first = 0;
        }
        lpp_puts(b, "]}\n");
}

/* Prometheus: each probe renders whole families (HELP, TYPE, samples);
 * with several consumers the families are merged so that each name has
 * one HELP and TYPE, followed by every consumer's samples. */
typedef struct lpp_family_s {
        char name[128];
        lpp_buf_t head, samples;
} lpp_family_t;

static lpp_family_t *lpp_family(lpp_family_t **fams, size_t *n, size_t *cap,
                                const char *name, size_t len) {
        if (len >= sizeof((*fams)->name))
                len = sizeof((*fams)->name) - 1;
        for (size_t i = 0; i < *n; i++)
                if (strlen((*fams)[i].name) == len &&
                    !memcmp((*fams)[i].name, name, len))
                        return &(*fams)[i];
        if (*n == *cap) {
                size_t c = *cap ? *cap * 2 : 64;
                lpp_family_t *f = realloc(*fams, c * sizeof *f);
                if (!f)
                        return NULL;
                *fams = f;
                *cap = c;
        }
        lpp_family_t *f = &(*fams)[(*n)++];
        memset(f, 0, sizeof *f);
        memcpy(f->name, name, len);
        return f;
}

/* A lagprobe_* sample with the label consumer="NAME" first: two consumers
 * of one process may share client.id and group, and Prometheus refuses a
 * scrape with duplicate series. kafka_consumergroup_* keep kafka_exporter's
 * labels: partitions of one group are never assigned to two members. */
static void lpp_put_sample(lpp_buf_t *b, const char *l, size_t ll,
                           const char *consumer) {
        size_t nl = strcspn(l, "{ ");
        if (nl >= ll || strncmp(l, "lagprobe_", 9)) {
                lpp_put(b, l, ll);
                return;
        }
        lpp_put(b, l, nl);
        lpp_puts(b, "{consumer=\"");
        for (const char *c = consumer; *c; c++) {
                if (*c == '"' || *c == '\\')
                        lpp_put(b, "\\", 1);
                if (*c == '\n')
                        lpp_puts(b, "\\n");
                else
                        lpp_put(b, c, 1);
        }
        lpp_puts(b, "\"");
        if (l[nl] == '{') {
                if (l[nl + 1] != '}')
                        lpp_puts(b, ",");
                nl++;
        } else {
                lpp_puts(b, "}");
        }
        lpp_put(b, l + nl, ll - nl);
}

static int lpp_merge_metrics(lpp_family_t **fams, size_t *n, size_t *cap,
                             const char *text, size_t len,
                             const char *consumer) {
        lpp_family_t *cur = NULL;
        int fresh = 0; /* cur's header comes from this probe */
        const char *end = text + len;
        for (const char *l = text; l < end;) {
                const char *nl = memchr(l, '\n', (size_t)(end - l));
                size_t ll = nl ? (size_t)(nl - l) + 1 : (size_t)(end - l);
                if (!strncmp(l, "# HELP ", 7) || !strncmp(l, "# TYPE ", 7)) {
                        const char *nm = l + 7;
                        size_t nlen = strcspn(nm, " \n");
                        if (!cur || strlen(cur->name) != nlen ||
                            memcmp(cur->name, nm, nlen)) {
                                size_t before = *n;
                                cur = lpp_family(fams, n, cap, nm, nlen);
                                if (!cur)
                                        return -1;
                                fresh = *n > before;
                        }
                        if (fresh)
                                lpp_put(&cur->head, l, ll);
                } else if (l[0] != '#' && ll > 1) {
                        if (!cur && !(cur = lpp_family(fams, n, cap, "", 0)))
                                return -1;
                        lpp_put_sample(&cur->samples, l, ll, consumer);
                }
                l += ll;
        }
        return 0;
}

static void lpp_render_metrics(lpp_buf_t *b) {
        lpp_family_t *fams = NULL;
        size_t n = 0, cap = 0;
        for (lpp_entry_t *e = lpp_entries; e && !b->oom; e = e->next) {
                size_t len = 0;
                char *text = lpp_render_probe(e->probe, 1, &len);
                if (!text || lpp_merge_metrics(&fams, &n, &cap, text, len,
                                               rd_kafka_name(e->rk)))
                        b->oom = 1;
                free(text);
        }
        for (size_t i = 0; i < n; i++) {
                if (fams[i].head.oom || fams[i].samples.oom)
                        b->oom = 1;
                if (fams[i].head.p)
                        lpp_put(b, fams[i].head.p, fams[i].head.len);
                if (fams[i].samples.p)
                        lpp_put(b, fams[i].samples.p, fams[i].samples.len);
                free(fams[i].head.p);
                free(fams[i].samples.p);
        }
        free(fams);
}

/* First line: the worst verdict of all consumers with the union of their
 * reasons ("ok", "degraded: r1,r2", "unhealthy: ..."); then one line per
 * consumer. 503 when any consumer is unhealthy. */
static int lpp_render_health(lpp_buf_t *b) {
        lpp_buf_t lines = {0};
        char reasons[512], all[512] = "";
        int worst = LAGPROBE_HEALTH_OK;
        lagprobe_snapshot_t snap;
        for (lpp_entry_t *e = lpp_entries; e; e = e->next) {
                lagprobe_health_t h = lagprobe_health(e->probe, reasons, sizeof reasons);
                if (h < 0)
                        continue;
                if (h > worst)
                        worst = h;
                lagprobe_snapshot_init(&snap, NULL, 0);
                lagprobe_snapshot(e->probe, &snap);
                lpp_printf(&lines, "%s group=%s client_id=%s: %s%s%s\n",
                           snap.name ? snap.name : "", snap.group_id,
                           snap.client_id, lagprobe_health_name(h),
                           reasons[0] ? ": " : "", reasons);
                /* Union of reason names, each once. */
                for (char *r = reasons, *sv = NULL; (r = strtok_r(r, ",", &sv));
                     r = NULL) {
                        size_t rl = strlen(r);
                        const char *f = all;
                        int seen = 0;
                        while ((f = strstr(f, r))) {
                                if ((f == all || f[-1] == ',') &&
                                    (f[rl] == ',' || !f[rl]))
                                        seen = 1;
                                f += rl;
                        }
                        if (!seen && strlen(all) + rl + 2 < sizeof all) {
                                if (all[0])
                                        strcat(all, ",");
                                strcat(all, r);
                        }
                }
        }
        lpp_printf(b, "%s%s%s\n", lagprobe_health_name(worst),
                   all[0] ? ": " : "", all);
        if (lines.p)
                lpp_put(b, lines.p, lines.len);
        if (lines.oom)
                b->oom = 1;
        free(lines.p);
        return lagprobe_health_http_status(worst);
}

void lpp_render(const char *path, lpp_reply_t *r) {
        lpp_buf_t b = {0};
        r->status = 200;
        r->ctype = "text/plain; charset=utf-8";
        pthread_mutex_lock(&lpp_reg_lock);
        if (!strcmp(path, "/metrics")) {
                r->ctype = "text/plain; version=0.0.4; charset=utf-8";
                lpp_render_metrics(&b);
        } else if (!strcmp(path, "/healthz")) {
                r->status = lpp_render_health(&b);
        } else if (!strcmp(path, "/lag")) {
                r->ctype = "application/json";
                lpp_render_lag(&b, NULL);
        } else {
                r->status = 404;
                lpp_puts(&b, "not found: lagprobe serves GET /metrics, "
                             "/healthz and /lag\n");
        }
        pthread_mutex_unlock(&lpp_reg_lock);
        if (b.oom) {
                free(b.p);
                b = (lpp_buf_t){0};
                r->status = 500;
                r->ctype = "text/plain; charset=utf-8";
                lpp_puts(&b, "out of memory\n");
        }
        r->body = b.p;
        r->len = b.len;
}

/* ---- snapshot files ---- */

static int lpp_write_file(const char *path, const char *data, size_t len) {
        char tmp[LPP_PATH_MAX + 32];
        snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return -1;
        size_t off = 0;
        while (off < len) {
                ssize_t w = write(fd, data + off, len - off);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        break;
                off += (size_t)w;
        }
        if (close(fd) || off < len || rename(tmp, path)) {
                unlink(tmp);
                return -1;
        }
        return 0;
}

void lpp_snapshots_due(void) {
        /* One path per round, rendered under the lock, written outside. */
        for (int round = 0; round < 64; round++) {
                char path[LPP_PATH_MAX];
                lpp_buf_t b = {0};
                int64_t now = lpp_mono_ms();
                lpp_entry_t *due = NULL;
                pthread_mutex_lock(&lpp_reg_lock);
                for (lpp_entry_t *e = lpp_entries; e && !due; e = e->next)
                        if (e->snapshot_path[0] && now >= e->snapshot_next_ms)
                                due = e;
                if (due) {
                        snprintf(path, sizeof path, "%s", due->snapshot_path);
                        for (lpp_entry_t *e = lpp_entries; e; e = e->next)
                                if (!strcmp(e->snapshot_path, path))
                                        e->snapshot_next_ms =
                                            now + e->snapshot_interval_ms;
                        lpp_render_lag(&b, path);
                }
                int warn = due && !due->snapshot_warned;
                pthread_mutex_unlock(&lpp_reg_lock);
                if (!due)
                        return;
                if ((b.oom || lpp_write_file(path, b.p, b.len)) && warn) {
                        lpp_warn("cannot write snapshot %s: %s "
                                 "(lagprobe.snapshot.path)",
                                 path, b.oom ? "out of memory" : strerror(errno));
                        pthread_mutex_lock(&lpp_reg_lock);
                        for (lpp_entry_t *e = lpp_entries; e; e = e->next)
                                if (!strcmp(e->snapshot_path, path))
                                        e->snapshot_warned = 1;
                        pthread_mutex_unlock(&lpp_reg_lock);
                }
                free(b.p);
        }
}

/* ------------------------------------------------------------------------
 * Event sinks (lagprobe.log); called on the probe's watchdog thread
 * ---------------------------------------------------------------------- */

static void lpp_log_none(const lagprobe_event_t *ev, void *opaque) {
        (void)ev;
        (void)opaque;
}

static void lpp_log_syslog(const lagprobe_event_t *ev, void *opaque) {
        (void)opaque;
        syslog(LOG_USER | (ev->severity & 7),
               "lagprobe event=%s group=%s client_id=%s %s", ev->name,
               ev->group_id, ev->client_id, ev->message);
}

static void lpp_log_jsonl(const lagprobe_event_t *ev, void *opaque) {
        lpp_entry_t *e = opaque;
        lpp_buf_t b = {0};
        lpp_printf(&b, "{\"ts_ms\":%" PRId64 ",\"event\":", ev->ts_ms);
        lpp_json_str(&b, ev->name);
        lpp_printf(&b, ",\"severity\":%d,\"group_id\":", ev->severity);
        lpp_json_str(&b, ev->group_id);
        lpp_puts(&b, ",\"client_id\":");
        lpp_json_str(&b, ev->client_id);
        lpp_puts(&b, ",\"message\":");
        lpp_json_str(&b, ev->message);
        lpp_printf(&b,
                   ",\"since_poll_ms\":%" PRId64
                   ",\"max_poll_interval_ms\":%" PRId64
                   ",\"headroom_ms\":%" PRId64 ",\"batch_size\":%" PRId64
                   ",\"batch_done\":%" PRId64 ",\"predicted_ms\":%" PRId64
                   ",\"count\":%" PRId64 ",\"topic\":",
                   ev->since_poll_ms, ev->max_poll_interval_ms,
                   ev->headroom_ms, ev->batch_size, ev->batch_done,
                   ev->predicted_ms, ev->count);
        if (ev->topic)
                lpp_json_str(&b, ev->topic);
        else
                lpp_puts(&b, "null");
        lpp_printf(&b, ",\"partition\":%d}\n", (int)ev->partition);
        /* One write per line: O_APPEND keeps lines whole between writers. */
        if (!b.oom && e->log_fd >= 0 && write(e->log_fd, b.p, b.len) < 0)
                (void)0;
        free(b.p);
}

/* ------------------------------------------------------------------------
 * librdkafka glue
 * ---------------------------------------------------------------------- */

typedef struct lpp_conf_s {
        lpp_settings_t s;
} lpp_conf_t;

/* The plugin stays mapped once loaded: librdkafka dlclose()s it with the
 * last conf, and the service thread or a probe's watchdog may still be
 * running code in it at that moment. */
static pthread_once_t lpp_pin_once = PTHREAD_ONCE_INIT;
static char lpp_anchor;

static void lpp_pin(void) {
        Dl_info info;
        if (dladdr(&lpp_anchor, &info) && info.dli_fname &&
            !dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE))
                lpp_warn("cannot pin %s in memory: %s", info.dli_fname,
                         dlerror());
}

static rd_kafka_conf_res_t lpp_on_conf_set(rd_kafka_conf_t *conf,
                                           const char *name, const char *val,
                                           char *errstr, size_t errstr_size,
                                           void *ic) {
        (void)conf;
        if (strncmp(name, "lagprobe.", 9))
                return RD_KAFKA_CONF_UNKNOWN;
        return lpp_set(&((lpp_conf_t *)ic)->s, name, val, errstr, errstr_size);
}

static rd_kafka_resp_err_t lpp_on_conf_destroy(void *ic) {
        free(ic);
        return RD_KAFKA_RESP_ERR_NO_ERROR;
}

static rd_kafka_resp_err_t lpp_on_destroy(rd_kafka_t *rk, void *ic) {
        lpp_entry_t *e = ic;
        (void)rk;
        pthread_mutex_lock(&lpp_ctl_lock);
        pthread_mutex_lock(&lpp_reg_lock);
        for (lpp_entry_t **pp = &lpp_entries; *pp; pp = &(*pp)->next)
                if (*pp == e) {
                        *pp = e->next;
                        break;
                }
        int empty = !lpp_entries;
        pthread_mutex_unlock(&lpp_reg_lock);
        if (e->listener >= 0)
                lpp_listen_release(e->listener);
        if (empty)
                lpp_service_stop();
        pthread_mutex_unlock(&lpp_ctl_lock);
        /* Stops the watchdog: no event reaches the sink after this. */
        lagprobe_destroy(e->probe);
        if (e->log_fd >= 0)
                close(e->log_fd);
        free(e);
        return RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* The probe binds in its own on_new, which lagprobe_attach() appends to the
 * list librdkafka is going through (lpp_on_new below): librdkafka 2.0 to
 * 2.15 run it in the same pass. Should one not, the consumer would go
 * unwatched in silence; this per-instance interceptor says so once, when
 * librdkafka's main thread starts, after on_new. A lock-free read. */
static rd_kafka_resp_err_t lpp_on_thread_start(rd_kafka_t *rk,
                                               rd_kafka_thread_type_t type,
                                               const char *name, void *ic) {
        lpp_entry_t *e = ic;
        (void)name;
        if (type != RD_KAFKA_THREAD_MAIN)
                return RD_KAFKA_RESP_ERR_NO_ERROR;
        lagprobe_snapshot_t snap;
        lagprobe_snapshot_init(&snap, NULL, 0);
        if (!lagprobe_snapshot(e->probe, &snap) && !snap.bound)
                lpp_warn("%s: the probe did not bind (this librdkafka did not "
                         "run the on_new interceptor added during on_new): "
                         "consumer not watched",
                         rd_kafka_name(rk));
        return RD_KAFKA_RESP_ERR_NO_ERROR;
}

static void lpp_conf_str(const rd_kafka_conf_t *conf, const char *name,
                         char *out, size_t size) {
        size_t n = size;
        if (rd_kafka_conf_get(conf, name, out, &n) != RD_KAFKA_CONF_OK)
                out[0] = 0;
}

/* Inside rd_kafka_new(), on the application thread; conf is the client's
 * own copy, whose callbacks librdkafka reads only after on_new. */
static rd_kafka_resp_err_t lpp_on_new(rd_kafka_t *rk,
                                      const rd_kafka_conf_t *conf, void *ic,
                                      char *errstr, size_t errstr_size) {
        const lpp_settings_t *s = &((lpp_conf_t *)ic)->s;
        char group[256], client[256], err[512];
        (void)errstr;
        (void)errstr_size;
        if (rd_kafka_type(rk) != RD_KAFKA_CONSUMER)
                return RD_KAFKA_RESP_ERR_NO_ERROR; /* producers: left alone */
        lpp_conf_str(conf, "group.id", group, sizeof group);
        lpp_conf_str(conf, "client.id", client, sizeof client);
        if (!group[0]) {
                lpp_warn("consumer client.id=%s has no group.id: lagprobe "
                         "watches consumer group members only; not attached",
                         client);
                return RD_KAFKA_RESP_ERR_NO_ERROR;
        }
        lpp_entry_t *e = calloc(1, sizeof *e);
        if (!e) {
                lpp_warn("out of memory: consumer group=%s not watched", group);
                return RD_KAFKA_RESP_ERR_NO_ERROR;
        }
        e->rk = rk;
        e->listener = -1;
        e->log_fd = -1;
        snprintf(e->snapshot_path, sizeof e->snapshot_path, "%s",
                 s->snapshot_path);
        e->snapshot_interval_ms = s->snapshot_interval_ms;
        lagprobe_config_t pc = s->pc;
        pc.log_cb = NULL; /* stderr logfmt, the probe's own default */
        pc.log_opaque = e;
        if (s->log_mode == LPP_LOG_NONE) {
                pc.log_cb = lpp_log_none;
        } else if (s->log_mode == LPP_LOG_SYSLOG) {
                pc.log_cb = lpp_log_syslog;
        } else if (s->log_mode == LPP_LOG_JSONL) {
                e->log_fd = open(s->log_path,
                                 O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
                                 0644);
                if (e->log_fd >= 0)
                        pc.log_cb = lpp_log_jsonl;
                else
                        lpp_warn("cannot open lagprobe.log=jsonl:%s: %s; "
                                 "logging to stderr",
                                 s->log_path, strerror(errno));
        }
        e->probe = lagprobe_new(&pc, err, sizeof err);
        if (!e->probe ||
            lagprobe_attach(e->probe, (rd_kafka_conf_t *)conf, err,
                            sizeof err)) {
                lpp_warn("consumer group=%s not watched: %s", group, err);
                lagprobe_destroy(e->probe);
                if (e->log_fd >= 0)
                        close(e->log_fd);
                free(e);
                return RD_KAFKA_RESP_ERR_NO_ERROR;
        }
        rd_kafka_interceptor_add_on_destroy(rk, "lagprobe-plugin",
                                            lpp_on_destroy, e);
        rd_kafka_interceptor_add_on_thread_start(rk, "lagprobe-plugin",
                                                 lpp_on_thread_start, e);

        pthread_mutex_lock(&lpp_ctl_lock);
        if (s->http_listen[0]) {
                e->listener = lpp_listen_acquire(s->http_listen, err, sizeof err);
                if (e->listener < 0)
                        lpp_warn("no HTTP endpoint for group=%s: %s", group,
                                 err);
        }
        pthread_mutex_lock(&lpp_reg_lock);
        e->snapshot_next_ms = lpp_mono_ms() + e->snapshot_interval_ms;
        e->next = lpp_entries;
        lpp_entries = e;
        pthread_mutex_unlock(&lpp_reg_lock);
        if ((e->listener >= 0 || e->snapshot_path[0]) &&
            lpp_service_start(err, sizeof err))
                lpp_warn("%s: no HTTP endpoint or snapshot file", err);
        pthread_mutex_unlock(&lpp_ctl_lock);
        return RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* librdkafka's plugin entry point. */
LPP_EXPORT rd_kafka_resp_err_t conf_init(rd_kafka_conf_t *conf,
                                         void **plug_opaquep, char *errstr,
                                         size_t errstr_size) {
        pthread_once(&lpp_pin_once, lpp_pin);
        if (plug_opaquep)
                *plug_opaquep = NULL;
        lpp_conf_t *c = calloc(1, sizeof *c);
        if (!c) {
                lpp_err(errstr, errstr_size, "lagprobe: out of memory");
                return RD_KAFKA_RESP_ERR__FAIL;
        }
        lpp_settings_init(&c->s);
        rd_kafka_resp_err_t e = rd_kafka_conf_interceptor_add_on_conf_set(
            conf, "lagprobe", lpp_on_conf_set, c);
        if (e == RD_KAFKA_RESP_ERR__CONFLICT) {
                /* plugin.library.paths set again on the same conf: the
                 * interceptors and their settings are already there. */
                free(c);
                return RD_KAFKA_RESP_ERR_NO_ERROR;
        }
        if (!e)
                e = rd_kafka_conf_interceptor_add_on_new(conf, "lagprobe",
                                                         lpp_on_new, c);
        if (!e)
                e = rd_kafka_conf_interceptor_add_on_conf_destroy(
                    conf, "lagprobe", lpp_on_conf_destroy, c);
        if (e) {
                /* Only the first interceptor can fail (conflict): nothing
                 * else references c yet when it does. */
                lpp_err(errstr, errstr_size,
                        "lagprobe: cannot add interceptors: %s",
                        rd_kafka_err2str(e));
                return e;
        }
        return RD_KAFKA_RESP_ERR_NO_ERROR;
}

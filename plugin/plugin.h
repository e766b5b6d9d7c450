/* lagprobe plugin front end: declarations shared by plugin.c (librdkafka
 * glue, settings, consumer registry, renderers) and http.c (the listener
 * and the service thread). Internal: nothing here is exported from
 * lagprobe.so, whose only public symbol is conf_init().
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef LAGPROBE_PLUGIN_H
#define LAGPROBE_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

/* Bounds of the HTTP listener. */
#define LPP_HTTP_MAX_CONN 16        /* connections served at once */
#define LPP_HTTP_MAX_REQUEST 8192   /* request line + headers, bytes */
#define LPP_HTTP_MAX_TARGET 1024    /* request target, bytes */
#define LPP_HTTP_TIMEOUT_MS 3000    /* whole exchange, per connection */
#define LPP_HTTP_MAX_LISTENERS 8    /* distinct lagprobe.http.listen values */
#define LPP_SERVICE_TICK_MS 100     /* service thread wake-up period */

/* One HTTP answer; body is malloc'd (or NULL) and freed by the caller. */
typedef struct lpp_reply_s {
        int status;
        const char *ctype;
        char *body;
        size_t len;
} lpp_reply_t;

/* plugin.c: the answer to GET @p path (query string already removed).
 * Service thread. */
void lpp_render(const char *path, lpp_reply_t *r);

/* plugin.c: writes the snapshot files that are due. Service thread. */
void lpp_snapshots_due(void);

/* plugin.c: one line on stderr, "lagprobe: ...". Any thread. */
void lpp_warn(const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* http.c: checks a lagprobe.http.listen value ("PORT", ":PORT",
 * "HOST:PORT", "[V6]:PORT"; HOST a numeric address or "localhost").
 * Returns 0, or -1 with errstr. Any thread, no I/O. */
int lpp_listen_check(const char *spec, char *errstr, size_t errstr_size);

/* http.c: takes a reference on the listener for @p spec, binding it on the
 * first one. Returns its id (>= 0), or -1 with errstr. Not concurrently
 * with lpp_listen_release() or the service start/stop (plugin.c holds its
 * control lock). */
int lpp_listen_acquire(const char *spec, char *errstr, size_t errstr_size);
void lpp_listen_release(int id);

/* http.c: the one service thread (HTTP and snapshot files). start is a
 * no-op when running; stop returns within about LPP_SERVICE_TICK_MS plus
 * one render. Same locking rule as above. */
int lpp_service_start(char *errstr, size_t errstr_size);
void lpp_service_stop(void);

int64_t lpp_mono_ms(void);

#endif /* LAGPROBE_PLUGIN_H */

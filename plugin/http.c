/* lagprobe plugin front end: the HTTP listener and the service thread.
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * One thread serves every listener (lagprobe.http.listen) and writes the
 * snapshot files. It is an event loop over non-blocking sockets with
 * poll(): at most LPP_HTTP_MAX_CONN connections at once (more are told
 * 503 and closed), LPP_HTTP_MAX_REQUEST bytes of request head, and
 * LPP_HTTP_TIMEOUT_MS for the whole exchange of a connection, so a slow or
 * malicious client can hold one slot for a bounded time and never the
 * thread. One request per connection (Connection: close), GET only, no
 * request body read. The answers come from lpp_render() (plugin.c), which
 * only reads the probes. The thread blocks every signal, so the host's
 * signal handling is unchanged, and it checks its stop flag at least
 * every LPP_SERVICE_TICK_MS.
 */
#define _GNU_SOURCE /* accept4 */

#include "plugin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------
 * lagprobe.http.listen values
 * ---------------------------------------------------------------------- */

static int lpp_listen_parse(const char *spec, struct sockaddr_storage *ss,
                            socklen_t *sslen, char *errstr,
                            size_t errstr_size) {
        char host[64] = "127.0.0.1";
        const char *port_s = spec, *colon = strrchr(spec, ':');
        memset(ss, 0, sizeof *ss);
        if (colon) {
                size_t hl = (size_t)(colon - spec);
                const char *h = spec;
                if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
                        h++;
                        hl -= 2;
                }
                if (hl >= sizeof host) {
                        snprintf(errstr, errstr_size,
                                 "lagprobe: lagprobe.http.listen=%s: host too "
                                 "long",
                                 spec);
                        return -1;
                }
                if (hl) {
                        memcpy(host, h, hl);
                        host[hl] = 0;
                }
                port_s = colon + 1;
        }
        if (!strcmp(host, "localhost"))
                strcpy(host, "127.0.0.1");
        char *end = NULL;
        long port = strtol(port_s, &end, 10);
        if (!*port_s || *end || port < 0 || port > 65535 ||
            port_s[strspn(port_s, "0123456789")]) {
                snprintf(errstr, errstr_size,
                         "lagprobe: invalid lagprobe.http.listen \"%s\": "
                         "expected PORT or HOST:PORT (port 0-65535)",
                         spec);
                return -1;
        }
        struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
                v4->sin_family = AF_INET;
                v4->sin_port = htons((uint16_t)port);
                *sslen = sizeof *v4;
        } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
                v6->sin6_family = AF_INET6;
                v6->sin6_port = htons((uint16_t)port);
                *sslen = sizeof *v6;
        } else {
                snprintf(errstr, errstr_size,
                         "lagprobe: invalid lagprobe.http.listen \"%s\": the "
                         "host must be a numeric address or localhost "
                         "(default 127.0.0.1)",
                         spec);
                return -1;
        }
        return 0;
}

int lpp_listen_check(const char *spec, char *errstr, size_t errstr_size) {
        struct sockaddr_storage ss;
        socklen_t len;
        return lpp_listen_parse(spec, &ss, &len, errstr, errstr_size);
}

/* ------------------------------------------------------------------------
 * Listeners, shared by the consumers that name the same value
 * ---------------------------------------------------------------------- */

typedef struct lpp_listener_s {
        char spec[128]; /* "" free slot */
        int fd;
        int refs;
} lpp_listener_t;

static pthread_mutex_t lpp_http_lock = PTHREAD_MUTEX_INITIALIZER;
static lpp_listener_t lpp_ls[LPP_HTTP_MAX_LISTENERS];
static int lpp_ls_init;

static void lpp_ls_setup(void) {
        if (lpp_ls_init)
                return;
        for (int i = 0; i < LPP_HTTP_MAX_LISTENERS; i++)
                lpp_ls[i].fd = -1;
        lpp_ls_init = 1;
}

static int lpp_bind(const char *spec, char *errstr, size_t errstr_size) {
        struct sockaddr_storage ss;
        socklen_t len;
        if (lpp_listen_parse(spec, &ss, &len, errstr, errstr_size))
                return -1;
        int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        0);
        if (fd < 0) {
                snprintf(errstr, errstr_size, "socket: %s", strerror(errno));
                return -1;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (ss.ss_family == AF_INET6)
                setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&ss, len) || listen(fd, 64)) {
                snprintf(errstr, errstr_size,
                         "lagprobe.http.listen=%s: cannot listen: %s", spec,
                         strerror(errno));
                close(fd);
                return -1;
        }
        /* With port 0 the port is only known now: say which. */
        struct sockaddr_storage got;
        socklen_t glen = sizeof got;
        char addr[INET6_ADDRSTRLEN] = "?";
        if (!getsockname(fd, (struct sockaddr *)&got, &glen)) {
                int v6 = got.ss_family == AF_INET6;
                struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&got;
                struct sockaddr_in *a4 = (struct sockaddr_in *)&got;
                inet_ntop(got.ss_family,
                          v6 ? (void *)&a6->sin6_addr : (void *)&a4->sin_addr,
                          addr, sizeof addr);
                lpp_warn("HTTP on %s%s%s:%d: GET /metrics, /healthz, /lag",
                         v6 ? "[" : "", addr, v6 ? "]" : "",
                         ntohs(v6 ? a6->sin6_port : a4->sin_port));
        }
        return fd;
}

int lpp_listen_acquire(const char *spec, char *errstr, size_t errstr_size) {
        int id = -1, free_id = -1;
        pthread_mutex_lock(&lpp_http_lock);
        lpp_ls_setup();
        for (int i = 0; i < LPP_HTTP_MAX_LISTENERS && id < 0; i++) {
                if (lpp_ls[i].spec[0] && !strcmp(lpp_ls[i].spec, spec) &&
                    lpp_ls[i].refs > 0)
                        id = i;
                else if (!lpp_ls[i].spec[0] && free_id < 0)
                        free_id = i;
        }
        if (id < 0 && free_id < 0)
                snprintf(errstr, errstr_size,
                         "more than %d distinct lagprobe.http.listen values",
                         LPP_HTTP_MAX_LISTENERS);
        if (id < 0 && free_id >= 0) {
                int fd = lpp_bind(spec, errstr, errstr_size);
                if (fd >= 0) {
                        id = free_id;
                        snprintf(lpp_ls[id].spec, sizeof lpp_ls[id].spec, "%s",
                                 spec);
                        lpp_ls[id].fd = fd;
                }
        }
        if (id >= 0)
                lpp_ls[id].refs++;
        pthread_mutex_unlock(&lpp_http_lock);
        return id;
}

/* The last reference leaves the socket to the service thread to close (it
 * may be polling it), or to lpp_service_stop(). */
void lpp_listen_release(int id) {
        pthread_mutex_lock(&lpp_http_lock);
        if (id >= 0 && id < LPP_HTTP_MAX_LISTENERS && lpp_ls[id].refs > 0)
                lpp_ls[id].refs--;
        pthread_mutex_unlock(&lpp_http_lock);
}

/* Closes the listeners nobody references. Service thread, or after it. */
static void lpp_ls_reap(void) {
        pthread_mutex_lock(&lpp_http_lock);
        for (int i = 0; i < LPP_HTTP_MAX_LISTENERS; i++)
                if (lpp_ls[i].spec[0] && lpp_ls[i].refs == 0) {
                        close(lpp_ls[i].fd);
                        lpp_ls[i].fd = -1;
                        lpp_ls[i].spec[0] = 0;
                }
        pthread_mutex_unlock(&lpp_http_lock);
}

/* ------------------------------------------------------------------------
 * Connections
 * ---------------------------------------------------------------------- */

typedef struct lpp_conn_s {
        int fd; /* -1 free */
        int64_t deadline_ms;
        size_t in_len;
        char in[LPP_HTTP_MAX_REQUEST];
        char *out; /* NULL while reading */
        size_t out_len, out_off;
} lpp_conn_t;

static lpp_conn_t lpp_conns[LPP_HTTP_MAX_CONN];

static const char *lpp_reason(int status) {
        switch (status) {
        case 200: return "OK";
        case 400: return "Bad Request";
        case 404: return "Not Found";
        case 405: return "Method Not Allowed";
        case 408: return "Request Timeout";
        case 414: return "URI Too Long";
        case 431: return "Request Header Fields Too Large";
        case 500: return "Internal Server Error";
        case 503: return "Service Unavailable";
        case 505: return "HTTP Version Not Supported";
        default: return "Error";
        }
}

/* Status line, headers and body in one malloc'd buffer. */
static char *lpp_response(int status, const char *ctype, const char *body,
                          size_t len, size_t *outlen) {
        char head[256];
        int hl = snprintf(head, sizeof head,
                          "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                          "Content-Length: %zu\r\n%sCache-Control: no-store\r\n"
                          "Connection: close\r\n\r\n",
                          status, lpp_reason(status), ctype, len,
                          status == 405 ? "Allow: GET\r\n" : "");
        char *out = malloc((size_t)hl + len);
        if (!out)
                return NULL;
        memcpy(out, head, (size_t)hl);
        if (len)
                memcpy(out + hl, body, len);
        *outlen = (size_t)hl + len;
        return out;
}

static char *lpp_error(int status, size_t *outlen) {
        char body[96];
        int n = snprintf(body, sizeof body, "%d %s\n", status,
                         lpp_reason(status));
        return lpp_response(status, "text/plain; charset=utf-8", body,
                            (size_t)n, outlen);
}

/* The end of the request head, or NULL while incomplete. Only from @p from
 * on: a client sending a byte at a time costs no rescans. */
static const char *lpp_head_end(const char *in, size_t len, size_t from) {
        for (size_t i = from; i + 1 < len; i++) {
                if (in[i] == '\n' && in[i + 1] == '\n')
                        return in + i + 2;
                if (i + 3 < len && !memcmp(in + i, "\r\n\r\n", 4))
                        return in + i + 4;
        }
        return NULL;
}

/* A complete head: the answer. Strict on the request line; headers are
 * read no further than the blank line that ends them. */
static char *lpp_answer(const char *in, size_t len, size_t *outlen) {
        if (memchr(in, 0, len))
                return lpp_error(400, outlen);
        const char *eol = memchr(in, '\n', len);
        size_t ll = (size_t)(eol - in);
        if (ll && in[ll - 1] == '\r')
                ll--;
        const char *sp1 = memchr(in, ' ', ll);
        if (!sp1 || sp1 == in)
                return lpp_error(400, outlen);
        for (const char *c = in; c < sp1; c++)
                if (*c < 'A' || *c > 'Z')
                        return lpp_error(400, outlen);
        const char *target = sp1 + 1;
        const char *sp2 = memchr(target, ' ', ll - (size_t)(target - in));
        if (!sp2)
                return lpp_error(400, outlen);
        size_t tl = (size_t)(sp2 - target);
        const char *ver = sp2 + 1;
        size_t vl = ll - (size_t)(ver - in);
        if (vl != 8 || memcmp(ver, "HTTP/1.", 7) ||
            (ver[7] != '0' && ver[7] != '1'))
                return lpp_error(vl >= 5 && !memcmp(ver, "HTTP/", 5) ? 505 : 400,
                                 outlen);
        if (sp1 - in != 3 || memcmp(in, "GET", 3))
                return lpp_error(405, outlen);
        if (tl > LPP_HTTP_MAX_TARGET)
                return lpp_error(414, outlen);
        if (!tl || target[0] != '/')
                return lpp_error(400, outlen);
        char path[LPP_HTTP_MAX_TARGET + 1];
        size_t pl = 0;
        while (pl < tl && target[pl] != '?' && target[pl] != '#') {
                if ((unsigned char)target[pl] <= 0x20 ||
                    (unsigned char)target[pl] >= 0x7f)
                        return lpp_error(400, outlen);
                pl++;
        }
        memcpy(path, target, pl);
        path[pl] = 0;
        lpp_reply_t r = {0};
        lpp_render(path, &r);
        char *out = lpp_response(r.status, r.ctype, r.body ? r.body : "",
                                 r.len, outlen);
        free(r.body);
        return out;
}

static void lpp_conn_close(lpp_conn_t *c) {
        close(c->fd);
        c->fd = -1;
        free(c->out);
        c->out = NULL;
}

/* Best effort for a connection that gets no slot or timed out. */
static void lpp_send_now(int fd, int status) {
        size_t n = 0;
        char *out = lpp_error(status, &n);
        if (out && send(fd, out, n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
                (void)0;
        free(out);
}

/* After recv() or send(): 0 when @p n bytes moved; -1 when nothing did,
 * either for now (try at the next poll) or for good (closed here). */
static int lpp_moved(lpp_conn_t *c, ssize_t n) {
        if (n > 0)
                return 0;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                return -1;
        lpp_conn_close(c);
        return -1;
}

/* @p n more bytes are in c->in: returns 1 once the connection has its
 * answer in c->out (NULL when out of memory), 0 while the head is still
 * incomplete. No I/O, so that fuzz/fuzz_http.c runs exactly this. */
static int lpp_conn_take(lpp_conn_t *c, size_t n) {
        size_t from = c->in_len > 3 ? c->in_len - 3 : 0;
        c->in_len += n;
        const char *end = lpp_head_end(c->in, c->in_len, from);
        /* The head alone: whatever came after it (a body, a pipelined
         * request) depends on how the bytes arrived and is not read. */
        if (end)
                c->out = lpp_answer(c->in, (size_t)(end - c->in), &c->out_len);
        else if (c->in_len == sizeof c->in)
                c->out = lpp_error(memchr(c->in, '\n', c->in_len) ? 431 : 414,
                                   &c->out_len);
        else
                return 0;
        c->out_off = 0;
        return 1;
}

static void lpp_conn_read(lpp_conn_t *c) {
        ssize_t n = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len,
                         MSG_DONTWAIT);
        if (lpp_moved(c, n))
                return;
        if (lpp_conn_take(c, (size_t)n) && !c->out)
                lpp_conn_close(c);
}

static void lpp_conn_write(lpp_conn_t *c) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (lpp_moved(c, n))
                return;
        c->out_off += (size_t)n;
        if (c->out_off == c->out_len) {
                shutdown(c->fd, SHUT_WR);
                lpp_conn_close(c);
        }
}

/* Out of descriptors (or memory) the listener stays readable and every
 * accept fails: the listeners sit out one tick instead of spinning. */
static int64_t lpp_accept_pause_until_ms;

static void lpp_accept(int lfd) {
        for (int k = 0; k < LPP_HTTP_MAX_CONN; k++) {
                int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                        if (errno == EMFILE || errno == ENFILE ||
                            errno == ENOBUFS || errno == ENOMEM)
                                lpp_accept_pause_until_ms =
                                    lpp_mono_ms() + LPP_SERVICE_TICK_MS;
                        return;
                }
                lpp_conn_t *c = NULL;
                for (int i = 0; i < LPP_HTTP_MAX_CONN && !c; i++)
                        if (lpp_conns[i].fd < 0)
                                c = &lpp_conns[i];
                if (!c) {
                        lpp_send_now(fd, 503);
                        close(fd);
                        continue;
                }
                c->fd = fd;
                c->in_len = 0;
                c->out = NULL;
                c->deadline_ms = lpp_mono_ms() + LPP_HTTP_TIMEOUT_MS;
        }
}

/* ------------------------------------------------------------------------
 * Service thread
 * ---------------------------------------------------------------------- */

static pthread_t lpp_svc;
static int lpp_svc_running;
static atomic_int lpp_svc_quit;
/* 1 from start until the thread's last instruction on our data: a thread
 * left behind by a bounded stop (below) keeps it until it gets out. */
static atomic_int lpp_svc_alive;
#define LPP_SERVICE_STOP_WAIT_MS 2000

static void *lpp_service(void *arg) {
        (void)arg;
        struct pollfd pfd[LPP_HTTP_MAX_LISTENERS + LPP_HTTP_MAX_CONN];
        int who[LPP_HTTP_MAX_LISTENERS + LPP_HTTP_MAX_CONN];
        for (int i = 0; i < LPP_HTTP_MAX_CONN; i++)
                lpp_conns[i].fd = -1;
        while (!atomic_load(&lpp_svc_quit)) {
                nfds_t n = 0;
                int accepting = lpp_mono_ms() >= lpp_accept_pause_until_ms;
                lpp_ls_reap();
                pthread_mutex_lock(&lpp_http_lock);
                for (int i = 0; i < LPP_HTTP_MAX_LISTENERS && accepting; i++)
                        if (lpp_ls[i].spec[0]) {
                                pfd[n] = (struct pollfd){lpp_ls[i].fd, POLLIN, 0};
                                who[n++] = -1;
                        }
                pthread_mutex_unlock(&lpp_http_lock);
                int64_t now = lpp_mono_ms();
                for (int i = 0; i < LPP_HTTP_MAX_CONN; i++) {
                        lpp_conn_t *c = &lpp_conns[i];
                        if (c->fd < 0)
                                continue;
                        if (now >= c->deadline_ms) {
                                if (!c->out)
                                        lpp_send_now(c->fd, 408);
                                lpp_conn_close(c);
                                continue;
                        }
                        pfd[n] = (struct pollfd){c->fd, c->out ? POLLOUT : POLLIN,
                                                 0};
                        who[n++] = i;
                }
                int r = poll(pfd, n, LPP_SERVICE_TICK_MS);
                for (nfds_t k = 0; r > 0 && k < n; k++) {
                        if (!pfd[k].revents)
                                continue;
                        if (who[k] < 0) {
                                lpp_accept(pfd[k].fd);
                                continue;
                        }
                        lpp_conn_t *c = &lpp_conns[who[k]];
                        if (c->fd < 0)
                                continue;
                        if (c->out)
                                lpp_conn_write(c);
                        else
                                lpp_conn_read(c);
                        /* An answer is sent as soon as it is ready. */
                        if (c->fd >= 0 && c->out && c->out_off == 0)
                                lpp_conn_write(c);
                }
                lpp_snapshots_due();
        }
        for (int i = 0; i < LPP_HTTP_MAX_CONN; i++)
                if (lpp_conns[i].fd >= 0)
                        lpp_conn_close(&lpp_conns[i]);
        atomic_store(&lpp_svc_alive, 0);
        return NULL;
}

int lpp_service_start(char *errstr, size_t errstr_size) {
        if (lpp_svc_running)
                return 0;
        if (atomic_load(&lpp_svc_alive)) {
                snprintf(errstr, errstr_size,
                         "the previous service thread is still stuck in a "
                         "snapshot write (lagprobe.snapshot.path)");
                return -1;
        }
        atomic_store(&lpp_svc_quit, 0);
        atomic_store(&lpp_svc_alive, 1);
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int e = pthread_create(&lpp_svc, NULL, lpp_service, NULL);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (e) {
                atomic_store(&lpp_svc_alive, 0);
                snprintf(errstr, errstr_size, "cannot start thread: %s",
                         strerror(e));
                return -1;
        }
        lpp_svc_running = 1;
        return 0;
}

/* Bounded, because it runs inside the app's rd_kafka_destroy(): the thread
 * sees the flag within a tick unless a snapshot write() hangs (a dead
 * network filesystem). Then it is left to finish on its own, detached;
 * the library stays mapped (plugin.c pins it). */
void lpp_service_stop(void) {
        if (lpp_svc_running) {
                atomic_store(&lpp_svc_quit, 1);
                struct timespec until;
                clock_gettime(CLOCK_REALTIME, &until);
                until.tv_sec += LPP_SERVICE_STOP_WAIT_MS / 1000;
                if (pthread_timedjoin_np(lpp_svc, NULL, &until)) {
                        lpp_warn("service thread stuck (snapshot write?): "
                                 "left behind");
                        pthread_detach(lpp_svc);
                }
                lpp_svc_running = 0;
        }
        lpp_ls_reap();
}

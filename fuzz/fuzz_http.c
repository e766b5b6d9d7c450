/* fuzz_http - the plugin listener's request handling (plugin/http.c): the
 * bytes of one connection, in chunks, through lpp_conn_take() (end of head
 * detection, the request-line parser, the response builder), exactly as
 * the service thread runs it after each recv().
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * White-box: plugin/http.c is compiled into this file; what it calls in
 * plugin/plugin.c (lpp_render() and three helpers) is stubbed here, the
 * stub recording the path it was asked for. Input: byte 0 chooses the
 * chunk size (1..256), the rest is what the client sends. Invariants:
 *  - the answer does not depend on the chunking (replayed in one piece);
 *  - an answer is "HTTP/1.1 NNN Reason\r\n", NNN a status the listener
 *    gives, headers ending in a blank line, Content-Length equal to the
 *    body that follows;
 *  - 200 only for GET of /metrics, /healthz or /lag (a query or fragment
 *    after it allowed), with the path handed to lpp_render() being that
 *    one; every path handed over is printable ASCII, starts with '/', at
 *    most LPP_HTTP_MAX_TARGET bytes;
 *  - no answer only while the head is incomplete and the buffer not full.
 */
#include "../plugin/http.c"

#include "fuzz_util.h"

static char fz_path[LPP_HTTP_MAX_TARGET + 2];
static int fz_rendered;

void lpp_render(const char *path, lpp_reply_t *r) {
        size_t n = strlen(path);
        FZ_CHECK(n >= 1 && n <= LPP_HTTP_MAX_TARGET && path[0] == '/',
                 "path of %zu bytes", n);
        for (size_t i = 0; i < n; i++)
                FZ_CHECK((unsigned char)path[i] > 0x20 &&
                             (unsigned char)path[i] < 0x7f,
                         "byte 0x%02x in the path", (unsigned char)path[i]);
        memcpy(fz_path, path, n + 1);
        fz_rendered = 1;
        int known = !strcmp(path, "/metrics") || !strcmp(path, "/healthz") ||
                    !strcmp(path, "/lag");
        r->status = known ? 200 : 404;
        r->ctype = "text/plain";
        r->body = strdup(known ? "figures\n" : "not found\n");
        r->len = r->body ? strlen(r->body) : 0;
}

void lpp_snapshots_due(void) {}
void lpp_warn(const char *fmt, ...) { (void)fmt; }
int64_t lpp_mono_ms(void) { return 0; }

static lpp_conn_t fz_conn;

/* Feeds @p data in chunks of @p chunk; returns the answer (malloc'd) or
 * NULL when the connection would still be waiting. */
static char *fz_feed(const uint8_t *data, size_t n, size_t chunk,
                     size_t *outlen) {
        lpp_conn_t *c = &fz_conn;
        memset(c, 0, sizeof *c);
        c->fd = -1;
        size_t off = 0;
        while (off < n) {
                size_t k = n - off < chunk ? n - off : chunk;
                if (k > sizeof c->in - c->in_len)
                        k = sizeof c->in - c->in_len;
                memcpy(c->in + c->in_len, data + off, k);
                off += k;
                if (lpp_conn_take(c, k)) {
                        FZ_CHECK(c->out != NULL, "no answer built");
                        *outlen = c->out_len;
                        return c->out;
                }
                FZ_CHECK(c->in_len < sizeof c->in, "full buffer, no answer");
        }
        return NULL;
}

static void fz_check_answer(const char *out, size_t len, const uint8_t *req,
                            size_t req_len) {
        FZ_CHECK(len > 17 && !memcmp(out, "HTTP/1.1 ", 9), "status line");
        int status = atoi(out + 9);
        static const int given[] = {200, 400, 404, 405, 414, 431, 500, 505};
        int known = 0;
        for (size_t i = 0; i < sizeof given / sizeof given[0]; i++)
                known |= status == given[i];
        FZ_CHECK(known, "status %d", status);
        const char *end = NULL;
        for (size_t i = 0; i + 3 < len && !end; i++)
                if (!memcmp(out + i, "\r\n\r\n", 4))
                        end = out + i + 4;
        FZ_CHECK(end != NULL, "no end of headers");
        const char *cl = strstr(out, "Content-Length: ");
        FZ_CHECK(cl && cl < end, "no Content-Length");
        size_t body = (size_t)(out + len - end);
        FZ_CHECK((size_t)strtoull(cl + 16, NULL, 10) == body,
                 "Content-Length %s vs body %zu", cl + 16, body);
        if (status == 200) {
                FZ_CHECK(fz_rendered, "200 without a render");
                size_t pl = strlen(fz_path);
                FZ_CHECK(req_len > 4 + pl && !memcmp(req, "GET ", 4) &&
                             !memcmp(req + 4, fz_path, pl) &&
                             (req[4 + pl] == ' ' || req[4 + pl] == '?' ||
                              req[4 + pl] == '#'),
                         "200 for another request than GET %s", fz_path);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1)
                return 0;
        size_t chunk = (size_t)data[0] + 1;
        const uint8_t *req = data + 1;
        size_t n = size - 1;

        size_t len1 = 0, len2 = 0;
        fz_rendered = 0;
        char *a = fz_feed(req, n, chunk, &len1);
        if (a)
                fz_check_answer(a, len1, req, n);
        fz_rendered = 0;
        char *b = fz_feed(req, n, n ? n : 1, &len2);
        FZ_CHECK((a == NULL) == (b == NULL), "chunking changed whether it answers");
        FZ_CHECK(!a || (len1 == len2 && !memcmp(a, b, len1)),
                 "chunking changed the answer");
        free(a);
        free(b);
        return 0;
}

/* Helpers for the fuzz targets: a strict JSON validator (RFC 8259,
 * including UTF-8 inside strings), a Prometheus text-format line checker,
 * an input byte reader, and a frozen clock.
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef LAGPROBE_FUZZ_UTIL_H
#define LAGPROBE_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- abort with a message (libFuzzer records the input) --------------- */

#define FZ_CHECK(cond, ...)                                                    \
        do {                                                                   \
                if (!(cond)) {                                                 \
                        fprintf(stderr, "fuzz invariant failed: %s (%s:%d): ", \
                                #cond, __FILE__, __LINE__);                    \
                        fprintf(stderr, __VA_ARGS__);                          \
                        fprintf(stderr, "\n");                                 \
                        abort();                                               \
                }                                                              \
        } while (0)

/* ---- strict JSON validator ---------------------------------------------- */

typedef struct fz_json_s {
        const unsigned char *p, *end;
        int depth;
        const char *err;
} fz_json_t;

static inline void fz_ws(fz_json_t *j) {
        while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' ||
                                 *j->p == '\n' || *j->p == '\r'))
                j->p++;
}

/* One UTF-8 sequence (RFC 3629: no overlongs, no surrogates, <= U+10FFFF). */
static inline int fz_utf8(fz_json_t *j) {
        const unsigned char *u = j->p;
        size_t left = (size_t)(j->end - u);
        unsigned c = u[0];
        int n;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80)
                n = 1;
        else if (c >= 0xC2 && c <= 0xDF)
                n = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
                n = 3;
                if (c == 0xE0)
                        lo = 0xA0;
                if (c == 0xED)
                        hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
                n = 4;
                if (c == 0xF0)
                        lo = 0x90;
                if (c == 0xF4)
                        hi = 0x8F;
        } else {
                j->err = "invalid UTF-8 lead byte";
                return -1;
        }
        if (left < (size_t)n) {
                j->err = "truncated UTF-8";
                return -1;
        }
        for (int k = 1; k < n; k++) {
                unsigned b = u[k];
                unsigned l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
                if (b < l || b > h) {
                        j->err = "invalid UTF-8 continuation";
                        return -1;
                }
        }
        j->p += n;
        return 0;
}

static inline int fz_hex(unsigned c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
               (c >= 'A' && c <= 'F');
}

static inline int fz_string(fz_json_t *j) {
        if (j->p >= j->end || *j->p != '"') {
                j->err = "expected string";
                return -1;
        }
        j->p++;
        for (;;) {
                if (j->p >= j->end) {
                        j->err = "unterminated string";
                        return -1;
                }
                unsigned c = *j->p;
                if (c == '"') {
                        j->p++;
                        return 0;
                }
                if (c < 0x20) {
                        j->err = "raw control character in string";
                        return -1;
                }
                if (c == '\\') {
                        if (j->p + 1 >= j->end) {
                                j->err = "truncated escape";
                                return -1;
                        }
                        unsigned e = j->p[1];
                        if (e == 'u') {
                                if (j->end - j->p < 6 || !fz_hex(j->p[2]) ||
                                    !fz_hex(j->p[3]) || !fz_hex(j->p[4]) ||
                                    !fz_hex(j->p[5])) {
                                        j->err = "bad \\u escape";
                                        return -1;
                                }
                                j->p += 6;
                        } else if (e && strchr("\"\\/bfnrt", (int)e)) {
                                j->p += 2;
                        } else {
                                j->err = "bad escape";
                                return -1;
                        }
                        continue;
                }
                if (fz_utf8(j))
                        return -1;
        }
}

static inline int fz_number(fz_json_t *j) {
        const unsigned char *p = j->p;
        if (p < j->end && *p == '-')
                p++;
        if (p >= j->end || *p < '0' || *p > '9') {
                j->err = "bad number";
                return -1;
        }
        if (*p == '0')
                p++;
        else
                while (p < j->end && *p >= '0' && *p <= '9')
                        p++;
        if (p < j->end && *p == '.') {
                p++;
                if (p >= j->end || *p < '0' || *p > '9') {
                        j->err = "bad fraction";
                        return -1;
                }
                while (p < j->end && *p >= '0' && *p <= '9')
                        p++;
        }
        if (p < j->end && (*p == 'e' || *p == 'E')) {
                p++;
                if (p < j->end && (*p == '+' || *p == '-'))
                        p++;
                if (p >= j->end || *p < '0' || *p > '9') {
                        j->err = "bad exponent";
                        return -1;
                }
                while (p < j->end && *p >= '0' && *p <= '9')
                        p++;
        }
        j->p = p;
        return 0;
}

static inline int fz_value(fz_json_t *j);

static inline int fz_container(fz_json_t *j, unsigned char open) {
        unsigned char close = open == '{' ? '}' : ']';
        if (++j->depth > 200) {
                j->err = "too deep";
                return -1;
        }
        j->p++;
        fz_ws(j);
        if (j->p < j->end && *j->p == close) {
                j->p++;
                j->depth--;
                return 0;
        }
        for (;;) {
                fz_ws(j);
                if (open == '{') {
                        if (fz_string(j))
                                return -1;
                        fz_ws(j);
                        if (j->p >= j->end || *j->p != ':') {
                                j->err = "expected ':'";
                                return -1;
                        }
                        j->p++;
                }
                if (fz_value(j))
                        return -1;
                fz_ws(j);
                if (j->p < j->end && *j->p == ',') {
                        j->p++;
                        continue;
                }
                if (j->p < j->end && *j->p == close) {
                        j->p++;
                        j->depth--;
                        return 0;
                }
                j->err = "expected ',' or close";
                return -1;
        }
}

static inline int fz_lit(fz_json_t *j, const char *lit) {
        size_t n = strlen(lit);
        if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n)) {
                j->err = "bad literal";
                return -1;
        }
        j->p += n;
        return 0;
}

static inline int fz_value(fz_json_t *j) {
        fz_ws(j);
        if (j->p >= j->end) {
                j->err = "expected value";
                return -1;
        }
        switch (*j->p) {
        case '{':
        case '[': return fz_container(j, *j->p);
        case '"': return fz_string(j);
        case 't': return fz_lit(j, "true");
        case 'f': return fz_lit(j, "false");
        case 'n': return fz_lit(j, "null");
        default: return fz_number(j);
        }
}

/* NULL when s[0..n) is one valid JSON document, else the reason. */
__attribute__((noinline, unused)) static const char *fz_json_check(const char *s, size_t n, size_t *at) {
        fz_json_t j = {(const unsigned char *)s, (const unsigned char *)s + n,
                       0, NULL};
        if (fz_value(&j) == 0) {
                fz_ws(&j);
                if (j.p != j.end)
                        j.err = "trailing bytes";
        }
        if (at)
                *at = (size_t)(j.p - (const unsigned char *)s);
        return j.err;
}

/* ---- reading figures back from the probe's JSON ------------------------ */

/* Just past the end of the object that starts at o ('{'), strings
 * skipped; NULL when it does not end. */
static inline const char *fz_json_object_end(const char *o) {
        int in_str = 0, depth = 0;
        for (const char *q = o; *q; q++) {
                if (in_str) {
                        if (*q == '\\' && q[1])
                                q++;
                        else if (*q == '"')
                                in_str = 0;
                } else if (*q == '"') {
                        in_str = 1;
                } else if (*q == '{') {
                        depth++;
                } else if (*q == '}' && --depth == 0) {
                        return q + 1;
                }
        }
        return NULL;
}

/* The first partition object of the document's "partitions" array, or
 * its ']'; NULL when absent. (Inside a string the key's quotes would be
 * escaped, so the raw text matches only the key.) */
static inline const char *fz_json_partitions(const char *js) {
        const char *a = strstr(js, "\"partitions\":[");
        return a ? a + 14 : NULL;
}

/* The integer after "key": in the JSON object [o, end) (outside strings,
 * at any depth); -1 for null, INT64_MIN when absent. */
static inline int64_t fz_json_int(const char *o, const char *end,
                                  const char *key) {
        size_t kl = strlen(key);
        int in_str = 0;
        for (const char *q = o; q < end; q++) {
                if (in_str) {
                        if (*q == '\\')
                                q++;
                        else if (*q == '"')
                                in_str = 0;
                        continue;
                }
                if (*q != '"')
                        continue;
                if ((size_t)(end - q) > kl + 2 && !memcmp(q + 1, key, kl) &&
                    q[kl + 1] == '"' && q[kl + 2] == ':') {
                        const char *v = q + kl + 3;
                        if (!strncmp(v, "null", 4))
                                return -1;
                        return strtoll(v, NULL, 10);
                }
                in_str = 1;
        }
        return INT64_MIN;
}

/* ---- Prometheus text format 0.0.4 ------------------------------------ */

static inline int fz_prom_name_char(unsigned c, int first) {
        return c == '_' || c == ':' || (c >= 'a' && c <= 'z') ||
               (c >= 'A' && c <= 'Z') || (!first && c >= '0' && c <= '9');
}

/* NULL when every line is a comment or a well-formed sample line. */
__attribute__((noinline, unused)) static const char *fz_prom_check(const char *s, size_t n, size_t *at) {
        const char *p = s, *end = s + n;
        while (p < end) {
                const char *eol = memchr(p, '\n', (size_t)(end - p));
                if (at)
                        *at = (size_t)(p - s);
                if (!eol)
                        return "last line without newline";
                if (*p == '#') {
                        if (strncmp(p, "# HELP ", 7) && strncmp(p, "# TYPE ", 7))
                                return "unknown comment line";
                        p = eol + 1;
                        continue;
                }
                if (!fz_prom_name_char((unsigned char)*p, 1))
                        return "bad metric name start";
                while (p < eol && fz_prom_name_char((unsigned char)*p, 0))
                        p++;
                if (p < eol && *p == '{') {
                        p++;
                        for (;;) {
                                if (!fz_prom_name_char((unsigned char)*p, 1))
                                        return "bad label name";
                                while (p < eol &&
                                       fz_prom_name_char((unsigned char)*p, 0))
                                        p++;
                                if (p + 1 >= eol || p[0] != '=' || p[1] != '"')
                                        return "expected =\"";
                                p += 2;
                                while (p < eol && *p != '"') {
                                        if (*p == '\\') {
                                                if (p + 1 >= eol ||
                                                    !strchr("\\\"n", p[1]))
                                                        return "bad label escape";
                                                p += 2;
                                        } else if ((unsigned char)*p < 0x80) {
                                                p++;
                                        } else {
                                                /* Prometheus rejects the
                                                 * whole scrape on a label
                                                 * value that is not
                                                 * UTF-8. */
                                                fz_json_t u = {
                                                    (const unsigned char *)p,
                                                    (const unsigned char *)eol,
                                                    0, NULL};
                                                if (fz_utf8(&u))
                                                        return "label value "
                                                               "not UTF-8";
                                                p = (const char *)u.p;
                                        }
                                }
                                if (p >= eol)
                                        return "unterminated label value";
                                p++;
                                if (p < eol && *p == ',') {
                                        p++;
                                        continue;
                                }
                                if (p < eol && *p == '}') {
                                        p++;
                                        break;
                                }
                                return "expected , or }";
                        }
                }
                if (p >= eol || *p != ' ')
                        return "expected space before value";
                p++;
                /* Value: a float, NaN, +Inf or -Inf; nothing after it. */
                char tmp[64];
                size_t vl = (size_t)(eol - p);
                if (vl == 0 || vl >= sizeof tmp)
                        return "bad value length";
                memcpy(tmp, p, vl);
                tmp[vl] = 0;
                if (strcmp(tmp, "NaN") && strcmp(tmp, "+Inf") &&
                    strcmp(tmp, "-Inf")) {
                        char *e;
                        strtod(tmp, &e);
                        if (*e || strchr(tmp, ' ') || strchr(tmp, 'n') ||
                            strchr(tmp, 'N') || strchr(tmp, 'x') ||
                            strchr(tmp, 'X'))
                                return "bad value";
                }
                p = eol + 1;
        }
        return NULL;
}

/* ---- input reader ------------------------------------------------------ */

typedef struct fz_in_s {
        const uint8_t *p;
        size_t n;
} fz_in_t;

static inline uint64_t fz_u64(fz_in_t *in) {
        uint64_t v = 0;
        for (int i = 0; i < 8; i++) {
                v <<= 8;
                if (in->n) {
                        v |= *in->p++;
                        in->n--;
                }
        }
        return v;
}

static inline unsigned fz_u8(fz_in_t *in) {
        if (!in->n)
                return 0;
        in->n--;
        return *in->p++;
}

/* An int64 in [lo, hi], biased towards the edges and small values. */
static inline int64_t fz_range(fz_in_t *in, int64_t lo, int64_t hi) {
        unsigned sel = fz_u8(in);
        uint64_t span = (uint64_t)hi - (uint64_t)lo;
        switch (sel & 7) {
        case 0: return lo;
        case 1: return hi;
        case 2: return lo + (int64_t)(fz_u8(in) % (span < 255 ? span + 1 : 256));
        case 3: return hi - (int64_t)(fz_u8(in) % (span < 255 ? span + 1 : 256));
        default: {
                uint64_t v = fz_u64(in);
                if (span == UINT64_MAX)
                        return (int64_t)v;
                return (int64_t)((uint64_t)lo + v % (span + 1));
        }
        }
}

/* A string (no NUL) into out (NUL-terminated): up to 31 bytes, or max
 * bytes when the length byte is 255 (long strings make every render long
 * and slow, and add little once the escaping paths are covered). */
static inline size_t fz_str(fz_in_t *in, char *out, size_t max) {
        size_t len = fz_u8(in);
        len = len == 255 ? max : len % 32;
        if (len > max)
                len = max;
        size_t k = 0;
        for (size_t i = 0; i < len && in->n; i++) {
                unsigned c = fz_u8(in);
                if (c == 0)
                        c = 'z';
                out[k++] = (char)c;
        }
        out[k] = 0;
        return k;
}

#endif

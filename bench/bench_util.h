/* Small helpers shared by the benchmarks: clocks, medians, the mock broker
 * child process. Header-only (static functions).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef LAGPROBE_BENCH_UTIL_H
#define LAGPROBE_BENCH_UTIL_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static inline int64_t bu_clock_ns(clockid_t id) {
        struct timespec ts;
        clock_gettime(id, &ts);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int64_t bu_mono_ns(void) { return bu_clock_ns(CLOCK_MONOTONIC); }
static inline int64_t bu_thread_ns(void) {
        return bu_clock_ns(CLOCK_THREAD_CPUTIME_ID);
}
static inline int64_t bu_process_ns(void) {
        return bu_clock_ns(CLOCK_PROCESS_CPUTIME_ID);
}

static inline void bu_sleep_ms(int ms) {
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
        while (nanosleep(&ts, &ts) && errno == EINTR)
                ;
}

static int bu_dcmp(const void *a, const void *b) {
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

/* Median of n values (sorts a copy). */
static inline double bu_median(const double *v, int n) {
        double tmp[256];
        if (n <= 0 || n > 256)
                return 0;
        memcpy(tmp, v, sizeof *v * (size_t)n);
        qsort(tmp, (size_t)n, sizeof *tmp, bu_dcmp);
        return n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
}

/* Quantile q (0..1) of n values, nearest rank; sorts v in place. */
static inline double bu_quantile(double *v, int n, double q) {
        if (n <= 0)
                return 0;
        qsort(v, (size_t)n, sizeof *v, bu_dcmp);
        int k = (int)(q * n + 0.999999) - 1;
        if (k < 0)
                k = 0;
        if (k >= n)
                k = n - 1;
        return v[k];
}

static inline double bu_min(const double *v, int n) {
        double m = v[0];
        for (int i = 1; i < n; i++)
                if (v[i] < m)
                        m = v[i];
        return m;
}

static inline double bu_max(const double *v, int n) {
        double m = v[0];
        for (int i = 1; i < n; i++)
                if (v[i] > m)
                        m = v[i];
        return m;
}

/* The mock broker child: argv[0] is its path. Reads the bootstrap line
 * into boot. Returns 0, or -1 (message on stderr). */
typedef struct bu_broker_s {
        pid_t pid;
        int to_child; /* its stdin: closing it stops the broker */
        char boot[256];
} bu_broker_t;

static inline int bu_broker_start(bu_broker_t *b, char *const argv[]) {
        int in[2], out[2];
        if (pipe(in) || pipe(out)) {
                perror("pipe");
                return -1;
        }
        pid_t pid = fork();
        if (pid < 0) {
                perror("fork");
                return -1;
        }
        if (pid == 0) {
                dup2(in[0], 0);
                dup2(out[1], 1);
                close(in[0]);
                close(in[1]);
                close(out[0]);
                close(out[1]);
                execv(argv[0], argv);
                perror(argv[0]);
                _exit(127);
        }
        close(in[0]);
        close(out[1]);
        b->pid = pid;
        b->to_child = in[1];
        FILE *f = fdopen(out[0], "r");
        if (!f || !fgets(b->boot, sizeof b->boot, f)) {
                fprintf(stderr, "bench: mock broker %s gave no address\n",
                        argv[0]);
                return -1;
        }
        fclose(f);
        b->boot[strcspn(b->boot, "\r\n")] = 0;
        if (strncmp(b->boot, "127.0.0.1:", 10) != 0) {
                fprintf(stderr, "bench: broker not on 127.0.0.1: %s\n",
                        b->boot);
                return -1;
        }
        return 0;
}

static inline void bu_broker_stop(bu_broker_t *b) {
        if (b->to_child >= 0)
                close(b->to_child);
        b->to_child = -1;
        int st;
        waitpid(b->pid, &st, 0);
}

#endif

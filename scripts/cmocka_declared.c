/* Linked into every test binary with -Wl,--wrap=_cmocka_run_group_tests
 * (see the Makefile): before cmocka runs a group, print how many tests the
 * group's array holds, before any filter (cmocka_set_test_filter(), which
 * HR_FILTER, DG_FILTER, OUT_FILTER and the like call) drops some. cmocka's
 * own "[==========] Running N test(s)." counts only what the filter kept, so
 * scripts/run-tests.sh compares the two and fails a binary that ran fewer
 * tests than it declares.
 *
 * LAGPROBE_TEST_SHARD=I/N (0 <= I < N) keeps only the tests whose index in
 * the array is I modulo N, in their order, so that the runner can split a
 * slow binary over N processes (each with its own mock cluster); the line
 * then declares that shard's tests: "[ DECLARED ] 4 test(s) in tests (shard
 * 1/4 of 14)." A shard that gets no test declares 0 and runs nothing.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <setjmp.h>
#include <cmocka.h>

int __real__cmocka_run_group_tests(const char *group_name,
                                   const struct CMUnitTest *const tests,
                                   const size_t num_tests,
                                   CMFixtureFunction group_setup,
                                   CMFixtureFunction group_teardown);
int __wrap__cmocka_run_group_tests(const char *group_name,
                                   const struct CMUnitTest *const tests,
                                   const size_t num_tests,
                                   CMFixtureFunction group_setup,
                                   CMFixtureFunction group_teardown);

int __wrap__cmocka_run_group_tests(const char *group_name,
                                   const struct CMUnitTest *const tests,
                                   const size_t num_tests,
                                   CMFixtureFunction group_setup,
                                   CMFixtureFunction group_teardown) {
        size_t shard = 0, shards = 1;
        const char *e = getenv("LAGPROBE_TEST_SHARD");
        if (e && *e) {
                unsigned long i, n;
                char c;
                if (sscanf(e, "%lu/%lu%c", &i, &n, &c) != 2 || n == 0 || i >= n) {
                        fprintf(stdout, "[  FAILED  ] LAGPROBE_TEST_SHARD=%s: want I/N, 0 <= I < N\n", e);
                        fflush(stdout);
                        return 1;
                }
                shard = i;
                shards = n;
        }
        /* The entries cmocka 1.1 counts as tests: a name and something to
         * run. */
        struct CMUnitTest *mine = calloc(num_tests ? num_tests : 1, sizeof *mine);
        if (!mine) {
                fprintf(stdout, "[  FAILED  ] out of memory\n");
                fflush(stdout);
                return 1;
        }
        size_t all = 0, n = 0;
        for (size_t i = 0; i < num_tests; i++) {
                if (tests[i].name == NULL ||
                    (tests[i].test_func == NULL && tests[i].setup_func == NULL &&
                     tests[i].teardown_func == NULL))
                        continue;
                if (all++ % shards == shard)
                        mine[n++] = tests[i];
        }
        /* Same stream as cmocka's messages under CMOCKA_MESSAGE_OUTPUT=stdout
         * (what the runner sets), flushed so the line comes first. */
        if (shards > 1)
                fprintf(stdout, "[ DECLARED ] %zu test(s) in %s (shard %zu/%zu of %zu).\n",
                        n, group_name ? group_name : "?", shard, shards, all);
        else
                fprintf(stdout, "[ DECLARED ] %zu test(s) in %s.\n", n,
                        group_name ? group_name : "?");
        fflush(stdout);
        int rc = 0;
        if (n > 0 || shards == 1)
                rc = __real__cmocka_run_group_tests(group_name, mine, n,
                                                    group_setup, group_teardown);
        free(mine);
        return rc;
}

#!/usr/bin/env bash
# The test runner itself (scripts/run-tests.sh with scripts/cmocka_declared.c
# linked in), end to end: a filter such as HR_FILTER, DG_FILTER or
# OUT_FILTER that drops tests, a crash half-way, a failed or skipped test
# must each fail the run, since cmocka alone exits 0 after "0 test(s) run".
# Builds a three-test cmocka program the way the Makefile links every test
# binary (--wrap=_cmocka_run_group_tests), runs the runner on it in a
# scratch BUILD_DIR and checks its exit status and counts. A few seconds.
#
#   tests/e2e_runner.sh     (CC and PKG_CONFIG as for make; needs cmocka)
#
# Output is TAP (see tests/e2e_cpp.sh); make test runs it with the other
# tests/e2e_*.sh.
set -uo pipefail

if [[ -z ${LAGPROBE_E2E_BOUNDED:-} ]]; then
        LAGPROBE_E2E_BOUNDED=1 exec timeout -k 5 60 "$0" "$@"
fi

root=$(cd "$(dirname "$0")/.." && pwd)
# tmp (removed on exit), check and note; no server is started.
# shellcheck source=tests/lib_e2e.sh
. "$root/tests/lib_e2e.sh"
e2e_init e2e-runner

cc=${CC:-cc}
pkg=${PKG_CONFIG:-pkg-config}

# RT_FILTER: cmocka's test filter, as HR_FILTER is in test_headroom.
# RT_FAIL, RT_SKIP, RT_EXIT: the second test fails, skips, or ends the
# process with status 0 before any result is printed.
cat >"$tmp/fake.c" <<'EOF'
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

static void test_a(void **state) { (void)state; }
static void test_b(void **state) {
        (void)state;
        if (getenv("RT_FAIL"))
                fail();
        if (getenv("RT_SKIP"))
                skip();
        if (getenv("RT_EXIT"))
                _exit(0);
}
static void test_c(void **state) { (void)state; }

int main(void) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_a),
            cmocka_unit_test(test_b),
            cmocka_unit_test(test_c),
        };
        if (getenv("RT_FILTER"))
                cmocka_set_test_filter(getenv("RT_FILTER"));
        return cmocka_run_group_tests(tests, NULL, NULL);
}
EOF
# shellcheck disable=SC2046 # pkg-config's flags are words
if ! "$cc" -std=c11 -Wall -Wextra -Werror $($pkg --cflags cmocka) \
        -Wl,--wrap=_cmocka_run_group_tests -o "$tmp/fake" "$tmp/fake.c" \
        "$root/scripts/cmocka_declared.c" $($pkg --libs cmocka) \
        >"$tmp/cc.log" 2>&1; then
        sed 's/^/#   /' "$tmp/cc.log"
        echo "Bail out! cannot build the cmocka program ($cc, cmocka)"
        exit 1
fi

# rt LABEL [VAR=VALUE...]: the runner on the program under LABEL in a
# scratch build dir; sets rc and counts ("PASSED FAILED").
rt() {
        local label=$1
        shift
        env "$@" BUILD_DIR="$tmp/b" TEST_OUTPUT=fail \
                "$root/scripts/run-tests.sh" "$label" "$tmp/fake" \
                >"$tmp/$label.out" 2>&1
        rc=$?
        counts=$(cat "$tmp/b/$label-logs/counts" 2>/dev/null || echo missing)
}

# expect LABEL RC COUNTS: the last rt ended with RC and counted COUNTS.
expect() {
        if [[ $rc == "$2" && $counts == "$3" ]]; then
                return 0
        fi
        note "$1: exit $rc, counts $counts; want exit $2, counts $3"
        sed 's/^/#   /' "$tmp/$1.out"
        return 1
}

rt all
check "all three tests run and pass: exit 0, 3 passed" expect all 0 "3 0"

rt none RT_FILTER=no_such_test
check "a filter that drops every test fails the binary (0 run of 3)" \
        expect none 1 "0 3"
check "the line says why (declares 3, 0 selected)" \
        grep -q "declares 3 test(s), 0 selected" "$tmp/none.out"

rt one RT_FILTER=test_a
check "a filter that keeps one of three counts the other two as failed" \
        expect one 1 "1 2"

rt failing RT_FAIL=1
check "a failed test fails the binary" expect failing 1 "2 1"

rt skipping RT_SKIP=1
check "a skipped test counts as failed" expect skipping 1 "2 1"

rt exiting RT_EXIT=1
check "a process that exits 0 half-way, before cmocka's summary, fails" \
        expect exiting 1 "0 3"

rt sharded TEST_SHARDS=fake=2
check "split over two shards (TEST_SHARDS), the three tests still count" \
        expect sharded 0 "3 0"

BUILD_DIR="$tmp/b" "$root/scripts/run-tests.sh" --total all sharded \
        >"$tmp/total-ok.out" 2>&1
check "--total over passing runs exits 0" test $? -eq 0
BUILD_DIR="$tmp/b" "$root/scripts/run-tests.sh" --total all none \
        >"$tmp/total.out" 2>&1
rc=$?
check "--total with a filtered run in it exits 1" test $rc -eq 1
check "--total's last line adds them up (3 passed, 3 failed)" \
        test "$(tail -n 1 "$tmp/total.out")" = "3 passed, 3 failed"
BUILD_DIR="$tmp/b" "$root/scripts/run-tests.sh" --total all never_ran \
        >"$tmp/total-missing.out" 2>&1
check "--total with a suite that never ran exits 1" test $? -eq 1

env BUILD_DIR="$tmp/b" "$root/scripts/run-tests.sh" empty >"$tmp/empty.out" 2>&1
check "a suite without binaries fails" test $? -eq 1

echo "1..$n"
((failed == 0))

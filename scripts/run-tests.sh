#!/usr/bin/env bash
# Run cmocka test binaries and count their results.
#
#   scripts/run-tests.sh LABEL BINARY...
#       Runs each binary (stdin from /dev/null, TEST_TIMEOUT seconds each,
#       default 300), shows its output and keeps it in
#       $BUILD_DIR/LABEL-logs/NAME.log, counts the tests from cmocka's own
#       summary lines, prints "LABEL: N passed, N failed" and writes the
#       counts to $BUILD_DIR/LABEL-logs/counts. Exits 1 if anything failed.
#       TEST_WRAPPER, when set, is a command line put in front of each
#       binary (make test-valgrind: "valgrind --error-exitcode=99 ...").
#       A binary for which memcheck reports errors or memory "definitely
#       lost" counts as failed even when all its tests passed.
#   scripts/run-tests.sh --tap LABEL SCRIPT...
#       The same for scripts that print TAP (end-to-end tests): each
#       "ok N - ..." line is a passed test, each "not ok N - ..." a failed
#       one, "# SKIP" and "# TODO" count as failed. A script must end with
#       its plan "1..N"; a missing or short plan ("Bail out!", a crash, a
#       timeout) counts one failed test more.
#   scripts/run-tests.sh --total
#       Adds up every $BUILD_DIR/*-logs/counts and prints "N passed, N
#       failed" as its last line. Exits 1 if anything failed or no counts
#       exist.
#
# A binary that exits non-zero without cmocka reporting a failed test (a
# crash, a timeout, a sanitizer report at exit) counts one failed test more.
# Skipped tests count as failed: the project allows none.
set -uo pipefail

build_dir=${BUILD_DIR:-build}
timeout_s=${TEST_TIMEOUT:-300}
wrapper=()
if [[ -n ${TEST_WRAPPER:-} ]]; then
        read -r -a wrapper <<<"$TEST_WRAPPER"
fi

if [[ ${1:-} == --total ]]; then
        passed=0 failed=0 found=0
        for f in "$build_dir"/*-logs/counts; do
                [[ -f $f ]] || continue
                read -r p q <"$f"
                passed=$((passed + p)) failed=$((failed + q)) found=1
        done
        ((found)) || failed=1
        echo "$passed passed, $failed failed"
        ((failed == 0))
        exit
fi

tap=0
if [[ ${1:-} == --tap ]]; then
        tap=1
        shift
fi
if (($# < 1)); then
        echo "usage: $0 LABEL BINARY... | $0 --tap LABEL SCRIPT... | $0 --total" >&2
        exit 2
fi
label=$1
shift
logdir=$build_dir/$label-logs
rm -rf "$logdir"
mkdir -p "$logdir"

export CMOCKA_MESSAGE_OUTPUT=stdout

total_passed=0 total_failed=0
report=()
if (($# == 0)); then
        # A suite that runs nothing must not look green.
        total_failed=1
        report+=("FAIL (no test binaries)")
fi

for bin in "$@"; do
        name=$(basename "$bin")
        log=$logdir/$name.log
        echo "==> $label: $name"
        timeout -k 10 "$timeout_s" "${wrapper[@]}" "$bin" </dev/null 2>&1 |
                tee "$log"
        rc=${PIPESTATUS[0]}

        note=""
        if ((tap)); then
                # TAP: "ok N - desc" / "not ok N - desc", plan "1..N".
                read -r passed failed skipped planned < <(awk '
                        /^not ok [0-9]+/                     { f += 1; next }
                        /^ok [0-9]+.*# *(SKIP|TODO)/         { s += 1; next }
                        /^ok [0-9]+/                         { p += 1; next }
                        /^1\.\.[0-9]+$/                       { sub(/^1\.\./, ""); n = $0 }
                        END { print p + 0, f + 0, s + 0, (n == "" ? -1 : n) }' "$log")
                if ((planned != passed + failed + skipped)); then
                        failed=$((failed + 1))
                        if ((planned < 0)); then
                                note+=" no plan (bailed out or died);"
                        else
                                note+=" plan says $planned;"
                        fi
                fi
        else
                # cmocka prints one summary per group: "[  PASSED  ] 3
                # test(s)." and, when some failed, "[  FAILED  ] 1 test(s),
                # listed below:". A failed group setup or teardown is not in
                # that count.
                read -r passed failed skipped < <(awk '
                        /^\[  PASSED  \] [0-9]+ test\(s\)\./             { p += $4 }
                        /^\[  FAILED  \] [0-9]+ test\(s\), listed below:/ { f += $4 }
                        /^\[  FAILED  \] GROUP (SETUP|TEARDOWN)$/         { f += 1 }
                        /^\[  SKIPPED \] [0-9]+ test\(s\), listed below:/ { s += $4 }
                        END { print p + 0, f + 0, s + 0 }' "$log")
        fi
        failed=$((failed + skipped))
        if ((skipped)); then
                note+=" $skipped skipped;"
        fi
        if ((rc == 124)); then
                note+=" timed out after ${timeout_s}s;"
        elif ((rc > 128)); then
                note+=" killed by signal $((rc - 128));"
        fi
        # memcheck's own summary, when the binary ran under valgrind.
        read -r vg_errors vg_lost < <(awk '
                /^==[0-9]+== ERROR SUMMARY: [0-9]+ errors/ { e += $4 }
                /^==[0-9]+== +definitely lost: [0-9,]+ bytes/ {
                        gsub(",", "", $4); l += $4 }
                END { print e + 0, l + 0 }' "$log")
        if ((vg_errors || vg_lost)); then
                note+=" valgrind: $vg_errors error(s), $vg_lost bytes definitely lost;"
                ((failed)) || failed=1
        fi
        if ((rc != 0 && failed == 0)); then
                failed=1
                note+=" exit status $rc without a failed test;"
        fi
        total_passed=$((total_passed + passed))
        total_failed=$((total_failed + failed))
        if ((failed)); then
                report+=("FAIL $name: $passed passed, $failed failed;$note log: $log")
        else
                report+=("ok   $name: $passed passed")
        fi
done

echo "$total_passed $total_failed" >"$logdir/counts"
echo
echo "---- $label summary ----"
printf '%s\n' "${report[@]}"
echo "$label: $total_passed passed, $total_failed failed"
((total_failed == 0))

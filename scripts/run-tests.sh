#!/usr/bin/env bash
# Run cmocka test binaries (or TAP scripts), several at once, and count
# their results.
#
#   scripts/run-tests.sh LABEL BINARY...
#       Runs up to TEST_JOBS binaries at a time (default 4; each makes its
#       own mock cluster on its own ephemeral port of 127.0.0.1), stdin
#       from /dev/null, TEST_TIMEOUT seconds each (default 300). A binary's
#       output goes to $BUILD_DIR/LABEL-logs/NAME.log and is printed in one
#       piece when the binary ends (TEST_OUTPUT=fail: only when it failed),
#       followed by one line "LABEL NAME: N passed, N failed, S s". At the
#       end: "LABEL: N passed, N failed"; the counts go to
#       $BUILD_DIR/LABEL-logs/counts and the seconds of each binary to
#       $BUILD_DIR/LABEL-logs/times. Exits 1 if anything failed.
#       TEST_WRAPPER, when set, is a command line put in front of each
#       binary (make test-valgrind: "valgrind --error-exitcode=99 ...").
#       TEST_SHARDS="NAME=N ..." splits binary NAME over N processes run
#       side by side (LAGPROBE_TEST_SHARD=I/N, see scripts/cmocka_declared.c),
#       each counted and reported as NAME:I/N, so that one slow binary does
#       not hold up the end of the run. Binaries start slowest first, by
#       the times of the previous run of the same LABEL, when there is one.
#       TEST_NICE="NAME ..." runs those binaries or scripts at nice 10:
#       ones that burn CPU without timing anything (a compile, a stress
#       loop), so that the tests that time the mock cluster's timers keep
#       the CPU when everything runs at once.
#       A binary for which memcheck reports errors or memory "definitely
#       lost" counts as failed even when all its tests passed.
#   scripts/run-tests.sh --tap LABEL SCRIPT...
#       The same for scripts that print TAP (end-to-end tests): each
#       "ok N - ..." line is a passed test, each "not ok N - ..." a failed
#       one, "# SKIP" and "# TODO" count as failed. A script must end with
#       its plan "1..N"; a missing or short plan ("Bail out!", a crash, a
#       timeout) counts one failed test more.
#   scripts/run-tests.sh --total [LABEL...]
#       Adds up the counts of each LABEL's run ($BUILD_DIR/LABEL-logs/counts;
#       no LABEL: every $BUILD_DIR/*-logs/counts), prints the five slowest
#       binaries of those runs and then "N passed, N failed" as its last
#       line; before them each failed binary's line again with the lines
#       of its log that say why (cmocka's failed tests and errors, the
#       tests' "FAIL: ..." lines, sanitizer and memcheck reports), so that
#       a CI log that keeps only its tail still names them. Exits 1 if
#       anything failed or no counts exist. A LABEL whose counts are
#       missing (its runner never ran or died) counts one failed test.
#
# Every test is known and counted. Each test binary is linked with
# scripts/cmocka_declared.c, which prints "[ DECLARED ] N test(s)" (the
# size of the group's test array) before cmocka runs the group; cmocka then
# prints "Running N test(s)" (what a filter such as HR_FILTER kept), "N
# test(s) run" and PASSED/FAILED/SKIPPED counts. A binary fails when it
# declares or runs 0 tests, or when fewer tests pass, fail or skip than it
# declares (a filter, a crash, a timeout): each missing test counts as
# failed. A binary with no "Running N test(s)" line at all counts one
# failed test. A binary that exits non-zero without cmocka reporting a
# failed test (a crash, a timeout, a sanitizer report at exit) counts one
# failed test more. Skipped tests count as failed: the project allows none.
#
# When several runners run at once (make -j test), each prints a binary's
# output and line under a lock ($BUILD_DIR/.print.lock), so outputs never
# interleave.
set -uo pipefail

build_dir=${BUILD_DIR:-build}
timeout_s=${TEST_TIMEOUT:-300}
jobs=${TEST_JOBS:-4}
[[ $jobs =~ ^[1-9][0-9]*$ ]] || jobs=1
output=${TEST_OUTPUT:-all}
wrapper=()
if [[ -n ${TEST_WRAPPER:-} ]]; then
        read -r -a wrapper <<<"$TEST_WRAPPER"
fi

if [[ ${1:-} == --total ]]; then
        passed=0 failed=0 found=0
        shift
        if (($#)); then
                dirs=()
                for l in "$@"; do dirs+=("$build_dir/$l-logs"); done
        else
                dirs=("$build_dir"/*-logs)
        fi
        for f in "${dirs[@]/%//counts}"; do
                [[ -f $f ]] || continue
                read -r p q <"$f"
                passed=$((passed + p)) failed=$((failed + q)) found=1
        done
        ((found)) || failed=1
        for l in "$@"; do
                if [[ ! -f $build_dir/$l-logs/counts ]]; then
                        echo "$l: no results (the suite did not run)"
                        failed=$((failed + 1))
                fi
        done
        fails=$(cat "${dirs[@]/%//failures}" 2>/dev/null)
        if [[ -n $fails ]]; then
                echo "failed:"
                printf '%s\n' "$fails" | head -n 120 | sed 's/^/  /'
        fi
        slow=$(cat "${dirs[@]/%//times}" 2>/dev/null | sort -k1,1nr | head -n 5)
        if [[ -n $slow ]]; then
                echo "slowest:"
                while read -r s l n; do
                        printf '  %6s s  %s %s\n' "$s" "$l" "$n"
                done <<<"$slow"
        fi
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
        echo "usage: $0 LABEL BINARY... | $0 --tap LABEL SCRIPT... | $0 --total [LABEL...]" >&2
        exit 2
fi
label=$1
shift
logdir=$build_dir/$label-logs
# The previous run's seconds per binary: start the slowest first.
declare -A prev_secs=()
if [[ -f $logdir/times ]]; then
        while read -r s _ n; do
                [[ $s =~ ^[0-9.]+$ ]] && prev_secs[$n]=$s
        done <"$logdir/times"
fi
rm -rf "$logdir"
mkdir -p "$logdir"
: >"$logdir/times"
# Until the end overwrites it: a runner that dies half-way (killed, a bug)
# must not leave a green total behind.
echo "0 1" >"$logdir/counts"
lock=$build_dir/.print.lock

export CMOCKA_MESSAGE_OUTPUT=stdout

# Prints stdin in one piece, under the lock shared by concurrent runners.
print_locked() {
        if command -v flock >/dev/null 2>&1; then
                flock "$lock" cat
        else
                cat
        fi
}

total_passed=0 total_failed=0
report=()
if (($# == 0)); then
        # A suite that runs nothing must not look green.
        total_failed=1
        report+=("FAIL (no test binaries)")
fi

# Counts one finished binary: sets passed, failed and note.
count() {
        local log=$1 rc=$2
        local skipped
        note=""
        if ((tap)); then
                # TAP: "ok N - desc" / "not ok N - desc", plan "1..N".
                local planned
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
                # Per group: "[ DECLARED ] 14 test(s) in tests." (ours),
                # "[==========] Running 14 test(s).", "[==========] 14
                # test(s) run.", "[  PASSED  ] 3 test(s)." and, when some
                # failed, "[  FAILED  ] 1 test(s), listed below:". A failed
                # group setup or teardown is not in that count.
                local declared running ran expected accounted
                read -r declared running ran passed failed skipped < <(awk '
                        /^\[ DECLARED \] [0-9]+ test\(s\)/                { d += $4; hd = 1 }
                        /^\[==========\] Running [0-9]+ test\(s\)\./       { r += $3; hr = 1 }
                        /^\[==========\] [0-9]+ test\(s\) run\./          { n += $2 }
                        /^\[  PASSED  \] [0-9]+ test\(s\)\./             { p += $4 }
                        /^\[  FAILED  \] [0-9]+ test\(s\), listed below:/ { f += $4 }
                        /^\[  FAILED  \] GROUP (SETUP|TEARDOWN)$/         { f += 1 }
                        /^\[  SKIPPED \] [0-9]+ test\(s\), listed below:/ { s += $4 }
                        END { print (hd ? d : -1), (hr ? r : -1), n + 0, p + 0, f + 0, s + 0 }' "$log")
                if ((running < 0)); then
                        failed=$((failed + 1))
                        note+=" no \"Running N test(s)\" line from cmocka;"
                else
                        expected=$running
                        if ((declared >= 0 && declared != running)); then
                                note+=" declares $declared test(s), $running selected (a *_FILTER set?);"
                                ((declared > expected)) && expected=$declared
                        fi
                        if ((ran != running)); then
                                note+=" $ran of $running test(s) run;"
                        fi
                        accounted=$((passed + failed + skipped))
                        if ((accounted < expected)); then
                                failed=$((failed + expected - accounted))
                                note+=" $((expected - accounted)) test(s) without a result;"
                        fi
                        if ((expected == 0)); then
                                failed=$((failed + 1))
                                note+=" 0 tests;"
                        fi
                fi
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
        local vg_errors vg_lost
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
}

declare -A job_name job_start job_log
running_jobs=0

# start BINARY NAME [SHARD]: NAME is what the lines and logs call it.
start() {
        local bin=$1 name=$2 shard=${3:-} log
        log=$logdir/${name//[:\/]/.}.log
        job_env=()
        [[ -z $shard ]] || job_env=(env "LAGPROBE_TEST_SHARD=$shard")
        [[ " ${TEST_NICE:-} " != *" ${name%%:*} "* ]] || job_env=(nice -n 10 "${job_env[@]}")
        (
                timeout -k 10 "$timeout_s" "${job_env[@]}" "${wrapper[@]}" "$bin" \
                        </dev/null >"$log" 2>&1
                echo $? >"$log.rc"
        ) &
        job_log[$!]=$log
        job_name[$!]=$name
        job_start[$!]=$EPOCHREALTIME
        running_jobs=$((running_jobs + 1))
}

# The lines of a failed binary's log that say why: the tests cmocka
# failed, its error lines, each H_FAIL "FAIL: ..." line with the three lines
# before it (the tests list the offending figures just above), TAP's "not
# ok" lines and memcheck's first error kinds; 30 lines at most, each cut at
# 300 characters.
failure_details() {
        {
                grep -a -E -B3 '^FAIL: ' "$1" | grep -a -v '^--$'
                grep -a -E '^\[ *(ERROR|FAILED|LINE) *\] (---|[A-Za-z_])|^not ok [0-9]|^==[0-9]+== (Invalid|Conditional|Use of|Syscall param|Mismatched|Source and destination|Argument)|^==[0-9]+== +definitely lost: [1-9]|^(WARNING: ThreadSanitizer|ERROR: AddressSanitizer|SUMMARY: )' "$1" |
                        grep -a -v -E '^\[  FAILED  \] [0-9]+ test\(s\)' | awk '!seen[$0]++'
        } 2>/dev/null | head -n 30 | cut -c1-300
}

# Waits for one job to end, prints its output and its line, counts it.
finish_one() {
        local pid="" name log rc secs line
        wait -n -p pid
        if [[ -z $pid ]]; then
                # No job left to wait for: cannot happen; do not spin.
                running_jobs=0
                total_failed=$((total_failed + 1))
                report+=("FAIL $label: lost track of a job")
                return
        fi
        [[ -n ${job_name[$pid]:-} ]] || return # not one of ours
        name=${job_name[$pid]}
        secs=$(awk -v a="${job_start[$pid]}" -v b="$EPOCHREALTIME" \
                'BEGIN { printf "%.1f", b - a }')
        log=${job_log[$pid]}
        unset "job_name[$pid]" "job_start[$pid]" "job_log[$pid]"
        running_jobs=$((running_jobs - 1))
        rc=$(cat "$log.rc" 2>/dev/null || echo 125)
        rm -f "$log.rc"
        count "$log" "$rc"
        total_passed=$((total_passed + passed))
        total_failed=$((total_failed + failed))
        echo "$secs $label $name" >>"$logdir/times"
        if ((failed)); then
                line="FAIL $label $name: $passed passed, $failed failed, $secs s;$note log: $log"
        else
                line="ok   $label $name: $passed passed, 0 failed, $secs s"
        fi
        if ((failed)); then
                report+=("$line")
                # What --total repeats at the end, where a CI log that
                # keeps only its head and tail still shows it.
                {
                        echo "$line"
                        failure_details "$log" | sed 's/^/    /'
                } >>"$logdir/failures"
        fi
        {
                if [[ $output == all ]] || ((failed)); then
                        echo "==> $label: $name"
                        cat "$log"
                fi
                echo "$line"
        } | print_locked
}

# The jobs: "SECONDS<TAB>BINARY<TAB>NAME<TAB>SHARD", slowest first (a
# binary not seen before counts as slow: it may be).
declare -A shards_of=()
for s in ${TEST_SHARDS:-}; do
        [[ $s =~ ^([^=]+)=([1-9][0-9]*)$ ]] && shards_of[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
done
job_list=()
for bin in "$@"; do
        name=$(basename "$bin")
        n=1
        ((tap)) || n=${shards_of[$name]:-1}
        if ((n == 1)); then
                job_list+=("${prev_secs[$name]:-99999}"$'\t'"$bin"$'\t'"$name"$'\t')
        else
                for ((i = 0; i < n; i++)); do
                        job_list+=("${prev_secs[$name:$i/$n]:-99999}"$'\t'"$bin"$'\t'"$name:$i/$n"$'\t'"$i/$n")
                done
        fi
done
# (No process substitution: wait -n below must see only our jobs.)
sorted=""
((${#job_list[@]} == 0)) || sorted=$(printf '%s\n' "${job_list[@]}" | sort -t $'\t' -k1,1gr -s)
while IFS=$'\t' read -r _ bin name shard; do
        [[ -n $bin ]] || continue
        while ((running_jobs >= jobs)); do
                finish_one
        done
        start "$bin" "$name" "$shard"
done <<<"$sorted"
while ((running_jobs > 0)); do
        finish_one
done

echo "$total_passed $total_failed" >"$logdir/counts"
{
        echo
        echo "---- $label summary ----"
        ((${#report[@]} == 0)) || printf '%s\n' "${report[@]}"
        echo "$label: $total_passed passed, $total_failed failed"
        echo
} | print_locked
((total_failed == 0))

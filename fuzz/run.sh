#!/usr/bin/env bash
# Replay the regression inputs of each libFuzzer target, then fuzz it.
#
#   fuzz/run.sh [-t SECONDS | -r EXECUTIONS] [TARGET...]
#
# TARGETs default to "stats render"; their binaries are $FUZZ_DIR/fuzz_NAME
# (FUZZ_DIR defaults to build/fuzz) and their seed corpora
# $FUZZ_DIR/corpus/NAME, both made by "make fuzz-build fuzz-corpus". Each
# target fuzzes for SECONDS or EXECUTIONS runs (defaults: $FUZZ_TIME, else
# 30 s; $FUZZ_RUNS when set). Output is TAP,
# two tests per target (regressions, fuzzing), so that "make test" counts
# it with scripts/run-tests.sh --tap; logs go to $FUZZ_DIR/*.log, findings
# to $FUZZ_DIR/artifacts/. Exit status 1 when anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."

fuzz_dir=${FUZZ_DIR:-build/fuzz}
secs=${FUZZ_TIME:-30} runs=${FUZZ_RUNS:-}
while getopts "t:r:" o; do
        case $o in
        t) secs=$OPTARG ;;
        r) runs=$OPTARG ;;
        *) echo "usage: $0 [-t SECONDS | -r EXECUTIONS] [TARGET...]" >&2; exit 2 ;;
        esac
done
shift $((OPTIND - 1))
targets=("$@")
((${#targets[@]})) || targets=(stats render http)

# Per target: libFuzzer options.
opts_stats=(-max_len=16384 -dict=fuzz/stats.dict)
opts_render=(-max_len=4096)
opts_http=(-max_len=9000)

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

n=0 bad=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
notok() { n=$((n + 1)); bad=1; echo "not ok $n - $*"; }

for t in "${targets[@]}"; do
        bin=$fuzz_dir/fuzz_$t
        if [[ ! -x $bin ]]; then
                notok "$t: $bin not built (make fuzz-build)"
                notok "$t: not fuzzed"
                continue
        fi
        # Regressions: every file once; all must pass.
        regs=(fuzz/regressions/"$t"/*)
        [[ -e ${regs[0]} ]] || regs=()
        log=$fuzz_dir/regress_$t.log
        if ((${#regs[@]} == 0)); then
                notok "$t: no regression inputs in fuzz/regressions/$t"
        elif "$bin" "${regs[@]}" >"$log" 2>&1; then
                ok "$t: ${#regs[@]} regression inputs replayed"
        else
                sed 's/^/# /' <(tail -n 40 "$log")
                notok "$t: a regression input fails (log $log)"
        fi

        # Fuzzing from the seed corpus; new inputs go to a work corpus.
        var="opts_$t[@]"
        work=$fuzz_dir/work/$t
        log=$fuzz_dir/fuzz_$t.log
        mkdir -p "$work" "$fuzz_dir/artifacts"
        if [[ -n $runs ]]; then
                budget=(-runs="$runs") what="$runs executions"
        else
                budget=(-max_total_time="$secs") what="$secs s"
        fi
        if "$bin" "${!var}" -artifact_prefix="$fuzz_dir/artifacts/$t-" \
                -print_final_stats=1 "${budget[@]}" \
                "$work" "$fuzz_dir/corpus/$t" >"$log" 2>&1; then
                execs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log")
                if [[ -n $runs ]]; then
                        ok "$t: fuzzed ${execs:-?} executions, nothing found"
                else
                        ok "$t: fuzzed $what, ${execs:-?} executions, nothing found"
                fi
        else
                grep -a -A30 -m1 -E "ERROR|runtime error|invariant" "$log" |
                        sed 's/^/# /'
                notok "$t: fuzzing ($what) found a failure; input in $fuzz_dir/artifacts/, log $log"
        fi
done
echo "1..$n"
exit "$bad"

#!/usr/bin/env bash
# End to end for C++ apps: runs examples/cpp_consumer (an
# RdKafka::KafkaConsumer with EventCb, RebalanceCb and OffsetCommitCb, the
# probe attached to conf->c_ptr_global() before KafkaConsumer::create()) on
# its embedded mock cluster, on 127.0.0.1 only, and reads the snapshot it
# prints. Bounded in time (90 s for the whole script).
#
#   tests/e2e_cpp.sh     (after `make all`; BUILD_DIR defaults to build)
#
# Output is TAP: one "ok N - ..." or "not ok N - ..." line per check and a
# final "1..N" plan; scripts/run-tests.sh --tap counts them. Exit status 0
# only when every check passed.
set -uo pipefail

if [[ -z ${LAGPROBE_E2E_BOUNDED:-} ]]; then
        LAGPROBE_E2E_BOUNDED=1 exec timeout -k 5 90 "$0" "$@"
fi

root=$(cd "$(dirname "$0")/.." && pwd)
# build, py, tmp (removed on exit), check and note; no server is started.
# shellcheck source=tests/lib_e2e.sh
. "$root/tests/lib_e2e.sh"
e2e_init e2e-cpp
bin=$build/examples/cpp_consumer

if [[ ! -x $bin ]]; then
        echo "Bail out! $bin missing (make all first)"
        exit 1
fi

# run NAME ARGS...: cpp_consumer with a 30 s bound; stdout to NAME.json,
# stderr to NAME.err. Succeeds when it exited 0.
run() {
        local name=$1
        shift
        timeout -k 5 30 "$bin" "$@" >"$tmp/$name.json" 2>"$tmp/$name.err"
}

# snapshot_ok NAME: one JSON document whose partitions all have a lag
# (not null), with at least one rebalance counted and a protocol.
snapshot_ok() {
        $py - "$tmp/$1.json" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
parts = doc["partitions"]
rb = doc["rebalances"]
ok = (len(parts) == 3
      and all(p["lag"] is not None and p["high_watermark"] is not None
              for p in parts)
      and rb["count"] >= 1 and rb["protocol"] in ("EAGER", "COOPERATIVE"))
if not ok:
    print("# partitions:", [(p["partition"], p["high_watermark"],
                             p["committed_offset"], p["lag"]) for p in parts])
    print("# rebalances:", rb)
sys.exit(0 if ok else 1)
EOF
}

# stderr_has NAME PATTERN: the run's stderr has a line matching PATTERN.
stderr_has() { grep -qE -- "$2" "$tmp/$1.err"; }

# The default run: 300 messages, consume 6 s, commit, print.
check "cpp_consumer runs on its mock cluster and exits 0" run plain -d 6
check "snapshot: every partition has a lag, rebalances.count >= 1" \
        snapshot_ok plain
check "the app's RebalanceCb and OffsetCommitCb were called" \
        stderr_has plain 'RebalanceCb [1-9][0-9]* assign.*OffsetCommitCb [1-9]'

# The probe attached after conf->set("event_cb"/"rebalance_cb"/...).
check "cpp_consumer -a (attach after the callbacks) exits 0" run last -a -d 6
check "snapshot with -a: every partition has a lag, rebalances.count >= 1" \
        snapshot_ok last

# A stall of 4.5 s against max.poll.interval.ms=6000: headroom_warn at 70 %.
check "cpp_consumer -s 4500 -m 6000 exits 0" run stall -s 4500 -m 6000 -d 10
check "the stall printed a headroom_warn from the probe" \
        stderr_has stall '^\[lagprobe\] headroom_warn: '

if ((failed)); then
        for f in "$tmp"/*.err; do
                note "$(basename "$f") (last 15 lines):"
                tail -n 15 "$f" | sed 's/^/#   /'
        done
fi
echo "1..$n"
echo "# e2e_cpp: $((n - failed)) passed, $failed failed"
((failed == 0))

#!/usr/bin/env bash
# Zero-code mode end to end in Python: tests/plugin_python_app.py, a
# program on Debian's python3-confluent-kafka whose only lagprobe lines are
# the two properties in its Consumer config (plus lagprobe.log), with its
# own on_assign and stats_cb, against a mock cluster in its own process.
# Checks: the lag the plugin reports equals the committed/log-end figures
# the program reads itself; a second member joining and leaving is counted
# exactly as the program's on_assign saw it; the program's callbacks still
# run; /metrics with two consumers in one process is promtool-clean; a
# headroom warning reaches the log before librdkafka evicts the stalled
# program. 127.0.0.1 only, 90 s at most.
#
#   tests/e2e_plugin_python.sh    (after make test-build-e2e; BUILD_DIR)
#
# Output is TAP; exit status 0 only when every check passed.
set -uo pipefail

if [[ -z ${LAGPROBE_E2E_BOUNDED:-} ]]; then
        LAGPROBE_E2E_BOUNDED=1 exec timeout -k 5 90 "$0" "$@"
fi

root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/tests/lib_e2e.sh"
. "$root/tests/lib_plugin.sh"
plugin_start e2e-plugin-python

topic=plugin.python-1
group=plugin-python-group
check "mock cluster up on 127.0.0.1" start_mock "$topic" 4 402
bail_if_failed "no mock cluster ($mock_bin)"

port=$(free_port)
facts=$tmp/facts.json
log=$tmp/events.jsonl
check "the Python program ran to its end (Debian's $dpy)" \
        timeout 75 "$dpy" "$root/tests/plugin_python_app.py" "$boot" "$topic" \
        "$group" "$port" "$log" "$plugin_so" "$facts" 2>"$tmp/python.err"
bail_if_failed "$(tail -n 5 "$tmp/python.err" | tr '\n' '|')"
sed 's/^/#   /' "$facts"
echo

fact() { json_ok "$facts" "$1"; }
check "it consumed every partition to the end and /lag showed its commits" \
        fact 'd["consumed_to_end"] and d["lag_settled"]'
check "lag exact: the plugin's lag equals log end - committed read by the program, 7 each" \
        fact 'd["lag_plugin"] == d["lag_independent"] and set(d["lag_plugin"].values()) == {7} and len(d["lag_plugin"]) == 4'
check "a second member joined: /lag listed both consumers of the process" \
        fact 'd["two_members"] and d["lag_two_consumers"]'
promtool_ok() {
        "$promtool_bin" check metrics <"$facts.metrics" >"$tmp/promtool.out" 2>&1 ||
                { sed 's/^/#   /' "$tmp/promtool.out"; return 1; }
}
check "/metrics with two consumers in one process is promtool-clean" promtool_ok
check "... one HELP/TYPE per family, no duplicate series, lagprobe_* labelled per consumer" \
        $py - "$facts.metrics" <<'EOF'
import re, sys
t = open(sys.argv[1]).read()
types = re.findall(r"^# TYPE (\S+) ", t, re.M)
series = [l.rsplit(" ", 1)[0] for l in t.splitlines() if l and not l.startswith("#")]
consumers = set(re.findall(r'^lagprobe_\w+\{consumer="([^"]+)"', t, re.M))
unlabelled = [s for s in series if s.startswith("lagprobe_") and 'consumer="' not in s]
ok = (len(types) == len(set(types)) > 10 and len(series) == len(set(series))
      and len(consumers) == 2 and not unlabelled)
if not ok:
    print("#   families %d (%d distinct), series %d (%d distinct), consumers %s, unlabelled %s"
          % (len(types), len(set(types)), len(series), len(set(series)), consumers, unlabelled[:3]))
sys.exit(0 if ok else 1)
EOF
check "the member left: the program's consumer was reassigned everything" \
        fact 'd["member_left"] and d["lag_one_consumer"]'
check "rebalances counted: the probe's assigns equal the program's on_assign calls" \
        fact 'd["assign_calls"] >= 3 and d["probe_assigns"] == d["assign_calls"]'
check "... and its revokes equal the program's on_revoke calls" \
        fact 'd["revoke_calls"] >= 2 and d["probe_revokes"] == d["revoke_calls"]'
check "the program's own stats_cb kept being called (both consumers)" \
        fact 'd["stats_calls"] >= 5 and d["stats_calls_2"] >= 1'
check "the stall past max.poll.interval.ms evicted it: poll returned _MAX_POLL_EXCEEDED, the probe counted it" \
        fact 'd["max_poll_error"] and d["probe_evictions"] >= 1'

# The JSON-lines log (lagprobe.log=jsonl:PATH): a headroom_warn of the
# stalled consumer, stamped before its evicted event.
warn_before_evict() {
        $py - "$log" "$facts" <<'EOF'
import json, sys
events = [json.loads(l) for l in open(sys.argv[1])]
start = json.load(open(sys.argv[2]))["stall_start_ms"]
warn = [e["ts_ms"] for e in events if e["event"] == "headroom_warn" and e["ts_ms"] >= start - 1000]
evict = [e["ts_ms"] for e in events if e["event"] == "evicted"]
print("#   headroom_warn at", warn, "evicted at", evict, "stall from", start)
sys.exit(0 if warn and evict and min(warn) < min(evict) else 1)
EOF
}
check "lagprobe.log=jsonl: a headroom_warn line before the evicted line" warn_before_evict
check "every log line is one JSON object with event, severity, group_id and message" \
        $py -c 'import json,sys; ev=[json.loads(l) for l in open(sys.argv[1])]; sys.exit(0 if ev and all({"event","severity","group_id","message","ts_ms"} <= set(e) for e in ev) else 1)' "$log"

# Every lagprobe.* property, good and bad values, through the binding.
"$dpy" "$root/tests/plugin_conf_check.py" "$boot" "$plugin_so" >"$tmp/conf.out" 2>"$tmp/conf.err"
while read -r verdict rest; do
        [[ $verdict == FAIL ]] && note "${rest#*: }"
        check "property: ${rest%%: *}" test "$verdict" = PASS
done < <(grep -E '^(PASS|FAIL) ' "$tmp/conf.out")
check "property: every case ran" test "$(grep -cE '^(PASS|FAIL) ' "$tmp/conf.out")" -ge 40

plugin_end e2e_plugin_python "$tmp/python.err"

#!/usr/bin/env bash
# Zero-code mode end to end for a C program: tests/plugin_app.c, a plain
# librdkafka consumer, run twice side by side on the same mock cluster
# data: once with the probe vendored (lagprobe_attach()), once with only
# the two plugin properties. The figures must be the same. Then the HTTP
# listener takes a battery of bad and hostile requests
# (tests/plugin_http_battery.py) and must still answer; a third run, with
# a producer in the same process and the consumer made from a conf copy,
# writes the snapshot file and opens no socket; an rdkafkacpp consumer
# (tests/plugin_app_cpp.cpp) keeps the plugin and its own callbacks. Also:
# lagprobe.so exports conf_init only. 127.0.0.1 only, 120 s at most.
#
#   tests/e2e_plugin_c.sh    (after make test-build-e2e; BUILD_DIR)
#
# Output is TAP; exit status 0 only when every check passed.
set -uo pipefail

if [[ -z ${LAGPROBE_E2E_BOUNDED:-} ]]; then
        LAGPROBE_E2E_BOUNDED=1 exec timeout -k 5 120 "$0" "$@"
fi

root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/tests/lib_e2e.sh"
. "$root/tests/lib_plugin.sh"
plugin_start e2e-plugin-c
app=$build/plugin/plugin_app
[[ -x $app ]] || { echo "Bail out! $app missing (make test-build-e2e)"; exit 1; }

topic=plugin.c_1
commit_at=40

exports() {
        local syms
        syms=$(nm -D --defined-only "$plugin_so" | awk '{print $3}' | sort | tr '\n' ' ')
        [[ $syms == "conf_init " ]] || { note "exported: $syms"; return 1; }
}
check "lagprobe.so exports conf_init and nothing else" exports

check "mock cluster up on 127.0.0.1" start_mock "$topic" 3 301
bail_if_failed "no mock cluster ($mock_bin)"

# run_cmd NAME COMMAND...: in the background, its stdin from $tmp/NAME.in
# (held open on a new fd), stdout to NAME.out, stderr NAME.err.
# run_app NAME ARGS...: run_cmd with plugin_app on the mock cluster's topic.
declare -A app_pid app_fd
run_app() {
        local name=$1
        shift
        run_cmd "$name" "$app" -b "$boot" -t "$topic" "$@"
}
run_cmd() {
        local name=$1 fd
        shift
        mkfifo "$tmp/$name.in"
        # Without the other runs' command fds: each must see its own EOF.
        (
                for fd in "${app_fd[@]}"; do exec {fd}>&-; done
                exec "$@" <"$tmp/$name.in" >"$tmp/$name.out" 2>"$tmp/$name.err"
        ) &
        app_pid[$name]=$!
        bg_pids+=" $!"
        exec {fd}>"$tmp/$name.in"
        app_fd[$name]=$fd
}

port=$(free_port)
base=http://127.0.0.1:$port
run_app vendored -g plugin-c-vendored -c "$commit_at" -v
run_app plugin -g plugin-c-plugin -c "$commit_at" \
        -X plugin.library.paths="$plugin_so" -X lagprobe.http.listen=127.0.0.1:"$port"

# The vendored probe's snapshot, asked on stdin, answered on stdout.
vendored_snap() {
        echo snap >&"${app_fd[vendored]}"
        sleep 0.2
        tail -n 1 "$tmp/vendored.out" >"$tmp/vendored.json"
}
settled_expr='len(P) == 3 and sum(p["high_watermark"] or 0 for p in P) == 301 and all(
    p["position"] == p["high_watermark"] and p["committed_offset"] == '"$commit_at"'
    for p in P)'
vendored_settled() {
        vendored_snap && json_ok "$tmp/vendored.json" "[P := d['partitions']] and ($settled_expr)"
}
plugin_settled() {
        [[ $(get "$base/lag" "$tmp/lag.json") == "200 application/json" ]] &&
                json_ok "$tmp/lag.json" "len(d['consumers']) == 1 and [P := d['consumers'][0]['partitions']] and ($settled_expr)"
}
check "vendored probe: every partition consumed to its end, committed at $commit_at" \
        wait_for 30 vendored_settled
check "plugin (two properties only): the same state in /lag" wait_for 30 plugin_settled
bail_if_failed "the two runs did not settle"

same_figures() {
        $py - "$tmp/vendored.json" "$tmp/lag.json" <<'EOF'
import json, sys
v = json.load(open(sys.argv[1]))
p = json.load(open(sys.argv[2]))["consumers"][0]
keys = ("topic", "partition", "high_watermark", "low_watermark", "committed_offset",
        "lag", "position", "position_lag", "consumed", "fetchq_cnt")
def parts(d):
    return [tuple(x[k] for k in keys) for x in d["partitions"]]
def summary(d):
    r = d["rebalances"]
    return (r["assigns"], r["revokes"], r["lost"], r["assignment_size"], r["protocol"],
            d["max_poll_interval_ms"], d["session_timeout_ms"], d["consumed"],
            d["commits"]["errors"], d["stats"]["errors"], d["stats"]["field_errors"],
            d["poll"]["evictions"], d["processing"]["source"]["message"])
ok = parts(v) == parts(p) and summary(v) == summary(p)
for name, a, b in (("partitions", parts(v), parts(p)), ("summary", summary(v), summary(p))):
    if a != b:
        print("#   %s vendored %s" % (name, a))
        print("#   %s plugin   %s" % (name, b))
sys.exit(0 if ok else 1)
EOF
}
check "same figures: partitions (watermarks, committed, lag, position, consumed), rebalances, limits" \
        same_figures
check "the probe bound inside rd_kafka_new() (no 'did not bind' line)" \
        eval '! grep -q "did not bind" "$tmp/plugin.err"'

# ---- the HTTP listener under bad requests ------------------------------------
"$dpy" "$root/tests/plugin_http_battery.py" "$port" >"$tmp/battery.out" 2>&1
while read -r verdict rest; do
        name=${rest%%: *}
        [[ $verdict == FAIL ]] && note "${rest#*: }"
        check "http: $name" test "$verdict" = PASS
done < <(grep -E '^(PASS|FAIL) ' "$tmp/battery.out")
check "http: the battery ran all its cases" test "$(grep -cE '^(PASS|FAIL) ' "$tmp/battery.out")" -ge 30
check "http: after the battery the consumer is alive and /healthz answers 200" \
        eval '[[ $(get "$base/healthz" "$tmp/h.txt") == 200* ]] && kill -0 ${app_pid[plugin]}'
check "http: only 127.0.0.1 listens (the default host)" \
        test "$(ss -H -ltnp 2>/dev/null | grep "pid=${app_pid[plugin]}," | awk '{print $4}')" = "127.0.0.1:$port"

# Out of file descriptors, accept() keeps failing on a readable listener:
# the service thread must not spin. The limit is lowered on the running
# process (prlimit), 10 clients connect, its CPU time is read over 2 s.
no_spin() {
        local pid=${app_pid[plugin]} nfd soft
        nfd=$(ls "/proc/$pid/fd" | wc -l)
        soft=$(prlimit --nofile --pid "$pid" -o SOFT --noheadings | tr -d ' ')
        prlimit --nofile=$((nfd + 4)): --pid "$pid" || return 1
        "$dpy" - "$pid" "$port" <<'EOF'
import os, socket, sys, time
pid, port = sys.argv[1], int(sys.argv[2])
def cpu():
    f = open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / float(os.sysconf("SC_CLK_TCK"))
idle = [socket.create_connection(("127.0.0.1", port), timeout=2) for _ in range(10)]
time.sleep(0.5)
c0 = cpu()
time.sleep(2)
used = cpu() - c0
for s in idle:
    s.close()
print("#   CPU seconds in 2 s with descriptors exhausted: %.2f" % used)
sys.exit(0 if used < 0.5 else 1)
EOF
        local rc=$?
        prlimit --nofile="$soft": --pid "$pid" || return 1
        return $rc
}
if command -v prlimit >/dev/null; then
        check "http: out of descriptors, the listener does not spin" no_spin
        check "http: ... and answers again once descriptors are back" \
                wait_for 8 eval '[[ $(get "$base/healthz" "$tmp/h.txt") == 200* ]]'
fi

# The port is taken (by the plugin run): a consumer asking for it says so on
# stderr and runs without an endpoint.
run_app busy -g plugin-c-busy -X plugin.library.paths="$plugin_so" \
        -X lagprobe.http.listen=127.0.0.1:"$port"
busy_said() {
        grep -q "lagprobe: no HTTP endpoint for group=plugin-c-busy: lagprobe.http.listen=127.0.0.1:$port: cannot listen" \
                "$tmp/busy.err" && kill -0 "${app_pid[busy]}"
}
check "port in use: one lagprobe line on stderr naming it, the consumer runs on" \
        wait_for 10 busy_said
check "... and the endpoint still shows only the plugin run's consumer" \
        eval '[[ $(get "$base/lag" "$tmp/lag2.json") == 200* ]] && json_ok "$tmp/lag2.json" "len(d[\"consumers\"]) == 1"'

# ---- producer in the same process, consumer from a conf copy, file output ----
snap=$tmp/snapshot.json
run_app quiet -g plugin-c-quiet -c "$commit_at" -P plugin.c_out \
        -X plugin.library.paths="$plugin_so" -X lagprobe.log=none \
        -X lagprobe.snapshot.path="$snap" -X lagprobe.snapshot.interval.ms=200
snap_settled() {
        json_ok "$snap" "len(d['consumers']) == 1 and [P := d['consumers'][0]['partitions']] and ($settled_expr)"
}
check "snapshot file: the consumer (made by rd_kafka_conf_dup()) settled, one consumer though a producer shares the conf" \
        wait_for 30 snap_settled
check "... the producer got no probe: the file names a consumer only" \
        json_ok "$snap" '"consumer" in d["consumers"][0]["name"]'
check "... no temporary file left beside it (written by rename)" \
        eval '[[ -z $(find "$tmp" -name "snapshot.json.tmp*") ]]'
check "... no listening socket without lagprobe.http.listen" \
        test "$(listening_sockets "${app_pid[quiet]}")" = 0
check "... lagprobe.log=none: no event line on stderr" \
        eval '! grep -q "lagprobe event=" "$tmp/quiet.err"'

# A snapshot write that never returns (a FIFO where the temporary file
# goes: open() blocks) must not hold up rd_kafka_destroy(): the service
# thread is waited for 2 s, then left behind.
run_app stuck -g plugin-c-stuck -X plugin.library.paths="$plugin_so" \
        -X lagprobe.log=none -X lagprobe.snapshot.path="$tmp/stuck.json" \
        -X lagprobe.snapshot.interval.ms=1000
mkfifo "$tmp/stuck.json.tmp${app_pid[stuck]}"
# "ready" comes after rd_kafka_new(), so after on_new: the first snapshot is
# due 1 s later.
wait_for 20 grep -q '^ready$' "$tmp/stuck.out"
sleep 2.5
stuck_exits() {
        local pid=${app_pid[stuck]} fd=${app_fd[stuck]} t0=$SECONDS
        exec {fd}>&-
        wait_for 8 eval "! kill -0 $pid 2>/dev/null" && wait "$pid" &&
                grep -q 'lagprobe: service thread stuck (snapshot write?): left behind' "$tmp/stuck.err" ||
                return 1
        note "exited $((SECONDS - t0)) s after EOF"
}
check "a snapshot write stuck for good: the consumer still closes and exits 0, saying so" stuck_exits

# ---- C++: KafkaConsumer::create() sets its callbacks, then copies the conf ----
cpp_port=$(free_port)
run_cmd cpp "$build/plugin/plugin_app_cpp" "$boot" plugin-c-cpp "$topic" \
        plugin.library.paths="$plugin_so" lagprobe.http.listen=127.0.0.1:"$cpp_port"
cpp_settled() {
        [[ $(get "http://127.0.0.1:$cpp_port/lag" "$tmp/cpp.json") == 200* ]] &&
                json_ok "$tmp/cpp.json" "len(d['consumers']) == 1 and [P := d['consumers'][0]['partitions']] and len(P) == 3 and sum(p['high_watermark'] or 0 for p in P) == 301 and all(p['position'] == p['high_watermark'] for p in P)"
}
check "C++ (rdkafkacpp, conf duplicated by create()): the plugin watches it, all consumed" \
        wait_for 30 cpp_settled
cpp_callbacks() {
        local fd=${app_fd[cpp]} line
        exec {fd}>&-
        wait_for 10 eval "! kill -0 ${app_pid[cpp]} 2>/dev/null" && wait "${app_pid[cpp]}" ||
                return 1
        line=$(tail -n 1 "$tmp/cpp.out")
        note "C++ app: $line; probe: $($py -c 'import json,sys; print(json.load(open(sys.argv[1]))["consumers"][0]["rebalances"]["assigns"])' "$tmp/cpp.json") assigns"
        [[ $line =~ ^stats=([0-9]+)\ assigns=([0-9]+)$ ]] && ((BASH_REMATCH[1] > 0)) &&
                json_ok "$tmp/cpp.json" "d['consumers'][0]['rebalances']['assigns'] == ${BASH_REMATCH[2]}"
}
check "... its EventCb got statistics, its RebalanceCb's assigns equal the probe's; exits 0" \
        cpp_callbacks

# ---- shutdown: EOF on stdin, each exits 0 within 10 s ---------------------------
exits_ok() { # NAME
        local pid=${app_pid[$1]} fd=${app_fd[$1]}
        exec {fd}>&-
        wait_for 10 eval "! kill -0 $pid 2>/dev/null" && wait "$pid"
}
check "plugin run (listener, shared consumer registry) closes and exits 0" exits_ok plugin
check "vendored run exits 0" exits_ok vendored
check "run without its endpoint (port in use) exits 0" exits_ok busy
check "producer + consumer run exits 0" exits_ok quiet

plugin_end e2e_plugin_c "$tmp/plugin.err"

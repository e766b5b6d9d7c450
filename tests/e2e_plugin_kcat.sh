#!/usr/bin/env bash
# Zero-code mode end to end with Debian's kcat: the plugin loaded by two -X
# properties, nothing else changed. A mock cluster in its own process
# (bench/mock_broker), kcat consuming from it as a group member, a real
# Prometheus scraping the plugin's /metrics, promtool, and the group's
# offsets read independently (tests/plugin_kafka.py, confluent-kafka
# without the plugin). Then kcat is stalled: its output pipe stops being
# read, so it blocks in write() between two polls, as an app stuck in its
# processing does; /healthz must say 503 once the probe's critical share of
# max.poll.interval.ms has passed (lagprobe.critical.ratio, set through kcat
# like any property), and 200 again once it resumes. The stall ends before
# librdkafka's eviction: kcat exits on that error, with or without -E and
# with or without the plugin (tests/e2e_plugin_python.sh covers an
# eviction). Everything on 127.0.0.1, bounded in
# time (90 s for the whole script).
#
#   tests/e2e_plugin_kcat.sh    (after make test-build-e2e; BUILD_DIR)
#
# Output is TAP; exit status 0 only when every check passed.
set -uo pipefail

if [[ -z ${LAGPROBE_E2E_BOUNDED:-} ]]; then
        LAGPROBE_E2E_BOUNDED=1 exec timeout -k 5 90 "$0" "$@"
fi

root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/tests/lib_e2e.sh"
. "$root/tests/lib_plugin.sh"
plugin_start e2e-plugin-kcat
if ! command -v kcat >/dev/null; then
        echo "Bail out! no kcat (Debian package kcat; make deps)"
        exit 1
fi

topic=plugin.kcat_1
partitions=3
produced=301 # 101, 100, 100: the partitions differ
group=plugin-kcat-group
max_poll_ms=10000 # critical at 50 %: 5 s of stall

check "mock cluster up on 127.0.0.1" start_mock "$topic" "$partitions" "$produced"
bail_if_failed "no mock cluster ($mock_bin)"

# ---- 1. properties: a bad one fails rd_kafka_conf_set(), and kcat with it --
# conf_fails PROPERTY=VALUE TEXT: kcat refuses to start and says TEXT.
conf_fails() {
        local out rc
        out=$(timeout 10 kcat -C -G g -b "$boot" -X plugin.library.paths="$plugin_so" \
                -X "$1" "$topic" 2>&1 </dev/null)
        rc=$?
        [[ $rc != 0 && $rc != 124 && $out == *"$2"* ]] ||
                { note "kcat -X $1: status $rc: ${out:0:300}"; return 1; }
}
check "unknown lagprobe.* property: kcat fails, message names it" \
        conf_fails lagprobe.no.such=1 'no such configuration property "lagprobe.no.such"'
check "out-of-range lagprobe.warn.ratio: kcat fails, message gives the range" \
        conf_fails lagprobe.warn.ratio=1.5 'lagprobe.warn.ratio=1.5 out of range'
check "non-numeric lagprobe.window.ms: kcat fails" \
        conf_fails lagprobe.window.ms=10s 'invalid value "10s" for lagprobe.window.ms'
check "lagprobe.http.listen with a host name: kcat fails" \
        conf_fails lagprobe.http.listen=example.com:80 'numeric address or localhost'
check "unknown lagprobe.log sink: kcat fails" \
        conf_fails lagprobe.log=file 'expected stderr, syslog, none or jsonl:PATH'
before_plugin_fails() {
        local out rc
        out=$(timeout 10 kcat -C -G g -b "$boot" -X lagprobe.window.ms=6000 \
                -X plugin.library.paths="$plugin_so" "$topic" 2>&1 </dev/null)
        rc=$?
        [[ $rc != 0 && $rc != 124 && $out == *'No such configuration property: "lagprobe.window.ms"'* ]]
}
check "lagprobe.* set before plugin.library.paths: librdkafka's own refusal" before_plugin_fails

# A producer with the plugin and a listener configured is left alone: no
# probe, no listener, its messages delivered.
produce_alone() {
        printf 'p1\np2\n' | timeout 20 kcat -P -b "$boot" -t plugin.kcat_out \
                -X plugin.library.paths="$plugin_so" \
                -X lagprobe.http.listen=127.0.0.1:"$(free_port)" 2>"$tmp/producer.err" &&
                ! grep -q 'lagprobe' "$tmp/producer.err"
}
check "kcat -P with the plugin: delivered, no lagprobe line, no listener" produce_alone

# ---- 2. kcat with the plugin ------------------------------------------------
port=$(free_port)
base=http://127.0.0.1:$port
mkfifo "$tmp/kcat.pipe"
cat "$tmp/kcat.pipe" >"$tmp/messages" &
reader_pid=$!
bg_pids+=" $reader_pid"
kcat -C -G "$group" -b "$boot" \
        -X plugin.library.paths="$plugin_so" \
        -X lagprobe.http.listen=127.0.0.1:"$port" \
        -X statistics.interval.ms=500 -X session.timeout.ms=6000 \
        -X heartbeat.interval.ms=1500 -X max.poll.interval.ms="$max_poll_ms" \
        -X auto.commit.interval.ms=200 -X auto.offset.reset=earliest \
        -X lagprobe.warn.ratio=0.3 -X lagprobe.critical.ratio=0.5 \
        "$topic" >"$tmp/kcat.pipe" 2>"$tmp/kcat.err" &
kcat_pid=$!
bg_pids+=" $kcat_pid"
note "kcat pid $kcat_pid, plugin on $base"

settled() {
        [[ $(get "$base/lag" "$tmp/lag.json") == "200 application/json" ]] &&
                json_ok "$tmp/lag.json" 'len(d["consumers"]) == 1 and
len(d["consumers"][0]["partitions"]) == '"$partitions"' and
sum(p["high_watermark"] for p in d["consumers"][0]["partitions"]) == '"$produced"' and
all(p["position"] == p["high_watermark"] == p["committed_offset"]
    for p in d["consumers"][0]["partitions"])'
}
check "/lag: kcat consumed every partition to its end and committed it" \
        wait_for 30 settled
((last_ok)) || $py -c 'import json,sys; d=json.load(open(sys.argv[1])); [print("#  ", p["partition"], p["high_watermark"], p["position"], p["committed_offset"]) for c in d["consumers"] for p in c["partitions"]]' "$tmp/lag.json"
bail_if_failed "kcat with the plugin never settled"

check "kcat's stderr has the plugin's own line and its rebalance event" \
        grep -q "lagprobe: HTTP on 127.0.0.1:$port" "$tmp/kcat.err"
check "one listening socket in kcat's process: the plugin's, on 127.0.0.1" \
        test "$(ss -H -ltnp 2>/dev/null | grep "pid=$kcat_pid," | awk '{print $4}')" = "127.0.0.1:$port"

# ---- 3. /metrics against the group's offsets read independently ------------
check "the group's committed offsets and log end offsets, read without the plugin" \
        eval 'kafka offsets "$boot" "$group" "$topic" "$partitions" >"$tmp/indep.json"'
st=$(get "$base/metrics" "$tmp/metrics.txt")
check "/metrics answers 200 text/plain; version=0.0.4" \
        test "${st%%;*}" = "200 text/plain"
promtool_ok() {
        "$promtool_bin" check metrics <"$tmp/metrics.txt" >"$tmp/promtool.out" 2>&1 ||
                { sed 's/^/#   /' "$tmp/promtool.out"; return 1; }
}
check "promtool check metrics accepts /metrics" promtool_ok

# same_as_indep FILE: kafka_consumergroup_lag and _current_offset in the
# exposition text FILE equal the independent figures, partition by partition.
same_as_indep() {
        $py - "$1" "$tmp/indep.json" "$group" "$topic" <<'EOF'
import json, re, sys
text, indep, group, topic = open(sys.argv[1]).read(), json.load(open(sys.argv[2])), sys.argv[3], sys.argv[4]
got = {}
for fam, g, t, p, v in re.findall(
        r'^(kafka_consumergroup_(?:lag|current_offset))\{consumergroup="([^"]*)",topic="([^"]*)",partition="(\d+)"\} (\S+)$',
        text, re.M):
    if g == group and t == topic:
        got[(fam, p)] = float(v)
want = {}
for p, o in indep.items():
    want[("kafka_consumergroup_lag", p)] = float(o["lag"])
    want[("kafka_consumergroup_current_offset", p)] = float(o["committed"])
if got != want:
    print("#   plugin:", sorted(got.items()))
    print("#   independent:", sorted(want.items()))
sys.exit(0 if got == want and len(want) == 6 else 1)
EOF
}
check "kafka_consumergroup_lag and _current_offset equal committed/log-end read independently" \
        same_as_indep "$tmp/metrics.txt"

# ---- 4. a real Prometheus ---------------------------------------------------
start_prometheus "$port"
check "Prometheus is ready" wait_for 15 prom_ready
# prom_as_text: what Prometheus stored, back in exposition form.
prom_same() {
        query '{__name__=~"kafka_consumergroup_lag|kafka_consumergroup_current_offset"}' \
                "$tmp/q.json" || return 1
        $py - "$tmp/q.json" >"$tmp/prom.txt" <<'EOF' || return 1
import json, sys
d = json.load(open(sys.argv[1]))
if d.get("status") != "success":
    sys.exit(1)
for r in d["data"]["result"]:
    m = r["metric"]
    print('%s{consumergroup="%s",topic="%s",partition="%s"} %s' % (
        m["__name__"], m["consumergroup"], m["topic"], m["partition"], r["value"][1]))
EOF
        same_as_indep "$tmp/prom.txt" >/dev/null
}
check "Prometheus scraped the plugin: its kafka_consumergroup_lag equals the independent figures" \
        wait_for 15 prom_same

# ---- 5. /healthz through a stall ---------------------------------------------
healthz_is() { # STATUS
        local st
        st=$(get "$base/healthz" "$tmp/healthz.txt")
        [[ ${st%% *} == "$1" ]]
}
check "/healthz answers 200 while kcat polls" healthz_is 200

# Stop reading kcat's output and give it more than the pipe holds: kcat
# blocks in write(), outside any poll call.
kill -STOP "$reader_pid"
kafka produce "$boot" "$topic" 2000 200 # 400 KB: far more than the pipe holds
stall_start=$SECONDS
check "/healthz answers 503 while kcat is stuck between polls" \
        wait_for $((max_poll_ms / 2000 + 4)) healthz_is 503
note "503 after about $((SECONDS - stall_start)) s; body: $(head -c 200 "$tmp/healthz.txt" | tr '\n' '|')"
check "the 503 body says unhealthy: headroom_critical" \
        grep -q '^unhealthy: .*headroom_critical' "$tmp/healthz.txt"
# The verdict turns when /healthz is read; the headroom_critical event
# comes with the watchdog's next pass (every 100 ms): wait for its count
# before resuming, far from the eviction at 10 s.
crit_counted() {
        get "$base/lag" "$tmp/lag_stall.json" >/dev/null &&
                json_ok "$tmp/lag_stall.json" 'd["consumers"][0]["events"]["headroom_critical"] >= 1'
}
check "/lag counted the headroom_critical event during the stall" wait_for 2 crit_counted
kill -CONT "$reader_pid"
check "/healthz answers 200 again once kcat polls" wait_for 10 healthz_is 200
not_evicted() {
        get "$base/lag" "$tmp/lag_after.json" >/dev/null &&
                json_ok "$tmp/lag_after.json" 'd["consumers"][0]["poll"]["evictions"] == 0'
}
check "... resumed before max.poll.interval.ms: no eviction" not_evicted

# ---- 6. no listener without lagprobe.http.listen ------------------------------
kcat -C -G "$group-quiet" -b "$boot" -X plugin.library.paths="$plugin_so" \
        -X statistics.interval.ms=500 "$topic" >/dev/null 2>"$tmp/quiet.err" &
quiet_pid=$!
bg_pids+=" $quiet_pid"
active() { grep -q 'lagprobe event=rebalance' "$tmp/quiet.err"; }
check "without lagprobe.http.listen the plugin still watches (its rebalance event on stderr)" \
        wait_for 20 active
check "... and kcat's process holds no listening socket" \
        test "$(listening_sockets "$quiet_pid")" = 0

# ---- 7. shutdown ----------------------------------------------------------------
stops() { # PID: SIGTERM, gone within 10 s
        kill -TERM "$1" 2>/dev/null
        wait_for 10 eval "! kill -0 $1 2>/dev/null"
}
check "kcat with the plugin and its listener exits on SIGTERM within 10 s" stops "$kcat_pid"
check "kcat without the listener exits on SIGTERM within 10 s" stops "$quiet_pid"

plugin_end e2e_plugin_kcat "$tmp/kcat.err"

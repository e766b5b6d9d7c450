#!/usr/bin/env bash
# End to end, with the real components users run: examples/health_server
# (a consumer with the probe, serving /healthz, /metrics and /lag on its own
# embedded mock cluster), a real Prometheus server scraping it every second,
# promtool, and curl. Everything on 127.0.0.1, everything bounded in time
# (60 s for the whole script), every process ours cleaned up on exit.
#
#   tests/e2e_prometheus.sh     (after `make all`; BUILD_DIR defaults to build)
#
# Output is TAP: one "ok N - ..." or "not ok N - ..." line per check and a
# final "1..N" plan; scripts/run-tests.sh --tap counts them. Exit status 0
# only when every check passed.
set -uo pipefail

# The whole run is bounded: re-run under timeout(1) once.
if [[ -z ${LAGPROBE_E2E_BOUNDED:-} ]]; then
        LAGPROBE_E2E_BOUNDED=1 exec timeout -k 5 60 "$0" "$@"
fi

root=$(cd "$(dirname "$0")/.." && pwd)
# Plumbing (check, wait_for, get, start_server, start_prometheus, query...)
# shared with tests/e2e_alerts.sh.
. "$root/tests/lib_e2e.sh"

# ---- the scenario ----------------------------------------------------------
# Kafka-legal but odd topic names: dots, underscores, dashes, a leading
# underscore, and one of exactly 249 characters (Kafka's maximum).
long_topic=long.
while ((${#long_topic} < 249)); do long_topic+="Abc.9_z-"; done
long_topic=${long_topic:0:249}
topics=("orders.v2_eu-west" "_under_score.dash-1" "$long_topic")
partitions=2
counts=(40 55 70) # messages per partition, in turn over the 6 partitions
commit_at=15      # every partition committed at 15, then never again
group='e2e.group_1-"quoted"' # a quote, to be escaped in label values
max_poll_ms=6000  # warn at 4200 ms of stall, critical at 5400 ms

# ---- plumbing --------------------------------------------------------------
e2e_init e2e

# ---- 1. health_server ------------------------------------------------------
topic_args=()
for t in "${topics[@]}"; do topic_args+=(-t "$t"); done
counts_csv=$(IFS=,; echo "${counts[*]}")
start_server "${topic_args[@]}" -n "$partitions" -N "$counts_csv" \
        -r 0 -c "$commit_at" -g "$group" -i e2e-client -m "$max_poll_ms"
check "health_server started and printed its port" wait_for 10 has_port
bail_if_failed "health_server did not start ($server_bin; run make all)"
port=$(server_port)
base=http://127.0.0.1:${port:-1}
note "health_server pid ${server_pid:-none} on ${base}"

# Expected figures per partition: "topic<TAB>partition<TAB>hwm<TAB>lag".
: >"$tmp/expected.tsv"
k=0
for t in "${topics[@]}"; do
        for ((p = 0; p < partitions; p++)); do
                c=${counts[k % ${#counts[@]}]}
                printf '%s\t%d\t%d\t%d\n' "$t" "$p" "$c" $((c - commit_at)) >>"$tmp/expected.tsv"
                k=$((k + 1))
        done
done

# /lag shows every partition produced, consumed to the end and committed at
# commit_at: the lag is then stable (production stopped, commits stopped).
lag_settled() {
        local st
        st=$(get "$base/lag" "$tmp/lag.json")
        [[ $st == "200 application/json" ]] || return 1
        $py - "$tmp/lag.json" "$tmp/expected.tsv" "$commit_at" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
want = {}
for line in open(sys.argv[2]):
    t, p, hwm, lag = line.rstrip("\n").split("\t")
    want[(t, int(p))] = (int(hwm), int(lag))
got = {(x["topic"], x["partition"]): x for x in doc["partitions"]}
ok = set(got) == set(want) and all(
    got[k]["high_watermark"] == h and got[k]["committed_offset"] == int(sys.argv[3])
    and got[k]["lag"] == l and got[k]["position"] == h
    for k, (h, l) in want.items())
sys.exit(0 if ok else 1)
EOF
}
check "consumer settled: /lag has every partition at its high watermark, committed at $commit_at" \
        wait_for 20 lag_settled

check "/lag is JSON with the odd topic names, lag = high watermark - committed" \
        $py - "$tmp/lag.json" "$tmp/expected.tsv" "$group" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
topics = {l.split("\t")[0] for l in open(sys.argv[2])}
parts = doc["partitions"]
sys.exit(0 if doc["group_id"] == sys.argv[3] and len(parts) == 6
         and {p["topic"] for p in parts} == topics
         and all(p["lag"] == p["high_watermark"] - p["committed_offset"] for p in parts)
         and doc["status"] == "ok" else 1)
EOF

# ---- 2. /metrics and promtool ---------------------------------------------
st=$(get "$base/metrics" "$tmp/metrics.txt")
note "/metrics: $st, $(wc -c <"$tmp/metrics.txt" 2>/dev/null) bytes"
metrics_type_ok() { [[ $st == "200 text/plain; version=0.0.4"* ]]; }
check "/metrics answers 200 with Content-Type text/plain; version=0.0.4" \
        metrics_type_ok
promtool_check() {
        "$promtool_bin" check metrics <"$tmp/metrics.txt" >"$tmp/promtool.out" 2>&1
        local rc=$?
        sed 's/^/#   promtool: /' "$tmp/promtool.out"
        return $rc
}
check "promtool check metrics accepts /metrics (odd topic names, escaped group)" \
        promtool_check
check "/metrics carries the 249-character topic name as a label" \
        grep -qF "topic=\"$long_topic\"" "$tmp/metrics.txt"
# The README's table must name every family /metrics emits, with its type.
documented() {
        $py - "$tmp/metrics.txt" "$root/README.md" <<'EOF'
import re, sys
emitted = dict(re.findall(r"^# TYPE (\S+) (\S+)$", open(sys.argv[1]).read(), re.M))
readme = open(sys.argv[2]).read()
sect = readme.split("## Prometheus metrics", 1)[-1].split("\n## ", 1)[0]
rows = dict(re.findall(r"^\| `([a-z_:]+)` \| (\w+) \|", sect, re.M))
missing = {k: v for k, v in emitted.items() if rows.get(k) != v}
for k, v in missing.items():
    print("#   not in README.md (or another type): %s %s" % (k, v))
extra = set(rows) - set(emitted)
for k in extra:
    print("#   in README.md but not emitted: %s" % k)
sys.exit(1 if missing or extra or not emitted else 0)
EOF
}
check "README.md's Prometheus table lists every emitted family with its type" \
        documented

# ---- 3. Prometheus -----------------------------------------------------------
start_prometheus "${port:-1}"
check "Prometheus is ready on 127.0.0.1:$prom_port" wait_for 15 prom_ready
bail_if_failed "no Prometheus server (Debian package prometheus)"

target_up() {
        query 'up{job="lagprobe"}' "$tmp/up.json" &&
                $py -c 'import json,sys; r=json.load(open(sys.argv[1]))["data"]["result"]; sys.exit(0 if len(r)==1 and r[0]["value"][1]=="1" else 1)' "$tmp/up.json"
}
check "the health_server target is up (scraped every 1 s)" wait_for 10 target_up

# The kafka_consumergroup_lag series Prometheus stored against the /lag
# JSON fetched right after the query. The lag is stable, so both are taken
# "at the same moment"; retried until the scrape after the settle is in.
compare_lag() {
        query kafka_consumergroup_lag "$tmp/q_lag.json" || return 1
        query kafka_consumergroup_current_offset "$tmp/q_cur.json" || return 1
        get "$base/lag" "$tmp/lag_now.json" >/dev/null
        $py - "$tmp/q_lag.json" "$tmp/q_cur.json" "$tmp/lag_now.json" \
                "$tmp/expected.tsv" "$group" "$commit_at" "$1" <<'EOF'
import json, sys
q_lag, q_cur, lag_now, expected, group, commit_at, what = sys.argv[1:]
def series(path):
    d = json.load(open(path))
    if d.get("status") != "success":
        return None
    out = {}
    for r in d["data"]["result"]:
        m = r["metric"]
        if not {"consumergroup", "topic", "partition"} <= set(m):
            return None
        if m["consumergroup"] != group:
            return None
        out[(m["topic"], int(m["partition"]))] = float(r["value"][1])
    return out
lag, cur = series(q_lag), series(q_cur)
doc = json.load(open(lag_now))
want = {}
for line in open(expected):
    t, p, hwm, l = line.rstrip("\n").split("\t")
    want[(t, int(p))] = int(l)
json_lag = {(x["topic"], x["partition"]): x["lag"] for x in doc["partitions"]}
json_cur = {(x["topic"], x["partition"]): x["committed_offset"] for x in doc["partitions"]}
if what == "labels":
    ok = lag is not None and len(lag) == len(want) and set(lag) == set(want)
elif what == "lag":
    ok = lag is not None and lag == {k: float(v) for k, v in json_lag.items()} \
        and json_lag == want
else:
    ok = cur is not None and cur == {k: float(v) for k, v in json_cur.items()} \
        and set(json_cur.values()) == {int(commit_at)} and set(cur) == set(want)
sys.exit(0 if ok else 1)
EOF
}
check "kafka_consumergroup_lag: one series per partition with labels consumergroup, topic, partition" \
        wait_for 10 compare_lag labels
check "kafka_consumergroup_lag values in Prometheus equal the lag in /lag (and the expected figures)" \
        compare_lag lag
check "kafka_consumergroup_current_offset values in Prometheus equal committed_offset in /lag" \
        compare_lag current

# ---- 4. /healthz through a stall ---------------------------------------------
health() { get "$base/healthz" "$tmp/healthz.txt"; }
healthz_is() { # STATUS BODY-PREFIX
        local st
        st=$(health)
        [[ ${st%% *} == "$1" && $(cat "$tmp/healthz.txt") == "$2"* ]]
}
check "/healthz answers 200 \"ok\" while the consumer polls" healthz_is 200 ok

# SIGUSR1: the consumer stalls inside a batch. Sample every 100 ms: first
# the warning band (degraded, still 200), then 503 past critical_ratio.
kill -USR1 "${server_pid:-0}" 2>/dev/null
stall_start=$SECONDS
saw_degraded=0 saw_503=0 body503=""
end=$((SECONDS + max_poll_ms / 1000 + 3))
while ((SECONDS < end)); do
        st=$(health)
        body=$(cat "$tmp/healthz.txt" 2>/dev/null)
        if [[ ${st%% *} == 200 && $body == degraded* ]]; then
                saw_degraded=1
        elif [[ ${st%% *} == 503 ]]; then
                saw_503=1 body503=$body
                break
        fi
        sleep 0.1
done
# The watchdog (every 100 ms) counts the headroom_critical event shortly
# after the verdict turned: wait for it in /lag (at most 0.4 s), then
# resume, well before max.poll.interval.ms runs out.
crit_counted() {
        get "$base/lag" "$tmp/lag_stall.json" >/dev/null
        $py -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["events"]["headroom_critical"] >= 1 else 1)' "$tmp/lag_stall.json" 2>/dev/null
}
((saw_503)) && wait_for 0.4 crit_counted
kill -USR2 "${server_pid:-0}" 2>/dev/null
note "stalled for about $((SECONDS - stall_start)) s; 503 body: ${body503:-none}"
check "/healthz answers 200 \"degraded: headroom_warn\" in the warning band" \
        test "$saw_degraded" = 1
check "/healthz answers 503 \"unhealthy: headroom_critical\" while stalled past the critical threshold" \
        test "$saw_503" = 1 -a "${body503#unhealthy: }" != "$body503" \
        -a "${body503/headroom_critical/}" != "$body503"
check "/healthz answers 200 \"ok\" again once the consumer polls" \
        wait_for 10 healthz_is 200 ok

crit_scraped() {
        query 'lagprobe_events_total{event="headroom_critical"}' "$tmp/q_ev.json" &&
                $py -c 'import json,sys; r=json.load(open(sys.argv[1]))["data"]["result"]; sys.exit(0 if len(r)==1 and float(r[0]["value"][1])>=1 else 1)' "$tmp/q_ev.json"
}
check "Prometheus has scraped the headroom_critical event count" \
        wait_for 5 crit_scraped

# ---- 5. shutdown ---------------------------------------------------------------
server_exit() {
        [[ -n $server_pid ]] || return 1
        kill -TERM "$server_pid" 2>/dev/null
        local end=$((SECONDS + 10))
        while kill -0 "$server_pid" 2>/dev/null; do
                ((SECONDS < end)) || return 1
                sleep 0.1
        done
        wait "$server_pid"
        local rc=$?
        server_pid=""
        return $rc
}
check "health_server exits 0 on SIGTERM" server_exit

e2e_logs
echo "1..$n"
echo "# e2e: $((n - failed)) passed, $failed failed"
((failed == 0))

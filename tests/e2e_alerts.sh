#!/usr/bin/env bash
# The shipped Prometheus rules and Grafana dashboard, tested: promtool check
# rules and promtool test rules on examples/prometheus/lagprobe-rules.yml,
# the dashboard examples/grafana/lagprobe.json checked as Grafana JSON, then
# a real Prometheus that loads the rules and scrapes examples/health_server
# every second runs every panel query, every variable query, every
# recording rule and every alert expression (tests/promql_check.py says
# what each must return). Everything on 127.0.0.1, bounded in time (90 s),
# every process ours cleaned up on exit. The setup is that of
# tests/e2e_prometheus.sh, with a producer (-r) so that rates are not 0.
#
#   tests/e2e_alerts.sh     (after `make all`; BUILD_DIR defaults to build)
#
# Output is TAP: one "ok N - ..." or "not ok N - ..." line per check and a
# final "1..N" plan; scripts/run-tests.sh --tap counts them.
set -uo pipefail

if [[ -z ${LAGPROBE_E2E_BOUNDED:-} ]]; then
        LAGPROBE_E2E_BOUNDED=1 exec timeout -k 5 90 "$0" "$@"
fi

root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/tests/lib_e2e.sh" # check, wait_for, start_server, start_prometheus...
e2e_init e2e-alerts
rules=$root/examples/prometheus/lagprobe-rules.yml
rules_test=$root/examples/prometheus/lagprobe-rules.test.yml
dashboard=$root/examples/grafana/lagprobe.json
checker=$root/tests/promql_check.py

# run_lines COMMAND...: each "ok<TAB>desc" / "not ok<TAB>desc" line the
# command prints becomes a TAP line; "# ..." lines pass through.
run_lines() {
        local line st
        while IFS= read -r line; do
                case $line in
                "#"*) echo "$line" ;;
                ok$'\t'* | "not ok"$'\t'*)
                        st=${line%%$'\t'*}
                        check "${line#*$'\t'}" test "$st" = ok
                        ;;
                *) echo "# $line" ;;
                esac
        done < <("$@" 2>&1)
}
# promtool_ok LOG COMMAND...: its output as "#" lines, its exit status.
promtool_ok() {
        local log=$1
        shift
        "$@" >"$log" 2>&1
        local rc=$?
        sed 's/^/#   /' "$log" | grep -v '^#   $' | head -40
        return $rc
}

# ---- 1. without Prometheus ---------------------------------------------------
check "promtool check rules examples/prometheus/lagprobe-rules.yml" \
        promtool_ok "$tmp/check.out" "$promtool_bin" check rules "$rules"
check "promtool test rules examples/prometheus/lagprobe-rules.test.yml (every alert fires on time, its near miss does not)" \
        promtool_ok "$tmp/test.out" "$promtool_bin" test rules "$rules_test"
# Each alert of the rules file has a test that expects it to fire and one
# evaluation that expects it silent.
every_alert_tested() {
        $py - "$rules" "$rules_test" <<'PYEOF'
import sys, yaml
alerts = {r["alert"] for g in yaml.safe_load(open(sys.argv[1]))["groups"]
          for r in g["rules"] if "alert" in r}
fires, silent = set(), set()
for t in yaml.safe_load(open(sys.argv[2]))["tests"]:
    for a in t.get("alert_rule_test", []):
        (fires if a.get("exp_alerts") else silent).add(a["alertname"])
for a in sorted(alerts - fires):
    print("#   never expected to fire: " + a)
for a in sorted(alerts - silent):
    print("#   never expected silent: " + a)
sys.exit(0 if alerts and alerts <= fires and alerts <= silent else 1)
PYEOF
}
check "every alert has a unit test where it fires and one where it stays silent" \
        every_alert_tested
run_lines $py "$checker" static "$dashboard" "$rules"

# ---- 2. health_server and Prometheus -----------------------------------------
start_server -t orders.v2 -t payments -n 2 -N 30 -r 20 \
        -g e2e-alerts -i e2e-alerts-client -m 10000
check "health_server started and printed its port" wait_for 10 has_port
bail_if_failed "health_server did not start ($server_bin; run make all)"
port=$(server_port)

start_prometheus "$port" "$rules"
check "Prometheus with the rules file is ready on 127.0.0.1:$prom_port" wait_for 15 prom_ready
bail_if_failed "no Prometheus server (Debian package prometheus)"

# The consumer has joined and committed: kafka_consumergroup_lag is scraped.
lag_scraped() {
        query 'count(kafka_consumergroup_lag{job="lagprobe"})' "$tmp/q_count.json" &&
                $py -c 'import json,sys; r=json.load(open(sys.argv[1]))["data"]["result"]; sys.exit(0 if r and r[0]["value"][1]=="4" else 1)' "$tmp/q_count.json"
}
check "Prometheus scrapes health_server: kafka_consumergroup_lag for its 4 partitions" \
        wait_for 20 lag_scraped
bail_if_failed "no data scraped"

# ---- 3. every query against the live Prometheus ------------------------------
run_lines $py "$checker" live "$prom" "$dashboard" "$rules"

# The consumer is healthy: no alert may be pending or firing.
no_alerts() {
        curl -s -m 2 "$prom/api/v1/alerts" 2>/dev/null | $py -c '
import json, sys
a = json.load(sys.stdin)["data"]["alerts"]
for x in a:
    print("#   %s %s %s" % (x["labels"]["alertname"], x["state"], x["labels"]))
sys.exit(1 if a else 0)'
}
check "no alert is pending or firing while the consumer is healthy" no_alerts

e2e_logs
echo "1..$n"
echo "# e2e alerts: $((n - failed)) passed, $failed failed"
((failed == 0))

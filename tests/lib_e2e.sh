# Plumbing shared by the end-to-end scripts that run examples/health_server
# and a real Prometheus server (tests/e2e_prometheus.sh, tests/e2e_alerts.sh);
# tests/e2e_cpp.sh uses only e2e_init, check and note.
# Sourced, not run (its name keeps it out of the Makefile's tests/e2e_*.sh).
#
#   . "$root/tests/lib_e2e.sh"; e2e_init NAME
#
# sets build, server_bin, prometheus_bin, promtool_bin, py and tmp (a
# directory removed on exit, with health_server and Prometheus stopped).
# Everything listens on 127.0.0.1 only.

build=${BUILD_DIR:-build}
[[ $build == /* ]] || build=$root/$build
server_bin=$build/examples/health_server
prometheus_bin=${PROMETHEUS:-prometheus}
promtool_bin=${PROMTOOL:-promtool}
py=python3
server_pid="" prom_pid=""
n=0 failed=0 last_ok=1

e2e_init() {
        tmp=$(mktemp -d "${TMPDIR:-/tmp}/lagprobe-$1.XXXXXX")
        trap e2e_cleanup EXIT
        trap 'echo "# interrupted"; exit 1' INT TERM
}

e2e_cleanup() {
        local pid
        for pid in $server_pid $prom_pid; do
                kill -TERM "$pid" 2>/dev/null
        done
        for pid in $server_pid $prom_pid; do
                for _ in $(seq 50); do
                        kill -0 "$pid" 2>/dev/null || break
                        sleep 0.1
                done
                kill -KILL "$pid" 2>/dev/null
                wait "$pid" 2>/dev/null
        done
        rm -rf "$tmp"
}

# check DESCRIPTION COMMAND...: one TAP line.
check() {
        local desc=$1
        shift
        n=$((n + 1))
        if "$@"; then
                echo "ok $n - $desc"
                last_ok=1
        else
                echo "not ok $n - $desc"
                failed=$((failed + 1))
                last_ok=0
        fi
}

note() { echo "# $*"; }

# bail_if_failed REASON: stop (TAP "Bail out!") when the last check failed.
bail_if_failed() {
        ((last_ok)) && return
        echo "Bail out! $1"
        tail -n 20 "$tmp/server.err" "$tmp/prometheus.log" 2>/dev/null | sed 's/^/#   /'
        exit 1
}

# get URL OUTFILE: body to OUTFILE, prints "STATUS CONTENT-TYPE".
get() {
        curl -s -m 2 -o "$2" -w '%{http_code} %{content_type}' "$1" 2>/dev/null ||
                echo "000 -"
}

now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }

# wait_for SECONDS COMMAND...: retry every 100 ms until it succeeds.
# SECONDS may have a fraction (0.4).
wait_for() {
        local end=$(($(now_ms) + $(awk -v s="$1" 'BEGIN { printf "%d", s * 1000 }')))
        shift
        while ! "$@"; do
                (($(now_ms) < end)) || return 1
                sleep 0.1
        done
}

free_port() {
        $py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_server ARGS...: health_server -p 0 ARGS in the background, stdout
# and stderr in $tmp/server.out and server.err; then
#   check "..." wait_for 10 has_port; port=$(server_port)
start_server() {
        [[ -x $server_bin ]] || return 0
        "$server_bin" -p 0 "$@" >"$tmp/server.out" 2>"$tmp/server.err" &
        server_pid=$!
}
server_port() { sed -n 's/^listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$tmp/server.out" 2>/dev/null; }
has_port() { [[ -n $(server_port) ]]; }

# start_prometheus TARGET_PORT [RULE_FILE...]: a Prometheus server scraping
# 127.0.0.1:TARGET_PORT (job "lagprobe") every second, evaluating the rule
# files every second; sets prom_port and prom (its URL). Then
#   check "..." wait_for 15 prom_ready
start_prometheus() {
        local target=$1 f
        shift
        prom_port=$(free_port)
        prom=http://127.0.0.1:$prom_port
        {
                printf '%s\n' "global:" "  scrape_interval: 1s" "  scrape_timeout: 1s" \
                        "  evaluation_interval: 1s"
                if (($#)); then
                        echo "rule_files:"
                        for f in "$@"; do echo "  - '$f'"; done
                fi
                printf '%s\n' "scrape_configs:" "  - job_name: lagprobe" \
                        "    static_configs:" "      - targets: ['127.0.0.1:$target']"
        } >"$tmp/prometheus.yml"
        command -v "$prometheus_bin" >/dev/null || return 0
        "$prometheus_bin" --config.file="$tmp/prometheus.yml" \
                --storage.tsdb.path="$tmp/tsdb" \
                --web.listen-address="127.0.0.1:$prom_port" \
                --log.level=warn >"$tmp/prometheus.log" 2>&1 &
        prom_pid=$!
}
prom_ready() { curl -sf -m 2 "$prom/-/ready" >/dev/null 2>&1; }

# query PROMQL OUTFILE: Prometheus's answer (JSON) to an instant query.
query() {
        curl -s -m 2 -G "$prom/api/v1/query" --data-urlencode "query=$1" \
                -o "$2" 2>/dev/null
}

# e2e_logs: the tails of both logs, after a failure.
e2e_logs() {
        ((failed)) || return 0
        note "health_server stderr (last 20 lines):"
        tail -n 20 "$tmp/server.err" 2>/dev/null | sed 's/^/#   /'
        note "prometheus log (last 10 lines):"
        tail -n 10 "$tmp/prometheus.log" 2>/dev/null | sed 's/^/#   /'
}

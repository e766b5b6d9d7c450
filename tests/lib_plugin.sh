# Plumbing of the zero-code (plugin) end-to-end scripts,
# tests/e2e_plugin_*.sh, on top of tests/lib_e2e.sh. Sourced, not run.
#
#   . "$root/tests/lib_e2e.sh"; . "$root/tests/lib_plugin.sh"
#   plugin_start NAME ... checks ... plugin_end NAME LOGFILE
#
# sets plugin_so (build/lagprobe.so), dpy (Debian's /usr/bin/python3, where
# python3-confluent-kafka lives) and kafka (tests/plugin_kafka.py through
# it). Processes started with bg_start are stopped on exit along with the
# health_server/Prometheus pids lib_e2e.sh knows.

plugin_so=$build/lagprobe.so
dpy=${DEBIAN_PYTHON:-/usr/bin/python3}
kafka() { "$dpy" "$root/tests/plugin_kafka.py" "$@"; }
mock_bin=$build/bench/mock_broker
bg_pids=""

# plugin_start NAME: e2e_init NAME, then bail out unless the plugin, the
# mock broker and confluent_kafka are there.
plugin_start() {
        e2e_init "$1"
        trap plugin_cleanup EXIT
        local f
        for f in "$plugin_so" "$mock_bin"; do
                if [[ ! -e $f ]]; then
                        echo "Bail out! $f missing (make plugin build/bench/mock_broker, or make test-build-e2e)"
                        exit 1
                fi
        done
        if ! "$dpy" -c 'import confluent_kafka' 2>/dev/null; then
                echo "Bail out! $dpy cannot import confluent_kafka (Debian python3-confluent-kafka; make deps)"
                exit 1
        fi
}

# Stopped processes (a paused reader) are resumed first, so that SIGTERM
# reaches them; then lib_e2e.sh's cleanup stops them all with its own.
plugin_cleanup() {
        local pid
        for pid in $bg_pids; do
                kill -CONT "$pid" 2>/dev/null
        done
        server_pid="$server_pid $bg_pids"
        exec 7>&- 2>/dev/null
        e2e_cleanup
}

# start_mock TOPIC PARTITIONS MESSAGES: bench/mock_broker in the background
# (its stdin held open on fd 7); sets boot (its 127.0.0.1 bootstrap).
start_mock() {
        mkfifo "$tmp/mock.in"
        "$mock_bin" -t "$1" -p "$2" -m "$3" <"$tmp/mock.in" >"$tmp/mock.out" \
                2>"$tmp/mock.err" &
        bg_pids+=" $!"
        exec 7>"$tmp/mock.in"
        wait_for 10 test -s "$tmp/mock.out" || return 1
        boot=$(head -n 1 "$tmp/mock.out")
        [[ $boot == 127.0.0.1:* ]]
}

# json_ok FILE PYTHON-EXPRESSION: true when the expression, over the JSON
# document d read from FILE, is true.
json_ok() {
        $py -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if eval("(" + sys.argv[2] + ")") else 1)' "$1" "$2" 2>/dev/null
}

# listening_sockets PID: how many TCP sockets in LISTEN state PID holds.
listening_sockets() {
        ss -H -ltnp 2>/dev/null | grep -c "pid=$1," || true
}

# plugin_end NAME LOG: after a failure the tail of LOG; the TAP plan and
# summary; the exit status.
plugin_end() {
        if ((failed)); then
                note "$2 (last 15 lines):"
                tail -n 15 "$2" 2>/dev/null | sed 's/^/#   /'
        fi
        echo "1..$n"
        echo "# $1: $((n - failed)) passed, $failed failed"
        ((failed == 0))
}

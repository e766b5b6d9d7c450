#!/usr/bin/env bash
# Install the Debian packages lagprobe needs to build, test and demo, but
# only those that are missing: with everything present it costs one
# dpkg-query and prints one line, so every make target can call it.
#
#   scripts/deps.sh [EXTRA_PACKAGE...]
#
# Runs apt-get as root, through sudo otherwise. On a system without dpkg it
# only says so: install the equivalents of the list below yourself.
set -euo pipefail

packages=(
        build-essential   # gcc, g++ (probe.h parse check, C++ example and tests), make
        clang             # second compiler; every build must be clean under both
        libclang-rt-dev   # clang's sanitizer runtimes (only a Recommends of clang)
        pkg-config
        cmake             # end-to-end test: CMakeLists.txt used by a C++ project
        librdkafka-dev    # librdkafka, its C++ API (rdkafka++), its mock cluster
        libstb-dev        # stb_ds.h, used inside probe.c
        libcmocka-dev     # test framework
        libmicrohttpd-dev # health endpoint examples
        libcjson-dev      # make bench: the JSON parser the statistics scanner is compared with
        libjansson-dev    # make bench: the second JSON parser compared
        valgrind
        python3           # end-to-end test: JSON comparisons
        python3-yaml      # end-to-end test: reads the shipped alert rules
        curl              # end-to-end test: HTTP client
        kcat              # end-to-end test: the plugin in a real client
        python3-confluent-kafka # end-to-end test: the plugin in Python (/usr/bin/python3)
        prometheus        # end-to-end scrape test (prometheus, promtool)
        "$@"
)

if ! command -v dpkg-query >/dev/null 2>&1; then
        echo "deps: no dpkg-query here; install the equivalents of: ${packages[*]}" >&2
        exit 0
fi

missing=()
for p in "${packages[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
        [[ $status == ii* ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
        echo "deps: all ${#packages[@]} packages present"
        exit 0
fi

if ((EUID == 0)); then
        as_root=()
elif command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
else
        echo "deps: missing ${missing[*]}; run this script as root or install sudo" >&2
        exit 1
fi

log=$(mktemp "${TMPDIR:-/tmp}/lagprobe-deps.XXXXXX")
trap 'rm -f "$log"' EXIT
apt=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y
     -o Dpkg::Use-Pty=0)
if ! { "${apt[@]}" update &&
       "${apt[@]}" install --no-install-recommends "${missing[@]}"; } \
       </dev/null >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "deps: failed to install ${missing[*]} (apt-get output above)" >&2
        exit 1
fi
echo "deps: installed ${missing[*]}"

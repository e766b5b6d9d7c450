#!/usr/bin/env bash
# The ways a program takes lagprobe in, each as a user would do it:
#   - a C++ CMake project that does add_subdirectory() on this repository
#     and links the target `lagprobe` (CMakeLists.txt);
#   - a program with its own stb_ds implementation, linked with the library
#     (probe.c's stb_ds copy is renamed; LAGPROBE_NO_STB_DS_IMPLEMENTATION
#     uses the program's instead);
#   - `make install` and pkg-config, with either header spelling.
# librdkafka is whichever pkg-config finds (PKG_CONFIG_PATH picks another).
# Everything in a temporary directory, bounded in time (300 s).
#
#   tests/e2e_cmake.sh     (after `make all`; BUILD_DIR defaults to build)
#
# Output is TAP: one "ok N - ..." or "not ok N - ..." line per check and a
# final "1..N" plan; scripts/run-tests.sh --tap counts them. Exit status 0
# only when every check passed.
set -uo pipefail

if [[ -z ${LAGPROBE_E2E_BOUNDED:-} ]]; then
        LAGPROBE_E2E_BOUNDED=1 exec timeout -k 5 300 "$0" "$@"
fi

root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-build}
[[ $build == /* ]] || build=$root/$build
cc=${CC:-cc}
cxx=${CXX:-c++}
cmake_bin=${CMAKE:-cmake}
pkg_config=${PKG_CONFIG:-pkg-config}
lib=$build/liblagprobe.a

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lagprobe-e2e-cmake.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'echo "# interrupted"; exit 1' INT TERM
n=0 failed=0

# check DESCRIPTION COMMAND...: one TAP line; the command's output, if it
# failed, as comments.
check() {
        local desc=$1
        shift
        n=$((n + 1))
        if "$@" >"$tmp/out" 2>&1; then
                echo "ok $n - $desc"
        else
                echo "not ok $n - $desc"
                failed=$((failed + 1))
                tail -n 25 "$tmp/out" | sed 's/^/#   /'
        fi
}

note() { echo "# $*"; }

want_version=$(sed -n 's/^#define LAGPROBE_VERSION_\(MAJOR\|MINOR\|PATCH\)  *\([0-9][0-9]*\).*/\2/p' \
        "$root/probe.h" | paste -sd.)

# librdkafka as the Makefile takes it: headers as system headers, and an
# rpath when pkg-config names a library directory.
rdk_cflags=$($pkg_config --cflags rdkafka | sed 's/-I\(\/usr\(\/local\)\{0,1\}\/include\)\( \|$\)//g; s/-I/-isystem /g')
rdk_libs=$($pkg_config --libs rdkafka)
rpath=$(for f in $rdk_libs; do [[ $f == -L* ]] && printf -- '-Wl,-rpath,%s ' "${f#-L}"; done)
note "librdkafka $($pkg_config --modversion rdkafka) via $pkg_config; $cc, $cxx"
warn=(-Wall -Wextra -Werror)

# The program every check builds: a probe made and destroyed, the version.
cat >"$tmp/main.inc" <<'EOF'
int main(void) {
        char errstr[256];
        lagprobe_config_t pc;
        lagprobe_config_init(&pc);
        pc.watchdog_interval_ms = 0;
        lagprobe_t *p = lagprobe_new(&pc, errstr, sizeof errstr);
        if (!p) {
                fprintf(stderr, "lagprobe_new: %s\n", errstr);
                return 1;
        }
        lagprobe_destroy(p);
        printf("lagprobe %s\n", lagprobe_version_str());
        return HOST_CHECK();
}
EOF

# prints_version PROGRAM: runs it, expects "lagprobe X.Y.Z".
prints_version() {
        local out
        out=$("$@") || return 1
        echo "$out"
        [[ $out == "lagprobe $want_version" ]]
}

# ---- 1. a C++ CMake project, add_subdirectory() -----------------------------
mkdir -p "$tmp/app"
cat >"$tmp/app/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.13)
project(app LANGUAGES C CXX)
set(CMAKE_CXX_STANDARD 11)
add_subdirectory("$root" lagprobe)
add_executable(app main.cpp)
target_link_libraries(app PRIVATE lagprobe)
EOF
{
        echo '#include "probe.h"'
        echo '#include <lagprobe/probe.h> /* both spellings, one header */'
        echo '#include <stdio.h>'
        echo '#define HOST_CHECK() 0'
        cat "$tmp/main.inc"
} >"$tmp/app/main.cpp"
check "cmake configures a C++ project (LANGUAGES C CXX) that add_subdirectory()s lagprobe" \
        "$cmake_bin" -S "$tmp/app" -B "$tmp/app/b" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
        -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" \
        -DCMAKE_C_FLAGS="${warn[*]}" -DCMAKE_CXX_FLAGS="${warn[*]}"
check "cmake builds it: liblagprobe.a and the C++ program, warnings as errors" \
        "$cmake_bin" --build "$tmp/app/b"
probe_c_is_c11() {
        python3 - "$tmp/app/b/compile_commands.json" <<'EOF'
import json, sys
cmds = [c for c in json.load(open(sys.argv[1])) if c["file"].endswith("/probe.c")]
print(cmds)
sys.exit(0 if len(cmds) == 1 and "-std=c11" in cmds[0]["command"]
         and " -x c++" not in cmds[0]["command"] else 1)
EOF
}
check "probe.c is compiled as C11 by the C compiler" probe_c_is_c11
check "the C++ program (probe.h, lagprobe_new, lagprobe_destroy) runs" \
        prints_version "$tmp/app/b/app"

# ---- 2. symbols and a host's own stb_ds ---------------------------------------
only_lagprobe_symbols() {
        [[ -f $lib ]] || { echo "no $lib: run make all"; return 1; }
        local bad
        bad=$(nm -g --defined-only "$lib" | awk 'NF == 3 && $3 !~ /^lagprobe_/')
        nm -g --defined-only "$lib" | grep -c ' lagprobe_'
        echo "$bad"
        [[ -z $bad ]]
}
check "liblagprobe.a defines no global symbol without the lagprobe_ prefix (stb_ds renamed)" \
        only_lagprobe_symbols

# A C program that defines STB_DS_IMPLEMENTATION and uses stb_ds itself.
{
        echo '#define STB_DS_IMPLEMENTATION'
        echo '#include <stb/stb_ds.h>'
        echo '#include <stdio.h>'
        echo '#include "probe.h"'
        echo 'static int host_check(void) {'
        echo '        int *a = NULL;'
        echo '        for (int i = 0; i < 100; i++)'
        echo '                arrput(a, i);'
        echo '        int ok = arrlen(a) == 100 && a[99] == 99;'
        echo '        arrfree(a);'
        echo '        return !ok;'
        echo '}'
        echo '#define HOST_CHECK() host_check()'
        cat "$tmp/main.inc"
} >"$tmp/host_stb.c"
host_cc() { # OUTPUT SOURCE [MORE...]
        local out=$1
        shift
        "$cc" -std=c11 "${warn[@]}" -I"$root" $rdk_cflags -o "$out" "$@" \
                $rpath $rdk_libs -lpthread -lm
}
check "a program with its own STB_DS_IMPLEMENTATION links with liblagprobe.a and runs" \
        eval 'host_cc "$tmp/host_stb" "$tmp/host_stb.c" "$lib" && prints_version "$tmp/host_stb"'

uses_host_stb() {
        "$cc" -std=c11 "${warn[@]}" $rdk_cflags -DLAGPROBE_NO_STB_DS_IMPLEMENTATION \
                -c "$root/probe.c" -o "$tmp/probe_nostb.o" || return 1
        # One nm into a file: grep -q on a pipe exits at the first match,
        # and under pipefail nm's SIGPIPE then fails the check at random.
        nm "$tmp/probe_nostb.o" >"$tmp/nostb.nm" || return 1
        grep 'stbds_' "$tmp/nostb.nm"
        grep -q ' U stbds_arrgrowf$' "$tmp/nostb.nm" &&
                ! grep -q ' [TDB] .*stbds_' "$tmp/nostb.nm"
}
check "with -DLAGPROBE_NO_STB_DS_IMPLEMENTATION probe.o defines no stb_ds and uses stbds_* of the program" \
        uses_host_stb
check "... and that probe.o links with the program's STB_DS_IMPLEMENTATION and runs" \
        eval 'host_cc "$tmp/host_stb2" "$tmp/host_stb.c" "$tmp/probe_nostb.o" && prints_version "$tmp/host_stb2"'

# ---- 3. make install and pkg-config, both header spellings ------------------
dest=$tmp/dest
prefix=/usr/local
check "make install DESTDIR=... PREFIX=$prefix" \
        make -C "$root" --no-print-directory SKIP_DEPS=1 BUILD="$build" \
        DESTDIR="$dest" PREFIX="$prefix" install
installed() {
        ls -R "$dest"
        [[ -f $dest$prefix/include/lagprobe/probe.h && -f $dest$prefix/lib/liblagprobe.a &&
                -f $dest$prefix/lib/pkgconfig/lagprobe.pc && -x $dest$prefix/lib/lagprobe.so ]]
}
check "probe.h in include/lagprobe/; liblagprobe.a, lagprobe.pc and the plugin lagprobe.so in lib/" installed

pc_path=$dest$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
# pkg_app SPELLING: a program including probe.h that way, built with
# nothing but what pkg-config --define-prefix says about the DESTDIR tree.
pkg_app() {
        local flags
        flags=$(PKG_CONFIG_PATH=$pc_path "$pkg_config" --define-prefix --cflags --libs lagprobe) ||
                return 1
        echo "pkg-config: $flags"
        [[ $flags == *"-I$dest$prefix/include/lagprobe"* ]] || return 1
        {
                echo "#include $1"
                echo '#include <stdio.h>'
                echo '#define HOST_CHECK() 0'
                cat "$tmp/main.inc"
        } >"$tmp/pkg_app.c"
        "$cc" -std=c11 -Wall -o "$tmp/pkg_app" "$tmp/pkg_app.c" $flags $rpath &&
                prints_version "$tmp/pkg_app"
}
check "pkg-config --define-prefix lagprobe: #include \"probe.h\" compiles, links and runs" \
        pkg_app '"probe.h"'
check "pkg-config --define-prefix lagprobe: #include <lagprobe/probe.h> compiles, links and runs" \
        pkg_app '<lagprobe/probe.h>'

echo "1..$n"
echo "# e2e_cmake: $((n - failed)) passed, $failed failed"
((failed == 0))

# TAP helpers shared by the end-to-end scripts (tests/e2e_*.sh): source it,
# then call check for every test line and print the plan "1..$n" at the end.
# SPDX-License-Identifier: BSD-2-Clause
n=0 failed=0

# check DESCRIPTION COMMAND...: one TAP line.
check() {
        local desc=$1
        shift
        n=$((n + 1))
        if "$@"; then
                echo "ok $n - $desc"
        else
                echo "not ok $n - $desc"
                failed=$((failed + 1))
        fi
}

note() { echo "# $*"; }

#!/usr/bin/env bash
# The one build entry point of libevkv.
#   ./autobuild.sh            incremental debug build
#   ./autobuild.sh release    clean optimised build, no debug info
#   ./autobuild.sh unittest   clean debug build, then every test suite; non-zero if any fails
#   ./autobuild.sh asan       clean build with ASan+UBSan, then every test suite
#   ./autobuild.sh coverage   clean gcov build, suites, lcov HTML in build/coverage/
set -euo pipefail
cd "$(dirname "$0")"
top=$PWD
mode=${1:-debug}
jobs=$(nproc 2>/dev/null || echo 2)

# ---- dependencies -------------------------------------------------------------
need_pkgs=(cmake gcc libev-dev libprotobuf-c-dev protobuf-c-compiler zlib1g-dev libcunit1-dev)
[[ $mode == coverage ]] && need_pkgs+=(lcov)
# the RESP suite drives the real tools: redis-cli, redis-benchmark, python3-redis, twemproxy
[[ $mode == unittest || $mode == asan || $mode == coverage ]] && need_pkgs+=(redis-tools python3-redis nutcracker)
missing=()
for p in "${need_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) == 0 ]]; then
        echo "[autobuild] installing: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
            { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; }
    else
        echo "[autobuild] missing packages: ${missing[*]}" >&2
        echo "[autobuild] install them with: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

# ---- configure and build --------------------------------------------------------
build() { # build DIR TYPE [cmake args...]
    local dir=$1 type=$2
    shift 2
    cmake -S "$top" -B "$dir" -DCMAKE_BUILD_TYPE="$type" "$@" >/dev/null
    cmake --build "$dir" -j "$jobs" -- --no-print-directory
}
clean() { rm -rf "$1" "$top/bin"; }

run_tests() { # every bin/test_* runner; fails if any fails
    local failed=0 t
    for t in "$top"/bin/test_*; do
        [[ -x $t ]] || continue
        echo "==== $(basename "$t")"
        if ! "$t"; then
            echo "[autobuild] FAILED: $(basename "$t")" >&2
            failed=1
        fi
    done
    return $failed
}

case $mode in
debug)
    build build Debug
    ;;
release)
    clean build
    build build Release -DCMAKE_C_FLAGS_RELEASE="-O2 -DNDEBUG"
    ;;
unittest)
    clean build
    build build Debug
    run_tests
    echo "[autobuild] all test suites passed"
    ;;
asan)
    clean build-asan
    build build-asan Debug -DKV_SANITIZE=ON
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    run_tests
    echo "[autobuild] all test suites passed under ASan+UBSan"
    ;;
coverage)
    command -v lcov >/dev/null || { echo "[autobuild] lcov missing" >&2; exit 1; }
    clean build-cov
    build build-cov Debug -DKV_COVERAGE=ON
    lcov --quiet --zerocounters --directory build-cov
    run_tests
    lcov --quiet --capture --directory build-cov --output-file build-cov/all.info
    lcov --quiet --extract build-cov/all.info "$top/src/*" --output-file build-cov/src.info
    mkdir -p build/coverage
    genhtml --quiet build-cov/src.info --output-directory build/coverage
    echo "[autobuild] coverage of src/ (HTML: build/coverage/index.html):"
    lcov --summary build-cov/src.info 2>&1 | grep -E "lines|functions"
    ;;
*)
    echo "usage: $0 [release|unittest|asan|coverage]" >&2
    exit 2
    ;;
esac

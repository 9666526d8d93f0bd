#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE
# The one build entry point of libevkv.
#   ./autobuild.sh            incremental debug build (programs in bin/)
#   ./autobuild.sh release    clean optimised build, no debug info (programs in bin/)
#   ./autobuild.sh unittest   clean debug build in build-test/ (programs in build-test/bin/),
#                             then every test suite; non-zero if any fails
#   ./autobuild.sh asan       clean build with ASan+UBSan in build-asan/, then every test suite
#   ./autobuild.sh coverage   clean gcov build in build-cov/, suites, lcov HTML in build/coverage/
#   ./autobuild.sh faults [POINTS]  ASan build with the allocation-failure hook in
#                             build-faults/, then tests/faults.sh: each scenario with
#                             each of (at most POINTS, default 40) allocations failing
# Only debug and release write bin/: the test builds never replace the programs
# README tells users to run.
#   ./autobuild.sh fuzz [SECS] libFuzzer harnesses with ASan+UBSan in build-fuzz/: every
#                             regression input, then SECS (default 60) split among them
#   ./autobuild.sh install [PREFIX]  clean optimised build in build-install/, then
#                             `cmake --install` into PREFIX (default /usr/local; DESTDIR honoured)
set -euo pipefail
cd "$(dirname "$0")"
top=$PWD
mode=${1:-debug}
jobs=$(nproc 2>/dev/null || echo 2)

# ---- dependencies -------------------------------------------------------------
need_pkgs=(cmake gcc libev-dev libprotobuf-c-dev protobuf-c-compiler zlib1g-dev libcunit1-dev)
[[ $mode == coverage ]] && need_pkgs+=(lcov)
# the RESP suite drives the real tools: redis-cli, redis-benchmark, python3-redis, twemproxy
[[ $mode == unittest || $mode == asan || $mode == coverage || $mode == faults ]] && need_pkgs+=(redis-tools python3-redis nutcracker pkg-config)
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
clean() { rm -rf "$1"; }

run_tests() { # run_tests BINDIR: every test_* runner there; fails if any fails
    local failed=0 t
    for t in "$1"/test_*; do
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
    rm -rf "$top/bin"
    build build Release -DCMAKE_C_FLAGS_RELEASE="-O2 -DNDEBUG"
    ;;
unittest)
    clean build-test
    build build-test Debug -DKV_BIN_DIR="$top/build-test/bin"
    run_tests "$top/build-test/bin"
    echo "[autobuild] all test suites passed"
    ;;
asan)
    clean build-asan
    build build-asan Debug -DKV_SANITIZE=ON -DKV_BIN_DIR="$top/build-asan/bin"
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    run_tests "$top/build-asan/bin"
    echo "[autobuild] all test suites passed under ASan+UBSan"
    ;;
install)
    # its own build tree: an install never disturbs build/ (where the suites run)
    prefix=${2:-/usr/local}
    rm -rf build-install
    build build-install Release -DCMAKE_C_FLAGS_RELEASE="-O2 -DNDEBUG" -DCMAKE_INSTALL_PREFIX="$prefix" \
        -DKV_BIN_DIR="$top/build-install/bin"
    cmake --install build-install --prefix "$prefix"
    echo "[autobuild] installed into ${DESTDIR:-}$prefix"
    ;;
faults)
    points=${2:-40}
    [[ $points =~ ^[0-9]+$ ]] || { echo "usage: $0 faults [POINTS]" >&2; exit 2; }
    clean build-faults
    build build-faults Debug -DKV_SANITIZE=ON -DKV_FAULTS=ON -DKV_BIN_DIR="$top/build-faults/bin"
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    tests/faults.sh "$top/build-faults/bin" "$points"
    ;;
coverage)
    command -v lcov >/dev/null || { echo "[autobuild] lcov missing" >&2; exit 1; }
    clean build-cov
    build build-cov Debug -DKV_COVERAGE=ON -DKV_BIN_DIR="$top/build-cov/bin"
    lcov --quiet --zerocounters --directory build-cov
    run_tests "$top/build-cov/bin"
    lcov --quiet --capture --directory build-cov --output-file build-cov/all.info
    lcov --quiet --extract build-cov/all.info "$top/src/*" --output-file build-cov/src.info
    mkdir -p build/coverage
    genhtml --quiet build-cov/src.info --output-directory build/coverage
    echo "[autobuild] coverage of src/ (HTML: build/coverage/index.html):"
    lcov --summary build-cov/src.info 2>&1 | grep -E "lines|functions"
    ;;
fuzz)
    # Harnesses and corpora: fuzz/ (see fuzz/README.md). Built with clang
    # directly, not CMake, so that the other build dirs are never touched.
    budget=${2:-60}
    [[ $budget =~ ^[0-9]+$ ]] || { echo "usage: $0 fuzz [SECONDS]" >&2; exit 2; }
    fuzz_pkgs=()
    command -v clang >/dev/null || fuzz_pkgs+=(clang)
    dpkg-query -W -f='${Status}' libclang-rt-14-dev 2>/dev/null | grep -q "install ok installed" ||
        fuzz_pkgs+=(libclang-rt-14-dev)
    if ((${#fuzz_pkgs[@]})); then
        if [[ $(id -u) == 0 ]]; then
            echo "[autobuild] installing: ${fuzz_pkgs[*]}"
            export DEBIAN_FRONTEND=noninteractive
            apt-get install -y -qq "${fuzz_pkgs[@]}" >/dev/null 2>&1 ||
                { apt-get update -qq && apt-get install -y -qq "${fuzz_pkgs[@]}"; }
        else
            echo "[autobuild] missing packages: ${fuzz_pkgs[*]}" >&2
            exit 1
        fi
    fi
    fb=$top/build-fuzz
    mkdir -p "$fb/gen" "$fb/obj"
    protoc-c --proto_path=proto --c_out="$fb/gen" proto/kv.proto
    version=$(sed -n 's/^project(libevkv VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
    cflags=(-g -O1 -std=gnu11 -D_GNU_SOURCE -DKV_VERSION="\"$version\""
            -fno-strict-aliasing -fno-omit-frame-pointer
            -fsanitize=address,undefined -fno-sanitize-recover=undefined
            -Wall -Wno-unused-parameter -Wno-unused-function
            -Isrc/mem -Isrc/io -Isrc/worker -Isrc/shm -Isrc/server -I"$fb/gen" -Ifuzz)
    libs=(-lev -lprotobuf-c -lz -lrt -lm -lpthread)
    rm -rf "$fb/obj"
    mkdir -p "$fb/obj"
    srcs=(src/mem/*.c src/io/*.c src/worker/*.c src/shm/*.c "$fb/gen/kv.pb-c.c")
    for f in src/server/*.c; do [[ $f == */main.c ]] || srcs+=("$f"); done
    objs=() running=0 ccfail=0
    for f in "${srcs[@]}"; do # $jobs compiles at a time
        o=$fb/obj/$(basename "$(dirname "$f")")_$(basename "${f%.c}").o
        objs+=("$o")
        clang "${cflags[@]}" -fsanitize=fuzzer-no-link -c "$f" -o "$o" &
        running=$((running + 1))
        if ((running >= jobs)); then wait -n || ccfail=1; running=$((running - 1)); fi
    done
    while ((running > 0)); do wait -n || ccfail=1; running=$((running - 1)); done
    ((ccfail == 0)) || { echo "[autobuild] fuzz: compilation failed" >&2; exit 1; }
    harnesses=(fuzz_frame fuzz_resp fuzz_handlers fuzz_conn fuzz_segment fuzz_rdb fuzz_ring)
    for h in "${harnesses[@]}"; do
        clang "${cflags[@]}" -fsanitize=fuzzer "fuzz/$h.c" "${objs[@]}" "${libs[@]}" -o "$fb/$h"
    done
    clang "${cflags[@]}" fuzz/gen_seeds.c "$fb/obj/io_frame.o" "$fb/obj/io_crc32.o" "$fb/obj/gen_kv.pb-c.o" \
        "${libs[@]}" -o "$fb/gen_seeds"
    echo "[autobuild] fuzz harnesses built in $fb"
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    shm_clean() { # segments of fuzz processes that are gone (crashes leave them)
        local f pid
        for f in /dev/shm/libevkv-fuzz-*; do
            [[ -e $f ]] || continue
            pid=${f##*-}
            kill -0 "$pid" 2>/dev/null || rm -f "$f"
        done
    }
    failed=0
    # every regression input, once
    for h in "${harnesses[@]}"; do
        regs=(fuzz/regressions/$h/*)
        [[ -e ${regs[0]} ]] || continue
        echo "==== $h: ${#regs[@]} regression inputs"
        "$fb/$h" -runs=1 "${regs[@]}" >"$fb/$h.regressions.log" 2>&1 ||
            { tail -n 40 "$fb/$h.regressions.log" >&2
              echo "[autobuild] FAILED: $h regressions" >&2
              failed=1; }
        shm_clean
    done
    # then fuzz, one harness at a time, each for its share of the budget
    share=$((budget / ${#harnesses[@]}))
    if ((share > 0)); then
        for h in "${harnesses[@]}"; do
            maxlen=4096
            [[ $h == fuzz_conn || $h == fuzz_rdb ]] && maxlen=65536
            mkdir -p "$fb/corpus/$h" "$fb/artifacts/$h"
            echo "==== $h: ${share}s, -max_len=$maxlen"
            if "$fb/$h" "$fb/corpus/$h" "fuzz/corpus/$h" -max_total_time="$share" \
                -max_len="$maxlen" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
                -artifact_prefix="$fb/artifacts/$h/" >"$fb/$h.log" 2>&1; then
                execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$fb/$h.log")
                echo "[autobuild] $h: ${execs:-?} executions in ${share}s, no crash, no leak"
            else
                tail -n 60 "$fb/$h.log" >&2
                echo "[autobuild] FAILED: $h (artifacts in $fb/artifacts/$h/)" >&2
                failed=1
            fi
            shm_clean
        done
    fi
    ((failed == 0)) || exit 1
    echo "[autobuild] fuzz: all harnesses passed"
    ;;
*)
    echo "usage: $0 [release|unittest|asan|coverage|faults [POINTS]|fuzz [SECONDS]|install [PREFIX]]" >&2
    exit 2
    ;;
esac

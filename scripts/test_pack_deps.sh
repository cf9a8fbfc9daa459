#!/usr/bin/env bash
# CI check of scripts/pack_deps.sh: packs the dependency folder, checks it holds at most 30 MB,
# configures a fresh build from the repository plus that folder alone (-DHETDRO_DEPS, with
# /usr and /usr/local ignored by every find_package besides), and proves the system's copies
# went unused: the CMake log names the folder for each dependency, no object file was compiled
# against a header of a dependency under /usr/include (ninja's dependency log), and no program
# loads fmt, toml++ or Google Benchmark from /usr. Then it runs `hetdro info`, the whole CPU test
# suite and one benchmark.
# It is also CI's second instruction-set level (issue 17): the code is compiled for x86-64-v2
# (SSE4.2, no AVX, no FMA: other Eigen kernels and other summation orders than scripts/test.sh's
# -march=native build), and the whole CPU suite must pass there with the same tolerances.
# CPU only (-DHETDRO_CUDA=OFF) and only the targets needed; the GPU machine builds the rest
# (scripts/gpu_check.sh). Works in build-pack/ (removed first).
# Usage: scripts/test_pack_deps.sh
set -euo pipefail
case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "test_pack_deps: no arguments expected, got '$1' (see --help)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
start=$SECONDS
work=$PWD/build-pack
deps=$work/deps
build=$work/build
fail() { echo "test_pack_deps: FAIL: $*" >&2; exit 1; }
say() { echo "test_pack_deps: $* ($(( SECONDS - start )) s)"; }

bash scripts/setup.sh --with-torch  # pack_deps.sh packs pytest too
rm -rf "$work"
mkdir -p "$work"

bash scripts/pack_deps.sh "$deps"
bytes=$(du -sb "$deps" | cut -f1)
(( bytes <= 30 * 1000 * 1000 )) || fail "$deps is $bytes bytes, over 30 MB"
say "packed: $bytes bytes"

# /usr and /usr/local ignored on top of CMakeLists.txt's NO_DEFAULT_PATH: a find_package that
# slipped past HETDRO_DEPS fails here rather than finding Debian's copy.
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHETDRO_CUDA=OFF \
  -DHETDRO_NATIVE=OFF -DCMAKE_CXX_FLAGS=-march=x86-64-v2 \
  -DHETDRO_DEPS="$deps" "-DCMAKE_IGNORE_PREFIX_PATH=/usr;/usr/local" 2>&1 | tee "$work/configure.log"
for dep in Eigen3 CLI11 tomlplusplus nlohmann_json fmt ZLIB GTest benchmark; do
  grep -q "^-- hetdro: dependency $dep from $deps/" "$work/configure.log" ||
    fail "the CMake log does not show $dep found under $deps"
done
say "configured: all 8 dependencies found under $deps"

targets=(hetdro hetdro_tests bench_w2_gaussian)
nice cmake --build "$build" --target "${targets[@]}"
say "built ${targets[*]}"

# Every header of a dependency that was compiled against came from the folder.
ninja -C "$build" -t deps >"$work/header_deps.txt"
system_headers='^ +/usr/(local/)?include/(eigen3|CLI|nlohmann|fmt|toml\+\+|gtest|gmock|benchmark)/|^ +/usr/(local/)?include/(zlib|zconf)\.h$'
if grep -E "$system_headers" "$work/header_deps.txt" | head -5 | grep .; then
  fail "objects above were compiled against the system's headers (see $work/header_deps.txt)"
fi
for h in include/eigen3/Eigen/Core include/CLI/CLI.hpp include/toml++/toml.h \
         include/nlohmann/json.hpp include/fmt/format.h include/zlib.h include/gtest/gtest.h \
         include/benchmark/benchmark.h; do
  grep -q "^ *$deps/$h\$" "$work/header_deps.txt" || fail "no object was compiled against $deps/$h"
done
# Linked: nothing of fmt, toml++, zlib or Google Benchmark from /usr.
for exe in hetdro hetdro_tests bench_w2_gaussian; do
  ldd "$build/$exe" >"$work/ldd_$exe.txt"
  if grep -E "lib(fmt|tomlplusplus|benchmark|z)\.so" "$work/ldd_$exe.txt" | grep -v "=> $deps/"; then
    fail "$exe loads the libraries above from outside $deps"
  fi
done
grep -q "libbenchmark.so.1debian => $deps/" "$work/ldd_bench_w2_gaussian.txt" ||
  fail "bench_w2_gaussian does not load Google Benchmark from $deps"
say "no header or library of a dependency came from /usr"

"$build/hetdro" info | tee "$work/info.txt"
grep -q "hetdro" "$work/info.txt" || fail "hetdro info printed no version line"
# The whole CPU suite, with the bars of the native build: every tolerance is from an error model
# that holds for any summation order (STYLE.md), so none may fail here.
grep -q -- '-march=x86-64-v2' "$build/compile_commands.json" ||
  fail "the build was not compiled for x86-64-v2 (compile_commands.json)"
if grep -q -- '-march=native' "$build/compile_commands.json"; then
  fail "-march=native reached the x86-64-v2 build (compile_commands.json)"
fi
"$build/hetdro_tests" --gtest_brief=1
say "the whole CPU suite passed, built for x86-64-v2"
"$build/bench_w2_gaussian" --benchmark_min_time=0.01 --benchmark_filter='/10$' \
  --benchmark_out="$work/bench.json" --benchmark_out_format=json
grep -q '"benchmarks"' "$work/bench.json" || fail "bench_w2_gaussian wrote no JSON"
say "passed"

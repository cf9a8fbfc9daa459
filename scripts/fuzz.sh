#!/usr/bin/env bash
# Fuzzes the readers of untrusted files: builds the libFuzzer targets of fuzz/ with clang,
# AddressSanitizer and UndefinedBehaviorSanitizer in build-fuzz/, makes the seed corpora, and
# runs each target for SECONDS (default 30). Exits non-zero on any finding: a crash, a
# sanitizer report, an exception other than InputError, a single allocation over 512 MB, or
# an input that takes over 10 s. The inputs that caused them are left in
# build-fuzz/findings/<target>/; the corpus grown so far in build-fuzz/corpus/<target>/.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (targets: npy idx csv safetensors config)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(npy idx csv safetensors config)

bash scripts/setup.sh --with-fuzz
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DHETDRO_FUZZ=ON -DHETDRO_TESTS=OFF -DHETDRO_BENCH=OFF -DHETDRO_CUDA=OFF -DHETDRO_NATIVE=OFF \
  > build-fuzz.log 2>&1 || { cat build-fuzz.log; exit 1; }
rm -f build-fuzz.log
cmake --build build-fuzz --target fuzz

# The seeds need the hetdro program itself; the CPU preset (gcc) builds it when it is missing.
hetdro=${HETDRO_BIN:-}
if [[ -z "$hetdro" ]]; then
  for candidate in build-cpu/hetdro build/hetdro; do
    [[ -x $candidate ]] && hetdro=$candidate && break
  done
fi
if [[ -z "$hetdro" ]]; then
  cmake --preset cpu > /dev/null
  cmake --build build-cpu --target hetdro
  hetdro=build-cpu/hetdro
fi
bash fuzz/make_seeds.sh "$hetdro" build-fuzz/seeds

# Every run writes its input to a file; a private folder in memory keeps that fast and tidy.
shm=/dev/shm
[[ -d $shm && -w $shm ]] || shm=${TMPDIR:-/tmp}
TMPDIR=$(mktemp -d -p "$shm" hetdro_fuzz.XXXXXX)
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT

failed=()
for t in "${targets[@]}"; do
  corpus=build-fuzz/corpus/$t findings=build-fuzz/findings/$t
  mkdir -p "$corpus" "$findings"
  inputs=("$corpus" "build-fuzz/seeds/$t")
  [[ -d fuzz/seeds/$t ]] && inputs+=("fuzz/seeds/$t")
  echo "fuzz: $t for ${seconds}s"
  if ! build-fuzz/fuzz/fuzz_$t -dict="fuzz/$t.dict" -max_total_time="$seconds" -timeout=10 \
      -rss_limit_mb=2048 -malloc_limit_mb=512 -artifact_prefix="$findings/" \
      -print_final_stats=1 "${inputs[@]}" > "build-fuzz/$t.log" 2>&1; then
    failed+=("$t")
    tail -n 60 "build-fuzz/$t.log"
  fi
  grep -E "^stat::(number_of_executed_units|new_units_added)|^#[0-9]+ +DONE" "build-fuzz/$t.log" \
    | sed "s/^/  $t: /" || true
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz: findings in ${failed[*]}: see build-fuzz/findings/ and build-fuzz/<target>.log"
  exit 1
fi
echo "fuzz: no findings in ${targets[*]} (${seconds}s each)"

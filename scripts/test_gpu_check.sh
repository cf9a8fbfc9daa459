#!/usr/bin/env bash
# Checks of scripts/gpu_check.sh without a GPU (ctest: gpu_check), so that the first GPU run is
# not also the script's first run. Its bookkeeping runs for real on stub steps (--rehearse:
# DIR/<step>.sh in place of each step's commands): results PASS, FAIL, SKIP and CUT, the exit
# status, summary.md's first lines, the state kept for --rerun-failed, --only, and what $OUT
# receives (at most 8 files: the device tool returns no more). Then the real ctest_gpu and
# memcheck steps with fake ctest and compute-sanitizer (HETDRO_REQUIRE_GPU=1, the deliberate
# failures left out), and, given the GPU test binary, that HETDRO_REQUIRE_GPU=1 turns its skip
# into a failure naming why. Builds nothing; a few seconds.
# Usage: scripts/test_gpu_check.sh [HETDRO_GPU_TESTS_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
gpu_tests=${1:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export TMPDIR=$tmp  # gpu_check.sh's own temporary folder under $OUT, cleaned up with ours
fail() { echo "FAIL: $*" >&2; exit 1; }
# Debian's python3 where there is one (as the other script tests), not a version manager's shim
# that takes a second to start: gpu_check.sh starts python3 for its pip folders on every run.
mkdir -p "$tmp/bin"
if [[ -x /usr/bin/python3 ]]; then ln -s /usr/bin/python3 "$tmp/bin/python3"; fi
export PATH=$tmp/bin:$PATH
steps=(machine configure build info ctest_gpu train vs_torch parity torch_ext bench memcheck racecheck)

stubs() {  # stubs DIR: every step passes; the machine step writes a probe that initialised
  mkdir -p "$1"
  for n in "${steps[@]}"; do echo "echo '$n: rehearsed'" >"$1/$n.sh"; done
  cat >"$1/machine.sh" <<'EOF'
printf 'driver=580.65.06\ncudart=/usr/local/cuda/lib64/libcudart.so.13\nruntime=13.0\ndriver_cuda=13.0\ninitialised=yes\ndetail=1 GPU(s)\n' >"$res/cuda_probe.txt"
EOF
}
# run NAME RC ARGS...: gpu_check.sh with $OUT=$tmp/NAME.out and ARGS; the exit status must be RC.
# Sets $s: the summary.md that $OUT received.
run() {
  local name=$1 want=$2 rc
  shift 2
  set +e
  OUT=$tmp/$name.out bash scripts/gpu_check.sh "$@" >"$tmp/$name.log" 2>&1
  rc=$?
  set -e
  [[ $rc = "$want" ]] || { cat "$tmp/$name.log"; fail "$name: exit $rc, expected $want"; }
  s=$tmp/$name.out/summary.md
}
row() {  # row STEP RESULT [NOTE_REGEX]: summary.md has that row
  grep -Eq "^\| $1 \| $2 \| [0-9]+ \| [0-9]+( of [0-9]+)? \| ${3:-}" "$s" ||
    { cat "$s"; fail "no row '$1 | $2 | ${3:-}' in $s"; }
}
rows() { grep -c '^| [a-z_]* | [A-Z]* |' "$s"; }

# All pass: exit 0, every step a row, the CUDA runtime first, $OUT = summary.md + one archive.
stubs "$tmp/pass"
run pass 0 --rehearse "$tmp/pass" --build "$tmp/b1" --budget 100
for n in "${steps[@]}"; do row "$n" PASS; done
[[ $(rows) = 12 ]] || fail "pass: $(rows) rows, expected 12"
[[ $(sed -n 3p "$s") = "- CUDA runtime: initialised (1 GPU(s))" ]] || { cat "$s"; fail "pass: line 3"; }
[[ $(sed -n 4p "$s") = "- driver and runtime: 580.65.06, supports CUDA 13.0; runtime CUDA 13.0 (/usr/local/cuda/lib64/libcudart.so.13)" ]] ||
  { cat "$s"; fail "pass: line 4"; }
grep -q '^- result: every step that ran passed or skipped; exit status 0$' "$s" || fail "pass: result line"
grep -Eq '^- build: PASS in [0-9]+ s with [0-9]+ jobs, configure [0-9]+ s' "$s" || fail "pass: build time"
files=("$tmp"/pass.out/*)
[[ ${#files[@]} = 2 ]] || fail "pass: \$OUT holds ${files[*]}, not summary.md and one archive"
archive=$(ls "$tmp"/pass.out/gpu_check_*.tar.gz)
tar -tzf "$archive" >"$tmp/list"
for f in summary.md machine.log ctest_gpu.log racecheck.log cuda_probe.txt; do
  grep -q "^gpu_check_[0-9-]*/$f$" "$tmp/list" || fail "pass: the archive lacks $f"
done
[[ $(wc -l <"$tmp/b1/gpu_check_state.tsv") = 12 ]] || fail "pass: the state has not 12 steps"

# One failure, one skip, one own timeout (FAIL, not CUT), a 3 MiB log cut for $OUT, a probe
# that did not initialise: exit 1.
stubs "$tmp/fail"
echo 'echo "2 tests failed"; exit 8' >"$tmp/fail/ctest_gpu.sh"
echo 'echo "skipped: python3 has no torch with CUDA"; exit 77' >"$tmp/fail/vs_torch.sh"
echo 'sleep 10' >"$tmp/fail/bench.sh"
echo 1 >"$tmp/fail/bench.limit"
cat >"$tmp/fail/train.sh" <<'EOF'
head -c 3145728 /dev/zero | tr '\0' x
EOF
cat >"$tmp/fail/machine.sh" <<'EOF'
cat >"$res/cuda_probe.txt" <<'PROBE'
driver=none
runtime=13.0
initialised=no
detail=cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version
PROBE
EOF
run fail 1 --rehearse "$tmp/fail" --build "$tmp/b2" --budget 100
row ctest_gpu FAIL 'exit 8 \|$'
row vs_torch SKIP 'skipped: python3 has no torch with CUDA \|$'
row bench FAIL 'timed out after 1 s \|$'
row train PASS
grep -q '^- CUDA runtime: \*\*did not initialise\*\*: cudaErrorInsufficientDriver: CUDA driver version is insufficient' "$s" ||
  { cat "$s"; fail "fail: the runtime line"; }
grep -q '^- result: 2 failed, 0 cut by the budget; exit status 1$' "$s" || fail "fail: result line"
mkdir "$tmp/unpacked"
tar -xzf "$tmp"/fail.out/gpu_check_*.tar.gz -C "$tmp/unpacked"
size=$(stat -c %s "$tmp"/unpacked/gpu_check_*/train.log)
(( size < 2 << 20 )) || fail "fail: train.log ($size bytes) was not cut for \$OUT"
grep -q 'cut by gpu_check.sh' "$tmp"/unpacked/gpu_check_*/train.log || fail "fail: no cut mark"

# Rerun of what failed, with the fix: machine, configure, build, then ctest_gpu and bench only;
# the state keeps the other steps' results; then nothing is left to rerun.
stubs "$tmp/fixed"
run rerun 0 --rehearse "$tmp/fixed" --build "$tmp/b2" --budget 100 --rerun-failed
for n in machine configure build ctest_gpu bench; do row "$n" PASS; done
[[ $(rows) = 5 ]] || { cat "$s"; fail "rerun: $(rows) rows, expected 5"; }
grep -q '^- a rerun of what failed or was cut in the last check: ctest_gpu, bench$' "$s" || fail "rerun: its line"
grep -q "^vs_torch	SKIP	" "$tmp/b2/gpu_check_state.tsv" || fail "rerun: vs_torch's SKIP was not kept"
grep -q "^ctest_gpu	PASS	" "$tmp/b2/gpu_check_state.tsv" || fail "rerun: ctest_gpu's PASS not kept"
[[ $(wc -l <"$tmp/b2/gpu_check_state.tsv") = 12 ]] || fail "rerun: the state has not 12 steps"
run rerun2 0 --rehearse "$tmp/fixed" --build "$tmp/b2" --budget 100 --rerun-failed
grep -q 'nothing to rerun' "$tmp/rerun2.log" || fail "rerun2: no 'nothing to rerun'"
[[ ! -e $tmp/rerun2.out ]] || fail "rerun2: wrote to \$OUT"

# Cut by the budget: configure's timeout is cut to the 3 s left, runs out: CUT, not FAIL; the
# steps after it are CUT unstarted; exit 3. A rerun then runs all of them.
stubs "$tmp/cut"
echo 'sleep 20' >"$tmp/cut/configure.sh"
run cut 3 --rehearse "$tmp/cut" --build "$tmp/b3" --budget 3
row machine PASS
row configure CUT 'ran out of the [0-9] s the budget left it \(its own timeout: 120 s\)'
row racecheck CUT 'not started: 0 s left of the 3 s budget'
grep -q '^- result: none failed, 11 cut by the budget; exit status 3$' "$s" || { cat "$s"; fail "cut: result line"; }
run cutrerun 0 --rehearse "$tmp/pass" --build "$tmp/b3" --budget 100 --rerun-failed
[[ $(rows) = 12 ]] || fail "cutrerun: $(rows) rows, expected 12"

# --only: the named steps after machine, configure and build.
run only 0 --rehearse "$tmp/pass" --build "$tmp/b4" --budget 100 --only ctest_gpu,train
[[ $(rows) = 5 ]] || { cat "$s"; fail "only: $(rows) rows, expected 5"; }
row ctest_gpu PASS; row train PASS

# Bad arguments: exit 2, saying what was wrong.
run bad1 2 --rehearse "$tmp/pass" --only ctest_gpu,nosuch
grep -q "no step 'nosuch'" "$tmp/bad1.log" || fail "bad1: message"
run bad2 2 --rehearse "$tmp/pass" --only train --rerun-failed
run bad3 2 --rehearse "$tmp/pass" --build "$tmp/b5" --rerun-failed
grep -q 'no earlier check' "$tmp/bad3.log" || fail "bad3: message"
mkdir "$tmp/partial" && cp "$tmp/pass/machine.sh" "$tmp/partial/"
run bad4 2 --rehearse "$tmp/partial"
grep -q 'no .*/configure.sh for step configure' "$tmp/bad4.log" || fail "bad4: message"
run bad5 2 --budget 59
run bad6 2 --rehearse "$tmp/nosuch"

# The real ctest_gpu and memcheck steps, with fake ctest and compute-sanitizer ($tmp/bin) and a
# pretend GPU: HETDRO_REQUIRE_GPU=1 reaches them, and the sanitizer's gtest filter leaves out
# the deliberate failures and the heavy tests.
mkdir -p "$tmp/b6"
printf '#!/bin/sh\n' >"$tmp/b6/hetdro_gpu_tests"
cat >"$tmp/bin/ctest" <<'EOF'
#!/bin/sh
echo "fake $0 HETDRO_REQUIRE_GPU=$HETDRO_REQUIRE_GPU $*"
EOF
cp "$tmp/bin/ctest" "$tmp/bin/compute-sanitizer"
chmod +x "$tmp/b6/hetdro_gpu_tests" "$tmp/bin/ctest" "$tmp/bin/compute-sanitizer"
stubs "$tmp/real"
for n in ctest_gpu memcheck; do
  echo "gpu_name=pretend use_cuda=ON sanitizer=$tmp/bin/compute-sanitizer; step_$n" >"$tmp/real/$n.sh"
done
run real 0 --rehearse "$tmp/real" --build "$tmp/b6" --budget 100 --only ctest_gpu,memcheck \
  --out "$tmp/real.res"
grep -q 'fake .*/ctest HETDRO_REQUIRE_GPU=1 .*-L gpu' "$tmp/real.res/ctest_gpu.log" ||
  { cat "$tmp/real.res/ctest_gpu.log"; fail "ctest_gpu: not run with HETDRO_REQUIRE_GPU=1"; }
grep -q 'fake .*/compute-sanitizer HETDRO_REQUIRE_GPU=1 --tool memcheck .*--gtest_filter=\*-.*CudaBackend\.AFailedCallThrowsNamingIt' \
  "$tmp/real.res/memcheck.log" || { cat "$tmp/real.res/memcheck.log"; fail "memcheck: its filter"; }

# Every test named in the sanitizers' exclusions still exists (a renamed deliberate failure
# would be back under the sanitizer, failing it).
for list in deliberate_failures sanitizer_heavy; do
  names=$(sed -n "s/^$list='\{0,1\}\([^']*\)'\{0,1\}$/\1/p" scripts/gpu_check.sh)
  [[ -n "$names" ]] || fail "no $list= line in scripts/gpu_check.sh"
  IFS=: read -r -a patterns <<<"$names"
  for p in "${patterns[@]}"; do
    [[ "$p" = *'*'* ]] && p=${p//\*/}  # a suite's wildcard: the suite must exist
    suite=${p%%.*} test=${p#*.}
    grep -Eq "^TEST(_P)?\(${suite}, ${test:-[A-Za-z]}" tests/*_cuda.cpp ||
      fail "$list names $p, which no tests/*_cuda.cpp defines"
  done
done

# HETDRO_REQUIRE_GPU=1 in the GPU tests themselves: a skip without it, a failure naming why
# with it (where this machine has no GPU; with one, both pass and there is nothing to show).
if [[ -n "$gpu_tests" ]]; then
  filter='CudaBackend.CopiesRoundTripAndZeroZeroes:Options/StepOnCuda.MatchesTheCpuBackend/Default'
  "$gpu_tests" --gtest_filter="$filter" >"$tmp/plain.log" 2>&1 || { cat "$tmp/plain.log"; fail "without HETDRO_REQUIRE_GPU: exit $?"; }
  if grep -q '^\[  SKIPPED \] 2 tests' "$tmp/plain.log"; then
    set +e
    HETDRO_REQUIRE_GPU=1 "$gpu_tests" --gtest_filter="$filter" >"$tmp/required.log" 2>&1
    rc=$?
    set -e
    [[ $rc != 0 ]] || { cat "$tmp/required.log"; fail "HETDRO_REQUIRE_GPU=1: exit 0 with no GPU"; }
    [[ $(grep -c 'HETDRO_REQUIRE_GPU=1, but there is no GPU to test: ..*' "$tmp/required.log") = 2 ]] ||
      { cat "$tmp/required.log"; fail "HETDRO_REQUIRE_GPU=1: not two failures saying why"; }
    grep -q '^\[  FAILED  \] 2 tests' "$tmp/required.log" || { cat "$tmp/required.log"; fail "not 2 failed"; }
    set +e
    HETDRO_REQUIRE_GPU=yes "$gpu_tests" --gtest_filter="$filter" >"$tmp/bad.log" 2>&1
    rc=$?
    set -e
    if [[ $rc = 0 ]] || ! grep -q "HETDRO_REQUIRE_GPU must be 0 or 1, not 'yes'" "$tmp/bad.log"; then
      cat "$tmp/bad.log"; fail "HETDRO_REQUIRE_GPU=yes was not refused"
    fi
  elif grep -q '^\[  PASSED  \] 2 tests' "$tmp/plain.log"; then
    echo "a GPU is here: the tests ran; HETDRO_REQUIRE_GPU's failure is not shown"
  else
    cat "$tmp/plain.log"; fail "the filter '$filter' did not select two tests"
  fi
fi
echo "test_gpu_check: all checks passed"

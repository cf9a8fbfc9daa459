#!/usr/bin/env bash
# The whole GPU check in one command, for a GPU lent rarely and briefly (about 15 minutes,
# start-up included): under 8 minutes on an H100/H200 (--budget). Steps, each with its own
# timeout; a failed or timed-out step is recorded and the next one runs:
#   machine    GPU (nvidia-smi), driver, CUDA toolkit, where cudart, cuBLAS, cuSOLVER and cuDNN
#              are (the toolkit, else PyTorch's pip folders nvidia/*: HETDRO_CUDA_LIB_ROOTS); a
#              probe of the CUDA runtime (python3 ctypes on that cudart: its version, the
#              driver's, and whether it initialises) for summary.md's first lines
#   configure  CMake + ninja for this GPU only (its compute capability, or --arch), tests and
#              benchmarks on, dependencies from --deps (scripts/pack_deps.sh) when given
#   build      all cores; keeps going past a broken target (ninja -k 0)
#   info       hetdro info
#   ctest_gpu  ctest -L gpu (hetdro_gpu_tests: each kernel against the CPU reference), with
#              HETDRO_REQUIRE_GPU=1: a test that cannot get the CUDA backend fails, saying why
#   train      hetero-fashion prepared from --fashion, one epoch on train.device = "cuda"; when
#              it fails, 20 steps again with --sync-check, whose message names the faulting op
#   vs_torch   scripts/bench_vs_torch.sh on hetero-fashion, cut to fit (--budget 170 s): 30 steps per
#              measurement, the reduced sweep, hetdro's 10-epoch run but not torch's (--torch-train
#              adds it); its summary.md and JSON under vs_torch/
#   parity     two epochs of hetero-fashion on train.device = "cuda" and on "cpu": PASS when every
#              group's test accuracy (report.json) agrees within 0.01
#   torch_ext  hetdro_torch (python/) built with CUDA against this machine's PyTorch, linking this
#              build's libraries (configured position-independent for it), its pytest suite
#              (python/tests, CUDA against CPU; pytest from --deps) and scripts/bench_w2_torch.py
#              on CUDA (w2_gaussian forward + backward against plain PyTorch)
#   bench      every bench/bench_* (short: --benchmark_min_time), JSON + console, and
#              scripts/bench_eigh_torch.py if present
#   memcheck   compute-sanitizer --tool memcheck over hetdro_gpu_tests (--memcheck-filter)
#   racecheck  compute-sanitizer --tool racecheck over hetdro_gpu_tests (--racecheck-filter)
# The sanitizers leave out the tests that fail a CUDA or cuDNN call on purpose (the sanitizer
# would report that as an API error; ctest_gpu runs them) and the whole-step and huge-input
# tests (too slow under a sanitizer for its share; ctest_gpu runs them too): the lists
# deliberate_failures and sanitizer_heavy in this script. Each test's time is in its log.
# Everything lands in one folder: a log per step, the benchmarks' JSON, summary.md (first the
# CUDA runtime: initialised or not, driver and runtime versions; then the device, the build's
# time, and result, limit and time per step). Without $OUT: --out DIR, default
# bench/results/gpu_check_<UTC date>. With $OUT (the device tool returns at most 8 files from
# it): the folder is made in a temporary place and $OUT receives summary.md and
# gpu_check_<date>.tar.gz; unpack that under bench/results/ to commit it.
# Without a GPU (or without nvcc) the GPU steps are skipped, saying so, and the build is
# CPU-only.
# Results: PASS; FAIL (a non-zero exit, or its own timeout ran out); SKIP (nothing to run it
# on, the reason given); CUT (its timeout had been cut to the budget's rest and ran out, or no
# time was left to start it: not a fault of the code, rerun it with more time).
# Exit status: 0 every step that ran passed (or skipped); 1 a step failed; 2 bad arguments;
# 3 none failed but the budget cut one or more.
#
# Two calls in one lease: the build folder keeps each step's last result
# (gpu_check_state.tsv), so a second call can rerun what failed or was cut (--rerun-failed),
# or named steps (--only), after a fix. machine, configure and build always run first (an
# unchanged tree builds in seconds; a stale binary would verify nothing).
# Built on the GPU machine, not carried: it has nvcc, CMake and ninja but none of our Debian
# -dev packages, hence scripts/pack_deps.sh; it builds for its own GPU with its own toolkit.
# Prebuilt binaries would need every shared library they load (benchmark, cuDNN, cuBLAS, ...)
# carried with their paths, and fit one architecture. summary.md records the build's seconds:
# if the first run shows it eating the budget, carry binaries instead.
#
# On the GPU machine, through the device tool (the packed folders must be carried: deps/ is
# ignored by git). Here, once, in the checkout the tool sends (the session's own):
#   bash scripts/pack_deps.sh --fashion deps/fashion deps/pack
# then the device tool's run with carry ["deps"], timeout_s 570, and the command
#   bash scripts/gpu_check.sh --deps deps/pack --fashion deps/fashion
# and after a fix, in the same lease (the build folder is still there):
#   bash scripts/gpu_check.sh --deps deps/pack --fashion deps/fashion --rerun-failed
# (deps/pack about 12 MB, deps/fashion about 31 MB; the limit for all that travels is 64 MiB).
# Rehearsal, no GPU needed (scripts/test_gpu_check.sh, ctest gpu_check): --rehearse DIR runs
# DIR/<step>.sh in place of each step's commands, through the same timeouts, results, summary,
# state and $OUT archive.
#
# Usage: scripts/gpu_check.sh [--deps DIR] [--fashion DIR] [--out DIR] [--build DIR]
#          [--arch SM] [--cuda auto|on|off] [--budget SECONDS] [--only STEP,...]
#          [--rerun-failed] [--memcheck-filter PATTERN] [--racecheck-filter PATTERN]
#          [--bench-filter REGEX] [--werror] [--torch-train] [--rehearse DIR]
#   --deps DIR      dependency folder from scripts/pack_deps.sh (default: the system's packages)
#   --fashion DIR   Fashion-MNIST's four .gz files (default /usr/share/datasets/fashion-mnist
#                   when there; else the train step is skipped)
#   --out DIR       results folder (default bench/results/gpu_check_<date>)
#   --build DIR     build folder (default build-gpu; kept, so a rerun builds only what changed)
#   --arch SM       CMAKE_CUDA_ARCHITECTURES (default: the GPU's compute capability, e.g. 90)
#   --cuda MODE     auto (default): CUDA when nvcc and a GPU are found; on: compile the CUDA
#                   code even without a GPU; off: CPU only
#   --budget S      seconds for the whole check (default 480, at least 60); each step's timeout
#                   is cut to what is left, less 20 s kept for the summary and the archive
#   --only STEPS    comma-separated steps to run (after machine, configure and build)
#   --rerun-failed  run the steps that failed or were cut in this build folder's last check
#   --memcheck-filter P    gtest filter for memcheck (default '*'; the exclusions above are added)
#   --racecheck-filter P   gtest filter for racecheck (default '*'; the exclusions above are added)
#   --bench-filter R  --benchmark_filter for every bench_* (default: all)
#   --torch-train   vs_torch also times torch_reference.py's 10 epochs (a minute or more)
#   --werror        keep warnings as errors (default off here: another compiler's new warning
#                   must not cost the GPU's few minutes; build.log still shows them)
#   --rehearse DIR  each step runs DIR/<step>.sh (bash, with this script's variables: $res,
#                   $build, ...) instead; DIR/<step>.limit, if there, replaces the step's own
#                   timeout; no 20 s reserve and any --budget >= 1, so cuts rehearse in seconds
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "gpu_check: $*" >&2; exit 2; }

command_line="scripts/gpu_check.sh $*"
deps="" fashion="" out="" build="build-gpu" arch="" cuda_mode=auto budget=480 race_filter='*'
mem_filter='*' werror=OFF bench_filter=. torch_train=0 only="" rerun_failed=0 rehearse=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --werror) werror=ON; shift ;;
    --torch-train) torch_train=1; shift ;;
    --rerun-failed) rerun_failed=1; shift ;;
    --deps|--fashion|--out|--build|--arch|--cuda|--budget|--racecheck-filter|--memcheck-filter|\
    --bench-filter|--only|--rehearse)
      [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"
      case "$1" in
        --deps) deps=$2 ;; --fashion) fashion=$2 ;; --out) out=$2 ;; --build) build=$2 ;;
        --arch) arch=$2 ;; --cuda) cuda_mode=$2 ;; --budget) budget=$2 ;;
        --racecheck-filter) race_filter=$2 ;; --memcheck-filter) mem_filter=$2 ;;
        --bench-filter) bench_filter=$2 ;; --only) only=$2 ;; --rehearse) rehearse=$2 ;;
      esac
      shift 2 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
cd "$(dirname "$0")/.."
root=$PWD
all_steps=(machine configure build info ctest_gpu train vs_torch parity torch_ext bench memcheck
           racecheck)
[[ "$cuda_mode" =~ ^(auto|on|off)$ ]] || die "--cuda must be auto, on or off, not '$cuda_mode'"
min_budget=60 reserve=20 min_start=15
if [[ -n "$rehearse" ]]; then
  [[ -d "$rehearse" ]] || die "--rehearse '$rehearse' is not a folder"
  rehearse=$(cd "$rehearse" && pwd)
  min_budget=1 reserve=0 min_start=1
fi
[[ "$budget" =~ ^[0-9]+$ && "$budget" -ge $min_budget ]] ||
  die "--budget must be a whole number of seconds >= $min_budget, not '$budget'"
[[ -n "$only" && $rerun_failed = 1 ]] && die "--only and --rerun-failed exclude each other"
if [[ -n "$deps" ]]; then
  [[ -f "$deps/hetdro-deps.txt" ]] ||
    die "--deps '$deps' is not a folder made by scripts/pack_deps.sh (no hetdro-deps.txt in it)"
  deps=$(cd "$deps" && pwd)
fi
fashion_files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz
               t10k-labels-idx1-ubyte.gz)
if [[ -n "$fashion" ]]; then
  for f in "${fashion_files[@]}"; do
    [[ -f "$fashion/$f" ]] || die "--fashion '$fashion' lacks $f (scripts/pack_deps.sh --fashion DIR makes it)"
  done
  fashion=$(cd "$fashion" && pwd)
elif [[ -f /usr/share/datasets/fashion-mnist/${fashion_files[0]} ]]; then
  fashion=/usr/share/datasets/fashion-mnist
fi
[[ "$build" = /* ]] || build=$root/$build
state_file=$build/gpu_check_state.tsv  # each step's last result: step, result, s, folder, note

# --- which steps run: all; --only's; or the FAIL and CUT of the last check in this build ----
declare -A selected=()
if [[ -n "$only" ]]; then
  IFS=, read -r -a wanted <<<"$only"
  for n in "${wanted[@]}"; do
    [[ " ${all_steps[*]} " = *" $n "* ]] || die "--only: no step '$n' (steps: ${all_steps[*]})"
    selected[$n]=1
  done
elif [[ $rerun_failed = 1 ]]; then
  [[ -f "$state_file" ]] || die "--rerun-failed: no earlier check in $build (no gpu_check_state.tsv)"
  while IFS=$'\t' read -r n st _; do
    if [[ "$st" = FAIL || "$st" = CUT ]]; then selected[$n]=1; fi
  done <"$state_file"
  if [[ ${#selected[@]} -eq 0 ]]; then
    echo "gpu_check: no step failed or was cut in the last check ($state_file): nothing to rerun"
    exit 0
  fi
  rerun_steps=""
  for n in "${all_steps[@]}"; do
    if [[ -n "${selected[$n]:-}" ]]; then rerun_steps+="${rerun_steps:+, }$n"; fi
  done
else
  for n in "${all_steps[@]}"; do selected[$n]=1; done
fi
for n in machine configure build; do selected[$n]=1; done
if [[ -n "$rehearse" ]]; then
  for n in "${all_steps[@]}"; do
    [[ -z "${selected[$n]:-}" || -f "$rehearse/$n.sh" ]] ||
      die "--rehearse: no $rehearse/$n.sh for step $n"
    [[ ! -f "$rehearse/$n.limit" || "$(<"$rehearse/$n.limit")" =~ ^[1-9][0-9]*$ ]] ||
      die "--rehearse: $rehearse/$n.limit must hold a whole number of seconds >= 1"
  done
fi

stamp=$(date -u +%Y%m%d-%H%M%S)
name=gpu_check_$stamp
if [[ -n "$out" ]]; then
  res=$out
elif [[ -n "${OUT:-}" ]]; then
  res=$(mktemp -d)/$name
else
  res=$root/bench/results/$name
fi
mkdir -p "$res"
res=$(cd "$res" && pwd)
work=$build/gpu_check_work  # scratch: the prepared data and the training run
start=$SECONDS
deadline=$(( start + budget - reserve ))  # the reserve: for the summary and the archive

# --- the machine: found here, reported by the machine step --------------------------------
smi=$(command -v nvidia-smi || true)
[[ -z "$smi" && -x /usr/local/nvidia/bin/nvidia-smi ]] && smi=/usr/local/nvidia/bin/nvidia-smi
gpu_name="" compute_cap=""
if [[ -n "$smi" ]] && "$smi" -L >/dev/null 2>&1; then
  gpu_name=$("$smi" --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
  compute_cap=$("$smi" --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .' || true)
fi
# CMake and ninja may be only in the Python environment's bin (pip's cmake and ninja).
if ! command -v ninja >/dev/null || ! command -v cmake >/dev/null; then
  pybin=$(dirname "$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null || echo /nonexistent/x)")
  [[ -d "$pybin" ]] && PATH=$PATH:$pybin
fi
command -v cmake >/dev/null || { echo "gpu_check: cmake not found" >&2; exit 1; }
generator=Ninja keep_going=(-- -k 0)
command -v ninja >/dev/null || { generator="Unix Makefiles"; keep_going=(-- -k); }
nvcc=$(command -v nvcc || true)
[[ -z "$nvcc" && -x /usr/local/cuda/bin/nvcc ]] && nvcc=/usr/local/cuda/bin/nvcc
cuda_home=""
[[ -n "$nvcc" ]] && cuda_home=$(dirname "$(dirname "$(readlink -f "$nvcc")")")
sanitizer=$(command -v compute-sanitizer || true)
for c in "$cuda_home/bin/compute-sanitizer" "$cuda_home/compute-sanitizer/compute-sanitizer"; do
  if [[ -z "$sanitizer" && -n "$cuda_home" && -x "$c" ]]; then sanitizer=$c; fi
done

use_cuda=OFF
case "$cuda_mode" in
  on) use_cuda=ON; cuda_why="--cuda on" ;;
  off) cuda_why="--cuda off" ;;
  auto) if [[ -z "$nvcc" ]]; then cuda_why="no nvcc found"
        elif [[ -z "$gpu_name" ]]; then cuda_why="no GPU found; --cuda on compiles the CUDA code anyway"
        else use_cuda=ON; cuda_why="nvcc and a GPU found"; fi ;;
esac
[[ "$use_cuda" = ON && -z "$nvcc" ]] && die "--cuda on, but no nvcc on PATH or in /usr/local/cuda/bin"
if [[ -z "$arch" ]]; then
  if [[ -n "$compute_cap" ]]; then arch=$compute_cap; else arch=native; fi
  [[ -z "$gpu_name" && "$use_cuda" = ON ]] && arch=90  # no GPU to ask: Hopper
fi

# cuBLAS, cuSOLVER, cuDNN: the toolkit's when it has them, else from PyTorch's pip folders
# (nvidia/<lib>/ or the consolidated nvidia/cu13/), passed as HETDRO_CUDA_LIB_ROOTS.
pip_dirs=()
if command -v python3 >/dev/null; then
  list_pip_dirs='
import os
try:
    import nvidia
except ImportError:
    raise SystemExit
for base in list(nvidia.__path__):
    for d in sorted(os.listdir(base)):
        p = os.path.join(base, d)
        if os.path.isdir(os.path.join(p, "lib")):
            print(p)
'
  mapfile -t pip_dirs < <(python3 -c "$list_pip_dirs" 2>/dev/null || true)
fi
toolkit_libdirs=()
for d in lib64 lib targets/x86_64-linux/lib; do
  if [[ -n "$cuda_home" && -d "$cuda_home/$d" ]]; then toolkit_libdirs+=("$cuda_home/$d"); fi
done
lib_in() {  # lib_in NAME DIR...: the first libNAME.so or libNAME.so.N in the folders
  local n=$1 d f; shift
  for d in "$@"; do
    for f in "$d/lib$n.so" "$d"/lib"$n".so.[0-9]*; do
      [[ -e "$f" ]] && { echo "$f"; return 0; }
    done
  done
  return 1
}
cuda_roots=() lib_report=()
for n in cudart cublas cusolver cudnn; do
  if f=$(lib_in "$n" "${toolkit_libdirs[@]}"); then
    lib_report+=("$n: $f (CUDA toolkit)")
  elif [[ ${#pip_dirs[@]} -gt 0 ]] && f=$(lib_in "$n" "${pip_dirs[@]/%//lib}"); then
    r=$(dirname "$(dirname "$f")")
    lib_report+=("$n: $f (pip: HETDRO_CUDA_LIB_ROOTS)")
    [[ " ${cuda_roots[*]} " = *" $r "* || "$n" = cudart ]] || cuda_roots+=("$r")
  else
    lib_report+=("$n: not found")
  fi
done
cudart_lib=$(printf '%s\n' "${lib_report[@]}" | sed -n 's/^cudart: \(.*\) (.*)$/\1/p')
pip_libpath=$(IFS=:; echo "${pip_dirs[*]/%//lib}")
# Run steps find the pip libraries' siblings (cuDNN opens its engines at run time).
[[ -n "$pip_libpath" ]] && export LD_LIBRARY_PATH="$pip_libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

jobs=$(nproc)
export root build res work deps fashion arch use_cuda nvcc sanitizer race_filter mem_filter jobs
export werror rehearse
export bench_filter torch_train generator keep_going_text="${keep_going[*]}"
export smi gpu_name cuda_home cuda_why cudart_lib
cuda_roots_list=$(IFS=';'; echo "${cuda_roots[*]}")
lib_report_text=$(printf '%s\n' "${lib_report[@]}")
pip_dirs_text=$(printf '%s\n' "${pip_dirs[@]}")
export cuda_roots_list lib_report_text pip_dirs_text

# --- the steps: each a function run under `timeout` in its own bash; exit 77 = skipped, with
# the reason as the log's last line --------------------------------------------------------
need_gpu() {
  if [[ -z "$gpu_name" ]]; then echo "skipped: no GPU (nvidia-smi found none)"; exit 77; fi
  if [[ "$use_cuda" != ON ]]; then echo "skipped: the build has no CUDA (no nvcc, or --cuda off)"; exit 77; fi
}
need_exe() {
  [[ -x "$build/$1" ]] || { echo "skipped: $build/$1 was not built (see build.log)"; exit 77; }
}

# $res/cuda_probe.txt (key=value), for summary.md's first lines: the cudart the build links
# (CUDA::cudart), its version, the CUDA version the driver supports, and whether the runtime
# initialises (cudaFree(0) makes the context; a too-old driver fails here, naming itself).
cuda_probe() {
  local smi_driver=""
  if [[ -n "$gpu_name" ]]; then
    smi_driver=$("$smi" --query-gpu=driver_version --format=csv,noheader | head -1 || true)
  fi
  echo "driver=${smi_driver:-none (nvidia-smi found no GPU)}"
  if [[ -z "$cudart_lib" ]]; then
    echo "initialised=not probed"; echo "detail=no libcudart found (see CUDA libraries)"
  elif ! command -v python3 >/dev/null; then
    echo "initialised=not probed"; echo "detail=no python3 for the ctypes probe"
  else
    echo "cudart=$cudart_lib"
    python3 - "$cudart_lib" <<'PY' || echo "detail=the probe itself failed (exit $?)"
import ctypes, sys
try:
    rt = ctypes.CDLL(sys.argv[1])
except OSError as e:
    print("initialised=no\ndetail=cannot load %s: %s" % (sys.argv[1], e))
    sys.exit()
def version(v):
    return "%d.%d" % (v // 1000, v % 1000 // 10) if v else "none (no driver loaded)"
v = ctypes.c_int(0)
rt.cudaRuntimeGetVersion(ctypes.byref(v))
print("runtime=" + version(v.value))
v = ctypes.c_int(0)
rt.cudaDriverGetVersion(ctypes.byref(v))  # 0: no driver loaded
print("driver_cuda=" + version(v.value))
n = ctypes.c_int(0)
err = rt.cudaGetDeviceCount(ctypes.byref(n))
if err == 0:
    err = rt.cudaFree(None)
rt.cudaGetErrorName.restype = rt.cudaGetErrorString.restype = ctypes.c_char_p
if err == 0:
    print("initialised=yes\ndetail=%d GPU(s)" % n.value)
else:
    print("initialised=no\ndetail=%s: %s" % (rt.cudaGetErrorName(err).decode(),
                                              rt.cudaGetErrorString(err).decode()))
PY
  fi
}

step_machine() {
  cuda_probe >"$res/cuda_probe.txt"
  echo "CUDA runtime probe:"
  sed 's/^/  /' "$res/cuda_probe.txt"
  echo "host: $(uname -n), $(uname -srm), $(nproc) cores"
  [[ -f /etc/os-release ]] && (. /etc/os-release && echo "os: $PRETTY_NAME")
  if [[ -n "$gpu_name" ]]; then
    "$smi"
    "$smi" --query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm,clocks.max.mem --format=csv
  else
    echo "GPU: none (${smi:-nvidia-smi not found})"
  fi
  if [[ -n "$nvcc" ]]; then "$nvcc" --version | tail -2; else echo "nvcc: not found"; fi
  echo "compute-sanitizer: ${sanitizer:-not found}"
  cmake --version | head -1
  echo "ninja: $(ninja --version 2>/dev/null || echo 'not found: make')"
  echo "c++: $(c++ --version | head -1)"
  python3 -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPU", torch.cuda.is_available())' 2>/dev/null || echo "torch: not importable"
  echo "CUDA libraries:"
  echo "$lib_report_text" | sed 's/^/  /'
  echo "pip nvidia folders: ${pip_dirs_text:-(none)}" | sed '2,$s/^/  /'
  echo "HETDRO_CUDA_LIB_ROOTS: ${cuda_roots_list:-(none: all from the toolkit)}"
  echo "dependencies: ${deps:-the system packages}"
  [[ -n "$deps" ]] && cat "$deps/hetdro-deps.txt"
  echo "build: CUDA $use_cuda ($cuda_why), CMAKE_CUDA_ARCHITECTURES=$arch, $jobs jobs, in $build"
  echo "Fashion-MNIST: ${fashion:-none}"
}

step_configure() {
  local args=(-S "$root" -B "$build" -G "$generator" -DCMAKE_BUILD_TYPE=Release
              -DHETDRO_CUDA="$use_cuda" -DHETDRO_TESTS=ON -DHETDRO_BENCH=ON -DHETDRO_WERROR="$werror"
              -DCMAKE_POSITION_INDEPENDENT_CODE=ON)  # PIC: hetdro_torch links these libraries
  [[ "$use_cuda" = ON ]] && args+=(-DCMAKE_CUDA_ARCHITECTURES="$arch" -DCMAKE_CUDA_COMPILER="$nvcc")
  [[ -n "$deps" ]] && args+=(-DHETDRO_DEPS="$deps")
  [[ -n "$cuda_roots_list" ]] && args+=(-DHETDRO_CUDA_LIB_ROOTS="$cuda_roots_list")
  # CMake 4 refuses the cmake_policy(VERSION 2.6...) of Debian's older config files.
  local major
  major=$(cmake --version | head -1 | sed 's/[^0-9]*\([0-9]*\).*/\1/')
  if [[ "$major" -ge 4 ]]; then args+=(-DCMAKE_POLICY_VERSION_MINIMUM=3.5); fi
  echo "cmake ${args[*]}"
  cmake "${args[@]}"
}

step_build() {
  [[ "$configure_state" = PASS ]] || { echo "skipped: configure failed (see configure.log)"; exit 77; }
  # shellcheck disable=SC2086  # "-- -k 0" or "-- -k": words on purpose
  cmake --build "$build" -j "$jobs" $keep_going_text
}

step_info() {
  need_exe hetdro
  "$build/hetdro" info
}

step_ctest_gpu() {
  need_gpu; need_exe hetdro_gpu_tests
  HETDRO_REQUIRE_GPU=1 ctest --test-dir "$build" -L gpu --output-on-failure --timeout 120 -j 4 \
    --output-junit "$res/ctest_gpu.xml"
}

# Left out of the sanitizer runs, both run by ctest_gpu. deliberate_failures fail a CUDA or
# cuDNN call on purpose (a 4 PiB cudaMalloc, a refused convolution), which the sanitizer would
# report as an API error; scripts/test_gpu_check.sh checks that these tests still exist.
# sanitizer_heavy: whole training steps (100 steps, graph replays), 10 GiB and a million
# samples, too slow under a sanitizer (10-100x) for its 120-150 s; the per-op tests cover
# every kernel they run.
deliberate_failures=CudaBackend.AFailedCallThrowsNamingIt:Conv2dCuda.ARefusedShapeThrowsNamingTheCall
sanitizer_heavy='*StepOnCuda.*:GatherBatchCuda.OffsetsBeyondTwoToThe31:ClassMomentsCuda.AMillionSamples'
export deliberate_failures sanitizer_heavy
sanitize() {  # sanitize TOOL GTEST_FILTER [compute-sanitizer options...]
  need_gpu; need_exe hetdro_gpu_tests
  [[ -n "$sanitizer" ]] || { echo "skipped: compute-sanitizer not found"; exit 77; }
  local filter=$2 sep=-
  [[ "$filter" = *-* ]] && sep=:  # the filter has negative patterns already: add to them
  filter="$filter$sep$deliberate_failures:$sanitizer_heavy"
  echo "gtest filter: $filter"
  HETDRO_REQUIRE_GPU=1 "$sanitizer" --tool "$1" --error-exitcode 1 --print-limit 50 "${@:3}" \
    "$build/hetdro_gpu_tests" --gtest_filter="$filter"
}
step_memcheck() { sanitize memcheck "$mem_filter"; }
step_racecheck() { sanitize racecheck "$race_filter" --racecheck-report analysis; }

step_bench() {
  local failed=0 ran=0 b n
  for b in "$build"/bench_*; do
    [[ -x "$b" && -f "$b" ]] || continue
    n=$(basename "$b")
    echo "== $n"
    ran=$((ran + 1))
    timeout -k 5 120 "$b" --benchmark_min_time=0.05 --benchmark_filter="$bench_filter" \
      --benchmark_out="$res/$n.json" --benchmark_out_format=json || { echo "!! $n failed (exit $?)"; failed=1; }
  done
  if [[ -f "$root/scripts/bench_eigh_torch.py" ]]; then
    echo "== scripts/bench_eigh_torch.py"
    ran=$((ran + 1))
    if python3 -c 'import torch' 2>/dev/null; then
      (cd "$res" && timeout -k 5 120 python3 "$root/scripts/bench_eigh_torch.py") ||
        { echo "!! bench_eigh_torch.py failed (exit $?)"; failed=1; }
    else
      echo "skipped bench_eigh_torch.py: python3 has no torch"
    fi
  fi
  [[ $ran -gt 0 ]] || { echo "skipped: no bench_* program was built"; exit 77; }
  return "$failed"
}

step_torch_ext() {
  need_gpu
  [[ "$use_cuda" = ON ]] || { echo "skipped: the build has no CUDA"; exit 77; }
  python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null ||
    { echo "skipped: python3 has no torch with CUDA"; exit 77; }
  local site=$work/python failed=0
  local py_path=$site
  if [[ -n "$deps" && -d "$deps/python" ]]; then py_path+=":$deps/python"; fi
  bash "$root/scripts/install_python.sh" --no-setup --build "$build" \
    --python "$(command -v python3)" --target "$site"
  echo "== pytest python/tests"
  (cd "$root" && PYTHONPATH=$py_path timeout -k 5 100 python3 -m pytest -q -p no:cacheprovider \
    python/tests --junitxml "$res/torch_ext_pytest.xml") || { echo "!! pytest failed (exit $?)"; failed=1; }
  echo "== scripts/bench_w2_torch.py --device cuda"
  PYTHONPATH=$py_path timeout -k 5 100 python3 "$root/scripts/bench_w2_torch.py" --device cuda \
    --out "$res/w2_torch_cuda.md" || { echo "!! bench_w2_torch.py failed (exit $?)"; failed=1; }
  return "$failed"
}

step_train() {
  need_gpu; need_exe hetdro
  [[ -n "$fashion" ]] || { echo "skipped: no Fashion-MNIST (--fashion DIR)"; exit 77; }
  rm -rf "$work"; mkdir -p "$work"
  "$build/hetdro" prepare hetero-fashion --source "$fashion" --out "$work/hf"
  local train=("$build/hetdro" train --config "$work/hf/config.toml" --set 'train.device="cuda"')
  if ! "${train[@]}" --out "$work/run" --set train.epochs=1; then
    # Name the op that faulted: the same training again, 20 steps, synchronising after every op
    # (--sync-check, docs/DESIGN.md §3); its message names the op, the step and the buffers.
    echo "!! train failed: again with --sync-check, to name the op that faulted"
    "${train[@]}" --out "$work/run_sync_check" --set train.epochs=1 --sync-check --max-steps 20 ||
      true
    return 1
  fi
  cp "$work/run/metrics.jsonl" "$work/run/report.json" "$res/" 2>/dev/null || true
}

# hetero-fashion for parity and vs_torch: the train step's copy, else prepared here.
need_hf() {
  [[ -n "$fashion" ]] || { echo "skipped: no Fashion-MNIST (--fashion DIR)"; exit 77; }
  if [[ ! -f "$work/hf/config.toml" ]]; then
    mkdir -p "$work"
    "$build/hetdro" prepare hetero-fashion --source "$fashion" --out "$work/hf"
  fi
}

step_parity() {
  need_gpu; need_exe hetdro; need_hf
  local d
  for d in cuda cpu; do
    "$build/hetdro" train --config "$work/hf/config.toml" --out "$work/parity_$d" --overwrite \
      --set "train.device=\"$d\"" --set train.epochs=2
    cp "$work/parity_$d/report.json" "$res/parity_${d}_report.json"
  done
  python3 - "$res/parity_cuda_report.json" "$res/parity_cpu_report.json" <<'PY'
import json, sys
a, b = (json.load(open(p))["test_acc"] for p in sys.argv[1:3])
bad = 0
for g in sorted(set(a) | set(b)):
    d = abs(a.get(g, float("nan")) - b.get(g, float("nan")))
    ok = d <= 0.01
    bad += not ok
    print("%-10s cuda %.4f  cpu %.4f  |diff| %.4f  %s" % (g, a.get(g, float("nan")), b.get(g, float("nan")), d,
                                                         "ok" if ok else "MORE THAN 0.01"))
sys.exit(1 if bad else 0)
PY
}

step_vs_torch() {
  need_gpu; need_exe hetdro; need_hf
  python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null ||
    { echo "skipped: python3 has no torch with CUDA"; exit 77; }
  local extra=(--no-torch-train)
  [[ "$torch_train" = 1 ]] && extra=()
  bash "$root/scripts/bench_vs_torch.sh" --device cuda --hetdro "$build/hetdro" \
    --config "$work/hf/config.toml" --out "$res/vs_torch" --steps 30 --warmup 10 --sweep reduced \
    --timeout 90 --budget 170 "${extra[@]}"
}
export -f need_gpu need_exe need_hf cuda_probe sanitize step_machine step_configure step_build \
  step_info step_ctest_gpu step_memcheck step_racecheck step_bench step_train step_parity step_vs_torch \
  step_torch_ext

names=() states=() secs=() limits=() notes=()
declare -A result_of=() secs_of=()
record() {  # record NAME RESULT SECONDS LIMIT NOTE
  names+=("$1"); states+=("$2"); secs+=("$3"); limits+=("$4"); notes+=("$5")
  result_of[$1]=$2 secs_of[$1]=$3
  echo "-- $1: $2 ($3 s)${5:+: $5}"
}
run_step() {  # run_step NAME TIMEOUT_SECONDS: the step, unless not selected
  local n=$1 own=$2 limit left log="$res/$1.log" rc t0 cmd="step_$1"
  [[ -n "${selected[$n]:-}" ]] || return 0
  if [[ -n "$rehearse" ]]; then
    cmd="source \"\$rehearse/$n.sh\""
    [[ -f "$rehearse/$n.limit" ]] && own=$(<"$rehearse/$n.limit")
  fi
  limit=$own left=$(( deadline - SECONDS ))
  if (( left < min_start )); then
    record "$n" CUT 0 "0 of $own" "not started: $(( left > 0 ? left : 0 )) s left of the $budget s budget"
    return 0
  fi
  if (( limit > left )); then limit=$left; fi
  echo "== gpu_check: $n (timeout $limit s, $(( SECONDS - start )) s so far)"
  t0=$SECONDS
  set +e
  timeout -k 10 "$limit" bash -c "set -euo pipefail; $cmd" >"$log" 2>&1
  rc=$?
  set -e
  local took=$(( SECONDS - t0 )) given=$limit
  (( limit < own )) && given="$limit of $own"
  if [[ $rc = 0 ]]; then
    record "$n" PASS "$took" "$given" ""
  elif [[ $rc = 77 ]]; then
    record "$n" SKIP "$took" "$given" "$(tail -n 1 "$log")"
  elif [[ ($rc = 124 || $rc = 137) && $took -ge $limit ]]; then
    # Its timeout ran out: the code's fault only if it had its whole own timeout.
    if (( limit < own )); then
      record "$n" CUT "$took" "$given" "ran out of the $limit s the budget left it (its own timeout: $own s)"
    else
      record "$n" FAIL "$took" "$given" "timed out after $limit s"
    fi
  else
    record "$n" FAIL "$took" "$given" "exit $rc"
  fi
  if [[ ${states[-1]} = FAIL ]]; then tail -n 25 "$log" | sed 's/^/   | /'; fi
  return 0
}

run_step machine 30
if [[ -f "$res/machine.log" ]]; then cat "$res/machine.log"; fi
run_step configure 120
export configure_state=${result_of[configure]}
run_step build 330
run_step info 30
# In the order of what a short GPU session most needs to learn: correctness, training, the
# comparison with PyTorch, then the kernel benchmarks and the sanitizers (the budget may cut these).
run_step ctest_gpu 150
run_step train 120
run_step vs_torch 200
run_step parity 150
run_step torch_ext 150
run_step bench 150
run_step memcheck 150
run_step racecheck 120

n_fail=0 n_cut=0
for st in "${states[@]}"; do
  case $st in FAIL) n_fail=$((n_fail + 1)) ;; CUT) n_cut=$((n_cut + 1)) ;; esac
done
status=0 verdict="every step that ran passed or skipped"
if (( n_fail > 0 )); then
  status=1 verdict="$n_fail failed, $n_cut cut by the budget"
elif (( n_cut > 0 )); then
  status=3 verdict="none failed, $n_cut cut by the budget"
fi

# --- each step's last result, kept in the build folder for --rerun-failed -----------------
mkdir -p "$build"
{
  if [[ -f "$state_file" ]]; then
    while IFS=$'\t' read -r n rest; do
      if [[ -z "${result_of[$n]:-}" ]]; then printf '%s\t%s\n' "$n" "$rest"; fi
    done <"$state_file"
  fi
  for i in "${!names[@]}"; do
    printf '%s\t%s\t%s\t%s\t%s\n' "${names[$i]}" "${states[$i]}" "${secs[$i]}" "$(basename "$res")" \
      "${notes[$i]//$'\t'/ }"
  done
} >"$state_file.new"
mv "$state_file.new" "$state_file"

# --- summary.md, and the archive for the device tool -------------------------------------
probe() {  # probe KEY: the machine step's probe of the CUDA runtime, or "?"
  local v=""
  [[ -f "$res/cuda_probe.txt" ]] && v=$(sed -n "s/^$1=//p" "$res/cuda_probe.txt" | head -1)
  echo "${v:-?}"
}
if [[ -f "$res/cuda_probe.txt" ]]; then
  case $(probe initialised) in
    yes) runtime_line="initialised ($(probe detail))" ;;
    no) runtime_line="**did not initialise**: $(probe detail)" ;;
    *) runtime_line="not probed: $(probe detail)" ;;
  esac
  versions_line="$(probe driver), supports CUDA $(probe driver_cuda); runtime CUDA $(probe runtime) ($(probe cudart))"
else
  runtime_line="not probed (the machine step wrote no cuda_probe.txt: see machine.log)"
  versions_line="unknown"
fi
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo "unknown (no git here)")
smi_driver=""
[[ -n "$gpu_name" ]] && smi_driver=$("$smi" --query-gpu=driver_version --format=csv,noheader | head -1 || true)
{
  echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- CUDA runtime: $runtime_line"
  echo "- driver and runtime: $versions_line"
  if [[ -f "$res/info.log" ]] && grep -q '^GPU' "$res/info.log"; then
    echo "- hetdro info: $(grep '^GPU' "$res/info.log" | paste -sd ';' | sed 's/;/; /g')"
  fi
  echo "- result: $verdict; exit status $status"
  echo "- device: ${gpu_name:-no GPU}${smi_driver:+, driver $smi_driver, compute capability $compute_cap}"
  echo "- CUDA: $([[ -n "$nvcc" ]] && "$nvcc" --version | grep -o 'release [0-9.]*' || echo 'no nvcc'); build: CUDA $use_cuda ($cuda_why)$([[ $use_cuda = ON ]] && echo ", architectures $arch")"
  echo "- build: ${result_of[build]} in ${secs_of[build]} s with $jobs jobs, configure ${secs_of[configure]} s (what building here costs: see gpu_check.sh's header)"
  echo "- libraries: $(echo "$lib_report_text" | paste -sd ';' | sed 's/;/; /g')"
  echo "- host: $(uname -n), $(nproc) cores; commit $commit"
  echo "- command: \`$command_line\`"
  if [[ -n "${rerun_steps:-}" ]]; then
    echo "- a rerun of what failed or was cut in the last check: $rerun_steps"
  fi
  echo "- dependencies: ${deps:-system packages}; Fashion-MNIST: ${fashion:-none}"
  echo "- total: $(( SECONDS - start )) s of a $budget s budget"
  echo
  echo "| step | result | seconds | limit (s) | note |"
  echo "|---|---|---:|---:|---|"
  for i in "${!names[@]}"; do
    echo "| ${names[$i]} | ${states[$i]} | ${secs[$i]} | ${limits[$i]} | ${notes[$i]//|/\\|} |"
  done
  echo
  echo "PASS, FAIL, SKIP (nothing to run it on), CUT (the budget ran out first: not a fault of the"
  echo "code). Each step's output is in <step>.log beside this file; benchmarks in bench_*.json;"
  echo "parity_*_report.json; the PyTorch comparison in vs_torch/ (its own summary.md); hetdro_torch's"
  echo "pytest results in torch_ext_pytest.xml and its W2 timings in w2_torch_cuda.md."
} >"$res/summary.md"
echo
cat "$res/summary.md"
echo "gpu_check: results in $res"

if [[ -n "${OUT:-}" ]]; then
  # The device tool returns at most 8 files of at most 16 MiB: summary.md and one archive,
  # with any log over 2 MiB cut to its first 0.5 and last 1 MiB.
  for f in "$res"/*.log; do
    [[ -f "$f" ]] || continue
    if [[ $(stat -c %s "$f") -gt $((2 << 20)) ]]; then
      { head -c $((512 << 10)) "$f"; echo; echo "[... cut by gpu_check.sh ...]"; tail -c $((1 << 20)) "$f"; } >"$f.cut"
      mv "$f.cut" "$f"
    fi
  done
  mkdir -p "$OUT"
  cp "$res/summary.md" "$OUT/summary.md"
  tar -czf "$OUT/$(basename "$res").tar.gz" -C "$(dirname "$res")" "$(basename "$res")"
  echo "gpu_check: \$OUT holds summary.md and $(basename "$res").tar.gz (unpack under bench/results/)"
fi
exit $status

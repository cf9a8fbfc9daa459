#!/usr/bin/env bash
# The whole GPU check in one command, for a GPU lent rarely and briefly (about 15 minutes,
# start-up included): under 8 minutes on an H100/H200 (--budget). Steps, each with its own
# timeout; a failed or timed-out step is recorded and the next one runs:
#   machine    GPU (nvidia-smi), driver, CUDA toolkit, where cudart, cuBLAS, cuSOLVER and cuDNN
#              are (the toolkit, else PyTorch's pip folders nvidia/*: HETDRO_CUDA_LIB_ROOTS)
#   configure  CMake + ninja for this GPU only (its compute capability, or --arch), tests and
#              benchmarks on, dependencies from --deps (scripts/pack_deps.sh) when given
#   build      all cores; keeps going past a broken target (ninja -k 0)
#   info       hetdro info
#   ctest_gpu  ctest -L gpu (hetdro_gpu_tests: each kernel against the CPU reference)
#   train      hetero-fashion prepared from --fashion, one epoch on train.device = "cuda"
#   vs_torch   scripts/bench_vs_torch.sh on hetero-fashion, cut to fit (--budget 170 s): 30 steps per
#              measurement, the reduced sweep, hetdro's 10-epoch run but not torch's (--torch-train
#              adds it); its summary.md and JSON under vs_torch/
#   parity     two epochs of hetero-fashion on train.device = "cuda" and on "cpu": PASS when every
#              group's test accuracy (report.json) agrees within 0.01
#   bench      every bench/bench_* (short: --benchmark_min_time), JSON + console, and
#              scripts/bench_eigh_torch.py if present
#   memcheck   compute-sanitizer --tool memcheck over hetdro_gpu_tests
#   racecheck  compute-sanitizer --tool racecheck over hetdro_gpu_tests (--racecheck-filter)
# Everything lands in one folder: a log per step, the benchmarks' JSON, summary.md (device,
# date, command, pass/fail and time per step). Without $OUT: --out DIR, default
# bench/results/gpu_check_<UTC date>. With $OUT (the device tool returns at most 8 files from
# it): the folder is made in a temporary place and $OUT receives summary.md and
# gpu_check_<date>.tar.gz; unpack that under bench/results/ to commit it.
# Without a GPU (or without nvcc) the GPU steps are skipped, saying so, and the build is
# CPU-only. Exit status: 0 when every step that ran passed, 1 when one failed, 2 on bad
# arguments.
#
# On the GPU machine, through the device tool (the packed folders must be carried: deps/ is
# ignored by git). Here, once, in the checkout the tool sends (the session's own):
#   bash scripts/pack_deps.sh --fashion deps/fashion deps/pack
# then the device tool's run with carry ["deps"], timeout_s 570, and the command
#   bash scripts/gpu_check.sh --deps deps/pack --fashion deps/fashion
# (deps/pack about 12 MB, deps/fashion about 31 MB; the limit for all that travels is 64 MiB).
#
# Usage: scripts/gpu_check.sh [--deps DIR] [--fashion DIR] [--out DIR] [--build DIR]
#          [--arch SM] [--cuda auto|on|off] [--budget SECONDS] [--racecheck-filter PATTERN]
#          [--bench-filter REGEX] [--werror] [--torch-train]
#   --deps DIR      dependency folder from scripts/pack_deps.sh (default: the system's packages)
#   --fashion DIR   Fashion-MNIST's four .gz files (default /usr/share/datasets/fashion-mnist
#                   when there; else the train step is skipped)
#   --out DIR       results folder (default bench/results/gpu_check_<date>)
#   --build DIR     build folder (default build-gpu; kept, so a rerun builds only what changed)
#   --arch SM       CMAKE_CUDA_ARCHITECTURES (default: the GPU's compute capability, e.g. 90)
#   --cuda MODE     auto (default): CUDA when nvcc and a GPU are found; on: compile the CUDA
#                   code even without a GPU; off: CPU only
#   --budget S      seconds for the whole check (default 480); each step's timeout is cut to
#                   what is left
#   --racecheck-filter P   gtest filter for racecheck (default '*')
#   --bench-filter R  --benchmark_filter for every bench_* (default: all)
#   --torch-train   vs_torch also times torch_reference.py's 10 epochs (a minute or more)
#   --werror        keep warnings as errors (default off here: another compiler's new warning
#                   must not cost the GPU's few minutes; build.log still shows them)
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "gpu_check: $*" >&2; exit 2; }

command_line="scripts/gpu_check.sh $*"
deps="" fashion="" out="" build="build-gpu" arch="" cuda_mode=auto budget=480 race_filter='*'
werror=OFF bench_filter=. torch_train=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --werror) werror=ON; shift ;;
    --torch-train) torch_train=1; shift ;;
    --deps|--fashion|--out|--build|--arch|--cuda|--budget|--racecheck-filter|--bench-filter)
      [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"
      case "$1" in
        --deps) deps=$2 ;; --fashion) fashion=$2 ;; --out) out=$2 ;; --build) build=$2 ;;
        --arch) arch=$2 ;; --cuda) cuda_mode=$2 ;; --budget) budget=$2 ;;
        --racecheck-filter) race_filter=$2 ;; --bench-filter) bench_filter=$2 ;;
      esac
      shift 2 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
cd "$(dirname "$0")/.."
root=$PWD
[[ "$cuda_mode" =~ ^(auto|on|off)$ ]] || die "--cuda must be auto, on or off, not '$cuda_mode'"
[[ "$budget" =~ ^[0-9]+$ && "$budget" -ge 60 ]] || die "--budget must be a whole number of seconds >= 60, not '$budget'"
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
deadline=$(( start + budget - 20 ))  # 20 s kept for the summary and the archive

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
pip_libpath=$(IFS=:; echo "${pip_dirs[*]/%//lib}")
# Run steps find the pip libraries' siblings (cuDNN opens its engines at run time).
[[ -n "$pip_libpath" ]] && export LD_LIBRARY_PATH="$pip_libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

jobs=$(nproc)
export root build res work deps fashion arch use_cuda nvcc sanitizer race_filter jobs werror
export bench_filter torch_train generator keep_going_text="${keep_going[*]}"
export smi gpu_name cuda_home cuda_why
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

step_machine() {
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
              -DHETDRO_CUDA="$use_cuda" -DHETDRO_TESTS=ON -DHETDRO_BENCH=ON -DHETDRO_WERROR="$werror")
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
  ctest --test-dir "$build" -L gpu --output-on-failure --timeout 120 -j 4 \
    --output-junit "$res/ctest_gpu.xml"
}

sanitize() {  # sanitize TOOL GTEST_FILTER [compute-sanitizer options...]
  need_gpu; need_exe hetdro_gpu_tests
  [[ -n "$sanitizer" ]] || { echo "skipped: compute-sanitizer not found"; exit 77; }
  "$sanitizer" --tool "$1" --error-exitcode 1 --print-limit 50 "${@:3}" \
    "$build/hetdro_gpu_tests" --gtest_brief=1 --gtest_filter="$2"
}
step_memcheck() { sanitize memcheck '*'; }
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
  return $failed
}

step_train() {
  need_gpu; need_exe hetdro
  [[ -n "$fashion" ]] || { echo "skipped: no Fashion-MNIST (--fashion DIR)"; exit 77; }
  rm -rf "$work"; mkdir -p "$work"
  "$build/hetdro" prepare hetero-fashion --source "$fashion" --out "$work/hf"
  "$build/hetdro" train --config "$work/hf/config.toml" --out "$work/run" \
    --set 'train.device="cuda"' --set train.epochs=1
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
export -f need_gpu need_exe need_hf sanitize step_machine step_configure step_build step_info \
  step_ctest_gpu step_memcheck step_racecheck step_bench step_train step_parity step_vs_torch

names=() states=() secs=() notes=()
failed=0
run_step() {  # run_step NAME TIMEOUT_SECONDS
  local n=$1 limit=$2 left=$(( deadline - SECONDS )) log="$res/$1.log" rc t0=$SECONDS state note=""
  if (( left < 15 )); then
    names+=("$n"); states+=(SKIP); secs+=(0); notes+=("no time left in the ${budget} s budget")
    echo "== gpu_check: $n: SKIP (no time left in the budget)"
    return
  fi
  (( limit > left )) && limit=$left
  echo "== gpu_check: $n (timeout ${limit} s, $(( SECONDS - start )) s so far)"
  set +e
  timeout -k 10 "$limit" bash -c "set -euo pipefail; step_$n" >"$log" 2>&1
  rc=$?
  set -e
  case $rc in
    0) state=PASS ;;
    77) state=SKIP; note=$(tail -n 1 "$log") ;;
    124|137) state=FAIL; note="timed out after ${limit} s"; failed=1 ;;
    *) state=FAIL; note="exit $rc"; failed=1 ;;
  esac
  names+=("$n"); states+=("$state"); secs+=($(( SECONDS - t0 ))); notes+=("$note")
  echo "-- $n: $state ($(( SECONDS - t0 )) s)${note:+: $note}"
  if [[ $state = FAIL ]]; then tail -n 25 "$log" | sed 's/^/   | /'; fi
}

run_step machine 30
cat "$res/machine.log"
run_step configure 120
export configure_state=${states[-1]}
run_step build 330
run_step info 30
# In the order of what a short GPU session most needs to learn: correctness, training, the
# comparison with PyTorch, then the kernel benchmarks and the sanitizers (the budget may cut these).
run_step ctest_gpu 150
run_step train 120
run_step vs_torch 200
run_step parity 150
run_step bench 150
run_step memcheck 150
run_step racecheck 120

# --- summary.md, and the archive for the device tool -------------------------------------
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo "unknown (no git here)")
{
  echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- device: ${gpu_name:-no GPU}$([[ -n "$gpu_name" ]] && echo ", driver $("$smi" --query-gpu=driver_version --format=csv,noheader | head -1), compute capability $compute_cap")"
  echo "- CUDA: $([[ -n "$nvcc" ]] && "$nvcc" --version | grep -o 'release [0-9.]*' || echo 'no nvcc'); build: CUDA $use_cuda ($cuda_why)$([[ $use_cuda = ON ]] && echo ", architectures $arch")"
  echo "- libraries: $(echo "$lib_report_text" | paste -sd ';' | sed 's/;/; /g')"
  echo "- host: $(uname -n), $(nproc) cores; commit $commit"
  echo "- command: \`$command_line\`"
  echo "- dependencies: ${deps:-system packages}; Fashion-MNIST: ${fashion:-none}"
  echo "- total: $(( SECONDS - start )) s of a $budget s budget"
  echo
  echo "| step | result | seconds | note |"
  echo "|---|---|---:|---|"
  for i in "${!names[@]}"; do
    echo "| ${names[$i]} | ${states[$i]} | ${secs[$i]} | ${notes[$i]} |"
  done
  echo
  echo "Each step's output is in <step>.log beside this file; benchmarks in bench_*.json;"
  echo "parity_*_report.json; the PyTorch comparison in vs_torch/ (its own summary.md)."
} >"$res/summary.md"
echo
cat "$res/summary.md"
echo "gpu_check: results in $res"

if [[ -n "${OUT:-}" ]]; then
  # The device tool returns at most 8 files of at most 16 MiB: summary.md and one archive,
  # with any log over 2 MiB cut to its first 0.5 and last 1 MiB.
  for f in "$res"/*.log; do
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
exit $failed

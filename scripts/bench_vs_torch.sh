#!/usr/bin/env bash
# hetdro against PyTorch on the same device and config (issue 9): the measurements, into one
# folder with summary.md and every raw JSON file and log.
#   per-step    step time at --config (default data/hetero-fashion/config.toml): hetdro with the
#               CUDA Graph, hetdro without (--no-graph), torch eager, torch.compile; speed-ups
#   train       time to train --train-epochs epochs (default 10), wall clock from launch to exit
#               (loading and evaluation included), with the final per-group test accuracies:
#               `hetdro train` (report.json) and scripts/torch_reference.py (its summary line)
#   sweep       step time on `hetdro prepare synthetic` data vs classes C, latent k
#               (model.latent_dim) and batch B (train.batch_size), hetdro (graph; --no-graph if
#               the graph run fails) and torch eager
#   floor       FLOPs and bytes per step counted from each config (scripts/bench_vs_torch_report.py
#               floor says what is counted), over the ceilings hetdro's bench-step JSON reports
# Every command is printed and kept in commands.txt; a command that fails is recorded in
# summary.md with its exit code and the rest goes on. Exit status: 0 when all ran, 1 when any
# failed, 2 on bad arguments.
#
# hetdro's side is `hetdro bench-step --config FILE [--set K=V ...] [--no-graph] [--steps N]
# [--warmup W] [--json FILE]`; torch's is `torch_reference.py --time-steps N --warmup W
# --timing-json FILE`. Both get the same config and overrides.
#
# Usage: scripts/bench_vs_torch.sh [--device cuda|cpu] [--quick] [--out DIR] [--hetdro BIN]
#          [--python PY] [--config FILE] [--steps N] [--warmup W] [--train-epochs N]
#          [--no-torch-train] [--no-compile] [--sweep full|reduced|none] [--timeout S]
#          [--budget S]
#   --device D        cuda (default) or cpu, for both sides (train.device / torch --device)
#   --quick           few steps (5, warm-up 2), a small sweep (C 10,100; k 16,32; B 100,400),
#                     one epoch of training on synthetic data: a CPU smoke test
#   --out DIR         results folder (default bench/results/vs_torch_<UTC date>)
#   --hetdro BIN      the hetdro binary (default: build-gpu/hetdro, build/hetdro or
#                     build-cpu/hetdro, the first that exists)
#   --python PY       Python with torch (default python3)
#   --config FILE     the per-step and time-to-train config (default
#                     data/hetero-fashion/config.toml; with --quick, synthetic data)
#   --steps N         timed steps per measurement (default 100; --quick 5)
#   --warmup W        untimed steps before them (default 20; --quick 2)
#   --train-epochs N  epochs of the time-to-train runs (default 10; --quick 1; 0 skips them)
#   --no-torch-train  skip torch_reference.py's time-to-train run (the slow one on a short lease)
#   --no-compile      skip torch.compile (its warm-up takes a minute or more)
#   --sweep S         full (default): C 10,100,1000 at B = max(1000, 10C); k 64,128,256; B
#                     100,1000,10000; around C = 10, k = 64, B = 1000. reduced: only the ends
#                     of each list. none: no sweep
#   --timeout S       seconds allowed to each command (default 900)
#   --budget S        seconds for everything (default: no limit): each command's timeout is cut
#                     to what is left, and once less than 10 s is left the rest is recorded as
#                     skipped; summary.md is written either way. The order is the priority:
#                     per-step, time to train, then the sweep
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "bench_vs_torch: $*" >&2; exit 2; }

command_line="scripts/bench_vs_torch.sh $*"
device=cuda quick=0 out="" hetdro="" python=python3 config="" steps="" warmup="" epochs=""
torch_train=1 compile=1 sweep=full timeout_s=900 budget=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --quick) quick=1; shift ;;
    --no-torch-train) torch_train=0; shift ;;
    --no-compile) compile=0; shift ;;
    --device|--out|--hetdro|--python|--config|--steps|--warmup|--train-epochs|--sweep|--timeout|--budget)
      [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"
      case "$1" in
        --device) device=$2 ;; --out) out=$2 ;; --hetdro) hetdro=$2 ;; --python) python=$2 ;;
        --config) config=$2 ;; --steps) steps=$2 ;; --warmup) warmup=$2 ;;
        --train-epochs) epochs=$2 ;; --sweep) sweep=$2 ;; --timeout) timeout_s=$2 ;;
        --budget) budget=$2 ;;
      esac
      shift 2 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
cd "$(dirname "$0")/.."
root=$PWD
[[ "$device" =~ ^(cuda|cpu)$ ]] || die "--device must be cuda or cpu, not '$device'"
[[ "$sweep" =~ ^(full|reduced|none)$ ]] || die "--sweep must be full, reduced or none, not '$sweep'"
if [[ $quick = 1 ]]; then
  : "${steps:=5}" "${warmup:=2}" "${epochs:=1}"
else
  : "${steps:=100}" "${warmup:=20}" "${epochs:=10}"
fi
for v in steps:"$steps" warmup:"$warmup" train-epochs:"$epochs" timeout:"$timeout_s" budget:"$budget"; do
  [[ "${v#*:}" =~ ^[0-9]+$ ]] || die "--${v%%:*} must be a whole number, not '${v#*:}'"
done
[[ $steps -ge 1 ]] || die "--steps must be at least 1"
[[ $timeout_s -ge 1 ]] || die "--timeout must be at least 1"
if [[ -z "$hetdro" ]]; then
  for b in build-gpu/hetdro build/hetdro build-cpu/hetdro; do
    if [[ -x "$root/$b" ]]; then hetdro=$root/$b; break; fi
  done
  [[ -n "$hetdro" ]] || die "no hetdro binary in build-gpu/, build/ or build-cpu/: build it, or pass --hetdro BIN"
fi
[[ -x "$hetdro" ]] || die "--hetdro '$hetdro' is not an executable"
hetdro=$(cd "$(dirname "$hetdro")" && pwd)/$(basename "$hetdro")
command -v "$python" >/dev/null || die "--python '$python' not found"
"$python" -c 'import torch, numpy' 2>/dev/null || die "--python '$python' cannot import torch and numpy"
if [[ -z "$out" ]]; then out=$root/bench/results/vs_torch_$(date -u +%Y%m%d-%H%M%S); fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
ref=$root/scripts/torch_reference.py
report=$root/scripts/bench_vs_torch_report.py
: >"$out/commands.txt"
: >"$out/results.tsv"  # name, kind, exit code, seconds, JSON or run folder, log, extra
failed=0

# run NAME KIND RESULT EXTRA -- COMMAND...: print and keep the command, run it with the
# timeout, its output in NAME.log; record the exit code and wall seconds in results.tsv.
run() {
  local name=$1 kind=$2 result=$3 extra=$4 rc t0 t1 limit=$timeout_s
  shift 5
  if [[ $budget -gt 0 ]]; then
    local left=$(( budget - SECONDS ))
    if [[ $left -lt 10 ]]; then skip "$name" "$kind" "over the --budget of $budget s"; return 0; fi
    [[ $left -lt $limit ]] && limit=$left
  fi
  echo "+ $*" | tee -a "$out/commands.txt"
  t0=$(date +%s.%N)
  set +e
  timeout -k 10 "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  set -e
  t1=$(date +%s.%N)
  local secs
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$kind" "$rc" "$secs" "$result" "$name.log" "$extra" \
    >>"$out/results.tsv"
  if [[ $rc -ne 0 ]]; then
    failed=1
    echo "!! $name failed (exit $rc; $out/$name.log):"
    tail -n 5 "$out/$name.log" | sed 's/^/   | /'
  fi
  return 0
}
skip() {  # skip NAME KIND WHY
  printf '%s\t%s\tskip\t0\t\t\t%s\n' "$1" "$2" "$3" >>"$out/results.tsv"
  echo "-- $1: skipped ($3)"
}
# Whether the last command ran and failed (not skipped).
last_failed() { tail -n 1 "$out/results.tsv" | awk -F'\t' '{ exit !($3 != "0" && $3 != "skip") }'; }

# --- data -----------------------------------------------------------------------------------
# One synthetic dataset per class count, big enough for the largest batch used with it: every
# group holds N samples of each class, N·C ≥ B/3 + C (the groups share a batch about equally).
# data.val_fraction = 0 on synthetic data: every sample trains, on both sides.
syn_set=(--set data.val_fraction=0)
prepare_synthetic() {  # prepare_synthetic C MAX_B -> sets $syn_config
  local C=$1 maxb=$2 n dir
  n=$(( (maxb + 3 * C - 1) / (3 * C) + 1 ))
  dir=$out/data/synthetic_C${C}
  syn_config=$dir/config.toml
  [[ -f "$syn_config" ]] && return 0
  run "prepare_synthetic_C$C" prepare "$dir" "" -- "$hetdro" prepare synthetic --out "$dir" \
    --classes "$C" --per-class "$n"
}

if [[ -z "$config" ]]; then
  if [[ $quick = 1 ]]; then  # self-contained, and seconds per run on a CPU
    prepare_synthetic 10 400
    config=$syn_config
  elif [[ -f "$root/data/hetero-fashion/config.toml" ]]; then
    config=$root/data/hetero-fashion/config.toml
  else
    die "data/hetero-fashion/config.toml not found: run 'hetdro prepare hetero-fashion --out data/hetero-fashion', or pass --config FILE"
  fi
fi
[[ -f "$config" ]] || die "--config '$config' not found"
config=$(cd "$(dirname "$config")" && pwd)/$(basename "$config")
base_set=()
case "$config" in "$out"/data/*) base_set=("${syn_set[@]}") ;; esac

has_compile=$("$python" -c 'import torch; print(int(hasattr(torch, "compile")))')
torch_version=$("$python" -c 'import torch; print(torch.__version__)')
echo "bench_vs_torch: hetdro $hetdro, torch $torch_version ($python), device $device, results in $out"

hetdro_step() {  # hetdro_step NAME CONFIG [--no-graph] [--set ...]
  local name=$1 cfg=$2
  shift 2
  run "$name" hetdro "$name.json" "" -- "$hetdro" bench-step --config "$cfg" \
    --set "train.device=\"$device\"" "$@" --steps "$steps" --warmup "$warmup" --json "$out/$name.json"
}
torch_step() {  # torch_step NAME CONFIG [--compile] [--set ...]
  local name=$1 cfg=$2
  shift 2
  run "$name" torch "$name.json" "" -- "$python" "$ref" --config "$cfg" --device "$device" "$@" \
    --time-steps "$steps" --warmup "$warmup" --timing-json "$out/$name.json"
}

# --- per-step time at the default config ----------------------------------------------------
echo "== per-step time at $config"
hetdro_step step_hetdro_graph "$config" "${base_set[@]}"
hetdro_step step_hetdro_nograph "$config" --no-graph "${base_set[@]}"
torch_step step_torch_eager "$config" "${base_set[@]}"
if [[ $compile = 0 ]]; then
  skip step_torch_compile torch "--no-compile"
elif [[ $has_compile = 0 ]]; then
  skip step_torch_compile torch "torch $torch_version has no torch.compile"
else
  torch_step step_torch_compile "$config" --compile "${base_set[@]}"
fi
"$python" "$report" floor --config "$config" --name step --out "$out/floor_step.json" \
  "${base_set[@]}" >>"$out/floor.log" 2>&1 || echo "!! floor count for $config failed (floor.log)"

# --- time to train --------------------------------------------------------------------------
if [[ $epochs -gt 0 ]]; then
  echo "== time to train: $epochs epochs"
  run train_hetdro train_hetdro "run_hetdro" "$epochs" -- "$hetdro" train --config "$config" \
    --out "$out/run_hetdro" --overwrite --set "train.epochs=$epochs" --set "train.device=\"$device\"" \
    "${base_set[@]}"
  if [[ $torch_train = 1 ]]; then
    run train_torch train_torch "train_torch.jsonl" "$epochs" -- "$python" "$ref" --config "$config" \
      --device "$device" --epochs "$epochs" --json-out "$out/train_torch.jsonl" "${base_set[@]}"
  else
    skip train_torch train_torch "--no-torch-train"
  fi
else
  skip train_hetdro train_hetdro "--train-epochs 0"
  skip train_torch train_torch "--train-epochs 0"
fi

# --- scaling on synthetic data --------------------------------------------------------------
if [[ $sweep != none ]]; then
  if [[ $quick = 1 ]]; then
    Cs=(10 100) ks=(16 32) Bs=(100 400) C0=10 k0=32 B0=100
  elif [[ $sweep = reduced ]]; then
    Cs=(10 1000) ks=(64 256) Bs=(100 10000) C0=10 k0=64 B0=1000
  else
    Cs=(10 100 1000) ks=(64 128 256) Bs=(100 1000 10000) C0=10 k0=64 B0=1000
  fi
  batch_for_C() { local b=$(( 10 * $1 )); (( b < B0 )) && b=$B0; echo "$b"; }
  # Each point once: "C k B" (the base point belongs to all three sweeps).
  points=()
  for C in "${Cs[@]}"; do points+=("$C $k0 $(batch_for_C "$C")"); done
  for k in "${ks[@]}"; do points+=("$C0 $k $B0"); done
  for B in "${Bs[@]}"; do points+=("$C0 $k0 $B"); done
  mapfile -t points < <(printf '%s\n' "${points[@]}" | awk '!seen[$0]++')
  echo "== sweep: ${#points[@]} points (C k B): $(printf '[%s] ' "${points[@]}")"
  for p in "${points[@]}"; do
    read -r C k B <<<"$p"
    maxb=$B0
    for q in "${points[@]}"; do
      read -r qc _ qb <<<"$q"
      if [[ $qc = "$C" && $qb -gt $maxb ]]; then maxb=$qb; fi
    done
    prepare_synthetic "$C" "$maxb"
    ok_data=1
    grep -q "^prepare_synthetic_C$C	[^	]*	[1-9]" "$out/results.tsv" && ok_data=0
    tag="C${C}_k${k}_B${B}"
    sets=("${syn_set[@]}" --set "model.latent_dim=$k" --set "train.batch_size=$B")
    if [[ $ok_data = 0 ]]; then
      skip "sweep_hetdro_$tag" sweep "the data for C = $C could not be made"
      skip "sweep_torch_$tag" sweep "the data for C = $C could not be made"
      continue
    fi
    hetdro_step "sweep_hetdro_$tag" "$syn_config" "${sets[@]}"
    if last_failed; then  # the graph failed here: measure without it, and say so
      hetdro_step "sweep_hetdro_nograph_$tag" "$syn_config" --no-graph "${sets[@]}"
    fi
    torch_step "sweep_torch_$tag" "$syn_config" "${sets[@]}"
    "$python" "$report" floor --config "$syn_config" --name "$tag" --out "$out/floor_$tag.json" \
      "${sets[@]}" >>"$out/floor.log" 2>&1 || echo "!! floor count for $tag failed (floor.log)"
  done
fi

# --- summary --------------------------------------------------------------------------------
"$python" "$report" summary --out "$out" --command "$command_line" --device "$device" \
  --hetdro "$hetdro" --config "$config" || { echo "!! summary failed"; failed=1; }
echo "bench_vs_torch: results in $out"
[[ -f "$out/summary.md" ]] && cat "$out/summary.md"
exit $failed

#!/usr/bin/env bash
# CPU step time at the default config: hetdro next to the PyTorch reference (same data, same
# config, same thread count). Needs a build (build/ or BUILD=dir), data/hetero-fashion
# (`hetdro prepare hetero-fashion`) and python3-torch (scripts/setup.sh --with-torch).
# Run it on an otherwise idle machine: a busy one makes both numbers meaningless.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${THREADS:-2}
steps=${STEPS:-60}
build=${BUILD:-build}
config=data/hetero-fashion/config.toml
export OMP_NUM_THREADS=$threads
echo "== machine: $(nproc --all) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); threads $threads; steps $steps"
echo "== hetdro ($build/hetdro train --max-steps $steps)"
"$build/hetdro" train --config "$config" --out /tmp/hetdro_bench_cpu_step --overwrite \
  --max-steps "$steps" --set train.epochs=1 | grep -E "ms/step|device"
echo "== PyTorch reference, eager (scripts/torch_reference.py --threads $threads --max-steps $steps)"
/usr/bin/python3 scripts/torch_reference.py --config "$config" --device cpu --threads "$threads" \
  --max-steps "$steps" --epochs 1 --warmup 5 2>&1 | grep -iE "ms/step|ms_step|torch"

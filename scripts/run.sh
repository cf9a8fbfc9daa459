#!/usr/bin/env bash
# The main job: set up, build the hetdro binary, prepare hetero-fashion, train with its default
# config, and print the per-group results. Extra arguments go to `hetdro train` (e.g.
# --set train.epochs=1).
#
# It builds only what it runs: the binary alone (the tests and benchmarks are scripts/test.sh's).
# On a machine with an NVIDIA GPU (nvidia-smi lists one) and nvcc: the CUDA backend for that GPU's
# architecture only (preset run-gpu, build-run-gpu/hetdro). Without a GPU: no CUDA code at all
# (preset run, build-run/hetdro). A GPU without nvcc builds for the CPU and says so.
set -euo pipefail
case "${1:-}" in
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac
cd "$(dirname "$0")/.."
bash scripts/setup.sh

preset=run
if gpus=$(nvidia-smi -L 2>/dev/null) && grep -q '^GPU ' <<<"$gpus"; then
  if command -v nvcc >/dev/null; then
    preset=run-gpu
    echo "run: building for this machine's GPU: $(head -n1 <<<"$gpus")"
  else
    echo "run: a GPU is present but nvcc is not on PATH: building for the CPU (put the CUDA toolkit's bin on PATH for the GPU)"
  fi
else
  echo "run: no GPU found (nvidia-smi lists none): building for the CPU, no CUDA code"
fi
build=build-$preset
cmake --preset "$preset"
cmake --build --preset "$preset"
[[ -f data/hetero-fashion/config.toml ]] || "./$build/hetdro" prepare hetero-fashion --out data/hetero-fashion
"./$build/hetdro" train --config data/hetero-fashion/config.toml --out runs/hetero-fashion --overwrite "$@"

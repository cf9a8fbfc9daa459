#!/usr/bin/env bash
# The whole test suite: set up, build (CUDA when nvcc is found), run every test with ctest.
# GPU tests skip themselves on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset default
cmake --build --preset default
ctest --preset default "$@"

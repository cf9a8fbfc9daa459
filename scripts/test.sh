#!/usr/bin/env bash
# The whole test suite: set up, build (CUDA when nvcc is found), run every test with ctest;
# then build and install hetdro_torch (scripts/install_python.sh) and run its pytest suite.
# --with-torch: the PyTorch reference's ctest tests (torch_reference, bench_vs_torch) need
# python3-torch and skip without it. GPU tests skip themselves on a machine without a GPU.
# Arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-torch
cmake --preset default
cmake --build --preset default
ctest --preset default "$@"
bash scripts/install_python.sh --no-setup
/usr/bin/python3 -m pytest -q -p no:cacheprovider python/tests

#!/usr/bin/env bash
# The main job: set up, build, prepare hetero-fashion, train with its default config, and print
# the per-group results. Extra arguments go to `hetdro train` (e.g. --set train.epochs=1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset default
cmake --build --preset default
[[ -f data/hetero-fashion/config.toml ]] || ./build/hetdro prepare hetero-fashion --out data/hetero-fashion
./build/hetdro train --config data/hetero-fashion/config.toml --out runs/hetero-fashion --overwrite "$@"

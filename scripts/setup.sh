#!/usr/bin/env bash
# Installs everything the build, the tests and the default data need, from Debian's packages.
# Idempotent: does nothing when all of it is present. Open MPI starts the ranks of a
# multi-process run (mpirun; docs/DESIGN.md §7) and its tests. numpy and matplotlib serve
# scripts/plot_run.py and scripts/sweep.py; --with-torch adds the PyTorch reference's needs
# (python3-torch) and hetdro_torch's (libtorch-dev, python3-dev, pybind11-dev, python3-setuptools,
# python3-pytest; scripts/install_python.sh); --with-fuzz adds clang with libFuzzer and its OpenMP runtime, for
# scripts/fuzz.sh. The options combine.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libeigen3-dev libcli11-dev libtomlplusplus-dev nlohmann-json3-dev libfmt-dev zlib1g-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  openmpi-bin libopenmpi-dev
  dataset-fashion-mnist
  python3-numpy python3-matplotlib
)
for option in "$@"; do
  case "$option" in
    --with-torch) packages+=(python3-torch libtorch-dev python3-dev pybind11-dev python3-setuptools
                             python3-pytest) ;;
    --with-fuzz) packages+=(clang libclang-rt-14-dev libomp-dev) ;;
    *) echo "setup: unknown option $option (known: --with-torch, --with-fuzz)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"

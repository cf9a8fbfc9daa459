#!/usr/bin/env bash
# Packs every library the build and the tests need beyond the compiler, OpenMP and CUDA into
# one folder (at most 30 MB), so that a machine without Debian's -dev packages (the GPU
# machine) can configure and build with `cmake -DHETDRO_DEPS=OUT_DIR`. Taken from this
# machine's Debian packages (scripts/setup.sh installs them), keeping their /usr layout so
# their own CMake config files work unchanged:
#   Eigen3, CLI11, nlohmann-json, fmt (headers; libfmt.so rides along only because fmt's CMake
#   config checks that it exists: we link fmt::fmt-header-only), GoogleTest and GoogleMock
#   (Debian's static .a), zlib (static libz.a), Google Benchmark (Debian ships it only as a
#   shared library: libbenchmark.so.1.7.1, found at run time through the build RPATH),
#   toml++ (Debian builds it as a shared library; packed header-only instead, with a config
#   of our own that defines TOML_HEADER_ONLY=1).
#   pytest with what it imports (Debian's python3-pytest: pytest, _pytest, pluggy, iniconfig,
#   packaging, attrs, py.py; pure Python, about 4 MB) under python/, for hetdro_torch's tests on
#   the GPU machine (scripts/gpu_check.sh, step torch_ext, puts it on PYTHONPATH).
# --fashion DIR also copies Fashion-MNIST's four .gz files (about 30 MB, for `hetdro prepare
# hetero-fashion --source DIR`) into DIR, kept apart from the 30 MB folder.
# Usage: scripts/pack_deps.sh [--fashion DIR] OUT_DIR     (scripts/gpu_check.sh says how both
# travel to the GPU machine; scripts/test_pack_deps.sh checks the folder in CI).
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}
die() { echo "pack_deps: $*" >&2; exit 2; }

out="" fashion=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --fashion) [[ $# -ge 2 ]] || die "--fashion needs a folder"; fashion=$2; shift 2 ;;
    -*) die "unknown option '$1' (known: --fashion DIR, --help)" ;;
    *) [[ -z "$out" ]] || die "one OUT_DIR only (got '$out' and '$1')"; out=$1; shift ;;
  esac
done
[[ -n "$out" ]] || die "missing OUT_DIR (usage: scripts/pack_deps.sh [--fashion DIR] OUT_DIR)"

limit_bytes=$((30 * 1000 * 1000))
arch=x86_64-linux-gnu
usr=/usr
lib=$usr/lib/$arch

# What is packed, and from which Debian package: each path must exist.
packages=(libeigen3-dev libcli11-dev nlohmann-json3-dev libfmt-dev libtomlplusplus-dev
          zlib1g-dev libgtest-dev libgmock-dev libbenchmark-dev)
files=(
  include/eigen3/Eigen include/eigen3/signature_of_eigen3_matrix_library
  share/eigen3/cmake
  include/CLI share/cmake/CLI11
  include/nlohmann share/cmake/nlohmann_json
  include/fmt "lib/$arch/cmake/fmt" "lib/$arch/libfmt.so.9.1.0"
  include/toml++
  include/zlib.h include/zconf.h
  include/gtest include/gmock "lib/$arch/cmake/GTest"
  "lib/$arch/libgtest.a" "lib/$arch/libgtest_main.a" "lib/$arch/libgmock.a" "lib/$arch/libgmock_main.a"
  include/benchmark "lib/$arch/cmake/benchmark"
  "lib/$arch/libbenchmark.so.1.7.1" "lib/$arch/libbenchmark_main.a"
)
# pytest for hetdro_torch's tests: Debian's modules, which work on the Python versions PyTorch
# wheels serve.
py_packages=(python3-pytest python3-pluggy python3-iniconfig python3-packaging python3-attr python3-py)
py_dir=lib/python3/dist-packages
py_files=(pytest _pytest pluggy iniconfig packaging attr attrs py.py)
missing=()
for f in "${files[@]}"; do [[ -e "$usr/$f" ]] || missing+=("$usr/$f"); done
for f in "${py_files[@]}"; do [[ -e "$usr/$py_dir/$f" ]] || missing+=("$usr/$py_dir/$f"); done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "pack_deps: not found: ${missing[*]}" >&2
  echo "pack_deps: install Debian's packages first: bash scripts/setup.sh --with-torch" >&2
  exit 1
fi

# A fresh folder: refuse to empty anything that is not an earlier pack.
if [[ -e "$out" ]]; then
  if [[ -n "$(ls -A "$out")" && ! -f "$out/hetdro-deps.txt" ]]; then
    die "'$out' exists, is not empty and is not an earlier pack (no hetdro-deps.txt): not touching it"
  fi
  rm -rf "$out"
fi
mkdir -p "$out"

# Plain files only (cp -L): the device tool carries a symbolic link as a link.
for f in "${files[@]}"; do
  mkdir -p "$out/$(dirname "$f")"
  cp -RL "$usr/$f" "$out/$f"
done
mkdir -p "$out/python"
for f in "${py_files[@]}"; do cp -RL "$usr/$py_dir/$f" "$out/python/$f"; done
rm -rf "$out"/python/*/__pycache__
# The SONAME Debian gave Google Benchmark, which the programs ask for at run time.
cp "$lib/libbenchmark.so.1.7.1" "$out/lib/$arch/libbenchmark.so.1debian"
# zlib static, where FindZLIB is pointed (CMakeLists.txt: HETDRO_DEPS).
cp "$lib/libz.a" "$out/lib/libz.a"

# toml++ header-only: Debian's config imports its shared library (TOML_HEADER_ONLY=0).
toml_version=$(dpkg-query -W -f='${Version}' libtomlplusplus-dev | sed 's/[-+~].*//')
mkdir -p "$out/lib/cmake/tomlplusplus"
cat >"$out/lib/cmake/tomlplusplus/tomlplusplusConfig.cmake" <<'EOF'
# toml++ header-only, written by hetdro's scripts/pack_deps.sh.
get_filename_component(_toml_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET tomlplusplus::tomlplusplus)
  add_library(tomlplusplus::tomlplusplus INTERFACE IMPORTED)
  set_target_properties(tomlplusplus::tomlplusplus PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${_toml_prefix}/include"
    INTERFACE_COMPILE_DEFINITIONS "TOML_HEADER_ONLY=1"
    INTERFACE_COMPILE_FEATURES cxx_std_17)
endif()
unset(_toml_prefix)
EOF
cat >"$out/lib/cmake/tomlplusplus/tomlplusplusConfigVersion.cmake" <<EOF
set(PACKAGE_VERSION "$toml_version")
if(PACKAGE_FIND_VERSION AND PACKAGE_VERSION VERSION_LESS PACKAGE_FIND_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
EOF

{
  echo "hetdro dependency pack, made by scripts/pack_deps.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "from $(. /etc/os-release && echo "$PRETTY_NAME"), $(uname -m); use: cmake -DHETDRO_DEPS=<this folder>"
  for p in "${packages[@]}" "${py_packages[@]}"; do echo "$p $(dpkg-query -W -f='${Version}' "$p")"; done
} >"$out/hetdro-deps.txt"

bytes=$(du -sb "$out" | cut -f1)
echo "pack_deps: $out: $(find "$out" -type f | wc -l) files, $bytes bytes"
if [[ $bytes -gt $limit_bytes ]]; then
  echo "pack_deps: $out is $bytes bytes, over the $limit_bytes-byte limit" >&2
  exit 1
fi

if [[ -n "$fashion" ]]; then
  src=/usr/share/datasets/fashion-mnist  # include/hetdro/prepare.h: kFashionMnistDir
  gz=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz
      t10k-labels-idx1-ubyte.gz)
  mkdir -p "$fashion"
  for f in "${gz[@]}"; do
    [[ -f "$src/$f" ]] || { echo "pack_deps: $src/$f not found (Debian package dataset-fashion-mnist)" >&2; exit 1; }
    cp -L "$src/$f" "$fashion/$f"
  done
  echo "pack_deps: $fashion: Fashion-MNIST, $(du -sb "$fashion" | cut -f1) bytes"
fi

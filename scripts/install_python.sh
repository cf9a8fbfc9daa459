#!/usr/bin/env bash
# Builds hetdro_torch (python/, docs/DESIGN.md §8) for /usr/bin/python3 and its PyTorch and
# installs it: as root into /usr/local/lib/python3.X/dist-packages, otherwise into the user's
# site-packages. First the static libraries it links, with CMake (preset python: the CPU
# reference; python-gpu adds the CUDA kernels), then the extension with PyTorch's
# cpp_extension, then a check that `import hetdro_torch` works from another folder.
#
#   bash scripts/install_python.sh [--cuda auto|on|off] [--target DIR] [--python EXE]
#                                  [-- CMAKE_ARGS...]
#
#   --cuda auto (default): CUDA when nvcc is found and the PyTorch has CUDA; on: insist.
#   --target DIR: install into DIR (a folder on PYTHONPATH) instead.
#   CMAKE_ARGS go to the CMake configure (e.g. -DHETDRO_CUDA_LIB_ROOTS=..., as gpu_check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
die() { echo "install_python: $*" >&2; exit 2; }
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

cuda=auto target="" python=/usr/bin/python3 cmake_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --cuda|--target|--python) [[ $# -ge 2 ]] || die "$1 needs a value"
      case "$1" in --cuda) cuda=$2 ;; --target) target=$2 ;; --python) python=$2 ;; esac
      shift 2 ;;
    --) shift; cmake_args=("$@"); break ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ "$cuda" =~ ^(auto|on|off)$ ]] || die "--cuda must be auto, on or off, not '$cuda'"

bash scripts/setup.sh --with-torch
[[ -x "$python" ]] || die "no Python at $python (--python EXE)"
torch_cuda=$("$python" -c 'import torch; print(torch.version.cuda or "")') \
  || die "$python cannot import torch (Debian: apt-get install python3-torch libtorch-dev)"
use_cuda=OFF
case "$cuda" in
  on) use_cuda=ON
      [[ -n "$torch_cuda" ]] || die "--cuda on, but $python's PyTorch has no CUDA" ;;
  auto) [[ -n "$torch_cuda" ]] && command -v nvcc >/dev/null && use_cuda=ON ;;
esac
preset=python
[[ "$use_cuda" = ON ]] && preset=python-gpu
build=$root/build-$preset
echo "install_python: PyTorch $("$python" -c 'import torch; print(torch.__version__)')" \
     "(CUDA: ${torch_cuda:-none}); building preset $preset"

mkdir -p "$build"
cmake --preset "$preset" "${cmake_args[@]}" >"$build/configure.log" 2>&1 \
  || { tail -30 "$build/configure.log" >&2; die "CMake configure failed (log: $build/configure.log)"; }
cmake --build --preset "$preset"

# The extension, built out of the tree (python/build would be left in the checkout otherwise).
(cd python && HETDRO_BUILD=$build "$python" setup.py -q build --build-base "$build/setuptools") \
  || { echo "install_python: building the extension failed" >&2; exit 1; }
built=$(ls -d "$build"/setuptools/lib*/hetdro_torch)

if [[ -z "$target" ]]; then
  if [[ $(id -u) -eq 0 ]]; then
    target=$("$python" -c 'import site; print(site.getsitepackages()[0])')
  else
    target=$("$python" -c 'import site; print(site.getusersitepackages())')
  fi
fi
mkdir -p "$target"
rm -rf "$target/hetdro_torch.tmp-$$"
cp -r "$built" "$target/hetdro_torch.tmp-$$"
rm -rf "$target/hetdro_torch"
mv "$target/hetdro_torch.tmp-$$" "$target/hetdro_torch"
echo "install_python: installed $target/hetdro_torch"

(cd / && PYTHONPATH="$target${PYTHONPATH:+:$PYTHONPATH}" "$python" -c \
  'import hetdro_torch; print("install_python: import hetdro_torch works; CUDA ops:", hetdro_torch.built_with_cuda())')

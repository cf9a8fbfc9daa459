#!/usr/bin/env bash
# Builds hetdro_torch (python/, docs/DESIGN.md §8) for /usr/bin/python3 and its PyTorch and
# installs it: as root into /usr/local/lib/python3.X/dist-packages, otherwise into the user's
# site-packages. First the static libraries it links, with CMake (preset python: the CPU
# reference; python-gpu adds the CUDA kernels), then the extension with PyTorch's
# cpp_extension, then a check that `import hetdro_torch` works from another folder.
#
#   bash scripts/install_python.sh [--cuda auto|on|off] [--target DIR] [--python EXE]
#                                  [--build DIR] [--no-setup] [-- CMAKE_ARGS...]
#
#   --cuda auto (default): CUDA when nvcc is found and the PyTorch has CUDA; on: insist.
#   --target DIR: install into DIR (a folder on PYTHONPATH) instead.
#   --python EXE: the Python to build for (default /usr/bin/python3).
#   --build DIR: link the libraries of this CMake build folder, configured already with
#     -DCMAKE_POSITION_INDEPENDENT_CODE=ON (gpu_check.sh's), instead of the presets'; --cuda
#     and CMAKE_ARGS do not apply (the folder's configuration decides).
#   --no-setup: do not apt-get (a machine without network, as the GPU machine).
#   CMAKE_ARGS go to the CMake configure (e.g. -DHETDRO_CUDA_LIB_ROOTS=...).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
die() { echo "install_python: $*" >&2; exit 2; }
usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }

cuda=auto target="" python=/usr/bin/python3 cmake_args=() build="" setup=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --no-setup) setup=0; shift ;;
    --cuda|--target|--python|--build) [[ $# -ge 2 ]] || die "$1 needs a value"
      case "$1" in --cuda) cuda=$2 ;; --target) target=$2 ;; --python) python=$2 ;;
                   --build) build=$2 ;; esac
      shift 2 ;;
    --) shift; cmake_args=("$@"); break ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ "$cuda" =~ ^(auto|on|off)$ ]] || die "--cuda must be auto, on or off, not '$cuda'"

if [[ $setup = 1 ]]; then bash scripts/setup.sh --with-torch; fi
[[ -x "$python" ]] || die "no Python at $python (--python EXE)"
torch_cuda=$("$python" -c 'import torch; print(torch.version.cuda or "")') \
  || die "$python cannot import torch (Debian: apt-get install python3-torch libtorch-dev)"
use_cuda=OFF
case "$cuda" in
  on) use_cuda=ON
      [[ -n "$torch_cuda" ]] || die "--cuda on, but $python's PyTorch has no CUDA" ;;
  auto) [[ -n "$torch_cuda" ]] && command -v nvcc >/dev/null && use_cuda=ON ;;
esac
torch_version=$("$python" -c 'import torch; print(torch.__version__)')
if [[ -n "$build" ]]; then
  [[ -f "$build/CMakeCache.txt" ]] || die "--build '$build' is not a configured CMake build folder"
  grep -q '^CMAKE_POSITION_INDEPENDENT_CODE:BOOL=ON$' "$build/CMakeCache.txt" ||
    die "--build '$build' was not configured with -DCMAKE_POSITION_INDEPENDENT_CODE=ON"
  build=$(cd "$build" && pwd)
  targets=(hetdro_ops)
  grep -q '"cuda": true' "$build/hetdro_torch_link.json" && targets+=(hetdro_cuda)
  echo "install_python: PyTorch $torch_version (CUDA: ${torch_cuda:-none}); building" \
       "${targets[*]} in $build"
  cmake --build "$build" --target "${targets[@]}"
else
  preset=python
  [[ "$use_cuda" = ON ]] && preset=python-gpu
  build=$root/build-$preset
  echo "install_python: PyTorch $torch_version (CUDA: ${torch_cuda:-none}); building preset $preset"
  mkdir -p "$build"
  cmake --preset "$preset" "${cmake_args[@]}" >"$build/configure.log" 2>&1 \
    || { tail -30 "$build/configure.log" >&2; die "CMake configure failed (log: $build/configure.log)"; }
  cmake --build --preset "$preset"
fi
if grep -q '"cuda": true' "$build/hetdro_torch_link.json" && [[ -z "$torch_cuda" ]]; then
  die "$build has the CUDA kernels, but $python's PyTorch has no CUDA"
fi

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

"""Builds hetdro_torch, hetdro's ops as a PyTorch C++ extension (docs/DESIGN.md §8).

Run by scripts/install_python.sh, which first builds the static libraries the extension links
(CMake preset `python` or `python-gpu`) and passes their folder as HETDRO_BUILD. The link line
comes from that build's hetdro_torch_link.json, so the extension links the one implementation
of each op, the one the trainer runs.
"""
import json
import os
import sys

from setuptools import setup
from torch.utils import cpp_extension

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
build = os.environ.get("HETDRO_BUILD")
if not build:
    sys.exit("python/setup.py: set HETDRO_BUILD to the CMake build folder of preset python or "
             "python-gpu (scripts/install_python.sh does this)")
link_file = os.path.join(build, "hetdro_torch_link.json")
try:
    with open(link_file) as f:
        link = json.load(f)
except (OSError, ValueError) as e:
    sys.exit(f"python/setup.py: cannot read {link_file} ({e}); build the CMake preset first")

rpaths = sorted({"-Wl,-rpath," + os.path.dirname(lib) for lib in link["libraries"]
                 if ".so" in os.path.basename(lib)})
# PyTorch 1.13's headers use std::iterator, deprecated in C++17: silence that warning only
# (-Wextra is left off: those headers trip it too).
cxx = ["-O2", "-std=c++17", "-Wall", "-Wno-deprecated-declarations"]
Extension = cpp_extension.CUDAExtension if link["cuda"] else cpp_extension.CppExtension
ext = Extension(
    name="hetdro_torch._C",
    sources=[os.path.join("csrc", "hetdro_torch.cpp")],
    include_dirs=[os.path.join(root, "include"), root] + link["include_dirs"],
    define_macros=[("HETDRO_TORCH_CUDA", "1")] if link["cuda"] else [],
    extra_compile_args={"cxx": cxx} if link["cuda"] else cxx,
    # The static libraries, the shared ones they need (found again at run time through an
    # RPATH to their folders: cuSOLVER, say, which PyTorch may not have loaded), then OpenMP for
    # the CPU reference's parallel loops.
    extra_link_args=link["libraries"] + rpaths + ["-fopenmp"],
)

setup(
    name="hetdro_torch",
    version="0.1.0",
    packages=["hetdro_torch"],
    ext_modules=[ext],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
)

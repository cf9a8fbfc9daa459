// Eigen for the CPU ops: row-major maps over raw pointers (PyTorch layouts, docs/DESIGN.md §2).
#pragma once

// GCC 12 with -march=native (AVX-512) reports -Wmaybe-uninitialized inside Eigen's GEMM
// kernels (the _mm512_undefined_* intrinsics), a known false positive; the warning fires after
// inlining, so it is switched off for the whole translation unit, not pushed and popped.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <Eigen/Dense>  // Eigen::Map, Eigen::Matrix, SelfAdjointEigenSolver: include Eigen only here

namespace hetdro::cpu {

template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using MapMat = Eigen::Map<RowMat<T>>;
template <typename T>
using CMapMat = Eigen::Map<const RowMat<T>>;
template <typename T>
using MapVec = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>>;
template <typename T>
using CMapVec = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>;

}  // namespace hetdro::cpu

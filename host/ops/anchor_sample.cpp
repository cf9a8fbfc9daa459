// anchor_sample (docs/DESIGN.md §1, §2): samples Z_cj = m_c + L_c ξ_cj of each class anchor. C ≈ 10
// classes of k×k with k ≈ 64: a loop over classes with one small product each.
#include <cstdint>

#include "eigen_maps.h"  // MapMat, CMapMat, CMapVec
#include "hetdro/ops.h"
#include "hetdro/rng.h"  // normal01

namespace hetdro::cpu {

template <typename T>
void anchor_sample_forward(T* z, T* xi, const T* mean, const T* chol, int classes, int J, int k,
                           uint64_t seed, const int64_t* step) {
  const int64_t kk = int64_t(k) * k, draws = int64_t(J) * k;
  const uint64_t counter = uint64_t(step[0]) * uint64_t(classes) * uint64_t(draws);
  for (int c = 0; c < classes; ++c) {
    // ξ index (c·J + j)·k + d, the one the CUDA kernel uses, so both draw the same numbers.
    const int64_t first = c * draws;
    for (int64_t i = 0; i < draws; ++i)
      xi[first + i] = T(normal01(seed, counter + uint64_t(first + i)));
    // Rows of Z are samples: Z = Ξ Lᵀ + 1 mᵀ.
    MapMat<T> Z(z + first, J, k);
    Z.noalias() = CMapMat<T>(xi + first, J, k) * CMapMat<T>(chol + c * kk, k, k).transpose();
    Z.rowwise() += CMapVec<T>(mean + int64_t(c) * k, k).transpose();
  }
}

template <typename T>
void anchor_sample_backward(T* dmean, T* dchol, const T* dz, const T* xi, int classes, int J,
                            int k) {
  const int64_t kk = int64_t(k) * k, draws = int64_t(J) * k;
  for (int c = 0; c < classes; ++c) {
    const CMapMat<T> D(dz + c * draws, J, k);
    if (dmean) MapMat<T>(dmean + int64_t(c) * k, 1, k) += D.colwise().sum();
    if (dchol)
      MapMat<T>(dchol + c * kk, k, k).noalias() += D.transpose() * CMapMat<T>(xi + c * draws, J, k);
  }
}

#define HETDRO_INSTANTIATE(T)                                                                 \
  template void anchor_sample_forward<T>(T*, T*, const T*, const T*, int, int, int, uint64_t, \
                                         const int64_t*);                                     \
  template void anchor_sample_backward<T>(T*, T*, const T*, const T*, int, int, int);
HETDRO_INSTANTIATE(float)
HETDRO_INSTANTIATE(double)
#undef HETDRO_INSTANTIATE

}  // namespace hetdro::cpu

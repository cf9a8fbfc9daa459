// anchor_cov (docs/DESIGN.md §1, §2): each class anchor's covariance S_c = L_c L_cᵀ + εI, and its
// backward dL_c += 2 sym(dS_c) L_c.
#include <cstdint>

#include "eigen_maps.h"  // MapMat, CMapMat
#include "hetdro/ops.h"

namespace hetdro::cpu {

template <typename T>
void anchor_cov_forward(T* cov, const T* chol, int classes, int k, T eps) {
  const int64_t kk = int64_t(k) * k;
  for (int c = 0; c < classes; ++c) {
    const CMapMat<T> L(chol + c * kk, k, k);
    MapMat<T> S(cov + c * kk, k, k);
    S.noalias() = L * L.transpose();
    S.diagonal().array() += eps;
  }
}

template <typename T>
void anchor_cov_backward(T* dchol, const T* dcov, const T* chol, int classes, int k) {
  const int64_t kk = int64_t(k) * k;
  for (int c = 0; c < classes; ++c) {
    const CMapMat<T> G(dcov + c * kk, k, k);
    MapMat<T>(dchol + c * kk, k, k).noalias() +=
        (G + G.transpose()) * CMapMat<T>(chol + c * kk, k, k);
  }
}

#define HETDRO_INSTANTIATE(T)                                     \
  template void anchor_cov_forward<T>(T*, const T*, int, int, T); \
  template void anchor_cov_backward<T>(T*, const T*, const T*, int, int);
HETDRO_INSTANTIATE(float)
HETDRO_INSTANTIATE(double)
#undef HETDRO_INSTANTIATE

}  // namespace hetdro::cpu

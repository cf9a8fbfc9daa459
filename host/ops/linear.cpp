// linear: out = in Wᵀ + b as one Eigen GEMM; Eigen threads it itself (outside omp regions).
#include "eigen_maps.h"  // MapMat, CMapMat, MapVec, CMapVec
#include "hetdro/ops.h"

namespace hetdro::cpu {

template <typename T>
void linear_forward(T* out, const T* in, const T* weight, const T* bias, int n, int in_dim,
                    int out_dim) {
  MapMat<T> O(out, n, out_dim);
  O.noalias() = CMapMat<T>(in, n, in_dim) * CMapMat<T>(weight, out_dim, in_dim).transpose();
  O.rowwise() += CMapVec<T>(bias, out_dim).transpose();
}

template <typename T>
void linear_backward(T* din, T* dweight, T* dbias, const T* dout, const T* in, const T* weight,
                     int n, int in_dim, int out_dim) {
  const CMapMat<T> D(dout, n, out_dim);
  if (din) MapMat<T>(din, n, in_dim).noalias() += D * CMapMat<T>(weight, out_dim, in_dim);
  if (dweight)
    MapMat<T>(dweight, out_dim, in_dim).noalias() += D.transpose() * CMapMat<T>(in, n, in_dim);
  if (dbias) MapVec<T>(dbias, out_dim) += D.colwise().sum().transpose();
}

#define HETDRO_INSTANTIATE(T)                                                       \
  template void linear_forward<T>(T*, const T*, const T*, const T*, int, int, int); \
  template void linear_backward<T>(T*, T*, T*, const T*, const T*, const T*, int, int, int);
HETDRO_INSTANTIATE(float)
HETDRO_INSTANTIATE(double)
#undef HETDRO_INSTANTIATE

}  // namespace hetdro::cpu

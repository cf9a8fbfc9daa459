// CPU eigh: the symmetric eigensolver the CPU reference uses (Eigen's SelfAdjointEigenSolver, as
// in w2_gaussian), batched; the twin of cuda::eigh (kernels/eig.cu), for hetdro_torch.eigh.
#include <fmt/format.h>  // error message
#include <omp.h>         // omp_set_num_threads

#include <atomic>
#include <cstdint>
#include <stdexcept>

#include "eigen_maps.h"  // Eigen (Dense), CMapMat, MapMat, MapVec
#include "hetdro/ops.h"

namespace hetdro::cpu {

template <typename T>
void eigh(T* w, T* V, const T* A, int batch, int k) {
  using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
  const int64_t kk = int64_t(k) * k;
  std::atomic<int> failed{-1};
#pragma omp parallel for schedule(dynamic) if (batch > 1)
  for (int b = 0; b < batch; ++b) {
    omp_set_num_threads(1);  // one thread per matrix (see w2_gaussian.cpp)
    // Reads the lower triangle only; A is symmetric by contract.
    Eigen::SelfAdjointEigenSolver<Mat> eig(Mat(CMapMat<T>(A + b * kk, k, k)));
    if (eig.info() != Eigen::Success) {
      failed = b;
      continue;
    }
    MapVec<T>(w + int64_t(b) * k, k) = eig.eigenvalues();
    MapMat<T>(V + b * kk, k, k) = eig.eigenvectors();
  }
  if (failed >= 0)
    throw std::runtime_error(fmt::format(
        "eigh: Eigen's eigensolver did not converge on matrix {} (k = {})", int(failed), k));
}

template void eigh<float>(float*, float*, const float*, int, int);
template void eigh<double>(double*, double*, const double*, int, int);

}  // namespace hetdro::cpu

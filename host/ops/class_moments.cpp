// CPU reference of class_moments: per-slot mean and unbiased covariance (docs/DESIGN.md §1) and the
// backward to the latents (docs/DESIGN.md §2).
#include <omp.h>  // omp_set_num_threads

#include <cstdint>
#include <vector>

#include "eigen_maps.h"    // RowMat, and the GCC 12 AVX-512 warning switched off
#include "hetdro/check.h"  // HETDRO_ASSERT
#include "hetdro/ops.h"
#include "slot_members.h"

namespace hetdro::cpu {

std::vector<std::vector<int32_t>> slot_members(const int32_t* slot, int n, int slots) {
  std::vector<std::vector<int32_t>> members(size_t(slots > 0 ? slots : 0));
  for (int i = 0; i < n; ++i) {
    HETDRO_ASSERT(slot[i] >= -1 && slot[i] < slots);
    if (slot[i] >= 0) members[slot[i]].push_back(i);
  }
  return members;
}

namespace {

template <typename T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
template <typename T>
using RowVec = Eigen::Matrix<T, 1, Eigen::Dynamic>;

// A thread team per call pays off only for big batches: n = 100, k = 64 is 0.4 Mflop, less than
// waking a team costs. Either way each slot runs Eigen single-threaded: Eigen would split any
// product over ~50k flops over a team of its own (Parallelizer.h), at a loss for these sizes;
// omp_set_num_threads inside the region sets nthreads-var for the current slot's task only.
bool worth_a_team(int n, int k) { return int64_t(n) * k * k >= (int64_t(1) << 24); }
inline void one_thread_per_slot() { omp_set_num_threads(1); }

}  // namespace

template <typename T>
void class_moments_forward(T* mean, T* cov, int32_t* count, const T* z, const int32_t* slot, int n,
                           int k, int slots, T eps) {
  const auto members = slot_members(slot, n, slots);
  for (int s = 0; s < slots; ++s) count[s] = int32_t(members[s].size());
  Eigen::Map<const RowMat<T>> Z(z, n, k);

#pragma omp parallel for schedule(dynamic) if (worth_a_team(n, k))
  for (int s = 0; s < slots; ++s) {
    one_thread_per_slot();
    Eigen::Map<RowVec<T>> m(mean + int64_t(s) * k, k);
    Eigen::Map<RowMat<T>> S(cov + int64_t(s) * k * k, k, k);
    const int ns = count[s];
    if (ns < 2) {
      m.setZero();
      S.setZero();
      continue;
    }
    Mat<T> Zc(ns, k);
    for (int r = 0; r < ns; ++r) Zc.row(r) = Z.row(members[s][r]);
    m = Zc.colwise().sum() / T(ns);
    // Two passes, centre then sum: E[zzᵀ] − mmᵀ cancels catastrophically in fp32 (docs/DESIGN.md
    // §7).
    Zc.rowwise() -= m;
    Mat<T> lower = Mat<T>::Zero(k, k);
    lower.template selfadjointView<Eigen::Lower>().rankUpdate(Zc.transpose(), T(1) / T(ns - 1));
    // Mirroring one triangle makes cov exactly symmetric, which the W2 eigensolver assumes.
    Mat<T> full = lower.template selfadjointView<Eigen::Lower>();
    full.diagonal().array() += eps;
    S = full;
  }
}

template <typename T>
void class_moments_backward(T* dz, const T* dmean, const T* dcov, const T* z, const T* mean,
                            const int32_t* count, const int32_t* slot, int n, int k, int slots) {
  if (dz == nullptr) return;
  const auto members = slot_members(slot, n, slots);
  Eigen::Map<const RowMat<T>> Z(z, n, k);
  Eigen::Map<RowMat<T>> dZ(dz, n, k);
  // count may exceed the slot's rows here: under data parallelism the moments are those of the
  // global batch, and z holds this rank's shard of it (docs/DESIGN.md §7).
  for (int s = 0; s < slots; ++s) HETDRO_ASSERT(count[s] >= int32_t(members[s].size()));

    // Each sample belongs to one slot, so slots write disjoint rows of dz.
#pragma omp parallel for schedule(dynamic) if (worth_a_team(n, k))
  for (int s = 0; s < slots; ++s) {
    one_thread_per_slot();
    const int ns = count[s], rows = int(members[s].size());
    if (ns < 2 || rows == 0) continue;
    Eigen::Map<const RowVec<T>> m(mean + int64_t(s) * k, k);
    Mat<T> Zc(rows, k);
    for (int r = 0; r < rows; ++r) Zc.row(r) = Z.row(members[s][r]) - m;
    // dz_i = g_m/n + (2/(n−1)) sym(G_S)(z_i − m̂)   (docs/DESIGN.md §2); the path through m̂ adds
    // nothing to the covariance term because Σ_i (z_i − m̂) = 0.
    Mat<T> grad = Mat<T>::Zero(rows, k);
    if (dcov != nullptr) {
      Eigen::Map<const RowMat<T>> G(dcov + int64_t(s) * k * k, k, k);
      const Mat<T> sym = (G + G.transpose()) * (T(1) / T(ns - 1));  // 2/(n−1) · ½(G + Gᵀ)
      grad.noalias() = Zc * sym;
    }
    if (dmean != nullptr) {
      Eigen::Map<const RowVec<T>> gm(dmean + int64_t(s) * k, k);
      grad.rowwise() += gm / T(ns);
    }
    for (int r = 0; r < rows; ++r) dZ.row(members[s][r]) += grad.row(r);
  }
}

template void class_moments_forward<float>(float*, float*, int32_t*, const float*, const int32_t*,
                                           int, int, int, float);
template void class_moments_forward<double>(double*, double*, int32_t*, const double*,
                                            const int32_t*, int, int, int, double);
template void class_moments_backward<float>(float*, const float*, const float*, const float*,
                                            const float*, const int32_t*, const int32_t*, int, int,
                                            int);
template void class_moments_backward<double>(double*, const double*, const double*, const double*,
                                             const double*, const int32_t*, const int32_t*, int,
                                             int, int);

}  // namespace hetdro::cpu

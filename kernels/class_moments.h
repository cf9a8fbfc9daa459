// The moment arithmetic of class_moments (docs/DESIGN.md §1, §7), shared by the CUDA kernels
// (kernels/class_moments.cu) and the CPU tests: the shifted centring the kernels use, the
// finishing of a covariance entry, and Chan's pairwise combination of per-shard moments.
// Plain C++17; no CUDA headers.
#pragma once

#include <cstdint>

#include "hetdro/hd.h"  // HETDRO_HD

namespace hetdro::moments {

// The kernels centre in two steps: shift every sample by its slot's first sample (exact when
// the two are within a factor of 2, Sterbenz), then subtract the mean of the shifted samples,
// which is small. So a large common offset never enters a sum, and E[zzᵀ] − mmᵀ, which cancels
// catastrophically in fp32, is never formed (docs/DESIGN.md §7).
template <typename T>
HETDRO_HD inline T centred(T z, T shift, T mean_shifted) {
  return (z - shift) - mean_shifted;
}

// One entry of Ŝ from the centred sum m2 = Σ (z − m̂)_i (z − m̂)_j: the unbiased estimate plus
// eps on the diagonal; 0 for a masked slot (count < 2), as the CPU reference writes.
template <typename T>
HETDRO_HD inline T cov_entry(T m2, int64_t count, bool diagonal, T eps) {
  if (count < 2) return T(0);
  return m2 / T(count - 1) + (diagonal ? eps : T(0));
}

// Shifted two-pass moments of `count` rows of z [*, k] (the rows listed in `rows`): mean [k]
// and the centred sum m2 [k, k] = Σ (z − mean)(z − mean)ᵀ. What each kernel block does for its
// chunk, written sequentially. count = 0 gives mean 0 and m2 0.
template <typename T>
HETDRO_HD inline void shifted_moments(T* mean, T* m2, const T* z, const int32_t* rows,
                                      int64_t count, int k) {
  for (int i = 0; i < k; ++i) mean[i] = T(0);
  for (int64_t e = 0; e < int64_t(k) * k; ++e) m2[e] = T(0);
  if (count == 0) return;
  const T* first = z + int64_t(rows[0]) * k;
  for (int64_t r = 0; r < count; ++r)
    for (int i = 0; i < k; ++i) mean[i] += z[int64_t(rows[r]) * k + i] - first[i];
  for (int i = 0; i < k; ++i) mean[i] /= T(count);
  for (int64_t r = 0; r < count; ++r) {
    const T* row = z + int64_t(rows[r]) * k;
    for (int i = 0; i < k; ++i)
      for (int j = 0; j < k; ++j)
        m2[int64_t(i) * k + j] +=
            centred(row[i], first[i], mean[i]) * centred(row[j], first[j], mean[j]);
  }
  for (int i = 0; i < k; ++i) mean[i] += first[i];
}

// Chan, Golub & LeVeque's pairwise update (docs/DESIGN.md §7): folds shard b's (n_b, mean_b,
// M2_b) into shard a's, in place. n = n_a + n_b, δ = mean_b − mean_a,
// mean = mean_a + δ·n_b/n, M2 = M2_a + M2_b + δδᵀ·n_a·n_b/n. An empty shard changes nothing.
// Associative, so per-rank or per-chunk moments combine in any tree (issue 11).
template <typename T>
HETDRO_HD inline void chan_combine(int64_t* n_a, T* mean_a, T* m2_a, int64_t n_b, const T* mean_b,
                                   const T* m2_b, int k) {
  if (n_b == 0) return;
  const int64_t n = *n_a + n_b;
  const T fb = T(n_b) / T(n), cross = T(*n_a) * T(n_b) / T(n);
  for (int i = 0; i < k; ++i)
    for (int j = 0; j < k; ++j) {
      const T di = mean_b[i] - mean_a[i], dj = mean_b[j] - mean_a[j];
      m2_a[int64_t(i) * k + j] += m2_b[int64_t(i) * k + j] + di * dj * cross;
    }
  for (int i = 0; i < k; ++i) mean_a[i] += (mean_b[i] - mean_a[i]) * fb;
  *n_a = n;
}

}  // namespace hetdro::moments

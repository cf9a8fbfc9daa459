// What data-parallel training needs besides the transport (docs/DESIGN.md §7): each rank's share
// of a batch, and the packed class moments the ranks combine, with the arithmetic of
// kernels/class_moments.h (shifted centring, Chan's combination), which the GPU kernels run too.
#include "hetdro/comm.h"

#include <algorithm>  // std::max
#include <cstdlib>    // std::getenv
#include <vector>

#include "hetdro/check.h"
#include "host/ops/slot_members.h"
#include "kernels/class_moments.h"  // moments::shifted_moments, chan_combine, cov_entry

namespace hetdro {

int launcher_ranks() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE"})
    if (const char* v = std::getenv(name)) return std::max(std::atoi(v), 1);
  return 0;
}

Shard shard_rows(const std::vector<int>& global_rows, int rank, int ranks) {
  HETDRO_ASSERT(ranks >= 1 && rank >= 0 && rank < ranks);
  Shard s;
  for (int n : global_rows) {
    const int base = n / ranks, extra = n % ranks;
    s.rows.push_back(base + (rank < extra ? 1 : 0));
    s.offset.push_back(rank * base + (rank < extra ? rank : extra));
  }
  return s;
}

template <typename T>
void pack_moments(T* packed, const T* z, const int32_t* slot, int n, int k, int slots) {
  const int64_t width = moments_width(k);
  const auto members = cpu::slot_members(slot, n, slots);
  for (int s = 0; s < slots; ++s) {
    T* p = packed + s * width;
    p[0] = T(members[s].size());
    moments::shifted_moments(p + 1, p + 1 + k, z, members[s].data(), int64_t(members[s].size()), k);
  }
}

template <typename T>
void combine_moments(T* inout, const T* in, int slots, int k) {
  const int64_t width = moments_width(k);
  for (int s = 0; s < slots; ++s) {
    T* a = inout + s * width;
    const T* b = in + s * width;
    int64_t n = int64_t(a[0]);
    moments::chan_combine(&n, a + 1, a + 1 + k, int64_t(b[0]), b + 1, b + 1 + k, k);
    a[0] = T(n);
  }
}

template <typename T>
void finish_moments(T* mean, T* cov, int32_t* count, const T* packed, int slots, int k, T eps) {
  const int64_t width = moments_width(k), kk = int64_t(k) * k;
  for (int s = 0; s < slots; ++s) {
    const T* p = packed + s * width;
    const int64_t n = int64_t(p[0]);
    count[s] = int32_t(n);
    for (int i = 0; i < k; ++i) mean[s * k + i] = n < 2 ? T(0) : p[1 + i];
    // Mirroring the lower triangle keeps cov exactly symmetric, as the W2 eigensolver assumes.
    for (int i = 0; i < k; ++i)
      for (int j = 0; j < k; ++j) {
        const int64_t e = i >= j ? int64_t(i) * k + j : int64_t(j) * k + i;
        cov[s * kk + int64_t(i) * k + j] = moments::cov_entry(p[1 + k + e], n, i == j, eps);
      }
  }
}

template void pack_moments<float>(float*, const float*, const int32_t*, int, int, int);
template void pack_moments<double>(double*, const double*, const int32_t*, int, int, int);
template void combine_moments<float>(float*, const float*, int, int);
template void combine_moments<double>(double*, const double*, int, int);
template void finish_moments<float>(float*, float*, int32_t*, const float*, int, int, float);
template void finish_moments<double>(double*, double*, int32_t*, const double*, int, int, double);

}  // namespace hetdro

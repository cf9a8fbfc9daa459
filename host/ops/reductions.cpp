// The step's small reductions: loss sums, dead-latent flags, the non-finite check, the window
// sums the trainer reads at its logging points, and the evaluation's argmax (docs/DESIGN.md §6).
#include <cmath>  // std::isfinite
#include <cstdint>

#include "hetdro/ops.h"

namespace hetdro::cpu {

template <typename T>
void sum_scaled(double* out, const T* x, int64_t count, double scale) {
  double sum = 0;
  for (int64_t i = 0; i < count; ++i) sum += double(x[i]);
  out[0] = scale * sum;
}

template <typename T>
void all_zero(double* out, const T* x, int64_t count) {
  int64_t i = 0;
  while (i < count && x[i] == T(0)) ++i;
  out[0] = i == count ? 1.0 : 0.0;
}

template <typename T>
void check_finite(int64_t* status, const double* stats, int stats_count, const T* grad,
                  int64_t count, const int64_t* step) {
  if (status[0] >= 0) return;
  const int64_t number = step[0] + 1;  // steps count from 1 in the status
  for (int i = 0; i < stats_count; ++i)
    if (!std::isfinite(stats[i])) {
      status[0] = number;
      status[1] = -1 - i;
      return;
    }
  for (int64_t i = 0; i < count; ++i)
    if (!std::isfinite(grad[i])) {
      status[0] = number;
      status[1] = i;
      return;
    }
}

template <typename T>
void accumulate(double* sum, const double* x, int count, const int64_t* status) {
  if (status && status[0] >= 0) return;
  for (int i = 0; i < count; ++i) sum[i] += x[i];
}

template <typename T>
void groupdro_commit(double* q, const double* q_next, int groups, const int64_t* status) {
  if (status && status[0] >= 0) return;
  for (int g = 0; g < groups; ++g) q[g] = q_next[g];
}

template <typename T>
void argmax_rows(int32_t* out, const T* x, int n, int cols) {
  for (int i = 0; i < n; ++i) {
    const T* row = x + int64_t(i) * cols;
    int best = 0;
    for (int c = 1; c < cols; ++c)
      if (row[c] > row[best]) best = c;
    out[i] = best;
  }
}

#define HETDRO_INSTANTIATE(T)                                                                     \
  template void sum_scaled<T>(double*, const T*, int64_t, double);                                \
  template void all_zero<T>(double*, const T*, int64_t);                                          \
  template void check_finite<T>(int64_t*, const double*, int, const T*, int64_t, const int64_t*); \
  template void accumulate<T>(double*, const double*, int, const int64_t*);                       \
  template void groupdro_commit<T>(double*, const double*, int, const int64_t*);                  \
  template void argmax_rows<T>(int32_t*, const T*, int, int);
HETDRO_INSTANTIATE(float)
HETDRO_INSTANTIATE(double)
#undef HETDRO_INSTANTIATE

}  // namespace hetdro::cpu

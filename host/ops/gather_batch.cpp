// gather_batch: one step's rows of a group's uploaded training data, by the sampler's order and
// the trainer's clock; advance_clock moves that clock on to the next step.
#include <algorithm>  // std::copy_n
#include <cstdint>

#include "hetdro/ops.h"

namespace hetdro::cpu {

template <typename T>
void gather_batch(T* x, int32_t* y, const T* src_x, const int32_t* src_y, const int64_t* order,
                  const int64_t* batch, int n, int64_t width) {
  const int64_t* index = order + batch[0] * n;
  for (int i = 0; i < n; ++i) {
    std::copy_n(src_x + index[i] * width, width, x + int64_t(i) * width);
    y[i] = src_y[index[i]];
  }
}

template <typename T>
void advance_clock(int64_t* clock) {
  ++clock[0];
  ++clock[1];
}

template void gather_batch<float>(float*, int32_t*, const float*, const int32_t*, const int64_t*,
                                  const int64_t*, int, int64_t);
template void gather_batch<double>(double*, int32_t*, const double*, const int32_t*, const int64_t*,
                                   const int64_t*, int, int64_t);
template void advance_clock<float>(int64_t*);
template void advance_clock<double>(int64_t*);

}  // namespace hetdro::cpu

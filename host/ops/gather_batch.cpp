// gather_batch: one step's rows of a group's uploaded training data, by the sampler's indices.
#include <algorithm>  // std::copy_n
#include <cstdint>

#include "hetdro/ops.h"

namespace hetdro::cpu {

template <typename T>
void gather_batch(T* x, int32_t* y, const T* src_x, const int32_t* src_y, const int64_t* index,
                  int n, int64_t width) {
  for (int i = 0; i < n; ++i) {
    std::copy_n(src_x + index[i] * width, width, x + int64_t(i) * width);
    y[i] = src_y[index[i]];
  }
}

template void gather_batch<float>(float*, int32_t*, const float*, const int32_t*, const int64_t*,
                                  int, int64_t);
template void gather_batch<double>(double*, int32_t*, const double*, const int32_t*, const int64_t*,
                                   int, int64_t);

}  // namespace hetdro::cpu

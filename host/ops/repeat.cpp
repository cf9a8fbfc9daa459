// repeat: copies of one tensor side by side (the anchors, once per group, for per_group fits),
// and the backward that sums the copies' gradients.
#include <algorithm>  // std::copy_n
#include <cstdint>

#include "hetdro/ops.h"

namespace hetdro::cpu {

template <typename T>
void repeat_forward(T* out, const T* in, int64_t size, int times) {
  for (int t = 0; t < times; ++t) std::copy_n(in, size, out + t * size);
}

template <typename T>
void repeat_backward(T* din, const T* dout, int64_t size, int times) {
  for (int t = 0; t < times; ++t)
    for (int64_t i = 0; i < size; ++i) din[i] += dout[t * size + i];
}

#define HETDRO_INSTANTIATE(T)                                  \
  template void repeat_forward<T>(T*, const T*, int64_t, int); \
  template void repeat_backward<T>(T*, const T*, int64_t, int);
HETDRO_INSTANTIATE(float)
HETDRO_INSTANTIATE(double)
#undef HETDRO_INSTANTIATE

}  // namespace hetdro::cpu

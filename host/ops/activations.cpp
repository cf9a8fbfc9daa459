// Elementwise activations; each backward reads the forward's output, not its input.
#include <cmath>  // std::exp
#include <cstdint>

#include "hetdro/ops.h"

namespace hetdro::cpu {

template <typename T>
void sigmoid_forward(T* out, const T* in, int64_t count) {
  // exp(−x) overflows to inf for very negative x, which still gives the right limit 0.
#pragma omp parallel for simd schedule(static) if (count > (1 << 16))
  for (int64_t i = 0; i < count; ++i) out[i] = T(1) / (T(1) + std::exp(-in[i]));
}

template <typename T>
void sigmoid_backward(T* din, const T* dout, const T* out, int64_t count) {
  if (din == nullptr) return;  // a gradient not needed (ops.def)
#pragma omp parallel for simd schedule(static) if (count > (1 << 16))
  for (int64_t i = 0; i < count; ++i) din[i] += dout[i] * out[i] * (T(1) - out[i]);
}

template <typename T>
void relu_forward(T* out, const T* in, int64_t count) {
#pragma omp parallel for simd schedule(static) if (count > (1 << 16))
  for (int64_t i = 0; i < count; ++i) out[i] = in[i] > T(0) ? in[i] : T(0);
}

template <typename T>
void relu_backward(T* din, const T* dout, const T* out, int64_t count) {
  if (din == nullptr) return;
#pragma omp parallel for simd schedule(static) if (count > (1 << 16))
  for (int64_t i = 0; i < count; ++i) din[i] += out[i] > T(0) ? dout[i] : T(0);
}

#define HETDRO_INSTANTIATE(T)                                         \
  template void sigmoid_forward<T>(T*, const T*, int64_t);            \
  template void sigmoid_backward<T>(T*, const T*, const T*, int64_t); \
  template void relu_forward<T>(T*, const T*, int64_t);               \
  template void relu_backward<T>(T*, const T*, const T*, int64_t);
HETDRO_INSTANTIATE(float)
HETDRO_INSTANTIATE(double)
#undef HETDRO_INSTANTIATE

}  // namespace hetdro::cpu

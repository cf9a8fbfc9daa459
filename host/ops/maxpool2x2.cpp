// maxpool2x2: stride 2, floor on odd sizes, ties to the first element in row-major order; and
// maxpool2x2_sigmoid, the same pool with the encoder's sigmoid fused into it (docs/DESIGN.md §1).
#include <cmath>  // std::exp
#include <cstdint>

#include "hetdro/ops.h"

namespace hetdro::cpu {
namespace {

// Offset of the window's maximum from its top-left corner; strict > keeps the first of a tie,
// which the backward must agree with since it re-derives the argmax from the input.
template <typename T>
inline int argmax2x2(const T* p, int w) {
  int best = 0;
  T v = p[0];
  if (p[1] > v) best = 1, v = p[1];
  if (p[w] > v) best = w, v = p[w];
  if (p[w + 1] > v) best = w + 1;
  return best;
}

}  // namespace

template <typename T>
void maxpool2x2_forward(T* out, const T* in, int n, int c, int h, int w) {
  const int oh = h / 2, ow = w / 2;
#pragma omp parallel for schedule(static) if (int64_t(n) * c * h * w > (1 << 16))
  for (int64_t plane = 0; plane < int64_t(n) * c; ++plane) {
    const T* src = in + plane * h * w;
    T* dst = out + plane * oh * ow;
    for (int y = 0; y < oh; ++y)
      for (int x = 0; x < ow; ++x) {
        const T* p = src + 2 * y * w + 2 * x;
        dst[y * ow + x] = p[argmax2x2(p, w)];
      }
  }
}

template <typename T>
void maxpool2x2_backward(T* din, const T* dout, const T* in, int n, int c, int h, int w) {
  if (din == nullptr) return;  // a gradient not needed (ops.def)
  const int oh = h / 2, ow = w / 2;
#pragma omp parallel for schedule(static) if (int64_t(n) * c * h * w > (1 << 16))
  for (int64_t plane = 0; plane < int64_t(n) * c; ++plane) {
    const T* src = in + plane * h * w;
    T* dsrc = din + plane * h * w;
    const T* g = dout + plane * oh * ow;
    for (int y = 0; y < oh; ++y)
      for (int x = 0; x < ow; ++x) {
        const int64_t corner = 2 * y * w + 2 * x;
        dsrc[corner + argmax2x2(src + corner, w)] += g[y * ow + x];
      }
  }
}

// The fused op computes exactly the float operations of maxpool2x2 followed by sigmoid
// (host/ops/activations.cpp), so swapping the pair for it leaves the model's numbers unchanged;
// tests/test_maxpool2x2.cpp holds it to that bit for bit.
template <typename T>
void maxpool2x2_sigmoid_forward(T* out, const T* in, int n, int c, int h, int w) {
  const int oh = h / 2, ow = w / 2;
#pragma omp parallel for schedule(static) if (int64_t(n) * c * h * w > (1 << 16))
  for (int64_t plane = 0; plane < int64_t(n) * c; ++plane) {
    const T* src = in + plane * h * w;
    T* dst = out + plane * oh * ow;
    for (int y = 0; y < oh; ++y)
      for (int x = 0; x < ow; ++x) {
        const T* p = src + 2 * y * w + 2 * x;
        dst[y * ow + x] = T(1) / (T(1) + std::exp(-p[argmax2x2(p, w)]));
      }
  }
}

template <typename T>
void maxpool2x2_sigmoid_backward(T* din, const T* dout, const T* out, const T* in, int n, int c,
                                 int h, int w) {
  if (din == nullptr) return;  // the gradient is not needed (ops.def)
  const int oh = h / 2, ow = w / 2;
#pragma omp parallel for schedule(static) if (int64_t(n) * c * h * w > (1 << 16))
  for (int64_t plane = 0; plane < int64_t(n) * c; ++plane) {
    const T* src = in + plane * h * w;
    T* dsrc = din + plane * h * w;
    const T* g = dout + plane * oh * ow;
    const T* s = out + plane * oh * ow;
    for (int y = 0; y < oh; ++y)
      for (int x = 0; x < ow; ++x) {
        const int64_t corner = 2 * y * w + 2 * x, o = y * ow + x;
        // The unfused pair added the sigmoid's gradient into a zeroed buffer, then that into din.
        // Adding to T(0) first keeps those roundings: without it the compiler may contract the
        // product and the += into one fma, which rounds once where the pair rounded twice
        // (-ffp-contract=fast is GCC's C++ default; GCC 12 happens not to here, nothing says so).
        const T d = T(0) + g[o] * s[o] * (T(1) - s[o]);
        dsrc[corner + argmax2x2(src + corner, w)] += d;
      }
  }
}

#define HETDRO_INSTANTIATE(T)                                                                   \
  template void maxpool2x2_forward<T>(T*, const T*, int, int, int, int);                        \
  template void maxpool2x2_backward<T>(T*, const T*, const T*, int, int, int, int);             \
  template void maxpool2x2_sigmoid_forward<T>(T*, const T*, int, int, int, int);                \
  template void maxpool2x2_sigmoid_backward<T>(T*, const T*, const T*, const T*, int, int, int, \
                                               int);
HETDRO_INSTANTIATE(float)
HETDRO_INSTANTIATE(double)
#undef HETDRO_INSTANTIATE

}  // namespace hetdro::cpu

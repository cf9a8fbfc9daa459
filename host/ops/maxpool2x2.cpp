// maxpool2x2: stride 2, floor on odd sizes, ties to the first element in row-major order.
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

#define HETDRO_INSTANTIATE(T)                                            \
  template void maxpool2x2_forward<T>(T*, const T*, int, int, int, int); \
  template void maxpool2x2_backward<T>(T*, const T*, const T*, int, int, int, int);
HETDRO_INSTANTIATE(float)
HETDRO_INSTANTIATE(double)
#undef HETDRO_INSTANTIATE

}  // namespace hetdro::cpu

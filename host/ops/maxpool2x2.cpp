// maxpool2x2: stride 2, floor on odd sizes, ties to the first element in row-major order; and
// maxpool2x2_sigmoid, the same pool with the encoder's sigmoid fused into it (docs/DESIGN.md §1).
#include "kernels/maxpool2x2.h"  // cuda::argmax2x2, the kernels' own tie rule

#include <cmath>  // std::exp
#include <cstdint>

#include "hetdro/ops.h"

namespace hetdro::cpu {
namespace {

// The pool's two loops, shared by maxpool2x2 and maxpool2x2_sigmoid. The window's argmax is the
// kernels' own (kernels/maxpool2x2.h: ties to the first element in row-major order), which the
// backward re-derives from the input, so forward and backward always agree.
// out[o] = value(max of window o).
template <typename T, typename Value>
void pool_forward(T* out, const T* in, int n, int c, int h, int w, Value value) {
  const int oh = h / 2, ow = w / 2;
#pragma omp parallel for schedule(static) if (int64_t(n) * c * h * w > (1 << 16))
  for (int64_t plane = 0; plane < int64_t(n) * c; ++plane) {
    const T* src = in + plane * h * w;
    T* dst = out + plane * oh * ow;
    for (int y = 0; y < oh; ++y)
      for (int x = 0; x < ow; ++x) {
        const T* p = src + 2 * y * w + 2 * x;
        dst[y * ow + x] = value(p[cuda::argmax2x2(p, w)]);
      }
  }
}

// din[argmax of window o] += grad(plane_offset + o), o the window's index in its plane.
template <typename T, typename Grad>
void pool_backward(T* din, const T* in, int n, int c, int h, int w, Grad grad) {
  const int oh = h / 2, ow = w / 2;
#pragma omp parallel for schedule(static) if (int64_t(n) * c * h * w > (1 << 16))
  for (int64_t plane = 0; plane < int64_t(n) * c; ++plane) {
    const T* src = in + plane * h * w;
    T* dsrc = din + plane * h * w;
    for (int y = 0; y < oh; ++y)
      for (int x = 0; x < ow; ++x) {
        const int64_t corner = 2 * y * w + 2 * x;
        dsrc[corner + cuda::argmax2x2(src + corner, w)] += grad(plane * oh * ow + y * ow + x);
      }
  }
}

}  // namespace

template <typename T>
void maxpool2x2_forward(T* out, const T* in, int n, int c, int h, int w) {
  pool_forward(out, in, n, c, h, w, [](T x) { return x; });
}

template <typename T>
void maxpool2x2_backward(T* din, const T* dout, const T* in, int n, int c, int h, int w) {
  if (din == nullptr) return;  // a gradient not needed (ops.def)
  pool_backward(din, in, n, c, h, w, [dout](int64_t o) { return dout[o]; });
}

// The fused op computes exactly the float operations of maxpool2x2 followed by sigmoid
// (host/ops/activations.cpp), so swapping the pair for it leaves the model's numbers unchanged;
// tests/test_maxpool2x2.cpp holds it to that bit for bit.
template <typename T>
void maxpool2x2_sigmoid_forward(T* out, const T* in, int n, int c, int h, int w) {
  pool_forward(out, in, n, c, h, w, [](T x) { return T(1) / (T(1) + std::exp(-x)); });
}

template <typename T>
void maxpool2x2_sigmoid_backward(T* din, const T* dout, const T* out, const T* in, int n, int c,
                                 int h, int w) {
  if (din == nullptr) return;  // the gradient is not needed (ops.def)
  pool_backward(din, in, n, c, h, w, [dout, out](int64_t o) {
    // The unfused pair added the sigmoid's gradient into a zeroed buffer, then that into din.
    // Adding to T(0) first keeps those roundings: without it the compiler may contract the
    // product and the += into one fma, which rounds once where the pair rounded twice
    // (-ffp-contract=fast is GCC's C++ default; GCC 12 happens not to here, nothing says so).
    return T(0) + dout[o] * out[o] * (T(1) - out[o]);
  });
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

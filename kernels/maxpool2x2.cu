// maxpool2x2: 2x2 windows, stride 2, floor on odd sizes; ties to the first element in row-major
// order (docs/DESIGN.md §2). One thread per output element. maxpool2x2_sigmoid is the same pool
// with the encoder's sigmoid (docs/DESIGN.md §1) applied at the store and its gradient at the +=:
// one pass each way where pool then sigmoid took two forward and two backward (and a zeroed
// buffer between them), docs/DESIGN.md §3.
//
// Hand-written rather than cuDNN's pooling (docs/DESIGN.md §3 puts cuDNN's conv and pooling in
// kernels/cudnn.cu), for three reasons:
// - Ties. cuDNN's backward sends a tied window's gradient to one of the maxima but does not
//   document which. Ties are common here, not rare: Fashion-MNIST's background is exact zeros,
//   so the convolutions give the same value (the bias path) over whole regions of the image,
//   and the pool sees windows of four equal values. The contract (ops.def) and the CPU reference
//   give them to the first element; argmax2x2 (maxpool2x2.h) does exactly that.
// - Inputs. cudnnPoolingBackward needs the forward's output y, which the op does not receive;
//   it would cost a second forward into scratch on every backward.
// - Cost. Windows do not overlap, so both directions are one pass with no atomics: the forward
//   reads in and writes out, the backward reads in and dout and adds into one din element per
//   window; no more than cuDNN would move.
#include <cuda_runtime.h>

#include <cstdint>

#include "activations.h"  // sigmoid, sigmoid_grad
#include "context.h"      // context, blocks_for
#include "cuda_check.h"   // launchCheck
#include "hetdro/cuda_ops.h"
#include "maxpool2x2.h"  // window_corner, argmax2x2

namespace hetdro::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void pool_forward(float* __restrict__ out, const float* __restrict__ in, int64_t count,
                             int h, int w) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < count;
       o += int64_t(gridDim.x) * blockDim.x) {
    const float* p = in + window_corner(o, h, w);
    out[o] = p[argmax2x2(p, int64_t(w))];
  }
}

// Each window adds into exactly one din element and windows are disjoint, so no two threads touch
// the same element: a plain +=, no atomics. Elements outside every window (odd edges) and the
// non-maxima keep their value.
__global__ void pool_backward(float* __restrict__ din, const float* __restrict__ dout,
                              const float* __restrict__ in, int64_t count, int h, int w) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < count;
       o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t corner = window_corner(o, h, w);
    din[corner + argmax2x2(in + corner, int64_t(w))] += dout[o];
  }
}

// out may not alias in: out is a quarter of in's size and written while other threads read in.
__global__ void pool_sigmoid_forward(float* __restrict__ out, const float* __restrict__ in,
                                     int64_t count, int h, int w) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < count;
       o += int64_t(gridDim.x) * blockDim.x) {
    const float* p = in + window_corner(o, h, w);
    out[o] = sigmoid(p[argmax2x2(p, int64_t(w))]);
  }
}

// As pool_backward, one disjoint din element per window. The 0.0f + keeps the roundings of the
// unfused pair, whose sigmoid_backward added the gradient into a zeroed buffer: without it nvcc
// contracts the product and the += into one fma with din as the addend (seen in the PTX); with
// it the PTX is fma(dout·out, 1 − out, 0) then add, the pair's two roundings.
__global__ void pool_sigmoid_backward(float* __restrict__ din, const float* __restrict__ dout,
                                      const float* __restrict__ out, const float* __restrict__ in,
                                      int64_t count, int h, int w) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < count;
       o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t corner = window_corner(o, h, w);
    din[corner + argmax2x2(in + corner, int64_t(w))] += 0.0f + sigmoid_grad(dout[o], out[o]);
  }
}

}  // namespace

template <>
void maxpool2x2_forward<float>(float* out, const float* in, int n, int c, int h, int w) {
  const int64_t count = int64_t(n) * c * (h / 2) * (w / 2);
  if (count <= 0) return;
  pool_forward<<<blocks_for(count, kThreads), kThreads, 0, context().stream()>>>(out, in, count, h,
                                                                                 w);
  launchCheck();
}

template <>
void maxpool2x2_backward<float>(float* din, const float* dout, const float* in, int n, int c, int h,
                                int w) {
  const int64_t count = int64_t(n) * c * (h / 2) * (w / 2);
  if (count <= 0 || din == nullptr) return;  // nullptr: gradient not needed (ops.def)
  pool_backward<<<blocks_for(count, kThreads), kThreads, 0, context().stream()>>>(din, dout, in,
                                                                                  count, h, w);
  launchCheck();
}

template <>
void maxpool2x2_sigmoid_forward<float>(float* out, const float* in, int n, int c, int h, int w) {
  const int64_t count = int64_t(n) * c * (h / 2) * (w / 2);
  if (count <= 0) return;
  pool_sigmoid_forward<<<blocks_for(count, kThreads), kThreads, 0, context().stream()>>>(
      out, in, count, h, w);
  launchCheck();
}

template <>
void maxpool2x2_sigmoid_backward<float>(float* din, const float* dout, const float* out,
                                        const float* in, int n, int c, int h, int w) {
  const int64_t count = int64_t(n) * c * (h / 2) * (w / 2);
  if (count <= 0 || din == nullptr) return;  // nullptr: gradient not needed (ops.def)
  pool_sigmoid_backward<<<blocks_for(count, kThreads), kThreads, 0, context().stream()>>>(
      din, dout, out, in, count, h, w);
  launchCheck();
}

}  // namespace hetdro::cuda

// sigmoid and ReLU, forward and backward: elementwise grid-stride kernels on the formulas of
// activations.h. The forward overwrites out (which may alias in); the backward ADDS into din
// (ops.def), from the forward's output.
//
// Each is its own pass over memory. The encoder's sigmoid runs fused into its pool instead
// (maxpool2x2_sigmoid, kernels/maxpool2x2.cu); ReLU, right after a linear layer (docs/DESIGN.md
// §1), could still be fused into linear's bias pass or a cuBLASLt epilogue (docs/DESIGN.md §3).
#include <cuda_runtime.h>

#include <cstdint>

#include "activations.h"  // sigmoid, sigmoid_grad, relu, relu_grad
#include "context.h"      // context, blocks_for
#include "cuda_check.h"   // launchCheck
#include "hetdro/cuda_ops.h"

namespace hetdro::cuda {
namespace {

constexpr int kThreads = 256;

// No __restrict__ on the forward: out may alias in. Each element is read before it is written
// by the same thread, so aliasing is safe.
template <typename F>
__global__ void map_kernel(float* out, const float* in, int64_t count, F f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = f(in[i]);
}

template <typename F>
__global__ void grad_kernel(float* __restrict__ din, const float* __restrict__ dout,
                            const float* __restrict__ out, int64_t count, F f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x)
    din[i] += f(dout[i], out[i]);
}

struct Sigmoid {
  __device__ float operator()(float x) const { return sigmoid(x); }
};
struct SigmoidGrad {
  __device__ float operator()(float dy, float y) const { return sigmoid_grad(dy, y); }
};
struct Relu {
  __device__ float operator()(float x) const { return relu(x); }
};
struct ReluGrad {
  __device__ float operator()(float dy, float y) const { return relu_grad(dy, y); }
};

template <typename F>
void map(float* out, const float* in, int64_t count, F f) {
  if (count <= 0) return;
  map_kernel<<<blocks_for(count, kThreads), kThreads, 0, context().stream()>>>(out, in, count, f);
  launchCheck();
}

template <typename F>
void grad(float* din, const float* dout, const float* out, int64_t count, F f) {
  if (count <= 0 || din == nullptr) return;  // nullptr: gradient not needed (ops.def)
  grad_kernel<<<blocks_for(count, kThreads), kThreads, 0, context().stream()>>>(din, dout, out,
                                                                                count, f);
  launchCheck();
}

}  // namespace

template <>
void sigmoid_forward<float>(float* out, const float* in, int64_t count) {
  map(out, in, count, Sigmoid{});
}

template <>
void sigmoid_backward<float>(float* din, const float* dout, const float* out, int64_t count) {
  grad(din, dout, out, count, SigmoidGrad{});
}

template <>
void relu_forward<float>(float* out, const float* in, int64_t count) {
  map(out, in, count, Relu{});
}

template <>
void relu_backward<float>(float* din, const float* dout, const float* out, int64_t count) {
  grad(din, dout, out, count, ReluGrad{});
}

}  // namespace hetdro::cuda

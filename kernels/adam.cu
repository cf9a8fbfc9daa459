// adam_update on the GPU (docs/DESIGN.md §2, "Adam"): one launch over the flat parameter buffer,
// the element update of the CPU reference (kernels/adam.h), four elements per load where the
// buffers allow it. The kernel reads check_finite's status itself, so a flagged step skips the
// update without the host waiting for the GPU (§6).
#include <cuda_runtime.h>

#include <cstdint>

#include "adam.h"  // hd::adam_step, hd::adam_element
#include "context.h"
#include "cuda_check.h"
#include "hetdro/cuda_ops.h"

namespace hetdro::cuda {
namespace {

constexpr int kThreads = 256;

struct AdamArgs {
  float lr, beta1, beta2, eps, weight_decay;
};

__device__ void update4(float4& p, float4& m, float4& v, const float4& g, const AdamArgs& a,
                        const hd::AdamStep<float>& s) {
  hd::adam_element(p.x, m.x, v.x, g.x, a.beta1, a.beta2, a.eps, s);
  hd::adam_element(p.y, m.y, v.y, g.y, a.beta1, a.beta2, a.eps, s);
  hd::adam_element(p.z, m.z, v.z, g.z, a.beta1, a.beta2, a.eps, s);
  hd::adam_element(p.w, m.w, v.w, g.w, a.beta1, a.beta2, a.eps, s);
}

// kVec4: the four buffers are 16-byte aligned, so the first count/4·4 elements go as float4 and
// the last count % 4 one by one.
template <bool kVec4>
__global__ void adam_kernel(float* __restrict__ param, float* __restrict__ m, float* __restrict__ v,
                            const float* __restrict__ grad, int64_t count, AdamArgs a,
                            const int64_t* step, const int64_t* status) {
  if (status && status[0] >= 0) return;  // a non-finite loss or gradient: keep the parameters
  // The step is read on the device (a replayed graph's step), its scalars folded once per block.
  __shared__ hd::AdamStep<float> s;
  if (threadIdx.x == 0) s = hd::adam_step(a.lr, a.beta1, a.beta2, a.weight_decay, step[0] + 1);
  __syncthreads();
  const int64_t thread = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t done = 0;
  if constexpr (kVec4) {
    const int64_t quads = count / 4;
    auto* p4 = reinterpret_cast<float4*>(param);
    auto* m4 = reinterpret_cast<float4*>(m);
    auto* v4 = reinterpret_cast<float4*>(v);
    const auto* g4 = reinterpret_cast<const float4*>(grad);
    for (int64_t i = thread; i < quads; i += stride) {
      float4 pi = p4[i], mi = m4[i], vi = v4[i];
      update4(pi, mi, vi, g4[i], a, s);
      p4[i] = pi;
      m4[i] = mi;
      v4[i] = vi;
    }
    done = quads * 4;
  }
  for (int64_t i = done + thread; i < count; i += stride)
    hd::adam_element(param[i], m[i], v[i], grad[i], a.beta1, a.beta2, a.eps, s);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

template <>
void adam_update<float>(float* param, float* m, float* v, const float* grad, int64_t count,
                        float lr, float beta1, float beta2, float eps, float weight_decay,
                        const int64_t* step, const int64_t* status) {
  if (count <= 0) return;
  const AdamArgs a{lr, beta1, beta2, eps, weight_decay};
  const cudaStream_t s = context().stream();
  if (aligned16(param) && aligned16(m) && aligned16(v) && aligned16(grad)) {
    const int64_t quads = count / 4;
    adam_kernel<true><<<blocks_for(quads > 0 ? quads : count, kThreads), kThreads, 0, s>>>(
        param, m, v, grad, count, a, step, status);
  } else {
    adam_kernel<false><<<blocks_for(count, kThreads), kThreads, 0, s>>>(param, m, v, grad, count, a,
                                                                        step, status);
  }
  launchCheck();
}

}  // namespace hetdro::cuda

// clf_objective on the GPU (docs/DESIGN.md §1, §2): one block. Its first thread runs the
// per-group arithmetic of the CPU reference, the same function (kernels/clf_objective.h), since
// groups are few and the q update is a short serial chain in double; then the block writes the
// per-sample weights.
#include <cuda_runtime.h>

#include <cmath>  // NAN
#include <cstdint>

#include "clf_objective.h"  // hd::clf_objective_groups, hd::clf_sample_weight
#include "context.h"
#include "cuda_check.h"
#include "hetdro/cuda_ops.h"

namespace hetdro::cuda {
namespace {

constexpr int kThreads = 256;

// dloss [groups] is scratch: ∂L_clf/∂ℓ_g, written by thread 0 and read by the block after the
// barrier (a barrier orders global memory within a block).
__global__ void clf_objective_kernel(double* clf, double* group_loss, double* q_next,
                                     float* __restrict__ weight, double* dloss, const double* q,
                                     const float* __restrict__ group_loss_sum,
                                     const int32_t* __restrict__ group_count,
                                     const int32_t* __restrict__ group,
                                     const double* __restrict__ adjustment, int n, int groups,
                                     ClfRule rule) {
  if (threadIdx.x == 0)
    hd::clf_objective_groups(clf, group_loss, q_next, dloss, q, group_loss_sum, group_count,
                             adjustment, n, groups, rule);
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int g = rule.groupdro ? group[i] : 0;
    // softmax_xent_forward has already made the loss NaN for a group out of range; keep the
    // read in bounds and the weight NaN too.
    weight[i] = !rule.groupdro || (g >= 0 && g < groups)
                    ? hd::clf_sample_weight<float>(dloss, group_count, n, g, rule.groupdro)
                    : NAN;
  }
}

}  // namespace

template <>
void clf_objective<float>(double* clf, double* group_loss, double* q_next, float* weight,
                          const double* q, const float* group_loss_sum, const int32_t* group_count,
                          const int32_t* group, const double* adjustment, int n, int groups,
                          ClfRule rule) {
  double* dloss =
      static_cast<double*>(context().scratch(sizeof(double) * size_t(groups > 0 ? groups : 1)));
  clf_objective_kernel<<<1, kThreads, 0, context().stream()>>>(
      clf, group_loss, q_next, weight, dloss, q, group_loss_sum, group_count, group, adjustment, n,
      groups, rule);
  launchCheck();
}

}  // namespace hetdro::cuda

// clf_objective: L_clf as ERM or as one of the GroupDRO family (docs/DESIGN.md §1), the update
// of the group weights q, and the per-sample weights softmax_xent_backward applies (§2). The
// per-group arithmetic lives in kernels/clf_objective.h, which the CUDA kernel runs too.
#include "kernels/clf_objective.h"  // hd::clf_objective_groups, hd::clf_sample_weight

#include <cstdint>
#include <vector>

#include "hetdro/ops.h"

namespace hetdro::cpu {

template <typename T>
void clf_objective(double* clf, double* group_loss, double* q_next, T* weight, const double* q,
                   const T* group_loss_sum, const int32_t* group_count, const int32_t* group,
                   const double* adjustment, int n, int groups, ClfRule rule) {
  std::vector<double> dloss(size_t(groups > 0 ? groups : 0));
  hd::clf_objective_groups(clf, group_loss, q_next, dloss.data(), q, group_loss_sum, group_count,
                           adjustment, n, groups, rule);
  for (int i = 0; i < n; ++i)
    weight[i] = hd::clf_sample_weight<T>(dloss.data(), group_count, n, rule.groupdro ? group[i] : 0,
                                         rule.groupdro);
}

template void clf_objective<float>(double*, double*, double*, float*, const double*, const float*,
                                   const int32_t*, const int32_t*, const double*, int, int,
                                   ClfRule);
template void clf_objective<double>(double*, double*, double*, double*, const double*,
                                    const double*, const int32_t*, const int32_t*, const double*,
                                    int, int, ClfRule);

}  // namespace hetdro::cpu

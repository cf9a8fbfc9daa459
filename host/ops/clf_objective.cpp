// clf_objective: L_clf as ERM or GroupDRO (docs/DESIGN.md §1), the GroupDRO weights' update, and
// the per-sample weights that softmax_xent_backward applies (docs/DESIGN.md §2).
#include <cmath>  // std::exp
#include <cstdint>

#include "hetdro/ops.h"

namespace hetdro::cpu {

template <typename T>
void clf_objective(double* clf, double* group_loss, double* q, T* weight, const T* group_loss_sum,
                   const int32_t* group_count, const int32_t* group, int n, int groups,
                   int groupdro, double eta) {
  double total = 0;
  for (int g = 0; g < groups; ++g) {
    group_loss[g] = group_count[g] > 0 ? double(group_loss_sum[g]) / group_count[g] : 0.0;
    total += double(group_loss_sum[g]);
  }
  if (!groupdro) {
    clf[0] = total / n;
    for (int i = 0; i < n; ++i) weight[i] = T(1.0 / n);
    return;
  }
  if (eta > 0) {  // exponentiated gradient (Sagawa et al. 2020); an absent group keeps its weight
    double sum = 0;
    for (int g = 0; g < groups; ++g)
      sum += q[g] *= group_count[g] > 0 ? std::exp(eta * group_loss[g]) : 1.0;
    for (int g = 0; g < groups; ++g) q[g] /= sum;
  }
  double objective = 0;
  for (int g = 0; g < groups; ++g) objective += q[g] * group_loss[g];
  clf[0] = objective;
  for (int i = 0; i < n; ++i) weight[i] = T(q[group[i]] / group_count[group[i]]);
}

template void clf_objective<float>(double*, double*, double*, float*, const float*, const int32_t*,
                                   const int32_t*, int, int, int, double);
template void clf_objective<double>(double*, double*, double*, double*, const double*,
                                    const int32_t*, const int32_t*, int, int, int, double);

}  // namespace hetdro::cpu

// clf_objective: L_clf as ERM or as one of the GroupDRO family (docs/DESIGN.md §1), the update
// of the group weights q, and the per-sample weights softmax_xent_backward applies (§2).
#include <algorithm>  // std::max
#include <cmath>      // std::exp, std::log
#include <cstdint>
#include <vector>

#include "hetdro/ops.h"

namespace hetdro::cpu {
namespace {

// softmax(scale · x) over the present groups; 0 for the absent ones.
std::vector<double> present_softmax(const std::vector<double>& x, const int32_t* count, int groups,
                                    double scale) {
  double top = -HUGE_VAL;
  for (int g = 0; g < groups; ++g)
    if (count[g] > 0) top = std::max(top, scale * x[g]);
  std::vector<double> p(groups, 0.0);
  double sum = 0;
  for (int g = 0; g < groups; ++g)
    if (count[g] > 0) sum += p[g] = std::exp(scale * x[g] - top);
  for (double& v : p) v /= sum;
  return p;
}

}  // namespace

template <typename T>
void clf_objective(double* clf, double* group_loss, double* q_next, T* weight, const double* q,
                   const T* group_loss_sum, const int32_t* group_count, const int32_t* group,
                   const double* adjustment, int n, int groups, ClfRule rule) {
  double total = 0;
  std::vector<double> loss(groups);
  for (int g = 0; g < groups; ++g) {
    loss[g] = group_loss[g] = group_count[g] > 0 ? double(group_loss_sum[g]) / group_count[g] : 0.0;
    total += double(group_loss_sum[g]);
  }
  for (int g = 0; g < groups; ++g) q_next[g] = q[g];
  if (!rule.groupdro) {
    clf[0] = total / n;
    for (int i = 0; i < n; ++i) weight[i] = T(1.0 / n);
    return;
  }
  if (rule.update_q) {
    std::vector<double> adjusted(loss);
    for (int g = 0; g < groups; ++g) adjusted[g] += adjustment ? adjustment[g] : 0.0;
    if (rule.update == GroupDroUpdate::exp) {
      // exp(η ℓ̃_g) over their sum, each shifted by the largest: the same q, never inf/inf.
      double top = -HUGE_VAL, sum = 0;
      for (int g = 0; g < groups; ++g)
        if (group_count[g] > 0) top = std::max(top, rule.eta * adjusted[g]);
      // An absent group's factor is exp(0) = 1 before the shift, exp(−top) after it.
      for (int g = 0; g < groups; ++g)
        sum += q_next[g] *= std::exp((group_count[g] > 0 ? rule.eta * adjusted[g] : 0.0) - top);
      for (int g = 0; g < groups; ++g) q_next[g] /= sum;
    } else if (rule.update == GroupDroUpdate::softmax) {
      const std::vector<double> p = present_softmax(adjusted, group_count, groups, 1.0 / rule.tau);
      for (int g = 0; g < groups; ++g) q_next[g] = p[g];
    } else {
      const std::vector<double> p = present_softmax(adjusted, group_count, groups, rule.eta);
      for (int g = 0; g < groups; ++g) q_next[g] = (1 - rule.gamma) * q_next[g] + rule.gamma * p[g];
    }
  }
  q = q_next;  // the objective and the weights use the updated q
  // dL_clf/dℓ_g for each group; weight_i = that over the group's count.
  std::vector<double> d(groups, 0.0);
  if (rule.objective == GroupDroObjective::weighted) {
    double objective = 0;
    for (int g = 0; g < groups; ++g) objective += q[g] * loss[g];
    clf[0] = objective;
    for (int g = 0; g < groups; ++g) d[g] = q[g];
  } else if (rule.objective == GroupDroObjective::max) {
    int worst = -1;
    for (int g = 0; g < groups; ++g)
      if (group_count[g] > 0 && (worst < 0 || loss[g] > loss[worst])) worst = g;
    clf[0] = loss[worst];
    d[worst] = 1.0;
  } else {
    const std::vector<double> p = present_softmax(loss, group_count, groups, 1.0 / rule.tau);
    double top = -HUGE_VAL, sum = 0;
    for (int g = 0; g < groups; ++g)
      if (group_count[g] > 0) top = std::max(top, loss[g]);
    for (int g = 0; g < groups; ++g)
      if (group_count[g] > 0) sum += std::exp((loss[g] - top) / rule.tau);
    clf[0] = top + rule.tau * std::log(sum);
    d = p;
  }
  for (int i = 0; i < n; ++i) weight[i] = T(d[group[i]] / group_count[group[i]]);
}

template void clf_objective<float>(double*, double*, double*, float*, const double*, const float*,
                                   const int32_t*, const int32_t*, const double*, int, int,
                                   ClfRule);
template void clf_objective<double>(double*, double*, double*, double*, const double*,
                                    const double*, const int32_t*, const int32_t*, const double*,
                                    int, int, ClfRule);

}  // namespace hetdro::cpu

// The per-group arithmetic of clf_objective (docs/DESIGN.md §1, §2): ERM or the GroupDRO family,
// the q update and ∂L_clf/∂ℓ_g. The CPU reference (host/ops/clf_objective.cpp) and the CUDA
// kernel (kernels/clf_objective.cu) both call these functions, so the two compute the same
// doubles in the same order; only the last bits of exp and log may differ between host and device.
#pragma once

#include <cmath>  // std::exp, std::log, HUGE_VAL
#include <cstdint>

#include "hetdro/hd.h"
#include "hetdro/ops.h"  // ClfRule

namespace hetdro::hd {

// std::max's rule, a < b ? b : a, without <algorithm> in device code.
HETDRO_HD inline double larger(double a, double b) { return a < b ? b : a; }

// ℓ̃_g = ℓ_g + adjustment_g (C/√N_g), or ℓ_g when there is no adjustment.
HETDRO_HD inline double adjusted_loss(const double* loss, const double* adjustment, int g) {
  return loss[g] + (adjustment ? adjustment[g] : 0.0);
}

// softmax(scale · ℓ̃) over the groups present (count > 0): p_g = e_g / sum with
// e_g = exp(scale ℓ̃_g − top) for a present group and 0 for an absent one.
struct PresentSoftmax {
  double top = -HUGE_VAL, sum = 0;
  HETDRO_HD double at(double scaled, int32_t count) const {
    return (count > 0 ? std::exp(scaled - top) : 0.0) / sum;
  }
};
HETDRO_HD inline PresentSoftmax present_softmax(const double* loss, const double* adjustment,
                                                const int32_t* count, int groups, double scale) {
  PresentSoftmax s;
  for (int g = 0; g < groups; ++g)
    if (count[g] > 0) s.top = larger(s.top, scale * adjusted_loss(loss, adjustment, g));
  for (int g = 0; g < groups; ++g)
    if (count[g] > 0) s.sum += std::exp(scale * adjusted_loss(loss, adjustment, g) - s.top);
  return s;
}

// Everything of clf_objective but the per-sample weights: group_loss, q_next, clf, and
// dloss[g] = ∂L_clf/∂ℓ_g (GroupDRO only; see clf_sample_weight). q_next may alias q.
template <typename T>
HETDRO_HD void clf_objective_groups(double* clf, double* group_loss, double* q_next, double* dloss,
                                    const double* q, const T* group_loss_sum,
                                    const int32_t* group_count, const double* adjustment, int n,
                                    int groups, const ClfRule& rule) {
  double total = 0;
  for (int g = 0; g < groups; ++g) {
    group_loss[g] = group_count[g] > 0 ? double(group_loss_sum[g]) / group_count[g] : 0.0;
    total += double(group_loss_sum[g]);
  }
  const double* loss = group_loss;
  for (int g = 0; g < groups; ++g) q_next[g] = q[g];
  if (!rule.groupdro) {
    clf[0] = total / n;
    return;
  }
  if (rule.update_q) {
    if (rule.update == GroupDroUpdate::exp) {
      // exp(η ℓ̃_g) over their sum, each shifted by the largest: the same q, never inf/inf.
      // An absent group's factor is exp(0) = 1 before the shift, exp(−top) after it.
      double top = -HUGE_VAL, sum = 0;
      for (int g = 0; g < groups; ++g)
        if (group_count[g] > 0) top = larger(top, rule.eta * adjusted_loss(loss, adjustment, g));
      for (int g = 0; g < groups; ++g)
        sum += q_next[g] *= std::exp(
            (group_count[g] > 0 ? rule.eta * adjusted_loss(loss, adjustment, g) : 0.0) - top);
      for (int g = 0; g < groups; ++g) q_next[g] /= sum;
    } else if (rule.update == GroupDroUpdate::softmax) {
      const double scale = 1.0 / rule.tau;
      const PresentSoftmax p = present_softmax(loss, adjustment, group_count, groups, scale);
      for (int g = 0; g < groups; ++g)
        q_next[g] = p.at(scale * adjusted_loss(loss, adjustment, g), group_count[g]);
    } else {
      const PresentSoftmax p = present_softmax(loss, adjustment, group_count, groups, rule.eta);
      for (int g = 0; g < groups; ++g)
        q_next[g] =
            (1 - rule.gamma) * q_next[g] +
            rule.gamma * p.at(rule.eta * adjusted_loss(loss, adjustment, g), group_count[g]);
    }
  }
  // The objective and its gradient use the updated q, held constant (docs/DESIGN.md §2).
  for (int g = 0; g < groups; ++g) dloss[g] = 0.0;
  if (rule.objective == GroupDroObjective::weighted) {
    double objective = 0;
    for (int g = 0; g < groups; ++g) objective += q_next[g] * loss[g];
    clf[0] = objective;
    for (int g = 0; g < groups; ++g) dloss[g] = q_next[g];
  } else if (rule.objective == GroupDroObjective::max) {
    int worst = -1;
    for (int g = 0; g < groups; ++g)
      if (group_count[g] > 0 && (worst < 0 || loss[g] > loss[worst])) worst = g;
    // No group present: no worst group, and a NaN that check_finite reports.
    clf[0] = worst >= 0 ? loss[worst] : NAN;
    if (worst >= 0) dloss[worst] = 1.0;
  } else {
    const double scale = 1.0 / rule.tau;
    const PresentSoftmax p = present_softmax(loss, nullptr, group_count, groups, scale);
    double top = -HUGE_VAL, sum = 0;
    for (int g = 0; g < groups; ++g)
      if (group_count[g] > 0) top = larger(top, loss[g]);
    for (int g = 0; g < groups; ++g)
      if (group_count[g] > 0) sum += std::exp((loss[g] - top) / rule.tau);
    clf[0] = top + rule.tau * std::log(sum);
    for (int g = 0; g < groups; ++g) dloss[g] = p.at(scale * loss[g], group_count[g]);
  }
}

// weight_i = ∂L_clf/∂loss_i: 1/n for ERM, dloss[g_i] / count[g_i] for GroupDRO.
template <typename T>
HETDRO_HD T clf_sample_weight(const double* dloss, const int32_t* group_count, int n, int g,
                              bool groupdro) {
  return groupdro ? T(dloss[g] / group_count[g]) : T(1.0 / n);
}

}  // namespace hetdro::hd

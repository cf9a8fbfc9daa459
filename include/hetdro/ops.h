// The CPU reference of every op (docs/DESIGN.md §6): declarations expanded from the one op list,
// ops.def, which documents each op. Definitions in host/ops/<op>.cpp, for float and double.
// Code that must run on any backend calls ops through Backend<T> (backend.h) instead.
#pragma once

#include <cstdint>

#include "hetdro/config.h"  // GroupDroObjective, GroupDroUpdate

namespace hetdro {

// clf_objective's rule (docs/DESIGN.md §1): ERM, or GroupDRO with its objective and its update
// of the group weights q.
struct ClfRule {
  bool groupdro = false;
  GroupDroObjective objective = GroupDroObjective::weighted;
  GroupDroUpdate update = GroupDroUpdate::exp;
  double eta = 0.01, tau = 1.0, gamma = 0.1;
  bool update_q = false;  // a training step: update q from this batch first
};

// The per-pair size of w2_gaussian's `saved`: both eigendecompositions, [U, a, V, mu].
inline int64_t w2_gaussian_saved_size(int k) { return 2 * int64_t(k) * k + 2 * int64_t(k); }

namespace cpu {

#define HETDRO_OP(name, params, args) \
  template <typename T>               \
  void name params;
#include "hetdro/ops.def"
#undef HETDRO_OP

}  // namespace cpu
}  // namespace hetdro

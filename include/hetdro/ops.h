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

// The symmetric eigensolver alone, outside the op list like cuda::eigh (host/ops/eigh.cpp):
// A [batch,k,k] symmetric (its lower triangle is read) → eigenvalues ascending w [batch,k] and
// eigenvectors V [batch,k,k], row-major, eigenvector i in column i. Throws std::runtime_error
// naming the matrix when Eigen does not converge. For hetdro_torch.eigh (docs/DESIGN.md §8).
template <typename T>
void eigh(T* w, T* V, const T* A, int batch, int k);

}  // namespace cpu
}  // namespace hetdro

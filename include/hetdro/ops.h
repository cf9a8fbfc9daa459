// The CPU reference of every op (docs/DESIGN.md §6): declarations expanded from the one op list,
// ops.def, which documents each op. Definitions in host/ops/<op>.cpp, for float and double.
// Code that must run on any backend calls ops through Backend<T> (backend.h) instead.
#pragma once

#include <cstdint>

namespace hetdro {

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

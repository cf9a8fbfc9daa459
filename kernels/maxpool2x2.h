// The 2x2 window's argmax, shared by the maxpool2x2 kernels and the CPU tests that check them.
#pragma once

#include <cstdint>

#include "hetdro/hd.h"

namespace hetdro::cuda {

// Offset of the window's maximum from its top-left corner p (row stride w): 0, 1, w or w + 1.
// Strict > keeps the first of a tie in row-major order, as the CPU reference does (docs/DESIGN.md
// §2); the backward re-derives the argmax from the input with this same function, so forward and
// backward always agree. A NaN never wins a comparison, so it is chosen only in the first slot.
template <typename T>
HETDRO_HD inline int64_t argmax2x2(const T* p, int64_t w) {
  int64_t best = 0;
  T v = p[0];
  if (p[1] > v) best = 1, v = p[1];
  if (p[w] > v) best = w, v = p[w];
  if (p[w + 1] > v) best = w + 1;
  return best;
}

}  // namespace hetdro::cuda

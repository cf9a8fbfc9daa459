// The index math of the maxpool2x2 kernels (output element -> window, the window's argmax),
// shared with the CPU tests that check them against the reference.
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

// Output element o of [n·c, h/2, w/2] (row-major) -> the index in the input [n·c, h, w] of its
// window's top-left corner (2y, 2x). Odd trailing rows and columns belong to no window.
HETDRO_HD inline int64_t window_corner(int64_t o, int h, int w) {
  const int64_t oh = h / 2, ow = w / 2;
  const int64_t plane = o / (oh * ow);
  const int64_t r = o - plane * oh * ow;
  const int64_t y = r / ow, x = r - y * ow;
  return plane * h * w + 2 * y * w + 2 * x;
}

}  // namespace hetdro::cuda

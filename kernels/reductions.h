// The arithmetic of argmax_rows split among `lanes` workers (docs/DESIGN.md §6), shared by the
// CUDA kernel and the CPU tests. The reference scans a row with `row[c] > row[best]` from
// best = 0, so it returns the first column of the maximum, skips NaNs, and returns 0 when column
// 0 is NaN (nothing compares greater than it). Here each worker keeps the first maximum of its
// columns, NaNs skipped, and the partials combine by value, ties to the lower column: an
// associative, commutative rule, so any reduction tree gives the reference's answer.
#pragma once

#include "hetdro/hd.h"

namespace hetdro::hd {

template <typename T>
struct ArgMax {
  T value;
  int index;  // −1: no column seen yet
};

// b's claim beats a's: a larger value, or the same value at a lower column.
template <typename T>
HETDRO_HD ArgMax<T> argmax_combine(ArgMax<T> a, ArgMax<T> b) {
  if (b.index < 0) return a;
  if (a.index < 0) return b;
  return (b.value > a.value || (b.value == a.value && b.index < a.index)) ? b : a;
}

// The first maximum among this worker's columns lane, lane + lanes, ... (NaNs skipped).
template <typename T>
HETDRO_HD ArgMax<T> lane_argmax(const T* row, int cols, int lane, int lanes) {
  ArgMax<T> best{T(0), -1};
  for (int c = lane; c < cols; c += lanes)
    if (row[c] == row[c]) best = argmax_combine(best, ArgMax<T>{row[c], c});
  return best;
}

// The row's answer from the combined claim: 0 when column 0 is NaN or the row is empty.
template <typename T>
HETDRO_HD int argmax_finish(ArgMax<T> combined, bool first_is_nan) {
  return first_is_nan || combined.index < 0 ? 0 : combined.index;
}

}  // namespace hetdro::hd

// The CUDA argmax_rows's arithmetic (kernels/reductions.h), run on the CPU with each row split
// among 1 to 32 simulated lanes combined as the kernel's shuffle butterfly combines them, against
// the CPU reference: ties, NaNs (also in column 0), infinities, one column and a thousand.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "hetdro/ops.h"
#include "reductions.h"  // kernels/: hd::lane_argmax, argmax_combine, argmax_finish
#include "testing.h"     // random_vector

namespace hetdro {
namespace {

int lane_argmax_row(const float* row, int cols, int W) {
  std::vector<hd::ArgMax<float>> part(W);
  for (int l = 0; l < W; ++l) part[l] = hd::lane_argmax(row, cols, l, W);
  for (int offset = W / 2; offset > 0; offset /= 2) {
    auto next = part;
    for (int l = 0; l < W; ++l) next[l] = hd::argmax_combine(part[l], part[l ^ offset]);
    part = next;
  }
  for (int l = 1; l < W; ++l) EXPECT_EQ(part[l].index, part[0].index);  // every lane agrees
  return hd::argmax_finish(part[0], cols > 0 && std::isnan(row[0]));
}

void expect_matches(const std::vector<float>& x, int n, int cols) {
  std::vector<int32_t> ref(n);
  cpu::argmax_rows(ref.data(), x.data(), n, cols);
  for (int W : {1, 2, 4, 8, 16, 32})
    for (int i = 0; i < n; ++i)
      EXPECT_EQ(lane_argmax_row(x.data() + int64_t(i) * cols, cols, W), ref[i])
          << "row " << i << " cols " << cols << " W " << W;
}

TEST(ReductionsHd, ArgmaxOfRandomRowsWithTiesMatchesTheReference) {
  for (int cols : {1, 3, 10, 33, 1000}) {
    const int n = 40;
    auto x = testing::random_vector<float>(size_t(n) * cols, cols);
    // Coarse values make ties common; some rows are all equal.
    for (auto& v : x) v = std::round(v * 2);
    for (int c = 0; c < cols; ++c) x[size_t(5) * cols + c] = 0.5f;
    expect_matches(x, n, cols);
  }
}

TEST(ReductionsHd, ArgmaxNaNsAndInfinitiesFollowTheReference) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const int cols = 6;
  const std::vector<float> x = {
      nan,  5,    7,    nan,  7,    1,     // column 0 NaN: 0
      1,    nan,  7,    nan,  7,    2,     // NaNs skipped: first 7
      -inf, -inf, -inf, -inf, -inf, -inf,  // all −inf: 0
      -inf, nan,  -inf, 3,    inf,  inf,   // first +inf
      2,    nan,  nan,  nan,  nan,  nan,   // only column 0 is a number
      0,    -0.0, 0,    -1,   0,    0,     // −0 == 0: the first
  };
  expect_matches(x, 6, cols);
  EXPECT_EQ(lane_argmax_row(x.data(), cols, 4), 0);
  EXPECT_EQ(lane_argmax_row(x.data() + cols, cols, 4), 2);
  EXPECT_EQ(lane_argmax_row(x.data() + 3 * cols, cols, 4), 4);
}

}  // namespace
}  // namespace hetdro

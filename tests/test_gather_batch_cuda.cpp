// gather_batch on the GPU (kernels/gather_batch.cu) against the CPU reference: the model's
// groups' rows (28x28, 16x16, 64-d) at their share of the batch, repeated and out-of-order
// indices, indices past 2^31 elements of src_x, NaN/sentinel-filled outputs. A copy, so the
// results must be exact. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "cuda_testing.h"
#include "hetdro/ops.h"

namespace hetdro {
namespace {

using testing::nan_buffer;
using testing::on_device;
using testing::random_vector;

void check(Backend<float>& be, const std::vector<float>& src_x, int rows, int64_t width,
           const std::vector<int64_t>& index, const std::string& what) {
  std::vector<int32_t> src_y(static_cast<size_t>(rows));
  for (int r = 0; r < rows; ++r) src_y[size_t(r)] = 7 * r + 3;
  const int n = int(index.size());
  // The order holds two batches, row 0 repeated, then `index`: the clock picks batch 1.
  std::vector<int64_t> order(size_t(n), 0);
  order.insert(order.end(), index.begin(), index.end());
  const int64_t batch = 1;
  auto src_x_d = on_device(be, src_x);
  auto src_y_d = on_device(be, src_y);
  auto order_d = on_device(be, order);
  auto batch_d = on_device(be, std::vector<int64_t>{batch});
  auto x = nan_buffer(be, int64_t(n) * width);
  auto y = on_device(be, std::vector<int32_t>(size_t(n), -1));
  be.gather_batch(x.data(), y.data(), src_x_d.data(), src_y_d.data(), order_d.data(),
                  batch_d.data(), n, width);
  std::vector<float> ref_x(size_t(n) * width);
  std::vector<int32_t> ref_y(static_cast<size_t>(n));
  cpu::gather_batch<float>(ref_x.data(), ref_y.data(), src_x.data(), src_y.data(), order.data(),
                           &batch, n, width);
  EXPECT_EQ(x.download(), ref_x) << what;
  EXPECT_EQ(y.download(), ref_y) << what;
}

TEST(GatherBatchCuda, MatchesTheReference) {
  HETDRO_CUDA_OR_SKIP(be);
  // Out of order, repeated, first and last rows.
  auto indices = [](int n, int rows) {
    std::vector<int64_t> index(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) index[size_t(i)] = (int64_t(i) * 7919 + 13) % rows;
    index[0] = rows - 1;
    if (n > 2) index[1] = 0, index[2] = rows - 1;
    return index;
  };
  check(be, random_vector<float>(500 * 784, 1), 500, 784, indices(70, 500), "full28");
  check(be, random_vector<float>(300 * 256, 1), 300, 256, indices(25, 300), "low16");
  check(be, random_vector<float>(100 * 64, 1), 100, 64, indices(5, 100), "proj64");
  check(be, random_vector<float>(9 * 1, 1), 9, 1, indices(20, 9), "width 1");
  check(be, random_vector<float>(3 * 5, 1), 3, 5, {2}, "one row");
  check(be, random_vector<float>(4 * 0, 1), 4, 0, {3, 1, 2}, "width 0: labels only");
}

// A training set of 3·10^6 rows of 784 floats (9.4 GB) would put element offsets past 2^31;
// index·width must be computed in 64 bits. Width 2^20 reaches the same offsets with 2100 rows.
TEST(GatherBatchCuda, OffsetsBeyondTwoToThe31) {
  HETDRO_CUDA_OR_SKIP(be);
  const int64_t width = int64_t(1) << 20;
  const int rows = 2100;  // 2100·2^20 floats = 8.6 GiB on the device
  if (be.capacity() < size_t(rows) * width * sizeof(float) + (size_t(1) << 30))
    GTEST_SKIP() << "needs about 10 GiB of free GPU memory";
  std::vector<float> src_x(size_t(rows) * width);  // a cheap fill: row r, column c -> r + c/2^20
  for (size_t i = 0; i < src_x.size(); ++i)
    src_x[i] = float(i >> 20) + float(i & (width - 1)) / width;
  check(be, src_x, rows, width, {2099, 2048, 5}, "2^20 wide");
}

TEST(AdvanceClockCuda, CountsTheStepAndTheBatch) {
  HETDRO_CUDA_OR_SKIP(be);
  auto clock = on_device(be, std::vector<int64_t>{41, 6});
  be.advance_clock(clock.data());
  be.advance_clock(clock.data());
  EXPECT_EQ(clock.download(), (std::vector<int64_t>{43, 8}));
}

}  // namespace
}  // namespace hetdro

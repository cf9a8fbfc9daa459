// The step's small reductions on the GPU against the CPU reference in double: sum_scaled (one
// block and many, the same bits every run), all_zero, check_finite (stats first, the lowest bad
// grad index wins, sticky), accumulate and groupdro_commit onto nonzero starts under each status,
// and argmax_rows with ties and NaNs. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "cuda_testing.h"
#include "hetdro/ops.h"

namespace hetdro {
namespace {

using testing::on_device;
using testing::widen;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

TEST(ReductionsCuda, SumScaledMatchesTheReferenceAndRepeatsItsBits) {
  HETDRO_CUDA_OR_SKIP(be);
  // 4096 elements per first-pass block: one block, two, and the 1024-block cap.
  for (int64_t count : {int64_t(0), int64_t(1), int64_t(160), int64_t(4096), int64_t(4097),
                        int64_t(1000003), int64_t(5000000)}) {
    SCOPED_TRACE(count);
    // Positive values: no cancellation, so the relative error measures the summation alone.
    const auto x = testing::random_vector<float>(size_t(count), 3, 0.0f, 1.0f);
    double ref = 0;
    const auto xd = widen(x);
    cpu::sum_scaled<double>(&ref, xd.data(), count, 0.25);
    // Never a zero-size allocation; a kernel that read past count would add the 7.
    auto dx = on_device(be, count > 0 ? x : std::vector<float>{7.0f});
    auto out = on_device(be, std::vector<double>{kNaN});
    be.sum_scaled(out.data(), dx.data(), count, 0.25);
    const double first = out.download()[0];
    EXPECT_NEAR(first, ref, 1e-12 * std::max(1.0, std::abs(ref)));
    be.sum_scaled(out.data(), dx.data(), count, 0.25);
    EXPECT_EQ(out.download()[0], first);
  }
}

TEST(ReductionsCuda, AllZero) {
  HETDRO_CUDA_OR_SKIP(be);
  auto all_zero = [&](const std::vector<float>& x) {
    auto dx = on_device(be, x.empty() ? std::vector<float>{1.0f} : x);  // 1: read past count
    auto out = on_device(be, std::vector<double>{kNaN});
    be.all_zero(out.data(), dx.data(), int64_t(x.size()));
    double ref = kNaN;
    const auto xd = widen(x);
    cpu::all_zero<double>(&ref, xd.data(), int64_t(x.size()));
    EXPECT_EQ(out.download()[0], ref);
    return out.download()[0];
  };
  EXPECT_EQ(all_zero({}), 1.0);
  for (int64_t count : {int64_t(4480), int64_t(3000000)}) {
    SCOPED_TRACE(count);
    std::vector<float> x(size_t(count), 0.0f);
    EXPECT_EQ(all_zero(x), 1.0);
    x[count / 2] = -0.0f;  // still zero
    EXPECT_EQ(all_zero(x), 1.0);
    for (int64_t at : {int64_t(0), count / 3, count - 1}) {
      std::vector<float> y = x;
      y[at] = 1e-30f;
      EXPECT_EQ(all_zero(y), 0.0) << at;
      y[at] = std::nanf("");
      EXPECT_EQ(all_zero(y), 0.0) << at;
    }
  }
}

// check_finite on the GPU and on the CPU from the same status; returns the GPU's.
std::vector<int64_t> check_finite(Backend<float>& be, std::vector<int64_t> status,
                                  const std::vector<double>& stats, const std::vector<float>& grad,
                                  int64_t step) {
  std::vector<int64_t> ref = status;
  const int64_t before = step - 1;  // the clock holds the steps taken before this one
  cpu::check_finite<double>(ref.data(), stats.data(), int(stats.size()), widen(grad).data(),
                            int64_t(grad.size()), &before);
  const auto clock = on_device(be, std::vector<int64_t>{before});
  auto ds = on_device(be, status);
  auto dstats = on_device(be, stats);
  // Never a zero-size allocation; a NaN past count must not be seen.
  auto dgrad = on_device(be, grad.empty() ? std::vector<float>{std::nanf("")} : grad);
  be.check_finite(ds.data(), dstats.data(), int(stats.size()), dgrad.data(), int64_t(grad.size()),
                  clock.data());
  const auto got = ds.download();
  EXPECT_EQ(got, ref);
  return got;
}

TEST(ReductionsCuda, CheckFiniteFindsTheFirstBadValue) {
  HETDRO_CUDA_OR_SKIP(be);
  const int64_t count = 1000005;
  const std::vector<int64_t> clear = {-1, -1};
  const std::vector<double> stats(8, 0.5);
  std::vector<float> grad = testing::random_vector<float>(size_t(count), 4);
  EXPECT_EQ(check_finite(be, clear, stats, grad, 3), clear);

  // Several bad values: the lowest index wins, whatever thread finds its own first.
  auto bad = grad;
  bad[999999] = std::nanf("");
  bad[500000] = std::nanf("");
  bad[777777] = kInf;
  bad[12345] = std::nanf("");
  EXPECT_EQ(check_finite(be, clear, stats, bad, 3), (std::vector<int64_t>{3, 12345}));
  for (int64_t at : {int64_t(0), int64_t(257), count - 1}) {
    auto one = grad;
    one[at] = -kInf;
    EXPECT_EQ(check_finite(be, clear, stats, one, 9), (std::vector<int64_t>{9, at}));
  }
  // Every third element from 300000 on: many threads race to report.
  auto many = grad;
  for (int64_t i = 300000; i < count; i += 3) many[i] = std::nanf("");
  EXPECT_EQ(check_finite(be, clear, stats, many, 4), (std::vector<int64_t>{4, 300000}));

  // The stats come first: where = −1 − i.
  auto bad_stats = stats;
  bad_stats[2] = kNaN;
  bad_stats[5] = std::numeric_limits<double>::infinity();
  EXPECT_EQ(check_finite(be, clear, bad_stats, bad, 6), (std::vector<int64_t>{6, -3}));
  EXPECT_EQ(check_finite(be, clear, bad_stats, {}, 6), (std::vector<int64_t>{6, -3}));

  // Sticky: a set status stays, even over new bad values.
  EXPECT_EQ(check_finite(be, {4, 9}, bad_stats, bad, 7), (std::vector<int64_t>{4, 9}));
  EXPECT_EQ(check_finite(be, {0, 1}, stats, bad, 7), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(check_finite(be, clear, stats, {}, 7), clear);
}

TEST(ReductionsCuda, AccumulateAndCommitHonourTheStatus) {
  HETDRO_CUDA_OR_SKIP(be);
  const int count = 37;
  const auto start = widen(testing::random_vector<float>(count, 5));
  const auto x = widen(testing::random_vector<float>(count, 6));
  const std::vector<int64_t> clear = {-1, -1}, set = {3, 0};
  for (const std::vector<int64_t>* status : {(const std::vector<int64_t>*)nullptr, &clear, &set}) {
    SCOPED_TRACE(status ? status->front() : -2);
    std::vector<double> ref_sum = start, ref_q = start;
    const int64_t* host_status = status ? status->data() : nullptr;
    cpu::accumulate<double>(ref_sum.data(), x.data(), count, host_status);
    cpu::groupdro_commit<double>(ref_q.data(), x.data(), count, host_status);
    auto sum = on_device(be, start);
    auto q = on_device(be, start);
    auto dx = on_device(be, x);
    auto ds = on_device(be, status ? *status : clear);
    be.accumulate(sum.data(), dx.data(), count, status ? ds.data() : nullptr);
    be.groupdro_commit(q.data(), dx.data(), count, status ? ds.data() : nullptr);
    EXPECT_EQ(sum.download(), ref_sum);
    EXPECT_EQ(q.download(), ref_q);
  }
}

TEST(ReductionsCuda, ArgmaxRowsMatchesTheReference) {
  HETDRO_CUDA_OR_SKIP(be);
  for (int cols : {1, 3, 10, 33, 1000}) {
    SCOPED_TRACE(cols);
    const int n = 257;
    auto x = testing::random_vector<float>(size_t(n) * cols, uint32_t(cols));
    for (auto& v : x) v = std::round(v * 2);  // ties
    for (int c = 0; c < cols; ++c) x[size_t(3) * cols + c] = 0.5f;
    x[size_t(4) * cols] = std::nanf("");  // column 0 NaN: 0
    if (cols > 2) x[size_t(5) * cols + 1] = std::nanf(""), x[size_t(6) * cols + cols - 1] = kInf;
    std::vector<int32_t> ref(n);
    const auto xd = widen(x);
    cpu::argmax_rows<double>(ref.data(), xd.data(), n, cols);
    auto dx = on_device(be, x);
    auto out = on_device(be, std::vector<int32_t>(n, -7));
    be.argmax_rows(out.data(), dx.data(), n, cols);
    EXPECT_EQ(out.download(), ref);
  }
}

}  // namespace
}  // namespace hetdro

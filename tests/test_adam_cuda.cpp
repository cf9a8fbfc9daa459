// adam_update on the GPU against the CPU reference in double: several steps over the default
// model's parameter count (the four-wide path), the same buffers one float off alignment (the
// one-by-one path) and a handful of elements, with and without AdamW's decay; and a set status
// that leaves parameters and moments untouched. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "cuda_testing.h"
#include "hetdro/ops.h"

namespace hetdro {
namespace {

using testing::gpu_error;
using testing::kGpuTolerance;
using testing::on_device;
using testing::widen;

// The default model's parameter count (hetero-fashion; bench/results/cpu_step.md).
constexpr int64_t kModelParameters = 833866;

TEST(AdamCuda, SeveralStepsMatchTheReference) {
  HETDRO_CUDA_OR_SKIP(be);
  // The hyperparameters as float holds them, so the double reference shares their rounding.
  const float lr = 1e-2f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  for (const int64_t count : {kModelParameters, int64_t(7)})
    for (const int offset : {0, 1})  // 1: not 16-byte aligned
      for (const float wd : {0.0f, 0.01f}) {
        SCOPED_TRACE(::testing::Message() << count << " offset " << offset << " wd " << wd);
        const auto p0 = testing::random_vector<float>(size_t(count + offset), 1);
        auto param = on_device(be, p0);
        auto m = on_device(be, std::vector<float>(size_t(count + offset), 0.0f));
        auto v = on_device(be, std::vector<float>(size_t(count + offset), 0.0f));
        const auto clear = on_device(be, std::vector<int64_t>{-1, -1});
        std::vector<double> rp = widen(p0), rm(p0.size(), 0.0), rv(p0.size(), 0.0);
        for (int64_t step = 1; step <= 5; ++step) {
          const auto g = testing::random_vector<float>(size_t(count + offset), uint32_t(10 + step));
          auto dg = on_device(be, g);
          const int64_t before = step - 1;  // the clock: steps taken before this one
          const auto clock = on_device(be, std::vector<int64_t>{before});
          be.adam_update(param.data() + offset, m.data() + offset, v.data() + offset,
                         dg.data() + offset, count, lr, beta1, beta2, eps, wd, clock.data(),
                         step % 2 ? clear.data() : nullptr);
          const auto gd = widen(g);
          cpu::adam_update<double>(rp.data() + offset, rm.data() + offset, rv.data() + offset,
                                   gd.data() + offset, count, lr, beta1, beta2, eps, wd, &before,
                                   nullptr);
        }
        // The parameters move by about 5·lr: compare the displacement, not p itself.
        const auto p = param.download();
        std::vector<float> moved(p.size());
        std::vector<double> ref_moved(p.size());
        for (size_t i = 0; i < p.size(); ++i) {
          moved[i] = float(double(p[i]) - p0[i]);
          ref_moved[i] = rp[i] - p0[i];
        }
        EXPECT_LT(gpu_error(moved, ref_moved), kGpuTolerance);
        EXPECT_LT(gpu_error(m.download(), rm), kGpuTolerance);
        EXPECT_LT(gpu_error(v.download(), rv), kGpuTolerance);
        if (offset) {
          EXPECT_EQ(p[0], p0[0]);  // the element before the buffer is not touched
        }
      }
}

TEST(AdamCuda, ASetStatusLeavesEverythingAsItWas) {
  HETDRO_CUDA_OR_SKIP(be);
  const int64_t count = kModelParameters;
  const auto p0 = testing::random_vector<float>(size_t(count), 1);
  const auto m0 = testing::random_vector<float>(size_t(count), 2);
  const auto v0 = testing::random_vector<float>(size_t(count), 3, 0.0f, 1.0f);
  auto param = on_device(be, p0);
  auto m = on_device(be, m0);
  auto v = on_device(be, v0);
  auto g = on_device(be, testing::random_vector<float>(size_t(count), 4));
  auto flagged = on_device(be, std::vector<int64_t>{7, 3});  // check_finite's {step, where}
  const auto clock = on_device(be, std::vector<int64_t>{6});
  be.adam_update(param.data(), m.data(), v.data(), g.data(), count, 0.1f, 0.9f, 0.999f, 1e-8f,
                 0.01f, clock.data(), flagged.data());
  EXPECT_EQ(param.download(), p0);
  EXPECT_EQ(m.download(), m0);
  EXPECT_EQ(v.download(), v0);
}

}  // namespace
}  // namespace hetdro

// repeat on the GPU against the CPU reference in double (docs/DESIGN.md §2, §6): the copies, and
// the backward that adds them into a nonzero gradient. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "cuda_testing.h"
#include "hetdro/ops.h"

namespace hetdro {
namespace {

using testing::gpu_error;
using testing::kGpuTolerance;
using testing::nan_buffer;
using testing::on_device;
using testing::random_vector;
using testing::widen;

TEST(RepeatCuda, MatchesTheReference) {
  HETDRO_CUDA_OR_SKIP(be);
  const std::vector<std::pair<int64_t, int>> shapes = {{10 * 64 * 64, 3}, {7, 1}, {1000, 5}};
  for (const auto& [size, times] : shapes) {
    const auto in = random_vector<float>(size_t(size), 1);
    auto gin = on_device(be, in);
    auto gout = nan_buffer(be, size * times);
    be.repeat_forward(gout.data(), gin.data(), size, times);
    std::vector<double> ref(size_t(size * times));
    const auto ind = widen(in);
    cpu::repeat_forward(ref.data(), ind.data(), size, times);
    EXPECT_EQ(gpu_error(gout.download(), ref), 0.0);  // copies are exact

    const auto dout = random_vector<float>(size_t(size * times), 2);
    const auto din0 = random_vector<float>(size_t(size), 3);
    auto gdout = on_device(be, dout), gdin = on_device(be, din0);
    be.repeat_backward(gdin.data(), gdout.data(), size, times);
    std::vector<double> rdin = widen(din0);
    const auto doutd = widen(dout);
    cpu::repeat_backward(rdin.data(), doutd.data(), size, times);
    EXPECT_LT(gpu_error(gdin.download(), rdin), kGpuTolerance);
  }
}

}  // namespace
}  // namespace hetdro

// fit_slots and fit_reduce on the GPU against the CPU reference in double (docs/DESIGN.md §1,
// §2, §6): the slots, pooled and per_group, and the masked sum with its counts and dw2, for slot
// counts from 0 past one block's width. Skipped without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cuda_testing.h"
#include "hetdro/ops.h"

namespace hetdro {
namespace {

using testing::nan_buffer;
using testing::narrow;
using testing::on_device;
using testing::random_vector;
using testing::widen;

TEST(FitSlotsCuda, PooledAndPerGroup) {
  HETDRO_CUDA_OR_SKIP(be);
  const int n = 1000, C = 10, G = 3;
  std::vector<int32_t> labels(n), group(n);
  for (int i = 0; i < n; ++i) labels[i] = (i * 7) % C, group[i] = (i * 5) % G;
  auto gl = on_device(be, labels), gg = on_device(be, group);
  for (bool per_group : {false, true}) {
    auto gs = on_device(be, std::vector<int32_t>(n, -7));
    be.fit_slots(gs.data(), gl.data(), per_group ? gg.data() : nullptr, n, C);
    std::vector<int32_t> ref(n);
    cpu::fit_slots<double>(ref.data(), labels.data(), per_group ? group.data() : nullptr, n, C);
    EXPECT_EQ(gs.download(), ref);
  }
}

TEST(FitReduceCuda, MaskedSumCountsAndGradient) {
  HETDRO_CUDA_OR_SKIP(be);
  for (int slots : {0, 1, 30, 257, 5000}) {
    std::vector<int32_t> count(slots);
    for (int s = 0; s < slots; ++s) count[s] = (s * 7) % 4;  // 0, 1 (skipped), 2, 3 (live)
    const auto w2 = random_vector<float>(size_t(slots), 1, 0.0f, 10.0f);
    auto gc = on_device(be, count);
    auto gw = on_device(be, w2);
    auto gdw = nan_buffer(be, slots);
    Buffer<double> gout = on_device(be, std::vector<double>(3, -7.0));
    be.fit_reduce(gout.data(), gdw.data(), gw.data(), gc.data(), slots, 1e-3f);
    std::vector<double> out(3), dw2(slots);
    const auto w2d = widen(w2);
    cpu::fit_reduce(out.data(), dw2.data(), w2d.data(), count.data(), slots, 1e-3);
    const auto got = gout.download();
    EXPECT_NEAR(got[0], out[0], 1e-12 * std::max(1.0, out[0])) << slots;
    EXPECT_EQ(got[1], out[1]) << slots;
    EXPECT_EQ(got[2], out[2]) << slots;
    EXPECT_EQ(gdw.download(), narrow(dw2)) << slots;
  }
}

}  // namespace
}  // namespace hetdro

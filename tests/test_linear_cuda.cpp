// linear on the GPU (cuBLAS, kernels/linear.cu) against the CPU reference in double: the model's
// layers and odd sizes, NaN-filled outputs, accumulating and nullptr gradients, empty batches.
// Skipped without a GPU.
#include <gtest/gtest.h>

#include <string>
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

struct Dims {
  int n, in, out;
  std::string name() const {
    return std::to_string(n) + "x" + std::to_string(in) + "->" + std::to_string(out);
  }
};

// The default model (docs/DESIGN.md §1, §5) at batch 100 = 70 + 25 + 5: the cnn heads
// (full28 64·12·12 = 9216 -> 64, low16 64·6·6 = 2304 -> 64), proj64's MLP (64 -> 128 -> 64),
// the classifier on the batch (64 -> 10) and on the anchor samples (10 classes · 16 = 160 rows);
// then odd sizes: one element, out_dim past one 32-column block of the bias sum, many rows.
const std::vector<Dims> kDims = {
    {70, 9216, 64}, {25, 2304, 64}, {5, 64, 128}, {5, 128, 64}, {100, 64, 10},
    {160, 64, 10},  {3, 5, 4},      {1, 1, 1},    {7, 3, 33},   {1000, 17, 70},
};

TEST(LinearCuda, ForwardMatchesTheReference) {
  HETDRO_CUDA_OR_SKIP(be);
  for (const Dims& d : kDims) {
    const auto in = random_vector<float>(size_t(d.n) * d.in, 1);
    const auto wt = random_vector<float>(size_t(d.out) * d.in, 2);
    const auto b = random_vector<float>(size_t(d.out), 3);
    auto in_d = on_device(be, in), wt_d = on_device(be, wt), b_d = on_device(be, b);
    auto out = nan_buffer(be, int64_t(d.n) * d.out);
    be.linear_forward(out.data(), in_d.data(), wt_d.data(), b_d.data(), d.n, d.in, d.out);
    std::vector<double> ref(size_t(d.n) * d.out);
    const auto in_r = widen(in), wt_r = widen(wt), b_r = widen(b);
    cpu::linear_forward<double>(ref.data(), in_r.data(), wt_r.data(), b_r.data(), d.n, d.in, d.out);
    EXPECT_LT(gpu_error(out.download(), ref), kGpuTolerance) << d.name();
  }
}

TEST(LinearCuda, BackwardAccumulatesAndSkipsNullGradients) {
  HETDRO_CUDA_OR_SKIP(be);
  struct Wanted {
    bool din, dweight, dbias;
  };
  for (const Dims& d : kDims)
    for (Wanted want : {Wanted{true, true, true}, Wanted{false, true, true},
                        Wanted{true, false, false}, Wanted{false, false, true}}) {
      const auto in = random_vector<float>(size_t(d.n) * d.in, 11);
      const auto wt = random_vector<float>(size_t(d.out) * d.in, 12);
      const auto dout = random_vector<float>(size_t(d.n) * d.out, 13);
      const auto din0 = random_vector<float>(size_t(d.n) * d.in, 14);
      const auto dwt0 = random_vector<float>(size_t(d.out) * d.in, 15);
      const auto db0 = random_vector<float>(size_t(d.out), 16);
      auto in_d = on_device(be, in), wt_d = on_device(be, wt), dout_d = on_device(be, dout);
      auto din = on_device(be, din0), dwt = on_device(be, dwt0), db = on_device(be, db0);
      be.linear_backward(want.din ? din.data() : nullptr, want.dweight ? dwt.data() : nullptr,
                         want.dbias ? db.data() : nullptr, dout_d.data(), in_d.data(), wt_d.data(),
                         d.n, d.in, d.out);
      auto rin = widen(din0), rwt = widen(dwt0), rb = widen(db0);
      const auto in_r = widen(in), wt_r = widen(wt), dout_r = widen(dout);
      cpu::linear_backward<double>(want.din ? rin.data() : nullptr,
                                   want.dweight ? rwt.data() : nullptr,
                                   want.dbias ? rb.data() : nullptr, dout_r.data(), in_r.data(),
                                   wt_r.data(), d.n, d.in, d.out);
      const std::string what = d.name() + " din " + std::to_string(want.din) + " dweight " +
                               std::to_string(want.dweight) + " dbias " +
                               std::to_string(want.dbias);
      EXPECT_LT(gpu_error(din.download(), rin), kGpuTolerance) << what;
      EXPECT_LT(gpu_error(dwt.download(), rwt), kGpuTolerance) << what;
      EXPECT_LT(gpu_error(db.download(), rb), kGpuTolerance) << what;
      if (!want.din) {
        EXPECT_EQ(din.download(), din0) << what;
      }
      if (!want.dweight) {
        EXPECT_EQ(dwt.download(), dwt0) << what;
      }
      if (!want.dbias) {
        EXPECT_EQ(db.download(), db0) << what;
      }
    }
}

// The bias gradient is a fixed-order sum (no atomics): two runs give the same bits.
TEST(LinearCuda, BiasGradientIsDeterministic) {
  HETDRO_CUDA_OR_SKIP(be);
  const Dims d{1000, 17, 70};
  const auto dout = random_vector<float>(size_t(d.n) * d.out, 21);
  auto dout_d = on_device(be, dout),
       in = on_device(be, random_vector<float>(size_t(d.n) * d.in, 22));
  auto wt = on_device(be, random_vector<float>(size_t(d.out) * d.in, 23));
  auto db1 = on_device(be, std::vector<float>(size_t(d.out), 0.0f));
  auto db2 = on_device(be, std::vector<float>(size_t(d.out), 0.0f));
  be.linear_backward(nullptr, nullptr, db1.data(), dout_d.data(), in.data(), wt.data(), d.n, d.in,
                     d.out);
  be.linear_backward(nullptr, nullptr, db2.data(), dout_d.data(), in.data(), wt.data(), d.n, d.in,
                     d.out);
  EXPECT_EQ(db1.download(), db2.download());
}

// n = 0: the forward writes nothing; the backward's sums over no rows add nothing (the bias sum
// still runs and adds 0).
TEST(LinearCuda, AnEmptyBatchChangesNothing) {
  HETDRO_CUDA_OR_SKIP(be);
  const auto dwt0 = random_vector<float>(64 * 10, 31);
  const auto db0 = random_vector<float>(10, 32);
  auto dwt = on_device(be, dwt0), db = on_device(be, db0), wt = on_device(be, dwt0);
  Buffer<float> none(be, 1);
  be.linear_forward(none.data(), none.data(), wt.data(), db.data(), 0, 64, 10);
  be.linear_backward(none.data(), dwt.data(), db.data(), none.data(), none.data(), wt.data(), 0, 64,
                     10);
  EXPECT_EQ(dwt.download(), dwt0);
  EXPECT_EQ(db.download(), db0);
}

}  // namespace
}  // namespace hetdro

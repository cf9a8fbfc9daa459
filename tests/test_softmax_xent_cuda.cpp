// softmax_xent and softmax_forward on the GPU against the CPU reference in double: shapes from one
// class to a thousand and batches that need one to several blocks of per-group partial sums,
// huge and equal logits, the backward's += onto nonzero gradients, the group sums' bits
// repeated run to run, and the NaN a bad label or group turns into. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "cuda_testing.h"
#include "hetdro/ops.h"

namespace hetdro {
namespace {

using testing::gpu_error;
using testing::kGpuTolerance;
using testing::nan_buffer;
using testing::on_device;
using testing::widen;

struct Batch {
  std::vector<float> logits;
  std::vector<int32_t> labels, group;
};
Batch make_batch(int n, int classes, int groups, uint32_t seed) {
  Batch b{testing::random_vector<float>(size_t(n) * classes, seed, -5.0f, 5.0f),
          std::vector<int32_t>(n), std::vector<int32_t>(n)};
  for (int i = 0; i < n; ++i) {
    b.labels[i] = int32_t((7 * int64_t(i) + 3) % classes);
    b.group[i] = int32_t((int64_t(i) * i + i / 3) % groups);
  }
  return b;
}

struct Forward {
  std::vector<double> probs, loss, gsum;
};
Forward reference_forward(const Batch& b, int n, int classes, int groups) {
  Forward r{std::vector<double>(b.logits.size()), std::vector<double>(n),
            std::vector<double>(groups)};
  const auto x = widen(b.logits);
  cpu::softmax_xent_forward<double>(r.probs.data(), r.loss.data(), r.gsum.data(), x.data(),
                                    b.labels.data(), b.group.data(), n, classes, groups);
  return r;
}

TEST(SoftmaxXentCuda, ForwardMatchesTheReference) {
  HETDRO_CUDA_OR_SKIP(be);
  struct Shape {
    int n, classes, groups;
  };
  // 4096 samples per partial-sum block: 5000 and 9000 need 2 and 3 blocks; n = 1 with 3 groups
  // leaves two groups absent (their sums are 0).
  for (const Shape s : {Shape{100, 10, 3}, Shape{37, 1, 2}, Shape{5000, 3, 4}, Shape{9000, 33, 5},
                        Shape{300, 1000, 1}, Shape{1, 7, 3}, Shape{64, 16, 2}, Shape{64, 17, 2}}) {
    SCOPED_TRACE(::testing::Message() << s.n << "x" << s.classes << ", " << s.groups << " groups");
    const Batch b = make_batch(s.n, s.classes, s.groups, uint32_t(s.n + s.classes));
    const Forward ref = reference_forward(b, s.n, s.classes, s.groups);
    auto logits = on_device(be, b.logits);
    auto labels = on_device(be, b.labels);
    auto group = on_device(be, b.group);
    auto probs = nan_buffer(be, int64_t(b.logits.size()));
    auto loss = nan_buffer(be, s.n);
    auto gsum = nan_buffer(be, s.groups);
    be.softmax_xent_forward(probs.data(), loss.data(), gsum.data(), logits.data(), labels.data(),
                            group.data(), s.n, s.classes, s.groups);
    EXPECT_LT(gpu_error(probs.download(), ref.probs), kGpuTolerance);
    EXPECT_LT(gpu_error(loss.download(), ref.loss), kGpuTolerance);
    EXPECT_LT(gpu_error(gsum.download(), ref.gsum), kGpuTolerance);

    // Without groups: probabilities and losses only.
    auto loss2 = nan_buffer(be, s.n);
    be.softmax_xent_forward(probs.data(), loss2.data(), nullptr, logits.data(), labels.data(),
                            nullptr, s.n, s.classes, 0);
    EXPECT_LT(gpu_error(loss2.download(), ref.loss), kGpuTolerance);
  }
}

TEST(SoftmaxXentCuda, HugeAndEqualLogitsStayExact) {
  HETDRO_CUDA_OR_SKIP(be);
  // {1e4, −1e4, ...} labelled 1 (p_y underflows: loss 2e4) and 0 (loss 0); all equal (p = 1/C,
  // loss log C); all −1e4.
  const int classes = 40, n = 4;
  std::vector<float> x(size_t(n) * classes, -1e4f);
  x[0] = 1e4f;
  x[classes] = 1e4f;
  for (int c = 0; c < classes; ++c) x[2 * classes + c] = 3.5f;
  const std::vector<int32_t> labels = {1, 0, 2, 39}, group = {0, 1, 1, 0};
  auto logits = on_device(be, x);
  auto y = on_device(be, labels);
  auto g = on_device(be, group);
  auto probs = nan_buffer(be, int64_t(x.size()));
  auto loss = nan_buffer(be, n);
  auto gsum = nan_buffer(be, 2);
  be.softmax_xent_forward(probs.data(), loss.data(), gsum.data(), logits.data(), y.data(), g.data(),
                          n, classes, 2);
  const auto l = loss.download();
  const auto p = probs.download();
  EXPECT_EQ(l[0], 2e4f);
  EXPECT_EQ(l[1], 0.0f);
  EXPECT_NEAR(l[2], std::log(40.0), 1e-5);
  EXPECT_NEAR(l[3], std::log(40.0), 1e-5);
  EXPECT_EQ(p[0], 1.0f);
  EXPECT_EQ(p[1], 0.0f);
  EXPECT_NEAR(p[2 * classes + 5], 1.0 / 40, 1e-8);
  const auto s = gsum.download();
  EXPECT_NEAR(s[0], 2e4 + std::log(40.0), 1e-2);
  EXPECT_NEAR(s[1], std::log(40.0), 1e-5);
}

TEST(SoftmaxXentCuda, GroupSumsAreTheSameBitsEveryRun) {
  HETDRO_CUDA_OR_SKIP(be);
  const int n = 100000, classes = 10, groups = 7;  // 25 partial-sum blocks
  const Batch b = make_batch(n, classes, groups, 3);
  const Forward ref = reference_forward(b, n, classes, groups);
  auto logits = on_device(be, b.logits);
  auto labels = on_device(be, b.labels);
  auto group = on_device(be, b.group);
  auto probs = nan_buffer(be, int64_t(b.logits.size()));
  auto loss = nan_buffer(be, n);
  std::vector<std::vector<float>> sums;
  for (int run = 0; run < 3; ++run) {
    auto gsum = nan_buffer(be, groups);
    be.softmax_xent_forward(probs.data(), loss.data(), gsum.data(), logits.data(), labels.data(),
                            group.data(), n, classes, groups);
    sums.push_back(gsum.download());
  }
  EXPECT_LT(gpu_error(sums[0], ref.gsum), kGpuTolerance);
  EXPECT_EQ(sums[1], sums[0]);
  EXPECT_EQ(sums[2], sums[0]);
}

TEST(SoftmaxXentCuda, BadLabelsAndGroupsBecomeNaN) {
  HETDRO_CUDA_OR_SKIP(be);
  // The reference throws; the kernel cannot, so check_finite stops the run instead.
  const int n = 3, classes = 3;
  const std::vector<float> x(size_t(n) * classes, 0.5f);
  auto logits = on_device(be, x);
  auto y = on_device(be, std::vector<int32_t>{0, 3, -1});
  auto g = on_device(be, std::vector<int32_t>{0, 0, 0});
  auto probs = nan_buffer(be, n * classes);
  auto loss = nan_buffer(be, n);
  auto gsum = nan_buffer(be, 2);
  be.softmax_xent_forward(probs.data(), loss.data(), gsum.data(), logits.data(), y.data(), g.data(),
                          n, classes, 2);
  const auto l = loss.download();
  EXPECT_NEAR(l[0], std::log(3.0), 1e-6);
  EXPECT_TRUE(std::isnan(l[1]));
  EXPECT_TRUE(std::isnan(l[2]));

  auto ok = on_device(be, std::vector<int32_t>{0, 1, 2});
  auto bad_group = on_device(be, std::vector<int32_t>{0, 2, 1});
  be.softmax_xent_forward(probs.data(), loss.data(), gsum.data(), logits.data(), ok.data(),
                          bad_group.data(), n, classes, 2);
  for (float s : gsum.download()) EXPECT_TRUE(std::isnan(s));
}

TEST(SoftmaxXentCuda, BackwardAccumulatesAsTheReference) {
  HETDRO_CUDA_OR_SKIP(be);
  for (const auto& [n, classes] :
       {std::pair{100, 10}, std::pair{37, 1}, std::pair{300, 1000}, std::pair{5000, 3}}) {
    SCOPED_TRACE(::testing::Message() << n << "x" << classes);
    const Batch b = make_batch(n, classes, 1, 5);
    const Forward f = reference_forward(b, n, classes, 1);
    const std::vector<float> p = testing::narrow(f.probs);
    const auto weight = testing::random_vector<float>(n, 6, 0.0f, 1.0f);
    const auto start = testing::random_vector<float>(p.size(), 7);  // nonzero: tests the +=
    std::vector<double> ref = widen(start);
    const auto pd = widen(p), wd = widen(weight);
    cpu::softmax_xent_backward<double>(ref.data(), pd.data(), b.labels.data(), wd.data(), n,
                                       classes);
    auto dlogits = on_device(be, start);
    auto probs = on_device(be, p);
    auto labels = on_device(be, b.labels);
    auto w = on_device(be, weight);
    be.softmax_xent_backward(dlogits.data(), probs.data(), labels.data(), w.data(), n, classes);
    EXPECT_LT(gpu_error(dlogits.download(), ref), kGpuTolerance);
  }
}

TEST(SoftmaxForwardCuda, MatchesTheReference) {
  HETDRO_CUDA_OR_SKIP(be);
  for (const auto& [n, classes] :
       {std::pair{100, 10}, std::pair{7, 1}, std::pair{129, 1000}, std::pair{1000, 5}}) {
    SCOPED_TRACE(::testing::Message() << n << "x" << classes);
    auto x = testing::random_vector<float>(size_t(n) * classes, 9, -30.0f, 30.0f);
    x[0] = 1e4f;  // the shift keeps exp finite
    std::vector<double> ref(x.size());
    const auto xd = widen(x);
    cpu::softmax_forward<double>(ref.data(), xd.data(), n, classes);
    auto logits = on_device(be, x);
    auto probs = nan_buffer(be, int64_t(x.size()));
    be.softmax_forward(probs.data(), logits.data(), n, classes);
    EXPECT_LT(gpu_error(probs.download(), ref), kGpuTolerance);
  }
}

}  // namespace
}  // namespace hetdro

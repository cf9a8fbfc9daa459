// `prepare hetero-fashion` (docs/DESIGN.md §5) and `prepare synthetic`.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "hetdro/config.h"
#include "hetdro/data.h"
#include "hetdro/io.h"
#include "hetdro/prepare.h"
#include "testing.h"  // gamma, unit_roundoff

namespace hetdro {
namespace {

namespace fs = std::filesystem;

TEST(Prepare, BilinearResizeKeepsAConstantImageConstant) {
  std::vector<float> in(28 * 28, 0.37f), out(16 * 16, 0.0f);
  resize_bilinear(in.data(), 28, 28, out.data(), 16, 16);
  // The interpolation runs in double (its weights sum to 1 within a few u_64), then rounds to
  // float once: within γ_2(u_32)·0.37.
  const double bar = testing::gamma(2, testing::unit_roundoff<float>()) * 0.37f;
  for (float v : out) EXPECT_NEAR(v, 0.37f, bar);
}

TEST(Prepare, BilinearResizeMatchesHandWorkedValues) {
  // 4x4 → 2x2 with align_corners = False samples at (0.5, 0.5)-shifted centres: each output is
  // the mean of a 2x2 block here.
  std::vector<float> in(16), out(4);
  for (int i = 0; i < 16; ++i) in[i] = float(i);
  resize_bilinear(in.data(), 4, 4, out.data(), 2, 2);
  EXPECT_FLOAT_EQ(out[0], (0 + 1 + 4 + 5) / 4.0f);
  EXPECT_FLOAT_EQ(out[3], (10 + 11 + 14 + 15) / 4.0f);
  // A horizontal ramp stays a ramp.
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) in[y * 4 + x] = float(x);
  std::vector<float> wide(8 * 8);
  resize_bilinear(in.data(), 4, 4, wide.data(), 8, 8);
  EXPECT_FLOAT_EQ(wide[0], 0.0f);   // clamped at the border
  EXPECT_FLOAT_EQ(wide[3], 1.25f);  // x = (3 + 0.5)/2 − 0.5 = 1.25
}

TEST(Prepare, ProjectionIsTheSameOnEveryRun) {
  auto a = projection_matrix(784, 64, 784064), b = projection_matrix(784, 64, 784064);
  EXPECT_EQ(a, b);
  double sum = 0, sq = 0;
  for (float v : a) {
    sum += v;
    sq += double(v) * v;
  }
  // Entries are N(0, 1/784): the mean is ~0 and the variance 1/784 within sampling error.
  EXPECT_NEAR(sum / a.size(), 0.0, 5.0 / 784 / std::sqrt(double(a.size())) * 28);
  EXPECT_NEAR(sq / a.size() * 784, 1.0, 0.03);
  EXPECT_NE(projection_matrix(784, 64, 1), a);
}

class HeteroFashion : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    for (auto f : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                   "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"})
      if (!fs::exists(fs::path(kFashionMnistDir) / f)) return;
    // Read through --source from a folder of links, as on a machine without the package.
    fs::path source = fs::path(::testing::TempDir()) / "hetdro_fmnist_source";
    fs::remove_all(source);
    fs::create_directories(source);
    for (auto& e : fs::directory_iterator(kFashionMnistDir))
      fs::create_symlink(e.path(), source / e.path().filename());
    out_ = (fs::path(::testing::TempDir()) / "hetdro_hetero_fashion").string();
    fs::remove_all(out_);
    prepare_hetero_fashion(out_, source.string());
  }
  void SetUp() override {
    if (out_.empty()) GTEST_SKIP() << "Fashion-MNIST not installed (dataset-fashion-mnist)";
  }
  static std::string out_;
};
std::string HeteroFashion::out_;

TEST_F(HeteroFashion, SplitIs70_25_5AndEveryTestImageIsInEveryGroup) {
  Config c = load_config(out_ + "/config.toml");
  c.val_fraction = 0;  // the files as prepare wrote them, no validation split carved out
  std::vector<GroupData> groups = load_groups(c);
  ASSERT_EQ(groups.size(), 3u);
  const double shares[] = {0.70, 0.25, 0.05};
  int64_t total = 0;
  for (auto& g : groups) total += g.train.size();
  EXPECT_EQ(total, 60000);
  for (int g = 0; g < 3; ++g) {
    EXPECT_NEAR(double(groups[g].train.size()) / total, shares[g], 0.01) << groups[g].name;
    EXPECT_EQ(groups[g].test.size(), 10000) << groups[g].name;
  }
  EXPECT_EQ(groups[0].name, "full28");
  EXPECT_EQ(groups[0].train.x.shape, (std::vector<int64_t>{42000, 28, 28}));
  EXPECT_EQ(groups[1].train.x.shape, (std::vector<int64_t>{15000, 16, 16}));
  EXPECT_EQ(groups[2].train.x.shape, (std::vector<int64_t>{3000, 64}));
  // The same test image in all three representations: same labels, and low16/proj64 are the
  // resize and the projection of full28's pixels.
  EXPECT_EQ(groups[0].test.y, groups[1].test.y);
  EXPECT_EQ(groups[0].test.y, groups[2].test.y);
  const float* image = groups[0].test.x.data.data() + 123 * 784;
  std::vector<float> low(256);
  resize_bilinear(image, 28, 28, low.data(), 16, 16);
  // prepare scaled the pixels by x·(1/255) (2 roundings), the loader reads full28 as x/255 (1):
  // each pixel p ≤ 1 differs by γ_3·p. The resize is a convex combination of 4 of them in double,
  // rounded to float on each side (u|low| twice): within γ_5.
  const double u = testing::unit_roundoff<float>(), ud = testing::unit_roundoff<double>();
  for (int i = 0; i < 256; ++i)
    EXPECT_NEAR(groups[1].test.x.data[123 * 256 + i], low[i], testing::gamma(5, u));
  // The projection sums 784 products in double (γ_784 each way, whatever the contraction), of
  // pixels that differ by γ_3·p, and prepare stores it rounded to float (u).
  auto p = projection_matrix(784, 64, 784064);
  for (int j = 0; j < 64; ++j) {
    double s = 0, magnitude = 0;
    for (int i = 0; i < 784; ++i)
      s += double(image[i]) * p[i * 64 + j],
          magnitude += std::abs(double(image[i]) * p[i * 64 + j]);
    EXPECT_NEAR(groups[2].test.x.data[123 * 64 + j], s,
                testing::gamma(1, u) * std::abs(s) +
                    (testing::gamma(3, u) + 2 * testing::gamma(784, ud)) * magnitude);
  }
}

TEST_F(HeteroFashion, ConfigIsReadyToTrain) {
  Config c = load_config(out_ + "/config.toml");
  EXPECT_EQ(c.classes, 10);
  EXPECT_EQ(c.groups[2].encoder, Encoder::mlp);
  EXPECT_EQ(c.train.epochs, 2);
  EXPECT_EQ(c.model.latent_activation, LatentActivation::none);
}

TEST(PrepareSynthetic, IsSeededAndLoads) {
  const fs::path a = fs::path(::testing::TempDir()) / "hetdro_syn_a";
  const fs::path b = fs::path(::testing::TempDir()) / "hetdro_syn_b";
  prepare_synthetic(a.string(), 3);
  prepare_synthetic(b.string(), 3);
  Config c = load_config((a / "config.toml").string());
  c.val_fraction = 0;  // the files as prepare wrote them
  std::vector<GroupData> groups = load_groups(c);
  ASSERT_EQ(groups.size(), 3u);
  EXPECT_EQ(groups[0].train.x.shape, (std::vector<int64_t>{1000, 8, 8}));
  EXPECT_EQ(groups[1].train.x.shape[1], 16);
  EXPECT_EQ(groups[2].train.x.shape[1], 40);
  EXPECT_EQ(read_npy_features((a / "vec40_train_x.npy").string()).data,
            read_npy_features((b / "vec40_train_x.npy").string()).data);
}

}  // namespace
}  // namespace hetdro

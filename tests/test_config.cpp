// Config loading (docs/DESIGN.md §4): defaults, overrides, errors that name the key, and
// write-back.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "hetdro/check.h"
#include "hetdro/config.h"

namespace hetdro {
namespace {

namespace fs = std::filesystem;

const char* kMinimal = R"(
[data]
classes = 3
[[data.groups]]
name = "a"
train_x = "a_x.npy"
train_y = "a_y.npy"
test_x = "/abs/a_tx.npy"
test_y = "a_ty.npy"
[[data.groups]]
name = "b"
train_x = "b_x.npy"
train_y = "b_y.npy"
test_x = "b_tx.npy"
test_y = "b_ty.npy"
encoder = "mlp"
hidden = [16, 8]
)";

std::string write_config(const std::string& name, const std::string& text) {
  fs::path dir = fs::path(::testing::TempDir()) / "hetdro_config";
  fs::create_directories(dir);
  std::ofstream(dir / name) << text;
  return (dir / name).string();
}

std::string error_of(const std::string& path, const std::vector<std::string>& overrides = {}) {
  try {
    load_config(path, overrides);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(Config, DefaultsFollowTheDesign) {
  Config c = load_config(write_config("min.toml", kMinimal));
  EXPECT_EQ(c.classes, 3);
  ASSERT_EQ(c.groups.size(), 2u);
  EXPECT_EQ(c.groups[0].encoder, Encoder::cnn);
  EXPECT_EQ(c.groups[0].channels, (std::vector<int>{32, 64}));
  EXPECT_EQ(c.groups[1].hidden, (std::vector<int>{16, 8}));
  EXPECT_EQ(c.model.latent_dim, 64);
  EXPECT_EQ(c.model.classifier, Classifier::linear);
  EXPECT_EQ(c.model.latent_activation, LatentActivation::none);
  EXPECT_EQ(c.train.batch_size, 100);
  EXPECT_DOUBLE_EQ(c.train.lr, 1e-3);
  EXPECT_DOUBLE_EQ(c.train.lambda_fit, 1e-3);
  EXPECT_DOUBLE_EQ(c.train.lambda_sep, 1e-3);
  EXPECT_EQ(c.train.samples_per_anchor, 16);
  EXPECT_DOUBLE_EQ(c.train.eps, 1e-5);
  EXPECT_EQ(c.train.fit, Fit::pooled);
  EXPECT_EQ(c.train.objective, Objective::erm);
  EXPECT_DOUBLE_EQ(c.train.groupdro_eta, 0.01);
  // Relative paths resolve against the config's folder; absolute ones stay.
  EXPECT_EQ(
      c.groups[0].train_x,
      (fs::path(::testing::TempDir()) / "hetdro_config" / "a_x.npy").lexically_normal().string());
  EXPECT_EQ(c.groups[0].test_x, "/abs/a_tx.npy");
}

TEST(Config, OverridesUseTomlValuesAndArrayIndices) {
  Config c = load_config(write_config("min.toml", kMinimal),
                         {"train.epochs=3", "train.fit=per_group", "model.latent_dim=8",
                          "data.groups.1.hidden=[4]", "train.lr=0.01"});
  EXPECT_EQ(c.train.epochs, 3);
  EXPECT_EQ(c.train.fit, Fit::per_group);
  EXPECT_EQ(c.model.latent_dim, 8);
  EXPECT_EQ(c.groups[1].hidden, (std::vector<int>{4}));
  EXPECT_DOUBLE_EQ(c.train.lr, 0.01);
}

TEST(Config, ErrorsNameTheKeyAndWhatWasExpected) {
  const std::string path = write_config("min.toml", kMinimal);
  EXPECT_NE(error_of(path, {"train.epoch=3"}).find("unknown key 'train.epoch'"), std::string::npos);
  EXPECT_NE(error_of(path, {"model.classifier=\"deep\""}).find("model.classifier"),
            std::string::npos);
  EXPECT_NE(error_of(path, {"train.lr=-1"}).find("train.lr"), std::string::npos);
  EXPECT_NE(error_of(path, {"train.batch_size=1.5"}).find("expected an integer"),
            std::string::npos);
  EXPECT_NE(error_of(path, {"epochs"}).find("expected KEY=VALUE"), std::string::npos);
  EXPECT_NE(error_of(path, {"data.groups.5.name=x"}).find("past the end"), std::string::npos);
  EXPECT_NE(error_of(write_config("bad.toml", "[data\nclasses=")).find("TOML syntax error"),
            std::string::npos);
  EXPECT_NE(
      error_of(write_config("nogroups.toml", "[data]\nclasses = 2\n")).find("[[data.groups]]"),
      std::string::npos);
  std::string missing = kMinimal;
  const std::string line = "test_y = \"a_ty.npy\"\n";
  missing.erase(missing.find(line), line.size());
  EXPECT_NE(
      error_of(write_config("missing.toml", missing)).find("missing key 'data.groups[0].test_y'"),
      std::string::npos);
}

TEST(Config, ResolvedTomlLoadsBackToTheSameConfig) {
  Config c =
      load_config(write_config("min.toml", kMinimal), {"train.objective=groupdro", "train.seed=7"});
  const std::string path = write_config("resolved.toml", to_toml(c));
  Config d = load_config(path);
  EXPECT_EQ(to_toml(d), to_toml(c));
  EXPECT_EQ(d.train.objective, Objective::groupdro);
  EXPECT_EQ(d.train.seed, 7u);
  EXPECT_EQ(d.groups[0].test_x, "/abs/a_tx.npy");
}

}  // namespace
}  // namespace hetdro

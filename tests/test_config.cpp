// Config loading (docs/DESIGN.md §4): defaults, overrides, errors that name the key, and
// write-back.
#include <gtest/gtest.h>

#include <algorithm>  // count
#include <cstring>    // strlen
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
  EXPECT_EQ(c.train.group_batch, GroupBatch::proportional);
  EXPECT_EQ(c.groups[0].batch_share, 0.0);
  EXPECT_EQ(c.train.select, Select::last);
  EXPECT_EQ(c.val_fraction, 0.0);  // select = "last" uses no validation split: none is taken
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

// toml++ recurses once per part of a dotted key: a hostile key is refused before parsing,
// with the line, while dots in strings and comments do not count.
TEST(Config, DeepDottedKeysAreRefusedBeforeParsing) {
  std::string chain = "a";
  for (int i = 0; i < 99999; ++i) chain += ".a";
  for (const std::string& deep :
       {"[model]\n" + chain + " = 1\n", "[" + chain + "]\n", "x = {" + chain + " = 1}\n"}) {
    const std::string path = write_config("deep.toml", std::string(kMinimal) + deep);
    const std::string m = error_of(path);
    EXPECT_NE(m.find(path + ":"), std::string::npos) << m.substr(0, 300);
    EXPECT_NE(m.find("a dotted key of more than 64 parts"), std::string::npos) << m.substr(0, 300);
    EXPECT_LT(m.size(), 300u);
  }
  // The line of the key: kMinimal's lines, then "[model]", then the key.
  const auto line = std::count(kMinimal, kMinimal + std::strlen(kMinimal), '\n') + 2;
  EXPECT_NE(
      error_of(write_config("deep.toml", std::string(kMinimal) + "[model]\n" + chain + " = 1\n"))
          .find(":" + std::to_string(line) + ": a dotted key"),
      std::string::npos);
  // Dots in strings, multi-line strings and comments are not keys.
  const std::string dots(200, '.');
  Config c = load_config(write_config("dots.toml", std::string(kMinimal) + "# " + dots +
                                                       "\n[train]\ndevice = \"cpu\" # " + dots +
                                                       "\n[model]\nlatent_dim = 3\n"));
  EXPECT_EQ(c.model.latent_dim, 3);
  std::string text = kMinimal;
  text.replace(text.find("\"a_x.npy\""), 9, "\"\"\"a_x.npy" + dots + "\"\"\"");
  EXPECT_EQ(load_config(write_config("dots.toml", text)).groups[0].train_x.substr(0, 1), "/");
  const std::string set =
      error_of(write_config("min.toml", kMinimal), {chain.substr(0, 199) + "=1"});
  EXPECT_NE(set.find("the key has 100 parts: expected at most 64"), std::string::npos) << set;
}

// An error about a key that a --set gave its value names the --set argument, also when the
// --set created the table holding it; the file is named for everything else.
TEST(Config, ErrorsInSetValuesNameTheSetArgument) {
  const std::string path = write_config("min.toml", kMinimal);
  EXPECT_EQ(error_of(path, {"train.epochs=1e999"})
                .rfind("--set 'train.epochs=1e999': key "
                       "'train.epochs': expected an integer",
                       0),
            0u);
  EXPECT_NE(error_of(path, {"train.epochs=1e999"}).find("not valid TOML"), std::string::npos);
  EXPECT_EQ(error_of(path, {"extra.b=1"}).rfind("--set 'extra.b=1': unknown key 'extra'", 0), 0u);
  EXPECT_EQ(error_of(path, {"data.groups.1.hidden=[0]"})
                .rfind("--set 'data.groups.1.hidden=[0]': key 'data.groups[1].hidden'", 0),
            0u);
  // The last --set of a key is the one applied, and the one named.
  EXPECT_EQ(error_of(path, {"train.lr=1", "train.lr=-1"}).rfind("--set 'train.lr=-1'", 0), 0u);
  // A --set of another key leaves the file named for its own errors.
  std::string text = std::string(kMinimal) + "[train]\nlr = -1.0\n";
  EXPECT_EQ(error_of(write_config("bad_lr.toml", text), {"train.epochs=2"})
                .rfind(write_config("bad_lr.toml", text) + ": key 'train.lr'", 0),
            0u);
}

TEST(Config, FoldersAndEndlessFilesAreNotConfigs) {
  const std::string dir = fs::path(write_config("min.toml", kMinimal)).parent_path().string();
  EXPECT_EQ(error_of(dir).rfind(dir + ": is a folder: expected a config TOML file", 0), 0u)
      << error_of(dir);
  // An endless device is not a regular file; a regular file past the cap is refused by size.
  EXPECT_NE(error_of("/dev/zero").find("/dev/zero: is a character device, not a regular file"),
            std::string::npos)
      << error_of("/dev/zero");
  const std::string big = write_config("big.toml", kMinimal);
  fs::resize_file(big, 17u << 20);
  EXPECT_NE(error_of(big).find(big + ": larger than 16 MiB"), std::string::npos) << error_of(big);
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

// Every key, set away from its default, survives the run folder's config.toml: a resumed run
// reads that file, so a key to_toml forgets would silently revert to its default.
TEST(Config, EveryKeyAwayFromItsDefaultSurvivesTheResolvedToml) {
  const std::vector<std::string> sets = {"data.classes=4",
                                         "data.groups.0.channels=[3, 5]",
                                         "data.groups.0.kernel=2",
                                         "data.groups.1.hidden=[7]",
                                         "data.groups.1.label_column=\"y\"",
                                         "model.latent_dim=9",
                                         "model.classifier=\"mlp2\"",
                                         "model.classifier_hidden=11",
                                         "model.latent_activation=\"relu\"",
                                         "model.anchor_scale=0.5",
                                         "model.anchor_mean_init=\"random\"",
                                         "train.epochs=3",
                                         "train.batch_size=17",
                                         "train.lr=0.002",
                                         "train.lambda_fit=0.25",
                                         "train.lambda_sep=0.125",
                                         "train.samples_per_anchor=5",
                                         "train.eps=0.001",
                                         "train.fit=\"per_group\"",
                                         "train.objective=\"groupdro\"",
                                         "train.groupdro_eta=0.5",
                                         "train.weight_decay=0.01",
                                         "train.seed=13",
                                         "train.device=\"cpu\"",
                                         "train.eval_batch=77",
                                         "train.checkpoint_every=19",
                                         "train.groupdro.update=\"smooth\"",
                                         "train.groupdro.objective=\"logsumexp\"",
                                         "train.groupdro.tau=0.3",
                                         "train.groupdro.gamma=0.2",
                                         "train.groupdro.adjustment=1.5",
                                         "train.group_batch=\"sqrt\"",
                                         "data.groups.0.batch_share=0.3",
                                         "data.val_fraction=0.2"};
  const Config c = load_config(write_config("min.toml", kMinimal), sets);
  const Config d = load_config(write_config("resolved.toml", to_toml(c)));
  EXPECT_EQ(to_toml(d), to_toml(c));
  EXPECT_EQ(d.classes, 4);
  EXPECT_EQ(d.groups[0].channels, (std::vector<int>{3, 5}));
  EXPECT_EQ(d.groups[0].kernel, 2);
  EXPECT_EQ(d.groups[1].hidden, std::vector<int>{7});
  EXPECT_EQ(d.groups[1].label_column, "y");
  EXPECT_EQ(d.model.latent_dim, 9);
  EXPECT_EQ(d.model.classifier, Classifier::mlp2);
  EXPECT_EQ(d.model.classifier_hidden, 11);
  EXPECT_EQ(d.model.latent_activation, LatentActivation::relu);
  EXPECT_EQ(d.model.anchor_scale, 0.5);
  EXPECT_EQ(d.model.anchor_mean_init, AnchorMeanInit::random);
  const TrainConfig& t = d.train;
  EXPECT_EQ(t.epochs, 3);
  EXPECT_EQ(t.batch_size, 17);
  EXPECT_EQ(t.lr, 0.002);
  EXPECT_EQ(t.lambda_fit, 0.25);
  EXPECT_EQ(t.lambda_sep, 0.125);
  EXPECT_EQ(t.samples_per_anchor, 5);
  EXPECT_EQ(t.eps, 0.001);
  EXPECT_EQ(t.fit, Fit::per_group);
  EXPECT_EQ(t.objective, Objective::groupdro);
  EXPECT_EQ(t.groupdro_eta, 0.5);
  EXPECT_EQ(t.weight_decay, 0.01);
  EXPECT_EQ(t.seed, 13u);
  EXPECT_EQ(t.device, "cpu");
  EXPECT_EQ(t.eval_batch, 77);
  EXPECT_EQ(t.checkpoint_every, 19);
  EXPECT_EQ(t.groupdro_update, GroupDroUpdate::smooth);
  EXPECT_EQ(t.groupdro_objective, GroupDroObjective::logsumexp);
  EXPECT_EQ(t.groupdro_tau, 0.3);
  EXPECT_EQ(t.groupdro_gamma, 0.2);
  EXPECT_EQ(t.groupdro_adjustment, 1.5);
  EXPECT_EQ(t.group_batch, GroupBatch::sqrt);
  EXPECT_EQ(d.groups[0].batch_share, 0.3);
  EXPECT_EQ(d.groups[1].batch_share, 0.0);
  EXPECT_EQ(d.val_fraction, 0.2);
}

// train.group_batch and data.groups[].batch_share (docs/DESIGN.md §1): shares that cannot be met
// are errors naming the keys, before any data is read.
TEST(Config, BatchSharesMustBeMeetable) {
  const std::string path = write_config("min.toml", kMinimal);
  EXPECT_EQ(load_config(path, {"train.group_batch=\"equal\""}).train.group_batch,
            GroupBatch::equal);
  std::string e = error_of(path, {"train.group_batch=\"balanced\""});
  EXPECT_NE(e.find("train.group_batch"), std::string::npos) << e;
  EXPECT_NE(e.find("\"proportional\", \"sqrt\", \"equal\""), std::string::npos) << e;
  for (const char* bad : {"0", "1", "-0.5", "1.5"}) {
    e = error_of(path, {std::string("data.groups.1.batch_share=") + bad});
    EXPECT_NE(e.find("key 'data.groups[1].batch_share': expected the group's share of every batch, "
                     "in (0, 1)"),
              std::string::npos)
        << bad << ": " << e;
  }
  EXPECT_EQ(load_config(path, {"data.groups.1.batch_share=0.25"}).groups[1].batch_share, 0.25);
  // One group fixed at 0.999 still leaves the other a share; both fixed must fill the batch.
  EXPECT_EQ(error_of(path, {"data.groups.0.batch_share=0.999"}), "");
  e = error_of(path, {"data.groups.0.batch_share=0.6", "data.groups.1.batch_share=0.3"});
  EXPECT_NE(e.find("every group has a batch_share, and they add up to 0.9"), std::string::npos)
      << e;
  EXPECT_NE(e.find("data.groups[0].batch_share, data.groups[1].batch_share"), std::string::npos)
      << e;
  EXPECT_EQ(error_of(path, {"data.groups.0.batch_share=0.75", "data.groups.1.batch_share=0.25"}),
            "");
  // Three groups, two fixed at 0.5 each: nothing left for the third.
  std::string three = kMinimal;
  three +=
      "[[data.groups]]\nname = \"c\"\ntrain_x = \"c.npy\"\ntrain_y = \"c.npy\"\n"
      "test_x = \"c.npy\"\ntest_y = \"c.npy\"\n";
  e = error_of(write_config("three.toml", three),
               {"data.groups.0.batch_share=0.5", "data.groups.2.batch_share=0.5"});
  EXPECT_NE(e.find("add up to 1, which leaves nothing of a batch for the 1 group(s) without a "
                   "batch_share"),
            std::string::npos)
      << e;
}

// data.val_fraction left out: 0.1 when train.select picks a model by the validation split, 0 when
// nothing uses it (select = "last"); a value given is kept either way (docs/DESIGN.md §4).
TEST(Config, TheValidationSplitIsTakenWhenSomethingUsesIt) {
  const std::string path = write_config("min.toml", kMinimal);
  EXPECT_EQ(load_config(path).val_fraction, 0.0);
  EXPECT_EQ(load_config(path, {"train.select=\"worst_val\""}).val_fraction, 0.1);
  EXPECT_EQ(load_config(path, {"train.select=\"mean_val\""}).val_fraction, 0.1);
  EXPECT_EQ(load_config(path, {"data.val_fraction=0.2"}).val_fraction, 0.2);
  EXPECT_EQ(load_config(path, {"data.val_fraction=0", "train.select=\"worst_val\""}).val_fraction,
            0.0);
  // The run folder's config.toml holds the value taken, so a resume with another select keeps it.
  const Config c = load_config(path, {"train.select=\"worst_val\""});
  const Config d =
      load_config(write_config("resolved.toml", to_toml(c)), {"train.select=\"last\""});
  EXPECT_EQ(d.val_fraction, 0.1);
}

}  // namespace
}  // namespace hetdro

// Worst-group tools (docs/DESIGN.md §1, §4): the validation split, model selection by
// validation accuracy, and the majority-class baseline beside every accuracy.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cli.h"
#include "hetdro/check.h"
#include "hetdro/config.h"
#include "hetdro/data.h"
#include "hetdro/io.h"
#include "hetdro/prepare.h"

namespace hetdro {
namespace {

namespace fs = std::filesystem;
using testing::read_text;
using testing::run_cli;

// 50 samples in row order: 10 of class 0, 15 of class 1, 25 of class 2; row i is (i, −i).
Split make_split() {
  Split s;
  s.x.shape = {50, 2};
  for (int i = 0; i < 50; ++i) {
    s.y.push_back(i < 10 ? 0 : i < 25 ? 1 : 2);
    s.x.data.push_back(float(i));
    s.x.data.push_back(float(-i));
  }
  return s;
}

TEST(ValidationSplit, IsStratifiedSeededDisjointAndKeepsTheTrainingOrder) {
  Split train = make_split();
  std::string note;
  const Split val = split_validation(train, 0.2, 7, 3, &note);
  // round(0.2·n_c) of each class: 2, 3, 5.
  ASSERT_EQ(val.size(), 10);
  EXPECT_EQ(train.size(), 40);
  EXPECT_EQ(val.x.shape, (std::vector<int64_t>{10, 2}));
  EXPECT_EQ(train.x.shape, (std::vector<int64_t>{40, 2}));
  for (int c = 0, want[] = {2, 3, 5}; c < 3; ++c)
    EXPECT_EQ(std::count(val.y.begin(), val.y.end(), c), want[c]) << c;
  // Rows travel with their labels; together the two splits are the original, once each.
  std::set<int> seen;
  for (const Split* s : {static_cast<const Split*>(&train), &val})
    for (int64_t i = 0; i < s->size(); ++i) {
      const int original = int(s->x.data[2 * i]);
      EXPECT_EQ(s->x.data[2 * i + 1], -float(original));
      EXPECT_EQ(s->y[i], original < 10 ? 0 : original < 25 ? 1 : 2);
      EXPECT_TRUE(seen.insert(original).second) << original;
    }
  EXPECT_EQ(seen.size(), 50u);
  for (int64_t i = 1; i < train.size(); ++i)
    EXPECT_LT(train.x.data[2 * (i - 1)], train.x.data[2 * i]);
  // The same seed gives the same split; another seed another one.
  Split again = make_split(), other = make_split();
  EXPECT_EQ(split_validation(again, 0.2, 7, 3, &note).x.data, val.x.data);
  EXPECT_NE(split_validation(other, 0.2, 8, 3, &note).x.data, val.x.data);
}

TEST(ValidationSplit, AGroupTooSmallToSplitKeepsNoneAndSaysSo) {
  Split train = make_split();
  std::string note;
  // 0.04 of class 0's 10 samples rounds to 0: that class would have no validation sample.
  const Split val = split_validation(train, 0.04, 7, 3, &note);
  EXPECT_EQ(val.size(), 0);
  EXPECT_EQ(train.size(), 50);
  EXPECT_NE(note.find("class 0 has 10 training samples, too few"), std::string::npos) << note;
}

class Selection : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    setenv("OMP_WAIT_POLICY", "passive", 0);
    data_ = fs::path(::testing::TempDir()) / ("hetdro_selection_" + std::to_string(getpid()));
    fs::remove_all(data_);
    prepare_synthetic(data_.string());
  }
  static void TearDownTestSuite() { fs::remove_all(data_); }
  std::string config() const { return (data_ / "config.toml").string(); }
  std::string out(const std::string& name) const {
    return (data_ / ::testing::UnitTest::GetInstance()->current_test_info()->name() / name)
        .string();
  }
  static fs::path data_;
};
fs::path Selection::data_;

TEST_F(Selection, WorstValKeepsTheBestEpochsModelAndReportsItsTestAccuracy) {
  const std::string run = out("run");
  auto r = run_cli("train --config " + config() + " --out " + run +
                   " --set train.epochs=4 --set train.select=worst_val");
  ASSERT_EQ(r.code, 0) << r.output;
  ASSERT_TRUE(fs::exists(run + "/best.safetensors"));
  // The selected epoch is the first with the highest worst-group validation accuracy.
  std::istringstream lines(read_text(run + "/metrics.jsonl"));
  int best_epoch = 0;
  double best = -1;
  for (std::string line; std::getline(lines, line);) {
    const auto m = nlohmann::json::parse(line);
    for (auto key : {"val_acc", "worst_val_acc", "mean_val_acc"}) EXPECT_TRUE(m.contains(key));
    if (m["worst_val_acc"].get<double>() > best) {
      best = m["worst_val_acc"];
      best_epoch = m["epoch"];
    }
  }
  const auto report = nlohmann::json::parse(read_text(run + "/report.json"));
  EXPECT_EQ(report["selected"]["rule"], "worst_val");
  EXPECT_EQ(report["selected"]["epoch"], best_epoch);
  EXPECT_EQ(report["selected"]["val_score"], best);
  EXPECT_EQ(read_safetensors(run + "/best.safetensors").metadata.at("epoch"),
            std::to_string(best_epoch));
  // eval --best reads that model: the same test accuracies as the report's selected ones.
  r = run_cli("eval --run " + run + " --best --json");
  ASSERT_EQ(r.code, 0) << r.output;
  const auto e = nlohmann::json::parse(r.output);
  for (auto& [group, acc] : report["selected"]["test_acc"].items())
    EXPECT_EQ(e["groups"][group]["accuracy"], acc) << group;
  EXPECT_EQ(e["worst_group_acc"], report["selected"]["worst_group_acc"]);
}

TEST_F(Selection, SelectingWithoutAValidationSplitIsBadInput) {
  auto r = run_cli("train --config " + config() + " --out " + out("run") +
                   " --set train.select=worst_val --set data.val_fraction=0");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("train.select = \"worst_val\" needs a validation split"),
            std::string::npos)
      << r.output;
  r = run_cli("eval --run " + out("none") + " --best");
  EXPECT_EQ(r.code, 2) << r.output;
}

TEST_F(Selection, AGroupsOwnValidationFilesAreUsed) {
  // vec40's validation split from files: the first 30 of its test samples.
  const fs::path dir = out("data");
  fs::create_directories(dir);
  const Array<float> x = read_npy_features((data_ / "vec40_test_x.npy").string());
  const std::vector<int32_t> y = read_npy_labels((data_ / "vec40_test_y.npy").string());
  write_npy((dir / "val_x.npy").string(), x.data.data(), {30, 40});
  write_npy((dir / "val_y.npy").string(), y.data(), {30});
  Config c =
      load_config(config(), {"data.groups.2.val_x=\"" + (dir / "val_x.npy").string() + "\"",
                             "data.groups.2.val_y=\"" + (dir / "val_y.npy").string() + "\""});
  const std::vector<GroupData> groups = load_groups(c);
  EXPECT_EQ(groups[2].val.size(), 30);
  EXPECT_EQ(groups[2].train.size(), 200);  // nothing carved out of its training data
  EXPECT_EQ(groups[0].val.size(), 100);    // the others: 10% of their training data
  EXPECT_EQ(groups[0].train.size(), 900);
  EXPECT_THROW(load_config(config(), {"data.groups.2.val_x=\"a.npy\""}), InputError);
}

TEST_F(Selection, TheMajorityBaselineIsTheCommonestClassShareAndMarksAGroupThatDoesNotBeatIt) {
  // vec40's test labels made 80% class 3: guessing 3 scores 0.8 there.
  const fs::path dir = out("data");
  fs::create_directories(dir);
  for (const auto& entry : fs::directory_iterator(data_))
    if (entry.is_regular_file()) fs::copy(entry.path(), dir / entry.path().filename());
  std::vector<int32_t> y = read_npy_labels((dir / "vec40_test_y.npy").string());
  for (size_t i = 0; i < y.size(); ++i)
    if (i % 5 != 0) y[i] = 3;
  write_npy((dir / "vec40_test_y.npy").string(), y.data(), {int64_t(y.size())});
  const std::string run = out("run");
  auto r = run_cli("train --config " + (dir / "config.toml").string() + " --out " + run +
                   " --set train.epochs=1");
  ASSERT_EQ(r.code, 0) << r.output;
  const auto report = nlohmann::json::parse(read_text(run + "/report.json"));
  EXPECT_DOUBLE_EQ(report["majority_acc"]["vec40"].get<double>(), 0.8);
  EXPECT_DOUBLE_EQ(report["majority_acc"]["img8"].get<double>(), 0.2);
  // The trained model knows nothing of the relabelling: it scores below 0.8 on vec40, and the
  // final table and eval mark it.
  ASSERT_LT(report["test_acc"]["vec40"].get<double>(), 0.8);
  EXPECT_NE(r.output.find("<= majority"), std::string::npos) << r.output;
  r = run_cli("eval --run " + run);
  EXPECT_NE(r.output.find("<= majority"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace hetdro

// The `hetdro` binary end to end on bad input: every case exits with code 2, names the file or
// key, and leaves no run folder behind. Also --help, --set and the subcommand stubs.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>  // getpid

#include <algorithm>  // min_element, max_element
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>

#include "cli.h"  // run_cli, read_text
#include "hetdro/config.h"
#include "hetdro/io.h"
#include "hetdro/prepare.h"
#include "testing.h"  // gamma, unit_roundoff

namespace hetdro {
namespace {

namespace fs = std::filesystem;

using Result = testing::CliResult;  // the exit code, and stdout and stderr together
Result run(const std::string& args) { return testing::run_cli(args); }
using testing::read_text;

void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// Each test gets a fresh copy of the synthetic dataset to break.
class Cli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // One source per process: ctest -j runs each test in a process of its own.
    source_ = fs::path(::testing::TempDir()) / ("hetdro_cli_synthetic_" + std::to_string(getpid()));
    fs::remove_all(source_);
    prepare_synthetic(source_.string());
  }
  static void TearDownTestSuite() { fs::remove_all(source_); }
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           (std::string("hetdro_cli_") +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    fs::copy(source_, dir_ / "data", fs::copy_options::recursive);
    config_ = (dir_ / "data" / "config.toml").string();
    out_ = (dir_ / "run").string();
  }
  std::string data(const std::string& file) const { return (dir_ / "data" / file).string(); }
  void edit_config(const std::string& from, const std::string& to) {
    std::string text = read_text(config_);
    size_t at = text.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    write_text(config_, text);
  }
  // Runs `train`, expects exit code 2, every word in the message, and no run folder.
  void expect_bad_input(const std::vector<std::string>& words, const std::string& extra = "") {
    Result r = run("train --config " + config_ + " --out " + out_ + " " + extra);
    EXPECT_EQ(r.code, 2) << r.output;
    for (auto& w : words)
      EXPECT_NE(r.output.find(w), std::string::npos) << "missing '" << w << "' in:\n" << r.output;
    EXPECT_FALSE(fs::exists(out_)) << "a run folder was left behind";
  }
  static fs::path source_;
  fs::path dir_;
  std::string config_, out_;
};
fs::path Cli::source_;

TEST_F(Cli, MissingFile) {
  fs::remove(data("vec16_train_x.npy"));
  expect_bad_input({"vec16_train_x.npy", "not found"});
}

TEST_F(Cli, BadMagic) {
  write_text(data("vec16_train_x.npy"), "this is not an npy file at all, it is text");
  expect_bad_input({"vec16_train_x.npy", "bad magic"});
}

TEST_F(Cli, TruncatedPayload) {
  const std::string path = data("vec40_test_x.npy");
  fs::resize_file(path, fs::file_size(path) - 100);
  expect_bad_input({"vec40_test_x.npy", "truncated"});
}

TEST_F(Cli, UnsupportedDtype) {
  // A valid NPY 1.0 header for complex64 features.
  std::string header = "{'descr': '<c8', 'fortran_order': False, 'shape': (4, 2), }";
  header.append(64 - (10 + header.size() + 1) % 64, ' ');
  header += '\n';
  std::string file = std::string("\x93NUMPY\x01\x00", 8);
  file += char(header.size() & 0xff);
  file += char(header.size() >> 8);
  file += header + std::string(4 * 2 * 8, '\0');
  write_text(data("vec16_train_x.npy"), file);
  expect_bad_input({"vec16_train_x.npy", "unsupported dtype", "<c8"});
}

TEST_F(Cli, FeaturesAndLabelsOfDifferentLengths) {
  std::vector<int32_t> y(599, 0);
  write_npy(data("vec16_train_y.npy"), y.data(), {599});
  expect_bad_input({"vec16_train_x.npy", "vec16_train_y.npy", "600", "599", "same length"});
}

TEST_F(Cli, LabelOutsideTheClasses) {
  std::vector<int32_t> y(300, 1);
  y[17] = 5;
  write_npy(data("vec40_test_y.npy"), y.data(), {300});
  expect_bad_input({"vec40_test_y.npy", "label 5", "index 17", "[0, 5)"});
}

TEST_F(Cli, NonFiniteFeature) {
  Array<float> x = read_npy_features(data("img8_train_x.npy"));
  x.data[3 * 64 + 10] = std::nanf("");
  write_npy(data("img8_train_x.npy"), x.data.data(), x.shape);
  expect_bad_input({"img8_train_x.npy", "sample 3", "nan", "finite"});
  x.data[3 * 64 + 10] = INFINITY;
  write_npy(data("img8_train_x.npy"), x.data.data(), x.shape);
  expect_bad_input({"img8_train_x.npy", "inf", "finite"});
}

TEST_F(Cli, EmptyGroup) {
  std::vector<float> x;
  std::vector<int32_t> y;
  write_npy(data("vec40_train_x.npy"), x.data(), {0, 40});
  write_npy(data("vec40_train_y.npy"), y.data(), {0});
  expect_bad_input({"vec40_train_x.npy", "vec40", "empty"});
}

TEST_F(Cli, DuplicateGroupName) {
  edit_config("name = \"vec40\"", "name = \"vec16\"");
  expect_bad_input({"config.toml", "duplicate group name", "vec16"});
}

TEST_F(Cli, FeatureShapeTheEncoderCannotTake) {
  edit_config(
      "name = \"vec16\"\ntrain_x = \"vec16_train_x.npy\"\ntrain_y = \"vec16_train_y.npy\"\n"
      "test_x = \"vec16_test_x.npy\"\ntest_y = \"vec16_test_y.npy\"\nencoder = \"mlp\"",
      "name = \"vec16\"\ntrain_x = \"vec16_train_x.npy\"\ntrain_y = \"vec16_train_y.npy\"\n"
      "test_x = \"vec16_test_x.npy\"\ntest_y = \"vec16_test_y.npy\"\nencoder = \"cnn\"");
  expect_bad_input({"vec16_train_x.npy", "cnn", "600x16"});
}

TEST_F(Cli, BatchSmallerThanTheNumberOfGroups) {
  expect_bad_input({"train.batch_size", "smaller than the number of groups"},
                   "--set train.batch_size=2");
}

TEST_F(Cli, BatchLargerThanAGroupCanFill) {
  // 1620 training samples in all once 10% of each group is kept for validation: a batch of
  // 2000 wants 1111 of img8's 900 per step.
  expect_bad_input(
      {"config.toml", "img8", "900 training samples", "1111", "train.batch_size = 2000"},
      "--set train.batch_size=2000");
}

TEST_F(Cli, NonFiniteConfigNumbers) {
  expect_bad_input({"train.lr", "finite", "inf"}, "--set train.lr=inf");
  expect_bad_input({"train.lambda_fit", "finite", "nan"}, "--set train.lambda_fit=nan");
  expect_bad_input({"model.anchor_scale"}, "--set model.anchor_scale=0.0");
}

TEST_F(Cli, RefusesToWriteTheRunOverItsOwnConfig) {
  const std::string before = read_text(config_);
  Result r = run("train --config " + config_ + " --out " + (dir_ / "data").string() +
                 " --set train.epochs=0");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("would replace it"), std::string::npos) << r.output;
  EXPECT_EQ(read_text(config_), before);
}

TEST_F(Cli, UnknownConfigKeyIsNamed) {
  edit_config("[train]\n", "[train]\nepoch = 3\n");
  expect_bad_input({"config.toml", "unknown key 'train.epoch'", "epochs"});
}

TEST_F(Cli, WrongTypeAndBadChoiceAreNamed) {
  expect_bad_input({"train.epochs", "integer", "string"}, "--set train.epochs='three'");
  expect_bad_input({"train.fit", "\"pooled\""}, "--set train.fit=joint");
  expect_bad_input({"train.deterministic", "true or false", "integer"},
                   "--set train.deterministic=1");
}

// bench-step: the trainer's own steps on the config's data, timed one by one on the backend's
// clock; on the CPU there is no graph to record, and it says so.
TEST_F(Cli, BenchStepTimesTheStepsAndWritesThemAsJson) {
  const std::string json = (dir_ / "bench.json").string();
  Result r = run("bench-step --config " + config_ + " --steps 6 --warmup 2 --json " + json +
                 " --set train.deterministic=false");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("bench-step: cpu"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("op by op (the cpu backend runs its ops as they are called)"),
            std::string::npos)
      << r.output;
  const nlohmann::json j = nlohmann::json::parse(read_text(json));
  EXPECT_EQ(j["impl"], "hetdro");
  EXPECT_EQ(j["backend"], "cpu");
  EXPECT_EQ(j["graph"], false);
  EXPECT_EQ(j["steps"], 6);
  EXPECT_EQ(j["batch_size"], 60);
  EXPECT_EQ(j["deterministic"], false);
  const double p10 = j["p10_ms"], median = j["median_ms"], p90 = j["p90_ms"];
  EXPECT_GT(p10, 0);
  EXPECT_LE(p10, median);
  EXPECT_LE(median, p90);
  EXPECT_GT(double(j["back_to_back_ms"]), 0);
  EXPECT_FALSE(j.contains("ceilings"));  // measured on a GPU only

  // --no-graph is accepted by train and bench-step alike.
  r = run("train --config " + config_ + " --out " + out_ + " --max-steps 2 --no-graph");
  EXPECT_EQ(r.code, 0) << r.output;
}

TEST_F(Cli, BenchStepBadInputSaysWhatAndWritesNothing) {
  const std::string json = (dir_ / "bench.json").string();
  for (const auto& [args, word] : std::vector<std::pair<std::string, std::string>>{
           {"--steps 0", "--steps 0: expected at least 1"},
           {"--warmup 0", "--warmup 0: expected at least 1"},
           {"--set train.lr=-1", "train.lr"}}) {
    Result r = run("bench-step --config " + config_ + " --json " + json + " " + args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(word), std::string::npos) << args << "\n" << r.output;
    EXPECT_FALSE(fs::exists(json)) << args;
  }
  Result r = run("bench-step --steps 3");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("--config"), std::string::npos) << r.output;
}

TEST_F(Cli, MissingConfig) {
  Result r = run("train --config " + (dir_ / "nope.toml").string() + " --out " + out_);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.output.find("nope.toml: config file not found"), std::string::npos) << r.output;
}

TEST_F(Cli, OverridesReachTheResolvedConfig) {
  Result r = run("train --config " + config_ + " --out " + out_ +
                 " --set train.epochs=0 --set model.latent_dim=8");
  ASSERT_EQ(r.code, 0) << r.output;
  std::string resolved = read_text(out_ + "/config.toml");
  EXPECT_NE(resolved.find("epochs = 0"), std::string::npos) << resolved;
  EXPECT_NE(resolved.find("latent_dim = 8"), std::string::npos) << resolved;
  // A second run into the same folder is refused unless --overwrite.
  r = run("train --config " + config_ + " --out " + out_ + " --set train.epochs=0");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.output.find("already holds a run"), std::string::npos) << r.output;
}

TEST_F(Cli, TrainThenEvalAndPredictFromTheRunFolder) {
  Result r = run("train --config " + config_ + " --out " + out_ + " --set train.epochs=2");
  ASSERT_EQ(r.code, 0) << r.output;
  for (auto f : {"config.toml", "metrics.jsonl", "checkpoint.safetensors", "report.json"})
    EXPECT_TRUE(fs::exists(fs::path(out_) / f)) << f;
  r = run("eval --run " + out_);
  ASSERT_EQ(r.code, 0) << r.output;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.output, m, std::regex("\\nvec16 +300 +([0-9.]+) "))) << r.output;
  EXPECT_EQ(r.output.find("confusion"), std::string::npos) << "only with --confusion";
  // The same accuracy that training reported for its last epoch.
  auto report = nlohmann::json::parse(read_text(out_ + "/report.json"));
  const double trained = report["test_acc"]["vec16"].get<double>();
  EXPECT_NEAR(std::stod(m[1].str()), trained, 5e-5);  // printed with 4 decimals
  r = run("eval --run " + out_ + " --confusion");
  EXPECT_NE(r.output.find("confusion of vec16 (rows: true class"), std::string::npos) << r.output;
  r = run("eval --run " + out_ + " --json");
  ASSERT_EQ(r.code, 0) << r.output;
  const auto e = nlohmann::json::parse(r.output);
  EXPECT_EQ(e["groups"]["vec16"]["accuracy"].get<double>(), trained);
  EXPECT_EQ(e["groups"]["vec16"]["confusion"], report["confusion"]["vec16"]);
  // Recall of class c: the diagonal over the row sum.
  const auto& row = e["groups"]["vec16"]["confusion"][2];
  int64_t total = 0;
  for (auto& v : row) total += v.get<int64_t>();
  EXPECT_DOUBLE_EQ(e["groups"]["vec16"]["recall"][2].get<double>(),
                   double(row[2].get<int64_t>()) / double(total));

  const std::string pred = (dir_ / "pred.npy").string();
  r = run("predict --run " + out_ + " --group vec16 --input " + data("vec16_test_x.npy") +
          " --out " + pred);
  ASSERT_EQ(r.code, 0) << r.output;
  // One row per sample: index, class, the 5 class probabilities (summing to 1, the class's the
  // largest).
  const Array<float> rows = read_npy_features(pred);
  const std::vector<int32_t> truth = read_npy_labels(data("vec16_test_y.npy"));
  ASSERT_EQ(rows.shape, (std::vector<int64_t>{300, 7}));
  int correct = 0;
  for (int64_t i = 0; i < 300; ++i) {
    const float* sample = rows.data.data() + i * 7;
    EXPECT_EQ(sample[0], float(i));
    const int label = int(sample[1]);
    correct += label == truth[i];
    // p_c = e_c/Σe rounds once past the row's sum of 5 (γ_4), and this sum adds 4 roundings:
    // |Σp − 1| ≤ γ_9 in float.
    float sum = 0;
    for (int c = 0; c < 5; ++c) sum += sample[2 + c];
    EXPECT_NEAR(sum, 1.0f, testing::gamma(9, testing::unit_roundoff<float>()));
    EXPECT_EQ(std::max_element(sample + 2, sample + 7) - (sample + 2), label);
  }
  EXPECT_DOUBLE_EQ(correct / 300.0, trained);
  // The same as CSV with a header, and from standard input.
  const std::string csv = (dir_ / "pred.csv").string();
  r = run("predict --run " + out_ + " --group vec16 --input - --out " + csv + " < " +
          data("vec16_test_x.npy"));
  ASSERT_EQ(r.code, 0) << r.output;
  const std::string text = read_text(csv);
  EXPECT_EQ(text.rfind("index,class,p0,p1,p2,p3,p4\n0,", 0), 0u) << text.substr(0, 80);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 301);
  // Features of the wrong shape for the group are refused, naming the file.
  r = run("predict --run " + out_ + " --group vec16 --input " + data("vec40_test_x.npy") +
          " --out " + pred);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.output.find("vec40_test_x.npy"), std::string::npos) << r.output;
  r = run("predict --run " + out_ + " --group nope --input " + data("vec40_test_x.npy") +
          " --out " + pred);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.output.find("no such group"), std::string::npos) << r.output;
}

// --- hostile input (tests/test_io.cpp has the readers' side of each class) -----------------

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}

// A header or config key nested 100,000 levels deep: exit code 2 (not a crash), the file
// named, and the header not echoed.
TEST_F(Cli, DeepNestingIsBadInputNotACrash) {
  Result r = run("train --config " + config_ + " --out " + out_ + " --set train.epochs=0");
  ASSERT_EQ(r.code, 0) << r.output;
  std::string header =
      "{'descr': '<f4', 'fortran_order': False, 'shape': " + std::string(100000, '(') + "}\n";
  std::string npy = std::string("\x93NUMPY\x02\x00", 8);
  for (int i = 0; i < 4; ++i) npy += char(header.size() >> (8 * i) & 0xff);
  const std::string input = (dir_ / "deep.npy").string();
  write_bytes(input, npy + header);
  r = run("predict --run " + out_ + " --group vec16 --input " + input + " --out " +
          (dir_ / "p.npy").string());
  EXPECT_EQ(r.code, 2) << r.output.substr(0, 2000);
  EXPECT_NE(r.output.find("deep.npy: malformed NPY header"), std::string::npos) << r.output;
  EXPECT_LT(r.output.size(), 600u);
  EXPECT_FALSE(fs::exists(dir_ / "p.npy"));

  const std::string json = "{\"w\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  std::string st(8, '\0');
  for (int i = 0; i < 8; ++i) st[size_t(i)] = char(json.size() >> (8 * i) & 0xff);
  const std::string checkpoint = (dir_ / "deep.safetensors").string();
  write_bytes(checkpoint, st + json);
  r = run("eval --config " + config_ + " --checkpoint " + checkpoint);
  EXPECT_EQ(r.code, 2) << r.output.substr(0, 2000);
  EXPECT_NE(r.output.find("deep.safetensors: malformed header"), std::string::npos) << r.output;
  EXPECT_LT(r.output.size(), 600u);

  std::string key = "a";
  for (int i = 0; i < 99999; ++i) key += ".a";
  write_text(config_, read_text(config_) + "\n[model.extra]\n" + key + " = 1\n");
  r = run("train --config " + config_ + " --out " + (dir_ / "run2").string());
  EXPECT_EQ(r.code, 2) << r.output.substr(0, 2000);
  EXPECT_NE(r.output.find("config.toml:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("a dotted key of more than 64 parts"), std::string::npos) << r.output;
}

// A value read from a file is quoted short in a message, however long it is.
TEST_F(Cli, LongValuesFromFilesAreQuotedShort) {
  Result r = run("train --config " + config_ + " --out " + out_ + " --set train.epochs=0");
  ASSERT_EQ(r.code, 0) << r.output;
  const std::string checkpoint = out_ + "/checkpoint.safetensors";
  SafetensorsFile file = read_safetensors(checkpoint);
  file.metadata["step"] = std::string(100000, '7') + "x";
  write_safetensors(checkpoint, file.tensors, file.metadata);
  r = run("eval --run " + out_);
  EXPECT_EQ(r.code, 2) << r.output.substr(0, 2000);
  EXPECT_NE(r.output.find("checkpoint.safetensors: __metadata__ 'step' is \"777"),
            std::string::npos)
      << r.output.substr(0, 2000);
  EXPECT_NE(r.output.find("(100001 bytes): expected an integer from 0 to"), std::string::npos)
      << r.output.substr(0, 2000);
  EXPECT_LT(r.output.size(), 600u);
}

// An IDX file of 64 KB that claims 3 GB: exit code 2 at once, naming the file (the reader
// test checks that nothing of the claimed size is allocated).
TEST_F(Cli, HugeSizeClaimIsBadInput) {
  std::string idx = {'\0', '\0', '\x08', '\x03'};
  for (uint32_t d : {3000u, 1000u, 1000u})
    for (int shift = 24; shift >= 0; shift -= 8) idx += char(d >> shift & 0xff);
  write_bytes(data("big-idx3-ubyte"), idx + std::string(65536, '\0'));
  expect_bad_input({"big-idx3-ubyte", "truncated payload", "3000x1000x1000", "65536 bytes"},
                   "--set data.groups.0.train_x=big-idx3-ubyte");
}

// predict --out may never replace what the command reads, a folder, or a file that is not
// earlier predictions; each is exit code 2 with every file left as it was.
TEST_F(Cli, PredictOutNeverDestroysData) {
  Result r = run("train --config " + config_ + " --out " + out_ + " --set train.epochs=0");
  ASSERT_EQ(r.code, 0) << r.output;
  const std::string checkpoint = out_ + "/checkpoint.safetensors", input = data("vec16_test_x.npy"),
                    report = out_ + "/report.json";
  const std::string predict = "predict --run " + out_ + " --group vec16 --input " + input;
  struct Case {
    std::string out;
    std::vector<std::string> words;
  };
  const std::vector<Case> cases = {
      {checkpoint, {"checkpoint.safetensors: --out is the checkpoint", "Choose another --out"}},
      {input, {"vec16_test_x.npy: --out is the --input"}},
      {out_ + "/config.toml", {"config.toml: --out is the config"}},
      {data("vec40_train_y.npy"), {"vec40_train_y.npy: --out is a data file of group 'vec40'"}},
      {report, {"report.json: --out exists and holds something else", ".npy or .csv file"}},
      {out_, {"--out names a folder", ".npy or .csv file"}},
      {"''", {"--out is empty", ".npy or .csv file"}},
      {(dir_ / "nowhere" / "p.npy").string(), {"which does not exist"}},
  };
  std::map<std::string, std::string> before;
  for (const auto& f : {checkpoint, input, report, data("vec40_train_y.npy"), config_})
    before[f] = read_bytes(f);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.out);
    r = run(predict + " --out " + c.out);
    EXPECT_EQ(r.code, 2) << r.output;
    for (const auto& w : c.words) EXPECT_NE(r.output.find(w), std::string::npos) << r.output;
  }
  for (const auto& [f, bytes] : before) EXPECT_EQ(read_bytes(f), bytes) << f << " was changed";
  EXPECT_FALSE(fs::exists(dir_ / "nowhere"));
  // Earlier predictions are replaced.
  const std::string pred = (dir_ / "pred.npy").string();
  ASSERT_EQ(run(predict + " --out " + pred).code, 0);
  r = run(predict + " --out " + pred);
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(read_npy_features(pred).rows(), 300);
}

TEST_F(Cli, TrainOutEmptySaysSo) {
  Result r = run("train --config " + config_ + " --out '' --set train.epochs=0");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("--out is empty: expected the name of a folder"), std::string::npos)
      << r.output;
}

TEST_F(Cli, ConfigThatIsAFolderSaysSo) {
  Result r = run("train --config " + (dir_ / "data").string() + " --out " + out_);
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("data: is a folder: expected a config TOML file such as "),
            std::string::npos)
      << r.output;
  EXPECT_FALSE(fs::exists(out_));
}

TEST_F(Cli, ZipCheckpointIsNotSafetensors) {
  const std::string pt = (dir_ / "model.pt").string();
  write_bytes(pt, std::string("PK\x03\x04\x14\x00\x00\x00\x08\x00", 10) + std::string(500, 'z'));
  Result r = run("eval --config " + config_ + " --checkpoint " + pt);
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("model.pt: not a safetensors file"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("zip archive"), std::string::npos) << r.output;
}

// An error in a --set value names the --set argument, not the config file.
TEST_F(Cli, SetErrorsNameTheSetArgument) {
  expect_bad_input({"error: --set 'train.epochs=1e999': key 'train.epochs': expected an integer",
                    "not valid TOML"},
                   "--set train.epochs=1e999");
  expect_bad_input({"error: --set 'train.lr=-1': key 'train.lr': expected a positive value"},
                   "--set train.lr=-1");
  expect_bad_input({"error: --set 'data.groups.1.hidden=[0]': key 'data.groups[1].hidden'"},
                   "--set 'data.groups.1.hidden=[0]'");
  expect_bad_input({"error: --set 'train.epoch=3': unknown key 'train.epoch'"},
                   "--set train.epoch=3");
  // A bad key in the file still names the file, even when --set touched another key.
  edit_config("lr = 3e-3", "lr = -1.0");
  expect_bad_input({"config.toml: key 'train.lr'"}, "--set train.epochs=1");
}

TEST(CliHelp, EverySubcommandHasHelp) {
  for (const char* cmd : {"", "info", "prepare", "prepare hetero-fashion", "prepare synthetic",
                          "train", "bench-step", "eval", "predict"}) {
    Result r = run(std::string(cmd) + " --help");
    EXPECT_EQ(r.code, 0) << cmd << "\n" << r.output;
    EXPECT_NE(r.output.find("--help"), std::string::npos) << cmd;
  }
  Result r = run("frobnicate");
  EXPECT_EQ(r.code, 2) << r.output;
}

// `prepare synthetic --classes C --per-class N` sizes the data for the scaling benchmarks
// (scripts/bench_vs_torch.sh): every group holds N training samples of each of C classes, the
// test sets max(300, 2C); bad sizes exit with 2 and name the option.
TEST(CliPrepare, SyntheticClassesAndPerClass) {
  const fs::path dir = fs::path(::testing::TempDir()) / "hetdro_cli_synthetic_sized";
  fs::remove_all(dir);
  Result r = run("prepare synthetic --out " + dir.string() + " --classes 160 --per-class 3");
  ASSERT_EQ(r.code, 0) << r.output;
  Config c = load_config((dir / "config.toml").string());
  EXPECT_EQ(c.classes, 160);
  EXPECT_EQ(c.train.batch_size, 60);
  for (const char* g : {"img8", "vec16", "vec40"}) {
    std::vector<int32_t> y = read_npy_labels((dir / (std::string(g) + "_train_y.npy")).string());
    ASSERT_EQ(y.size(), 480u) << g;
    std::vector<int> per_class(160, 0);
    for (int32_t label : y) ++per_class.at(size_t(label));
    EXPECT_EQ(*std::min_element(per_class.begin(), per_class.end()), 3) << g;
    EXPECT_EQ(*std::max_element(per_class.begin(), per_class.end()), 3) << g;
    EXPECT_EQ(read_npy_labels((dir / (std::string(g) + "_test_y.npy")).string()).size(), 320u);
  }
  EXPECT_EQ(read_npy_features((dir / "img8_train_x.npy").string()).shape,
            (std::vector<int64_t>{480, 8, 8}));
  // Two classes, one sample each: the batch shrinks to the 6 samples there are.
  r = run("prepare synthetic --out " + dir.string() + " --classes 2 --per-class 1");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(load_config((dir / "config.toml").string()).train.batch_size, 6);
  for (auto [args, word] : {std::pair{"--classes 1", "--classes 1"},
                            {"--classes 100001", "--classes"},
                            {"--per-class -2", "--per-class -2"},
                            {"--classes 1000 --per-class 20000", "--per-class 20000"},
                            {"--classes x", "--classes"}}) {
    r = run("prepare synthetic --out " + (dir / "bad").string() + " " + args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(word), std::string::npos) << args << "\n" << r.output;
    EXPECT_FALSE(fs::exists(dir / "bad")) << args;
  }
  fs::remove_all(dir);
}

TEST(CliInfo, SaysWhetherCudaIsBuiltAndWhatGpusAreFound) {
  Result r = run("info");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(std::regex_search(r.output, std::regex("CUDA (yes|no)"))) << r.output;
  EXPECT_TRUE(std::regex_search(r.output, std::regex("GPU(s: none| 0:)"))) << r.output;
}

// On a terminal, training redraws one progress line (step, steps/s, loss, ETA) in place; into
// a pipe it prints plain lines. `script` (util-linux) gives the run a pseudo-terminal.
TEST_F(Cli, ProgressIsALiveLineOnATerminalAndPlainLinesOtherwise) {
  if (std::system("command -v script > /dev/null 2>&1") != 0) GTEST_SKIP() << "no script(1)";
  const std::string train = std::string(HETDRO_BIN) + " train --config " + config_ + " --out " +
                            out_ + " --set train.epochs=2";
  Result r{0, ""};
  FILE* pipe = popen(("script -qfec '" + train + "' /dev/null 2>&1").c_str(), "r");
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), pipe)) r.output.append(buf.data(), n);
  ASSERT_EQ(pclose(pipe), 0) << r.output;
  EXPECT_TRUE(std::regex_search(
      r.output, std::regex("\r  epoch 1/2 \\[[#.]+\\] step [0-9]+/[0-9]+  [0-9.]+ steps/s  loss "
                           "[0-9.]+  ETA [0-9]+:[0-9]{2}:[0-9]{2}")))
      << r.output.substr(0, 2000);
  fs::remove_all(out_);
  r = run("train --config " + config_ + " --out " + out_ + " --set train.epochs=2");
  EXPECT_EQ(r.output.find("steps/s"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("epoch 2/2  loss"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace hetdro

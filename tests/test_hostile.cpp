// Nothing lost under hostile use (docs/DESIGN.md §4): the cases of issue 20 by class. Outputs
// follow one rule; run folders and prepared data are recognised; a refused resume writes
// nothing; a checkpoint is validated whole on load and never written non-finite; metrics.jsonl
// cannot tear; standard output is checked; inputs that are not regular files are refused; and
// the messages name what the user gave.
#include <fmt/ranges.h>
#include <gtest/gtest.h>
#include <sys/stat.h>  // mkfifo
#include <sys/wait.h>  // waitpid
#include <unistd.h>    // fork, getpid

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "cli.h"
#include "hetdro/check.h"
#include "hetdro/checkpoint.h"
#include "hetdro/config.h"
#include "hetdro/io.h"
#include "hetdro/prepare.h"
#include "tiny_model.h"

namespace hetdro {
namespace {

namespace fs = std::filesystem;
using testing::read_text;
using testing::run_cli;

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

bool contains(const std::string& text, const std::string& word) {
  return text.find(word) != std::string::npos;
}

// Every file of a folder (not below it; not the empty .lock a run takes) and a hash of its
// bytes: what "nothing was written" compares. Printed, it lists the names and hashes.
std::map<std::string, size_t> snapshot(const fs::path& dir) {
  std::map<std::string, size_t> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename() != ".lock")
      files[e.path().filename().string()] = std::hash<std::string>()(read_bytes(e.path().string()));
  return files;
}

// A checkpoint's tensors and metadata, changed by a test and written back (as a checkpoint from
// another writer: without the checksums, unless the test keeps them).
void edit_checkpoint(const std::string& path, const std::function<void(SafetensorsFile&)>& edit,
                     bool keep_checksums = false) {
  SafetensorsFile file = read_safetensors(path);
  if (!keep_checksums)
    for (auto it = file.metadata.begin(); it != file.metadata.end();)
      it = it->first.rfind("crc32.", 0) == 0 ? file.metadata.erase(it) : std::next(it);
  edit(file);
  write_safetensors(path, file.tensors, file.metadata);
}

NamedTensor* tensor(SafetensorsFile& file, const std::string& name) {
  for (NamedTensor& t : file.tensors)
    if (t.name == name) return &t;
  ADD_FAILURE() << "no tensor " << name;
  return nullptr;
}

// One trained run (one epoch of the synthetic data) shared by the suite; each test works on a
// copy of it, so the costly part runs once.
class Hostile : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    setenv("OMP_WAIT_POLICY", "passive", 0);
    root_ = fs::path(::testing::TempDir()) / ("hetdro_hostile_" + std::to_string(getpid()));
    fs::remove_all(root_);
    prepare_synthetic((root_ / "data").string());
    const auto r = run_cli("train --config " + (root_ / "data" / "config.toml").string() +
                           " --out " + (root_ / "run").string() +
                           " --set train.epochs=1 --set train.objective=\"groupdro\"");
    ASSERT_EQ(r.code, 0) << r.output;
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }
  void SetUp() override {
    dir_ = root_ / ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    fs::copy(root_ / "run", dir_ / "run", fs::copy_options::recursive);
    fs::remove(dir_ / "run" / ".lock");
  }
  std::string config() const { return (root_ / "data" / "config.toml").string(); }
  std::string run() const { return (dir_ / "run").string(); }
  std::string ckpt() const { return run() + "/checkpoint.safetensors"; }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string bench(const std::string& json) const {
    return "bench-step --config " + config() + " --steps 1 --warmup 1 --json " + json;
  }
  // Expects exit code 2 with every word in the message.
  static void expect_bad(const testing::CliResult& r, const std::vector<std::string>& words) {
    EXPECT_EQ(r.code, 2) << r.output;
    for (const auto& w : words)
      EXPECT_TRUE(contains(r.output, w)) << "no '" << w << "' in\n" << r.output;
  }

  static fs::path root_;
  fs::path dir_;
};
fs::path Hostile::root_;

// --- outputs: one rule for every file a command writes -------------------------------------

TEST_F(Hostile, AnOutputNeverReplacesAFifoAFolderAFileItReadsOrAForeignFile) {
  const std::string fifo = path("fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0644), 0);
  expect_bad(run_cli(bench(fifo)), {fifo, "a FIFO", "never replaces"});
  EXPECT_EQ(fs::status(fifo).type(), fs::file_type::fifo);
  expect_bad(run_cli(bench(path(""))), {"a folder"});
  const std::string before = read_bytes(ckpt());
  expect_bad(run_cli(bench(ckpt())), {ckpt(), "holds something else", "--json"});
  EXPECT_EQ(read_bytes(ckpt()), before);
  expect_bad(run_cli(bench(config())), {"is the config this command reads"});
  write_bytes(path("notes.json"), "{\"mine\": 1}\n");
  expect_bad(run_cli(bench(path("notes.json"))), {"holds something else"});
  EXPECT_EQ(read_text(path("notes.json")), "{\"mine\": 1}\n");
  // predict --out follows the same rule.
  const std::string predict = "predict --run " + run() + " --group vec16 --input " +
                              (root_ / "data" / "vec16_test_x.npy").string() + " --out ";
  expect_bad(run_cli(predict + fifo), {fifo, "a FIFO"});
  expect_bad(run_cli(predict + ckpt()), {"is the checkpoint this command reads"});
  // An NPY file that is not predictions (float32 data of another folder) is not replaced.
  const std::vector<float> data = {1, 2, 3};
  write_npy(path("other_train_x.npy"), data.data(), {3});
  const std::string npy = read_bytes(path("other_train_x.npy"));
  expect_bad(run_cli(predict + path("other_train_x.npy")), {"holds something else"});
  EXPECT_EQ(read_bytes(path("other_train_x.npy")), npy);
}

TEST_F(Hostile, AnOutputReplacesItsOwnEarlierOutputAnEmptyFileOrWhatALinkNames) {
  write_bytes(path("empty.json"), "");
  auto r = run_cli(bench(path("empty.json")));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(read_text(path("empty.json")))["impl"], "hetdro");
  r = run_cli(bench(path("empty.json")));  // its own earlier output
  EXPECT_EQ(r.code, 0) << r.output;
  fs::create_symlink(path("empty.json"), path("link.json"));
  r = run_cli(bench(path("link.json")));
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(fs::is_symlink(path("link.json")));  // the link stays; the file it names changed
  EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(path("empty.json"))));
  fs::create_symlink(path("nowhere.json"), path("dangling.json"));
  expect_bad(run_cli(bench(path("dangling.json"))), {"dangling.json", "leads nowhere"});
  EXPECT_FALSE(fs::exists(path("nowhere.json")));
}

TEST_F(Hostile, ALoopOfSymbolicLinksIsBadInputNamingThePath) {
  fs::create_symlink(path("b"), path("a"));
  fs::create_symlink(path("a"), path("b"));
  expect_bad(run_cli(bench(path("a"))), {path("a")});
  expect_bad(run_cli("train --config " + config() + " --out " + path("a")), {path("a")});
  expect_bad(run_cli("eval --run " + path("a")), {path("a")});
  expect_bad(run_cli("train --resume " + path("a")), {path("a")});
  expect_bad(run_cli("eval --config " + path("a") + " --checkpoint " + ckpt()), {path("a")});
}

TEST_F(Hostile, StaleTemporaryFilesOfProcessesThatAreGoneAreRemoved) {
  const pid_t child = fork();
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);  // its pid now names no process
  const std::string stale = ckpt() + ".tmp-" + std::to_string(child);
  const std::string live = ckpt() + ".tmp-" + std::to_string(getpid());
  write_bytes(stale, std::string(1000, 'x'));
  write_bytes(live, "x");
  const auto r = run_cli("train --resume " + run() + " --set train.epochs=1");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "removed 1 temporary file")) << r.output;
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(live));  // a process that still runs keeps its file
}

// --- run folders and prepared data ---------------------------------------------------------

TEST_F(Hostile, ARefusedResumeWritesNothing) {
  const auto before = snapshot(run());
  for (const char* set : {"model.latent_dim=16", "data.classes=6", "model.classifier=\"mlp2\"",
                          "data.groups.1.hidden=[8]", "data.groups.0.channels=[4,4]"}) {
    const auto r = run_cli("train --resume " + run() + " --set " + set);
    EXPECT_EQ(r.code, 2) << set << "\n" << r.output;
    EXPECT_EQ(snapshot(run()), before) << set << " changed the run folder";
  }
  // The run is still whole: it evaluates and resumes.
  EXPECT_EQ(run_cli("eval --run " + run()).code, 0);
  EXPECT_EQ(run_cli("train --resume " + run() + " --set train.epochs=1").code, 0);
}

TEST_F(Hostile, AMidEpochCheckpointRefusesAnotherBatchSizeOrSeed) {
  auto r = run_cli("train --config " + config() + " --out " + path("mid") + " --max-steps 20");
  ASSERT_EQ(r.code, 0) << r.output;
  const auto before = snapshot(path("mid"));
  expect_bad(run_cli("train --resume " + path("mid") + " --set train.batch_size=30"),
             {"train.batch_size = 60", "now has 30", "skip some samples"});
  expect_bad(run_cli("train --resume " + path("mid") + " --set train.seed=7"),
             {"train.seed = 0", "now has 7"});
  expect_bad(run_cli("train --resume " + path("mid") + " --set data.val_fraction=0.2"),
             {"the training-set sizes"});
  // The same groups in another order (vec16 and vec40 trade places, data and all).
  const std::string config_toml = path("mid") + "/config.toml";
  const std::string text = read_text(config_toml);
  std::string swapped = std::regex_replace(text, std::regex("vec16"), "VEC");
  swapped = std::regex_replace(swapped, std::regex("vec40"), "vec16");
  write_bytes(config_toml, std::regex_replace(swapped, std::regex("VEC"), "vec40"));
  expect_bad(run_cli("train --resume " + path("mid")),
             {"the group order = img8, vec16, vec40", "now has img8, vec40, vec16"});
  write_bytes(config_toml, text);
  EXPECT_EQ(snapshot(path("mid")), before);
  // Evaluating it needs no sampler: any batch size will do, even one whose epoch is shorter
  // than the step the checkpoint stands at.
  r = run_cli("eval --run " + path("mid") + " --set train.batch_size=300");
  EXPECT_EQ(r.code, 0) << r.output;
  // At an epoch boundary they may change: the next epoch's order is drawn afresh.
  r = run_cli("train --resume " + run() + " --set train.epochs=2 --set train.batch_size=30");
  EXPECT_EQ(r.code, 0) << r.output;
}

TEST_F(Hostile, TrainAndPrepareNeverReplaceEachOthersFolders) {
  const std::string data = (root_ / "data").string();
  const auto data_before = snapshot(data);
  for (const char* extra : {"", " --overwrite"})
    expect_bad(run_cli("train --config " + config() + " --out " + data + extra),
               {"holds prepared data", "config.toml"});
  EXPECT_EQ(snapshot(data), data_before);
  const auto run_before = snapshot(run());
  expect_bad(run_cli("prepare synthetic --out " + run()), {"holds a hetdro run"});
  EXPECT_EQ(snapshot(run()), run_before);
  // A folder with some of a run's files (no metrics.jsonl) is a run folder too.
  fs::create_directories(path("part"));
  fs::copy(ckpt(), path("part/checkpoint.safetensors"));
  fs::copy(ckpt(), path("part/best.safetensors"));
  expect_bad(run_cli("train --config " + config() + " --out " + path("part")),
             {"already holds a run", "checkpoint.safetensors"});
  // --overwrite removes all of them, the old best.safetensors included.
  auto r = run_cli("train --config " + config() + " --out " + path("part") +
                   " --overwrite --set train.epochs=1");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_FALSE(fs::exists(path("part/best.safetensors")));
  // A config.toml that no run wrote is not replaced, --overwrite or not.
  fs::create_directories(path("cfg"));
  write_bytes(path("cfg/config.toml"), "# mine\n");
  for (const char* extra : {"", " --overwrite"})
    expect_bad(run_cli("train --config " + config() + " --out " + path("cfg") + extra),
               {"config.toml that no run wrote"});
  EXPECT_EQ(read_text(path("cfg/config.toml")), "# mine\n");
  write_bytes(path("cfg/config.toml"), "# mine\n");
  expect_bad(run_cli("prepare synthetic --out " + path("cfg")), {"no prepared data"});
  // prepare may replace its own earlier output.
  EXPECT_EQ(run_cli("prepare synthetic --out " + path("again")).code, 0);
  EXPECT_EQ(run_cli("prepare synthetic --out " + path("again")).code, 0);
}

// --- metrics.jsonl -------------------------------------------------------------------------

TEST_F(Hostile, ATornLastMetricsLineIsDroppedWithAWarningAndTheRunGoesOn) {
  const std::string metrics = run() + "/metrics.jsonl";
  const std::string whole = read_text(metrics);
  write_bytes(metrics, whole + "{\"epoch\":2,\"lo");  // a full disk in the middle of an append
  const auto r = run_cli("train --resume " + run() + " --set train.epochs=2");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "the last line is torn")) << r.output;
  std::istringstream lines(read_text(metrics));
  int n = 0;
  for (std::string line; std::getline(lines, line); ++n)
    EXPECT_EQ(nlohmann::json::parse(line)["epoch"], n + 1) << line;
  EXPECT_EQ(n, 2);
}

// --- what a checkpoint load validates ------------------------------------------------------

TEST_F(Hostile, AdamMomentsMustBeFiniteNonNegativeAndWhole) {
  edit_checkpoint(ckpt(), [](SafetensorsFile& f) {
    tensor(f, "optim.exp_avg_sq.classifier.weight")->data[0] = -1.0f;
  });
  for (const std::string& cmd : {"eval --run " + run(), "train --resume " + run()})
    expect_bad(run_cli(cmd), {"optim.exp_avg_sq.classifier.weight", "never negative"});

  fs::copy(root_ / "run/checkpoint.safetensors", ckpt(), fs::copy_options::overwrite_existing);
  edit_checkpoint(ckpt(), [](SafetensorsFile& f) {
    f.tensors.erase(std::find_if(f.tensors.begin(), f.tensors.end(), [](auto& t) {
      return t.name.rfind("optim.exp_avg.", 0) == 0;  // the first moment tensor
    }));
  });
  expect_bad(run_cli("train --resume " + run()), {"optim.exp_avg.", "is missing", "whole"});

  // Without any moments (a model exported for inference) it loads, with zero moments.
  fs::copy(root_ / "run/checkpoint.safetensors", ckpt(), fs::copy_options::overwrite_existing);
  edit_checkpoint(ckpt(), [](SafetensorsFile& f) {
    f.tensors.erase(std::remove_if(f.tensors.begin(), f.tensors.end(),
                                   [](auto& t) { return t.name.rfind("optim.", 0) == 0; }),
                    f.tensors.end());
  });
  EXPECT_EQ(run_cli("eval --run " + run()).code, 0);
}

TEST_F(Hostile, GroupDroWeightsMustBeADistributionAndFollowTheirGroupNames) {
  // The exact text and the float32 tensor changed alike, so that the rule on q is what fires.
  const std::vector<std::pair<std::vector<double>, std::string>> cases = {
      {{0, 0, 0}, "sum to 0"}, {{0.5, 0.5, 0.5}, "sum to 1.5"}, {{-0.5, 1, 0.5}, "-0.5"}};
  for (const auto& [q, words] : cases) {
    fs::copy(root_ / "run/checkpoint.safetensors", ckpt(), fs::copy_options::overwrite_existing);
    const std::vector<double> weights = q;
    edit_checkpoint(ckpt(), [&](SafetensorsFile& f) {
      f.metadata["groupdro_q"] = fmt::format("{}", fmt::join(weights, ","));
      tensor(f, "groupdro.q")->data.assign(weights.begin(), weights.end());
    });
    expect_bad(run_cli("train --resume " + run() + " --set train.epochs=2"), {"groupdro.q", words});
  }
  // The text and the tensor disagree: one of them was altered.
  fs::copy(root_ / "run/checkpoint.safetensors", ckpt(), fs::copy_options::overwrite_existing);
  edit_checkpoint(ckpt(), [](SafetensorsFile& f) { tensor(f, "groupdro.q")->data[0] += 0.25f; });
  expect_bad(run_cli("eval --run " + run()), {"'groupdro_q'", "altered or damaged"});
}

TEST(CheckpointLoad, GroupDroWeightsAreRestoredByGroupName) {
  const Config c = testing::tiny_config(2, Fit::pooled, Objective::groupdro);
  Model model(c, {{1, 6, 6}, {5}});
  TrainState s;
  s.params.assign(model.size(), 0.5f);
  s.adam_m.assign(model.size(), 0.0f);
  s.adam_v.assign(model.size(), 0.0f);
  s.q = {0.25, 0.75};
  s.groups = {"img", "vec"};
  const std::string path = (fs::path(::testing::TempDir()) / "hetdro_q_names.safetensors").string();
  save_checkpoint(path, model, s);
  EXPECT_EQ(load_checkpoint(path, model, {"img", "vec"}).q, (std::vector<double>{0.25, 0.75}));
  EXPECT_EQ(load_checkpoint(path, model, {"vec", "img"}).q, (std::vector<double>{0.75, 0.25}));
  try {
    load_checkpoint(path, model, {"img", "other"});
    FAIL() << "a checkpoint of other groups loaded";
  } catch (const InputError& e) {
    EXPECT_TRUE(contains(e.what(), "written for the groups")) << e.what();
  }
}

TEST(CheckpointSave, ANonFiniteStateIsNeverWrittenAndTheFileKeepsTheLastGoodOne) {
  const Config c = testing::tiny_config(2, Fit::pooled, Objective::erm);
  Model model(c, {{1, 6, 6}, {5}});
  TrainState s;
  s.params.assign(model.size(), 0.5f);
  s.adam_m.assign(model.size(), 0.0f);
  s.adam_v.assign(model.size(), 0.0f);
  s.q = {0.5, 0.5};
  const std::string path =
      (fs::path(::testing::TempDir()) / "hetdro_nan_save.safetensors").string();
  save_checkpoint(path, model, s);
  const std::string good = read_bytes(path);
  TrainState nan = s;
  nan.params[3] = std::nanf("");
  EXPECT_THROW(save_checkpoint(path, model, nan), std::runtime_error);
  TrainState negative = s;
  negative.adam_v[0] = -1.0f;
  EXPECT_THROW(save_checkpoint(path, model, negative), std::runtime_error);
  EXPECT_EQ(read_bytes(path), good);
}

TEST_F(Hostile, AbsurdMetadataIsRefusedNamingTheField) {
  // Each case: the fields set, and the field the message must name. The run stands at epoch 1,
  // step 25.
  using Fields = std::map<std::string, std::string>;
  const std::vector<std::pair<Fields, std::string>> cases = {
      {{{"epoch", "2147483648"}}, "epoch"},
      {{{"epoch", "26"}}, "epoch"},
      {{{"step", "99999999999999999"}}, "step"},
      {{{"epoch", "-1"}}, "epoch"},
      {{{"step_in_epoch", "30"}}, "step_in_epoch"},
      {{{"best_epoch", "2"}, {"best_score", "0.5"}}, "best_epoch"},
      {{{"best_epoch", "1"}, {"best_score", "7"}}, "best_score"},
      {{{"batch_size", "0x10"}}, "batch_size"},
      {{{"seed", "-3"}}, "seed"},
      {{{"groups", "[1,2]"}}, "groups"},
      {{{"train_sizes", "[-1, 2, 3]"}}, "train_sizes"}};
  for (const auto& [fields, key] : cases) {
    fs::copy(root_ / "run/checkpoint.safetensors", ckpt(), fs::copy_options::overwrite_existing);
    const Fields set = fields;
    edit_checkpoint(ckpt(), [&](SafetensorsFile& f) {
      for (const auto& [k, v] : set) f.metadata[k] = v;
    });
    expect_bad(run_cli("train --resume " + run() + " --set train.epochs=2"), {"'" + key + "'"});
  }
  // The bounds themselves are allowed: best_epoch = epoch, best_score = 1.
  fs::copy(root_ / "run/checkpoint.safetensors", ckpt(), fs::copy_options::overwrite_existing);
  edit_checkpoint(ckpt(), [](SafetensorsFile& f) {
    f.metadata["best_epoch"] = "1";
    f.metadata["best_score"] = "1";
  });
  EXPECT_EQ(run_cli("eval --run " + run()).code, 0);
}

TEST_F(Hostile, ABitFlipInACheckpointIsDetected) {
  std::string bytes = read_bytes(ckpt());
  bytes[bytes.size() - 7] ^= 0x10;  // inside the last tensor's payload
  write_bytes(ckpt(), bytes);
  expect_bad(run_cli("eval --run " + run()), {"does not match its checksum", "damaged"});
}

// --- inputs that are not regular files -----------------------------------------------------

TEST_F(Hostile, AFifoWhereAnInputShouldBeIsRefusedAtOnce) {
  ASSERT_EQ(mkfifo(path("fifo").c_str(), 0644), 0);
  // Nothing writes to the FIFO: a reader that opened it would block forever.
  expect_bad(run_cli("eval --config " + config() + " --checkpoint " + path("fifo")),
             {"a FIFO, not a regular file"});
  expect_bad(run_cli("eval --config " + path("fifo") + " --checkpoint " + ckpt()),
             {"a FIFO, not a regular file"});
  fs::remove(ckpt());
  ASSERT_EQ(mkfifo(ckpt().c_str(), 0644), 0);
  expect_bad(run_cli("train --resume " + run()), {"a FIFO, not a regular file"});
}

// --- standard output -----------------------------------------------------------------------

TEST_F(Hostile, AFailedWriteToStandardOutputIsAFailure) {
  for (const std::string& cmd : {"eval --run " + run(), "eval --json --run " + run(),
                                 std::string("info"), std::string("--help")}) {
    // Standard output to a full device; standard error still reaches the test.
    const auto r =
        testing::run_shell("{ " + std::string(HETDRO_BIN) + " " + cmd + " >/dev/full; }");
    EXPECT_EQ(r.code, 1) << cmd << "\n" << r.output;
    EXPECT_TRUE(contains(r.output, "writing standard output")) << r.output;
  }
}

// --- group names ---------------------------------------------------------------------------

TEST_F(Hostile, GroupNamesAreSafeAndLatentsKeepUtf8Names) {
  std::string text = read_text(config());
  const std::string data_dir = (root_ / "data").string() + "/";
  text = std::regex_replace(text, std::regex("\"(\\w+_(train|test)_[xy]\\.npy)\""),
                            "\"" + data_dir + "$1\"");
  write_bytes(path("evil.toml"),
              std::regex_replace(text, std::regex("name = \"vec40\""), "name = \"../../evil/x\""));
  expect_bad(run_cli("train --config " + path("evil.toml") + " --out " + path("e")),
             {"name", "'../../evil/x'", "letters"});
  write_bytes(path("nbsp.toml"),
              std::regex_replace(text, std::regex("name = \"vec40\""), "name = \"vec\u00a040\""));
  expect_bad(run_cli("train --config " + path("nbsp.toml") + " --out " + path("e")), {"name"});
  EXPECT_FALSE(fs::exists(path("e")));
  write_bytes(path("utf8.toml"),
              std::regex_replace(text, std::regex("name = \"vec40\""), "name = \"größe\""));
  const auto r = run_cli("train --config " + path("utf8.toml") + " --out " + path("u") +
                         " --set train.epochs=1");
  ASSERT_EQ(r.code, 0) << r.output;
  // Every zip entry says its name is UTF-8 (general-purpose flag bit 11), and the name is there.
  const std::string npz = read_bytes(path("u/latents.npz"));
  int entries = 0;
  for (size_t at = 0; (at = npz.find("PK\x03\x04", at)) != std::string::npos; at += 4, ++entries)
    EXPECT_TRUE(npz[at + 7] & 0x08) << "entry " << entries << " lacks the UTF-8 flag";
  EXPECT_GT(entries, 0);
  EXPECT_TRUE(contains(npz, "z.größe.npy"));
}

// --- messages ------------------------------------------------------------------------------

TEST_F(Hostile, MessagesNameWhatTheUserGave) {
  auto r = run_cli("predict --run " + run() + " --group vec16 --input - --out " + path("p.csv") +
                   " < " + config());
  expect_bad(r, {"standard input"});
  EXPECT_FALSE(contains(r.output, "hetdro_stdin_")) << r.output;
  expect_bad(
      run_cli("train --config " + config() + " --out " + path("o") + " --set data.groups.1=5"),
      {"data.groups is a list of tables", "--set data.groups.1.name="});
  expect_bad(run_cli("train --config " + config() + " --out " + path("o") +
                     " --set data.groups.-1.name=x"),
             {"'-1' should be an index into data.groups, which has 3 entries"});
  expect_bad(run_cli("train --config " + config() + " --out " + path("o") +
                     " --set data.groups.1.hidden.0=5"),
             {"data.groups.1.hidden is a list of values", "--set data.groups.1.hidden=[...]"});
  r = run_cli("train --config " + config() + " --out " + path("o") +
              " --set data.groups.-1.name=x");
  EXPECT_FALSE(contains(r.output, "18446744073709551615")) << r.output;
}

// --- exit codes ----------------------------------------------------------------------------

TEST_F(Hostile, ARunFolderDeletedMidRunIsAnEnvironmentFailure) {
  // The run checkpoints every step; once its first checkpoint is there, the folder goes.
  const std::string out = path("doomed");
  const std::string checkpoint = out + "/checkpoint.safetensors";
  const auto r = testing::run_shell(
      "{ " + std::string(HETDRO_BIN) + " train --config " + config() + " --out " + out +
      " --set train.epochs=1000 --set train.checkpoint_every=1 & pid=$!; n=0; "
      "while [ ! -e " +
      checkpoint +
      " ] && [ $n -lt 6000 ]; do sleep 0.01; n=$((n+1)); done; "
      "while [ -d " +
      out + " ]; do rm -rf " + out +
      " 2>/dev/null; done; "
      "wait $pid; echo \"exit code $?\"; }");
  EXPECT_TRUE(contains(r.output, "exit code 1")) << r.output;
  EXPECT_TRUE(contains(r.output, "hetdro failed")) << r.output;
  EXPECT_TRUE(contains(r.output, "Once the folder can be written, continue with")) << r.output;
  EXPECT_FALSE(contains(r.output, "train.lr")) << "an environment failure blamed on the numbers";
}

}  // namespace
}  // namespace hetdro

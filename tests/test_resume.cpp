// Losing nothing (docs/DESIGN.md §4): checkpoints every epoch and every N steps, exact resume
// (also after SIGKILL), SIGINT/SIGTERM, one run per folder, --overwrite, config values bounded
// before anything is allocated, and failures that keep the last good checkpoint.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "cli.h"
#include "hetdro/checkpoint.h"
#include "hetdro/config.h"
#include "hetdro/data.h"
#include "hetdro/io.h"
#include "hetdro/prepare.h"
#include "hetdro/trainer.h"

extern char** environ;

namespace hetdro {
namespace {

namespace fs = std::filesystem;
using testing::read_text;
using testing::run_cli;

// Every tensor of a checkpoint (parameters, Adam moments, GroupDRO weights), in file order.
std::vector<std::vector<float>> tensors(const std::string& run_dir) {
  std::vector<std::vector<float>> out;
  for (const NamedTensor& t : read_safetensors(run_dir + "/checkpoint.safetensors").tensors)
    out.push_back(t.data);
  return out;
}

std::vector<nlohmann::json> metrics(const std::string& run_dir) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(read_text(run_dir + "/metrics.jsonl"));
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

// Starts `hetdro args...` in the background with its output in `log`.
pid_t spawn(const std::vector<std::string>& args, const std::string& log) {
  std::vector<std::string> argv = {HETDRO_BIN};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> raw;
  for (auto& a : argv) raw.push_back(a.data());
  raw.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = -1;
  EXPECT_EQ(posix_spawn(&pid, raw[0], &actions, nullptr, raw.data(), environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

// Waits (up to a minute) until `path` exists: the run is past its start-up.
void wait_for(const std::string& path) {
  for (int i = 0; i < 6000 && !fs::exists(path); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(fs::exists(path)) << path;
}

int wait_exit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

class Resume : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // The trainers these tests start must not spin-wait for cores another process holds
    // (libgomp's default): on a busy machine that makes each step many times slower.
    setenv("OMP_WAIT_POLICY", "passive", 0);
    data_ = fs::path(::testing::TempDir()) / ("hetdro_resume_" + std::to_string(getpid()));
    fs::remove_all(data_);
    prepare_synthetic(data_.string());
  }
  static void TearDownTestSuite() { fs::remove_all(data_); }
  void SetUp() override {
    dir_ = data_ / ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::create_directories(dir_);
  }
  std::string config() const { return (data_ / "config.toml").string(); }
  std::string out(const std::string& name) const { return (dir_ / name).string(); }
  // `hetdro train --config <synthetic> --out <dir_/name> <args>`; expects exit 0.
  void train(const std::string& name, const std::string& args) {
    const auto r = run_cli("train --config " + config() + " --out " + out(name) + " " + args);
    ASSERT_EQ(r.code, 0) << r.output;
  }
  void resume(const std::string& name, const std::string& args) {
    const auto r = run_cli("train --resume " + out(name) + " " + args);
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("resuming"), std::string::npos) << r.output;
  }

  static fs::path data_;
  fs::path dir_;
};
fs::path Resume::data_;

TEST_F(Resume, OneEpochThenResumeThenOneMoreEqualsTwoEpochsBitForBit) {
  train("whole", "--set train.epochs=2 --set train.objective=groupdro");
  train("split", "--set train.epochs=1 --set train.objective=groupdro");
  resume("split", "--set train.epochs=2");
  EXPECT_EQ(tensors(out("split")), tensors(out("whole")));
  const auto a = metrics(out("whole")), b = metrics(out("split"));
  ASSERT_EQ(b.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(b[i]["epoch"], a[i]["epoch"]);
    EXPECT_EQ(b[i]["loss"], a[i]["loss"]);
    EXPECT_EQ(b[i]["group_weights"], a[i]["group_weights"]);
  }
}

TEST_F(Resume, FromAMidEpochCheckpointEqualsAnUnbrokenRun) {
  // 25 steps an epoch (img8 keeps 900 of its 1000 samples, 33 a batch; vec40 180, 7 a batch):
  // --max-steps 40 stops at step 15 of epoch 2, and checkpoints there.
  train("whole", "--set train.epochs=2 --set train.fit=per_group");
  train("split", "--set train.epochs=2 --set train.fit=per_group --max-steps 40");
  const SafetensorsFile mid = read_safetensors(out("split") + "/checkpoint.safetensors");
  EXPECT_EQ(mid.metadata.at("step"), "40");
  EXPECT_EQ(mid.metadata.at("step_in_epoch"), "15");
  ASSERT_EQ(metrics(out("split")).size(), 2u);  // epoch 1, and epoch 2 marked partial
  EXPECT_TRUE(metrics(out("split"))[1].contains("partial_epoch_steps"));
  resume("split", "");
  EXPECT_EQ(tensors(out("split")), tensors(out("whole")));
  const auto a = metrics(out("whole")), b = metrics(out("split"));
  ASSERT_EQ(b.size(), 2u);
  EXPECT_FALSE(b[1].contains("partial_epoch_steps"));
  // The resumed epoch reports all of its 25 steps, as the unbroken run does.
  EXPECT_DOUBLE_EQ(b[1]["loss"].get<double>(), a[1]["loss"].get<double>());
}

// The same under resampled shares (train.group_batch = "sqrt": 27, 21 and 12 of a batch of 60,
// 33 steps an epoch, the smaller groups drawn again): --max-steps 40 stops at step 7 of epoch 2.
// A resume that would change the shares mid-epoch is refused.
TEST_F(Resume, FromAMidEpochCheckpointUnderResampledSharesEqualsAnUnbrokenRun) {
  train("whole", "--set train.epochs=2 --set train.group_batch=sqrt");
  train("split", "--set train.epochs=2 --set train.group_batch=sqrt --max-steps 40");
  const SafetensorsFile mid = read_safetensors(out("split") + "/checkpoint.safetensors");
  EXPECT_EQ(mid.metadata.at("step_in_epoch"), "7");
  EXPECT_EQ(mid.metadata.at("sampler"), "27, 21, 12 per batch, drawn again");
  const auto r = run_cli("train --resume " + out("split") + " --set train.group_batch=equal");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("taken with the batch shares (train.group_batch, "
                          "data.groups[].batch_share) = \"27, 21, 12 per batch, drawn again\", "
                          "but the config now has 20, 20, 20 per batch, drawn again"),
            std::string::npos)
      << r.output;
  resume("split", "");
  EXPECT_EQ(tensors(out("split")), tensors(out("whole")));
  const auto a = metrics(out("whole")), b = metrics(out("split"));
  ASSERT_EQ(b.size(), 2u);
  EXPECT_DOUBLE_EQ(b[1]["loss"].get<double>(), a[1]["loss"].get<double>());
}

// A mid-epoch checkpoint written before the sampler was stored (no "sampler" in __metadata__)
// was taken under proportional shares: resuming it under resampled ones is refused.
TEST_F(Resume, AnOldMidEpochCheckpointRefusesResampledShares) {
  train("run", "--set train.epochs=2 --max-steps 40");
  const std::string path = out("run") + "/checkpoint.safetensors";
  SafetensorsFile file = read_safetensors(path);
  ASSERT_EQ(file.metadata.erase("sampler"), 1u);
  write_safetensors(path, file.tensors, file.metadata);
  const auto r = run_cli("train --resume " + out("run") + " --set train.group_batch=sqrt");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("\"proportional (a checkpoint from before train.group_batch)\", but "
                          "the config now has 27, 21, 12 per batch, drawn again"),
            std::string::npos)
      << r.output;
  resume("run", "");  // under the shares it was taken with, it continues
}

// Under resampling an epoch is one pass over the largest group: a share of a batch larger than
// that group is refused before training, naming the group.
TEST_F(Resume, AShareTheLargestGroupCannotFillIsRefused) {
  const auto r = run_cli("train --config " + config() + " --out " + out("run") +
                         " --set train.batch_size=1100 --set data.groups.0.batch_share=0.9");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("group 'img8', the largest, has 900 training samples, fewer than the 990 "
                          "that every batch of train.batch_size = 1100 takes from it"),
            std::string::npos)
      << r.output;
  EXPECT_FALSE(fs::exists(out("run")));
  // A share so small that one pass over img8 (900 steps of 1 sample) holds 900 batches of 10^6:
  // 9·10^8 indices, refused before they are allocated.
  const auto big = run_cli("train --config " + config() + " --out " + out("big") +
                           " --set train.batch_size=1000000 --set data.groups.0.batch_share=1e-6");
  EXPECT_EQ(big.code, 2) << big.output;
  EXPECT_NE(big.output.find("an epoch of 900 steps (one pass over the largest group, 'img8', 1 of "
                            "it per batch) of train.batch_size = 1000000 needs an order of "
                            "900000000 sample indices (6.7 GiB)"),
            std::string::npos)
      << big.output;
  EXPECT_FALSE(fs::exists(out("big")));
}

// A run killed with SIGKILL at a random moment resumes from its last checkpoint and ends with
// the parameters of a run that was never interrupted.
TEST_F(Resume, AfterSigkillAtARandomStepTheResumedRunEndsLikeAnUnbrokenOne) {
  const std::string options = "--set train.epochs=60 --set train.checkpoint_every=3";
  train("unbroken", options);
  std::random_device seed;
  const int delay_ms = std::uniform_int_distribution<int>(0, 400)(seed);
  std::vector<std::string> args = {"train",           "--config",    config(),
                                   "--out",           out("killed"), "--set",
                                   "train.epochs=60", "--set",       "train.checkpoint_every=3"};
  const pid_t pid = spawn(args, out("killed.log"));
  wait_for(out("killed") + "/checkpoint.safetensors");
  std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  kill(pid, SIGKILL);
  ASSERT_EQ(wait_exit(pid), 128 + SIGKILL)
      << "the run ended before the kill, " << delay_ms << " ms after its first checkpoint";
  const int64_t step =
      std::stoll(read_safetensors(out("killed") + "/checkpoint.safetensors").metadata.at("step"));
  EXPECT_GT(step, 0);
  EXPECT_LT(step, 60 * 25) << "killed " << delay_ms << " ms after its first checkpoint";
  resume("killed", "");
  EXPECT_EQ(tensors(out("killed")), tensors(out("unbroken")))
      << "killed " << delay_ms << " ms, at step " << step;
}

TEST_F(Resume, SigintAndSigtermFinishTheStepCheckpointAndSayHowToResume) {
  train("unbroken", "--set train.epochs=60");
  for (int sig : {SIGINT, SIGTERM}) {
    const std::string name = sig == SIGINT ? "int" : "term";
    const pid_t pid =
        spawn({"train", "--config", config(), "--out", out(name), "--set", "train.epochs=60"},
              out(name + ".log"));
    wait_for(out(name) + "/checkpoint.safetensors");  // past start-up: the handlers are in place
    kill(pid, sig);
    EXPECT_EQ(wait_exit(pid), 128 + sig) << read_text(out(name + ".log"));
    const std::string log = read_text(out(name + ".log"));
    EXPECT_NE(log.find("Resume with: hetdro train --resume " + out(name)), std::string::npos)
        << log;
    resume(name, "");
    EXPECT_EQ(tensors(out(name)), tensors(out("unbroken"))) << name;
  }
}

// With one step an epoch every signal lands on an epoch's last step: the epoch is finished,
// recorded and checkpointed whole before the run stops, and the run resumes from there.
TEST_F(Resume, ASignalOnTheLastStepOfAnEpochFinishesThatEpoch) {
  const pid_t pid = spawn({"train", "--config", config(), "--out", out("run"), "--set",
                           "train.epochs=100000", "--set", "train.batch_size=1620"},
                          out("run.log"));
  wait_for(out("run") + "/checkpoint.safetensors");
  kill(pid, SIGINT);
  ASSERT_EQ(wait_exit(pid), 130) << read_text(out("run.log"));
  EXPECT_NE(read_text(out("run.log")).find("at the end of epoch"), std::string::npos)
      << read_text(out("run.log"));
  const SafetensorsFile ckpt = read_safetensors(out("run") + "/checkpoint.safetensors");
  EXPECT_EQ(ckpt.metadata.count("step_in_epoch"), 0u);
  const int epochs = std::stoi(ckpt.metadata.at("epoch"));
  EXPECT_EQ(ckpt.metadata.at("step"), std::to_string(epochs));
  EXPECT_EQ(int(metrics(out("run")).size()), epochs);
  resume("run", "--set train.epochs=" + std::to_string(epochs + 2));
  EXPECT_EQ(int(metrics(out("run")).size()), epochs + 2);
}

// A GroupDRO run driven to blow up (η and lr at their bounds) fails with its last good
// checkpoint loadable: q is committed only after a step's check, and its exp update is
// computed shifted, so it never turns NaN. The advised --resume with saner values finishes.
TEST_F(Resume, AGroupDroBlowUpKeepsALoadableCheckpointAndResumesAfterAFix) {
  for (const char* objective : {"weighted", "max"}) {
    const std::string name = std::string("run_") + objective;
    const auto r = run_cli("train --config " + config() + " --out " + out(name) +
                           " --set train.objective=groupdro --set train.groupdro_eta=100 "
                           "--set train.lr=1 --set train.groupdro.objective=" +
                           objective);
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_NE(r.output.find("train.groupdro_eta = 100 is large"), std::string::npos) << r.output;
    const SafetensorsFile ckpt = read_safetensors(out(name) + "/checkpoint.safetensors");
    EXPECT_EQ(ckpt.metadata.at("groupdro_q").find("nan"), std::string::npos)
        << ckpt.metadata.at("groupdro_q");
    EXPECT_EQ(run_cli("eval --run " + out(name)).code, 0);
    resume(name, "--set train.lr=1e-3 --set train.groupdro_eta=0.01");
  }
}

// --max-steps counts steps across epochs: 25 steps are one epoch of the synthetic data, and the
// run stops there even though train.epochs asks for 3.
TEST_F(Resume, MaxStepsHoldsAcrossEpochBoundaries) {
  train("run", "--set train.epochs=3 --max-steps 25");
  EXPECT_EQ(nlohmann::json::parse(read_text(out("run") + "/report.json"))["steps"], 25);
  EXPECT_EQ(metrics(out("run")).size(), 1u);
}

// A resume's --set reaches the run folder's config.toml, so the next resume and eval see it.
TEST_F(Resume, ResumeWritesTheConfigItRunsWith) {
  train("run", "--set train.epochs=1");
  resume("run", "--set train.epochs=2 --set train.lr=0.002");
  const Config c = load_config(out("run") + "/config.toml");
  EXPECT_EQ(c.train.epochs, 2);
  EXPECT_EQ(c.train.lr, 0.002);
}

TEST_F(Resume, TwoRunsCannotWriteOneFolder) {
  fs::create_directories(out("busy"));
  const int fd = ::open((out("busy") + "/.lock").c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);  // as a run in progress holds it
  const auto r = run_cli("train --config " + config() + " --out " + out("busy"));
  ::close(fd);
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("another hetdro run is writing this folder"), std::string::npos)
      << r.output;
  EXPECT_FALSE(fs::exists(out("busy") + "/metrics.jsonl"));
}

TEST_F(Resume, OverwriteRemovesTheOldRunsFilesFirst) {
  train("run", "--set train.epochs=1");
  ASSERT_EQ(metrics(out("run")).size(), 1u);
  train("run", "--overwrite --set train.epochs=0");
  EXPECT_TRUE(metrics(out("run")).empty());
  EXPECT_EQ(read_safetensors(out("run") + "/checkpoint.safetensors").metadata.at("step"), "0");
  EXPECT_EQ(nlohmann::json::parse(read_text(out("run") + "/report.json"))["steps"], 0);
}

TEST_F(Resume, ResumeNeedsARunFolderAndTheRunsOwnConfig) {
  fs::create_directories(out("empty"));
  auto r = run_cli("train --resume " + out("empty"));
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("holds no config.toml"), std::string::npos) << r.output;
  r = run_cli("train --resume " + out("empty") + " --config " + config());
  EXPECT_EQ(r.code, 2) << r.output;
  r = run_cli("train --config " + config() + " --out " + out("x") + " --max-steps -5");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_FALSE(fs::exists(out("x")));
}

// Absurd sizes and rates are errors that name their key, before anything is allocated.
class Bounds : public Resume, public ::testing::WithParamInterface<const char*> {};

TEST_P(Bounds, AnAbsurdValueIsAnErrorNamingItsKey) {
  const std::string set = GetParam();
  std::string key = set.substr(0, set.find('='));  // as messages write it: data.groups[1].hidden
  if (key.rfind("data.groups.", 0) == 0)
    key = "data.groups[" + key.substr(12, 1) + "]" + key.substr(13);
  const auto start = std::chrono::steady_clock::now();
  const auto r =
      run_cli("train --config " + config() + " --out " + out("run") + " --set '" + set + "'");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("key '" + key + "'"), std::string::npos) << r.output;
  EXPECT_LT(seconds, 5.0);
  EXPECT_FALSE(fs::exists(out("run")));
}

INSTANTIATE_TEST_SUITE_P(
    Keys, Bounds,
    ::testing::Values("model.latent_dim=1000000000", "data.groups.0.channels=[2000000000, 8]",
                      "data.groups.1.hidden=[2000000000]", "data.groups.0.kernel=1073741824",
                      "train.samples_per_anchor=1000000000", "data.classes=2000000000",
                      "model.classifier_hidden=2000000000", "train.batch_size=2000000000",
                      "train.epochs=2000000000", "train.lr=1e8", "model.anchor_scale=1e30",
                      "train.groupdro_eta=1e300", "train.eps=0", "train.lambda_fit=-1",
                      "train.eval_batch=2000000000", "train.checkpoint_every=-1"),
    [](const ::testing::TestParamInfo<const char*>& p) {
      std::string n = p.param;
      n = n.substr(0, n.find('='));
      for (char& c : n)
        if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
      return n + "_" + std::to_string(p.index);
    });

// Sizes each within bounds whose products would exhaust memory: errors that say which tensor or
// which buffer, and which keys to lower, before anything is allocated.
TEST_F(Resume, SizesWithinBoundsWhoseProductIsAbsurdAreNamedToo) {
  auto r = run_cli("train --config " + config() + " --out " + out("a") +
                   " --set data.classes=100000 --set model.latent_dim=4096");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("the largest tensor is anchors.chol [100000x4096x4096]"),
            std::string::npos)
      << r.output;
  r = run_cli("train --config " + config() + " --out " + out("b") +
              " --set 'data.groups.0.channels=[4096, 4096]' --set train.eval_batch=1000000");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("evaluation's workspace needs"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("lower train.eval_batch"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out("a")));
  EXPECT_FALSE(fs::exists(out("b")));
}

TEST_F(Resume, ARunThatBlowsUpKeepsTheLastGoodCheckpointAndSaysWhy) {
  // One feature of 1e30 in vec16: its class covariance overflows float on the first batch
  // that holds it.
  const fs::path data = dir_ / "data";
  fs::create_directories(data);
  for (const auto& entry : fs::directory_iterator(data_))
    if (entry.is_regular_file()) fs::copy(entry.path(), data / entry.path().filename());
  Array<float> x = read_npy_features((data / "vec16_train_x.npy").string());
  for (float& v : x.data) v = v == x.data[0] ? 1e30f : v;
  write_npy((data / "vec16_train_x.npy").string(), x.data.data(), x.shape);
  const auto r =
      run_cli("train --config " + (data / "config.toml").string() + " --out " + out("run"));
  EXPECT_EQ(r.code, 1) << r.output;
  const auto report = nlohmann::json::parse(read_text(out("run") + "/report.json"));
  EXPECT_EQ(report["status"], "failed");
  const std::string error = report["error"];
  EXPECT_NE(error.find("group 'vec16' has features as large as 1e+30"), std::string::npos) << error;
  EXPECT_NE(r.output.find("hetdro train --resume " + out("run")), std::string::npos) << r.output;
  // The checkpoint left behind is a good one.
  const auto e = run_cli("eval --run " + out("run"));
  EXPECT_EQ(e.code, 0) << e.output;
}

TEST_F(Resume, ACheckpointWithNonFiniteValuesOrTheWrongGroupWeightsIsBadInput) {
  train("run", "--set train.epochs=1");
  const std::string path = out("run") + "/checkpoint.safetensors";
  // Written back without the checksums (as by another writer), so that the values themselves
  // are what the load refuses; a damaged file with checksums is test_hostile.cpp's.
  SafetensorsFile file = read_safetensors(path);
  for (auto it = file.metadata.begin(); it != file.metadata.end();)
    it = it->first.rfind("crc32.", 0) == 0 ? file.metadata.erase(it) : std::next(it);
  for (NamedTensor& t : file.tensors)
    if (t.name == "classifier.bias") t.data[1] = std::nanf("");
  write_safetensors(path, file.tensors, file.metadata);
  auto r = run_cli("eval --run " + out("run"));
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("'classifier.bias' holds 1 non-finite value"), std::string::npos)
      << r.output;

  train("q", "--set train.epochs=1");
  file = read_safetensors(out("q") + "/checkpoint.safetensors");
  for (auto it = file.metadata.begin(); it != file.metadata.end();)
    it = it->first.rfind("crc32.", 0) == 0 ? file.metadata.erase(it) : std::next(it);
  for (NamedTensor& t : file.tensors)
    if (t.name == "groupdro.q") {
      t.data.pop_back();
      t.shape = {int64_t(t.data.size())};
    }
  write_safetensors(out("q") + "/checkpoint.safetensors", file.tensors, file.metadata);
  r = run_cli("eval --run " + out("q"));
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("'groupdro.q' has 2 weights, but the config has 3 groups"),
            std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace hetdro

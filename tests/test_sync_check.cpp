// The sync-check debug mode (`--sync-check`, HETDRO_SYNC_CHECK=1; docs/DESIGN.md §3), as far as
// it shows without a GPU: the variable's values, the arguments a failure lists, the failure's
// message naming the op, the step and the sizes (through a test backend that waits the way the
// CUDA backend does and reports a fault after a chosen op), recording turned off, and the CLI flag
// of train and bench-step.
#include <gtest/gtest.h>
#include <unistd.h>  // getpid

#include <cstdio>
#include <filesystem>
#include <memory>
#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli.h"  // run_cli
#include "guarded_backend.h"
#include "hetdro/backend.h"
#include "hetdro/check.h"  // InputError
#include "hetdro/sync_check.h"
#include "hetdro/trainer.h"
#include "synthetic.h"  // synthetic_config

namespace hetdro {
namespace {

using testing::synthetic_config;

TEST(SyncCheck, TheVariableIsOneOrZeroAndAnythingElseIsAnError) {
  EXPECT_FALSE(sync_check::requested(nullptr));
  EXPECT_FALSE(sync_check::requested(""));
  EXPECT_FALSE(sync_check::requested("0"));
  EXPECT_TRUE(sync_check::requested("1"));
  for (const char* bad : {"yes", "true", "2", " 1"}) {
    try {
      sync_check::requested(bad);
      FAIL() << bad << " was accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("HETDRO_SYNC_CHECK='" + std::string(bad) + "'"),
                std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find("expected 1"), std::string::npos) << e.what();
    }
  }
}

TEST(SyncCheck, ArgumentsGiveNumbersByValueAndPointersByTheirRoom) {
  std::vector<float> block(100), elsewhere(4);
  sync_check::Allocations a;
  a.add(block.data(), block.size() * sizeof(float));
  const float* inside = block.data() + 90;  // 10 floats before the block ends
  const int32_t* null = nullptr;
  const ClfRule rule;
  const std::string s = sync_check::Args("(out, in, labels, n, eps, rule, count)", a)(
      inside, elsewhere.data(), null, 7, 0.5f, rule, int64_t(1) << 40);
  EXPECT_EQ(s.find("out: 40 of 400 bytes, in: "), 0u) << s;
  EXPECT_NE(s.find("(not an allocation of this backend), labels: null, n = 7, eps = 0.5, "
                   "rule = {...}, count = 1099511627776"),
            std::string::npos)
      << s;
  a.remove(block.data());
  EXPECT_NE(sync_check::Args("(out)", a)(inside).find("not an allocation"), std::string::npos);
}

// The CPU backend with the CUDA backend's sync-check dispatch (kernels/cuda_backend.cu): in the
// mode every op goes through sync_check::run_op, whose wait reports `fault` after the
// `fault_at`-th call of op `fault_op`; `throw_inside` makes that call throw from inside the op
// instead, as a checked call in a kernel's launcher would.
class FaultyBackend final : public Backend<float> {
 public:
  using T = float;  // the element type ops.def's parameters name
  FaultyBackend(std::string fault_op, int fault_at, bool throw_inside = false)
      : fault_op_(std::move(fault_op)), fault_at_(fault_at), throw_inside_(throw_inside) {}
  std::string name() const override { return "faulty-cpu"; }
  size_t capacity() const override { return inner_->capacity(); }
  void release(void* p) override {
    allocations_.remove(p);
    inner_->release(p);
  }
  void upload(void* dst, const void* src, size_t bytes) override {
    inner_->upload(dst, src, bytes);
  }
  void download(void* dst, const void* src, size_t bytes) override {
    inner_->download(dst, src, bytes);
  }
  void zero(void* dst, size_t bytes) override { inner_->zero(dst, bytes); }

#define HETDRO_OP(name, params, args)                                                     \
  void name params override {                                                             \
    if (!sync_check()) return inner_->name args;                                          \
    const bool faults = #name == fault_op_ && ++calls_ == fault_at_;                      \
    sync_check::run_op<std::runtime_error>(                                               \
        #name, where(),                                                                   \
        [&] {                                                                             \
          if (faults && throw_inside_) throw std::runtime_error("a checked call failed"); \
          inner_->name args;                                                              \
        },                                                                                \
        [&] { return faults ? std::string("an illegal memory access") : std::string(); }, \
        [&] { return sync_check::Args(#args, allocations_) args; });                      \
  }
#include "hetdro/ops.def"
#undef HETDRO_OP

 protected:
  void* allocate_bytes(size_t bytes) override {
    void* p = inner_->allocate(bytes);
    allocations_.add(p, bytes);
    return p;
  }

 private:
  std::unique_ptr<Backend<float>> inner_ = make_cpu_backend<float>();
  sync_check::Allocations allocations_;
  std::string fault_op_;
  int fault_at_, calls_ = 0;
  bool throw_inside_;
};

// The message of a fault in the `fault_at`-th call of `op` during training with sync-check on;
// "" when the steps ran through.
std::string fault_message(const std::string& op, int fault_at, bool throw_inside, int steps) {
  const Config config = load_config(synthetic_config());
  auto backend = std::make_unique<FaultyBackend>(op, fault_at, throw_inside);
  backend->set_sync_check(true);
  Trainer t(config, load_groups(config), std::move(backend));
  t.start_epoch(0);
  try {
    for (int s = 0; s < steps; ++s) t.step();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(SyncCheck, AFaultNamesTheOpTheStepAndTheSizes) {
  // w2_gaussian_forward runs once a step: its third call is step 3's.
  const std::string m = fault_message("w2_gaussian_forward", 3, false, 5);
  EXPECT_EQ(m.find("sync-check: op w2_gaussian_forward failed at step 3 (batch 3 of "), 0u) << m;
  EXPECT_NE(m.find("in its epoch): an illegal memory access; its arguments: w2: "),
            std::string::npos)
      << m;
  // Every pointer by its room in the workspace, every size by value.
  EXPECT_TRUE(std::regex_search(m, std::regex(R"(saved: \d+ of \d+ bytes, m1: \d+ of \d+ bytes)")))
      << m;
  EXPECT_TRUE(std::regex_search(m, std::regex(R"(pairs = \d+, k = \d+, eps = 1e-05$)"))) << m;
  std::printf("%s\n", m.c_str());  // the message as a user sees it

  // An error thrown inside the op (a checked call) is named the same way.
  const std::string inside = fault_message("adam_update", 2, true, 5);
  EXPECT_EQ(inside.find("sync-check: op adam_update failed at step 2 (batch 2 of "), 0u) << inside;
  EXPECT_NE(inside.find("in its epoch): a checked call failed; its arguments: param: "),
            std::string::npos)
      << inside;
  EXPECT_TRUE(std::regex_search(inside, std::regex(R"(count = \d+, lr = 0.003, beta1 = 0.9, )")))
      << inside;

  // No fault, no error: the mode changes nothing else.
  EXPECT_EQ(fault_message("no_such_op", 1, false, 3), "");
}

TEST(SyncCheck, StepsAreIssuedOpByOpWithTheSameNumbers) {
  const Config config = load_config(synthetic_config());
  auto run = [&](bool sync_check, int steps) {
    auto be = std::make_unique<testing::GuardedBackend<float>>(testing::Records::on);
    auto* guarded = be.get();
    be->set_sync_check(sync_check);
    auto t = std::make_unique<Trainer>(config, load_groups(config), std::move(be));
    t->start_epoch(0);
    for (int s = 0; s < steps; ++s) t->step();
    return std::make_pair(std::move(t), guarded);
  };
  auto [checked, checked_backend] = run(true, 4);
  EXPECT_FALSE(checked->graph_active());
  EXPECT_EQ(checked_backend->recordings(), 0);
  EXPECT_EQ(checked->why_no_graph(), "sync-check: every op is waited for and checked");
  auto [replayed, replayed_backend] = run(false, 4);
  ASSERT_TRUE(replayed->graph_active()) << replayed->why_no_graph();
  EXPECT_EQ(checked->state().params, replayed->state().params);

  // Turned on after the step was recorded: the recording is dropped and the next steps are
  // issued op by op, each named.
  replayed->backend().set_sync_check(true);
  replayed->step();
  EXPECT_FALSE(replayed->graph_active());
  EXPECT_EQ(replayed->backend().where(), "after step 5");
  EXPECT_EQ(replayed_backend->recordings(), 1);
}

TEST(SyncCheck, TrainAndBenchStepTakeTheFlag) {
  namespace fs = std::filesystem;
  const fs::path out =
      fs::path(::testing::TempDir()) / ("hetdro_sync_check_" + std::to_string(getpid()));
  fs::remove_all(out);
  testing::CliResult r = testing::run_cli("train --config " + synthetic_config() + " --out " +
                                          out.string() + " --max-steps 2 --sync-check");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("step: issued op by op (sync-check: every op is waited for"),
            std::string::npos)
      << r.output;
  fs::remove_all(out);
  r = testing::run_cli("bench-step --config " + synthetic_config() +
                       " --steps 2 --warmup 1 --sync-check");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("op by op (sync-check: every op is waited for"), std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace hetdro

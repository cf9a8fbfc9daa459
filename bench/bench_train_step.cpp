// One training step's loss and gradient (loss_and_grad) at hetero-fashion's default shapes
// (B = 100 split 70/25/5 over full28 cnn 28x28, low16 cnn 16x16, proj64 mlp 64-d; k = 64,
// C = 10, J = 16), on random inputs, with each loss term switched on in turn so the cost of
// each shows. Adam over the flat buffer is timed apart.
#include <benchmark/benchmark.h>

#include <vector>

#include "../tests/testing.h"  // random_vector
#include "hetdro/loss.h"
#include "hetdro/ops.h"

namespace {

using namespace hetdro;

Config default_config() {
  Config c;
  c.classes = 10;
  GroupConfig full, low, proj;
  full.name = "full28";
  low.name = "low16";
  proj.name = "proj64";
  proj.encoder = "mlp";
  c.groups = {full, low, proj};
  return c;
}

void BM_loss_and_grad(benchmark::State& state) {
  Config c = default_config();
  c.train.fit = state.range(0) ? "pooled" : "none";
  c.train.samples_per_anchor = state.range(1) ? 16 : 0;
  Model model(c, {{1, 28, 28}, {1, 16, 16}, {64}});
  LossSettings s = LossSettings::from(c);
  std::vector<float> params(model.size()), grads(model.size());
  model.init(params.data(), 0);
  auto x0 = testing::random_vector<float>(70 * 784, 1, 0.0f, 1.0f);
  auto x1 = testing::random_vector<float>(25 * 256, 2, 0.0f, 1.0f);
  auto x2 = testing::random_vector<float>(5 * 64, 3);
  Batch<float> batch{{x0.data(), x1.data(), x2.data()}, {70, 25, 5}, {}, {}};
  for (int i = 0; i < 100; ++i) {
    batch.y.push_back(i % 10);
    batch.group.push_back(i < 70 ? 0 : i < 95 ? 1 : 2);
  }
  std::vector<double> q(3, 1.0 / 3);
  LossWorkspace<float> ws;
  for (auto _ : state) {
    std::fill(grads.begin(), grads.end(), 0.0f);
    LossTerms t = loss_and_grad(model, s, params.data(), grads.data(), batch, q, 0, ws);
    benchmark::DoNotOptimize(t.total);
  }
  state.SetItemsProcessed(state.iterations() * 100);
}
// Args: {fit pooled?, L_sep on?}
BENCHMARK(BM_loss_and_grad)
    ->Args({1, 1})
    ->Args({0, 1})
    ->Args({1, 0})
    ->Args({0, 0})
    ->ArgNames({"fit", "sep"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_adam(benchmark::State& state) {
  const int64_t n = 833866;  // the default model's parameter count
  auto p = testing::random_vector<float>(n, 1), g = testing::random_vector<float>(n, 2);
  std::vector<float> m(n, 0.0f), v(n, 0.0f);
  int64_t step = 0;
  for (auto _ : state)
    cpu::adam_update(p.data(), m.data(), v.data(), g.data(), n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f,
                     ++step);
  state.SetBytesProcessed(state.iterations() * n * 4 * sizeof(float));
}
BENCHMARK(BM_adam)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();

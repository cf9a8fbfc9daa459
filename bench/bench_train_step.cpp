// One training step's loss and gradient (Loss::run on the CPU backend) at hetero-fashion's
// default shapes (B = 100 split 70/25/5 over full28 cnn 28x28, low16 cnn 16x16, proj64 mlp 64-d;
// k = 64, C = 10, J = 16), on random inputs, with each loss term switched on in turn so the cost
// of each shows. Adam over the flat buffer is timed apart.
#include <benchmark/benchmark.h>

#include <vector>

#include "bench_inputs.h"  // uniform_inputs
#include "hetdro/backend.h"
#include "hetdro/loss.h"
#include "hetdro/ops.h"

namespace {

using namespace hetdro;
using hetdro::bench::uniform_inputs;

Config default_config() {
  Config c;
  c.classes = 10;
  GroupConfig full, low, proj;
  full.name = "full28";
  low.name = "low16";
  proj.name = "proj64";
  proj.encoder = Encoder::mlp;
  c.groups = {full, low, proj};
  return c;
}

void BM_loss(benchmark::State& state) {
  Config c = default_config();
  c.train.fit = state.range(0) ? Fit::pooled : Fit::none;
  c.train.samples_per_anchor = state.range(1) ? 16 : 0;
  Model model(c, {{1, 28, 28}, {1, 16, 16}, {64}});
  auto backend = make_cpu_backend<float>();
  Loss<float> loss(model, LossSettings::from(c), *backend, {70, 25, 5});
  std::vector<float> host_params(model.size());
  model.init(host_params.data(), 0);
  Buffer<float> params(*backend, model.size()), grads(*backend, model.size());
  Buffer<double> q(*backend, 3);
  params.upload(host_params);
  q.upload(std::vector<double>(3, 1.0 / 3));
  const int rows[3] = {70, 25, 5}, width[3] = {784, 256, 64};
  for (int g = 0; g < 3; ++g) {
    const auto x = uniform_inputs<float>(size_t(rows[g]) * width[g], g + 1, g < 2 ? 0.0f : -1.0f);
    backend->upload(loss.batch_x(g), x.data(), x.size() * sizeof(float));
  }
  std::vector<int32_t> y(100);
  for (int i = 0; i < 100; ++i) y[i] = i % 10;
  backend->upload(loss.batch_y(), y.data(), y.size() * sizeof(int32_t));
  for (auto _ : state) {
    grads.zero();
    loss.run(params.data(), grads.data(), q.data());
    benchmark::DoNotOptimize(grads.data());
  }
  state.SetItemsProcessed(state.iterations() * 100);
}
// Args: {fit pooled?, L_sep on?}
BENCHMARK(BM_loss)
    ->Args({1, 1})
    ->Args({0, 1})
    ->Args({1, 0})
    ->Args({0, 0})
    ->ArgNames({"fit", "sep"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_adam(benchmark::State& state) {
  const int64_t n = 833866;  // the default model's parameter count
  auto p = uniform_inputs<float>(n, 1), g = uniform_inputs<float>(n, 2);
  std::vector<float> m(n, 0.0f), v(n, 0.0f);
  int64_t step = 0;
  for (auto _ : state) {
    cpu::adam_update(p.data(), m.data(), v.data(), g.data(), n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f,
                     &step, nullptr);
    ++step;
  }
  state.SetBytesProcessed(state.iterations() * n * 4 * sizeof(float));
}
BENCHMARK(BM_adam)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();

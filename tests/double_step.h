// The first training step of a fresh run in double: the reference that the float steps of the CPU
// and the GPU are both measured against (tests/test_train_step_cuda.cpp).
#pragma once

#include <cstdint>
#include <vector>

#include "hetdro/backend.h"
#include "hetdro/config.h"
#include "hetdro/data.h"
#include "hetdro/loss.h"
#include "hetdro/trainer.h"

namespace hetdro::testing {

struct DoubleStep {
  LossTerms terms;
  std::vector<double> grad;
};

// The trainer's own first batch (epoch 0, batch 0) and its float32 initial parameters, through
// Loss<double> on the CPU backend: the exact value of the float step's inputs to within
// κ·γ_n(2⁻⁵³), κ the conditioning, far below the float steps' own errors.
inline DoubleStep double_first_step(const Config& config) {
  const std::vector<GroupData> groups = load_groups(config);
  Trainer trainer(config, groups);
  trainer.start_epoch(0);
  const StratifiedSampler& sampler = trainer.sampler();
  std::vector<int64_t> sizes;
  for (const GroupData& g : groups) sizes.push_back(g.train.size());
  auto be = make_cpu_backend<double>();
  Loss<double> loss(trainer.model(), LossSettings::from(config, sizes), *be, sampler.per_batch());
  std::vector<int32_t> y;
  for (size_t g = 0; g < groups.size(); ++g) {
    const Split& split = groups[g].train;
    const int64_t width = int64_t(split.x.data.size()) / split.size();
    const int64_t* rows = sampler.batch(int(g), 0);
    std::vector<double> x;
    for (int i = 0; i < sampler.per_batch()[g]; ++i) {
      const auto row = split.x.data.begin() + rows[i] * width;
      x.insert(x.end(), row, row + width);
      y.push_back(split.y[size_t(rows[i])]);
    }
    be->upload(loss.batch_x(int(g)), x.data(), x.size() * sizeof(double));
  }
  be->upload(loss.batch_y(), y.data(), y.size() * sizeof(int32_t));
  const TrainState state = trainer.state();
  Buffer<double> params(*be, int64_t(state.params.size())),
      grads(*be, int64_t(state.params.size()));
  Buffer<double> q(*be, int64_t(state.q.size()));
  Buffer<int64_t> step(*be, 1);
  params.upload(std::vector<double>(state.params.begin(), state.params.end()));
  grads.zero();
  q.upload(state.q);
  step.upload(std::vector<int64_t>{0});
  loss.run(params.data(), grads.data(), q.data(), step.data());
  return {loss.read(), grads.download()};
}

}  // namespace hetdro::testing

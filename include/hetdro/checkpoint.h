// Checkpoints: safetensors with PyTorch names and layouts (docs/DESIGN.md §4), plus the Adam state
// (optim.exp_avg.<name>, optim.exp_avg_sq.<name>), the GroupDRO weights (groupdro.q) and
// step/epoch in __metadata__.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hetdro/model.h"

namespace hetdro {

struct TrainState {
  std::vector<float> params, adam_m, adam_v;  // each model.size() floats
  std::vector<double> q;                      // GroupDRO weights, one per group
  int64_t step = 0;
  int epoch = 0;
};

void save_checkpoint(const std::string& path, const Model& model, const TrainState& state);

// Checks every tensor's presence and shape against `model`; errors name the file and tensor.
TrainState load_checkpoint(const std::string& path, const Model& model);

}  // namespace hetdro

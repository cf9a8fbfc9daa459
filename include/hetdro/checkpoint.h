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
  int64_t step = 0;                           // optimisation steps taken
  int epoch = 0;                              // epochs completed
  // Where a checkpoint taken inside an epoch stands: the steps of epoch `epoch + 1` already
  // taken, and the sums of their step statistics (StepStats), so that a resumed run reports
  // that epoch whole.
  int64_t step_in_epoch = 0;
  std::vector<double> epoch_sums;
  // Model selection: the best validation score so far (−1: none yet) and its epoch.
  double best_score = -1;
  int best_epoch = 0;
};

// Writes through a temporary file, synced and renamed over `path` (io.h), so a crash leaves the
// previous checkpoint whole. q goes both as the float32 tensor groupdro.q (for PyTorch users)
// and exactly, as text in __metadata__, so a resumed run continues bit for bit.
void save_checkpoint(const std::string& path, const Model& model, const TrainState& state);

// Checks every tensor's presence, shape and finiteness against `model`, and the GroupDRO
// weights' length against `groups`; errors (InputError) name the file and tensor.
TrainState load_checkpoint(const std::string& path, const Model& model, int groups);

}  // namespace hetdro

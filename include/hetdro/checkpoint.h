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
  // What the sampler's order within an epoch depends on, so that a mid-epoch resume can refuse
  // a change of them: the group names in config order (q is stored by them), the training-set
  // sizes, train.batch_size, train.seed and the sampler's counts. Empty or 0 when read from a
  // checkpoint written before they were stored.
  std::vector<std::string> groups;
  std::vector<int64_t> train_sizes;  // each group's training samples, in config order
  int64_t batch_size = 0;
  uint64_t seed = 0;
  bool has_seed = false;
  std::string sampler;  // StratifiedSampler::describe(): each group's count, and whether it repeats
};

// Writes through a temporary file, synced and renamed over `path` (io.h), so a crash leaves the
// previous checkpoint whole. q goes both as the float32 tensor groupdro.q (for PyTorch users)
// and exactly, as text in __metadata__, so a resumed run continues bit for bit; each tensor's
// CRC-32 goes into __metadata__ too. Refuses (std::runtime_error, nothing written) a state
// with a non-finite value or a negative second moment: the checkpoint on disk stays the last
// good one.
void save_checkpoint(const std::string& path, const Model& model, const TrainState& state);

// Validates everything before returning (docs/DESIGN.md §4, Checkpoint): each tensor's CRC-32,
// presence, shape and finiteness against `model`; the Adam moments whole or absent, with
// exp_avg_sq ≥ 0; q non-negative, summing to 1, and restored by group name when the checkpoint
// names its groups (`groups`: the config's, in order); every metadata field within its range.
// Errors (InputError) name the file and the tensor or field.
TrainState load_checkpoint(const std::string& path, const Model& model,
                           const std::vector<std::string>& groups);

}  // namespace hetdro

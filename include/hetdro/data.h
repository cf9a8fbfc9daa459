// Datasets: each group's train and test split, loaded from NPY, IDX or CSV and validated
// against the configuration (labels in range, finite features, shapes the encoder can take).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hetdro/config.h"
#include "hetdro/io.h"

namespace hetdro {

struct Split {
  Array<float> x;  // [n, feature dims...] as stored; cnn groups are [n,H,W] or [n,1,H,W]
  std::vector<int32_t> y;
  int64_t size() const { return int64_t(y.size()); }
};

struct GroupData {
  std::string name;
  Split train, test;
  Split val;             // may be empty: the group keeps no validation split
  std::string val_note;  // where val came from, or why the group keeps none
};

// Loads every group of `config` and validates it: x and y of equal length, labels in
// [0, classes), finite features, non-empty groups, and feature shapes the group's encoder
// can take. Errors are InputErrors naming the file. Each group's validation split comes from
// its val_x/val_y, or is carved from its training data (split_validation).
std::vector<GroupData> load_groups(const Config& config);

// One file pair, validated the same way (also used by `predict`, which has no labels).
Array<float> load_features(const std::string& path, const GroupConfig& group);

// The shape of one sample the encoder sees: {1,H,W} for cnn, {d} for mlp. Throws an
// InputError naming `path` when the encoder cannot take it.
std::vector<int64_t> encoder_input_shape(const GroupConfig& group, const Array<float>& x,
                                         const std::string& path);

// Moves round(fraction · n_c) samples of every class c, chosen by `seed`, from `train` into the
// returned split; the rest keep their order. Returns an empty split, and says why in `note`,
// when some class of the training data would get no validation sample.
Split split_validation(Split& train, double fraction, uint64_t seed, int classes,
                       std::string* note);

// --- the stratified sampler (docs/DESIGN.md §1) --------------------------------------------------
// Every batch holds exactly per_batch()[g] samples of group g (batch_counts). The same seed gives
// the same batches, and start_epoch(e) gives epoch e's batches whatever ran before.
//  - Proportional shares (the default): no sample repeats within an epoch, and an epoch has
//    min_g floor(N_g / n_g) steps.
//  - Other shares (resampling): an epoch is one pass over the largest group, floor(N_L / n_L)
//    steps. A group that runs out is drawn again from a fresh shuffle, so each pass over it holds
//    every sample once; a batch that spans passes may hold a sample more than once.
class StratifiedSampler {
 public:
  StratifiedSampler(const std::vector<int64_t>& group_sizes, int batch_size, uint64_t seed,
                    GroupBatch mode = GroupBatch::proportional,
                    const std::vector<double>& shares = {});
  const std::vector<int>& per_batch() const { return per_batch_; }
  int64_t steps_per_epoch() const { return steps_; }
  // Whether a group is drawn again within an epoch (every mode but plain proportional shares).
  bool resamples() const { return resamples_; }
  // Shuffles each group for `epoch` (0-based).
  void start_epoch(int epoch);
  // Indices into group g's training split for `step` of the current epoch.
  const int64_t* batch(int g, int64_t step) const {
    return order_[g].data() + step * per_batch_[g];
  }
  // The current epoch's whole order of group g; step s takes per_batch()[g] from s·per_batch()[g].
  // Its length is order_size(g) in every epoch.
  const std::vector<int64_t>& order(int g) const { return order_[g]; }
  int64_t order_size(int g) const;
  // "70, 25, 5 per batch", with ", drawn again" when resamples(): what a checkpoint stores.
  std::string describe() const;

 private:
  std::vector<int64_t> sizes_;
  std::vector<int> per_batch_;
  bool resamples_ = false;
  int64_t steps_ = 0;
  uint64_t seed_;
  std::vector<std::vector<int64_t>> order_;
};

// Each group's samples in a batch of `batch_size`: B·share_g rounded by largest remainder, at least
// one per group, summing to B. shares[g] > 0 fixes group g's share; the other groups split the
// rest in proportion to N_g (proportional), √N_g (sqrt) or 1 (equal). No shares: every group free.
std::vector<int> batch_counts(const std::vector<int64_t>& group_sizes, int batch_size,
                              GroupBatch mode = GroupBatch::proportional,
                              const std::vector<double>& shares = {});

// A permutation of [0, n) that depends on (n, seed) alone (the sampler's epochs, prepare's split).
std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed);

}  // namespace hetdro

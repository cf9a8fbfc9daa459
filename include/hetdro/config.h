// The run configuration: TOML exactly as in docs/DESIGN.md §4. Unknown keys are errors that name
// the key; every key has a default except the data paths.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hetdro {

// The choices of the config's enumerated keys, parsed once; name() gives the config's spelling.
enum class Encoder { cnn, mlp };
enum class Classifier { linear, mlp2 };
enum class LatentActivation { none, relu };
enum class AnchorMeanInit { zero, random };  // m = 0, or m ~ N(0, 1)
enum class Fit { pooled, per_group, none };
enum class Objective { erm, groupdro };
enum class GroupBatch {
  proportional,
  sqrt,
  equal
};  // each group's share of a batch ∝ N_g, √N_g, 1
enum class Select { last, worst_val, mean_val };            // which epoch's model the run reports
enum class GroupDroUpdate { exp, softmax, smooth };         // how q follows the group losses
enum class GroupDroObjective { weighted, max, logsumexp };  // what L_clf makes of them
const char* name(Encoder e);
const char* name(Classifier c);
const char* name(LatentActivation a);
const char* name(AnchorMeanInit i);
const char* name(Fit f);
const char* name(Objective o);
const char* name(GroupBatch b);
const char* name(Select s);
const char* name(GroupDroUpdate u);
const char* name(GroupDroObjective o);

struct GroupConfig {
  std::string name;
  std::string train_x, train_y, test_x, test_y;  // resolved against the config file's folder
  std::string val_x, val_y;  // a validation split of its own (both or neither; optional)
  Encoder encoder = Encoder::cnn;
  std::vector<int> channels = {32, 64};  // cnn
  int kernel = 3;                        // cnn
  std::vector<int> hidden = {128};       // mlp
  std::string label_column = "label";    // CSV inputs: the column holding y
  double batch_share = 0;  // this group's share of every batch, in (0, 1); 0: train.group_batch's
};

struct ModelConfig {
  int latent_dim = 64;
  Classifier classifier = Classifier::linear;
  int classifier_hidden = 128;  // mlp2
  LatentActivation latent_activation = LatentActivation::none;
  double anchor_scale = 1.0;  // L_c = scale·I at init
  AnchorMeanInit anchor_mean_init = AnchorMeanInit::zero;
};

struct TrainConfig {
  int epochs = 10;
  int batch_size = 100;
  double lr = 1e-3;
  double lambda_fit = 1e-3;
  double lambda_sep = 1e-3;
  int samples_per_anchor = 16;  // J
  double eps = 1e-5;
  Fit fit = Fit::pooled;
  Objective objective = Objective::erm;
  GroupBatch group_batch = GroupBatch::proportional;  // docs/DESIGN.md §1, the sampler
  double groupdro_eta = 0.01;
  // [train.groupdro]: the GroupDRO family (docs/DESIGN.md §1)
  GroupDroUpdate groupdro_update = GroupDroUpdate::exp;
  GroupDroObjective groupdro_objective = GroupDroObjective::weighted;
  double groupdro_tau = 1.0;         // softmax update and logsumexp objective temperature
  double groupdro_gamma = 0.1;       // smooth update's step
  double groupdro_adjustment = 0.0;  // C: add C/√N_g to group g's loss in q's update
  double weight_decay = 0.0;         // decoupled (AdamW) when > 0
  uint64_t seed = 0;
  std::string device = "auto";  // "auto" | "cuda" | "cpu"
  // The same seed gives bit-identical parameters on the same GPU: cuDNN's deterministic
  // algorithms and no cuBLAS atomics (docs/DESIGN.md §3). The CPU is deterministic either way.
  bool deterministic = true;
  int eval_batch = 1000;         // test-set evaluation chunk
  Select select = Select::last;  // with worst_val/mean_val the run also keeps best.safetensors
  int checkpoint_every = 0;      // also checkpoint every this many steps (0: at epoch ends only)
};

struct Config {
  std::string path;  // the file it came from ("" when built in code)
  int classes = 10;
  // Each group without val_x/val_y keeps this share of its training data, stratified by class
  // and seeded by val_seed, as its validation split (docs/DESIGN.md §4). Left out of the file, it
  // is 0.1 when train.select uses the split and 0 when select = "last" (load_config decides).
  double val_fraction = 0.1;
  uint64_t val_seed = 0;
  std::vector<GroupConfig> groups;
  ModelConfig model;
  TrainConfig train;
};

// Loads and validates `path`, then applies overrides of the form "train.epochs=3" or
// "data.groups.0.encoder=\"mlp\"" (the value is TOML; a bare word is taken as a string).
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// The resolved configuration as TOML, with absolute data paths (the run folder's config.toml).
std::string to_toml(const Config& config);

}  // namespace hetdro

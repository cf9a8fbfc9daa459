// Loading and validating each group's data, and the stratified sampler (docs/DESIGN.md §1).
#include "hetdro/data.h"

#include <fmt/ranges.h>  // join

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <numeric>

#include "hetdro/check.h"
#include "hetdro/rng.h"
#include "io/file.h"  // to_float32, kFloat32Range

namespace hetdro {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Array<float> read_features(const std::string& path, const GroupConfig& group) {
  if (!std::filesystem::exists(path))
    input_error("{}: file not found (group '{}')", path, group.name);
  if (ends_with(path, ".npy")) return read_npy_features(path);
  if (ends_with(path, ".csv")) return read_csv(path, group.label_column, false).x;
  Array<uint8_t> raw = read_idx(path);
  Array<float> x{raw.shape, std::vector<float>(raw.data.size())};
  for (size_t i = 0; i < raw.data.size(); ++i) x.data[i] = raw.data[i] * (1.0f / 255.0f);
  return x;
}

std::vector<int32_t> read_labels(const std::string& path, const GroupConfig& group) {
  if (!std::filesystem::exists(path))
    input_error("{}: file not found (group '{}')", path, group.name);
  if (ends_with(path, ".npy")) return read_npy_labels(path);
  if (ends_with(path, ".csv")) return read_csv(path, group.label_column).y;
  Array<uint8_t> raw = read_idx(path);
  if (raw.shape.size() != 1)
    input_error("{}: labels must be one-dimensional, found shape {}", path,
                shape_string(raw.shape));
  return std::vector<int32_t>(raw.data.begin(), raw.data.end());
}

Split load_split(const std::string& x_path, const std::string& y_path, const GroupConfig& group,
                 int classes) {
  Split s;
  s.x = load_features(x_path, group);
  s.y = read_labels(y_path, group);
  if (s.x.rows() != int64_t(s.y.size()))
    input_error("{}: {} samples, but {} holds {} labels: x and y must have the same length", x_path,
                s.x.rows(), y_path, s.y.size());
  if (s.y.empty()) input_error("{}: group '{}' is empty (0 samples)", x_path, group.name);
  for (size_t i = 0; i < s.y.size(); ++i)
    if (s.y[i] < 0 || s.y[i] >= classes)
      input_error("{}: label {} at index {} is outside [0, {}) (data.classes = {})", y_path, s.y[i],
                  i, classes, classes);
  return s;
}

}  // namespace

std::vector<int64_t> encoder_input_shape(const GroupConfig& group, const Array<float>& x,
                                         const std::string& path) {
  const auto& s = x.shape;
  // The model sizes its layers in int, so a sample must hold fewer than 2^31 values.
  int64_t values = 1;
  for (size_t i = 1; i < s.size(); ++i) {
    if (s[i] > std::numeric_limits<int32_t>::max() / values)
      input_error("{}: samples of shape {} are too large: expected at most 2^31-1 values each",
                  path, shape_string(std::vector<int64_t>(s.begin() + 1, s.end())));
    values *= std::max<int64_t>(s[i], 1);
  }
  if (group.encoder == Encoder::mlp) {
    if (s.size() != 2 || s[1] < 1)
      input_error("{}: group '{}' has encoder \"mlp\", which takes vectors [n,d]; found shape {}",
                  path, group.name, shape_string(s));
    return {s[1]};
  }
  // cnn: two valid k×k convolutions, then a 2×2 max-pool that needs at least 2×2 left.
  const int64_t min_side = 2 * (group.kernel - 1) + 2;
  bool image = s.size() == 3 || (s.size() == 4 && s[1] == 1);
  int64_t h = image ? s[s.size() - 2] : 0, w = image ? s[s.size() - 1] : 0;
  if (!image || h < min_side || w < min_side)
    input_error(
        "{}: group '{}' has encoder \"cnn\" (kernel {}), which takes one-channel images "
        "[n,H,W] or [n,1,H,W] with H, W ≥ {}; found shape {}",
        path, group.name, group.kernel, min_side, shape_string(s));
  return {1, h, w};
}

Array<float> load_features(const std::string& path, const GroupConfig& group) {
  Array<float> x = read_features(path, group);
  encoder_input_shape(group, x, path);
  for (size_t i = 0; i < x.data.size(); ++i)
    if (!std::isfinite(x.data[i])) {
      int64_t row_size = x.rows() ? int64_t(x.data.size()) / x.rows() : 1;
      input_error("{}: feature {} of sample {} is {} in float32: expected {}", path,
                  int64_t(i) % row_size, int64_t(i) / row_size, x.data[i], io::kFloat32Range);
    }
  return x;
}

Split split_validation(Split& train, double fraction, uint64_t seed, int classes,
                       std::string* note) {
  std::vector<std::vector<int64_t>> by_class(classes);
  for (int64_t i = 0; i < train.size(); ++i) by_class[train.y[i]].push_back(i);
  std::vector<char> to_val(train.size(), 0);
  for (int c = 0; c < classes; ++c) {
    const int64_t n = int64_t(by_class[c].size()), take = std::llround(fraction * double(n));
    if (n == 0) continue;
    if (take == 0 || take == n) {
      *note = fmt::format(
          "class {} has {} training samples, too few for a validation share of {}; the group "
          "keeps no validation split",
          c, n, fraction);
      return {};
    }
    const auto order = seeded_permutation(n, splitmix64(seed ^ splitmix64(uint64_t(c) + 0x5A11)));
    for (int64_t i = 0; i < take; ++i) to_val[by_class[c][order[i]]] = 1;
  }
  const int64_t width = train.size() ? int64_t(train.x.data.size()) / train.size() : 0;
  Split val, kept;
  val.x.shape = kept.x.shape = train.x.shape;
  for (int64_t i = 0; i < train.size(); ++i) {
    Split& to = to_val[i] ? val : kept;
    to.x.data.insert(to.x.data.end(), train.x.data.begin() + i * width,
                     train.x.data.begin() + (i + 1) * width);
    to.y.push_back(train.y[i]);
  }
  val.x.shape[0] = val.size();
  kept.x.shape[0] = kept.size();
  train = std::move(kept);
  *note = fmt::format("{} of its training samples (share {}, by class)", val.size(), fraction);
  return val;
}

std::vector<GroupData> load_groups(const Config& config) {
  std::vector<GroupData> groups;
  for (size_t index = 0; index < config.groups.size(); ++index) {
    const GroupConfig& g = config.groups[index];
    GroupData d{g.name,
                load_split(g.train_x, g.train_y, g, config.classes),
                load_split(g.test_x, g.test_y, g, config.classes),
                {},
                ""};
    if (!g.val_x.empty()) {
      d.val = load_split(g.val_x, g.val_y, g, config.classes);
      if (encoder_input_shape(g, d.val.x, g.val_x) != encoder_input_shape(g, d.train.x, g.train_x))
        input_error(
            "{}: validation features have shape {}, but the training features ({}) "
            "have {}",
            g.val_x, shape_string(d.val.x.shape), g.train_x, shape_string(d.train.x.shape));
      d.val_note = fmt::format("{} samples from {}", d.val.size(), g.val_x);
    } else if (config.val_fraction > 0) {
      d.val = split_validation(d.train, config.val_fraction,
                               splitmix64(config.val_seed ^ splitmix64(index)), config.classes,
                               &d.val_note);
      if (d.val.size() > 0) d.val_note += fmt::format(", data.val_seed = {}", config.val_seed);
    } else {
      d.val_note = config.train.select == Select::last
                       ? "none (data.val_fraction = 0; train.select = \"last\" uses no split)"
                       : "none (data.val_fraction = 0)";
    }
    if (encoder_input_shape(g, d.train.x, g.train_x) != encoder_input_shape(g, d.test.x, g.test_x))
      input_error(
          "{}: test features have shape {} per sample, but the training features ({}) "
          "have {}",
          g.test_x, shape_string(d.test.x.shape), g.train_x, shape_string(d.train.x.shape));
    groups.push_back(std::move(d));
  }
  return groups;
}

std::vector<int> batch_counts(const std::vector<int64_t>& sizes, int batch_size, GroupBatch mode,
                              const std::vector<double>& shares) {
  const int G = int(sizes.size());
  if (batch_size < G)
    input_error("batch size {} is smaller than the number of groups ({})", batch_size, G);
  HETDRO_ASSERT(shares.empty() || int(shares.size()) == G);
  HETDRO_ASSERT(std::all_of(sizes.begin(), sizes.end(), [](int64_t n) { return n > 0; }));
  auto fixed_share = [&](int g) { return shares.empty() ? 0.0 : shares[g]; };
  auto weight = [&](int g) {
    switch (mode) {
      case GroupBatch::sqrt:
        return std::sqrt(double(sizes[g]));
      case GroupBatch::equal:
        return 1.0;
      default:
        return double(sizes[g]);
    }
  };
  double fixed = 0, total = 0;  // the fixed shares' sum; the free groups' weight
  for (int g = 0; g < G; ++g) {
    if (fixed_share(g) > 0)
      fixed += fixed_share(g);
    else
      total += weight(g);
  }
  const double free_rows = batch_size * (1 - fixed);  // B exactly with no fixed shares
  std::vector<int> counts(G);
  std::vector<double> remainder(G);
  int assigned = 0;
  for (int g = 0; g < G; ++g) {
    double exact = fixed_share(g) > 0 ? batch_size * fixed_share(g) : free_rows * weight(g) / total;
    counts[g] = int(std::floor(exact));
    remainder[g] = exact - counts[g];
    assigned += counts[g];
  }
  std::vector<int> order(G);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return remainder[a] > remainder[b]; });
  for (int i = 0; assigned < batch_size; i = (i + 1) % G, ++assigned) ++counts[order[i]];
  // Every group appears in every batch: take the extra sample from the largest count.
  for (int g = 0; g < G; ++g)
    if (counts[g] == 0) {
      ++counts[g];
      --*std::max_element(counts.begin(), counts.end());
    }
  // Shares the config check refuses (fixed ones that fill the batch beside free groups) would
  // break this.
  HETDRO_ASSERT(std::all_of(counts.begin(), counts.end(), [](int c) { return c > 0; }) &&
                std::accumulate(counts.begin(), counts.end(), 0) == batch_size);
  return counts;
}

StratifiedSampler::StratifiedSampler(const std::vector<int64_t>& group_sizes, int batch_size,
                                     uint64_t seed, GroupBatch mode,
                                     const std::vector<double>& shares)
    : sizes_(group_sizes),
      per_batch_(batch_counts(group_sizes, batch_size, mode, shares)),
      resamples_(mode != GroupBatch::proportional ||
                 std::any_of(shares.begin(), shares.end(), [](double s) { return s > 0; })),
      seed_(seed) {
  if (resamples_) {
    const size_t largest = std::max_element(sizes_.begin(), sizes_.end()) - sizes_.begin();
    steps_ = sizes_[largest] / per_batch_[largest];
  } else {
    steps_ = INT64_MAX;
    for (size_t g = 0; g < sizes_.size(); ++g) steps_ = std::min(steps_, sizes_[g] / per_batch_[g]);
  }
  order_.resize(sizes_.size());
}

int64_t StratifiedSampler::order_size(int g) const {
  return resamples_ ? steps_ * per_batch_[g] : sizes_[g];
}

std::string StratifiedSampler::describe() const {
  return fmt::format("{} per batch{}", fmt::join(per_batch_, ", "),
                     resamples_ ? ", drawn again" : "");
}

void StratifiedSampler::start_epoch(int epoch) {
  for (size_t g = 0; g < sizes_.size(); ++g) {
    const uint64_t pass_seed = splitmix64(seed_ ^ splitmix64(uint64_t(epoch) * 1000003 + g));
    order_[g] = seeded_permutation(sizes_[g], pass_seed);
    if (!resamples_) continue;
    // Pass p ≥ 1 over the group within this epoch: a shuffle of its own, cut where the epoch ends.
    const int64_t need = order_size(int(g));
    order_[g].reserve(size_t(std::max(need, sizes_[g])));
    for (uint64_t p = 1; int64_t(order_[g].size()) < need; ++p) {
      const std::vector<int64_t> pass =
          seeded_permutation(sizes_[g], splitmix64(pass_seed ^ splitmix64(p)));
      order_[g].insert(order_[g].end(), pass.begin(), pass.end());
    }
    order_[g].resize(size_t(need));
  }
}

std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed) {
  // Fisher–Yates with the counter RNG: the same on every platform and standard library.
  std::vector<int64_t> p(n);
  std::iota(p.begin(), p.end(), int64_t(0));
  for (int64_t i = n - 1; i > 0; --i) {
    int64_t j = std::min(i, int64_t(uniform01(seed, uint64_t(i)) * double(i + 1)));
    std::swap(p[i], p[j]);
  }
  return p;
}

}  // namespace hetdro

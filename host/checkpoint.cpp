// Checkpoint files (docs/DESIGN.md §4) on top of the safetensors reader and writer.
#include "hetdro/checkpoint.h"

#include <fmt/format.h>
#include <zlib.h>  // crc32

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "hetdro/check.h"
#include "hetdro/io.h"

namespace hetdro {
namespace {

// Doubles as text that reads back to the same bits ("%.17g", comma-separated).
std::string doubles_text(const std::vector<double>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += fmt::format("{}{:.17g}", i ? "," : "", v[i]);
  return s;
}

std::vector<double> parse_doubles(const std::string& path, const std::string& key,
                                  const std::string& text) {
  std::vector<double> v;
  size_t start = 0;
  while (start <= text.size() && !text.empty()) {
    const size_t end = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, end - start);
    char* stop = nullptr;
    const double x = std::strtod(item.c_str(), &stop);
    if (item.empty() || *stop != '\0' || !std::isfinite(x))
      input_error("{}: __metadata__ '{}' holds \"{}\": expected finite numbers separated by commas",
                  path, key, item.substr(0, 40));
    v.push_back(x);
    start = end + 1;
  }
  return v;
}

uint32_t crc_of(const std::vector<float>& data) {
  // crc32(0, NULL, 0) is the initial value; an empty tensor keeps it.
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto* bytes = reinterpret_cast<const Bytef*>(data.data());
  for (size_t done = 0, size = data.size() * sizeof(float); done < size;) {
    const size_t n = std::min<size_t>(size - done, size_t(1) << 30);
    crc = crc32(crc, bytes + done, uInt(n));
    done += n;
  }
  return uint32_t(crc);
}

// The first value that is not finite (or, with nonnegative, below 0); −1 when there is none.
int64_t first_bad(const float* x, int64_t n, bool nonnegative) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i]) || (nonnegative && x[i] < 0)) return i;
  return -1;
}

// Bounds of the metadata's counters: far beyond any run (2^40 steps), and small enough that
// the anchor samples' RNG counter, step·C·J·k, and every int they reach stay exact.
constexpr int64_t kMaxSteps = int64_t(1) << 40;

}  // namespace

void save_checkpoint(const std::string& path, const Model& model, const TrainState& state) {
  // Never a checkpoint that cannot be resumed: the one on disk stays the last good one.
  for (const ParamInfo& p : model.params()) {
    const struct {
      const std::vector<float>& buffer;
      const char* prefix;
      bool nonnegative;
    } parts[] = {{state.params, "", false},
                 {state.adam_m, "optim.exp_avg.", false},
                 {state.adam_v, "optim.exp_avg_sq.", true}};
    for (const auto& part : parts) {
      const int64_t bad = first_bad(part.buffer.data() + p.offset, p.size, part.nonnegative);
      if (bad >= 0)
        throw std::runtime_error(fmt::format(
            "{}: not written: tensor '{}{}' holds {} at index {}; the file keeps the last good "
            "checkpoint",
            path, part.prefix, p.name, part.buffer[size_t(p.offset + bad)], bad));
    }
  }
  for (double w : state.q)
    if (!(std::isfinite(w) && w >= 0))
      throw std::runtime_error(fmt::format(
          "{}: not written: GroupDRO weight {} is not a finite non-negative number; the file "
          "keeps the last good checkpoint",
          path, w));
  std::vector<NamedTensor> tensors;
  auto slice = [&](const std::vector<float>& buffer, const ParamInfo& p,
                   const std::string& prefix) {
    tensors.push_back(
        {prefix + p.name, p.shape,
         std::vector<float>(buffer.begin() + p.offset, buffer.begin() + p.offset + p.size)});
  };
  for (const ParamInfo& p : model.params()) slice(state.params, p, "");
  for (const ParamInfo& p : model.params()) slice(state.adam_m, p, "optim.exp_avg.");
  for (const ParamInfo& p : model.params()) slice(state.adam_v, p, "optim.exp_avg_sq.");
  tensors.push_back({"groupdro.q",
                     {int64_t(state.q.size())},
                     std::vector<float>(state.q.begin(), state.q.end())});
  std::map<std::string, std::string> meta = {{"format", "hetdro"},
                                             {"step", std::to_string(state.step)},
                                             {"epoch", std::to_string(state.epoch)},
                                             {"groupdro_q", doubles_text(state.q)}};
  if (!state.groups.empty()) meta["groups"] = nlohmann::json(state.groups).dump();
  if (state.batch_size > 0) meta["batch_size"] = std::to_string(state.batch_size);
  if (!state.train_sizes.empty()) meta["train_sizes"] = nlohmann::json(state.train_sizes).dump();
  if (state.has_seed) meta["seed"] = std::to_string(state.seed);
  if (!state.sampler.empty()) meta["sampler"] = state.sampler;
  if (state.best_epoch > 0) {
    meta["best_score"] = fmt::format("{:.17g}", state.best_score);
    meta["best_epoch"] = std::to_string(state.best_epoch);
  }
  if (state.step_in_epoch > 0) {
    meta["step_in_epoch"] = std::to_string(state.step_in_epoch);
    meta["epoch_sums"] = doubles_text(state.epoch_sums);
  }
  for (const NamedTensor& t : tensors)
    meta["crc32." + t.name] = fmt::format("{:08x}", crc_of(t.data));
  write_safetensors(path, tensors, meta);
}

TrainState load_checkpoint(const std::string& path, const Model& model,
                           const std::vector<std::string>& groups) {
  SafetensorsFile file = read_safetensors(path);
  TrainState state;
  // Bit flips: every tensor's CRC-32, when the file has them (written since they were added).
  const bool has_crc = std::any_of(file.metadata.begin(), file.metadata.end(),
                                   [](const auto& kv) { return kv.first.rfind("crc32.", 0) == 0; });
  if (has_crc) {
    for (const NamedTensor& t : file.tensors) {
      auto it = file.metadata.find("crc32." + t.name);
      if (it == file.metadata.end())
        input_error(
            "{}: __metadata__ has no 'crc32.{}' although it has the other tensors' "
            "checksums: the file was altered",
            path, t.name);
      const std::string actual = fmt::format("{:08x}", crc_of(t.data));
      if (it->second != actual)
        input_error(
            "{}: tensor '{}' does not match its checksum (CRC-32 {} in __metadata__, {} of its "
            "data): the file is damaged. Use an intact copy, or an earlier checkpoint",
            path, t.name, excerpt(it->second, 16), actual);
    }
    for (const auto& [key, value] : file.metadata)
      if (key.rfind("crc32.", 0) == 0 && !file.find(key.substr(6)))
        input_error(
            "{}: __metadata__ has '{}' but the file holds no tensor '{}': the file was "
            "altered",
            path, excerpt(key, 80, '\''), excerpt(key.substr(6), 80, '\''));
  }
  auto check_tensor = [&](const NamedTensor& t, const std::vector<int64_t>& shape,
                          bool nonnegative) {
    if (t.shape != shape)
      input_error("{}: tensor '{}' has shape {}, but the config's model expects {}", path, t.name,
                  shape_string(t.shape), shape_string(shape));
    const int64_t bad =
        std::count_if(t.data.begin(), t.data.end(), [](float x) { return !std::isfinite(x); });
    if (bad > 0)
      input_error(
          "{}: tensor '{}' holds {} non-finite value(s) of {}; a checkpoint must hold finite "
          "numbers (was it written by a run that failed?)",
          path, t.name, bad, t.data.size());
    const int64_t negative =
        nonnegative ? first_bad(t.data.data(), int64_t(t.data.size()), true) : -1;
    if (negative >= 0)
      input_error(
          "{}: tensor '{}' holds {} at index {}: Adam's second moments are averages of squares, "
          "never negative (the file was altered or damaged)",
          path, t.name, t.data[size_t(negative)], negative);
  };
  // The parameters must all be there; the Adam moments are all there or all absent (a model
  // exported without its optimizer state), never some of them.
  bool any_moment = false;
  for (const NamedTensor& t : file.tensors)
    if (t.name.rfind("optim.exp_avg.", 0) == 0 || t.name.rfind("optim.exp_avg_sq.", 0) == 0)
      any_moment = true;
  auto fill = [&](std::vector<float>& buffer, const std::string& prefix, bool required,
                  bool nonnegative) {
    buffer.assign(model.size(), 0.0f);
    if (!required) return;
    for (const ParamInfo& p : model.params()) {
      const NamedTensor* t = file.find(prefix + p.name);
      if (!t && prefix.empty())
        input_error("{}: tensor '{}' is missing; the config's model needs it (shape {})", path,
                    p.name, shape_string(p.shape));
      if (!t)
        input_error(
            "{}: tensor '{}{}' is missing, but the file holds other Adam moments: they are "
            "taken whole or not at all (docs/DESIGN.md §4), and resuming with some of them "
            "zeroed would silently change the run",
            path, prefix, p.name);
      check_tensor(*t, p.shape, nonnegative);
      std::copy(t->data.begin(), t->data.end(), buffer.begin() + p.offset);
    }
  };
  fill(state.params, "", true, false);
  fill(state.adam_m, "optim.exp_avg.", any_moment, false);
  fill(state.adam_v, "optim.exp_avg_sq.", any_moment, true);

  auto meta = [&](const char* key, int64_t max) -> int64_t {
    auto it = file.metadata.find(key);
    if (it == file.metadata.end()) return 0;
    int64_t v = 0;
    const std::string& text = it->second;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size() || v < 0 || v > max)
      input_error("{}: __metadata__ '{}' is {}: expected an integer from 0 to {}", path, key,
                  excerpt(text), max);
    return v;
  };
  state.step = meta("step", kMaxSteps);
  // Every complete epoch took at least one step.
  state.epoch = int(meta("epoch", std::min<int64_t>(state.step, 1 << 30)));
  state.step_in_epoch = meta("step_in_epoch", state.step);
  state.best_epoch = int(meta("best_epoch", state.epoch));
  state.batch_size = meta("batch_size", int64_t(1) << 40);
  if (auto it = file.metadata.find("seed"); it != file.metadata.end()) {
    const std::string& text = it->second;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), state.seed);
    if (ec != std::errc() || end != text.data() + text.size())
      input_error("{}: __metadata__ 'seed' is {}: expected an unsigned 64-bit integer", path,
                  excerpt(text));
    state.has_seed = true;
  }
  if (auto it = file.metadata.find("sampler"); it != file.metadata.end())
    state.sampler = it->second;
  if (state.best_epoch > 0) {
    auto it = file.metadata.find("best_score");
    const std::vector<double> score =
        parse_doubles(path, "best_score", it == file.metadata.end() ? "" : it->second);
    if (score.size() != 1 || score[0] < 0 || score[0] > 1)
      input_error(
          "{}: __metadata__ has 'best_epoch' but no single 'best_score' from 0 to 1 (a "
          "validation accuracy)",
          path);
    state.best_score = score[0];
  }
  if (state.step_in_epoch > 0) {
    auto sums = file.metadata.find("epoch_sums");
    if (sums == file.metadata.end())
      input_error("{}: __metadata__ has 'step_in_epoch' but no 'epoch_sums'", path);
    state.epoch_sums = parse_doubles(path, "epoch_sums", sums->second);
  }

  // The GroupDRO weights: stored by group name, restored in the config's order.
  const size_t G = groups.size();
  if (auto it = file.metadata.find("train_sizes"); it != file.metadata.end()) {
    const auto sizes = nlohmann::json::parse(it->second, nullptr, false);
    const bool counts = !sizes.is_discarded() && sizes.is_array() &&
                        std::all_of(sizes.begin(), sizes.end(), [](const nlohmann::json& n) {
                          return n.is_number_unsigned() && n.get<uint64_t>() <= (uint64_t(1) << 40);
                        });
    if (!counts)
      input_error("{}: __metadata__ 'train_sizes' is {}: expected a JSON list of sample counts",
                  path, excerpt(it->second));
    state.train_sizes = sizes.get<std::vector<int64_t>>();
  }
  if (auto it = file.metadata.find("groups"); it != file.metadata.end()) {
    const auto names = nlohmann::json::parse(it->second, nullptr, false);
    if (names.is_discarded() || !names.is_array() ||
        !std::all_of(names.begin(), names.end(), [](auto& n) { return n.is_string(); }))
      input_error("{}: __metadata__ 'groups' is {}: expected a JSON list of group names", path,
                  excerpt(it->second));
    state.groups = names.get<std::vector<std::string>>();
    std::vector<std::string> sorted_saved = state.groups, sorted_config = groups;
    std::sort(sorted_saved.begin(), sorted_saved.end());
    std::sort(sorted_config.begin(), sorted_config.end());
    if (sorted_saved != sorted_config)
      input_error(
          "{}: the checkpoint was written for the groups {}, but the config has the groups {}",
          path, excerpt(it->second), excerpt(nlohmann::json(groups).dump()));
  }
  if (const NamedTensor* q = file.find("groupdro.q")) {
    if (q->data.size() != G)
      input_error("{}: tensor 'groupdro.q' has {} weights, but the config has {} groups", path,
                  q->data.size(), G);
    auto exact = file.metadata.find("groupdro_q");
    std::vector<double> saved = exact != file.metadata.end()
                                    ? parse_doubles(path, "groupdro_q", exact->second)
                                    : std::vector<double>(q->data.begin(), q->data.end());
    if (saved.size() != G)
      input_error("{}: __metadata__ 'groupdro_q' has {} weights, but the config has {} groups",
                  path, saved.size(), G);
    // The exact text and the float32 tensor (which the checksum covers) say the same.
    for (size_t g = 0; g < G; ++g)
      if (float(saved[g]) != q->data[g])
        input_error(
            "{}: __metadata__ 'groupdro_q' holds {} for group {}, but the tensor 'groupdro.q' "
            "holds {}: the file was altered or damaged",
            path, saved[g], g, q->data[g]);
    double sum = 0;
    for (double w : saved) {
      if (!(w >= 0 && std::isfinite(w)))
        input_error("{}: GroupDRO weight {} in 'groupdro.q' is not a finite non-negative number",
                    path, w);
      sum += w;
    }
    // q is a distribution over the groups. Stored exactly, its sum is 1 up to G roundings of
    // 2^-53; from the float32 tensor, up to G roundings of 2^-24 each: G·2^-23 bounds both.
    if (!(std::abs(sum - 1) <= double(G) * 0x1p-23))
      input_error(
          "{}: the GroupDRO weights in 'groupdro.q' sum to {:.9g}: expected non-negative weights "
          "summing to 1",
          path, sum);
    state.q.resize(G);
    for (size_t g = 0; g < G; ++g) {
      const size_t from =
          state.groups.empty()
              ? g
              : size_t(std::find(state.groups.begin(), state.groups.end(), groups[g]) -
                       state.groups.begin());
      state.q[g] = saved[from];
    }
  }
  return state;
}

}  // namespace hetdro

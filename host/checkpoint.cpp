// Checkpoint files (docs/DESIGN.md §4) on top of the safetensors reader and writer.
#include "hetdro/checkpoint.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>

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

}  // namespace

void save_checkpoint(const std::string& path, const Model& model, const TrainState& state) {
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
  if (state.best_epoch > 0) {
    meta["best_score"] = fmt::format("{:.17g}", state.best_score);
    meta["best_epoch"] = std::to_string(state.best_epoch);
  }
  if (state.step_in_epoch > 0) {
    meta["step_in_epoch"] = std::to_string(state.step_in_epoch);
    meta["epoch_sums"] = doubles_text(state.epoch_sums);
  }
  write_safetensors(path, tensors, meta);
}

TrainState load_checkpoint(const std::string& path, const Model& model, int groups) {
  SafetensorsFile file = read_safetensors(path);
  TrainState state;
  // The parameters must all be there; the Adam moments are all there or all absent (a model
  // exported without its optimizer state), never half of them.
  auto fill = [&](std::vector<float>& buffer, const std::string& prefix, bool required) {
    buffer.assign(model.size(), 0.0f);
    if (!required && !file.find(prefix + model.params().front().name)) return;
    for (const ParamInfo& p : model.params()) {
      const NamedTensor* t = file.find(prefix + p.name);
      if (!t)
        input_error("{}: tensor '{}' is missing; the config's model needs it (shape {})", path,
                    prefix + p.name, shape_string(p.shape));
      if (t->shape != p.shape)
        input_error("{}: tensor '{}' has shape {}, but the config's model expects {}", path,
                    prefix + p.name, shape_string(t->shape), shape_string(p.shape));
      const int64_t bad =
          std::count_if(t->data.begin(), t->data.end(), [](float x) { return !std::isfinite(x); });
      if (bad > 0)
        input_error(
            "{}: tensor '{}' holds {} non-finite value(s) of {}; a checkpoint must hold finite "
            "numbers (was it written by a run that failed?)",
            path, prefix + p.name, bad, t->data.size());
      std::copy(t->data.begin(), t->data.end(), buffer.begin() + p.offset);
    }
  };
  fill(state.params, "", true);
  fill(state.adam_m, "optim.exp_avg.", false);
  fill(state.adam_v, "optim.exp_avg_sq.", false);
  if (const NamedTensor* q = file.find("groupdro.q")) {
    if (q->data.size() != size_t(groups))
      input_error("{}: tensor 'groupdro.q' has {} weights, but the config has {} groups", path,
                  q->data.size(), groups);
    auto exact = file.metadata.find("groupdro_q");
    if (exact != file.metadata.end())
      state.q = parse_doubles(path, "groupdro_q", exact->second);
    else
      state.q.assign(q->data.begin(), q->data.end());
    if (state.q.size() != size_t(groups))
      input_error("{}: __metadata__ 'groupdro_q' has {} weights, but the config has {} groups",
                  path, state.q.size(), groups);
    for (double w : state.q)
      if (!(w >= 0 && std::isfinite(w)))
        input_error("{}: GroupDRO weight {} in 'groupdro.q' is not a finite non-negative number",
                    path, w);
  }
  auto meta = [&](const char* key) -> int64_t {
    auto it = file.metadata.find(key);
    if (it == file.metadata.end()) return 0;
    int64_t v = 0;
    const std::string& text = it->second;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size() || v < 0)
      input_error("{}: __metadata__ '{}' is {}: expected a non-negative integer", path, key,
                  excerpt(text));
    return v;
  };
  state.step = meta("step");
  state.epoch = int(meta("epoch"));
  state.step_in_epoch = meta("step_in_epoch");
  state.best_epoch = int(meta("best_epoch"));
  if (state.best_epoch > 0) {
    auto it = file.metadata.find("best_score");
    const std::vector<double> score =
        parse_doubles(path, "best_score", it == file.metadata.end() ? "" : it->second);
    if (score.size() != 1)
      input_error("{}: __metadata__ has 'best_epoch' but no single 'best_score'", path);
    state.best_score = score[0];
  }
  if (state.step_in_epoch > 0) {
    auto sums = file.metadata.find("epoch_sums");
    if (sums == file.metadata.end())
      input_error("{}: __metadata__ has 'step_in_epoch' but no 'epoch_sums'", path);
    state.epoch_sums = parse_doubles(path, "epoch_sums", sums->second);
  }
  return state;
}

}  // namespace hetdro

// Checkpoint files (docs/DESIGN.md §4) on top of the safetensors reader and writer.
#include "hetdro/checkpoint.h"

#include <charconv>

#include "hetdro/check.h"
#include "hetdro/io.h"

namespace hetdro {

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
  write_safetensors(path, tensors,
                    {{"format", "hetdro"},
                     {"step", std::to_string(state.step)},
                     {"epoch", std::to_string(state.epoch)}});
}

TrainState load_checkpoint(const std::string& path, const Model& model) {
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
      std::copy(t->data.begin(), t->data.end(), buffer.begin() + p.offset);
    }
  };
  fill(state.params, "", true);
  fill(state.adam_m, "optim.exp_avg.", false);
  fill(state.adam_v, "optim.exp_avg_sq.", false);
  if (const NamedTensor* q = file.find("groupdro.q"))
    state.q.assign(q->data.begin(), q->data.end());
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
  return state;
}

}  // namespace hetdro

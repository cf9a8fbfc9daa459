// Inference in chunks on a backend: encoder (with the latent activation), classifier, argmax.
// Its buffers are planned once for chunks of up to `max_rows` samples of any group.
#pragma once

#include <cstdint>
#include <vector>

#include "hetdro/backend.h"
#include "hetdro/model.h"

namespace hetdro {

class Predictor {
 public:
  Predictor(const Model& model, Backend<float>& backend, int max_rows);

  // Predicted classes of n samples of group g whose features x are in backend memory.
  std::vector<int32_t> predict(const float* params, int g, const float* x, int64_t n);
  // The same for features on the host, uploaded a chunk at a time.
  std::vector<int32_t> predict_host(const float* params, int g, const float* x, int64_t n);
  // Class probabilities [n, C] and predicted classes [n] of n samples of group g whose
  // features are on the host.
  void probabilities_host(const float* params, int g, const float* x, int64_t n,
                          std::vector<float>& probs, std::vector<int32_t>& classes);
  // The latents z [n, k] (after the latent activation) of n samples of group g in backend
  // memory, copied to the host.
  std::vector<float> latents(const float* params, int g, const float* x, int64_t n);

 private:
  void layout(Arena& arena);
  const int32_t* chunk(const float* params, int g, const float* x, int n);

  const Model& model_;
  Backend<float>& be_;
  int max_rows_;
  Buffer<std::byte> block_;
  std::vector<EncoderBuffers<float>> enc_;  // one per group, overlapping: never live at once
  ClassifierBuffers<float> cls_;
  float *input_ = nullptr, *z_ = nullptr, *logits_ = nullptr, *probs_ = nullptr;
  int32_t* pred_ = nullptr;
};

}  // namespace hetdro

// The model's parameter layout in one flat buffer, and the forward and backward passes of the
// encoders (with the latent activation) and the shared classifier, composed from the ops of a
// Backend<T>. Templated on float (training) and double (the gradient checks).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hetdro/backend.h"
#include "hetdro/config.h"

namespace hetdro {

// One named tensor inside the flat parameter buffer; names and shapes follow docs/DESIGN.md §4.
struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0, size = 0;
};

// A linear layer's place in the flat buffer: weight [out,in] at w, bias [out] at b.
struct LinearLayer {
  int in = 0, out = 0;
  int64_t w = 0, b = 0;
};

struct EncoderLayout {
  Encoder kind = Encoder::cnn;
  // cnn: conv1 (1→c1), conv2 (c1→c2), 2x2 max-pool, sigmoid, fc (→ latent).
  int h = 0, w = 0, c1 = 0, c2 = 0, k = 0;
  int64_t conv1_w = 0, conv1_b = 0, conv2_w = 0, conv2_b = 0;
  int h1() const { return h - k + 1; }
  int w1() const { return w - k + 1; }
  int h2() const { return h1() - k + 1; }
  int w2() const { return w1() - k + 1; }
  int hp() const { return h2() / 2; }
  int wp() const { return w2() / 2; }
  // mlp: linear → ReLU → … → linear; for cnn, layers holds the one fc layer.
  std::vector<LinearLayer> layers;
  int64_t input_size() const;  // floats per sample
  // The shape of one sample as the encoder takes it: {1,H,W} (cnn) or {d} (mlp).
  std::vector<int64_t> sample_shape() const;
};

// One encoder's scratch in backend memory, for batches of up to `rows` samples: what its forward
// keeps for the backward, and the backward's own scratch (null when planned for inference).
template <typename T>
struct EncoderBuffers {
  T *a1 = nullptr, *a2 = nullptr, *act = nullptr;             // cnn: convs, sigmoid(pool(a2))
  std::vector<T*> hidden;                                     // mlp: post-ReLU
  T *grad_a = nullptr, *grad_b = nullptr, *dz_pre = nullptr;  // backward scratch
};

template <typename T>
struct ClassifierBuffers {
  T* hidden = nullptr;  // mlp2: post-ReLU hidden layer
  T *grad_post = nullptr, *grad_hidden = nullptr;
};

class Model {
 public:
  // sample_shapes[g]: {1,H,W} for a cnn group, {d} for an mlp group.
  Model(const Config& config, const std::vector<std::vector<int64_t>>& sample_shapes);

  const std::vector<ParamInfo>& params() const { return params_; }
  int64_t size() const { return size_; }
  int latent_dim() const { return latent_; }
  int classes() const { return classes_; }
  int groups() const { return int(encoders_.size()); }
  const EncoderLayout& encoder(int g) const { return encoders_[g]; }
  int64_t anchor_mean() const { return anchor_mean_; }  // [C,k]
  int64_t anchor_chol() const { return anchor_chol_; }  // [C,k,k]
  // The tensor holding flat index i.
  const ParamInfo& param_at(int64_t i) const;

  // PyTorch's default initialisation (U(±1/√fan_in)) for layers; anchors m = 0 (or N(0,1)),
  // L = scale·I. Seeded. On the host: the caller uploads the result.
  template <typename T>
  void init(T* params, uint64_t seed) const;

  // Lays out group g's encoder scratch for `rows` samples (Arena: see backend.h).
  template <typename T>
  void plan_encoder(Arena& arena, int g, int rows, bool backward, EncoderBuffers<T>& b) const;
  template <typename T>
  void plan_classifier(Arena& arena, int rows, bool backward, ClassifierBuffers<T>& b) const;

  // x [n, input_size] → z [n,k], after the latent activation.
  template <typename T>
  void encoder_forward(Backend<T>& be, int g, const T* params, const T* x, int n, T* z,
                       const EncoderBuffers<T>& b) const;
  // Accumulates parameter gradients from dz [n,k]; needs the forward's z and buffers.
  template <typename T>
  void encoder_backward(Backend<T>& be, int g, const T* params, T* grads, const T* x, int n,
                        const T* z, const T* dz, const EncoderBuffers<T>& b) const;

  // z [n,k] → logits [n,C].
  template <typename T>
  void classifier_forward(Backend<T>& be, const T* params, const T* z, int n, T* logits,
                          const ClassifierBuffers<T>& b) const;
  // Accumulates into the classifier's gradients and into dz [n,k].
  template <typename T>
  void classifier_backward(Backend<T>& be, const T* params, T* grads, const T* z, int n,
                           const T* dlogits, T* dz, const ClassifierBuffers<T>& b) const;

 private:
  int64_t add(const std::string& name, std::vector<int64_t> shape);
  LinearLayer add_linear(const std::string& prefix, int in, int out);

  std::vector<ParamInfo> params_;
  int64_t size_ = 0;
  int latent_ = 0, classes_ = 0;
  bool latent_relu_ = false;
  std::vector<EncoderLayout> encoders_;
  std::vector<LinearLayer> classifier_;
  int64_t anchor_mean_ = 0, anchor_chol_ = 0;
  AnchorMeanInit anchor_mean_init_ = AnchorMeanInit::zero;
  double anchor_scale_ = 1.0;
};

}  // namespace hetdro

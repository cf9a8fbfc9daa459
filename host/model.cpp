// The model: flat parameter layout (names as DESIGN §4), init, and the encoder and classifier
// passes composed from the CPU ops.
#include "hetdro/model.h"

#include <algorithm>
#include <cmath>

#include "hetdro/check.h"
#include "hetdro/ops.h"
#include "hetdro/rng.h"

namespace hetdro {

namespace ops = hetdro::cpu;

int64_t EncoderLayout::input_size() const {
  return kind == "cnn" ? int64_t(h) * w : layers.front().in;
}

int64_t Model::add(const std::string& name, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  params_.push_back({name, std::move(shape), size_, n});
  size_ += n;
  return size_ - n;
}

LinearLayer Model::add_linear(const std::string& prefix, int in, int out) {
  LinearLayer l{in, out, 0, 0};
  l.w = add(prefix + ".weight", {out, in});
  l.b = add(prefix + ".bias", {out});
  return l;
}

Model::Model(const Config& config, const std::vector<std::vector<int64_t>>& sample_shapes)
    : latent_(config.model.latent_dim),
      classes_(config.classes),
      anchor_mean_init_(config.model.anchor_mean_init),
      anchor_scale_(config.model.anchor_scale) {
  HETDRO_ASSERT(sample_shapes.size() == config.groups.size());
  for (size_t g = 0; g < config.groups.size(); ++g) {
    const GroupConfig& gc = config.groups[g];
    const std::string prefix = "encoders." + gc.name;
    EncoderLayout e;
    e.kind = gc.encoder;
    if (e.kind == "cnn") {
      e.h = int(sample_shapes[g][1]);
      e.w = int(sample_shapes[g][2]);
      e.c1 = gc.channels[0];
      e.c2 = gc.channels[1];
      e.k = gc.kernel;
      e.conv1_w = add(prefix + ".conv1.weight", {e.c1, 1, e.k, e.k});
      e.conv1_b = add(prefix + ".conv1.bias", {e.c1});
      e.conv2_w = add(prefix + ".conv2.weight", {e.c2, e.c1, e.k, e.k});
      e.conv2_b = add(prefix + ".conv2.bias", {e.c2});
      e.layers.push_back(add_linear(prefix + ".fc", e.c2 * e.hp() * e.wp(), latent_));
    } else {
      int in = int(sample_shapes[g][0]);
      std::vector<int> dims = gc.hidden;
      dims.push_back(latent_);
      for (size_t i = 0; i < dims.size(); ++i) {
        e.layers.push_back(add_linear(prefix + ".layers." + std::to_string(i), in, dims[i]));
        in = dims[i];
      }
    }
    encoders_.push_back(e);
  }
  if (config.model.classifier == "linear") {
    classifier_.push_back(add_linear("classifier", latent_, classes_));
  } else {
    classifier_.push_back(
        add_linear("classifier.layers.0", latent_, config.model.classifier_hidden));
    classifier_.push_back(
        add_linear("classifier.layers.1", config.model.classifier_hidden, classes_));
  }
  anchor_mean_ = add("anchors.mean", {classes_, latent_});
  anchor_chol_ = add("anchors.chol", {classes_, latent_, latent_});
}

template <typename T>
void Model::init(T* params, uint64_t seed) const {
  std::fill(params, params + size_, T(0));
  const uint64_t stream = splitmix64(seed ^ 0x1A1Dull);
  // U(±1/√fan_in) for every weight and bias: PyTorch's default for Conv2d and Linear.
  for (const ParamInfo& p : params_) {
    if (p.name.rfind("anchors.", 0) == 0) continue;
    const bool is_weight =
        p.name.size() > 7 && p.name.compare(p.name.size() - 7, 7, ".weight") == 0;
    const ParamInfo& w =
        is_weight ? p : *std::find_if(params_.begin(), params_.end(), [&](auto& q) {
          return q.offset + q.size == p.offset;  // the bias follows its weight
        });
    int64_t fan_in = 1;
    for (size_t i = 1; i < w.shape.size(); ++i) fan_in *= w.shape[i];
    const double bound = 1.0 / std::sqrt(double(fan_in));
    for (int64_t i = 0; i < p.size; ++i)
      params[p.offset + i] = T((2 * uniform01(stream, uint64_t(p.offset + i)) - 1) * bound);
  }
  for (int c = 0; c < classes_; ++c) {
    for (int i = 0; i < latent_; ++i) {
      if (anchor_mean_init_ == "random")
        params[anchor_mean_ + c * latent_ + i] =
            T(normal01(stream ^ 0xA0C4ull, uint64_t(c * latent_ + i)));
      params[anchor_chol_ + (int64_t(c) * latent_ + i) * latent_ + i] = T(anchor_scale_);
    }
  }
}

template <typename T>
void Model::encoder_forward(int g, const T* P, const T* x, int n, T* z,
                            EncoderActivations<T>& act) const {
  const EncoderLayout& e = encoders_[g];
  if (e.kind == "cnn") {
    act.a1.resize(size_t(n) * e.c1 * e.h1() * e.w1());
    act.a2.resize(size_t(n) * e.c2 * e.h2() * e.w2());
    act.pooled.resize(size_t(n) * e.c2 * e.hp() * e.wp());
    act.act.resize(act.pooled.size());
    ops::conv2d_forward(act.a1.data(), x, P + e.conv1_w, P + e.conv1_b, n, 1, e.h, e.w, e.c1, e.k,
                        e.k);
    ops::conv2d_forward(act.a2.data(), act.a1.data(), P + e.conv2_w, P + e.conv2_b, n, e.c1, e.h1(),
                        e.w1(), e.c2, e.k, e.k);
    ops::maxpool2x2_forward(act.pooled.data(), act.a2.data(), n, e.c2, e.h2(), e.w2());
    ops::sigmoid_forward(act.act.data(), act.pooled.data(), int64_t(act.pooled.size()));
    const LinearLayer& fc = e.layers[0];
    ops::linear_forward(z, act.act.data(), P + fc.w, P + fc.b, n, fc.in, fc.out);
    return;
  }
  act.hidden.resize(e.layers.size() - 1);
  const T* in = x;
  for (size_t i = 0; i < e.layers.size(); ++i) {
    const LinearLayer& l = e.layers[i];
    const bool last = i + 1 == e.layers.size();
    T* out = z;
    if (!last) {
      act.hidden[i].resize(size_t(n) * l.out);
      out = act.hidden[i].data();
    }
    ops::linear_forward(out, in, P + l.w, P + l.b, n, l.in, l.out);
    if (!last) ops::relu_forward(out, out, int64_t(n) * l.out);
    in = out;
  }
}

template <typename T>
void Model::encoder_backward(int g, const T* P, T* G, const T* x, int n, const T* dz,
                             EncoderActivations<T>& act) const {
  const EncoderLayout& e = encoders_[g];
  auto zeroed = [](std::vector<T>& v, size_t count) {
    v.assign(count, T(0));
    return v.data();
  };
  if (e.kind == "cnn") {
    const LinearLayer& fc = e.layers[0];
    T* d_act = zeroed(act.grad_a, act.act.size());
    ops::linear_backward(d_act, G + fc.w, G + fc.b, dz, act.act.data(), P + fc.w, n, fc.in, fc.out);
    T* d_pooled = zeroed(act.grad_b, act.pooled.size());
    ops::sigmoid_backward(d_pooled, d_act, act.act.data(), int64_t(act.act.size()));
    T* d_a2 = zeroed(act.grad_a, act.a2.size());
    ops::maxpool2x2_backward(d_a2, d_pooled, act.a2.data(), n, e.c2, e.h2(), e.w2());
    T* d_a1 = zeroed(act.grad_b, act.a1.size());
    ops::conv2d_backward(d_a1, G + e.conv2_w, G + e.conv2_b, d_a2, act.a1.data(), P + e.conv2_w, n,
                         e.c1, e.h1(), e.w1(), e.c2, e.k, e.k);
    ops::conv2d_backward<T>(nullptr, G + e.conv1_w, G + e.conv1_b, d_a1, x, P + e.conv1_w, n, 1,
                            e.h, e.w, e.c1, e.k, e.k);
    return;
  }
  // mlp, last layer first; grad_a holds the gradient flowing into the current layer's output.
  std::vector<T> upstream(dz, dz + size_t(n) * latent_);
  for (size_t i = e.layers.size(); i-- > 0;) {
    const LinearLayer& l = e.layers[i];
    const T* in = i == 0 ? x : act.hidden[i - 1].data();
    T* d_in = i == 0 ? nullptr : zeroed(act.grad_a, size_t(n) * l.in);
    ops::linear_backward(d_in, G + l.w, G + l.b, upstream.data(), in, P + l.w, n, l.in, l.out);
    if (i == 0) break;
    upstream.assign(size_t(n) * l.in, T(0));
    ops::relu_backward(upstream.data(), d_in, act.hidden[i - 1].data(), int64_t(n) * l.in);
  }
}

template <typename T>
void Model::classifier_forward(const T* P, const T* z, int n, T* logits,
                               ClassifierActivations<T>& act) const {
  if (classifier_.size() == 1) {
    const LinearLayer& l = classifier_[0];
    ops::linear_forward(logits, z, P + l.w, P + l.b, n, l.in, l.out);
    return;
  }
  const LinearLayer &l0 = classifier_[0], &l1 = classifier_[1];
  act.hidden.resize(size_t(n) * l0.out);
  ops::linear_forward(act.hidden.data(), z, P + l0.w, P + l0.b, n, l0.in, l0.out);
  ops::relu_forward(act.hidden.data(), act.hidden.data(), int64_t(act.hidden.size()));
  ops::linear_forward(logits, act.hidden.data(), P + l1.w, P + l1.b, n, l1.in, l1.out);
}

template <typename T>
void Model::classifier_backward(const T* P, T* G, const T* z, int n, const T* dlogits, T* dz,
                                ClassifierActivations<T>& act) const {
  if (classifier_.size() == 1) {
    const LinearLayer& l = classifier_[0];
    ops::linear_backward(dz, G + l.w, G + l.b, dlogits, z, P + l.w, n, l.in, l.out);
    return;
  }
  const LinearLayer &l0 = classifier_[0], &l1 = classifier_[1];
  std::vector<T> d_post(act.hidden.size(), T(0));
  ops::linear_backward(d_post.data(), G + l1.w, G + l1.b, dlogits, act.hidden.data(), P + l1.w, n,
                       l1.in, l1.out);
  act.grad_hidden.assign(act.hidden.size(), T(0));
  ops::relu_backward(act.grad_hidden.data(), d_post.data(), act.hidden.data(),
                     int64_t(act.hidden.size()));
  ops::linear_backward(dz, G + l0.w, G + l0.b, act.grad_hidden.data(), z, P + l0.w, n, l0.in,
                       l0.out);
}

#define HETDRO_INSTANTIATE(T)                                                                     \
  template void Model::init(T*, uint64_t) const;                                                  \
  template void Model::encoder_forward(int, const T*, const T*, int, T*, EncoderActivations<T>&)  \
      const;                                                                                      \
  template void Model::encoder_backward(int, const T*, T*, const T*, int, const T*,               \
                                        EncoderActivations<T>&) const;                            \
  template void Model::classifier_forward(const T*, const T*, int, T*, ClassifierActivations<T>&) \
      const;                                                                                      \
  template void Model::classifier_backward(const T*, T*, const T*, int, const T*, T*,             \
                                           ClassifierActivations<T>&) const;
HETDRO_INSTANTIATE(float)
HETDRO_INSTANTIATE(double)
#undef HETDRO_INSTANTIATE

}  // namespace hetdro

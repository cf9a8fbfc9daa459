// The model: flat parameter layout (names as docs/DESIGN.md §4), init, and the encoder and
// classifier passes composed from a backend's ops.
#include "hetdro/model.h"

#include <algorithm>
#include <cmath>

#include "hetdro/check.h"
#include "hetdro/rng.h"

namespace hetdro {

int64_t EncoderLayout::input_size() const {
  return kind == Encoder::cnn ? int64_t(h) * w : layers.front().in;
}

std::vector<int64_t> EncoderLayout::sample_shape() const {
  if (kind == Encoder::cnn) return {1, h, w};
  return {layers.front().in};
}

const ParamInfo& Model::param_at(int64_t i) const {
  HETDRO_ASSERT(i >= 0 && i < size_);
  return *std::find_if(params_.begin(), params_.end(),
                       [&](const ParamInfo& p) { return i < p.offset + p.size; });
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
      latent_relu_(config.model.latent_activation == LatentActivation::relu),
      anchor_mean_init_(config.model.anchor_mean_init),
      anchor_scale_(config.model.anchor_scale) {
  HETDRO_ASSERT(sample_shapes.size() == config.groups.size());
  for (size_t g = 0; g < config.groups.size(); ++g) {
    const GroupConfig& gc = config.groups[g];
    const std::string prefix = "encoders." + gc.name;
    EncoderLayout e;
    e.kind = gc.encoder;
    if (e.kind == Encoder::cnn) {
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
  if (config.model.classifier == Classifier::linear) {
    classifier_.push_back(add_linear("classifier", latent_, classes_));
  } else {
    classifier_.push_back(
        add_linear("classifier.layers.0", latent_, config.model.classifier_hidden));
    classifier_.push_back(
        add_linear("classifier.layers.1", config.model.classifier_hidden, classes_));
  }
  anchor_mean_ = add("anchors.mean", {classes_, latent_});
  anchor_chol_ = add("anchors.chol", {classes_, latent_, latent_});
  // Each size is bounded by the config's checks, but their products can still be absurd: say
  // which tensor before anything is allocated (four copies: parameters, gradients, Adam's two).
  constexpr int64_t kMaxParams = int64_t(1) << 30;
  if (size_ > kMaxParams) {
    const ParamInfo& big = *std::max_element(params_.begin(), params_.end(),
                                             [](auto& a, auto& b) { return a.size < b.size; });
    std::string shape;
    for (int64_t d : big.shape) shape += (shape.empty() ? "" : "x") + std::to_string(d);
    input_error(
        "{}: the model would have {} parameters, more than the {} allowed ({} GiB for the "
        "parameters, gradients and Adam state); the largest tensor is {} [{}]. Lower "
        "model.latent_dim, data.classes, or the group's channels or hidden sizes",
        config.path, size_, kMaxParams, size_ * 16 / (int64_t(1) << 30), big.name, shape);
  }
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
      if (anchor_mean_init_ == AnchorMeanInit::random)
        params[anchor_mean_ + c * latent_ + i] =
            T(normal01(stream ^ 0xA0C4ull, uint64_t(c * latent_ + i)));
      params[anchor_chol_ + (int64_t(c) * latent_ + i) * latent_ + i] = T(anchor_scale_);
    }
  }
}

template <typename T>
void Model::plan_encoder(Arena& arena, int g, int rows, bool backward, EncoderBuffers<T>& b) const {
  const EncoderLayout& e = encoders_[g];
  const int64_t n = rows;
  b.hidden.clear();
  if (e.kind == Encoder::cnn) {
    const int64_t a1 = n * e.c1 * e.h1() * e.w1(), a2 = n * e.c2 * e.h2() * e.w2();
    const int64_t pooled = n * e.c2 * e.hp() * e.wp();
    b.a1 = arena.take<T>(a1);
    b.a2 = arena.take<T>(a2);
    b.act = arena.take<T>(pooled);  // sigmoid(pool(a2)): the pool is fused with the sigmoid
    if (backward) {  // the backward alternates: grad_a holds d(act), then d(a1); grad_b d(a2)
      b.grad_a = arena.take<T>(std::max(pooled, a1));
      b.grad_b = arena.take<T>(a2);
    }
  } else {
    int64_t widest = 0;
    for (size_t i = 0; i + 1 < e.layers.size(); ++i) {
      b.hidden.push_back(arena.take<T>(n * e.layers[i].out));
      widest = std::max<int64_t>(widest, e.layers[i].out);
    }
    if (backward) {
      b.grad_a = arena.take<T>(n * widest);
      b.grad_b = arena.take<T>(n * widest);
    }
  }
  if (backward && latent_relu_) b.dz_pre = arena.take<T>(n * latent_);
}

template <typename T>
void Model::plan_classifier(Arena& arena, int rows, bool backward, ClassifierBuffers<T>& b) const {
  if (classifier_.size() == 1) return;
  const int64_t size = int64_t(rows) * classifier_[0].out;
  b.hidden = arena.take<T>(size);
  if (backward) {
    b.grad_post = arena.take<T>(size);
    b.grad_hidden = arena.take<T>(size);
  }
}

template <typename T>
void Model::encoder_forward(Backend<T>& be, int g, const T* P, const T* x, int n, T* z,
                            const EncoderBuffers<T>& b) const {
  const EncoderLayout& e = encoders_[g];
  if (e.kind == Encoder::cnn) {
    be.conv2d_forward(b.a1, x, P + e.conv1_w, P + e.conv1_b, n, 1, e.h, e.w, e.c1, e.k, e.k);
    be.conv2d_forward(b.a2, b.a1, P + e.conv2_w, P + e.conv2_b, n, e.c1, e.h1(), e.w1(), e.c2, e.k,
                      e.k);
    be.maxpool2x2_sigmoid_forward(b.act, b.a2, n, e.c2, e.h2(), e.w2());
    const LinearLayer& fc = e.layers[0];
    be.linear_forward(z, b.act, P + fc.w, P + fc.b, n, fc.in, fc.out);
  } else {
    const T* in = x;
    for (size_t i = 0; i < e.layers.size(); ++i) {
      const LinearLayer& l = e.layers[i];
      const bool last = i + 1 == e.layers.size();
      T* out = last ? z : b.hidden[i];
      be.linear_forward(out, in, P + l.w, P + l.b, n, l.in, l.out);
      if (!last) be.relu_forward(out, out, int64_t(n) * l.out);
      in = out;
    }
  }
  if (latent_relu_) be.relu_forward(z, z, int64_t(n) * latent_);  // docs/DESIGN.md §1
}

template <typename T>
void Model::encoder_backward(Backend<T>& be, int g, const T* P, T* G, const T* x, int n, const T* z,
                             const T* dz, const EncoderBuffers<T>& b) const {
  const EncoderLayout& e = encoders_[g];
  auto zeroed = [&](T* p, int64_t count) {
    be.zero(p, size_t(count) * sizeof(T));
    return p;
  };
  if (latent_relu_) {
    be.relu_backward(zeroed(b.dz_pre, int64_t(n) * latent_), dz, z, int64_t(n) * latent_);
    dz = b.dz_pre;
  }
  if (e.kind == Encoder::cnn) {
    const int64_t a1 = int64_t(n) * e.c1 * e.h1() * e.w1(),
                  a2 = int64_t(n) * e.c2 * e.h2() * e.w2();
    const int64_t pooled = int64_t(n) * e.c2 * e.hp() * e.wp();
    const LinearLayer& fc = e.layers[0];
    T* d_act = zeroed(b.grad_a, pooled);
    be.linear_backward(d_act, G + fc.w, G + fc.b, dz, b.act, P + fc.w, n, fc.in, fc.out);
    T* d_a2 = zeroed(b.grad_b, a2);
    be.maxpool2x2_sigmoid_backward(d_a2, d_act, b.act, b.a2, n, e.c2, e.h2(), e.w2());
    T* d_a1 = zeroed(b.grad_a, a1);
    be.conv2d_backward(d_a1, G + e.conv2_w, G + e.conv2_b, d_a2, b.a1, P + e.conv2_w, n, e.c1,
                       e.h1(), e.w1(), e.c2, e.k, e.k);
    be.conv2d_backward(nullptr, G + e.conv1_w, G + e.conv1_b, d_a1, x, P + e.conv1_w, n, 1, e.h,
                       e.w, e.c1, e.k, e.k);
    return;
  }
  // mlp, last layer first: `upstream` is the gradient at the current layer's output; grad_a
  // takes the gradient at its input, grad_b the same after the ReLU below it.
  const T* upstream = dz;
  for (size_t i = e.layers.size(); i-- > 0;) {
    const LinearLayer& l = e.layers[i];
    const T* in = i == 0 ? x : b.hidden[i - 1];
    T* d_in = i == 0 ? nullptr : zeroed(b.grad_a, int64_t(n) * l.in);
    be.linear_backward(d_in, G + l.w, G + l.b, upstream, in, P + l.w, n, l.in, l.out);
    if (i == 0) break;
    be.relu_backward(zeroed(b.grad_b, int64_t(n) * l.in), d_in, b.hidden[i - 1], int64_t(n) * l.in);
    upstream = b.grad_b;
  }
}

template <typename T>
void Model::classifier_forward(Backend<T>& be, const T* P, const T* z, int n, T* logits,
                               const ClassifierBuffers<T>& b) const {
  if (classifier_.size() == 1) {
    const LinearLayer& l = classifier_[0];
    be.linear_forward(logits, z, P + l.w, P + l.b, n, l.in, l.out);
    return;
  }
  const LinearLayer &l0 = classifier_[0], &l1 = classifier_[1];
  be.linear_forward(b.hidden, z, P + l0.w, P + l0.b, n, l0.in, l0.out);
  be.relu_forward(b.hidden, b.hidden, int64_t(n) * l0.out);
  be.linear_forward(logits, b.hidden, P + l1.w, P + l1.b, n, l1.in, l1.out);
}

template <typename T>
void Model::classifier_backward(Backend<T>& be, const T* P, T* G, const T* z, int n,
                                const T* dlogits, T* dz, const ClassifierBuffers<T>& b) const {
  if (classifier_.size() == 1) {
    const LinearLayer& l = classifier_[0];
    be.linear_backward(dz, G + l.w, G + l.b, dlogits, z, P + l.w, n, l.in, l.out);
    return;
  }
  const LinearLayer &l0 = classifier_[0], &l1 = classifier_[1];
  const int64_t size = int64_t(n) * l0.out;
  be.zero(b.grad_post, size_t(size) * sizeof(T));
  be.linear_backward(b.grad_post, G + l1.w, G + l1.b, dlogits, b.hidden, P + l1.w, n, l1.in,
                     l1.out);
  be.zero(b.grad_hidden, size_t(size) * sizeof(T));
  be.relu_backward(b.grad_hidden, b.grad_post, b.hidden, size);
  be.linear_backward(dz, G + l0.w, G + l0.b, b.grad_hidden, z, P + l0.w, n, l0.in, l0.out);
}

#define HETDRO_INSTANTIATE(T)                                                                      \
  template void Model::init(T*, uint64_t) const;                                                   \
  template void Model::plan_encoder(Arena&, int, int, bool, EncoderBuffers<T>&) const;             \
  template void Model::plan_classifier(Arena&, int, bool, ClassifierBuffers<T>&) const;            \
  template void Model::encoder_forward(Backend<T>&, int, const T*, const T*, int, T*,              \
                                       const EncoderBuffers<T>&) const;                            \
  template void Model::encoder_backward(Backend<T>&, int, const T*, T*, const T*, int, const T*,   \
                                        const T*, const EncoderBuffers<T>&) const;                 \
  template void Model::classifier_forward(Backend<T>&, const T*, const T*, int, T*,                \
                                          const ClassifierBuffers<T>&) const;                      \
  template void Model::classifier_backward(Backend<T>&, const T*, T*, const T*, int, const T*, T*, \
                                           const ClassifierBuffers<T>&) const;
HETDRO_INSTANTIATE(float)
HETDRO_INSTANTIATE(double)
#undef HETDRO_INSTANTIATE

}  // namespace hetdro

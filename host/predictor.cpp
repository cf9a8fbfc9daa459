// Inference in fixed-size chunks through the backend's ops; only the predicted classes come
// back to the host.
#include "hetdro/predictor.h"

#include <algorithm>  // std::max, std::min

namespace hetdro {

Predictor::Predictor(const Model& model, Backend<float>& backend, int max_rows)
    : model_(model), be_(backend), max_rows_(max_rows) {
  block_ = plan(be_, "evaluation's workspace", "lower train.eval_batch",
                [this](Arena& a) { layout(a); });
}

void Predictor::layout(Arena& a) {
  const int64_t rows = max_rows_;
  int64_t widest = 0;
  for (int g = 0; g < model_.groups(); ++g)
    widest = std::max(widest, model_.encoder(g).input_size());
  input_ = a.take<float>(rows * widest);
  z_ = a.take<float>(rows * model_.latent_dim());
  logits_ = a.take<float>(rows * model_.classes());
  probs_ = a.take<float>(rows * model_.classes());
  pred_ = a.take<int32_t>(rows);
  model_.plan_classifier(a, max_rows_, false, cls_);
  enc_.assign(model_.groups(), {});
  const size_t start = a.mark();
  size_t end = start;
  for (int g = 0; g < model_.groups(); ++g) {
    a.rewind(start);
    model_.plan_encoder(a, g, max_rows_, false, enc_[g]);
    end = std::max(end, a.mark());
  }
  a.skip_to(end);
}

const int32_t* Predictor::chunk(const float* params, int g, const float* x, int n) {
  model_.encoder_forward(be_, g, params, x, n, z_, enc_[g]);
  model_.classifier_forward(be_, params, z_, n, logits_, cls_);
  be_.argmax_rows(pred_, logits_, n, model_.classes());
  return pred_;
}

std::vector<int32_t> Predictor::predict(const float* params, int g, const float* x, int64_t n) {
  const int64_t width = model_.encoder(g).input_size();
  std::vector<int32_t> out(n);
  for (int64_t start = 0; start < n; start += max_rows_) {
    const int rows = int(std::min<int64_t>(max_rows_, n - start));
    be_.download(out.data() + start, chunk(params, g, x + start * width, rows),
                 size_t(rows) * sizeof(int32_t));
  }
  return out;
}

std::vector<int32_t> Predictor::predict_host(const float* params, int g, const float* x,
                                             int64_t n) {
  const int64_t width = model_.encoder(g).input_size();
  std::vector<int32_t> out(n);
  for (int64_t start = 0; start < n; start += max_rows_) {
    const int rows = int(std::min<int64_t>(max_rows_, n - start));
    be_.upload(input_, x + start * width, size_t(rows) * width * sizeof(float));
    be_.download(out.data() + start, chunk(params, g, input_, rows),
                 size_t(rows) * sizeof(int32_t));
  }
  return out;
}

void Predictor::probabilities_host(const float* params, int g, const float* x, int64_t n,
                                   std::vector<float>& probs, std::vector<int32_t>& classes) {
  const int64_t width = model_.encoder(g).input_size(), C = model_.classes();
  probs.resize(size_t(n * C));
  classes.resize(size_t(n));
  for (int64_t start = 0; start < n; start += max_rows_) {
    const int rows = int(std::min<int64_t>(max_rows_, n - start));
    be_.upload(input_, x + start * width, size_t(rows) * width * sizeof(float));
    be_.download(classes.data() + start, chunk(params, g, input_, rows),
                 size_t(rows) * sizeof(int32_t));
    be_.softmax_forward(probs_, logits_, rows, int(C));
    be_.download(probs.data() + start * C, probs_, size_t(rows * C) * sizeof(float));
  }
}

std::vector<float> Predictor::latents(const float* params, int g, const float* x, int64_t n) {
  const int64_t width = model_.encoder(g).input_size(), k = model_.latent_dim();
  std::vector<float> out(size_t(n * k));
  for (int64_t start = 0; start < n; start += max_rows_) {
    const int rows = int(std::min<int64_t>(max_rows_, n - start));
    model_.encoder_forward(be_, g, params, x + start * width, rows, z_, enc_[g]);
    be_.download(out.data() + start * k, z_, size_t(rows * k) * sizeof(float));
  }
  return out;
}

}  // namespace hetdro

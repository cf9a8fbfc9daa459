// The tiny two-group model of the gradient and exactness tests: a cnn on 6x6 images and an mlp on
// 5-d vectors, latent 3, every loss term weighted large enough to weigh in the checks.
#pragma once

#include "hetdro/config.h"

namespace hetdro::testing {

inline Config tiny_config(int classes, Fit fit, Objective objective) {
  Config c;
  c.classes = classes;
  GroupConfig img;
  img.name = "img";
  img.encoder = Encoder::cnn;
  img.channels = {2, 3};
  img.kernel = 2;
  GroupConfig vec;
  vec.name = "vec";
  vec.encoder = Encoder::mlp;
  vec.hidden = {4};
  c.groups = {img, vec};
  c.model.latent_dim = 3;
  c.train.fit = fit;
  c.train.objective = objective;
  c.train.samples_per_anchor = 3;
  c.train.lambda_fit = 0.3;
  c.train.lambda_sep = 0.5;
  c.train.eps = 1e-3;
  return c;
}

}  // namespace hetdro::testing

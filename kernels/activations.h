// The elementwise formulas of the sigmoid and ReLU kernels, shared with the CPU tests that check
// them against the reference (host/ops/activations.cpp).
#pragma once

#include <cmath>  // std::exp (host); CUDA's device overload is found by the same name

#include "hetdro/hd.h"

namespace hetdro::cuda {

// exp(−x) overflows to inf for very negative x, which still gives the right limit 0; the
// reference computes the same expression.
template <typename T>
HETDRO_HD inline T sigmoid(T x) {
  using std::exp;
  return T(1) / (T(1) + exp(-x));
}

// dL/dx from dL/dy and the forward's output y = sigmoid(x).
template <typename T>
HETDRO_HD inline T sigmoid_grad(T dy, T y) {
  return dy * y * (T(1) - y);
}

// A NaN input gives 0 (NaN > 0 is false), as in the reference.
template <typename T>
HETDRO_HD inline T relu(T x) {
  return x > T(0) ? x : T(0);
}

// The gradient passes where the forward's output is positive.
template <typename T>
HETDRO_HD inline T relu_grad(T dy, T y) {
  return y > T(0) ? dy : T(0);
}

}  // namespace hetdro::cuda

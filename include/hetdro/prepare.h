// `hetdro prepare`: the built-in datasets, written as NPY files plus a ready config.toml.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hetdro {

inline const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// hetero-fashion (docs/DESIGN.md §5): full28, low16 and proj64 from Fashion-MNIST's four gzipped
// IDX files in `source_dir`. Reads and checks every input before it writes anything.
void prepare_hetero_fashion(const std::string& out_dir, const std::string& source_dir,
                            uint64_t seed = 0);

// A small seeded dataset with three groups in different feature spaces (8x8 images and
// vectors of two lengths) and learnable classes; it trains in seconds. `classes` clusters;
// `per_class` training samples of each class in every group (0: 1000, 600 and 200 samples in
// the three groups). Test sets hold max(300, 2·classes) samples per group. The defaults write
// the same bytes as ever.
void prepare_synthetic(const std::string& out_dir, uint64_t seed = 0, int classes = 5,
                       int64_t per_class = 0);

// Bilinear resize of one image, as PyTorch's interpolate(align_corners=False, antialias=False).
void resize_bilinear(const float* in, int h, int w, float* out, int out_h, int out_w);

// The fixed Gaussian projection [in_dim, out_dim], entries N(0,1)/√in_dim, seeded.
std::vector<float> projection_matrix(int in_dim, int out_dim, uint64_t seed);

}  // namespace hetdro

// File formats: NPY, IDX (plain or gzipped), CSV and safetensors. Every reader throws
// InputError naming the file and what was wrong (missing, bad magic, truncated payload,
// unsupported dtype, malformed header).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace hetdro {

// A dense row-major array. Readers of features convert to float32; uint8 scales to [0,1].
template <typename T>
struct Array {
  std::vector<int64_t> shape;
  std::vector<T> data;
  int64_t rows() const { return shape.empty() ? 0 : shape[0]; }
};

// --- NPY (format 1.0–3.0, little-endian, C order) ------------------------------------------
// Features: float32, float64 or uint8 (uint8 scaled by 1/255).
Array<float> read_npy_features(const std::string& path);
// Labels: int64, int32 or uint8, one dimension (or [n,1]).
std::vector<int32_t> read_npy_labels(const std::string& path);
void write_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape);
void write_npy(const std::string& path, const int32_t* data, const std::vector<int64_t>& shape);
void write_npy(const std::string& path, const uint8_t* data, const std::vector<int64_t>& shape);
void write_npy(const std::string& path, const double* data, const std::vector<int64_t>& shape);
// An NPY file's bytes before its payload (magic, version, padded header) for dtype `descr`
// ("<f4", "<i4", "|u1") and `shape`.
std::string npy_header(const char* descr, const std::vector<int64_t>& shape);

// --- NPZ: numpy's archive of named arrays (a zip of .npy files, stored uncompressed) --------
struct NpzArray {
  std::string name;  // the key numpy.load gives it
  std::vector<int64_t> shape;
  std::vector<float> f32;    // the data: f32 ...
  std::vector<int32_t> i32;  // ... or, when f32 is empty, i32
};
void write_npz(const std::string& path, const std::vector<NpzArray>& arrays);

// --- IDX (MNIST format), plain or gzipped (by content, not by name) ------------------------
// Only the unsigned-byte type (0x08) is accepted.
Array<uint8_t> read_idx(const std::string& path);

// --- CSV: numeric, one header row naming the columns --------------------------------------
struct CsvTable {
  Array<float> x;          // [n, feature columns]
  std::vector<int32_t> y;  // [n]; empty when the label column is absent and not required
};
// With require_label false, a file without `label_column` is all features (for `predict`).
CsvTable read_csv(const std::string& path, const std::string& label_column,
                  bool require_label = true);

// --- text files, written through a temporary file and a rename ---------------------------
void write_text_file(const std::string& path, const std::string& text);

// "60000x28x28": how every message shows a shape.
std::string shape_string(const std::vector<int64_t>& shape);

// --- safetensors: float32 tensors and string metadata --------------------------------------
struct NamedTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
};
// Writes to a temporary file beside `path` and renames it, so a failure leaves nothing
// half-written.
void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata);
struct SafetensorsFile {
  std::vector<NamedTensor> tensors;  // in file order
  std::map<std::string, std::string> metadata;
  const NamedTensor* find(const std::string& name) const;
};
SafetensorsFile read_safetensors(const std::string& path);

}  // namespace hetdro

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

// --- outputs: one rule for every file a command writes (docs/DESIGN.md §4, Outputs) -----
// Every file is written to NAME.tmp-<pid> beside it, synced, and renamed over NAME, with every
// write and the close checked. A file is replaced only when it is absent, empty, or holds what
// the command writes there; never a folder, device, FIFO, socket, a file the command reads, or
// any other file. A final symbolic link is followed: the file it names is checked and replaced.
struct OutputCheck {
  std::string option;    // the option that named the path ("--json"), or the command's file
  std::string expected;  // completes "expected ...": "a JSON file for bench-step's times"
  // Does a file starting with these bytes (at most 4096) hold what this command writes there?
  bool (*ours)(const std::string& head) = nullptr;
  // Files the command reads, and what each is ("the config"): never replaced.
  std::vector<std::pair<std::string, std::string>> reads;
};
// Checks `path` against the rule before any work is done; InputError naming the path, what it
// holds and what was expected when it may not be written.
void check_output(const std::string& path, const OutputCheck& check);
// Removes the temporary files (NAME.tmp-<pid>) that processes no longer running left in `dir`,
// and returns how many.
int remove_stale_temporaries(const std::string& dir);

// The whole of a text file a command reads; InputError when it is missing, not a regular file
// (a FIFO would block) or unreadable. `expected` completes "expected ...".
std::string read_text_file(const std::string& path, const std::string& expected);

// Writes through a temporary file and a rename. Refuses (InputError) a target that exists and is
// not a regular file; the target's other checks are the caller's (check_output, a run folder).
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

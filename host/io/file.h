// Internal to host/io: opening inputs with useful errors, sizes with overflow checks, and
// writing outputs through a temporary file so a failure never leaves half a file behind.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "hetdro/io.h"  // shape_string

namespace hetdro::io {

using hetdro::shape_string;

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the readers copy little-endian payloads straight into memory");

// The status of `path` (symbolic links followed); a path that cannot be looked up (a loop of
// links, a name too long, no permission) is InputError naming it.
std::filesystem::file_status lookup(const std::string& path);
// "a folder", "a FIFO", "a character device", ...: how messages name a kind of file.
const char* kind_of(std::filesystem::file_type type);
// Where writing `path` lands: the file a final symbolic link names, else `path` itself.
std::string output_target(const std::string& path);

// A file opened for reading; missing files, folders, anything but a regular file (a FIFO would
// block forever) and unreadable files become InputError.
// `expected` completes "file not found: expected ..." (e.g. "an NPY file of features").
class InputFile {
 public:
  InputFile(const std::string& path, const std::string& expected);
  ~InputFile();
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }
  // Reads up to n bytes; fewer only at the end of the file.
  size_t read(void* dst, size_t n);
  void seek(uint64_t offset);
  // The whole file from the current position.
  std::string read_rest();

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  uint64_t size_ = 0;
};

// One contiguous piece of an output file.
struct Bytes {
  const void* data;
  size_t size;
};

// Writes the pieces to `path + ".tmp-<pid>"` (beside the file a final symbolic link names),
// then renames it over the file; on any failure the temporary file is removed and an error
// thrown: InputError when the target exists and is not a regular file, std::runtime_error (an
// environment failure) when a write fails, since outputs are checked before the work starts.
void write_atomically(const std::string& path, const std::vector<Bytes>& pieces);

// The product of the dimensions; InputError naming the file when a dimension is negative or
// the payload (count times item_size bytes) would not fit in int64.
int64_t element_count(const std::vector<int64_t>& shape, const std::string& path,
                      int64_t item_size = 1);

// Every reader's rule for features (docs/DESIGN.md §4, Input files): a value rounds to the
// nearest float32; one that underflows becomes 0 or a subnormal, which is fine; one beyond
// float32's range (|x| > 3.4e38) becomes infinite, and the reader refuses it with this text.
inline float to_float32(double v) { return static_cast<float>(v); }
inline constexpr const char* kFloat32Range =
    "a finite number within float32's range (|x| <= 3.4e38; smaller values that underflow "
    "round to 0, which is fine)";

// Printable ASCII kept, other bytes as \xNN, quoted: how bad magic is shown.
std::string escape_bytes(const void* data, size_t n);

}  // namespace hetdro::io

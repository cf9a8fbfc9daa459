// Internal to host/io: opening inputs with useful errors, sizes with overflow checks, and
// writing outputs through a temporary file so a failure never leaves half a file behind.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "hetdro/io.h"  // shape_string

namespace hetdro::io {

using hetdro::shape_string;

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the readers copy little-endian payloads straight into memory");

// A file opened for reading; missing files, folders and unreadable files become InputError.
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

// Writes the pieces to `path + ".tmp-<pid>"`, then renames it over `path`; on any failure the
// temporary file is removed and an error thrown (InputError when the path cannot be created).
void write_atomically(const std::string& path, const std::vector<Bytes>& pieces);

// The product of the dimensions; InputError naming the file when a dimension is negative or
// the payload (count times item_size bytes) would not fit in int64.
int64_t element_count(const std::vector<int64_t>& shape, const std::string& path,
                      int64_t item_size = 1);

// Printable ASCII kept, other bytes as \xNN, quoted: how bad magic is shown.
std::string escape_bytes(const void* data, size_t n);

}  // namespace hetdro::io

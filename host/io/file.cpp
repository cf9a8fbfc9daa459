#include "file.h"

#include <fcntl.h>   // open (the folder, to sync a rename)
#include <unistd.h>  // getpid, fsync

#include <cerrno>
#include <cstring>     // strerror
#include <filesystem>  // exists, is_directory, file_size
#include <limits>
#include <system_error>  // error_code

#include "hetdro/check.h"  // input_error

namespace hetdro::io {

namespace fs = std::filesystem;

InputFile::InputFile(const std::string& path, const std::string& expected) : path_(path) {
  std::error_code ec;
  auto status = fs::status(path, ec);
  if (status.type() == fs::file_type::not_found)
    input_error("{}: file not found: expected {}", path, expected);
  if (status.type() == fs::file_type::directory)
    input_error("{}: is a folder: expected {}", path, expected);
  file_ = std::fopen(path.c_str(), "rb");
  if (!file_) input_error("{}: cannot open: {}: expected {}", path, std::strerror(errno), expected);
  if (std::fseek(file_, 0, SEEK_END) != 0 || std::ftell(file_) < 0) {
    int err = errno;
    std::fclose(file_);
    input_error("{}: cannot determine the size: {}", path, std::strerror(err));
  }
  size_ = uint64_t(std::ftell(file_));
  std::rewind(file_);
}

InputFile::~InputFile() {
  if (file_) std::fclose(file_);
}

size_t InputFile::read(void* dst, size_t n) {
  size_t got = std::fread(dst, 1, n, file_);
  if (got < n && std::ferror(file_))
    input_error("{}: read failed: {}", path_, std::strerror(errno));
  return got;
}

void InputFile::seek(uint64_t offset) {
  HETDRO_ASSERT(offset <= uint64_t(std::numeric_limits<long>::max()));
  if (std::fseek(file_, long(offset), SEEK_SET) != 0)
    input_error("{}: seek to byte {} failed: {}", path_, offset, std::strerror(errno));
}

std::string InputFile::read_rest() {
  long at = std::ftell(file_);
  HETDRO_ASSERT(at >= 0 && uint64_t(at) <= size_);
  std::string text(size_ - uint64_t(at), '\0');
  text.resize(read(text.data(), text.size()));
  return text;
}

void write_atomically(const std::string& path, const std::vector<Bytes>& pieces) {
  // The pid keeps two processes writing the same run folder from sharing a temporary file.
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  std::FILE* out = std::fopen(tmp.c_str(), "wb");
  if (!out) input_error("{}: cannot create {}: {}", path, tmp, std::strerror(errno));
  auto fail = [&](const char* step) {
    int err = errno;
    if (out) std::fclose(out);
    std::remove(tmp.c_str());
    throw std::runtime_error(
        fmt::format("{}: {} {} failed: {}", path, step, tmp, std::strerror(err)));
  };
  for (const Bytes& piece : pieces)
    if (piece.size > 0 && std::fwrite(piece.data, 1, piece.size, out) != piece.size)
      fail("writing");
  // Flushed and synced before the rename, so a crash leaves either the old file or the new one
  // whole; a full disk may only show up here.
  if (std::fflush(out) != 0) fail("writing");
  if (::fsync(::fileno(out)) != 0) fail("syncing");
  int closed = std::fclose(out);
  out = nullptr;
  if (closed != 0) fail("closing");
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("renaming");
  // The rename itself lives in the folder: sync it too (best effort; some file systems refuse).
  const std::string dir = fs::path(path).parent_path().string();
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

int64_t element_count(const std::vector<int64_t>& shape, const std::string& path,
                      int64_t item_size) {
  int64_t bytes = item_size;
  for (int64_t d : shape) {
    if (d < 0) input_error("{}: negative dimension in shape {}", path, shape_string(shape));
    if (d != 0 && bytes > std::numeric_limits<int64_t>::max() / d)
      input_error("{}: shape {} is too large: its payload would exceed 2^63 bytes", path,
                  shape_string(shape));
    bytes *= d;
  }
  return bytes / item_size;
}

std::string escape_bytes(const void* data, size_t n) {
  return excerpt({static_cast<const char*>(data), n}, n);
}

}  // namespace hetdro::io

namespace hetdro {

std::string shape_string(const std::vector<int64_t>& shape) {
  if (shape.empty()) return "scalar";
  std::string s;
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "x" : "") + std::to_string(shape[i]);
  return s;
}

void write_text_file(const std::string& path, const std::string& text) {
  io::write_atomically(path, {{text.data(), text.size()}});
}

}  // namespace hetdro

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

fs::file_status lookup(const std::string& path) {
  std::error_code ec;
  fs::file_status status = fs::status(path, ec);
  if (ec && status.type() != fs::file_type::not_found)
    input_error("{}: cannot look it up: {}", path, ec.message());
  return status;
}

const char* kind_of(fs::file_type type) {
  switch (type) {
    case fs::file_type::regular:
      return "a regular file";
    case fs::file_type::directory:
      return "a folder";
    case fs::file_type::fifo:
      return "a FIFO";
    case fs::file_type::socket:
      return "a socket";
    case fs::file_type::block:
      return "a block device";
    case fs::file_type::character:
      return "a character device";
    case fs::file_type::not_found:
      return "nothing";
    default:
      return "a special file";
  }
}

std::string output_target(const std::string& path) {
  std::error_code ec;
  if (!fs::is_symlink(fs::symlink_status(path, ec))) {
    if (ec && ec != std::errc::no_such_file_or_directory)
      input_error("{}: cannot look it up: {}", path, ec.message());
    return path;
  }
  const fs::path target = fs::canonical(path, ec);
  if (ec)
    input_error("{}: a symbolic link that leads nowhere: {} (writing through it would be a guess)",
                path, ec.message());
  return target.string();
}

InputFile::InputFile(const std::string& path, const std::string& expected) : path_(path) {
  const fs::file_status status = lookup(path);
  if (status.type() == fs::file_type::not_found)
    input_error("{}: file not found: expected {}", path, expected);
  if (status.type() == fs::file_type::directory)
    input_error("{}: is a folder: expected {}", path, expected);
  if (status.type() != fs::file_type::regular)
    input_error("{}: is {}, not a regular file: expected {}", path, kind_of(status.type()),
                expected);
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

void write_atomically(const std::string& named, const std::vector<Bytes>& pieces) {
  const std::string path = output_target(named);
  const fs::file_status status = lookup(path);
  if (fs::exists(status) && !fs::is_regular_file(status))
    input_error("{}: is {}, which hetdro never replaces: expected a regular file or no file", named,
                kind_of(status.type()));
  // The pid keeps two processes writing the same run folder from sharing a temporary file.
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  std::FILE* out = std::fopen(tmp.c_str(), "wb");
  if (!out)
    throw WriteError(fmt::format("{}: cannot create {}: {}", path, tmp, std::strerror(errno)));
  auto fail = [&](const char* step) {
    int err = errno;
    if (out) std::fclose(out);
    std::remove(tmp.c_str());
    throw WriteError(fmt::format("{}: {} {} failed: {}", path, step, tmp, std::strerror(err)));
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

std::string read_text_file(const std::string& path, const std::string& expected) {
  return io::InputFile(path, expected).read_rest();
}

void write_text_file(const std::string& path, const std::string& text) {
  io::write_atomically(path, {{text.data(), text.size()}});
}

}  // namespace hetdro

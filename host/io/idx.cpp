// IDX, the MNIST format: http://yann.lecun.com/exdb/mnist/ ("FILE FORMATS FOR THE MNIST DATABASE").
// Two zero bytes, a type byte, the number of dimensions, the dimensions as big-endian uint32,
// then the payload. The distributed files are gzipped, so gzip is recognised by its magic.
#include <zlib.h>  // gzopen, gzread

#include <algorithm>
#include <climits>  // INT_MAX
#include <memory>
#include <string>
#include <vector>

#include "file.h"          // InputFile, shape_string, element_count, escape_bytes
#include "hetdro/check.h"  // input_error, HETDRO_ASSERT
#include "hetdro/io.h"

namespace hetdro {

namespace {

constexpr const char* kExpected = "an IDX file (MNIST format), plain or gzipped";

const char* idx_type_name(int type) {
  switch (type) {
    case 0x08:
      return "unsigned byte";
    case 0x09:
      return "signed byte";
    case 0x0B:
      return "int16";
    case 0x0C:
      return "int32";
    case 0x0D:
      return "float32";
    case 0x0E:
      return "float64";
    default:
      return "unknown";
  }
}

// The file's bytes, decompressed when it starts with the gzip magic 1f 8b.
class ByteStream {
 public:
  explicit ByteStream(const std::string& path) : path_(path) {
    {
      io::InputFile probe(path, kExpected);
      unsigned char magic[2] = {};
      gzipped_ = probe.read(magic, 2) == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    }
    if (gzipped_) {
      gz_ = gzopen(path.c_str(), "rb");
      if (!gz_) input_error("{}: cannot open the gzip stream", path);
      gzbuffer(gz_, 1 << 18);
    } else {
      plain_ = std::make_unique<io::InputFile>(path, kExpected);
    }
  }
  ~ByteStream() {
    if (gz_) gzclose(gz_);
  }
  ByteStream(const ByteStream&) = delete;
  ByteStream& operator=(const ByteStream&) = delete;

  bool gzipped() const { return gzipped_; }
  // The plain file's size; a gzip stream's length is known only once it has been read.
  uint64_t plain_size() const {
    HETDRO_ASSERT(!gzipped_);
    return plain_->size();
  }
  bool truncated() const { return cut_short_; }
  // For messages: where the bytes came from, and whether the stream ended early.
  const char* form() const {
    return cut_short_ ? " (the gzip stream is cut short)" : gzipped_ ? " (after gunzip)" : "";
  }

  // Up to n bytes; fewer only where the (decompressed) data ends.
  size_t read(void* dst, size_t n) {
    if (!gzipped_) return plain_->read(dst, n);
    auto out = static_cast<unsigned char*>(dst);
    size_t done = 0;
    while (done < n) {
      const unsigned chunk = unsigned(std::min<size_t>(n - done, INT_MAX));
      const int got = gzread(gz_, out + done, chunk);
      if (got > 0) done += size_t(got);
      if (got == int(chunk)) continue;
      // A short read is the end of the data, a stream cut short (zlib's Z_BUF_ERROR, which
      // the caller reports as truncated) or corrupt data.
      int code = Z_OK;
      const char* message = gzerror(gz_, &code);
      if (code == Z_BUF_ERROR)
        cut_short_ = true;
      else if (code != Z_OK)
        input_error("{}: corrupt gzip stream: {}: expected {}", path_, message, kExpected);
      break;
    }
    return done;
  }

 private:
  std::string path_;
  bool gzipped_ = false;
  bool cut_short_ = false;
  gzFile gz_ = nullptr;
  std::unique_ptr<io::InputFile> plain_;
};

}  // namespace

Array<uint8_t> read_idx(const std::string& path) {
  ByteStream in(path);
  unsigned char magic[4] = {};
  const size_t got = in.read(magic, 4);
  if (got < 4 && in.truncated())
    input_error(
        "{}: truncated gzip stream: it ends after {} decompressed bytes, inside the IDX "
        "header",
        path, got);
  if (got < 4 || magic[0] != 0 || magic[1] != 0 || magic[3] == 0)
    input_error("{}: bad magic{}: expected 00 00 <type> <number of dimensions >= 1> ({}), found {}",
                path, in.form(), kExpected, io::escape_bytes(magic, got));
  if (magic[2] != 0x08)
    input_error("{}: unsupported dtype 0x{:02X} ({}): expected 0x08 (unsigned byte)", path,
                magic[2], idx_type_name(magic[2]));
  Array<uint8_t> a;
  for (int i = 0; i < magic[3]; ++i) {
    unsigned char be[4];
    if (in.read(be, 4) != 4)
      input_error("{}: truncated header{}: it declares {} dimensions but ends after {}", path,
                  in.form(), magic[3], i);
    a.shape.push_back(int64_t(be[0]) << 24 | int64_t(be[1]) << 16 | int64_t(be[2]) << 8 | be[3]);
  }
  const uint64_t count = uint64_t(io::element_count(a.shape, path));
  auto truncated = [&](uint64_t held) {
    input_error(
        "{}: truncated payload{}: header says {} uint8 ({} bytes) but the file holds {} "
        "bytes after the header",
        path, in.form(), io::shape_string(a.shape), count, held);
  };
  auto too_long = [&] {
    input_error(
        "{}: unexpected bytes after the payload{}: header says {} uint8 ({} bytes); is "
        "the header right?",
        path, in.form(), io::shape_string(a.shape), count);
  };
  // Never allocate what the header claims before the data is known to be there: a plain file
  // is checked against its length, a gzip stream is read into a buffer that grows as it comes.
  if (!in.gzipped()) {
    const uint64_t on_disk = in.plain_size() - 4 - 4 * uint64_t(magic[3]);
    if (on_disk < count) truncated(on_disk);
    if (on_disk > count) too_long();
    a.data.reserve(size_t(count));
  }
  constexpr uint64_t kChunk = uint64_t(1) << 24;
  uint64_t held = 0;
  while (held < count) {
    const size_t want = size_t(std::min(count - held, kChunk));
    a.data.resize(size_t(held) + want);
    const size_t arrived = in.read(a.data.data() + held, want);
    held += arrived;
    if (arrived < want) break;
  }
  if (held < count) truncated(held);
  unsigned char extra;
  if (in.read(&extra, 1) != 0) too_long();
  return a;
}

}  // namespace hetdro

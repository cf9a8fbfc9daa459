// NPY: https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
#include <algorithm>
#include <cctype>   // isdigit, isspace
#include <cstring>  // memcmp, memcpy
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "file.h"          // InputFile, write_atomically, shape_string, element_count
#include "hetdro/check.h"  // input_error, HETDRO_ASSERT
#include "hetdro/io.h"

namespace hetdro {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;
// numpy writes a shape tuple inside the dict and nests lists only for structured dtypes; a
// deeper header is hostile, and the parser recurses once per level.
constexpr int kMaxDepth = 32;

// A value of the header's Python literal: the dict holds strings, booleans and tuples of ints;
// lists appear only as the descr of structured arrays, which are parsed only to be rejected.
struct PyValue {
  enum Kind { kString, kBool, kInt, kNone, kTuple, kList } kind = kNone;
  std::string text;            // kString
  bool flag = false;           // kBool
  int64_t number = 0;          // kInt
  std::vector<PyValue> items;  // kTuple, kList
};

class HeaderParser {
 public:
  HeaderParser(const std::string& path, const std::string& text) : path_(path), text_(text) {}

  std::vector<std::pair<std::string, PyValue>> dict() {
    std::vector<std::pair<std::string, PyValue>> entries;
    expect('{');
    while (!accept('}')) {
      PyValue key = value();
      if (key.kind != PyValue::kString) fail("a quoted key");
      expect(':');
      entries.emplace_back(key.text, value());
      if (!accept(',')) {
        expect('}');
        break;
      }
    }
    skip_space();
    if (pos_ != text_.size()) fail("the end of the header after '}'");
    return entries;
  }

 private:
  [[noreturn]] void fail(const char* expected) {
    std::string found = pos_ < text_.size() ? excerpt(std::string_view(text_).substr(pos_), 20)
                                            : "the end of the header";
    input_error("{}: malformed NPY header: expected {} at character {}, found {} (header: {})",
                path_, expected, pos_, found, excerpt(text_));
  }
  void skip_space() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }
  bool accept(char c) {
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!accept(c)) {
      const char expected[] = {'\'', c, '\'', '\0'};
      fail(expected);
    }
  }
  bool accept_word(const char* word) {
    size_t n = std::strlen(word);
    if (text_.compare(pos_, n, word) != 0) return false;
    pos_ += n;
    return true;
  }
  PyValue value() {
    skip_space();
    PyValue v;
    if (pos_ >= text_.size()) fail("a value");
    char c = text_[pos_];
    if (c == '\'' || c == '"') {
      v.kind = PyValue::kString;
      size_t end = text_.find(c, pos_ + 1);
      if (end == std::string::npos) fail("a closing quote");
      v.text = text_.substr(pos_ + 1, end - pos_ - 1);
      pos_ = end + 1;
    } else if (accept_word("True")) {
      v.kind = PyValue::kBool;
      v.flag = true;
    } else if (accept_word("False")) {
      v.kind = PyValue::kBool;
    } else if (accept_word("None")) {
      v.kind = PyValue::kNone;
    } else if (c == '-' || std::isdigit(static_cast<unsigned char>(c))) {
      v.kind = PyValue::kInt;
      bool negative = accept('-');
      if (pos_ >= text_.size() || !std::isdigit(static_cast<unsigned char>(text_[pos_])))
        fail("a digit");
      for (; pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_])); ++pos_) {
        int digit = text_[pos_] - '0';
        if (v.number > (std::numeric_limits<int64_t>::max() - digit) / 10)
          fail("an integer that fits in 64 bits");
        v.number = v.number * 10 + digit;
      }
      if (negative) v.number = -v.number;
      // Files written by Python 2 mark long integers with 'L'.
      if (pos_ < text_.size() && text_[pos_] == 'L') ++pos_;
    } else if (c == '(' || c == '[') {
      if (depth_ == kMaxDepth) fail("at most 32 levels of nested tuples and lists");
      v.kind = c == '(' ? PyValue::kTuple : PyValue::kList;
      const char close = c == '(' ? ')' : ']';
      ++pos_;
      ++depth_;
      while (!accept(close)) {
        v.items.push_back(value());
        if (!accept(',')) {
          expect(close);
          break;
        }
      }
      --depth_;
    } else {
      fail("a string, True, False, an integer or a tuple");
    }
    return v;
  }

  const std::string& path_;
  const std::string& text_;
  size_t pos_ = 0;
  int depth_ = 0;
};

struct NpyHeader {
  std::string descr;
  std::vector<int64_t> shape;
  int64_t count = 0;  // elements
  uint64_t payload_offset = 0;
};

const char* dtype_name(const std::string& descr) {
  static const std::pair<const char*, const char*> kNames[] = {
      {"f2", "float16"},   {"f4", "float32"},    {"f8", "float64"}, {"i1", "int8"},
      {"i2", "int16"},     {"i4", "int32"},      {"i8", "int64"},   {"u1", "uint8"},
      {"u2", "uint16"},    {"u4", "uint32"},     {"u8", "uint64"},  {"b1", "bool"},
      {"c8", "complex64"}, {"c16", "complex128"}};
  if (descr.size() >= 2)
    for (const auto& [code, name] : kNames)
      if (descr.compare(1, std::string::npos, code) == 0)
        return descr[0] == '>' ? "big-endian" : name;
  return "unknown";
}

NpyHeader read_header(io::InputFile& file) {
  const std::string& path = file.path();
  unsigned char prefix[8] = {};
  size_t got = file.read(prefix, sizeof prefix);
  if (got < kMagicSize || std::memcmp(prefix, kMagic, kMagicSize) != 0)
    input_error("{}: bad magic: expected \"\\x93NUMPY\" (an NPY file), found {}{}", path,
                io::escape_bytes(prefix, std::min(got, kMagicSize)),
                got >= 2 && prefix[0] == 0x1f && prefix[1] == 0x8b
                    ? " (a gzip file: gunzip it, or save with np.save)"
                    : "");
  if (got < 8) input_error("{}: truncated header: the file holds only {} bytes", path, got);
  const int major = prefix[6], minor = prefix[7];
  if (major < 1 || major > 3 || minor != 0)
    input_error("{}: unsupported NPY version {}.{}: expected 1.0, 2.0 or 3.0", path, major, minor);
  // Version 1.0 stores the header length in 2 bytes; 2.0 and 3.0 in 4.
  const size_t length_bytes = major == 1 ? 2 : 4;
  unsigned char length_le[4] = {};
  if (file.read(length_le, length_bytes) != length_bytes)
    input_error("{}: truncated header: the file ends inside the header length", path);
  uint64_t header_length = 0;
  for (size_t i = length_bytes; i-- > 0;) header_length = header_length << 8 | length_le[i];
  const uint64_t payload_offset = 8 + length_bytes + header_length;
  if (payload_offset > file.size())
    input_error("{}: truncated header: it should be {} bytes but the file holds {} after the start",
                path, header_length, file.size() - 8 - length_bytes);
  std::string text(header_length, '\0');
  file.read(text.data(), text.size());

  NpyHeader header;
  header.payload_offset = payload_offset;
  bool has_descr = false, has_order = false, has_shape = false;
  for (auto& [key, value] : HeaderParser(path, text).dict()) {
    if (key == "descr") {
      if (value.kind != PyValue::kString)
        input_error(
            "{}: unsupported dtype: a structured array (descr {}): expected a plain "
            "numeric array",
            path, excerpt(std::string_view(text).substr(text.find("descr"))));
      header.descr = value.text;
      has_descr = true;
    } else if (key == "fortran_order") {
      if (value.kind != PyValue::kBool)
        input_error("{}: malformed NPY header: fortran_order should be True or False", path);
      if (value.flag)
        input_error(
            "{}: fortran_order is True: expected a C-ordered array (save "
            "np.ascontiguousarray(x) instead)",
            path);
      has_order = true;
    } else if (key == "shape") {
      if (value.kind != PyValue::kTuple)
        input_error("{}: malformed NPY header: shape should be a tuple of integers", path);
      for (const PyValue& d : value.items) {
        if (d.kind != PyValue::kInt || d.number < 0)
          input_error("{}: malformed NPY header: shape should hold non-negative integers", path);
        header.shape.push_back(d.number);
      }
      has_shape = true;
    }
  }
  if (!has_descr || !has_order || !has_shape)
    input_error(
        "{}: malformed NPY header: expected the keys 'descr', 'fortran_order' and "
        "'shape', found {}",
        path, excerpt(text));
  return header;
}

// Marks a payload already in the output type, read straight into place.
struct Identity {};

// Reads the payload as `count` items of Src, converting each with `convert` (which may throw),
// a block at a time so that a float64 file needs no second full-size buffer.
template <typename Src, typename Dst, typename Convert>
void read_payload(io::InputFile& file, const NpyHeader& header, std::vector<Dst>& out,
                  Convert convert) {
  const std::string& path = file.path();
  const int64_t count = io::element_count(header.shape, path, sizeof(Src));
  const uint64_t expected = uint64_t(count) * sizeof(Src);
  const uint64_t held = file.size() - header.payload_offset;
  if (held < expected)
    input_error(
        "{}: truncated payload: header says {} {} ({} bytes) but the file holds {} bytes "
        "after the header",
        path, io::shape_string(header.shape), dtype_name(header.descr), expected, held);
  if (held > expected)
    input_error(
        "{}: {} unexpected bytes after the payload: header says {} {} ({} bytes); is the "
        "shape in the header right?",
        path, held - expected, io::shape_string(header.shape), dtype_name(header.descr), expected);
  file.seek(header.payload_offset);
  out.resize(size_t(count));
  auto read_exactly = [&](void* dst, size_t bytes) {
    // The size was checked above; falling short now means the file shrank while being read.
    if (file.read(dst, bytes) != bytes)
      input_error("{}: truncated payload: the file shrank while being read", path);
  };
  if constexpr (std::is_same_v<Convert, Identity>) {
    static_assert(std::is_same_v<Src, Dst>);
    read_exactly(out.data(), expected);
  } else {
    constexpr int64_t kBlock = 1 << 16;
    std::vector<Src> block(size_t(std::min(count, kBlock)));
    for (int64_t start = 0; start < count; start += kBlock) {
      const int64_t n = std::min(kBlock, count - start);
      read_exactly(block.data(), size_t(n) * sizeof(Src));
      for (int64_t i = 0; i < n; ++i) out[size_t(start + i)] = convert(block[size_t(i)], start + i);
    }
  }
}

template <typename T>
void write_npy_impl(const std::string& path, const char* descr, const T* data,
                    const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  HETDRO_ASSERT(count == 0 || data != nullptr);
  const std::string header = npy_header(descr, shape);
  io::write_atomically(path, {{header.data(), header.size()}, {data, size_t(count) * sizeof(T)}});
}

}  // namespace

std::string npy_header(const char* descr, const std::vector<int64_t>& shape) {
  std::string dims;
  for (int64_t d : shape) {
    HETDRO_ASSERT(d >= 0);
    dims += (dims.empty() ? "" : ", ") + std::to_string(d);
  }
  // A one-element tuple needs its trailing comma in Python.
  if (shape.size() == 1) dims += ",";
  std::string header =
      fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({}), }}", descr, dims);
  // The spec pads magic (6) + version (2) + length (2) + header, ended by '\n', to a multiple
  // of 64 bytes. Version 1.0 suffices: numpy allows 64 dimensions, far from its 64 KiB limit.
  const size_t length = (10 + header.size() + 1 + 63) / 64 * 64 - 10;
  HETDRO_ASSERT(length <= 0xffff);
  header.append(length - header.size() - 1, ' ');
  header += '\n';
  std::string prefix(kMagic, kMagicSize);
  prefix += {'\x01', '\x00', char(length & 0xff), char(length >> 8)};
  return prefix + header;
}

Array<float> read_npy_features(const std::string& path) {
  io::InputFile file(path, "an NPY file of float32, float64 or uint8 features");
  NpyHeader header = read_header(file);
  if (header.shape.empty())
    input_error(
        "{}: features are a 0-d scalar: expected an array [n, ...] with one row per "
        "sample",
        path);
  Array<float> x;
  x.shape = header.shape;
  const std::string& d = header.descr;
  if (d == "<f4") {
    read_payload<float>(file, header, x.data, Identity{});
  } else if (d == "<f8") {
    read_payload<double>(file, header, x.data, [](double v, int64_t) { return io::to_float32(v); });
  } else if (d == "|u1" || d == "<u1") {
    // Division, not multiplication by 1/255, so that 255 maps to exactly 1.
    float scale[256];
    for (int i = 0; i < 256; ++i) scale[i] = float(i) / 255.0f;
    read_payload<uint8_t>(file, header, x.data, [&](uint8_t v, int64_t) { return scale[v]; });
  } else {
    input_error(
        "{}: unsupported dtype {} ({}): expected float32 ('<f4'), float64 ('<f8') or "
        "uint8 ('|u1') features",
        path, excerpt(d, 32, '\''), dtype_name(d));
  }
  return x;
}

std::vector<int32_t> read_npy_labels(const std::string& path) {
  io::InputFile file(path, "an NPY file of int64, int32 or uint8 labels");
  NpyHeader header = read_header(file);
  const auto& s = header.shape;
  if (!(s.size() == 1 || (s.size() == 2 && s[1] == 1)))
    input_error("{}: labels have shape {}: expected one dimension [n] (or [n, 1])", path,
                io::shape_string(s));
  std::vector<int32_t> y;
  auto narrow = [&](auto v, int64_t i) {
    if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
      input_error("{}: label {} at index {} does not fit in int32: expected class indices", path, v,
                  i);
    return int32_t(v);
  };
  const std::string& d = header.descr;
  if (d == "<i8") {
    read_payload<int64_t>(file, header, y, narrow);
  } else if (d == "<i4") {
    read_payload<int32_t>(file, header, y, Identity{});
  } else if (d == "|u1" || d == "<u1") {
    read_payload<uint8_t>(file, header, y, [](uint8_t v, int64_t) { return int32_t(v); });
  } else if (d == "|i1" || d == "<i1") {
    read_payload<int8_t>(file, header, y, [](int8_t v, int64_t) { return int32_t(v); });
  } else {
    input_error(
        "{}: unsupported dtype {} ({}): expected int64 ('<i8'), int32 ('<i4') or uint8 "
        "('|u1') labels",
        path, excerpt(d, 32, '\''), dtype_name(d));
  }
  return y;
}

void write_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape) {
  write_npy_impl(path, "<f4", data, shape);
}
void write_npy(const std::string& path, const int32_t* data, const std::vector<int64_t>& shape) {
  write_npy_impl(path, "<i4", data, shape);
}
void write_npy(const std::string& path, const double* data, const std::vector<int64_t>& shape) {
  write_npy_impl(path, "<f8", data, shape);
}
void write_npy(const std::string& path, const uint8_t* data, const std::vector<int64_t>& shape) {
  write_npy_impl(path, "|u1", data, shape);
}

}  // namespace hetdro

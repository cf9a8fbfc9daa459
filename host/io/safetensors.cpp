// safetensors: https://github.com/huggingface/safetensors#format
// An 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}, ...,
// "__metadata__": {string: string}}, then the tensors' bytes; offsets count from the end of the
// header.
#include <algorithm>
#include <cstring>  // memcmp
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "file.h"          // InputFile, write_atomically, shape_string, element_count
#include "hetdro/check.h"  // input_error, HETDRO_ASSERT
#include "hetdro/io.h"

namespace hetdro {

namespace {

constexpr const char* kMetadataKey = "__metadata__";
// The reference implementation refuses larger headers; so do we, before allocating one.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// A header nests three levels ({name: {shape: [...]}}). nlohmann parses without recursion but
// dumps and compares recursively, so a hostile header must not get deeper than this.
constexpr int kMaxDepth = 16;
constexpr const char* kExpectedLayout = "an 8-byte little-endian header length, then a JSON header";

}  // namespace

void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps the header in the caller's order, which is also the order of the data.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  std::vector<io::Bytes> pieces(2);
  uint64_t offset = 0;
  for (const NamedTensor& t : tensors) {
    HETDRO_ASSERT(t.name != kMetadataKey && !header.contains(t.name));
    int64_t count = 1;
    for (int64_t d : t.shape) count *= d;
    HETDRO_ASSERT(count >= 0 && size_t(count) == t.data.size());
    const uint64_t bytes = t.data.size() * sizeof(float);
    header[t.name] = {
        {"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    pieces.push_back({t.data.data(), bytes});
    offset += bytes;
  }
  std::string text = header.dump();
  // The format pads the header with spaces so the data starts 8-byte aligned.
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = (uint64_t(text.size()) >> (8 * i)) & 0xff;
  pieces[0] = {length, 8};
  pieces[1] = {text.data(), text.size()};
  io::write_atomically(path, pieces);
}

SafetensorsFile read_safetensors(const std::string& path) {
  io::InputFile file(path, "a safetensors file of float32 tensors");
  unsigned char length_le[8] = {};
  const size_t got = file.read(length_le, 8);
  if (got >= 4 && std::memcmp(length_le, "PK\x03\x04", 4) == 0)
    input_error(
        "{}: not a safetensors file (bad magic): it starts with \"PK\\x03\\x04\", a zip "
        "archive such as a PyTorch .pt/.pth checkpoint: expected {}",
        path, kExpectedLayout);
  if (got < 8)
    input_error(
        "{}: truncated header: the file holds {} bytes, fewer than the 8-byte header "
        "length",
        path, got);
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = length << 8 | length_le[i];
  if (length > file.size() - 8) {
    // A real header starts with '{'; without one, the length was never a length.
    unsigned char first = 0;
    if (file.read(&first, 1) == 1 && first == '{')
      input_error(
          "{}: truncated header: its length is {} bytes but the file holds {} after the "
          "length",
          path, length, file.size() - 8);
    input_error(
        "{}: not a safetensors file (bad magic): its first 8 bytes {} read as a header length "
        "of {} bytes, more than the whole file ({} bytes): expected {}",
        path, io::escape_bytes(length_le, 8), length, file.size(), kExpectedLayout);
  }
  if (length > kMaxHeaderBytes)
    input_error("{}: header of {} bytes: expected at most {} bytes (the format's limit)", path,
                length, kMaxHeaderBytes);
  std::string text(length, '\0');
  file.read(text.data(), text.size());
  if (text.empty() || text.front() != '{')
    input_error(
        "{}: not a safetensors file (bad magic): expected the JSON header to start with '{{' "
        "after the 8-byte length, found {}",
        path, excerpt(text, 16));

  nlohmann::ordered_json header;
  try {
    // The callback sees each value's depth before the parser descends into it.
    header = nlohmann::ordered_json::parse(
        text, [&](int depth, nlohmann::ordered_json::parse_event_t, nlohmann::ordered_json&) {
          if (depth > kMaxDepth)
            input_error(
                "{}: malformed header: JSON nested more than {} levels deep: expected "
                "{{name: {{dtype, shape, data_offsets}}, ...}}",
                path, kMaxDepth);
          return true;
        });
  } catch (const nlohmann::json::exception& e) {
    // The message holds the token read last, which can be most of a hostile header.
    std::string_view why = e.what();
    if (size_t at = why.find("] "); at != std::string_view::npos) why.remove_prefix(at + 2);
    input_error("{}: malformed header: not valid JSON: {}", path, excerpt(why, 160));
  }
  if (!header.is_object()) input_error("{}: malformed header: expected a JSON object", path);

  const uint64_t buffer_size = file.size() - 8 - length;
  SafetensorsFile out;
  struct Span {
    uint64_t begin, end;
    size_t index;
  };
  std::vector<Span> spans;
  for (const auto& item : header.items()) {
    // Named references, not a structured binding: C++17 lambdas cannot capture those.
    const std::string& name = item.key();
    const nlohmann::ordered_json& entry = item.value();
    if (name == kMetadataKey) {
      if (!entry.is_object())
        input_error("{}: malformed header: '{}' should map strings to strings", path, name);
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string())
          input_error("{}: malformed header: metadata {} is {}: expected a string", path,
                      excerpt(key, 80, '\''), excerpt(value.dump()));
        out.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string shown = excerpt(name, 80, '\'');
    auto malformed = [&](const char* expected) {
      input_error("{}: malformed header: tensor {} is {}: expected {}", path, shown,
                  excerpt(entry.dump()), expected);
    };
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets"))
      malformed("an object with dtype, shape and data_offsets");
    const auto& dtype = entry["dtype"];
    if (!dtype.is_string()) malformed("a string dtype");
    if (dtype != "F32")
      input_error("{}: unsupported dtype {} for tensor {}: expected F32 (float32)", path,
                  excerpt(dtype.get<std::string>(), 32, '\''), shown);
    NamedTensor t;
    t.name = name;
    const auto& shape = entry["shape"];
    if (!shape.is_array()) malformed("a shape that lists non-negative integers");
    for (const auto& d : shape) {
      if (!d.is_number_unsigned() ||
          d.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
        malformed("a shape that lists non-negative integers");
      t.shape.push_back(d.get<int64_t>());
    }
    const auto& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned() || offsets[0].get<uint64_t>() > offsets[1].get<uint64_t>())
      malformed("data_offsets [begin, end] with begin <= end");
    const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
    const int64_t count =
        io::element_count(t.shape, fmt::format("{}: tensor {}", path, shown), sizeof(float));
    if (end - begin != uint64_t(count) * sizeof(float))
      input_error(
          "{}: malformed header: tensor {} has shape {} F32 ({} bytes) but data_offsets "
          "[{}, {}] span {} bytes",
          path, shown, io::shape_string(t.shape), count * 4, begin, end, end - begin);
    if (end > buffer_size)
      input_error(
          "{}: truncated: tensor {} ends at byte {} of the data but the file holds {} "
          "bytes of data",
          path, shown, end, buffer_size);
    spans.push_back({begin, end, out.tensors.size()});
    out.tensors.push_back(std::move(t));
  }

  // "In file order" means the order of the data; an overlap means two tensors share bytes.
  // Stable, so that empty tensors sharing an offset keep the header's order.
  std::stable_sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].begin < spans[i - 1].end)
      input_error(
          "{}: malformed header: tensor {} (bytes {}..{}) overlaps tensor {} (bytes "
          "{}..{})",
          path, excerpt(out.tensors[spans[i].index].name, 80, '\''), spans[i].begin, spans[i].end,
          excerpt(out.tensors[spans[i - 1].index].name, 80, '\''), spans[i - 1].begin,
          spans[i - 1].end);
  std::vector<NamedTensor> ordered;
  ordered.reserve(spans.size());
  for (size_t i = 0; i < spans.size(); ++i) {
    NamedTensor& t = out.tensors[spans[i].index];
    t.data.resize((spans[i].end - spans[i].begin) / sizeof(float));
    file.seek(8 + length + spans[i].begin);
    const size_t bytes = t.data.size() * sizeof(float);
    if (file.read(t.data.data(), bytes) != bytes)
      input_error("{}: truncated: tensor {} could not be read in full", path,
                  excerpt(t.name, 80, '\''));
    ordered.push_back(std::move(t));
  }
  out.tensors = std::move(ordered);
  return out;
}

const NamedTensor* SafetensorsFile::find(const std::string& name) const {
  for (const NamedTensor& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

}  // namespace hetdro

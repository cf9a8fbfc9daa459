// Numeric CSV: one header row naming the columns, then one row per sample. Fields may be
// double-quoted (RFC 4180, without line breaks inside quotes); blank lines are skipped.
#include <algorithm>  // min
#include <charconv>   // from_chars
#include <cmath>      // isfinite
#include <cstdlib>    // strtod
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "file.h"          // InputFile, escape_bytes
#include "hetdro/check.h"  // input_error
#include "hetdro/io.h"

namespace hetdro {

namespace {

// Where a row sits, for messages: rows count samples, lines count the file's lines.
struct Place {
  const std::string& path;
  int64_t row;  // 0 for the header
  int64_t line;
  std::string where() const {
    return row == 0 ? fmt::format("{}: header (line {})", path, line)
                    : fmt::format("{}: row {} (line {})", path, row, line);
  }
};

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Splits `line` into fields[0..count), reusing the strings' storage from row to row.
size_t split(std::string_view line, std::vector<std::string>& fields, const Place& place) {
  size_t count = 0;
  size_t pos = 0;
  while (true) {
    if (count == fields.size()) fields.emplace_back();
    std::string& field = fields[count++];
    field.clear();
    std::string_view rest = line.substr(pos);
    std::string_view lead = trim(rest);
    if (!lead.empty() && lead.front() == '"') {
      size_t i = pos + (lead.data() - rest.data()) + 1;
      while (true) {
        if (i >= line.size())
          input_error(
              "{}: unterminated quote in field {}: expected a closing '\"' on the same "
              "line",
              place.where(), count);
        if (line[i] == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            field += '"';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        field += line[i++];
      }
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
      if (i == line.size()) return count;
      if (line[i] != ',')
        input_error(
            "{}: text after the closing quote of field {}: expected ',' or the end of "
            "the line",
            place.where(), count);
      pos = i + 1;
    } else {
      size_t comma = line.find(',', pos);
      field.assign(trim(line.substr(pos, comma == std::string_view::npos ? comma : comma - pos)));
      if (comma == std::string_view::npos) return count;
      pos = comma + 1;
    }
  }
}

// A cell or column name as messages show it: quoted, escaped and at most 40 bytes.
std::string shown(const std::string& cell) {
  return io::escape_bytes(cell.data(), std::min<size_t>(cell.size(), 40)) +
         (cell.size() > 40 ? "..." : "");
}

enum class Parsed { kOk, kNotANumber, kOutOfRange };

template <typename T>
Parsed parse_number(std::string_view text, T& value) {
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || end != text.data() + text.size()) return Parsed::kNotANumber;
  if (ec == std::errc::result_out_of_range) return Parsed::kOutOfRange;
  return ec == std::errc() ? Parsed::kOk : Parsed::kNotANumber;
}

}  // namespace

CsvTable read_csv(const std::string& path, const std::string& label_column, bool require_label) {
  io::InputFile file(path, "a CSV file with a header row");
  const std::string text = file.read_rest();
  std::string_view rest = text;
  if (rest.substr(0, 3) == "\xEF\xBB\xBF") rest.remove_prefix(3);  // a UTF-8 byte-order mark
  // Text never holds NUL, and binary data (a gzip or NPY file) almost always does early on.
  if (rest.substr(0, 4096).find('\0') != std::string_view::npos)
    input_error("{}: bad magic: found binary data {}...: expected a text CSV file", path,
                io::escape_bytes(rest.data(), std::min<size_t>(rest.size(), 8)));

  std::vector<std::string> header, fields;
  size_t columns = 0, label = SIZE_MAX;  // SIZE_MAX: no label column
  std::vector<std::string> feature_names;
  CsvTable table;
  int64_t line_no = 0, rows = 0;
  while (!rest.empty()) {
    size_t eol = rest.find('\n');
    std::string_view line = rest.substr(0, eol);
    rest.remove_prefix(eol == std::string_view::npos ? rest.size() : eol + 1);
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (trim(line).empty()) continue;

    if (columns == 0) {
      columns = split(line, header, Place{path, 0, line_no});
      header.resize(columns);
      size_t matches = 0;
      for (size_t c = 0; c < columns; ++c)
        if (header[c] == label_column) label = c, ++matches;
      if (matches == 0 && require_label) {
        std::string names;
        for (size_t c = 0; c < std::min<size_t>(columns, 10); ++c)
          names += (c ? ", " : "") + shown(header[c]);
        if (columns > 10) names += fmt::format(", ... ({} in all)", columns);
        input_error("{}: label column '{}' missing: the header (line {}) names {}", path,
                    label_column, line_no, names);
      }
      if (matches > 1)
        input_error("{}: the header (line {}) names the label column '{}' {} times: expected once",
                    path, line_no, label_column, matches);
      if (matches == 1 && columns < 2)
        input_error(
            "{}: the header (line {}) names only the label column '{}': expected feature "
            "columns too",
            path, line_no, label_column);
      continue;
    }

    ++rows;
    const Place place{path, rows, line_no};
    const size_t count = split(line, fields, place);
    if (count != columns)
      input_error("{} has {} fields: expected {}, one per header column", place.where(), count,
                  columns);
    for (size_t c = 0; c < columns; ++c) {
      const std::string& cell = fields[c];
      auto bad = [&](const char* expected) {
        input_error("{}, column {} ({}): found {}: expected {}", place.where(), c + 1,
                    shown(header[c]), shown(cell), expected);
      };
      if (cell.empty()) bad("a number, not an empty cell");
      if (c == label) {
        double v = 0;
        if (parse_number(cell, v) != Parsed::kOk) bad("an integer class label");
        if (!(v == std::floor(v) && v >= std::numeric_limits<int32_t>::min() &&
              v <= std::numeric_limits<int32_t>::max()))
          bad("an integer class label that fits in int32");
        table.y.push_back(int32_t(v));
      } else {
        double v = 0;
        Parsed parsed = parse_number(cell, v);
        if (parsed == Parsed::kNotANumber) bad("a decimal number");
        // Out of double's range: an underflow (1e-400) rounds to 0 like any tiny value; an
        // overflow is refused below.
        if (parsed == Parsed::kOutOfRange) v = std::strtod(std::string(cell).c_str(), nullptr);
        const float f = io::to_float32(v);
        if (!std::isfinite(f)) bad(io::kFloat32Range);
        table.x.data.push_back(f);
      }
    }
  }
  if (columns == 0) input_error("{}: empty file: expected a header row naming the columns", path);
  table.x.shape = {rows, int64_t(label == SIZE_MAX ? columns : columns - 1)};
  return table;
}

}  // namespace hetdro

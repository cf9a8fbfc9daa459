// TOML configuration (docs/DESIGN.md §4): parse, apply --set overrides, validate, and write back.
#include "hetdro/config.h"

#include <fmt/ranges.h>
#include <toml++/toml.h>

#include <algorithm>  // count, min
#include <cctype>     // isalnum
#include <cerrno>
#include <cmath>
#include <cstring>  // strerror
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "hetdro/check.h"
#include "io/file.h"  // InputFile

namespace hetdro {
namespace {

// Each enum's spellings in the config, in the enum's order.
template <typename E>
struct Choices;
#define HETDRO_CHOICES(E, ...)                            \
  template <>                                             \
  struct Choices<E> {                                     \
    static constexpr const char* names[] = {__VA_ARGS__}; \
  };
HETDRO_CHOICES(Encoder, "cnn", "mlp")
HETDRO_CHOICES(Classifier, "linear", "mlp2")
HETDRO_CHOICES(LatentActivation, "none", "relu")
HETDRO_CHOICES(AnchorMeanInit, "zero", "random")
HETDRO_CHOICES(Fit, "pooled", "per_group", "none")
HETDRO_CHOICES(Objective, "erm", "groupdro")
HETDRO_CHOICES(GroupBatch, "proportional", "sqrt", "equal")
HETDRO_CHOICES(Select, "last", "worst_val", "mean_val")
HETDRO_CHOICES(GroupDroUpdate, "exp", "softmax", "smooth")
HETDRO_CHOICES(GroupDroObjective, "weighted", "max", "logsumexp")
#undef HETDRO_CHOICES

template <typename E>
const char* choice_name(E value) {
  return Choices<E>::names[int(value)];
}

namespace fs = std::filesystem;

std::string type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a number";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::table:
      return "a table";
    default:
      return "a date or time";
  }
}

// Where each key's value came from, for messages: the config file, or the --set argument that
// set the key or a table or array above it.
class Sources {
 public:
  explicit Sources(std::string file) : file_(std::move(file)) {}

  // `key` as the readers spell it ("data.groups[1].hidden"); `not_toml` is the TOML error when
  // the value was not TOML and was taken as a bare string.
  void add(std::string key, std::string text, std::string not_toml) {
    overrides_.push_back({std::move(key), std::move(text), std::move(not_toml)});
  }

  // "--set 'K=V'" or the config file.
  std::string of(const std::string& key) const {
    const Override* o = find(key);
    return o ? fmt::format("--set '{}'", o->text) : file_;
  }

  // Why a --set value turned out a string, to follow a type error about it.
  std::string why_string(const std::string& key) const {
    const Override* o = find(key);
    if (!o || o->not_toml.empty()) return "";
    return fmt::format(" (the value is not valid TOML: {}; so it was taken as a string)",
                       o->not_toml);
  }

 private:
  struct Override {
    std::string key, text, not_toml;
  };
  const Override* find(const std::string& key) const {
    // The last --set wins, as it does when the values are applied.
    for (auto o = overrides_.rbegin(); o != overrides_.rend(); ++o)
      if (key.compare(0, o->key.size(), o->key) == 0 &&
          (key.size() == o->key.size() || key[o->key.size()] == '.' || key[o->key.size()] == '['))
        return &*o;
    return nullptr;
  }

  std::string file_;
  std::vector<Override> overrides_;
};

// Reads the keys of one table, remembers which it used, and rejects the rest.
class TableReader {
 public:
  TableReader(const toml::table* table, const Sources& sources, std::string prefix)
      : table_(table), sources_(sources), prefix_(std::move(prefix)) {}

  const toml::node* find(const std::string& key) {
    used_.insert(key);
    return table_ ? table_->get(key) : nullptr;
  }

  [[noreturn]] void wrong_type(const std::string& key, const toml::node& node,
                               const char* expected) {
    input_error("{}: key '{}{}': expected {}, found {}{}", from(key), prefix_, key, expected,
                type_name(node), sources_.why_string(prefix_ + key));
  }

  void get(const std::string& key, int& out) {
    if (auto* node = find(key)) {
      auto v = node->value_exact<int64_t>();
      if (!v) wrong_type(key, *node, "an integer");
      if (*v < INT32_MIN || *v > INT32_MAX)
        input_error("{}: key '{}{}': {} is out of range", from(key), prefix_, key, *v);
      out = int(*v);
    }
  }
  void get(const std::string& key, uint64_t& out) {
    if (auto* node = find(key)) {
      auto v = node->value_exact<int64_t>();
      if (!v) wrong_type(key, *node, "an integer");
      if (*v < 0)
        input_error("{}: key '{}{}': expected a non-negative integer, found {}", from(key), prefix_,
                    key, *v);
      out = uint64_t(*v);
    }
  }
  void get(const std::string& key, double& out) {
    if (auto* node = find(key)) {
      auto v = node->value<double>();
      if (!v || !node->is_number()) wrong_type(key, *node, "a number");
      if (!std::isfinite(*v))
        input_error("{}: key '{}{}': expected a finite number, found {}", from(key), prefix_, key,
                    *v);
      out = *v;
    }
  }
  void get(const std::string& key, bool& out) {
    if (auto* node = find(key)) {
      auto v = node->value_exact<bool>();
      if (!v) wrong_type(key, *node, "true or false");
      out = *v;
    }
  }
  void get(const std::string& key, std::string& out) {
    if (auto* node = find(key)) {
      auto v = node->value_exact<std::string>();
      if (!v) wrong_type(key, *node, "a string");
      out = *v;
    }
  }
  void get(const std::string& key, std::vector<int>& out) {
    if (auto* node = find(key)) {
      auto* array = node->as_array();
      if (!array) wrong_type(key, *node, "an array of integers");
      out.clear();
      for (auto& item : *array) {
        auto v = item.value_exact<int64_t>();
        if (!v) wrong_type(key, item, "an array of integers");
        if (*v < INT32_MIN || *v > INT32_MAX)
          input_error("{}: key '{}{}': {} is out of range", from(key), prefix_, key, *v);
        out.push_back(int(*v));
      }
    }
  }
  template <typename E>
  void get_choice(const std::string& key, E& out) {
    if (auto* node = find(key)) {
      auto v = node->value_exact<std::string>();
      if (!v) wrong_type(key, *node, "a string");
      std::string list;
      int i = 0;
      for (const char* name : Choices<E>::names) {
        if (*v == name) {
          out = E(i);
          return;
        }
        list += fmt::format("{}\"{}\"", i++ ? ", " : "", name);
      }
      input_error("{}: key '{}{}': {} is not one of {}", from(key), prefix_, key, excerpt(*v),
                  list);
    }
  }
  void require(const std::string& key, std::string& out) {
    if (!find(key)) input_error("{}: missing key '{}{}'", from(key), prefix_, key);
    get(key, out);
  }

  // The config file or the --set argument that gave `key` its value.
  std::string from(const std::string& key) const { return sources_.of(prefix_ + key); }

  // Every key present but never asked for is unknown.
  void finish() {
    if (!table_) return;
    for (auto&& [key, node] : *table_) {
      std::string name(key.str());
      if (!used_.count(name)) {
        std::string known;
        for (auto& k : used_) known += (known.empty() ? "" : ", ") + k;
        input_error("{}: unknown key {} (known keys here: {})", from(name),
                    excerpt(prefix_ + name, 80, '\''), known);
      }
    }
  }

 private:
  const toml::table* table_;
  const Sources& sources_;
  std::string prefix_;
  std::set<std::string> used_;
};

void check_choice(const Sources& sources, const std::string& key, const std::string& value,
                  std::initializer_list<const char*> choices) {  // train.device
  std::string list;
  for (auto* c : choices) {
    if (value == c) return;
    list += (list.empty() ? "\"" : ", \"") + std::string(c) + "\"";
  }
  input_error("{}: key '{}': {} is not one of {}", sources.of(key), key, excerpt(value), list);
}

void check_positive(const Sources& sources, const std::string& key, double value) {
  if (!(value > 0))
    input_error("{}: key '{}': expected a positive value, found {}", sources.of(key), key, value);
}

// Every size and rate is bounded before anything is allocated, so an absurd value is an error
// that names its key, not an allocation failure or an overflow later on. The bounds are far
// beyond any sensible run.
void check_range(const Sources& sources, const std::string& key, double value, double lo,
                 double hi) {
  if (!(value >= lo && value <= hi))
    input_error("{}: key '{}': {} is out of range; expected a value from {} to {}", sources.of(key),
                key, value, lo, hi);
}

const toml::table* subtable(const toml::table& root, const Sources& sources, const char* key) {
  auto* node = root.get(key);
  if (!node) return nullptr;
  if (!node->is_table())
    input_error("{}: '{}' must be a table ([{}]), found {}", sources.of(key), key, key,
                type_name(*node));
  return node->as_table();
}

// toml++ makes one table per part of a dotted key and recurses over them when it parses and
// frees them, so a key of 100,000 parts overflows the stack; no config needs more than a few.
constexpr size_t kMaxKeyParts = 64;
// Nor is a config ever large; the cap also keeps `--config /dev/zero` from filling memory.
constexpr size_t kMaxConfigBytes = size_t(16) << 20;

// The config's text, refused when too large or when a dotted key (a run of key characters,
// quoted keys, spaces and dots) has more than kMaxKeyParts parts; strings and comments are
// skipped, since dots there separate nothing.
std::string read_config_text(const std::string& path) {
  io::InputFile in(path, "a config TOML file");
  if (in.size() > kMaxConfigBytes)
    input_error("{}: larger than {} MiB: expected a config TOML file", path, kMaxConfigBytes >> 20);
  const std::string text = in.read_rest();
  size_t dots = 0, line = 1;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '"' || c == '\'') {
      const bool triple = text.compare(i, 3, std::string(3, c)) == 0;
      const size_t end = triple ? text.find(std::string(3, c), i + 3) : [&] {
        size_t j = i + 1;
        for (; j < text.size() && text[j] != c && text[j] != '\n'; ++j)
          if (c == '"' && text[j] == '\\') ++j;
        return j < text.size() && text[j] == c ? j : std::string::npos;
      }();
      if (end == std::string::npos) break;  // unterminated: the parser says where
      line += size_t(std::count(text.begin() + i, text.begin() + end, '\n'));
      i = end + (triple ? 2 : 0);
      continue;  // a quoted key may be part of a dotted key
    }
    if (c == '#') {
      i = std::min(text.find('\n', i), text.size()) - 1;
    } else if (c == '.') {
      if (++dots >= kMaxKeyParts)
        input_error("{}:{}: a dotted key of more than {} parts: expected at most {}", path, line,
                    kMaxKeyParts, kMaxKeyParts);
    } else if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == ' ' ||
                 c == '\t')) {
      dots = 0;
      line += c == '\n';
    }
  }
  return text;
}

// "train.epochs=3": walk the dotted path (array items by index) and set the TOML value; the
// key is recorded in `sources`, so that messages about it name the --set argument.
void apply_override(toml::table& root, const std::string& text, Sources& sources) {
  auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0)
    input_error("--set '{}': expected KEY=VALUE, for example train.epochs=3", text);
  std::string path = text.substr(0, eq), value = text.substr(eq + 1);
  std::vector<std::string> parts;
  for (std::stringstream ss(path); ss.good();) {
    std::string part;
    std::getline(ss, part, '.');
    parts.push_back(part);
  }
  if (parts.size() > kMaxKeyParts)
    input_error("--set {}: the key has {} parts: expected at most {}", excerpt(text, 80, '\''),
                parts.size(), kMaxKeyParts);
  toml::table parsed;
  std::string not_toml;
  try {
    parsed = toml::parse("v = " + value);
  } catch (const toml::parse_error& e) {
    parsed.insert_or_assign("v", value);  // a bare word: take it as a string
    not_toml = std::string(e.description());
  }
  toml::node* node = &root;
  std::string key;      // as the readers spell it: "data.groups[1].hidden"
  std::string created;  // the first table this --set adds: all below it is the --set's doing
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    if (auto* table = node->as_table()) {
      key += (key.empty() ? "" : ".") + parts[i];
      if (!table->contains(parts[i])) {
        table->insert(parts[i], toml::table{});
        if (created.empty()) created = key;
      }
      node = table->get(parts[i]);
    } else if (auto* array = node->as_array()) {
      const std::string& part = parts[i];
      if (part.empty() || part.size() > 9 ||
          part.find_first_not_of("0123456789") != std::string::npos)
        input_error(
            "--set '{}': '{}' should be an index into {}, which has {} entries: a number from 0",
            text, part, key, array->size());
      const size_t index = std::stoul(part);
      if (index >= array->size())
        input_error("--set '{}': index {} is past the end of {}, which has {} entries", text, index,
                    key, array->size());
      node = array->get(index);
      key += fmt::format("[{}]", index);
    } else {
      input_error("--set '{}': {} is a value, not a table: it has no key '{}'", text, key,
                  parts[i]);
    }
  }
  auto* table = node->as_table();
  if (!table) {
    // The dotted key of the list, as --set spells it (key spells entries as [i]).
    const std::string list = path.substr(0, path.rfind('.'));
    if (node->is_array_of_tables()) {
      const std::string& last = parts.back();
      const bool index = !last.empty() && last.find_first_not_of("0123456789") == std::string::npos;
      input_error(
          "--set '{}': {} is a list of tables ([[{}]]); an entry cannot be replaced by a value. "
          "Set one of its keys, e.g. --set {}.{}.name=NAME",
          text, list, list, list, index ? last : "0");
    }
    if (node->is_array())
      input_error("--set '{}': {} is a list of values; set it whole, e.g. --set {}=[...]", text,
                  list, list);
    input_error("--set '{}': {} is a value, not a table: it has no key '{}'", text, key,
                parts.back());
  }
  table->insert_or_assign(parts.back(), std::move(*parsed.get("v")));
  sources.add(created.empty() ? key + (key.empty() ? "" : ".") + parts.back() : created, text,
              not_toml);
}

// Letters of any script (UTF-8 sequences, checked for validity), ASCII letters and digits, '_'
// and '-': a name safe as a tensor-name part, a zip entry and a file name.
bool safe_group_name(const std::string& name) {
  if (name.size() > 64) return false;
  for (size_t i = 0; i < name.size();) {
    const auto c = static_cast<unsigned char>(name[i]);
    if (c < 0x80) {
      if (!std::isalnum(c) && c != '_' && c != '-') return false;
      ++i;
      continue;
    }
    // A multi-byte sequence: a lead byte C2..F4, then its continuation bytes 80..BF, decoded
    // and refused when overlong, a surrogate, past U+10FFFF, or a space, format character or
    // slash look-alike (U+00A0, U+2000..U+206F, U+2215, U+3000, U+FEFF, U+FF0F).
    const size_t n = c >= 0xC2 && c <= 0xDF   ? 2
                     : c >= 0xE0 && c <= 0xEF ? 3
                     : c >= 0xF0 && c <= 0xF4 ? 4
                                              : 0;
    if (n == 0 || i + n > name.size()) return false;
    uint32_t code = c & (0x7F >> n);
    for (size_t k = 1; k < n; ++k) {
      const auto b = static_cast<unsigned char>(name[i + k]);
      if ((b & 0xC0) != 0x80) return false;
      code = code << 6 | (b & 0x3F);
    }
    const uint32_t least[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < least[n] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return false;
    if (code == 0xA0 || (code >= 0x2000 && code <= 0x206F) || code == 0x2215 || code == 0x3000 ||
        code == 0xFEFF || code == 0xFF0F)
      return false;
    i += n;
  }
  return true;
}

std::string resolve(const fs::path& base, const std::string& p) {
  fs::path path(p);
  return (path.is_absolute() ? path : base / path).lexically_normal().string();
}

void check_bounds(const Config& c, const Sources& f) {
  check_range(f, "data.classes", c.classes, 2, 1e5);
  check_range(f, "data.val_fraction", c.val_fraction, 0, 0.5);
  for (size_t i = 0; i < c.groups.size(); ++i) {
    const GroupConfig& g = c.groups[i];
    const std::string prefix = fmt::format("data.groups[{}].", i);
    for (int ch : g.channels) check_range(f, prefix + "channels", ch, 1, 4096);
    check_range(f, prefix + "kernel", g.kernel, 1, 64);
    check_range(f, prefix + "hidden (number of layers)", double(g.hidden.size()), 0, 64);
    for (int h : g.hidden) check_range(f, prefix + "hidden", h, 1, 65536);
  }
  const ModelConfig& m = c.model;
  check_range(f, "model.latent_dim", m.latent_dim, 1, 4096);
  check_range(f, "model.classifier_hidden", m.classifier_hidden, 1, 65536);
  check_range(f, "model.anchor_scale", m.anchor_scale, 1e-6, 1e4);
  const TrainConfig& t = c.train;
  check_range(f, "train.epochs", t.epochs, 0, 1e6);
  check_range(f, "train.batch_size", t.batch_size, 1, 1e6);
  check_range(f, "train.lr", t.lr, 1e-12, 10);
  check_range(f, "train.lambda_fit", t.lambda_fit, 0, 1e6);
  check_range(f, "train.lambda_sep", t.lambda_sep, 0, 1e6);
  check_range(f, "train.samples_per_anchor", t.samples_per_anchor, 1, 4096);
  check_range(f, "train.eps", t.eps, 1e-12, 1);
  check_range(f, "train.groupdro_eta", t.groupdro_eta, 0, 100);
  check_range(f, "train.weight_decay", t.weight_decay, 0, 100);
  check_range(f, "train.eval_batch", t.eval_batch, 1, 1e6);
  check_range(f, "train.checkpoint_every", t.checkpoint_every, 0, 1e9);
  check_range(f, "train.groupdro.tau", t.groupdro_tau, 1e-6, 1e6);
  check_range(f, "train.groupdro.gamma", t.groupdro_gamma, 0, 1);
  check_range(f, "train.groupdro.adjustment", t.groupdro_adjustment, 0, 1e6);
}

// The batch_share values fix those groups' shares of a batch; the others split what is left by
// train.group_batch. Shares that leave nothing for the others, or that do not fill the batch when
// every group has one, cannot be met.
void check_batch_shares(const Config& c, const Sources& f) {
  double fixed = 0;
  int free = 0;
  std::string keys;
  for (size_t i = 0; i < c.groups.size(); ++i) {
    if (c.groups[i].batch_share > 0) {
      fixed += c.groups[i].batch_share;
      keys += fmt::format("{}data.groups[{}].batch_share", keys.empty() ? "" : ", ", i);
    } else {
      ++free;
    }
  }
  if (keys.empty()) return;
  if (free > 0 && fixed >= 1)
    input_error(
        "{}: the keys {} add up to {:.6g}, which leaves nothing of a batch for the {} group(s) "
        "without a batch_share: expected a sum below 1",
        f.of("data.groups"), keys, fixed, free);
  if (free == 0 && std::abs(fixed - 1) > 1e-6)
    input_error(
        "{}: every group has a batch_share, and they add up to {:.6g}: expected them to add "
        "up to 1 ({})",
        f.of("data.groups"), fixed, keys);
}

}  // namespace

const char* name(Encoder e) { return choice_name(e); }
const char* name(Classifier c) { return choice_name(c); }
const char* name(LatentActivation a) { return choice_name(a); }
const char* name(AnchorMeanInit i) { return choice_name(i); }
const char* name(Fit f) { return choice_name(f); }
const char* name(Objective o) { return choice_name(o); }
const char* name(GroupBatch b) { return choice_name(b); }
const char* name(Select s) { return choice_name(s); }
const char* name(GroupDroUpdate u) { return choice_name(u); }
const char* name(GroupDroObjective o) { return choice_name(o); }

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  const fs::file_status status = io::lookup(path);
  if (!fs::exists(status)) input_error("{}: config file not found", path);
  if (fs::is_directory(status))
    input_error("{}: is a folder: expected a config TOML file{}", path,
                fs::exists(fs::path(path) / "config.toml")
                    ? fmt::format(" such as {}", (fs::path(path) / "config.toml").string())
                    : "");
  toml::table root;
  try {
    root = toml::parse(read_config_text(path), path);
  } catch (const toml::parse_error& e) {
    input_error("{}:{}:{}: TOML syntax error: {}", path, e.source().begin.line,
                e.source().begin.column, e.description());
  }
  Sources src(path);
  for (auto& o : overrides) apply_override(root, o, src);

  Config c;
  c.path = path;
  const fs::path base = fs::absolute(path).parent_path();
  TableReader top(&root, src, "");
  top.find("data");
  top.find("model");
  top.find("train");
  top.finish();

  const toml::table* data = subtable(root, src, "data");
  if (!data) input_error("{}: missing table [data] with [[data.groups]]", path);
  TableReader d(data, src, "data.");
  d.get("classes", c.classes);
  d.get("val_fraction", c.val_fraction);
  d.get("val_seed", c.val_seed);
  if (c.classes < 2)
    input_error("{}: key 'data.classes': expected at least 2, found {}", src.of("data.classes"),
                c.classes);
  auto* groups_node = d.find("groups");
  d.finish();
  if (!groups_node || !groups_node->is_array() || groups_node->as_array()->empty())
    input_error("{}: expected at least one [[data.groups]] entry", src.of("data.groups"));

  std::set<std::string> names;
  int index = 0;
  for (auto& node : *groups_node->as_array()) {
    auto* table = node.as_table();
    const std::string prefix = fmt::format("data.groups[{}].", index);
    if (!table)
      input_error("{}: data.groups[{}] must be a table",
                  src.of(prefix.substr(0, prefix.size() - 1)), index);
    GroupConfig g;
    TableReader r(table, src, prefix);
    r.require("name", g.name);
    r.require("train_x", g.train_x);
    r.require("train_y", g.train_y);
    r.require("test_x", g.test_x);
    r.require("test_y", g.test_y);
    r.get_choice("encoder", g.encoder);
    r.get("channels", g.channels);
    r.get("kernel", g.kernel);
    r.get("hidden", g.hidden);
    r.get("label_column", g.label_column);
    r.get("val_x", g.val_x);
    r.get("val_y", g.val_y);
    r.get("batch_share", g.batch_share);
    r.finish();
    if (g.name.empty()) input_error("{}: key '{}name' is empty", r.from("name"), prefix);
    if (!safe_group_name(g.name))
      input_error(
          "{}: key '{}name' is {}: expected at most 64 bytes of letters (any script, UTF-8), "
          "digits, '_' and '-'. The name goes into tensor names (encoders.<name>.fc.weight), the "
          "entries of latents.npz and the JSON outputs, where '.', '/', spaces and control "
          "characters would break them",
          r.from("name"), prefix, excerpt(g.name, 80, '\''));
    if (!names.insert(g.name).second)
      input_error("{}: duplicate group name {} ({}name): every group needs its own name",
                  r.from("name"), excerpt(g.name, 80, '\''), prefix);
    if (g.channels.size() != 2 || g.channels[0] < 1 || g.channels[1] < 1)
      input_error("{}: key '{}channels': expected two positive integers [c1, c2], found {}",
                  r.from("channels"), prefix, fmt::format("{}", fmt::join(g.channels, ", ")));
    if (g.kernel < 1)
      input_error("{}: key '{}kernel': expected a positive integer", r.from("kernel"), prefix);
    for (int h : g.hidden)
      if (h < 1)
        input_error("{}: key '{}hidden': sizes must be positive, found {}", r.from("hidden"),
                    prefix, h);
    if (table->contains("batch_share") && !(g.batch_share > 0 && g.batch_share < 1))
      input_error(
          "{}: key '{}batch_share': expected the group's share of every batch, in (0, 1), "
          "found {}",
          r.from("batch_share"), prefix, g.batch_share);
    if (g.val_x.empty() != g.val_y.empty())
      input_error("{}: group '{}' gives {} but not {}: a validation split needs both",
                  r.from(g.val_x.empty() ? "val_y" : "val_x"), g.name,
                  g.val_x.empty() ? prefix + "val_y" : prefix + "val_x",
                  g.val_x.empty() ? prefix + "val_x" : prefix + "val_y");
    for (auto* p : {&g.train_x, &g.train_y, &g.test_x, &g.test_y}) *p = resolve(base, *p);
    for (auto* p : {&g.val_x, &g.val_y})
      if (!p->empty()) *p = resolve(base, *p);
    c.groups.push_back(g);
    ++index;
  }

  TableReader m(subtable(root, src, "model"), src, "model.");
  m.get("latent_dim", c.model.latent_dim);
  m.get_choice("classifier", c.model.classifier);
  m.get("classifier_hidden", c.model.classifier_hidden);
  m.get_choice("latent_activation", c.model.latent_activation);
  m.get("anchor_scale", c.model.anchor_scale);
  m.get_choice("anchor_mean_init", c.model.anchor_mean_init);
  m.finish();
  check_positive(src, "model.latent_dim", c.model.latent_dim);
  check_positive(src, "model.classifier_hidden", c.model.classifier_hidden);
  check_positive(src, "model.anchor_scale", c.model.anchor_scale);

  TrainConfig& t = c.train;
  TableReader r(subtable(root, src, "train"), src, "train.");
  r.get("epochs", t.epochs);
  r.get("batch_size", t.batch_size);
  r.get("lr", t.lr);
  r.get("lambda_fit", t.lambda_fit);
  r.get("lambda_sep", t.lambda_sep);
  r.get("samples_per_anchor", t.samples_per_anchor);
  r.get("eps", t.eps);
  r.get_choice("fit", t.fit);
  r.get_choice("objective", t.objective);
  r.get_choice("group_batch", t.group_batch);
  r.get("groupdro_eta", t.groupdro_eta);
  r.get("weight_decay", t.weight_decay);
  r.get("seed", t.seed);
  r.get("device", t.device);
  r.get("deterministic", t.deterministic);
  r.get("eval_batch", t.eval_batch);
  r.get("checkpoint_every", t.checkpoint_every);
  r.get_choice("select", t.select);
  if (r.find("groupdro")) {
    TableReader gd(subtable(*subtable(root, src, "train"), src, "groupdro"), src,
                   "train.groupdro.");
    gd.get_choice("update", t.groupdro_update);
    gd.get_choice("objective", t.groupdro_objective);
    gd.get("tau", t.groupdro_tau);
    gd.get("gamma", t.groupdro_gamma);
    gd.get("adjustment", t.groupdro_adjustment);
    gd.finish();
  }
  r.finish();
  if (t.epochs < 0)
    input_error("{}: key 'train.epochs': expected ≥ 0, found {}", src.of("train.epochs"), t.epochs);
  check_positive(src, "train.batch_size", t.batch_size);
  check_positive(src, "train.lr", t.lr);
  check_positive(src, "train.samples_per_anchor", t.samples_per_anchor);
  check_positive(src, "train.eps", t.eps);
  check_positive(src, "train.eval_batch", t.eval_batch);
  for (auto [key, value] : {std::pair{"train.lambda_fit", t.lambda_fit},
                            {"train.lambda_sep", t.lambda_sep},
                            {"train.groupdro_eta", t.groupdro_eta},
                            {"train.weight_decay", t.weight_decay}})
    if (value < 0) input_error("{}: key '{}': expected ≥ 0, found {}", src.of(key), key, value);
  check_choice(src, "train.device", t.device, {"auto", "cuda", "cpu"});
  check_batch_shares(c, src);
  // The validation split costs every group a tenth of its training data: by default it is taken
  // only when the run selects a model by it (docs/DESIGN.md §4).
  if (!data->contains("val_fraction")) c.val_fraction = t.select == Select::last ? 0.0 : 0.1;
  check_bounds(c, src);
  if (t.batch_size < int(c.groups.size()))
    input_error(
        "{}: key 'train.batch_size': {} is smaller than the number of groups ({}); "
        "every batch holds at least one sample of each group",
        src.of("train.batch_size"), t.batch_size, c.groups.size());
  return c;
}

std::string to_toml(const Config& c) {
  auto ints = [](const std::vector<int>& v) {
    toml::array a;
    for (int x : v) a.push_back(x);
    return a;
  };
  toml::array groups;
  for (auto& g : c.groups) {
    toml::table t{{"name", g.name},       {"train_x", g.train_x},
                  {"train_y", g.train_y}, {"test_x", g.test_x},
                  {"test_y", g.test_y},   {"encoder", std::string(name(g.encoder))}};
    if (g.encoder == Encoder::cnn) {
      t.insert("channels", ints(g.channels));
      t.insert("kernel", g.kernel);
    } else {
      t.insert("hidden", ints(g.hidden));
    }
    if (g.label_column != "label") t.insert("label_column", g.label_column);
    if (g.batch_share > 0) t.insert("batch_share", g.batch_share);
    if (!g.val_x.empty()) {
      t.insert("val_x", g.val_x);
      t.insert("val_y", g.val_y);
    }
    groups.push_back(std::move(t));
  }
  const ModelConfig& m = c.model;
  const TrainConfig& t = c.train;
  toml::table root{
      {"data", toml::table{{"classes", c.classes},
                           {"val_fraction", c.val_fraction},
                           {"val_seed", int64_t(c.val_seed)},
                           {"groups", std::move(groups)}}},
      {"model", toml::table{{"latent_dim", m.latent_dim},
                            {"classifier", std::string(name(m.classifier))},
                            {"classifier_hidden", m.classifier_hidden},
                            {"latent_activation", std::string(name(m.latent_activation))},
                            {"anchor_scale", m.anchor_scale},
                            {"anchor_mean_init", std::string(name(m.anchor_mean_init))}}},
      {"train",
       toml::table{{"epochs", t.epochs},
                   {"batch_size", t.batch_size},
                   {"lr", t.lr},
                   {"lambda_fit", t.lambda_fit},
                   {"lambda_sep", t.lambda_sep},
                   {"samples_per_anchor", t.samples_per_anchor},
                   {"eps", t.eps},
                   {"fit", std::string(name(t.fit))},
                   {"objective", std::string(name(t.objective))},
                   {"group_batch", std::string(name(t.group_batch))},
                   {"groupdro_eta", t.groupdro_eta},
                   {"weight_decay", t.weight_decay},
                   {"seed", int64_t(t.seed)},
                   {"device", t.device},
                   {"deterministic", t.deterministic},
                   {"eval_batch", t.eval_batch},
                   {"checkpoint_every", t.checkpoint_every},
                   {"select", std::string(name(t.select))},
                   {"groupdro", toml::table{{"update", std::string(name(t.groupdro_update))},
                                            {"objective", std::string(name(t.groupdro_objective))},
                                            {"tau", t.groupdro_tau},
                                            {"gamma", t.groupdro_gamma},
                                            {"adjustment", t.groupdro_adjustment}}}}}};
  std::ostringstream out;
  out << root << "\n";
  return out.str();
}

}  // namespace hetdro

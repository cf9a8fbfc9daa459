// The built-in datasets: hetero-fashion (docs/DESIGN.md §5) and a small synthetic one for tests.
#include "hetdro/prepare.h"

#include <fmt/ranges.h>  // join
#include <unistd.h>      // access

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>  // strerror
#include <filesystem>
#include <numeric>

#include "hetdro/check.h"
#include "hetdro/data.h"  // seeded_permutation
#include "hetdro/io.h"
#include "hetdro/rng.h"
#include "hetdro/run_folder.h"  // inspect_folder
#include "io/file.h"            // lookup, kind_of

namespace hetdro {
namespace {

namespace fs = std::filesystem;

// The --out folder, checked before anything is read or written: prepare replaces the files of
// earlier prepared data, never a run's folder or a config.toml of something else
// (docs/DESIGN.md §4, Run folder).
void make_dir(const std::string& dir, const std::vector<std::string>& groups) {
  const FolderContents in = inspect_folder(dir, "--out");
  if (!in.run_files.empty())
    input_error(
        "{}: this folder holds a hetdro run ({}); prepare would replace its config.toml. Choose "
        "another --out",
        dir, fmt::join(in.run_files, ", "));
  if (in.config && in.data_file.empty())
    input_error(
        "{}: this folder holds a config.toml but no prepared data (no <group>_<split>_x.npy "
        "files); prepare would replace it. Choose another --out",
        dir);
  // Every file it will write may be replaced (Outputs: a regular file, of earlier prepared
  // data), so that a refusal comes before any file was rewritten.
  std::vector<std::string> files = {"config.toml"};
  for (const std::string& g : groups)
    for (const char* split : {"train", "test"})
      for (const char* xy : {"x", "y"}) files.push_back(fmt::format("{}_{}_{}.npy", g, split, xy));
  for (const std::string& f : files) {
    const fs::file_status status = io::lookup(dir + "/" + f);
    if (fs::exists(status) && !fs::is_regular_file(status))
      input_error(
          "{}/{}: is {}, which hetdro never replaces: expected a regular file of earlier "
          "prepared data, or no file",
          dir, f, io::kind_of(status.type()));
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) input_error("{}: cannot create the output folder: {}", dir, ec.message());
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    input_error("{}: cannot write in the output folder: {}", dir, std::strerror(errno));
  if (const int n = remove_stale_temporaries(dir))
    fmt::print("{}: removed {} temporary file(s) left by processes that are gone\n", dir, n);
}

std::vector<int32_t> labels_of(const Array<uint8_t>& y, const std::vector<int64_t>& rows) {
  std::vector<int32_t> out(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) out[i] = y.data[rows[i]];
  return out;
}

// The three representations of the images `rows` of `x` [n,28,28].
void write_group_files(const std::string& dir, const std::string& split, const Array<uint8_t>& x,
                       const Array<uint8_t>& y, const std::vector<int64_t>& rows, int which,
                       const std::vector<float>& projection) {
  const int64_t n = int64_t(rows.size());
  const char* names[] = {"full28", "low16", "proj64"};
  const std::string stem = dir + "/" + names[which] + "_" + split;
  std::vector<int32_t> labels = labels_of(y, rows);
  write_npy(stem + "_y.npy", labels.data(), {n});
  if (which == 0) {
    std::vector<uint8_t> out(n * 784);
    for (int64_t i = 0; i < n; ++i)
      std::copy_n(x.data.data() + rows[i] * 784, 784, out.data() + i * 784);
    write_npy(stem + "_x.npy", out.data(), {n, 28, 28});
    return;
  }
  const int d = which == 1 ? 256 : 64;
  std::vector<float> out(n * d);
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) {
    float image[784];
    for (int p = 0; p < 784; ++p) image[p] = x.data[rows[i] * 784 + p] * (1.0f / 255.0f);
    if (which == 1) {
      resize_bilinear(image, 28, 28, out.data() + i * d, 16, 16);
    } else {
      for (int j = 0; j < d; ++j) {
        double s = 0;
        for (int p = 0; p < 784; ++p) s += double(image[p]) * projection[p * d + j];
        out[i * d + j] = float(s);
      }
    }
  }
  if (which == 1)
    write_npy(stem + "_x.npy", out.data(), {n, 16, 16});
  else
    write_npy(stem + "_x.npy", out.data(), {n, 64});
}

Array<uint8_t> read_checked(const std::string& path, std::vector<int64_t> expected_tail) {
  if (!fs::exists(path))
    input_error(
        "{}: file not found. hetero-fashion needs Fashion-MNIST's four gzipped IDX files "
        "(Debian package dataset-fashion-mnist, or --source DIR)",
        path);
  Array<uint8_t> a = read_idx(path);
  std::vector<int64_t> tail(a.shape.begin() + (a.shape.empty() ? 0 : 1), a.shape.end());
  if (a.shape.empty() || tail != expected_tail)
    input_error("{}: unexpected shape for Fashion-MNIST (expected [n{}])", path,
                expected_tail.empty() ? "" : ",28,28");
  return a;
}

// One [[data.groups]] entry of a written config.toml; paths follow the <name>_<split>_<x|y>.npy
// naming that both datasets use.
std::string group_toml(const std::string& name, const std::string& encoder_lines) {
  return fmt::format(
      "\n[[data.groups]]\nname = \"{0}\"\ntrain_x = \"{0}_train_x.npy\"\ntrain_y = "
      "\"{0}_train_y.npy\"\ntest_x = \"{0}_test_x.npy\"\ntest_y = \"{0}_test_y.npy\"\n{1}\n",
      name, encoder_lines);
}

std::string hetero_fashion_config() {
  std::string config =
      R"(# hetero-fashion (docs/DESIGN.md §5), written by `hetdro prepare hetero-fashion`.
# Paths are relative to this file's folder. Every key not set here has its default.
[data]
classes = 10
)";
  config += group_toml("full28", "encoder = \"cnn\"\nchannels = [32, 64]\nkernel = 3");
  config += group_toml("low16", "encoder = \"cnn\"\nchannels = [32, 64]\nkernel = 3");
  config += group_toml("proj64", "encoder = \"mlp\"\nhidden = [128]");
  config += R"(
[model]
latent_dim = 64
classifier = "linear"
latent_activation = "none"

[train]
epochs = 2
batch_size = 100
lr = 1e-3
lambda_fit = 1e-3
lambda_sep = 1e-3
samples_per_anchor = 16
eps = 1e-5
fit = "pooled"
objective = "erm"
groupdro_eta = 0.01
seed = 0
device = "auto"
)";
  return config;
}

}  // namespace

void resize_bilinear(const float* in, int h, int w, float* out, int out_h, int out_w) {
  const double sy = double(h) / out_h, sx = double(w) / out_w;
  for (int oy = 0; oy < out_h; ++oy) {
    double y = std::max(0.0, (oy + 0.5) * sy - 0.5);
    int y0 = std::min(int(y), h - 1), y1 = std::min(y0 + 1, h - 1);
    double fy = y - y0;
    for (int ox = 0; ox < out_w; ++ox) {
      double x = std::max(0.0, (ox + 0.5) * sx - 0.5);
      int x0 = std::min(int(x), w - 1), x1 = std::min(x0 + 1, w - 1);
      double fx = x - x0;
      double top = in[y0 * w + x0] * (1 - fx) + in[y0 * w + x1] * fx;
      double bottom = in[y1 * w + x0] * (1 - fx) + in[y1 * w + x1] * fx;
      out[oy * out_w + ox] = float(top * (1 - fy) + bottom * fy);
    }
  }
}

std::vector<float> projection_matrix(int in_dim, int out_dim, uint64_t seed) {
  std::vector<float> p(size_t(in_dim) * out_dim);
  const double scale = 1.0 / std::sqrt(double(in_dim));
  for (size_t i = 0; i < p.size(); ++i) p[i] = float(normal01(seed, i) * scale);
  return p;
}

void prepare_hetero_fashion(const std::string& out_dir, const std::string& source_dir,
                            uint64_t seed) {
  const std::string src = source_dir.empty() ? kFashionMnistDir : source_dir;
  fmt::print("prepare hetero-fashion: reading Fashion-MNIST from {}\n", src);
  Array<uint8_t> train_x = read_checked(src + "/train-images-idx3-ubyte.gz", {28, 28});
  Array<uint8_t> train_y = read_checked(src + "/train-labels-idx1-ubyte.gz", {});
  Array<uint8_t> test_x = read_checked(src + "/t10k-images-idx3-ubyte.gz", {28, 28});
  Array<uint8_t> test_y = read_checked(src + "/t10k-labels-idx1-ubyte.gz", {});
  if (train_x.rows() != train_y.rows() || test_x.rows() != test_y.rows())
    input_error("{}: image and label files hold different numbers of samples ({} vs {}, {} vs {})",
                src, train_x.rows(), train_y.rows(), test_x.rows(), test_y.rows());
  for (auto* y : {&train_y, &test_y})
    for (uint8_t label : y->data)
      if (label >= 10) input_error("{}: label {} is outside [0, 10)", src, int(label));

  make_dir(out_dir, {"full28", "low16", "proj64"});
  // 70% / 25% / 5% of the training images, by a seeded permutation (docs/DESIGN.md §5).
  const int64_t n = train_x.rows();
  std::vector<int64_t> perm = seeded_permutation(n, splitmix64(seed ^ 0x5EED5EEDull));
  const int64_t n0 = (n * 70 + 50) / 100, n1 = (n * 25 + 50) / 100;
  const std::vector<int64_t> cuts = {0, n0, n0 + n1, n};
  std::vector<int64_t> test_rows(test_x.rows());
  std::iota(test_rows.begin(), test_rows.end(), int64_t(0));
  const std::vector<float> projection = projection_matrix(784, 64, 784064);
  const char* names[] = {"full28", "low16", "proj64"};
  for (int g = 0; g < 3; ++g) {
    std::vector<int64_t> rows(perm.begin() + cuts[g], perm.begin() + cuts[g + 1]);
    fmt::print("  {:<7} train {:>6}  test {:>6}\n", names[g], rows.size(), test_rows.size());
    std::fflush(stdout);
    write_group_files(out_dir, "train", train_x, train_y, rows, g, projection);
    write_group_files(out_dir, "test", test_x, test_y, test_rows, g, projection);
  }
  write_text_file(out_dir + "/config.toml", hetero_fashion_config());
  fmt::print("wrote {}/config.toml\n", out_dir);
}

void prepare_synthetic(const std::string& out_dir, uint64_t seed, int classes, int64_t per_class) {
  // Bounds before anything is drawn or written: data.classes' range (host/config.cpp), and at
  // most 10^7 training samples per group (a 40-float vector each: 1.6 GB at most).
  if (classes < 2 || classes > 100000)
    input_error("prepare synthetic: --classes {}: expected a whole number from 2 to 100000",
                classes);
  if (per_class < 0 || (per_class > 0 && per_class * classes > 10000000))
    input_error(
        "prepare synthetic: --per-class {}: expected a positive number with --per-class × "
        "--classes ≤ 10000000 training samples per group",
        per_class);
  // Classes are Gaussian clusters in an 8-d space; each group sees them through its own fixed
  // random linear map, into 8x8 images or vectors of length 16 and 40. With the defaults (5
  // classes, no --per-class) the groups hold 1000, 600 and 200 training samples, as always.
  const int latent = 8;
  struct Spec {
    const char* name;
    int dim;
    int64_t train, test;
  };
  const int64_t test = std::max<int64_t>(300, 2 * int64_t(classes));
  Spec specs[] = {{"img8", 64, 1000, test}, {"vec16", 16, 600, test}, {"vec40", 40, 200, test}};
  if (per_class > 0)
    for (Spec& s : specs) s.train = per_class * classes;
  uint64_t stream = splitmix64(seed + 0xA11CE);
  uint64_t counter = 0;
  auto normal = [&] { return normal01(stream, counter++); };
  std::vector<double> centers(size_t(classes) * latent);
  for (auto& c : centers) c = 1.0 * normal();
  make_dir(out_dir, {"img8", "vec16", "vec40"});
  for (const Spec& s : specs) {
    std::vector<double> map(size_t(s.dim) * latent);
    for (auto& a : map) a = normal() / std::sqrt(double(latent));
    for (const char* split : {"train", "test"}) {
      const int64_t n = std::string(split) == "train" ? s.train : s.test;
      std::vector<float> x(n * s.dim);
      std::vector<int32_t> y(n);
      for (int64_t i = 0; i < n; ++i) {
        y[i] = int32_t(i % classes);
        double h[latent];
        for (int j = 0; j < latent; ++j) h[j] = centers[y[i] * latent + j] + 0.7 * normal();
        for (int d = 0; d < s.dim; ++d) {
          double v = 0.1 * normal();
          for (int j = 0; j < latent; ++j) v += map[d * latent + j] * h[j];
          x[i * s.dim + d] = float(v);
        }
      }
      const std::string stem = out_dir + "/" + s.name + "_" + split;
      if (s.dim == 64)
        write_npy(stem + "_x.npy", x.data(), {n, 8, 8});
      else
        write_npy(stem + "_x.npy", x.data(), {n, int64_t(s.dim)});
      write_npy(stem + "_y.npy", y.data(), {n});
    }
  }
  std::string config = fmt::format(
      "# synthetic, written by `hetdro prepare synthetic`: three groups, {} classes.\n[data]\n"
      "classes = {}\n"
      "val_fraction = 0.1  # a validation split even with select = \"last\", to show it\n",
      classes == 5 ? std::string("five") : std::to_string(classes), classes);
  for (const Spec& s : specs)
    config += group_toml(s.name, s.dim == 64 ? "encoder = \"cnn\"\nchannels = [8, 16]"
                                             : "encoder = \"mlp\"\nhidden = [32]");
  // The batch fits the data even with --per-class 1 (60 with the defaults, as always).
  int64_t total = 0;
  for (const Spec& s : specs) total += s.train;
  config += fmt::format(R"(
[model]
latent_dim = 32

[train]
epochs = 8
batch_size = {}
lr = 3e-3
seed = 0
)",
                        std::min<int64_t>(60, total));
  write_text_file(out_dir + "/config.toml", config);
  fmt::print("wrote synthetic data and {}/config.toml\n", out_dir);
}

}  // namespace hetdro

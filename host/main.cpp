// The `hetdro` command line: info, prepare, train, eval, predict.
#include <fmt/ranges.h>
#include <omp.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstring>  // memcmp
#include <filesystem>

#include "hetdro/backend.h"
#include "hetdro/check.h"
#include "hetdro/config.h"
#include "hetdro/data.h"
#include "hetdro/device.h"
#include "hetdro/io.h"
#include "hetdro/prepare.h"
#include "hetdro/run_folder.h"  // print_evaluation
#include "hetdro/trainer.h"

namespace {

using namespace hetdro;
namespace fs = std::filesystem;

void print_info() {
  DeviceReport r = query_devices();
  fmt::print("hetdro {}\n", HETDRO_VERSION);
  fmt::print("build: C++17, CUDA {}, OpenMP threads {}\n", r.cuda_built ? "yes" : "no",
             omp_get_max_threads());
  if (r.cuda_built)
    fmt::print("libraries: CUDA runtime {}, cuDNN {}, cuBLAS {}, cuSOLVER {}\n", r.cuda_runtime,
               r.cudnn, r.cublas, r.cusolver);
  if (r.gpus.empty()) fmt::print("GPUs: none ({})\n", r.status);
  for (size_t i = 0; i < r.gpus.size(); ++i)
    fmt::print("GPU {}: {}, {:.1f} GiB, compute capability {}.{}\n", i, r.gpus[i].name,
               double(r.gpus[i].memory_bytes) / (1 << 30), r.gpus[i].major, r.gpus[i].minor);
  fmt::print("training backends: cpu (the cuda backend is not built yet)\n");
}

// The run's config and data, from --run DIR or from --config (with --checkpoint).
struct Loaded {
  Config config;
  std::string checkpoint;
};

Loaded load_run(const std::string& run, const std::string& config_path,
                const std::string& checkpoint, const std::vector<std::string>& overrides) {
  Loaded l;
  if (!run.empty()) {
    if (!fs::is_directory(run)) input_error("{}: run folder not found", run);
    l.config = load_config(run + "/config.toml", overrides);
    l.checkpoint = checkpoint.empty() ? run + "/checkpoint.safetensors" : checkpoint;
  } else {
    if (config_path.empty() || checkpoint.empty())
      input_error("give --run DIR, or both --checkpoint FILE and --config FILE");
    l.config = load_config(config_path, overrides);
    l.checkpoint = checkpoint;
  }
  if (!fs::exists(l.checkpoint)) input_error("{}: checkpoint not found", l.checkpoint);
  return l;
}

// `predict --out`: a file in an existing folder, and never one that this run reads or a file
// other than earlier predictions, since the predictions replace whatever is there.
void check_output_path(const std::string& out, const Loaded& l, const std::string& input) {
  constexpr const char* kExpected = "expected the name of an NPY file for the predicted labels";
  if (out.empty()) input_error("--out is empty: {}", kExpected);
  std::error_code ec;
  const fs::file_status status = fs::status(out, ec);
  if (fs::is_directory(status)) input_error("{}: --out names a folder: {}", out, kExpected);
  const fs::path parent = fs::path(out).parent_path();
  if (!parent.empty() && !fs::is_directory(parent))
    input_error("{}: --out is in folder {}, which does not exist: {}", out, parent.string(),
                kExpected);
  if (!fs::exists(status)) return;
  std::vector<std::pair<std::string, std::string>> reads = {
      {l.config.path, "the config"}, {l.checkpoint, "the checkpoint"}, {input, "the --input"}};
  for (const GroupConfig& g : l.config.groups)
    for (const std::string* p : {&g.train_x, &g.train_y, &g.test_x, &g.test_y})
      reads.push_back({*p, fmt::format("a data file of group '{}'", g.name)});
  for (const auto& [path, what] : reads)
    if (fs::equivalent(out, path, ec))
      input_error(
          "{}: --out is {} this command reads ({}); the predictions would replace it. Choose "
          "another --out",
          out, what, path);
  if (!fs::is_regular_file(status))
    input_error("{}: --out exists and is not a regular file: {}", out, kExpected);
  // Earlier predictions (an NPY file) or an empty file may be replaced; anything else is kept.
  char magic[6] = {};
  std::FILE* f = std::fopen(out.c_str(), "rb");
  const size_t got = f ? std::fread(magic, 1, sizeof magic, f) : 0;
  if (f) std::fclose(f);
  if (got > 0 && (got < sizeof magic || std::memcmp(magic, "\x93NUMPY", 6) != 0))
    input_error(
        "{}: --out exists and is not an NPY file (it starts with {}); the predictions would "
        "replace it. Remove it first or choose another --out",
        out, excerpt({magic, got}));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "hetdro: one classifier over groups whose features live in different spaces,\n"
      "aligned by Gaussian class anchors (2-Wasserstein) with a GroupDRO option."};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("hetdro ") + HETDRO_VERSION);

  auto* info = app.add_subcommand("info", "Build flags, GPUs found, and CUDA library versions");

  auto* prepare =
      app.add_subcommand("prepare", "Write a built-in dataset (NPY files + config.toml)");
  prepare->require_subcommand(1);
  std::string out, source;
  uint64_t seed = 0;
  auto* hf = prepare->add_subcommand(
      "hetero-fashion",
      "Fashion-MNIST as three groups: full28 (28x28), low16 (16x16), proj64 "
      "(64-d random projection); docs/DESIGN.md §5");
  hf->add_option("--out", out, "Output folder")->required();
  hf->add_option("--source", source,
                 "Folder with Fashion-MNIST's four .gz IDX files (default: " +
                     std::string(kFashionMnistDir) + ")");
  hf->add_option("--seed", seed, "Seed of the 70/25/5 split")->capture_default_str();
  auto* syn = prepare->add_subcommand(
      "synthetic",
      "A small seeded dataset: 8x8 images and vectors of lengths 16 and 40, 5 classes");
  syn->add_option("--out", out, "Output folder")->required();
  syn->add_option("--seed", seed, "Seed")->capture_default_str();

  std::string config_path, run, checkpoint, group, input;
  std::vector<std::string> overrides;
  bool overwrite = false;
  int64_t max_steps = 0;
  std::string resume;
  auto* train = app.add_subcommand(
      "train", "Train on the backend train.device picks (today: the CPU; CUDA comes next)");
  train->add_option("--config", config_path, "Config TOML (docs/DESIGN.md §4)");
  auto* out_option = train->add_option("--out", out,
                                       "Run folder for config.toml, metrics.jsonl, "
                                       "checkpoint.safetensors, report.json");
  auto* resume_option = train->add_option(
      "--resume", resume,
      "Continue the run in this folder exactly where its checkpoint stands (with its "
      "config.toml; --set may change it, e.g. train.epochs)");
  resume_option->excludes(out_option);
  train->add_option("--set", overrides, "Override a config key, e.g. --set train.epochs=3");
  train->add_flag("--overwrite", overwrite, "Replace a run already in --out (its files first)")
      ->excludes(resume_option);
  train->add_option("--max-steps", max_steps, "Stop after this many steps (for timing)")
      ->check(CLI::NonNegativeNumber);
  train->footer(
      "Checkpoints after every epoch and every train.checkpoint_every steps. SIGINT or SIGTERM "
      "finishes the current step, writes a checkpoint and exits with 130 or 143; --resume "
      "continues from it.");

  bool as_json = false, show_confusion = false, use_best = false;
  auto* eval = app.add_subcommand("eval",
                                  "Per-group test accuracy and confusion matrices of a "
                                  "checkpoint");
  auto* predict = app.add_subcommand("predict", "Predicted classes for new samples of one group");
  eval->add_flag("--json", as_json, "Print the evaluation as JSON (with the confusion matrices)");
  eval->add_flag("--confusion", show_confusion, "Also print each group's confusion matrix");
  eval->add_flag("--best", use_best,
                 "With --run: the model train.select chose (best.safetensors), not the last");
  for (auto* cmd : {eval, predict}) {
    cmd->add_option("--run", run, "Run folder written by `hetdro train`");
    cmd->add_option("--checkpoint", checkpoint, "Checkpoint (with --config)");
    cmd->add_option("--config", config_path, "Config TOML (with --checkpoint)");
    cmd->add_option("--set", overrides, "Override a config key");
  }
  predict->add_option("--group", group, "Group whose encoder to use")->required();
  predict->add_option("--input", input, "Features: NPY, IDX or CSV, shaped like the group's")
      ->required();
  predict->add_option("--out", out, "Where to write the predicted labels (NPY int32)")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }

  try {
    if (info->parsed()) {
      print_info();
    } else if (hf->parsed()) {
      prepare_hetero_fashion(out, source, seed);
    } else if (syn->parsed()) {
      prepare_synthetic(out, seed);
    } else if (train->parsed()) {
      if (resume.empty() && (config_path.empty() || out_option->count() == 0))
        input_error("train: give --config FILE and --out DIR, or --resume DIR");
      if (!resume.empty() && !config_path.empty())
        input_error(
            "train --resume {}: the run's own config.toml is used; drop --config {} "
            "(change keys with --set)",
            resume, config_path);
      if (!resume.empty() && !fs::is_directory(resume))
        input_error("--resume {}: no such run folder", resume);
      if (!resume.empty() && !fs::exists(resume + "/config.toml"))
        input_error("--resume {}: the folder holds no config.toml (is it a hetdro run folder?)",
                    resume);
      Config config =
          load_config(resume.empty() ? config_path : resume + "/config.toml", overrides);
      std::string why;
      auto backend = make_backend(config.train.device, config.path, &why);
      fmt::print("{}\n", why);
      Trainer trainer(config, load_groups(config), std::move(backend));
      TrainOptions options;
      options.overwrite = overwrite;
      options.resume = !resume.empty();
      options.max_steps = max_steps;
      trainer.train(resume.empty() ? out : resume, options);
    } else if (eval->parsed() || predict->parsed()) {
      if (use_best && run.empty()) input_error("eval --best needs --run DIR");
      if (use_best && !fs::exists(run + "/best.safetensors"))
        input_error(
            "{}: the run kept no best.safetensors (it was trained with train.select = "
            "\"last\"; \"worst_val\" or \"mean_val\" keep one)",
            run);
      Loaded l = load_run(run, config_path,
                          use_best && checkpoint.empty() ? run + "/best.safetensors" : checkpoint,
                          overrides);
      if (predict->parsed()) check_output_path(out, l, input);
      std::vector<GroupData> groups = load_groups(l.config);
      Trainer trainer(l.config, std::move(groups));
      trainer.load(l.checkpoint);
      if (eval->parsed()) {
        const Evaluation e = trainer.evaluate();
        if (as_json)
          fmt::print("{}", evaluation_json(e, l.config.classes));
        else
          print_evaluation(e, l.config.classes, show_confusion);
      } else {
        int g = -1;
        for (size_t i = 0; i < l.config.groups.size(); ++i)
          if (l.config.groups[i].name == group) g = int(i);
        if (g < 0) input_error("--group '{}': no such group in {}", group, l.config.path);
        Array<float> x = load_features(input, l.config.groups[g]);
        const auto shape = encoder_input_shape(l.config.groups[g], x, input);
        const auto expected = trainer.model().encoder(g).sample_shape();
        if (shape != expected)
          input_error("{}: samples of shape {}, but group '{}' was trained on samples of shape {}",
                      input, fmt::join(shape, "x"), group, fmt::join(expected, "x"));
        std::vector<int32_t> labels = trainer.predict(g, x);
        write_npy(out, labels.data(), {int64_t(labels.size())});
        fmt::print("wrote {} predictions to {}\n", labels.size(), out);
      }
    }
  } catch (const InputError& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 2;
  } catch (const Interrupted& e) {
    fmt::print(stderr, "interrupted: {}\n", e.what());
    return 128 + e.signal;
  } catch (const std::exception& e) {
    fmt::print(stderr, "hetdro failed: {}\n", e.what());
    return 1;
  }
  return 0;
}

// The `hetdro` command line: info, prepare, train, bench-step, eval, predict.
#include <fmt/ranges.h>
#include <omp.h>
#include <unistd.h>  // getpid

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>  // strerror
#include <filesystem>
#include <fstream>
#include <iostream>  // std::cin, for --input -
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>

#include "hetdro/backend.h"
#include "hetdro/bench_step.h"
#include "hetdro/check.h"
#include "hetdro/comm.h"
#include "hetdro/config.h"
#include "hetdro/data.h"
#include "hetdro/device.h"
#include "hetdro/io.h"
#include "hetdro/prepare.h"
#include "hetdro/run_folder.h"  // print_evaluation
#include "hetdro/trainer.h"

namespace {

using namespace hetdro;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
namespace fs = std::filesystem;

void print_info() {
  DeviceReport r = query_devices();
  fmt::print("hetdro {}\n", HETDRO_VERSION);
  fmt::print("build: C++17, CUDA {}, OpenMP threads {}\n", r.cuda_built ? "yes" : "no",
             omp_get_max_threads());
  fmt::print("MPI: {}\n", mpi_status());
  if (r.cuda_built)
    fmt::print("libraries: CUDA runtime {}, cuDNN {}, cuBLAS {}, cuSOLVER {}\n", r.cuda_runtime,
               r.cudnn, r.cublas, r.cusolver);
  if (r.cuda_built) fmt::print("eigensolvers: {}\n", r.eigensolvers);
  if (r.gpus.empty()) fmt::print("GPUs: none ({})\n", r.status);
  for (size_t i = 0; i < r.gpus.size(); ++i)
    fmt::print("GPU {}: {}, {:.1f} GiB, compute capability {}.{}, {} KiB shared memory per block\n",
               i, r.gpus[i].name, double(r.gpus[i].memory_bytes) / (1 << 30), r.gpus[i].major,
               r.gpus[i].minor, r.gpus[i].shared_optin / 1024);
  if (!r.cuda_built)
    fmt::print("training backends: cpu (this build has no CUDA)\n");
  else
    fmt::print(
        "training backends: cpu, cuda (train.device = \"auto\" takes the GPU when there is one; "
        "\"cpu\" or \"cuda\" ask for one)\n");
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

// Predictions that `hetdro predict` wrote: CSV starting "index,class,p0", or NPY float64 of
// shape [n, 2 + C] (a float32 data file, a label file or a 3-D array is not).
bool holds_predictions(const std::string& head) {
  if (head.compare(0, 15, "index,class,p0,") == 0) return true;
  if (head.size() < 10 || head.compare(0, 6, "\x93NUMPY") != 0) return false;
  static const std::regex dict(
      "^\\{'descr': '<f8', 'fortran_order': False, 'shape': \\(\\d+, \\d+\\), \\}");
  return std::regex_search(head.substr(10, 128), dict);
}

// bench-step's JSON (an object with "impl": "hetdro" and its median)?
bool holds_bench_json(const std::string& head) {
  const auto j = nlohmann::json::parse(head, nullptr, false);
  return j.is_object() && j.value("impl", "") == "hetdro" && j.contains("median_ms");
}

// The files a command reads from its config: never an output.
std::vector<std::pair<std::string, std::string>> files_read(const Config& config) {
  std::vector<std::pair<std::string, std::string>> reads = {{config.path, "the config"}};
  for (const GroupConfig& g : config.groups)
    for (const std::string* p : {&g.train_x, &g.train_y, &g.test_x, &g.test_y, &g.val_x, &g.val_y})
      reads.push_back({*p, fmt::format("a data file of group '{}'", g.name)});
  return reads;
}

// `predict --out`: the format follows the name, and the file follows the output rule.
void check_predictions_path(const std::string& out, const Loaded& l, const std::string& input) {
  OutputCheck check{"--out",
                    "the name of an .npy or .csv file for the predictions",
                    holds_predictions,
                    {{l.checkpoint, "the checkpoint"}, {input, "the --input"}}};
  for (auto& read : files_read(l.config)) check.reads.push_back(read);
  check_output(out, check);
  if (!ends_with(out, ".npy") && !ends_with(out, ".csv"))
    input_error("{}: --out must end in .npy or .csv (the format follows the name): expected {}",
                out, check.expected);
}

// `--input -`: standard input, kept in a temporary file (named .npy or .csv by its first bytes)
// that the readers can open; removed when this goes out of scope. Messages about it say
// "standard input" (as_stdin), not the temporary file's name.
class StdinFile {
 public:
  StdinFile() {
    std::string data((std::istreambuf_iterator<char>(std::cin)), {});
    if (std::cin.bad()) input_error("--input -: cannot read standard input");
    if (data.empty()) input_error("--input -: standard input is empty: expected NPY or CSV data");
    const bool npy = data.size() >= 6 && data.compare(0, 6, "\x93NUMPY") == 0;
    path_ = (fs::temp_directory_path() /
             fmt::format("hetdro_stdin_{}.{}", ::getpid(), npy ? "npy" : "csv"))
                .string();
    write_text_file(path_, data);
  }
  ~StdinFile() {
    std::error_code ec;
    fs::remove(path_, ec);
  }
  const std::string& path() const { return path_; }
  // `e`'s message with the temporary file's name replaced by "standard input".
  InputError as_stdin(const InputError& e) const {
    std::string what = e.what();
    for (size_t at; (at = what.find(path_)) != std::string::npos;)
      what.replace(at, path_.size(), "standard input (--input -)");
    return InputError(what);
  }

 private:
  std::string path_;
};

// One row per sample: its index, the predicted class, and each class's probability; CSV with
// a header, or NPY float64 [n, 2 + C], by the file name.
void write_predictions(const std::string& path, const std::vector<int32_t>& classes,
                       const std::vector<float>& probs, int C) {
  const size_t n = classes.size();
  if (ends_with(path, ".csv")) {
    std::string text = "index,class";
    for (int c = 0; c < C; ++c) text += fmt::format(",p{}", c);
    text += "\n";
    for (size_t i = 0; i < n; ++i) {
      text += fmt::format("{},{}", i, classes[i]);
      for (int c = 0; c < C; ++c) text += fmt::format(",{:.7g}", probs[i * C + c]);
      text += "\n";
    }
    write_text_file(path, text);
    return;
  }
  std::vector<double> rows(n * (2 + C));
  for (size_t i = 0; i < n; ++i) {
    double* row = rows.data() + i * (2 + C);
    row[0] = double(i);
    row[1] = classes[i];
    for (int c = 0; c < C; ++c) row[2 + c] = probs[i * C + c];
  }
  write_npy(path, rows.data(), {int64_t(n), int64_t(2 + C)});
}

// "rank R of N: " before an error of one rank of a multi-process run.
std::string which_rank() {
  const World& w = world();
  return w.size > 1 ? fmt::format("rank {} of {}: ", w.rank, w.size) : "";
}

int cli(int argc, char** argv) {
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
      "A small seeded dataset: 8x8 images and vectors of lengths 16 and 40, 5 classes by "
      "default (--classes, --per-class size it for benchmarks)");
  int syn_classes = 5;
  int64_t per_class = 0;
  syn->add_option("--out", out, "Output folder")->required();
  syn->add_option("--seed", seed, "Seed")->capture_default_str();
  syn->add_option("--classes", syn_classes, "Number of classes (2 to 100000)")
      ->capture_default_str();
  syn->add_option("--per-class", per_class,
                  "Training samples of each class in every group (default: 1000, 600 and 200 "
                  "samples in the three groups)");

  std::string config_path, run, checkpoint, group, input;
  std::vector<std::string> overrides;
  bool overwrite = false, no_graph = false, sync_check = false;
  int64_t max_steps = 0;
  std::string resume;
  auto* train = app.add_subcommand(
      "train",
      "Train on the backend train.device picks (\"auto\": the GPU when there is one, else the "
      "CPU)");
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
  const char* kNoGraph =
      "On a GPU, issue every step's ops one by one instead of replaying the step recorded as "
      "one CUDA Graph (docs/DESIGN.md §3)";
  train->add_flag("--no-graph", no_graph, kNoGraph);
  const char* kSyncCheck =
      "Debugging a GPU fault: wait after every op, and name the op, the step and the op's sizes "
      "when a CUDA error surfaces; steps are issued op by op (also HETDRO_SYNC_CHECK=1; "
      "docs/DESIGN.md §3)";
  train->add_flag("--sync-check", sync_check, kSyncCheck);
  train->footer(
      "Checkpoints after every epoch and every train.checkpoint_every steps. SIGINT or SIGTERM "
      "finishes the current step, writes a checkpoint and exits with 130 or 143; --resume "
      "continues from it.");

  BenchStepOptions bench;
  auto* bench_step_cmd = app.add_subcommand(
      "bench-step",
      "Time the training step on the config's data and device: median, p10, p90 ms/step");
  bench_step_cmd->add_option("--config", config_path, "Config TOML (docs/DESIGN.md §4)")
      ->required();
  bench_step_cmd->add_option("--set", overrides,
                             "Override a config key, e.g. --set train.batch_size=1000");
  bench_step_cmd->add_flag("--no-graph", no_graph, kNoGraph);
  bench_step_cmd->add_flag("--sync-check", sync_check, kSyncCheck);
  bench_step_cmd->add_option("--steps", bench.steps, "Timed steps")->capture_default_str();
  bench_step_cmd->add_option("--warmup", bench.warmup, "Untimed steps before them")
      ->capture_default_str();
  bench_step_cmd->add_option("--json", bench.json,
                             "Also write the times (and, on a GPU, the device's copy and SGEMM "
                             "ceilings) as JSON to this file");
  bench_step_cmd->footer(
      "Each step is timed on the backend's own clock: CUDA events on a GPU, the host's clock on "
      "the CPU. Used by scripts/bench_vs_torch.sh.");

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
  predict
      ->add_option("--input", input,
                   "Features: NPY, IDX or CSV, shaped like the group's; - reads NPY or CSV "
                   "from standard input")
      ->required();
  predict
      ->add_option("--out", out,
                   "Where to write one row per sample: index, predicted class, each class's "
                   "probability; .csv (with a header) or .npy (float64 [n, 2 + C])")
      ->required();

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
    if (world().size > 1 && !train->parsed())
      input_error("only `hetdro train` runs as several MPI ranks; run this command without mpirun");
    if (info->parsed()) {
      print_info();
    } else if (hf->parsed()) {
      prepare_hetero_fashion(out, source, seed);
    } else if (syn->parsed()) {
      prepare_synthetic(out, seed, syn_classes, per_class);
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
      if (sync_check) backend->set_sync_check(true);  // HETDRO_SYNC_CHECK=1 may have set it
      auto collectives = make_collectives(*backend);
      if (collectives)
        fmt::print(
            "data parallel: {} ranks (MPI), each with its share of every batch of {} "
            "(docs/DESIGN.md §7)\n",
            collectives->size(), config.train.batch_size);
      Trainer trainer(config, load_groups(config), std::move(backend), std::move(collectives));
      trainer.use_graph(!no_graph);
      TrainOptions options;
      options.overwrite = overwrite;
      options.resume = !resume.empty();
      options.max_steps = max_steps;
      trainer.train(resume.empty() ? out : resume, options);
    } else if (bench_step_cmd->parsed()) {
      bench.graph = !no_graph;
      bench.sync_check = sync_check;
      const Config config = load_config(config_path, overrides);
      if (!bench.json.empty())
        check_output(bench.json, {"--json", "a JSON file for bench-step's times", holds_bench_json,
                                  files_read(config)});
      bench_step(config, bench);
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
      if (predict->parsed()) check_predictions_path(out, l, input);
      std::vector<GroupData> groups = load_groups(l.config);
      // The backend train.device picks, as for training; said first, except before --json.
      std::string why;
      auto backend = make_backend(l.config.train.device, l.config.path, &why);
      if (!as_json) fmt::print("{}\n", why);
      Trainer trainer(l.config, std::move(groups), std::move(backend));
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
        std::unique_ptr<StdinFile> stdin_file;
        if (input == "-") stdin_file = std::make_unique<StdinFile>();
        const std::string input_path = stdin_file ? stdin_file->path() : input;
        Array<float> x;
        try {
          x = load_features(input_path, l.config.groups[g]);
        } catch (const InputError& e) {
          if (!stdin_file) throw;
          throw stdin_file->as_stdin(e);
        }
        const auto shape = encoder_input_shape(l.config.groups[g], x, input);
        const auto expected = trainer.model().encoder(g).sample_shape();
        if (shape != expected)
          input_error("{}: samples of shape {}, but group '{}' was trained on samples of shape {}",
                      input, fmt::join(shape, "x"), group, fmt::join(expected, "x"));
        std::vector<float> probs;
        const std::vector<int32_t> classes = trainer.predict(g, x, probs);
        write_predictions(out, classes, probs, l.config.classes);
        fmt::print("wrote {} predictions (index, class, {} probabilities) to {}\n", classes.size(),
                   l.config.classes, out);
      }
    }
  } catch (const InputError& e) {
    fmt::print(stderr, "error: {}{}\n", which_rank(), e.what());
    return 2;
  } catch (const fs::filesystem_error& e) {
    // A path given that cannot be used as a path (a loop of links, a name too long, a file
    // where a folder should be) is bad input; any other failure of the file system is not.
    const std::error_code c = e.code();
    const bool bad_path = c == std::errc::too_many_symbolic_link_levels ||
                          c == std::errc::filename_too_long || c == std::errc::not_a_directory;
    fmt::print(stderr, "{}{}{}: {}\n", bad_path ? "error: " : "hetdro failed: ", which_rank(),
               e.path1().string(), c.message());
    return bad_path ? 2 : 1;
  } catch (const Interrupted& e) {
    if (world().lead()) fmt::print(stderr, "interrupted: {}\n", e.what());
    return 128 + e.signal;
  } catch (const std::exception& e) {
    fmt::print(stderr, "hetdro failed: {}{}\n", which_rank(), e.what());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    start_world(&argc, &argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 2;
  }
  // The lead rank alone writes the console output (docs/DESIGN.md §7); errors still show.
  if (!world().lead() && !std::freopen("/dev/null", "w", stdout)) return 1;
  int code = cli(argc, argv);
  // Output that never arrived is a failure (a full disk under `eval --json > f`): every write
  // to standard output is checked here, where its buffer is flushed and closed.
  std::cout.flush();
  const bool lost =
      !std::cout || std::fflush(stdout) != 0 || std::ferror(stdout) || std::fclose(stdout) != 0;
  if (lost && code == 0) {
    fmt::print(stderr, "hetdro failed: writing standard output: {}\n",
               std::strerror(errno != 0 ? errno : EIO));
    code = 1;
  }
  // A failed rank stops the job rather than leave the others waiting in a collective; ranks
  // that were interrupted stopped together, at the same step.
  if (code != 0 && code < 128) abort_world(code, "see its error above");
  finish_world();
  return code;
}

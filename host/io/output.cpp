// The one rule every output file follows (docs/DESIGN.md §4, Outputs): what may be replaced,
// checked before any work, and the stale temporary files of processes that are gone.
#include <signal.h>  // kill
#include <unistd.h>  // access, getpid

#include <cerrno>
#include <cstring>  // strerror
#include <filesystem>

#include "file.h"
#include "hetdro/check.h"
#include "hetdro/io.h"

namespace hetdro {

namespace fs = std::filesystem;

void check_output(const std::string& path, const OutputCheck& check) {
  if (path.empty()) input_error("{} is empty: expected {}", check.option, check.expected);
  const std::string target = io::output_target(path);
  const fs::file_status status = io::lookup(target);
  const std::string named = target == path ? path : fmt::format("{} (a link to {})", path, target);
  if (!fs::exists(status)) {
    const fs::path parent = fs::path(target).parent_path();
    const std::string folder = parent.empty() ? "." : parent.string();
    if (!fs::is_directory(io::lookup(folder)))
      input_error("{}: {} is in folder {}, which does not exist: expected {}", named, check.option,
                  folder, check.expected);
    if (::access(folder.c_str(), W_OK | X_OK) != 0)
      input_error("{}: cannot write in folder {}: {}", named, folder, std::strerror(errno));
    return;
  }
  std::error_code ec;
  for (const auto& [read, what] : check.reads)
    if (!read.empty() && fs::equivalent(target, read, ec))
      input_error(
          "{}: {} is {} this command reads ({}); writing there would replace it. Choose another "
          "{}",
          named, check.option, what, read, check.option);
  if (!fs::is_regular_file(status))
    input_error("{}: {} names {}, which hetdro never replaces: expected {}", named, check.option,
                io::kind_of(status.type()), check.expected);
  std::string head(4096, '\0');
  {
    io::InputFile file(target, check.expected);
    head.resize(file.read(head.data(), head.size()));
  }
  if (head.empty() || (check.ours && check.ours(head))) {
    const std::string folder = fs::path(target).parent_path().string();
    if (::access(folder.empty() ? "." : folder.c_str(), W_OK | X_OK) != 0)
      input_error("{}: cannot write in its folder: {}", named, std::strerror(errno));
    return;
  }
  input_error(
      "{}: {} exists and holds something else (it starts with {}): expected {}. hetdro replaces "
      "only its own earlier output or an empty file; remove it first or choose another {}",
      named, check.option, excerpt(head.substr(0, 16)), check.expected, check.option);
}

int remove_stale_temporaries(const std::string& dir) {
  int removed = 0;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::directory_entry& entry = *it;
    const std::string name = entry.path().filename().string();
    const size_t at = name.rfind(".tmp-");
    if (at == std::string::npos || at == 0 || at + 5 == name.size()) continue;
    const std::string digits = name.substr(at + 5);
    if (digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 9) continue;
    const pid_t pid = pid_t(std::stol(digits));
    // Only a process that is gone: a live one (this one, or another writing here) keeps its file.
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
    std::error_code gone;
    if (entry.is_regular_file(gone) && fs::remove(entry.path(), gone)) ++removed;
  }
  return removed;
}

}  // namespace hetdro

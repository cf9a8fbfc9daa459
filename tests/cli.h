// Running the `hetdro` binary from a test: its exit code and everything it printed.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

namespace hetdro::testing {

struct CliResult {
  int code;            // the exit code, or 128 + signal when a signal ended it
  std::string output;  // stdout and stderr together
};

// A shell command line, with its standard error joined to what is returned.
inline CliResult run_shell(const std::string& command_line) {
  const std::string command = command_line + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), pipe)) out.append(buf.data(), n);
  const int status = pclose(pipe);
  const int code = WIFEXITED(status)     ? WEXITSTATUS(status)
                   : WIFSIGNALED(status) ? 128 + WTERMSIG(status)
                                         : -1;
  return {code, out};
}

// `hetdro args`: its exit code and everything it printed.
inline CliResult run_cli(const std::string& args) {
  return run_shell(std::string(HETDRO_BIN) + " " + args);
}

inline std::string read_text(const std::string& path) {
  std::ifstream f(path);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace hetdro::testing

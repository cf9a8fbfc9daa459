// What every fuzz target shares: the input bytes become a file the readers open by path, and
// an InputError is the normal end of a bad file. Anything else that escapes a reader aborts
// (libFuzzer reports it as a crash), as do the sanitizers' findings.
#pragma once

#include <unistd.h>  // getpid

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

#include "hetdro/check.h"  // InputError

namespace hetdro::fuzz {

// A fresh folder per process, so parallel fuzzers (-jobs) never share files.
inline const std::filesystem::path& folder() {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("hetdro_fuzz_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline std::string write_input(const char* name, const uint8_t* data, size_t size) {
  const std::string path = (folder() / name).string();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(data, 1, size, f) != size || std::fclose(f) != 0) __builtin_trap();
  return path;
}

// Runs one reader; only an InputError may end it early.
template <typename Read>
void expect_input_error_or_success(Read read) {
  try {
    read();
  } catch (const InputError&) {
  }
}

}  // namespace hetdro::fuzz

// The synthetic dataset (hetdro prepare synthetic) for tests that train on it: written once per
// process into the test temp folder; returns its config.toml.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>  // getpid

#include <filesystem>
#include <string>

#include "hetdro/prepare.h"

namespace hetdro::testing {

inline const std::string& synthetic_config() {
  static const std::string path = [] {
    const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) /
                                      ("hetdro_synthetic_" + std::to_string(getpid()));
    std::filesystem::remove_all(dir);
    prepare_synthetic(dir.string());
    return (dir / "config.toml").string();
  }();
  return path;
}

}  // namespace hetdro::testing

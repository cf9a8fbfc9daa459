// write_npz against numpy itself: numpy.load must read back the arrays, names, shapes and values
// (zipfile checks every entry's CRC-32 on the way). Skipped where Debian's numpy is absent.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "cli.h"  // read_text
#include "hetdro/io.h"

namespace hetdro {
namespace {

namespace fs = std::filesystem;

std::string python(const std::string& code) {
  const std::string command = "/usr/bin/python3 -c \"" + code + "\" 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  return pclose(pipe) == 0 ? out : "failed: " + out;
}

TEST(Npz, NumpyReadsBackEveryArray) {
  if (python("import numpy").rfind("failed", 0) == 0)
    GTEST_SKIP() << "no numpy for /usr/bin/python3";
  const std::string path = (fs::path(::testing::TempDir()) / "hetdro_test.npz").string();
  write_npz(path, {{"z.group a", {2, 3}, {1.5f, -2, 3, 4, 5, 6.25f}, {}},
                   {"y.group a", {2}, {}, {7, -1}},
                   {"empty", {0, 4}, {}, {}}});
  const std::string out = python(
      "import numpy as np; d = np.load('" + path +
      "'); "
      "print(sorted(d.files)); print(d['z.group a'].dtype, d['z.group a'].shape, "
      "d['z.group a'].ravel().tolist()); print(d['y.group a'].dtype, d['y.group a'].tolist()); "
      "print(d['empty'].shape)");
  EXPECT_EQ(out,
            "['empty', 'y.group a', 'z.group a']\n"
            "float32 (2, 3) [1.5, -2.0, 3.0, 4.0, 5.0, 6.25]\n"
            "int32 [7, -1]\n"
            "(0, 4)\n");
}

}  // namespace
}  // namespace hetdro

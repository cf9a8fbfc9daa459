// NPY reader: the same bytes as features and as labels (host/io/npy.cpp).
#include "fuzz_input.h"
#include "hetdro/io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hetdro;
  const std::string path = fuzz::write_input("input.npy", data, size);
  fuzz::expect_input_error_or_success([&] { read_npy_features(path); });
  fuzz::expect_input_error_or_success([&] { read_npy_labels(path); });
  return 0;
}

// IDX reader, plain or gzipped by content (host/io/idx.cpp).
#include "fuzz_input.h"
#include "hetdro/io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hetdro;
  const std::string path = fuzz::write_input("input-idx", data, size);
  fuzz::expect_input_error_or_success([&] {
    Array<uint8_t> a = read_idx(path);
    // The shape the reader returns describes exactly the bytes it returns.
    int64_t count = 1;
    for (int64_t d : a.shape) count *= d;
    if (count != int64_t(a.data.size())) __builtin_trap();
  });
  return 0;
}

// safetensors reader, the checkpoints' container (host/io/safetensors.cpp).
#include "fuzz_input.h"
#include "hetdro/io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hetdro;
  const std::string path = fuzz::write_input("input.safetensors", data, size);
  fuzz::expect_input_error_or_success([&] {
    SafetensorsFile f = read_safetensors(path);
    for (const NamedTensor& t : f.tensors) {
      int64_t count = 1;
      for (int64_t d : t.shape) count *= d;
      if (count != int64_t(t.data.size())) __builtin_trap();
    }
  });
  return 0;
}

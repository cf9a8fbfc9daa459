// The CUDA backend's memory (docs/DESIGN.md §6): copies round-trip, zero zeroes, allocations
// are counted, and a failed CUDA call becomes an exception that names the call. Skipped
// without a GPU.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cuda_testing.h"

namespace hetdro {
namespace {

using testing::on_device;

TEST(CudaBackend, CopiesRoundTripAndZeroZeroes) {
  HETDRO_CUDA_OR_SKIP(be);
  EXPECT_EQ(be.name(), "cuda");
  const auto host = testing::random_vector<float>(1000, 1);
  const int64_t before = be.allocations();
  Buffer<float> b = on_device(be, host);
  EXPECT_EQ(be.allocations(), before + 1);
  EXPECT_EQ(b.download(), host);
  b.zero();
  EXPECT_EQ(b.download(), std::vector<float>(1000, 0.0f));
  EXPECT_GT(be.capacity(), size_t(0));
}

TEST(CudaBackend, AFailedCallThrowsNamingIt) {
  HETDRO_CUDA_OR_SKIP(be);
  // More than any GPU has: cudaMalloc fails, and the error says where and why.
  try {
    Buffer<float> b(be, int64_t(1) << 50);
    FAIL() << "a 4 PiB allocation succeeded";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("cudaMalloc"), std::string::npos) << what;
    EXPECT_NE(what.find("cuda_backend.cu"), std::string::npos) << what;
  }
  // The failure is not left behind as the runtime's "last error": the next kernel launch (whose
  // launchCheck reads it) must not report the out-of-memory as its own failure.
  auto x = on_device(be, std::vector<float>{-2.0f, 3.0f});
  EXPECT_NO_THROW(be.relu_forward(x.data(), x.data(), 2));
  EXPECT_EQ(x.download(), (std::vector<float>{0.0f, 3.0f}));
}

// An empty buffer (an empty group, a pool with no window) allocates, copies and zeroes nothing.
TEST(CudaBackend, EmptyBuffersAreNoOps) {
  HETDRO_CUDA_OR_SKIP(be);
  Buffer<float> empty(be, 0);
  EXPECT_EQ(empty.data(), nullptr);
  empty.upload(std::vector<float>{});
  empty.zero();
  EXPECT_TRUE(empty.download().empty());
}

}  // namespace
}  // namespace hetdro

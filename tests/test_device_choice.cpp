// One GPU per rank (include/hetdro/device.h, docs/DESIGN.md §7): which GPU a rank takes from its
// place on its node and the GPUs it sees, and the refusal of two ranks on one GPU.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "hetdro/device.h"

namespace hetdro {
namespace {

TEST(DeviceChoice, EachLocalRankTakesItsOwnGpu) {
  for (int visible : {1, 2, 4, 8})
    for (int rank = 0; rank < visible; ++rank) {
      const DeviceChoice c = device_for_rank(rank, visible, visible);
      EXPECT_EQ(c.device, rank);
      EXPECT_EQ(c.error, "");
    }
  // Fewer ranks than GPUs: the first ones, by local rank.
  EXPECT_EQ(device_for_rank(1, 2, 8).device, 1);
  EXPECT_EQ(device_for_rank(0, 1, 4).device, 0);
}

// A launcher or wrapper that sets CUDA_VISIBLE_DEVICES per rank leaves each rank one GPU: GPU 0
// for every rank, and the node-wide check below tells whether they are distinct.
TEST(DeviceChoice, OneVisibleGpuPerRankIsDeviceZero) {
  for (int rank = 0; rank < 4; ++rank) EXPECT_EQ(device_for_rank(rank, 4, 1).device, 0);
}

TEST(DeviceChoice, MoreRanksThanGpusIsRefusedSayingSo) {
  const DeviceChoice c = device_for_rank(2, 3, 2);
  EXPECT_EQ(c.device, -1);
  EXPECT_EQ(c.error,
            "3 ranks run on this node but it has 2 GPUs, and hetdro takes one GPU per rank "
            "(docs/DESIGN.md §7): start at most 2 ranks per node");
  EXPECT_EQ(device_for_rank(0, 1, 0).error, "no GPU is visible to this rank");
}

TEST(DeviceChoice, TwoRanksOnOneGpuAreNamed) {
  EXPECT_EQ(shared_gpu_error({"GPU-a", "GPU-b", "GPU-c"}), "");
  EXPECT_EQ(shared_gpu_error({"GPU-a"}), "");
  EXPECT_EQ(shared_gpu_error({"", ""}), "") << "CPU ranks share no GPU";
  const std::string e = shared_gpu_error({"GPU-a", "GPU-b", "GPU-a"});
  EXPECT_EQ(e.rfind("local ranks 0 and 2 on this node would both use GPU GPU-a", 0), 0u) << e;
  EXPECT_NE(e.find("CUDA_VISIBLE_DEVICES"), std::string::npos) << e;
}

}  // namespace
}  // namespace hetdro

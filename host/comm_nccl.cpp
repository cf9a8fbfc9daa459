// The GPU's collectives (docs/DESIGN.md §7): NCCL on the CUDA backend's stream, its unique id
// broadcast over MPI by the caller (host/comm_mpi.cpp, the only file with mpi.h). Built only with
// CUDA, MPI and NCCL found (HETDRO_WITH_NCCL). NOT YET COMPILED OR RUN: no machine this was
// written on had CUDA, NCCL or a GPU; the first GPU machine with several GPUs must build it and
// run tests/mpi under mpirun with train.device = "cuda".
//
// The class moments take a host round trip: the shard's latents and slots come down, the host
// collectives combine them exactly (Chan, over MPI), and the global moments go back up. Exact
// and simple; it synchronises the stream once per step and moves B·k + slots·(k² + k) floats
// over PCIe. The device-side version needs two ops with kernels (the shard's packed moments, and
// their finishing), then ncclAllGather of the packs and a Chan fold in rank order on the device.
#include <cuda_runtime.h>
#include <nccl.h>

#include <stdexcept>
#include <vector>

#include "hetdro/check.h"
#include "hetdro/comm.h"
#include "kernels/context.h"  // cuda::context().stream(): the stream every op runs on

namespace hetdro {
namespace {

void check_cuda(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess)
    throw std::runtime_error(fmt::format("{} failed: {}", what, cudaGetErrorString(rc)));
}
void check_nccl(ncclResult_t rc, const char* what) {
  if (rc != ncclSuccess)
    throw std::runtime_error(fmt::format("{} failed: {}", what, ncclGetErrorString(rc)));
}

class NcclCollectives final : public Collectives {
 public:
  NcclCollectives(std::unique_ptr<Collectives> host,
                  const std::function<void(void*, size_t)>& broadcast_from_lead)
      : host_(std::move(host)) {
    ncclUniqueId id;
    if (host_->rank() == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    broadcast_from_lead(&id, sizeof id);
    check_nccl(ncclCommInitRank(&comm_, host_->size(), id, host_->rank()), "ncclCommInitRank");
  }
  ~NcclCollectives() override {
    if (comm_) ncclCommDestroy(comm_);
  }
  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }

  void all_reduce(float* x, int64_t count, Reduce op) override { reduce(x, count, ncclFloat, op); }
  void all_reduce(double* x, int64_t count, Reduce op) override {
    reduce(x, count, ncclDouble, op);
  }
  void all_reduce_host(int64_t* x, int64_t count) override { host_->all_reduce_host(x, count); }
  void barrier() override { host_->barrier(); }

  void class_moments_forward(float* mean, float* cov, int32_t* count, const float* z,
                             const int32_t* slot, int n, int k, int slots, float eps) override {
    const cudaStream_t stream = cuda::context().stream();
    z_.resize(size_t(n) * k);
    slot_.resize(size_t(n));
    mean_.resize(size_t(slots) * k);
    cov_.resize(size_t(slots) * k * k);
    count_.resize(size_t(slots));
    check_cuda(
        cudaMemcpyAsync(z_.data(), z, z_.size() * sizeof(float), cudaMemcpyDeviceToHost, stream),
        "cudaMemcpyAsync");
    check_cuda(cudaMemcpyAsync(slot_.data(), slot, slot_.size() * sizeof(int32_t),
                               cudaMemcpyDeviceToHost, stream),
               "cudaMemcpyAsync");
    check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    host_->class_moments_forward(mean_.data(), cov_.data(), count_.data(), z_.data(), slot_.data(),
                                 n, k, slots, eps);
    check_cuda(cudaMemcpyAsync(mean, mean_.data(), mean_.size() * sizeof(float),
                               cudaMemcpyHostToDevice, stream),
               "cudaMemcpyAsync");
    check_cuda(cudaMemcpyAsync(cov, cov_.data(), cov_.size() * sizeof(float),
                               cudaMemcpyHostToDevice, stream),
               "cudaMemcpyAsync");
    check_cuda(cudaMemcpyAsync(count, count_.data(), count_.size() * sizeof(int32_t),
                               cudaMemcpyHostToDevice, stream),
               "cudaMemcpyAsync");
    // The host buffers are reused by the next call; let the copies finish first.
    check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  }
  void class_moments_forward(double*, double*, int32_t*, const double*, const int32_t*, int, int,
                             int, double) override {
    throw std::logic_error("the CUDA backend trains in float only; no double collectives");
  }

 private:
  void reduce(void* x, int64_t count, ncclDataType_t type, Reduce op) {
    check_nccl(ncclAllReduce(x, x, size_t(count), type, op == Reduce::sum ? ncclSum : ncclMin,
                             comm_, cuda::context().stream()),
               "ncclAllReduce");
  }

  std::unique_ptr<Collectives> host_;
  ncclComm_t comm_ = nullptr;
  std::vector<float> z_, mean_, cov_;
  std::vector<int32_t> slot_, count_;
};

}  // namespace

std::unique_ptr<Collectives> make_nccl_collectives(
    std::unique_ptr<Collectives> host, const std::function<void(void*, size_t)>& broadcast) {
  return std::make_unique<NcclCollectives>(std::move(host), broadcast);
}

}  // namespace hetdro

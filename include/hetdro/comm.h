// Data-parallel training over processes (docs/DESIGN.md §7): the process world MPI starts, each
// rank's share of a batch, and the collectives the loss and the trainer call. The loss is written
// once against Collectives, as it is against Backend<T>; the MPI build implements it on CPU memory
// (host/comm_mpi.cpp), a build without MPI has a world of one process (host/comm_single.cpp).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "hetdro/backend.h"

namespace hetdro {

// This process's place among the ranks of one training job.
struct World {
  int rank = 0, size = 1;
  // This rank's place among the ranks on its node (MPI_COMM_TYPE_SHARED): it picks the GPU
  // (device_for_rank, hetdro/device.h; docs/DESIGN.md §7).
  int local_rank = 0, local_size = 1;
  bool lead() const { return rank == 0; }  // writes the run folder and the console output
};

// Starts MPI when the process was launched by an MPI launcher (mpirun, srun: the environment
// names the job's size) and this build has MPI; otherwise a world of one. Call once, first in
// main. Throws an InputError when launched under MPI by a build without it.
World start_world(int* argc, char*** argv);
const World& world();
// Ends MPI (after every collective); nothing without it.
void finish_world();
// A failed rank takes the whole job down: prints "rank R of N failed: why" to stderr and calls
// MPI_Abort, so no rank is left waiting in a collective. Without MPI: nothing (the caller exits).
void abort_world(int exit_code, const std::string& why);
// `mine` from every rank on this node, in local-rank order (a collective of the node's ranks;
// {mine} in a world of one). Texts longer than 255 bytes are cut.
std::vector<std::string> node_all_gather(const std::string& mine);
// What `hetdro info` says about multi-process training: the MPI library built in, or that none is.
std::string mpi_status();
// The number of ranks a launcher's environment gives the job (Open MPI's OMPI_COMM_WORLD_SIZE,
// PMI_SIZE of MPICH and Slurm), or 0 when no launcher started this process.
int launcher_ranks();

// Rank r's share of every group's n_g rows of a global batch (docs/DESIGN.md §7): contiguous,
// as even as possible (the first n_g mod N ranks take one more), in rank order, so the ranks'
// shares put together are the global batch in its order.
struct Shard {
  std::vector<int> rows, offset;  // per group: rows taken, and where they start in n_g
};
Shard shard_rows(const std::vector<int>& global_rows, int rank, int ranks);

enum class Reduce { sum, min };

// Collectives over the ranks of a world, on backend memory; every rank passes the same counts
// and gets the same values back.
class Collectives {
 public:
  virtual ~Collectives() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual void all_reduce(float* x, int64_t count, Reduce op) = 0;
  virtual void all_reduce(double* x, int64_t count, Reduce op) = 0;
  // The same on host memory, for the evaluation's confusion counts and the stop flag.
  virtual void all_reduce_host(int64_t* x, int64_t count) = 0;
  virtual void barrier() = 0;

  // class_moments_forward (ops.def) of the global batch, from this rank's shard z [n,k] and slot
  // [n]: count, mean and cov of every slot over the samples of all ranks. Each rank computes
  // its shard's count, mean and centred sum M = Σ(z − m)(z − m)ᵀ; the ranks combine them with
  // Chan's pairwise formula (docs/DESIGN.md §7), which never forms E[zzᵀ] − mmᵀ.
  virtual void class_moments_forward(float* mean, float* cov, int32_t* count, const float* z,
                                     const int32_t* slot, int n, int k, int slots, float eps) = 0;
  virtual void class_moments_forward(double* mean, double* cov, int32_t* count, const double* z,
                                     const int32_t* slot, int n, int k, int slots, double eps) = 0;
};

// The collectives of world() for a backend: nullptr in a world of one (the single-process path,
// unchanged). Throws an InputError when the backend has none (the GPU in a build without NCCL).
std::unique_ptr<Collectives> make_collectives(const Memory& backend);
// The GPU's: NCCL for the device buffers, `host` (MPI) for the host's, and NCCL's unique id sent
// from rank 0 to every rank by `broadcast` (host/comm_nccl.cpp; built with NCCL only).
std::unique_ptr<Collectives> make_nccl_collectives(
    std::unique_ptr<Collectives> host, const std::function<void(void*, size_t)>& broadcast);

// --- the moment arithmetic the collectives run, on host memory (tests call it directly) ------
// One slot's packed moments: {count, mean [k], M [k,k]}, moments_width(k) values.
inline int64_t moments_width(int k) { return 1 + k + int64_t(k) * k; }
// Packs the moments of the samples of each slot in z [n,k] (slot −1: left out) into
// packed [slots, moments_width(k)]; a slot with no sample packs zeros.
template <typename T>
void pack_moments(T* packed, const T* z, const int32_t* slot, int n, int k, int slots);
// Folds packed moments `in` into `inout` slot by slot (Chan, docs/DESIGN.md §7).
template <typename T>
void combine_moments(T* inout, const T* in, int slots, int k);
// class_moments_forward's outputs from packed moments: count, mean, and
// cov = M/(count − 1) + eps·I; a slot with count < 2 gets mean 0 and cov 0.
template <typename T>
void finish_moments(T* mean, T* cov, int32_t* count, const T* packed, int slots, int k, T eps);

}  // namespace hetdro

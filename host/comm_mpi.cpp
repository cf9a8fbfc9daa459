// The world and the collectives over MPI (docs/DESIGN.md §7): the only file that includes mpi.h.
// MPI starts the processes and connects them; on the CPU backend, whose memory is host memory,
// MPI also carries every collective. On the GPU, NCCL carries them (host/comm_nccl.cpp), its
// unique id broadcast from here.
// The C API only: without these, mpi.h from C++ pulls in the deprecated C++ bindings, which need
// a library (libmpi_cxx) that FindMPI's C component does not link.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <thread>  // sleep_for
#include <vector>

#include "hetdro/check.h"
#include "hetdro/comm.h"

namespace hetdro {
namespace {

World g_world;
bool g_started = false;
MPI_Comm g_node = MPI_COMM_NULL;  // the ranks that share this node's memory (and GPUs)

void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(rc, text, &length);
  throw std::runtime_error(
      fmt::format("rank {}: {} failed: {}", g_world.rank, what, std::string(text, size_t(length))));
}

template <typename T>
MPI_Datatype mpi_type();
template <>
MPI_Datatype mpi_type<float>() {
  return MPI_FLOAT;
}
template <>
MPI_Datatype mpi_type<double>() {
  return MPI_DOUBLE;
}

int checked_count(int64_t count) {
  HETDRO_ASSERT(count >= 0 && count <= INT_MAX);
  return int(count);
}

// The MPI reduction of packed moments: each element of the datatype is one slot's
// {count, mean, M}, and k follows from its width 1 + k + k².
template <typename T>
void chan_op(void* in, void* inout, int* len, MPI_Datatype* type) {
  int bytes = 0;
  MPI_Type_size(*type, &bytes);
  const int64_t width = bytes / int64_t(sizeof(T));
  const int k = int(std::lround((std::sqrt(4.0 * double(width) - 3.0) - 1.0) / 2.0));
  combine_moments(static_cast<T*>(inout), static_cast<const T*>(in), *len, k);
}

class MpiCollectives final : public Collectives {
 public:
  MpiCollectives() {
    // Not commutative: with a fixed order of ranks the combined moments do not depend on the
    // reduction's schedule.
    check_mpi(MPI_Op_create(&chan_op<float>, 0, &chan_float_), "MPI_Op_create");
    check_mpi(MPI_Op_create(&chan_op<double>, 0, &chan_double_), "MPI_Op_create");
  }
  ~MpiCollectives() override {
    MPI_Op_free(&chan_float_);
    MPI_Op_free(&chan_double_);
  }
  int rank() const override { return g_world.rank; }
  int size() const override { return g_world.size; }

  void all_reduce(float* x, int64_t count, Reduce op) override { reduce(x, count, op); }
  void all_reduce(double* x, int64_t count, Reduce op) override { reduce(x, count, op); }
  void all_reduce_host(int64_t* x, int64_t count) override {
    check_mpi(
        MPI_Allreduce(MPI_IN_PLACE, x, checked_count(count), MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD),
        "MPI_Allreduce");
  }
  void barrier() override { check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }

  void class_moments_forward(float* mean, float* cov, int32_t* count, const float* z,
                             const int32_t* slot, int n, int k, int slots, float eps) override {
    moments(packed_float_, chan_float_, mean, cov, count, z, slot, n, k, slots, eps);
  }
  void class_moments_forward(double* mean, double* cov, int32_t* count, const double* z,
                             const int32_t* slot, int n, int k, int slots, double eps) override {
    moments(packed_double_, chan_double_, mean, cov, count, z, slot, n, k, slots, eps);
  }

 private:
  template <typename T>
  void reduce(T* x, int64_t count, Reduce op) {
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, x, checked_count(count), mpi_type<T>(),
                            op == Reduce::sum ? MPI_SUM : MPI_MIN, MPI_COMM_WORLD),
              "MPI_Allreduce");
  }

  // Pack this rank's moments, fold them in rank order on rank 0 and broadcast the result, so
  // that every rank holds the same bits (MPI_Allreduce does not promise that for a user op).
  template <typename T>
  void moments(std::vector<T>& packed, MPI_Op chan, T* mean, T* cov, int32_t* count, const T* z,
               const int32_t* slot, int n, int k, int slots, T eps) {
    const int64_t width = moments_width(k);
    packed.resize(size_t(2 * slots * width));
    T* mine = packed.data();
    T* all = mine + slots * width;
    pack_moments(mine, z, slot, n, k, slots);
    MPI_Datatype one_slot;
    check_mpi(MPI_Type_contiguous(checked_count(width), mpi_type<T>(), &one_slot),
              "MPI_Type_contiguous");
    MPI_Type_commit(&one_slot);
    check_mpi(MPI_Reduce(mine, all, slots, one_slot, chan, 0, MPI_COMM_WORLD), "MPI_Reduce");
    check_mpi(MPI_Bcast(all, slots, one_slot, 0, MPI_COMM_WORLD), "MPI_Bcast");
    MPI_Type_free(&one_slot);
    finish_moments(mean, cov, count, all, slots, k, eps);
  }

  MPI_Op chan_float_ = MPI_OP_NULL, chan_double_ = MPI_OP_NULL;
  std::vector<float> packed_float_;
  std::vector<double> packed_double_;
};

}  // namespace

World start_world(int* argc, char*** argv) {
  if (launcher_ranks() == 0 || g_started) return g_world;
  int provided = 0;
  // Only the main thread calls MPI; OpenMP threads work inside the ops.
  check_mpi(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  g_started = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_world.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_world.size);
  // The node's ranks from MPI itself, under any launcher (not OMPI_COMM_WORLD_LOCAL_RANK, which
  // only Open MPI's mpirun sets): local ranks in world-rank order.
  check_mpi(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_world.rank, MPI_INFO_NULL,
                                &g_node),
            "MPI_Comm_split_type");
  MPI_Comm_rank(g_node, &g_world.local_rank);
  MPI_Comm_size(g_node, &g_world.local_size);
  return g_world;
}

const World& world() { return g_world; }

std::vector<std::string> node_all_gather(const std::string& mine) {
  if (!g_started || g_node == MPI_COMM_NULL) return {mine};
  constexpr int kWidth = 256;
  std::vector<char> out(kWidth, '\0'), all(size_t(kWidth) * size_t(g_world.local_size));
  mine.copy(out.data(), kWidth - 1);
  check_mpi(MPI_Allgather(out.data(), kWidth, MPI_CHAR, all.data(), kWidth, MPI_CHAR, g_node),
            "MPI_Allgather");
  std::vector<std::string> texts;
  for (int r = 0; r < g_world.local_size; ++r) texts.emplace_back(all.data() + size_t(r) * kWidth);
  return texts;
}

std::string mpi_status() {
  char version[MPI_MAX_LIBRARY_VERSION_STRING];
  int length = 0;
  MPI_Get_library_version(version, &length);  // callable before MPI_Init
  std::string text(version, size_t(length));
  text = text.substr(0, text.find_first_of(",\n"));
  return fmt::format("{}: `mpirun -np N hetdro train` runs N ranks on the CPU backend", text);
}

void finish_world() {
  if (g_node != MPI_COMM_NULL) MPI_Comm_free(&g_node);
  if (g_started) MPI_Finalize();
  g_started = false;
}

void abort_world(int exit_code, const std::string& why) {
  if (!g_started || g_world.size == 1) return;
  // A failure every rank meets (a non-finite loss) reaches the lead too: give it a moment to
  // write its checkpoint and report.json before the job comes down.
  if (!g_world.lead()) std::this_thread::sleep_for(std::chrono::seconds(2));
  std::fprintf(stderr, "hetdro: rank %d of %d failed, stopping every rank: %s\n", g_world.rank,
               g_world.size, why.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, exit_code);
}

std::unique_ptr<Collectives> make_collectives(const Memory& backend) {
  if (g_world.size == 1) return nullptr;
#if HETDRO_WITH_NCCL
  if (backend.name() == "cuda")
    return make_nccl_collectives(std::make_unique<MpiCollectives>(), [](void* bytes, size_t n) {
      check_mpi(MPI_Bcast(bytes, checked_count(int64_t(n)), MPI_BYTE, 0, MPI_COMM_WORLD),
                "MPI_Bcast");
    });
#endif
  if (backend.name() != "cpu")
    input_error(
        "hetdro runs as {} MPI ranks on the {} backend, but this build has only the CPU's "
        "collectives (MPI): the GPU's need NCCL (found by CMake next to CUDA and MPI). Use "
        "train.device = \"cpu\", or run one process",
        g_world.size, backend.name());
  return std::make_unique<MpiCollectives>();
}

}  // namespace hetdro

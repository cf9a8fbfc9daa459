// The world of a build without MPI: one process, no collectives (docs/DESIGN.md §7).
#include "hetdro/check.h"
#include "hetdro/comm.h"

namespace hetdro {
namespace {
World g_world;
}

World start_world(int*, char***) {
  if (const int ranks = launcher_ranks(); ranks > 1)
    input_error(
        "hetdro was started as one of {} MPI ranks, but this build has no MPI (HETDRO_MPI=OFF, "
        "or MPI was not found). Install openmpi-bin and libopenmpi-dev (scripts/setup.sh) and "
        "rebuild, or run a single process without mpirun",
        ranks);
  return g_world;
}
const World& world() { return g_world; }
std::vector<std::string> node_all_gather(const std::string& mine) { return {mine}; }
std::string mpi_status() { return "not built (no MPI found; one process only)"; }
void finish_world() {}
void abort_world(int, const std::string&) {}
std::unique_ptr<Collectives> make_collectives(const Memory&) { return nullptr; }

}  // namespace hetdro

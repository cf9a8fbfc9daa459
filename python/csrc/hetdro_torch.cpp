// hetdro_torch._C: hetdro's ops on PyTorch tensors (docs/DESIGN.md §8). CPU tensors go to the
// CPU reference (hetdro::cpu, host/ops/), CUDA tensors to the CUDA kernels (hetdro::cuda,
// kernels/) when the extension is built with HETDRO_TORCH_CUDA. No arithmetic lives here: each
// function checks what the ops assume, allocates the outputs and calls the op.
//
// The Python layer (python/hetdro_torch/__init__.py) validates the user's arguments and names
// them; the checks here are the ops' preconditions, so a direct call cannot pass the ops memory
// they would read out of bounds.
#include <torch/extension.h>

#include <cstdint>
#include <string>

#include "hetdro/ops.h"

#ifdef HETDRO_TORCH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "hetdro/cuda_ops.h"
#include "kernels/context.h"  // hetdro::cuda::context(): the stream the ops run on
#endif

namespace {

using at::Tensor;

void check_float(const Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
              " must be float32 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

void check_like(const Tensor& t, const Tensor& ref, const char* name) {
  check_float(t, name);
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), name, " must have dtype ", ref.scalar_type(),
              ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), name, " must be on ", ref.device(), ", got ", t.device());
}

void check_shape(const Tensor& t, at::IntArrayRef shape, const char* name) {
  TORCH_CHECK(t.sizes() == shape, name, " must have shape ", shape, ", got ", t.sizes());
}

int to_int(int64_t v, const char* what) {
  TORCH_CHECK(v >= 0 && v <= INT32_MAX, what, " = ", v, " is out of the ops' range [0, 2^31)");
  return int(v);
}

#ifdef HETDRO_TORCH_CUDA
// The CUDA ops run on hetdro's own stream (kernels/context.h). Order them after the work
// PyTorch queued on its current stream, and PyTorch's later work after them.
struct OnHetdroStream {
  explicit OnHetdroStream(const Tensor& t) : guard(t.device()) {
    torch_stream = at::cuda::getCurrentCUDAStream(t.device().index()).stream();
    hetdro_stream = hetdro::cuda::context().stream();
    join(hetdro_stream, torch_stream);
  }
  ~OnHetdroStream() { join(torch_stream, hetdro_stream); }
  static void join(cudaStream_t waiter, cudaStream_t waited) {
    if (waiter == waited) return;
    cudaEvent_t event;
    C10_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    C10_CUDA_CHECK(cudaEventRecord(event, waited));
    C10_CUDA_CHECK(cudaStreamWaitEvent(waiter, event, 0));
    C10_CUDA_CHECK(cudaEventDestroy(event));
  }
  c10::cuda::CUDAGuard guard;
  cudaStream_t torch_stream, hetdro_stream;
};

void check_cuda_float32(const Tensor& t, const char* op) {
  TORCH_CHECK(t.scalar_type() == at::kFloat, op,
              " on CUDA takes float32: hetdro's CUDA kernels are float32 only (their float64 "
              "twin is the CPU reference); move the tensors to the CPU for float64, got ",
              t.scalar_type());
}

// A cuSOLVER eigensolver's failure, recorded on the device, as an exception (waits).
void raise_solver_failure(const char* op) {
  const int64_t code = hetdro::cuda::take_solver_failure();
  TORCH_CHECK(code == 0, op, ": the CUDA eigensolver ",
              hetdro::cuda::name(hetdro::cuda::eigensolver()), " failed (hetdro step_status code ",
              code, ")");
}
#endif

// (w2 [P], saved [P, 2k²+2k]).
std::vector<Tensor> w2_gaussian_forward(const Tensor& m1, const Tensor& A, const Tensor& m2,
                                        const Tensor& B, double eps) {
  check_float(m1, "m1");
  TORCH_CHECK(m1.dim() == 2, "m1 must be [P, k], got ", m1.sizes());
  const int64_t P = m1.size(0), k = m1.size(1);
  check_like(A, m1, "S1");
  check_like(m2, m1, "m2");
  check_like(B, m1, "S2");
  check_shape(m2, {P, k}, "m2");
  check_shape(A, {P, k, k}, "S1");
  check_shape(B, {P, k, k}, "S2");
  const int pairs = to_int(P, "pairs"), kk = to_int(k, "k");
  Tensor w2 = at::empty({P}, m1.options());
  Tensor saved = at::empty({P, hetdro::w2_gaussian_saved_size(kk)}, m1.options());
  if (P == 0) return {w2, saved};
  if (m1.is_cuda()) {
#ifdef HETDRO_TORCH_CUDA
    check_cuda_float32(m1, "w2_gaussian");
    OnHetdroStream on(m1);
    hetdro::cuda::w2_gaussian_forward<float>(
        w2.data_ptr<float>(), saved.data_ptr<float>(), m1.data_ptr<float>(), A.data_ptr<float>(),
        m2.data_ptr<float>(), B.data_ptr<float>(), pairs, kk, float(eps));
    raise_solver_failure("w2_gaussian");
    return {w2, saved};
#else
    TORCH_CHECK(false, "this hetdro_torch was built without CUDA");
#endif
  }
  AT_DISPATCH_FLOATING_TYPES(m1.scalar_type(), "w2_gaussian_forward", [&] {
    hetdro::cpu::w2_gaussian_forward<scalar_t>(w2.data_ptr<scalar_t>(), saved.data_ptr<scalar_t>(),
                                               m1.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(),
                                               m2.data_ptr<scalar_t>(), B.data_ptr<scalar_t>(),
                                               pairs, kk, scalar_t(eps));
  });
  return {w2, saved};
}

// (dm1, dS1, dm2, dS2), from the forward's `saved`; dS1 and dS2 are symmetric.
std::vector<Tensor> w2_gaussian_backward(const Tensor& dw2, const Tensor& saved, const Tensor& m1,
                                         const Tensor& A, const Tensor& m2, const Tensor& B,
                                         double eps) {
  const int64_t P = m1.size(0), k = m1.size(1);
  check_like(dw2, m1, "grad");
  check_shape(dw2, {P}, "grad");
  check_like(saved, m1, "saved");
  check_shape(saved, {P, hetdro::w2_gaussian_saved_size(int(k))}, "saved");
  // The backward accumulates (ops.def): start from zero.
  Tensor dm1 = at::zeros_like(m1), dA = at::zeros_like(A), dm2 = at::zeros_like(m2),
         dB = at::zeros_like(B);
  if (P == 0) return {dm1, dA, dm2, dB};
  const int pairs = int(P), kk = int(k);
  if (m1.is_cuda()) {
#ifdef HETDRO_TORCH_CUDA
    OnHetdroStream on(m1);
    hetdro::cuda::w2_gaussian_backward<float>(
        dm1.data_ptr<float>(), dA.data_ptr<float>(), dm2.data_ptr<float>(), dB.data_ptr<float>(),
        dw2.data_ptr<float>(), saved.data_ptr<float>(), m1.data_ptr<float>(), A.data_ptr<float>(),
        m2.data_ptr<float>(), B.data_ptr<float>(), pairs, kk, float(eps));
    return {dm1, dA, dm2, dB};
#else
    TORCH_CHECK(false, "this hetdro_torch was built without CUDA");
#endif
  }
  AT_DISPATCH_FLOATING_TYPES(m1.scalar_type(), "w2_gaussian_backward", [&] {
    hetdro::cpu::w2_gaussian_backward<scalar_t>(
        dm1.data_ptr<scalar_t>(), dA.data_ptr<scalar_t>(), dm2.data_ptr<scalar_t>(),
        dB.data_ptr<scalar_t>(), dw2.data_ptr<scalar_t>(), saved.data_ptr<scalar_t>(),
        m1.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(), m2.data_ptr<scalar_t>(),
        B.data_ptr<scalar_t>(), pairs, kk, scalar_t(eps));
  });
  return {dm1, dA, dm2, dB};
}

void check_slots(const Tensor& slot, const Tensor& z, int64_t slots) {
  TORCH_CHECK(slot.scalar_type() == at::kInt && slot.is_contiguous(),
              "slot must be a contiguous int32 tensor");
  TORCH_CHECK(slot.device() == z.device(), "slot must be on ", z.device());
  check_shape(slot, {z.size(0)}, "slot");
  TORCH_CHECK(slots >= 0, "num_slots must be ≥ 0");
  // The ops index by slot without checking (ops.def): refuse what is out of range here.
  if (slot.numel() > 0) {
    TORCH_CHECK(slot.min().item<int32_t>() >= -1 && slot.max().item<int32_t>() < slots,
                "every slot must be in [-1, ", slots, ")");
  }
}

// (count int32 [S], mean [S, k], cov [S, k, k]).
std::vector<Tensor> class_moments_forward(const Tensor& z, const Tensor& slot, int64_t slots,
                                          double eps) {
  check_float(z, "z");
  TORCH_CHECK(z.dim() == 2, "z must be [n, k], got ", z.sizes());
  check_slots(slot, z, slots);
  const int n = to_int(z.size(0), "n"), k = to_int(z.size(1), "k");
  const int S = to_int(slots, "num_slots");
  Tensor count = at::empty({slots}, slot.options());
  Tensor mean = at::empty({slots, z.size(1)}, z.options());
  Tensor cov = at::empty({slots, z.size(1), z.size(1)}, z.options());
  if (z.is_cuda()) {
#ifdef HETDRO_TORCH_CUDA
    check_cuda_float32(z, "class_moments");
    OnHetdroStream on(z);
    hetdro::cuda::class_moments_forward<float>(mean.data_ptr<float>(), cov.data_ptr<float>(),
                                               count.data_ptr<int32_t>(), z.data_ptr<float>(),
                                               slot.data_ptr<int32_t>(), n, k, S, float(eps));
    return {count, mean, cov};
#else
    TORCH_CHECK(false, "this hetdro_torch was built without CUDA");
#endif
  }
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "class_moments_forward", [&] {
    hetdro::cpu::class_moments_forward<scalar_t>(
        mean.data_ptr<scalar_t>(), cov.data_ptr<scalar_t>(), count.data_ptr<int32_t>(),
        z.data_ptr<scalar_t>(), slot.data_ptr<int32_t>(), n, k, S, scalar_t(eps));
  });
  return {count, mean, cov};
}

Tensor class_moments_backward(const Tensor& dmean, const Tensor& dcov, const Tensor& z,
                              const Tensor& mean, const Tensor& count, const Tensor& slot,
                              int64_t slots) {
  const int64_t K = z.size(1);
  check_like(dmean, z, "grad of mean");
  check_like(dcov, z, "grad of cov");
  check_shape(dmean, {slots, K}, "grad of mean");
  check_shape(dcov, {slots, K, K}, "grad of cov");
  check_slots(slot, z, slots);
  Tensor dz = at::zeros_like(z);
  const int n = int(z.size(0)), k = int(K), S = int(slots);
  if (z.is_cuda()) {
#ifdef HETDRO_TORCH_CUDA
    OnHetdroStream on(z);
    hetdro::cuda::class_moments_backward<float>(
        dz.data_ptr<float>(), dmean.data_ptr<float>(), dcov.data_ptr<float>(), z.data_ptr<float>(),
        mean.data_ptr<float>(), count.data_ptr<int32_t>(), slot.data_ptr<int32_t>(), n, k, S);
    return dz;
#else
    TORCH_CHECK(false, "this hetdro_torch was built without CUDA");
#endif
  }
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "class_moments_backward", [&] {
    hetdro::cpu::class_moments_backward<scalar_t>(
        dz.data_ptr<scalar_t>(), dmean.data_ptr<scalar_t>(), dcov.data_ptr<scalar_t>(),
        z.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(), count.data_ptr<int32_t>(),
        slot.data_ptr<int32_t>(), n, k, S);
  });
  return dz;
}

// (w [batch, k] ascending, V [batch, k, k], eigenvector i in column i). solver: "auto" or "eigen"
// on the CPU; "auto", "jacobi", "syevj" or "syev" on CUDA.
std::vector<Tensor> eigh(const Tensor& A, const std::string& solver) {
  check_float(A, "A");
  TORCH_CHECK(A.dim() == 3 && A.size(1) == A.size(2), "A must be [batch, k, k], got ", A.sizes());
  const int batch = to_int(A.size(0), "batch"), k = to_int(A.size(1), "k");
  Tensor w = at::empty({A.size(0), A.size(1)}, A.options());
  Tensor V = at::empty_like(A);
  if (A.is_cuda()) {
#ifdef HETDRO_TORCH_CUDA
    check_cuda_float32(A, "eigh");
    using hetdro::cuda::Eigensolver;
    Eigensolver chosen;
    if (solver == "auto")
      chosen = Eigensolver::automatic;
    else if (solver == "jacobi")
      chosen = Eigensolver::jacobi;
    else if (solver == "syevj")
      chosen = Eigensolver::syevj;
    else if (solver == "syev")
      chosen = Eigensolver::syev;
    else
      TORCH_CHECK(false, "solver on CUDA must be auto, jacobi, syevj or syev, got '", solver, "'");
    OnHetdroStream on(A);
    const Eigensolver before = hetdro::cuda::eigensolver();
    hetdro::cuda::set_eigensolver(chosen);
    try {
      if (batch > 0)
        hetdro::cuda::eigh(w.data_ptr<float>(), V.data_ptr<float>(), A.data_ptr<float>(), batch, k);
    } catch (...) {
      hetdro::cuda::set_eigensolver(before);
      throw;
    }
    hetdro::cuda::set_eigensolver(before);
    raise_solver_failure("eigh");
    return {w, V};
#else
    TORCH_CHECK(false, "this hetdro_torch was built without CUDA");
#endif
  }
  TORCH_CHECK(solver == "auto" || solver == "eigen",
              "solver on the CPU must be auto or eigen (Eigen's SelfAdjointEigenSolver), got '",
              solver, "'");
  if (batch == 0) return {w, V};
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "eigh", [&] {
    hetdro::cpu::eigh<scalar_t>(w.data_ptr<scalar_t>(), V.data_ptr<scalar_t>(),
                                A.data_ptr<scalar_t>(), batch, k);
  });
  return {w, V};
}

bool built_with_cuda() {
#ifdef HETDRO_TORCH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "hetdro's ops on PyTorch tensors (use the hetdro_torch package, not this module)";
  m.def("w2_gaussian_forward", &w2_gaussian_forward);
  m.def("w2_gaussian_backward", &w2_gaussian_backward);
  m.def("class_moments_forward", &class_moments_forward);
  m.def("class_moments_backward", &class_moments_backward);
  m.def("eigh", &eigh);
  m.def("built_with_cuda", &built_with_cuda);
}

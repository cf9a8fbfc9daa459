"""hetdro_torch: hetdro's stable W2 loss, class moments and batched eigensolver for PyTorch.

The ops run hetdro's own implementations (docs/DESIGN.md §8): the CPU reference for CPU tensors
(float32 and float64), the CUDA kernels for CUDA tensors (float32) when the extension was built
with CUDA. Their gradients are hetdro's analytic backward passes (docs/DESIGN.md §2), which stay
finite where autograd through torch.linalg.eigh does not: at repeated eigenvalues and with
rank-deficient covariances.

    w2_gaussian(m1, S1, m2, S2, eps=1e-5)    W2² of Gaussian pairs, differentiable
    class_moments(z, y, num_slots, eps=1e-5) counts, means, unbiased covariances + eps·I
    eigh(A, solver="auto")                   eigenvalues, eigenvectors of symmetric matrices
    GaussianAnchors(num_classes, dim)        learned class anchors N(m_c, L_c L_cᵀ + eps·I)
    AlignmentLoss(fit="pooled")              L_fit and L_sep of docs/DESIGN.md §1

Bad input raises TypeError (not a tensor, wrong dtype or device) or ValueError (shape, symmetry,
NaN or infinity, out-of-range labels), naming the argument and what was expected.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from . import _C

__all__ = ["w2_gaussian", "class_moments", "eigh", "GaussianAnchors", "AlignmentLoss",
           "built_with_cuda", "symmetry_tolerance"]

_FLOATS = (torch.float32, torch.float64)


def built_with_cuda():
    """True when this build serves CUDA tensors (float32) with hetdro's CUDA kernels."""
    return _C.built_with_cuda()


# --- argument checks -------------------------------------------------------------------------

def _tensor(x, name):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOATS:
        raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")
    return x


def _same(x, name, ref, ref_name):
    if x.dtype != ref.dtype:
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {x.dtype}")
    if x.device != ref.device:
        raise TypeError(f"{name} must be on the device of {ref_name} ({ref.device}), got {x.device}")


def _backend(x, name):
    """The devices the ops serve: CPU (float32, float64), and CUDA (float32) when built with it.
    Anything else would reach the C++ layer and fail there with an error that names no argument."""
    if x.device.type == "cpu":
        return
    if x.device.type == "cuda" and built_with_cuda():
        if x.dtype != torch.float32:
            raise TypeError(f"{name} on CUDA must be float32 (hetdro's CUDA kernels are float32 "
                            f"only; move the tensors to the CPU for float64), got {x.dtype}")
        return
    served = "cpu or cuda" if built_with_cuda() else "cpu (this hetdro_torch has no CUDA ops)"
    raise TypeError(f"{name} must be on {served}, got {x.device}")


def _shape(x, name, expected, meaning):
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {meaning} = {list(expected)}, got {list(x.shape)}")


def _finite(x, name):
    bad = ~torch.isfinite(x.detach())
    if bool(bad.any()):
        where = [int(i) for i in bad.nonzero()[0]]
        raise ValueError(f"{name} holds NaN or infinity (first at index {where})")


def symmetry_tolerance(S):
    """The largest |S - Sᵀ| accepted for each matrix of S [..., k, k]: 4·k·u·max|S|.

    Error model: a Gram-type product such as L Lᵀ or Z̃ᵀZ̃/(n-1), summed in any order, gives
    entries (i, j) and (j, i) that differ by at most 2γ_k Σ_l |L_il||L_jl| ≤ 2k·u·√(S_ii S_jj)
    (Cauchy-Schwarz), u the dtype's unit roundoff; max|S| bounds √(S_ii S_jj). The factor 2 on
    top is margin. A matrix further from symmetric than that is not a covariance that rounding
    produced, and the ops, which read the lower triangle only, would answer for another matrix.
    """
    u = torch.finfo(S.dtype).eps / 2
    k = S.shape[-1]
    return 4 * k * u * S.detach().abs().amax(dim=(-2, -1))


def _symmetric(S, name):
    k = S.shape[-1]
    if S.dim() < 2 or S.shape[-2] != k:
        raise ValueError(f"{name} must hold square matrices [..., k, k], got {list(S.shape)}")
    asym = (S.detach() - S.detach().transpose(-2, -1)).abs().amax(dim=(-2, -1))
    over = asym > symmetry_tolerance(S)
    if bool(over.any()):
        i = int(over.reshape(-1).nonzero()[0])
        raise ValueError(
            f"{name} must be symmetric: matrix {i} has max|S - Sᵀ| = {float(asym.reshape(-1)[i]):.3g}, "
            f"above the rounding bound {float(symmetry_tolerance(S).reshape(-1)[i]):.3g} "
            f"(hetdro_torch.symmetry_tolerance); symmetrise it, e.g. (S + S.mT) / 2")


def _eps(eps):
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0 or eps != eps \
            or eps == float("inf"):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    return float(eps)


# --- W2² ------------------------------------------------------------------------------------

class _W2Gaussian(torch.autograd.Function):
    @staticmethod
    def forward(ctx, m1, S1, m2, S2, eps):
        args = [t.contiguous() for t in (m1, S1, m2, S2)]
        w2, saved = _C.w2_gaussian_forward(*args, eps)
        ctx.save_for_backward(saved, *args)
        ctx.eps = eps
        return w2

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        saved, m1, S1, m2, S2 = ctx.saved_tensors
        dm1, dS1, dm2, dS2 = _C.w2_gaussian_backward(grad.contiguous(), saved, m1, S1, m2, S2,
                                                     ctx.eps)
        return dm1, dS1, dm2, dS2, None


def w2_gaussian(m1, S1, m2, S2, eps=1e-5):
    """Squared 2-Wasserstein distance between Gaussians N(m1, S1) and N(m2, S2), per pair.

    m1, m2 [P, k]; S1, S2 [P, k, k] symmetric (or one pair: [k], [k, k]). Returns W2² [P] (or a
    scalar). Every matrix square root floors the eigenvalues, as hetdro's op does: at eps for
    S1^½ and at eps² for (S1^½ S2 S1^½)^½ (docs/DESIGN.md §1). Differentiable in all four
    arguments through the analytic backward of docs/DESIGN.md §2, whose gradients with respect
    to S1 and S2 are symmetric and finite at repeated eigenvalues and rank-deficient covariances.
    """
    for x, name in ((m1, "m1"), (S1, "S1"), (m2, "m2"), (S2, "S2")):
        _tensor(x, name)
    for x, name in ((S1, "S1"), (m2, "m2"), (S2, "S2")):
        _same(x, name, m1, "m1")
    _backend(m1, "m1")
    eps = _eps(eps)
    m1_shape = list(m1.shape)
    single = m1.dim() == 1
    if single:
        # One pair: the messages name the shapes as the caller passed them.
        k = m1.shape[0]
        _shape(m2, "m2", (k,), "[k] (one pair, as m1)")
        for S, name in ((S1, "S1"), (S2, "S2")):
            _shape(S, name, (k, k), "[k, k] (one pair, as m1)")
        m1, S1, m2, S2 = m1[None], S1[None], m2[None], S2[None]
    if m1.dim() != 2 or m1.shape[1] < 1:
        raise ValueError(f"m1 must be [P, k] (or [k]) with k ≥ 1, got {m1_shape}")
    P, k = m1.shape
    _shape(m2, "m2", (P, k), "[P, k]")
    for S, name in ((S1, "S1"), (S2, "S2")):
        if S.dim() != 3 or S.shape[1] != S.shape[2]:
            raise ValueError(f"{name} must hold square matrices [P, k, k], got {list(S.shape)}")
        _shape(S, name, (P, k, k), "[P, k, k]")
    for x, name in ((m1, "m1"), (S1, "S1"), (m2, "m2"), (S2, "S2")):
        _finite(x, name)
    _symmetric(S1, "S1")
    _symmetric(S2, "S2")
    w2 = _W2Gaussian.apply(m1, S1, m2, S2, eps)
    return w2[0] if single else w2


# --- class moments ---------------------------------------------------------------------------

class _ClassMoments(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, slot, num_slots, eps):
        z = z.contiguous()
        count, mean, cov = _C.class_moments_forward(z, slot, num_slots, eps)
        ctx.save_for_backward(z, mean, count, slot)
        ctx.num_slots = num_slots
        counts = count.to(torch.int64)
        ctx.mark_non_differentiable(counts)
        return counts, mean, cov

    @staticmethod
    @once_differentiable
    def backward(ctx, _dcount, dmean, dcov):
        z, mean, count, slot = ctx.saved_tensors
        dmean = torch.zeros_like(mean) if dmean is None else dmean.contiguous()
        dcov = torch.zeros(mean.shape + mean.shape[-1:], dtype=mean.dtype, device=mean.device) \
            if dcov is None else dcov.contiguous()
        dz = _C.class_moments_backward(dmean, dcov, z, mean, count, slot, ctx.num_slots)
        return dz, None, None, None


def class_moments(z, y, num_slots, eps=1e-5):
    """Per-slot sample counts, means and unbiased covariances of z, as hetdro computes them.

    z [n, k] float; y [n] integer, each in [0, num_slots), or -1 to leave the sample out.
    Returns (counts int64 [S], means [S, k], covs [S, k, k]) with S = num_slots and
    covs[s] = Σ (z_i - m_s)(z_i - m_s)ᵀ / (n_s - 1) + eps·I over the samples with y_i = s,
    from centred samples (never E[zzᵀ] - mmᵀ). A slot with fewer than 2 samples gets mean 0 and
    covariance 0, and passes no gradient. Differentiable in z (docs/DESIGN.md §2).
    """
    _tensor(z, "z")
    if z.dim() != 2 or z.shape[1] < 1:
        raise ValueError(f"z must be [n, k] with k ≥ 1, got {list(z.shape)}")
    _backend(z, "z")
    if not isinstance(y, torch.Tensor) or y.dtype.is_floating_point or y.dtype.is_complex \
            or y.dtype == torch.bool:
        raise TypeError(f"y must be an integer tensor, got "
                        f"{y.dtype if isinstance(y, torch.Tensor) else type(y).__name__}")
    if y.device != z.device:
        raise TypeError(f"y must be on the device of z ({z.device}), got {y.device}")
    _shape(y, "y", (z.shape[0],), "[n] (z's rows)")
    if isinstance(num_slots, bool) or not isinstance(num_slots, int) or not 0 <= num_slots < 2**31:
        raise ValueError(f"num_slots must be an int in [0, 2^31), got {num_slots!r}")
    if y.numel() > 0:
        lo, hi = int(y.min()), int(y.max())
        if lo < -1 or hi >= num_slots:
            bad = lo if lo < -1 else hi
            raise ValueError(f"y must be in [0, num_slots = {num_slots}) or -1, got {bad}")
    _finite(z, "z")
    eps = _eps(eps)
    slot = y.to(torch.int32).contiguous()
    return _ClassMoments.apply(z, slot, num_slots, eps)


# --- eigh ------------------------------------------------------------------------------------

def eigh(A, solver="auto"):
    """Eigenvalues (ascending) and eigenvectors (in columns) of symmetric matrices A [B, k, k]
    (or one [k, k]), by hetdro's solvers: Eigen on the CPU (solver "auto" or "eigen"); on CUDA
    (float32) "auto", hetdro's batched Jacobi kernel ("jacobi"), cuSOLVER's syevjBatched
    ("syevj") or XsyevBatched ("syev"). Returns (w [B, k], V [B, k, k]).

    Not differentiable: the derivative of an eigendecomposition divides by eigenvalue gaps.
    For gradients through matrix square roots use w2_gaussian.
    """
    _tensor(A, "A")
    if not isinstance(solver, str):
        raise TypeError(f"solver must be a str, got {type(solver).__name__}")
    if A.requires_grad and torch.is_grad_enabled():
        raise ValueError("A requires grad, but hetdro_torch.eigh has no backward (an "
                         "eigendecomposition's derivative divides by eigenvalue gaps); pass "
                         "A.detach(), or use w2_gaussian for gradients")
    _backend(A, "A")
    solvers = ("auto", "jacobi", "syevj", "syev") if A.is_cuda else ("auto", "eigen")
    if solver not in solvers:
        raise ValueError(f"solver for {A.device.type} tensors must be one of "
                         f"{', '.join(solvers)}, got {solver!r}")
    shape = list(A.shape)
    single = A.dim() == 2
    if single:
        A = A[None]
    if A.dim() != 3 or A.shape[1] != A.shape[2] or A.shape[1] < 1:
        raise ValueError(f"A must hold square matrices [B, k, k] (or [k, k]) with k ≥ 1, "
                         f"got {shape}")
    _finite(A, "A")
    _symmetric(A, "A")
    w, V = _C.eigh(A.contiguous(), solver)
    return (w[0], V[0]) if single else (w, V)


# --- modules ---------------------------------------------------------------------------------

class GaussianAnchors(nn.Module):
    """Learned Gaussian class anchors N(m_c, S_c), S_c = L_c L_cᵀ + eps·I (docs/DESIGN.md §1).

    Parameters: mean [C, k], zeros or with mean_init="random" N(0, 1) (the values of the
    config's model.anchor_mean_init), and chol [C, k, k] = scale·I. eps keeps every S_c
    positive definite whatever L becomes.
    """

    def __init__(self, num_classes, dim, eps=1e-5, scale=1.0, mean_init="zero", dtype=None,
                 device=None):
        super().__init__()
        for value, name in ((num_classes, "num_classes"), (dim, "dim")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int ≥ 1, got {value!r}")
        if mean_init not in ("zero", "random"):
            raise ValueError(f"mean_init must be 'zero' or 'random', got {mean_init!r}")
        self.eps = _eps(eps)
        kw = {"dtype": dtype, "device": device}
        mean = torch.randn(num_classes, dim, **kw) if mean_init == "random" \
            else torch.zeros(num_classes, dim, **kw)
        self.mean = nn.Parameter(mean)
        self.chol = nn.Parameter(float(scale) * torch.eye(dim, **kw).repeat(num_classes, 1, 1))

    def covariance(self):
        """S [C, k, k] = L Lᵀ + eps·I, exactly symmetric."""
        L = self.chol
        S = L @ L.transpose(-2, -1)
        S = (S + S.transpose(-2, -1)) / 2
        return S + self.eps * torch.eye(S.shape[-1], dtype=S.dtype, device=S.device)

    def sample(self, J, generator=None):
        """J draws per class by the reparameterisation Z_cj = m_c + L_c ξ_cj, ξ ~ N(0, I):
        [C, J, k], differentiable in m and L."""
        if isinstance(J, bool) or not isinstance(J, int) or J < 1:
            raise ValueError(f"J must be an int ≥ 1, got {J!r}")
        C, k = self.mean.shape
        xi = torch.randn(C, J, k, generator=generator, dtype=self.mean.dtype,
                         device=self.mean.device)
        return self.mean[:, None, :] + xi @ self.chol.transpose(-2, -1)

    def forward(self):
        return self.mean, self.covariance()


class AlignmentLoss(nn.Module):
    """The alignment terms of docs/DESIGN.md §1, on top of the ops.

    fit: "pooled" (one slot per class over all groups), "per_group" (one slot per group and
    class, each against its class's anchor) or "none". `fit_loss(z, y, anchors, group)` is
    L_fit = Σ over slots with ≥ 2 samples of W2²(N(m̂, Ŝ), anchor); a slot with one sample is
    masked and counted in `self.last_skipped`. `sep_loss(anchors, classifier)` is
    L_sep = (1/C) Σ_c (1/J) Σ_j CE(c, classifier(Z_cj)), J = samples_per_anchor draws per class.
    forward(z, y, anchors, classifier, group=None) returns (L_fit, L_sep).
    """

    def __init__(self, fit="pooled", eps=1e-5, samples_per_anchor=16):
        super().__init__()
        if fit not in ("pooled", "per_group", "none"):
            raise ValueError(f"fit must be 'pooled', 'per_group' or 'none', got {fit!r}")
        if isinstance(samples_per_anchor, bool) or not isinstance(samples_per_anchor, int) \
                or samples_per_anchor < 1:
            raise ValueError(f"samples_per_anchor must be an int ≥ 1, got {samples_per_anchor!r}")
        self.fit, self.eps, self.J = fit, _eps(eps), samples_per_anchor
        self.last_skipped = 0

    def fit_loss(self, z, y, anchors, group=None):
        C = anchors.mean.shape[0]
        if self.fit == "none":
            return z.new_zeros(())
        if not isinstance(y, torch.Tensor) or y.dtype.is_floating_point or y.dtype == torch.bool:
            raise TypeError("y must be an integer tensor of class labels")
        if y.numel() and not (0 <= int(y.min()) and int(y.max()) < C):
            raise ValueError(f"y must hold class labels in [0, {C}) (the anchors' classes), got "
                             f"values in [{int(y.min())}, {int(y.max())}]")
        if self.fit == "per_group":
            if group is None:
                raise ValueError("fit='per_group' needs group, the group index of each sample")
            if not isinstance(group, torch.Tensor) or group.dtype.is_floating_point \
                    or group.shape != y.shape:
                raise TypeError(f"group must be an integer tensor shaped like y {list(y.shape)}")
            if group.numel() and int(group.min()) < 0:
                raise ValueError(f"group must be ≥ 0, got {int(group.min())}")
            slots = group.to(y.dtype) * C + y
            G = int(group.max()) + 1 if group.numel() else 0
            num_slots = G * C
        else:
            slots, num_slots = y, C
        counts, means, covs = class_moments(z, slots, num_slots, self.eps)
        live = counts >= 2
        self.last_skipped = int((counts == 1).sum())
        cls = torch.arange(num_slots, device=z.device)[live] % C
        S = anchors.covariance()
        return w2_gaussian(means[live], covs[live], anchors.mean[cls], S[cls], self.eps).sum()

    def sep_loss(self, anchors, classifier, generator=None):
        C, k = anchors.mean.shape
        Z = anchors.sample(self.J, generator)
        labels = torch.arange(C, device=Z.device).repeat_interleave(self.J)
        return F.cross_entropy(classifier(Z.reshape(C * self.J, k)), labels)

    def forward(self, z, y, anchors, classifier, group=None, generator=None):
        return self.fit_loss(z, y, anchors, group), self.sep_loss(anchors, classifier, generator)

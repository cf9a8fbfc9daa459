"""Tests of hetdro_torch (python/): its ops against float64 central differences, hand-worked
values and plain PyTorch; its argument checks; GaussianAnchors and AlignmentLoss; and, where a GPU
and a CUDA build are present, the CUDA kernels against the CPU in float64.

    /usr/bin/python3 -m pytest -q python/tests        (-s prints the non-finite counts)

Grouped by op: w2_gaussian (gradcheck, hand-worked values, scripts/torch_reference.py's safe
backward, identical Gaussians), class_moments, the degenerate ReLU batches of docs/DESIGN.md §2
("Why not autograd through eigh"), argument errors, eigh, the modules, CUDA.

Tolerances follow tests/testing.h and docs/DESIGN.md §6 (Tolerances): a comparison between
different code (another eigensolver, another summation order, float32 against float64) takes
its bar from an error model written beside it, never from one machine's measurement.
Notation: u is the unit roundoff of the dtype computed in (2^-24, 2^-53), γ_n = n·u/(1 − n·u) bounds a sum of n terms in
any order relative to the sum of their magnitudes (Higham, Lemma 3.1), k the matrix size. A
symmetric eigensolver (Eigen's, LAPACK's, cuSOLVER's, Jacobi) is backward stable: it returns the
exact decomposition of A + E with ‖E‖_F ≤ p(k)·u·‖A‖_F, and we take p(k) = k² (Householder
tridiagonalisation and QR sweeps, Golub & Van Loan §8.3; worst-case growth, so the bars hold on
any CPU and on the GPU). The W2 model (w2_bars) chains that through the square roots; the
constants in front are margin, the powers of k, u and the conditioning are the model.

gradcheck runs in float64 with central differences of step h = 1e-6: the truncation error is
h²·|f'''|/6 and the rounding error δ/h with δ ≲ γ_N·Σ|terms| ~ 1e-14 for these small sums, so about
1e-8 (tests/testing.h, numeric_gradient); atol = 1e-6 and rtol = 1e-5 keep a margin of ~100 and
fail any wrong gradient (off by O(1)). The ops read only the lower triangle of S and return
symmetric gradients (DESIGN §2, conventions), so gradcheck perturbs a free matrix X through
S = (X + Xᵀ)/2, whose gradient is the op's symmetric gradient. Where it probes, each function is
smooth: eigenvalues are either well above the floors or (rank-deficient Ŝ + eps·I reached through
z) moved off the floor only at second order, which central differences cancel (DESIGN §2, "W2²,
the cross term").
"""
import math
import os
import sys

import pytest
import torch

import hetdro_torch as ht

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import torch_reference as tr  # noqa: E402  (the plain-PyTorch W2 with hetdro's backward)

F32, F64 = torch.float32, torch.float64
EPS = 1e-5
U64 = 2.0 ** -53
CUDA = torch.cuda.is_available() and ht.built_with_cuda()
needs_cuda = pytest.mark.skipif(
    not CUDA, reason="needs a GPU and a hetdro_torch built with CUDA "
    f"(torch.cuda.is_available() = {torch.cuda.is_available()}, "
    f"hetdro_torch.built_with_cuda() = {ht.built_with_cuda()})")
GRADCHECK = dict(eps=1e-6, atol=1e-6, rtol=1e-5)


# --- error models ---------------------------------------------------------------------------

def unit_roundoff(dtype):
    return torch.finfo(dtype).eps / 2


def gamma(n, u):
    return n * u / (1 - n * u)


def spectrum(*mats, eps=EPS):
    """(σ, λ): the largest eigenvalue over the matrices, and the smallest one raised to the floor
    eps (the op floors A's roots at eps, so nothing below it enters), in float64."""
    ev = torch.cat([torch.linalg.eigvalsh(M.detach().double().cpu()).reshape(-1) for M in mats])
    return float(ev.max()), max(float(ev.min()), eps)


def w2_bars(A, B, dm, dtype, eps=EPS):
    """(value bar, gradient bar) for W2² computed in `dtype` against its exact value, from the
    spectra of A and B (σ the largest eigenvalue, λ the smallest raised to eps, κ = σ/λ).

    Value (DESIGN §2's steps): eigh(A) is exact for A + E, ‖E‖ ≤ p·u·σ with p = k², so R = √A
    is off by ‖E‖/(2√λ) (the square root is 1/(2√λ)-Lipschitz on matrices ≥ λ), plus γ_k·√σ
    from rebuilding R; M = R B R inherits 2σ^{3/2}‖δR‖ plus its own products' γ_{2k}σ² and
    eigh(M)'s p·u·σ², so ‖δM‖ ≤ dM = p·u·σ²(√κ + 2). Each of the k roots √μ (μ ≥ λ², DESIGN §2
    step 2) moves by min(dM/(2λ), √dM) (the root is also ½-Hölder: the second term rules near
    the floors). So |δT| ≤ dT = k·min(dM/(2λ), √dM), and W2² = ‖Δm‖² + tr A + tr B − 2T is off
    by at most 2dT + 2γ_k·kσ + γ_{k+1}‖Δm‖². Bar: 4 times that (margin), worst over the pairs.

    Gradient, relative to max(1, ‖G‖_F): the backward (steps 2–5) multiplies factors each with
    its own relative error, and the product's is at most their sum. G_M = h(M), h(μ) = 1/(2√μ):
    h's divided differences are ≤ 1/(4λ³) against ‖G_M‖ ≥ 1/(2σ), so κ·dM/(2λ²); K (step 4):
    f(a) = √a moves K by ≤ p·u·σ/(4λ^{3/2}) against K ≥ 1/(2√σ), so p·u·κ^{3/2}/2; R: p·u·√κ;
    the products 3γ_{2k}. Bar: 4 times their sum.
    """
    k = A.shape[-1]
    u = unit_roundoff(dtype)
    sigma, lam = spectrum(A, B, eps=eps)
    kappa = sigma / lam
    p = k * k
    dM = p * u * sigma ** 2 * (math.sqrt(kappa) + 2)
    dT = k * min(dM / (2 * lam), math.sqrt(dM))
    dm2 = float(dm.detach().double().square().sum(-1).max()) if dm.numel() else 0.0
    value = 4 * (2 * dT + 2 * gamma(k, u) * k * sigma + gamma(k + 1, u) * dm2)
    grad = 4 * (kappa * dM / (2 * lam ** 2) + p * u * kappa ** 1.5 / 2 + p * u * math.sqrt(kappa)
                + 3 * gamma(2 * k, u))
    return value, grad


def eigh_bar(k, dtype):
    """Relative (Frobenius) bar on ‖V diag(w) Vᵀ − A‖/‖A‖ and, times √k, on ‖VᵀV − I‖: backward
    error k²u (module docstring) plus the rebuild's γ_k·‖|V|‖₂² ≤ k·γ_k ≈ k²u; times 2 margin."""
    return 4 * k * k * unit_roundoff(dtype)


def assert_close_to(got, want, bar, what, scale=1.0):
    """max|got − want| ≤ bar·scale, compared in float64, with the numbers in the message."""
    err = float((got.detach().double().cpu() - want.detach().double().cpu()).abs().max()) \
        if got.numel() else 0.0
    assert err <= bar * scale, \
        f"{what}: error {err:.3g} above the error model's bar {bar * scale:.3g}"


def assert_fro_close(got, want, rel_bar, what):
    """‖got − want‖_F ≤ rel_bar·max(1, ‖want‖_F), in float64."""
    g, w = got.detach().double().cpu(), want.detach().double().cpu()
    err, size = float((g - w).norm()), max(1.0, float(w.norm()))
    assert err <= rel_bar * size, \
        f"{what}: ‖error‖ {err:.3g} above the error model's bar {rel_bar * size:.3g}"


# --- inputs ---------------------------------------------------------------------------------

def gen(seed):
    return torch.Generator().manual_seed(seed)


def orthogonal(k, g, dtype=F64, batch=()):
    Q, R = torch.linalg.qr(torch.randn(*batch, k, k, generator=g, dtype=F64))
    return (Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(-2)).to(dtype)


def with_spectrum(Q, values):
    """Q diag(values) Qᵀ, made exactly symmetric."""
    S = (Q * values.unsqueeze(-2)) @ Q.transpose(-2, -1)
    return (S + S.transpose(-2, -1)) / 2


def random_spd(P, k, g, lo=0.5, hi=2.0, dtype=F64):
    """P symmetric positive definite k×k matrices with eigenvalues uniform in [lo, hi]."""
    values = lo + (hi - lo) * torch.rand(P, k, generator=g, dtype=F64)
    return with_spectrum(orthogonal(k, g, batch=(P,)), values).to(dtype)


def sym(X):
    return (X + X.transpose(-2, -1)) / 2


def anchor_cov(L, eps=EPS):
    """S = L Lᵀ + eps·I, as GaussianAnchors.covariance forms it."""
    return sym(L @ L.transpose(-2, -1)) + eps * torch.eye(L.shape[-1], dtype=L.dtype,
                                                          device=L.device)


def w2_sym(m1, X1, m2, X2, eps=EPS):
    """w2_gaussian through S = (X + Xᵀ)/2, for gradcheck (module docstring)."""
    return ht.w2_gaussian(m1, sym(X1), m2, sym(X2), eps)


def leaves(*ts):
    return tuple(t.detach().clone().requires_grad_(True) for t in ts)


def w2_grads(fn, m1, S1, m2, S2):
    """(value, dm1, dS1, dm2, dS2) of fn(...).sum()."""
    args = leaves(m1, S1, m2, S2)
    v = fn(*args)
    return (v.detach(),) + torch.autograd.grad(v.sum(), args)


# === w2_gaussian: gradcheck =================================================================

def test_w2_gradcheck_well_conditioned():
    g = gen(1)
    P, k = 3, 4
    m1, m2 = torch.randn(2, P, k, generator=g, dtype=F64)
    S1, S2 = random_spd(P, k, g), random_spd(P, k, g)
    assert torch.autograd.gradcheck(w2_sym, leaves(m1, S1, m2, S2), **GRADCHECK)


def test_w2_gradcheck_repeated_eigenvalues():
    # S1 = U diag(1,1,1,2,2) Uᵀ against (pair 0) S2 with its own repeats in another basis and
    # (pair 1) one that commutes with S1, so M = R S2 R has repeated eigenvalues as well. The
    # square root is analytic on positive definite matrices, repeats or not, and every eigenvalue
    # here is far above the floors.
    g = gen(2)
    k = 5
    U, W = orthogonal(k, g), orthogonal(k, g)
    d = lambda *v: torch.tensor(v, dtype=F64)  # noqa: E731
    S1 = torch.stack([with_spectrum(U, d(1, 1, 1, 2, 2))] * 2)
    S2 = torch.stack([with_spectrum(W, d(3, 3, 0.5, 0.5, 0.5)),
                      with_spectrum(U, d(0.5, 0.5, 3, 3, 3))])
    m1, m2 = torch.randn(2, 2, k, generator=g, dtype=F64)
    assert torch.autograd.gradcheck(w2_sym, leaves(m1, S1, m2, S2), **GRADCHECK)


def test_w2_gradcheck_rank_deficient_through_class_moments():
    # Slot 0: n_c = 3 samples in k = 6 (Ŝ has rank 2, four eigenvalues at eps), with one unit 0
    # for all of them; slot 1: 4 samples; slot 2 has one sample and the last row y = −1: both
    # are left out, so their rows must get exactly zero gradient. Gradients with respect to z and
    # to the anchors' mean and factor L (S = L Lᵀ + eps·I). z moves Ŝ's null eigenvalues only at
    # second order, which central differences cancel; the anchors' M = R S R stays near eps·S,
    # far above the eps² floor.
    g = gen(3)
    k = 6
    y = torch.tensor([0, 0, 0, 1, 1, 1, 1, -1, 2])
    z = torch.randn(len(y), k, generator=g, dtype=F64)
    z[:3, 0] = 0
    mean = torch.randn(3, k, generator=g, dtype=F64)
    L = torch.eye(k, dtype=F64) + 0.3 * torch.randn(3, k, k, generator=g, dtype=F64)

    def loss(z, mean, L):
        counts, m, S = ht.class_moments(z, y, 3, EPS)
        live = counts >= 2
        assert live.tolist() == [True, True, False]
        return ht.w2_gaussian(m[live], S[live], mean[live], anchor_cov(L)[live], EPS)

    zz, mm, LL = leaves(z, mean, L)
    assert torch.autograd.gradcheck(loss, (zz, mm, LL), **GRADCHECK)
    loss(zz, mm, LL).sum().backward()
    assert zz.grad[7:].abs().max() == 0 and mm.grad[2].abs().max() == 0


def test_w2_gradcheck_identical_gaussians():
    # W2² has its minimum 0 at N(m, S) against itself, smooth there (S well above the floor):
    # the gradient is 0 and central differences see the curvature cancel.
    g = gen(4)
    k = 5
    m = torch.randn(2, k, generator=g, dtype=F64)
    S = random_spd(2, k, g)
    assert torch.autograd.gradcheck(w2_sym, leaves(m, S, m, S), **GRADCHECK)
    v, dm1, dS1, dm2, dS2 = w2_grads(ht.w2_gaussian, m, S, m, S)
    _, grad_bar = w2_bars(S, S, m - m, F64)
    for d, name in ((dm1, "dm1"), (dS1, "dS1"), (dm2, "dm2"), (dS2, "dS2")):
        assert_fro_close(d, torch.zeros_like(d), grad_bar, f"identical Gaussians: {name} = 0")


@pytest.mark.parametrize("dtype", [F64, F32])
def test_w2_identical_gaussians_value_is_zero(dtype):
    # Well-conditioned S, and (float64) a rank-deficient Ŝ + eps·I: 3 samples in 6 dimensions,
    # four eigenvalues on the eps floor, so M = R Ŝ R has four at eps² (its floor, DESIGN §2
    # step 2; a floor at eps would give W2² ≈ −8√eps here) and the bar's √dM term rules. In
    # float32 that bar (√(p·u·σ²·√κ) per root) exceeds tr Ŝ itself, so the case would test
    # nothing there and is left out.
    g = gen(5)
    k = 6
    m = torch.randn(2, k, generator=g, dtype=F64)
    z = torch.randn(3, k, generator=g, dtype=F64)
    _, _, S_hat = ht.class_moments(z, torch.zeros(3, dtype=torch.long), 1, EPS)
    S = torch.cat([random_spd(1, k, g), S_hat.detach()]).to(dtype)
    m = m.to(dtype)
    for p in range(2 if dtype == F64 else 1):
        v = ht.w2_gaussian(m[p], S[p], m[p], S[p], EPS)
        bar, _ = w2_bars(S[p], S[p], m[p] - m[p], dtype)
        assert_close_to(v, torch.zeros(()), bar, f"W2²(N, N), pair {p}, {dtype}")


# === w2_gaussian: values and gradients ======================================================

@pytest.mark.parametrize("dtype", [F64, F32])
def test_w2_commuting_covariances_by_hand(dtype):
    # A = Q diag(a) Qᵀ, B = Q diag(b) Qᵀ commute: W2² = ‖m1 − m2‖² + Σ(√a_i − √b_i)²,
    # ∂/∂A = Q diag(1 − √(b/a)) Qᵀ, ∂/∂B = Q diag(1 − √(a/b)) Qᵀ, ∂/∂m1 = 2(m1 − m2) = −∂/∂m2
    # (the symmetric gradient of DESIGN §2; from ∂T/∂A = ½A^{-½}(A^½BA^½)^½A^{-½} = ½ diag(√(b/a))).
    g = gen(6)
    a = torch.tensor([[0.5, 1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 2.5, 0.5, 3.0]], dtype=F64)
    b = torch.tensor([[4.0, 0.5, 2.0, 1.0, 3.0], [1.0, 2.0, 0.5, 0.5, 4.0]], dtype=F64)
    Q = orthogonal(5, g, batch=(2,))
    m1, m2 = torch.randn(2, 2, 5, generator=g, dtype=F64)
    A, B = with_spectrum(Q, a), with_spectrum(Q, b)
    want = (m1 - m2).square().sum(-1) + (a.sqrt() - b.sqrt()).square().sum(-1)
    want_dA = with_spectrum(Q, 1 - (b / a).sqrt())
    want_dB = with_spectrum(Q, 1 - (a / b).sqrt())
    v, dm1, dA, dm2, dB = w2_grads(ht.w2_gaussian, *(t.to(dtype) for t in (m1, A, m2, B)))
    value_bar, grad_bar = w2_bars(A, B, m1 - m2, dtype)
    assert_close_to(v, want, value_bar, f"W2² by hand, {dtype}")
    assert_fro_close(dA, want_dA, grad_bar, f"∂W2²/∂A by hand, {dtype}")
    assert_fro_close(dB, want_dB, grad_bar, f"∂W2²/∂B by hand, {dtype}")
    assert_fro_close(dm1, 2 * (m1 - m2), grad_bar, f"∂W2²/∂m1 by hand, {dtype}")
    assert_fro_close(dm2, -2 * (m1 - m2), grad_bar, f"∂W2²/∂m2 by hand, {dtype}")
    # Single-pair form: [k], [k, k] in, a scalar out, the same number.
    one = ht.w2_gaussian(*(t[1].to(dtype) for t in (m1, A, m2, B)))
    assert one.shape == () and float(one) == float(v[1])


@pytest.mark.parametrize("dtype", [F64, F32])
def test_w2_matches_torch_reference_safe(dtype):
    # scripts/torch_reference.py's W2SquaredSafe is hetdro's backward in plain PyTorch (LAPACK's
    # eigensolver instead of Eigen's). Both are within w2_bars of the exact values, so within
    # twice that of each other.
    g = gen(7)
    P, k = 6, 8
    m1, m2 = torch.randn(2, P, k, generator=g, dtype=F64)
    A, B = random_spd(P, k, g), random_spd(P, k, g)
    inputs = [t.to(dtype) for t in (m1, A, m2, B)]
    ours = w2_grads(ht.w2_gaussian, *inputs)
    ref = w2_grads(lambda *t: tr.w2_squared(*t, EPS, mode="safe"), *inputs)
    value_bar, grad_bar = w2_bars(A, B, m1 - m2, dtype)
    assert_close_to(ours[0], ref[0], 2 * value_bar, f"W2² vs torch_reference, {dtype}")
    for i, name in enumerate(("dm1", "dS1", "dm2", "dS2"), start=1):
        for p in range(P):
            assert_fro_close(ours[i][p], ref[i][p], 2 * grad_bar,
                             f"{name} of pair {p} vs torch_reference, {dtype}")


def test_w2_gradients_are_symmetric():
    g = gen(8)
    m1, m2 = torch.randn(2, 3, 6, generator=g, dtype=F64)
    _, _, dS1, _, dS2 = w2_grads(ht.w2_gaussian, m1, random_spd(3, 6, g), m2, random_spd(3, 6, g))
    assert torch.equal(dS1, dS1.mT) and torch.equal(dS2, dS2.mT)


# === class_moments ==========================================================================

def moments_bars(z, n, dtype, eps=EPS):
    """(mean bar [k], cov bar [k, k]) for one slot's samples z [n, k] against float64.

    mean = Σz/n: γ_{n+1}·Σ|z|/n. cov = Σ(z − m̂)(z − m̂)ᵀ/(n − 1) + eps·I: each centred entry
    carries u·|z − m| plus the mean's error, ≤ γ_{n+1}·mean|z|, so every product term is within
    γ_{n+4} of (|z_a| + |m_a| + mean|z_a|)(|z_b| + |m_b| + mean|z_b|); eps·I adds u·eps. The
    float64 reference's own share is the same with u = 2^-53.
    """
    u = unit_roundoff(dtype)
    z = z.detach().double()
    mean_bar = (gamma(n + 1, u) + gamma(n + 1, U64)) * z.abs().mean(0)
    w = z.abs() + z.mean(0).abs() + z.abs().mean(0)
    cov_bar = (gamma(n + 4, u) + gamma(n + 4, U64)) * (w.T @ w) / (n - 1) + u * eps
    return mean_bar, cov_bar


@pytest.mark.parametrize("dtype", [F64, F32])
def test_class_moments_against_torch_cov(dtype):
    # Slots: 0 has 7 samples (more than k), 1 has 3 (fewer), 2 one (zeros), 3 none (zeros),
    # 4 has 2; y = −1 rows are left out.
    g = gen(9)
    k = 5
    y = torch.tensor([0, 1, 0, -1, 2, 0, 1, 0, 4, 0, -1, 1, 0, 4, 0])
    z = (torch.randn(len(y), k, generator=g, dtype=F64) + 3).to(dtype)
    counts, mean, cov = ht.class_moments(z, y, 5, EPS)
    assert counts.dtype == torch.int64 and counts.tolist() == [7, 3, 1, 0, 2]
    assert mean.dtype == dtype and mean.shape == (5, k) and cov.shape == (5, k, k)
    for s in (2, 3):
        assert not mean[s].any() and not cov[s].any(), f"slot {s} (< 2 samples) must be zeros"
    for s in (0, 1, 4):
        zs = z[y == s].double()
        n = len(zs)
        want_cov = torch.cov(zs.T) + EPS * torch.eye(k, dtype=F64)
        mean_bar, cov_bar = moments_bars(zs, n, dtype)
        assert ((mean[s].double() - zs.mean(0)).abs() <= mean_bar).all(), f"mean of slot {s}"
        assert ((cov[s].double() - want_cov).abs() <= cov_bar).all(), f"cov of slot {s}"
        # The direct centred formula too: torch.cov is unbiased (1/(n − 1)).
        zc = zs - zs.mean(0)
        assert ((cov[s].double() - (zc.T @ zc / (n - 1) + EPS * torch.eye(k, dtype=F64))).abs()
                <= cov_bar).all()
    assert torch.equal(cov, cov.mT), "covariances are exactly symmetric (w2_gaussian checks it)"


def test_class_moments_backward_by_hand():
    # DESIGN §2: ∂L/∂z_i = g_m/n + (2/(n − 1))·sym(G_S)(z_i − m̂) for the slot of z_i; zero for
    # y = −1 and for slots with fewer than 2 samples. Both sides float64 over ≤ 2k + 2 terms.
    g = gen(10)
    k = 4
    y = torch.tensor([0, 0, 1, 0, -1, 2, 2, 2, 0])
    z = torch.randn(len(y), k, generator=g, dtype=F64, requires_grad=True)
    gm = torch.randn(3, k, generator=g, dtype=F64)
    GS = torch.randn(3, k, k, generator=g, dtype=F64)
    _, mean, cov = ht.class_moments(z, y, 3, EPS)
    (dz,) = torch.autograd.grad((mean * gm).sum() + (cov * GS).sum(), z)
    want = torch.zeros_like(dz)
    for s in (0, 2):
        rows = (y == s).nonzero().reshape(-1)
        n, zs = len(rows), z.detach()[rows]
        want[rows] = gm[s] / n + 2 / (n - 1) * (zs - zs.mean(0)) @ sym(GS[s])
    # Each entry sums k + 1 products after centring: γ_{k+4} of its magnitude, on both sides.
    mag = torch.zeros_like(dz)
    for s in (0, 2):
        rows = (y == s).nonzero().reshape(-1)
        n, zs = len(rows), z.detach()[rows]
        mag[rows] = gm[s].abs() / n + 2 / (n - 1) * (zs.abs() + zs.mean(0).abs()) @ sym(GS[s]).abs()
    assert ((dz - want).abs() <= 2 * gamma(k + 4, U64) * mag).all(), "class_moments backward"
    assert not dz[[2, 4]].any(), "y = −1 and the one-sample slot pass no gradient"


# === degenerate ReLU batches: autograd through eigh against the analytic backward ===========

def degenerate_batch(seed, k=16, C=4):
    """ReLU latents of C classes with 6–10 samples each (n_c < k) and 1–8 units dead (exactly 0)
    for every sample of a class; anchor means N(0, 1) and factors at their initialisation, L = I
    (so S = (1 + eps)·I, one eigenvalue repeated k times)."""
    g = gen(1000 + seed)
    zs, ys = [], []
    for c in range(C):
        n = int(torch.randint(6, 11, (1,), generator=g))
        pre = torch.randn(n, k, generator=g, dtype=F64) + 0.5
        dead = torch.randperm(k, generator=g)[:int(torch.randint(1, 9, (1,), generator=g))]
        pre[:, dead] = -1 - torch.rand(n, len(dead), generator=g, dtype=F64)
        zs.append(torch.relu(pre))
        ys.append(torch.full((n,), c))
    mean = torch.randn(C, k, generator=g, dtype=F64)
    L = torch.eye(k, dtype=F64).repeat(C, 1, 1)
    return torch.cat(zs), torch.cat(ys), mean, L


def plain_moments(z, y, C, eps=EPS):
    """Class means and Ŝ = Σ(z − m̂)(z − m̂)ᵀ/(n − 1) + eps·I in plain PyTorch (DESIGN §1)."""
    means, covs = [], []
    for c in range(C):
        zc = z[y == c]
        m = zc.mean(0)
        d = zc - m
        means.append(m)
        covs.append(d.T @ d / (len(zc) - 1)
                    + eps * torch.eye(z.shape[1], dtype=z.dtype, device=z.device))
    return torch.stack(means), torch.stack(covs)


def batch_gradients_finite(z, y, mean, L, impl):
    """Whether L_fit and its gradients in z, the anchor means and L are all finite."""
    z, mean, L = leaves(z, mean, L)
    C = mean.shape[0]
    if impl == "plain":
        m, S = plain_moments(z, y, C)
        loss = tr.w2_squared_naive(m, S, mean, anchor_cov(L), EPS).sum()
    else:
        _, m, S = ht.class_moments(z, y, C, EPS)
        loss = ht.w2_gaussian(m, S, mean, anchor_cov(L), EPS).sum()
    grads = torch.autograd.grad(loss, (z, mean, L))
    return bool(torch.isfinite(loss)) and all(bool(torch.isfinite(t).all()) for t in grads)


def count_nonfinite(impl, dtype, batches=50, device="cpu"):
    bad = 0
    for seed in range(batches):
        z, y, mean, L = (t.to(device) for t in degenerate_batch(seed))
        cast = lambda t: t.to(dtype)  # noqa: E731
        bad += not batch_gradients_finite(cast(z), y, cast(mean), cast(L), impl)
    return bad


def test_degenerate_batches_nonfinite_counts():
    # The same 50 seeded batches in float32 and float64. Recorded, not asserted, for the plain
    # pseudocode (autograd through torch.linalg.eigh divides by the zero gaps of the dead units'
    # repeated eps eigenvalues); the extension must have none.
    counts = {(impl, dtype): count_nonfinite(impl, dtype)
              for impl in ("plain", "hetdro_torch") for dtype in (F32, F64)}
    table = ", ".join(f"{impl} {str(dtype)[6:]}: {n}/50" for (impl, dtype), n in counts.items())
    print(f"\nbatches with non-finite L_fit gradients: {table}")
    assert counts[("hetdro_torch", F32)] == 0 and counts[("hetdro_torch", F64)] == 0, table


def test_degenerate_batches_values_match_reference():
    # On the same batches in float64, each slot's W2² against scripts/torch_reference.py's safe
    # form on the same moments. Ŝ's dead and null directions sit on the eps floor, so λ = eps in
    # w2_bars (κ ~ 1e5): twice the bar is 1e-4 to 3e-3 here, against values of 18 to 53.
    for seed in range(50):
        z, y, mean, L = degenerate_batch(seed)
        _, m, S = ht.class_moments(z, y, mean.shape[0], EPS)
        B = anchor_cov(L)
        ours = ht.w2_gaussian(m, S, mean, B, EPS)
        ref = tr.w2_squared(m, S, mean, B, EPS, mode="safe")
        for c in range(mean.shape[0]):
            value_bar, _ = w2_bars(S[c], B[c], m[c] - mean[c], F64)
            assert_close_to(ours[c], ref[c], 2 * value_bar, f"batch {seed}, slot {c}: W2²")


# === argument errors ========================================================================

def _w2_args(P=2, k=3, dtype=F64):
    g = gen(11)
    m1, m2 = torch.randn(2, P, k, generator=g, dtype=dtype)
    return [m1, random_spd(P, k, g, dtype=dtype), m2, random_spd(P, k, g, dtype=dtype)]


def _other_device():
    """A second device for the mismatch checks: CUDA when present, else "meta" (a tensor without
    data, which the Python checks compare by device before anything reads it)."""
    return torch.device("cuda") if CUDA else torch.device("meta")


def _with(args, i, value):
    args = list(args)
    args[i] = value(args[i]) if callable(value) else value
    return args


def _nonsym(S):
    S = S.clone()
    S[..., 0, 1] += 1.0
    return S


def _nan_at(t, value=float("nan")):
    t = t.clone()
    t.view(-1)[0] = value
    return t


W2_ERRORS = [
    # (id, argument index or None, replacement, exception, the name the message starts with)
    ("m1 not a tensor", 0, lambda t: t.tolist(), TypeError, "m1"),
    ("m1 integer", 0, lambda t: t.long(), TypeError, "m1"),
    ("S1 dtype mismatch", 1, lambda t: t.float(), TypeError, "S1"),
    ("m2 dtype mismatch", 2, lambda t: t.float(), TypeError, "m2"),
    ("m2 device mismatch", 2, lambda t: t.to(_other_device()), TypeError, "m2"),
    ("S2 device mismatch", 3, lambda t: t.to(_other_device()), TypeError, "S2"),
    ("m1 3-d", 0, lambda t: t[None], ValueError, "m1"),
    ("m2 wrong k", 2, lambda t: t[:, :2], ValueError, "m2"),
    ("S2 wrong P", 3, lambda t: t[:1], ValueError, "S2"),
    ("S1 not square", 1, lambda t: t[:, :, :2], ValueError, "S1"),
    ("S1 2-d for a batch", 1, lambda t: t[0], ValueError, "S1"),
    ("S1 not symmetric", 1, _nonsym, ValueError, "S1"),
    ("S2 not symmetric", 3, _nonsym, ValueError, "S2"),
    ("m1 NaN", 0, _nan_at, ValueError, "m1"),
    ("S1 NaN", 1, _nan_at, ValueError, "S1"),
    ("m2 inf", 2, lambda t: _nan_at(t, float("inf")), ValueError, "m2"),
    ("S2 -inf", 3, lambda t: _nan_at(t, -float("inf")), ValueError, "S2"),
]


@pytest.mark.parametrize("index, change, exc, name", [e[1:] for e in W2_ERRORS],
                         ids=[e[0] for e in W2_ERRORS])
def test_w2_errors(index, change, exc, name):
    with pytest.raises(exc, match=rf"^{name}\b"):
        ht.w2_gaussian(*_with(_w2_args(), index, change))


def test_w2_errors_single_pair_shapes_as_passed():
    m1, S1, m2, S2 = (t[0] for t in _w2_args())
    with pytest.raises(ValueError, match=r"^S1 .*got \[3, 2\]"):
        ht.w2_gaussian(m1, S1[:, :2], m2, S2)
    with pytest.raises(ValueError, match=r"^m2 .*got \[1, 3\]"):
        ht.w2_gaussian(m1, S1, m2[None], S2)


def test_w2_error_unsupported_device():
    # All four on a device the ops do not serve: refused by name, not inside the C++ layer.
    args = [t.to("meta") for t in _w2_args()]
    with pytest.raises(TypeError, match=r"^m1 must be on cpu"):
        ht.w2_gaussian(*args)


@pytest.mark.parametrize("eps", [0, 0.0, -1e-5, float("nan"), float("inf"), True, "1e-5", None])
def test_eps_must_be_positive_and_finite(eps):
    with pytest.raises(ValueError, match=r"^eps\b"):
        ht.w2_gaussian(*_w2_args(), eps=eps)
    z = torch.randn(4, 3, dtype=F64)
    with pytest.raises(ValueError, match=r"^eps\b"):
        ht.class_moments(z, torch.zeros(4, dtype=torch.long), 1, eps=eps)
    with pytest.raises(ValueError, match=r"^eps\b"):
        ht.GaussianAnchors(2, 3, eps=eps)


def _cm_args():
    return [torch.randn(6, 3, dtype=F64), torch.tensor([0, 1, 1, 0, -1, 2]), 3]


CM_ERRORS = [
    ("z not a tensor", 0, lambda t: t.tolist(), TypeError, "z"),
    ("z integer", 0, lambda t: t.long(), TypeError, "z"),
    ("z 1-d", 0, lambda t: t[:, 0], ValueError, "z"),
    ("z NaN", 0, _nan_at, ValueError, "z"),
    ("z on an unsupported device", 0, lambda t: t.to("meta"), TypeError, "z"),
    ("y float", 1, lambda t: t.double(), TypeError, "y"),
    ("y bool", 1, lambda t: t > 0, TypeError, "y"),
    ("y a list", 1, lambda t: t.tolist(), TypeError, "y"),
    ("y wrong length", 1, lambda t: t[:5], ValueError, "y"),
    ("y 2-d", 1, lambda t: t[:, None], ValueError, "y"),
    ("y = num_slots", 1, lambda t: torch.where(t == 2, 3, t), ValueError, "y"),
    ("y = -2", 1, lambda t: torch.where(t == -1, -2, t), ValueError, "y"),
    ("y device mismatch", 1, lambda t: t.to(_other_device()), TypeError, "y"),
    ("num_slots negative", 2, -1, ValueError, "num_slots"),
    ("num_slots float", 2, 3.0, ValueError, "num_slots"),
    ("num_slots too small for y", 2, 2, ValueError, "y"),
]


@pytest.mark.parametrize("index, change, exc, name", [e[1:] for e in CM_ERRORS],
                         ids=[e[0] for e in CM_ERRORS])
def test_class_moments_errors(index, change, exc, name):
    with pytest.raises(exc, match=rf"^{name}\b"):
        ht.class_moments(*_with(_cm_args(), index, change))


def _sym_matrix(k=4, dtype=F64):
    return random_spd(1, k, gen(12), dtype=dtype)[0]


EIGH_ERRORS = [
    ("A not a tensor", lambda: ht.eigh(_sym_matrix().tolist()), TypeError, "A"),
    ("A integer", lambda: ht.eigh(_sym_matrix().long()), TypeError, "A"),
    ("A requires grad", lambda: ht.eigh(_sym_matrix().requires_grad_(True)), ValueError, "A"),
    ("A not square", lambda: ht.eigh(_sym_matrix()[:, :3]), ValueError, "A"),
    ("A 1-d", lambda: ht.eigh(_sym_matrix()[0]), ValueError, "A"),
    ("A 4-d", lambda: ht.eigh(_sym_matrix()[None, None]), ValueError, "A"),
    ("A not symmetric", lambda: ht.eigh(_nonsym(_sym_matrix())), ValueError, "A"),
    ("A NaN", lambda: ht.eigh(_nan_at(_sym_matrix())), ValueError, "A"),
    ("A on an unsupported device", lambda: ht.eigh(_sym_matrix().to("meta")), TypeError, "A"),
    ("solver CUDA-only on the CPU", lambda: ht.eigh(_sym_matrix(), "jacobi"), ValueError, "solver"),
    ("solver unknown", lambda: ht.eigh(_sym_matrix(), "lapack"), ValueError, "solver"),
    ("solver not a str", lambda: ht.eigh(_sym_matrix(), 0), TypeError, "solver"),
]


@pytest.mark.parametrize("call, exc, name", [e[1:] for e in EIGH_ERRORS],
                         ids=[e[0] for e in EIGH_ERRORS])
def test_eigh_errors(call, exc, name):
    with pytest.raises(exc, match=rf"^{name}\b"):
        call()


def test_eigh_error_messages_name_the_shape_passed():
    with pytest.raises(ValueError, match=r"got \[4, 3\]"):
        ht.eigh(_sym_matrix()[:, :3])


def test_eigh_requires_grad_is_fine_without_grad_mode():
    A = _sym_matrix().requires_grad_(True)
    with torch.no_grad():
        w, _ = ht.eigh(A)
    assert not w.requires_grad


# === eigh ===================================================================================

def eigh_batch(k, dtype, seed):
    """Random symmetric (indefinite) matrices, a repeated spectrum, and Ŝ + eps·I with n < k."""
    g = gen(seed)
    X = torch.randn(4, k, k, generator=g, dtype=F64)
    d = torch.tensor([1.0] * (k - k // 2) + [2.0] * (k // 2), dtype=F64)
    z = torch.randn(max(2, k // 2), k, generator=g, dtype=F64)
    zc = z - z.mean(0)
    return torch.cat([sym(X), with_spectrum(orthogonal(k, g), d)[None],
                      (zc.T @ zc / (len(z) - 1) + EPS * torch.eye(k, dtype=F64))[None]]).to(dtype)


def check_eigh(A, w, V, what):
    """Ascending w; V diag(w) Vᵀ ≈ A and VᵀV ≈ I within eigh_bar; w against float64 eigvalsh
    within Weyl's bound, the backward error of both solvers."""
    k = A.shape[-1]
    bar = eigh_bar(k, A.dtype)
    A64, w64, V64 = A.double().cpu(), w.double().cpu(), V.double().cpu()
    assert (w64[..., 1:] >= w64[..., :-1]).all(), f"{what}: eigenvalues not ascending"
    eye = torch.eye(k, dtype=F64)
    for b in range(A64.shape[0]):
        norm = float(A64[b].norm())
        rebuilt = (V64[b] * w64[b]) @ V64[b].T
        assert_close_to(torch.tensor(float((rebuilt - A64[b]).norm())), torch.zeros(()), bar,
                        f"{what}, matrix {b}: ‖V diag(w) Vᵀ − A‖_F", scale=norm)
        assert_close_to(torch.tensor(float((V64[b].T @ V64[b] - eye).norm())), torch.zeros(()), bar,
                        f"{what}, matrix {b}: ‖VᵀV − I‖_F", scale=math.sqrt(k))
        assert_close_to(w64[b], torch.linalg.eigvalsh(A64[b]), bar + eigh_bar(k, F64),
                        f"{what}, matrix {b}: eigenvalues vs torch.linalg.eigvalsh", scale=norm)


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("k", [1, 5, 16])
def test_eigh_batch(dtype, k):
    A = eigh_batch(k, dtype, seed=20 + k)
    for solver in ("auto", "eigen"):
        w, V = ht.eigh(A, solver)
        assert w.shape == A.shape[:2] and V.shape == A.shape and w.dtype == V.dtype == dtype
        check_eigh(A, w, V, f"eigh k={k} {dtype} solver={solver}")


@pytest.mark.parametrize("dtype", [F64, F32])
def test_eigh_single_matrix(dtype):
    A = eigh_batch(6, dtype, seed=30)[0]
    w, V = ht.eigh(A)
    assert w.shape == (6,) and V.shape == (6, 6)
    check_eigh(A[None], w[None], V[None], f"eigh single {dtype}")


def test_eigh_empty_batch():
    w, V = ht.eigh(torch.zeros(0, 3, 3, dtype=F64))
    assert w.shape == (0, 3) and V.shape == (0, 3, 3)


# === GaussianAnchors and AlignmentLoss ======================================================

def test_anchor_covariance_is_llt_plus_eps_and_positive_definite():
    anchors = ht.GaussianAnchors(3, 5, eps=1e-3, dtype=F64)
    with torch.no_grad():
        anchors.chol.copy_(torch.randn(3, 5, 5, generator=gen(40), dtype=F64))
        anchors.chol[2] = 0  # S = eps·I: positive definite whatever L becomes
    S = anchors.covariance()
    L = anchors.chol.detach()
    want = L @ L.mT + 1e-3 * torch.eye(5, dtype=F64)
    # Each entry is a k-term dot product: γ_k·Σ|L_il||L_jl| ≤ γ_k·(|L||L|ᵀ)_ij, on both sides.
    assert ((S.detach() - want).abs() <= 2 * gamma(5, U64) * (L.abs() @ L.abs().mT)).all()
    assert torch.equal(S, S.mT)
    assert (torch.linalg.eigvalsh(S.detach()) > 0).all()
    m, S2 = anchors()
    assert m is anchors.mean and torch.equal(S2, S)
    assert ht.GaussianAnchors(2, 4).mean.dtype == torch.get_default_dtype()


def test_anchor_init():
    a = ht.GaussianAnchors(3, 4, scale=2.0, dtype=F64)
    assert torch.equal(a.mean.detach(), torch.zeros(3, 4, dtype=F64))
    assert torch.equal(a.chol.detach(), 2 * torch.eye(4, dtype=F64).repeat(3, 1, 1))
    torch.manual_seed(0)
    r = ht.GaussianAnchors(3, 4, mean_init="random", dtype=F64)
    assert r.mean.abs().sum() > 0


def test_anchor_sample_is_reparameterised():
    # Z_cj = m_c + L_c ξ_cj: ∂(Σ w·Z)/∂m_c = Σ_j w_cj, ∂/∂L_c = Σ_j w_cj ξ_cjᵀ.
    C, J, k = 3, 7, 4
    anchors = ht.GaussianAnchors(C, k, mean_init="random", dtype=F64)
    with torch.no_grad():
        anchors.chol.copy_(torch.randn(C, k, k, generator=gen(41), dtype=F64))
    Z = anchors.sample(J, generator=gen(42))
    assert Z.shape == (C, J, k)
    xi = torch.randn(C, J, k, generator=gen(42), dtype=F64)  # the same draws
    L = anchors.chol.detach()
    want = anchors.mean.detach()[:, None, :] + torch.einsum("cij,cnj->cni", L, xi)
    bar = gamma(k + 1, U64) * float((anchors.mean.abs()[:, None, :] + torch.einsum(
        "cij,cnj->cni", L.abs(), xi.abs())).max())
    assert_close_to(Z, want, 2 * bar, "anchor samples")
    w = torch.randn(C, J, k, generator=gen(43), dtype=F64)
    (Z * w).sum().backward()
    assert_close_to(anchors.mean.grad, w.sum(1), gamma(J, U64) * float(w.abs().sum(1).max()),
                    "∂/∂mean")
    want_dL = torch.einsum("cni,cnj->cij", w, xi)
    assert_close_to(anchors.chol.grad, want_dL, 2 * gamma(J, U64),
                    "∂/∂chol", scale=float(torch.einsum("cni,cnj->cij", w.abs(), xi.abs()).max()))


def _alignment_batch(seed, dtype=F64):
    """k = 3, C = 4, G = 2: class 0 pooled over both groups; class 1 one sample in group 0 and
    three in group 1; class 2 a single sample (skipped in every mode); class 3 absent."""
    g = gen(seed)
    y = torch.tensor([0, 0, 0, 1, 0, 0, 1, 1, 1, 2, 0])
    group = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
    z = torch.randn(len(y), 3, generator=g, dtype=dtype)
    anchors = ht.GaussianAnchors(4, 3, mean_init="random", dtype=dtype)
    with torch.no_grad():
        anchors.mean.copy_(torch.randn(4, 3, generator=g, dtype=dtype))
        anchors.chol.add_(0.3 * torch.randn(4, 3, 3, generator=g, dtype=dtype))
    return z, y, group, anchors


def _fit_by_hand(z, slots, num_slots, C, anchors):
    """Σ over slots with ≥ 2 samples of w2_gaussian(m̂_s, Ŝ_s, m_c, S_c), c = s mod C, one slot
    at a time, and the number of one-sample slots."""
    counts = torch.bincount(slots, minlength=num_slots)
    _, means, covs = ht.class_moments(z, slots, num_slots, anchors.eps)
    S = anchors.covariance()
    terms = [ht.w2_gaussian(means[s], covs[s], anchors.mean[s % C], S[s % C], anchors.eps)
             for s in range(num_slots) if counts[s] >= 2]
    return terms, int((counts == 1).sum())


@pytest.mark.parametrize("fit", ["pooled", "per_group"])
def test_alignment_fit_loss_by_hand(fit):
    z, y, group, anchors = _alignment_batch(50)
    C = 4
    loss = ht.AlignmentLoss(fit, eps=anchors.eps)
    got = loss.fit_loss(z, y, anchors, group=group if fit == "per_group" else None)
    slots, num_slots = (y, C) if fit == "pooled" else (group * C + y, 2 * C)
    terms, skipped = _fit_by_hand(z, slots, num_slots, C, anchors)
    # pooled: classes 0 and 1 live, class 2 skipped; per_group: (0,0), (1,0), (1,1) live,
    # (0,1) and (1,2) skipped.
    assert (len(terms), skipped) == ((2, 1) if fit == "pooled" else (3, 2))
    assert loss.last_skipped == skipped
    # The same op on the same pairs: only the order of the final sum differs.
    want = sum(terms)
    assert_close_to(got, want, gamma(len(terms), U64), f"L_fit {fit}",
                    scale=float(sum(t.abs() for t in terms)))
    got.backward()
    assert anchors.mean.grad[3].abs().max() == 0 and anchors.mean.grad[2].abs().max() == 0, \
        "absent and one-sample classes get no gradient"


def test_alignment_fit_none_and_errors():
    z, y, group, anchors = _alignment_batch(51)
    assert float(ht.AlignmentLoss("none").fit_loss(z, y, anchors)) == 0.0
    with pytest.raises(ValueError, match=r"\bfit\b"):
        ht.AlignmentLoss("mean")
    with pytest.raises(ValueError, match=r"\bgroup\b"):
        ht.AlignmentLoss("per_group").fit_loss(z, y, anchors)
    with pytest.raises(ValueError, match=r"^y\b"):
        ht.AlignmentLoss().fit_loss(z, torch.where(y == 2, 4, y), anchors)
    with pytest.raises(TypeError, match=r"^y\b"):
        ht.AlignmentLoss().fit_loss(z, y.double(), anchors)


def test_alignment_no_live_slot_gives_zero():
    anchors = ht.GaussianAnchors(3, 2, dtype=F64)
    z = torch.randn(2, 2, dtype=F64, requires_grad=True)
    loss = ht.AlignmentLoss()
    v = loss.fit_loss(z, torch.tensor([0, 1]), anchors)
    assert float(v) == 0.0 and loss.last_skipped == 2
    v.backward()
    assert not z.grad.any()


def test_alignment_sep_loss_is_mean_cross_entropy():
    C, k, J = 3, 4, 5
    anchors = ht.GaussianAnchors(C, k, mean_init="random", dtype=F64)
    classifier = torch.nn.Linear(k, C).double()
    loss = ht.AlignmentLoss(samples_per_anchor=J)
    got = loss.sep_loss(anchors, classifier, generator=gen(60))
    Z = anchors.sample(J, generator=gen(60))  # the same draws
    total = 0.0
    for c in range(C):
        for j in range(J):
            logits = classifier(Z[c, j]).detach()
            total += float(torch.logsumexp(logits, 0) - logits[c])
    want = total / (C * J)
    # C·J cross-entropies of C logits each (k-term dot products): γ_{CJ + C + k + 2}·Σ|terms|.
    mag = float(classifier(Z.reshape(-1, k)).abs().sum()) / (C * J) + abs(want)
    assert_close_to(got, torch.tensor(want, dtype=F64), 2 * gamma(C * J + C + k + 2, U64),
                    "L_sep", scale=mag)
    fit, sep = loss(torch.randn(4, k, dtype=F64), torch.tensor([0, 0, 1, 1]), anchors, classifier,
                    generator=gen(60))
    assert torch.equal(sep, got) and fit.dim() == 0


# === CUDA (hetdro's kernels, float32) against the CPU in float64 ===========================

@needs_cuda
@pytest.mark.parametrize("k", [8, 32])
def test_cuda_w2_gaussian_matches_cpu_float64(k):
    g = gen(70 + k)
    P = 8
    m1, m2 = torch.randn(2, P, k, generator=g, dtype=F64)
    A, B = random_spd(P, k, g), random_spd(P, k, g)
    inputs = [t.float() for t in (m1, A, m2, B)]  # the float64 side takes the same numbers
    gpu = w2_grads(ht.w2_gaussian, *(t.cuda() for t in inputs))
    cpu = w2_grads(ht.w2_gaussian, *(t.double() for t in inputs))
    value_bar, grad_bar = w2_bars(A, B, m1 - m2, F32)
    value_bar64, grad_bar64 = w2_bars(A, B, m1 - m2, F64)
    assert_close_to(gpu[0], cpu[0], value_bar + value_bar64, "W2² CUDA vs CPU float64")
    for i, name in enumerate(("dm1", "dS1", "dm2", "dS2"), start=1):
        for p in range(P):
            assert_fro_close(gpu[i][p], cpu[i][p], grad_bar + grad_bar64,
                             f"{name} of pair {p}, CUDA vs CPU float64")


@needs_cuda
def test_cuda_class_moments_matches_cpu_float64():
    g = gen(71)
    k = 8
    y = torch.randint(-1, 4, (60,), generator=g)
    y[0] = 4  # slot 4 has one sample, slot 5 none
    z32 = torch.randn(len(y), k, generator=g, dtype=F64).float()
    c_gpu, m_gpu, S_gpu = ht.class_moments(z32.cuda(), y.cuda(), 6, EPS)
    c_cpu, m_cpu, S_cpu = ht.class_moments(z32.double(), y, 6, EPS)
    assert torch.equal(c_gpu.cpu(), c_cpu)
    for s in range(6):
        if c_cpu[s] < 2:
            assert not m_gpu[s].any() and not S_gpu[s].any()
            continue
        mean_bar, cov_bar = moments_bars(z32[y == s], int(c_cpu[s]), F32)
        assert ((m_gpu[s].double().cpu() - m_cpu[s]).abs() <= mean_bar).all(), f"mean {s}"
        assert ((S_gpu[s].double().cpu() - S_cpu[s]).abs() <= cov_bar).all(), f"cov {s}"


@needs_cuda
@pytest.mark.parametrize("solver", ["auto", "jacobi", "syevj", "syev"])
@pytest.mark.parametrize("k", [8, 32])
def test_cuda_eigh_matches_cpu_float64(solver, k):
    A = eigh_batch(k, F32, seed=72 + k)
    try:
        w, V = ht.eigh(A.cuda(), solver)
    except ValueError as e:
        if "absent from this build" in str(e):
            pytest.skip(f"solver {solver}: {e}")
        raise
    check_eigh(A, w, V, f"CUDA eigh k={k} solver={solver}")


@needs_cuda
def test_cuda_float64_is_refused_by_name():
    with pytest.raises(TypeError, match=r"^m1 on CUDA must be float32"):
        ht.w2_gaussian(*(t.cuda() for t in _w2_args()))
    with pytest.raises(TypeError, match=r"^A on CUDA must be float32"):
        ht.eigh(_sym_matrix().cuda())
    with pytest.raises(TypeError, match=r"^z on CUDA must be float32"):
        ht.class_moments(torch.randn(4, 3, dtype=F64).cuda(),
                         torch.zeros(4, dtype=torch.long).cuda(), 1)


@needs_cuda
def test_cuda_degenerate_batches_finite():
    bad = count_nonfinite("hetdro_torch", F32, device="cuda")
    print(f"\nCUDA float32: batches with non-finite L_fit gradients: {bad}/50")
    assert bad == 0, f"hetdro_torch on CUDA: {bad}/50 batches with non-finite gradients"

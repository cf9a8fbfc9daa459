#!/usr/bin/env python3
"""Times W2² of Gaussian pairs, forward plus backward, in PyTorch: hetdro_torch.w2_gaussian
(hetdro's op and its analytic backward, docs/DESIGN.md §2) against the method's pseudocode in plain
PyTorch (scripts/torch_reference.py's w2_squared_naive: two torch.linalg.eigh square roots,
differentiated by autograd) and torch_reference's "safe" mode (the same §2 backward written as a
torch.autograd.Function over torch.linalg.eigh).

Inputs are shaped like the method's: S1 is a batch class covariance, the unbiased sample
covariance of 10 points (rank 9, so rank-deficient for every k here) plus eps·I, as
class_moments gives it; S2 is an anchor L Lᵀ + eps·I with L = I + 0.1·G/√k (G standard normal):
well conditioned, as the anchors are after initialisation at L = I. Means are N(0, 1); eps = 1e-5.

Each cell: one call on all pairs, forward and backward with respect to all four inputs, timed
from the call to the gradients being ready (CUDA events on CUDA, perf_counter on the CPU);
hetdro_torch's argument checks (symmetry, finiteness) are part of its time, as for any caller.
--warmup untimed runs (fewer where one run takes longer than --budget), then timed runs until
--budget seconds are spent, at least --min-reps and at most --max-reps: big cells get fewer.
The median is reported with the number of timed runs.

A second table checks what was timed (the last timed run's results) against float64
(torch_reference's §2 form): pairs with a NaN or infinite gradient entry (such a run is timed
anyway), and the largest relative error of W2² and of the gradients over the first 100 pairs.
It adds inputs with dead units (the last k/2 latent units 0 in every point, as dead ReLU
latents give), whose S1 has the eigenvalue eps exactly and repeated, where autograd through
eigh divides 0 by 0 (docs/DESIGN.md §2, "Why not autograd through eigh").

Examples:
  /usr/bin/python3 scripts/bench_w2_torch.py --device cpu --threads 2 --out bench/results/w2_torch_cpu.md
  /usr/bin/python3 scripts/bench_w2_torch.py --device cuda --out w2_torch_cuda.md
  /usr/bin/python3 scripts/bench_w2_torch.py --k 64 --pairs 100 --impl hetdro,naive

Exit codes: 0 done, 2 bad input (an option, an --out path the output rule refuses), 1 a failed write.
"""
import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import outputs  # noqa: E402  (the output rule, beside this script)
import torch_reference as ref  # noqa: E402

import hetdro_torch  # noqa: E402

TITLE = b"# w2_gaussian forward+backward: hetdro_torch vs plain PyTorch"
EPS = 1e-5
SAMPLES = 10   # points behind each batch covariance: about a class's share of a batch of 100
CHECKED = 100  # pairs whose errors against float64 are measured (the reference's cost grows with them)


def naive(m1, S1, m2, S2):
    return ref.w2_squared_naive(m1, S1, m2, S2, EPS)


def safe(m1, S1, m2, S2):
    return ref.W2SquaredSafe.apply(m1, S1, m2, S2, EPS)


def hetdro(m1, S1, m2, S2):
    return hetdro_torch.w2_gaussian(m1, S1, m2, S2, EPS)


IMPLS = {"hetdro": hetdro, "naive": naive, "safe": safe}
LABELS = {"hetdro": "hetdro_torch.w2_gaussian", "naive": "naive (eigh + autograd)",
          "safe": "torch_reference safe (eigh + §2 backward)"}


def make_inputs(P, k, gen, dead=False):
    """float64 inputs on the CPU: (m1, S1, m2, S2), S1 a 10-point sample covariance + eps·I,
    S2 = L Lᵀ + eps·I; both symmetric to the last bit. dead: the last k/2 latent units are 0 in
    every point (dead ReLU units), so S1 has the eigenvalue eps exactly, k/2 times or more."""
    eye = torch.eye(k, dtype=torch.float64)
    z = torch.randn(P, SAMPLES, k, generator=gen, dtype=torch.float64)
    if dead:
        z[:, :, k // 2:] = 0
    zc = z - z.mean(1, keepdim=True)
    S1 = zc.transpose(1, 2) @ zc / (SAMPLES - 1)
    L = eye + 0.1 * torch.randn(P, k, k, generator=gen, dtype=torch.float64) / k ** 0.5
    S2 = L @ L.transpose(1, 2)
    S1 = (S1 + S1.transpose(1, 2)) / 2 + EPS * eye
    S2 = (S2 + S2.transpose(1, 2)) / 2 + EPS * eye
    m1 = torch.randn(P, k, generator=gen, dtype=torch.float64)
    m2 = torch.randn(P, k, generator=gen, dtype=torch.float64)
    return m1, S1, m2, S2


def reference(m1, S1, m2, S2):
    """The float64 yardstick: W2² by the closed form of docs/DESIGN.md §1 (floors eps and eps²),
    and the gradients of torch_reference's §2 backward, dS1 projected on the range of S1's scatter.

    Why the projection: the null-space eigenvalues of a rank-deficient S1 sit exactly at the
    inner root's floor eps, where √max(a, eps) has a kink; rounding puts each on either side, so
    the null-space block of dS1 is not unique, and implementations differ there by O(1/√eps)
    legitimately. That block never reaches the latents: class_moments' backward multiplies dS1
    by z_i − m̂ (docs/DESIGN.md §2), which lies in the range. Returns (w2, P_range, dS1·P_range, dS2)."""
    leaves = [x.detach().clone().requires_grad_(True) for x in (m1, S1, m2, S2)]
    w2 = ref.W2SquaredSafe.apply(*leaves, EPS)
    w2.sum().backward()
    a, U = torch.linalg.eigh(S1)
    keep = (a > 2 * EPS).to(S1.dtype)   # the scatter's eigenvalues are 0 or far above eps here
    proj = (U * keep.unsqueeze(-2)) @ U.transpose(-1, -2)
    return w2.detach(), proj, leaves[1].grad @ proj, leaves[3].grad


def rel_err(x, truth):
    """Max over pairs of ‖x − truth‖_F / max(1, ‖truth‖_F)."""
    P = truth.shape[0]
    diff = (x.double() - truth).reshape(P, -1).norm(dim=1)
    return (diff / truth.reshape(P, -1).norm(dim=1).clamp_min(1)).max().item()


class Timer:
    def __init__(self, device):
        self.device = device

    def run(self, fn):
        """Milliseconds that fn() takes, until its work is done on the device."""
        if self.device.type == "cuda":
            # hetdro_torch runs on hetdro's own stream, joined both ways to PyTorch's current
            # stream by events (python/csrc/hetdro_torch.cpp), so events on the current stream
            # bracket its work too.
            torch.cuda.synchronize(self.device)
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            return start.elapsed_time(stop)
        t0 = time.perf_counter()
        fn()
        return 1e3 * (time.perf_counter() - t0)


def check(w2, grads, truth, checked):
    """{nonfinite: pairs with a NaN or infinite gradient entry, w2_err, grad_err}: the errors
    against the float64 reference (see reference()) over the first `checked` pairs."""
    bad = torch.zeros(w2.shape[0], dtype=torch.bool, device=w2.device)
    for g in grads:
        bad |= ~torch.isfinite(g).reshape(g.shape[0], -1).all(1)
    truth_w2, proj, truth_dS1, truth_dS2 = truth
    first = slice(0, checked)
    grad_err = max(rel_err(grads[1][first].double() @ proj, truth_dS1), rel_err(grads[3][first], truth_dS2))
    return {"nonfinite": int(bad.sum()), "w2_err": rel_err(w2[first, None], truth_w2[:, None]),
            "grad_err": grad_err}


def time_cell(impl, inputs, timer, args):
    """(median ms, timed runs, W2² and gradients of the last run): up to args.warmup untimed runs
    (no more once one took longer than args.budget), then timed runs until args.budget seconds
    are spent, at least args.min_reps and at most args.max_reps."""
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    last = {}

    def step():
        for x in leaves:
            x.grad = None
        last["w2"] = impl(*leaves)
        last["w2"].sum().backward()

    for _ in range(args.warmup):
        if timer.run(step) > 1e3 * args.budget:
            break
    times, spent = [], 0.0
    while len(times) < args.min_reps or (spent < 1e3 * args.budget and len(times) < args.max_reps):
        times.append(timer.run(step))
        spent += times[-1]
    return statistics.median(times), len(times), last["w2"].detach(), [x.grad for x in leaves]


def cpu_model():
    """/proc/cpuinfo's model name, else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def md_row(cells):
    return "| " + " | ".join(cells) + " |"


def parse_list(text, what, choices=None):
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise outputs.BadInput("--%s: expected a comma-separated list, got %r" % (what, text))
    if choices is not None:
        for s in items:
            if s not in choices:
                raise outputs.BadInput("--%s: %r is not one of %s" % (what, s, ", ".join(choices)))
        return items
    try:
        values = [int(s) for s in items]
    except ValueError:
        raise outputs.BadInput("--%s: expected integers, got %r" % (what, text))
    if min(values) < 1:
        raise outputs.BadInput("--%s: every value must be >= 1, got %r" % (what, text))
    return values


def fmt_ms(ms):
    return "%.3g" % ms if ms < 100 else "%.0f" % ms


def main():
    p = argparse.ArgumentParser(
        description="Time hetdro_torch.w2_gaussian (forward + backward) against plain PyTorch's "
                    "eigh + autograd version of the method, over k and the number of pairs.",
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="dtype of the timed inputs (default float32; hetdro's CUDA kernels are float32 only)")
    p.add_argument("--k", default="16,64,128", help="latent dimensions (default 16,64,128)")
    p.add_argument("--pairs", default="10,100,1000", help="pairs per call (default 10,100,1000)")
    p.add_argument("--impl", default="hetdro,naive,safe",
                   help="implementations, of hetdro, naive, safe (default all three; speedups need hetdro)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads(N), which hetdro's CPU op follows "
                                               "too (default: torch's own)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs per cell (default 2)")
    p.add_argument("--budget", type=float, default=1.5,
                   help="seconds of timed runs per implementation and cell (default 1.5)")
    p.add_argument("--min-reps", type=int, default=3, help="timed runs per cell at least (default 3)")
    p.add_argument("--max-reps", type=int, default=30, help="timed runs per cell at most (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs (default 0)")
    p.add_argument("--out", help="also write the table as Markdown to this file (the output rule of "
                                 "scripts/outputs.py: it replaces only a file this script wrote)")
    args = p.parse_args()

    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise outputs.BadInput("--device: %r is not a torch device (cpu, cuda, cuda:1, ...)" % args.device)
    if device.type not in ("cpu", "cuda"):
        raise outputs.BadInput("--device: expected cpu or cuda, got %r" % args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise outputs.BadInput("--device cuda: torch.cuda.is_available() is False")
    if device.type == "cuda" and not hetdro_torch.built_with_cuda():
        raise outputs.BadInput("--device cuda: this hetdro_torch was built without CUDA "
                               "(hetdro_torch.built_with_cuda() is False); rebuild it on the GPU machine")
    if device.type == "cuda" and args.dtype != "float32":
        raise outputs.BadInput("--dtype %s on cuda: hetdro's CUDA kernels are float32 only" % args.dtype)
    ks, pairs = parse_list(args.k, "k"), parse_list(args.pairs, "pairs")
    impls = parse_list(args.impl, "impl", IMPLS)
    for name in ("warmup", "min_reps", "max_reps"):
        if getattr(args, name) < (0 if name == "warmup" else 1):
            raise outputs.BadInput("--%s must be >= %d" % (name.replace("_", "-"), 0 if name == "warmup" else 1))
    if args.max_reps < args.min_reps:
        raise outputs.BadInput("--max-reps must be >= --min-reps")
    if not args.budget >= 0:
        raise outputs.BadInput("--budget must be >= 0 seconds")
    if args.threads is not None:
        if args.threads < 1:
            raise outputs.BadInput("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    out = None
    if args.out:
        out = outputs.Output(args.out, "a Markdown table this script wrote, starting %r" % TITLE.decode(),
                             outputs.first_line(TITLE))
        outputs.check_all([out])   # refused before the long work

    dtype = getattr(torch, args.dtype)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        "cpu (%s, %d cores), %d torch threads" % (cpu_model(), os.cpu_count(), torch.get_num_threads())
    command = " ".join(["/usr/bin/python3", "scripts/bench_w2_torch.py"] + sys.argv[1:])
    lines = [TITLE.decode(), "",
             "- device: %s" % where,
             "- torch %s; hetdro_torch built with CUDA: %s; dtype %s"
             % (torch.__version__, hetdro_torch.built_with_cuda(), args.dtype),
             "- date: %s" % datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
             "- command: `%s`" % command,
             "- environment: " + ", ".join("%s=%s" % (v, os.environ.get(v, "(unset)"))
                                           for v in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")),
             "- load average (1, 5, 15 min) at the start: %.2f, %.2f, %.2f" % os.getloadavg(),
             "- implementations: " + "; ".join("`%s` = %s" % (n, LABELS[n]) for n in impls),
             "- inputs: S1 = a 10-point sample covariance + eps·I (rank 9), S2 = L Lᵀ + eps·I with "
             "L = I + 0.1·G/√k, means N(0, 1); eps = %g; seed %d" % (EPS, args.seed),
             "- each cell: one call on all pairs, forward + backward w.r.t. m1, S1, m2, S2; %d warm-up "
             "runs (1 where one run takes longer than the budget), then the median of `reps` timed "
             "runs (as many as fit in %g s, %d to %d)"
             % (args.warmup, args.budget, args.min_reps, args.max_reps), ""]
    for line in lines[:9]:
        print(line, flush=True)

    gen = torch.Generator().manual_seed(args.seed)
    timer = Timer(device)
    t_start = time.perf_counter()
    speed = [n for n in impls if n != "hetdro" and "hetdro" in impls]
    timing = [md_row(["k", "pairs"] + ["%s ms (reps)" % n for n in impls] + ["%s / hetdro" % n for n in speed]),
              "|" + "---:|" * (2 + len(impls) + len(speed))]
    accuracy = [md_row(["inputs", "k", "pairs"] + ["%s nonfinite, W2² err, grad err" % n for n in impls]),
                "|---|---:|---:|" + "---|" * len(impls)]
    print("\n" + timing[0], flush=True)

    def accuracy_row(kind, k, inputs64, results):
        """results: {impl: (w2, grads)} of one call on all pairs; errors over the first CHECKED."""
        P = inputs64[0].shape[0]
        checked = min(P, CHECKED)
        truth = [x.to(device) for x in reference(*(x[:checked] for x in inputs64))]
        cells = []
        for name in impls:
            c = check(*results[name], truth, checked)
            cells.append("%d/%d, %.1e, %.1e" % (c["nonfinite"], P, c["w2_err"], c["grad_err"]))
        accuracy.append(md_row([kind, str(k), str(P)] + cells))

    for k in ks:
        for P in pairs:
            inputs64 = make_inputs(P, k, gen)
            inputs = [x.to(device=device, dtype=dtype) for x in inputs64]
            ms, cells, results = {}, [], {}
            for name in impls:
                ms[name], reps, *results[name] = time_cell(IMPLS[name], inputs, timer, args)
                cells.append("%s (%d)" % (fmt_ms(ms[name]), reps))
            timing.append(md_row([str(k), str(P)] + cells + ["%.2fx" % (ms[n] / ms["hetdro"]) for n in speed]))
            print(timing[-1], flush=True)
            accuracy_row("as timed", k, inputs64, results)
    total = time.perf_counter() - t_start
    for k in ks:   # dead units: eigenvalues exactly eps, repeated (docs/DESIGN.md §2)
        inputs64 = make_inputs(min(100, max(pairs)), k, gen, dead=True)
        inputs = [x.to(device=device, dtype=dtype) for x in inputs64]
        results = {}
        for name in impls:
            leaves = [x.clone().requires_grad_(True) for x in inputs]
            w2 = IMPLS[name](*leaves)
            w2.sum().backward()
            results[name] = (w2.detach(), [x.grad for x in leaves])
        accuracy_row("dead units", k, inputs64, results)
    print("\n" + "\n".join(accuracy), flush=True)
    print("timing: %.0f s" % total)
    lines.insert(len(lines) - 1,   # after the header list, before its blank line
                 "- load average (1, 5, 15 min) at the end: %.2f, %.2f, %.2f" % os.getloadavg())
    lines += ["## Median milliseconds per call (forward + backward)", ""] + timing + [
        "", "`X / hetdro`: X's median over hetdro_torch's (above 1: hetdro_torch is faster). Timed "
        "cells took %.0f s in all." % total, "",
        "## Gradients and values against float64", ""] + accuracy + [
        "", "Per implementation: pairs with a NaN or infinite entry in any gradient (of all pairs, in "
        "the last timed run); the largest relative error over the first %d pairs of W2² and of "
        "the gradients (‖Δ‖_F / max(1, ‖·‖_F), the larger "
        "of dS2's and of dS1's projected on the range of S1's scatter), against torch_reference's "
        "§2 form in float64. The projection leaves out dS1's block on S1's null space, whose "
        "eigenvalues sit exactly at the floor eps, where √max(a, eps) has a kink: that block "
        "depends on rounding, and class_moments' backward never passes it to the latents. "
        "`as timed`: the inputs of the timing table. `dead units`: S1 from points whose last k/2 "
        "units are 0 (dead ReLU latents), so eps is an eigenvalue exactly, k/2 times or more." % CHECKED, ""]
    if out is not None:
        out.write("\n".join(lines).encode())
    return 0


if __name__ == "__main__":
    sys.exit(outputs.run(main))

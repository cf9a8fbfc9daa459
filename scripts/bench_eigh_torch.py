#!/usr/bin/env python3
"""Times torch.linalg.eigh (fp32, CUDA) on the batches bench/bench_w2_gaussian.cpp's BM_eigh_cuda
uses, for the side-by-side table of docs/DESIGN.md §3: batch in {10, 100, 1000}, k in
{32, 64, 128, 256}, S-hat-like covariances (10 samples: rank 9, plus eps*I). CUDA events,
median of 20 runs after 3 warm-up runs. Exits 0 with a message where torch or CUDA is absent."""
import statistics
import sys


def main() -> int:
    try:
        import torch
    except ImportError:
        print("bench_eigh_torch: torch is not installed; nothing to time")
        return 0
    if not torch.cuda.is_available():
        print("bench_eigh_torch: no CUDA device visible to torch; nothing to time")
        return 0
    dev = torch.device("cuda")
    gen = torch.Generator(device="cpu").manual_seed(1)
    eps, n = 1e-5, 10
    print(f"device: {torch.cuda.get_device_name(dev)}, torch {torch.__version__}")
    print(f"{'batch':>6} {'k':>4} {'median ms':>10} {'matrices/s':>12}")
    for k in (32, 64, 128, 256):
        for batch in (10, 100, 1000):
            z = torch.rand(batch, n, k, generator=gen) * 2 - 1
            zc = z - z.mean(dim=1, keepdim=True)
            cov = zc.transpose(1, 2) @ zc / (n - 1) + eps * torch.eye(k)
            a = cov.to(dev, torch.float32)
            for _ in range(3):
                torch.linalg.eigh(a)
            times = []
            for _ in range(20):
                start = torch.cuda.Event(enable_timing=True)
                stop = torch.cuda.Event(enable_timing=True)
                start.record()
                torch.linalg.eigh(a)
                stop.record()
                stop.synchronize()
                times.append(start.elapsed_time(stop))
            ms = statistics.median(times)
            print(f"{batch:>6} {k:>4} {ms:>10.3f} {batch / (ms / 1e3):>12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

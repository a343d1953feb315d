"""fp32 against bf16 matrix products on this CPU: without AVX512-BF16 or AMX, bf16 is emulated and many times
slower than fp32, which is why `train.mixed_precision: auto` trains in fp32 on such a CPU.

    python benchmarks/bf16_matmul.py [--shape 384 1536 384] [--repeats 20]

Times an (m×k)·(k×n) product in each precision, interleaved, the median of --repeats after a warm-up (the
default shape is a MiniLM feed-forward product of a 384-token batch), and prints the machine, both times and
their ratio; last line: bf16_over_fp32=<time ratio>.
"""

from __future__ import annotations

import argparse
import statistics
import time

import bench_env
import torch


def seconds(a: torch.Tensor, b: torch.Tensor) -> float:
    start = time.perf_counter()
    a @ b
    return time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[384, 1536, 384], metavar=("M", "K", "N"))
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    m, k, n = args.shape
    torch.manual_seed(0)
    a, b = torch.randn(m, k), torch.randn(k, n)
    pairs = {"fp32": (a, b), "bf16": (a.bfloat16(), b.bfloat16())}
    times = {name: [] for name in pairs}
    for x, y in pairs.values():  # warm-up
        seconds(x, y)
    for _ in range(args.repeats):
        for name, (x, y) in pairs.items():
            times[name].append(seconds(x, y))
    median = {name: statistics.median(t) for name, t in times.items()}
    print(bench_env.describe_machine())
    for name, t in median.items():
        print(f"{name}: {m}×{k}×{n} product {t * 1e3:.2f} ms (median of {args.repeats}), "
              f"{2 * m * k * n / t / 1e9:.1f} GFLOP/s")
    print(f"bf16_over_fp32={median['bf16'] / median['fp32']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
